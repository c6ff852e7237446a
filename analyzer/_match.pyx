# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The two loops of stage 3 that numpy cannot vectorise cheaply: id
matching as a hash join, and the walk that lays every packet's hops out
in path order, then their times (mscope.analyzer.matching and
.trajectories call them).

Matching: one open-addressing table of the a side's ids (linear probing,
16-byte slots, load <= 2/3), probed with the b side.  An id seen once on
each side (every id in a bench run: they are 64-bit hashes) is decided at
the probe, with no window: b not before a is all it takes (no other a
has the id, and a queue holds a packet for as long as its NF stops).  An id seen several times on either side is a *group*, solved
on its own: its a and b sorted by (time, index), then one sweep that pairs
each b with the latest pending a (a stack: the latest a keeps a contested
b; the window only where the id has several a), then FIFO untangling of the ambiguous a: the same pairs as the
earlier vectorised version (a lexsort of both sides, then rounds of
claims), which tests/test_matching.py keeps as its reference.  Groups are
rare in trajectories and small (one entry per NF) in topology.

Matching sides nearly in the same order (match_known_into): a cursor
pairs each b with the a where the previous pair of its segment left off
(or within _REACH of it), a pair is kept when its id is provably once on
each side -- its a is "known" (no other known a has its id) and no
unknown a nor any unpaired b has it (one small table) -- and everything
else, whole groups included, goes through the hash join above.  Same
result as match_into; 5-10 ns per pair instead of ~35 (bench/analyze.py,
9.5 M hops: the 11 matches of trajectories 0.71 -> 0.19 s).

