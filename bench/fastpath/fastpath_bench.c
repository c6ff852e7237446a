/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * fastpath_bench: cost of the mscope recorder on the NF's poll loop.
 * Built and run by bench/fastpath.py (see bench/README.md); usable alone:
 *
 *   fastpath_bench raw  --dir D [--runs N] [--consumer none|busy|timer|gap]
 *   fastpath_bench drop --dir D [--runs N]
 *   fastpath_bench parts --dir D [--runs N]
 *   fastpath_bench mbuf <EAL args> -- --dir D [--runs N] [--consumer none|busy|timer|gap]
 *                       [--cold] [--mix mixed|udp64] [--pool packed|page] [--mbufs N]
 *                       [--addrs]
 *   fastpath_bench fill --dir D --ring-bytes B --records N --batch K [--laps L]
 *                  (fills the ring L times, waiting for a line on stdin
 *                   between laps while a reader drains it)
 *   fastpath_bench produce --dir D --seconds S --batch K [--ring-bytes B]
 *   fastpath_bench drain --dir D [--ring-bytes B] [--batch K] [--records ARRAY]
 *
 * Every timed run is K back-to-back calls between two serialised TSC reads
 * (lfence;rdtsc ... rdtscp;lfence); a measurement is the median (p10, p90)
 * over many runs of cycles per call, converted to ns with a TSC rate
 * calibrated here against CLOCK_MONOTONIC.  Output: one JSON object per line.
 *
 * Consumer modes:
 *   none  the ring is drained by this thread between timed runs (untimed),
 *         so it never fills and no other core touches its cache lines;
 *   busy  a consumer thread on the other core polls mscope_reader_drain
 *         without pause during the timed runs (worst-case cache-line
 *         traffic on head and on the record bytes); between runs the
 *         producer waits, untimed, until the consumer has caught up, so
 *         back-to-back calls never fill the ring.
 *   timer the consumer thread drains the ring empty every 100 us, as a
 *         collector on a timer would, and the producer idles 50 us between
 *         runs; some runs overlap a drain, most do not.
 *   gap   the control for timer: no consumer thread, the ring drained
 *         here between runs, then the same 50 us idle.
 * The ring is MSCOPE_DEFAULT_RING_BYTES (what an NF gets) unless told.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "mscope.h"
#include "mscope_reader.h"
#include "mscope_ring.h"

#ifdef MSCOPE_BENCH_DPDK
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ip.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mbuf_pool_ops.h>
#include <rte_prefetch.h>
#include <rte_mempool.h>
#include <rte_tcp.h>
#include <rte_udp.h>
#include "mscope_dpdk.h"
#endif

static const uint32_t batches[] = {1, 2, 4, 8, 16, 32, 48, 64};
#define N_BATCHES (sizeof(batches) / sizeof(batches[0]))
#define PKTS_PER_RUN 1024    /* mbuf runs: calls = PKTS_PER_RUN / batch */
#define POOL_MBUFS   8191

static double tsc_hz;
static volatile uint64_t sink;

/* ---- timing ------------------------------------------------------------ */

static inline uint64_t
tsc_begin(void)
{
	uint64_t t;

	_mm_lfence();
	t = __rdtsc();
	_mm_lfence();
	return t;
}

static inline uint64_t
tsc_end(void)
{
	unsigned aux;
	uint64_t t = __rdtscp(&aux);

	_mm_lfence();
	return t;
}

static uint64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* TSC ticks per second over `ms` milliseconds of CLOCK_MONOTONIC; each end
 * takes the tightest of several (clock, tsc) pairs so a preemption between
 * the two reads does not skew it. */
static double
calibrate_tsc(unsigned ms)
{
	uint64_t c[2], n[2];
	int e;

	for (e = 0; e < 2; e++) {
		uint64_t best = UINT64_MAX;
		int i;

		if (e == 1) {
			struct timespec d = { ms / 1000, (long)(ms % 1000) * 1000000L };
			nanosleep(&d, NULL);
		}
		for (i = 0; i < 16; i++) {
			uint64_t a = __rdtsc(), t = mono_ns(), b = __rdtsc();

			if (b - a < best) {
				best = b - a;
				c[e] = a + (b - a) / 2;
				n[e] = t;
			}
		}
	}
	return (double)(c[1] - c[0]) * 1e9 / (double)(n[1] - n[0]);
}

static void
pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
		fprintf(stderr, "fastpath_bench: cannot pin to cpu %d\n", cpu);
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Per-run cycle counts for one measurement; reported per call. */
struct series {
	uint64_t *cyc;
	unsigned n, cap;
};

static void
series_init(struct series *s, unsigned cap)
{
	s->cyc = calloc(cap, sizeof(*s->cyc));
	s->n = 0;
	s->cap = cap;
	if (s->cyc == NULL) {
		perror("calloc");
		exit(1);
	}
}

static double
pct(const uint64_t *sorted, unsigned n, double q)
{
	double pos = q * (n - 1);
	unsigned i = (unsigned)pos;
	double f = pos - i;

	return i + 1 < n ? sorted[i] * (1 - f) + sorted[i + 1] * f : (double)sorted[i];
}

/* One JSON line: each entry of s divided by div (calls per run, or a
 * fixed-point scale); `extra` is appended verbatim (starting with a comma). */
static void
report_div(const char *name, const char *mode, uint32_t batch, unsigned div,
	   unsigned calls, struct series *s, const char *extra)
{
	double k = 1e9 / tsc_hz / div, med, p10, p90;

	qsort(s->cyc, s->n, sizeof(*s->cyc), cmp_u64);
	med = pct(s->cyc, s->n, 0.5) * k;
	p10 = pct(s->cyc, s->n, 0.1) * k;
	p90 = pct(s->cyc, s->n, 0.9) * k;
	printf("{\"name\": \"%s\", \"mode\": \"%s\", \"batch\": %u, \"ns_median\": %.3f, "
	       "\"p10\": %.3f, \"p90\": %.3f, \"ns_per_pkt_median\": %.4f, "
	       "\"cycles_median\": %.1f, \"runs\": %u, \"calls_per_run\": %u%s}\n",
	       name, mode, batch, med, p10, p90, med / batch,
	       pct(s->cyc, s->n, 0.5) / div, s->n, calls, extra ? extra : "");
	fflush(stdout);
	s->n = 0;
}

/* Each entry of s is the cycles of `calls` calls: report per call. */
static void
report(const char *name, const char *mode, uint32_t batch, unsigned calls,
       struct series *s, const char *extra)
{
	report_div(name, mode, batch, calls, calls, s, extra);
}

