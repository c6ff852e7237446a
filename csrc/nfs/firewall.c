/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * firewall: an ACL over IPv4 5-tuples, classified with rte_acl, first
 * match wins, no match denies.  Rules:
 *
 *   --rule ACTION:PROTO:SRC:DST:SPORTS:DPORTS      (repeatable, in order)
 *     ACTION  allow | deny
 *     PROTO   tcp | udp | icmp | any | a number
 *     SRC/DST A.B.C.D/LEN | any
 *     PORTS   N | LO-HI | any
 *
 * The --rule rules come first; then, unless --no-default-rules, the
 * default set, which passes every TCP, UDP and ICMP packet (all the
 * testbed's traffic) except its one deny rule, TCP to port 23 (telnet),
 * which the testbed never generates:
 *
 *   deny:tcp:any:any:any:23  allow:tcp:any:any:any:any
 *   allow:udp:any:any:any:any  allow:icmp:any:any:any:any
 *
 * Non-IPv4 frames are denied.  Ports are read at the fixed offset of a
 * 20-byte IPv4 header (rte_acl reads fields at fixed offsets); the
 * testbed's frames have no IP options.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <rte_acl.h>
#include <rte_errno.h>
#include <rte_lcore.h>

#include "nf.h"
#include "nf_chain.h"
#include "nf_pkt.h"

enum { OPT_RULE = NF_TYPE_OPT, OPT_NO_DEFAULT };

static const struct option fw_options[] = {
	{"rule", required_argument, NULL, OPT_RULE},
	{"no-default-rules", no_argument, NULL, OPT_NO_DEFAULT},
	{NULL, 0, NULL, 0},
};

enum { F_PROTO, F_SRC, F_DST, F_SPORT, F_DPORT, N_FIELDS };

/* Offsets from the IPv4 protocol byte, the address rte_acl_classify is
 * given per packet (the layout of DPDK's ACL guide). */
#define OFF_FROM_PROTO(f) (offsetof(struct rte_ipv4_hdr, f) - offsetof(struct rte_ipv4_hdr, next_proto_id))

static struct rte_acl_field_def fw_defs[N_FIELDS] = {
	{ .type = RTE_ACL_FIELD_TYPE_BITMASK, .size = sizeof(uint8_t),
	  .field_index = F_PROTO, .input_index = 0, .offset = 0 },
	{ .type = RTE_ACL_FIELD_TYPE_MASK, .size = sizeof(uint32_t),
	  .field_index = F_SRC, .input_index = 1, .offset = OFF_FROM_PROTO(src_addr) },
	{ .type = RTE_ACL_FIELD_TYPE_MASK, .size = sizeof(uint32_t),
	  .field_index = F_DST, .input_index = 2, .offset = OFF_FROM_PROTO(dst_addr) },
	/* Both ports in one 4-byte input group. */
	{ .type = RTE_ACL_FIELD_TYPE_RANGE, .size = sizeof(uint16_t),
	  .field_index = F_SPORT, .input_index = 3,
	  .offset = sizeof(struct rte_ipv4_hdr) - offsetof(struct rte_ipv4_hdr, next_proto_id) },
	{ .type = RTE_ACL_FIELD_TYPE_RANGE, .size = sizeof(uint16_t),
	  .field_index = F_DPORT, .input_index = 3,
	  .offset = sizeof(struct rte_ipv4_hdr) - offsetof(struct rte_ipv4_hdr, next_proto_id) + 2 },
};

RTE_ACL_RULE_DEF(fw_rule, N_FIELDS);

#define FW_MAX_RULES 256

struct fw_spec {
	char text[96];
	int allow;
};

static struct {
	struct fw_spec spec[FW_MAX_RULES];
	struct fw_rule rule[FW_MAX_RULES];
	uint64_t hits[FW_MAX_RULES];
	unsigned n;
	int no_default;
	struct rte_acl_ctx *acl;
	uint64_t allowed, denied, no_match, not_ipv4;
} fw;

static const char *const default_rules[] = {
	"deny:tcp:any:any:any:23",
	"allow:tcp:any:any:any:any",
	"allow:udp:any:any:any:any",
	"allow:icmp:any:any:any:any",
};

static int
parse_ports(const char *s, uint16_t *lo, uint16_t *hi)
{
	unsigned a, b;
	char extra;

	if (strcmp(s, "any") == 0) {
		*lo = 0;
		*hi = 65535;
		return 0;
	}
	if (sscanf(s, "%u-%u%c", &a, &b, &extra) == 2 && a <= b && b <= 65535) {
		*lo = (uint16_t)a;
		*hi = (uint16_t)b;
		return 0;
	}
	if (sscanf(s, "%u%c", &a, &extra) == 1 && a <= 65535) {
		*lo = *hi = (uint16_t)a;
		return 0;
	}
	return -1;
}

static int
parse_net(const char *s, uint32_t *net, uint32_t *len)
{
	uint32_t mask;

	if (strcmp(s, "any") == 0) {
		*net = 0;
		*len = 0;
		return 0;
	}
	if (nf_parse_prefix(s, net, &mask) != 0)
		return -1;
	*len = (uint32_t)__builtin_popcount(mask);
	return 0;
}

/* Parse one rule into fw.rule[fw.n]; priority set when the list is complete. */
static int
add_rule(const char *prog, const char *text)
{
	char buf[96], *f[6], *save = NULL, *tok;
	struct fw_rule *r;
	uint32_t net, len;
	uint16_t lo, hi;
	int n = 0;

	if (fw.n == FW_MAX_RULES || strlen(text) >= sizeof(buf))
		goto bad;
	strcpy(buf, text);
	for (tok = strtok_r(buf, ":", &save); tok != NULL && n < 6; tok = strtok_r(NULL, ":", &save))
		f[n++] = tok;
	if (n != 6 || tok != NULL)
		goto bad;
	r = &fw.rule[fw.n];
	memset(r, 0, sizeof(*r));
	if (strcmp(f[0], "allow") == 0)
		fw.spec[fw.n].allow = 1;
	else if (strcmp(f[0], "deny") != 0)
		goto bad;
	if (strcmp(f[1], "any") == 0) {
		r->field[F_PROTO].value.u8 = 0;
		r->field[F_PROTO].mask_range.u8 = 0;
	} else {
		unsigned p;
		char extra;
		if (strcmp(f[1], "tcp") == 0)
			p = IPPROTO_TCP;
		else if (strcmp(f[1], "udp") == 0)
			p = IPPROTO_UDP;
		else if (strcmp(f[1], "icmp") == 0)
			p = IPPROTO_ICMP;
		else if (sscanf(f[1], "%u%c", &p, &extra) != 1 || p > 255)
			goto bad;
		r->field[F_PROTO].value.u8 = (uint8_t)p;
		r->field[F_PROTO].mask_range.u8 = 0xff;
	}
	/* rte_acl rules are in host order; the packet bytes it reads are not. */
	if (parse_net(f[2], &net, &len) != 0)
		goto bad;
	r->field[F_SRC].value.u32 = net;
	r->field[F_SRC].mask_range.u32 = len;
	if (parse_net(f[3], &net, &len) != 0)
		goto bad;
	r->field[F_DST].value.u32 = net;
	r->field[F_DST].mask_range.u32 = len;
	if (parse_ports(f[4], &lo, &hi) != 0)
		goto bad;
	r->field[F_SPORT].value.u16 = lo;
	r->field[F_SPORT].mask_range.u16 = hi;
	if (parse_ports(f[5], &lo, &hi) != 0)
		goto bad;
	r->field[F_DPORT].value.u16 = lo;
	r->field[F_DPORT].mask_range.u16 = hi;
	r->data.category_mask = 1;
	r->data.userdata = fw.n + 1;            /* 0 is "no match" */
	snprintf(fw.spec[fw.n].text, sizeof(fw.spec[fw.n].text), "%s", text);
	fw.n++;
	return 0;
bad:
	fprintf(stderr, "%s: bad firewall rule '%s' (want ACTION:PROTO:SRC:DST:SPORTS:DPORTS, "
		"e.g. deny:udp:10.0.0.0/9:any:any:53; at most %d rules)\n", prog, text, FW_MAX_RULES);
	return -1;
}

static int
fw_parse(struct nf_ctx *ctx, int val, const char *arg)
{
	if (val == OPT_NO_DEFAULT) {
		fw.no_default = 1;
		return 0;
	}
	return add_rule(ctx->prog, arg);
}

static int
fw_init(struct nf_ctx *ctx)
{
	char name[RTE_ACL_NAMESIZE];
	struct rte_acl_param prm = {
		.socket_id = (int)rte_socket_id(),
		.rule_size = RTE_ACL_RULE_SZ(N_FIELDS),
		.max_rule_num = FW_MAX_RULES,
	};
	struct rte_acl_config cfg = { .num_categories = 1, .num_fields = N_FIELDS };
	unsigned i;
	int rc;

	if (!fw.no_default)
		for (i = 0; i < sizeof(default_rules) / sizeof(default_rules[0]); i++)
			if (add_rule(ctx->prog, default_rules[i]) != 0)
				return -1;
	if (fw.n == 0) {
		fprintf(stderr, "%s: firewall without rules (--no-default-rules and no --rule)\n",
			ctx->prog);
		return -1;
	}
	for (i = 0; i < fw.n; i++)
		fw.rule[i].data.priority = (int32_t)(fw.n - i);   /* first rule wins */
	snprintf(name, sizeof(name), "acl_%s", ctx->name);
	prm.name = name;
	fw.acl = rte_acl_create(&prm);
	if (fw.acl == NULL) {
		fprintf(stderr, "%s: rte_acl_create: %s\n", ctx->prog, rte_strerror(rte_errno));
		return -1;
	}
	rc = rte_acl_add_rules(fw.acl, (struct rte_acl_rule *)fw.rule, fw.n);
	memcpy(cfg.defs, fw_defs, sizeof(fw_defs));
	if (rc == 0)
		rc = rte_acl_build(fw.acl, &cfg);
	if (rc != 0) {
		fprintf(stderr, "%s: building the ACL: %s\n", ctx->prog, strerror(-rc));
		return -1;
	}
	return 0;
}

static void
fw_process(struct nf_ctx *ctx, struct rte_mbuf **pkts, uint16_t n, int *verdict)
{
	const uint8_t *data[NF_MAX_BURST];
	uint32_t res[NF_MAX_BURST];
	uint16_t idx[NF_MAX_BURST];
	uint16_t i, k = 0;

	(void)ctx;
	for (i = 0; i < n; i++) {
		struct rte_ipv4_hdr *ip = nf_ipv4(pkts[i]);
		if (ip == NULL) {
			verdict[i] = NF_DROP;
			fw.not_ipv4++;
			continue;
		}
		data[k] = &ip->next_proto_id;
		idx[k++] = i;
	}
	if (k == 0 || rte_acl_classify(fw.acl, data, res, k, 1) != 0)
		return;
	for (i = 0; i < k; i++) {
		if (res[i] == 0) {
			fw.no_match++;
			verdict[idx[i]] = NF_DROP;
			continue;
		}
		fw.hits[res[i] - 1]++;
		if (fw.spec[res[i] - 1].allow) {
			fw.allowed++;
		} else {
			fw.denied++;
			verdict[idx[i]] = NF_DROP;
		}
	}
}

static void
fw_report(struct nf_ctx *ctx, FILE *out)
{
	unsigned i;

	(void)ctx;
	fprintf(out, ", \"allowed\": %" PRIu64 ", \"denied\": %" PRIu64 ", \"no_match\": %" PRIu64
		", \"not_ipv4\": %" PRIu64 ", \"rules\": [", fw.allowed, fw.denied, fw.no_match,
		fw.not_ipv4);
	for (i = 0; i < fw.n; i++)
		fprintf(out, "%s{\"rule\": \"%s\", \"hits\": %" PRIu64 "}", i ? ", " : "",
			fw.spec[i].text, fw.hits[i]);
	fprintf(out, "]");
}

static void
fw_fini(struct nf_ctx *ctx)
{
	(void)ctx;
	rte_acl_free(fw.acl);
}

const struct nf_type nf_type_firewall = {
	.name = "firewall",
	.help = "    --rule ACTION:PROTO:SRC:DST:SPORTS:DPORTS   e.g. deny:udp:10.0.0.0/9:any:any:53\n"
		"                         (repeatable; first match wins, before the default set)\n"
		"    --no-default-rules   only the --rule rules (no match denies)\n",
	.options = fw_options,
	.parse = fw_parse,
	.init = fw_init,
	.process = fw_process,
	.report = fw_report,
	.fini = fw_fini,
};
