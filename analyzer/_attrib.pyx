# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -O3 -ffp-contract=off
"""The loops of the queue and attribution stages that numpy cannot do in
one pass: merges of sorted event arrays, per-victim scans over hops, the
per-victim ranking.  Called from queues.py and attribution.py, which say
what each result means; every kernel here is a linear pass (or a merge)
over arrays the caller owns and allocates (a few return small lists).

Floating point: every expression is evaluated in the order numpy did in the
pure-numpy version (same operands, same association, no fused
multiply-add: built with -ffp-contract=off), so the scores are the same to
the last bit.  Index arrays of the trajectories may be int32 or int64
(``index_t``); times are int64 ns.

Build in place: ``cd analyzer && cythonize -i -3 _attrib.pyx``.
"""
from libc.math cimport INFINITY, ceil, rint, signbit
from cython.view cimport array as cvarray
from libc.stdint cimport INT64_MIN, int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t

cdef extern from *:
    int __builtin_popcountll(unsigned long long) nogil

ctypedef fused index_t:
    int32_t
    int64_t

ctypedef fused index2_t:
    int32_t
    int64_t

ctypedef fused index3_t:
    int32_t
    int64_t

ctypedef fused out_t:
    int32_t
    int64_t

# NF index of a neighbouring hop: int8 up to 126 NFs
ctypedef fused code_t:
    int8_t
    int16_t


# -- queue timelines --------------------------------------------------------

cdef inline int64_t _arrival_of(const int64_t[::1] hop_arrival_ns, const int64_t[::1] hop_rx_ns,
                                int64_t h) noexcept nogil:
    # a hop's arrival as the queue counts it: its rx where not recorded
    cdef int64_t a = hop_arrival_ns[h]
    return a if a >= 0 else hop_rx_ns[h]


def rx_slots(const index_t[::1] hop_nf, const index2_t[::1] hop_rx,
             const int64_t[::1] rx_offset, const int64_t[::1] rx_count, out_t[::1] out):
    """Scatter every received hop to ``out[rx_offset[nf] + hop_rx]``.

    `out` (one slot per rx entry of every NF, filled with -1 by the caller)
    ends up holding, per NF, its hops in rx order: a stable argsort of
    ``hop_rx`` when the rx indices are unique within an NF.  One pass over
    the hops for every NF: each NF's hops are spread over all of them.

    Returns
    -------
    int
        Number of slots written twice (0: the rx indices were unique).
    """
    cdef Py_ssize_t h, n = hop_nf.shape[0]
    cdef int64_t r, slot, twice = 0
    with nogil:
        for h in range(n):
            r = hop_rx[h]
            if r < 0:
                continue
            if r >= rx_count[hop_nf[h]]:
                with gil:
                    raise IndexError(f"hop_rx[{h}] = {r} beyond NF {hop_nf[h]}'s rx entries")
            slot = rx_offset[hop_nf[h]] + r
            if out[slot] >= 0:
                twice += 1
            out[slot] = h
    return twice


def gather_arrival_rx(const out_t[::1] hops, const int64_t[::1] hop_arrival_ns,
                      const int64_t[::1] hop_rx_ns, int64_t[::1] arrival, int64_t[::1] rx):
    """``rx[i] = hop_rx_ns[hops[i]]``; ``arrival[i]`` the hop's arrival, or
    its rx where the arrival was not recorded (-1)."""
    cdef Py_ssize_t i, n = hops.shape[0]
    cdef int64_t h, a
    with nogil:
        for i in range(n):
            h = hops[i]
            rx[i] = hop_rx_ns[h]
            a = hop_arrival_ns[h]
            arrival[i] = a if a >= 0 else rx[i]


