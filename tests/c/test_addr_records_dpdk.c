/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Address records (MSCOPE_F_ADDRS) from mscope_rx on real rte_mbuf batches
 * in a real EAL process.
 *   test_addr_records_dpdk [EAL args] -- DIR
 * Checks in C: the words against addresses written into the frames here
 * (IPv4, IPv4 behind a VLAN tag, IPv6, ARP, a truncated IPv4 header), the
 * rx/address pairing, splitting, that tx and a handle without the flag
 * write none, and drops on a full ring.  Leaves one undrained rx/address
 * pair of the mixed batch in DIR/nfd.*.ring for the Python side to read
 * through the collector's RingReader.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_byteorder.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include "mscope_dpdk.h"
#include "mscope_pvt.h"
#include "mscope_reader.h"
#include "check.h"

#define NPKT 1500
#define NMIX 6

static struct mscope_rec_hdr recs[4096];
static uint64_t ids[1 << 16];

/* IPv4/UDP from src to dst (as numbers), 16 payload bytes; tag: behind an
 * 802.1Q tag. */
static void
fill_ipv4(struct rte_mbuf *m, uint32_t src, uint32_t dst, uint32_t i, int tag)
{
	uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *);
	const uint16_t l3 = tag ? 18 : 14, len = l3 + 20 + 8 + 16;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(p + l3);
	struct rte_udp_hdr *u = (struct rte_udp_hdr *)(ip + 1);
	uint32_t k;

	memset(p, 0, len);
	if (tag) {
		p[12] = 0x81;
		p[15] = 10;       /* VID 10 */
	}
	p[l3 - 2] = 0x08;
	ip->version_ihl = 0x45;
	ip->total_length = rte_cpu_to_be_16(len - l3);
	ip->packet_id = rte_cpu_to_be_16((uint16_t)(i * 31));
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_UDP;
	ip->src_addr = rte_cpu_to_be_32(src);
	ip->dst_addr = rte_cpu_to_be_32(dst);
	u->src_port = rte_cpu_to_be_16((uint16_t)(1000 + i));
	u->dst_port = rte_cpu_to_be_16(53);
	u->dgram_len = rte_cpu_to_be_16(24);
	for (k = 0; k < 16; k++)
		((uint8_t *)(u + 1))[k] = (uint8_t)(i * 7 + k * 13);
	m->data_len = len;
	m->pkt_len = len;
}

/* IPv6/UDP 2001:db8::1 -> 2001:db8::2. */
static void
fill_ipv6(struct rte_mbuf *m)
{
	uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *);
	const uint16_t len = 14 + 40 + 8 + 16;

	memset(p, 0, len);
	p[12] = 0x86;
	p[13] = 0xdd;
	p[14] = 0x60;
	p[19] = 24;               /* payload length */
	p[20] = IPPROTO_UDP;
	p[21] = 64;
	p[22] = 0x20; p[23] = 0x01; p[24] = 0x0d; p[25] = 0xb8; p[37] = 1;
	p[38] = 0x20; p[39] = 0x01; p[40] = 0x0d; p[41] = 0xb8; p[53] = 2;
	m->data_len = len;
	m->pkt_len = len;
}

/* An ARP request: its sender/target addresses are not an IPv4 header's. */
static void
fill_arp(struct rte_mbuf *m)
{
	uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *);

	memset(p, 0, 60);
	memset(p, 0xff, 6);
	p[12] = 0x08;
	p[13] = 0x06;
	p[15] = 1; p[16] = 0x08; p[18] = 6; p[19] = 4; p[21] = 1;
	p[28] = 10; p[31] = 1;    /* sender 10.0.0.1 */
	p[38] = 10; p[41] = 2;    /* target 10.0.0.2 */
	m->data_len = 60;
	m->pkt_len = 60;
}

/* The mixed batch and the word each packet must get. */
static void
fill_mix(struct rte_mbuf **mix, uint64_t *want)
{
	fill_ipv4(mix[0], 0x0a010203, 0xc0a80a0b, 1, 0);      /* 10.1.2.3 -> 192.168.10.11 */
	want[0] = 0x0a010203c0a80a0bULL;
	fill_ipv6(mix[1]);
	want[1] = 0;
	fill_ipv4(mix[2], 0xac100005, 0x08080808, 2, 1);      /* tagged 172.16.0.5 -> 8.8.8.8 */
	want[2] = 0xac10000508080808ULL;
	fill_arp(mix[3]);
	want[3] = 0;
	fill_ipv4(mix[4], 0xfffffffe, 0x80000001, 4, 0);      /* the top bits survive */
	want[4] = 0xfffffffe80000001ULL;
	fill_ipv4(mix[5], 0x0a000063, 0x0a000064, 5, 0);
	mix[5]->data_len = 14 + 19;                          /* header cut short */
	mix[5]->pkt_len = 14 + 19;
	want[5] = 0;
}

