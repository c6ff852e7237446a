"""Id matching (mscope.analyzer.matching, the hash join in _match.pyx)
against two references: a per-id reading of match_next's docstring, and
the vectorised lexsort implementation the hash join replaced."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mscope.analyzer import _match
from mscope.analyzer.matching import match_next, match_next_int32

U64_MAX = 2**64 - 1


def _no_window_for_singles(reference):
    """An id seen on one a matches its first b at or after it (by time,
    then index) at any gap: the window only tells copies of an id apart."""
    def ref(a_ids, a_ns, b_ids, b_ns, window_ns):
        match, amb = reference(a_ids, a_ns, b_ids, b_ns, window_ns)
        a_ids, b_ids = np.asarray(a_ids), np.asarray(b_ids)
        for i, key in enumerate(a_ids.tolist()):
            if (a_ids == key).sum() == 1:
                after = [(b_ns[j], j) for j in np.flatnonzero(b_ids == key)
                         if b_ns[j] >= a_ns[i]]
                match[i] = min(after)[1] if after else -1
        return match, amb
    return ref


@_no_window_for_singles
def _reference(a_ids, a_ns, b_ids, b_ns, window_ns):
    """match_next as its docstring reads, one id at a time, in rounds of
    claims: every pending a claims the first free b of its id at or after
    it (at equal times the lower index first); the latest a (then the
    higher index) keeps a contested b, the others try again; an a whose
    claim is out of the window stays unmatched."""
    match = [-1] * len(a_ids)
    ambiguous = 0
    for key in set(a_ids.tolist()):
        A = sorted((i for i in range(len(a_ids)) if a_ids[i] == key), key=lambda i: (a_ns[i], i))
        B = sorted((j for j in range(len(b_ids)) if b_ids[j] == key), key=lambda j: (b_ns[j], j))
        free, todo = set(B), A
        while todo:
            claims = {}
            for i in todo:
                b = next((j for j in B if j in free and b_ns[j] >= a_ns[i]), None)
                if b is not None and b_ns[b] - a_ns[i] <= window_ns:
                    claims.setdefault(b, []).append(i)
            losers = []
            for b, who in claims.items():
                win = max(who, key=lambda i: (a_ns[i], i))
                match[win] = b
                free.discard(b)
                losers += [i for i in who if i != win]
            todo = sorted(losers, key=lambda i: (a_ns[i], i))
        amb = [any(0 <= k < len(A) and k != p and abs(int(a_ns[A[k]]) - int(a_ns[A[p]])) <= window_ns
                   for k in (p - 1, p + 1)) for p in range(len(A))]
        ambiguous += sum(amb)
        # FIFO among the ambiguous matched a: k-th a (by time) takes the
        # k-th of their b (by time, then by the index of the a holding it)
        sel = [A[p] for p in range(len(A)) if amb[p] and match[A[p]] >= 0]
        bs = sorted(((b_ns[match[i]], i, match[i]) for i in sel))
        for i, (_, _, b) in zip(sel, bs):
            match[i] = b
    return np.array(match, np.int64), ambiguous


@_no_window_for_singles
def _lexsort_reference(a_ids, a_ns, b_ids, b_ns, window_ns):
    """The vectorised implementation before the hash join (one lexsort of
    both sides, rounds of claims over a reversed running minimum)."""
    none = np.iinfo(np.int64).max
    na, nb = len(a_ids), len(b_ids)
    match = np.full(na, -1, np.int64)
    if na == 0:
        return match, 0
    ids = np.concatenate([a_ids, b_ids])
    ns = np.concatenate([a_ns, b_ns])
    is_b = np.concatenate([np.zeros(na, bool), np.ones(nb, bool)])
    order = np.lexsort((is_b, ns, ids))
    ids, ns, is_b = ids[order], ns[order], is_b[order]
    orig = order - np.where(is_b, na, 0)
    a_pos = np.flatnonzero(~is_b)
    ai, at = ids[a_pos], ns[a_pos]
    close = (ai[1:] == ai[:-1]) & (at[1:] - at[:-1] <= window_ns)
    amb = np.zeros(len(a_pos), bool)
    amb[1:] |= close
    amb[:-1] |= close
    free_b = is_b.copy()
    todo = a_pos
    while len(todo):
        pos = np.where(free_b, np.arange(len(ids), dtype=np.int64), none)
        nxt = np.minimum.accumulate(pos[::-1])[::-1][todo]
        ok = nxt != none
        q = np.where(ok, nxt, 0)
        ok &= (ids[q] == ids[todo]) & (ns[q] - ns[todo] <= window_ns)
        todo, q = todo[ok], q[ok]
        if not len(todo):
            break
        last = np.ones(len(q), bool)
        o = np.argsort(q, kind="stable")
        qs = q[o]
        last[o[:-1]] = qs[1:] != qs[:-1]
        match[orig[todo[last]]] = orig[q[last]]
        free_b[q[last]] = False
        todo = todo[~last]
    amb_a = np.zeros(na, bool)
    amb_a[orig[a_pos[amb]]] = True
    sel = np.flatnonzero(amb_a & (match >= 0))
    if len(sel):
        bs = match[sel]
        match[sel[np.lexsort((a_ns[sel], a_ids[sel]))]] = bs[np.lexsort((b_ns[bs], b_ids[bs]))]
    return match, int(amb.sum())


def _side(draw, n_ids, max_len, max_ns):
    n = draw(st.integers(0, max_len))
    ids = draw(st.lists(st.integers(0, n_ids - 1), min_size=n, max_size=n))
    ns = draw(st.lists(st.integers(0, max_ns), min_size=n, max_size=n))
    return np.array(ids, np.uint64), np.array(ns, np.int64)


@st.composite
def _sides(draw):
    # few distinct ids and few distinct times: collisions and equal times
    # are the cases that need the group solver
    n_ids = draw(st.integers(1, 6))
    max_ns = draw(st.integers(0, 40))
    a_ids, a_ns = _side(draw, n_ids, 30, max_ns)
    b_ids, b_ns = _side(draw, n_ids, 30, max_ns)
    # the extreme ids must hash and compare like any other
    extreme = np.array([0, U64_MAX, 1, U64_MAX - 1, 2, 3], np.uint64)
    if draw(st.booleans()):
        a_ids, b_ids = extreme[a_ids.astype(np.int64)], extreme[b_ids.astype(np.int64)]
    return a_ids, a_ns, b_ids, b_ns, draw(st.integers(0, max_ns + 5))


@settings(max_examples=600, deadline=None)
@given(_sides())
def test_matches_the_references(sides):
    got, got_amb = match_next(*sides)
    want, want_amb = _reference(*sides)
    assert got.tolist() == want.tolist() and got_amb == want_amb
    old, old_amb = _lexsort_reference(*sides)
    assert got.tolist() == old.tolist() and got_amb == old_amb


def test_random_large_against_the_lexsort_reference():
    # long runs of unique ids with a few recycled ones, on the fast path
    # and the group solver's qsort (groups over 24 entries) at once
    rng = np.random.default_rng(5)
    n = 20_000
    a_ids = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    a_ids[rng.integers(0, n, 300)] = a_ids[:10].repeat(30)
    a_ns = np.sort(rng.integers(0, 10**7, n))
    keep = rng.random(n) < 0.9
    b_ids = a_ids[keep]
    b_ns = a_ns[keep] + rng.integers(0, 5000, keep.sum())
    b_ids, b_ns = b_ids[::-1].copy(), b_ns[::-1].copy()
    for window in (0, 3000, 10**8):
        got, amb = match_next(a_ids, a_ns, b_ids, b_ns, window)
        want, want_amb = _lexsort_reference(a_ids, a_ns, b_ids, b_ns, window)
        assert np.array_equal(got, want) and amb == want_amb


def test_unique_ids_fast_path():
    a_ids = np.array([7, 0, U64_MAX, 9], np.uint64)
    b_ids = np.array([U64_MAX, 0, 9, 7], np.uint64)
    m, amb = match_next(a_ids, [10, 10, 10, 10], b_ids, [10, 9, 111, 12], window_ns=100)
    # 0 came back before it left; 9 after the window, but it is the only
    # 9 on either side: nothing to tell it apart from
    assert m.tolist() == [3, -1, 0, 2] and amb == 0


def test_the_window_parts_copies_of_an_id_only():
    # a packet queued for an hour behind a stopped NF is still that packet
    m, amb = match_next(np.array([6], np.uint64), [0], np.array([6], np.uint64), [3600 * 10**9])
    assert m.tolist() == [0] and amb == 0
    # two copies sent, one seen far later: which one it is, the window
    # cannot say, so neither is matched
    m, amb = match_next(np.array([5, 5], np.uint64), [0, 10], np.array([5], np.uint64), [200],
                        window_ns=100)
    assert m.tolist() == [-1, -1] and amb == 2
    # one sent, two seen (a copy made downstream): the first after it is
    # its, at any gap
    m, _ = match_next(np.array([5], np.uint64), [0], np.array([5, 5], np.uint64), [300, 200],
                      window_ns=100)
    assert m.tolist() == [1]


def test_equal_times_a_before_b():
    m, _ = match_next(np.array([1], np.uint64), [5], np.array([1], np.uint64), [5])
    assert m.tolist() == [0]


def test_empty_sides():
    e_ids, e_ns = np.empty(0, np.uint64), np.empty(0, np.int64)
    m, amb = match_next(e_ids, e_ns, np.array([1], np.uint64), [1])
    assert m.dtype == np.int64 and m.tolist() == [] and amb == 0
    # no b: nothing matches, but colliding a are still ambiguous
    m, amb = match_next(np.array([1, 1, 2], np.uint64), [0, 5, 0], e_ids, e_ns, window_ns=10)
    assert m.tolist() == [-1, -1, -1] and amb == 2


def test_all_colliding_ids_pair_in_order():
    n = 1000
    a_ns = np.arange(n) * 10
    m, amb = match_next(np.zeros(n, np.uint64), a_ns, np.zeros(n, np.uint64), a_ns + 5,
                        window_ns=100)
    assert m.tolist() == list(range(n)) and amb == n


def test_latest_a_keeps_a_contested_b():
    m, amb = match_next(np.array([5, 5], np.uint64), [0, 10], np.array([5], np.uint64), [12])
    assert m.tolist() == [-1, 0] and amb == 2
    # the loser takes the next free b of its id, if in the window
    m, _ = match_next(np.array([5, 5], np.uint64), [0, 10], np.array([5, 5], np.uint64),
                      [12, 20], window_ns=20)
    assert m.tolist() == [0, 1]
    m, _ = match_next(np.array([5, 5], np.uint64), [0, 10], np.array([5, 5], np.uint64),
                      [12, 20], window_ns=15)
    assert m.tolist() == [-1, 0]


def test_int32_variant_and_length_check():
    m, _ = match_next_int32(np.array([1, 2], np.uint64), [0, 0], np.array([2], np.uint64), [1])
    assert m.dtype == np.int32 and m.tolist() == [-1, 0]
    with pytest.raises(ValueError, match="one length"):
        match_next(np.array([1, 2], np.uint64), [0], np.array([2], np.uint64), [1])


def test_contains():
    ids = np.array([0, 5, U64_MAX, 7, 5], np.uint64)
    out = np.empty(len(ids), np.uint8)
    _match.contains(np.array([5, U64_MAX], np.uint64), ids, out)
    assert out.tolist() == [0, 1, 1, 0, 1]
    _match.contains(np.empty(0, np.uint64), ids, out)
    assert out.tolist() == [0] * 5


# -- match_known_into: the cursor over sides nearly in the same order -----

def _known_join(a_ids, a_ns, known, segments, b_ids, b_ns, window):
    m = np.empty(len(a_ids), np.int32)
    mark = np.empty(len(b_ids), np.uint8)
    amb = _match.match_known_into(np.ascontiguousarray(a_ids, np.uint64),
                                  np.ascontiguousarray(a_ns, np.int64),
                                  np.ascontiguousarray(known, np.uint8),
                                  np.asarray(segments, np.int64),
                                  np.ascontiguousarray(b_ids, np.uint64),
                                  np.ascontiguousarray(b_ns, np.int64), window, m, mark)
    return m, amb, mark


def _check_known_join(a_ids, a_ns, known, segments, b_ids, b_ns, window):
    """Same match and ambiguity as match_next; b_mark 2 exactly where a
    known a matched an id seen once on each side."""
    a_ids, b_ids = np.asarray(a_ids, np.uint64), np.asarray(b_ids, np.uint64)
    got, amb, mark = _known_join(a_ids, a_ns, known, segments, b_ids, b_ns, window)
    want, want_amb = match_next(a_ids, a_ns, b_ids, b_ns, window)
    assert got.tolist() == want.tolist() and amb == want_amb
    ua, ca = np.unique(a_ids, return_counts=True)
    ub, cb = np.unique(b_ids, return_counts=True)
    once_a, once_b = set(ua[ca == 1].tolist()), set(ub[cb == 1].tolist())
    expect = np.zeros(len(b_ids), np.uint8)
    for i, j in enumerate(want.tolist()):
        if j >= 0:
            key = int(a_ids[i])
            expect[j] = 2 if known[i] and key in once_a and key in once_b else 1
    assert mark.tolist() == expect.tolist()


def _distinct_known(a_ids, wanted):
    """`wanted` restricted to its first entry of each id: known a never
    share an id (match_known_into's precondition)."""
    known, seen = np.zeros(len(a_ids), np.uint8), set()
    for i, key in enumerate(np.asarray(a_ids).tolist()):
        if wanted[i] and key not in seen:
            known[i] = 1
            seen.add(key)
    return known


@st.composite
def _known_sides(draw):
    a_ids, a_ns, b_ids, b_ns, window = draw(_sides())
    wanted = draw(st.lists(st.booleans(), min_size=len(a_ids), max_size=len(a_ids)))
    cuts = sorted(draw(st.lists(st.integers(0, len(a_ids)), max_size=3)))
    return (a_ids, a_ns, _distinct_known(a_ids, wanted), [0] + cuts + [len(a_ids)],
            b_ids, b_ns, window)


@settings(max_examples=600, deadline=None)
@given(_known_sides())
def test_known_join_small_sides(sides):
    # colliding ids, equal times, known and unknown a side by side, in
    # any order: whatever the cursor pairs, the result is match_next's
    _check_known_join(*sides)


def _fifo_chain(rng, n, drop=0.0, extra=0.0, shuffle=0, window_gap=50):
    """An upstream tx and the downstream rx behind a FIFO: b in a's order,
    with drops, foreign b, and local reordering within `shuffle`."""
    a_ids = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    a_ns = np.sort(rng.integers(0, 10 * n, n))
    keep = rng.random(n) >= drop
    b_ids, b_ns = a_ids[keep], a_ns[keep] + rng.integers(0, window_gap, keep.sum())
    if extra:
        k = int(extra * len(b_ids))
        at = rng.integers(0, len(b_ids) + 1, k)
        b_ids = np.insert(b_ids, at, rng.integers(0, 2**64, k, dtype=np.uint64, endpoint=False))
        b_ns = np.insert(b_ns, at, rng.integers(0, 10 * n, k))
    if shuffle:
        pos = np.arange(len(b_ids)) + rng.integers(0, shuffle, len(b_ids))
        order = np.argsort(pos, kind="stable")
        b_ids, b_ns = b_ids[order], b_ns[order]
    return a_ids, a_ns, b_ids, b_ns


@pytest.mark.parametrize("drop, extra, shuffle", [
    (0.0, 0.0, 0), (0.05, 0.0, 0), (0.0, 0.05, 0), (0.0, 0.0, 40), (0.0, 0.0, 300),
    (0.1, 0.1, 20), (0.9, 0.0, 0), (0.0, 0.9, 0)])
def test_known_join_nearly_in_order(drop, extra, shuffle):
    rng = np.random.default_rng(int(drop * 100 + extra * 10 + shuffle))
    a_ids, a_ns, b_ids, b_ns = _fifo_chain(rng, 20_000, drop, extra, shuffle)
    for window in (0, 20, 10**8):
        _check_known_join(a_ids, a_ns, np.ones(len(a_ids), np.uint8), [0, len(a_ids)],
                          b_ids, b_ns, window)


def test_known_join_long_drop_runs():
    # runs longer than the cursor's reach (64) and its resync (4096)
    rng = np.random.default_rng(3)
    n = 30_000
    a_ids = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    a_ns = np.arange(n) * 10
    keep = np.ones(n, bool)
    keep[1000:1100] = False
    keep[5000:10000] = False
    keep[20000:20070] = False
    _check_known_join(a_ids, a_ns, np.ones(n, np.uint8), [0, n], a_ids[keep], a_ns[keep] + 5,
                      10**8)


def test_known_join_pool_of_segments():
    # two feeds (tx of two NFs) merged by time into one rx, as a join
    # pools them; a few of the second's ids unknown
    rng = np.random.default_rng(4)
    a1 = _fifo_chain(rng, 8000)
    a2 = _fifo_chain(rng, 5000)
    a_ids = np.concatenate([a1[0], a2[0]])
    a_ns = np.concatenate([a1[1], a2[1]])
    b_ids = np.concatenate([a1[2], a2[2]])
    b_ns = np.concatenate([a1[3], a2[3]])
    order = np.argsort(b_ns, kind="stable")
    known = np.ones(len(a_ids), np.uint8)
    known[rng.integers(0, len(a_ids), 200)] = 0
    _check_known_join(a_ids, a_ns, known, [0, 8000, 13000], b_ids[order], b_ns[order], 10**8)
    _check_known_join(a_ids, a_ns, known, [0, 13000], b_ids[order], b_ns[order], 10**8)


def test_known_join_collisions_next_to_the_cursor():
    # an id recycled on either side right where the cursor pairs it: the
    # pair must go to the group solver, not be taken as once each side
    rng = np.random.default_rng(6)
    n = 5000
    a_ids, a_ns, b_ids, b_ns = _fifo_chain(rng, n, shuffle=8)
    for where in (10, 11, 2500, n - 1):
        a2 = a_ids.copy()
        a2[where + 1 if where + 1 < n else where - 1] = a2[where]     # twice on a
        b3 = b_ids.copy()
        b3[min(where + 3, n - 1)] = b3[where]                          # twice on b
        for ai, bi in ((a2, b_ids), (a_ids, b3), (a2, b3)):
            known = _distinct_known(ai, np.ones(n, bool))
            _check_known_join(ai, a_ns, known, [0, n], bi, b_ns, 10**8)
            _check_known_join(ai, a_ns, known, [0, n], bi, b_ns, 3)
        # an unknown a with the id of a known one's b
        known = np.ones(n, np.uint8)
        a4 = a_ids.copy()
        a4[where - 1] = a4[where]
        known[where - 1] = 0
        _check_known_join(a4, a_ns, known, [0, n], b_ids, b_ns, 10**8)


def test_known_join_checks_its_arguments():
    ids, ns = np.array([1, 2], np.uint64), np.array([0, 1], np.int64)
    with pytest.raises(ValueError, match="a_segments"):
        _known_join(ids, ns, [1, 1], [0, 1], ids, ns, 10)
    with pytest.raises(ValueError, match="matching lengths"):
        _known_join(ids, ns, [1], [0, 2], ids, ns, 10)
    m, amb, mark = _known_join(ids, ns, [1, 1], [0, 2], ids[:0], ns[:0], 10)
    assert m.tolist() == [-1, -1] and amb == 0 and mark.tolist() == []


def test_unique_into():
    ids = np.array([5, 0, U64_MAX, 5, 7, 0, 5], np.uint64)
    out = np.empty(len(ids), np.uint8)
    _match.unique_into(ids, out)
    assert out.tolist() == [0, 0, 1, 0, 1, 0, 0]



# -- walk_paths and hop_times: the hops laid out, then their times ----------

def _walk_chain():
    """source (NF 0, tx only) -> lb (NF 1, two out-links: tx 0 to a, tx 1
    to the sink, tx 2 to a) -> a (NF 2, tx to the sink).  Packet 0 goes
    source, lb, a, out; packet 1 leaves by lb's sink link; packet 2 is
    dropped at a's queue; packet 3 is a's own rx 1 (no tx claims it),
    lost inside a."""
    i32, i64 = (lambda x: np.array(x, np.int32)), (lambda x: np.array(x, np.int64))
    tx_ns = [i64([0, 1, 2]), i64([10, 11, 12]), i64([30])]
    rx_ns = [i64([]), i64([5, 6, 7]), i64([20, 25])]
    tx_dest = [None, i32([2, -1, 2]), None]
    one_dest = i32([1, -1, -1])
    tx2rx = [i32([0, 1, 2]), i32([0, -1, -1]), i32([-1])]
    rx2tx = [i32([]), i32([0, 1, 2]), i32([0, -1])]
    rx_addr = [None, np.array([(1 << 32) | 2, 0, (3 << 32) | 4], np.uint64), None]
    rx_only = np.zeros(3, np.uint8)
    return tx_ns, rx_ns, tx_dest, one_dest, tx2rx, rx2tx, rx_addr, rx_only


def test_walk_paths_then_hop_times():
    tx_ns, rx_ns, tx_dest, one_dest, tx2rx, rx2tx, rx_addr, rx_only = _walk_chain()
    n_pk, cap = 4, 6
    exit_ns, drop_nf, drop_ns = (np.full(n_pk, -1, np.int64), np.full(n_pk, -1, np.int32),
                                 np.full(n_pk, -1, np.int64))
    src_addr, dst_addr = np.zeros(n_pk, np.uint32), np.zeros(n_pk, np.uint32)
    hops = [np.empty(cap, np.int32) for _ in range(4)]
    n = _match.walk_paths(tx_ns, tx_dest, one_dest, tx2rx, rx_ns, rx2tx, rx_addr, rx_only,
                          np.array([0], np.int32), np.array([2], np.int32),
                          np.array([1], np.int32), exit_ns, drop_nf, drop_ns,
                          src_addr, dst_addr, *hops)
    assert n == 6
    pk, nf, rx, tx = (h.tolist() for h in hops)
    assert pk == [0, 0, 1, 2, 2, 3]
    assert nf == [1, 2, 1, 1, 2, 2]
    assert rx == [0, 0, 1, 2, -1, 1]
    assert tx == [0, 0, 1, 2, -1, -1]
    assert exit_ns.tolist() == [30, 11, -1, -1]
    assert drop_nf.tolist() == [-1, -1, 2, 2] and drop_ns.tolist() == [-1, -1, 12, 25]
    assert src_addr.tolist() == [1, 0, 3, 0] and dst_addr.tolist() == [2, 0, 4, 0]
    src_ns = np.array([0, 1, 2, -1], np.int64)
    times = [np.empty(n, np.int64) for _ in range(3)]
    _match.hop_times(tx_ns, rx_ns, src_ns, *hops, *times)
    arr, rx_t, tx_t = (t.tolist() for t in times)
    assert arr == [0, 10, 1, 2, 12, -1]      # the source's tx, then the previous hop's
    assert rx_t == [5, 20, 6, 7, -1, 25]
    assert tx_t == [10, 30, 11, 12, -1, -1]


def test_walk_paths_ends_a_path_whose_fate_is_unknown_with_no_drop():
    # the same chain, with packet 2's match at a and packet 3's tx at a
    # marked UNKNOWN (the records cannot tell): no hop at a for packet 2,
    # neither is a drop, neither exits
    from mscope.analyzer.fates import UNKNOWN
    tx_ns, rx_ns, tx_dest, one_dest, tx2rx, rx2tx, rx_addr, rx_only = _walk_chain()
    tx2rx[1][2] = UNKNOWN
    rx2tx[2][1] = UNKNOWN
    n_pk = 4
    exit_ns, drop_nf, drop_ns = (np.full(n_pk, -1, np.int64), np.full(n_pk, -1, np.int32),
                                 np.full(n_pk, -1, np.int64))
    hops = [np.empty(6, np.int32) for _ in range(4)]
    n = _match.walk_paths(tx_ns, tx_dest, one_dest, tx2rx, rx_ns, rx2tx, rx_addr, rx_only,
                          np.array([0], np.int32), np.array([2], np.int32),
                          np.array([1], np.int32), exit_ns, drop_nf, drop_ns,
                          np.zeros(n_pk, np.uint32), np.zeros(n_pk, np.uint32), *hops)
    assert n == 5
    pk, nf, rx, tx = (h[:n].tolist() for h in hops)
    assert pk == [0, 0, 1, 2, 3] and nf == [1, 2, 1, 1, 2]
    assert rx == [0, 0, 1, 2, 1] and tx == [0, 0, 1, 2, -1]
    assert exit_ns.tolist() == [30, 11, -1, -1]
    assert drop_nf.tolist() == [-1, -1, -1, -1] and drop_ns.tolist() == [-1] * 4


def test_walk_paths_checks_its_arguments():
    tx_ns, rx_ns, tx_dest, one_dest, tx2rx, rx2tx, rx_addr, rx_only = _walk_chain()
    pk = [np.full(4, -1, np.int64), np.full(4, -1, np.int32), np.full(4, -1, np.int64),
          np.zeros(4, np.uint32), np.zeros(4, np.uint32)]
    starts = (np.array([0], np.int32), np.array([2], np.int32), np.array([1], np.int32))
    with pytest.raises(ValueError, match="one length"):
        _match.walk_paths(tx_ns, [None, tx_dest[1][:2], None], one_dest, tx2rx, rx_ns,
                          rx2tx, rx_addr, rx_only, *starts, *pk,
                          *[np.empty(6, np.int32) for _ in range(4)])
    with pytest.raises(ValueError, match="per-packet"):
        _match.walk_paths(tx_ns, tx_dest, one_dest, tx2rx, rx_ns, rx2tx, rx_addr, rx_only,
                          *starts, *[a[:3] for a in pk],
                          *[np.empty(6, np.int32) for _ in range(4)])
    with pytest.raises(ValueError, match="more hops"):
        _match.walk_paths(tx_ns, tx_dest, one_dest, tx2rx, rx_ns, rx2tx, rx_addr, rx_only,
                          *starts, *pk, *[np.empty(5, np.int32) for _ in range(4)])
    with pytest.raises(ValueError, match="out of range"):
        _match.hop_times(tx_ns, rx_ns, np.zeros(1, np.int64), np.array([3], np.int32),
                         np.array([1], np.int32), np.array([0], np.int32),
                         np.array([0], np.int32), *[np.empty(1, np.int64) for _ in range(3)])


def test_sample_into_keeps_topologys_sample():
    """The 1-in-64 hash rule (top 6 bits of id * 0xC2B2AE3D27D4EB4F zero) or a forced
    entry, in order, written from `at` on; any stride of port."""
    rng = np.random.default_rng(7)
    ids = rng.integers(0, U64_MAX, 5000, dtype=np.uint64, endpoint=True)
    ns = rng.integers(0, 10**9, 5000)
    port = np.broadcast_to(np.int32(3), 5000)
    force = (rng.random(5000) < 0.05).astype(np.uint8)
    with np.errstate(over="ignore"):
        keep = (ids * np.uint64(0xC2B2AE3D27D4EB4F) < np.uint64(1 << 58)) | force.view(bool)
    n = int(keep.sum())
    assert _match.sample_count(ids, force) == n
    assert _match.sample_count(ids, None) < n
    out_ids, out_ns = np.zeros(n + 3, np.uint64), np.zeros(n + 3, np.int64)
    out_port = np.zeros(n + 3, np.int32)
    assert _match.sample_into(ids, ns, port, force, out_ids, out_ns, out_port, 2) == n + 2
    assert out_ids[2:n + 2].tolist() == ids[keep].tolist()
    assert out_ns[2:n + 2].tolist() == ns[keep].tolist()
    assert (out_port[2:n + 2] == 3).all()
    with pytest.raises(ValueError, match="no room"):
        _match.sample_into(ids, ns, None, force, out_ids[:n + 2], out_ns[:n + 2], None, 2)


def test_gather_dest_is_a_mask_and_its_indices():
    rng = np.random.default_rng(8)
    dest = rng.integers(-1, 3, 3000).astype(np.int32)
    ids = rng.integers(0, U64_MAX, 3000, dtype=np.uint64, endpoint=True)
    ns = rng.integers(0, 10**9, 3000)
    known = rng.integers(0, 2, 3000).astype(np.uint8)
    sel = dest == 1
    n = int(sel.sum())
    out_ids, out_ns = np.zeros(n + 6, np.uint64), np.zeros(n + 6, np.int64)
    out_known, idx = np.full(n + 6, 9, np.uint8), np.empty(n + 1, np.int32)
    assert _match.gather_dest(dest, 1, ids, ns, known, out_ids, out_ns, out_known, 5,
                              idx) == n + 5
    assert out_ids[5:n + 5].tolist() == ids[sel].tolist()
    assert out_ns[5:n + 5].tolist() == ns[sel].tolist()
    assert out_known[5:n + 5].tolist() == known[sel].tolist()
    assert idx[:n].tolist() == np.flatnonzero(sel).tolist()
    _match.gather_dest(dest, 1, ids, ns, None, out_ids, out_ns, out_known, 5, idx)
    assert not out_known[5:n + 5].any()
    with pytest.raises(ValueError, match="no room"):
        _match.gather_dest(dest, 1, ids, ns, known, out_ids, out_ns, out_known, 5, idx[:n])
