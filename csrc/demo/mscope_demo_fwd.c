/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * mscope-demo-fwd: a real DPDK process recorded through libmscope.
 *
 *   source --tx--> port 0 (net_ring, loops back) --rx--> nat --tx--> port 1 (net_null)
 *
 * --stall-us N --stall-every-ms M makes the NAT stop polling for N us every
 * M ms (an injected fault): its input queue builds, and overflows once it
 * holds 1024 packets.
 * Two recorder handles in one single-threaded process: "demo-src" (nf 1)
 * records what it sends, "demo-nat" (nf 2) records what it receives and,
 * after rewriting source address and port, what it forwards.  The input
 * queue occupancy is read from net_ring's rte_ring.  With --dump, every
 * generated frame's first 128 bytes go to a file so a test can recompute
 * the ids independently (src/mscope/packet_id.py).
 *
 *   mscope-demo-fwd --no-huge -m 256 --in-memory --no-pci \
 *       --vdev=net_ring0 --vdev=net_null0 -l 0 -- --packets 100000 --rate 200000
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "mscope_dpdk.h"

#define BURST     32
#define GEN_MAX   1024      /* packets generated per pass, at most */
#define NB_MBUF   8191
#define DUMP_LEN  128
#define FLOWS     256
#define MAX_STALLS 256      /* stall start times reported, at most */

static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