/* ---- consumer ---------------------------------------------------------- */

#define DRAIN_RECS 4096

struct consumer {
	struct mscope_reader r;
	struct mscope_rec_hdr *recs;
	uint64_t *ids;
	int cpu;                 /* -1: do not pin (EAL launched it) */
	uint64_t poll_ns;        /* sleep after an empty poll; 0: spin */
	volatile int stop;
	uint64_t records;        /* drained so far; release-stored by the consumer */
	uint64_t polls, empty_polls;
	int error;
};

static int
consumer_open(struct consumer *c, const char *path)
{
	int rc;

	memset(c, 0, sizeof(*c));
	c->recs = malloc(DRAIN_RECS * sizeof(*c->recs));
	c->ids = malloc((size_t)DRAIN_RECS * MSCOPE_MAX_BATCH * sizeof(*c->ids));
	if (c->recs == NULL || c->ids == NULL)
		return -ENOMEM;
	rc = mscope_reader_open(path, 1, &c->r);
	if (rc < 0)
		fprintf(stderr, "fastpath_bench: reader open %s: %s\n", path,
			mscope_reader_strerror(rc));
	return rc;
}

/* Drain until empty; returns records drained or a negative code. */
static long
consumer_drain_all(struct consumer *c)
{
	long total = 0, n;
	uint64_t k;

	do {
		n = mscope_reader_drain(&c->r, c->recs, DRAIN_RECS, c->ids,
					(uint64_t)DRAIN_RECS * MSCOPE_MAX_BATCH, &k);
		if (n < 0)
			return n;
		total += n;
	} while (n > 0);
	c->records += (uint64_t)total;
	return total;
}

static int
consumer_loop(void *arg)
{
	struct consumer *c = arg;
	uint64_t k;

	if (c->cpu >= 0)
		pin_to(c->cpu);
	while (!c->stop) {
		long n = mscope_reader_drain(&c->r, c->recs, DRAIN_RECS, c->ids,
					     (uint64_t)DRAIN_RECS * MSCOPE_MAX_BATCH, &k);
		c->polls++;
		if (n < 0) {
			c->error = (int)n;
			break;
		}
		if (n == 0) {
			c->empty_polls++;
			if (c->poll_ns) {
				struct timespec d = { 0, (long)c->poll_ns };
				nanosleep(&d, NULL);
			} else {
				_mm_pause();
			}
			continue;
		}
		/* Release pairs with the producer's acquire in wait_caught_up. */
		__atomic_store_n(&c->records, c->records + (uint64_t)n, __ATOMIC_RELEASE);
	}
	return 0;
}

static void *
consumer_thread(void *arg)
{
	consumer_loop(arg);
	return NULL;
}

static void
wait_caught_up(struct consumer *c, struct mscope *ms)
{
	struct mscope_stats st;

	mscope_get_stats(ms, &st);
	while (__atomic_load_n(&c->records, __ATOMIC_ACQUIRE) < st.records && !c->error)
		_mm_pause();
}

enum consumer_mode { CONS_NONE, CONS_BUSY, CONS_TIMER, CONS_GAP };
static const char *const consumer_mode_name[] = {
	"no_consumer", "consumer_busy", "consumer_timer", "no_consumer_gap",
};
/* consumer_timer: the consumer drains the ring empty, then sleeps
 * TIMER_POLL_US, as a collector on a timer would; the producer idles
 * TIMER_GAP_US between timed runs (untimed), which keeps its average rate
 * (~4 M records/s at batch 32-64) well below what the consumer drains. */
#define TIMER_POLL_US 100
#define TIMER_GAP_US  50

/* Between runs: none: drain the ring empty here; busy: wait until the
 * consumer has caught up; timer: idle TIMER_GAP_US, whatever it does;
 * gap (the control for timer, no consumer thread): drain here, then idle
 * TIMER_GAP_US.  Measured: 50 us of idling alone makes the next run's
 * small-batch calls ~3-10 ns dearer (the core's predictors and caches go
 * cold-ish), so timer is compared with gap, not with none.  The idle loop
 * has no PAUSE: under KVM a PAUSE loop exits to the host (PLE). */
static void
idle_gap(void)
{
	const uint64_t until = mono_ns() + TIMER_GAP_US * 1000ULL;

	while (mono_ns() < until)
		;
}

static void
settle(struct consumer *c, struct mscope *ms, int mode)
{
	if (mode == CONS_BUSY) {
		wait_caught_up(c, ms);
	} else if (mode == CONS_TIMER) {
		idle_gap();
	} else if (consumer_drain_all(c) < 0) {
		fprintf(stderr, "fastpath_bench: drain failed\n");
		exit(1);
	} else if (mode == CONS_GAP) {
		idle_gap();
	}
}

/* ---- options ----------------------------------------------------------- */

struct opts {
	const char *dir;
	unsigned runs;
	int concurrent;          /* enum consumer_mode */
	int cold;
	size_t ring_bytes;
	uint64_t records;
	uint32_t batch;
	double seconds;
	int cpu, consumer_cpu;
	unsigned mbufs;
	int page_pool;
	int uniform;
	int addrs;               /* mbuf: the handle has MSCOPE_F_ADDRS */
	unsigned laps;
};

static void
usage(void)
{
	fprintf(stderr,
		"usage: fastpath_bench raw|drop|parts|fill|produce|drain [options]\n"
		"       fastpath_bench mbuf <EAL args> -- [options]\n"
		"  --dir D  --runs N  --consumer none|busy|timer|gap  --cold  --ring-bytes B\n"
		"  --records N  --batch K  --seconds S  --cpu C  --consumer-cpu C\n"
		"  --mbufs N  --pool packed|page  --mix mixed|udp64  --laps L  --addrs\n");
	exit(2);
}