static long
drain(const struct mscope *ms, uint64_t *nids)
{
	struct mscope_reader r;
	long got;

	if (mscope_reader_open(mscope_ring_path(ms), 1, &r) != 0)
		return -1;
	got = mscope_reader_drain(&r, recs, 4096, ids, 1 << 16, nids);
	mscope_reader_close(&r);
	return got;
}

/* recs[i] and recs[i + 1]: an rx record and its address record. */
static void
check_pair(long i)
{
	const struct mscope_rec_hdr *rx = &recs[i], *ad = &recs[i + 1];

	CHECK(rx->flags == 0 && ad->flags == MSCOPE_REC_F_ADDR, "flags %u %u at %ld",
	      rx->flags, ad->flags, i);
	CHECK(ad->seq == rx->seq + 1 && ad->tsc == rx->tsc && ad->count == rx->count &&
	      ad->port == rx->port && ad->queue == rx->queue &&
	      ad->occupancy == rx->occupancy, "address header at %ld", i);
}

static uint64_t
header_word(const struct rte_mbuf *m)
{
	const struct rte_ipv4_hdr *ip =
		rte_pktmbuf_mtod_offset(m, const struct rte_ipv4_hdr *, 14);

	return (uint64_t)rte_be_to_cpu_32(ip->src_addr) << 32 | rte_be_to_cpu_32(ip->dst_addr);
}

