/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Runs mscope_pktid_bytes on frames from stdin and prints one id per line,
 * in decimal, so tests/test_packet_id.py can hold it to src/mscope/packet_id.py.
 *
 * Input, repeated to EOF, host byte order:  u32 pkt_len, u32 len, len bytes.
 * Each frame is copied into a buffer of exactly `len` bytes, so a build with
 * -fsanitize=address reports any read past what the C function was given.
 * Exit status 0, or 2 on a truncated input.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../csrc/mscope_pktid.h"

int
main(void)
{
	uint32_t hdr[2];

	while (fread(hdr, sizeof(hdr), 1, stdin) == 1) {
		const uint32_t pkt_len = hdr[0], len = hdr[1];
		uint8_t *p = malloc(len);

		if (p == NULL && len != 0) {
			perror("malloc");
			return 2;
		}
		if (len != 0 && fread(p, 1, len, stdin) != len) {
			fprintf(stderr, "truncated frame: wanted %" PRIu32 " bytes\n", len);
			free(p);
			return 2;
		}
		printf("%" PRIu64 "\n", mscope_pktid_bytes(p, len, pkt_len));
		free(p);
	}
	return ferror(stdin) ? 2 : 0;
}