static void
parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{"dir", required_argument, NULL, 'd'},
		{"runs", required_argument, NULL, 'r'},
		{"consumer", required_argument, NULL, 'c'},
		{"cold", no_argument, NULL, 'C'},
		{"ring-bytes", required_argument, NULL, 'B'},
		{"records", required_argument, NULL, 'n'},
		{"batch", required_argument, NULL, 'b'},
		{"seconds", required_argument, NULL, 's'},
		{"cpu", required_argument, NULL, 'p'},
		{"consumer-cpu", required_argument, NULL, 'P'},
		{"mbufs", required_argument, NULL, 'm'},
		{"pool", required_argument, NULL, 'o'},
		{"mix", required_argument, NULL, 'x'},
		{"laps", required_argument, NULL, 'l'},
		{"addrs", no_argument, NULL, 'A'},
		{NULL, 0, NULL, 0},
	};
	int opt;

	*o = (struct opts){ .runs = 1000, .batch = 32, .cpu = 0, .consumer_cpu = 1,
			    .mbufs = 2048, .laps = 1 };
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (opt) {
		case 'd': o->dir = optarg; break;
		case 'r': o->runs = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'c':
			if (strcmp(optarg, "busy") == 0)
				o->concurrent = CONS_BUSY;
			else if (strcmp(optarg, "timer") == 0)
				o->concurrent = CONS_TIMER;
			else if (strcmp(optarg, "gap") == 0)
				o->concurrent = CONS_GAP;
			else if (strcmp(optarg, "none") != 0)
				usage();
			break;
		case 'C': o->cold = 1; break;
		case 'A': o->addrs = 1; break;
		case 'B': o->ring_bytes = strtoull(optarg, NULL, 0); break;
		case 'n': o->records = strtoull(optarg, NULL, 0); break;
		case 'b': o->batch = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 's': o->seconds = atof(optarg); break;
		case 'p': o->cpu = atoi(optarg); break;
		case 'P': o->consumer_cpu = atoi(optarg); break;
		case 'm': o->mbufs = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'l': o->laps = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'x':
			if (strcmp(optarg, "udp64") == 0)
				o->uniform = 1;
			else if (strcmp(optarg, "mixed") != 0)
				usage();
			break;
		case 'o':
			if (strcmp(optarg, "page") == 0)
				o->page_pool = 1;
			else if (strcmp(optarg, "packed") != 0)
				usage();
			break;
		default: usage();
		}
	}
	if (o->dir == NULL || o->runs < 10 || o->batch == 0 || o->batch > MSCOPE_MAX_BATCH ||
	    o->mbufs < PKTS_PER_RUN || o->mbufs > POOL_MBUFS)
		usage();
}

static struct mscope *
open_ring(const struct opts *o, const char *name, size_t ring_bytes)
{
	struct mscope_params p = {
		.nf_name = name, .nf_id = 1, .lcore = (uint16_t)o->cpu,
		.ring_bytes = ring_bytes, .dir = o->dir,
		.flags = o->addrs ? MSCOPE_F_ADDRS : 0,
	};
	struct mscope *ms = mscope_open(&p);

	if (ms == NULL) {
		fprintf(stderr, "fastpath_bench: mscope_open(%s): %s\n", name, strerror(errno));
		exit(1);
	}
	mscope_set_tsc_hz(ms, (uint64_t)tsc_hz);
	return ms;
}

static void
close_ring(struct mscope *ms)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s", mscope_ring_path(ms));
	mscope_close(ms);
	unlink(path);
}

static void
start_consumer(struct consumer *c, struct mscope *ms, const struct opts *o,
	       pthread_t *th)
{
	if (consumer_open(c, mscope_ring_path(ms)) < 0)
		exit(1);
	if (o->concurrent == CONS_BUSY || o->concurrent == CONS_TIMER) {
		c->cpu = o->consumer_cpu;
		c->poll_ns = o->concurrent == CONS_TIMER ? TIMER_POLL_US * 1000ULL : 0;
		if (pthread_create(th, NULL, consumer_thread, c) != 0) {
			perror("pthread_create");
			exit(1);
		}
	}
}

static void
stop_consumer(struct consumer *c, const struct opts *o, pthread_t th)
{
	if (o->concurrent == CONS_BUSY || o->concurrent == CONS_TIMER) {
		c->stop = 1;
		pthread_join(th, NULL);
	}
	mscope_reader_close(&c->r);
	free(c->recs);
	free(c->ids);
}

/* ---- raw: mscope_record_ids ----------------------------------------------- */

/* The loop and call without the recorder: what the harness itself costs. */
__attribute__((noinline)) int
null_record(struct mscope *ms, uint8_t dir, uint16_t port, uint16_t queue,
	    const uint64_t *ids, uint32_t n, uint32_t occupancy)
{
	__asm__ volatile("" : : "r"(ms), "r"(ids), "r"(n), "r"(dir), "r"(port),
			 "r"(queue), "r"(occupancy) : "memory");
	return 0;
}

#define RAW_CALLS 256

/* Before the first timed run: ~0.1 s of recording (2 ms per 100 runs asked
 * for), so the first batch size measured does not pay for cold caches,
 * TLBs and a vCPU that was idle. */
static void
warm_up(struct mscope *ms, struct consumer *c, const struct opts *o)
{
	static uint64_t ids[32];
	const uint64_t until = mono_ns() + (o->runs >= 500 ? 100000000ULL : 20000000ULL);
	unsigned i;

	while (mono_ns() < until) {
		for (i = 0; i < RAW_CALLS; i++)
			mscope_record_ids(ms, 0, 0, 0, ids, 1 + i % 32, MSCOPE_OCC_UNKNOWN);
		settle(c, ms, o->concurrent);
	}
}