int
main(int argc, char **argv)
{
	struct rte_mbuf *pkts[NPKT], *mix[NMIX];
	struct rte_mempool *pool;
	struct mscope *plain, *d, *e;
	struct mscope_stats st;
	uint64_t nids, want[NMIX];
	const char *dir;
	long got;
	int rc, i;

	rc = rte_eal_init(argc, argv);
	if (rc < 0) {
		fprintf(stderr, "EAL init failed\n");
		return 2;
	}
	argc -= rc;
	argv += rc;
	if (argc != 2) {
		fprintf(stderr, "usage: test_addr_records_dpdk [EAL] -- DIR\n");
		return 2;
	}
	dir = argv[1];
	pool = rte_pktmbuf_pool_create("t_pool", 2047, 32, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
				       rte_socket_id());
	if (pool == NULL || rte_pktmbuf_alloc_bulk(pool, pkts, NPKT) != 0 ||
	    rte_pktmbuf_alloc_bulk(pool, mix, NMIX) != 0) {
		fprintf(stderr, "mbuf pool: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	for (i = 0; i < NPKT; i++)
		fill_ipv4(pkts[i], 0x0a000000 + (uint32_t)i, 0xc0a80001 + (uint32_t)(i % 7),
			  (uint32_t)i, 0);
	fill_mix(mix, want);

	plain = mscope_open(&(struct mscope_params){ .nf_name = "nfplain", .nf_id = 1,
						     .dir = dir });
	d = mscope_open(&(struct mscope_params){ .nf_name = "nfd", .nf_id = 4, .dir = dir,
						 .flags = MSCOPE_F_ADDRS });
	e = mscope_open(&(struct mscope_params){ .nf_name = "nfe", .nf_id = 5, .dir = dir,
						 .ring_bytes = 1 << 16,
						 .flags = MSCOPE_F_ADDRS });
	if (plain == NULL || d == NULL || e == NULL) {
		fprintf(stderr, "mscope_open: %s\n", strerror(errno));
		return 2;
	}

	/* The mixed batch: IPv4 words, 0 for what is not IPv4. */
	CHECK(mscope_rx(d, 3, 2, mix, NMIX, 9) == 0, "d rx");
	got = drain(d, &nids);
	CHECK(got == 2 && nids == 2 * NMIX, "d: rx + address record, got %ld", got);
	if (got == 2) {
		check_pair(0);
		CHECK(recs[0].port == 3 && recs[0].queue == 2 && recs[0].occupancy == 9 &&
		      recs[0].count == NMIX && recs[0].nf_id == 4, "rx header");
		for (i = 0; i < NMIX; i++) {
			CHECK(ids[i] == mscope_mbuf_pktid(mix[i]), "id %d", i);
			CHECK(ids[NMIX + i] == want[i], "word %d: %016llx want %016llx", i,
			      (unsigned long long)ids[NMIX + i], (unsigned long long)want[i]);
		}
	}
	/* tx never writes address records. */
	CHECK(mscope_tx(d, 1, 0, mix, NMIX, MSCOPE_OCC_UNKNOWN) == 0, "d tx");
	got = drain(d, &nids);
	CHECK(got == 1 && recs[0].flags == MSCOPE_REC_F_TX && recs[0].seq == 2,
	      "d tx: one tx record, got %ld", got);

	/* 1500 packets: rx/address pairs of 1024 and 476, one tsc. */
	CHECK(mscope_rx(d, 0, 0, pkts, NPKT, MSCOPE_OCC_UNKNOWN) == 0, "d big rx");
	got = drain(d, &nids);
	CHECK(got == 4 && nids == 2 * NPKT, "d big: %ld records", got);
	if (got == 4) {
		check_pair(0);
		check_pair(2);
		CHECK(recs[0].count == 1024 && recs[2].count == 476, "split counts");
		CHECK(recs[0].tsc == recs[3].tsc && recs[0].seq == 3 && recs[3].seq == 6,
		      "one tsc, consecutive seqs");
		for (i = 0; i < NPKT; i++) {
			const uint64_t off = i < 1024 ? 1024 + (uint64_t)i : 2048 + 476 + (uint64_t)(i - 1024);

			if (ids[off] != header_word(pkts[i]) ||
			    ids[off] != ((uint64_t)(0x0a000000 + i) << 32 | (0xc0a80001 + i % 7))) {
				CHECK(0, "big word %d", i);
				break;
			}
		}
	}

	/* Without the flag: rx and tx records only. */
	CHECK(mscope_rx(plain, 0, 0, mix, NMIX, MSCOPE_OCC_UNKNOWN) == 0 &&
	      mscope_tx(plain, 0, 0, mix, NMIX, MSCOPE_OCC_UNKNOWN) == 0, "plain rx, tx");
	got = drain(plain, &nids);
	CHECK(got == 2 && recs[0].flags == 0 && recs[1].flags == MSCOPE_REC_F_TX &&
	      recs[1].seq == 1, "plain: no address record, got %ld", got);

	/* A 64 KiB ring: 59 rx/address pairs of 64 packets (1088 bytes each),
	 * then a raw rx record of 96 ids leaves room for one 64-packet rx
	 * record and not its address record; the next rx does not fit. */
	for (i = 0; i < 59; i++)
		CHECK(mscope_rx(e, 0, 0, pkts + 64 * (i % 23), 64, MSCOPE_OCC_UNKNOWN) == 0, "e pair %d", i);
	CHECK(mscope_rx_ids(e, 0, 0, ids, 96, MSCOPE_OCC_UNKNOWN) == 0, "e raw rx");
	CHECK(e->prod.head == (1 << 16) - MSCOPE_REC_SIZE(64), "room for one rx record");
	rc = mscope_rx(e, 0, 0, pkts, 64, MSCOPE_OCC_UNKNOWN);
	CHECK(rc == -ENOBUFS, "address record past full: %d", rc);
	rc = mscope_rx(e, 0, 0, pkts + 64, 64, MSCOPE_OCC_UNKNOWN);
	CHECK(rc == -ENOBUFS, "rx past full: %d", rc);
	mscope_get_stats(e, &st);
	CHECK(st.records == 120 && st.drop_records == 2 && st.drop_packets == 64 &&
	      e->prod.seq == 122, "e: records %llu drops %llu/%llu",
	      (unsigned long long)st.records, (unsigned long long)st.drop_records,
	      (unsigned long long)st.drop_packets);
	got = drain(e, &nids);
	CHECK(got == 120, "e drained %ld", got);
	if (got == 120) {
		for (i = 0; i < 118; i += 2)
			check_pair(i);
		CHECK(recs[118].seq == 118 && recs[118].count == 96 &&
		      recs[119].seq == 119 && recs[119].flags == 0 && recs[119].count == 64,
		      "the raw rx, then the rx whose address record was dropped");
	}

	/* Left for the Python side: the mixed batch once more, undrained. */
	CHECK(mscope_rx(d, 3, 2, mix, NMIX, 9) == 0, "d rx for Python");

	rte_pktmbuf_free_bulk(pkts, NPKT);
	rte_pktmbuf_free_bulk(mix, NMIX);
	mscope_close(plain);
	mscope_close(d);
	mscope_close(e);
	rte_eal_cleanup();
	return CHECK_SUMMARY();
}
