# cython: language_level=3, boundscheck=False, wraparound=False
"""Drain mscope rings into numpy arrays (thin layer over csrc/mscope_reader.c).

The byte work is in C; this file declares it, releases the GIL around the
copy and hands out arrays.  Records come out as RING_RECORD_DTYPE (the
32-byte record header of csrc/mscope_record.h), their packet ids as one
uint64 array in record order: ``count`` ids per record, none for a
batch-only record (REC_F_NOIDS, whose ``count`` is the batch's packets);
``mscope.record.id_counts(records)`` says how many each.
"""
import os

import numpy as np

from mscope.errors import RingClaimedError, RingFormatError
from mscope.record import RING_RECORD_DTYPE

from libc.stdint cimport int32_t, uint16_t, uint32_t, uint64_t


cdef extern from "mscope_record.h":
    cdef enum:
        MSCOPE_MAX_BATCH
    struct mscope_rec_hdr:
        pass

cdef extern from "mscope_ring.h":
    uint64_t mscope_rdtsc() nogil

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    enum: CLOCK_MONOTONIC

cdef extern from "mscope_reader.h":
    cdef enum:
        MSCOPE_E_CLAIMED
    struct mscope_reader:
        uint64_t data_size
        int error
        uint64_t error_pos
        char nf_name[32]
    struct mscope_ring_state_snapshot:
        uint64_t head, tail, next_seq, drop_records, drop_packets, tsc_hz
        uint64_t created_tsc, created_ns, data_size
        int32_t pid, reader_pid
        uint32_t state, idle_ns
        uint16_t nf_id, lcore
    int mscope_reader_open(const char *path, int claim, mscope_reader *r)
    long mscope_reader_drain(mscope_reader *r, mscope_rec_hdr *recs,
                             uint32_t max_recs, uint64_t *ids, uint64_t max_ids,
                             uint64_t *n_ids) nogil
    void mscope_reader_snapshot(const mscope_reader *r,
                                mscope_ring_state_snapshot *s)
    void mscope_reader_close(mscope_reader *r)
    const char *mscope_reader_strerror(int code)

MAX_BATCH = MSCOPE_MAX_BATCH


cdef inline uint64_t _mono_ns() nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


def rdtsc():
    """The TSC of the core this runs on (the same counter the recorder reads)."""
    return mscope_rdtsc()


def tsc_monotonic_pair(int tries=9):
    """One (tsc, monotonic_ns, window_ns) sample for TSC calibration.

    Reads CLOCK_MONOTONIC, the TSC, CLOCK_MONOTONIC again, `tries` times,
    and keeps the try with the narrowest window: the TSC was read within
    ``window_ns`` of ``monotonic_ns`` (the window's midpoint).
    """
    cdef uint64_t a, t, b, best_t = 0, best_mid = 0, best_w = <uint64_t>-1
    cdef int i
    with nogil:
        for i in range(max(tries, 1)):
            a = _mono_ns()
            t = mscope_rdtsc()
            b = _mono_ns()
            if b - a < best_w:
                best_w = b - a
                best_t = t
                best_mid = a + (b - a) // 2
    return best_t, best_mid, best_w
RING_STATES = {1: "open", 2: "closed"}


cdef raise_for(int code, str path, object pos=None):
    msg = mscope_reader_strerror(code).decode()
    where = f"{path}" if pos is None else f"{path} at byte {pos}"
    if -code == MSCOPE_E_CLAIMED:
        raise RingClaimedError(f"{where}: {msg}")
    if -code < 1000:
        raise OSError(-code, f"{where}: {msg}")
    raise RingFormatError(f"{where}: {msg}")


