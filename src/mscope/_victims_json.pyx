# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -O3
"""The victims' JSON text, written straight from the attribution's arrays
(mscope.diagnose.VictimList.json_chunks): one pass, byte for byte what
``json.dumps`` writes for the victims as dicts.

The text that is not a number (the culprits' dicts up to their score, the
NF names) is made by ``json.dumps`` in diagnose.py and handed over as
byte strings; this pass writes the numbers and copies those in between.
A score is written as float repr writes it once rounded to 3 decimals:
its integer part, then its thousandths without trailing zeros (``.5``,
``.05``, ``.0``), which holds while it is below ``2**43`` (the spacing of
doubles under 0.001) and at least 1e-4; diagnose.py sends larger ones
(``FAST_MAX`` and up) as text of their own.
"""
from libc.math cimport rint
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

cdef double _FAST_MAX = 1e12
#: Scores from here up (and inf) come as text (`slow`).
FAST_MAX = _FAST_MAX

cdef const char *HEAD = b']}, {"packet": '
cdef Py_ssize_t HEAD_LEN = 15
cdef const char *NULL_TEXT = b"null"


cdef inline Py_ssize_t _uint(uint8_t *out, Py_ssize_t at, uint64_t v) noexcept nogil:
    # the decimal digits of v at out[at:], their end returned
    cdef char tmp[24]
    cdef int n = 0
    while True:
        tmp[n] = <char>(48 + v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    while n:
        n -= 1
        out[at] = tmp[n]
        at += 1
    return at


cdef inline Py_ssize_t _copy(uint8_t *out, Py_ssize_t at, const uint8_t[::1] text,
                             const int64_t[::1] offsets, Py_ssize_t i) noexcept nogil:
    # text[offsets[i]:offsets[i + 1]] at out[at:]
    cdef Py_ssize_t n = offsets[i + 1] - offsets[i]
    memcpy(out + at, &text[offsets[i]], n)
    return at + n


def bound(Py_ssize_t victims, Py_ssize_t culprits, Py_ssize_t nf_max, Py_ssize_t pre_max,
          Py_ssize_t slow_max):
    """Bytes :func:`victims_text` may write for that many victims and
    culprits, given the longest NF text, culprit text and slow score."""
    # head, packet id (20 digits), NF, latency (sign + 19), tail (32)
    cdef Py_ssize_t per_victim = HEAD_LEN + 20 + nf_max + 20 + 40
    # separator, text, score (20 digits, the point, 3 decimals, "}")
    cdef Py_ssize_t per_culprit = 2 + pre_max + max(26, slow_max + 1)
    return victims * per_victim + culprits * per_culprit


def victims_text(const int64_t[::1] ptr, const int32_t[::1] col, const double[::1] score,
                 const uint64_t[::1] packet_id, const int64_t[::1] latency_ns,
                 const uint8_t[::1] dropped, const int64_t[::1] nf,
                 const uint8_t[::1] nf_text, const int64_t[::1] nf_at,
                 const uint8_t[::1] pre_text, const int64_t[::1] pre_at,
                 const uint8_t[::1] slow_text, const int64_t[::1] slow_at,
                 Py_ssize_t lo, Py_ssize_t hi, uint8_t[::1] out):
    """Write victims lo..hi's JSON into `out` (at least :func:`bound`
    bytes); the number of bytes written.

    Each victim: ``]}, `` closing the one before (not before victim 0),
    ``{"packet": `` its id, ``nf_text[nf[i]]`` (``, "nf": "...",
    "latency_ns": ``), its latency (``null`` where dropped), ``, "dropped":
    false|true, "culprits": [``, then its culprits ``ptr[i]:ptr[i + 1]``,
    ", " apart: ``pre_text[col[j]]`` (its dict up to ``"score": ``), the
    score, ``}``.  Scores of FAST_MAX or more take the next of
    `slow_text`'s strings (``slow_at`` their offsets), in order; the
    caller closes the last victim and the array."""
    cdef Py_ssize_t at = 0, i, j, s = 0
    cdef uint8_t *o = &out[0]
    cdef const char *tail
    cdef int64_t v, ip, fr, lat
    cdef double x
    with nogil:
        for i in range(lo, hi):
            if i == 0:
                memcpy(o + at, HEAD + 4, HEAD_LEN - 4)
                at += HEAD_LEN - 4
            else:
                memcpy(o + at, HEAD, HEAD_LEN)
                at += HEAD_LEN
            at = _uint(o, at, packet_id[i])
            at = _copy(o, at, nf_text, nf_at, nf[i])
            if dropped[i]:
                memcpy(o + at, NULL_TEXT, 4)
                at += 4
                tail = b', "dropped": true, "culprits": ['
            else:
                lat = latency_ns[i]
                if lat < 0:
                    o[at] = 45                                      # "-"
                    at = _uint(o, at + 1, <uint64_t>(-lat))
                else:
                    at = _uint(o, at, <uint64_t>lat)
                tail = b', "dropped": false, "culprits": ['
            j = 0
            while tail[j]:
                o[at] = tail[j]
                at += 1
                j += 1
            for j in range(ptr[i], ptr[i + 1]):
                if j > ptr[i]:
                    o[at] = 44                                      # ", "
                    o[at + 1] = 32
                    at += 2
                at = _copy(o, at, pre_text, pre_at, col[j])
                x = score[j]
                if not x < _FAST_MAX:
                    at = _copy(o, at, slow_text, slow_at, s)
                    s += 1
                    continue
                v = <int64_t>rint(x * 1000)
                ip = v // 1000
                fr = v - ip * 1000
                at = _uint(o, at, <uint64_t>ip)
                o[at] = 46                                          # "."
                o[at + 1] = <uint8_t>(48 + fr // 100)
                at += 2
                fr = fr % 100
                if fr:
                    o[at] = <uint8_t>(48 + fr // 10)
                    at += 1
                    if fr % 10:
                        o[at] = <uint8_t>(48 + fr % 10)
                        at += 1
                o[at] = 125                                         # "}"
                at += 1
    return at
