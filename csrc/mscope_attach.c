/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Attach to an unmodified, dynamically linked DPDK application:
 *
 *   MSCOPE_NF_NAME=fwd LD_PRELOAD=libmscope.so dpdk-testpmd ...
 *
 * libmscope defines rte_eth_dev_start(): the dynamic linker resolves the
 * application's calls to it here first.  We start the port with the real
 * function (dlsym RTLD_NEXT), then install an rx and a tx callback on every
 * configured queue (RTE_ETHDEV_RXTX_CALLBACKS is on in Debian's DPDK).  The
 * callbacks record with mscope_rx/mscope_tx into a ring per polling thread,
 * opened on that thread's first rx poll (the only allocation, once per
 * lcore; with the id stamp registered then too, not on the first packets).
 *
 * Identity: MSCOPE_NF_NAME (default: the program's name), MSCOPE_NF_ID
 * (default: a hash of the name, 1..65535), MSCOPE_DIR for the registry.
 * MSCOPE_ADDRS=1 adds address records to rx (MSCOPE_F_ADDRS): for the
 * chain's ingress NF.
 *
 * MSCOPE_IDS=0 records batches only (MSCOPE_F_NOIDS: count and tsc, no
 * packet ids, no header reads).  Empty polls write an idle-poll record at
 * most every MSCOPE_IDLE_NS (mscope_record.h); MSCOPE_IDLE=0 turns them
 * off (MSCOPE_F_NOIDLE).  Each port's refusals (rte_eth_stats.imissed:
 * packets the NIC dropped while its rx queue was full) are read at the
 * first poll of every MSCOPE_REFUSED_NS and the first poll after a
 * silence (with MSCOPE_IDLE=0 none can be seen: the interval only), and
 * written as a refused record when they grew (mscope_record.h), less
 * often where a reading is slow (REFUSED_BUDGET); MSCOPE_REFUSED=0 turns
 * that off (docs/attach.md says when to).  MSCOPE_CB_CYCLES=1 times every
 * callback (two serialised TSC reads each) and reports the sums in
 * /mscope/status: for bench/overhead.py, not for production.
 *
 * Only when attached: an NF that links libmscope and calls mscope_rx/tx
 * itself also resolves rte_eth_dev_start here, and must not be recorded
 * twice.  So callbacks go in only when LD_PRELOAD names libmscope or
 * MSCOPE_ATTACH=1 (what `mscope attach` sets); MSCOPE_ATTACH=0 turns them
 * off.
 *
 * EAL plugin mode:  dpdk-testpmd -d /path/libmscope.so ...
 * EAL dlopen()s the library inside rte_eal_init(), after the app's calls
 * to rte_eth_dev_start were bound to librte_ethdev: nothing to interpose.
 * The constructor below then starts one thread, "mscope-watch", that wakes
 * every 10 ms (nanosleep, never spins) and puts the same callbacks on the
 * queues of every port that has them configured (adding a callback while
 * the datapath runs is safe: ethdev publishes it with a release store).
 * Packets a port moves before the watcher's next tick are not recorded:
 * up to ~10 ms after the app configures and starts it.  The watcher runs
 * when libmscope was loaded by EAL's -d (found in /proc/self/cmdline) or
 * MSCOPE_ATTACH=1 says so, and never when a libmscope already interposes
 * rte_eth_dev_start (preloaded as well: that copy records, this one stays
 * idle), so using both ways at once records every packet once.
 *
 * vhost-user (OVS-DPDK and any app that moves packets with DPDK's vhost
 * library): rte_vhost_dequeue_burst / rte_vhost_enqueue_burst are not
 * ethdev calls, so no ethdev callback ever sees them.  libmscope defines
 * both as well; when attached (as above) they record like the ethdev
 * callbacks, into the same per-thread ring: rx right after the real
 * dequeue, tx of the packets the real enqueue accepted, with the TSC read
 * before it (the packets are copied into the guest's ring by then; the
 * time is the one the ethdev tx callback would record).  Port
 * MSCOPE_VHOST_PORT(vid) = 0x8000 | vid, queue = virtqueue index / 2 (the
 * queue pair).  rx ids are computed from headers (packets are copied
 * across the vhost boundary, no stamp survives it) and stamped as by
 * mscope_rx; tx takes them from those stamps (mscope_tx_at), as mscope_tx
 * does for an NF.  Each vid's socket path goes
 * once into <MSCOPE_DIR>/<nf>.<pid>.ports (JSON lines) and to stderr.
 * Not attached: a thread-local test and a call that returns at once, per
 * burst (bench/ovs.py, "idle": within noise of no preload at all).
 * Only with LD_PRELOAD: EAL's -d loads us after the app's calls to the
 * vhost library were bound.  See docs/ovs.md.
 *
 * Records are published batch by batch (the ring's head is release-stored
 * per record): nothing is buffered, so nothing needs flushing when the app
 * stops its ports or dies (testpmd re-raises SIGINT with SIG_DFL and no
 * destructor runs); the collector finishes a ring whose producer has
 * exited.  Callbacks stay with a port across stop and start, and each
 * queue gets ours once per process, so a restarted port is not recorded
 * twice.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_telemetry.h>
#include <rte_vhost.h>

#include "mscope_dpdk.h"
#include "mscope_pvt.h"

extern char *program_invocation_short_name;

typedef int (*dev_start_fn)(uint16_t);

#define ATTACH_MAX_THREADS 128

/* Thread-locals in the static TLS block (initial-exec): one %fs-relative
 * load per callback.  The default model for a shared object
 * (global-dynamic) calls __tls_get_addr at every access, twice per rx
 * callback.  Initial-exec works when dlopen()ed too (EAL -d): glibc keeps
 * static TLS room for a library that asks for a few bytes, and these are
 * 20. */
