/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * lb: a Maglev load balancer (Eisenbud et al., NSDI 2016) over the NF's
 * out-links.  Each backend b (out-link b, named "b<index>" unless
 * --lb-backends names them) has a preference permutation of the lookup
 * table's M slots, offset(b) + j * skip(b) mod M (M prime, so every skip
 * visits every slot); backends take turns claiming their next preferred
 * free slot until the table is full.  A packet goes to
 * table[hash(5-tuple) mod M]: every packet of a flow to one backend, each
 * backend about 1/N of the slots, and removing a backend moves only the
 * flows it held (plus a few percent: Maglev's bounded disruption).
 * --lb-down I takes backend I out (its slots go to the others).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <rte_jhash.h>

#include "nf.h"
#include "nf_chain.h"
#include "nf_pkt.h"
#include "maglev.h"

enum { OPT_LB_TABLE = NF_TYPE_OPT, OPT_LB_BACKENDS, OPT_LB_DOWN };

static const struct option lb_options[] = {
	{"lb-table", required_argument, NULL, OPT_LB_TABLE},
	{"lb-backends", required_argument, NULL, OPT_LB_BACKENDS},
	{"lb-down", required_argument, NULL, OPT_LB_DOWN},
	{NULL, 0, NULL, 0},
};

static struct {
	uint32_t m;
	char names_buf[512];
	char *names[NF_MAX_OUT];
	int n_names;
	int down[NF_MAX_OUT];
	int32_t *table;
	uint64_t sent[NF_MAX_OUT];
} lb = { .m = 65537 };

/* --- the NF ------------------------------------------------------------------ */

static int
is_prime(uint32_t m)
{
	uint32_t d;

	if (m < 2)
		return 0;
	for (d = 2; (uint64_t)d * d <= m; d++)
		if (m % d == 0)
			return 0;
	return 1;
}

static int
lb_parse(struct nf_ctx *ctx, int val, const char *arg)
{
	long v;

	switch (val) {
	case OPT_LB_TABLE:
		lb.m = (uint32_t)strtoul(arg, NULL, 0);
		if (is_prime(lb.m) && lb.m >= 7)
			return 0;
		fprintf(stderr, "%s: --lb-table must be a prime >= 7 (e.g. 65537), got '%s'\n",
			ctx->prog, arg);
		return -1;
	case OPT_LB_BACKENDS:
		snprintf(lb.names_buf, sizeof(lb.names_buf), "%s", arg);
		lb.n_names = nf_split_list(lb.names_buf, lb.names, NF_MAX_OUT, "backends", ctx->prog);
		return lb.n_names < 0 ? -1 : 0;
	case OPT_LB_DOWN:
		v = strtol(arg, NULL, 0);
		if (v >= 0 && v < NF_MAX_OUT) {
			lb.down[v] = 1;
			return 0;
		}
		fprintf(stderr, "%s: --lb-down wants a backend index\n", ctx->prog);
		return -1;
	}
	return -1;
}

static int
lb_init(struct nf_ctx *ctx)
{
	static char defaults[NF_MAX_OUT][8];
	int up[NF_MAX_OUT];
	unsigned b;

	if (lb.n_names > 0 && (unsigned)lb.n_names != ctx->n_out) {
		fprintf(stderr, "%s: --lb-backends names %d backends for %u out-links\n",
			ctx->prog, lb.n_names, ctx->n_out);
		return -1;
	}
	for (b = 0; b < ctx->n_out; b++) {
		if (lb.n_names == 0) {
			snprintf(defaults[b], sizeof(defaults[b]), "b%u", b);
			lb.names[b] = defaults[b];
		}
		up[b] = !lb.down[b];
	}
	lb.table = malloc(sizeof(*lb.table) * lb.m);
	if (lb.table == NULL ||
	    maglev_populate(lb.table, lb.m, (const char *const *)lb.names, up, ctx->n_out) != 0) {
		fprintf(stderr, "%s: cannot build the Maglev table (no backend up?)\n", ctx->prog);
		return -1;
	}
	return 0;
}

static void
lb_process(struct nf_ctx *ctx, struct rte_mbuf **pkts, uint16_t n, int *verdict)
{
	uint16_t i;

	(void)ctx;
	for (i = 0; i < n; i++) {
		struct nf_tuple t;
		int32_t b;

		nf_tuple_of(pkts[i], &t);      /* not IPv4: the zero tuple, one backend */
		b = lb.table[nf_tuple_hash(&t) % lb.m];
		verdict[i] = b;
		lb.sent[b]++;
	}
}

static void
lb_report(struct nf_ctx *ctx, FILE *out)
{
	unsigned b, counts[NF_MAX_OUT] = {0};
	uint32_t i;

	for (i = 0; i < lb.m; i++)
		counts[lb.table[i]]++;
	fprintf(out, ", \"table\": %u, \"backends\": [", lb.m);
	for (b = 0; b < ctx->n_out; b++)
		fprintf(out, "%s{\"name\": \"%s\", \"slots\": %u, \"packets\": %" PRIu64 "}",
			b ? ", " : "", lb.names[b], counts[b], lb.sent[b]);
	fprintf(out, "]");
}

static void
lb_fini(struct nf_ctx *ctx)
{
	(void)ctx;
	free(lb.table);
}

const struct nf_type nf_type_lb = {
	.name = "lb",
	.help = "    --lb-table M         Maglev lookup table size, a prime (default 65537)\n"
		"    --lb-backends A,B..  backend names, one per out-link (default b0, b1, ...)\n"
		"    --lb-down I          take backend I out of the table (repeatable)\n",
	.options = lb_options,
	.parse = lb_parse,
	.init = lb_init,
	.process = lb_process,
	.report = lb_report,
	.fini = lb_fini,
};
