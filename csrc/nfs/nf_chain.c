/* SPDX-License-Identifier: BSD-3-Clause */
/* Plumbing shared by the chain's processes: start time, sleeping, rings,
 * fault hooks (nf_chain.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <rte_errno.h>
#include <rte_memzone.h>

#include "nf_chain.h"

volatile int nf_stop;

static void
on_signal(int sig)
{
	(void)sig;
	nf_stop = 1;
}

void
nf_install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* Idle sleeps of a few us: the default 50 us timer slack would add
	 * 50 us to every hop of an idle chain. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
}

uint64_t
nf_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void
nf_sleep_us(double us)
{
	struct timespec ts;

	if (us <= 0)
		return;
	ts.tv_sec = (time_t)(us / 1e6);
	ts.tv_nsec = (long)((us - (double)ts.tv_sec * 1e6) * 1e3);
	nanosleep(&ts, NULL);
}

uint64_t
nf_ns_to_tsc(double ns)
{
	return (uint64_t)(ns * (double)rte_get_tsc_hz() / 1e9 + 0.5);
}

void
nf_sleep_until_tsc(uint64_t deadline)
{
	const uint64_t spin = nf_ns_to_tsc(30e3);
	const double per_us = (double)rte_get_tsc_hz() / 1e6;

	for (;;) {
		uint64_t now = rte_rdtsc();
		double left_us;

		if (now >= deadline || nf_stop)
			return;
		if (deadline - now <= spin) {
			nf_spin_until_tsc(deadline);
			return;
		}
		left_us = (double)(deadline - now - spin) / per_us;
		nf_sleep_us(left_us < 1000 ? left_us : 1000);
	}
}

/* The control block in a file (port mode): mapped shared, read-only. */
static const struct nf_ctl *
ctl_map_file(const char *path, const char *prog)
{
	int fd = open(path, O_RDONLY);
	void *p;

	if (fd < 0) {
		fprintf(stderr, "%s: control file %s: %s\n", prog, path, strerror(errno));
		return NULL;
	}
	p = mmap(NULL, sizeof(struct nf_ctl), PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		fprintf(stderr, "%s: control file %s: mmap: %s\n", prog, path, strerror(errno));
		return NULL;
	}
	return p;
}

const struct nf_ctl *
nf_ctl_attach(const char *name, const char *prog)
{
	const struct rte_memzone *mz;
	const struct nf_ctl *ctl;

	if (strchr(name, '/') != NULL) {
		ctl = ctl_map_file(name, prog);
		if (ctl != NULL && ctl->magic != NF_CTL_MAGIC) {
			fprintf(stderr, "%s: %s is not a testbed control block\n", prog, name);
			return NULL;
		}
		return ctl;
	}
	mz = rte_memzone_lookup(name);
	if (mz == NULL) {
		fprintf(stderr, "%s: control memzone '%s' not found: is the testbed primary "
			"(mscope-tb-primary) running with the same --file-prefix?\n", prog, name);
		return NULL;
	}
	ctl = mz->addr;
	if (ctl->magic != NF_CTL_MAGIC) {
		fprintf(stderr, "%s: memzone '%s' is not a testbed control block\n", prog, name);
		return NULL;
	}
	return ctl;
}

/* t0 on both clocks, taken as one pair */
static uint64_t t0_ns, t0_tsc;

uint64_t
nf_wait_start(const struct nf_ctl *ctl)
{
	uint64_t t0, mono, tsc, hz = rte_get_tsc_hz();

	while ((t0 = ctl->t0_ns) == 0) {
		if (nf_stop || ctl->stop)
			return 0;
		nf_sleep_us(500);
	}
	tsc = rte_rdtsc();
	mono = nf_mono_ns();
	t0_ns = t0;
	if (t0 >= mono)
		t0_tsc = tsc + (uint64_t)((double)(t0 - mono) * (double)hz / 1e9);
	else
		t0_tsc = tsc - (uint64_t)((double)(mono - t0) * (double)hz / 1e9);
	return t0;
}