#define MSCOPE_TLS __thread __attribute__((tls_model("initial-exec")))

static MSCOPE_TLS struct mscope *thread_ms;
/* Every thread's recorder, for /mscope/status; written once per thread. */
static struct mscope *all_ms[ATTACH_MAX_THREADS];
static unsigned n_all_ms;
/* /mscope/disable clears it: callbacks stay installed and return at once. */
static int recording = 1;
static MSCOPE_TLS int thread_failed;
static unsigned thread_seq;               /* lcore ids for non-EAL threads */
static char nf_name[MSCOPE_NAME_LEN];
static uint16_t nf_id;
static uint32_t ring_flags;               /* MSCOPE_F_* for every thread's ring */
static int ready;
static const char *mode = "preload";      /* how we got in: "preload" or "plugin" */
/* Per port: 0 not asked yet (asked on its first rx batch, once started),
 * 1 the PMD counts its rx queue, -1 it cannot (net_null, net_ring, ...). */
static int8_t occupancy_ok[RTE_MAX_ETHPORTS];

/* Queues [0, n) of each port carry our callbacks.  Written under
 * install_lock only: the app's thread (rte_eth_dev_start) and the watcher
 * may both install. */
static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;
static uint16_t n_rx_cb[RTE_MAX_ETHPORTS], n_tx_cb[RTE_MAX_ETHPORTS];
static uint8_t install_error_said[RTE_MAX_ETHPORTS];

/* MSCOPE_CB_CYCLES=1: cycles spent in the callbacks, per thread (one
 * writer each, relaxed stores; /mscope/status sums them with relaxed
 * loads).  Batches with 0 packets and a thread's first batch (which opens
 * its ring) are not timed. */
struct cb_cycles {
	uint64_t rx_cycles, rx_batches, rx_packets;
	uint64_t tx_cycles, tx_batches, tx_packets;
} __rte_cache_aligned;
static int timing;
static struct cb_cycles cycles[ATTACH_MAX_THREADS];
static MSCOPE_TLS struct cb_cycles *thread_cycles;

/* Refusals, per port: when the next reading is due, and when the last
 * ended (mscope_dpdk_read_refused keeps the counts, and lets one lcore
 * read a port at a time). */
struct port_refused {
	uint64_t next;         /* TSC from which a poll reads again */
	uint64_t tsc;          /* TSC at the end of the last reading */
	uint64_t cost;         /* fewest cycles a reading took; 0 none yet */
	uint32_t reads;        /* readings taken, up to REFUSED_LEARN */
} __rte_cache_aligned;
static struct port_refused port_refused[RTE_MAX_ETHPORTS];
static int refused_off;                   /* MSCOPE_REFUSED=0 */
static uint64_t refused_cycles;           /* MSCOPE_REFUSED_NS in TSC cycles */
static uint64_t silence_cycles;           /* a poll after this long reads */
static uint32_t idle_ns = MSCOPE_IDLE_NS;  /* the rings' idle-poll interval */

/* A reading holds the polling lcore for as long as rte_eth_stats_get
 * takes: nothing for a software PMD, ~7 us for net_pcap (a getsockopt and
 * two sysfs files, on the bench VM), tens of us where a NIC's registers
 * are read one by one.  So a port is read at most once per REFUSED_BUDGET
 * times a reading's cost (0.5% of the lcore's time), and one whose
 * reading takes longer than the idle-poll interval is not read as a stop ends (its
 * backlog is waiting) but at its next due reading.  The cost is the
 * least a reading of the port took: one the VM or the kernel preempted
 * took longer (a 34 ms interval after one such on net_pcap).  The first
 * REFUSED_LEARN readings come every MSCOPE_REFUSED_NS whatever they cost:
 * a port's first reading is a cold one (net_pcap opens its sysfs files
 * for the first time), and on a loaded machine it took over 1 ms, which
 * spaced the next one 235 ms away, past a stop it should have bounded. */
#define REFUSED_BUDGET 200
#define REFUSED_LEARN 4