static int
bench_raw(const struct opts *o)
{
	const char *mode = consumer_mode_name[o->concurrent];
	static uint64_t ids[64];
	struct series s, sn;
	struct consumer c;
	pthread_t th;
	struct mscope *ms;
	unsigned b, run, i;
	uint64_t bad = 0;

	for (i = 0; i < 64; i++)
		ids[i] = 0x9e3779b97f4a7c15ULL * (i + 1);
	pin_to(o->cpu);
	ms = open_ring(o, "bench-raw", o->ring_bytes);
	start_consumer(&c, ms, o, &th);
	series_init(&s, o->runs);
	series_init(&sn, o->runs);
	warm_up(ms, &c, o);
	for (b = 0; b < N_BATCHES; b++) {
		const uint32_t n = batches[b];
		struct mscope_stats st0, st1;
		char extra[160];

		/* Warm up: page tables, branch predictors, the whole ring once. */
		for (run = 0; run < 64; run++) {
			for (i = 0; i < RAW_CALLS; i++)
				mscope_record_ids(ms, 0, 0, 0, ids, n, MSCOPE_OCC_UNKNOWN);
			settle(&c, ms, o->concurrent);
		}
		mscope_get_stats(ms, &st0);
		for (run = 0; run < o->runs; run++) {
			uint64_t t0, t1;
			int rc = 0;

			t0 = tsc_begin();
			for (i = 0; i < RAW_CALLS; i++)
				rc |= mscope_record_ids(ms, (uint8_t)(i & 1), 0, 0, ids, n,
							MSCOPE_OCC_UNKNOWN);
			t1 = tsc_end();
			s.cyc[s.n++] = t1 - t0;
			bad += rc != 0;
			settle(&c, ms, o->concurrent);

			t0 = tsc_begin();
			for (i = 0; i < RAW_CALLS; i++)
				rc |= null_record(ms, (uint8_t)(i & 1), 0, 0, ids, n,
						  MSCOPE_OCC_UNKNOWN);
			t1 = tsc_end();
			sn.cyc[sn.n++] = t1 - t0;
		}
		mscope_get_stats(ms, &st1);
		snprintf(extra, sizeof(extra),
			 ", \"drop_records\": %" PRIu64 ", \"ring_bytes\": %zu",
			 st1.drop_records - st0.drop_records,
			 o->ring_bytes ? o->ring_bytes : (size_t)MSCOPE_DEFAULT_RING_BYTES);
		report("record_ids", mode, n, RAW_CALLS, &s, extra);
		report("harness_call", mode, n, RAW_CALLS, &sn, NULL);
	}
	if (bad)
		fprintf(stderr, "fastpath_bench: %" PRIu64 " runs saw a drop\n", bad);
	if (o->concurrent == CONS_BUSY || o->concurrent == CONS_TIMER) {
		char extra[200];

		snprintf(extra, sizeof(extra),
			 ", \"consumer_polls\": %" PRIu64 ", \"consumer_empty_polls\": %" PRIu64
			 ", \"consumer_records\": %" PRIu64,
			 c.polls, c.empty_polls, c.records);
		printf("{\"name\": \"consumer_stats\", \"mode\": \"%s\"%s}\n", mode, extra);
	}
	stop_consumer(&c, o, th);
	close_ring(ms);
	return 0;
}

/* ---- parts: where the raw cost goes --------------------------------------- */

/*
 * The recorder with parts taken out, built from the inline producer in
 * mscope_ring.h over a second ring file that this process maps itself
 * (the library's handle for that file is never written through):
 *   record_ids     the library call, as above (its own ring);
 *   inline_write   mscope_ring_write() inlined here: no PLT call, no checks;
 *   inline_no_tsc  the same with a constant in place of the TSC read;
 *   inline_no_copy reserve + commit with a TSC read, no id copy;
 *   rdtsc_only     one TSC read per call and nothing else;
 *   rx_ids_addrs   mscope_rx_ids_addrs(): the rx record and its address
 *                  record (the ingress NF's raw call), on the library's ring.
 */
enum part { P_LIB, P_INLINE, P_NO_TSC, P_NO_COPY, P_RDTSC, P_ADDRS, P_COUNT };
static const char *const part_name[P_COUNT] = {
	"parts_record_ids", "parts_inline_write", "parts_inline_no_tsc",
	"parts_inline_no_copy", "parts_rdtsc_only", "parts_rx_ids_addrs",
};

static int
bench_parts(const struct opts *o)
{
	static const uint32_t part_batches[] = {1, 32, 64};
	static uint64_t ids[64];
	const size_t size = MSCOPE_DEFAULT_RING_BYTES;
	struct mscope_producer prod;
	struct consumer ca, cb;
	struct series s[P_COUNT];
	struct mscope *ma, *mb;
	unsigned b, run, v, i;
	void *map;
	int fd;

	pin_to(o->cpu);
	ma = open_ring(o, "bench-parts-lib", size);
	mb = open_ring(o, "bench-parts-inline", size);
	fd = open(mscope_ring_path(mb), O_RDWR | O_CLOEXEC);
	map = fd < 0 ? MAP_FAILED : mmap(NULL, MSCOPE_RING_HDR_SIZE + size,
					 PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		perror("fastpath_bench: map ring");
		return 1;
	}
	close(fd);
	memset(&prod, 0, sizeof(prod));
	prod.hdr = map;
	prod.data = (uint8_t *)map + MSCOPE_RING_HDR_SIZE;
	prod.mask = size - 1;
	prod.nf_id = 1;
	if (consumer_open(&ca, mscope_ring_path(ma)) < 0 ||
	    consumer_open(&cb, mscope_ring_path(mb)) < 0)
		return 1;
	for (v = 0; v < P_COUNT; v++)
		series_init(&s[v], o->runs);
	warm_up(ma, &ca, o);

	for (b = 0; b < sizeof(part_batches) / sizeof(part_batches[0]); b++) {
		const uint32_t n = part_batches[b];

		for (run = 0; run < o->runs + 16; run++) {
			for (v = 0; v < P_COUNT; v++) {
				uint64_t t0, t1, acc = 0;

				t0 = tsc_begin();
				switch (v) {
				case P_LIB:
					for (i = 0; i < RAW_CALLS; i++)
						mscope_record_ids(ma, 0, 0, 0, ids, n,
								  MSCOPE_OCC_UNKNOWN);
					break;
				case P_INLINE:
					for (i = 0; i < RAW_CALLS; i++)
						mscope_ring_write(&prod, 0, 0, 0, MSCOPE_OCC_UNKNOWN,
								  __rdtsc(), ids, n);
					break;
				case P_NO_TSC:
					for (i = 0; i < RAW_CALLS; i++)
						mscope_ring_write(&prod, 0, 0, 0, MSCOPE_OCC_UNKNOWN,
								  i, ids, n);
					break;
				case P_NO_COPY:
					for (i = 0; i < RAW_CALLS; i++) {
						if (mscope_ring_reserve(&prod, n) != NULL)
							mscope_ring_commit(&prod, 0, 0, 0,
									   MSCOPE_OCC_UNKNOWN,
									   __rdtsc());
					}
					break;
				case P_RDTSC:
					for (i = 0; i < RAW_CALLS; i++)
						acc += __rdtsc();
					break;
				case P_ADDRS:
					for (i = 0; i < RAW_CALLS; i++)
						mscope_rx_ids_addrs(ma, 0, 0, ids, ids, n,
								    MSCOPE_OCC_UNKNOWN);
					break;
				}
				t1 = tsc_end();
				sink += acc;
				if (run >= 16)
					s[v].cyc[s[v].n++] = t1 - t0;
				if (consumer_drain_all(&ca) < 0 || consumer_drain_all(&cb) < 0) {
					fprintf(stderr, "fastpath_bench: drain failed\n");
					return 1;
				}
			}
		}
		for (v = 0; v < P_COUNT; v++)
			report(part_name[v], "no_consumer", n, RAW_CALLS, &s[v], NULL);
	}
	mscope_reader_close(&ca.r);
	mscope_reader_close(&cb.r);
	munmap(map, MSCOPE_RING_HDR_SIZE + size);
	close_ring(ma);
	close_ring(mb);
	return 0;
}

