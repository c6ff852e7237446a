/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * nat: source NAT (NAPT) with a flow table.  The first packet of a TCP or
 * UDP flow (its 5-tuple, an rte_hash key) takes the next free external
 * port; every packet of the flow leaves with source address --nat-ip and
 * that port.  IPv4 header checksum recomputed, TCP/UDP checksum updated
 * incrementally (a UDP checksum of 0, "none", stays 0).  Other IPv4
 * protocols get the address only; non-IPv4 frames pass unchanged.  A full
 * table drops new flows (counted).  Flows never expire: the testbed's runs
 * are shorter than any sane timeout.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_lcore.h>
#include <rte_malloc.h>

#include "nf.h"
#include "nf_chain.h"
#include "nf_pkt.h"

enum { OPT_NAT_IP = NF_TYPE_OPT, OPT_NAT_PORTS, OPT_NAT_FLOWS };

static const struct option nat_options[] = {
	{"nat-ip", required_argument, NULL, OPT_NAT_IP},
	{"nat-ports", required_argument, NULL, OPT_NAT_PORTS},
	{"nat-flows", required_argument, NULL, OPT_NAT_FLOWS},
	{NULL, 0, NULL, 0},
};

struct nat {
	uint32_t ext_ip;                 /* host order */
	uint16_t port_lo, port_hi, next_port;
	uint32_t capacity;
	struct rte_hash *table;          /* 5-tuple -> external port */
	uint64_t flows, translated, table_full, passed;
};

static struct nat nat = {
	.ext_ip = 0xc6336401U,           /* 198.51.100.1 (TEST-NET-2) */
	.port_lo = 1024, .port_hi = 65535, .capacity = 65536,
};

static int
nat_parse(struct nf_ctx *ctx, int val, const char *arg)
{
	unsigned lo, hi;

	switch (val) {
	case OPT_NAT_IP:
		if (nf_parse_ipv4(arg, &nat.ext_ip) == 0)
			return 0;
		fprintf(stderr, "%s: --nat-ip wants an IPv4 address, got '%s'\n", ctx->prog, arg);
		return -1;
	case OPT_NAT_PORTS:
		if (sscanf(arg, "%u-%u", &lo, &hi) == 2 && lo >= 1 && lo <= hi && hi <= 65535) {
			nat.port_lo = (uint16_t)lo;
			nat.port_hi = (uint16_t)hi;
			return 0;
		}
		fprintf(stderr, "%s: --nat-ports wants LO-HI within 1-65535, got '%s'\n",
			ctx->prog, arg);
		return -1;
	case OPT_NAT_FLOWS:
		nat.capacity = (uint32_t)strtoul(arg, NULL, 0);
		if (nat.capacity >= 8)
			return 0;
		fprintf(stderr, "%s: --nat-flows must be >= 8\n", ctx->prog);
		return -1;
	}
	return -1;
}

static int
nat_init(struct nf_ctx *ctx)
{
	char name[RTE_HASH_NAMESIZE];
	struct rte_hash_parameters p = {
		.entries = nat.capacity,
		.key_len = sizeof(struct nf_tuple),
		.socket_id = (int)rte_socket_id(),
	};

	/* Tables live in the shared hugepage heap: one name per NF. */
	snprintf(name, sizeof(name), "nat_%s", ctx->name);
	p.name = name;
	nat.table = rte_hash_create(&p);
	if (nat.table == NULL) {
		fprintf(stderr, "%s: rte_hash_create(%s): %s\n", ctx->prog, name,
			rte_strerror(rte_errno));
		return -1;
	}
	nat.next_port = nat.port_lo;
	return 0;
}

/* External port of flow `t`: from the table, or a new one; -1 when full. */
static int
nat_port_of(const struct nf_tuple *t)
{
	void *data;
	uint16_t port;

	if (rte_hash_lookup_data(nat.table, t, &data) >= 0)
		return (int)(uintptr_t)data;
	if (nat.flows >= (uint64_t)(nat.port_hi - nat.port_lo) + 1)
		return -1;                      /* port pool exhausted */
	port = nat.next_port;
	if (rte_hash_add_key_data(nat.table, t, (void *)(uintptr_t)port) < 0)
		return -1;
	nat.next_port = port == nat.port_hi ? nat.port_lo : (uint16_t)(port + 1);
	nat.flows++;
	return port;
}

static void
nat_process(struct nf_ctx *ctx, struct rte_mbuf **pkts, uint16_t n, int *verdict)
{
	const uint32_t ext_be = rte_cpu_to_be_32(nat.ext_ip);
	uint16_t i;

	(void)ctx;
	for (i = 0; i < n; i++) {
		struct rte_ipv4_hdr *ip = nf_ipv4(pkts[i]);
		struct nf_tuple t;
		uint16_t *l4;
		int port;

		if (ip == NULL || nf_tuple_of(pkts[i], &t) != 0) {
			nat.passed++;
			continue;
		}
		l4 = nf_l4(pkts[i], ip);
		port = l4 != NULL ? nat_port_of(&t) : 0;
		if (port < 0) {
			nat.table_full++;
			verdict[i] = NF_DROP;
			continue;
		}
		if (l4 != NULL) {
			uint16_t new_port = rte_cpu_to_be_16((uint16_t)port);
			/* TCP checksum at byte 16, UDP's at byte 6 */
			uint16_t *sum = ip->next_proto_id == IPPROTO_TCP ? &l4[8] : &l4[3];
			/* UDP checksum 0 means "none": leave it. */
			if (ip->next_proto_id == IPPROTO_TCP || *sum != 0) {
				*sum = nf_csum_update32(*sum, ip->src_addr, ext_be);
				*sum = nf_csum_update16(*sum, l4[0], new_port);
			}
			l4[0] = new_port;
		}
		ip->src_addr = ext_be;
		ip->hdr_checksum = 0;
		ip->hdr_checksum = rte_ipv4_cksum(ip);
		nat.translated++;
	}
}

static void
nat_report(struct nf_ctx *ctx, FILE *out)
{
	(void)ctx;
	fprintf(out, ", \"nat_flows\": %" PRIu64 ", \"translated\": %" PRIu64
		", \"table_full\": %" PRIu64 ", \"not_ipv4\": %" PRIu64,
		nat.flows, nat.translated, nat.table_full, nat.passed);
}

static void
nat_fini(struct nf_ctx *ctx)
{
	(void)ctx;
	rte_hash_free(nat.table);
}

const struct nf_type nf_type_nat = {
	.name = "nat",
	.help = "    --nat-ip A.B.C.D     external source address (default 198.51.100.1)\n"
		"    --nat-ports LO-HI    external port pool (default 1024-65535)\n"
		"    --nat-flows N        flow table size (default 65536)\n",
	.options = nat_options,
	.parse = nat_parse,
	.init = nat_init,
	.process = nat_process,
	.report = nat_report,
	.fini = nat_fini,
};
