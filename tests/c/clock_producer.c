/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Records N one-id batches whose id is CLOCK_MONOTONIC (ns) read just before
 * the recorder reads the TSC, SLEEP_US apart, so a test can hold the
 * collector's TSC->ns conversion to the kernel's clock.
 *   clock_producer DIR NAME N SLEEP_US
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mscope.h"

int
main(int argc, char **argv)
{
	struct mscope_params p = {0};
	struct mscope *ms;
	unsigned long n, i, sleep_us;

	if (argc != 5) {
		fprintf(stderr, "usage: %s DIR NAME N SLEEP_US\n", argv[0]);
		return 2;
	}
	p.dir = argv[1];
	p.nf_name = argv[2];
	p.nf_id = 5;
	n = strtoul(argv[3], NULL, 0);
	sleep_us = strtoul(argv[4], NULL, 0);
	ms = mscope_open(&p);
	if (ms == NULL) {
		fprintf(stderr, "mscope_open: %s\n", strerror(errno));
		return 1;
	}
	for (i = 0; i < n; i++) {
		struct timespec ts, nap = {0, (long)sleep_us * 1000};
		uint64_t now;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		now = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
		mscope_record_ids(ms, 0, 0, 0, &now, 1, MSCOPE_OCC_UNKNOWN);
		nanosleep(&nap, NULL);
	}
	return mscope_close(ms) == 0 ? 0 : 1;
}
