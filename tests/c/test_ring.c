/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Unit tests of the ring, the raw recorder (address and refused records
 * included) and the reader (batch-only and refused records included) in
 * one process.
 *   test_ring DIR      (DIR: an empty scratch registry directory)
 * Exit status 0 when every check passed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "mscope.h"
#include "mscope_pvt.h"
#include "mscope_reader.h"
#include "check.h"

static const char *dir;

static struct mscope_rec_hdr recs[1 << 16];
static uint64_t ids[1 << 20];

static struct mscope *
open_ring(const char *name, size_t bytes)
{
	struct mscope_params p = { .nf_name = name, .nf_id = 9, .lcore = 2,
				   .ring_bytes = bytes, .dir = dir };
	struct mscope *ms = mscope_open(&p);

	if (ms == NULL) {
		fprintf(stderr, "mscope_open(%s): %s\n", name, strerror(errno));
		exit(1);
	}
	return ms;
}

static uint32_t
count_of(uint64_t seq, uint32_t maxb)
{
	return 1 + (uint32_t)((seq * 2654435761ULL) % maxb);
}

static void
write_pattern(struct mscope *ms, uint64_t seq, uint32_t n)
{
	uint64_t buf[MSCOPE_MAX_BATCH];
	uint32_t i;

	for (i = 0; i < n; i++)
		buf[i] = seq * 4096 + i;
	mscope_record_ids(ms, seq & 1, (uint16_t)seq, (uint16_t)(seq >> 3), buf, n,
			  (uint32_t)seq * 3);
}

/* Drain everything and check each record against the pattern; returns the
 * number of records and advances *expect_seq. */
static long
drain_check(struct mscope_reader *r, uint64_t *expect_seq, uint32_t maxb)
{
	long total = 0, got;
	uint64_t nids, off, k;

	while ((got = mscope_reader_drain(r, recs, 1 << 16, ids, 1 << 20, &nids)) > 0) {
		off = 0;
		for (long i = 0; i < got; i++) {
			const struct mscope_rec_hdr *h = &recs[i];
			uint64_t s = *expect_seq;
			CHECK(h->seq == s, "seq %llu want %llu", (unsigned long long)h->seq,
			      (unsigned long long)s);
			CHECK(h->count == count_of(s, maxb), "count %u at seq %llu", h->count,
			      (unsigned long long)s);
			CHECK(h->flags == (s & 1) && h->port == (uint16_t)s &&
			      h->queue == (uint16_t)(s >> 3) && h->occupancy == (uint32_t)s * 3 &&
			      h->nf_id == 9 && h->magic == MSCOPE_REC_MAGIC,
			      "header fields at seq %llu", (unsigned long long)s);
			for (k = 0; k < h->count; k++)
				if (ids[off + k] != s * 4096 + k) {
					CHECK(0, "id %llu of seq %llu", (unsigned long long)k,
					      (unsigned long long)s);
					break;
				}
			off += h->count;
			*expect_seq = s + 1;
		}
		CHECK(off == nids, "ids %llu vs counts %llu", (unsigned long long)nids,
		      (unsigned long long)off);
		total += got;
	}
	CHECK(got == 0, "drain returned %ld", got);
	return total;
}

static void
test_wraparound(void)
{
	struct mscope *ms = open_ring("wrap", MSCOPE_RING_MIN_DATA);
	struct mscope_reader r;
	uint64_t seq = 0, expect = 0, laps;
	struct mscope_stats st;

	CHECK(mscope_reader_open(mscope_ring_path(ms), 1, &r) == 0, "open");
	/* Fill to about half, drain, repeat: records straddle the end of the
	 * data area in every position, so padding is exercised. */
	while (ms->prod.head < 300ULL * MSCOPE_RING_MIN_DATA) {
		for (int i = 0; i < 50; i++, seq++)
			write_pattern(ms, seq, count_of(seq, 64));
		drain_check(&r, &expect, 64);
	}
	laps = ms->prod.head / MSCOPE_RING_MIN_DATA;
	mscope_get_stats(ms, &st);
	CHECK(laps >= 300, "laps %llu", (unsigned long long)laps);
	CHECK(expect == seq, "drained %llu of %llu", (unsigned long long)expect,
	      (unsigned long long)seq);
	CHECK(st.drop_records == 0, "drops %llu", (unsigned long long)st.drop_records);
	mscope_reader_close(&r);
	mscope_close(ms);
}

static void
test_full_ring_drops(void)
{
	struct mscope *ms = open_ring("full", MSCOPE_RING_MIN_DATA);
	const uint32_t per = (MSCOPE_RING_MIN_DATA) / MSCOPE_REC_SIZE(4);   /* 1024 */
	uint64_t buf[4] = {1, 2, 3, 4};
	struct mscope_reader r;
	struct mscope_stats st;
	uint64_t nids;
	long got;
	uint32_t i;
	int rc;

	for (i = 0; i < per; i++)
		CHECK(mscope_record_ids(ms, 0, 0, 0, buf, 4, 0) == 0, "record %u fits", i);
	for (i = 0; i < 10; i++) {
		rc = mscope_record_ids(ms, 0, 0, 0, buf, 4, 0);
		CHECK(rc == -ENOBUFS, "record %u past full returned %d", i, rc);
	}
	mscope_get_stats(ms, &st);
	CHECK(st.records == per && st.drop_records == 10 && st.drop_packets == 40,
	      "records %llu drops %llu/%llu", (unsigned long long)st.records,
	      (unsigned long long)st.drop_records, (unsigned long long)st.drop_packets);
	CHECK(ms->prod.hdr->drop_records == 10 && ms->prod.hdr->drop_packets == 40,
	      "shared counters");
	CHECK(mscope_reader_open(mscope_ring_path(ms), 1, &r) == 0, "open");
	got = mscope_reader_drain(&r, recs, 1 << 16, ids, 1 << 20, &nids);
	CHECK(got == (long)per && nids == 4ULL * per, "drained %ld", got);
	CHECK(recs[per - 1].seq == per - 1, "last seq");
	/* Space is back: the next record takes seq per + 10 (the ten drops
	 * consumed their numbers). */
	CHECK(mscope_record_ids(ms, 0, 0, 0, buf, 4, 0) == 0, "after drain");
	got = mscope_reader_drain(&r, recs, 1 << 16, ids, 1 << 20, &nids);
	CHECK(got == 1 && recs[0].seq == per + 10, "seq after drops %llu",
	      (unsigned long long)recs[0].seq);
	mscope_reader_close(&r);
	mscope_close(ms);
}