struct flow {
	uint32_t src, dst;
	uint16_t sport, dport;
	uint16_t ip_id;
	uint32_t tcp_seq;
	uint8_t proto;
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t
rng(void)
{
	/* xorshift64*: deterministic per --seed, cheap */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

static void
build_frame(struct rte_mbuf *m, struct flow *f)
{
	static const uint16_t sizes[] = {64, 64, 128, 256, 512, 1024};
	uint16_t frame = sizes[rng() % (sizeof(sizes) / sizeof(sizes[0]))];
	uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(p + 14);
	uint16_t l4len = f->proto == IPPROTO_TCP ? 20 : 8;
	uint8_t *pay = (uint8_t *)ip + 20 + l4len;
	uint16_t paylen = frame - 14 - 20 - l4len;
	uint64_t r;
	uint16_t i;

	memset(p, 0, 14);
	p[0] = 0x02; p[5] = 0x01; p[6] = 0x02; p[11] = 0x02;
	p[12] = 0x08; p[13] = 0x00;
	memset(ip, 0, sizeof(*ip));
	ip->version_ihl = 0x45;
	ip->total_length = rte_cpu_to_be_16(frame - 14);
	ip->packet_id = rte_cpu_to_be_16(f->ip_id++);
	ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
	ip->time_to_live = 64;
	ip->next_proto_id = f->proto;
	ip->src_addr = rte_cpu_to_be_32(f->src);
	ip->dst_addr = rte_cpu_to_be_32(f->dst);
	if (f->proto == IPPROTO_TCP) {
		struct rte_tcp_hdr *t = (struct rte_tcp_hdr *)(ip + 1);
		memset(t, 0, sizeof(*t));
		t->src_port = rte_cpu_to_be_16(f->sport);
		t->dst_port = rte_cpu_to_be_16(f->dport);
		t->sent_seq = rte_cpu_to_be_32(f->tcp_seq);
		t->data_off = 5 << 4;
		t->tcp_flags = RTE_TCP_ACK_FLAG;
		f->tcp_seq += paylen;
	} else {
		struct rte_udp_hdr *u = (struct rte_udp_hdr *)(ip + 1);
		u->src_port = rte_cpu_to_be_16(f->sport);
		u->dst_port = rte_cpu_to_be_16(f->dport);
		u->dgram_len = rte_cpu_to_be_16(8 + paylen);
		u->dgram_cksum = 0;
	}
	for (i = 0; i + 8 <= paylen && i < 32; i += 8) {
		r = rng();
		memcpy(pay + i, &r, 8);
	}
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	m->data_len = frame;
	m->pkt_len = frame;
}

/* The "NAT": rewrite source address and port, as a real one would. */
static void
nat_rewrite(struct rte_mbuf *m)
{
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, 14);
	uint16_t *sport = (uint16_t *)(ip + 1);

	ip->src_addr = rte_cpu_to_be_32(0xc6336401); /* 198.51.100.1 */
	*sport = rte_cpu_to_be_16(40000 + (rte_be_to_cpu_16(*sport) & 0x3ff));
	ip->hdr_checksum = 0;
	ip->hdr_checksum = rte_ipv4_cksum(ip);
}

static int
port_init(uint16_t port, struct rte_mempool *pool)
{
	struct rte_eth_conf conf;
	int rc;

	memset(&conf, 0, sizeof(conf));
	rc = rte_eth_dev_configure(port, 1, 1, &conf);
	if (rc == 0)
		rc = rte_eth_rx_queue_setup(port, 0, 1024, rte_eth_dev_socket_id(port), NULL, pool);
	if (rc == 0)
		rc = rte_eth_tx_queue_setup(port, 0, 1024, rte_eth_dev_socket_id(port), NULL);
	if (rc == 0)
		rc = rte_eth_dev_start(port);
	return rc;
}

static void
usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [EAL args] -- [--packets N] [--seconds S] [--rate PPS]\n"
		"          [--seed N] [--dump FILE] [--dir DIR] [--no-nat]\n"
		"          [--stall-us N --stall-every-ms M]\n"
		"Needs two ports: port 0 loops back (net_ring0), port 1 sinks (net_null0).\n",
		prog);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"packets", required_argument, NULL, 'n'},
		{"seconds", required_argument, NULL, 's'},
		{"rate", required_argument, NULL, 'r'},
		{"seed", required_argument, NULL, 'S'},
		{"dump", required_argument, NULL, 'd'},
		{"dir", required_argument, NULL, 'D'},
		{"no-nat", no_argument, NULL, 'N'},
		{"stall-us", required_argument, NULL, 'u'},
		{"stall-every-ms", required_argument, NULL, 'e'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	uint64_t total = 0, generated = 0, unsent = 0, received = 0, forwarded = 0;
	double seconds = 0, rate = 0, stall_us = 0, stall_every_ms = 0;
	uint64_t stall_until = 0, next_stall = UINT64_MAX, stalls = 0;
	/* when each injected stall began, CLOCK_MONOTONIC ns (the clock the
	 * collector converts the records' TSC to): the first MAX_STALLS */
	uint64_t stall_ns[MAX_STALLS];
	const char *dump_path = NULL, *dir = NULL;
	int do_nat = 1, rc, opt;
	struct rte_mempool *pool;
	struct rte_ring *loop_ring;
	struct flow flows[FLOWS];
	struct mscope *src, *nf;
	FILE *dump = NULL;
	uint64_t hz, start, deadline;
	unsigned i;

	rc = rte_eal_init(argc, argv);
	if (rc < 0) {
		fprintf(stderr, "mscope-demo-fwd: EAL init failed: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	argc -= rc;
	argv += rc;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'n': total = strtoull(optarg, NULL, 0); break;
		case 's': seconds = atof(optarg); break;
		case 'r': rate = atof(optarg); break;
		case 'S': rng_state = strtoull(optarg, NULL, 0) | 1; break;
		case 'd': dump_path = optarg; break;
		case 'D': dir = optarg; break;
		case 'N': do_nat = 0; break;
		case 'u': stall_us = atof(optarg); break;
		case 'e': stall_every_ms = atof(optarg); break;
		default: usage(argv[0]); return opt == 'h' ? 0 : 2;
		}
	}
	if (total == 0 && seconds <= 0) {
		fprintf(stderr, "mscope-demo-fwd: give --packets or --seconds\n");
		return 2;
	}
	if (rte_eth_dev_count_avail() < 2) {
		fprintf(stderr, "mscope-demo-fwd: need 2 ports (--vdev=net_ring0 --vdev=net_null0)\n");
		return 2;
	}
	pool = rte_pktmbuf_pool_create("demo_pool", NB_MBUF, 256, 0,
				       RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
	if (pool == NULL || port_init(0, pool) != 0 || port_init(1, pool) != 0) {
		fprintf(stderr, "mscope-demo-fwd: port setup failed: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	/* net_ring0's rx and tx share one rte_ring: its count is the NF's
	 * input-queue occupancy. */
	loop_ring = rte_ring_lookup("ETH_RXTX0_net_ring0");

	src = mscope_open(&(struct mscope_params){ .nf_name = "demo-src", .nf_id = 1,
						   .lcore = (uint16_t)rte_lcore_id(), .dir = dir });
	nf = mscope_open(&(struct mscope_params){ .nf_name = "demo-nat", .nf_id = 2,
						  .lcore = (uint16_t)rte_lcore_id(), .dir = dir });
	if (src == NULL || nf == NULL) {
		fprintf(stderr, "mscope-demo-fwd: mscope_open: %s\n", strerror(errno));
		return 2;
	}
	mscope_set_tsc_hz(src, rte_get_tsc_hz());
	mscope_set_tsc_hz(nf, rte_get_tsc_hz());
	if (dump_path != NULL && (dump = fopen(dump_path, "wb")) == NULL) {
		fprintf(stderr, "mscope-demo-fwd: %s: %s\n", dump_path, strerror(errno));
		return 2;
	}
	for (i = 0; i < FLOWS; i++) {
		flows[i] = (struct flow){
			.src = 0x0a000000 | (uint32_t)(rng() & 0xffffff),
			.dst = 0xc0a80000 | (uint32_t)(rng() & 0xffff),
			.sport = (uint16_t)(1024 + rng() % 60000),
			.dport = i % 3 ? 443 : 53,
			.ip_id = (uint16_t)rng(),
			.tcp_seq = (uint32_t)rng(),
			.proto = i % 3 ? IPPROTO_TCP : IPPROTO_UDP,
		};
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	printf("{\"event\": \"ready\", \"src_ring\": \"%s\", \"nf_ring\": \"%s\"}\n",
	       mscope_ring_path(src), mscope_ring_path(nf));
	fflush(stdout);

	hz = rte_get_tsc_hz();
	start = rte_rdtsc();
	deadline = seconds > 0 ? start + (uint64_t)(seconds * hz) : UINT64_MAX;
	if (stall_us > 0 && stall_every_ms > 0)
		next_stall = start + (uint64_t)(stall_every_ms * 1e-3 * hz);
	while (!stop) {
		struct rte_mbuf *pkts[BURST];
		uint64_t now = rte_rdtsc();
		int gen_done = (total != 0 && generated >= total) || now >= deadline;
		uint32_t todo = 0, got;
		uint16_t n = 0, sent, nb, k;

		if (!gen_done) {
			/* Everything due since the last pass, not one burst: a
			 * sleep here may last ~100 us on a loaded VM, and the
			 * offered rate must not depend on it. */
			todo = GEN_MAX;
			if (total != 0 && total - generated < todo)
				todo = (uint32_t)(total - generated);
			if (rate > 0) {
				/* Pace: no more than rate * elapsed packets so far. */
				double due = rate * (double)(now - start) / (double)hz;
				todo = due > (double)generated ?
					(uint32_t)RTE_MIN((double)todo, due - (double)generated + 1) : 0;
			}
		}
		if (loop_ring != NULL && now >= stall_until) {
			/* While the NAT polls, no more than the ring to it can
			 * take: what does not fit stays due, for the pass after
			 * the NAT has drained it (a catch-up after a long sleep
			 * of this one thread filled the ring, and the source
			 * dropped the rest).  During a stall the ring overflows,
			 * as it should. */
			uint32_t room = rte_ring_free_count(loop_ring);
			if (todo > room)
				todo = room;
		}
		for (; todo > 0; todo -= n) {
			n = (uint16_t)RTE_MIN(todo, (uint32_t)BURST);
			if (rte_pktmbuf_alloc_bulk(pool, pkts, n) != 0)
				break;
			for (k = 0; k < n; k++) {
				build_frame(pkts[k], &flows[rng() % FLOWS]);
				if (dump != NULL) {
					uint16_t len = RTE_MIN(pkts[k]->data_len, DUMP_LEN);
					uint8_t buf[2 + 2 + DUMP_LEN] = {0};
					memcpy(buf, &pkts[k]->pkt_len, 2);
					memcpy(buf + 2, &len, 2);
					memcpy(buf + 4, rte_pktmbuf_mtod(pkts[k], uint8_t *), len);
					fwrite(buf, 1, sizeof(buf), dump);
				}
			}
			mscope_tx(src, 0, 0, pkts, n, MSCOPE_OCC_UNKNOWN);
			sent = rte_eth_tx_burst(0, 0, pkts, n);
			generated += n;
			if (sent < n) {
				unsent += n - sent;
				rte_pktmbuf_free_bulk(pkts + sent, n - sent);
			}
		}
		if (now >= next_stall) {
			/* The injected fault: the NAT stops polling. */
			struct timespec ts;

			stall_until = now + (uint64_t)(stall_us * 1e-6 * hz);
			next_stall += (uint64_t)(stall_every_ms * 1e-3 * hz);
			/* when it began: at `now`, before this pass generated */
			clock_gettime(CLOCK_MONOTONIC, &ts);
			if (stalls < MAX_STALLS)
				stall_ns[stalls] = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec
					- (uint64_t)((double)(rte_rdtsc() - now) * 1e9 / (double)hz);
			stalls++;
		}
		if (now < stall_until) {
			if (n == 0)
				rte_delay_us_sleep(20);
			continue;
		}
		/* The NAT takes everything waiting, as the source made
		 * everything due: one burst a pass would fall behind a source
		 * that catches up after a long sleep. */
		got = 0;
		do {
			uint32_t occ;

			nb = rte_eth_rx_burst(0, 0, pkts, BURST);
			if (nb == 0) {
				/* an idle-poll record when one is due */
				mscope_rx(nf, 0, 0, pkts, 0, 0);
				break;
			}
			occ = loop_ring != NULL ? rte_ring_count(loop_ring) : MSCOPE_OCC_UNKNOWN;
			mscope_rx(nf, 0, 0, pkts, nb, occ);
			received += nb;
			got += nb;
			if (do_nat)
				for (k = 0; k < nb; k++)
					nat_rewrite(pkts[k]);
			mscope_tx(nf, 1, 0, pkts, nb, MSCOPE_OCC_UNKNOWN);
			sent = rte_eth_tx_burst(1, 0, pkts, nb);
			forwarded += sent;
			if (sent < nb)
				rte_pktmbuf_free_bulk(pkts + sent, nb - sent);
		} while (nb == BURST);
		if (got == 0) {
			if (gen_done)
				break;
			if (n == 0)
				/* Idle: sleep rather than spin (2-core machines, shared CI). */
				rte_delay_us_sleep(50);
		}
	}
	{
		struct mscope_stats ss, ns;
		mscope_get_stats(src, &ss);
		mscope_get_stats(nf, &ns);
		printf("{\"event\": \"done\", \"generated\": %" PRIu64 ", \"unsent\": %" PRIu64
		       ", \"received\": %" PRIu64 ", \"forwarded\": %" PRIu64
		       ", \"src_records\": %" PRIu64 ", \"src_drop_records\": %" PRIu64
		       ", \"nf_records\": %" PRIu64 ", \"nf_drop_records\": %" PRIu64
		       ", \"stalls\": %" PRIu64 ", \"tsc_hz\": %" PRIu64 ", \"stall_ns\": [",
		       generated, unsent, received, forwarded, ss.records, ss.drop_records,
		       ns.records, ns.drop_records, stalls, hz);
		for (uint64_t i = 0; i < stalls && i < MAX_STALLS; i++)
			printf("%s%" PRIu64, i ? ", " : "", stall_ns[i]);
		printf("]}\n");
	}
	if (dump != NULL)
		fclose(dump);
	mscope_close(src);
	mscope_close(nf);
	rte_eth_dev_stop(0);
	rte_eth_dev_stop(1);
	rte_eal_cleanup();
	return 0;
}
