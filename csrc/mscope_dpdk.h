/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The rte_mbuf recorder: mscope_rx()/mscope_tx() for DPDK NFs.  Call right
 * after rte_eth_rx_burst()/rte_ring_dequeue_burst() and right before
 * rte_eth_tx_burst()/rte_ring_enqueue_burst(), from the lcore that owns the
 * handle, after rte_eal_init().
 *
 * rx computes each packet's id (mscope_pktid.h) and stamps it in a dynamic
 * mbuf field; tx takes the id from that stamp, so header rewriting between
 * rx and tx (NAT, encapsulation) does not change it.  Packets the NF builds
 * itself get their id computed at tx.  A dynamic flag in ol_flags marks the
 * stamp valid; rte_pktmbuf_alloc() clears it, so a recycled mbuf never
 * carries a stale id.  An NF that assigns ol_flags outright (rather than
 * or-ing bits in) clears it too: its tx then recomputes ids from headers,
 * right unless it rewrote the invariant fields.  See docs/packet-ids.md.
 *
 * On a handle opened with MSCOPE_F_ADDRS, rx also writes an address record
 * (IPv4 src/dst of each packet, mscope_record.h) right after each rx
 * record; tx never does.
 *
 * On a handle opened with MSCOPE_F_NOIDS (batch-only), rx and tx write one
 * 32-byte MSCOPE_REC_F_NOIDS record per batch (count and tsc, no ids) and
 * never touch the mbufs: no header read, no stamp.
 */
#ifndef MSCOPE_DPDK_H
#define MSCOPE_DPDK_H

#include <rte_mbuf.h>
#include "mscope.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MSCOPE_DYNFIELD_NAME "mscope_dynfield_pktid"
#define MSCOPE_DYNFLAG_NAME  "mscope_dynflag_pktid"   /* set: the stamp is valid */

/* Returns 0, -ENOBUFS when a record was dropped (ring full), -EINVAL.
 * Call mscope_rx after empty polls too (n == 0): an idle-poll record at
 * most every MSCOPE_IDLE_NS, so the analyzer can tell a stopped NF from an
 * idle one (mscope.h, mscope_record.h); one compare when not due. */
int mscope_rx(struct mscope *ms, uint16_t port, uint16_t queue,
	      struct rte_mbuf **pkts, uint16_t n, uint32_t occupancy);
int mscope_tx(struct mscope *ms, uint16_t port, uint16_t queue,
	      struct rte_mbuf **pkts, uint16_t n, uint32_t occupancy);

/*
 * mscope_tx with the time given: `tsc` is an rte_rdtsc() the caller read
 * before handing the packets to the queue.  For sends that copy the
 * packets out and leave the mbufs with the caller (rte_vhost_enqueue_burst):
 *
 *   uint64_t t = rte_rdtsc();
 *   sent = rte_vhost_enqueue_burst(vid, q, pkts, n);
 *   mscope_tx_at(ms, port, q, pkts, sent, MSCOPE_OCC_UNKNOWN, t);
 *
 * so only the packets the queue took are recorded, with the time
 * mscope_tx would have given them.  Not after rte_eth_tx_burst (the PMD
 * owns, and may already have freed, the mbufs it took).  Same ids, stamps
 * and returns as mscope_tx.
 */
int mscope_tx_at(struct mscope *ms, uint16_t port, uint16_t queue,
		 struct rte_mbuf **pkts, uint16_t n, uint32_t occupancy, uint64_t tsc);

/*
 * For an NF whose rx port a NIC fills: read the port's refusals
 * (rte_eth_stats.imissed: what it dropped while its rx queue was full)
 * and write a refused record (mscope_refused, mscope_record.h) if they
 * grew since the last reading.  A port's first reading is where counting
 * starts.  Call it after a poll's mscope_rx about every MSCOPE_REFUSED_NS
 * of polling, and at the first poll after the NF stopped (so a stop's
 * refusals are read as it ends); occupancy: that poll's.  The attach shim
 * does this itself.  Any lcore may call it for any port: one reads at a
 * time (a try, never a wait), so each refusal is recorded once.
 * Returns 1 (a record written), 0 (none grew, or the first reading),
 * -EBUSY (another lcore is reading the port), -ENOTSUP (the port has no
 * statistics: never read again), -ENOBUFS (ring full), -EINVAL.
 * DPDK does not promise rte_eth_stats_get may run in two threads at once:
 * see docs/attach.md before calling it where the app reads stats too.
 */
int mscope_dpdk_read_refused(struct mscope *ms, uint16_t port, uint16_t queue,
			     uint32_t occupancy);

/* Register the id stamp (dynamic mbuf field and flag) now; returns its
 * offset, or -1.  The recorder does this on its first record, but DPDK lets
 * only a primary process register a dynamic field: where NFs are secondary
 * processes sharing mbufs (rte_rings in hugepages), the primary must call
 * this once after rte_eal_init(), or the secondaries find no stamp and
 * compute ids from headers at every hop (docs/packet-ids.md). */
int mscope_dpdk_register(void);

/* The id mscope gives this mbuf's packet now (computed from its headers). */
uint64_t mscope_mbuf_pktid(const struct rte_mbuf *m);

/* Copy the id stamp from one mbuf to another: for NFs that build a new
 * mbuf for a packet they received (encapsulation into a fresh buffer). */
void mscope_carry_id(struct rte_mbuf *dst, const struct rte_mbuf *src);

#ifdef __cplusplus
}
#endif

#endif /* MSCOPE_DPDK_H */