static void
identity(void)
{
	const char *name = getenv("MSCOPE_NF_NAME");
	const char *id = getenv("MSCOPE_NF_ID");
	const char *addrs = getenv("MSCOPE_ADDRS");
	size_t i, n = 0;
	uint32_t h = 2166136261U;

	if (name == NULL || name[0] == '\0')
		name = program_invocation_short_name;
	/* Ring names allow [A-Za-z0-9_-]: map anything else to '-'. */
	for (i = 0; name[i] != '\0' && n < MSCOPE_NAME_LEN - 1; i++, n++) {
		char c = name[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			 (c >= '0' && c <= '9') || c == '_' || c == '-';
		nf_name[n] = ok ? c : '-';
		h = (h ^ (uint8_t)nf_name[n]) * 16777619U;
	}
	nf_name[n] = '\0';
	if (n == 0)
		strcpy(nf_name, "dpdk-app");
	nf_id = id != NULL ? (uint16_t)strtoul(id, NULL, 0) : (uint16_t)(1 + h % 65535);
	/* As MSCOPE_ATTACH: set and not "0" means on. */
	if (addrs != NULL && addrs[0] != '\0' && strcmp(addrs, "0") != 0)
		ring_flags |= MSCOPE_F_ADDRS;
	if (getenv("MSCOPE_IDS") != NULL && strcmp(getenv("MSCOPE_IDS"), "0") == 0) {
		if (ring_flags & MSCOPE_F_ADDRS)
			fprintf(stderr, "mscope: MSCOPE_IDS=0: no address records either\n");
		ring_flags = (ring_flags & ~MSCOPE_F_ADDRS) | MSCOPE_F_NOIDS;
	}
	/* As MSCOPE_IDS=0: no idle-poll records, empty polls record nothing. */
	if (getenv("MSCOPE_IDLE") != NULL && strcmp(getenv("MSCOPE_IDLE"), "0") == 0)
		ring_flags |= MSCOPE_F_NOIDLE;
	timing = getenv("MSCOPE_CB_CYCLES") != NULL && strcmp(getenv("MSCOPE_CB_CYCLES"), "0") != 0;
	refused_off = getenv("MSCOPE_REFUSED") != NULL && strcmp(getenv("MSCOPE_REFUSED"), "0") == 0;
	/* Release pairs with the acquire in start_recording and vhost_on(). */
	__atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
}

/* The calling thread's recorder, opened on its first batch. */
static struct mscope *
thread_recorder(void)
{
	unsigned lcore;

	if (likely(thread_ms != NULL) || thread_failed)
		return thread_ms;
	lcore = rte_lcore_id();
	if (lcore == LCORE_ID_ANY)
		lcore = RTE_MAX_LCORE + __atomic_fetch_add(&thread_seq, 1, __ATOMIC_RELAXED);
	thread_ms = mscope_open(&(struct mscope_params){
		.nf_name = nf_name, .nf_id = nf_id, .lcore = (uint16_t)lcore,
		.flags = ring_flags });
	if (thread_ms == NULL) {
		thread_failed = 1;   /* say it once, never block the NF over it */
		fprintf(stderr, "mscope: cannot open a ring for %s on lcore %u: %s\n",
			nf_name, lcore, strerror(errno));
	} else {
		unsigned slot = __atomic_fetch_add(&n_all_ms, 1, __ATOMIC_RELAXED);
		const uint64_t hz = rte_get_tsc_hz();

		mscope_set_tsc_hz(thread_ms, hz);
		/* the same values from every thread: plain stores would do,
		 * relaxed atomics say so.  Without idle-poll records
		 * (MSCOPE_IDLE=0) empty polls leave the last record's TSC
		 * behind, so a gap between records is no silence: taken for
		 * one, every batch after an idle spell read the stats. */
		__atomic_store_n(&silence_cycles, (ring_flags & MSCOPE_F_NOIDLE) ? UINT64_MAX :
				 hz * 2 * thread_ms->idle_ns / 1000000000ULL, __ATOMIC_RELAXED);
		__atomic_store_n(&idle_ns, thread_ms->idle_ns, __ATOMIC_RELAXED);
		__atomic_store_n(&refused_cycles, refused_off ? 0 :
				 hz * MSCOPE_REFUSED_NS / 1000000000ULL, __ATOMIC_RELAXED);
		/* The id stamp with the ring, whichever callback comes first:
		 * registered on a thread's first packets instead, it held
		 * testpmd's first burst behind OVS ~17 ms (docs/ovs.md). */
		mscope_dpdk_register();
		/* Release pairs with the acquire in telemetry_status. */
		if (slot < ATTACH_MAX_THREADS) {
			thread_cycles = &cycles[slot];
			__atomic_store_n(&all_ms[slot], thread_ms, __ATOMIC_RELEASE);
		}
	}
	return thread_ms;
}

/* Once per port, on its first rx batch (the port is started by then). */
static __rte_noinline int8_t
ask_occupancy(uint16_t port, uint16_t queue)
{
	int8_t ok = rte_eth_rx_queue_count(port, queue) >= 0 ? 1 : -1;

	__atomic_store_n(&occupancy_ok[port], ok, __ATOMIC_RELAXED);
	return ok;
}

/* A polling thread's first poll, packets or not, opens its ring (and
 * registers the id stamp, thread_recorder).  Returns the thread's
 * recorder or NULL. */
static __rte_noinline struct mscope *
thread_first_poll(void)
{
	if (thread_failed || !__atomic_load_n(&recording, __ATOMIC_RELAXED))
		return NULL;
	return thread_recorder();
}

/* Read `port`'s imissed and write a refused record if it grew since the
 * last reading (mscope_dpdk_read_refused).  `now`: the TSC of the poll's
 * record. */
static __rte_noinline void
read_refused(struct mscope *ms, uint16_t port, uint16_t queue, uint32_t occ, uint64_t now)
{
	struct port_refused *pr = &port_refused[port];
	uint64_t t0, t1, cost, every;
	int rc;

	__atomic_store_n(&pr->next, now + refused_cycles, __ATOMIC_RELAXED);
	t0 = rte_rdtsc();
	rc = mscope_dpdk_read_refused(ms, port, queue, occ);
	t1 = rte_rdtsc();
	if (rc == -ENOTSUP) {       /* the PMD has no stats: not due again */
		__atomic_store_n(&pr->next, UINT64_MAX, __ATOMIC_RELAXED);
	} else if (rc != -EBUSY) {
		cost = pr->cost == 0 ? t1 - t0 : RTE_MIN(pr->cost, t1 - t0);
		pr->cost = cost;    /* only the reader (busy) writes these */
		if (pr->reads < REFUSED_LEARN)
			pr->reads++;
		every = pr->reads < REFUSED_LEARN ? refused_cycles :
			RTE_MAX(refused_cycles, REFUSED_BUDGET * cost);
		__atomic_store_n(&pr->next, t1 + every, __ATOMIC_RELAXED);
		/* a silence counts from the reading's end, and for a slow
		 * port from its next due reading: none before then */
		__atomic_store_n(&pr->tsc, cost * 1000000000ULL / rte_get_tsc_hz() >
				 __atomic_load_n(&idle_ns, __ATOMIC_RELAXED) ? t1 + every : t1,
				 __ATOMIC_RELAXED);
	}
}

/* After a poll's record (or none): a reading when one is due, every
 * MSCOPE_REFUSED_NS, or when the poll ends a silence: a stop's refusals
 * are read as it ends.  Two loads and two compares otherwise.
 * A silence counts from the port's last reading too: a reading holds its
 * thread's polls for as long as rte_eth_stats_get takes (net_pcap opens
 * and reads sysfs files; a NIC's registers in a VM trap), and that gap
 * before the next record is not a stop.  Taken for one, a reading slower
 * than the silence made the next idle-poll record read again, and so on:
 * readings back to back on an idle port (testpmd on net_pcap under
 * strace, which slows syscalls: 17,456 readings in a 4 s run, 1,452
 * when a silence counts from the last reading). */
static inline void
maybe_read_refused(struct mscope *ms, uint16_t port, uint16_t queue, uint32_t occ,
		   uint64_t before)
{
	const uint64_t now = ms->prod.last_tsc;
	const struct port_refused *pr = &port_refused[port];

	if (unlikely(now >= __atomic_load_n(&pr->next, __ATOMIC_RELAXED) ||
		     (now - before > silence_cycles &&
		      (int64_t)(now - __atomic_load_n(&pr->tsc, __ATOMIC_RELAXED)) >
		      (int64_t)silence_cycles)) && refused_cycles != 0)
		read_refused(ms, port, queue, occ, now);
}

static uint16_t
on_rx(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t nb,
      uint16_t max, void *user)
{
	struct mscope *ms = thread_ms;
	uint32_t occ = MSCOPE_OCC_UNKNOWN;
	uint64_t before;
	int8_t occ_ok;

	(void)user;
	if (unlikely(ms == NULL) && (ms = thread_first_poll()) == NULL)
		return nb;
	if (!__atomic_load_n(&recording, __ATOMIC_RELAXED))
		return nb;
	before = ms->prod.last_tsc;
	if (nb == 0) {
		/* an idle-poll record when one is due (mscope_record.h): the
		 * poll found the queue empty, countable or not */
		mscope_rx(ms, port, queue, pkts, 0, 0);
		maybe_read_refused(ms, port, queue, 0, before);
		return 0;
	}
	occ_ok = __atomic_load_n(&occupancy_ok[port], __ATOMIC_RELAXED);
	if (unlikely(occ_ok == 0))
		occ_ok = ask_occupancy(port, queue);
	if (occ_ok > 0) {
		int c = rte_eth_rx_queue_count(port, queue);
		if (c >= 0)
			occ = (uint32_t)c;
	}
	/* A queue the PMD cannot count still says it is empty: a burst
	 * shorter than asked for took all there was (rte_eth_rx_burst's
	 * contract; the analyzer's arrivals at a first NF rest on it). */
	if (occ == MSCOPE_OCC_UNKNOWN && nb < max)
		occ = 0;
	mscope_rx(ms, port, queue, pkts, nb, occ);
	maybe_read_refused(ms, port, queue, occ, before);
	return nb;
}

static uint16_t
on_tx(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t nb, void *user)
{
	struct mscope *ms = thread_ms;

	(void)user;
	/* A thread that transmits before its first rx poll opens its ring
	 * here (thread_recorder), as before. */
	if (unlikely(ms == NULL) && (nb == 0 || (ms = thread_first_poll()) == NULL))
		return nb;
	if (nb != 0 && __atomic_load_n(&recording, __ATOMIC_RELAXED))
		mscope_tx(ms, port, queue, pkts, nb, MSCOPE_OCC_UNKNOWN);
	return nb;
}

/* MSCOPE_CB_CYCLES=1: the same callbacks between two serialised TSC reads. */
static inline void
add_cycles(uint64_t *cyc, uint64_t *batches, uint64_t *packets, uint64_t d, uint16_t nb)
{
	__atomic_store_n(cyc, *cyc + d, __ATOMIC_RELAXED);
	__atomic_store_n(batches, *batches + 1, __ATOMIC_RELAXED);
	__atomic_store_n(packets, *packets + nb, __ATOMIC_RELAXED);
}

static uint16_t
on_rx_timed(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t nb,
	    uint16_t max, void *user)
{
	struct cb_cycles *c = thread_cycles;   /* NULL until the thread's ring is open */
	const uint64_t t0 = rte_rdtsc_precise();

	on_rx(port, queue, pkts, nb, max, user);
	if (c != NULL && nb != 0)
		add_cycles(&c->rx_cycles, &c->rx_batches, &c->rx_packets,
			   rte_rdtsc_precise() - t0, nb);
	return nb;
}

static uint16_t
on_tx_timed(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t nb, void *user)
{
	struct cb_cycles *c = thread_cycles;
	const uint64_t t0 = rte_rdtsc_precise();

	on_tx(port, queue, pkts, nb, user);
	if (c != NULL && nb != 0)
		add_cycles(&c->tx_cycles, &c->tx_batches, &c->tx_packets,
			   rte_rdtsc_precise() - t0, nb);
	return nb;
}

/* DPDK telemetry: dpdk-telemetry.py shows and switches the recorder. */
static int
telemetry_status(const char *cmd, const char *params, struct rte_tel_data *d)
{
	struct mscope_stats total = {0};
	unsigned i, n = __atomic_load_n(&n_all_ms, __ATOMIC_RELAXED);

	(void)cmd;
	(void)params;
	if (n > ATTACH_MAX_THREADS)
		n = ATTACH_MAX_THREADS;
	for (i = 0; i < n; i++) {
		struct mscope *ms = __atomic_load_n(&all_ms[i], __ATOMIC_ACQUIRE);
		if (ms == NULL)
			continue;
		/* Another thread's ring: read the counters it publishes in the
		 * shared header (relaxed-stored by the producer), not its
		 * private copies. */
		const struct mscope_ring_hdr *h = ms->prod.hdr;
		uint64_t seq = __atomic_load_n(&h->next_seq, __ATOMIC_RELAXED);
		uint64_t dr = __atomic_load_n(&h->drop_records, __ATOMIC_RELAXED);
		total.records += seq - dr;
		total.drop_records += dr;
		total.drop_packets += __atomic_load_n(&h->drop_packets, __ATOMIC_RELAXED);
	}
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_string(d, "nf_name", nf_name);
	rte_tel_data_add_dict_int(d, "nf_id", nf_id);
	rte_tel_data_add_dict_int(d, "enabled", __atomic_load_n(&recording, __ATOMIC_RELAXED));
	rte_tel_data_add_dict_int(d, "rings", (int)n);
	rte_tel_data_add_dict_u64(d, "records", total.records);
	rte_tel_data_add_dict_u64(d, "drop_records", total.drop_records);
	rte_tel_data_add_dict_u64(d, "drop_packets", total.drop_packets);
	rte_tel_data_add_dict_string(d, "mode", mode);
	rte_tel_data_add_dict_int(d, "ids", !(ring_flags & MSCOPE_F_NOIDS));
	if (timing) {
		struct cb_cycles sum = {0};
		for (i = 0; i < n; i++) {
			sum.rx_cycles += __atomic_load_n(&cycles[i].rx_cycles, __ATOMIC_RELAXED);
			sum.rx_batches += __atomic_load_n(&cycles[i].rx_batches, __ATOMIC_RELAXED);
			sum.rx_packets += __atomic_load_n(&cycles[i].rx_packets, __ATOMIC_RELAXED);
			sum.tx_cycles += __atomic_load_n(&cycles[i].tx_cycles, __ATOMIC_RELAXED);
			sum.tx_batches += __atomic_load_n(&cycles[i].tx_batches, __ATOMIC_RELAXED);
			sum.tx_packets += __atomic_load_n(&cycles[i].tx_packets, __ATOMIC_RELAXED);
		}
		rte_tel_data_add_dict_u64(d, "tsc_hz", rte_get_tsc_hz());
		rte_tel_data_add_dict_u64(d, "cb_rx_cycles", sum.rx_cycles);
		rte_tel_data_add_dict_u64(d, "cb_rx_batches", sum.rx_batches);
		rte_tel_data_add_dict_u64(d, "cb_rx_packets", sum.rx_packets);
		rte_tel_data_add_dict_u64(d, "cb_tx_cycles", sum.tx_cycles);
		rte_tel_data_add_dict_u64(d, "cb_tx_batches", sum.tx_batches);
		rte_tel_data_add_dict_u64(d, "cb_tx_packets", sum.tx_packets);
	}
	return 0;
}

static int
telemetry_switch(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)params;
	__atomic_store_n(&recording, strcmp(cmd, "/mscope/enable") == 0, __ATOMIC_RELAXED);
	return telemetry_status(cmd, params, d);
}

