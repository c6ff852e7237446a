/* SPDX-License-Identifier: BSD-3-Clause */
/* rte_mbuf batches into mscope records; ids carried rx->tx in a dynfield;
 * rx address records when the handle asks (MSCOPE_F_ADDRS); batch-only
 * records, no ids, when it asks for that (MSCOPE_F_NOIDS). */
#include <errno.h>
#include <rte_cycles.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_prefetch.h>

#include "mscope_dpdk.h"
#include "mscope_pktid.h"
#include "mscope_pvt.h"

/* The stamp: id plus who wrote it.  RX|nf: computed at nf's rx, to be taken
 * by nf's own tx.  TX|nf: sent by nf, to be taken by a downstream rx that
 * trusts upstream stamps (mbufs shared over rte_rings).
 *
 * A stamp counts only while the mbuf carries our dynamic flag: DPDK never
 * clears dynamic fields, but rte_pktmbuf_alloc() resets ol_flags, so an
 * mbuf freed and allocated again (for a packet the NF builds itself) does
 * not pass off an old packet's id as its own.  This is DPDK's own
 * convention for dynamic fields (cf. the rx timestamp field and flag). */
struct mscope_stamp {
	uint64_t id;
	uint32_t tag;
};
#define STAMP_RX 0x80000000U
#define STAMP_TX 0x40000000U

static int stamp_offset = -1;   /* -1: not yet registered, -2: unavailable */
static uint64_t stamp_flag;     /* ol_flags bit: the stamp is valid */

static void
register_stamp(void)
{
	static const struct rte_mbuf_dynfield desc = {
		.name = MSCOPE_DYNFIELD_NAME,
		.size = sizeof(struct mscope_stamp),
		.align = __alignof__(struct mscope_stamp),
	};
	static const struct rte_mbuf_dynflag flag_desc = {
		.name = MSCOPE_DYNFLAG_NAME,
	};
	int off = rte_mbuf_dynfield_register(&desc);
	int bit = off >= 0 ? rte_mbuf_dynflag_register(&flag_desc) : -1;

	/* Without the field or the flag (EAL not up, or no space) ids are
	 * recomputed at tx: still right unless the NF rewrote invariant fields. */
	if (off >= 0 && bit >= 0) {
		stamp_flag = 1ULL << bit;
		stamp_offset = off;
	} else {
		stamp_offset = -2;
	}
}

int
mscope_dpdk_register(void)
{
	if (stamp_offset == -1)
		register_stamp();
	return stamp_offset >= 0 ? stamp_offset : -1;
}

static inline struct mscope_stamp *
stamp_of(struct rte_mbuf *m)
{
	return RTE_MBUF_DYNFIELD(m, stamp_offset, struct mscope_stamp *);
}

uint64_t
mscope_mbuf_pktid(const struct rte_mbuf *m)
{
	return mscope_pktid_bytes(rte_pktmbuf_mtod(m, const uint8_t *),
				  rte_pktmbuf_data_len(m), rte_pktmbuf_pkt_len(m));
}

void
mscope_carry_id(struct rte_mbuf *dst, const struct rte_mbuf *src)
{
	if (stamp_offset >= 0) {
		*stamp_of(dst) = *stamp_of((struct rte_mbuf *)(uintptr_t)src);
		dst->ol_flags = (dst->ol_flags & ~stamp_flag) | (src->ol_flags & stamp_flag);
	}
}

static inline uint64_t
mbuf_ipv4_addrs(const struct rte_mbuf *m)
{
	return mscope_ipv4_addrs_bytes(rte_pktmbuf_mtod(m, const uint8_t *),
				       rte_pktmbuf_data_len(m));
}

/* The address record of an rx record just committed (MSCOPE_F_ADDRS):
 * written straight into the ring, a second pass over headers the id pass
 * has just brought into cache.  Out of line so the common path (flag off)
 * is one predicted branch per batch. */
static __rte_noinline int
record_addrs(struct mscope *ms, uint16_t port, uint16_t queue,
	     struct rte_mbuf **pkts, uint32_t k, uint32_t occupancy, uint64_t tsc)
{
	uint64_t *words = mscope_ring_reserve(&ms->prod, k);
	uint32_t i;

	if (unlikely(words == NULL)) {
		mscope_ring_drop(&ms->prod, k);
		return -ENOBUFS;
	}
	for (i = 0; i < k; i++)
		words[i] = mbuf_ipv4_addrs(pkts[i]);
	mscope_ring_commit(&ms->prod, MSCOPE_REC_F_ADDR, port, queue, occupancy, tsc);
	return 0;
}