static void
test_limits_and_split(void)
{
	struct mscope *ms = open_ring("split", MSCOPE_RING_MIN_DATA * 4);
	static uint64_t big[2500];
	struct mscope_reader r;
	uint64_t nids, expect = 0;
	long got;
	int i;

	for (i = 0; i < 2500; i++)
		big[i] = 1000000 + i;
	ms->prod.last_tsc = mscope_rdtsc();  /* an idle-poll record not due */
	CHECK(mscope_record_ids(ms, 0, 0, 0, big, 0, 0) == 0, "n=0 is a no-op");
	CHECK(mscope_record_ids(ms, MSCOPE_REC_F_TX, 1, 2, big, 2500, 5) == 0, "big batch");
	CHECK(mscope_reader_open(mscope_ring_path(ms), 1, &r) == 0, "open");
	got = mscope_reader_drain(&r, recs, 16, ids, 1 << 20, &nids);
	CHECK(got == 3, "split into %ld records", got);
	CHECK(recs[0].count == 1024 && recs[1].count == 1024 && recs[2].count == 452,
	      "split counts");
	CHECK(recs[0].tsc == recs[2].tsc && recs[0].seq == 0 && recs[2].seq == 2,
	      "one tsc, consecutive seqs");
	CHECK(nids == 2500 && ids[0] == 1000000 && ids[2499] == 1002499, "ids");
	CHECK(recs[1].flags == MSCOPE_REC_F_TX, "tx flag");

	/* Caller buffers smaller than what is available: drain in pieces. */
	for (i = 0; i < 100; i++)
		write_pattern(ms, (uint64_t)i + 3, count_of((uint64_t)i + 3, 32));
	expect = 3;
	{
		long total = 0;
		while ((got = mscope_reader_drain(&r, recs, 7, ids, 200, &nids)) > 0) {
			for (long k = 0; k < got; k++)
				CHECK(recs[k].seq == expect + (uint64_t)k, "piecewise seq");
			expect += (uint64_t)got;
			total += got;
			CHECK(nids <= 200, "id limit respected");
		}
		CHECK(total == 100, "piecewise total %ld", total);
	}
	/* An id buffer too small for even the next record is an error, not an
	 * empty ring: a reader would otherwise stall on it forever. */
	write_pattern(ms, 200, 10);
	got = mscope_reader_drain(&r, recs, 16, ids, 4, &nids);
	CHECK(got == -ENOSPC && nids == 0, "tiny id buffer: %ld", got);
	got = mscope_reader_drain(&r, recs, 16, ids, 10, &nids);
	CHECK(got == 1 && nids == 10, "then drains with room: %ld", got);
	mscope_reader_close(&r);
	mscope_close(ms);
}

/* addr must be the address record of rx: the contract in mscope_record.h. */
static void
check_addr_pair(const struct mscope_rec_hdr *rx, const struct mscope_rec_hdr *addr)
{
	CHECK(rx->flags == 0 && addr->flags == MSCOPE_REC_F_ADDR,
	      "flags %u, %u", rx->flags, addr->flags);
	CHECK(addr->seq == rx->seq + 1, "address seq %llu after rx seq %llu",
	      (unsigned long long)addr->seq, (unsigned long long)rx->seq);
	CHECK(addr->tsc == rx->tsc && addr->count == rx->count &&
	      addr->port == rx->port && addr->queue == rx->queue &&
	      addr->occupancy == rx->occupancy && addr->nf_id == rx->nf_id,
	      "address header at seq %llu", (unsigned long long)addr->seq);
}

static void
test_addr_records(void)
{
	struct mscope *ms = open_ring("addrs", MSCOPE_RING_MIN_DATA * 4);
	static uint64_t big_ids[2500], big_addrs[2500];
	const uint64_t a3[3] = { 0x0a000001c0a80001ULL, 0, 0xffffffff00000001ULL };
	const uint64_t i3[3] = { 11, 12, 13 };
	struct mscope_reader r;
	uint64_t nids, off;
	long got;
	int i, k;

	CHECK(mscope_rx_ids_addrs(NULL, 0, 0, i3, a3, 3, 0) == -EINVAL, "NULL handle");
	CHECK(mscope_rx_ids_addrs(ms, 0, 0, i3, a3, 0, 0) == 0, "n=0 is a no-op");
	CHECK(mscope_rx_ids_addrs(ms, 7, 3, i3, a3, 3, 42) == 0, "one pair");
	for (i = 0; i < 2500; i++) {
		big_ids[i] = 5000000 + i;
		big_addrs[i] = (uint64_t)(0x0a000000 + i) << 32 | (0xc0a80000U + (uint32_t)i);
	}
	CHECK(mscope_rx_ids_addrs(ms, 1, 2, big_ids, big_addrs, 2500,
				  MSCOPE_OCC_UNKNOWN) == 0, "big batch");
	CHECK(mscope_reader_open(mscope_ring_path(ms), 1, &r) == 0, "open");
	got = mscope_reader_drain(&r, recs, 16, ids, 1 << 20, &nids);
	CHECK(got == 8 && nids == 2 * 3 + 2 * 2500, "1 + 3 pairs: %ld records", got);
	if (got == 8) {
		CHECK(recs[0].seq == 0 && recs[0].port == 7 && recs[0].queue == 3 &&
		      recs[0].occupancy == 42 && recs[0].count == 3, "first rx header");
		for (i = 0; i < 8; i += 2)
			check_addr_pair(&recs[i], &recs[i + 1]);
		CHECK(ids[0] == 11 && ids[2] == 13 && ids[3] == a3[0] && ids[4] == 0 &&
		      ids[5] == a3[2], "the words as given");
		/* The big batch: rx/address pairs of 1024, 1024, 452, one tsc. */
		CHECK(recs[2].count == 1024 && recs[4].count == 1024 && recs[6].count == 452,
		      "split counts %u %u %u", recs[2].count, recs[4].count, recs[6].count);
		CHECK(recs[2].tsc == recs[7].tsc && recs[2].tsc >= recs[0].tsc, "one tsc per call");
		CHECK(recs[2].seq == 2 && recs[7].seq == 7, "consecutive seqs");
		off = 6;
		for (i = 2; i < 8; i += 2) {
			const uint64_t *w = &ids[off], *a = &ids[off + recs[i].count];
			const uint32_t base = 1024U * (uint32_t)((i - 2) / 2);

			for (k = 0; k < recs[i].count; k++)
				if (w[k] != big_ids[base + k] || a[k] != big_addrs[base + k]) {
					CHECK(0, "pair %d word %d", i / 2, k);
					break;
				}
			off += 2U * recs[i].count;
		}
	}
	mscope_reader_close(&r);
	mscope_close(ms);
}

