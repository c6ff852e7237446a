/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Packet ids from header-invariant fields (scheme and measured collision
 * rates: docs/packet-ids.md; reference implementation: src/mscope/packet_id.py,
 * which the tests hold this one to).
 *
 * A NAT rewrites addresses and ports, an L2 forwarder rewrites MACs, a router
 * the TTL / hop limit; none of them touches the IPv4 id, total length,
 * fragment field, protocol, IPv6 payload length and next header, TCP
 * sequence and acknowledgement numbers or the first 16 payload bytes, so the
 * id is a 64-bit mix of those:
 *
 *   IPv4: w0 = ip_id<<48 | total_length<<32 | (frag & 0x3fff)<<16 | proto<<8 | 4
 *         w1 = seq<<32 | ack (TCP, first fragment, l4+20 <= end), else 0
 *         w2, w3 = payload bytes [0,8) and [8,16) after the L4 header
 *              (little-endian loads, zero-padded, bounded by total_length)
 *   IPv6: w0 = payload_length<<32 | next_header<<8 | 6
 *         w1 = seq<<32 | ack (next header 6, l4+20 <= end), else 0
 *         w2, w3 as for IPv4, bounded by 40 + payload_length; l4 is right
 *              after the fixed header (extension headers are not walked:
 *              their bytes are the "payload")
 *   other: w0 = pkt_len<<16 | ethertype, w1..w3 = frame bytes [14,38)
 *
 *   id = fmix64(w0*K1 ^ rotl(w1*K2,23) ^ rotl(w2*K3,41) ^ rotl(w3*K4,11)),
 *   and 1 where that is 0 (0 means "no id").
 *
 * The L4 header skipped before the payload: TCP's data offset, 8 bytes for
 * UDP, ICMP (IPv4 protocol 1) and ICMPv6 (IPv6 next header 58), none for
 * anything else.  IPv4 and IPv6 are parsed untagged or behind one 802.1Q /
 * 802.1ad tag.  Traffic class, flow label, hop limit, TTL, DSCP/ECN,
 * addresses, ports and checksums are left out.
 *
 * mscope_ipv4_addrs_bytes() gives the word of an address record from the
 * same parse (which frames are IPv4, where the header is).
 *
 * Needs only the bytes; no DPDK types.  `len` is how many bytes of the frame
 * are contiguous at `p` (an mbuf's first segment); nothing past it is read.
 */
#ifndef MSCOPE_PKTID_H
#define MSCOPE_PKTID_H

#include <stdint.h>
#include <string.h>

/* The recorder's per-packet loops (mscope_dpdk.c) want the parser inlined:
 * left to itself gcc -O2 makes mscope_pktid_bytes a call per packet, with
 * the loop's registers spilled around it.  Only code generation: the ids
 * are the same. */
#define MSCOPE_PKTID_INLINE __attribute__((always_inline))

#define MSCOPE_PKTID_K1 0x9e3779b97f4a7c15ULL
#define MSCOPE_PKTID_K2 0xc2b2ae3d27d4eb4fULL
#define MSCOPE_PKTID_K3 0x165667b19e3779f9ULL
#define MSCOPE_PKTID_K4 0xd6e8feb86659fd93ULL

static inline uint64_t
mscope_rotl64(uint64_t x, unsigned r)
{
	return (x << r) | (x >> (64 - r));
}

static inline uint64_t
mscope_fmix64(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ULL;
	k ^= k >> 33;
	return k;
}

static inline uint64_t
mscope_pktid_mix(uint64_t w0, uint64_t w1, uint64_t w2, uint64_t w3)
{
	uint64_t h = w0 * MSCOPE_PKTID_K1 ^
		     mscope_rotl64(w1 * MSCOPE_PKTID_K2, 23) ^
		     mscope_rotl64(w2 * MSCOPE_PKTID_K3, 41) ^
		     mscope_rotl64(w3 * MSCOPE_PKTID_K4, 11);

	h = mscope_fmix64(h);
	return h != 0 ? h : 1;
}

/* Little-endian load of up to 8 bytes in [off, end), zero-padded. */
static inline uint64_t
mscope_load_le(const uint8_t *p, uint32_t off, uint32_t end)
{
	uint64_t v = 0;
	uint32_t i;

	if (off + 8 <= end) {
		memcpy(&v, p + off, 8);
	} else if (off < end && end >= 8) {
		/* The 8 bytes that end at `end`, shifted down to the n = end -
		 * off wanted: a memcpy of n bytes was a call to libc's memcpy
		 * per short payload. */
		memcpy(&v, p + end - 8, 8);
		v >>= 8 * (8 - (end - off));
	} else {
		for (i = off; i < end; i++)
			v |= (uint64_t)p[i] << (8 * (i - off));
	}
	return v;
}

static inline uint32_t
mscope_be16(const uint8_t *p)
{
	return (uint32_t)p[0] << 8 | p[1];
}

static inline uint64_t
mscope_be32(const uint8_t *p)
{
	return (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 |
	       (uint64_t)p[2] << 8 | p[3];
}

/* Eight bytes at p as a big-endian number: two header fields in one load. */
static inline uint64_t
mscope_be64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return __builtin_bswap64(v);
}

/*
 * The L4 part, the same for IPv4 and IPv6: w2 and w3 from the 16 bytes after
 * the L4 header at l4 (for protocol `proto`; `icmp` is ICMP's number in this
 * IP version), mixed with w0 and, for TCP with its whole 20-byte header
 * before `end`, w1 = seq<<32 | ack.
 */
static inline MSCOPE_PKTID_INLINE uint64_t
mscope_pktid_l4(const uint8_t *p, uint64_t w0, uint32_t proto, uint32_t icmp,
		uint32_t l4, uint32_t end)
{
	uint64_t w1 = 0, w2, w3;
	uint32_t pay = l4;

	if (proto == 6 && l4 + 20 <= end) {
		w1 = mscope_be64(p + l4 + 4);   /* seq << 32 | ack */
		pay = l4 + (uint32_t)(p[l4 + 12] >> 4) * 4U;
	} else if (proto == 17 || proto == icmp) {
		/* UDP: ports, length, checksum.  ICMP(v6): type, code, checksum,
		 * then the echo id a NAT may rewrite and the sequence number. */
		pay = l4 + 8;
	}
	if (pay + 16 <= end) {          /* the common case: both words whole */
		memcpy(&w2, p + pay, 8);
		memcpy(&w3, p + pay + 8, 8);
	} else {
		w2 = mscope_load_le(p, pay, end);
		w3 = mscope_load_le(p, pay + 8, end);
	}
	return mscope_pktid_mix(w0, w1, w2, w3);
}

/* Where the L3 header starts in a frame of len >= 14 bytes: 14, or 18
 * behind one 802.1Q / 802.1ad tag; *etype gets the ethertype found there. */
static inline uint32_t
mscope_l3_offset(const uint8_t *p, uint32_t len, uint32_t *etype)
{
	*etype = mscope_be16(p + 12);
	if ((*etype == 0x8100 || *etype == 0x88a8) && len >= 18) {
		*etype = mscope_be16(p + 16);
		return 18;
	}
	return 14;
}

/* The IPv4 header length when an IPv4 header (version 4, IHL >= 5, its 20
 * fixed bytes within len) starts at l3, else 0: what makes a frame IPv4 for
 * the id and for the address words alike. */
static inline uint32_t
mscope_ipv4_ihl(const uint8_t *p, uint32_t len, uint32_t l3, uint32_t etype)
{
	uint32_t ihl;

	if (etype != 0x0800 || len < l3 + 20 || (p[l3] >> 4) != 4)
		return 0;
	ihl = (p[l3] & 0xfU) * 4U;
	return ihl >= 20 ? ihl : 0;
}

static inline MSCOPE_PKTID_INLINE uint64_t
mscope_pktid_bytes(const uint8_t *p, uint32_t len, uint32_t pkt_len)
{
	uint32_t l3, etype, ihl, tot, frag, proto, end;
	uint64_t w0;

	if (len < 14)
		return mscope_pktid_mix(pkt_len, mscope_load_le(p, 0, len), 0, 0);
	l3 = mscope_l3_offset(p, len, &etype);
	if ((ihl = mscope_ipv4_ihl(p, len, l3, etype)) != 0) {
		/* version/IHL, DSCP/ECN, total length, id, flags/fragment
		 * offset in one load (the 20 header bytes are within len) */
		const uint64_t x = mscope_be64(p + l3);

		tot = (uint32_t)(x >> 32) & 0xffffU;
		frag = (uint32_t)x & 0x3fffU;
		proto = p[l3 + 9];
		w0 = (x & 0xffff0000ULL) << 32 | (x & 0xffff00000000ULL) |
		     (uint64_t)frag << 16 | proto << 8 | 4U;
		end = l3 + tot < len ? l3 + tot : len;
		if ((frag & 0x1fffU) != 0)  /* not the first fragment: no L4 header */
			return mscope_pktid_mix(w0, 0,
						mscope_load_le(p, l3 + ihl, end),
						mscope_load_le(p, l3 + ihl + 8, end));
		return mscope_pktid_l4(p, w0, proto, 1, l3 + ihl, end);
	}
	if (etype == 0x86dd && len >= l3 + 40 && (p[l3] >> 4) == 6) {
		tot = mscope_be16(p + l3 + 4);          /* payload length */
		proto = p[l3 + 6];                      /* next header */
		w0 = (uint64_t)tot << 32 | proto << 8 | 6U;
		end = l3 + 40 + tot < len ? l3 + 40 + tot : len;
		return mscope_pktid_l4(p, w0, proto, 58, l3 + 40, end);
	}
	return mscope_pktid_mix((uint64_t)pkt_len << 16 | etype,
				mscope_load_le(p, 14, len),
				mscope_load_le(p, 22, len),
				mscope_load_le(p, 30, len < 38 ? len : 38));
}

/*
 * The word of an address record (MSCOPE_REC_F_ADDR in mscope_record.h):
 * src << 32 | dst of a frame that is IPv4 as mscope_pktid_bytes parses it
 * (untagged or behind one tag), the addresses as numbers (10.0.0.1 is
 * 0x0a000001); 0 for any other frame.  The addresses (frame bytes 26..33,
 * or 30..37 when tagged) share the first cache line with the fields the id
 * reads, so right after mscope_pktid_bytes they are in cache.
 */
static inline uint64_t
mscope_ipv4_addrs_bytes(const uint8_t *p, uint32_t len)
{
	uint32_t l3, etype;

	if (len < 14)
		return 0;
	l3 = mscope_l3_offset(p, len, &etype);
	if (mscope_ipv4_ihl(p, len, l3, etype) == 0)
		return 0;
	return mscope_be32(p + l3 + 12) << 32 | mscope_be32(p + l3 + 16);
}

#endif /* MSCOPE_PKTID_H */
