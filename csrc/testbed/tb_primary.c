/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * mscope-tb-primary: the testbed's DPDK primary.  Creates the mbuf pool,
 * the rte_rings of the chain and the control memzone in hugepages, then
 * stays up, taking commands on stdin (one per line) and answering each
 * with one JSON line on stdout:
 *
 *   start DELAY_NS   t0 = now + DELAY_NS (CLOCK_MONOTONIC); the
 *                    secondaries waiting for it begin  -> {"event": "started", "t0_ns": ...}
 *   status           ring occupancies and mbufs in use -> {"event": "status", ...}
 *   stop             raise the control block's stop flag
 *   quit (or EOF, SIGTERM)   exit
 *
 *   mscope-tb-primary --proc-type=primary --file-prefix=tb1 --lcores=0@0 --no-pci -- \
 *       --pool 16383 --ring q_fw:1024 --ring q_nat:1024:mp --ring q_sink:8192:mp
 *
 * Rings are single-consumer; ":mp" makes one multi-producer (a node with
 * several in-links).  A ring of SIZE holds exactly SIZE packets
 * (RING_F_EXACT_SZ): the scenario's "queue".
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_memzone.h>
#include <rte_ring.h>

#include "mscope_dpdk.h"
#include "nf_chain.h"

#define PROG "mscope-tb-primary"
#define MAX_RINGS 64

static void
usage(FILE *f)
{
	fprintf(f, "usage: " PROG " [EAL args] -- --pool N [--pool-name NAME] [--ctl NAME]\n"
		"         --ring NAME:SIZE[:mp] ...\n"
		"Then commands on stdin: start DELAY_NS | status | stop | quit\n");
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"pool", required_argument, NULL, 'p'},
		{"pool-name", required_argument, NULL, 'P'},
		{"ring", required_argument, NULL, 'r'},
		{"ctl", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *pool_name = NF_POOL_DEFAULT, *ctl_name = NF_CTL_DEFAULT;
	struct rte_ring *rings[MAX_RINGS];
	unsigned n_rings = 0, n_mbufs = 0, i;
	const struct rte_memzone *mz;
	struct rte_mempool *pool;
	struct nf_ctl *ctl;
	char line[256];
	int rc, opt, stamp;

	rc = rte_eal_init(argc, argv);
	if (rc < 0) {
		fprintf(stderr, PROG ": EAL init failed: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	argc -= rc;
	argv += rc;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char name[RTE_RING_NAMESIZE], mode[8] = "";
		unsigned size;

		switch (opt) {
		case 'p': n_mbufs = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'P': pool_name = optarg; break;
		case 'c': ctl_name = optarg; break;
		case 'r':
			if (n_rings == MAX_RINGS ||
			    sscanf(optarg, "%28[^:]:%u:%7s", name, &size, mode) < 2 ||
			    (mode[0] != '\0' && strcmp(mode, "mp") != 0) || size == 0) {
				fprintf(stderr, PROG ": bad --ring '%s' (NAME:SIZE[:mp], at most %d)\n",
					optarg, MAX_RINGS);
				return 2;
			}
			rings[n_rings] = rte_ring_create(name, size, (int)rte_socket_id(),
							 RING_F_EXACT_SZ | RING_F_SC_DEQ |
							 (mode[0] ? 0 : RING_F_SP_ENQ));
			if (rings[n_rings] == NULL) {
				fprintf(stderr, PROG ": rte_ring_create(%s, %u): %s\n", name, size,
					rte_strerror(rte_errno));
				return 2;
			}
			n_rings++;
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (n_mbufs == 0) {
		usage(stderr);
		return 2;
	}
	/* Cache 256 per lcore id: every process of the chain runs on an
	 * lcore id of its own (nf_chain.h). */
	pool = rte_pktmbuf_pool_create(pool_name, n_mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
				       (int)rte_socket_id());
	mz = rte_memzone_reserve(ctl_name, sizeof(struct nf_ctl), (int)rte_socket_id(), 0);
	if (pool == NULL || mz == NULL) {
		fprintf(stderr, PROG ": %s: %s\n", pool == NULL ? "mbuf pool" : "control memzone",
			rte_strerror(rte_errno));
		return 2;
	}
	ctl = mz->addr;
	memset(ctl, 0, sizeof(*ctl));
	ctl->magic = NF_CTL_MAGIC;
	/* Only a primary may register libmscope's id stamp (a dynamic mbuf
	 * field); without it the NFs, secondaries, would compute ids from
	 * headers at every hop and lose them through vpn's encryption. */
	stamp = mscope_dpdk_register();
	if (stamp < 0)
		fprintf(stderr, PROG ": warning: libmscope's id stamp is not registered: ids will "
			"be recomputed from headers at every hop\n");
	nf_install_signals();

	printf("{\"event\": \"ready\", \"pool\": \"%s\", \"mbufs\": %u, \"rings\": %u, "
	       "\"id_stamp_offset\": %d}\n", pool_name, n_mbufs, n_rings, stamp);
	fflush(stdout);
	while (!nf_stop && fgets(line, sizeof(line), stdin) != NULL) {
		uint64_t delay;

		if (sscanf(line, "start %" SCNu64, &delay) == 1) {
			uint64_t t0 = nf_mono_ns() + delay;
			/* Secondaries read t0 with plain loads: one aligned
			 * 64-bit store, then a full barrier. */
			ctl->t0_ns = t0;
			rte_smp_mb();
			printf("{\"event\": \"started\", \"t0_ns\": %" PRIu64 "}\n", t0);
		} else if (strncmp(line, "status", 6) == 0) {
			printf("{\"event\": \"status\", \"mono_ns\": %" PRIu64 ", \"pool_in_use\": %u,"
			       " \"rings\": {", nf_mono_ns(), rte_mempool_in_use_count(pool));
			for (i = 0; i < n_rings; i++)
				printf("%s\"%s\": %u", i ? ", " : "", rings[i]->name,
				       rte_ring_count(rings[i]));
			printf("}}\n");
		} else if (strncmp(line, "stop", 4) == 0) {
			ctl->stop = 1;
			rte_smp_mb();
			printf("{\"event\": \"stopping\"}\n");
		} else if (strncmp(line, "quit", 4) == 0) {
			break;
		} else {
			printf("{\"event\": \"error\", \"message\": \"unknown command\"}\n");
		}
		fflush(stdout);
	}
	rte_eal_cleanup();
	return 0;
}
