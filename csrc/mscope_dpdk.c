/* SPDX-License-Identifier: BSD-3-Clause */
/* rte_mbuf batches into mscope records; ids carried rx->tx in a dynfield;
 * rx address records when the handle asks (MSCOPE_F_ADDRS); batch-only
 * records, no ids, when it asks for that (MSCOPE_F_NOIDS). */
#include <errno.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
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
		mscope_ring_drop(&ms->prod, 0);  /* its packets are in the rx record */
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
/* Port and queue in one argument: the out-of-line record functions take
 * six, all in registers, so the entry points reach them with a jump. */
#define PORTQ(port, queue) ((uint32_t)(port) << 16 | (queue))

static __rte_noinline int
record_counts(struct mscope *ms, uint8_t flags, uint32_t portq, uint16_t n,
	      uint32_t occupancy, uint64_t tsc)
{
	const uint16_t port = (uint16_t)(portq >> 16), queue = (uint16_t)portq;
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

/* The id of a packet from its headers: the per-packet work of rx, and of tx
 * for packets without our rx stamp.  Inlined into the loops below, not a
 * call to the exported mscope_mbuf_pktid (which -fPIC routes through the
 * PLT: 3.6% of the forwarding thread in testpmd macswap, bench/overhead.py
 * under perf). */
static __rte_always_inline uint64_t
pktid_of(const struct rte_mbuf *m)
{
	return mscope_pktid_bytes(rte_pktmbuf_mtod(m, const uint8_t *),
				  rte_pktmbuf_data_len(m), rte_pktmbuf_pkt_len(m));
}

uint64_t
mscope_mbuf_pktid(const struct rte_mbuf *m)
{
	return pktid_of(m);
}

/* rx ids of k packets into `ids` (a reserved ring slot), each stamped
 * {id, RX|own}: computed from headers, or with MSCOPE_F_TRUST_UPSTREAM
 * taken from an upstream tx stamp. */
static __rte_always_inline void
rx_ids(struct rte_mbuf **pkts, uint32_t k, uint64_t *ids, uint32_t own, int trust)
{
	const uint64_t flag = stamp_flag;
	const uint32_t tag = STAMP_RX | own;
	const int off = stamp_offset;
	uint32_t i;

	if (unlikely(off < 0)) {
		for (i = 0; i < k; i++)
			ids[i] = pktid_of(pkts[i]);
		return;
	}
	for (i = 0; i < k; i++) {
		struct rte_mbuf *m = pkts[i];
		struct mscope_stamp *s = RTE_MBUF_DYNFIELD(m, off, struct mscope_stamp *);
		uint64_t id;

		if (unlikely(trust) && (m->ol_flags & flag) && (s->tag & STAMP_TX))
			id = s->id;
		else
			id = pktid_of(m);
		s->id = id;
		s->tag = tag;
		m->ol_flags |= flag;
		ids[i] = id;
	}
}

/* tx ids of k packets into `ids`: our own rx stamp's id where the mbuf
 * still carries it (flag set, tag RX|own), else computed from headers;
 * each left stamped {id, TX|own} for a downstream rx that trusts it. */
static __rte_always_inline void
tx_ids(struct rte_mbuf **pkts, uint32_t k, uint64_t *ids, uint32_t own)
{
	const uint64_t flag = stamp_flag;
	const uint32_t rx_tag = STAMP_RX | own, tx_tag = STAMP_TX | own;
	const int off = stamp_offset;
	uint32_t i;

	if (unlikely(off < 0)) {
		for (i = 0; i < k; i++)
			ids[i] = pktid_of(pkts[i]);
		return;
	}
	for (i = 0; i < k; i++) {
		struct rte_mbuf *m = pkts[i];
		struct mscope_stamp *s = RTE_MBUF_DYNFIELD(m, off, struct mscope_stamp *);
		uint64_t id;

		if ((m->ol_flags & flag) && s->tag == rx_tag) {
			id = s->id;                 /* the id stays: only the tag moves */
		} else {
			id = pktid_of(m);
			s->id = id;
			m->ol_flags |= flag;
		}
		s->tag = tx_tag;
		ids[i] = id;
	}
}

/* A full ring: the record is dropped and counted, but the stamps are still
 * written, so tx stays consistent with rx: the ids go to a scratch buffer
 * instead of the ring.  Out of line: the common path writes ids straight
 * into the ring and tests nothing per packet. */
static __rte_noinline void
stamp_only(struct mscope *ms, int tx, struct rte_mbuf **pkts, uint32_t k)
{
	const uint32_t own = (uint32_t)ms->prod.nf_id;
	uint64_t scratch[MSCOPE_MAX_BATCH];

	mscope_ring_drop(&ms->prod, k);
	if (stamp_offset < 0)
		return;
	if (tx)
		tx_ids(pkts, k, scratch, own);
	else
		rx_ids(pkts, k, scratch, own, (ms->flags & MSCOPE_F_TRUST_UPSTREAM) != 0);
}

static __rte_always_inline int
record(struct mscope *ms, const int tx, uint16_t port, uint16_t queue,
       struct rte_mbuf **pkts, uint16_t n, uint32_t occupancy, uint64_t tsc)
{
	const uint32_t own = (uint32_t)ms->prod.nf_id;
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
			stamp_only(ms, tx, pkts, k);
			rc = -ENOBUFS;
		} else {
			if (tx)
				tx_ids(pkts, k, ids, own);
			else
				rx_ids(pkts, k, ids, own, trust);
			mscope_ring_commit(&ms->prod, tx ? MSCOPE_REC_F_TX : 0, port, queue,
					   occupancy, tsc);
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

static __rte_noinline int
record_rx(struct mscope *ms, struct rte_mbuf **pkts, uint16_t n, uint32_t portq,
	  uint32_t occupancy, uint64_t tsc)
{
	return record(ms, 0, (uint16_t)(portq >> 16), (uint16_t)portq, pkts, n,
		      occupancy, tsc);
}

static __rte_noinline int
record_tx(struct mscope *ms, struct rte_mbuf **pkts, uint16_t n, uint32_t portq,
	  uint32_t occupancy, uint64_t tsc)
{
	return record(ms, 1, (uint16_t)(portq >> 16), (uint16_t)portq, pkts, n,
		      occupancy, tsc);
}

/* Refusals per port (mscope_dpdk_read_refused): imissed and the TSC at the
 * last reading.  `busy` lets one lcore at a time read a port. */
static struct refused_port {
	uint64_t missed;
	uint64_t tsc;
	int busy;
	int8_t state;          /* 0 not read yet, 1 read, -1 no stats */
} __rte_cache_aligned refused_port[RTE_MAX_ETHPORTS];

int
mscope_dpdk_read_refused(struct mscope *ms, uint16_t port, uint16_t queue,
			 uint32_t occupancy)
{
	struct refused_port *pr;
	struct rte_eth_stats st;
	uint64_t t;
	int rc = 0;

	if (unlikely(ms == NULL) || port >= RTE_MAX_ETHPORTS)
		return -EINVAL;
	pr = &refused_port[port];
	if (__atomic_load_n(&pr->state, __ATOMIC_RELAXED) < 0)
		return -ENOTSUP;
	if (__atomic_exchange_n(&pr->busy, 1, __ATOMIC_ACQUIRE))
		return -EBUSY;
	if (rte_eth_stats_get(port, &st) != 0) {
		__atomic_store_n(&pr->state, -1, __ATOMIC_RELAXED);
		rc = -ENOTSUP;
	} else {
		t = rte_rdtsc();
		/* the first reading (or one after the app reset the stats)
		 * is where counting starts: what came before is not ours */
		if (pr->state == 1 && st.imissed > pr->missed)
			rc = mscope_refused(ms, port, queue, st.imissed - pr->missed,
					    (uint64_t)((double)(t - pr->tsc) * 1e9 /
						       (double)rte_get_tsc_hz()),
					    occupancy) == 0 ? 1 : -ENOBUFS;
		pr->missed = st.imissed;
		pr->tsc = t;
		pr->state = 1;
	}
	__atomic_store_n(&pr->busy, 0, __ATOMIC_RELEASE);
	return rc;
}

/* The fast-path entry points bind to themselves inside libmscope: the
 * attach callbacks (mscope_attach.c) call them directly, not through the
 * PLT; the symbols stay exported for NFs that link libmscope.  They read
 * the TSC, pick the record kind and jump: kept small so a batch-only
 * record does not pay for the id loops' stack frame (with those inlined
 * here, testpmd io batch-only kept 0.79 of its rate instead of 0.83,
 * bench/overhead.py). */
#define MSCOPE_SELF_BOUND __attribute__((visibility("protected")))

MSCOPE_SELF_BOUND int
mscope_rx(struct mscope *ms, uint16_t port, uint16_t queue,
	  struct rte_mbuf **pkts, uint16_t n, uint32_t occupancy)
{
	const uint64_t tsc = rte_rdtsc();

	if (unlikely(ms == NULL))
		return -EINVAL;
	if (n == 0)  /* an empty poll: an idle-poll record at most per interval */
		return mscope_ring_idle(&ms->prod, port, queue, occupancy, tsc);
	if (unlikely(ms->flags & MSCOPE_F_NOIDS))
		return record_counts(ms, 0, PORTQ(port, queue), n, occupancy, tsc);
	return record_rx(ms, pkts, n, PORTQ(port, queue), occupancy, tsc);
}

MSCOPE_SELF_BOUND int
mscope_tx_at(struct mscope *ms, uint16_t port, uint16_t queue,
	     struct rte_mbuf **pkts, uint16_t n, uint32_t occupancy, uint64_t tsc)
{
	if (unlikely(ms == NULL))
		return -EINVAL;
	if (unlikely(ms->flags & MSCOPE_F_NOIDS))
		return n == 0 ? 0 : record_counts(ms, MSCOPE_REC_F_TX, PORTQ(port, queue), n,
						  occupancy, tsc);
	return record_tx(ms, pkts, n, PORTQ(port, queue), occupancy, tsc);
}

MSCOPE_SELF_BOUND int
mscope_tx(struct mscope *ms, uint16_t port, uint16_t queue,
	  struct rte_mbuf **pkts, uint16_t n, uint32_t occupancy)
{
	/* protected: a direct call (or a jump), no PLT */
	return mscope_tx_at(ms, port, queue, pkts, n, occupancy, rte_rdtsc());
}
