/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4):
 * the lookup table of the lb NF (lb.c), apart so a unit test can check
 * its balance and its disruption without DPDK's runtime.
 */
#ifndef MAGLEV_H
#define MAGLEV_H

#include <stdint.h>

#define MAGLEV_MAX_BACKENDS 64

/*
 * Fill table[0..m) with backend indexes.  m must be prime (every skip then
 * visits every slot); names[b] seeds backend b's permutation; up[b] == 0
 * leaves backend b out.  Backends take turns claiming their next preferred
 * free slot, so each ends with floor(m/live) or ceil(m/live) slots.
 * Returns 0, or -1 for n == 0, n > MAGLEV_MAX_BACKENDS, m < 2 or no
 * backend up.
 */
int maglev_populate(int32_t *table, uint32_t m, const char *const *names, const int *up,
		    unsigned n);

#endif /* MAGLEV_H */
