/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The producer side of an mscope ring: lockless, single-producer /
 * single-consumer, over a shared-memory file (layout in mscope_record.h).
 *
 * - One writer per ring: one NF lcore.  The functions are not thread-safe
 *   and not preemptible-safe in the sense of rte_ring: a producer that is
 *   descheduled between reserve and commit only delays the reader.
 * - Never blocks, never allocates: a record that does not fit is dropped and
 *   counted (drop_records/drop_packets, and a gap in seq).
 * - Memory ordering is the C11 model through the __atomic builtins, as in
 *   DPDK's rte_ring_c11_pvt.h: relaxed load of our own head, acquire load of
 *   the consumer's tail, release store of our head.
 */
#ifndef MSCOPE_RING_H
#define MSCOPE_RING_H

#include <stdint.h>
#include <string.h>
#include "mscope_record.h"

#ifndef likely
#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif

/* Producer-private state: lives in the NF's memory, never in the file. */
struct mscope_producer {
	struct mscope_ring_hdr *hdr;  /* mapped file */
	uint8_t *data;                /* hdr + hdr_size */
	uint64_t mask;                /* data_size - 1 */
	uint64_t head;                /* our copy of hdr->head */
	uint64_t tail_cache;          /* last tail seen; refreshed only when full */
	uint64_t seq;                 /* our copy of hdr->next_seq */
	uint64_t drop_records;
	uint64_t drop_packets;
	uint64_t warm;                /* data bytes [head, warm) prefetched for
				       * writing (mscope_ring_warm) */
	uint32_t pending;             /* bytes reserved (incl. padding), 0 if none */
	uint32_t pending_n;
	uint16_t nf_id;
	uint64_t last_tsc;            /* tsc of the last record written */
	uint64_t idle_tsc;            /* MSCOPE_IDLE_NS in TSC cycles; 0: never
				       * write idle-poll records */
};

/*
 * How far ahead of head the producer pulls ring lines into its cache for
 * writing.  Without it every record starts with stores to lines last
 * written a lap (8 MiB) ago and long evicted, each a read-for-ownership
 * miss: 9 lines (72 stores) per rx+tx pair of 32-packet records, and perf
 * put 13-19% of mscope_tx's samples on its first id store.  With the next
 * 512 bytes (a 32-packet record and a half) prefetched at each commit,
 * the next record's lines are in cache when it is written: a loop doing
 * what testpmd does around the callbacks went from 346 to 342 ns per
 * iteration (io) and from ~478 to 462 (macswap), nothing else changed
 * (docs/benchmarks.md, "Attach overhead").
 */
#define MSCOPE_RING_WARM_AHEAD 512U
#define MSCOPE_CACHE_LINE      64U

static inline uint64_t
mscope_rdtsc(void)
{
#if defined(__x86_64__) || defined(__i386__)
	return __builtin_ia32_rdtsc();
#elif defined(__aarch64__)
	uint64_t v;
	__asm__ volatile("mrs %0, cntvct_el0" : "=r"(v));
	return v;
#else
#error "mscope needs a cycle counter: x86-64 or aarch64"
#endif
}

/* Prefetch one line for writing: an exclusive copy, so the store that
 * follows needs no read-for-ownership.  PREFETCHW is a no-op on x86 CPUs
 * without it; gcc emits it for __builtin_prefetch(p, 1) only with
 * -mprfchw, hence the asm. */
static inline void
mscope_prefetch_w(const void *p)
{
#if defined(__x86_64__) || defined(__i386__)
	__asm__ volatile("prefetchw %0" : : "m"(*(const volatile char *)p));
#else
	__builtin_prefetch(p, 1, 3);
#endif
}

/* Pull the lines of [head, head + MSCOPE_RING_WARM_AHEAD) that are not yet
 * pulled: one prefetch per new line, ~4.5 per 32-packet record. */
static inline void
mscope_ring_warm(struct mscope_producer *p)
{
	const uint64_t end = p->head + MSCOPE_RING_WARM_AHEAD;

	if (unlikely((int64_t)(p->warm - p->head) < 0))
		p->warm = p->head & ~(uint64_t)(MSCOPE_CACHE_LINE - 1);
	while ((int64_t)(end - p->warm) > 0) {
		mscope_prefetch_w(p->data + (p->warm & p->mask));
		p->warm += MSCOPE_CACHE_LINE;
	}
}

/*
 * Reserve room for a record of n packet ids and return where the ids go, or
 * NULL when the ring is full (the record is then counted as dropped by
 * mscope_ring_commit/mscope_ring_drop; the caller does not touch the ring).
 * n must be <= MSCOPE_MAX_BATCH.
 */
static inline uint64_t *
mscope_ring_reserve(struct mscope_producer *p, uint32_t n)
{
	const uint64_t size = p->mask + 1;
	const uint32_t sz = MSCOPE_REC_SIZE(n);
	uint64_t pos = p->head & p->mask;
	uint64_t contig = size - pos;
	uint64_t need = contig < sz ? contig + sz : sz;

	if (unlikely(need > size - (p->head - p->tail_cache))) {
		/* Acquire pairs with the consumer's release-store of tail: the
		 * bytes it gave back are no longer being read. */
		p->tail_cache = __atomic_load_n(&p->hdr->tail, __ATOMIC_ACQUIRE);
		if (need > size - (p->head - p->tail_cache)) {
			p->pending = 0;
			return NULL;
		}
	}
	if (contig < sz) {
		/* Too close to the end: pad it out and start at offset 0.
		 * contig >= 8 because every record is a multiple of 8 bytes. */
		struct mscope_rec_hdr *pad = (struct mscope_rec_hdr *)(p->data + pos);
		pad->magic = MSCOPE_REC_MAGIC;
		pad->version = MSCOPE_REC_VERSION;
		pad->flags = MSCOPE_REC_F_PAD;
		pos = 0;
	}
	p->pending = (uint32_t)need;
	p->pending_n = n;
	return (uint64_t *)(p->data + pos + MSCOPE_REC_HDR_SIZE);
}

