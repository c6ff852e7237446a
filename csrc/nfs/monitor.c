/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * monitor: per-flow packet and byte counters, keyed by 5-tuple in an
 * rte_hash.  Passes every packet.  Frames that are not IPv4 are counted
 * apart; flows beyond the table are counted as untracked packets.  At
 * exit, --monitor-dump FILE writes every flow as CSV
 * (src,dst,sport,dport,proto,packets,bytes) and the report gives totals
 * and the largest flow.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_lcore.h>
#include <rte_malloc.h>

#include "nf.h"
#include "nf_pkt.h"

enum { OPT_MON_FLOWS = NF_TYPE_OPT, OPT_MON_DUMP };

static const struct option mon_options[] = {
	{"monitor-flows", required_argument, NULL, OPT_MON_FLOWS},
	{"monitor-dump", required_argument, NULL, OPT_MON_DUMP},
	{NULL, 0, NULL, 0},
};

struct flow_counter {
	uint64_t packets, bytes;
};

static struct {
	uint32_t capacity;
	const char *dump;
	struct rte_hash *table;              /* 5-tuple -> index into counters */
	struct flow_counter *counters;
	uint64_t packets, bytes, untracked, not_ipv4;
} mon = { .capacity = 65536 };

static int
mon_parse(struct nf_ctx *ctx, int val, const char *arg)
{
	if (val == OPT_MON_DUMP) {
		mon.dump = arg;
		return 0;
	}
	mon.capacity = (uint32_t)strtoul(arg, NULL, 0);
	if (mon.capacity >= 8)
		return 0;
	fprintf(stderr, "%s: --monitor-flows must be >= 8\n", ctx->prog);
	return -1;
}

static int
mon_init(struct nf_ctx *ctx)
{
	char name[RTE_HASH_NAMESIZE];
	struct rte_hash_parameters p = {
		.entries = mon.capacity,
		.key_len = sizeof(struct nf_tuple),
		.socket_id = (int)rte_socket_id(),
	};

	snprintf(name, sizeof(name), "mon_%s", ctx->name);
	p.name = name;
	mon.table = rte_hash_create(&p);
	/* Private counters: plain heap, only this process reads them. */
	mon.counters = calloc(mon.capacity, sizeof(*mon.counters));
	if (mon.table == NULL || mon.counters == NULL) {
		fprintf(stderr, "%s: flow table: %s\n", ctx->prog, rte_strerror(rte_errno));
		return -1;
	}
	return 0;
}

static void
mon_process(struct nf_ctx *ctx, struct rte_mbuf **pkts, uint16_t n, int *verdict)
{
	uint16_t i;

	(void)ctx;
	(void)verdict;
	for (i = 0; i < n; i++) {
		struct nf_tuple t;
		int32_t pos;

		if (nf_tuple_of(pkts[i], &t) != 0) {
			mon.not_ipv4++;
			continue;
		}
		pos = rte_hash_lookup(mon.table, &t);
		if (pos < 0)
			pos = rte_hash_add_key(mon.table, &t);
		mon.packets++;
		mon.bytes += rte_pktmbuf_pkt_len(pkts[i]);
		if (pos < 0 || (uint32_t)pos >= mon.capacity) {
			mon.untracked++;
			continue;
		}
		mon.counters[pos].packets++;
		mon.counters[pos].bytes += rte_pktmbuf_pkt_len(pkts[i]);
	}
}

static void
ip_text(uint32_t a, char *buf)
{
	struct in_addr in = { .s_addr = htonl(a) };

	inet_ntop(AF_INET, &in, buf, INET_ADDRSTRLEN);
}

static void
mon_report(struct nf_ctx *ctx, FILE *out)
{
	const void *key;
	void *data;
	uint32_t iter = 0;
	int32_t pos;
	uint64_t flows = 0, top = 0;
	struct nf_tuple top_t = {0};
	FILE *dump = NULL;
	char s[INET_ADDRSTRLEN], d[INET_ADDRSTRLEN];

	if (mon.dump != NULL && (dump = fopen(mon.dump, "w")) == NULL)
		fprintf(stderr, "%s: %s: cannot write the flow dump\n", ctx->prog, mon.dump);
	if (dump != NULL)
		fprintf(dump, "src,dst,sport,dport,proto,packets,bytes\n");
	while ((pos = rte_hash_iterate(mon.table, &key, &data, &iter)) >= 0) {
		const struct nf_tuple *t = key;
		const struct flow_counter *fc = &mon.counters[pos];

		flows++;
		if (fc->packets > top) {
			top = fc->packets;
			top_t = *t;
		}
		if (dump != NULL) {
			ip_text(t->src, s);
			ip_text(t->dst, d);
			fprintf(dump, "%s,%s,%u,%u,%u,%" PRIu64 ",%" PRIu64 "\n", s, d, t->sport,
				t->dport, t->proto, fc->packets, fc->bytes);
		}
	}
	if (dump != NULL)
		fclose(dump);
	ip_text(top_t.src, s);
	ip_text(top_t.dst, d);
	fprintf(out, ", \"flows\": %" PRIu64 ", \"packets\": %" PRIu64 ", \"bytes\": %" PRIu64
		", \"untracked\": %" PRIu64 ", \"not_ipv4\": %" PRIu64
		", \"top_flow\": {\"src\": \"%s\", \"dst\": \"%s\", \"sport\": %u, \"dport\": %u, "
		"\"proto\": %u, \"packets\": %" PRIu64 "}",
		flows, mon.packets, mon.bytes, mon.untracked, mon.not_ipv4, s, d, top_t.sport,
		top_t.dport, top_t.proto, top);
}

static void
mon_fini(struct nf_ctx *ctx)
{
	(void)ctx;
	rte_hash_free(mon.table);
	free(mon.counters);
}

const struct nf_type nf_type_monitor = {
	.name = "monitor",
	.help = "    --monitor-flows N    flow table size (default 65536)\n"
		"    --monitor-dump FILE  write every flow's counters as CSV at exit\n",
	.options = mon_options,
	.parse = mon_parse,
	.init = mon_init,
	.process = mon_process,
	.report = mon_report,
	.fini = mon_fini,
};
