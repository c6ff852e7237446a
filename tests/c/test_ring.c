/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Unit tests of the ring, the raw recorder and the reader in one process.
 *   test_ring DIR      (DIR: an empty scratch registry directory)
 * Exit status 0 when every check passed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
	test_open_errors_and_modes();
	return CHECK_SUMMARY();
}
