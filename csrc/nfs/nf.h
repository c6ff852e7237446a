/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * What a sample NF type provides to mscope-nf's poll loop (nf_main.c).
 *
 * The loop owns everything around the NF's logic: rings, recording (rx
 * right after the dequeue, tx right before each enqueue), the emulated
 * service time, the fault hooks, idle back-off and the exit report.  A
 * type only decides, per packet of a batch, what happens to it: rewritten
 * in place and passed on, sent to one out-link, or dropped.
 */
#ifndef NF_H
#define NF_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include <rte_mbuf.h>

#define NF_PASS  (-1)   /* verdict: pass on; the loop picks the out-link by flow hash */
#define NF_DROP  (-2)   /* verdict: the NF drops it (freed, never recorded at tx) */

/* getopt_long values at or above this belong to the type. */
#define NF_TYPE_OPT 1000

struct nf_ctx {
	const char *prog;       /* for messages */
	const char *name;       /* the NF's name (also its recorder name) */
	unsigned n_out;         /* out-links */
	void *priv;             /* the type's state */
};

struct nf_type {
	const char *name;
	const char *help;                      /* its options, one per line */
	const struct option *options;          /* NULL-terminated; val >= NF_TYPE_OPT */
	/* One of its options; 0, or -1 with a message on stderr. */
	int (*parse)(struct nf_ctx *ctx, int val, const char *arg);
	/* After EAL init and ring lookup; 0, or -1 with a message. */
	int (*init)(struct nf_ctx *ctx);
	/* Work on a batch: set verdict[i] to NF_PASS, NF_DROP or an out-link
	 * index < ctx->n_out. */
	void (*process)(struct nf_ctx *ctx, struct rte_mbuf **pkts, uint16_t n, int *verdict);
	/* Its own members of the exit report: `, "key": value` ... */
	void (*report)(struct nf_ctx *ctx, FILE *out);
	void (*fini)(struct nf_ctx *ctx);
};

extern const struct nf_type nf_type_nat;
extern const struct nf_type nf_type_firewall;
extern const struct nf_type nf_type_monitor;
extern const struct nf_type nf_type_vpn;
extern const struct nf_type nf_type_lb;

#endif /* NF_H */
