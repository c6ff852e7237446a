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
 * opened on that thread's first batch (the only allocation, once per lcore).
 *
 * Identity: MSCOPE_NF_NAME (default: the program's name), MSCOPE_NF_ID
 * (default: a hash of the name, 1..65535), MSCOPE_DIR for the registry.
 * MSCOPE_ADDRS=1 adds address records to rx (MSCOPE_F_ADDRS): for the
 * chain's ingress NF.
 *
 * Only when attached: an NF that links libmscope and calls mscope_rx/tx
 * itself also resolves rte_eth_dev_start here, and must not be recorded
 * twice.  So callbacks go in only when LD_PRELOAD names libmscope or
 * MSCOPE_ATTACH=1 (what `mscope attach` and EAL -d loading set);
 * MSCOPE_ATTACH=0 turns them off.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_telemetry.h>

#include "mscope_dpdk.h"
#include "mscope_pvt.h"

extern char *program_invocation_short_name;

typedef int (*dev_start_fn)(uint16_t);

#define ATTACH_MAX_THREADS 128

static __thread struct mscope *thread_ms;
/* Every thread's recorder, for /mscope/status; written once per thread. */
static struct mscope *all_ms[ATTACH_MAX_THREADS];
static unsigned n_all_ms;
/* /mscope/disable clears it: callbacks stay installed and return at once. */
static int recording = 1;
static __thread int thread_failed;
static unsigned thread_seq;               /* lcore ids for non-EAL threads */
static char nf_name[MSCOPE_NAME_LEN];
static uint16_t nf_id;
static uint32_t ring_flags;               /* MSCOPE_F_* for every thread's ring */
static int ready;
static int occupancy_ok[RTE_MAX_ETHPORTS];

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
	ready = 1;
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
		mscope_set_tsc_hz(thread_ms, rte_get_tsc_hz());
		/* Release pairs with the acquire in telemetry_status. */
		if (slot < ATTACH_MAX_THREADS)
			__atomic_store_n(&all_ms[slot], thread_ms, __ATOMIC_RELEASE);
	}
	return thread_ms;
}

static uint16_t
on_rx(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t nb,
      uint16_t max, void *user)
{
	struct mscope *ms;
	uint32_t occ = MSCOPE_OCC_UNKNOWN;

	(void)max;
	(void)user;
	if (nb == 0 || !__atomic_load_n(&recording, __ATOMIC_RELAXED) ||
	    (ms = thread_recorder()) == NULL)
		return nb;
	if (occupancy_ok[port]) {
		int c = rte_eth_rx_queue_count(port, queue);
		if (c >= 0)
			occ = (uint32_t)c;
	}
	mscope_rx(ms, port, queue, pkts, nb, occ);
	return nb;
}

static uint16_t
on_tx(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t nb, void *user)
{
	struct mscope *ms;

	(void)user;
	if (nb != 0 && __atomic_load_n(&recording, __ATOMIC_RELAXED) &&
	    (ms = thread_recorder()) != NULL)
		mscope_tx(ms, port, queue, pkts, nb, MSCOPE_OCC_UNKNOWN);
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

/* Interposes on DPDK's rte_eth_dev_start for LD_PRELOAD. */
int
rte_eth_dev_start(uint16_t port)
{
	static dev_start_fn real;
	struct rte_eth_dev_info info;
	uint16_t q;
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
	if (!ready) {
		identity();
		register_telemetry();
	}
	if (rte_eth_dev_info_get(port, &info) != 0)
		return rc;
	/* rx queue count: try once; vdevs (null, ring, af_packet, memif, tap)
	 * say -ENOTSUP and are never asked again. */
	occupancy_ok[port] = info.nb_rx_queues > 0 && rte_eth_rx_queue_count(port, 0) >= 0;
	for (q = 0; q < info.nb_rx_queues; q++)
		if (rte_eth_add_rx_callback(port, q, on_rx, NULL) == NULL)
			fprintf(stderr, "mscope: no rx callback on port %u queue %u: %s\n",
				port, q, rte_strerror(rte_errno));
	for (q = 0; q < info.nb_tx_queues; q++)
		if (rte_eth_add_tx_callback(port, q, on_tx, NULL) == NULL)
			fprintf(stderr, "mscope: no tx callback on port %u queue %u: %s\n",
				port, q, rte_strerror(rte_errno));
	fprintf(stderr, "mscope: recording port %u (%u rx, %u tx queues) as %s (nf_id %u%s)\n",
		port, info.nb_rx_queues, info.nb_tx_queues, nf_name, nf_id,
		(ring_flags & MSCOPE_F_ADDRS) ? ", rx addresses" : "");
	return rc;
}
