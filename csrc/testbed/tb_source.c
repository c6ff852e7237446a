/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * mscope-tb-source: the testbed's traffic source, a DPDK secondary.  Sends
 * the packets of a schedule file (tb_schedule.h) at their times from the
 * common start t0, each on its out-link's rte_ring, recording every batch
 * at tx with libmscope (stream "source": the analyzer's source).
 *
 *   mscope-tb-source --proc-type=secondary --file-prefix=tb1 --lcores=1@0 --no-pci -- \
 *       --schedule traffic.bin --out q_fw
 *
 * Port mode (docs/ovs.md): --out port:0 sends on ethdev port 0 (a
 * virtio-user vdev on an OVS vhost-user socket), frames built in a pool of
 * its own; --ctl FILE is then the mapped control file.
 *
 * Pacing: every packet due by now goes out, up to --batch per record;
 * when none is due the source sleeps --idle-us (default 50; a sleep lasts
 * and costs ~25 us of CPU at least on this VM, docs/testbed.md), so it
 * sends in bursts of about rate x idle.  --idle-us 0 spins instead.  A
 * packet's recorded time is when it was really sent; how late the source
 * was against its schedule is in its report.
 * A ring that refuses packets (full) drops them: recorded at tx, never
 * received, as at a real NIC queue.  The source leaves when the schedule
 * is done.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_byteorder.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "mscope_dpdk.h"
#include "nf_chain.h"
#include "tb_schedule.h"

#define PROG "mscope-tb-source"

static struct tb_pkt *
load_schedule(const char *path, uint64_t *count)
{
	struct tb_schedule_hdr h;
	struct tb_pkt *pkts;
	FILE *f = fopen(path, "rb");

	if (f == NULL) {
		fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
		return NULL;
	}
	if (fread(&h, sizeof(h), 1, f) != 1 || memcmp(h.magic, TB_SCHEDULE_MAGIC, 8) != 0 ||
	    h.rec_size != sizeof(struct tb_pkt)) {
		fprintf(stderr, PROG ": %s: not a schedule file (want magic %s, %zu-byte records)\n",
			path, TB_SCHEDULE_MAGIC, sizeof(struct tb_pkt));
		fclose(f);
		return NULL;
	}
	pkts = malloc(sizeof(*pkts) * (h.count ? h.count : 1));
	if (pkts == NULL || fread(pkts, sizeof(*pkts), h.count, f) != h.count) {
		fprintf(stderr, PROG ": %s: truncated (%" PRIu64 " packets announced)\n", path, h.count);
		free(pkts);
		fclose(f);
		return NULL;
	}
	fclose(f);
	*count = h.count;
	return pkts;
}

/* Build the frame of `p` in `m` (layout: tb_schedule.h). */
static void
build_frame(struct rte_mbuf *m, const struct tb_pkt *p)
{
	uint8_t *base = rte_pktmbuf_mtod(m, uint8_t *);
	struct rte_ether_hdr *eth = (struct rte_ether_hdr *)base;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eth + 1);
	uint16_t len = p->length < 20 ? 20 : p->length;
	uint16_t l4 = 0, pay;
	uint8_t *l4p = (uint8_t *)(ip + 1);

	if (len > RTE_MBUF_DEFAULT_DATAROOM - 14 - 64)
		len = RTE_MBUF_DEFAULT_DATAROOM - 14 - 64;   /* room left for vpn's trailer */
	memset(base, 0, 14 + len);
	eth->dst_addr.addr_bytes[0] = 0x02;
	eth->dst_addr.addr_bytes[5] = 0x01;
	eth->src_addr.addr_bytes[0] = 0x02;
	eth->src_addr.addr_bytes[5] = 0x02;
	eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	ip->version_ihl = 0x45;
	ip->total_length = rte_cpu_to_be_16(len);
	ip->packet_id = rte_cpu_to_be_16(p->ip_id);
	ip->fragment_offset = rte_cpu_to_be_16(p->frag);
	ip->time_to_live = 64;
	ip->next_proto_id = p->proto;
	ip->src_addr = rte_cpu_to_be_32(p->src_ip);
	ip->dst_addr = rte_cpu_to_be_32(p->dst_ip);
	if ((p->frag & RTE_IPV4_HDR_OFFSET_MASK) == 0) {
		if (p->proto == IPPROTO_TCP && len >= 40) {
			struct rte_tcp_hdr *t = (struct rte_tcp_hdr *)l4p;
			l4 = len >= 52 ? 32 : 20;
			t->src_port = rte_cpu_to_be_16(p->sport);
			t->dst_port = rte_cpu_to_be_16(p->dport);
			t->sent_seq = rte_cpu_to_be_32(p->tcp_seq);
			t->recv_ack = rte_cpu_to_be_32(p->tcp_ack);
			t->data_off = (uint8_t)((l4 / 4) << 4);
			t->tcp_flags = RTE_TCP_ACK_FLAG | (len > 20 + l4 ? RTE_TCP_PSH_FLAG : 0);
			t->rx_win = rte_cpu_to_be_16(65535);
			if (l4 == 32) {
				/* NOP, NOP, timestamps (kind 8, length 10) */
				uint8_t *o = l4p + 20;
				o[0] = 1;
				o[1] = 1;
				o[2] = 8;
				o[3] = 10;
			}
		} else if (p->proto == IPPROTO_UDP && len >= 28) {
			struct rte_udp_hdr *u = (struct rte_udp_hdr *)l4p;
			l4 = 8;
			u->src_port = rte_cpu_to_be_16(p->sport);
			u->dst_port = rte_cpu_to_be_16(p->dport);
			u->dgram_len = rte_cpu_to_be_16((uint16_t)(len - 20));
		} else if (p->proto == IPPROTO_ICMP && len >= 28) {
			l4 = 8;                 /* the id skips ICMP's 8-byte header */
			l4p[0] = 8;             /* echo request; the rest as given */
		}
	}
	pay = (uint16_t)(len - 20 - l4);
	memcpy(l4p + l4, p->payload, pay < 16 ? pay : 16);
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	m->data_len = (uint16_t)(14 + len);
	m->pkt_len = m->data_len;
}