/* Batch-only (MSCOPE_F_NOIDS): a 32-byte record per batch, count and tsc,
 * and no look at the packets at all: no header read, no stamp.  For
 * forwarding that never reads packet data (testpmd io), where computing
 * ids is most of the recorder's cost (bench/overhead.py). */
static __rte_noinline int
record_counts(struct mscope *ms, uint8_t flags, uint16_t port, uint16_t queue,
	      uint16_t n, uint32_t occupancy)
{
	const uint64_t tsc = rte_rdtsc();
	int rc = 0;

	flags |= MSCOPE_REC_F_NOIDS;
	while (n > 0) {
		const uint16_t k = n < MSCOPE_MAX_BATCH ? n : MSCOPE_MAX_BATCH;

		if (likely(mscope_ring_reserve(&ms->prod, 0) != NULL)) {
			mscope_ring_commit_count(&ms->prod, flags, port, queue,
						 occupancy, tsc, k);
		} else {
			mscope_ring_drop(&ms->prod, k);
			rc = -ENOBUFS;
		}
		n -= k;
	}
	return rc;
}

static int
record(struct mscope *ms, uint8_t flags, uint16_t port, uint16_t queue,
       struct rte_mbuf **pkts, uint16_t n, uint32_t occupancy)
{
	const uint64_t tsc = rte_rdtsc();
	const uint32_t own = (uint32_t)ms->prod.nf_id;
	const int tx = flags & MSCOPE_REC_F_TX;
	const int trust = !tx && (ms->flags & MSCOPE_F_TRUST_UPSTREAM);
	const int addrs = !tx && (ms->flags & MSCOPE_F_ADDRS);
	int rc = 0;

	if (unlikely(stamp_offset == -1))
		register_stamp();
	while (n > 0) {
		const uint32_t k = n < MSCOPE_MAX_BATCH ? n : MSCOPE_MAX_BATCH;
		uint64_t *ids = mscope_ring_reserve(&ms->prod, k);
		uint32_t i;

		/* rx is usually the first code to read the headers after the
		 * burst: prefetch the whole batch so the parser's misses overlap
		 * (74 -> 17 ns per packet with cold frames, ~0.5 ns when warm;
		 * bench/fastpath.py).  tx mostly reads stamps, not headers. */
		if (!tx)
			for (i = 0; i < k; i++)
				rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void *));
		if (unlikely(ids == NULL)) {
			/* Dropped, but rx still stamps so tx stays consistent. */
			mscope_ring_drop(&ms->prod, k);
			rc = -ENOBUFS;
		}
		for (i = 0; i < k; i++) {
			struct rte_mbuf *m = pkts[i];
			uint64_t id;

			if (likely(stamp_offset >= 0)) {
				struct mscope_stamp *s = stamp_of(m);
				const int valid = (m->ol_flags & stamp_flag) != 0;

				if (valid && (tx ? s->tag == (STAMP_RX | own)
						 : trust && (s->tag & STAMP_TX)))
					id = s->id;
				else
					id = mscope_mbuf_pktid(m);
				s->id = id;
				s->tag = (tx ? STAMP_TX : STAMP_RX) | own;
				m->ol_flags |= stamp_flag;
			} else {
				id = mscope_mbuf_pktid(m);
			}
			if (ids != NULL)
				ids[i] = id;
		}
		if (ids != NULL) {
			mscope_ring_commit(&ms->prod, flags, port, queue, occupancy, tsc);
			/* Only after an rx record that was written: the address
			 * record names its packets (mscope_record.h). */
			if (unlikely(addrs) &&
			    record_addrs(ms, port, queue, pkts, k, occupancy, tsc) != 0)
				rc = -ENOBUFS;
		}
		pkts += k;
		n -= k;
	}
	return rc;
}

int
mscope_rx(struct mscope *ms, uint16_t port, uint16_t queue,
	  struct rte_mbuf **pkts, uint16_t n, uint32_t occupancy)
{
	if (unlikely(ms == NULL))
		return -EINVAL;
	if (unlikely(ms->flags & MSCOPE_F_NOIDS))
		return n == 0 ? 0 : record_counts(ms, 0, port, queue, n, occupancy);
	return record(ms, 0, port, queue, pkts, n, occupancy);
}

int
mscope_tx(struct mscope *ms, uint16_t port, uint16_t queue,
	  struct rte_mbuf **pkts, uint16_t n, uint32_t occupancy)
{
	if (unlikely(ms == NULL))
		return -EINVAL;
	if (unlikely(ms->flags & MSCOPE_F_NOIDS))
		return n == 0 ? 0 : record_counts(ms, MSCOPE_REC_F_TX, port, queue, n,
						  occupancy);
	return record(ms, MSCOPE_REC_F_TX, port, queue, pkts, n, occupancy);
}
