/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * mscope record and ring layout: the one definition used by the C fast path,
 * the Cython reader and (through docs/record-format.md, which mirrors it
 * field by field) the numpy dtypes in src/mscope/record.py.
 *
 * Everything here is little-endian and naturally aligned: the recorder runs
 * on x86-64/aarch64 hosts and the reader maps the same memory, so no byte
 * swapping is ever done.  A big-endian host is refused at compile time.
 *
 * A ring file is a header page followed by a power-of-two data area:
 *
 *   0     struct mscope_ring_hdr   (MSCOPE_RING_HDR_SIZE = 4096 bytes)
 *   4096  data[data_size]          records, 8-byte aligned, wrapping
 *
 * A record is a fixed 32-byte header plus `count` 64-bit packet ids:
 *
 *   off size field
 *   0   2    magic      MSCOPE_REC_MAGIC
 *   2   1    version    MSCOPE_REC_VERSION
 *   3   1    flags      MSCOPE_REC_F_*  (bit 0: tx; bit 1: address;
 *                                         bit 2: batch-only; bit 3: refused;
 *                                         bit 7: padding)
 *   4   2    nf_id      the NF's numeric id (manifest maps it to a name)
 *   6   2    port       ethdev port or ring index the batch came from/went to
 *   8   2    queue      queue on that port
 *   10  2    count      packet ids that follow (<= MSCOPE_MAX_BATCH)
 *   12  4    occupancy  input-queue occupancy, MSCOPE_OCC_UNKNOWN if none
 *   16  8    tsc        one TSC read per batch
 *   24  8    seq        per-ring record sequence; records dropped on a full
 *                       ring consume a number too, so a gap is a loss
 *   32  8*count ids
 *
 * An address record (flags bit 1, MSCOPE_REC_F_ADDR; written only when the
 * recorder is asked to, see MSCOPE_F_ADDRS in mscope.h) names the packets of
 * the rx record just before it, so the analyzer can name flow prefixes:
 * ids hash the headers and cannot be turned back into addresses.
 *   - Its `count` words are, in the rx record's packet order,
 *       ((uint64_t)src_ipv4 << 32) | dst_ipv4
 *     with the addresses as numbers (10.0.0.1 is 0x0a000001: the host-order
 *     value of the network-order header field), for IPv4 untagged or
 *     behind one 802.1Q/802.1ad tag (as the packet id parses it), and 0
 *     for any other packet (IPv6, ARP, ...).
 *   - It is written right after that rx record: same port, queue, count,
 *     occupancy and tsc, seq one more.  Only after an rx record that was
 *     written: a dropped rx record has no address record (and its seq is
 *     the only one consumed).  An address record that does not fit is
 *     dropped and counted as a record (drop_records; not in drop_packets:
 *     its packets are in the rx record), so a missing seq right after a
 *     present rx record of a recorder writing addresses is that record's
 *     address record.
 *   - Never after a tx record.
 *
 * A batch-only record (flags bit 2, MSCOPE_REC_F_NOIDS; written only when
 * the recorder is asked to, see MSCOPE_F_NOIDS in mscope.h) is the 32-byte
 * header alone: `count` is the number of packets in the batch and NO id
 * words follow, so the record is MSCOPE_REC_HDR_SIZE bytes whatever its
 * count.  Every other field means what it does in a full rx or tx record
 * (bit 0 still says tx).  It is for NFs where reading packet headers is
 * most of the recording cost (testpmd io forwarding): the analyzer gets
 * batch times and counts, not packets.  A reader that does not know bit 2
 * must not read such a ring: it would take the following records for ids.
 * Never combined with bit 1 (no address records in batch-only mode).
 *
 * An idle-poll record is an rx record with count 0 (no ids; occupancy 0,
 * or MSCOPE_OCC_UNKNOWN where the queue cannot tell): written by an empty
 * poll when the recorder has written nothing for MSCOPE_IDLE_NS, so an NF
 * that polls leaves a record at least that often, and a longer silence is
 * a stop (an interrupt, a stall that began while the queue was empty).
 * Never tx, address or batch-only.
 *
 * A refused record (flags bit 3, MSCOPE_REC_F_REFUSED) says how many
 * packets a port refused at its input since the recorder last asked: the
 * NIC's rte_eth_stats.imissed, which grows while the rx queue is full (the
 * NF stopped or fell behind).  Those packets never reach an rx burst, so
 * no other record has them; for a chain's first NF, fed by a NIC whose
 * sender is not recorded, this is the only trace of its losses.
 *   - `count` is 2 and its two words are
 *       [0] packets refused since the previous reading of that port,
 *       [1] ns since that reading (the window they were refused in),
 *     not packet ids.
 *   - port: the port; queue: the queue being polled when it was read;
 *     occupancy: that queue's when read, MSCOPE_OCC_UNKNOWN if it cannot
 *     say; tsc: when it was read.
 *   - Written only when the count grew.  The attach shim reads a port at
 *     the first poll of every MSCOPE_REFUSED_NS and at the first poll
 *     after a silence (a stop of the NF, seen only where it writes
 *     idle-poll records), so a stop's refusals are read as it ends; a
 *     port whose reading is slow, less often (mscope_attach.c).
 *   - Never combined with another bit.
 *
 * A padding record (flags bit 7) fills the bytes up to the end of the data
 * area when the next record does not fit there; only its first 8 bytes are
 * meaningful and the reader skips to offset 0.
 */
