/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The recorder on real rte_mbuf batches in a real EAL process.
 *   test_recorder_dpdk [EAL args] -- DIR DUMP
 * Checks, in C, what only the recorder can know (stamps carried rx->tx
 * across header rewrites, trust of upstream stamps, splitting, drops on a
 * full ring) and writes (id, frame) pairs to DUMP so the Python test can
 * recompute every id with the independent reference (src/mscope/packet_id.py).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include "mscope_dpdk.h"
#include "mscope_pvt.h"
#include "mscope_reader.h"
#include "check.h"

#define NPKT 1500
#define DUMP_LEN 128


static struct mscope_rec_hdr recs[4096];
static uint64_t ids[1 << 16];

static void
fill(struct rte_mbuf *m, uint32_t i)
{
	uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(p + 14);
	struct rte_udp_hdr *u = (struct rte_udp_hdr *)(ip + 1);
	uint16_t len = 60 + (uint16_t)(i % 7) * 100;
	uint8_t *pay = (uint8_t *)(u + 1);
	uint32_t k;

	memset(p, 0, len);
	p[12] = 0x08;
	ip->version_ihl = 0x45;
	ip->total_length = rte_cpu_to_be_16(len - 14);
	ip->packet_id = rte_cpu_to_be_16((uint16_t)(i * 31));
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_UDP;
	ip->src_addr = rte_cpu_to_be_32(0x0a000001 + i % 50);
	ip->dst_addr = rte_cpu_to_be_32(0xc0a80001);
	u->src_port = rte_cpu_to_be_16(1000 + i % 50);
	u->dst_port = rte_cpu_to_be_16(53);
	u->dgram_len = rte_cpu_to_be_16(len - 34);
	for (k = 0; k < 16; k++)
		pay[k] = (uint8_t)(i * 7 + k * 13);
	m->data_len = len;
	m->pkt_len = len;
}

static long
drain(const char *path, uint64_t *nids)
{
	struct mscope_reader r;
	long got;

	if (mscope_reader_open(path, 1, &r) != 0)
		return -1;
	got = mscope_reader_drain(&r, recs, 4096, ids, 1 << 16, nids);
	mscope_reader_close(&r);
	return got;
}