static void
register_telemetry(void)
{
	rte_telemetry_register_cmd("/mscope/status", telemetry_status,
				   "mscope recorder state: rings, records, drops. No parameters");
	rte_telemetry_register_cmd("/mscope/enable", telemetry_switch,
				   "Resume mscope recording. No parameters");
	rte_telemetry_register_cmd("/mscope/disable", telemetry_switch,
				   "Pause mscope recording (callbacks stay, return at once). No parameters");
}

static int
attached(void)
{
	const char *force = getenv("MSCOPE_ATTACH");
	const char *preload = getenv("LD_PRELOAD");

	if (force != NULL)
		return strcmp(force, "0") != 0;
	return preload != NULL && strstr(preload, "libmscope") != NULL;
}

static void
start_recording(const char *how)
{
	/* The app's thread (rte_eth_dev_start) and PMD threads (their first
	 * vhost burst) may get here at once. */
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

	pthread_mutex_lock(&lock);
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
		mode = how;
		identity();
		register_telemetry();
	}
	pthread_mutex_unlock(&lock);
}

/*
 * Our callbacks on every queue of `port` that does not have them yet.
 * Queues are taken by index until ethdev refuses one (EINVAL: past the
 * configured count): that asks nothing of the PMD, so the watcher may call
 * it while the app configures, stops or closes the port.  Says once per
 * port what it recorded.
 */