/* On a full ring: an rx record that does not fit takes no address record
 * with it (one seq, one drop); an address record that does not fit after
 * its rx record is dropped and counted like any record. */
static void
test_addr_records_full_ring(void)
{
	struct mscope *ms = open_ring("addrfull", MSCOPE_RING_MIN_DATA);
	const uint32_t pairs = MSCOPE_RING_MIN_DATA / (2 * MSCOPE_REC_SIZE(4));   /* 512 */
	const uint64_t id4[4] = {1, 2, 3, 4}, ad4[4] = {0x0a0000010a000002ULL, 0, 5, 6};
	struct mscope_reader r;
	struct mscope_stats st;
	uint64_t nids;
	long got;
	uint32_t i;
	int rc;

	/* Fill all but one 4-id record's room: 511 pairs and one lone rx. */
	for (i = 0; i < pairs - 1; i++)
		CHECK(mscope_rx_ids_addrs(ms, 0, 0, id4, ad4, 4, 0) == 0, "pair %u fits", i);
	CHECK(mscope_rx_ids(ms, 0, 0, id4, 4, 0) == 0, "lone rx");
	/* seq 1023: rx fits in the last 64 bytes, its address record (1024)
	 * does not. */
	rc = mscope_rx_ids_addrs(ms, 0, 0, id4, ad4, 4, 0);
	CHECK(rc == -ENOBUFS, "address record past full returned %d", rc);
	mscope_get_stats(ms, &st);
	CHECK(st.records == 2 * (pairs - 1) + 2 && st.drop_records == 1 &&
	      st.drop_packets == 0, "after the address drop: records %llu drops %llu/%llu",
	      (unsigned long long)st.records, (unsigned long long)st.drop_records,
	      (unsigned long long)st.drop_packets);
	/* seq 1025, 1026: rx records that do not fit, no address records. */
	for (i = 0; i < 2; i++) {
		rc = mscope_rx_ids_addrs(ms, 0, 0, id4, ad4, 4, 0);
		CHECK(rc == -ENOBUFS, "rx past full returned %d", rc);
	}
	mscope_get_stats(ms, &st);
	CHECK(st.drop_records == 3 && st.drop_packets == 8 &&
	      ms->prod.seq == 2 * (pairs - 1) + 2 + 3,
	      "rx drops take one seq each: drops %llu/%llu, next seq %llu",
	      (unsigned long long)st.drop_records, (unsigned long long)st.drop_packets,
	      (unsigned long long)ms->prod.seq);
	CHECK(ms->prod.hdr->drop_records == 3 && ms->prod.hdr->drop_packets == 8 &&
	      ms->prod.hdr->next_seq == ms->prod.seq, "shared counters");

	CHECK(mscope_reader_open(mscope_ring_path(ms), 1, &r) == 0, "open");
	got = mscope_reader_drain(&r, recs, 1 << 16, ids, 1 << 20, &nids);
	CHECK(got == 2 * (long)pairs, "drained %ld", got);
	if (got == 2 * (long)pairs) {
		for (i = 0; i + 1 < 2 * (pairs - 1); i += 2)
			check_addr_pair(&recs[i], &recs[i + 1]);
		CHECK(recs[got - 2].flags == 0 && recs[got - 2].seq == 1022 &&
		      recs[got - 1].flags == 0 && recs[got - 1].seq == 1023,
		      "the lone rx, then the rx whose address record was dropped");
	}
	/* Room again: the next pair takes seqs 1027 and 1028. */
	CHECK(mscope_rx_ids_addrs(ms, 0, 0, id4, ad4, 4, 0) == 0, "after drain");
	got = mscope_reader_drain(&r, recs, 1 << 16, ids, 1 << 20, &nids);
	CHECK(got == 2 && recs[0].seq == 1027 && nids == 8 && ids[4] == ad4[0],
	      "pair after drops: %ld records, seq %llu", got, (unsigned long long)recs[0].seq);
	if (got == 2)
		check_addr_pair(&recs[0], &recs[1]);
	mscope_reader_close(&r);
	mscope_close(ms);
}

/* A batch-only record as mscope_dpdk.c writes one (MSCOPE_F_NOIDS): the
 * header alone, `count` packets.  The raw recorder has no call for it, so
 * the ring is written directly.  Extra flag bits are the caller's (the
 * corruption tests set MSCOPE_REC_F_ADDR with it). */
static int
write_batch_only(struct mscope *ms, uint8_t flags, uint16_t port, uint16_t count,
		 uint64_t tsc)
{
	if (mscope_ring_reserve(&ms->prod, 0) == NULL) {
		mscope_ring_drop(&ms->prod, count);
		return -ENOBUFS;
	}
	mscope_ring_commit_count(&ms->prod, flags | MSCOPE_REC_F_NOIDS, port,
				 (uint16_t)(port + 1), (uint32_t)tsc, tsc, count);
	return 0;
}

/*
 * One round of the mixed pattern, from seq s (5 records):
 *   s     full rx of count_of(s, 64) ids       s*4096 + i
 *   s+1   its address record                   s*4096 + 2048 + i
 *   s+2   batch-only rx, 4*(1 + s%256) packets (a multiple of 4: a reader
 *         taking ids after it would land exactly on a later header)
 *   s+3   batch-only tx of 1024 packets        (more than the ring holds
 *         below head if read as ids)
 *   s+4   full tx of count_of(s+4, 64) ids     (s+4)*4096 + i
 */
