/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libmscope: the recorder an NF calls from its poll loop.
 *
 *   struct mscope_params p = { .nf_name = "nat", .nf_id = 3, .lcore = 1 };
 *   struct mscope *ms = mscope_open(&p);
 *   ...
 *   n = rte_eth_rx_burst(port, q, pkts, 32);
 *   mscope_rx(ms, port, q, pkts, n, MSCOPE_OCC_UNKNOWN);   (mscope_dpdk.h)
 *   ... work ...
 *   mscope_tx(ms, out_port, q, pkts, n_out, MSCOPE_OCC_UNKNOWN);
 *   sent = rte_eth_tx_burst(out_port, q, pkts, n_out);
 *
 * One handle per (NF, lcore): a handle owns one single-producer ring and is
 * used by one thread only.  The raw variants below take packet ids directly
 * (tests, simulators, non-DPDK users); mscope_dpdk.h adds the rte_mbuf ones.
 * Recording never blocks: a full ring drops the record and counts it.
 */
#ifndef MSCOPE_H
#define MSCOPE_H

#include <stddef.h>
#include <stdint.h>
#include "mscope_record.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MSCOPE_DEFAULT_DIR        "/dev/shm/mscope"
#define MSCOPE_DEFAULT_RING_BYTES (8U << 20)   /* 8 MiB: ~25 ms at 10 Mpps */

/* mscope_params.flags */
#define MSCOPE_F_TRUST_UPSTREAM 0x1U  /* rx takes ids stamped by an upstream
				       * recorded tx (mbufs shared over
				       * rte_rings); see docs/packet-ids.md */
#define MSCOPE_F_ADDRS          0x2U  /* mscope_rx also writes address records
				       * (MSCOPE_REC_F_ADDR: IPv4 src/dst per
				       * packet): for the chain's ingress NF,
				       * doubles its rx record bytes */
#define MSCOPE_F_NOIDLE         0x8U  /* no idle-poll records: an empty poll
				       * records nothing (see below) */
#define MSCOPE_F_NOIDS          0x4U  /* batch-only: mscope_rx/mscope_tx write
				       * count and tsc, no packet ids
				       * (MSCOPE_REC_F_NOIDS): no header is
				       * read, no id stamped; MSCOPE_F_ADDRS
				       * and _TRUST_UPSTREAM are ignored */

struct mscope_params {
	const char *nf_name;   /* required, [A-Za-z0-9_-]{1,31} */
	uint16_t nf_id;        /* numeric id carried in every record */
	uint16_t lcore;        /* the lcore (thread) this handle belongs to */
	size_t ring_bytes;     /* data area, power of two; 0: default */
	const char *dir;       /* registry directory; NULL: $MSCOPE_DIR or default */
	uint32_t flags;        /* MSCOPE_F_* */
};

struct mscope;

/*
 * Create the ring file <dir>/<nf_name>.<lcore>.<pid>.ring (mode 0600) and
 * return a handle, or NULL with errno set:
 *   EINVAL  bad name, size not a power of two or out of range
 *   EEXIST  a ring of that name exists (same NF, lcore and pid)
 *   other   from mkdir/open/ftruncate/mmap
 */
struct mscope *mscope_open(const struct mscope_params *params);

/* Mark the ring closed (the collector drains and unlinks it) and free the
 * handle.  Returns 0 or -errno. */
int mscope_close(struct mscope *ms);

/* Record the producer's TSC rate in the ring header (the collector
 * calibrates its own and uses this one only as a cross-check); the
 * idle-poll interval is set from it too (mscope_open estimates the rate
 * against CLOCK_MONOTONIC until then). */
void mscope_set_tsc_hz(struct mscope *ms, uint64_t hz);

/* Path of the ring file (valid until mscope_close). */
const char *mscope_ring_path(const struct mscope *ms);

/*
 * Record one batch of n packet ids.  dir is 0 for rx, MSCOPE_REC_F_TX for tx.
 * occupancy: input-queue length when the queue can tell, else
 * MSCOPE_OCC_UNKNOWN.  One TSC read per call.  Batches larger than
 * MSCOPE_MAX_BATCH are split into several records with the same TSC.
 *
 * Call it on empty polls too (rx, n == 0): it then writes an idle-poll
 * record (count 0) when the handle has written nothing for MSCOPE_IDLE_NS,
 * and nothing otherwise, so the analyzer can tell an NF that stopped
 * polling from an idle one (mscope_record.h).  A tx with n == 0 records
 * nothing; so does any empty poll with MSCOPE_F_NOIDLE.
 * Returns 0, or -ENOBUFS when the ring was full (the record is counted as
 * dropped), or -EINVAL for a NULL handle.
 */
int mscope_record_ids(struct mscope *ms, uint8_t dir, uint16_t port,
		      uint16_t queue, const uint64_t *ids, uint32_t n,
		      uint32_t occupancy);

static inline int
mscope_rx_ids(struct mscope *ms, uint16_t port, uint16_t queue,
	      const uint64_t *ids, uint32_t n, uint32_t occupancy)
{
	return mscope_record_ids(ms, 0, port, queue, ids, n, occupancy);
}

static inline int
mscope_tx_ids(struct mscope *ms, uint16_t port, uint16_t queue,
	      const uint64_t *ids, uint32_t n, uint32_t occupancy)
{
	return mscope_record_ids(ms, MSCOPE_REC_F_TX, port, queue, ids, n, occupancy);
}

/*
 * Record one rx batch with its addresses: the rx record of the n ids, then
 * an address record (MSCOPE_REC_F_ADDR) of the n words addrs[i] =
 * src_ipv4 << 32 | dst_ipv4 (0 for a packet that is not IPv4), both with
 * the tsc of one TSC read.  Batches larger than MSCOPE_MAX_BATCH become
 * several rx/address pairs with that tsc.  An address record is written
 * only after its rx record was; one that does not fit is dropped and
 * counted like any record.  Writes address records whatever the handle's
 * flags (MSCOPE_F_ADDRS is what mscope_rx on mbufs goes by).
 * Returns 0, or -ENOBUFS when the ring was full (for any record of the
 * call), or -EINVAL for a NULL handle.
 */
int mscope_rx_ids_addrs(struct mscope *ms, uint16_t port, uint16_t queue,
			const uint64_t *ids, const uint64_t *addrs, uint32_t n,
			uint32_t occupancy);

/*
 * Record that `port` refused `packets` at its input in the `window_ns`
 * before now (rte_eth_stats.imissed grew by that much since the previous
 * reading): a refused record (MSCOPE_REC_F_REFUSED, mscope_record.h).
 * queue and occupancy: the queue being polled and its occupancy
 * (MSCOPE_OCC_UNKNOWN if it cannot say).  The attach shim calls it; an NF
 * that links libmscope and reads its ports' stats may too.  packets == 0
 * records nothing.  Returns 0, or -ENOBUFS when the ring was full (counted
 * as a dropped record, with no packets: its words are not packet ids), or
 * -EINVAL for a NULL handle.
 */
int mscope_refused(struct mscope *ms, uint16_t port, uint16_t queue,
		   uint64_t packets, uint64_t window_ns, uint32_t occupancy);

/* Counters as the NF sees them (the ring file carries the same). */
struct mscope_stats {
	uint64_t records;
	uint64_t drop_records;
	uint64_t drop_packets;
};
void mscope_get_stats(const struct mscope *ms, struct mscope_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* MSCOPE_H */
