/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * mscope-tb-sink: the end of the testbed's chain, a DPDK secondary.  Takes
 * packets from one or more rte_rings, records them, counts and frees them.
 *
 *   mscope-tb-sink --proc-type=secondary --file-prefix=tb1 --lcores=2@0 --no-pci -- \
 *       --in q_sink --name egress
 *
 * Records: rx per ring (port = the ring's index in --in, occupancy = its
 * count after the dequeue), then, unless --no-tx, a tx record of the same
 * batch on port 0: the packet leaving the chain.  That tx is what makes
 * the sink's rx an end-to-end arrival to the analyzer, which ends a
 * packet's path at a tx nobody receives (an NF whose packets are only
 * received looks like it drops them all).  The recorder name must not be
 * "sink": the analyzer reserves it for the chain's exit.
 *
 * Port mode (docs/ovs.md): --in port:0 takes packets from ethdev port 0
 * (a virtio-user vdev on an OVS vhost-user socket) and frees them; the
 * port recorded is the ethdev port id; ids are computed from headers (no
 * upstream stamp crosses vhost); --ctl FILE is the mapped control file.
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
#include <rte_mbuf.h>

#include "mscope_dpdk.h"
#include "nf_chain.h"
#include "tb_schedule.h"

#define PROG "mscope-tb-sink"

