/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The consumer side of an mscope ring, for mscope-collect (through the
 * Cython extension) and the C tests.  Needs no DPDK.
 *
 * The ring file is not trusted: its owner may be buggy, stale or hostile.
 * Every size, offset and count read from it is checked before it is used,
 * and every record header is copied out before it is validated, so a
 * producer rewriting the ring under us cannot make the reader read or
 * write out of bounds.  (A producer that truncates the file under us can
 * still raise SIGBUS; only the file's owner can do that, and the file is
 * 0600.)
 */
#ifndef MSCOPE_READER_H
#define MSCOPE_READER_H

#include <stddef.h>
#include <stdint.h>
#include "mscope_record.h"

/* Negative return codes besides -errno. */
enum mscope_reader_err {
	MSCOPE_E_SHORT = 1001,    /* file smaller than its header says */
	MSCOPE_E_MAGIC = 1002,    /* not an mscope ring (or not yet published) */
	MSCOPE_E_VERSION = 1003,  /* ring version this reader does not know */
	MSCOPE_E_SIZE = 1004,     /* header/data sizes invalid */
	MSCOPE_E_INDEX = 1005,    /* head/tail inconsistent */
	MSCOPE_E_RECORD = 1006,   /* malformed record in the data area */
	MSCOPE_E_CLAIMED = 1007,  /* another live reader drains this ring */
	MSCOPE_E_NOTFILE = 1008,  /* not a regular file */
};

struct mscope_reader {
	struct mscope_ring_hdr *hdr;
	const uint8_t *data;
	uint64_t data_size;
	size_t map_len;
	uint64_t tail;        /* our copy of hdr->tail */
	int error;            /* sticky: a corrupt ring stays corrupt */
	uint64_t error_pos;   /* byte count (tail) where it was found */
	int claimed;
	char nf_name[MSCOPE_NAME_LEN];
};

struct mscope_ring_state_snapshot {
	uint64_t head, tail, next_seq, drop_records, drop_packets, tsc_hz;
	uint64_t created_tsc, created_ns, data_size;
	int32_t pid, reader_pid;
	uint32_t state, idle_ns;
	uint16_t nf_id, lcore;
};

/* Map and validate a ring file; claim it for this process when claim != 0.
 * Returns 0 or a negative code (-errno or -MSCOPE_E_*). */
int mscope_reader_open(const char *path, int claim, struct mscope_reader *r);

/*
 * Id words that follow a record header in the ring, and that
 * mscope_reader_drain() copies for it: `count`, except for a batch-only
 * record (MSCOPE_REC_F_NOIDS), which stands for `count` packets and
 * carries none.
 */
static inline uint32_t
mscope_rec_n_ids(const struct mscope_rec_hdr *h)
{
	return (h->flags & MSCOPE_REC_F_NOIDS) ? 0U : h->count;
}

/*
 * Copy up to max_recs records and max_ids packet ids out of the ring and
 * give the space back to the producer.  Records come out as their 32-byte
 * headers, their ids consecutive in ids: mscope_rec_n_ids(&recs[i]) each,
 * which is recs[i].count but 0 for a batch-only record (its count is the
 * batch's packets; no ids exist).  Returns the number of records copied
 * (>= 0), or a negative code when the ring is corrupt and nothing could be
 * copied in this call (once corrupt, every later call returns the same
 * code), or -ENOSPC when ids cannot hold even the next record (give it at
 * least MSCOPE_MAX_BATCH).  *n_ids receives the number of ids copied.
 * ids may be NULL when max_ids is 0 (a ring of batch-only records).
 *
 * A record is corrupt (-MSCOPE_E_RECORD) when its magic or version is
 * wrong, its count exceeds MSCOPE_MAX_BATCH, it is batch-only and an
 * address record at once, it is a refused record with another bit or a
 * count other than 2, or it does not fit below head or before the end
 * of the data area (a batch-only record takes MSCOPE_REC_HDR_SIZE bytes
 * whatever its count).
 */
long mscope_reader_drain(struct mscope_reader *r, struct mscope_rec_hdr *recs,
			 uint32_t max_recs, uint64_t *ids, uint64_t max_ids,
			 uint64_t *n_ids);

void mscope_reader_snapshot(const struct mscope_reader *r,
			    struct mscope_ring_state_snapshot *s);

/* Release the claim and unmap. */
void mscope_reader_close(struct mscope_reader *r);

const char *mscope_reader_strerror(int code);

#endif /* MSCOPE_READER_H */