static void
install_callbacks(uint16_t port)
{
	const rte_rx_callback_fn rx_fn = timing ? on_rx_timed : on_rx;
	const rte_tx_callback_fn tx_fn = timing ? on_tx_timed : on_tx;
	uint16_t rx0, tx0;
	int err = 0;

	pthread_mutex_lock(&install_lock);
	rx0 = n_rx_cb[port];
	tx0 = n_tx_cb[port];
	while (n_rx_cb[port] < RTE_MAX_QUEUES_PER_PORT) {
		if (rte_eth_add_rx_callback(port, n_rx_cb[port], rx_fn, NULL) == NULL) {
			err = rte_errno != EINVAL ? rte_errno : 0;
			break;
		}
		n_rx_cb[port]++;
	}
	while (err == 0 && n_tx_cb[port] < RTE_MAX_QUEUES_PER_PORT) {
		if (rte_eth_add_tx_callback(port, n_tx_cb[port], tx_fn, NULL) == NULL) {
			err = rte_errno != EINVAL ? rte_errno : 0;
			break;
		}
		n_tx_cb[port]++;
	}
	if (err != 0 && !install_error_said[port]) {
		install_error_said[port] = 1;
		fprintf(stderr, "mscope: no callbacks on port %u after %u rx, %u tx queues: %s\n",
			port, n_rx_cb[port], n_tx_cb[port], rte_strerror(err));
	}
	if (n_rx_cb[port] != rx0 || n_tx_cb[port] != tx0)
		fprintf(stderr, "mscope: recording port %u (%u rx, %u tx queues) as %s "
			"(nf_id %u%s%s%s)\n", port, n_rx_cb[port], n_tx_cb[port], nf_name, nf_id,
			strcmp(mode, "plugin") == 0 ? ", EAL plugin" : "",
			(ring_flags & MSCOPE_F_NOIDS) ? ", batch-only" : "",
			(ring_flags & MSCOPE_F_ADDRS) ? ", rx addresses" : "");
	pthread_mutex_unlock(&install_lock);
}

