/* SPDX-License-Identifier: BSD-3-Clause */
/* The lb NF's Maglev table (csrc/nfs/maglev.c): balance, and the bounded
 * disruption when a backend goes away.  Prints the slot counts as JSON,
 * then the check summary; exit 1 on a failed check. */
#include <stdio.h>

#include "check.h"
#include "nfs/maglev.h"

#define M 65537
#define N 5

int
main(void)
{
	static int32_t before[M], after[M];
	const char *names[N] = {"b0", "b1", "b2", "b3", "b4"};
	int up[N] = {1, 1, 1, 1, 1};
	unsigned count[N] = {0}, moved = 0, b;
	uint32_t i;

	CHECK(maglev_populate(before, M, names, up, N) == 0, "populate");
	for (i = 0; i < M; i++) {
		CHECK(before[i] >= 0 && before[i] < N, "slot %u", i);
		count[before[i]]++;
	}
	/* Turns of one slot each: every backend ends with floor or ceil of M/N. */
	for (b = 0; b < N; b++)
		CHECK(count[b] == M / N || count[b] == M / N + 1, "backend %u has %u slots", b, count[b]);
	up[2] = 0;
	CHECK(maglev_populate(after, M, names, up, N) == 0, "populate without b2");
	for (i = 0; i < M; i++) {
		CHECK(after[i] != 2, "slot %u still on b2", i);
		if (before[i] != 2 && after[i] != before[i])
			moved++;
	}
	/* Slots of the other backends that changed hands: Maglev keeps this
	 * to a few percent (NSDI'16, figure 12). */
	CHECK(moved < M / 20, "%u slots moved", moved);
	/* Same inputs, same table (every process of a chain agrees). */
	CHECK(maglev_populate(after, M, names, (int[N]){1, 1, 1, 1, 1}, N) == 0, "again");
	for (i = 0; i < M; i++)
		CHECK(after[i] == before[i], "slot %u differs", i);
	CHECK(maglev_populate(after, M, names, (int[N]){0}, N) == -1, "no backend up");
	printf("{\"slots\": [%u, %u, %u, %u, %u], \"moved\": %u}\n", count[0], count[1], count[2],
	       count[3], count[4], moved);
	return CHECK_SUMMARY();
}
