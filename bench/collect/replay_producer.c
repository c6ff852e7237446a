/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * replay_producer: an NF stand-in for bench/collect.py's end-to-end part.
 * Replays the records of a span synthesised by collect.py (count, flags,
 * port, queue, occupancy and the packet ids of each record) into a ring
 * with mscope_record_ids(), lap after lap, as fast as it can or at a
 * given rate.  The ids are those of a modelled flow mix, so the capture
 * compresses as a real one would; a lap (the whole span) is longer than a
 * chunk, so no chunk sees an id twice except where the NF itself repeats
 * it (tx after rx).
 *
 *   replay_producer DIR NAME SPAN_FILE N_RECORDS RATE_PER_S RING_BYTES
 *
 * SPAN_FILE: u64 n_records, u64 n_ids, n_records 32-byte capture records
 * (CAPTURE_RECORD_DTYPE), n_ids u64 ids.  RATE_PER_S 0: as fast as
 * possible; RING_BYTES 0: the default.  Prints the ring path, waits for a
 * line on stdin (the collector attaches first), writes, then prints
 * "done <records> <drop_records> <drop_packets> <ids> <elapsed_ns>",
 * closes the ring and exits.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mscope.h"

struct rec {                 /* CAPTURE_RECORD_DTYPE */
	int64_t  time_ns;
	uint64_t seq;
	uint16_t nf_id, port, queue;
	uint8_t  flags, reserved;
	uint32_t count, occupancy;
};

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
	struct mscope_params p = {0};
	struct mscope_stats st;
	struct mscope *ms;
	struct rec *recs;
	uint64_t *ids, hdr[2], n, s, rate, start, end, nid = 0;
	size_t r = 0, off = 0;
	char line[16];
	FILE *f;

	if (argc != 7) {
		fprintf(stderr, "usage: %s DIR NAME SPAN_FILE N_RECORDS RATE_PER_S RING_BYTES\n",
			argv[0]);
		return 2;
	}
	f = fopen(argv[3], "rb");
	if (f == NULL || fread(hdr, 8, 2, f) != 2) {
		fprintf(stderr, "%s: cannot read\n", argv[3]);
		return 1;
	}
	recs = malloc(hdr[0] * sizeof(*recs));
	ids = malloc(hdr[1] * 8);
	if (recs == NULL || ids == NULL || fread(recs, sizeof(*recs), hdr[0], f) != hdr[0] ||
	    fread(ids, 8, hdr[1], f) != hdr[1]) {
		fprintf(stderr, "%s: short file\n", argv[3]);
		return 1;
	}
	fclose(f);
	p.dir = argv[1];
	p.nf_name = argv[2];
	p.nf_id = 3;
	p.lcore = 2;
	n = strtoull(argv[4], NULL, 0);
	rate = strtoull(argv[5], NULL, 0);
	p.ring_bytes = strtoull(argv[6], NULL, 0);
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
		const struct rec *q = &recs[r];

		mscope_record_ids(ms, q->flags, q->port, q->queue, ids + off, q->count,
				  q->occupancy);
		nid += q->count;
		off += q->count;
		if (++r == hdr[0])
			r = off = 0;
		if (rate != 0 && (s & 255) == 0) {
			uint64_t due = start + s * 1000000000ULL / rate;

			while (now_ns() < due) {
				struct timespec ts = {0, 20000};
				nanosleep(&ts, NULL);
			}
		}
	}
	end = now_ns();
	mscope_get_stats(ms, &st);
	printf("done %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
	       st.records, st.drop_records, st.drop_packets, nid, end - start);
	fflush(stdout);
	return mscope_close(ms) == 0 ? 0 : 1;
}