cdef class RingReader:
    """One mscope ring file, mapped and claimed for draining.

    Parameters
    ----------
    path : str or os.PathLike
        A ``*.ring`` file in the registry directory.
    claim : bool
        Take the ring's single-reader claim (default).  Two live readers
        would split the records between them; the second gets
        RingClaimedError.

    Raises
    ------
    RingFormatError
        The file is not a valid ring (magic, version, sizes).
    RingClaimedError
        Another live process drains this ring.
    OSError
        The file cannot be opened or mapped.
    """
    cdef mscope_reader r
    cdef readonly str path
    cdef bint is_open
    cdef object _records, _ids   # drain()'s buffers, reused across calls

    def __cinit__(self, path, bint claim=True):
        self.path = os.fspath(path)
        self.is_open = False
        rc = mscope_reader_open(os.fsencode(self.path), claim, &self.r)
        if rc < 0:
            raise_for(rc, self.path)
        self.is_open = True

    def __dealloc__(self):
        if self.is_open:
            mscope_reader_close(&self.r)

    def close(self):
        """Release the claim and unmap; further calls raise ValueError."""
        if self.is_open:
            mscope_reader_close(&self.r)
            self.is_open = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    cdef check_open(self):
        if not self.is_open:
            raise ValueError(f"{self.path}: ring reader is closed")

    @property
    def nf_name(self):
        self.check_open()
        return self.r.nf_name.decode(errors="replace")

    def drain_into(self, records, ids):
        """Drain into preallocated arrays; return (n_records, n_ids).

        Parameters
        ----------
        records : ndarray of RING_RECORD_DTYPE, C-contiguous, writeable
        ids : ndarray of uint64, C-contiguous, writeable
            At least MAX_BATCH (1024) long, so any one record fits.

        Returns
        -------
        (int, int)
            Records and ids written at the start of each array.  Stops when
            either array is full or the ring is empty.  The ids are those of
            the records in order, ``mscope.record.id_counts(records)`` each:
            ``count``, but none for a batch-only record (REC_F_NOIDS), so a
            drain of batch-only records returns ``(n, 0)`` and never needs
            id room.  No allocation: the C reader copies into the arrays.

        Raises
        ------
        RingFormatError
            The ring holds a malformed record (where is in the message),
            a batch-only address record among them.  Records before it
            were returned by earlier calls.
        """
        self.check_open()
        if records.dtype != RING_RECORD_DTYPE or not records.flags.c_contiguous:
            raise TypeError("records must be a C-contiguous RING_RECORD_DTYPE array")
        cdef unsigned char[::1] rec_bytes = records.view(np.uint8)
        cdef uint64_t[::1] id_view = ids
        if id_view.shape[0] < MSCOPE_MAX_BATCH:
            raise ValueError(f"ids must hold at least {MSCOPE_MAX_BATCH} ids "
                             f"(one full record), got {id_view.shape[0]}")
        cdef uint32_t max_recs = <uint32_t>min(records.shape[0], 0xffffffff)
        cdef uint64_t max_ids = id_view.shape[0]
        cdef uint64_t n_ids = 0
        cdef long got
        cdef mscope_rec_hdr *rec_ptr = <mscope_rec_hdr *>&rec_bytes[0] if rec_bytes.shape[0] else NULL
        cdef uint64_t dummy_id = 0
        cdef uint64_t *id_ptr = &id_view[0] if max_ids else &dummy_id
        if max_recs == 0:
            return 0, 0
        with nogil:
            got = mscope_reader_drain(&self.r, rec_ptr, max_recs, id_ptr, max_ids, &n_ids)
        if got < 0:
            raise_for(got, self.path, self.r.error_pos)
        return got, n_ids

    def drain(self, max_records=65536, max_ids=None):
        """Drain up to max_records records; return new (records, ids) arrays.

        ``ids`` holds ``mscope.record.id_counts(records).sum()`` ids, record
        after record (``count`` each, none for a batch-only record).
        max_ids defaults to max_records * 32 (at least MAX_BATCH).  The
        working buffers are kept between calls; the arrays returned are the
        caller's.  A loop that drains continuously should call drain_into()
        with its own arrays and save the copy.
        """
        if max_ids is None:
            max_ids = max_records * 32
        max_ids = max(max_ids, MSCOPE_MAX_BATCH)
        if self._records is None or len(self._records) != max_records:
            self._records = np.empty(max_records, dtype=RING_RECORD_DTYPE)
        if self._ids is None or len(self._ids) != max_ids:
            self._ids = np.empty(max_ids, dtype=np.uint64)
        n, k = self.drain_into(self._records, self._ids)
        return self._records[:n].copy(), self._ids[:k].copy()

    def state(self):
        """The ring's counters now, as a dict (see docs/record-format.md)."""
        self.check_open()
        cdef mscope_ring_state_snapshot s
        mscope_reader_snapshot(&self.r, &s)
        return {
            "path": self.path, "nf_name": self.nf_name, "nf_id": s.nf_id,
            "lcore": s.lcore, "pid": s.pid, "reader_pid": s.reader_pid,
            "state": RING_STATES.get(s.state, f"unknown({s.state})"),
            "data_size": s.data_size, "head": s.head, "tail": s.tail,
            "pending_bytes": s.head - s.tail, "next_seq": s.next_seq,
            "drop_records": s.drop_records, "drop_packets": s.drop_packets,
            "tsc_hz": s.tsc_hz, "created_tsc": s.created_tsc,
            "created_ns": s.created_ns, "idle_ns": s.idle_ns,
        }
