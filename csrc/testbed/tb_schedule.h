/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The testbed source's input: every packet it will send, when, and on
 * which out-link, written by `mscope testbed run` (mscope.testbed.schedule)
 * from the scenario's traffic (mscope.sim's generator, or its pcap).
 *
 *   struct tb_schedule_hdr, then count x struct tb_pkt, little-endian,
 *   sorted by time_ns.
 *
 * The source rebuilds each frame from these fields: Ethernet, IPv4 (no
 * options), a 32-byte TCP header (timestamps option; 20 bytes when the
 * packet is too short for 32) or an 8-byte UDP header, then the 16
 * payload bytes and zeros.  Those are the fields the packet id hashes
 * (docs/packet-ids.md), so the ids the source records are the ids the
 * simulator gives the same packets.  Also the layout of the frame dumps
 * (struct tb_dump) that the source and sink write with --dump.
 */
#ifndef TB_SCHEDULE_H
#define TB_SCHEDULE_H

#include <stdint.h>

#define TB_SCHEDULE_MAGIC "MSTBSCH1"

struct tb_schedule_hdr {
	char magic[8];          /* TB_SCHEDULE_MAGIC */
	uint32_t rec_size;      /* sizeof(struct tb_pkt) */
	uint32_t reserved;
	uint64_t count;
};

struct tb_pkt {
	int64_t time_ns;        /* send time from t0 */
	uint32_t src_ip, dst_ip;        /* host order */
	uint32_t tcp_seq, tcp_ack;
	uint16_t sport, dport;
	uint16_t length;        /* IPv4 total length */
	uint16_t ip_id;
	uint16_t frag;          /* flags + fragment offset */
	uint8_t proto;
	uint8_t out;            /* out-link index */
	uint8_t payload[16];    /* the first 16 L4 payload bytes */
	uint32_t reserved;
};

_Static_assert(sizeof(struct tb_pkt) == 56, "tb_pkt layout is shared with Python");

/* One dumped frame (--dump): its length, the link it came in or went out
 * on, and its first 128 bytes (zero-padded). */
struct tb_dump {
	uint16_t pkt_len;
	uint16_t port;
	uint32_t reserved;
	uint8_t bytes[128];
};

_Static_assert(sizeof(struct tb_dump) == 136, "tb_dump layout is shared with Python");

#endif /* TB_SCHEDULE_H */
