/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * mscope-nf: one sample NF as a DPDK secondary process, recorded with
 * libmscope, between named rte_rings of the testbed's primary.
 *
 *   mscope-nf --proc-type=secondary --file-prefix=tb1 --lcores=3@1 --no-pci -- \
 *       --type nat --name nat --nf-id 2 --in q_nat --out q_mon --service-ns 300
 *
 * Or, port mode, a DPDK primary of its own behind OVS (docs/ovs.md): rx
 * from ethdev port 0, tx to port 1, both virtio-user on vhost-user sockets
 * of OVS, the start time from a mapped control file:
 *
 *   mscope-nf --file-prefix=nf1 --single-file-segments -m 128 --lcores=0@0 --no-pci \
 *       --vdev=net_virtio_user0,path=RUN/nat-in --vdev=net_virtio_user1,path=RUN/nat-out -- \
 *       --type nat --name nat --in port:0 --out port:1 --ctl RUN/ctl
 *
 * The loop: dequeue up to --batch from the input ring; record rx (the
 * ring's count after the dequeue is the occupancy); run the type's logic
 * (nat.c, firewall.c, monitor.c, vpn.c, lb.c); spin out the rest of the
 * emulated service time (--service-ns per packet, plus a bug fault's
 * extra); record tx and enqueue per out-link.  Packets an out-ring refuses
 * are freed: a real drop at that queue, which the capture shows as a tx
 * that never arrives.  An empty poll sleeps --idle-us (default 50): NFs
 * sharing a core never spin when idle.  The sleep is the poll period, so
 * it trades latency for CPU: a sleep and its wake-up cost ~25 us of CPU on
 * this VM whatever the length asked (docs/testbed.md).
 *
 * --no-record: the same loop with libmscope left out: no ring, and neither
 * mscope_rx nor mscope_tx is called (one predicted branch per call site
 * instead), so bench/overhead.py can compare the NF's own forwarding rate
 * with and without recording, same binary, same run.
 *
 * Ids: rx trusts upstream stamps (MSCOPE_F_TRUST_UPSTREAM): every producer
 * on these rings records tx, so one id holds from source to sink even
 * through vpn's encryption.  --addrs (MSCOPE_F_ADDRS) for the NFs the
 * source feeds, so the capture can name flows by source address.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mbuf_dyn.h>

#include "mscope_dpdk.h"
#include "nf.h"
#include "nf_chain.h"
#include "nf_pkt.h"

#define PROG "mscope-nf"

static const struct nf_type *const types[] = {
	&nf_type_nat, &nf_type_firewall, &nf_type_monitor, &nf_type_vpn, &nf_type_lb,
};
#define N_TYPES (sizeof(types) / sizeof(types[0]))

enum {
	OPT_TYPE = 256, OPT_NAME, OPT_NF_ID, OPT_IN, OPT_OUT, OPT_BATCH, OPT_SERVICE,
	OPT_DIR, OPT_RING_MB, OPT_ADDRS, OPT_NO_TRUST, OPT_INTERRUPT, OPT_BUG, OPT_CTL,
	OPT_IDLE_US, OPT_NO_RECORD, OPT_HELP,
};

static const struct option common_opts[] = {
	{"type", required_argument, NULL, OPT_TYPE},
	{"name", required_argument, NULL, OPT_NAME},
	{"nf-id", required_argument, NULL, OPT_NF_ID},
	{"in", required_argument, NULL, OPT_IN},
	{"out", required_argument, NULL, OPT_OUT},
	{"batch", required_argument, NULL, OPT_BATCH},
	{"service-ns", required_argument, NULL, OPT_SERVICE},
	{"dir", required_argument, NULL, OPT_DIR},
	{"ring-mb", required_argument, NULL, OPT_RING_MB},
	{"addrs", no_argument, NULL, OPT_ADDRS},
	{"no-trust", no_argument, NULL, OPT_NO_TRUST},
	{"interrupt", required_argument, NULL, OPT_INTERRUPT},
	{"bug", required_argument, NULL, OPT_BUG},
	{"ctl", required_argument, NULL, OPT_CTL},
	{"idle-us", required_argument, NULL, OPT_IDLE_US},
	{"no-record", no_argument, NULL, OPT_NO_RECORD},
	{"help", no_argument, NULL, OPT_HELP},
};
#define N_COMMON (sizeof(common_opts) / sizeof(common_opts[0]))

static void
usage(FILE *f)
{
	unsigned i;

	fprintf(f,
		"usage: " PROG " [EAL args, --proc-type=secondary] -- --type TYPE --in RING --out RING[,RING...]\n"
		"         [--name NAME] [--nf-id N] [--batch N] [--service-ns NS] [--dir DIR]\n"
		"         [--ring-mb MB] [--addrs] [--no-trust] [--ctl MEMZONE|FILE] [--idle-us US]\n"
		"         [--no-record] [--interrupt AT_NS,DURATION_NS]... [--bug PREFIX,FROM_NS,TO_NS,EXTRA_NS]...\n"
		"  --no-record: forward without libmscope: no ring, no mscope_rx/mscope_tx calls\n"
		"    (the baseline of bench/overhead.py's nf_chain case)\n"
		"Types and their options:\n");
	for (i = 0; i < N_TYPES; i++)
		fprintf(f, "  %s\n%s", types[i]->name, types[i]->help);
	fprintf(f, "Fault times are ns from the testbed's start (t0 in the primary's control memzone).\n"
		"Port mode: --in port:N --out port:M[,...] (ethdev ports, e.g. net_virtio_user vdevs),\n"
		"  --ctl FILE (a path: the control block mapped from a file); ids from headers at rx.\n");
}

static const struct nf_type *
find_type(int argc, char **argv)
{
	int i;
	unsigned k;

	for (i = 1; i < argc; i++) {
		const char *v = NULL;
		if (strcmp(argv[i], "--type") == 0 && i + 1 < argc)
			v = argv[i + 1];
		else if (strncmp(argv[i], "--type=", 7) == 0)
			v = argv[i] + 7;
		if (v == NULL)
			continue;
		for (k = 0; k < N_TYPES; k++)
			if (strcmp(types[k]->name, v) == 0)
				return types[k];
		fprintf(stderr, PROG ": unknown NF type '%s' (known: nat, firewall, monitor, vpn, lb)\n", v);
		return NULL;
	}
	fprintf(stderr, PROG ": give --type (nat, firewall, monitor, vpn or lb)\n");
	return NULL;
}

struct nf_conf {
	const char *name, *in, *dir, *ctl;   /* in, out: ring names or "port:N" */
	char *out[NF_MAX_OUT];
	unsigned n_out, batch;
	uint16_t nf_id;
	double service_ns, idle_us;
	size_t ring_bytes;
	uint32_t flags;
	int record;          /* 0: --no-record */
	struct nf_faults faults;
};

static int
parse(int argc, char **argv, const struct nf_type *type, struct nf_ctx *ctx, struct nf_conf *c)
{
	struct option opts[N_COMMON + 32];
	unsigned n = 0, i;
	int opt, k;

	for (i = 0; i < N_COMMON; i++)
		opts[n++] = common_opts[i];
	for (i = 0; type->options != NULL && type->options[i].name != NULL && n < N_COMMON + 31; i++)
		opts[n++] = type->options[i];
	opts[n] = (struct option){NULL, 0, NULL, 0};
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case OPT_TYPE: break;
		case OPT_NAME: c->name = optarg; break;
		case OPT_NF_ID: c->nf_id = (uint16_t)strtoul(optarg, NULL, 0); break;
		case OPT_IN: c->in = optarg; break;
		case OPT_OUT:
			k = nf_split_list(optarg, c->out + c->n_out, NF_MAX_OUT - (int)c->n_out,
					  "out-links", PROG);
			if (k < 0)
				return -1;
			c->n_out += (unsigned)k;
			break;
		case OPT_BATCH: c->batch = (unsigned)strtoul(optarg, NULL, 0); break;
		case OPT_SERVICE: c->service_ns = atof(optarg); break;
		case OPT_DIR: c->dir = optarg; break;
		case OPT_RING_MB: c->ring_bytes = (size_t)strtoul(optarg, NULL, 0) << 20; break;
		case OPT_ADDRS: c->flags |= MSCOPE_F_ADDRS; break;
		case OPT_NO_TRUST: c->flags &= ~MSCOPE_F_TRUST_UPSTREAM; break;
		case OPT_INTERRUPT:
			if (nf_faults_add_interrupt(&c->faults, optarg, PROG) != 0)
				return -1;
			break;
		case OPT_BUG:
			if (nf_faults_add_bug(&c->faults, optarg, PROG) != 0)
				return -1;
			break;
		case OPT_CTL: c->ctl = optarg; break;
		case OPT_IDLE_US: c->idle_us = atof(optarg); break;
		case OPT_NO_RECORD: c->record = 0; break;
		case OPT_HELP: usage(stdout); exit(0);
		default:
			if (opt >= NF_TYPE_OPT && type->parse != NULL) {
				if (type->parse(ctx, opt, optarg) != 0)
					return -1;
				break;
			}
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (c->in == NULL || c->n_out == 0) {
		fprintf(stderr, PROG ": give --in RING and --out RING[,RING...]\n");
		return -1;
	}
	for (i = 0; i < c->n_out; i++)
		if (nf_is_port(c->out[i]) != nf_is_port(c->in)) {
			fprintf(stderr, PROG ": --in and --out must all be rings or all ports "
				"(port:N), got --in %s --out %s\n", c->in, c->out[i]);
			return -1;
		}
	if (c->batch == 0 || c->batch > NF_MAX_BURST) {
		fprintf(stderr, PROG ": --batch must be 1..%d\n", NF_MAX_BURST);
		return -1;
	}
	if (c->service_ns < 0 || c->idle_us < 0) {
		fprintf(stderr, PROG ": --service-ns and --idle-us must be >= 0\n");
		return -1;
	}
	return 0;
}

struct nf_counts {
	uint64_t rx, batches, idle_polls, drop_nf;
	uint64_t tx[NF_MAX_OUT], drop_full[NF_MAX_OUT];
};

static void
report(const struct nf_type *type, struct nf_ctx *ctx, const struct nf_conf *c,
       const struct nf_counts *k, struct mscope *ms)
{
	struct mscope_stats st = {0};
	unsigned o;

	if (ms != NULL)
		mscope_get_stats(ms, &st);
	printf("{\"event\": \"done\", \"nf\": \"%s\", \"type\": \"%s\", \"rx\": %" PRIu64
	       ", \"batches\": %" PRIu64 ", \"idle_polls\": %" PRIu64 ", \"drop_nf\": %" PRIu64,
	       c->name, type->name, k->rx, k->batches, k->idle_polls, k->drop_nf);
	printf(", \"tx\": [");
	for (o = 0; o < c->n_out; o++)
		printf("%s%" PRIu64, o ? ", " : "", k->tx[o]);
	printf("], \"drop_full\": [");
	for (o = 0; o < c->n_out; o++)
		printf("%s%" PRIu64, o ? ", " : "", k->drop_full[o]);
	printf("], \"interrupts\": %" PRIu64 ", \"bug_packets\": %" PRIu64
	       ", \"records\": %" PRIu64 ", \"drop_records\": %" PRIu64
	       ", \"recording\": %s, \"id_stamp_offset\": %d",
	       c->faults.intr_count, c->faults.bug_packets, st.records, st.drop_records,
	       ms != NULL ? "true" : "false",
	       /* where libmscope's id stamp sits in the mbuf, -1: none (ids
	        * are then recomputed from headers at every hop) */
	       rte_mbuf_dynfield_lookup(MSCOPE_DYNFIELD_NAME, NULL));
	if (type->report != NULL)
		type->report(ctx, stdout);
	printf("}\n");
	fflush(stdout);
}

int
main(int argc, char **argv)
{
	struct nf_conf c = {
		.dir = NULL, .ctl = NF_CTL_DEFAULT, .batch = 32, .nf_id = 1, .idle_us = 50,
		.flags = MSCOPE_F_TRUST_UPSTREAM, .record = 1,
	};
	struct nf_ctx ctx = { .prog = PROG };
	struct nf_counts k;
	const struct nf_type *type;
	const struct nf_ctl *ctl;
	struct nf_link in, out[NF_MAX_OUT];
	struct mscope *ms = NULL;
	double service_tsc;
	unsigned o;
	int rc;

	rc = rte_eal_init(argc, argv);
	if (rc < 0) {
		fprintf(stderr, PROG ": EAL init failed: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	argc -= rc;
	argv += rc;
	/* --help needs no --type: the usage lists every type's options. */
	for (rc = 1; rc < argc; rc++)
		if (strcmp(argv[rc], "--help") == 0) {
			usage(stdout);
			return 0;
		}
	type = find_type(argc, argv);
	if (type == NULL)
		return 2;
	c.name = type->name;
	if (parse(argc, argv, type, &ctx, &c) != 0)
		return 2;
	ctx.name = c.name;
	ctx.n_out = c.n_out;
	nf_install_signals();

	ctl = nf_ctl_attach(c.ctl, PROG);
	if (ctl == NULL || nf_link_open(&in, c.in, PROG) != 0)
		return 2;
	for (o = 0; o < c.n_out; o++)
		if (nf_link_open(&out[o], c.out[o], PROG) != 0)
			return 2;
	/* Ports: mbufs come from our own pool, freshly filled by the PMD;
	 * nobody upstream stamped them (OVS's copies carry no stamp). */
	if (in.ring == NULL)
		c.flags &= ~MSCOPE_F_TRUST_UPSTREAM;
	if (type->init != NULL && type->init(&ctx) != 0)
		return 2;
	if (c.record) {
		ms = mscope_open(&(struct mscope_params){
			.nf_name = c.name, .nf_id = c.nf_id, .lcore = (uint16_t)rte_lcore_id(),
			.ring_bytes = c.ring_bytes, .dir = c.dir, .flags = c.flags });
		if (ms == NULL) {
			fprintf(stderr, PROG ": %s: mscope_open: %s\n", c.name, strerror(errno));
			return 2;
		}
		mscope_set_tsc_hz(ms, rte_get_tsc_hz());
		printf("{\"event\": \"ready\", \"nf\": \"%s\", \"ring\": \"%s\"}\n", c.name,
		       mscope_ring_path(ms));
	} else {
		printf("{\"event\": \"ready\", \"nf\": \"%s\", \"ring\": null}\n", c.name);
	}
	fflush(stdout);

	memset(&k, 0, sizeof(k));
	service_tsc = c.service_ns * (double)rte_get_tsc_hz() / 1e9;
	if (nf_wait_start(ctl) != 0) {
		nf_faults_arm(&c.faults);
		while (!nf_stop && !ctl->stop) {
			struct rte_mbuf *pkts[NF_MAX_BURST], *grp[NF_MAX_BURST];
			int verdict[NF_MAX_BURST];
			unsigned n, i, g;
			uint32_t left;
			uint64_t t_rx, extra = 0;

			if (c.faults.n_intr && nf_faults_interrupt(&c.faults, rte_rdtsc()))
				continue;
			n = nf_link_rx(&in, pkts, c.batch, &left);
			if (n == 0) {
				k.idle_polls++;
				if (ms != NULL)     /* an idle-poll record when due */
					mscope_rx(ms, nf_link_record_port(&in, 0), 0, pkts, 0, 0);
				nf_sleep_us(c.idle_us);
				continue;
			}
			t_rx = rte_rdtsc();
			if (ms != NULL)
				mscope_rx(ms, nf_link_record_port(&in, 0), 0, pkts, (uint16_t)n, left);
			k.rx += n;
			k.batches++;
			if (c.faults.n_bug) {
				/* The source address as received: before a NAT rewrites it. */
				for (i = 0; i < n; i++) {
					struct rte_ipv4_hdr *ip = nf_ipv4(pkts[i]);
					if (ip != NULL)
						extra += nf_faults_bug_cost(&c.faults,
							rte_be_to_cpu_32(ip->src_addr), t_rx);
				}
			}
			for (i = 0; i < n; i++)
				verdict[i] = NF_PASS;
			type->process(&ctx, pkts, (uint16_t)n, verdict);
			for (i = 0; i < n; i++) {
				if (verdict[i] == NF_PASS) {
					struct nf_tuple t;
					verdict[i] = 0;
					if (c.n_out > 1 && nf_tuple_of(pkts[i], &t) == 0)
						verdict[i] = (int)(nf_tuple_hash(&t) % c.n_out);
				} else if (verdict[i] >= (int)c.n_out) {
					verdict[i] = NF_DROP;
				}
			}
			/* Emulated service: the batch costs n x --service-ns (and
			 * the bug's extra), whatever the real work took of it. */
			if (service_tsc > 0 || extra > 0)
				nf_spin_until_tsc(t_rx + (uint64_t)(service_tsc * n) + extra);
			for (o = 0; o < c.n_out; o++) {
				unsigned sent;
				for (g = 0, i = 0; i < n; i++)
					if (verdict[i] == (int)o)
						grp[g++] = pkts[i];
				if (g == 0)
					continue;
				if (ms != NULL)
					mscope_tx(ms, nf_link_record_port(&out[o], o), 0, grp,
						  (uint16_t)g, MSCOPE_OCC_UNKNOWN);
				sent = nf_link_tx(&out[o], grp, g);
				k.tx[o] += sent;
				if (sent < g) {
					k.drop_full[o] += g - sent;
					rte_pktmbuf_free_bulk(grp + sent, g - sent);
				}
			}
			for (i = 0; i < n; i++)
				if (verdict[i] == NF_DROP) {
					rte_pktmbuf_free(pkts[i]);
					k.drop_nf++;
				}
		}
	}
	report(type, &ctx, &c, &k, ms);
	if (type->fini != NULL)
		type->fini(&ctx);
	if (ms != NULL)
		mscope_close(ms);
	nf_ports_close();
	rte_eal_cleanup();
	return 0;
}