#ifndef MSCOPE_RECORD_H
#define MSCOPE_RECORD_H

#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mscope records are little-endian; big-endian hosts are not supported"
#endif

#define MSCOPE_REC_MAGIC      0x534dU   /* "MS" as little-endian bytes */
#define MSCOPE_REC_VERSION    1
#define MSCOPE_REC_F_TX       0x01U     /* set: tx record; clear: rx record */
#define MSCOPE_REC_F_ADDR     0x02U     /* address record: the words are IPv4
					 * src<<32|dst of the rx record before */
#define MSCOPE_REC_F_NOIDS    0x04U     /* batch-only: count packets, no id
					 * words follow (32-byte record) */
#define MSCOPE_REC_F_REFUSED  0x08U     /* refused: 2 words, packets a port
					 * refused (imissed) and the ns they
					 * were refused in */
#define MSCOPE_REC_F_PAD      0x80U     /* padding to the end of the data area */
#define MSCOPE_OCC_UNKNOWN    0xffffffffU
#define MSCOPE_MAX_BATCH      1024U     /* larger bursts are split by the recorder */
#define MSCOPE_IDLE_NS        20000U    /* an empty poll writes an idle-poll
					 * record when nothing was written for
					 * this long (MSCOPE_IDLE_US sets
					 * another, the ring header says it) */
#define MSCOPE_IDLE_US_MAX    4000000U  /* its largest: 4 s (a u32 of ns) */
#define MSCOPE_REFUSED_NS     1000000U  /* the attach shim reads a port's
					 * refusals at most this often (and
					 * after a silence) */
#define MSCOPE_REC_HDR_SIZE   32U
#define MSCOPE_REC_SIZE(n)    (MSCOPE_REC_HDR_SIZE + 8U * (uint32_t)(n))

struct mscope_rec_hdr {
	uint16_t magic;
	uint8_t  version;
	uint8_t  flags;
	uint16_t nf_id;
	uint16_t port;
	uint16_t queue;
	uint16_t count;
	uint32_t occupancy;
	uint64_t tsc;
	uint64_t seq;
	/* uint64_t ids[count] follow */
};

