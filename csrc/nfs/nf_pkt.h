/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Header access for the sample NFs: untagged Ethernet + IPv4 (+ TCP/UDP),
 * the only frames the testbed's source builds.  Anything else is "not
 * IPv4" to them (each NF says what it does with such frames).
 */
#ifndef NF_PKT_H
#define NF_PKT_H

#include <stdint.h>

#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_jhash.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>
#include <rte_udp.h>

/* A flow's 5-tuple in host order; 16 bytes, padding zeroed, usable as a
 * hash key as is. */
struct nf_tuple {
	uint32_t src, dst;
	uint16_t sport, dport;
	uint8_t proto;
	uint8_t pad[3];
};

/* The IPv4 header of an untagged Ethernet/IPv4 frame whose header fits in
 * the first segment, else NULL. */
static inline struct rte_ipv4_hdr *
nf_ipv4(struct rte_mbuf *m)
{
	struct rte_ether_hdr *eth;
	struct rte_ipv4_hdr *ip;

	if (rte_pktmbuf_data_len(m) < sizeof(*eth) + sizeof(*ip))
		return NULL;
	eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
		return NULL;
	ip = (struct rte_ipv4_hdr *)(eth + 1);
	if ((ip->version_ihl >> 4) != 4 || (ip->version_ihl & 0xf) < 5)
		return NULL;
	return ip;
}

static inline unsigned
nf_ipv4_hlen(const struct rte_ipv4_hdr *ip)
{
	return (ip->version_ihl & 0xf) * 4u;
}

/* TCP or UDP header of `ip` in `m` (first fragment, header in the first
 * segment), else NULL. */
static inline void *
nf_l4(struct rte_mbuf *m, struct rte_ipv4_hdr *ip)
{
	unsigned off = (unsigned)((uint8_t *)ip - rte_pktmbuf_mtod(m, uint8_t *)) + nf_ipv4_hlen(ip);
	unsigned need = ip->next_proto_id == IPPROTO_TCP ? sizeof(struct rte_tcp_hdr)
			: ip->next_proto_id == IPPROTO_UDP ? sizeof(struct rte_udp_hdr) : 0;

	if (need == 0 || (rte_be_to_cpu_16(ip->fragment_offset) & RTE_IPV4_HDR_OFFSET_MASK) != 0 ||
	    off + need > rte_pktmbuf_data_len(m))
		return NULL;
	return rte_pktmbuf_mtod_offset(m, uint8_t *, off);
}

/* Fill `t` from `m`; returns 0, or -1 for a frame that is not IPv4 (then
 * `t` is zero).  Ports are 0 for protocols other than TCP and UDP. */
static inline int
nf_tuple_of(struct rte_mbuf *m, struct nf_tuple *t)
{
	struct rte_ipv4_hdr *ip = nf_ipv4(m);
	uint16_t *ports;

	*t = (struct nf_tuple){0};
	if (ip == NULL)
		return -1;
	t->src = rte_be_to_cpu_32(ip->src_addr);
	t->dst = rte_be_to_cpu_32(ip->dst_addr);
	t->proto = ip->next_proto_id;
	ports = nf_l4(m, ip);
	if (ports != NULL) {
		t->sport = rte_be_to_cpu_16(ports[0]);
		t->dport = rte_be_to_cpu_16(ports[1]);
	}
	return 0;
}

static inline uint32_t
nf_tuple_hash(const struct nf_tuple *t)
{
	return rte_jhash_32b((const uint32_t *)t, sizeof(*t) / 4, 0x6d73636fU);
}

/* RFC 1624 incremental checksum update: `sum` (network order) after a
 * 16-bit word changed from `old` to `new` (network order). */
static inline uint16_t
nf_csum_update16(uint16_t sum, uint16_t old, uint16_t new)
{
	uint32_t s = (uint16_t)~rte_be_to_cpu_16(sum);

	s += (uint16_t)~rte_be_to_cpu_16(old);
	s += rte_be_to_cpu_16(new);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return rte_cpu_to_be_16((uint16_t)~s);
}

static inline uint16_t
nf_csum_update32(uint16_t sum, uint32_t old, uint32_t new)
{
	sum = nf_csum_update16(sum, (uint16_t)(old & 0xffff), (uint16_t)(new & 0xffff));
	return nf_csum_update16(sum, (uint16_t)(old >> 16), (uint16_t)(new >> 16));
}

#endif /* NF_PKT_H */