/* ---- drop: the ring-full path --------------------------------------------- */

static int
bench_drop(const struct opts *o)
{
	static const uint32_t drop_batches[] = {1, 32, 64};
	static uint64_t ids[64];
	struct series s;
	struct mscope *ms;
	unsigned b, run, i;

	pin_to(o->cpu);
	ms = open_ring(o, "bench-drop", MSCOPE_RING_MIN_DATA);
	series_init(&s, o->runs);
	/* Fill: no consumer ever drains this ring.  Largest batch first, then
	 * the smallest, so no record of any size fits any more. */
	while (mscope_record_ids(ms, 0, 0, 0, ids, 64, MSCOPE_OCC_UNKNOWN) == 0)
		;
	while (mscope_record_ids(ms, 0, 0, 0, ids, 1, MSCOPE_OCC_UNKNOWN) == 0)
		;
	for (b = 0; b < sizeof(drop_batches) / sizeof(drop_batches[0]); b++) {
		const uint32_t n = drop_batches[b];
		struct mscope_stats st0, st1;
		char extra[96];

		mscope_get_stats(ms, &st0);
		for (run = 0; run < o->runs; run++) {
			uint64_t t0, t1;
			int rc = -1;

			t0 = tsc_begin();
			for (i = 0; i < RAW_CALLS; i++)
				rc &= mscope_record_ids(ms, 0, 0, 0, ids, n, MSCOPE_OCC_UNKNOWN);
			t1 = tsc_end();
			if (rc == 0) {
				fprintf(stderr, "fastpath_bench: a record was not dropped\n");
				return 1;
			}
			s.cyc[s.n++] = t1 - t0;
		}
		mscope_get_stats(ms, &st1);
		snprintf(extra, sizeof(extra), ", \"dropped\": %" PRIu64,
			 st1.drop_records - st0.drop_records);
		report("drop_path", "ring_full", n, RAW_CALLS, &s, extra);
	}
	close_ring(ms);
	return 0;
}

/* ---- fill / produce: rings for bench/reader.py ---------------------------- */

static int
bench_fill(const struct opts *o)
{
	static uint64_t ids[MSCOPE_MAX_BATCH];
	struct mscope_stats st = {0};
	struct mscope *ms;
	uint64_t r, t0, t1, before;
	uint32_t i;
	unsigned lap;

	pin_to(o->cpu);
	ms = open_ring(o, "bench-fill", o->ring_bytes);
	for (lap = 0; lap < o->laps; lap++) {
		before = st.records;
		t0 = mono_ns();
		for (r = 0; r < o->records; r++) {
			for (i = 0; i < o->batch; i++)
				ids[i] = r << 16 | i;
			if (mscope_record_ids(ms, (uint8_t)(r & 1), 0, 0, ids, o->batch, 7) != 0)
				break;   /* full */
		}
		t1 = mono_ns();
		mscope_get_stats(ms, &st);
		printf("{\"name\": \"fill\", \"lap\": %u, \"path\": \"%s\", \"records\": %" PRIu64
		       ", \"ids\": %" PRIu64 ", \"batch\": %u, \"drop_records\": %" PRIu64
		       ", \"fill_seconds\": %.3f, \"tsc_hz\": %.0f}\n",
		       lap, mscope_ring_path(ms), st.records - before,
		       (st.records - before) * o->batch, o->batch,
		       st.drop_records, (t1 - t0) / 1e9, tsc_hz);
		fflush(stdout);
		/* Next lap when the reader says it has drained this one. */
		if (lap + 1 < o->laps) {
			char line[16];

			if (fgets(line, sizeof(line), stdin) == NULL)
				break;
		}
	}
	mscope_close(ms);   /* the file stays for the reader; it unlinks it */
	return 0;
}

static int
bench_produce(const struct opts *o)
{
	static uint64_t ids[MSCOPE_MAX_BATCH];
	struct mscope_stats st;
	struct mscope *ms;
	uint64_t r = 0, t0, deadline;
	uint32_t i;

	pin_to(o->cpu);
	ms = open_ring(o, "bench-produce", o->ring_bytes);
	printf("{\"name\": \"produce_ready\", \"path\": \"%s\"}\n", mscope_ring_path(ms));
	fflush(stdout);
	/* Let the reader attach before the clock starts. */
	usleep(200000);
	t0 = mono_ns();
	deadline = t0 + (uint64_t)(o->seconds * 1e9);
	for (;;) {
		for (i = 0; i < o->batch; i++)
			ids[i] = r << 16 | i;
		mscope_record_ids(ms, (uint8_t)(r & 1), 0, 0, ids, o->batch, 7);
		if ((++r & 1023) == 0 && mono_ns() >= deadline)
			break;
	}
	mscope_get_stats(ms, &st);
	printf("{\"name\": \"produce_done\", \"path\": \"%s\", \"calls\": %" PRIu64
	       ", \"records\": %" PRIu64 ", \"drop_records\": %" PRIu64
	       ", \"seconds\": %.3f, \"batch\": %u}\n",
	       mscope_ring_path(ms), r, st.records, st.drop_records,
	       (mono_ns() - t0) / 1e9, o->batch);
	mscope_close(ms);
	return 0;
}

/* ---- drain: the C consumer alone, for bench/reader.py ---------------------- */

/*
 * What bounds the reader: mscope_reader_drain() against a plain memcpy of
 * the same bytes, on a ring written by the other core and too big for any
 * cache ("cold", the prefilled case; the reader maps with MAP_POPULATE,
 * so its page faults come at open), the same with the mapping faulted in first
 * ("cold_prefaulted", as after a reader's first lap), and on a 1 MiB ring
 * written by this core just before ("l2").  Each call drains up to
 * --records records.
 */
struct filler {
	struct mscope *ms;
	uint32_t batch;
	int cpu;
	uint64_t records;
};

static void *
fill_thread(void *arg)
{
	struct filler *f = arg;
	static uint64_t ids[MSCOPE_MAX_BATCH];
	uint64_t r;
	uint32_t i;

	if (f->cpu >= 0)
		pin_to(f->cpu);
	for (r = 0;; r++) {
		for (i = 0; i < f->batch; i++)
			ids[i] = r << 16 | i;
		if (mscope_record_ids(f->ms, (uint8_t)(r & 1), 0, 0, ids, f->batch, 7) != 0)
			break;
	}
	f->records = r;
	return NULL;
}