static void
write_mixed_round(struct mscope *ms, uint64_t s)
{
	uint64_t w[MSCOPE_MAX_BATCH], a[MSCOPE_MAX_BATCH];
	uint32_t n = count_of(s, 64), i;

	for (i = 0; i < n; i++) {
		w[i] = s * 4096 + i;
		a[i] = s * 4096 + 2048 + i;
	}
	CHECK(mscope_rx_ids_addrs(ms, 1, 2, w, a, n, 7) == 0, "pair at %llu",
	      (unsigned long long)s);
	CHECK(write_batch_only(ms, 0, 3, (uint16_t)(4 * (1 + s % 256)), s) == 0,
	      "batch-only rx at %llu", (unsigned long long)s);
	CHECK(write_batch_only(ms, MSCOPE_REC_F_TX, 4, MSCOPE_MAX_BATCH, s) == 0,
	      "batch-only tx at %llu", (unsigned long long)s);
	n = count_of(s + 4, 64);
	for (i = 0; i < n; i++)
		w[i] = (s + 4) * 4096 + i;
	CHECK(mscope_tx_ids(ms, 5, 0, w, n, 9) == 0, "tx at %llu", (unsigned long long)s);
}

/* Check drained records against write_mixed_round; returns the ids they
 * account for (which must be what the drain said it copied). */
static uint64_t
check_mixed(const struct mscope_rec_hdr *rv, long got, const uint64_t *iv,
	    uint64_t *expect_seq)
{
	uint64_t off = 0;

	for (long k = 0; k < got; k++) {
		const struct mscope_rec_hdr *h = &rv[k];
		const uint64_t s = *expect_seq, base = s - s % 5;
		uint32_t want_count, want_ids, j;
		uint8_t want_flags;
		uint64_t first;

		CHECK(h->seq == s, "seq %llu want %llu", (unsigned long long)h->seq,
		      (unsigned long long)s);
		switch (s % 5) {
		case 0: want_flags = 0; want_count = count_of(s, 64);
			first = s * 4096; break;
		case 1: want_flags = MSCOPE_REC_F_ADDR; want_count = count_of(base, 64);
			first = base * 4096 + 2048; break;
		case 2: want_flags = MSCOPE_REC_F_NOIDS;
			want_count = 4 * (1 + base % 256); first = 0; break;
		case 3: want_flags = MSCOPE_REC_F_NOIDS | MSCOPE_REC_F_TX;
			want_count = MSCOPE_MAX_BATCH; first = 0; break;
		default: want_flags = MSCOPE_REC_F_TX; want_count = count_of(s, 64);
			first = s * 4096; break;
		}
		CHECK(h->flags == want_flags && h->count == want_count,
		      "seq %llu: flags %#x count %u, want %#x %u", (unsigned long long)s,
		      h->flags, h->count, want_flags, want_count);
		want_ids = (want_flags & MSCOPE_REC_F_NOIDS) ? 0 : want_count;
		CHECK(mscope_rec_n_ids(h) == want_ids, "n_ids of seq %llu",
		      (unsigned long long)s);
		if (want_flags & MSCOPE_REC_F_NOIDS)
			CHECK(h->tsc == base && h->occupancy == (uint32_t)base &&
			      h->port == h->queue - 1 && h->magic == MSCOPE_REC_MAGIC,
			      "batch-only header at seq %llu", (unsigned long long)s);
		for (j = 0; j < want_ids; j++)
			if (iv[off + j] != first + j) {
				CHECK(0, "id %u of seq %llu: %llu", j, (unsigned long long)s,
				      (unsigned long long)iv[off + j]);
				break;
			}
		off += want_ids;
		*expect_seq = s + 1;
	}
	return off;
}

/* Full, address and batch-only records mixed in one ring, over many laps of
 * a small one (so batch-only records meet the padding at every offset),
 * drained whole and in pieces: each record is delivered with its count and
 * only full and address records take ids. */
static void
test_batch_only_records(void)
{
	struct mscope *ms = open_ring("batchonly", MSCOPE_RING_MIN_DATA);
	struct mscope_reader r;
	uint64_t s = 0, expect = 0, nids, seen;
	long got;
	int round, piecewise = 0;

	CHECK(mscope_reader_open(mscope_ring_path(ms), 1, &r) == 0, "open");
	while (ms->prod.head < 200ULL * MSCOPE_RING_MIN_DATA) {
		for (round = 0; round < 20; round++, s += 5)
			write_mixed_round(ms, s);
		piecewise = !piecewise;
		/* Every other lap in small pieces: 3 records and MAX_BATCH ids
		 * at a time, so drains stop at id and record limits next to
		 * batch-only records. */
		while ((got = mscope_reader_drain(&r, recs, piecewise ? 3 : 1 << 16, ids,
						  piecewise ? MSCOPE_MAX_BATCH : 1 << 20,
						  &nids)) > 0) {
			seen = check_mixed(recs, got, ids, &expect);
			CHECK(seen == nids, "drain copied %llu ids, records account for %llu",
			      (unsigned long long)nids, (unsigned long long)seen);
		}
		CHECK(got == 0, "drain returned %ld at seq %llu", got,
		      (unsigned long long)expect);
		if (got != 0)
			break;
	}
	CHECK(expect == s && ms->prod.hdr->drop_records == 0,
	      "drained %llu of %llu", (unsigned long long)expect, (unsigned long long)s);
	mscope_reader_close(&r);
	mscope_close(ms);
}

/* Batch-only records need no room for ids: they drain with any id buffer,
 * and one at the very end of what was published is whole at 32 bytes
 * however large its count. */
