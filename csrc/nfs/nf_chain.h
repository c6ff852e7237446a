/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The plumbing every process of a ring-linked chain shares: the testbed's
 * primary, its source and sink, and each sample NF (mscope-nf).
 *
 *   primary (mscope-tb-primary)  creates the mbuf pool, one rte_ring per NF
 *                                input and for the sink, and the control
 *                                memzone; stays up while the chain runs.
 *   secondaries                  look those up by name, wait for the
 *                                common start t0, then move mbufs
 *                                ring to ring, recording every batch.
 *
 * Time: t0 is a CLOCK_MONOTONIC instant (ns) the primary writes into the
 * control memzone when told to start; every fault time on a command line
 * is relative to it, so faults in different processes line up with each
 * other and with the capture (whose clock is CLOCK_MONOTONIC too).
 *
 * Limits: one thread per process; single consumer per ring; every process
 * must use its own EAL lcore id (--lcores=ID@CPU), because mempool caches
 * are per lcore id and shared memory does not know processes apart.
 *
 * Port mode (`mscope ovs`, docs/ovs.md): links named "port:N" are ethdev
 * ports of the process itself (virtio-user to OVS), every process is a
 * DPDK primary of its own, and the control block is a mapped file.
 */
#ifndef NF_CHAIN_H
#define NF_CHAIN_H

#include <stdint.h>
#include <stdio.h>

#include <string.h>

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "mscope_record.h"    /* MSCOPE_OCC_UNKNOWN */