static void
dump_frame(FILE *f, const struct rte_mbuf *m, uint16_t port)
{
	struct tb_dump d;
	uint16_t len = rte_pktmbuf_data_len(m);

	memset(&d, 0, sizeof(d));
	d.pkt_len = (uint16_t)rte_pktmbuf_pkt_len(m);
	d.port = port;
	memcpy(d.bytes, rte_pktmbuf_mtod(m, const uint8_t *), len < 128 ? len : 128);
	fwrite(&d, sizeof(d), 1, f);
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: " PROG " [EAL args, --proc-type=secondary] -- --schedule FILE\n"
		"         --out RING[,RING...] [--name NAME] [--nf-id N] [--dir DIR] [--ring-mb MB]\n"
		"         [--batch N] [--pool NAME] [--ctl NAME|FILE] [--idle-us US] [--dump FILE]\n"
		"  --out port:N[,...]: ethdev ports of this process (port mode, docs/ovs.md)\n");
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"schedule", required_argument, NULL, 's'},
		{"out", required_argument, NULL, 'o'},
		{"name", required_argument, NULL, 'n'},
		{"nf-id", required_argument, NULL, 'i'},
		{"dir", required_argument, NULL, 'd'},
		{"ring-mb", required_argument, NULL, 'R'},
		{"batch", required_argument, NULL, 'b'},
		{"pool", required_argument, NULL, 'p'},
		{"ctl", required_argument, NULL, 'c'},
		{"idle-us", required_argument, NULL, 'S'},
		{"dump", required_argument, NULL, 'D'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *schedule = NULL, *name = "source", *dir = NULL, *pool_name = NF_POOL_DEFAULT;
	const char *ctl_name = NF_CTL_DEFAULT, *dump_path = NULL;
	char *out_names[NF_MAX_OUT];
	struct nf_link out[NF_MAX_OUT];
	uint64_t sent[NF_MAX_OUT] = {0}, drop_full[NF_MAX_OUT] = {0};
	uint64_t count = 0, i = 0, no_mbuf = 0, late_max = 0, late_sum = 0, batches = 0;
	unsigned n_out = 0, batch = 32, o;
	double idle_us = 50;
	size_t ring_bytes = 0;
	uint16_t nf_id = 0;
	const struct nf_ctl *ctl;
	struct rte_mempool *pool;
	struct tb_pkt *sched;
	struct mscope *ms;
	FILE *dump = NULL;
	uint64_t hz, t0_tsc;
	double tsc_per_ns;
	int rc, opt, k;

	rc = rte_eal_init(argc, argv);
	if (rc < 0) {
		fprintf(stderr, PROG ": EAL init failed: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	argc -= rc;
	argv += rc;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 's': schedule = optarg; break;
		case 'o':
			k = nf_split_list(optarg, out_names + n_out, NF_MAX_OUT - (int)n_out,
					  "out-links", PROG);
			if (k < 0)
				return 2;
			n_out += (unsigned)k;
			break;
		case 'n': name = optarg; break;
		case 'i': nf_id = (uint16_t)strtoul(optarg, NULL, 0); break;
		case 'd': dir = optarg; break;
		case 'R': ring_bytes = (size_t)strtoul(optarg, NULL, 0) << 20; break;
		case 'b': batch = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'p': pool_name = optarg; break;
		case 'c': ctl_name = optarg; break;
		case 'S': idle_us = atof(optarg); break;
		case 'D': dump_path = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (schedule == NULL || n_out == 0 || batch == 0 || batch > NF_MAX_BURST) {
		usage(stderr);
		return 2;
	}
	sched = load_schedule(schedule, &count);
	if (sched == NULL)
		return 2;
	for (i = 0; i < count; i++)
		if (sched[i].out >= n_out) {
			fprintf(stderr, PROG ": %s: packet %" PRIu64 " goes to out-link %u of %u\n",
				schedule, i, sched[i].out, n_out);
			return 2;
		}
	ctl = nf_ctl_attach(ctl_name, PROG);
	if (ctl == NULL)
		return 2;
	for (o = 0; o < n_out; o++)
		if (nf_link_open(&out[o], out_names[o], PROG) != 0)
			return 2;
	/* Port mode: frames from the pool the ports were set up with. */
	pool = nf_port_pool() != NULL ? nf_port_pool() : rte_mempool_lookup(pool_name);
	if (pool == NULL) {
		fprintf(stderr, PROG ": mbuf pool '%s' not found\n", pool_name);
		return 2;
	}
	if (dump_path != NULL && (dump = fopen(dump_path, "wb")) == NULL) {
		fprintf(stderr, PROG ": %s: %s\n", dump_path, strerror(errno));
		return 2;
	}
	ms = mscope_open(&(struct mscope_params){
		.nf_name = name, .nf_id = nf_id, .lcore = (uint16_t)rte_lcore_id(),
		.ring_bytes = ring_bytes, .dir = dir });
	if (ms == NULL) {
		fprintf(stderr, PROG ": mscope_open(%s): %s\n", name, strerror(errno));
		return 2;
	}
	mscope_set_tsc_hz(ms, rte_get_tsc_hz());
	nf_install_signals();
	printf("{\"event\": \"ready\", \"nf\": \"%s\", \"ring\": \"%s\", \"packets\": %" PRIu64 "}\n",
	       name, mscope_ring_path(ms), count);
	fflush(stdout);

	hz = rte_get_tsc_hz();
	tsc_per_ns = (double)hz / 1e9;
	i = 0;
	if (nf_wait_start(ctl) != 0) {
		t0_tsc = nf_tsc_of(0);
		while (i < count && !nf_stop && !ctl->stop) {
			struct rte_mbuf *m[NF_MAX_BURST], *grp[NF_MAX_BURST];
			const struct tb_pkt *p[NF_MAX_BURST];
			uint64_t now = rte_rdtsc();
			uint64_t due = t0_tsc + (uint64_t)((double)sched[i].time_ns * tsc_per_ns);
			unsigned n = 0, g, j;

			if (due > now) {
				if (idle_us > 0)
					nf_sleep_us(idle_us);
				else
					rte_pause();
				continue;
			}
			while (i < count && n < batch &&
			       t0_tsc + (uint64_t)((double)sched[i].time_ns * tsc_per_ns) <= now)
				p[n++] = &sched[i++];
			late_sum += now - due;
			if (now - due > late_max)
				late_max = now - due;
			batches++;
			if (rte_pktmbuf_alloc_bulk(pool, m, n) != 0) {
				no_mbuf += n;         /* never sent, never recorded */
				continue;
			}
			for (j = 0; j < n; j++)
				build_frame(m[j], p[j]);
			for (o = 0; o < n_out; o++) {
				unsigned ok;
				for (g = 0, j = 0; j < n; j++)
					if (p[j]->out == o)
						grp[g++] = m[j];
				if (g == 0)
					continue;
				if (dump != NULL)
					for (j = 0; j < g; j++)
						dump_frame(dump, grp[j], (uint16_t)o);
				mscope_tx(ms, nf_link_record_port(&out[o], o), 0, grp, (uint16_t)g,
					  MSCOPE_OCC_UNKNOWN);
				ok = nf_link_tx(&out[o], grp, g);
				sent[o] += ok;
				if (ok < g) {
					drop_full[o] += g - ok;
					rte_pktmbuf_free_bulk(grp + ok, g - ok);
				}
			}
		}
	}
	{
		struct mscope_stats st;
		mscope_get_stats(ms, &st);
		printf("{\"event\": \"done\", \"nf\": \"%s\", \"scheduled\": %" PRIu64
		       ", \"attempted\": %" PRIu64 ", \"no_mbuf\": %" PRIu64 ", \"sent\": [",
		       name, count, i, no_mbuf);
		for (o = 0; o < n_out; o++)
			printf("%s%" PRIu64, o ? ", " : "", sent[o]);
		printf("], \"drop_full\": [");
		for (o = 0; o < n_out; o++)
			printf("%s%" PRIu64, o ? ", " : "", drop_full[o]);
		printf("], \"batches\": %" PRIu64 ", \"late_max_ns\": %.0f, \"late_mean_ns\": %.0f"
		       ", \"records\": %" PRIu64 ", \"drop_records\": %" PRIu64 "}\n",
		       batches, (double)late_max / tsc_per_ns,
		       batches ? (double)late_sum / (double)batches / tsc_per_ns : 0.0,
		       st.records, st.drop_records);
		fflush(stdout);
	}
	if (dump != NULL)
		fclose(dump);
	free(sched);
	mscope_close(ms);
	nf_ports_close();
	rte_eal_cleanup();
	return 0;
}