static void
fill_from(struct filler *f, int cpu)
{
	pthread_t th;

	f->cpu = cpu;
	if (pthread_create(&th, NULL, fill_thread, f) != 0) {
		perror("pthread_create");
		exit(1);
	}
	pthread_join(th, NULL);
}

#define PER_REC_SCALE 1024   /* fixed-point scale of per-record cycles */

static int
bench_drain(const struct opts *o)
{
	const size_t cold_bytes = o->ring_bytes ? o->ring_bytes : (size_t)1 << 30;
	const size_t l2_bytes = 1U << 20;
	const uint32_t arr = o->records ? (uint32_t)o->records : 4096;
	const size_t rec_bytes = MSCOPE_REC_SIZE(o->batch);
	struct mscope_rec_hdr *recs = malloc(arr * sizeof(*recs));
	uint64_t *ids = malloc((size_t)arr * o->batch * sizeof(*ids));
	uint8_t *dst = malloc((size_t)arr * rec_bytes);
	int pass;

	if (recs == NULL || ids == NULL || dst == NULL)
		return 1;
	/* Fault the destination arrays in, as preallocated ones are. */
	memset(recs, 0, arr * sizeof(*recs));
	memset(ids, 0, (size_t)arr * o->batch * sizeof(*ids));
	memset(dst, 0, (size_t)arr * rec_bytes);
	pin_to(o->cpu);

	static const char *const where[3] = { "cold", "cold_prefaulted", "l2" };

	for (pass = 0; pass < 6; pass++) {
		const int cold = pass < 4, prefault = pass / 2 == 1, copy_only = pass & 1;
		const size_t ring = cold ? cold_bytes : l2_bytes;
		const unsigned reps = cold ? 1 : o->runs;
		struct series s;
		uint64_t total_recs = 0, total_cyc = 0;
		unsigned rep;
		char extra[200];

		series_init(&s, (unsigned)(ring / rec_bytes / arr + 2) * reps);
		for (rep = 0; rep < reps; rep++) {
			struct filler f = { .batch = o->batch };
			struct mscope_reader r;
			uint64_t k;
			long n;

			f.ms = open_ring(o, "bench-drain", ring);
			/* cold: written by the other core; l2: by this one, just now. */
			fill_from(&f, cold ? o->consumer_cpu : o->cpu);
			if (mscope_reader_open(mscope_ring_path(f.ms), 1, &r) < 0)
				return 1;
			if (prefault) {
				/* Map every page of our view before the clock starts: a
				 * long-running reader has, after its first lap. */
				size_t off;

				for (off = 0; off < ring; off += 4096)
					sink += r.data[off];
			}
			if (!copy_only) {
				do {
					uint64_t t0 = tsc_begin();
					n = mscope_reader_drain(&r, recs, arr, ids,
								(uint64_t)arr * o->batch, &k);
					uint64_t t1 = tsc_end();
					if (n > 0) {
						total_recs += (uint64_t)n;
						total_cyc += t1 - t0;
						if (s.n < s.cap)
							s.cyc[s.n++] = (t1 - t0) * PER_REC_SCALE / (uint64_t)n;
					}
				} while (n > 0);
			} else {
				const uint8_t *src = (const uint8_t *)r.data;
				const size_t used = f.records * rec_bytes, chunk = (size_t)arr * rec_bytes;
				size_t off;

				for (off = 0; off < used; off += chunk) {
					size_t len = used - off < chunk ? used - off : chunk;
					uint64_t t0 = tsc_begin();
					memcpy(dst, src + off, len);
					uint64_t t1 = tsc_end();
					sink += dst[len - 1];
					total_recs += len / rec_bytes;
					total_cyc += t1 - t0;
					if (s.n < s.cap && len >= rec_bytes)
						s.cyc[s.n++] = (t1 - t0) * PER_REC_SCALE / (len / rec_bytes);
				}
			}
			mscope_reader_close(&r);
			close_ring(f.ms);
		}
		snprintf(extra, sizeof(extra),
			 ", \"records\": %" PRIu64 ", \"records_per_s\": %.0f"
			 ", \"bytes_per_record\": %zu, \"ring_bytes\": %zu, \"array_records\": %u",
			 total_recs, total_recs / (total_cyc / tsc_hz), rec_bytes, ring, arr);
		/* The series holds cycles per record of each call, scaled. */
		report_div(copy_only ? "c_memcpy" : "c_reader_drain", where[pass / 2],
			   o->batch, PER_REC_SCALE, 1, &s, extra);
	}
	free(recs);
	free(ids);
	free(dst);
	return 0;
}

/* ---- mbuf: mscope_rx / mscope_tx ------------------------------------------ */

#ifdef MSCOPE_BENCH_DPDK


static uint64_t rng_state = 0x2545f4914f6cdd1dULL;

static uint64_t
rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

/* IPv4 over Ethernet, 2/3 TCP and 1/3 UDP, frame sizes 64..1024, random
 * payload: the header bytes mscope_pktid reads are all there.  uniform
 * (--mix udp64): every frame a 64-byte UDP one, so the id parser's
 * branches always go the same way. */
static void
build_frame(struct rte_mbuf *m, unsigned k, int uniform)
{
	static const uint16_t sizes[] = {64, 64, 128, 256, 512, 1024};
	uint16_t frame = uniform ? 64 : sizes[rng() % 6];
	uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(p + 14);
	int tcp = !uniform && k % 3 != 0;
	uint16_t l4len = tcp ? 20 : 8, paylen = frame - 14 - 20 - l4len, i;
	uint8_t *pay = (uint8_t *)ip + 20 + l4len;

	memset(p, 0, 14 + 20 + l4len);
	p[0] = 0x02; p[5] = 0x01; p[6] = 0x02; p[11] = 0x02;
	p[12] = 0x08; p[13] = 0x00;
	ip->version_ihl = 0x45;
	ip->total_length = rte_cpu_to_be_16(frame - 14);
	ip->packet_id = rte_cpu_to_be_16((uint16_t)rng());
	ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	ip->time_to_live = 64;
	ip->next_proto_id = tcp ? IPPROTO_TCP : IPPROTO_UDP;
	ip->src_addr = rte_cpu_to_be_32(0x0a000000 | (uint32_t)(rng() & 0xffffff));
	ip->dst_addr = rte_cpu_to_be_32(0xc0a80000 | (uint32_t)(rng() & 0xffff));
	if (tcp) {
		struct rte_tcp_hdr *t = (struct rte_tcp_hdr *)(ip + 1);

		t->src_port = rte_cpu_to_be_16((uint16_t)(1024 + rng() % 60000));
		t->dst_port = rte_cpu_to_be_16(443);
		t->sent_seq = rte_cpu_to_be_32((uint32_t)rng());
		t->data_off = 5 << 4;
		t->tcp_flags = RTE_TCP_ACK_FLAG;
	} else {
		struct rte_udp_hdr *u = (struct rte_udp_hdr *)(ip + 1);

		u->src_port = rte_cpu_to_be_16((uint16_t)(1024 + rng() % 60000));
		u->dst_port = rte_cpu_to_be_16(53);
		u->dgram_len = rte_cpu_to_be_16(8 + paylen);
	}
	for (i = 0; i + 8 <= paylen && i < 64; i += 8) {
		uint64_t r = rng();
		memcpy(pay + i, &r, 8);
	}
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	m->data_len = frame;
	m->pkt_len = frame;
}