static void
test_batch_only_no_id_room(void)
{
	struct mscope *ms = open_ring("bonoroom", MSCOPE_RING_MIN_DATA);
	const uint64_t ten[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
	struct mscope_reader r;
	uint64_t nids = 99;
	long got;

	CHECK(mscope_reader_open(mscope_ring_path(ms), 1, &r) == 0, "open");
	CHECK(write_batch_only(ms, 0, 0, MSCOPE_MAX_BATCH, 1) == 0, "lone batch-only");
	CHECK(ms->prod.head == MSCOPE_REC_HDR_SIZE, "32 bytes whatever the count");
	got = mscope_reader_drain(&r, recs, 16, NULL, 0, &nids);
	CHECK(got == 1 && nids == 0 && recs[0].count == MSCOPE_MAX_BATCH,
	      "batch-only of 1024 packets drains with no id room: %ld, %llu ids", got,
	      (unsigned long long)nids);
	CHECK(write_batch_only(ms, 0, 0, 3, 2) == 0 && write_batch_only(ms, 0, 0, 5, 3) == 0 &&
	      mscope_rx_ids(ms, 0, 0, ten, 10, 0) == 0, "two batch-only, one full");
	got = mscope_reader_drain(&r, recs, 16, ids, 4, &nids);
	CHECK(got == 2 && nids == 0 && recs[0].count == 3 && recs[1].count == 5,
	      "batch-only records before a full one that does not fit: %ld", got);
	got = mscope_reader_drain(&r, recs, 16, ids, 4, &nids);
	CHECK(got == -ENOSPC && nids == 0, "then the full one needs room: %ld", got);
	got = mscope_reader_drain(&r, recs, 16, ids, 10, &nids);
	CHECK(got == 1 && nids == 10 && ids[9] == 10, "and drains with it: %ld", got);
	CHECK(r.tail == ms->prod.head, "tail at head");
	mscope_reader_close(&r);
	mscope_close(ms);
}

/* Drain `ms`'s ring, whose record at byte `at` is forged: the `want`
 * records before it come out (`want_ids` ids, left in ids[]), then the
 * drain stops at its offset, corrupt, and stays so. */
static void
check_corrupt_at(struct mscope *ms, uint64_t at, long want, uint64_t want_ids,
		 const char *what)
{
	struct mscope_reader r;
	uint64_t nids;
	long got;

	CHECK(mscope_reader_open(mscope_ring_path(ms), 1, &r) == 0, "open");
	got = mscope_reader_drain(&r, recs, 16, ids, 1 << 20, &nids);
	CHECK(got == want && nids == want_ids, "%s: the %ld before it: %ld", what, want, got);
	got = mscope_reader_drain(&r, recs, 16, ids, 1 << 20, &nids);
	CHECK(got == -MSCOPE_E_RECORD && r.error_pos == at && nids == 0,
	      "%s: %ld at byte %llu, want %llu", what, got,
	      (unsigned long long)r.error_pos, (unsigned long long)at);
	got = mscope_reader_drain(&r, recs, 16, ids, 1 << 20, &nids);
	CHECK(got == -MSCOPE_E_RECORD, "%s: stays corrupt", what);
	mscope_reader_close(&r);
}

/* A batch-only record that is also an address record, or whose count is
 * beyond MSCOPE_MAX_BATCH, is corrupt: the records before it are
 * delivered, the drain stops at its offset, and the ring stays corrupt. */
static void
test_batch_only_malformed(void)
{
	static const struct { uint8_t flags; uint16_t count; const char *what; } bad[] = {
		{ MSCOPE_REC_F_ADDR, 4, "batch-only address record" },
		{ MSCOPE_REC_F_ADDR | MSCOPE_REC_F_TX, 1, "batch-only tx address record" },
		{ 0, MSCOPE_MAX_BATCH + 1, "batch-only count over the limit" },
	};
	const uint64_t two[2] = {7, 8};
	unsigned i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char name[16];
		struct mscope *ms;
		uint64_t at;

		snprintf(name, sizeof(name), "bobad%u", i);
		ms = open_ring(name, MSCOPE_RING_MIN_DATA);
		CHECK(mscope_rx_ids(ms, 0, 0, two, 2, 0) == 0, "full");
		CHECK(write_batch_only(ms, 0, 0, 16, 1) == 0, "good batch-only");
		at = ms->prod.head;
		CHECK(write_batch_only(ms, bad[i].flags, 0, bad[i].count, 2) == 0, "bad one");
		CHECK(write_batch_only(ms, 0, 0, 16, 3) == 0, "good one after");
		check_corrupt_at(ms, at, 2, 2, bad[i].what);
		mscope_close(ms);
	}
}

/* Refused records (mscope_refused, mscope_record.h): flags
 * MSCOPE_REC_F_REFUSED alone, count 2, the words [packets, window_ns],
 * port, queue and occupancy as given, the tsc of the call and a seq of
 * their own among the other records; none for 0 packets. */