def gather_arrival(const out_t[::1] hops, const int64_t[::1] hop_arrival_ns,
                   const int64_t[::1] hop_rx_ns, int64_t[::1] arrival):
    """gather_arrival_rx without the rx times."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(hops.shape[0]):
            arrival[i] = _arrival_of(hop_arrival_ns, hop_rx_ns, hops[i])


def next_arrival_span(const out_t[::1] hops, const index_t[::1] hop_packet,
                      const index2_t[::1] hop_nf, const int64_t[::1] hop_arrival_ns,
                      int64_t k):
    """Of `hops`, those whose packet's next hop is at NF k, its arrival
    recorded: (how many, the earliest of those arrivals, the latest); (0,
    0, -1) where none.  No array of them is made: `hops` may hold millions
    (a long surge's arrivals at the NF before k)."""
    cdef Py_ssize_t i, n = hops.shape[0], nh = hop_packet.shape[0], c = 0
    cdef int64_t h, a, lo = 0, hi = -1
    with nogil:
        for i in range(n):
            h = hops[i]
            if h + 1 >= nh or hop_packet[h + 1] != hop_packet[h] or hop_nf[h + 1] != k:
                continue
            a = hop_arrival_ns[h + 1]
            if a < 0:
                continue
            if c == 0 or a < lo:
                lo = a
            if c == 0 or a > hi:
                hi = a
            c += 1
    return c, lo, hi


def batch_durations(const out_t[::1] hops, const index_t[::1] hop_rx,
                    const int64_t[::1] hop_tx_ns, const int32_t[::1] rx_batch,
                    const int64_t[::1] batch_ns, int64_t[::1] count, int64_t[::1] duration):
    """Per rx batch b of an NF (``count``: room for every batch, zeroed by
    the caller; ``duration``: room for every batch): its received `hops`
    (``rx_batch[hop_rx[h]]`` is b) and the time from its rx
    (``batch_ns[b]``) to the latest tx among them, 0 where none was sent.
    One pass over the hops, no order needed, and one over the batches.

    Returns
    -------
    int
        0; -1 when an rx index or a batch is out of range (nothing trusted).
    """
    cdef Py_ssize_t i, n = hops.shape[0], nrx = rx_batch.shape[0], nb = count.shape[0]
    cdef int64_t r, b, x
    cdef int bad = 0
    if duration.shape[0] != nb or batch_ns.shape[0] != nb:
        raise ValueError("batch_durations: batch_ns, count and duration must have one length")
    with nogil:
        # the latest tx first (-1: none sent), in place
        for i in range(nb):
            duration[i] = -1
        for i in range(n):
            r = hop_rx[hops[i]]
            b = rx_batch[r] if 0 <= r < nrx else -1
            if b < 0 or b >= nb:
                bad = 1
                break
            count[b] += 1
            x = hop_tx_ns[hops[i]]
            if x > duration[b]:
                duration[b] = x
        for i in range(nb):
            duration[i] = duration[i] - batch_ns[i] if duration[i] >= 0 else 0
    return -1 if bad else 0


def slow_runs(const int64_t[::1] batch_ns, const int64_t[::1] count,
              const int64_t[::1] duration, double rate, double overhead,
              int64_t[:, ::1] out):
    """The runs of consecutive timed batches (``duration > 0``; the others
    do not break a run) served at under half `rate` beyond `overhead`:
    ``(duration - c) - overhead > c`` with ``c = count / rate``, as numpy
    works it (queues.py, ``QueueTimeline.slow_runs``).  Each run's first
    and last ``batch_ns`` written to a row of `out`, as many as it has
    rows (none: count them).

    Returns
    -------
    int
        Number of runs.
    """
    cdef Py_ssize_t i, nb = count.shape[0], k = 0, room = out.shape[0]
    cdef double c
    cdef bint inside = False
    if duration.shape[0] != nb or batch_ns.shape[0] != nb:
        raise ValueError("slow_runs: batch_ns, count and duration must have one length")
    with nogil:
        for i in range(nb):
            if duration[i] <= 0:
                continue
            c = <double>count[i] / rate
            if (<double>duration[i] - c) - overhead > c:
                if not inside:
                    if k < room:
                        out[k, 0] = batch_ns[i]
                    k += 1
                    inside = True
                if k <= room:
                    out[k - 1, 1] = batch_ns[i]
            else:
                inside = False
    return k


def step_series(const int64_t[::1] arrival, const int64_t[::1] rx,
                int64_t[::1] step_ns, int32_t[::1] step_len,
                int64_t[::1] starts, int64_t[::1] ends, int32_t[::1] arrival_period,
                bint waited_only):
    """Queue length as a step series by merging sorted arrivals (+1) and
    departures (-1), with the queuing periods on the way.

    `step_ns`, `step_len` must hold ``len(arrival) + len(rx)`` entries,
    `starts`, `ends` ``len(arrival)``.  ``arrival_period[i]`` is the last
    period started at or before ``arrival[i]`` (-1: none); with
    `waited_only` (`arrival` and `rx` are then one packet's each, index by
    index), -1 also where ``rx[i] <= arrival[i]``: the packet's period if it
    waited.

    Returns
    -------
    (int, int, int)
        Number of steps, of starts and of ends written.
    """
    cdef Py_ssize_t na = arrival.shape[0], nr = rx.shape[0]
    cdef Py_ssize_t i = 0, j = 0, i0, x, nstep = 0, nstart = 0, nend = 0
    cdef int64_t t, length = 0
    cdef bint busy, busy_before = False
    with nogil:
        while i < na or j < nr:
            if j >= nr or (i < na and arrival[i] <= rx[j]):
                t = arrival[i]
            else:
                t = rx[j]
            i0 = i
            while i < na and arrival[i] == t:
                length += 1
                i += 1
            while j < nr and rx[j] == t:
                length -= 1
                j += 1
            step_ns[nstep] = t
            step_len[nstep] = <int32_t>length
            nstep += 1
            busy = length > 0
            if busy and not busy_before:
                starts[nstart] = t
                nstart += 1
            elif busy_before and not busy:
                ends[nend] = t
                nend += 1
            busy_before = busy
            for x in range(i0, i):
                if waited_only and rx[x] <= arrival[x]:
                    arrival_period[x] = -1
                else:
                    arrival_period[x] = <int32_t>(nstart - 1)
    return nstep, nstart, nend


def hop_summary(const index_t[::1] hop_packet, const index2_t[::1] hop_rx,
                const int64_t[::1] hop_arrival_ns, const int64_t[::1] hop_rx_ns,
                out_t[::1] drops):
    """One pass over the hops for what attribution needs of all of them:
    the earliest recorded arrival, the latest rx, the number of packets
    (first hops), and in `drops` (room for every hop) the hops dropped at
    a queue (no rx, a recorded arrival).

    Returns
    -------
    (int, int, int, int)
        (earliest arrival -- a hop's rx where its arrival is not recorded,
        0 when neither is -- latest rx, packets, drops).
    """
    cdef Py_ssize_t h, nh = hop_packet.shape[0], nd = 0, npk = 0, c = 0
    cdef int64_t lo = 0, hi = 0, a
    with nogil:
        for h in range(nh):
            if h == 0 or hop_packet[h] != hop_packet[h - 1]:
                npk += 1
            a = hop_arrival_ns[h]
            if a >= 0 and hop_rx[h] < 0:
                drops[nd] = <out_t>h
                nd += 1
            if a < 0:
                a = hop_rx_ns[h]
            if a >= 0:
                if c == 0 or a < lo:
                    lo = a
                c += 1
            if h == 0 or hop_rx_ns[h] > hi:
                hi = hop_rx_ns[h]
    return lo, hi, npk, nd


def first_hop_addr(const index_t[::1] hop_packet, const uint32_t[::1] src_addr,
                   uint32_t[::1] out):
    """``src_addr`` of each packet, in the order of their first hops."""
    cdef Py_ssize_t h, nh = hop_packet.shape[0], k = 0
    with nogil:
        for h in range(nh):
            if h == 0 or hop_packet[h] != hop_packet[h - 1]:
                out[k] = src_addr[hop_packet[h]]
                k += 1


def hops_addr(const out_t[::1] hops, const index_t[::1] hop_packet,
              const uint32_t[::1] src_addr, uint32_t[::1] out):
    """``out[i]`` = the source address of hop ``hops[i]``'s packet (a
    gather through the packet index, without its array of packets)."""
    cdef Py_ssize_t i, n = hops.shape[0]
    if out.shape[0] < n:
        raise ValueError("out needs one entry per hop")
    with nogil:
        for i in range(n):
            out[i] = src_addr[hop_packet[hops[i]]]


def is_sorted(const int64_t[::1] t):
    """Whether `t` is non-decreasing."""
    cdef Py_ssize_t i
    for i in range(1, t.shape[0]):
        if t[i] < t[i - 1]:
            return False
    return True


# -- attribution: per-NF arrays ---------------------------------------------

def arrival_order(const int64_t[::1] arrival, const out_t[::1] hops):
    """How far `arrival` (with `hops` beside it) is in (arrival, hop)
    order, in one pass (on bench/analyze.py's 9.5 M-hop capture a sort
    check and a tie check were two passes, 25 + 38 ms).

    Returns
    -------
    int
        0: `arrival` not sorted; 1: sorted, but `hops` descend somewhere
        within a run of equal arrivals; 2: in (arrival, hop) order.
    """
    cdef Py_ssize_t i
    cdef int order = 2
    with nogil:
        for i in range(1, arrival.shape[0]):
            if arrival[i] < arrival[i - 1]:
                order = 0
                break
            if arrival[i] == arrival[i - 1] and hops[i] < hops[i - 1]:
                order = 1
    return order


def order_ties_by_hop(const int64_t[::1] arrival, out_t[::1] hops, int64_t[::1] rx):
    """Within runs of equal `arrival` (sorted), sort `hops` ascending, in
    place, with their `rx` beside them: the order of a stable argsort of
    arrival over hops taken in index order.  Runs are a batch or so long
    (insertion sort)."""
    cdef Py_ssize_t n = arrival.shape[0], s = 0, e, i, k
    cdef out_t h
    cdef int64_t r
    with nogil:
        while s < n:
            e = s + 1
            while e < n and arrival[e] == arrival[s]:
                e += 1
            for i in range(s + 1, e):
                h, r = hops[i], rx[i]
                k = i - 1
                while k >= s and hops[k] > h:
                    hops[k + 1], rx[k + 1] = hops[k], rx[k]
                    k -= 1
                hops[k + 1], rx[k + 1] = h, r
            s = e


def merge_hops_by_arrival(const int64_t[::1] a1, const out_t[::1] h1,
                          const int64_t[::1] a2, const out_t[::1] h2, out_t[::1] h):
    """Merge two runs of hops, each sorted by (arrival `a1` / `a2`, hop),
    into `h` in (arrival, hop) order."""
    cdef Py_ssize_t i = 0, j = 0, k = 0, n1 = a1.shape[0], n2 = a2.shape[0]
    with nogil:
        while i < n1 or j < n2:
            if j >= n2 or (i < n1 and (a1[i] < a2[j] or (a1[i] == a2[j] and h1[i] < h2[j]))):
                h[k] = h1[i]
                i += 1
            else:
                h[k] = h2[j]
                j += 1
            k += 1


def hop_neighbours(const index_t[::1] hop_packet, const index2_t[::1] hop_nf,
                   code_t[::1] prev_nf, code_t[::1] next_nf, int64_t[:, ::1] links):
    """NF of each hop's previous and next hop on its packet's path, -1
    where there is none (hops are grouped by packet, in path order): one
    pass, so that per-NF passes read a byte per hop, not the hop arrays.
    ``links[u, d]`` counts the hops at NF d whose previous hop was at NF
    u (the NFs' graph as the packets went)."""
    cdef Py_ssize_t h, nh = hop_packet.shape[0]
    with nogil:
        for h in range(nh):
            if h > 0 and hop_packet[h - 1] == hop_packet[h]:
                prev_nf[h] = <code_t>hop_nf[h - 1]
                next_nf[h - 1] = <code_t>hop_nf[h]
                links[hop_nf[h - 1], hop_nf[h]] += 1
            else:
                prev_nf[h] = -1
                if h > 0:
                    next_nf[h - 1] = -1
        if nh:
            next_nf[nh - 1] = -1


def neighbours(const int64_t[::1] arr, const out_t[::1] hops,
               const code_t[::1] prev_nf, const code_t[::1] next_nf,
               int64_t t0, int64_t bin_ns, int64_t[:, ::1] from_bins,
               int64_t[:, ::1] to_bins, code_t[::1] next_of_arr):
    """Where one NF's arrivals came from and go next, in one pass.

    For arrivals `arr` (sorted, none before `t0`) of hops `hops`: adds to
    ``from_bins[u + 1, b]`` / ``to_bins[d + 1, b]`` those whose previous /
    next hop is at NF u / d (-1: none; `prev_nf`, `next_nf` per hop) in
    bin ``b = min((arr - t0) // bin_ns, nbins - 1)`` (adds: the accepted
    and the dropped arrivals are counted by one call each);
    ``next_of_arr[i]`` is d.
    """
    cdef Py_ssize_t i, n = arr.shape[0], nb = from_bins.shape[1]
    cdef Py_ssize_t b = 0
    cdef int64_t h, u, d, edge = t0 + bin_ns
    if n and arr[0] < t0:
        raise ValueError("arrival before the capture start")
    with nogil:
        for i in range(n):
            while b < nb - 1 and arr[i] >= edge:
                b += 1
                edge += bin_ns
            h = hops[i]
            u, d = prev_nf[h], next_nf[h]
            from_bins[u + 1, b] += 1
            to_bins[d + 1, b] += 1
            next_of_arr[i] = <code_t>d


def positions_by_group(const code_t[::1] group, const int64_t[::1] start, out_t[::1] out):
    """Stable partition of the positions: i to ``out[start[g]:]`` for
    ``g = group[i] >= 0``, in order; positions of group -1 are left out
    (`start`: where each group begins)."""
    cdef Py_ssize_t i, n = group.shape[0], ng = start.shape[0]
    cdef int64_t[::1] at = cvarray(shape=(max(ng, 1),), itemsize=sizeof(int64_t), format="q")
    with nogil:
        for i in range(ng):
            at[i] = start[i]
        for i in range(n):
            if group[i] < 0:
                continue
            out[at[group[i]]] = <out_t>i
            at[group[i]] += 1


cdef inline int64_t _row_of(const uint64_t[::1] words, const int64_t[::1] rank,
                           int64_t h) noexcept nogil:
    """The row of hop h in the compact scores (bit h of `words` set: ``rank[h
    // 64]`` + the bits set below h in its word), -1 where it has none."""
    cdef uint64_t w = words[h >> 6], bit = (<uint64_t>1) << (h & 63)
    if not (w & bit):
        return -1
    return rank[h >> 6] + __builtin_popcountll(w & (bit - 1))


def gather_scores(const uint64_t[::1] words, const int64_t[::1] rank,
                  const double[:, ::1] values, const out_t[::1] idx,
                  double[::1] local, double[::1] input):
    """``local[i], input[i]`` = the local and input scores of hop
    ``idx[i]``, kept compact (attribution.py, ``_HopScores``): bit h of
    `words` is set where hop h has a row of `values`, the row ``rank[h //
    64]`` + the bits set below h in its word; 0 where it has none."""
    cdef Py_ssize_t i
    cdef int64_t at
    with nogil:
        for i in range(idx.shape[0]):
            at = _row_of(words, rank, idx[i])
            if at >= 0:
                local[i] = values[at, 0]
                input[i] = values[at, 1]
            else:
                local[i] = 0.0
                input[i] = 0.0


def rank_words(const uint64_t[::1] words, int64_t[::1] rank):
    """``rank[w]`` = bits set in ``words[:w]``; returns the total."""
    cdef Py_ssize_t w
    cdef int64_t c = 0
    with nogil:
        for w in range(words.shape[0]):
            rank[w] = c
            c += __builtin_popcountll(words[w])
    return c


def scatter_scored(const uint64_t[::1] words, const int64_t[::1] rank,
                   const out_t[::1] hops, const double[:, ::1] scores, double[:, ::1] values):
    """Copy ``scores[x]`` to the row of hop ``hops[x]`` in `values` (see
    gather_scores) wherever that hop's bit is set."""
    cdef Py_ssize_t x
    cdef int64_t at
    with nogil:
        for x in range(hops.shape[0]):
            at = _row_of(words, rank, hops[x])
            if at >= 0:
                values[at, 0] = scores[x, 0]
                values[at, 1] = scores[x, 1]


cdef inline Py_ssize_t _upper(const int64_t[::1] a, int64_t t, Py_ssize_t lo,
                              Py_ssize_t hi) noexcept nogil:
    # the first of sorted a[lo:hi] after t (hi where none is)
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline int64_t _period_idx(const int64_t[::1] pstart, int64_t t) noexcept nogil:
    # searchsorted(pstart, t, "right") - 1
    return _upper(pstart, t, 0, pstart.shape[0]) - 1


cdef inline Py_ssize_t _first_from(const int64_t[::1] a, int64_t t) noexcept nogil:
    # searchsorted(a, t, "left"): the first of sorted `a` at or after t
    cdef Py_ssize_t lo = 0, hi = a.shape[0], mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline int64_t _idx_from(const int64_t[::1] a, int64_t t, Py_ssize_t *k) noexcept nogil:
    # _period_idx(a, t), searched from k[0], the count of a's elements <=
    # the last t: galloping forward from there when t has not gone back (a
    # walk by later times touches only the stretch between them, where a
    # search from scratch misses the cache ~20 times over a large `a`)
    cdef Py_ssize_t n = a.shape[0], lo = k[0], hi, step = 1
    if lo > n or (lo > 0 and a[lo - 1] > t):
        lo, hi = 0, n
    else:
        hi = lo
        while hi < n and a[hi] <= t:
            lo = hi + 1
            hi = lo + step
            step <<= 1
        if hi > n:
            hi = n
    k[0] = _upper(a, t, lo, hi)
    return k[0] - 1


cdef inline double _cf_arrivals(int64_t t, double n_t, Py_ssize_t K, const int64_t[::1] ws,
                               const int64_t[::1] we, const double[::1] base,
                               const double[::1] cum, double usual) noexcept nogil:
    # hop_scores' arrivals by t without an input cause: the usual rate
    # inside window K - 1 (K windows start at or before t), the n_t that
    # came outside, less the windows' excess so far
    if K > 0 and t < we[K - 1]:
        return base[K - 1] + usual * <double>(t - ws[K - 1])
    return n_t - cum[K]


cdef inline double _cf_walk(int64_t t, const int64_t[::1] arr, const int64_t[::1] d_arr,
                           const int64_t[::1] ws, const int64_t[::1] we,
                           const double[::1] base, const double[::1] cum, double usual,
                           bint actual, Py_ssize_t *pa, Py_ssize_t *pd,
                           Py_ssize_t *kw) noexcept nogil:
    # _cf_arrivals at t, for times t ascending from one call to the next:
    # the arrivals by t and the windows started by t counted on from where
    # the last call left them (pa, pd, kw); usual t without `actual`
    if not actual:
        return usual * <double>t
    while pa[0] < arr.shape[0] and arr[pa[0]] <= t:
        pa[0] += 1
    while pd[0] < d_arr.shape[0] and d_arr[pd[0]] <= t:
        pd[0] += 1
    while kw[0] < ws.shape[0] and ws[kw[0]] <= t:
        kw[0] += 1
    return _cf_arrivals(t, <double>(pa[0] + pd[0]), kw[0], ws, we, base, cum, usual)


cdef inline double _clip(double x, double lo, double hi) noexcept nogil:
    # np.clip: min(max(x, lo), hi)
    x = x if x > lo else lo
    return x if x < hi else hi


cdef inline double _max(double a, double b) noexcept nogil:
    # np.maximum for non-nan values: a unless b is larger
    return b if b > a else a


cdef inline double _min(double a, double b) noexcept nogil:
    return b if b < a else a


def hop_scores(const int64_t[::1] arr, const int64_t[::1] rx, const out_t[::1] hops,
               const int64_t[::1] d_arr, const out_t[::1] d_hops, const int64_t[::1] dep,
               const int64_t[::1] pstart, const int64_t[::1] pend,
               const int64_t[:, ::1] pquiet, double rate, double local_rate, double usual,
               const int64_t[::1] surge_start, const int64_t[::1] surge_end, bint judge_input,
               const int64_t[::1] cf_start, const int64_t[::1] cf_end,
               const double[::1] cf_base, const double[::1] cf_cum, bint cf_actual,
               uint64_t[::1] words, out_t[::1] kept, double[:, ::1] scores,
               int64_t[::1] state, double[::1] state_d, double room):
    """Local and input scores of every hop at one NF (attribution.py,
    ``_NF.hop_scores``), by one merge over its sorted event arrays, kept
    compact as they are made.

    Parameters
    ----------
    arr, rx, hops : the accepted arrivals (sorted), their rx and hops.
    d_arr, d_hops : the dropped arrivals (sorted) and their hops.  What was
        offered to the queue is the two merged; they are not merged into
        arrays of their own (on bench/analyze.py's 9.5 M-hop capture that
        copy was 81 MiB): only the arrival times' order counts here.
    dep : departures (rx), sorted.
    pstart, pend : queuing periods.
    pquiet : ``[period, t]`` rows, by period: the periods that began while
        the NF was silent, since `t` (before the start, no departure in
        between); their no-input-cause queue counts its arrivals from `t`.
    rate, usual : peak service rate and usual arrival rate (packets/ns).
    local_rate : the rate the NF is served at without a local cause (at
        most `rate`: the peak estimate less its tolerance).
    surge_start, surge_end, judge_input : where `judge_input` is set, a
        hop's input score is 0 unless one of the windows (disjoint, sorted:
        the arrivals beyond their natural variation) overlaps the hop's
        [period start, arrival].
    cf_start, cf_end, cf_base, cf_cum, cf_actual : the arrivals the
        no-input-cause queue counts.  Without `cf_actual`, ``usual t`` by
        time t.  With it, the arrivals (accepted and dropped) that came,
        but within the windows ``[cf_start[k], cf_end[k])`` (disjoint,
        sorted: where they ran beyond their natural variation either way)
        the usual rate: ``cf_base[k] + usual (t - cf_start[k])`` inside
        window k, ``N(t) - cf_cum[K]`` outside, where N(t) counts the
        arrivals by t, K the windows started by t, ``cf_cum[K]`` the sum
        of their excess ``N(end) - N(start) - usual (end - start)``
        (``cf_cum[0] = 0``) and ``cf_base[k] = N(cf_start[k]) -
        cf_cum[k]``.
    words : the NF's bitmap over all hops: bit h is set for each hop h
        written to `kept`.
    kept, scores : the hops whose scores (local, input) are not (+0.0,
        +0.0) bit for bit (a -0.0 is kept), and those scores, in the order
        they are made (accepted before dropped among equal arrivals); hops
        outside any queuing period score 0.  As many as fit: the call
        stops before a run of equal arrivals that would not.
    state, state_d : where the merge stands (HOP_SCORES_STATE int64 and
        HOP_SCORES_STATE_D doubles, zeroed before the first call): call
        again with the same arrays until ``state[0] == len(arr)`` and
        ``state[1] == len(d_arr)``, so the output of an NF is made a chunk
        at a time (on bench/analyze.py's 9.5 M-hop capture, room for every
        arrival of the largest NF was 44 MiB, the stage's peak).
    room : the most the queue holds: a drop's no-local-cause queue is
        bounded by it (what would not fit is dropped), from the first time
        it would not fit in a period on.

    Returns
    -------
    int
        Number of hops written to `kept` (-m where nothing fit: the next
        run needs room for m).

    The counterfactual queues need running minima within queuing periods:
    of ``i - r arr[i]`` over arrivals (no local cause) and of
    ``A(dep[j]) - (j + 1)`` over departures (no input cause; A the arrivals
    it counts, ``usual t`` without `cf_actual`).  They are
    taken as numpy's version took them, so the sums round the same way: one
    running minimum over all of ``x - off`` plus ``off``, where ``off`` is
    ``(period index - first period index) * (range of x + 1)`` (each
    period sits below the ones before it, so the minimum never reaches
    back across a period start).
    """
    cdef Py_ssize_t na = arr.shape[0], ndr = d_arr.shape[0], n = na + ndr
    cdef Py_ssize_t nd = dep.shape[0], npd = pstart.shape[0]
    cdef Py_ssize_t i, ia = 0, idr = 0, ia1, id1, j1, x, c = 0
    cdef Py_ssize_t jM = 0, jp = 0, jpd = 0, jMs = 0, js = 0, nsg = surge_start.shape[0]
    cdef Py_ssize_t jq = 0, nq = pquiet.shape[0], nw = cf_start.shape[0]
    cdef Py_ssize_t pa = 0, pd = 0, kd = 0, ka = 0, cf_p = -1, ga = 0, gd = 0, gw = 0
    cdef int64_t t0
    cdef double cf_t0 = 0
    cdef int64_t a, p, s, Ms, M, N, kk, h
    cdef double r = rate, rl = local_rate, xv, big_loc = 0, big_in = 0, lo, hi, off = 0
    cdef double run_loc = 0, run_in = 0, min_loc, min_in = 0, q, q_loc, q_in, m0, m
    cdef double run_all = 0, x_all, n_all
    cdef double w, w_loc, w_in, L, I
    cdef int64_t seg0_loc = 0, seg0_in = 0, dpj = -1, lastb_t = 0, lastb_n = 0
    cdef double qb = 0, q_b
    cdef int64_t qb_t = 0, qb_p = -2, qb_full = 0
    cdef Py_ssize_t cap = kept.shape[0]
    cdef bint same, have_in = False, surged
    if n == 0:
        return 0
    if state[10]:
        ia, idr, jM, jp, jpd, jMs = state[0], state[1], state[2], state[3], state[4], state[5]
        dpj, have_in, seg0_loc, seg0_in = state[6], state[7], state[8], state[9]
        lastb_t, lastb_n, js, jq = state[11], state[12], state[13], state[14]
        pa, pd, kd, ka, cf_p = state[15], state[16], state[17], state[18], state[19]
        ga, gd, gw = state[20], state[21], state[22]
        cf_t0 = state_d[6]
        qb, qb_t, qb_p, qb_full = state_d[7], state[23], state[24], state[25]
        run_loc, run_in, min_in, big_loc, big_in = (state_d[0], state_d[1], state_d[2],
                                                    state_d[3], state_d[4])
        run_all = state_d[5]
    with nogil:
        if not state[10]:
            # offsets of _seg_cummin: the values' range (+1) per period index,
            # over the arrivals merged (the i-th smallest is arr or d_arr's next)
            lo, hi = 1e300, -1e300
            for i in range(n):
                if idr >= ndr or (ia < na and arr[ia] <= d_arr[idr]):
                    a = arr[ia]
                    ia += 1
                else:
                    a = d_arr[idr]
                    idr += 1
                xv = <double>i - rl * <double>a
                lo = xv if xv < lo else lo
                hi = xv if xv > hi else hi
            big_loc = (hi - lo) + 1.0
            if ndr == 0 or (na and arr[0] <= d_arr[0]):
                seg0_loc = _period_idx(pstart, arr[0])
            else:
                seg0_loc = _period_idx(pstart, d_arr[0])
            if nd:
                # by runs of equal departures (a batch): A(dep[i]) is the
                # run's, and A - (i + 1) falls with i, rounding and all,
                # so the run's first and last are its extremes
                lo, hi = 1e300, -1e300
                i = 0
                while i < nd:
                    j1 = i + 1
                    while j1 < nd and dep[j1] == dep[i]:
                        j1 += 1
                    m = _cf_walk(dep[i], arr, d_arr, cf_start, cf_end, cf_base, cf_cum,
                                 usual, cf_actual, &pa, &pd, &kd)
                    xv = m - <double>j1
                    lo = xv if xv < lo else lo
                    xv = m - <double>(i + 1)
                    hi = xv if xv > hi else hi
                    i = j1
                big_in = (hi - lo) + 1.0
                seg0_in = _period_idx(pstart, dep[0])
            ia = idr = 0
            pa = pd = kd = 0
        while ia < na or idr < ndr:
            i = ia + idr                            # merged index of the run
            if idr >= ndr or (ia < na and arr[ia] <= d_arr[idr]):
                a = arr[ia]
            else:
                a = d_arr[idr]
            # the run of equal arrivals: N = ia1 + id1 arrivals <= a, of
            # which id1 dropped
            ia1, id1 = ia, idr
            while ia1 < na and arr[ia1] == a:
                ia1 += 1
            while id1 < ndr and d_arr[id1] == a:
                id1 += 1
            if c + (ia1 - ia) + (id1 - idr) > cap:
                if c == 0:
                    c = -((ia1 - ia) + (id1 - idr))
                break
            N = ia1 + id1
            # the period holding a (period_of), if any
            while jp < npd and pstart[jp] <= a:
                jp += 1
            p = jp - 1
            # running minimum of x = i - r arr[i] within periods, up to
            # N - 1: within the run arr is a, so x grows with i and the
            # run's first element is its minimum
            off = <double>(p - seg0_loc) * big_loc
            x_all = <double>i - rl * <double>a
            xv = x_all - off
            if i == 0 or xv < run_loc:
                run_loc = xv
            min_loc = run_loc + off
            # and over all arrivals so far, periods or not
            if i == 0 or x_all < run_all:
                run_all = x_all
            # departures <= a, with the running minimum of y = A(dep[j])
            # - (j + 1) within periods: by runs of equal departures (a
            # batch), whose last element is the run's minimum
            while jM < nd and dep[jM] <= a:
                j1 = jM + 1
                while j1 < nd and dep[j1] == dep[jM]:
                    j1 += 1
                while jpd < npd and pstart[jpd] <= dep[jM]:
                    jpd += 1
                dpj = jpd - 1
                off = <double>(dpj - seg0_in) * big_in
                xv = (_cf_walk(dep[jM], arr, d_arr, cf_start, cf_end, cf_base, cf_cum, usual,
                               cf_actual, &pa, &pd, &kd) - <double>j1) - off
                if not have_in or xv < run_in:
                    run_in = xv
                    have_in = True
                min_in = run_in + off
                lastb_t, lastb_n = dep[jM], j1 - jM
                jM = j1
            M = jM
            if ndr and rl > 0:
                # a drop's queue without a local cause holds no more than
                # the room: the NF at rl from the period's start, dropping
                # what would not fit (q_loc keeps room for every packet
                # offered, so after a burst had filled the queue it stayed
                # full long after the NF at rl would have drained it)
                if p != qb_p:
                    qb, qb_p, qb_full = 0.0, p, 0
                else:
                    qb = _max(qb - rl * <double>(a - qb_t), 0.0)
                qb += <double>((ia1 - ia) + (id1 - idr))
                if qb > room:
                    qb, qb_full = room, 1
                qb_t = a
            if p < 0 or not (pend[p] < 0 or pend[p] >= a) or r <= 0 or rl <= 0:
                ia, idr = ia1, id1
                continue
            s = pstart[p]
            q = <double>(ia1 - M if ia1 - M > 0 else 0)        # accepted <= a, queued
            n_all = <double>N - rl * <double>a
            q_loc = _clip(n_all - min_loc, 0.0, q)
            # (until the room bounds it, q_loc is the same queue)
            q_b = _min(q_loc, qb) if qb_full else q_loc
            # departures at or before the period start (p only grows)
            while jMs < nd and dep[jMs] <= s:
                jMs += 1
            Ms = jMs
            while jq < nq and pquiet[jq, 0] < p:
                jq += 1
            t0 = pquiet[jq, 1] if jq < nq and pquiet[jq, 0] == p else s
            if not cf_actual:
                m0 = usual * <double>t0 - <double>Ms
            else:
                if cf_p != p:           # the period's arrivals by t0, once
                    cf_t0 = _cf_arrivals(t0, <double>(_idx_from(arr, t0, &ga) + 1 +
                                                      _idx_from(d_arr, t0, &gd) + 1),
                                         _idx_from(cf_start, t0, &gw) + 1, cf_start, cf_end,
                                         cf_base, cf_cum, usual)
                    cf_p = p
                m0 = cf_t0 - <double>Ms
            same = M - 1 >= 0 and M - 1 >= Ms and dpj == p
            m = _min(m0, min_in) if same else m0
            if cf_actual:
                while ka < nw and cf_start[ka] <= a:
                    ka += 1
                q_in = _clip((_cf_arrivals(a, <double>N, ka, cf_start, cf_end, cf_base,
                                           cf_cum, usual) - <double>M) - m, 0.0, q)
            else:
                q_in = _clip((usual * <double>a - <double>M) - m, 0.0, q)
            w_loc = _max(q_loc - 1, 0) / rl
            if M > 0:
                # the batch taken last, served at rl, ends before the NF
                # can take another: a wait a batch makes, not a slowness --
                # as long as the NF at rl would still have been busy then:
                # the queue it would have had, its queuing periods not
                # restarting it, bounds the wait (a backlog a slowness left
                # makes the batches it is taken in larger than that)
                w_loc = _max(w_loc, _min(
                    _max(0.0, (<double>lastb_t + <double>lastb_n / rl) - <double>a),
                    _max((n_all - run_all) - 1, 0) / rl))
            # the last window starting by a ends last among those
            while js < nsg and surge_start[js] <= a:
                js += 1
            surged = not judge_input or (js > 0 and surge_end[js - 1] >= s)
            kk = M + <int64_t>ceil(_max(q_in - 1, 0))
            if kk > nd - 1:
                kk = nd - 1
            if kk < 0:
                kk = 0
            for x in range(ia, ia1):
                w = <double>(rx[x] - a)
                w_in = <double>(dep[kk] - a) if nd else w
                L = r * _max(0.0, w - w_loc)
                I = r * _max(0.0, w - _min(w_in, w)) if surged else 0.0
                if L != 0.0 or I != 0.0 or signbit(L) or signbit(I):
                    h = hops[x]
                    words[h >> 6] |= (<uint64_t>1) << (h & 63)
                    kept[c] = <out_t>h
                    scores[c, 0] = L
                    scores[c, 1] = I
                    c += 1
            # a drop's scores: the queue at arrival less each
            # counterfactual queue
            L = q - q_b
            I = q - q_in if surged else 0.0
            if L != 0.0 or I != 0.0 or signbit(L) or signbit(I):
                for x in range(idr, id1):
                    h = d_hops[x]
                    words[h >> 6] |= (<uint64_t>1) << (h & 63)
                    kept[c] = <out_t>h
                    scores[c, 0] = L
                    scores[c, 1] = I
                    c += 1
            ia, idr = ia1, id1
    state[0], state[1], state[2], state[3], state[4], state[5] = ia, idr, jM, jp, jpd, jMs
    state[6], state[7], state[8], state[9], state[10] = dpj, have_in, seg0_loc, seg0_in, 1
    state[11], state[12], state[13], state[14] = lastb_t, lastb_n, js, jq
    state[15], state[16], state[17], state[18], state[19] = pa, pd, kd, ka, cf_p
    state[20], state[21], state[22] = ga, gd, gw
    state_d[6] = cf_t0
    state_d[0], state_d[1], state_d[2], state_d[3], state_d[4] = (run_loc, run_in, min_in,
                                                                 big_loc, big_in)
    state_d[5] = run_all
    state_d[7], state[23], state[24], state[25] = qb, qb_t, qb_p, qb_full
    return c


#: Sizes of hop_scores' `state` and `state_d`.
HOP_SCORES_STATE = 26
HOP_SCORES_STATE_D = 8


# -- attribution: victims ---------------------------------------------------

def victim_delays(const index_t[::1] hop_packet, const index2_t[::1] hop_nf,
                  const index3_t[::1] hop_rx, const int64_t[::1] hop_arrival_ns,
                  const int64_t[::1] hop_rx_ns, const int64_t[::1] hop_tx_ns,
                  const out_t[::1] vidx, double[::1] tot, int64_t[::1] vnf, int64_t[::1] varr):
    """Pass 1 over the hops of victims (``vidx[p]``: victim index of packet
    p, -1 not a victim): ``tot[v]``, the victim's total queuing delay
    (summed in hop order), and ``vnf``, ``varr``: NF and arrival of the hop
    where it spent longest (wait + service; ties go to the later hop).

    Returns
    -------
    int
        Number of hops of victims.
    """
    cdef Py_ssize_t h, nh = hop_packet.shape[0], n = 0
    cdef int64_t v, a, delay, spent
    cdef int64_t[::1] best = _int64_full(vnf.shape[0])
    with nogil:
        for h in range(nh):
            v = vidx[hop_packet[h]]
            if v < 0:
                continue
            n += 1
            a = hop_arrival_ns[h]
            delay = 0 if (hop_rx[h] < 0 or a < 0) else hop_rx_ns[h] - a
            tot[v] += <double>delay
            spent = hop_tx_ns[h] - a if (hop_tx_ns[h] >= 0 and a >= 0) else 0
            if spent >= best[v]:
                best[v] = spent
                vnf[v] = hop_nf[h]
                varr[v] = a
    return n


def victim_kept_hops(const index_t[::1] hop_packet, const index2_t[::1] hop_nf,
                     const index3_t[::1] hop_rx, const int64_t[::1] hop_arrival_ns,
                     const int64_t[::1] hop_rx_ns, const out_t[::1] vidx,
                     double min_share, const double[::1] tot, int64_t[::1] vnf,
                     int64_t[::1] varr, out_t[::1] kept):
    """Pass 2: the hops that count for a victim -- dropped there, or waited
    there at least `min_share` of ``tot`` -- written to `kept` in hop
    order; ``vnf``, ``varr`` become those of the counting hop where it
    waited longest (ties go to the later hop).

    Returns
    -------
    int
        Number of counting hops.
    """
    cdef Py_ssize_t h, nh = hop_packet.shape[0], nk = 0
    cdef int64_t v, a, delay
    cdef bint drop
    cdef int64_t[::1] best = _int64_full(vnf.shape[0])
    with nogil:
        for h in range(nh):
            v = vidx[hop_packet[h]]
            if v < 0:
                continue
            a = hop_arrival_ns[h]
            drop = hop_rx[h] < 0
            delay = 0 if (drop or a < 0) else hop_rx_ns[h] - a
            if not (drop or (delay > 0 and <double>delay >= min_share * tot[v])):
                continue
            kept[nk] = <out_t>h
            nk += 1
            if delay >= best[v]:
                best[v] = delay
                vnf[v] = hop_nf[h]
                varr[v] = a
    return nk


cdef int64_t[::1] _int64_full(Py_ssize_t n):
    cdef int64_t[::1] a = cvarray(shape=(max(n, 1),), itemsize=sizeof(int64_t), format="q")
    cdef Py_ssize_t i
    for i in range(n):
        a[i] = INT64_MIN
    return a


def rank_victims(const int64_t[::1] offsets, const int32_t[::1] col,
                 const double[::1] capped, const double[::1] uncapped, double eps,
                 int64_t[::1] out_offsets, int32_t[::1] culprit, double[::1] score):
    """Every victim's culprits, best first (Attribution.ranked_arrays), from
    the scores in CSR (CulpritScores: victim v's entries ``offsets[v]:
    offsets[v + 1]``, by column).

    Per victim: the entries whose capped score rounded to 3 decimals (as
    ``np.round``) exceeds `eps`, by capped score, then `uncapped`,
    descending, then by column.  Called twice: with empty `culprit` to
    count (``out_offsets[v+1]`` = culprits of victims <= v), then to fill
    `culprit` and `score` (the rounded score).
    """
    cdef Py_ssize_t v, i, k, b, e, nv = offsets.shape[0] - 1, w = 1
    cdef double x, sx, rx
    cdef bint fill = culprit.shape[0] > 0
    for v in range(nv):
        w = max(w, offsets[v + 1] - offsets[v])
    # entries placed so far for the victim being ranked
    cdef int64_t[::1] at = cvarray(shape=(w,), itemsize=sizeof(int64_t), format="q")
    with nogil:
        out_offsets[0] = 0
        for v in range(nv):
            b = out_offsets[v]
            e = 0
            for i in range(offsets[v], offsets[v + 1]):
                if not (capped[i] > 0.0):
                    continue        # rounds to <= 0
                x = rint(capped[i] * 1000.0) / 1000.0
                if not (x > eps):
                    continue
                if fill:
                    # insertion: after every entry ranked above entry i
                    sx, rx = capped[i], uncapped[i]
                    k = e
                    while k > 0 and (capped[at[k - 1]] < sx or
                                     (capped[at[k - 1]] == sx and uncapped[at[k - 1]] < rx)):
                        at[k] = at[k - 1]
                        k -= 1
                    at[k] = i
                e += 1
            if fill:
                for k in range(e):
                    culprit[b + k] = col[at[k]]
                    score[b + k] = rint(capped[at[k]] * 1000.0) / 1000.0
            out_offsets[v + 1] = b + e


def arrivals_between(const out_t[::1] hops_by_arr, const int64_t[::1] hop_arrival_ns,
                     const int64_t[::1] hop_rx_ns, int64_t s, int64_t e):
    """``searchsorted(arr, s, "left"), searchsorted(arr, e, "right")`` over
    the arrivals `arr` of hops `hops_by_arr` (sorted by them; see
    upstream_windows_at), looked up through the hops."""
    cdef Py_ssize_t i0, i1
    with nogil:
        i0 = _search_hops(hops_by_arr, hops_by_arr, True, hop_arrival_ns, hop_rx_ns, s, False)
        i1 = _search_hops(hops_by_arr, hops_by_arr, True, hop_arrival_ns, hop_rx_ns, e, True)
    return i0, i1


cdef inline Py_ssize_t _search_hops(const out_t[::1] hops, const index_t[::1] at, bint every,
                                    const int64_t[::1] hop_arrival_ns,
                                    const int64_t[::1] hop_rx_ns, int64_t t,
                                    bint right) noexcept nogil:
    # searchsorted(arrival of hops[at] (of hops where every), t, "right"
    # if right else "left")
    cdef Py_ssize_t lo = 0, hi = hops.shape[0] if every else at.shape[0], mid
    cdef int64_t x
    while lo < hi:
        mid = (lo + hi) >> 1
        x = _arrival_of(hop_arrival_ns, hop_rx_ns, hops[mid] if every else hops[at[mid]])
        if x < t or (right and x == t):
            lo = mid + 1
        else:
            hi = mid
    return lo


# -- the upstream split of a family of prefixes --------------------------
#
# The victims of one queuing period are split per arrival bucket, each
# bucket over the arrivals from the period's start to its own end: prefixes
# of one list.  These kernels make one pass over the longest prefix and
# stop at each shorter one (``ends``, ascending), so a period of B buckets
# costs one pass where B splits from its start cost B / 2 passes each
# (quadratic in the period's length).  At every prefix the result is, to
# the last bit, what a pass over that prefix alone makes of it: sums in
# numpy's order over the prefix, minima and maxima, counts.

cdef int _check_ends(const int64_t[::1] ends, Py_ssize_t n) except -1:
    cdef Py_ssize_t b
    for b in range(ends.shape[0]):
        if ends[b] < 0 or ends[b] > n or (b and ends[b] < ends[b - 1]):
            raise ValueError(f"ends must ascend within [0, {n}]: ends[{b}] = {ends[b]}")
    return 0


cdef inline void _widen(int64_t x, Py_ssize_t *c, int64_t *lo, int64_t *hi) noexcept nogil:
    # the span (lo, hi) of the c recorded times so far takes x (< 0: not
    # recorded, left out)
    if x < 0:
        return
    if c[0] == 0 or x < lo[0]:
        lo[0] = x
    if c[0] == 0 or x > hi[0]:
        hi[0] = x
    c[0] += 1


def upstream_groups_at(const out_t[::1] hops, const code_t[::1] prev_nf,
                       const int64_t[::1] ends, out_t[::1] grouped, int64_t[:, ::1] counts):
    """Partition ``hops[:ends[-1]]`` (arrivals at one NF) by the NF of
    each one's previous hop (``prev_nf``, -1: the source) into `grouped`,
    keeping their order, by ascending NF: group g holds those from NF
    g - 1, the source's own hops for g = 0 and, from an NF u, the previous
    hops ``hop - 1`` (the same packets' hops at u, which the split goes on
    with).  ``counts[g, b]``: the hops of ``hops[:ends[b]]`` in group g,
    so that prefix b's part of group g is the first ``counts[g, b]`` of
    its run in `grouped`.

    Returns
    -------
    list
        Where each group's run starts in `grouped`."""
    cdef Py_ssize_t i, b, g, nb = ends.shape[0], ng = counts.shape[0]
    cdef Py_ssize_t n = ends[nb - 1] if nb else 0
    _check_ends(ends, hops.shape[0])
    if counts.shape[1] != nb:
        raise ValueError("counts must have one column per end")
    cdef int64_t u
    cdef int64_t[::1] at = cvarray(shape=(ng + 1,), itemsize=sizeof(int64_t), format="q")
    cdef int64_t[::1] c = cvarray(shape=(ng,), itemsize=sizeof(int64_t), format="q")
    with nogil:
        for g in range(ng):
            c[g] = 0
        for i in range(n):
            c[prev_nf[hops[i]] + 1] += 1
        at[0] = 0
        for g in range(ng):
            at[g + 1] = at[g] + c[g]
            c[g] = 0
        b = 0
        for i in range(n + 1):
            while b < nb and ends[b] == i:
                for g in range(ng):
                    counts[g, b] = c[g]
                b += 1
            if i == n:
                break
            u = prev_nf[hops[i]]
            grouped[at[u + 1] + c[u + 1]] = hops[i] if u < 0 else hops[i] - 1
            c[u + 1] += 1
    return [at[g] for g in range(ng)]


def group_shares_small(const int64_t[:, ::1] counts, const double[::1] usual_from,
                       const int64_t[::1] spans, double eps, double[:, ::1] out):
    """attribution.group_shares for fewer than 8 groups (rows), into `out`:
    each present group's excess ``counts - usual_from * spans`` clipped at
    0, over the column's total; by count where the excesses sum to at most
    `eps`.  The totals are added row by row, as numpy's ``sum(axis=0)`` adds
    them (from 8 rows numpy sums each column pairwise, so those stay with
    the caller's numpy).  The recursion calls it ~1,000 times on
    bench/analyze.py's capture, where numpy's dozen small calls each came
    to ~60 us."""
    cdef Py_ssize_t g, b, ng = counts.shape[0], nb = counts.shape[1]
    cdef double x, tot
    if ng >= 8:
        raise ValueError("group_shares_small: 8 groups or more are numpy's")
    if (usual_from.shape[0] != ng or spans.shape[0] != nb or out.shape[0] != ng
            or out.shape[1] != nb):
        raise ValueError("usual_from, spans and out must match counts")
    with nogil:
        for b in range(nb):
            tot = 0.0
            for g in range(ng):
                x = 0.0
                if counts[g, b] > 0:
                    x = <double>counts[g, b] - usual_from[g] * <double>spans[b]
                    x = x if x > 0.0 else 0.0
                out[g, b] = x
                tot = x if g == 0 else tot + x
            if tot <= eps:
                for g in range(ng):
                    x = <double>counts[g, b] if counts[g, b] > 0 else 0.0
                    out[g, b] = x
                    tot = x if g == 0 else tot + x
            for g in range(ng):
                out[g, b] = out[g, b] / tot


def upstream_windows_at(const out_t[::1] P, const int64_t[::1] ends,
                        const int64_t[::1] hop_tx_ns, const int64_t[::1] hop_arrival_ns,
                        const int64_t[::1] hop_rx_ns, const out_t[::1] hops_by_arr,
                        const index_t[::1] to_pos, bint every, int64_t[::1] t0,
                        int64_t[::1] t1, int64_t[::1] n_arr, int64_t[::1] lo,
                        int64_t[::1] hi):
    """For every prefix ``P[:ends[b]]`` (ends >= 1) of hops at an upstream
    NF u (packets it sent towards k): ``t0[b], t1[b]`` the span of their
    tx times, ``n_arr[b]`` the number of u's accepted arrivals bound for k
    in [t0, t1], and ``lo[b], hi[b]`` the span of their recorded arrivals
    at u ((t0, t1) where none was recorded).

    u's accepted arrivals are given as their hops, `hops_by_arr` (sorted
    by arrival: the arrival of hop h is ``hop_arrival_ns[h]``, its rx where
    not recorded), not as times of their own (8 bytes per arrival held for
    the whole attribution stage); `to_pos` holds the positions in it of
    those bound for k, ascending; `every`: all of them are (`to_pos` is not
    read)."""
    cdef Py_ssize_t i = 0, b, nb = ends.shape[0], c = 0
    cdef int64_t x, a0 = 0, a1 = 0, x0 = 0, x1 = 0
    _check_ends(ends, P.shape[0])
    if nb and ends[0] < 1:
        raise ValueError("every prefix must hold a hop")
    with nogil:
        for b in range(nb):
            while i < ends[b]:
                x = hop_tx_ns[P[i]]
                if i == 0 or x < x0:
                    x0 = x
                if i == 0 or x > x1:
                    x1 = x
                _widen(hop_arrival_ns[P[i]], &c, &a0, &a1)
                i += 1
            t0[b], t1[b] = x0, x1
            lo[b], hi[b] = (a0, a1) if c else (x0, x1)
            n_arr[b] = (_search_hops(hops_by_arr, to_pos, every, hop_arrival_ns, hop_rx_ns,
                                     x1, True)
                        - _search_hops(hops_by_arr, to_pos, every, hop_arrival_ns, hop_rx_ns,
                                       x0, False))


def diagnosis_sums_at(const uint64_t[::1] words, const int64_t[::1] rank,
                      const double[:, ::1] values, const out_t[::1] P,
                      const int64_t[::1] ends, const index3_t[::1] hop_rx,
                      const int64_t[::1] hop_arrival_ns, const int64_t[::1] hop_rx_ns,
                      const int64_t[::1] pstart, const int64_t[::1] pend,
                      double[::1] local, double[::1] input, double[::1] ls,
                      double[::1] ins, double[::1] wait, int64_t[::1] period,
                      int64_t[::1] lo, int64_t[::1] hi):
    """For every prefix ``P[:ends[b]]`` (ends >= 1) of hops at one NF: the
    sums of their local and input scores (``ls[b], ins[b]``, gathered as
    gather_scores does, added as ``ndarray.sum`` adds them), their total
    wait (``wait[b]``: rx less arrival, rx where no arrival was recorded;
    0 for a hop never received or received before it came), and the first
    queuing period holding one of them (``period[b]``, -1: none) with the
    span of their arrivals (``lo[b], hi[b]``; arrival, or rx where not
    recorded).  `local` and `input` are room for ``ends[-1]`` scores,
    overwritten."""
    cdef Py_ssize_t i = 0, b, nb = ends.shape[0], n = ends[nb - 1] if nb else 0
    cdef int64_t a, p, w, pmin = -1, a_pmin = 0, a0 = 0, a1 = 0
    cdef out_t h
    cdef double tot = 0
    _check_ends(ends, P.shape[0])
    if nb and ends[0] < 1:
        raise ValueError("every prefix must hold a hop")
    if local.shape[0] < n or input.shape[0] < n:
        raise ValueError(f"local and input must hold {n} scores")
    gather_scores(words, rank, values, P[:n], local, input)
    with nogil:
        for b in range(nb):
            while i < ends[b]:
                h = P[i]
                if hop_rx[h] >= 0:
                    a = hop_arrival_ns[h]
                    w = hop_rx_ns[h] - (a if a >= 0 else hop_rx_ns[h])
                    if w > 0:
                        tot += <double>w
                a = hop_arrival_ns[h]
                if a < 0:
                    a = hop_rx_ns[h]
                if i == 0 or a < a0:
                    a0 = a
                if i == 0 or a > a1:
                    a1 = a
                i += 1
                if pmin >= 0 and a >= a_pmin:
                    continue
                p = _period_idx(pstart, a)
                if p >= 0 and (pend[p] < 0 or pend[p] >= a):
                    pmin, a_pmin = p, a
            ls[b] = _pairwise_sum(local, 0, ends[b])
            ins[b] = _pairwise_sum(input, 0, ends[b])
            wait[b], period[b], lo[b], hi[b] = tot, pmin, a0, a1


def source_windows_at(const out_t[::1] hops, const int64_t[::1] ends,
                      const index_t[::1] hop_packet, const uint32_t[::1] src_addr,
                      const int64_t[::1] hop_arrival_ns, uint32_t[::1] addr,
                      int64_t[::1] span):
    """For every prefix ``hops[:ends[b]]``: ``span[b]`` the span (max -
    min) of their recorded arrivals, 0 where none was; and the source
    addresses of the longest, ``addr[i]`` of hop i's packet (none where
    `src_addr` is empty)."""
    cdef Py_ssize_t i = 0, b, nb = ends.shape[0], c = 0
    cdef bint known = src_addr.shape[0] > 0
    cdef int64_t a0 = 0, a1 = 0
    _check_ends(ends, hops.shape[0])
    with nogil:
        for b in range(nb):
            while i < ends[b]:
                if known:
                    addr[i] = src_addr[hop_packet[hops[i]]]
                _widen(hop_arrival_ns[hops[i]], &c, &a0, &a1)
                i += 1
            span[b] = a1 - a0


def score_csr(const out_t[::1] rows, const int32_t[::1] cols, const double[::1] vals,
              const double[::1] excess, const double[::1] rate, Py_ssize_t n_culprits,
              int64_t[::1] offsets, int32_t[::1] culprit, double[::1] capped,
              double[::1] uncapped):
    """Sum contributions ``(rows[i], cols[i], vals[i])`` per victim and
    culprit, in their order (np.add.at on a zero matrix), into CSR by
    victim (CulpritScores): victim v's culprits are ``culprit[offsets[v]:
    offsets[v + 1]]``, ascending, each with ``uncapped = S * rate[v]`` and
    ``capped = min(S, excess[v]) * rate[v]``.  Only cells some
    contribution touched get an entry (their sum may be 0).

    Called twice: with empty `culprit` to count (``offsets[v + 1]`` =
    entries of victims <= v), then to fill `culprit`, `capped` and
    `uncapped`.  Entries are taken victim by victim (a stable counting
    sort), so each victim's sums are complete when it is written.
    """
    cdef Py_ssize_t i, j, k, t, v, n = rows.shape[0], nv = offsets.shape[0] - 1
    cdef Py_ssize_t nc = n_culprits, nt
    cdef int64_t[::1] start = cvarray(shape=(nv + 1,), itemsize=sizeof(int64_t), format="q")
    cdef int64_t[::1] order = cvarray(shape=(max(n, 1),), itemsize=sizeof(int64_t), format="q")
    cdef double[::1] row = cvarray(shape=(max(nc, 1),), itemsize=sizeof(double), format="d")
    cdef char[::1] touched = cvarray(shape=(max(nc, 1),), itemsize=sizeof(char), format="c")
    cdef int32_t[::1] seen = cvarray(shape=(max(nc, 1),), itemsize=sizeof(int32_t), format="i")
    cdef bint fill = culprit.shape[0] > 0
    cdef double x, m
    cdef int32_t c
    with nogil:
        for v in range(nv + 1):
            start[v] = 0
        for i in range(n):
            start[rows[i] + 1] += 1
        for v in range(nv):
            start[v + 1] += start[v]
        for i in range(n):
            v = rows[i]
            order[start[v]] = i
            start[v] += 1
        # start[v] is now the end of victim v's entries
        for j in range(nc):
            row[j] = 0.0
            touched[j] = 0
        i = 0
        offsets[0] = 0
        for v in range(nv):
            nt = 0
            while i < start[v]:
                j = cols[order[i]]
                row[j] += vals[order[i]]
                if not touched[j]:
                    touched[j] = 1
                    # the victim's columns so far, kept ascending
                    t = nt
                    while t > 0 and seen[t - 1] > j:
                        seen[t] = seen[t - 1]
                        t -= 1
                    seen[t] = <int32_t>j
                    nt += 1
                i += 1
            k = offsets[v]
            for t in range(nt):
                c = seen[t]
                if fill:
                    x = row[c]
                    culprit[k + t] = c
                    uncapped[k + t] = x * rate[v]
                    m = x if x <= excess[v] else excess[v]
                    capped[k + t] = m * rate[v]
                row[c] = 0.0
                touched[c] = 0
            offsets[v + 1] = k + nt


cdef double _pairwise_sum(const double[::1] a, Py_ssize_t lo, Py_ssize_t n) noexcept nogil:
    # numpy's pairwise summation of a[lo:lo + n] (loops_utils.h), as
    # ndarray.sum(axis=-1) adds up each row of a C-contiguous matrix
    cdef Py_ssize_t i, n2
    cdef double res, r0, r1, r2, r3, r4, r5, r6, r7
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
        r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
        i = 8
        while i < n - (n % 8):
            r0 += a[lo + i]
            r1 += a[lo + i + 1]
            r2 += a[lo + i + 2]
            r3 += a[lo + i + 3]
            r4 += a[lo + i + 4]
            r5 += a[lo + i + 5]
            r6 += a[lo + i + 6]
            r7 += a[lo + i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[lo + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, lo, n2) + _pairwise_sum(a, lo + n2, n - n2)


def tandem_queue_at(const out_t[::1] hops, const int64_t[::1] hop_arrival_ns,
                    const int64_t[::1] hop_rx_ns, const int64_t[::1] extra,
                    const int64_t[::1] side, double ru, double rd, double room,
                    const int64_t[::1] start, const int64_t[::1] at,
                    double[::1] out, double[::1] out_u):
    """The queues an NF U and the next NF D would have had if U served
    its arrivals at its peak rate `ru` and D took what U passed on at its
    peak `rd`, holding at most `room` packets (dropping the rest): two
    fluid servers in tandem, fed by U's arrivals `hops` (those bound for
    D, sorted by arrival: a hop's arrival or, where not recorded, its rx),
    both empty at ``start[b]``; and the arrivals `extra` (times, sorted:
    U's drops, which would have gone on without U's slowness), merged
    with them as they come, not into an array of their own (U's arrivals
    would be copied for each call).  The arrivals `side` (times, sorted)
    go to D directly: D's traffic from elsewhere, where D is further down
    U's path and other NFs feed it too.  Just after the last arrival in
    [``start[b]``, ``at[b]``]: U's backlog into ``out_u[b]``, D's into
    ``out[b]`` (packets; 0 before the first).  Queries with one start are
    answered in one pass from it (`start` and `at` ascending).

    Between arrivals U drains at `ru` while it holds any, and D fills at
    ``ru - rd`` meanwhile (drains at `rd` once U is empty)."""
    cdef Py_ssize_t i = 0, j = 0, b, n = hops.shape[0], nb = at.shape[0], c = 0
    cdef Py_ssize_t ne = extra.shape[0], ns = side.shape[0], k = 0
    cdef double a, last = 0, dt, busy, qu = 0, qd = 0, inv_ru
    cdef int64_t ah, t
    cdef int kind
    if out.shape[0] < nb or out_u.shape[0] < nb or start.shape[0] < nb:
        raise ValueError("start, out and out_u need one entry per time")
    if not (ru > 0 and rd > 0):
        raise ValueError("ru and rd must be > 0")
    for b in range(1, nb):
        if at[b] < at[b - 1] or start[b] < start[b - 1]:
            raise ValueError("start and at must ascend")
    inv_ru = 1.0 / ru
    with nogil:
        for b in range(nb):
            if b == 0 or start[b] != start[b - 1]:
                # both empty at the start: the first arrival from it on
                i = _search_hops(hops, hops, True, hop_arrival_ns, hop_rx_ns, start[b], False)
                j = _first_from(extra, start[b])
                k = _first_from(side, start[b])
                qu = qd = 0
                c = 0
            while True:
                # the next of the three runs (U's arrivals first on ties,
                # then the extra ones)
                kind = 0
                ah = 0
                if i < n:
                    t = _arrival_of(hop_arrival_ns, hop_rx_ns, hops[i])
                    if t <= at[b]:
                        ah, kind = t, 1
                if j < ne and extra[j] <= at[b] and (kind == 0 or extra[j] < ah):
                    ah, kind = extra[j], 2
                if k < ns and side[k] <= at[b] and (kind == 0 or side[k] < ah):
                    ah, kind = side[k], 3
                if kind == 0:
                    break
                if kind == 1:
                    i += 1
                elif kind == 2:
                    j += 1
                else:
                    k += 1
                a = <double>ah
                dt = a - last if c else 0.0
                busy = qu * inv_ru
                if busy > dt:
                    busy = dt
                qu -= ru * busy
                qd += (ru - rd) * busy
                if qd > room:
                    qd = room
                qd -= rd * (dt - busy)
                if qd < 0:
                    qd = 0
                if kind == 3:
                    qd = qd + 1.0 if qd + 1.0 < room else room
                else:
                    qu += 1.0
                last = a
                c += 1
            out[b], out_u[b] = qd, qu
    return None


def merge_row_columns(const int64_t[::1] offsets, const int32_t[::1] col,
                      const double[::1] values, int64_t[::1] out_offsets,
                      int32_t[::1] out_col, double[::1] out_values):
    """Per row of the CSR (`offsets`, `col`, `values`), its entries of one
    column summed into one and the row's columns ascending, as a stable
    sort by (row, column) and ``np.add.reduceat`` over each run make them,
    to the last bit (a run's first value plus the pairwise sum of the
    rest).  `out_col` and `out_values` need ``len(col)`` room.

    Returns
    -------
    int
        Entries written."""
    cdef Py_ssize_t v, i, m = 0, n, nv = offsets.shape[0] - 1, longest = 1
    cdef int32_t c, prev
    cdef bint any_left
    if out_offsets.shape[0] != offsets.shape[0]:
        raise ValueError("out_offsets must be as long as offsets")
    if out_col.shape[0] < col.shape[0] or out_values.shape[0] < col.shape[0]:
        raise ValueError("out_col and out_values need len(col) room")
    for v in range(nv):
        if offsets[v + 1] - offsets[v] > longest:
            longest = offsets[v + 1] - offsets[v]
    cdef double[::1] run = cvarray(shape=(longest,), itemsize=sizeof(double), format="d")
    with nogil:
        out_offsets[0] = 0
        for v in range(nv):
            # the row's columns in ascending order: the least above the
            # last taken, found again each time (rows hold a few entries)
            prev = -1
            while True:
                any_left = False
                c = 0
                for i in range(offsets[v], offsets[v + 1]):
                    if col[i] > prev and (not any_left or col[i] < c):
                        c, any_left = col[i], True
                if not any_left:
                    break
                n = 0
                for i in range(offsets[v], offsets[v + 1]):
                    if col[i] == c:
                        run[n] = values[i]
                        n += 1
                out_col[m] = c
                out_values[m] = run[0] + _pairwise_sum(run, 1, n - 1) if n > 1 else run[0]
                m += 1
                prev = c
            out_offsets[v + 1] = m
    return m


def row_sums(const int64_t[::1] offsets, const int32_t[::1] col, const double[::1] values,
             Py_ssize_t n_culprits, double[::1] out):
    """Per victim, the sum of its row of the dense (victims, n_culprits)
    matrix of `values` (CSR as CulpritScores, zeros elsewhere), added up as
    ``ndarray.sum(axis=1)`` does (pairwise, zeros included), to the last
    bit."""
    cdef Py_ssize_t v, i, nv = offsets.shape[0] - 1, nc = n_culprits
    cdef double[::1] row = cvarray(shape=(max(nc, 1),), itemsize=sizeof(double), format="d")
    with nogil:
        for i in range(nc):
            row[i] = 0.0
        for v in range(nv):
            for i in range(offsets[v], offsets[v + 1]):
                row[col[i]] = values[i]
            out[v] = 0.0 + _pairwise_sum(row, 0, nc)
            for i in range(offsets[v], offsets[v + 1]):
                row[col[i]] = 0.0


def top_culprits(const int64_t[::1] offsets, const int32_t[::1] col,
                 const double[::1] capped, const double[::1] uncapped, Py_ssize_t n_culprits,
                 double eps, int64_t[::1] out):
    """Attribution.top, from the scores in CSR (CulpritScores): per victim,
    among the culprits whose capped score is within ``eps * max(m, 1)`` of
    the victim's best m, the first (by column) with the largest
    `uncapped`; -1 where that score is not above `eps` (a culprit without
    an entry scores 0)."""
    cdef Py_ssize_t v, i, t, b, e, nv = offsets.shape[0] - 1
    cdef double m, thr, best
    with nogil:
        for v in range(nv):
            b, e = offsets[v], offsets[v + 1]
            m = 0.0 if e - b < n_culprits or b == e else capped[b]
            for i in range(b, e):
                if capped[i] > m:
                    m = capped[i]
            out[v] = -1
            if not (m > eps):
                continue        # no score above eps: no top culprit
            # m > eps: thr > 0, so culprits without an entry are below it
            thr = m - eps * (m if m >= 1 else 1.0)
            t = -1
            for i in range(b, e):
                if capped[i] >= thr and (t < 0 or uncapped[i] > best):
                    t, best = i, uncapped[i]
            if t >= 0 and capped[t] > eps:
                out[v] = col[t]


# -- queue timelines: one pass per array ------------------------------------
# Added after the kernels above rather than changing them (step_series keeps
# its per-arrival periods for callers that want them); queues.py calls these.

from libc.string cimport memcpy, memset

def distinct_sorted(const int64_t[::1] t):
    """Number of distinct values of `t` if it is non-decreasing, else -1:
    is_sorted and the count in one read of the array."""
    cdef Py_ssize_t i, n = t.shape[0]
    cdef int64_t d = 1 if n else 0
    cdef bint down = False
    with nogil:
        for i in range(1, n):
            down |= t[i] < t[i - 1]
            d += t[i] != t[i - 1]
    return -1 if down else d


cdef Py_ssize_t _merge_steps(const int64_t *arrival, Py_ssize_t na, const int64_t *rx,
                             Py_ssize_t nr, int64_t *step_ns, int32_t *step_len,
                             Py_ssize_t cap) noexcept nogil:
    """The step series of queue_steps; -1 when `cap` steps are too few,
    -2 when `rx` is not sorted (every pair rx[j], rx[j + 1] is r0, r1 at
    the start of an iteration, and compared there: the caller need not
    read rx beforehand; `arrival` it must have checked).

    Past its end an array reads as END (INT64_MAX, which the caller has
    checked neither holds), so the other is taken; ties go to arrivals, as
    in step_series.  Each array's next two values are kept in registers
    (a0, a1): taking one moves a1 into a0, and the load that refills a1
    is needed only an event later, so it is off the dependency chain
    (take -> index -> load -> compare -> take, ~5 ns an event when the
    value taken was loaded in the same iteration)."""
    cdef Py_ssize_t i = 0, j = 0, k = 0
    cdef int64_t a0, a1, r0, r1, t, nxt, take, mask, down = 0
    cdef int64_t END = 0x7fffffffffffffff
    a0 = arrival[0] if na > 0 else END
    a1 = arrival[1] if na > 1 else END
    r0 = rx[0] if nr > 0 else END
    r1 = rx[1] if nr > 1 else END
    # the queue length is i - j (arrivals taken less departures taken).
    # While both arrays have a value beyond a1 / r1 the refills need no
    # bounds check: this loop, then the checked one to the end
    while i + 2 < na and j + 2 < nr and k < cap:
        down |= r1 < r0
        take = a0 <= r0
        # selects by mask, not by ?: which gcc made a branch on the
        # (unpredictable) comparison
        mask = -take
        t = (a0 & mask) | (r0 & ~mask)
        i += take
        j += 1 - take
        a0 = (a1 & mask) | (a0 & ~mask)
        r0 = (r0 & mask) | (r1 & ~mask)
        a1 = arrival[i + 1]
        r1 = rx[j + 1]
        nxt = a0 if a0 < r0 else r0
        step_ns[k] = t
        step_len[k] = <int32_t>(i - j)
        k += nxt != t
    while a0 != END or r0 != END:
        if k >= cap:
            return -1
        down |= r1 < r0
        take = a0 <= r0
        mask = -take
        t = (a0 & mask) | (r0 & ~mask)
        i += take
        j += 1 - take
        a0 = (a1 & mask) | (a0 & ~mask)
        r0 = (r0 & mask) | (r1 & ~mask)
        a1 = arrival[i + 1] if i + 1 < na else END
        r1 = rx[j + 1] if j + 1 < nr else END
        nxt = a0 if a0 < r0 else r0
        step_ns[k] = t
        step_len[k] = <int32_t>(i - j)
        k += nxt != t
    return -2 if down else k


def queue_steps(const int64_t[::1] arrival, const int64_t[::1] rx,
                int64_t[::1] step_ns, int32_t[::1] step_len,
                int64_t[::1] starts, int64_t[::1] ends):
    """step_series without the per-arrival periods: the same steps, starts
    and ends (up to the returned counts) for a sorted `arrival` and `rx`.

    The merge takes one event per iteration with no branch on which array
    it comes from (that choice is data, and mispredicted once per run of
    same-time events it cost step_series ~4.5 ns an event on
    bench/analyze.py's capture): a step is written at every event and kept
    when the next event's time differs.  The periods come after, from the
    steps, the same way: a start or an end written at every step, kept on
    a change of busyness.  So `step_ns`, `step_len` need one entry per
    distinct event time, `starts`, `ends` one more than the number of
    periods.  `arrival` must be sorted; `rx` is checked on the way.

    Returns
    -------
    (int, int, int) or None
        Number of steps, of starts and of ends written; None (the buffers'
        contents undefined) when a buffer was too small, `rx` is not
        sorted or a time is INT64_MAX: step_series then.
    """
    cdef Py_ssize_t na = arrival.shape[0], nr = rx.shape[0]
    cdef Py_ssize_t cap_period = min(starts.shape[0], ends.shape[0])
    cdef Py_ssize_t x, ns, nstart = 0, nend = 0
    cdef const int64_t *pa = &arrival[0] if na else NULL
    cdef const int64_t *pr = &rx[0] if nr else NULL
    cdef int64_t *sn = &step_ns[0] if step_ns.shape[0] else NULL
    cdef int32_t *sl = &step_len[0] if step_len.shape[0] else NULL
    cdef int64_t *ps = &starts[0] if cap_period else NULL
    cdef int64_t *pe = &ends[0] if cap_period else NULL
    cdef int64_t busy, busy_before = 0
    if (na and arrival[na - 1] == 0x7fffffffffffffff) or \
            (nr and rx[nr - 1] == 0x7fffffffffffffff):
        return None                         # END would be ambiguous
    with nogil:
        ns = _merge_steps(pa, na, pr, nr, sn, sl, min(step_ns.shape[0], step_len.shape[0]))
        for x in range(ns if ns > 0 else 0):
            if nstart >= cap_period:
                ns = -1
                break
            busy = sl[x] > 0
            ps[nstart] = sn[x]
            pe[nend] = sn[x]
            nstart += busy & (1 - busy_before)
            nend += (1 - busy) & busy_before
            busy_before = busy
    if ns < 0:
        return None
    return ns, nstart, nend


def busy_batch_rates(const int64_t[::1] step_ns, const int32_t[::1] step_len,
                     const int64_t[::1] batch_ns, const int32_t[::1] rx_batch,
                     int64_t[::1] work, int64_t[::1] sums=None):
    """The rates queues.peak_rate takes the percentile of, in its order:
    ``count[b] / (batch_ns[b + 1] - batch_ns[b])`` for every batch b but
    the last after which the queue is still busy (a merge with the step
    series, as busy_after) and the gap is positive; ``count[b]`` is the
    number of `rx_batch` entries equal to b.  Each rate is the int64 /
    int64 division numpy does (both made double first), so the percentile
    is the same to the last bit.

    One buffer, `work` (at least ``len(batch_ns)``, reused across NFs so
    its pages are faulted in once), holds the counts and then, over them,
    the rates as doubles: rate m is written after count b >= m was read,
    and no later count is at or below m.  The counts come from a sorted
    `rx_batch` (as ingest writes it): every entry stores its index + 1 at
    its batch, leaving there the number of entries up to that batch's
    last, and a batch's count is the difference from the previous batch
    with entries; no read-modify-write of one counter per packet.

    `sums`, where given (2 entries): the packets of those batches and
    their gaps summed, whose ratio is the rate the NF kept up while busy.

    Returns
    -------
    int
        m, the rates being ``work[:m]`` viewed as float64; -1 when
        `batch_ns` is not sorted, -2 when `rx_batch` is not sorted or not
        within ``[0, len(batch_ns))`` (the caller then counts and searches
        itself; `work` is scratch).
    """
    cdef Py_ssize_t i, b, j = 0, n = rx_batch.shape[0], nb = batch_ns.shape[0]
    cdef Py_ssize_t ns = step_ns.shape[0], m = 0
    cdef int64_t x, prev, gap, upto, upto_before = 0, packets = 0, time = 0
    cdef int64_t *w = &work[0] if work.shape[0] else NULL
    cdef double rate
    cdef int busy
    if work.shape[0] < nb:
        raise ValueError(f"busy_batch_rates: work has {work.shape[0]} entries, "
                         f"fewer than the {nb} batches")
    if n and (rx_batch[0] < 0 or rx_batch[n - 1] >= nb):
        return -2
    if sums is not None and sums.shape[0] < 2:
        raise ValueError("busy_batch_rates: sums needs 2 entries")
    with nogil:
        for b in range(1, nb):
            if batch_ns[b] < batch_ns[b - 1]:
                with gil:
                    return -1
        memset(w, 0, nb * sizeof(int64_t))
        prev = rx_batch[0] if n else 0
        for i in range(n):
            x = rx_batch[i]
            # one unsigned compare: x >= prev and (with the first and last
            # entries in range) x < nb
            if <uint64_t>(x - prev) >= <uint64_t>nb:
                with gil:
                    return -2
            w[x] = i + 1
            prev = x
        for b in range(nb - 1):
            while j < ns and step_ns[j] <= batch_ns[b]:
                j += 1
            busy = j > 0 and step_len[j - 1] > 0
            gap = batch_ns[b + 1] - batch_ns[b]
            upto = w[b] if w[b] else upto_before        # 0: no entries
            rate = <double>(upto - upto_before) / <double>gap
            # written whether kept or not (m <= b: over a count already
            # read); memcpy, not a cast pointer, so the double store and
            # the int64 loads do not break strict aliasing
            memcpy(&w[m], &rate, sizeof(double))
            if busy and gap > 0:
                m += 1
                packets += upto - upto_before
                time += gap
            upto_before = upto
    if sums is not None:
        sums[0], sums[1] = packets, time
    return m



#: Sizes of batches rates_by_size takes apart (one bucket each).
cdef Py_ssize_t _SIZE_BUCKETS = 1 << 16
SIZE_BUCKETS = _SIZE_BUCKETS


def rates_by_size(const int64_t[::1] count, const int64_t[::1] dur, int64_t[::1] start,
                  double[::1] rates):
    """The timed batches' rates ``count[b] / dur[b]`` (those with both > 0),
    grouped by size: the rates of size s are ``rates[start[s]:start[s +
    1]]`` (`start`: SIZE_BUCKETS + 1 entries, `rates`: room for every
    batch).  A counting sort (queues.service_rate): each rate the int64 /
    int64 division numpy does (both made double first).

    Returns
    -------
    int
        The number of timed batches; -1 where a size is SIZE_BUCKETS - 1
        or more (nothing written: the caller sorts itself).
    """
    cdef Py_ssize_t b, nb = count.shape[0], s, n = 0
    cdef int64_t c, at
    if dur.shape[0] != nb or start.shape[0] != _SIZE_BUCKETS + 1 or rates.shape[0] < nb:
        raise ValueError("rates_by_size: count and dur of one length, start of "
                         "SIZE_BUCKETS + 1, rates room for every batch")
    with nogil:
        memset(&start[0], 0, (_SIZE_BUCKETS + 1) * sizeof(int64_t))
        for b in range(nb):
            c = count[b]
            if c > 0 and dur[b] > 0:
                if c >= _SIZE_BUCKETS - 1:
                    with gil:
                        return -1
                start[c + 2] += 1
                n += 1
        # start[s + 1]: where size s's rates begin, the cursor of the
        # writes, which leave it where size s + 1's begin
        for s in range(1, _SIZE_BUCKETS + 1):
            start[s] += start[s - 1]
        for b in range(nb):
            c = count[b]
            if c > 0 and dur[b] > 0:
                at = start[c + 1]
                rates[at] = <double>c / <double>dur[b]
                start[c + 1] = at + 1
    return n


def busy_after(const int64_t[::1] step_ns, const int32_t[::1] step_len,
               const int64_t[::1] t, uint8_t[::1] out):
    """``out[i]`` = whether the queue (its step series) held packets right
    after time ``t[i]`` (``QueueTimeline.length_at(t) > 0``), by a merge.

    Returns
    -------
    bool
        False where `t` is not sorted (`out` then partly written: the
        caller searches instead).
    """
    cdef Py_ssize_t i, j = 0, n = t.shape[0], ns = step_ns.shape[0]
    if out.shape[0] < n or step_len.shape[0] < ns:
        raise ValueError("busy_after: out needs one entry per time, step_len one per step")
    with nogil:
        for i in range(n):
            if i and t[i] < t[i - 1]:
                with gil:
                    return False
            while j < ns and step_ns[j] <= t[i]:
                j += 1
            out[i] = j > 0 and step_len[j - 1] > 0
    return True


def rx_addresses(const out_t[::1] hops, const index_t[::1] hop_rx,
                 const index2_t[::1] hop_packet, const uint32_t[::1] src_addr,
                 uint32_t[::1] out):
    """``out[hop_rx[h]]`` = the source address of hop h's packet, for each
    of an NF's received `hops` (its rx entries' addresses; the others are
    left as they are).

    Returns
    -------
    int
        0; -1 where an rx entry or a packet is out of range (nothing trusted).
    """
    cdef Py_ssize_t i, n = hops.shape[0], nrx = out.shape[0], npk = src_addr.shape[0]
    cdef int64_t r, p
    with nogil:
        for i in range(n):
            r = hop_rx[hops[i]]
            p = hop_packet[hops[i]]
            if r < 0 or r >= nrx or p < 0 or p >= npk:
                with gil:
                    return -1
            out[r] = src_addr[p]
    return 0


def add_counts_below_grid(const int64_t[::1] a, int64_t t0, int64_t step, out_t[::1] out):
    """``out[i] +=`` the number of sorted `a`'s elements below ``t0 + i *
    step`` (``np.searchsorted(a, t0 + step * arange(len(out)))``), by a
    merge, one pass over `a`, where a search per time misses the cache at
    every level of a large `a`; the times are not kept (8 bytes a step
    over a long capture's span).  False when `step` is not positive."""
    cdef Py_ssize_t i, j = 0, n = out.shape[0], na = a.shape[0]
    cdef int64_t t = t0
    if step <= 0:
        return False
    with nogil:
        for i in range(n):
            while j < na and a[j] < t:
                j += 1
            out[i] += j
            t += step
    return True


def taken_times(const out_t[::1] hops, const int64_t[::1] hop_rx_ns,
                const int64_t[::1] ends, int64_t[::1] out, int64_t[::1] n_taken):
    """The rx times of the hops ``hops[:ends[-1]]`` that were taken (rx >=
    0; a dropped one has none), in order, each raised to the latest before
    it (sorted, as a FIFO queue takes them but for ties within a batch):
    into ``out``; ``n_taken[b]`` how many of them are among
    ``hops[:ends[b]]`` (`ends` ascending).  Returns how many in all."""
    cdef Py_ssize_t i, b = 0, c = 0, nb = ends.shape[0], nh = hop_rx_ns.shape[0]
    cdef int64_t r, top = INT64_MIN
    _check_ends(ends, hops.shape[0])
    if n_taken.shape[0] < nb or (nb and out.shape[0] < ends[nb - 1]):
        raise ValueError("taken_times: out needs one entry per hop, n_taken one per end")
    for i in range(ends[nb - 1] if nb else 0):
        if hops[i] < 0 or hops[i] >= nh:
            raise ValueError(f"taken_times: hop {hops[i]} is outside the trajectories")
    with nogil:
        for i in range(ends[nb - 1] if nb else 0):
            while b < nb and ends[b] == i:
                n_taken[b] = c
                b += 1
            r = hop_rx_ns[hops[i]]
            if r >= 0:
                if r > top:
                    top = r
                out[c] = top
                c += 1
        while b < nb:
            n_taken[b] = c
            b += 1
    return c


cdef inline double _busy_since(const int64_t[::1] pstart, const int64_t[::1] pend,
                              int64_t t0, Py_ssize_t *j, double *acc,
                              int64_t t) noexcept nogil:
    """Time in the periods [pstart, pend) (pend -1: to the end) from t0 to
    t.  ``*j``: the last period that starts by the previous t asked (-1:
    none), moved on to t's (t never less than the previous); ``*acc``: the
    time in them from t0 to the start of period ``*j + 1``, less period
    ``*j``'s own, kept with it."""
    cdef int64_t s, e
    while j[0] + 1 < pstart.shape[0] and pstart[j[0] + 1] <= t:
        if j[0] >= 0 and pend[j[0]] >= 0:
            s = pstart[j[0]] if pstart[j[0]] > t0 else t0
            if pend[j[0]] > s:
                acc[0] += pend[j[0]] - s
        j[0] += 1
    if j[0] < 0:
        return acc[0]
    s = pstart[j[0]] if pstart[j[0]] > t0 else t0
    e = t if pend[j[0]] < 0 or pend[j[0]] > t else pend[j[0]]
    return acc[0] + (e - s if e > s else 0)


def most_behind(const int64_t[::1] sends, const int64_t[::1] lo, const int64_t[::1] hi,
                const int64_t[::1] t0, const int64_t[::1] t1, double rate,
                const int64_t[::1] pstart, const int64_t[::1] pend, double[::1] out):
    """``out[b]``: the most packets an NF sending at `rate` (packets/ns)
    whenever it was busy would have sent beyond what it did send over any
    part of [t0[b], t1[b]], its sends there being ``sends[lo[b]:hi[b]]``
    (`sends` sorted).  It is busy in its queuing periods ``[pstart,
    pend)`` (sorted, disjoint; pend -1: to the end).  Its shortfall r
    (busy time from t0 to t) - (packets sent by t) is taken at t0, just
    before each send and at t1; the answer is the largest rise of it (0
    where it never rose)."""
    cdef Py_ssize_t b, i, j, k, m, n = sends.shape[0], nb = lo.shape[0]
    cdef double f, low, best, acc
    if hi.shape[0] != nb or t0.shape[0] != nb or t1.shape[0] != nb or out.shape[0] < nb:
        raise ValueError("most_behind: lo, hi, t0, t1 and out need one entry per span")
    if pend.shape[0] != pstart.shape[0]:
        raise ValueError("most_behind: pstart and pend need one entry per period")
    for b in range(nb):
        if not 0 <= lo[b] <= hi[b] <= n:
            raise ValueError(f"most_behind: span {b} [{lo[b]}, {hi[b]}) is outside the sends")
    with nogil:
        for b in range(nb):
            low, best, acc = 0.0, 0.0, 0.0
            # the last period that starts by t0: a search, then a walk
            j, k = 0, pstart.shape[0]
            while j < k:
                m = (j + k) // 2
                if pstart[m] <= t0[b]:
                    j = m + 1
                else:
                    k = m
            j -= 1
            for i in range(lo[b], hi[b]):
                f = rate * _busy_since(pstart, pend, t0[b], &j, &acc, max(sends[i], t0[b])) \
                    - (i - lo[b])
                if f - low > best:
                    best = f - low
                if f < low:
                    low = f
            f = rate * _busy_since(pstart, pend, t0[b], &j, &acc, max(t1[b], t0[b])) \
                - (hi[b] - lo[b])
            if f - low > best:
                best = f - low
            out[b] = best