/* Interposes on DPDK's rte_eth_dev_start for LD_PRELOAD. */
int
rte_eth_dev_start(uint16_t port)
{
	static dev_start_fn real;
	int rc;

	if (real == NULL)
		real = (dev_start_fn)dlsym(RTLD_NEXT, "rte_eth_dev_start");
	if (real == NULL) {
		fprintf(stderr, "mscope: rte_eth_dev_start not found behind libmscope\n");
		return -ENOTSUP;
	}
	rc = real(port);
	if (rc != 0 || !attached())
		return rc;
	start_recording("preload");
	install_callbacks(port);
	return rc;
}

/*
 * vhost-user: rte_vhost_dequeue_burst / rte_vhost_enqueue_burst (see the
 * file's comment).  OVS's netdev-dpdk moves every packet of a
 * dpdkvhostuser(client) port through these two calls, never through
 * ethdev.
 */
typedef uint16_t (*vhost_dequeue_fn)(int, uint16_t, struct rte_mempool *,
				     struct rte_mbuf **, uint16_t);
typedef uint16_t (*vhost_enqueue_fn)(int, uint16_t, struct rte_mbuf **, uint16_t);
typedef uint32_t (*vhost_count_fn)(int, uint16_t);
typedef int (*vhost_ifname_fn)(int, char *, size_t);

/* Port number of vhost device `vid` in the records: ethdev port ids stay
 * below RTE_MAX_ETHPORTS (32 here), vids below RTE_MAX_VHOST_DEVICE (1024). */
#define MSCOPE_VHOST_PORT(vid) ((uint16_t)(0x8000U | ((unsigned)(vid) & 0x7fffU)))
#define VHOST_MAX_VIDS 1024

/* The real calls behind ours, found on first use (vhost_resolve).  Kept
 * as void * (dlsym's type) so one resolver fills both; cast at the call. */
static void *real_dequeue, *real_enqueue;
static vhost_count_fn vhost_rx_count;
/* 0: not decided yet (first burst decides), 1: recording, -1: never. */
static int vhost_state;
/* Each vid's name goes to the ports file once; set on its first batch. */
static uint8_t vid_named[VHOST_MAX_VIDS];

/* The real `sym` behind libmscope (dlsym RTLD_NEXT), cached in *real.
 * Relaxed: any thread may race here, and every one stores the same
 * pointer; nothing else is published with it.  Not found: says so on
 * every call (the app cannot move packets without it) and returns NULL,
 * leaving *real NULL. */
static __rte_noinline void *
vhost_resolve(void **real, const char *sym)
{
	void *fn = __atomic_load_n(real, __ATOMIC_RELAXED);

	if (fn != NULL)
		return fn;
	fn = dlsym(RTLD_NEXT, sym);
	if (fn == NULL)
		fprintf(stderr, "mscope: %s not found behind libmscope\n", sym);
	else
		__atomic_store_n(real, fn, __ATOMIC_RELAXED);
	return fn;
}

/* Decided on the first burst of any thread, as rte_eth_dev_start does:
 * attached (LD_PRELOAD names libmscope, or MSCOPE_ATTACH=1) and the real
 * calls found. */
static __rte_noinline int
vhost_decide(void)
{
	/* Both looked up, so a missing one is reported whichever it is. */
	void *dequeue = vhost_resolve(&real_dequeue, "rte_vhost_dequeue_burst");
	void *enqueue = vhost_resolve(&real_enqueue, "rte_vhost_enqueue_burst");
	int on = attached() && dequeue != NULL && enqueue != NULL;

	if (on) {
		start_recording("preload");
		/* Optional: occupancy only where the library can count. */
		vhost_rx_count = (vhost_count_fn)dlsym(RTLD_DEFAULT, "rte_vhost_rx_queue_count");
	}
	__atomic_store_n(&vhost_state, on ? 1 : -1, __ATOMIC_RELEASE);
	return on ? 1 : -1;
}

static inline int
vhost_on(void)
{
	/* Acquire pairs with the release in vhost_decide: identity and
	 * vhost_rx_count are set before. */
	int st = __atomic_load_n(&vhost_state, __ATOMIC_ACQUIRE);

	if (unlikely(st == 0))
		st = vhost_decide();
	return st > 0 && __atomic_load_n(&recording, __ATOMIC_RELAXED);
}

/* A polling thread's first call, packets or not: decide, open its ring
 * and register the id stamp now, while its queues are still empty (done
 * on the first packet, it held OVS's first burst ~10 ms: rte_mbuf_dynfield_register
 * reserves a memzone).  Returns 1 when this thread records. */
static void vhost_name_vid(int vid);

static __rte_noinline int
vhost_thread_init(int vid)
{
	int st = __atomic_load_n(&vhost_state, __ATOMIC_ACQUIRE);

	if (st < 0 || thread_failed)
		return 0;
	if (st == 0 && vhost_decide() < 0)
		return 0;
	if (thread_recorder() == NULL)
		return 0;
	if ((unsigned)vid < VHOST_MAX_VIDS && !__atomic_load_n(&vid_named[vid], __ATOMIC_RELAXED))
		vhost_name_vid(vid);
	return 1;
}

