# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The checks of one decoded frame's records, in one pass: the optional
fast path of mscope.capture.format's ``_records_check`` and
``_check_decoded``, which say what each check means and keep the numpy
version (five strided passes over the 32-byte records, ~0.1 s of
bench/analyze.py's read stage) as the reference and the fallback.

Build in place: ``python setup.py build_ext --inplace``.
"""
include "_record.pxi"

__all__ = ["frame_facts"]

# mscope.capture.format's flags (tests/test_capture.py holds every flag
# value's facts to the numpy version's)
cdef enum:
    F_ADDR = 0x02
    F_NOIDS = 0x04
    F_REFUSED = 0x08


def frame_facts(const capture_record_t[::1] records):
    """What the checks of a frame's records need, from one pass.

    Returns
    -------
    tuple
        ``(packets, noids, noids_packets, refused, bad_refused,
        bad_noids, seq_rises)``: the sum of ``count`` (as uint64 sums
        it); the batch-only records (``CAPTURE_F_NOIDS``) and their
        packets; the refused records (``CAPTURE_F_REFUSED``); the first
        refused record that is not exactly one (flags ``CAPTURE_F_REFUSED``
        alone, count 2), and the first batch-only record that is also an
        address record (-1: none); whether the seqs rise strictly.
    """
    cdef Py_ssize_t i, n = records.shape[0]
    cdef uint64_t packets = 0, noids_packets = 0, prev = 0
    cdef Py_ssize_t noids = 0, refused = 0, bad_refused = -1, bad_noids = -1
    cdef bint rises = True
    cdef uint8_t f
    cdef const capture_record_t *r
    with nogil:
        for i in range(n):
            r = &records[i]
            packets += r.count
            if i and r.seq <= prev:
                rises = False
            prev = r.seq
            f = r.flags
            if f & (F_NOIDS | F_REFUSED):       # rare: batch-only or refused
                if f & F_REFUSED:
                    refused += 1
                    if bad_refused < 0 and (f != F_REFUSED or r.count != 2):
                        bad_refused = i
                if f & F_NOIDS:
                    noids += 1
                    noids_packets += r.count
                    if bad_noids < 0 and f & F_ADDR:
                        bad_noids = i
    return packets, noids, noids_packets, refused, bad_refused, bad_noids, rises