static void
test_refused_records(void)
{
	struct mscope *ms = open_ring("refused", MSCOPE_RING_MIN_DATA);
	const uint64_t three[3] = { 21, 22, 23 }, two[2] = { 31, 32 };
	struct mscope_reader r;
	struct mscope_stats st;
	uint64_t nids, t0, t1;
	long got;

	CHECK(mscope_refused(NULL, 0, 0, 5, 1000, 0) == -EINVAL, "NULL handle");
	CHECK(mscope_refused(ms, 1, 0, 0, 1000, 0) == 0, "0 packets");
	CHECK(ms->prod.head == 0 && ms->prod.seq == 0, "0 packets: nothing written");
	CHECK(mscope_rx_ids(ms, 2, 1, three, 3, 7) == 0, "rx before");
	t0 = mscope_rdtsc();
	CHECK(mscope_refused(ms, 2, 1, 43463, 104460269, 4096) == 0, "refused");
	t1 = mscope_rdtsc();
	CHECK(ms->prod.last_tsc >= t0 && ms->prod.last_tsc <= t1,
	      "a record like any: the idle-poll interval restarts at it");
	CHECK(mscope_refused(ms, 65535, 7, (1ULL << 40) + 3, UINT64_MAX,
			     MSCOPE_OCC_UNKNOWN) == 0, "refused, 64-bit words");
	CHECK(mscope_refused(ms, 2, 1, 0, 5, 0) == 0, "0 packets again");
	CHECK(mscope_tx_ids(ms, 2, 1, two, 2, 0) == 0, "tx after");
	mscope_get_stats(ms, &st);
	CHECK(st.records == 4 && st.drop_records == 0 && st.drop_packets == 0,
	      "records %llu drops %llu/%llu", (unsigned long long)st.records,
	      (unsigned long long)st.drop_records, (unsigned long long)st.drop_packets);

	CHECK(mscope_reader_open(mscope_ring_path(ms), 1, &r) == 0, "open");
	got = mscope_reader_drain(&r, recs, 16, ids, 1 << 20, &nids);
	CHECK(got == 4 && nids == 3 + 2 + 2 + 2, "drained %ld records, %llu words", got,
	      (unsigned long long)nids);
	if (got == 4) {
		CHECK(recs[0].flags == 0 && recs[0].count == 3 && recs[0].seq == 0, "rx");
		CHECK(recs[1].magic == MSCOPE_REC_MAGIC && recs[1].version == MSCOPE_REC_VERSION &&
		      recs[1].flags == MSCOPE_REC_F_REFUSED && recs[1].count == 2 &&
		      recs[1].nf_id == 9 && recs[1].port == 2 && recs[1].queue == 1 &&
		      recs[1].occupancy == 4096 && recs[1].seq == 1,
		      "refused header: flags %#x count %u port %u queue %u occ %u seq %llu",
		      recs[1].flags, recs[1].count, recs[1].port, recs[1].queue,
		      recs[1].occupancy, (unsigned long long)recs[1].seq);
		CHECK(recs[1].tsc >= t0 && recs[1].tsc <= t1 && recs[1].tsc >= recs[0].tsc,
		      "refused tsc: read in the call");
		CHECK(mscope_rec_n_ids(&recs[1]) == 2, "two words to read");
		CHECK(ids[3] == 43463 && ids[4] == 104460269, "words %llu %llu",
		      (unsigned long long)ids[3], (unsigned long long)ids[4]);
		CHECK(recs[2].flags == MSCOPE_REC_F_REFUSED && recs[2].count == 2 &&
		      recs[2].port == 65535 && recs[2].queue == 7 &&
		      recs[2].occupancy == MSCOPE_OCC_UNKNOWN && recs[2].seq == 2 &&
		      ids[5] == (1ULL << 40) + 3 && ids[6] == UINT64_MAX,
		      "second refused record");
		CHECK(recs[3].flags == MSCOPE_REC_F_TX && recs[3].seq == 3 && ids[7] == 31 &&
		      ids[8] == 32, "tx after: the words took exactly 16 bytes");
	}
	/* Refused records need room for their words like any record. */
	CHECK(mscope_refused(ms, 3, 0, 9, 10, 0) == 0, "one more");
	got = mscope_reader_drain(&r, recs, 16, ids, 1, &nids);
	CHECK(got == -ENOSPC && nids == 0, "1 id of room: %ld", got);
	got = mscope_reader_drain(&r, recs, 16, ids, 2, &nids);
	CHECK(got == 1 && nids == 2 && recs[0].seq == 4 && ids[0] == 9 && ids[1] == 10,
	      "2 of room: %ld", got);
	mscope_reader_close(&r);
	mscope_close(ms);
}

/* On a full ring a refused record is dropped and counted: a record, its
 * seq consumed, no packets (its words are not packet ids).  One that does
 * not fit before the end of the data area goes to offset 0 after a
 * padding record, whole. */
static void
test_refused_records_full_ring(void)
{
	struct mscope *ms = open_ring("refusedfull", MSCOPE_RING_MIN_DATA);
	const uint32_t per = MSCOPE_RING_MIN_DATA / MSCOPE_REC_SIZE(4);   /* 1024 */
	const uint64_t four[4] = { 1, 2, 3, 4 };
	struct mscope_reader r;
	struct mscope_stats st;
	uint64_t nids;
	long got;
	uint32_t i;

	for (i = 0; i < per; i++)
		CHECK(mscope_rx_ids(ms, 0, 0, four, 4, 0) == 0, "record %u fits", i);
	CHECK(mscope_refused(ms, 0, 0, 0, 1, 0) == 0, "0 packets on a full ring");
	CHECK(mscope_refused(ms, 0, 0, 77, 1000, 0) == -ENOBUFS, "refused past full");
	mscope_get_stats(ms, &st);
	CHECK(st.records == per && st.drop_records == 1 && st.drop_packets == 0 &&
	      ms->prod.hdr->drop_records == 1 && ms->prod.hdr->drop_packets == 0 &&
	      ms->prod.seq == per + 1 && ms->prod.hdr->next_seq == per + 1,
	      "a dropped record of no packets: drops %llu/%llu, next seq %llu",
	      (unsigned long long)st.drop_records, (unsigned long long)st.drop_packets,
	      (unsigned long long)ms->prod.seq);
	CHECK(mscope_reader_open(mscope_ring_path(ms), 1, &r) == 0, "open");
	got = mscope_reader_drain(&r, recs, 1 << 16, ids, 1 << 20, &nids);
	CHECK(got == (long)per && nids == 4ULL * per, "drained %ld", got);

	/* Leave 32 bytes before the end: 1023 records of 4 ids and a
	 * batch-only one; the refused record (48 bytes) wraps. */
	for (i = 0; i < per - 1; i++)
		CHECK(mscope_rx_ids(ms, 0, 0, four, 4, 0) == 0, "refill %u", i);
	CHECK(write_batch_only(ms, 0, 0, 5, 1) == 0, "batch-only filler");
	CHECK((ms->prod.head & (MSCOPE_RING_MIN_DATA - 1)) == MSCOPE_RING_MIN_DATA - 32,
	      "32 bytes left");
	got = mscope_reader_drain(&r, recs, 1 << 16, ids, 1 << 20, &nids);
	CHECK(got == (long)per, "drained the refill: %ld", got);
	CHECK(mscope_refused(ms, 4, 2, 123456789, 987654321, 11) == 0, "refused at the end");
	CHECK(ms->prod.head == 2ULL * MSCOPE_RING_MIN_DATA + MSCOPE_REC_SIZE(2),
	      "padding, then the record at offset 0");
	got = mscope_reader_drain(&r, recs, 16, ids, 16, &nids);
	CHECK(got == 1 && nids == 2 && recs[0].flags == MSCOPE_REC_F_REFUSED &&
	      recs[0].count == 2 && recs[0].port == 4 && recs[0].queue == 2 &&
	      recs[0].occupancy == 11 && recs[0].seq == 2ULL * per + 1 &&
	      ids[0] == 123456789 && ids[1] == 987654321,
	      "refused record across the wrap: %ld, seq %llu", got,
	      (unsigned long long)recs[0].seq);
	mscope_reader_close(&r);
	mscope_close(ms);
}