Indices are int32: one NF's side of a capture, and the packets and hops
of one diagnosis, stay below 2**31 (callers check).
"""
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memset

cdef extern from *:
    """
    #include <stdlib.h>
    #include <sys/mman.h>
    #define MSCOPE_PREFETCH(p) __builtin_prefetch((p), 1, 1)
    /* The table on 2 MiB pages where the kernel allows (THP "madvise"):
     * with 4 KiB pages nearly every probe of a table of tens of MiB also
     * misses the TLB. */
    static void *mscope_table_alloc(size_t n) {
        void *p = NULL;
        size_t huge = (size_t)2 << 20;
        if (n >= huge) {
            n = (n + huge - 1) & ~(huge - 1);
            if (posix_memalign(&p, huge, n) != 0)
                return NULL;
    #ifdef MADV_HUGEPAGE
            madvise(p, n, MADV_HUGEPAGE);
    #endif
            return p;
        }
        return malloc(n);
    }
    """
    void MSCOPE_PREFETCH(const void *p) nogil
    void *mscope_table_alloc(size_t n) nogil


cdef struct Slot:
    uint64_t key
    int32_t a          # last a entry of this id (head of its chain); -1: empty slot
    int32_t b          # last b entry of this id; -1: none yet


cdef Slot *_table_new(Py_ssize_t n, int *shift, Py_ssize_t *mask) noexcept nogil:
    """An empty table (every slot's a = b = -1) for `n` keys, at most 2/3
    full, with its hash shift and index mask; NULL when out of memory."""
    cdef Py_ssize_t size = 16
    cdef int bits = 0
    cdef Slot *table
    while size * 2 < n * 3:
        size *= 2
    while (1 << bits) < size:
        bits += 1
    shift[0] = 64 - bits
    mask[0] = size - 1
    table = <Slot *>mscope_table_alloc(size * sizeof(Slot))
    if table:
        memset(table, 0xFF, size * sizeof(Slot))
    return table


cdef struct Event:
    int64_t ns
    int64_t idx        # index within its side (the sort's tie-break)
    int64_t aux        # untangling: the b entry an a's match points to


#: Fibonacci hashing: ids from other schemes than mscope's need not be
#: uniform in their low bits; the top bits of this product are.
cdef uint64_t _GOLDEN = 0x9E3779B97F4A7C15ULL
#: Probe this many entries ahead: a table of a few million slots misses
#: every cache, and the misses of independent probes overlap.
cdef Py_ssize_t _AHEAD = 8


cdef inline int _event_lt(const Event *x, const Event *y) noexcept nogil:
    return x.ns < y.ns or (x.ns == y.ns and x.idx < y.idx)


cdef int _event_cmp(const void *x, const void *y) noexcept nogil:
    if _event_lt(<const Event *>x, <const Event *>y):
        return -1
    if _event_lt(<const Event *>y, <const Event *>x):
        return 1
    return 0


cdef void _sort_events(Event *ev, Py_ssize_t n) noexcept nogil:
    """By (ns, idx); insertion sort for the usual handful, qsort beyond."""
    cdef Py_ssize_t i, j
    cdef Event e
    if n > 24:
        qsort(ev, n, sizeof(Event), _event_cmp)
        return
    for i in range(1, n):
        e = ev[i]
        j = i
        while j > 0 and _event_lt(&e, &ev[j - 1]):
            ev[j] = ev[j - 1]
            j -= 1
        ev[j] = e


cdef struct Scratch:
    Event *a
    Event *b
    Event *fa          # untangling: ambiguous matched a, their b
    Event *fb
    int32_t *stack
    Py_ssize_t cap


cdef int _reserve(Scratch *s, Py_ssize_t n) noexcept nogil:
    """Grow every scratch buffer to hold n entries; -1 when out of memory."""
    cdef Py_ssize_t cap = s.cap if s.cap else 64
    if n <= s.cap:
        return 0
    while cap < n:
        cap *= 2
    s.a = <Event *>realloc(s.a, cap * sizeof(Event))
    s.b = <Event *>realloc(s.b, cap * sizeof(Event))
    s.fa = <Event *>realloc(s.fa, cap * sizeof(Event))
    s.fb = <Event *>realloc(s.fb, cap * sizeof(Event))
    s.stack = <int32_t *>realloc(s.stack, cap * sizeof(int32_t))
    if not (s.a and s.b and s.fa and s.fb and s.stack):
        return -1
    s.cap = cap
    return 0


cdef int64_t _solve_group(Slot *slot, const int64_t *a_ns, const int64_t *b_ns,
                          const int32_t *next_a, const int32_t *next_b, int64_t window,
                          int32_t *match, Scratch *s) noexcept nogil:
    """Match one id seen more than once; returns its ambiguous a count or
    -1 when out of memory."""
    cdef Py_ssize_t na = 0, nb = 0, i, j, sp, nf
    cdef int32_t e
    cdef int64_t amb = 0
    cdef bint prev_close, close
    e = slot.a
    while e >= 0:
        na += 1
        e = next_a[e]
    e = slot.b
    while e >= 0:
        nb += 1
        e = next_b[e]
    if _reserve(s, na if na > nb else nb) < 0:
        return -1
    e = slot.a
    i = 0
    while e >= 0:
        s.a[i].ns = a_ns[e]
        s.a[i].idx = e
        i += 1
        e = next_a[e]
    e = slot.b
    i = 0
    while e >= 0:
        s.b[i].ns = b_ns[e]
        s.b[i].idx = e
        i += 1
        e = next_b[e]
    _sort_events(s.a, na)
    _sort_events(s.b, nb)
    # a before b at equal times: a packet may be received the ns it was sent
    i = 0
    sp = 0
    for j in range(nb):
        while i < na and s.a[i].ns <= s.b[j].ns:
            s.stack[sp] = <int32_t>i
            sp += 1
            i += 1
        if sp:
            # the window parts copies of the id on the a side: with one,
            # there is nothing to part (a queue holds a packet as long as
            # its NF stops)
            if na == 1 or s.b[j].ns - s.a[s.stack[sp - 1]].ns <= window:
                sp -= 1
                match[s.a[s.stack[sp]].idx] = <int32_t>s.b[j].idx
            else:
                # the nearest free b of every pending a is this one, and it
                # is out of reach of the latest: all of them are unmatched
                sp = 0
    # ambiguous: another a of this id within the window; the matched ones
    # are paired in time order (a queue serves in order): the k-th a takes
    # the k-th b, b by time then by the index of the a that claimed it
    nf = 0
    prev_close = False
    for i in range(na):
        close = i + 1 < na and s.a[i + 1].ns - s.a[i].ns <= window
        if close or prev_close:
            amb += 1
            if match[s.a[i].idx] >= 0:
                s.fa[nf] = s.a[i]
                s.fb[nf].ns = b_ns[match[s.a[i].idx]]
                s.fb[nf].idx = s.a[i].idx
                s.fb[nf].aux = match[s.a[i].idx]
                nf += 1
        prev_close = close
    if nf > 1:
        _sort_events(s.fb, nf)
        for i in range(nf):
            match[s.fa[i].idx] = <int32_t>s.fb[i].aux
    return amb


cdef inline Py_ssize_t _home(uint64_t key, int shift) noexcept nogil:
    return <Py_ssize_t>((key * _GOLDEN) >> shift)


cdef inline Py_ssize_t _find(const Slot *table, Py_ssize_t mask, int shift,
                             uint64_t key) noexcept nogil:
    """The slot holding `key`, or the empty slot where it would go (linear
    probing from its home; the table always has an empty slot)."""
    cdef Py_ssize_t h = _home(key, shift)
    while table[h].a >= 0 and table[h].key != key:
        h = (h + 1) & mask
    return h


cdef int _push_group(Py_ssize_t **groups, Py_ssize_t *n, Py_ssize_t *cap,
                     Py_ssize_t h) noexcept nogil:
    cdef Py_ssize_t *g
    if n[0] == cap[0]:
        cap[0] = cap[0] * 2 if cap[0] else 256
        g = <Py_ssize_t *>realloc(groups[0], cap[0] * sizeof(Py_ssize_t))
        if not g:
            return -1
        groups[0] = g
    groups[0][n[0]] = h
    n[0] += 1
    return 0


cdef int64_t _hash_join(const uint64_t *a_ids, const int64_t *a_ns, Py_ssize_t na,
                        const uint64_t *b_ids, const int64_t *b_ns, Py_ssize_t nb,
                        int64_t window_ns, int32_t *match,
                        const uint8_t *a_known, uint8_t *b_mark) noexcept nogil:
    """The hash join behind match_into (match[] already -1); returns the
    ambiguous a count, or -1 when out of memory.

    With `a_known` (see match_known_into), b_mark[j] becomes 2 where a
    known a matched b j with its id seen once on each side, 1 where any
    other a matched it (b_mark's other entries are left as they are)."""
    cdef Py_ssize_t i, j, h, mask, ngroups = 0, gcap = 0
    cdef int shift = 64
    cdef Slot *table = NULL
    cdef Slot *sl
    cdef int32_t *next_a = NULL
    cdef int32_t *next_b = NULL
    cdef Py_ssize_t *groups = NULL
    cdef uint64_t key
    cdef int32_t ia, e
    cdef int64_t amb = 0, r
    cdef int failed = 0
    cdef Scratch s
    if na == 0:
        return 0
    memset(&s, 0, sizeof(Scratch))
    table = _table_new(na, &shift, &mask)
    next_a = <int32_t *>malloc(na * sizeof(int32_t))
    next_b = <int32_t *>malloc((nb if nb else 1) * sizeof(int32_t))
    if not (table and next_a and next_b):
        free(table); free(next_a); free(next_b)
        return -1
    for i in range(na):
        if i + _AHEAD < na:
            MSCOPE_PREFETCH(&table[_home(a_ids[i + _AHEAD], shift)])
        key = a_ids[i]
        h = _find(table, mask, shift, key)
        sl = &table[h]
        if sl.a < 0:
            sl.key = key
            sl.a = <int32_t>i
            next_a[i] = -1
        else:
            if next_a[sl.a] < 0:           # second a of the id: a group
                if _push_group(&groups, &ngroups, &gcap, h) < 0:
                    failed = 1
            next_a[i] = sl.a
            sl.a = <int32_t>i
        if failed:
            break
    for j in range(nb):
        if failed:
            break
        if j + _AHEAD < nb:
            MSCOPE_PREFETCH(&table[_home(b_ids[j + _AHEAD], shift)])
        key = b_ids[j]
        h = _find(table, mask, shift, key)
        sl = &table[h]
        if sl.a < 0:
            continue                       # an id no a has
        ia = sl.a
        if next_a[ia] >= 0:                # a group already
            next_b[j] = sl.b
            sl.b = <int32_t>j
        elif sl.b < 0:                     # the common case: once each side
            sl.b = <int32_t>j
            next_b[j] = -1
            # no window: nothing else has the id to be told apart from
            # (a queue holds a packet as long as its NF stops)
            if b_ns[j] >= a_ns[ia]:
                match[ia] = <int32_t>j
        else:
            if next_b[sl.b] < 0:           # second b of the id: a group
                if _push_group(&groups, &ngroups, &gcap, h) < 0:
                    failed = 1
                match[ia] = -1
            next_b[j] = sl.b
            sl.b = <int32_t>j
    if not failed:
        for i in range(ngroups):
            r = _solve_group(&table[groups[i]], a_ns, b_ns, next_a, next_b,
                             window_ns, match, &s)
            if r < 0:
                failed = 1
                break
            amb += r
    if not failed and b_mark != NULL:
        # next_a doubles as "in a group": only ids once on each side pass on
        # what a_known says
        for i in range(ngroups):
            e = table[groups[i]].a
            while e >= 0:
                ia = next_a[e]
                next_a[e] = -2
                e = ia
        for i in range(na):
            if match[i] >= 0:
                b_mark[match[i]] = 2 if (a_known != NULL and a_known[i]
                                         and next_a[i] != -2) else 1
    free(table); free(next_a); free(next_b); free(groups)
    free(s.a); free(s.b); free(s.fa); free(s.fb); free(s.stack)
    return -1 if failed else amb


def match_into(const uint64_t[::1] a_ids, const int64_t[::1] a_ns,
               const uint64_t[::1] b_ids, const int64_t[::1] b_ns,
               int64_t window_ns, int32_t[::1] match):
    """Match each a to the nearest b with its id and b_ns >= a_ns.

    The semantics of :func:`mscope.analyzer.matching.match_next`, written
    into `match` (int32, len(a_ids): index into b or -1).

    Returns
    -------
    ambiguous : int
        Number of a whose id occurs on another a within `window_ns`.

    Raises
    ------
    ValueError
        A side has 2**31 entries or more, or the lengths disagree.
    MemoryError
    """
    cdef Py_ssize_t na = a_ids.shape[0], nb = b_ids.shape[0], i
    cdef int64_t amb
    if a_ns.shape[0] != na or b_ns.shape[0] != nb or match.shape[0] != na:
        raise ValueError("match_into: ids, times and match must have matching lengths")
    if na >= 2**31 or nb >= 2**31:
        raise ValueError("match_into: a side has 2**31 entries or more (int32 indices)")
    for i in range(na):
        match[i] = -1
    if na == 0:
        return 0
    with nogil:
        amb = _hash_join(&a_ids[0], &a_ns[0], na,
                         &b_ids[0] if nb else NULL, &b_ns[0] if nb else NULL, nb,
                         window_ns, &match[0], NULL, NULL)
    if amb < 0:
        raise MemoryError()
    return amb


# -- The cursor: pairs found by position, the hash join for what is left ----

#: How far from where the last pair left off an a is looked for: in
#: bench/analyze.py's captures the one reordering is an lb's tx grouped by
#: out-link within its rx batch (32), and most drop runs are shorter.
cdef Py_ssize_t _REACH = 64
#: After two b in a row found nothing within _REACH, look this far ahead:
#: a longer run of drops (an interrupt with a full queue).
cdef Py_ssize_t _RESYNC = 4096
#: The filter in front of the table of ids left unpaired: 2**16 bits, 8 KiB
#: (stays in L1 next to the pass over a), ~1% false hits at 500 ids.
cdef enum:
    _SEEN_BITS = 16
    _SEEN_BYTES = 8192


cdef inline Py_ssize_t _scan(const uint64_t *ids, Py_ssize_t lo, Py_ssize_t hi,
                             uint64_t key, Py_ssize_t *work) noexcept nogil:
    """First q in [lo, hi) with ids[q] == key, else -1; adds the entries
    compared to `work`."""
    cdef Py_ssize_t q
    for q in range(lo, hi):
        if ids[q] == key:
            work[0] += q - lo + 1
            return q
    if hi > lo:
        work[0] += hi - lo
    return -1


cdef Py_ssize_t _cursor(const uint64_t *a_ids, const uint8_t *a_known,
                  const int64_t *seg, Py_ssize_t nseg,
                  const uint64_t *b_ids, Py_ssize_t nb,
                  int32_t *pa, uint8_t *paired, Py_ssize_t *hint,
                  Py_ssize_t *lo) noexcept nogil:
    """Pair b with an a of the same id found near where the previous pair
    of its segment left off (pa: -1 filled, the b of each a paired;
    paired: 0 filled, 1 for each b paired).  Returns the number of pairs.

    `hint[s]`: the a after the last pair in segment s (FIFO: usually the
    next b's); `lo[s]`: its first a not yet paired, at most _REACH behind
    hint (an a further behind is left to the hash join).  Only known a are
    paired; an id met on an unknown or already paired a leaves its b to
    the hash join as well.  The search stops for good when it has cost
    more than ~64 comparisons per b: sides that are not in the same order
    lose little over the hash join alone."""
    cdef Py_ssize_t j, s, q, p, sel = 0, end, fails = 0, work = 0, lim, npairs = 0
    cdef uint64_t key
    for j in range(nb):
        key = b_ids[j]
        p = -1
        for s in range(nseg):
            q = hint[s]
            if q < seg[s + 1] and a_ids[q] == key:
                p = q
                sel = s
                break
            q = lo[s]
            if q < hint[s] and a_ids[q] == key:
                p = q
                sel = s
                break
        if p < 0:
            for s in range(nseg):
                end = seg[s + 1]
                # ahead first: the a of lost b (drops) are there, and an a
                # left behind at lo would make every b scan back to it
                lim = hint[s] + _REACH
                p = _scan(a_ids, hint[s] + 1, lim if lim < end else end, key, &work)
                if p < 0:
                    p = _scan(a_ids, lo[s] + 1, hint[s], key, &work)
                if p >= 0:
                    sel = s
                    break
        if p < 0:
            fails += 1
            if fails >= 2:
                for s in range(nseg):
                    end = seg[s + 1]
                    lim = hint[s] + _RESYNC
                    p = _scan(a_ids, hint[s] + _REACH, lim if lim < end else end, key, &work)
                    if p >= 0:
                        sel = s
                        break
            if p < 0:
                if work > 64 * j + 65536:
                    break
                continue
        fails = 0
        if pa[p] < 0 and a_known[p]:
            pa[p] = <int32_t>j
            paired[j] = 1
            npairs += 1
        if p >= hint[sel]:
            hint[sel] = p + 1
        while lo[sel] < hint[sel] and (pa[lo[sel]] >= 0 or lo[sel] + _REACH < hint[sel]):
            lo[sel] += 1
    return npairs


def match_known_into(const uint64_t[::1] a_ids, const int64_t[::1] a_ns,
                     const uint8_t[::1] a_known, const int64_t[::1] a_segments,
                     const uint64_t[::1] b_ids, const int64_t[::1] b_ns,
                     int64_t window_ns, int32_t[::1] match, uint8_t[::1] b_mark):
    """match_into for sides nearly in the same order, with what is known
    of the a side's ids.

    `a_known[i]` says that no other known a has a's id: they all descend,
    one pair at a time, from entries whose ids were checked to be distinct
    (unique_into), each along its own path.  `a_segments`: the start of
    each run of a that is in time order, then len(a) (a pool of several
    NFs' tx).  Same result as match_into; also fills `b_mark` (uint8,
    len(b)): 0 unmatched, 1 matched, 2 matched by a known a with its id
    seen once on each side (so known in turn).

    Most pairs are found by position (_cursor).  A pair is kept only if
    its id is seen nowhere else: not on an unknown a, nor on any a or b
    left unpaired (one small table); known a are distinct among
    themselves, so such an id is once on each side and matches wherever
    its b is not before its a.  The rest -- every entry of the other ids, whole
    groups -- goes through the hash join in index order, as match_into.

    Returns
    -------
    ambiguous : int

    Raises
    ------
    ValueError
        Lengths disagree, a side has 2**31 entries or more, or the
        segments do not cover a.
    MemoryError
    """
    cdef Py_ssize_t na = a_ids.shape[0], nb = b_ids.shape[0], nseg = a_segments.shape[0] - 1
    cdef Py_ssize_t i, j, s, h, nl = 0, nla = 0, nlb = 0, mask
    cdef int shift
    cdef Py_ssize_t *hint = NULL
    cdef Py_ssize_t *lo = NULL
    cdef Slot *table = NULL
    cdef uint8_t *seen = NULL
    cdef int32_t *la = NULL
    cdef int32_t *lb = NULL
    cdef uint64_t *la_ids = NULL
    cdef uint64_t *lb_ids = NULL
    cdef int64_t *la_ns = NULL
    cdef int64_t *lb_ns = NULL
    cdef uint8_t *la_known = NULL
    cdef uint8_t *lb_mark = NULL
    cdef int32_t *lmatch = NULL
    cdef uint64_t key, hk
    cdef int64_t amb = 0
    cdef bint left
    if (a_ns.shape[0] != na or a_known.shape[0] != na or match.shape[0] != na
            or b_ns.shape[0] != nb or b_mark.shape[0] != nb):
        raise ValueError("match_known_into: ids, times, flags and outputs must have "
                         "matching lengths")
    if na >= 2**31 or nb >= 2**31:
        raise ValueError("match_known_into: a side has 2**31 entries or more (int32 indices)")
    if nseg < 1 or a_segments[0] != 0 or a_segments[nseg] != na:
        raise ValueError("match_known_into: a_segments must run from 0 to len(a_ids)")
    for s in range(nseg):
        if a_segments[s + 1] < a_segments[s]:
            raise ValueError("match_known_into: a_segments must not decrease")
    memset(&b_mark[0] if nb else NULL, 0, nb)
    if na == 0 or nb == 0:
        return match_into(a_ids, a_ns, b_ids, b_ns, window_ns, match)
    hint = <Py_ssize_t *>malloc(nseg * sizeof(Py_ssize_t))
    lo = <Py_ssize_t *>malloc(nseg * sizeof(Py_ssize_t))
    seen = <uint8_t *>malloc(_SEEN_BYTES)
    # room for every entry; only the pages of what is left get touched
    la = <int32_t *>malloc(na * sizeof(int32_t))
    la_ids = <uint64_t *>malloc(na * sizeof(uint64_t))
    la_ns = <int64_t *>malloc(na * sizeof(int64_t))
    la_known = <uint8_t *>malloc(na * sizeof(uint8_t))
    lmatch = <int32_t *>malloc(na * sizeof(int32_t))
    lb = <int32_t *>malloc(nb * sizeof(int32_t))
    lb_ids = <uint64_t *>malloc(nb * sizeof(uint64_t))
    lb_ns = <int64_t *>malloc(nb * sizeof(int64_t))
    lb_mark = <uint8_t *>calloc(nb, sizeof(uint8_t))
    try:
        if not (hint and lo and seen and la and la_ids and la_ns and la_known and lmatch
                and lb and lb_ids and lb_ns and lb_mark):
            raise MemoryError()
        with nogil:
            memset(&match[0], 0xFF, na * sizeof(int32_t))
            for s in range(nseg):
                hint[s] = lo[s] = a_segments[s]
            nl = nb - _cursor(&a_ids[0], &a_known[0], &a_segments[0], nseg, &b_ids[0], nb,
                              &match[0], &b_mark[0], hint, lo)
            # the ids a kept pair must not have: those of unknown a and of
            # every unpaired b (unpaired known a are distinct from it
            # already); a bit per hash prefix spares most pairs the table
            for i in range(na):
                nl += not a_known[i]           # never paired
            table = _table_new(nl, &shift, &mask)
        if not table:
            raise MemoryError()
        with nogil:
            memset(seen, 0, _SEEN_BYTES)
            for i in range(na + nb):
                if i < na:
                    if match[i] >= 0 or a_known[i]:
                        continue
                    key = a_ids[i]
                else:
                    if b_mark[i - na]:
                        continue
                    key = b_ids[i - na]
                hk = (key * _GOLDEN) >> (64 - _SEEN_BITS)
                seen[hk >> 3] |= <uint8_t>(1 << (hk & 7))
                h = _find(table, mask, shift, key)
                table[h].key = key
                table[h].a = 0
            # one pass over a: a kept pair is matched if b is not before a;
            # the others join the rest in index order (so the group
            # solver's ties break as in match_into)
            for i in range(na):
                j = match[i]
                left = j < 0
                if not left and nl:
                    key = a_ids[i]
                    hk = (key * _GOLDEN) >> (64 - _SEEN_BITS)
                    if (seen[hk >> 3] & (1 << (hk & 7))
                            and table[_find(table, mask, shift, key)].a >= 0):
                        match[i] = -1
                        b_mark[j] = 0
                        left = True
                if left:
                    la[nla] = <int32_t>i
                    la_ids[nla] = a_ids[i]
                    la_ns[nla] = a_ns[i]
                    la_known[nla] = a_known[i]
                    lmatch[nla] = -1
                    nla += 1
                elif b_ns[j] >= a_ns[i]:
                    b_mark[j] = 2
                else:
                    match[i] = -1
                    b_mark[j] = 3          # not matched, but not left either
            for j in range(nb):
                if b_mark[j] == 3:
                    b_mark[j] = 0
                elif not b_mark[j]:
                    lb[nlb] = <int32_t>j
                    lb_ids[nlb] = b_ids[j]
                    lb_ns[nlb] = b_ns[j]
                    nlb += 1
            amb = _hash_join(la_ids, la_ns, nla, lb_ids, lb_ns, nlb, window_ns,
                             lmatch, la_known, lb_mark)
            if amb >= 0:
                for i in range(nla):
                    if lmatch[i] >= 0:
                        match[la[i]] = lb[lmatch[i]]
                for j in range(nlb):
                    if lb_mark[j]:
                        b_mark[lb[j]] = lb_mark[j]
        if amb < 0:
            raise MemoryError()
    finally:
        free(hint); free(lo); free(table); free(seen)
        free(la); free(lb); free(la_ids); free(lb_ids); free(la_ns); free(lb_ns)
        free(la_known); free(lb_mark); free(lmatch)
    return amb


def unique_into(const uint64_t[::1] ids, uint8_t[::1] out):
    """out[i] = 1 where ids[i] occurs nowhere else in `ids`, else 0: the
    known entries match_known_into starts from.

    Raises
    ------
    ValueError
        `out` is not as long as `ids`.
    MemoryError
    """
    cdef Py_ssize_t n = ids.shape[0], i, h, mask
    cdef int shift
    cdef Slot *table
    cdef uint64_t key
    if out.shape[0] != n:
        raise ValueError("unique_into: out must have the length of ids")
    if n >= 2**31:
        raise ValueError("unique_into: 2**31 ids or more (int32 indices)")
    table = _table_new(n, &shift, &mask)
    if not table:
        raise MemoryError()
    with nogil:
        # slot.a: the id's first entry; slot.b: -2 once it has a second
        for i in range(n):
            if i + _AHEAD < n:
                MSCOPE_PREFETCH(&table[_home(ids[i + _AHEAD], shift)])
            key = ids[i]
            h = _find(table, mask, shift, key)
            if table[h].a < 0:
                table[h].key = key
                table[h].a = <int32_t>i
                out[i] = 1
            else:
                out[table[h].a] = 0
                out[i] = 0
    free(table)


def contains(const uint64_t[::1] members, const uint64_t[::1] ids, uint8_t[::1] out):
    """out[i] = 1 where ids[i] is one of `members` (np.isin without sorting
    ids; `members` is the small side)."""
    cdef Py_ssize_t nm = members.shape[0], n = ids.shape[0], i, h, mask
    cdef int shift
    cdef Slot *table
    cdef uint64_t key
    if out.shape[0] != n:
        raise ValueError("contains: out must have the length of ids")
    table = _table_new(nm, &shift, &mask)
    if not table:
        raise MemoryError()
    with nogil:
        for i in range(nm):
            h = _find(table, mask, shift, members[i])
            table[h].key = members[i]
            table[h].a = 0
        for i in range(n):
            out[i] = table[_find(table, mask, shift, ids[i])].a >= 0
    free(table)


cdef const void *_data(object arr, Py_ssize_t itemsize) except? NULL:
    """Address of a contiguous array's first element (NULL when empty or
    None); the caller keeps `arr` alive."""
    cdef const uint8_t[::1] raw
    if arr is None or len(arr) == 0:
        return NULL
    if arr.itemsize != itemsize or not arr.flags.c_contiguous:
        raise ValueError("walk_paths: per-NF arrays must be contiguous with the documented dtypes")
    raw = arr.view("u1")
    return &raw[0]


cdef struct Walk:
    # per NF (see walk_paths)
    const int64_t **txns
    const int32_t **txdst
    const int32_t **t2r
    const int64_t **rxns
    const int32_t **r2t
    const uint64_t **addr
    const int32_t *one_dest
    const uint8_t *rx_only
    # per packet
    int64_t *exit_ns
    int32_t *drop_nf
    int64_t *drop_ns
    uint32_t *src_addr
    uint32_t *dst_addr
    # per hop: room for cap, h written
    int32_t *hop_packet
    int32_t *hop_nf
    int32_t *hop_rx
    int32_t *hop_tx
    Py_ssize_t cap
    Py_ssize_t h


#: A match the records cannot tell (mscope.analyzer.fates.UNKNOWN): the
#: packet's path ends there, with no hop and no drop.
cdef enum:
    UNKNOWN = -2
MATCH_UNKNOWN = UNKNOWN


cdef int _walk(Walk *w, Py_ssize_t p, int32_t nf, int32_t t, int32_t r) noexcept nogil:
    """Packet p's hops from tx t of NF nf (r = -1) or from rx r of NF nf;
    -1 when the hop arrays are full."""
    cdef int32_t d, t2
    cdef int64_t tns
    cdef uint64_t a
    while True:
        if r < 0:
            # the packet left NF nf by tx t: towards which rx?
            tns = w.txns[nf][t]
            d = w.txdst[nf][t] if w.txdst[nf] != NULL else w.one_dest[nf]
            r = w.t2r[nf][t]
            if r < 0:
                if d < 0:
                    w.exit_ns[p] = tns
                    return 0
                if r == UNKNOWN:
                    return 0        # its fate at d is not in the records
                # sent towards d and never received: dropped at d's queue
                if w.h == w.cap:
                    return -1
                w.drop_nf[p] = d
                w.drop_ns[p] = tns
                w.hop_packet[w.h] = <int32_t>p
                w.hop_nf[w.h] = d
                w.hop_rx[w.h] = -1
                w.hop_tx[w.h] = -1
                w.h += 1
                return 0
            nf = d
        if w.h == w.cap:
            return -1
        t2 = w.r2t[nf][r]
        w.hop_packet[w.h] = <int32_t>p
        w.hop_nf[w.h] = nf
        w.hop_rx[w.h] = r
        w.hop_tx[w.h] = t2 if t2 >= 0 else -1      # UNKNOWN is no entry either
        w.h += 1
        # addresses: the packet's first hop that has them
        if w.addr[nf] != NULL and w.src_addr[p] == 0 and w.dst_addr[p] == 0:
            a = w.addr[nf][r]
            w.src_addr[p] = <uint32_t>(a >> 32)
            w.dst_addr[p] = <uint32_t>(a & 0xFFFFFFFFULL)
        if t2 < 0:
            # received, never sent on: lost inside, unless the NF records
            # no tx at all (a recorded sink), or its records cannot tell
            if t2 == UNKNOWN:
                return 0
            if w.rx_only[nf]:
                w.exit_ns[p] = w.rxns[nf][r]
            else:
                w.drop_nf[p] = nf
                w.drop_ns[p] = w.rxns[nf][r]
            return 0
        t = t2
        r = -1


def walk_paths(list tx_ns, list tx_dest, const int32_t[::1] one_dest, list tx2rx,
               list rx_ns, list rx2tx, list rx_addr, const uint8_t[::1] rx_only,
               const int32_t[::1] src_nf,
               const int32_t[::1] start_rx_nf, const int32_t[::1] start_rx,
               int64_t[::1] exit_ns, int32_t[::1] drop_nf, int64_t[::1] drop_ns,
               uint32_t[::1] src_addr, uint32_t[::1] dst_addr,
               int32_t[::1] hop_packet, int32_t[::1] hop_nf,
               int32_t[::1] hop_rx, int32_t[::1] hop_tx):
    """Follow every packet from its start, writing its hops in path order:
    their packet, NF and rx / tx entries (the times are hop_times', a
    second pass, so that the int64 hop arrays never coexist with the
    matches: 644 -> ~490 MiB at the peak of the 9.5 M-hop capture of
    bench/analyze.py).

    Per NF k (lists indexed by NF): ``tx_ns[k]`` int64, ``tx_dest[k]``
    int32 (NF its out-link leads to, -1 sink) or None where every tx goes
    to ``one_dest[k]``, ``tx2rx[k]`` int32 (its match in that NF's rx,
    -1; UNKNOWN, -2: the records cannot tell, the path ends with no hop
    and no drop), ``rx_ns[k]`` int64, ``rx2tx[k]`` int32 (the same
    packet's tx at k, -1, UNKNOWN), ``rx_addr[k]`` uint64 (source address << 32 | destination) or
    None.  Packets are every tx of the NFs in ``src_nf``, NF by NF, then
    the rx no tx accounts for (``start_rx_nf``, ``start_rx``).  Per-packet
    outputs (``exit_ns``, ``drop_nf``, ``drop_ns``: -1 filled;
    ``src_addr``, ``dst_addr``: 0 filled) and hop outputs (room for every
    hop) are the caller's; see
    :class:`mscope.analyzer.trajectories.Trajectories`.

    Returns
    -------
    n_hops : int

    Raises
    ------
    ValueError
        The hop arrays are too short (the matches form a cycle).
    """
    cdef Py_ssize_t nnf = len(tx_ns), k, p = 0, i, q, n_rxs = start_rx.shape[0]
    cdef Walk w
    cdef bint overflow = False
    w.txns = <const int64_t **>malloc((nnf + 1) * sizeof(void *))
    w.txdst = <const int32_t **>malloc((nnf + 1) * sizeof(void *))
    w.t2r = <const int32_t **>malloc((nnf + 1) * sizeof(void *))
    w.rxns = <const int64_t **>malloc((nnf + 1) * sizeof(void *))
    w.r2t = <const int32_t **>malloc((nnf + 1) * sizeof(void *))
    w.addr = <const uint64_t **>malloc((nnf + 1) * sizeof(void *))
    cdef Py_ssize_t *ntx = <Py_ssize_t *>malloc((nnf + 1) * sizeof(Py_ssize_t))
    try:
        if not (w.txns and w.txdst and w.t2r and w.rxns and w.r2t and w.addr and ntx):
            raise MemoryError()
        if not (len(tx_dest) == len(tx2rx) == len(rx_ns) == len(rx2tx) == len(rx_addr)
                == rx_only.shape[0] == one_dest.shape[0] == nnf):
            raise ValueError("walk_paths: one entry per NF in every per-NF list")
        for k in range(nnf):
            ntx[k] = len(tx2rx[k])
            if len(tx_ns[k]) != ntx[k] or (tx_dest[k] is not None and len(tx_dest[k]) != ntx[k]):
                raise ValueError("walk_paths: tx_ns, tx_dest and tx2rx of an NF must have "
                                 "one length")
            w.txns[k] = <const int64_t *>_data(tx_ns[k], 8)
            w.txdst[k] = <const int32_t *>_data(tx_dest[k], 4)
            w.t2r[k] = <const int32_t *>_data(tx2rx[k], 4)
            w.rxns[k] = <const int64_t *>_data(rx_ns[k], 8)
            w.r2t[k] = <const int32_t *>_data(rx2tx[k], 4)
            w.addr[k] = <const uint64_t *>_data(rx_addr[k], 8)
        for q in range(src_nf.shape[0]):
            if not 0 <= src_nf[q] < nnf:
                raise ValueError("walk_paths: src_nf holds an NF index out of range")
            p += ntx[src_nf[q]]
        if not (exit_ns.shape[0] == drop_nf.shape[0] == drop_ns.shape[0] == src_addr.shape[0]
                == dst_addr.shape[0] == p + n_rxs):
            raise ValueError("walk_paths: one entry per packet in every per-packet output")
        if not (hop_nf.shape[0] == hop_rx.shape[0] == hop_tx.shape[0] == hop_packet.shape[0]):
            raise ValueError("walk_paths: every hop output must have one length")
        w.one_dest = &one_dest[0] if nnf else NULL
        w.rx_only = &rx_only[0] if nnf else NULL
        w.exit_ns = &exit_ns[0] if p + n_rxs else NULL
        w.drop_nf = &drop_nf[0] if p + n_rxs else NULL
        w.drop_ns = &drop_ns[0] if p + n_rxs else NULL
        w.src_addr = &src_addr[0] if p + n_rxs else NULL
        w.dst_addr = &dst_addr[0] if p + n_rxs else NULL
        w.cap = hop_packet.shape[0]
        w.hop_packet = &hop_packet[0] if w.cap else NULL
        w.hop_nf = &hop_nf[0] if w.cap else NULL
        w.hop_rx = &hop_rx[0] if w.cap else NULL
        w.hop_tx = &hop_tx[0] if w.cap else NULL
        w.h = 0
        p = 0
        with nogil:
            for q in range(src_nf.shape[0]):
                k = src_nf[q]
                for i in range(ntx[k]):
                    if _walk(&w, p, <int32_t>k, <int32_t>i, -1) < 0:
                        overflow = True
                        break
                    p += 1
                if overflow:
                    break
            if not overflow:
                for q in range(n_rxs):
                    if _walk(&w, p, start_rx_nf[q], -1, start_rx[q]) < 0:
                        overflow = True
                        break
                    p += 1
        if overflow:
            raise ValueError("walk_paths: more hops than rx entries and drops (a cycle in "
                             "the matches?)")
    finally:
        free(w.txns); free(w.txdst); free(w.t2r); free(w.rxns); free(w.r2t); free(w.addr)
        free(ntx)
    return w.h


def hop_times(list tx_ns, list rx_ns, const int64_t[::1] src_ns,
              const int32_t[::1] hop_packet, const int32_t[::1] hop_nf,
              const int32_t[::1] hop_rx, const int32_t[::1] hop_tx,
              int64_t[::1] hop_arrival_ns, int64_t[::1] hop_rx_ns, int64_t[::1] hop_tx_ns):
    """The times of the hops walk_paths laid out: rx and tx time (-1 where
    the entry is -1), and the arrival, which is the previous hop's tx
    (hops are grouped by packet, in path order) or, at a packet's first
    hop, its ``src_ns`` (-1 where not recorded).

    Raises
    ------
    ValueError
        Lengths disagree, or an NF or packet index is out of range.
    """
    cdef Py_ssize_t nnf = len(tx_ns), n = hop_packet.shape[0], h, k
    cdef Py_ssize_t npk = src_ns.shape[0]
    cdef const int64_t **txns = <const int64_t **>malloc((nnf + 1) * sizeof(void *))
    cdef const int64_t **rxns = <const int64_t **>malloc((nnf + 1) * sizeof(void *))
    cdef int32_t nf, pk, prev = -1, r, t
    cdef int64_t tx_prev = -1, x
    cdef bint bad = False
    if not (txns and rxns):
        free(txns); free(rxns)
        raise MemoryError()
    try:
        if not (hop_nf.shape[0] == hop_rx.shape[0] == hop_tx.shape[0] == hop_arrival_ns.shape[0]
                == hop_rx_ns.shape[0] == hop_tx_ns.shape[0] == n) or len(rx_ns) != nnf:
            raise ValueError("hop_times: every hop array must have one length, one entry "
                             "per NF in tx_ns and rx_ns")
        for k in range(nnf):
            txns[k] = <const int64_t *>_data(tx_ns[k], 8)
            rxns[k] = <const int64_t *>_data(rx_ns[k], 8)
        with nogil:
            for h in range(n):
                nf = hop_nf[h]
                pk = hop_packet[h]
                if nf < 0 or nf >= nnf or pk < 0 or pk >= npk:
                    bad = True
                    break
                hop_arrival_ns[h] = tx_prev if pk == prev else src_ns[pk]
                r = hop_rx[h]
                t = hop_tx[h]
                hop_rx_ns[h] = rxns[nf][r] if r >= 0 else -1
                x = txns[nf][t] if t >= 0 else -1
                hop_tx_ns[h] = x
                tx_prev = x
                prev = pk
        if bad:
            raise ValueError("hop_times: an NF or packet index out of range")
    finally:
        free(txns); free(rxns)


# -- Topology's sample of votes ---------------------------------------------

#: topology's sampling rule (SAMPLE_EVERY): the top 6 bits of id * _SAMPLE_MUL
#: are zero.  Not _GOLDEN, the hash tables' multiplier: a sample by the top
#: bits of their hash crowds into the first 64th of their table (on
#: bench/analyze.py's s2 capture the votes' match took 2.2 s that way,
#: 0.075 s at 1 in 8 by _GOLDEN, 0.008 s by this rule).
cdef uint64_t _SAMPLE_MUL = 0xC2B2AE3D27D4EB4FULL
cdef uint64_t _SAMPLE_BELOW = 1ULL << 58
#: One id in this many passes the rule (topology.SAMPLE_EVERY).
SAMPLE_EVERY = 1 << 6


cdef inline bint _sampled(uint64_t key) noexcept nogil:
    return key * _SAMPLE_MUL < _SAMPLE_BELOW


def sample_count(const uint64_t[::1] ids, const uint8_t[::1] force):
    """How many entries sample_into keeps: those whose id passes the
    1-in-64 hash rule of mscope.analyzer.topology, or where `force` (uint8,
    len(ids), or None) is set."""
    cdef Py_ssize_t n = ids.shape[0], i, c = 0
    if force is not None and force.shape[0] != n:
        raise ValueError("sample_count: force must have the length of ids")
    with nogil:
        if force is None:
            for i in range(n):
                c += _sampled(ids[i])
        else:
            for i in range(n):
                c += _sampled(ids[i]) | (force[i] != 0)
    return c


def sample_into(const uint64_t[::1] ids, const int64_t[::1] ns, const int32_t[:] port,
                const uint8_t[::1] force, uint64_t[::1] out_ids, int64_t[::1] out_ns,
                int32_t[::1] out_port, Py_ssize_t at):
    """Write the entries sample_count counts, in order, from `at` on
    (the outputs need one slot more than the last written):
    their id, time and (where `port` is not None; any stride, as an NF's
    one out-link is a broadcast) port.  One pass instead
    of a boolean mask, its indices and three gathers (topology's ~90 ms
    of numpy on bench/analyze.py's 9.5 M-hop capture).

    Returns
    -------
    end : int
        `at` plus the entries written.

    Raises
    ------
    ValueError
        Lengths disagree, or the outputs have no room.
    """
    cdef Py_ssize_t n = ids.shape[0], i, o = at, room = out_ids.shape[0]
    cdef uint64_t key
    cdef const uint8_t *f = NULL
    cdef const char *pt = NULL
    cdef Py_ssize_t pstride = 0
    cdef int32_t *opt = NULL
    cdef bint full = False
    if (ns.shape[0] != n or (port is not None and port.shape[0] != n)
            or (force is not None and force.shape[0] != n)):
        raise ValueError("sample_into: ids, ns, port and force must have one length")
    if (out_ns.shape[0] != room or (port is not None and out_port is None)
            or (out_port is not None and out_port.shape[0] != room)):
        raise ValueError("sample_into: out_ids, out_ns and out_port must have one length")
    if at < 0 or at > room:
        raise ValueError("sample_into: `at` must be within the outputs")
    if n == 0:
        return at
    if force is not None:
        f = &force[0]
    if port is not None:
        pt = <const char *>&port[0]
        pstride = port.strides[0]
        opt = &out_port[0] if room else NULL
    with nogil:
        # branch-free: every entry is written at o, which moves on only for
        # a kept one (a 1-in-64 hash branch mispredicts); hence the one slot
        # of room past the last kept entry the caller leaves
        for i in range(n):
            if o == room:
                full = True
                break
            key = ids[i]
            out_ids[o] = key
            out_ns[o] = ns[i]
            if pt != NULL:
                opt[o] = (<const int32_t *>(pt + i * pstride))[0]
            o += _sampled(key) | (f != NULL and f[i] != 0)
    if full:
        raise ValueError("sample_into: the outputs have no room for the sample from `at` on")
    return o


# -- Trajectories' pools ------------------------------------------------------

def gather_dest(const int32_t[::1] dest, int32_t k, const uint64_t[::1] ids,
                const int64_t[::1] ns, const uint8_t[::1] known,
                uint64_t[::1] out_ids, int64_t[::1] out_ns, uint8_t[::1] out_known,
                Py_ssize_t at, int32_t[::1] out_idx):
    """The tx of one NF whose out-link leads to NF `k` (``dest == k``), in
    order: their id, time and known flag (0 where `known` is None) written
    from `at` on, their index from 0 on in `out_idx`.  One pass instead of
    a mask and four gathers (an lb's share of a pool).  Branch-free, as an
    lb's split is a hash: every outputs needs one slot more than it gets.

    Returns
    -------
    end : int
        `at` plus the entries written.

    Raises
    ------
    ValueError
        Lengths disagree, or the outputs have no room.
    """
    cdef Py_ssize_t n = dest.shape[0], i, o = at, room = out_ids.shape[0]
    cdef Py_ssize_t iroom = out_idx.shape[0] + at
    cdef const uint8_t *kn = NULL
    cdef bint full = False
    if ids.shape[0] != n or ns.shape[0] != n or (known is not None and known.shape[0] != n):
        raise ValueError("gather_dest: dest, ids, ns and known must have one length")
    if out_ns.shape[0] != room or out_known.shape[0] != room:
        raise ValueError("gather_dest: out_ids, out_ns and out_known must have one length")
    if at < 0 or at > room:
        raise ValueError("gather_dest: `at` must be within the outputs")
    if n == 0:
        return at
    if known is not None:
        kn = &known[0]
    if room < iroom:
        iroom = room
    with nogil:
        for i in range(n):
            if o == iroom:
                full = True
                break
            out_ids[o] = ids[i]
            out_ns[o] = ns[i]
            out_known[o] = kn[i] if kn != NULL else 0
            out_idx[o - at] = <int32_t>i
            o += dest[i] == k
    if full:
        raise ValueError("gather_dest: the outputs have no room for the entries from `at` on")
    return o


cdef extern from "math.h" nogil:
    double nearbyint(double x)


def interpolate_arrivals(const int64_t[::1] t, const int64_t[::1] seen,
                         const int64_t[::1] n, const int64_t[::1] rx_ns,
                         int64_t[::1] out):
    """The per-packet step of ``arrivals.arrivals_from_occupancy``: packet
    n[j] (its place in its queue's order, rx time rx_ns[j]) arrived where
    the arrivals counted, ``seen`` at times ``t`` (non-decreasing both),
    passed n[j]: between the first record that counted it and the one
    before, linearly -- ``t0 + (n + 1 - a0) / (a1 - a0) * (t1 - t0)`` in
    doubles, rounded half to even, as numpy computes it -- at the first
    record where none is before it; never below 0 nor after rx_ns[j].
    A cursor where `n` rises (each queue's packets in order), a binary
    search where it does not.

    Raises
    ------
    ValueError
        Lengths disagree, no record, or a packet the records never counted.
    """
    cdef Py_ssize_t m = n.shape[0], ns = t.shape[0], j, i = 0, lo, hi, mid
    cdef int64_t want, prev = -1
    cdef double at
    cdef bint bad = False
    if seen.shape[0] != ns or rx_ns.shape[0] != m or out.shape[0] != m:
        raise ValueError("interpolate_arrivals: t and seen, n, rx_ns and out must pair up")
    if m == 0:
        return
    if ns == 0:
        raise ValueError("interpolate_arrivals: no record")
    with nogil:
        for j in range(m):
            want = n[j] + 1
            if want < prev:                     # not rising: search from the start
                i = 0
            prev = want
            if i < ns and seen[i] < want:
                if ns - i > 16 and seen[i + 16] < want:
                    lo, hi = i + 16, ns         # seen[lo] < want <= seen[hi]
                    while hi - lo > 1:
                        mid = (lo + hi) >> 1
                        if seen[mid] < want:
                            lo = mid
                        else:
                            hi = mid
                    i = hi
                else:
                    while i < ns and seen[i] < want:
                        i += 1
            if i == ns:
                bad = True
                break
            if i == 0:
                at = <double>t[0]
            else:
                at = <double>t[i - 1] + (<double>(want - seen[i - 1])
                                         / <double>(seen[i] - seen[i - 1])
                                         * <double>(t[i] - t[i - 1]))
            at = nearbyint(at)
            if at < 0:
                at = 0
            out[j] = <int64_t>at
            if out[j] > rx_ns[j]:
                out[j] = rx_ns[j]
    if bad:
        raise ValueError("interpolate_arrivals: a packet the records never counted")
