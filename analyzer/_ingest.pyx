# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Stage 1's expansion of one stream's records into per-packet arrays: the
optional fast path of mscope.analyzer.ingest, which says what each array
means and keeps the numpy version (``_one_stream_numpy``) as the
reference and the fallback.

The numpy version makes ~10 array passes per side (masks, np.repeat,
gathers, compress): ~0.8 s for the 23.6 M ids of bench/analyze.py's s2
capture.  Here pass 1 over the records counts and checks, pass 2 over
the records and ids writes every output once: ~0.2 s, half of it the
kernel zeroing the outputs' new pages.  (One pass into outputs sized for
every id and cut at the end saved only ~5%, and made tracemalloc, which
the bench's memory run reads, count the whole reservation.)

The records are not trusted: the ids the records claim must be exactly
the ids given; a stream that breaks this, whose times go back, or with
2**31 records or more is declined (None) and left to the numpy version,
which decides what such a stream is.

Build in place: ``cd analyzer && cythonize -i -3 _ingest.pyx``.
"""
from libc.stdint cimport INT32_MAX, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

import numpy as np

__all__ = ["expand_stream"]

# capture_record_t: CAPTURE_RECORD_DTYPE as Cython sees it, declared once
# for this module and the capture reader's checks
include "../src/mscope/capture/_record.pxi"

# flags & 7 (bit 0 tx, 1 address, 2 batch-only): 0 rx, 1 and 3 tx (an
# address bit with tx is tx), 2 address of an rx record, 4-7 no ids
cdef enum:
    KIND_RX = 0
    KIND_TX = 1
    KIND_ADDR = 2
    KIND_NOIDS = 3

cdef uint8_t KIND_OF[8]
KIND_OF[:] = [KIND_RX, KIND_TX, KIND_ADDR, KIND_TX,
              KIND_NOIDS, KIND_NOIDS, KIND_NOIDS, KIND_NOIDS]

cdef uint32_t OCC_UNKNOWN = 0xFFFFFFFF


# One side (rx or tx) of the stream: what pass 1 counts, then the per-id
# outputs pass 2 fills (`n_ids` long each; ids NULL when the side takes
# the stream's ids as they are, port NULL when it has one port).
cdef struct side_t:
    Py_ssize_t n_rec
    Py_ssize_t n_ids
    Py_ssize_t n_batch          # runs of one time among the side's records
    bint one_port               # every record of the side on port0
    uint16_t port0
    uint64_t *ids
    int64_t *ns
    int32_t *batch
    int32_t *port
    Py_ssize_t at               # pass 2: where the next record's ids go
    int32_t b                   # pass 2: the current batch, -1 before the first
    int64_t t                   # its time


cdef struct stream_t:
    side_t rx
    side_t tx
    Py_ssize_t n_addr           # address records
    Py_ssize_t n_addr_ids       # and their words
    Py_ssize_t n_noids          # batch-only records
    Py_ssize_t n_idle           # idle-poll records (rx, count 0)
    int64_t *idle_ns            # pass 2: their times
    Py_ssize_t n_silent         # silences (_heard)
    int64_t *silent             # pass 2: [from, to] pairs
    int64_t silence_ns
    int64_t free_t              # the last tx or idle poll, while
    bint free                   # no batch was taken since
    bint addr_after_rx          # every address record right after its rx one
    int64_t *batch_ns           # per rx batch
    int64_t *batch_occ
    uint64_t *addr              # NULL: address words not copied


cdef inline void _count(side_t *o, const capture_record_t *r, bint new) noexcept nogil:
    if o.n_rec == 0:
        o.one_port, o.port0 = True, r.port
    elif r.port != o.port0:
        o.one_port = False
    o.n_batch += new
    o.n_rec += 1
    o.n_ids += r.count


cdef inline void _heard(stream_t *s, const capture_record_t *r, uint8_t k) noexcept nogil:
    """Record `r` (kind `k`) heard from the NF: a silence ends at it when
    the NF was free (its last record a tx or an idle poll, no batch taken
    since) and wrote nothing for longer than ``silence_ns``."""
    if s.free and r.time_ns - s.free_t > s.silence_ns:
        if s.silent != NULL:
            s.silent[2 * s.n_silent] = s.free_t
            s.silent[2 * s.n_silent + 1] = r.time_ns
        s.n_silent += 1
    if k == KIND_TX or (k == KIND_RX and r.count == 0):
        s.free, s.free_t = True, r.time_ns
    elif k != KIND_ADDR:
        s.free = False                  # a batch taken: in service until its tx


cdef int _shape(const capture_record_t *rec, Py_ssize_t n, Py_ssize_t n_ids,
                stream_t *s) noexcept nogil:
    """Pass 1: what each side holds; -1 when the stream is declined."""
    cdef Py_ssize_t i
    cdef uint64_t claimed = 0
    cdef int64_t rx_t = 0, tx_t = 0
    cdef const capture_record_t *r
    cdef uint8_t k
    s.addr_after_rx = True
    for i in range(n):
        r = rec + i
        if i and r.time_ns < rec[i - 1].time_ns:
            return -1
        k = KIND_OF[r.flags & 7]
        _heard(s, r, k if k != KIND_NOIDS else (r.flags & 1))
        if k == KIND_NOIDS:
            s.n_noids += 1
            continue
        if k == KIND_RX and r.count == 0:
            s.n_idle += 1
            continue
        claimed += r.count
        # checked per record, so a sum of uint32 counts cannot wrap
        if claimed > <uint64_t>n_ids:
            return -1
        if k == KIND_RX:
            _count(&s.rx, r, s.rx.n_rec == 0 or r.time_ns != rx_t)
            rx_t = r.time_ns
        elif k == KIND_TX:
            _count(&s.tx, r, s.tx.n_rec == 0 or r.time_ns != tx_t)
            tx_t = r.time_ns
        else:
            s.n_addr += 1
            s.n_addr_ids += r.count
            if (i == 0 or KIND_OF[rec[i - 1].flags & 7] != KIND_RX
                    or r.seq != rec[i - 1].seq + 1 or r.count != rec[i - 1].count):
                s.addr_after_rx = False
    if claimed != <uint64_t>n_ids:
        return -1
    s.addr_after_rx = s.addr_after_rx and s.n_addr == s.rx.n_rec
    return 0


cdef inline void _fill(side_t *o, const capture_record_t *r, const uint64_t *src,
                       Py_ssize_t room) noexcept nogil:
    """Record `r`'s ids `src` (`room` readable from there) to side `o`.
    Most records have 1-4 ids (s2: 85%): they go in blocks of 4, past the
    record's end where both sides have room -- the side's next record
    writes over the excess -- so the loop runs once where a loop of
    `count` rounds had its exit mispredicted on most records."""
    cdef Py_ssize_t j, c = r.count, c4 = (c + 3) & ~3
    cdef int64_t t = o.t
    cdef int32_t b = o.b
    cdef uint64_t *oi = o.ids + o.at if o.ids != NULL else NULL
    cdef int64_t *on = o.ns + o.at
    cdef int32_t *ob = o.batch + o.at
    if o.at + c4 <= o.n_ids and c4 <= room:
        for j in range(0, c4, 4):
            on[j] = t; on[j + 1] = t; on[j + 2] = t; on[j + 3] = t
            ob[j] = b; ob[j + 1] = b; ob[j + 2] = b; ob[j + 3] = b
            if oi != NULL:
                oi[j] = src[j]; oi[j + 1] = src[j + 1]
                oi[j + 2] = src[j + 2]; oi[j + 3] = src[j + 3]
    else:
        for j in range(c):
            on[j] = t
            ob[j] = b
            if oi != NULL:
                oi[j] = src[j]
    if o.port != NULL:
        for j in range(c):
            o.port[o.at + j] = r.port
    o.at += c


cdef inline bint _next_batch(side_t *o, int64_t t) noexcept nogil:
    """Whether time `t` starts a batch of side `o` (then made current)."""
    if o.b >= 0 and t == o.t:
        return False
    o.b += 1
    o.t = t
    return True


cdef void _expand(const capture_record_t *rec, Py_ssize_t n, const uint64_t *ids,
                  Py_ssize_t n_ids, stream_t *s) noexcept nogil:
    """Pass 2: every output written once, in record order.  Pass 1 sized
    the outputs and held every count to the ids, so no record's ids run
    past them."""
    cdef Py_ssize_t i, pos = 0, at_addr = 0, at_idle = 0
    cdef const capture_record_t *r
    cdef uint8_t k
    s.n_silent, s.free = 0, False
    for i in range(n):
        r = rec + i
        k = KIND_OF[r.flags & 7]
        _heard(s, r, k if k != KIND_NOIDS else (r.flags & 1))
        if k == KIND_RX and r.count == 0:
            s.idle_ns[at_idle] = r.time_ns  # an idle poll, not a batch
            at_idle += 1
        elif k == KIND_RX:
            if _next_batch(&s.rx, r.time_ns):
                s.batch_ns[s.rx.b] = r.time_ns
                s.batch_occ[s.rx.b] = -1 if r.occupancy == OCC_UNKNOWN else r.occupancy
            _fill(&s.rx, r, ids + pos, n_ids - pos)
        elif k == KIND_TX:
            _next_batch(&s.tx, r.time_ns)
            _fill(&s.tx, r, ids + pos, n_ids - pos)
        elif k == KIND_ADDR:
            if s.addr != NULL:
                memcpy(s.addr + at_addr, ids + pos, r.count * sizeof(uint64_t))
                at_addr += r.count
        else:
            continue                    # batch-only: no ids
        pos += r.count


# The data of a new array (NULL if empty); the array outlives the pointer.
cdef uint64_t *_u64(a):
    cdef uint64_t[::1] v = a
    return &v[0] if v.shape[0] else NULL

cdef int64_t *_i64(a):
    cdef int64_t[::1] v = a
    return &v[0] if v.shape[0] else NULL

cdef int32_t *_i32(a):
    cdef int32_t[::1] v = a
    return &v[0] if v.shape[0] else NULL


cdef object _side_arrays(side_t *o, bint shared):
    """(ids, ns, batch, port) for side `o`, its pointers set: ids None
    when `shared`; port an int32 array, an int (one port) or None (no
    records)."""
    ids = None if shared else np.empty(o.n_ids, np.uint64)
    ns, batch = np.empty(o.n_ids, np.int64), np.empty(o.n_ids, np.int32)
    if o.n_rec == 0:
        port = None
    elif o.one_port:
        port = int(o.port0)
    else:
        port = np.empty(o.n_ids, np.int32)
        o.port = _i32(port)
    if ids is not None:
        o.ids = _u64(ids)
    o.ns, o.batch, o.b = _i64(ns), _i32(batch), -1
    return ids, ns, batch, port


def expand_stream(const capture_record_t[::1] recs not None,
                  const uint64_t[::1] ids not None, int64_t silence_ns=0):
    """One stream's records `recs` (seq order) and their ids `ids` as
    per-packet arrays: what ``ingest._one_stream`` builds, in pieces.

    Parameters
    ----------
    recs : ndarray of CAPTURE_RECORD_DTYPE, C-contiguous
    ids : ndarray of uint64, C-contiguous
        The ids of the records, in order (none for batch-only records).

    Returns
    -------
    tuple or None
        ``(rx, tx, batch_ns, batch_occupancy, rx_addr, n_addr, idle_ns,
        silent)``; ``rx``
        and ``tx`` are ``(ids, ns, batch, port)``: ids None when the side
        takes all of `ids` as they are (the stream has no other records);
        port an int32 array, or an int when the side's records share one
        port, or None when the side has no records.  ``rx_addr`` is the
        address words aligned with the rx ids when every address record
        follows its rx record (seq + 1, same count), else None;
        ``n_addr`` counts address records; ``idle_ns`` are the times
        of the idle-poll records (rx, count 0), which are not batches;
        ``silent`` the stream's silences longer than `silence_ns`, as
        ``[from, to]`` rows (``ingest.silences``).
        None when the stream is
        declined: empty, times that go back, ids other than the records
        claim, 2**31 records or more.
    """
    cdef Py_ssize_t n = recs.shape[0], n_ids = ids.shape[0]
    cdef stream_t s
    cdef int rc
    if n == 0 or n > INT32_MAX:
        return None
    memset(&s, 0, sizeof(stream_t))
    s.silence_ns = silence_ns
    with nogil:
        rc = _shape(&recs[0], n, n_ids, &s)
    if rc < 0:
        return None
    one_kind = s.n_addr == 0 and s.n_noids == 0
    rx = _side_arrays(&s.rx, one_kind and s.tx.n_rec == 0)
    tx = _side_arrays(&s.tx, one_kind and s.rx.n_rec == 0)
    batch_ns, batch_occ = np.empty(s.rx.n_batch, np.int64), np.empty(s.rx.n_batch, np.int64)
    s.batch_ns, s.batch_occ = _i64(batch_ns), _i64(batch_occ)
    idle_ns = np.empty(s.n_idle, np.int64)
    s.idle_ns = _i64(idle_ns)
    silent = np.empty((s.n_silent, 2), np.int64)
    s.silent = _i64(silent.reshape(-1))
    rx_addr = None
    if s.n_addr and s.addr_after_rx:
        rx_addr = np.empty(s.n_addr_ids, np.uint64)
        s.addr = _u64(rx_addr)
    with nogil:
        _expand(&recs[0], n, &ids[0] if n_ids else NULL, n_ids, &s)
    return rx, tx, batch_ns, batch_occ, rx_addr, s.n_addr, idle_ns, silent