/* Refused records the recorder never writes, forged in the ring: a count
 * other than 2 (with that many words after it) or another flag bit with
 * MSCOPE_REC_F_REFUSED.  Each is corrupt: the records before it are
 * delivered, the drain stops at its offset, and the ring stays corrupt. */
static void
test_refused_malformed(void)
{
	static const struct { uint8_t flags; uint32_t words; const char *what; } bad[] = {
		{ MSCOPE_REC_F_REFUSED, 1, "refused, count 1" },
		{ MSCOPE_REC_F_REFUSED, 3, "refused, count 3" },
		{ MSCOPE_REC_F_REFUSED, 0, "refused, count 0" },
		{ MSCOPE_REC_F_REFUSED | MSCOPE_REC_F_TX, 2, "refused tx" },
		{ MSCOPE_REC_F_REFUSED | MSCOPE_REC_F_ADDR, 2, "refused address record" },
		{ MSCOPE_REC_F_REFUSED | MSCOPE_REC_F_NOIDS, 0, "refused batch-only" },
		{ MSCOPE_REC_F_REFUSED | 0x10, 2, "refused with an unknown bit" },
	};
	const uint64_t two[2] = { 7, 8 };
	unsigned i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char name[16];
		struct mscope *ms;
		uint64_t at, *w;
		uint32_t k;

		snprintf(name, sizeof(name), "refbad%u", i);
		ms = open_ring(name, MSCOPE_RING_MIN_DATA);
		CHECK(mscope_rx_ids(ms, 0, 0, two, 2, 0) == 0, "rx");
		CHECK(mscope_refused(ms, 0, 0, 5, 6, 0) == 0, "good refused");
		at = ms->prod.head;
		/* batch-only: the header alone, its count 2 as a refused one */
		w = mscope_ring_reserve(&ms->prod, bad[i].words);
		CHECK(w != NULL, "room for the forged record");
		if (w == NULL)
			continue;
		for (k = 0; k < bad[i].words; k++)
			w[k] = 100 + k;
		mscope_ring_commit_count(&ms->prod, bad[i].flags, 0, 0, 0, mscope_rdtsc(),
					 (bad[i].flags & MSCOPE_REC_F_NOIDS) ? 2 :
					 (uint16_t)bad[i].words);
		CHECK(mscope_refused(ms, 0, 0, 5, 6, 0) == 0, "good refused after");
		check_corrupt_at(ms, at, 2, 4, bad[i].what);
		CHECK(ids[2] == 5 && ids[3] == 6, "%s: the good refused record's words",
		      bad[i].what);
		mscope_close(ms);
	}
}

/* Empty polls: an idle-poll record (rx, count 0) once the handle has
 * written nothing for its interval, nothing before, nothing for tx or with
 * MSCOPE_F_NOIDLE.  The interval is set from the TSC rate. */
static void
test_idle_polls(void)
{
	struct mscope *ms = open_ring("idle", MSCOPE_RING_MIN_DATA);
	struct mscope_params p = { .nf_name = "noidle", .lcore = 2, .dir = dir,
				   .ring_bytes = MSCOPE_RING_MIN_DATA,
				   .flags = MSCOPE_F_NOIDLE };
	struct mscope *quiet = mscope_open(&p);
	struct mscope_reader r;
	struct timespec nap = { 0, 60000 };
	uint64_t one = 77, nids, idle;
	long got;

	/* calibrated at open: 20 us of a 0.1-10 GHz counter */
	idle = ms->prod.idle_tsc;
	CHECK(idle >= MSCOPE_IDLE_NS / 10 && idle <= MSCOPE_IDLE_NS * 10ULL,
	      "calibrated interval %llu cycles", (unsigned long long)idle);
	mscope_set_tsc_hz(ms, 2000000000ULL);
	CHECK(ms->prod.idle_tsc == 2ULL * MSCOPE_IDLE_NS, "interval from the rate");
	CHECK(mscope_reader_open(mscope_ring_path(ms), 1, &r) == 0, "open");

	ms->prod.last_tsc = mscope_rdtsc();
	ms->prod.idle_tsc = 1ULL << 50;         /* not due */
	CHECK(mscope_rx_ids(ms, 3, 1, &one, 0, 0) == 0, "empty poll, not due");
	CHECK(mscope_reader_drain(&r, recs, 16, ids, 16, &nids) == 0, "nothing written");

	ms->prod.idle_tsc = 1;                  /* due */
	CHECK(mscope_rx_ids(ms, 3, 1, &one, 0, 5) == 0, "empty poll, due");
	CHECK(mscope_tx_ids(ms, 3, 1, &one, 0, 0) == 0, "empty tx");
	got = mscope_reader_drain(&r, recs, 16, ids, 16, &nids);
	CHECK(got == 1 && nids == 0, "one idle-poll record, no ids (%ld, %llu)", got,
	      (unsigned long long)nids);
	CHECK(recs[0].flags == 0 && recs[0].count == 0 && recs[0].port == 3 &&
	      recs[0].queue == 1 && recs[0].occupancy == 5 && recs[0].seq == 0,
	      "an rx record of 0 packets");
	CHECK(ms->prod.last_tsc == recs[0].tsc, "the interval restarts at it");

	/* any record restarts the interval */
	ms->prod.idle_tsc = 1ULL << 50;
	CHECK(mscope_rx_ids(ms, 0, 0, &one, 1, 0) == 0, "a batch");
	CHECK(mscope_rx_ids_addrs(ms, 0, 0, &one, &one, 0, 0) == 0, "empty poll, not due");
	got = mscope_reader_drain(&r, recs, 16, ids, 16, &nids);
	CHECK(got == 1 && recs[0].count == 1, "the batch alone (%ld)", got);

	/* the real interval: due after a nap longer than 20 us */
	mscope_set_tsc_hz(ms, 0);               /* 0 keeps the interval */
	ms->prod.idle_tsc = idle;
	CHECK(mscope_rx_ids(ms, 0, 0, &one, 0, 0) == 0 &&
	      mscope_reader_drain(&r, recs, 16, ids, 16, &nids) == 0, "right after a batch");
	nanosleep(&nap, NULL);
	CHECK(mscope_rx_ids_addrs(ms, 0, 0, &one, &one, 0, 0) == 0, "after 60 us");
	got = mscope_reader_drain(&r, recs, 16, ids, 16, &nids);
	CHECK(got == 1 && recs[0].count == 0 && recs[0].flags == 0, "an idle poll (%ld)", got);
	mscope_reader_close(&r);
	mscope_close(ms);

	CHECK(quiet != NULL && quiet->prod.idle_tsc == 0, "MSCOPE_F_NOIDLE");
	quiet->prod.last_tsc = 0;
	mscope_set_tsc_hz(quiet, 2000000000ULL);
	CHECK(quiet->prod.idle_tsc == 0, "stays off with a rate");
	CHECK(mscope_reader_open(mscope_ring_path(quiet), 1, &r) == 0, "open");
	CHECK(mscope_rx_ids(quiet, 0, 0, &one, 0, 0) == 0 &&
	      mscope_reader_drain(&r, recs, 16, ids, 16, &nids) == 0, "never an idle poll");
	mscope_reader_close(&r);
	mscope_close(quiet);
}