/* Once per vid: which socket it is, into <MSCOPE_DIR>/<nf>.<pid>.ports
 * (one JSON object per line; not a *.ring, so the collector leaves it)
 * and to stderr.  Runs on the vid's first recorded batch only. */
static __rte_noinline void
vhost_name_vid(int vid)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	vhost_ifname_fn get_ifname =
		(vhost_ifname_fn)dlsym(RTLD_DEFAULT, "rte_vhost_get_ifname");
	const char *dir = getenv("MSCOPE_DIR");
	char ifname[PATH_MAX] = "", path[PATH_MAX];
	size_t i;
	FILE *f;

	if (__atomic_exchange_n(&vid_named[vid], 1, __ATOMIC_RELAXED))
		return;
	if (get_ifname == NULL || get_ifname(vid, ifname, sizeof(ifname)) != 0)
		strcpy(ifname, "?");
	for (i = 0; ifname[i] != '\0'; i++)          /* keep the JSON line valid */
		if (ifname[i] == '"' || ifname[i] == '\\' || (unsigned char)ifname[i] < 0x20)
			ifname[i] = '_';
	fprintf(stderr, "mscope: recording vhost vid %d (%s) as %s port %u (0x%04x)\n",
		vid, ifname, nf_name, MSCOPE_VHOST_PORT(vid), MSCOPE_VHOST_PORT(vid));
	snprintf(path, sizeof(path), "%s/%s.%d.ports",
		 dir != NULL && dir[0] != '\0' ? dir : MSCOPE_DEFAULT_DIR, nf_name, (int)getpid());
	pthread_mutex_lock(&lock);
	f = fopen(path, "a");
	if (f != NULL) {
		fprintf(f, "{\"port\": %u, \"vid\": %d, \"ifname\": \"%s\", \"nf_name\": \"%s\", "
			"\"nf_id\": %u}\n", MSCOPE_VHOST_PORT(vid), vid, ifname, nf_name, nf_id);
		fclose(f);
	}
	pthread_mutex_unlock(&lock);
}

/* Interposes on DPDK's vhost library (LD_PRELOAD): the guest's tx ring
 * into the app's mbufs. */
uint16_t
rte_vhost_dequeue_burst(int vid, uint16_t queue_id, struct rte_mempool *mbuf_pool,
			struct rte_mbuf **pkts, uint16_t count)
{
	vhost_dequeue_fn real = (vhost_dequeue_fn)__atomic_load_n(&real_dequeue, __ATOMIC_RELAXED);
	struct cb_cycles *c;
	struct mscope *ms;
	uint64_t t0 = 0;
	uint32_t occ;
	uint16_t n;

	if (unlikely(real == NULL)) {
		real = (vhost_dequeue_fn)vhost_resolve(&real_dequeue, "rte_vhost_dequeue_burst");
		if (real == NULL)
			return 0;
	}
	n = real(vid, queue_id, mbuf_pool, pkts, count);
	/* Not attached: thread_ms stays NULL and vhost_thread_init returns
	 * at its first test. */
	if (unlikely((ms = thread_ms) == NULL) &&
	    (!vhost_thread_init(vid) || (ms = thread_ms) == NULL))
		return n;
	if (!__atomic_load_n(&recording, __ATOMIC_RELAXED))
		return n;
	if (likely(n == 0)) {
		/* an idle-poll record when one is due (mscope_record.h): one
		 * TSC read and a compare per empty poll of a recorded PMD */
		mscope_rx(ms, MSCOPE_VHOST_PORT(vid), queue_id >> 1, pkts, 0, 0);
		return 0;
	}
	c = timing ? thread_cycles : NULL;
	if (c != NULL)
		t0 = rte_rdtsc_precise();
	if (unlikely((unsigned)vid >= VHOST_MAX_VIDS))
		return n;
	if (unlikely(!__atomic_load_n(&vid_named[vid], __ATOMIC_RELAXED)))
		vhost_name_vid(vid);
	/* As OVS counts its rx queue fill: a short burst emptied the queue;
	 * only a full one asks how much is left (the call takes the vring's
	 * lock). */
	occ = 0;
	if (n == count)
		occ = vhost_rx_count != NULL ? vhost_rx_count(vid, queue_id) & 0xffffU
					     : MSCOPE_OCC_UNKNOWN;
	mscope_rx(ms, MSCOPE_VHOST_PORT(vid), queue_id >> 1, pkts, n, occ);
	if (c != NULL)
		add_cycles(&c->rx_cycles, &c->rx_batches, &c->rx_packets,
			   rte_rdtsc_precise() - t0, n);
	return n;
}

/* ... and the app's mbufs into the guest's rx ring (copied; the caller
 * still owns and frees them).  Recorded with mscope_tx_at: the packets the
 * enqueue accepted, at the TSC read before it, and their ids from OVS's own
 * rx stamps (the mbufs are the ones its dequeue filled; hashing them again
 * took ~16% of the PMD, docs/benchmarks.md); from headers for packets
 * without one (built by OVS, or from a port we do not record). */