/* The least an L3 forwarder does per packet: read the destination
 * address, pick an output port, rewrite the destination MAC. */
static inline void
nf_touch(struct rte_mbuf **pkts, uint32_t n)
{
	uint64_t acc = 0;
	uint32_t i;

	for (i = 0; i < n; i++) {
		uint8_t *p = rte_pktmbuf_mtod(pkts[i], uint8_t *);
		struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(p + 14);
		uint32_t dst = ip->dst_addr;

		pkts[i]->port = (uint16_t)(dst & 1);
		p[5] = (uint8_t)dst;
		acc += pkts[i]->pkt_len;
	}
	sink += acc;
}

enum mbuf_variant {
	V_BASE,        /* nf_touch only */
	V_RX,          /* mscope_rx + nf_touch */
	V_RXTX,        /* mscope_rx + nf_touch + mscope_tx (tx takes rx's stamp) */
	V_TX_HASH,     /* nf_touch + mscope_tx on unstamped mbufs: hashes at tx */
	V_PKTID,       /* nf_touch + mscope_mbuf_pktid per packet: the hash alone */
	V_RX_PF,       /* prefetch every frame of the batch, then as V_RX */
	V_COUNT
};
static const char *const variant_name[V_COUNT] = {
	"mbuf_baseline", "mbuf_rx", "mbuf_rx_tx", "mbuf_tx_hash", "mbuf_pktid_only",
	"mbuf_prefetch_rx",
};

struct mbuf_args {
	const struct opts *o;
	struct rte_mbuf **mbufs;
};

/* Push every frame line of the packets this run will use out of the cache
 * (as after NIC DMA without DDIO); the mbuf struct lines stay cached, as
 * after the PMD's rx. */
static void
flush_frames(struct rte_mbuf **pkts, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		_mm_clflush(rte_pktmbuf_mtod(pkts[i], void *));
	_mm_mfence();
}

/*
 * The mbuf pool.  rte_pktmbuf_pool_create() under --no-huge keeps every
 * mbuf inside one 4 KiB page (it must assume IOVA-contiguous objects), so
 * the mbufs sit 4096 bytes apart: all at the same page offset, all in the
 * same few L1/L2 sets.  Measured here, that alone makes touching two lines
 * of 1024 mbufs cost ~30 cycles a packet instead of ~5.  A hugepage-backed
 * NF packs them (2368-byte stride), so by default the bench builds the
 * same pool with RTE_MEMPOOL_F_NO_IOVA_CONTIG, which packs them on 4 KiB
 * pages too; --pool page keeps the rte_pktmbuf_pool_create() layout.
 */