#define MSCOPE_RING_MAGIC     0x474e495245504f43ULL /* "COPERING" little-endian */
#define MSCOPE_RING_VERSION   1U
#define MSCOPE_RING_HDR_SIZE  4096U
#define MSCOPE_RING_MIN_DATA  (64U * 1024U)
#define MSCOPE_RING_MAX_DATA  (1ULL << 32)
#define MSCOPE_NAME_LEN       32

enum mscope_ring_state {
	MSCOPE_RING_OPEN = 1,    /* producer attached */
	MSCOPE_RING_CLOSED = 2,  /* producer called mscope_close(); drain then unlink */
};

/*
 * The shared header of a ring file.  Three cache lines with one writer each,
 * so the producer's and consumer's stores never share a line:
 *   line 0: identity, written once by the producer before `magic`
 *           (release) publishes the file;
 *   line 1: producer-owned counters;
 *   line 2: consumer-owned tail and claim.
 * `head` and `tail` are byte counts that only grow (mod 2^64); the position
 * in the data area is (count & (data_size - 1)).  head - tail <= data_size
 * always holds for a well-formed ring; the reader checks it.
 */
struct mscope_ring_hdr {
	/* line 0: identity */
	uint64_t magic;           /* MSCOPE_RING_MAGIC; stored last, with release */
	uint32_t version;         /* MSCOPE_RING_VERSION */
	uint32_t hdr_size;        /* MSCOPE_RING_HDR_SIZE: data starts here */
	uint64_t data_size;       /* power of two, MIN_DATA..MAX_DATA */
	uint64_t tsc_hz;          /* producer's TSC rate if known, else 0 */
	int32_t  pid;             /* producer process */
	uint16_t nf_id;
	uint16_t lcore;
	uint64_t created_tsc;     /* TSC and CLOCK_MONOTONIC read back to back */
	uint64_t created_ns;      /* at creation: a first TSC<->ns anchor */
	uint32_t idle_ns;         /* the interval of its idle-poll records
				   * (MSCOPE_IDLE_NS); 0: none (MSCOPE_F_NOIDLE,
				   * or a recorder from before them) */
	uint8_t  pad0[4];
	/* line 1 (offset 64): producer-owned */
	uint64_t head;            /* bytes published; release-stored */
	uint64_t next_seq;        /* seq the next record will take */
	uint64_t drop_records;    /* records lost to a full ring */
	uint64_t drop_packets;    /* packet ids in those records */
	uint32_t state;           /* enum mscope_ring_state */
	uint8_t  pad1[28];
	/* line 2 (offset 128): consumer-owned */
	uint64_t tail;            /* bytes consumed; release-stored */
	int32_t  reader_pid;      /* claimed by one reader at a time (CAS) */
	uint8_t  pad2[52];
	/* line 3 (offset 192): names */
	char     nf_name[MSCOPE_NAME_LEN];
	/* rest of the page reserved, zero */
};

#define MSCOPE_RING_OFF_HEAD  64
#define MSCOPE_RING_OFF_TAIL  128
#define MSCOPE_RING_OFF_NAME  192

#ifdef __cplusplus
#define MSCOPE_STATIC_ASSERT static_assert
#else
#define MSCOPE_STATIC_ASSERT _Static_assert
#endif
MSCOPE_STATIC_ASSERT(sizeof(struct mscope_rec_hdr) == MSCOPE_REC_HDR_SIZE,
		     "record header is 32 bytes");
MSCOPE_STATIC_ASSERT(__builtin_offsetof(struct mscope_ring_hdr, head) == MSCOPE_RING_OFF_HEAD,
		     "head on its own cache line");
MSCOPE_STATIC_ASSERT(__builtin_offsetof(struct mscope_ring_hdr, tail) == MSCOPE_RING_OFF_TAIL,
		     "tail on its own cache line");
MSCOPE_STATIC_ASSERT(__builtin_offsetof(struct mscope_ring_hdr, nf_name) == MSCOPE_RING_OFF_NAME,
		     "name after the consumer line");

#endif /* MSCOPE_RECORD_H */