int
main(int argc, char **argv)
{
	struct rte_mbuf *pkts[NPKT];
	struct rte_mempool *pool;
	struct mscope *a, *b, *c;
	uint64_t nids, rx_ids[NPKT];
	const char *dir, *dump_path;
	FILE *dump;
	long got;
	int rc, i;

	rc = rte_eal_init(argc, argv);
	if (rc < 0) {
		fprintf(stderr, "EAL init failed\n");
		return 2;
	}
	argc -= rc;
	argv += rc;
	if (argc != 3) {
		fprintf(stderr, "usage: test_recorder_dpdk [EAL] -- DIR DUMP\n");
		return 2;
	}
	dir = argv[1];
	dump_path = argv[2];
	pool = rte_pktmbuf_pool_create("t_pool", 4095, 32, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
				       rte_socket_id());
	if (pool == NULL || rte_pktmbuf_alloc_bulk(pool, pkts, NPKT) != 0) {
		fprintf(stderr, "mbuf pool: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	for (i = 0; i < NPKT; i++)
		fill(pkts[i], (uint32_t)i);

	a = mscope_open(&(struct mscope_params){ .nf_name = "nfa", .nf_id = 1, .dir = dir });
	b = mscope_open(&(struct mscope_params){ .nf_name = "nfb", .nf_id = 2, .dir = dir,
						 .flags = MSCOPE_F_TRUST_UPSTREAM });
	c = mscope_open(&(struct mscope_params){ .nf_name = "nfc", .nf_id = 3, .dir = dir,
						 .ring_bytes = 1 << 16 });
	if (a == NULL || b == NULL || c == NULL) {
		fprintf(stderr, "mscope_open: %s\n", strerror(errno));
		return 2;
	}

	/* NF a: rx 1500 packets (split into 1024 + 476), rewrite addresses,
	 * ports and -- like an encrypting NF -- the payload, then tx. */
	CHECK(mscope_rx(a, 4, 1, pkts, NPKT, 17) == 0, "rx");
	dump = fopen(dump_path, "wb");
	CHECK(dump != NULL, "dump %s", dump_path);
	for (i = 0; i < NPKT; i++) {
		struct rte_mbuf *m = pkts[i];
		uint8_t buf[8 + 4 + DUMP_LEN] = {0};
		uint16_t len = m->data_len < DUMP_LEN ? m->data_len : DUMP_LEN;
		rx_ids[i] = mscope_mbuf_pktid(m);
		memcpy(buf, &rx_ids[i], 8);
		memcpy(buf + 8, &m->pkt_len, 2);
		memcpy(buf + 10, &len, 2);
		memcpy(buf + 12, rte_pktmbuf_mtod(m, uint8_t *), len);
		fwrite(buf, 1, sizeof(buf), dump);
	}
	fclose(dump);
	for (i = 0; i < NPKT; i++) {
		struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(pkts[i], struct rte_ipv4_hdr *, 14);
		uint8_t *pay = (uint8_t *)(ip + 1) + 8;
		ip->src_addr = rte_cpu_to_be_32(0xc6336401);
		pay[0] ^= 0xff;
		pay[9] ^= 0x5a;
	}
	CHECK(mscope_tx(a, 5, 0, pkts, NPKT, MSCOPE_OCC_UNKNOWN) == 0, "tx");
	got = drain(mscope_ring_path(a), &nids);
	CHECK(got == 4, "a: 2 rx + 2 tx records, got %ld", got);
	if (got == 4) {
		CHECK(recs[0].count == 1024 && recs[1].count == 476, "rx split");
		CHECK(recs[0].tsc == recs[1].tsc, "one tsc per call");
		CHECK(recs[0].port == 4 && recs[0].queue == 1 && recs[0].occupancy == 17 &&
		      recs[0].flags == 0, "rx header");
		CHECK(recs[2].flags == MSCOPE_REC_F_TX && recs[2].port == 5 &&
		      recs[2].occupancy == MSCOPE_OCC_UNKNOWN, "tx header");
		for (i = 0; i < NPKT; i++) {
			CHECK(ids[i] == rx_ids[i], "rx id %d", i);
			/* tx carries the rx id although the payload changed. */
			CHECK(ids[NPKT + i] == rx_ids[i], "tx id %d carried", i);
		}
		CHECK(mscope_mbuf_pktid(pkts[0]) != rx_ids[0],
		      "the rewrite did change the header-derived id");
	}

	/* NF b trusts upstream stamps: its rx takes a's tx ids although the
	 * payload no longer hashes to them. */
	CHECK(mscope_rx(b, 0, 0, pkts, 64, MSCOPE_OCC_UNKNOWN) == 0, "b rx");
	CHECK(mscope_tx(b, 0, 0, pkts, 64, MSCOPE_OCC_UNKNOWN) == 0, "b tx");
	got = drain(mscope_ring_path(b), &nids);
	CHECK(got == 2 && nids == 128, "b records %ld", got);
	for (i = 0; i < 64 && got == 2; i++)
		CHECK(ids[i] == rx_ids[i] && ids[64 + i] == rx_ids[i], "b id %d", i);

	/* NF c does not trust: it recomputes from headers at rx.  Its ring is
	 * tiny: the records that do not fit are dropped and counted, and tx
	 * still carries c's rx ids for the packets of dropped rx records. */
	for (i = 0; i < 150; i++)
		mscope_rx(c, 0, 0, pkts, 64, MSCOPE_OCC_UNKNOWN);
	{
		struct mscope_stats st;
		uint64_t fresh = mscope_mbuf_pktid(pkts[0]);
		mscope_get_stats(c, &st);
		CHECK(st.drop_records > 0 && st.records + st.drop_records == 150 &&
		      st.drop_packets == 64 * st.drop_records, "c drops %llu",
		      (unsigned long long)st.drop_records);
		got = drain(mscope_ring_path(c), &nids);
		CHECK(got == (long)st.records && ids[0] == fresh && fresh != rx_ids[0],
		      "c recomputed ids");
		CHECK(mscope_tx(c, 0, 0, pkts, 1, MSCOPE_OCC_UNKNOWN) == 0, "c tx");
		got = drain(mscope_ring_path(c), &nids);
		CHECK(got == 1 && recs[0].seq == 150 && ids[0] == fresh, "c tx after drops");
	}

	/* A packet the NF built itself (never seen at rx) gets its id at tx. */
	{
		struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
		fill(m, 99999);
		CHECK(mscope_tx(a, 0, 0, &m, 1, MSCOPE_OCC_UNKNOWN) == 0, "own tx");
		got = drain(mscope_ring_path(a), &nids);
		CHECK(got == 1 && ids[0] == mscope_mbuf_pktid(m), "own packet id");
		rte_pktmbuf_free(m);
	}
	/* A packet received, dropped, and its mbuf allocated again for a packet
	 * the NF builds: the old stamp must not be taken for the new packet. */
	{
		struct rte_mbuf *m = rte_pktmbuf_alloc(pool), *again;
		uint64_t old_id;
		fill(m, 4242);
		CHECK(mscope_rx(a, 0, 0, &m, 1, MSCOPE_OCC_UNKNOWN) == 0, "rx before drop");
		old_id = mscope_mbuf_pktid(m);
		rte_pktmbuf_free(m);
		again = rte_pktmbuf_alloc(pool);
		CHECK(again == m, "the pool's cache hands the same mbuf back");
		fill(again, 4243);
		CHECK(mscope_tx(a, 0, 0, &again, 1, MSCOPE_OCC_UNKNOWN) == 0, "tx of new packet");
		got = drain(mscope_ring_path(a), &nids);
		CHECK(got == 2 && ids[0] == old_id && ids[1] == mscope_mbuf_pktid(again) &&
		      ids[1] != old_id, "recycled mbuf gets a fresh id");
		rte_pktmbuf_free(again);
	}
	/* Empty polls: nothing until the handle has been quiet for its
	 * idle interval, then an idle-poll record (rx, 0 packets, no ids). */
	{
		struct timespec nap = { 0, 60000 };
		uint64_t interval = a->prod.idle_tsc;

		CHECK(interval > 0, "idle interval set");
		a->prod.idle_tsc = 1ULL << 50;
		CHECK(mscope_rx(a, 0, 0, pkts, 0, 0) == 0 &&
		      drain(mscope_ring_path(a), &nids) == 0, "empty poll, not due");
		a->prod.idle_tsc = interval;
		nanosleep(&nap, NULL);
		CHECK(mscope_rx(a, 0, 0, pkts, 0, 7) == 0, "empty poll, due");
		CHECK(mscope_tx(a, 0, 0, pkts, 0, 0) == 0, "empty tx");
		got = drain(mscope_ring_path(a), &nids);
		CHECK(got == 1 && nids == 0 && recs[0].count == 0 && recs[0].flags == 0 &&
		      recs[0].occupancy == 7, "one idle-poll record (%ld)", got);
	}

	/* mscope_tx_at (vhost enqueue: the TSC read before the send, only the
	 * packets it accepted): the caller's tsc and count, ids from a's rx
	 * stamps although the headers changed since, a fresh id for a
	 * recycled mbuf, nothing for 0 packets. */
	{
		struct rte_mbuf *m = rte_pktmbuf_alloc(pool), *again, *mix[3];
		uint64_t t = rte_rdtsc() - 12345, old_id;

		CHECK(mscope_rx(a, 7, 0, pkts, 40, MSCOPE_OCC_UNKNOWN) == 0, "rx before tx_at");
		fill(m, 5151);
		CHECK(mscope_rx(a, 7, 0, &m, 1, MSCOPE_OCC_UNKNOWN) == 0, "rx of m");
		old_id = mscope_mbuf_pktid(m);
		rte_pktmbuf_free(m);
		again = rte_pktmbuf_alloc(pool);
		CHECK(again == m, "tx_at: the pool's cache hands the same mbuf back");
		fill(again, 5152);
		for (i = 0; i < 40; i++) {   /* rewrite what the hash reads */
			uint8_t *pay = rte_pktmbuf_mtod_offset(pkts[i], uint8_t *, 42);
			pay[1] ^= 0x77;
		}
		mix[0] = pkts[38];        /* received, not yet sent */
		mix[1] = again;
		mix[2] = pkts[39];
		CHECK(mscope_tx_at(a, 0x8003, 1, pkts, 0, MSCOPE_OCC_UNKNOWN, t) == 0, "tx_at 0");
		CHECK(mscope_tx_at(a, 0x8003, 1, pkts, 37, MSCOPE_OCC_UNKNOWN, t) == 0, "tx_at");
		CHECK(mscope_tx_at(a, 0x8003, 1, mix, 3, 5, t + 1) == 0, "tx_at mixed");
		got = drain(mscope_ring_path(a), &nids);
		CHECK(got == 4 && nids == 40 + 1 + 37 + 3, "tx_at records %ld", got);
		if (got == 4) {
			CHECK(recs[2].flags == MSCOPE_REC_F_TX && recs[2].tsc == t &&
			      recs[2].count == 37 && recs[2].port == 0x8003 &&
			      recs[2].queue == 1, "tx_at header");
			CHECK(recs[3].tsc == t + 1 && recs[3].occupancy == 5, "tx_at header 2");
			for (i = 0; i < 37; i++)
				CHECK(ids[41 + i] == ids[i] && ids[i] != mscope_mbuf_pktid(pkts[i]),
				      "tx_at id %d from the rx stamp", i);
			CHECK(ids[41 + 37] == ids[38] && ids[41 + 39] == ids[39], "mixed: stamps");
			CHECK(ids[41 + 38] == mscope_mbuf_pktid(again) && ids[41 + 38] != old_id,
			      "tx_at: recycled mbuf gets a fresh id");
		}
		rte_pktmbuf_free(again);
	}

	/* Batch-only handle: mscope_tx_at writes a 32-byte record with the
	 * caller's tsc and count, and touches no mbuf. */
	{
		struct mscope *d = mscope_open(&(struct mscope_params){
			.nf_name = "nfd", .nf_id = 4, .dir = dir, .flags = MSCOPE_F_NOIDS });
		uint64_t t = 987654321, f0 = pkts[5]->ol_flags;

		CHECK(d != NULL, "open batch-only");
		if (d != NULL) {
			CHECK(mscope_tx_at(d, 2, 3, pkts + 5, 9, MSCOPE_OCC_UNKNOWN, t) == 0, "d tx_at");
			got = drain(mscope_ring_path(d), &nids);
			CHECK(got == 1 && nids == 0 && recs[0].count == 9 && recs[0].tsc == t &&
			      recs[0].flags == (MSCOPE_REC_F_TX | MSCOPE_REC_F_NOIDS),
			      "batch-only tx_at record");
			CHECK(pkts[5]->ol_flags == f0, "batch-only leaves the mbuf alone");
			mscope_close(d);
		}
	}

	rte_pktmbuf_free_bulk(pkts, NPKT);
	/* Refusals: a port without stats is -ENOTSUP, and stays so; a port
	 * with them (net_null: imissed never grows) is read, first as where
	 * counting starts, and no record is written for nothing refused.  The
	 * growth itself needs a PMD that counts it: tests/test_attach.py. */
	{
		uint16_t port;

		CHECK(mscope_dpdk_read_refused(NULL, 0, 0, 0) == -EINVAL, "refused: NULL");
		CHECK(mscope_dpdk_read_refused(a, RTE_MAX_ETHPORTS, 0, 0) == -EINVAL,
		      "refused: port out of range");
		CHECK(mscope_dpdk_read_refused(a, RTE_MAX_ETHPORTS - 1, 0, 0) == -ENOTSUP &&
		      mscope_dpdk_read_refused(a, RTE_MAX_ETHPORTS - 1, 0, 0) == -ENOTSUP,
		      "refused: no such port, twice");
		/* the vdev is on the command line (tests/test_recorder_dpdk.py) */
		if (rte_eth_dev_get_port_by_name("net_null_refused", &port) == 0) {
			CHECK(mscope_dpdk_read_refused(a, port, 0, 3) == 0, "refused: first");
			CHECK(mscope_dpdk_read_refused(a, port, 0, 3) == 0, "refused: none grew");
			got = drain(mscope_ring_path(a), &nids);
			CHECK(got == 0, "refused: no record for nothing refused (%ld)", got);
		} else {
			CHECK(0, "no net_null_refused port");
		}
	}

	mscope_close(a);
	mscope_close(b);
	mscope_close(c);
	rte_eal_cleanup();
	return CHECK_SUMMARY();
}