#ifdef __cplusplus
extern "C" {
#endif

#define NF_CTL_DEFAULT   "tb_ctl"     /* control memzone name */
#define NF_POOL_DEFAULT  "tb_pool"    /* mbuf pool name */
#define NF_MAX_OUT       16           /* out-links per process */
#define NF_MAX_IN        16           /* in-links of the sink */
#define NF_MAX_BURST     256
#define NF_MAX_FAULTS    16

/* The control memzone.  Written by the primary only; read by all. */
struct nf_ctl {
	volatile uint64_t t0_ns;   /* CLOCK_MONOTONIC ns of scenario time 0; 0: not started */
	volatile uint32_t stop;    /* 1: every secondary should leave its loop */
	uint32_t magic;
};
#define NF_CTL_MAGIC 0x6d73746bU   /* "mstk" */

/* Set by SIGINT/SIGTERM (nf_install_signals). */
extern volatile int nf_stop;

void nf_install_signals(void);

/* CLOCK_MONOTONIC now, in ns. */
uint64_t nf_mono_ns(void);

/* Sleep about `us` microseconds (timer slack set to 1 ns, so a 1 us
 * sleep takes ~20 us on a VM rather than the default 50 us slack + 20). */
void nf_sleep_us(double us);

/* Sleep until TSC `deadline`, in slices, returning early on nf_stop; the
 * last 30 us are spun so the wake-up is on time (nanosleep overshoots
 * ~20 us here). */
void nf_sleep_until_tsc(uint64_t deadline);

/* Spin (no sleep) until TSC `deadline`: emulated work. */
static inline void
nf_spin_until_tsc(uint64_t deadline)
{
	while (rte_rdtsc() < deadline)
		rte_pause();
}

/* The control block: the primary's memzone `name`, or, when `name` holds
 * a '/', a file of sizeof(struct nf_ctl) bytes mapped shared (written by
 * `mscope ovs`, where every process is a primary of its own and no
 * memzone is shared).  NULL with a message on stderr. */
const struct nf_ctl *nf_ctl_attach(const char *name, const char *prog);

/* Wait until t0 is set (or nf_stop / ctl->stop).  Returns t0 in ns, or 0
 * when told to stop first.  Then nf_tsc_of(rel_ns) maps a time relative
 * to t0 onto this process's TSC. */
uint64_t nf_wait_start(const struct nf_ctl *ctl);
uint64_t nf_tsc_of(uint64_t rel_ns);
/* TSC ticks in `ns` nanoseconds. */
uint64_t nf_ns_to_tsc(double ns);

/* Look up ring `name`; NULL with a message naming it. */
struct rte_ring *nf_ring_lookup(const char *name, const char *prog);

/*
 * A link of the chain: an rte_ring of the testbed's primary, or, named
 * "port:N", ethdev port N of this process (port mode: a net_virtio_user
 * vdev on a vhost-user socket of OVS, docs/ovs.md).  A port is configured
 * with one rx and one tx queue and started on first use, with mbufs from
 * a pool of this process (NF_PORT_POOL_MBUFS).
 *
 * The port recorded for a link: its index among the process's in- or
 * out-links for a ring (what the testbed's truth goes by), the ethdev
 * port id for a port.
 */
#define NF_PORT_POOL_MBUFS 8191   /* two 1024-descriptor virtqueues, bursts, caches */
#define NF_PORT_PREFIX     "port:"

struct nf_link {
	struct rte_ring *ring;    /* NULL: an ethdev port */
	uint16_t port;            /* ethdev port id */
	int8_t count_ok;          /* port rx: 1 rte_eth_rx_queue_count works, -1 not, 0 not asked */
};

/* Open link `name` ("port:N" or a ring name).  0, or -1 with a message. */
int nf_link_open(struct nf_link *l, const char *name, const char *prog);

/* Is `name` a port ("port:N")? */
static inline int
nf_is_port(const char *name)
{
	return strncmp(name, NF_PORT_PREFIX, sizeof(NF_PORT_PREFIX) - 1) == 0;
}

/* The pool ports allocate from (and the source builds frames in); NULL
 * before the first port was opened. */
struct rte_mempool *nf_port_pool(void);

/* Up to n packets from link `l`; *occupancy gets what is left in its
 * queue after the dequeue: rte_ring_count, or rte_eth_rx_queue_count
 * where the PMD has it, else 0 after a short burst (the queue was
 * emptied) and MSCOPE_OCC_UNKNOWN after a full one. */
static inline unsigned
nf_link_rx(struct nf_link *l, struct rte_mbuf **pkts, unsigned n, uint32_t *occupancy)
{
	unsigned got, left;
	int c;

	if (l->ring != NULL) {
		got = rte_ring_dequeue_burst(l->ring, (void **)pkts, n, &left);
		*occupancy = left;
		return got;
	}
	got = rte_eth_rx_burst(l->port, 0, pkts, (uint16_t)n);
	if (got == 0) {
		*occupancy = 0;     /* an empty poll: nothing was queued */
		return 0;
	}
	if (l->count_ok >= 0) {
		c = rte_eth_rx_queue_count(l->port, 0);
		l->count_ok = c >= 0 ? 1 : -1;
		if (c >= 0) {
			*occupancy = (uint32_t)c;
			return got;
		}
	}
	*occupancy = got < n ? 0 : MSCOPE_OCC_UNKNOWN;
	return got;
}

/* Send n packets on link `l`; returns how many it took (the caller frees
 * the rest: a drop at that queue). */
static inline unsigned
nf_link_tx(struct nf_link *l, struct rte_mbuf **pkts, unsigned n)
{
	if (l->ring != NULL)
		return rte_ring_enqueue_burst(l->ring, (void **)pkts, n, NULL);
	return rte_eth_tx_burst(l->port, 0, pkts, (uint16_t)n);
}

/* Port to record for link `l`, the index-th of its direction. */
static inline uint16_t
nf_link_record_port(const struct nf_link *l, unsigned index)
{
	return l->ring != NULL ? (uint16_t)index : l->port;
}

/* Stop and close every port opened (before rte_eal_cleanup). */
void nf_ports_close(void);

/* Split "a,b,c" into at most `max` strings (the input is modified).
 * Returns the count, or -1 with a message when there are more. */
int nf_split_list(char *s, char **out, int max, const char *what, const char *prog);

/* Parse "A.B.C.D/LEN" into host-order net and mask. 0 or -1. */
int nf_parse_prefix(const char *s, uint32_t *net, uint32_t *mask);

/* Parse "A.B.C.D" into a host-order address. 0 or -1. */
int nf_parse_ipv4(const char *s, uint32_t *addr);

/* Fault hooks of one NF.  Times are relative to t0 until nf_faults_arm()
 * turns them into TSC deadlines. */
struct nf_interrupt {
	uint64_t at_ns, dur_ns;
	uint64_t at_tsc, end_tsc;
	int done;
};

struct nf_bug {
	uint32_t net, mask;          /* IPv4 source prefix, host order */
	uint64_t from_ns, to_ns;
	double extra_ns;             /* extra work per matching packet */
	uint64_t from_tsc, to_tsc, extra_tsc;
};

struct nf_faults {
	struct nf_interrupt intr[NF_MAX_FAULTS];
	unsigned n_intr;
	struct nf_bug bug[NF_MAX_FAULTS];
	unsigned n_bug;
	uint64_t intr_count, bug_packets;
};

/* "--interrupt AT_NS,DUR_NS" and "--bug PREFIX,FROM_NS,TO_NS,EXTRA_NS". */
int nf_faults_add_interrupt(struct nf_faults *f, const char *arg, const char *prog);
int nf_faults_add_bug(struct nf_faults *f, const char *arg, const char *prog);
void nf_faults_arm(struct nf_faults *f);

/* If an interrupt window holds TSC `now`, sleep through it and return 1. */
int nf_faults_interrupt(struct nf_faults *f, uint64_t now);

/* Extra TSC ticks the bug faults add for a packet with IPv4 source `src`
 * (host order) received at `now`. */
static inline uint64_t
nf_faults_bug_cost(struct nf_faults *f, uint32_t src, uint64_t now)
{
	uint64_t extra = 0;
	unsigned i;

	for (i = 0; i < f->n_bug; i++) {
		const struct nf_bug *b = &f->bug[i];
		if (now >= b->from_tsc && now < b->to_tsc && (src & b->mask) == b->net) {
			extra += b->extra_tsc;
			f->bug_packets++;
		}
	}
	return extra;
}

#ifdef __cplusplus
}
#endif

#endif /* NF_CHAIN_H */
