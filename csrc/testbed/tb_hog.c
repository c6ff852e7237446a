/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * mscope-tb-hog: CPU contention for the testbed's "contention" fault.
 * Pinned to one CPU, from --from-ns to --to-ns (absolute CLOCK_MONOTONIC),
 * it takes (1 - share) of every --period-us: it spins that long, then
 * sleeps share x period.  It runs SCHED_FIFO (priority 1) when allowed, so
 * while it spins the NFs on that CPU do not run at all and keep `share`
 * of the CPU; without the right to (not root) it warns and runs as a
 * normal task, which the scheduler then shares with the NFs instead.
 * Not a DPDK process.
 *
 *   mscope-tb-hog --cpu 1 --from-ns 123000000 --to-ns 133000000 --share 0.1
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void
sleep_until(uint64_t t)
{
	struct timespec ts = { .tv_sec = (time_t)(t / 1000000000ULL),
			       .tv_nsec = (long)(t % 1000000000ULL) };

	while (!stop && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"cpu", required_argument, NULL, 'c'},
		{"from-ns", required_argument, NULL, 'f'},
		{"to-ns", required_argument, NULL, 't'},
		{"share", required_argument, NULL, 's'},
		{"period-us", required_argument, NULL, 'p'},
		{"no-fifo", no_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	uint64_t from = 0, to = 0, spun = 0, periods = 0;
	double share = -1, period_us = 1000;
	int cpu = -1, fifo = 1, opt, is_fifo = 0;
	struct sched_param sp = { .sched_priority = 1 };
	struct sigaction sa;
	cpu_set_t set;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': cpu = atoi(optarg); break;
		case 'f': from = strtoull(optarg, NULL, 0); break;
		case 't': to = strtoull(optarg, NULL, 0); break;
		case 's': share = atof(optarg); break;
		case 'p': period_us = atof(optarg); break;
		case 'n': fifo = 0; break;
		default:
			fprintf(opt == 'h' ? stdout : stderr,
				"usage: mscope-tb-hog --cpu N --from-ns T --to-ns T --share S "
				"[--period-us US] [--no-fifo]\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	if (cpu < 0 || to <= from || share < 0 || share > 1 || period_us <= 0) {
		fprintf(stderr, "mscope-tb-hog: give --cpu, --from-ns < --to-ns and --share in [0, 1]\n");
		return 2;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0) {
		fprintf(stderr, "mscope-tb-hog: cannot pin to CPU %d: %s\n", cpu, strerror(errno));
		return 2;
	}
	if (fifo) {
		if (sched_setscheduler(0, SCHED_FIFO, &sp) == 0)
			is_fifo = 1;
		else
			fprintf(stderr, "mscope-tb-hog: warning: no SCHED_FIFO (%s); contending "
				"as a normal task\n", strerror(errno));
	}
	printf("{\"event\": \"ready\", \"fifo\": %d}\n", is_fifo);
	fflush(stdout);
	sleep_until(from);
	while (!stop) {
		uint64_t start = mono_ns(), busy_end, period_end;

		if (start >= to)
			break;
		period_end = start + (uint64_t)(period_us * 1e3);
		if (period_end > to)
			period_end = to;
		busy_end = start + (uint64_t)((double)(period_end - start) * (1 - share));
		while (mono_ns() < busy_end)
			;
		spun += busy_end - start;
		periods++;
		sleep_until(period_end);
	}
	printf("{\"event\": \"done\", \"fifo\": %d, \"periods\": %" PRIu64 ", \"spun_ns\": %" PRIu64
	       "}\n", is_fifo, periods, spun);
	return 0;
}