/* Count a record that could not be reserved.  Relaxed: only we write the
 * counters; the reader samples them and tolerates a stale value. */
static inline void
mscope_ring_drop(struct mscope_producer *p, uint32_t n)
{
	p->seq++;
	p->drop_records++;
	p->drop_packets += n;
	__atomic_store_n(&p->hdr->next_seq, p->seq, __ATOMIC_RELAXED);
	__atomic_store_n(&p->hdr->drop_records, p->drop_records, __ATOMIC_RELAXED);
	__atomic_store_n(&p->hdr->drop_packets, p->drop_packets, __ATOMIC_RELAXED);
}

/* Fill the header of the reserved record and publish it, with `count` in
 * its count field: the ids reserved, except for a batch-only record
 * (MSCOPE_REC_F_NOIDS), reserved with n = 0 and standing for count packets. */
static inline void
mscope_ring_commit_count(struct mscope_producer *p, uint8_t flags, uint16_t port,
			 uint16_t queue, uint32_t occupancy, uint64_t tsc,
			 uint16_t count)
{
	const uint32_t sz = MSCOPE_REC_SIZE(p->pending_n);
	uint64_t *r = (uint64_t *)(p->data + ((p->head + p->pending - sz) & p->mask));

	/* The 32-byte header as four 8-byte stores (the struct's fields in
	 * little-endian order, mscope_record.h) rather than ten narrow ones:
	 * fewer store-buffer entries per record.  Not measurable alone; with
	 * the changes around it the batch-only rx callback in testpmd went
	 * from 31.7 to 22.6 ns (bench/overhead.py, cycles). */
	r[0] = MSCOPE_REC_MAGIC | (uint64_t)MSCOPE_REC_VERSION << 16 |
	       (uint64_t)flags << 24 | (uint64_t)p->nf_id << 32 | (uint64_t)port << 48;
	r[1] = queue | (uint64_t)count << 16 | (uint64_t)occupancy << 32;
	r[2] = tsc;
	r[3] = p->seq++;
	p->last_tsc = tsc;
	p->head += p->pending;
	p->pending = 0;
	__atomic_store_n(&p->hdr->next_seq, p->seq, __ATOMIC_RELAXED);
	/* Release pairs with the consumer's acquire-load of head: the record
	 * bytes above are visible before the head that covers them. */
	__atomic_store_n(&p->hdr->head, p->head, __ATOMIC_RELEASE);
	mscope_ring_warm(p);
}

/* Fill the header of the reserved record (its ids written) and publish it. */
static inline void
mscope_ring_commit(struct mscope_producer *p, uint8_t flags, uint16_t port,
		   uint16_t queue, uint32_t occupancy, uint64_t tsc)
{
	mscope_ring_commit_count(p, flags, port, queue, occupancy, tsc,
				 (uint16_t)p->pending_n);
}

/* Write one record from an id array; returns 0, or -ENOBUFS when dropped.
 * Always inlined: once mscope_recorder.c called it from three places (the
 * address records added two), gcc -O2 made it an out-of-line function and
 * mscope_record_ids took 1-2 ns more per call (bench/fastpath.py, raw). */
static inline __attribute__((always_inline)) int
mscope_ring_write(struct mscope_producer *p, uint8_t flags, uint16_t port,
		  uint16_t queue, uint32_t occupancy, uint64_t tsc,
		  const uint64_t *ids, uint32_t n)
{
	uint64_t *slot = mscope_ring_reserve(p, n);

	if (unlikely(slot == NULL)) {
		/* an address record's words are not packets: its rx record,
		 * written, holds them (flags is a constant where inlined) */
		mscope_ring_drop(p, (flags & MSCOPE_REC_F_ADDR) ? 0 : n);
		return -105; /* -ENOBUFS, spelled out to keep this header libc-free */
	}
	memcpy(slot, ids, 8U * n);
	mscope_ring_commit(p, flags, port, queue, occupancy, tsc);
	return 0;
}

/*
 * An empty poll at `tsc`: an idle-poll record (rx, count 0) when nothing
 * was written for idle_tsc cycles, so a polling NF leaves a record at
 * least that often and a longer silence is a stop (mscope_record.h).
 * One compare when it is not due: what an idle NF pays per poll.
 */
static inline int
mscope_ring_idle(struct mscope_producer *p, uint16_t port, uint16_t queue,
		 uint32_t occupancy, uint64_t tsc)
{
	if (likely(tsc - p->last_tsc < p->idle_tsc) || p->idle_tsc == 0)
		return 0;
	if (likely(mscope_ring_write(p, 0, port, queue, occupancy, tsc, &tsc, 0) == 0))
		return 0;
	p->last_tsc = tsc;  /* dropped: retried an interval later, not every poll */
	return -105;
}

#endif /* MSCOPE_RING_H */