static struct rte_mempool *
create_pool(int packed)
{
	struct rte_pktmbuf_pool_private priv = {
		.mbuf_data_room_size = RTE_MBUF_DEFAULT_BUF_SIZE,
	};
	struct rte_mempool *mp;

	if (!packed)
		return rte_pktmbuf_pool_create("fastpath_bench", POOL_MBUFS, 256, 0,
					       RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
	mp = rte_mempool_create_empty("fastpath_bench", POOL_MBUFS,
				      sizeof(struct rte_mbuf) + RTE_MBUF_DEFAULT_BUF_SIZE,
				      256, sizeof(priv), rte_socket_id(),
				      RTE_MEMPOOL_F_NO_IOVA_CONTIG);
	if (mp == NULL)
		return NULL;
	if (rte_mempool_set_ops_byname(mp, rte_mbuf_best_mempool_ops(), NULL) != 0)
		goto fail;
	rte_pktmbuf_pool_init(mp, &priv);
	if (rte_mempool_populate_default(mp) < 0)
		goto fail;
	rte_mempool_obj_iter(mp, rte_pktmbuf_init, NULL);
	return mp;
fail:
	rte_mempool_free(mp);
	return NULL;
}

static int
bench_mbuf(const struct opts *o)
{
	char mode[96];
	struct rte_mbuf **mbufs;
	struct rte_mempool *pool;
	struct series s[V_COUNT];
	struct consumer c;
	struct mscope *ms;
	unsigned b, run, v, i, j, pos = 0;
	long stride;
	char extra[200];

	snprintf(mode, sizeof(mode), "%s%s%s%s%s", consumer_mode_name[o->concurrent],
		 o->cold ? "_cold" : "", o->uniform ? "_udp64" : "", o->page_pool ? "_pagepool" : "",
		 o->addrs ? "_addrs" : "");
	pool = create_pool(!o->page_pool);
	mbufs = calloc(o->mbufs, sizeof(*mbufs));
	if (pool == NULL || mbufs == NULL ||
	    rte_pktmbuf_alloc_bulk(pool, mbufs, o->mbufs) != 0) {
		fprintf(stderr, "fastpath_bench: mbuf pool: %s\n", rte_strerror(rte_errno));
		return 1;
	}
	for (i = 0; i < o->mbufs; i++)
		build_frame(mbufs[i], i, o->uniform);
	stride = labs((long)((uintptr_t)mbufs[1] - (uintptr_t)mbufs[0]));
	ms = open_ring(o, "bench-mbuf", o->ring_bytes);
	if (consumer_open(&c, mscope_ring_path(ms)) < 0)
		return 1;
	if (o->concurrent == CONS_BUSY || o->concurrent == CONS_TIMER) {
		c.cpu = -1;
		c.poll_ns = o->concurrent == CONS_TIMER ? TIMER_POLL_US * 1000ULL : 0;
		if (rte_eal_remote_launch(consumer_loop, &c, (unsigned)o->consumer_cpu) != 0) {
			fprintf(stderr, "fastpath_bench: cannot launch consumer on lcore %d\n",
				o->consumer_cpu);
			return 1;
		}
	}
	for (v = 0; v < V_COUNT; v++)
		series_init(&s[v], o->runs);

	for (b = 0; b < N_BATCHES; b++) {
		const uint32_t n = batches[b];
		const unsigned calls = PKTS_PER_RUN / n;
		struct mscope_stats st0, st1;

		mscope_get_stats(ms, &st0);
		for (run = 0; run < o->runs + 16; run++) {
			/* Variants interleaved, each on the same packets, so drift
			 * and cache state hit them alike; the order rotates every
			 * round, because the first variant on a round's packets
			 * runs measurably slower (seen: the baseline bimodal at
			 * ~60 and ~105 ns per 32 when it always went first). */
			for (j = 0; j < V_COUNT; j++) {
				const unsigned v = (j + run) % V_COUNT;
				struct rte_mbuf **batch0 = mbufs + pos;
				uint64_t t0, t1, acc = 0;
				unsigned k;

				if (v == V_TX_HASH) {
					/* Untimed: leave a tx stamp on every packet, so the
					 * timed tx finds no rx stamp of ours and hashes,
					 * whichever variant ran on these packets before. */
					for (k = 0; k < calls; k++)
						mscope_tx(ms, 1, 0, batch0 + k * n, (uint16_t)n,
							  MSCOPE_OCC_UNKNOWN);
				}
				if (o->cold)
					flush_frames(batch0, calls * n);
				t0 = tsc_begin();
				for (k = 0; k < calls; k++) {
					struct rte_mbuf **pk = batch0 + k * n;

					switch (v) {
					case V_BASE:
						nf_touch(pk, n);
						break;
					case V_RX:
						mscope_rx(ms, 0, 0, pk, (uint16_t)n, MSCOPE_OCC_UNKNOWN);
						nf_touch(pk, n);
						break;
					case V_RXTX:
						mscope_rx(ms, 0, 0, pk, (uint16_t)n, MSCOPE_OCC_UNKNOWN);
						nf_touch(pk, n);
						mscope_tx(ms, 1, 0, pk, (uint16_t)n, MSCOPE_OCC_UNKNOWN);
						break;
					case V_TX_HASH:
						nf_touch(pk, n);
						mscope_tx(ms, 1, 0, pk, (uint16_t)n, MSCOPE_OCC_UNKNOWN);
						break;
					case V_PKTID:
						nf_touch(pk, n);
						for (i = 0; i < n; i++)
							acc += mscope_mbuf_pktid(pk[i]);
						break;
					case V_RX_PF:
						for (i = 0; i < n; i++)
							rte_prefetch0(rte_pktmbuf_mtod(pk[i], void *));
						mscope_rx(ms, 0, 0, pk, (uint16_t)n, MSCOPE_OCC_UNKNOWN);
						nf_touch(pk, n);
						break;
					}
				}
				t1 = tsc_end();
				sink += acc;
				if (run >= 16)   /* the first 16 rounds warm up */
					s[v].cyc[s[v].n++] = t1 - t0;
				settle(&c, ms, o->concurrent);
			}
			pos = (pos + calls * n) % o->mbufs;
			if (pos + PKTS_PER_RUN > o->mbufs)
				pos = 0;
		}
		mscope_get_stats(ms, &st1);
		snprintf(extra, sizeof(extra), ", \"drop_records\": %" PRIu64
			 ", \"mbufs\": %u, \"pool\": \"%s\", \"mbuf_stride\": %ld",
			 st1.drop_records - st0.drop_records, o->mbufs,
			 o->page_pool ? "page" : "packed", stride);
		for (v = 0; v < V_COUNT; v++)
			report(variant_name[v], mode, n, calls, &s[v], extra);
	}
	if (o->concurrent == CONS_BUSY || o->concurrent == CONS_TIMER) {
		c.stop = 1;
		rte_eal_wait_lcore((unsigned)o->consumer_cpu);
	}
	mscope_reader_close(&c.r);
	close_ring(ms);
	rte_pktmbuf_free_bulk(mbufs, o->mbufs);
	rte_mempool_free(pool);
	return 0;
}
#endif /* MSCOPE_BENCH_DPDK */

int
main(int argc, char **argv)
{
	struct opts o;
	const char *cmd;

	if (argc < 2)
		usage();
	cmd = argv[1];
	if (strcmp(cmd, "mbuf") == 0) {
#ifdef MSCOPE_BENCH_DPDK
		/* argv[1] stands in for the program name EAL skips. */
		int rc = rte_eal_init(argc - 1, argv + 1);
		if (rc < 0) {
			fprintf(stderr, "fastpath_bench: EAL init: %s\n", rte_strerror(rte_errno));
			return 2;
		}
		parse_opts(argc - 1 - rc, argv + 1 + rc, &o);
		tsc_hz = calibrate_tsc(200);
		printf("{\"name\": \"tsc\", \"tsc_hz\": %.0f, \"rte_tsc_hz\": %" PRIu64 "}\n",
		       tsc_hz, rte_get_tsc_hz());
		if (rte_lcore_id() != (unsigned)o.cpu)
			fprintf(stderr, "fastpath_bench: main lcore %u, not %d\n",
				rte_lcore_id(), o.cpu);
		rc = bench_mbuf(&o);
		rte_eal_cleanup();
		return rc;
#else
		fprintf(stderr, "fastpath_bench: built without DPDK\n");
		return 2;
#endif
	}
	parse_opts(argc - 1, argv + 1, &o);
	tsc_hz = calibrate_tsc(o.runs >= 500 ? 200 : 50);
	if (strcmp(cmd, "fill") != 0 && strcmp(cmd, "produce") != 0 && strcmp(cmd, "drain") != 0)
		printf("{\"name\": \"tsc\", \"tsc_hz\": %.0f}\n", tsc_hz);
	if (strcmp(cmd, "raw") == 0)
		return bench_raw(&o);
	if (strcmp(cmd, "drop") == 0)
		return bench_drop(&o);
	if (strcmp(cmd, "parts") == 0)
		return bench_parts(&o);
	if (strcmp(cmd, "fill") == 0)
		return bench_fill(&o);
	if (strcmp(cmd, "produce") == 0)
		return bench_produce(&o);
	if (strcmp(cmd, "drain") == 0)
		return bench_drain(&o);
	usage();
	return 2;
}
