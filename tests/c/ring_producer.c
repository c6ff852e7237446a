/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Test producer: writes records with a pattern the test can check without
 * keeping a copy.  Record seq s has 1 + (s*7919) % max_batch ids, id i of it
 * is (s << 16) | i.  Records dropped on a full ring keep their seq, so the
 * consumer can tell exactly which were lost.
 *
 *   ring_producer DIR NAME N_RECORDS MAX_BATCH RATE_PER_S RING_BYTES [NF_ID]
 * RATE_PER_S 0: as fast as possible.  NF_ID defaults to 7.  Prints the ring path, then waits for
 * a line on stdin before writing (so the consumer attaches first), then
 * prints "done <records> <drop_records> <drop_packets>".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mscope.h"

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int
main(int argc, char **argv)
{
	static uint64_t ids[MSCOPE_MAX_BATCH];
	struct mscope_params p = {0};
	struct mscope_stats st;
	struct mscope *ms;
	uint64_t n, s, start, rate;
	uint32_t maxb;
	char line[16];

	if (argc != 7 && argc != 8) {
		fprintf(stderr, "usage: %s DIR NAME N_RECORDS MAX_BATCH RATE_PER_S RING_BYTES [NF_ID]\n",
			argv[0]);
		return 2;
	}
	p.dir = argv[1];
	p.nf_name = argv[2];
	p.nf_id = argc == 8 ? (uint16_t)strtoul(argv[7], NULL, 0) : 7;
	p.lcore = 3;
	n = strtoull(argv[3], NULL, 0);
	maxb = (uint32_t)strtoul(argv[4], NULL, 0);
	rate = strtoull(argv[5], NULL, 0);
	p.ring_bytes = strtoull(argv[6], NULL, 0);
	if (maxb == 0 || maxb > MSCOPE_MAX_BATCH) {
		fprintf(stderr, "MAX_BATCH must be 1..%u\n", MSCOPE_MAX_BATCH);
		return 2;
	}
	ms = mscope_open(&p);
	if (ms == NULL) {
		fprintf(stderr, "mscope_open: %s\n", strerror(errno));
		return 1;
	}
	printf("%s\n", mscope_ring_path(ms));
	fflush(stdout);
	if (fgets(line, sizeof(line), stdin) == NULL)
		return 1;
	start = now_ns();
	for (s = 0; s < n; s++) {
		uint32_t c = 1 + (uint32_t)((s * 7919) % maxb), i;

		for (i = 0; i < c; i++)
			ids[i] = (s << 16) | i;
		mscope_record_ids(ms, s & 1 ? MSCOPE_REC_F_TX : 0, (uint16_t)(s % 5),
				  (uint16_t)(s % 3), ids, c, (uint32_t)s);
		if (rate != 0 && (s & 255) == 0) {
			/* Pace in steps of 256 records: sleep while ahead. */
			uint64_t due = start + s * 1000000000ULL / rate;
			while (now_ns() < due) {
				struct timespec ts = {0, 20000};
				nanosleep(&ts, NULL);
			}
		}
	}
	mscope_get_stats(ms, &st);
	printf("done %llu %llu %llu\n", (unsigned long long)st.records,
	       (unsigned long long)st.drop_records, (unsigned long long)st.drop_packets);
	fflush(stdout);
	return mscope_close(ms) == 0 ? 0 : 1;
}
