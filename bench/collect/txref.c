/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Prototype transforms for bench/collect.py, in C so that their cost is
 * what a collector would pay (the numpy versions in collect.py are the
 * reference and decode; this file only encodes).  Not part of mscope: the
 * capture format has none of this.  Built by collect.py with gcc -O2 and
 * called through ctypes.
 *
 * txref_encode: a tx record whose ids are the previous (rx) record's ids
 *   minus some, in the same order, stores no ids.  Output: a bitmap, one
 *   bit per record (1: ids by reference); the positions in the rx burst of
 *   the ids that tx dropped (u8 each, pair after pair); the ids of every
 *   other record, verbatim.  Returns the number of verbatim ids.
 * shuffle_records: time_ns and seq replaced by their deltas from the
 *   previous record, then the n x 32 bytes transposed to 32 x n.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct rec {                 /* CAPTURE_RECORD_DTYPE */
	int64_t  time_ns;
	uint64_t seq;
	uint16_t nf_id, port, queue;
	uint8_t  flags, reserved;
	uint32_t count, occupancy;
};

size_t
txref_encode(const struct rec *r, size_t n, const uint64_t *ids,
	     uint8_t *bitmap, uint8_t *dropped, size_t *n_dropped,
	     uint64_t *rest)
{
	const uint64_t *prev = NULL;   /* ids of record i - 1 */
	size_t nr = 0, nd = 0, i;

	memset(bitmap, 0, (n + 7) / 8);
	for (i = 0; i < n; i++) {
		const uint32_t c = r[i].count;
		int by_ref = 0;

		if (i > 0 && (r[i].flags & 1) && !(r[i - 1].flags & 1) &&
		    c > 0 && c <= r[i - 1].count) {
			const uint32_t pc = r[i - 1].count;
			uint32_t j = 0, k = 0;
			size_t nd0 = nd;

			if (c == pc) {
				by_ref = memcmp(prev, ids, 8 * (size_t)c) == 0;
			} else {
				/* Greedy subsequence match; note the skipped. */
				for (k = 0; k < c; k++) {
					while (j < pc && prev[j] != ids[k])
						dropped[nd++] = (uint8_t)j++;
					if (j == pc)
						break;
					j++;
				}
				while (k == c && j < pc)
					dropped[nd++] = (uint8_t)j++;
				by_ref = k == c;
				if (!by_ref)
					nd = nd0;
			}
		}
		if (by_ref) {
			bitmap[i >> 3] |= (uint8_t)(1u << (i & 7));
		} else {
			memcpy(rest + nr, ids, 8 * (size_t)c);
			nr += c;
		}
		prev = ids;
		ids += c;
	}
	*n_dropped = nd;
	return nr;
}

void
shuffle_records(const struct rec *r, size_t n, uint8_t *out, struct rec *tmp)
{
	size_t i, b;

	for (i = 0; i < n; i++) {
		tmp[i] = r[i];
		if (i > 0) {
			tmp[i].time_ns = r[i].time_ns - r[i - 1].time_ns;
			tmp[i].seq = r[i].seq - r[i - 1].seq;
		}
	}
	{
		const uint8_t *s = (const uint8_t *)tmp;
		for (b = 0; b < sizeof(struct rec); b++)
			for (i = 0; i < n; i++)
				out[b * n + i] = s[i * sizeof(struct rec) + b];
	}
}