static void
usage(FILE *f)
{
	fprintf(f, "usage: " PROG " [EAL args, --proc-type=secondary] -- --in RING[,RING...]\n"
		"         [--name NAME] [--nf-id N] [--dir DIR] [--ring-mb MB] [--batch N]\n"
		"         [--no-tx] [--dump FILE] [--ctl NAME|FILE] [--idle-us US] [--status-ms MS]\n"
		"  --in port:N[,...]: ethdev ports of this process (port mode, docs/ovs.md)\n");
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"in", required_argument, NULL, 'i'},
		{"name", required_argument, NULL, 'n'},
		{"nf-id", required_argument, NULL, 'I'},
		{"dir", required_argument, NULL, 'd'},
		{"ring-mb", required_argument, NULL, 'R'},
		{"batch", required_argument, NULL, 'b'},
		{"no-tx", no_argument, NULL, 'T'},
		{"dump", required_argument, NULL, 'D'},
		{"ctl", required_argument, NULL, 'c'},
		{"idle-us", required_argument, NULL, 'u'},
		{"status-ms", required_argument, NULL, 's'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *name = "egress", *dir = NULL, *dump_path = NULL, *ctl_name = NF_CTL_DEFAULT;
	char *in_names[NF_MAX_IN];
	struct nf_link in[NF_MAX_IN];
	uint64_t rx[NF_MAX_IN] = {0}, bytes = 0, batches = 0;
	unsigned n_in = 0, batch = 64, r;
	int record_tx = 1, rc, opt, k;
	double idle_us = 50, status_ms = 0;   /* status_ms > 0: a "status" line that often */
	uint64_t next_status = 0, status_tsc = 0, total = 0;
	size_t ring_bytes = 0;
	uint16_t nf_id = 1000;
	const struct nf_ctl *ctl;
	struct mscope *ms;
	FILE *dump = NULL;

	rc = rte_eal_init(argc, argv);
	if (rc < 0) {
		fprintf(stderr, PROG ": EAL init failed: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	argc -= rc;
	argv += rc;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'i':
			k = nf_split_list(optarg, in_names + n_in, NF_MAX_IN - (int)n_in,
					  "in-links", PROG);
			if (k < 0)
				return 2;
			n_in += (unsigned)k;
			break;
		case 'n': name = optarg; break;
		case 'I': nf_id = (uint16_t)strtoul(optarg, NULL, 0); break;
		case 'd': dir = optarg; break;
		case 'R': ring_bytes = (size_t)strtoul(optarg, NULL, 0) << 20; break;
		case 'b': batch = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'T': record_tx = 0; break;
		case 'D': dump_path = optarg; break;
		case 'c': ctl_name = optarg; break;
		case 'u': idle_us = atof(optarg); break;
		case 's': status_ms = atof(optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (n_in == 0 || batch == 0 || batch > NF_MAX_BURST) {
		usage(stderr);
		return 2;
	}
	if (strcmp(name, "sink") == 0) {
		fprintf(stderr, PROG ": the name 'sink' is reserved by the analyzer for the "
			"chain's exit; use another (default egress)\n");
		return 2;
	}
	ctl = nf_ctl_attach(ctl_name, PROG);
	if (ctl == NULL)
		return 2;
	for (r = 0; r < n_in; r++)
		if (nf_link_open(&in[r], in_names[r], PROG) != 0)
			return 2;
	if (dump_path != NULL && (dump = fopen(dump_path, "wb")) == NULL) {
		fprintf(stderr, PROG ": %s: %s\n", dump_path, strerror(errno));
		return 2;
	}
	ms = mscope_open(&(struct mscope_params){
		.nf_name = name, .nf_id = nf_id, .lcore = (uint16_t)rte_lcore_id(),
		.ring_bytes = ring_bytes, .dir = dir,
		.flags = in[0].ring != NULL ? MSCOPE_F_TRUST_UPSTREAM : 0 });
	if (ms == NULL) {
		fprintf(stderr, PROG ": mscope_open(%s): %s\n", name, strerror(errno));
		return 2;
	}
	mscope_set_tsc_hz(ms, rte_get_tsc_hz());
	nf_install_signals();
	printf("{\"event\": \"ready\", \"nf\": \"%s\", \"ring\": \"%s\"}\n", name,
	       mscope_ring_path(ms));
	fflush(stdout);

	status_tsc = nf_ns_to_tsc(status_ms * 1e6);
	next_status = rte_rdtsc() + status_tsc;
	while (!nf_stop && !ctl->stop) {
		unsigned got = 0;

		/* For whoever waits for the chain to drain (mscope ovs run). */
		if (status_tsc > 0 && rte_rdtsc() >= next_status) {
			printf("{\"event\": \"status\", \"rx\": %" PRIu64 "}\n", total);
			fflush(stdout);
			next_status = rte_rdtsc() + status_tsc;
		}

		for (r = 0; r < n_in; r++) {
			struct rte_mbuf *pkts[NF_MAX_BURST];
			unsigned n, j;
			uint32_t left;

			n = nf_link_rx(&in[r], pkts, batch, &left);
			/* on empty polls too: an idle-poll record when one is due */
			mscope_rx(ms, nf_link_record_port(&in[r], r), 0, pkts, (uint16_t)n, left);
			if (n == 0)
				continue;
			if (record_tx)
				mscope_tx(ms, 0, 0, pkts, (uint16_t)n, MSCOPE_OCC_UNKNOWN);
			for (j = 0; j < n; j++) {
				bytes += rte_pktmbuf_pkt_len(pkts[j]);
				if (dump != NULL) {
					struct tb_dump d;
					uint16_t len = rte_pktmbuf_data_len(pkts[j]);
					memset(&d, 0, sizeof(d));
					d.pkt_len = (uint16_t)rte_pktmbuf_pkt_len(pkts[j]);
					d.port = (uint16_t)r;
					memcpy(d.bytes, rte_pktmbuf_mtod(pkts[j], const uint8_t *),
					       len < 128 ? len : 128);
					fwrite(&d, sizeof(d), 1, dump);
				}
			}
			rte_pktmbuf_free_bulk(pkts, n);
			rx[r] += n;
			total += n;
			got += n;
			batches++;
		}
		if (got == 0)
			nf_sleep_us(idle_us);
	}
	{
		struct mscope_stats st;
		mscope_get_stats(ms, &st);
		printf("{\"event\": \"done\", \"nf\": \"%s\", \"rx\": [", name);
		for (r = 0; r < n_in; r++)
			printf("%s%" PRIu64, r ? ", " : "", rx[r]);
		printf("], \"bytes\": %" PRIu64 ", \"batches\": %" PRIu64 ", \"records\": %" PRIu64
		       ", \"drop_records\": %" PRIu64 "}\n", bytes, batches, st.records,
		       st.drop_records);
		fflush(stdout);
	}
	if (dump != NULL)
		fclose(dump);
	mscope_close(ms);
	nf_ports_close();
	rte_eal_cleanup();
	return 0;
}
