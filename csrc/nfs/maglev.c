/* SPDX-License-Identifier: BSD-3-Clause */
/* The Maglev lookup table (maglev.h). */
#include <stdint.h>
#include <string.h>

#include <rte_jhash.h>

#include "maglev.h"

static uint64_t
name_hash(const char *s, uint32_t seed)
{
	return rte_jhash(s, (uint32_t)strlen(s), seed);
}

int
maglev_populate(int32_t *table, uint32_t m, const char *const *names, const int *up,
		unsigned n)
{
	uint32_t offset[MAGLEV_MAX_BACKENDS], skip[MAGLEV_MAX_BACKENDS], next[MAGLEV_MAX_BACKENDS];
	uint32_t filled = 0, i;
	unsigned b, live = 0;

	if (n == 0 || n > MAGLEV_MAX_BACKENDS || m < 2)
		return -1;
	for (b = 0; b < n; b++) {
		offset[b] = (uint32_t)(name_hash(names[b], 0x4d41474cU) % m);
		skip[b] = (uint32_t)(name_hash(names[b], 0x534b4950U) % (m - 1)) + 1;
		next[b] = 0;
		live += up[b] != 0;
	}
	if (live == 0)
		return -1;
	for (i = 0; i < m; i++)
		table[i] = -1;
	for (;;) {
		for (b = 0; b < n; b++) {
			uint32_t c;
			if (!up[b])
				continue;
			/* Next slot in b's permutation that is still free. */
			do {
				c = (uint32_t)(((uint64_t)offset[b] + (uint64_t)next[b] * skip[b]) % m);
				next[b]++;
			} while (table[c] >= 0);
			table[c] = (int32_t)b;
			if (++filled == m)
				return 0;
		}
	}
}