uint16_t
rte_vhost_enqueue_burst(int vid, uint16_t queue_id, struct rte_mbuf **pkts, uint16_t count)
{
	vhost_enqueue_fn real = (vhost_enqueue_fn)__atomic_load_n(&real_enqueue, __ATOMIC_RELAXED);
	struct mscope *ms = thread_ms;
	struct cb_cycles *c;
	uint64_t tsc;
	uint16_t n;

	if (unlikely(real == NULL)) {
		real = (vhost_enqueue_fn)vhost_resolve(&real_enqueue, "rte_vhost_enqueue_burst");
		if (real == NULL)
			return 0;
	}
	/* Not attached: vhost_on() is false and thread_ms stays NULL.  A
	 * thread that sends before it ever polls opens its ring here. */
	if (unlikely(ms == NULL) &&
	    (count == 0 || !vhost_on() || (ms = thread_recorder()) == NULL))
		return real(vid, queue_id, pkts, count);
	if (count == 0 || !__atomic_load_n(&recording, __ATOMIC_RELAXED))
		return real(vid, queue_id, pkts, count);
	tsc = rte_rdtsc();
	n = real(vid, queue_id, pkts, count);
	if (n == 0 || unlikely((unsigned)vid >= VHOST_MAX_VIDS))
		return n;
	if (unlikely(!__atomic_load_n(&vid_named[vid], __ATOMIC_RELAXED)))
		vhost_name_vid(vid);
	c = timing ? thread_cycles : NULL;
	if (c != NULL) {
		const uint64_t t0 = rte_rdtsc_precise();
		mscope_tx_at(ms, MSCOPE_VHOST_PORT(vid), queue_id >> 1, pkts, n,
			     MSCOPE_OCC_UNKNOWN, tsc);
		add_cycles(&c->tx_cycles, &c->tx_batches, &c->tx_packets,
			   rte_rdtsc_precise() - t0, n);
	} else {
		mscope_tx_at(ms, MSCOPE_VHOST_PORT(vid), queue_id >> 1, pkts, n,
			     MSCOPE_OCC_UNKNOWN, tsc);
	}
	return n;
}

/* The plugin's watcher: every 10 ms, callbacks on new ports and queues.
 * 10 ms: the blind window after a port starts, against ~1 us of work per
 * tick (a few failed rte_eth_add_*_callback calls) - 0.01% of a core. */
static void *
watch_ports(void *arg)
{
	const struct timespec period = { .tv_sec = 0, .tv_nsec = 10 * 1000 * 1000 };

	(void)arg;
	for (;;) {
		uint64_t port;

		for (port = rte_eth_find_next(0); port < RTE_MAX_ETHPORTS;
		     port = rte_eth_find_next(port + 1))
			install_callbacks((uint16_t)port);
		nanosleep(&period, NULL);
	}
	return NULL;
}

/* Was this object named by an EAL -d option (the file, or its directory)
 * on our command line?  Stops at "--", where the app's own options start. */
static int
named_by_eal_d(const char *self)
{
	char me[PATH_MAX], dir[PATH_MAX], arg[PATH_MAX], buf[65536];
	FILE *f = fopen("/proc/self/cmdline", "r");
	size_t len, i;
	int found = 0, next_is_path = 0;

	if (f == NULL || realpath(self, me) == NULL) {
		if (f != NULL)
			fclose(f);
		return 0;
	}
	len = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[len] = '\0';
	strcpy(dir, me);
	dirname(dir);
	for (i = strlen(buf) + 1; i < len && !found; i += strlen(buf + i) + 1) {
		const char *a = buf + i, *path = NULL;

		if (next_is_path)
			path = a;
		else if (strcmp(a, "--") == 0)
			break;
		else if (strncmp(a, "-d", 2) == 0 && a[2] != '\0' && a[2] != '-')
			path = a + 2;
		next_is_path = strcmp(a, "-d") == 0 && !next_is_path;
		if (path != NULL && realpath(path, arg) != NULL)
			found = strcmp(arg, me) == 0 || strcmp(arg, dir) == 0;
	}
	return found;
}

/* Runs when the object is loaded: before main() when preloaded or linked
 * (then it returns at once: the wrapper above sees every start), inside
 * rte_eal_init() when EAL's -d dlopen()s it. */
static void __attribute__((constructor))
plugin_init(void)
{
	const char *force = getenv("MSCOPE_ATTACH");
	void *start;
	Dl_info self, owner;
	pthread_attr_t attr;
	pthread_t tid;
	rte_cpuset_t cpus;
	int rc;

	if (force != NULL && strcmp(force, "0") == 0)
		return;
	start = dlsym(RTLD_DEFAULT, "rte_eth_dev_start");
	if (start == NULL || dladdr((void *)plugin_init, &self) == 0 ||
	    dladdr(start, &owner) == 0 || owner.dli_fbase == self.dli_fbase)
		return;   /* no DPDK app here, or our wrapper is the one called */
	if (!(force != NULL && force[0] != '\0') && !named_by_eal_d(self.dli_fname))
		return;   /* dlopen()ed by something else, and not asked to */
	if (strstr(owner.dli_fname, "librte_ethdev") == NULL) {
		void *api = dlsym(RTLD_DEFAULT, "mscope_open");
		Dl_info other;

		if (api != NULL && dladdr(api, &other) != 0 && other.dli_fbase == owner.dli_fbase)
			fprintf(stderr, "mscope: EAL plugin %s stays idle: %s is loaded too and "
				"records started ports\n", self.dli_fname, owner.dli_fname);
		else
			fprintf(stderr, "mscope: EAL plugin %s stays idle: rte_eth_dev_start comes "
				"from %s, not librte_ethdev (DPDK linked statically?)\n",
				self.dli_fname, owner.dli_fname);
		return;
	}
	start_recording("plugin");
	/* Beside the main lcore (its cpus were parsed before EAL loads
	 * plugins), off the forwarding cores. */
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	cpus = rte_lcore_cpuset(rte_get_main_lcore());
	if (CPU_COUNT(&cpus) > 0)
		pthread_attr_setaffinity_np(&attr, sizeof(cpus), &cpus);
	rc = pthread_create(&tid, &attr, watch_ports, NULL);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		fprintf(stderr, "mscope: EAL plugin: no watcher thread: %s\n", strerror(rc));
		return;
	}
	pthread_setname_np(tid, "mscope-watch");
}