uint64_t
nf_tsc_of(uint64_t rel_ns)
{
	return t0_tsc + nf_ns_to_tsc((double)rel_ns);
}

struct rte_ring *
nf_ring_lookup(const char *name, const char *prog)
{
	struct rte_ring *r = rte_ring_lookup(name);

	if (r == NULL)
		fprintf(stderr, "%s: ring '%s' not found (%s): the primary creates it\n",
			prog, name, rte_strerror(rte_errno));
	return r;
}

static struct rte_mempool *port_pool;
static uint8_t port_started[RTE_MAX_ETHPORTS];

struct rte_mempool *
nf_port_pool(void)
{
	return port_pool;
}

/* One rx and one tx queue, default descriptor counts (virtio-user: the
 * vdev's queue_size), started. */
static int
port_start(uint16_t port, const char *prog)
{
	struct rte_eth_conf conf;
	int rc;

	if (port_pool == NULL) {
		port_pool = rte_pktmbuf_pool_create("nf_port_pool", NF_PORT_POOL_MBUFS, 256, 0,
						    RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
		if (port_pool == NULL) {
			fprintf(stderr, "%s: mbuf pool: %s\n", prog, rte_strerror(rte_errno));
			return -1;
		}
	}
	memset(&conf, 0, sizeof(conf));
	if ((rc = rte_eth_dev_configure(port, 1, 1, &conf)) != 0 ||
	    (rc = rte_eth_rx_queue_setup(port, 0, 0, rte_eth_dev_socket_id(port), NULL,
					 port_pool)) != 0 ||
	    (rc = rte_eth_tx_queue_setup(port, 0, 0, rte_eth_dev_socket_id(port), NULL)) != 0 ||
	    (rc = rte_eth_dev_start(port)) != 0) {
		fprintf(stderr, "%s: port %u: %s\n", prog, port, rte_strerror(-rc));
		return -1;
	}
	port_started[port] = 1;
	return 0;
}

int
nf_link_open(struct nf_link *l, const char *name, const char *prog)
{
	char *end;
	unsigned long port;

	memset(l, 0, sizeof(*l));
	if (!nf_is_port(name)) {
		l->ring = nf_ring_lookup(name, prog);
		return l->ring != NULL ? 0 : -1;
	}
	port = strtoul(name + sizeof(NF_PORT_PREFIX) - 1, &end, 10);
	if (*end != '\0' || end == name + sizeof(NF_PORT_PREFIX) - 1 ||
	    port >= RTE_MAX_ETHPORTS || !rte_eth_dev_is_valid_port((uint16_t)port)) {
		fprintf(stderr, "%s: %s: no such ethdev port (%u ports; give --vdev="
			"net_virtio_user0,path=SOCKET to EAL)\n", prog, name,
			rte_eth_dev_count_avail());
		return -1;
	}
	l->port = (uint16_t)port;
	if (!port_started[port] && port_start(l->port, prog) != 0)
		return -1;
	return 0;
}

void
nf_ports_close(void)
{
	uint16_t p;

	for (p = 0; p < RTE_MAX_ETHPORTS; p++)
		if (port_started[p]) {
			rte_eth_dev_stop(p);
			rte_eth_dev_close(p);
			port_started[p] = 0;
		}
}

int
nf_split_list(char *s, char **out, int max, const char *what, const char *prog)
{
	int n = 0;
	char *save = NULL, *tok;

	for (tok = strtok_r(s, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (n == max) {
			fprintf(stderr, "%s: more than %d %s\n", prog, max, what);
			return -1;
		}
		out[n++] = tok;
	}
	return n;
}

int
nf_parse_ipv4(const char *s, uint32_t *addr)
{
	struct in_addr a;

	if (inet_pton(AF_INET, s, &a) != 1)
		return -1;
	*addr = ntohl(a.s_addr);
	return 0;
}

int
nf_parse_prefix(const char *s, uint32_t *net, uint32_t *mask)
{
	char buf[64];
	char *slash, *end;
	long len = 32;

	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	slash = strchr(buf, '/');
	if (slash != NULL) {
		*slash = '\0';
		len = strtol(slash + 1, &end, 10);
		if (*end != '\0' || end == slash + 1 || len < 0 || len > 32)
			return -1;
	}
	if (nf_parse_ipv4(buf, net) != 0)
		return -1;
	*mask = len == 0 ? 0 : ~0U << (32 - len);
	*net &= *mask;
	return 0;
}

int
nf_faults_add_interrupt(struct nf_faults *f, const char *arg, const char *prog)
{
	uint64_t at, dur;
	char extra;

	if (f->n_intr == NF_MAX_FAULTS) {
		fprintf(stderr, "%s: more than %d --interrupt\n", prog, NF_MAX_FAULTS);
		return -1;
	}
	if (sscanf(arg, "%" SCNu64 ",%" SCNu64 "%c", &at, &dur, &extra) != 2 || dur == 0) {
		fprintf(stderr, "%s: --interrupt wants AT_NS,DURATION_NS (from the start, "
			"duration > 0), got '%s'\n", prog, arg);
		return -1;
	}
	f->intr[f->n_intr++] = (struct nf_interrupt){ .at_ns = at, .dur_ns = dur };
	return 0;
}

int
nf_faults_add_bug(struct nf_faults *f, const char *arg, const char *prog)
{
	char prefix[64], extra;
	uint64_t from, to;
	double extra_ns;
	struct nf_bug *b;

	if (f->n_bug == NF_MAX_FAULTS) {
		fprintf(stderr, "%s: more than %d --bug\n", prog, NF_MAX_FAULTS);
		return -1;
	}
	b = &f->bug[f->n_bug];
	if (sscanf(arg, "%63[^,],%" SCNu64 ",%" SCNu64 ",%lf%c", prefix, &from, &to, &extra_ns,
		   &extra) != 4 || to <= from || extra_ns < 0 ||
	    nf_parse_prefix(prefix, &b->net, &b->mask) != 0) {
		fprintf(stderr, "%s: --bug wants PREFIX,FROM_NS,TO_NS,EXTRA_NS (e.g. "
			"10.0.0.0/10,80000000,120000000,6000), got '%s'\n", prog, arg);
		return -1;
	}
	b->from_ns = from;
	b->to_ns = to;
	b->extra_ns = extra_ns;
	f->n_bug++;
	return 0;
}

void
nf_faults_arm(struct nf_faults *f)
{
	unsigned i;

	for (i = 0; i < f->n_intr; i++) {
		f->intr[i].at_tsc = nf_tsc_of(f->intr[i].at_ns);
		f->intr[i].end_tsc = nf_tsc_of(f->intr[i].at_ns + f->intr[i].dur_ns);
	}
	for (i = 0; i < f->n_bug; i++) {
		f->bug[i].from_tsc = nf_tsc_of(f->bug[i].from_ns);
		f->bug[i].to_tsc = nf_tsc_of(f->bug[i].to_ns);
		f->bug[i].extra_tsc = nf_ns_to_tsc(f->bug[i].extra_ns);
	}
}

int
nf_faults_interrupt(struct nf_faults *f, uint64_t now)
{
	unsigned i;

	for (i = 0; i < f->n_intr; i++) {
		struct nf_interrupt *in = &f->intr[i];
		if (!in->done && now >= in->at_tsc) {
			in->done = 1;
			if (now < in->end_tsc) {
				/* The fault: stop polling, as a descheduled or
				 * blocked NF would. */
				f->intr_count++;
				nf_sleep_until_tsc(in->end_tsc);
				return 1;
			}
		}
	}
	return 0;
}