/* MSCOPE_IDLE_US sets the interval, which the ring header says (the
 * collector copies it to the manifest, the analyzer's silences go by it);
 * a value out of 1..MSCOPE_IDLE_US_MAX, or not a number, keeps the
 * default; MSCOPE_F_NOIDLE still wins. */
static void
test_idle_interval_from_the_environment(void)
{
	static const struct { const char *env; uint32_t want; } cases[] = {
		{ "200", 200000 }, { "1", 1000 }, { "4000000", 4000000000U },
		{ "0", MSCOPE_IDLE_NS }, { "4000001", MSCOPE_IDLE_NS },
		{ "-5", MSCOPE_IDLE_NS }, { "20us", MSCOPE_IDLE_NS }, { "", MSCOPE_IDLE_NS },
	};
	struct mscope_params p = { .nf_name = "idlenv", .lcore = 9, .dir = dir,
				   .ring_bytes = MSCOPE_RING_MIN_DATA };
	struct mscope *ms;
	unsigned i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		setenv("MSCOPE_IDLE_US", cases[i].env, 1);
		p.lcore = (uint16_t)(9 + i);    /* a closed ring's file stays */
		ms = mscope_open(&p);
		CHECK(ms != NULL, "open with MSCOPE_IDLE_US=%s", cases[i].env);
		if (ms == NULL)
			continue;
		CHECK(ms->prod.hdr->idle_ns == cases[i].want && ms->idle_ns == cases[i].want,
		      "MSCOPE_IDLE_US=%s: header says %u ns", cases[i].env, ms->prod.hdr->idle_ns);
		mscope_set_tsc_hz(ms, 2000000000ULL);
		CHECK(ms->prod.idle_tsc == 2ULL * cases[i].want, "in cycles at 2 GHz (%llu)",
		      (unsigned long long)ms->prod.idle_tsc);
		mscope_close(ms);
	}
	setenv("MSCOPE_IDLE_US", "200", 1);
	p.flags = MSCOPE_F_NOIDLE;
	p.lcore = 99;
	ms = mscope_open(&p);
	CHECK(ms != NULL && ms->prod.hdr->idle_ns == 0 && ms->prod.idle_tsc == 0,
	      "MSCOPE_F_NOIDLE: none whatever the interval");
	mscope_close(ms);
	unsetenv("MSCOPE_IDLE_US");
}

static void
test_open_errors_and_modes(void)
{
	struct mscope_params p = { .nf_name = "bad name", .dir = dir };
	struct mscope *ms, *dup;
	struct stat st;
	struct mscope_reader r1, r2;

	CHECK(mscope_open(&p) == NULL && errno == EINVAL, "space in name");
	p.nf_name = "";
	CHECK(mscope_open(&p) == NULL && errno == EINVAL, "empty name");
	p.nf_name = "abcdefghijabcdefghijabcdefghijab";
	CHECK(mscope_open(&p) == NULL && errno == EINVAL, "32-char name");
	p.nf_name = "ok";
	p.ring_bytes = 100000;
	CHECK(mscope_open(&p) == NULL && errno == EINVAL, "not a power of two");
	p.ring_bytes = 4096;
	CHECK(mscope_open(&p) == NULL && errno == EINVAL, "below minimum");
	p.ring_bytes = 0;
	ms = mscope_open(&p);
	CHECK(ms != NULL, "default size");
	dup = mscope_open(&p);
	CHECK(dup == NULL && errno == EEXIST, "same name, lcore and pid");
	CHECK(stat(mscope_ring_path(ms), &st) == 0 && (st.st_mode & 0777) == 0600,
	      "ring mode %o", st.st_mode & 0777);
	CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode), "dir");
	CHECK(ms->prod.hdr->data_size == MSCOPE_DEFAULT_RING_BYTES, "default size");
	CHECK(mscope_reader_open(mscope_ring_path(ms), 1, &r1) == 0, "first reader");
	/* Same process claims again: allowed (it is the same reader pid). */
	CHECK(mscope_reader_open(mscope_ring_path(ms), 1, &r2) == 0, "same pid");
	mscope_reader_close(&r2);
	mscope_reader_close(&r1);
	CHECK(ms->prod.hdr->reader_pid == 0, "claim released");
	CHECK(ms->prod.hdr->state == MSCOPE_RING_OPEN, "open state");
	{
		char path[4096];
		struct mscope_reader r;
		snprintf(path, sizeof(path), "%s", mscope_ring_path(ms));
		mscope_close(ms);
		CHECK(mscope_reader_open(path, 0, &r) == 0, "reopen after close");
		CHECK(r.hdr->state == MSCOPE_RING_CLOSED, "closed state");
		mscope_reader_close(&r);
	}
	CHECK(mscope_close(NULL) == -EINVAL, "close NULL");
	CHECK(mscope_record_ids(NULL, 0, 0, 0, NULL, 0, 0) == -EINVAL, "record NULL");
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	test_wraparound();
	test_full_ring_drops();
	test_limits_and_split();
	test_addr_records();
	test_addr_records_full_ring();
	test_batch_only_records();
	test_batch_only_no_id_room();
	test_batch_only_malformed();
	test_refused_records();
	test_refused_records_full_ring();
	test_refused_malformed();
	test_idle_polls();
	test_idle_interval_from_the_environment();
	test_open_errors_and_modes();
	return CHECK_SUMMARY();
}
