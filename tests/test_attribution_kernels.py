"""The compiled kernels of the queue and attribution stages
(mscope.analyzer._attrib) against straightforward numpy references: the
numpy code they replaced.  Equality is exact, floats included: the kernels
evaluate every expression in the order numpy did."""
import numpy as np
import pytest

from mscope.analyzer import _attrib
from mscope.analyzer.attribution import _unusual_windows

INDEX = [np.int32, np.int64]


# -- references ---------------------------------------------------------------

def _ref_step_series(arr, rx):
    t = np.concatenate([arr, rx])
    d = np.concatenate([np.ones(len(arr), np.int64), -np.ones(len(rx), np.int64)])
    o = np.argsort(t, kind="stable")
    t, d = t[o], d[o]
    last = np.ones(len(t), bool)
    last[:-1] = t[1:] != t[:-1]
    step_ns, step_len = t[last], np.cumsum(d)[last]
    busy = step_len > 0
    before = np.concatenate([[False], busy[:-1]])
    starts = step_ns[busy & ~before]
    ends = step_ns[~busy & before]
    p = np.searchsorted(starts, arr, side="right") - 1
    return step_ns, step_len, starts, ends, p


def _ref_seg_cummin(x, seg):
    if len(x) == 0:
        return x
    big = float(x.max() - x.min()) + 1.0
    off = (seg - seg.min()).astype(float) * big
    return np.minimum.accumulate(x - off) + off


def _ref_bounded_queue(arr, pstart, local_rate, room):
    """After each run of equal arrivals in `arr` (sorted; all offered): the
    queue of an NF served at `local_rate` from each period's start, holding
    at most `room` (what would not fit dropped), and whether the room has
    bounded it yet in that period; per arrival."""
    qb, full, t_prev, p_prev = 0.0, False, 0, None
    out_q, out_full = np.zeros(len(arr)), np.zeros(len(arr), bool)
    p_of = np.searchsorted(pstart, arr, side="right") - 1
    i = 0
    while i < len(arr):
        j = i
        while j < len(arr) and arr[j] == arr[i]:
            j += 1
        if p_of[i] != p_prev:
            qb, full, p_prev = 0.0, False, p_of[i]
        else:
            qb = max(qb - local_rate * float(arr[i] - t_prev), 0.0)
        qb += float(j - i)
        if qb > room:
            qb, full = room, True
        t_prev = arr[i]
        out_q[i:j], out_full[i:j] = qb, full
        i = j
    return out_q, out_full


def _ref_hop_scores(arr, acc, dep, pstart, pend, rate, local_rate, usual, a, rx, dropped,
                    surges=None, pquiet=None, unusual=None, room=np.inf):
    """attribution._NF.hop_scores before the kernel (numpy); `surges`
    (starts, ends): input scores only where one overlaps [period start, a];
    `pquiet`: where the no-input-cause queue starts in each period (the
    NF went silent), default the period's start; `unusual` (starts, ends):
    the no-input-cause queue counts the arrivals that came, but the usual
    rate within these windows (default: the usual rate throughout); `room`:
    a drop's no-local-cause queue holds at most this many (`a` is `arr`
    for it)."""
    if pquiet is None:
        pquiet = pstart

    def came(t):                # arrivals by t without an input cause
        if unusual is None:
            return usual * t
        ws, we = unusual
        n_t = np.searchsorted(arr, t, "right").astype(float)
        n_s = np.searchsorted(arr, ws, "right").astype(float)
        cum = np.concatenate([[0.0], np.cumsum(
            (np.searchsorted(arr, we, "right") - n_s) - usual * (we - ws).astype(float))])
        K = np.searchsorted(ws, t, "right")
        k = np.maximum(K - 1, 0)
        inside = (K > 0) & (t < we[k]) if len(ws) else np.zeros(len(t), bool)
        base = (n_s - cum[:-1])[k] if len(ws) else np.zeros(len(t))
        return np.where(inside, base + usual * (t - ws[k] if len(ws) else t).astype(float),
                        n_t - cum[K])
    def period_idx(t):
        return np.searchsorted(pstart, t, side="right") - 1

    def period_of(t):
        p = period_idx(t)
        pe = pend[np.maximum(p, 0)] if len(pend) else np.zeros(len(t), np.int64)
        return np.where((p >= 0) & ((pe < 0) | (pe >= t)), p, -1)

    min_local = _ref_seg_cummin(np.arange(len(arr)) - local_rate * arr, period_idx(arr))
    min_all = np.minimum.accumulate(np.arange(len(arr)) - local_rate * arr)
    dp = period_idx(dep)
    min_input = _ref_seg_cummin(came(dep) - (np.arange(len(dep)) + 1), dp)
    n = len(a)
    L, I = np.zeros(n), np.zeros(n)
    p = period_of(a)
    ok = p >= 0
    if not ok.any() or rate <= 0 or local_rate <= 0:
        return L, I
    r, rl = rate, local_rate
    a_, p_ = a[ok], p[ok]
    s = pstart[p_]
    N = np.searchsorted(arr, a_, "right")
    M = np.searchsorted(dep, a_, "right")
    q = np.maximum(np.searchsorted(acc, a_, "right") - M, 0).astype(float)
    j = np.maximum(N - 1, 0)
    q_loc = np.clip(N - rl * a_ - min_local[j], 0, q)
    Ms = np.searchsorted(dep, s, "right")
    m0 = came(pquiet[p_]) - Ms
    jd = M - 1
    same = (jd >= 0) & (jd >= Ms) & (dp[np.maximum(jd, 0)] == p_)
    m = np.where(same, np.minimum(m0, min_input[np.maximum(jd, 0)]), m0)
    q_in = np.clip(came(a_) - M - m, 0, q)
    drop = dropped[ok]
    w = np.where(drop, 0, rx[ok] - a_).astype(float)
    w_loc = np.maximum(q_loc - 1, 0) / rl
    # the last batch taken before the arrival, served at rl, ends first,
    # while the queue served at rl since the first arrival lasts
    tb = dep[np.maximum(M - 1, 0)]
    nb = M - np.searchsorted(dep, tb, "left")
    busy = np.maximum((N - rl * a_ - min_all[j]) - 1, 0) / rl
    w_loc = np.where(M > 0, np.maximum(w_loc, np.minimum(np.maximum(0.0, (tb + nb / rl) - a_),
                                                         busy)), w_loc)
    k = np.minimum(M + np.ceil(np.maximum(q_in - 1, 0)).astype(np.int64), len(dep) - 1)
    w_in = (dep[np.maximum(k, 0)] - a_).astype(float) if len(dep) else w
    if room < np.inf:
        qb, full = _ref_bounded_queue(arr, pstart, local_rate, room)
        q_loc = np.where(full[ok], np.minimum(q_loc, qb[ok]), q_loc)
    L[ok] = np.where(drop, q - q_loc, r * np.maximum(0.0, w - w_loc))
    I[ok] = np.where(drop, q - q_in, r * np.maximum(0.0, w - np.minimum(w_in, w)))
    if surges is not None:
        ws, we = surges
        beyond = ((ws[None, :] <= a_[:, None]) & (we[None, :] >= s[:, None])).any(axis=1)
        I[ok] = np.where(beyond, I[ok], 0.0)
    return L, I


def _fifo_queue(rng, n, service_ns=300, drop_share=0.05, rx_batch_ns=0):
    """A FIFO queue: batched arrivals (ties), a server with stalls, drops;
    rx in batches too (times rounded up to `rx_batch_ns`) if asked."""
    gaps = rng.choice([0, 0, 0, 100, 250, 400, 3000], size=n)
    arr = 1_000_000 + np.cumsum(gaps)
    dropped = rng.random(n) < drop_share
    rx = np.full(n, -1, np.int64)
    free = 0
    for i in np.flatnonzero(~dropped):
        start = max(int(arr[i]), free)
        if rng.random() < 0.01:
            start += 20_000                          # a stall
        rx[i] = start
        free = start + service_ns
    if rx_batch_ns:
        rx = np.where(rx >= 0, -(-rx // rx_batch_ns) * rx_batch_ns, -1)
    return arr.astype(np.int64), rx, dropped


# -- queue timelines ------------------------------------------------------------

@pytest.mark.parametrize("index", INDEX)
def test_rx_slots_is_a_stable_argsort_and_gathers_its_times(index):
    rng = np.random.default_rng(1)
    n_rx = np.array([0, 50, 70], np.int64)
    hop_nf = np.concatenate([np.full(50, 1), np.full(70, 2), np.full(30, 1)]).astype(index)
    hop_rx = np.concatenate([rng.permutation(50), rng.permutation(70),
                             np.full(30, -1)]).astype(index)
    perm = rng.permutation(len(hop_nf))
    hop_nf, hop_rx = hop_nf[perm], hop_rx[perm]
    arr_ns = rng.integers(-1, 10**6, len(hop_nf)).astype(np.int64)
    rx_ns = rng.integers(0, 10**6, len(hop_nf)).astype(np.int64)
    offset = np.concatenate([[0], np.cumsum(n_rx)]).astype(np.int64)
    slot = np.full(int(offset[-1]), -1, index)
    assert _attrib.rx_slots(hop_nf, hop_rx, offset, n_rx, slot) == 0
    a, r = np.empty(len(slot), np.int64), np.empty(len(slot), np.int64)
    _attrib.gather_arrival_rx(slot, arr_ns, rx_ns, a, r)
    only = np.empty(len(slot), np.int64)
    _attrib.gather_arrival(slot, arr_ns, rx_ns, only)
    for k in (1, 2):
        h = np.flatnonzero((hop_nf == k) & (hop_rx >= 0))
        h = h[np.argsort(hop_rx[h], kind="stable")]
        got = slot[offset[k]:offset[k + 1]]
        assert got.tolist() == h.tolist()
        assert r[offset[k]:offset[k + 1]].tolist() == rx_ns[h].tolist()
        want = np.where(arr_ns[h] >= 0, arr_ns[h], rx_ns[h])
        assert a[offset[k]:offset[k + 1]].tolist() == want.tolist()
        assert only[offset[k]:offset[k + 1]].tolist() == want.tolist()


@pytest.mark.parametrize("index", INDEX)
def test_rx_slots_counts_collisions(index):
    # a few rx entries claimed by two hops: counted, the later hop kept
    rng = np.random.default_rng(14)
    n_rx = np.array([0, 50, 70], np.int64)
    hop_nf = rng.permutation(np.concatenate([np.full(80, 1), np.full(75, 2)])).astype(index)
    hop_rx = np.full(len(hop_nf), -1, index)
    for k in (1, 2):
        at = np.flatnonzero(hop_nf == k)
        hop_rx[at[:n_rx[k]]] = rng.permutation(n_rx[k])
        hop_rx[at[n_rx[k]:n_rx[k] + 3]] = rng.integers(0, n_rx[k], 3)
    offset = np.concatenate([[0], np.cumsum(n_rx)]).astype(np.int64)
    slot = np.full(int(offset[-1]), -1, index)
    assert _attrib.rx_slots(hop_nf, hop_rx, offset, n_rx, slot) == 6
    for k in (1, 2):
        h = np.flatnonzero((hop_nf == k) & (hop_rx >= 0))
        last = {int(hop_rx[x]): int(x) for x in h}
        assert slot[offset[k]:offset[k + 1]].tolist() == [last[i] for i in range(n_rx[k])]


@pytest.mark.parametrize("seed", range(4))
def test_step_series_matches_the_sorted_events(seed):
    rng = np.random.default_rng(seed)
    arr, rx, dropped = _fifo_queue(rng, 3000)
    arr, rx = arr[~dropped], rx[~dropped]
    n = len(arr)
    step_ns, step_len = np.empty(2 * n, np.int64), np.empty(2 * n, np.int32)
    starts, ends = np.empty(n + 1, np.int64), np.empty(n + 1, np.int64)
    period = np.empty(n, np.int32)
    ns, nst, nen = _attrib.step_series(arr, rx, step_ns, step_len, starts, ends, period, True)
    ref = _ref_step_series(arr, rx)
    assert step_ns[:ns].tolist() == ref[0].tolist()
    assert step_len[:ns].tolist() == ref[1].tolist()
    assert starts[:nst].tolist() == ref[2].tolist()
    assert ends[:nen].tolist() == ref[3].tolist()
    waited = np.where((rx - arr > 0) & (ref[4] >= 0), ref[4], -1)
    assert period.tolist() == waited.tolist()
    _attrib.step_series(arr, rx, step_ns, step_len, starts, ends, period, False)
    assert period.tolist() == ref[4].tolist()


def test_is_sorted():
    assert _attrib.is_sorted(np.array([1, 1, 2], np.int64))
    assert not _attrib.is_sorted(np.array([2, 1], np.int64))


# -- attribution: per-NF arrays -------------------------------------------------

@pytest.mark.parametrize("index", INDEX)
def test_arrival_order_is_a_stable_argsort_over_hops(index):
    rng = np.random.default_rng(2)
    hops = rng.choice(10**6, 2000, replace=False).astype(index)
    a = rng.integers(0, 300, 2000).astype(np.int64)
    acc = rng.random(2000) < 0.9
    # accepted: sorted by arrival, ties in any order; dropped: by (arrival, hop)
    rx = np.where(acc, rng.integers(0, 10**6, 2000), -1).astype(np.int64)
    o = np.argsort(a[acc], kind="stable")
    a1, h1, r1 = a[acc][o], hops[acc][o].copy(), rx[acc][o].copy()
    assert _attrib.arrival_order(a1, h1) == 1
    _attrib.order_ties_by_hop(a1, h1, r1)
    assert _attrib.arrival_order(a1, h1) == 2
    assert _attrib.arrival_order(a1[::-1].copy(), h1) == 0
    o = np.lexsort((hops[~acc], a[~acc]))
    a2, h2 = a[~acc][o], hops[~acc][o]
    out_h = np.empty(len(a), index)
    _attrib.merge_hops_by_arrival(a1, h1, a2, h2, out_h)
    by_hop = np.argsort(hops, kind="stable")
    ref = by_hop[np.argsort(a[by_hop], kind="stable")]
    assert out_h.tolist() == hops[ref].tolist()
    # rx moved with its hop
    assert dict(zip(h1.tolist(), r1.tolist())) == dict(zip(hops[acc].tolist(),
                                                           rx[acc].tolist()))


def _neighbour_codes(hop_packet, hop_nf, code=np.int8, links=None):
    prev_nf, next_nf = np.empty(len(hop_packet), code), np.empty(len(hop_packet), code)
    n = int(hop_nf.max(initial=0)) + 1
    _attrib.hop_neighbours(hop_packet, hop_nf, prev_nf, next_nf,
                           np.zeros((n, n), np.int64) if links is None else links)
    return prev_nf, next_nf


@pytest.mark.parametrize("code", [np.int8, np.int16])
@pytest.mark.parametrize("index", INDEX)
def test_neighbours_counts_previous_and_next_nf(index, code):
    rng = np.random.default_rng(3)
    hop_packet = np.sort(rng.integers(0, 400, 1500)).astype(index)
    hop_nf = rng.integers(0, 4, 1500).astype(index)
    same = np.zeros(len(hop_packet) + 1, bool)
    same[1:-1] = hop_packet[1:] == hop_packet[:-1]
    links = np.zeros((4, 4), np.int64)
    prev_nf, next_nf = _neighbour_codes(hop_packet, hop_nf, code, links)
    h = np.arange(len(hop_packet))
    assert prev_nf.tolist() == np.where(same[h], hop_nf[np.maximum(h - 1, 0)], -1).tolist()
    # the hops at d after a hop at u, counted per (u, d)
    after = np.flatnonzero(same[1:-1]) + 1
    ref = np.zeros((4, 4), np.int64)
    np.add.at(ref, (hop_nf[after - 1], hop_nf[after]), 1)
    assert links.tolist() == ref.tolist() and links.sum() > 0
    assert next_nf.tolist() == np.where(same[h + 1], hop_nf[np.minimum(h + 1, len(h) - 1)],
                                        -1).tolist()
    hops = np.flatnonzero(hop_nf == 2).astype(index)
    arr = np.sort(rng.integers(10**6, 10**6 + 7_500_000, len(hops))).astype(np.int64)
    t0, nb = 10**6, 6
    fb, tb = np.zeros((5, nb), np.int64), np.zeros((5, nb), np.int64)
    nxt = np.empty(len(hops), code)
    _attrib.neighbours(arr, hops, prev_nf, next_nf, t0, 1_000_000, fb, tb, nxt)
    prev = np.where(same[hops], hop_nf[np.maximum(hops - 1, 0)], -1)
    nx = np.where(same[hops + 1], hop_nf[np.minimum(hops + 1, len(hop_nf) - 1)], -1)
    b = np.minimum((arr - t0) // 1_000_000, nb - 1)
    for g in range(-1, 4):
        assert fb[g + 1].tolist() == np.bincount(b[prev == g], minlength=nb).tolist()
        assert tb[g + 1].tolist() == np.bincount(b[nx == g], minlength=nb).tolist()
    assert nxt.tolist() == nx.tolist()
    # counts add up over calls (accepted, then dropped arrivals)
    _attrib.neighbours(arr[:10], hops[:10], prev_nf, next_nf, t0, 1_000_000, fb, tb, nxt[:10])
    assert fb[prev[0] + 1].sum() == (prev == prev[0]).sum() + (prev[:10] == prev[0]).sum()
    # positions by next NF, those leaving the chain (-1) left out
    n = np.bincount(nxt.astype(np.int64) + 1, minlength=5)[1:]
    at = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
    pos = np.full(int(n.sum()), -1, index)
    _attrib.positions_by_group(nxt, at, pos)
    for g in range(4):
        assert pos[at[g]:at[g] + n[g]].tolist() == np.flatnonzero(nx == g).tolist()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("index", INDEX)
def test_hop_scores_match_numpy_bit_for_bit(seed, index):
    rng = np.random.default_rng(seed)
    arr, rx, dropped = _fifo_queue(rng, 4000, drop_share=0.1 if seed % 2 else 0.0,
                                   rx_batch_ns=[0, 1000, 5000][seed % 3])
    acc, dep = arr[~dropped], rx[~dropped]
    _, _, pstart, pend, _ = _ref_step_series(acc, dep)
    if len(pend) < len(pstart):
        pend = np.concatenate([pend, [-1]])
    rate, usual = 1 / 300, float(rng.uniform(0.5, 1.5)) / 800
    local_rate = rate / [1.0, 1.05][seed % 2]
    hops = (np.arange(len(arr)) * 3 + 1).astype(index)         # hop of each arrival
    # odd seeds: input scores judged by windows of arrivals beyond their
    # natural variation (disjoint, sorted), some inside queuing periods
    # and the no-input-cause queue counts the arrivals that came, but the
    # usual rate within other such windows (beyond it either way)
    surges = unusual = None
    if seed % 2:
        edges = np.sort(rng.choice(np.unique(arr), 40, replace=False))
        surges = (edges[0::2].astype(np.int64), edges[1::2].astype(np.int64))
        edges = np.sort(rng.choice(np.unique(arr), 30, replace=False))
        unusual = (edges[0::2].astype(np.int64), edges[1::2].astype(np.int64))
    # seeds 3-5: the NF went silent before some periods began (after the
    # last departure before each, as the records tell: none in between)
    pquiet = pstart
    if seed >= 3:
        last = np.concatenate([[0], dep])[np.searchsorted(dep, pstart, side="right")]
        pquiet = pstart - (rng.random(len(pstart)) < 0.5) * rng.integers(
            0, np.maximum(pstart - last, 0) + 1)
        pquiet = np.maximum(pquiet, last)
        assert (pquiet < pstart).any()
    q = np.flatnonzero(pquiet < pstart)
    quiet_rows = np.stack([q, pquiet[q]], axis=1).astype(np.int64).reshape(-1, 2)
    no = np.zeros(0, np.int64)
    # what attribution._NF passes: the accepted and the dropped arrivals
    # apart, scores made a chunk at a time (small chunks here, runs of equal
    # arrivals longer than one too) and kept compact (_HopScores)
    nh = len(arr) * 3 + 1
    words = np.zeros((nh + 63) // 64, np.uint64)
    state = np.zeros(_attrib.HOP_SCORES_STATE, np.int64)
    state_d = np.zeros(_attrib.HOP_SCORES_STATE_D)
    cf = _unusual_windows(acc, arr[dropped], usual, *(unusual or (None, None)))
    # odd seeds (drops): a drop's no-local-cause queue bounded by the room
    q_room = [np.inf, 12.0][seed % 2]
    room, parts, calls = 3, [], 0
    while state[0] < (~dropped).sum() or state[1] < dropped.sum():
        kept, sc = np.empty(room, index), np.empty((room, 2))
        c = _attrib.hop_scores(acc, dep, hops[~dropped], arr[dropped], hops[dropped], dep,
                               pstart, pend, quiet_rows, rate, local_rate, usual,
                               *(surges if surges else (no, no)), surges is not None,
                               *cf, surges is not None, words, kept, sc, state, state_d,
                               q_room)
        calls += 1
        if c < 0:
            room = -c
            continue
        parts.append((kept[:c].copy(), sc[:c].copy()))
        room = 3 if room > 50 else 97
    assert calls > 20
    rank = np.empty(len(words), np.int64)
    c = _attrib.rank_words(words, rank)
    assert c == sum(len(k) for k, _ in parts)
    values = np.full((c, 2), np.nan)
    for k, sc in parts:
        _attrib.scatter_scored(words, rank, k, sc, values)
    L, I = np.empty(nh), np.empty(nh)
    _attrib.gather_scores(words, rank, values, np.arange(nh, dtype=index), L, I)
    assert not np.isnan(values).any()
    ref_L, ref_I = _ref_hop_scores(arr, acc, dep, pstart, pend, rate, local_rate, usual, arr,
                                   rx, dropped, surges, pquiet, unusual, q_room)
    assert (L[hops] > 0).any() and (I[hops] > 0).any()
    if q_room < np.inf:                 # the room raises some drops' local scores
        unbounded = _ref_hop_scores(arr, acc, dep, pstart, pend, rate, local_rate, usual,
                                    arr, rx, dropped, surges, pquiet, unusual)[0]
        assert (ref_L[dropped] > unbounded[dropped]).any()
        assert (ref_L >= unbounded).all() and (ref_L[~dropped] == unbounded[~dropped]).all()
    if seed >= 3:                       # silences lower input scores, never raise them
        from_start = _ref_hop_scores(arr, acc, dep, pstart, pend, rate, local_rate, usual,
                                     arr, rx, dropped, surges, None, unusual)[1]
        assert (ref_I < from_start).any() and (ref_I <= from_start).all()
    if surges:                          # some judged no cause, not all
        ref_all = _ref_hop_scores(arr, acc, dep, pstart, pend, rate, local_rate, usual, arr,
                                  rx, dropped, None, pquiet, unusual)[1]
        assert ((ref_all > 0) & (ref_I == 0)).any()
    assert L[hops].tobytes() == ref_L.tobytes()
    assert I[hops].tobytes() == ref_I.tobytes()
    others = np.ones(len(L), bool)
    others[hops] = False
    assert not L[others].any() and not I[others].any()


# -- attribution: victims, recursion helpers ---------------------------------

def _hops(rng, index, packets=300):
    hop_packet = np.repeat(np.arange(packets), rng.integers(1, 5, packets)).astype(index)
    nh = len(hop_packet)
    hop_nf = rng.integers(0, 4, nh).astype(index)
    hop_rx = np.where(rng.random(nh) < 0.05, -1, 0).astype(index)
    arrival = np.where(rng.random(nh) < 0.05, -1, rng.integers(0, 10**6, nh)).astype(np.int64)
    rx_ns = np.where(hop_rx >= 0, np.maximum(arrival, 0) + rng.integers(0, 5000, nh), -1)
    tx_ns = np.where((hop_rx >= 0) & (rng.random(nh) < 0.9), rx_ns + 300, -1)
    return hop_packet, hop_nf, hop_rx, arrival, rx_ns.astype(np.int64), tx_ns.astype(np.int64)


@pytest.mark.parametrize("index", INDEX)
def test_victim_hops_match_numpy(index):
    rng = np.random.default_rng(4)
    hop_packet, hop_nf, hop_rx, arr, rx, tx = _hops(rng, index)
    vp = np.flatnonzero(rng.random(300) < 0.4)
    vidx = np.full(300, -1, index)
    vidx[vp] = np.arange(len(vp))
    nv = len(vp)
    tot, vnf, varr = np.zeros(nv), np.full(nv, -1, np.int64), np.full(nv, -1, np.int64)
    n = _attrib.victim_delays(hop_packet, hop_nf, hop_rx, arr, rx, tx, vidx, tot, vnf, varr)
    kept = np.empty(n, index)
    nk = _attrib.victim_kept_hops(hop_packet, hop_nf, hop_rx, arr, rx, vidx, 0.1, tot,
                                  vnf, varr, kept)
    # attribution.attribute before the kernels
    h = np.flatnonzero(vidx[hop_packet] >= 0)
    assert n == len(h)
    drop = hop_rx[h] < 0
    delay = np.where(drop | (arr[h] < 0), 0, rx[h] - arr[h])
    hv = vidx[hop_packet[h]]
    ref_nf, ref_arr = np.full(nv, -1, np.int64), np.full(nv, -1, np.int64)
    spent = np.where((tx[h] >= 0) & (arr[h] >= 0), tx[h] - arr[h], 0)
    o = np.lexsort((spent, hv))
    ref_nf[hv[o]], ref_arr[hv[o]] = hop_nf[h[o]], arr[h[o]]
    ref_tot = np.bincount(hv, weights=delay, minlength=nv)
    keep = drop | ((delay > 0) & (delay >= 0.1 * ref_tot[hv]))
    h, delay, hv = h[keep], delay[keep], hv[keep]
    o = np.lexsort((delay, hv))
    ref_nf[hv[o]], ref_arr[hv[o]] = hop_nf[h[o]], arr[h[o]]
    assert tot.tobytes() == ref_tot.tobytes()
    assert kept[:nk].tolist() == h.tolist()
    assert vnf.tolist() == ref_nf.tolist() and varr.tolist() == ref_arr.tolist()


@pytest.mark.parametrize("index", INDEX)
def test_hop_summary_and_first_hop_addr(index):
    rng = np.random.default_rng(10)
    hop_packet, hop_nf, hop_rx, arr, rx, tx = _hops(rng, index)
    drops = np.empty(len(hop_packet), index)
    t0, t1, n_packets, n_drops = _attrib.hop_summary(hop_packet, hop_rx, arr, rx, drops)
    # the earliest arrival, a hop's rx standing in where none is recorded
    seen = np.where(arr >= 0, arr, rx)
    assert (arr < 0).any() and t0 == seen[seen >= 0].min() and t1 == rx.max()
    assert drops[:n_drops].tolist() == np.flatnonzero((hop_rx < 0) & (arr >= 0)).tolist()
    first = np.concatenate([[True], hop_packet[1:] != hop_packet[:-1]])
    assert n_packets == first.sum()
    src = rng.integers(1, 2**32, 300, dtype=np.uint32)
    addr = np.empty(n_packets, np.uint32)
    _attrib.first_hop_addr(hop_packet, src, addr)
    assert addr.tolist() == src[hop_packet[first]].tolist()
    hops = rng.permutation(len(hop_packet))[:100].astype(index)
    out = np.zeros(101, np.uint32)
    _attrib.hops_addr(hops, hop_packet, src, out)
    assert out[:100].tolist() == src[hop_packet[hops]].tolist() and out[100] == 0
    with pytest.raises(ValueError, match="one entry per hop"):
        _attrib.hops_addr(hops, hop_packet, src, out[:99])


@pytest.mark.parametrize("index", INDEX)
def test_upstream_groups_and_source_windows_of_prefixes(index):
    rng = np.random.default_rng(6)
    hop_packet, hop_nf, hop_rx, arr, rx, tx = _hops(rng, index)
    hops = rng.choice(len(hop_packet), 200, replace=False).astype(index)
    prev_ok = (hops > 0) & (hop_packet[np.maximum(hops - 1, 0)] == hop_packet[hops])
    pv = np.where(prev_ok, hop_nf[np.maximum(hops - 1, 0)], -1)
    ends = np.array([0, 1, 50, 50, 137, 200], np.int64)
    grouped = np.empty(len(hops), index)
    counts = np.empty((5, len(ends)), np.int64)          # the source and 4 NFs
    start = _attrib.upstream_groups_at(hops, _neighbour_codes(hop_packet, hop_nf)[0], ends,
                                       grouped, counts)
    for b, n in enumerate(ends.tolist()):
        assert counts[:, b].tolist() == np.bincount(pv[:n] + 1, minlength=5).tolist()
        for g in range(5):
            # an NF's group goes on as the same packets' hops there
            assert grouped[start[g]:start[g] + counts[g, b]].tolist() == \
                (hops[:n][pv[:n] == g - 1] - (g > 0)).tolist()
    addr_of = rng.integers(1, 2**32, 300, dtype=np.uint32)
    addr, spans = np.empty(len(hops), np.uint32), np.empty(len(ends), np.int64)
    _attrib.source_windows_at(hops, ends, hop_packet, addr_of, arr, addr, spans)
    assert addr.tolist() == addr_of[hop_packet[hops]].tolist()
    for n, got in zip(ends.tolist(), spans.tolist()):
        known = arr[hops[:n]][arr[hops[:n]] >= 0]
        assert got == (known.max() - known.min() if len(known) else 0)
    # no addresses known: the spans alone
    _attrib.source_windows_at(hops, ends, hop_packet, np.zeros(0, np.uint32), arr,
                              np.zeros(0, np.uint32), spans)
    assert spans[-1] == np.ptp(arr[hops][arr[hops] >= 0])
    with pytest.raises(ValueError, match="ascend"):
        _attrib.upstream_groups_at(hops, _neighbour_codes(hop_packet, hop_nf)[0],
                                   np.array([50, 10], np.int64), grouped,
                                   np.empty((5, 2), np.int64))
    with pytest.raises(ValueError, match="ascend"):
        _attrib.source_windows_at(hops, np.array([201], np.int64), hop_packet, addr_of, arr,
                                  addr, spans)


@pytest.mark.parametrize("index", INDEX)
def test_windows_looked_up_through_the_hops(index):
    # the attribution keeps an NF's accepted arrivals as their hops alone:
    # searches through them agree with searches over the arrivals' times
    rng = np.random.default_rng(15)
    hop_packet, hop_nf, hop_rx, arr, rx, tx = _hops(rng, index)
    rx = np.where(rx >= 0, rx, rng.integers(0, 10**6, len(rx)))
    # runs of equal times, among them recorded arrivals and rx times
    arr[rng.random(len(arr)) < 0.3] = 5000
    rx[(arr < 0) & (rng.random(len(arr)) < 0.5)] = 5000
    eff = np.where(arr >= 0, arr, rx)
    hops_by_arr = np.lexsort((np.arange(len(eff)), eff))[:250].astype(index)
    times = eff[hops_by_arr]
    to_pos = np.sort(rng.choice(len(times), 90, replace=False)).astype(index)
    P = rng.choice(len(hop_packet), 40, replace=False).astype(index)
    edges = np.concatenate([times[[0, 7, 100, -1]], [-5, 5000, 10**7]])
    for s in edges.tolist():
        for e in edges.tolist():
            assert _attrib.arrivals_between(hops_by_arr, arr, rx, s, e) == \
                (np.searchsorted(times, s, "left"), np.searchsorted(times, e, "right"))
    # each prefix of P: its tx span, the arrivals (bound for k: to_pos) in
    # it, its arrival span
    ends = np.array([1, 2, 17, 17, 40], np.int64)
    out = [np.empty(len(ends), np.int64) for _ in range(5)]
    out_every = [np.empty(len(ends), np.int64) for _ in range(5)]
    _attrib.upstream_windows_at(P, ends, tx, arr, rx, hops_by_arr, to_pos, False, *out)
    _attrib.upstream_windows_at(P, ends, tx, arr, rx, hops_by_arr, np.zeros(0, index), True,
                                *out_every)
    for b, n in enumerate(ends.tolist()):
        t0, t1 = tx[P[:n]].min(), tx[P[:n]].max()
        known = arr[P[:n]][arr[P[:n]] >= 0]
        span = (known.min(), known.max()) if len(known) else (t0, t1)

        def counted(bound):
            return np.searchsorted(bound, t1, "right") - np.searchsorted(bound, t0, "left")

        assert tuple(int(o[b]) for o in out) == (t0, t1, counted(times[to_pos])) + span
        assert tuple(int(o[b]) for o in out_every) == (t0, t1, counted(times)) + span
    assert out_every[2][-1] > out[2][-1] > 0
    with pytest.raises(ValueError, match="hold a hop"):
        _attrib.upstream_windows_at(P, np.array([0, 3], np.int64), tx, arr, rx, hops_by_arr,
                                    to_pos, False, *out)

def _ref_shares(ups, cnt, usual_from, span):
    """split_upstream's shares before the kernel (numpy)."""
    ex = np.array([c - usual_from[u + 1] * span for u, c in zip(ups.tolist(), cnt.tolist())])
    w = np.maximum(ex, 0.0)
    if w.sum() <= 1e-9:
        w = np.array(cnt, float)
    return w / w.sum()


@pytest.mark.parametrize("n_nf", [1, 3, 5, 6, 7, 12, 40])
def test_upstream_shares_as_numpy(n_nf):
    from mscope.analyzer.attribution import group_shares
    rng = np.random.default_rng(11)
    for trial in range(60):
        nb = int(rng.integers(1, 6))
        counts = rng.integers(0, 80, (n_nf + 1, nb)) * (rng.random((n_nf + 1, nb)) < 0.6)
        counts[rng.integers(0, n_nf + 1), :] += 1          # a group in every prefix
        usual_from = rng.random(n_nf + 1) * 10.0 ** rng.integers(-4, 0)
        usual_from[rng.random(n_nf + 1) < 0.3] = 0.0
        spans = rng.integers(0, 5000, nb) if trial % 7 else np.full(nb, 10**9)  # by count
        got = group_shares(counts, usual_from, spans)
        for b in range(nb):
            ups = np.flatnonzero(counts[:, b]) - 1
            assert got[ups + 1, b].tobytes() == _ref_shares(ups, counts[ups + 1, b],
                                                            usual_from, int(spans[b])).tobytes()


def _scored(rng, nh):
    """Compact scores (words, rank, values) of about 60% of `nh` hops."""
    scored = np.flatnonzero(rng.random(nh) < 0.6)
    words = np.zeros((nh + 63) // 64, np.uint64)
    for h in scored.tolist():
        words[h >> 6] |= np.uint64(1 << (h & 63))
    rank = np.empty(len(words), np.int64)
    assert _attrib.rank_words(words, rank) == len(scored)
    values = rng.standard_normal((len(scored), 2)) * 10.0 ** rng.integers(-6, 6, (len(scored), 2))
    values[::5] = -0.0
    return words, rank, values


def _diagnosis_sums(words, rank, values, P, ends, hop_rx, arr, rx, pstart, pend, room=None):
    nb = len(ends)
    out = [np.empty(nb), np.empty(nb), np.empty(nb)] + [np.empty(nb, np.int64) for _ in range(3)]
    room = np.full((2, int(ends[-1]) if room is None else room), np.nan)
    _attrib.diagnosis_sums_at(words, rank, values, P, np.asarray(ends, np.int64), hop_rx, arr,
                              rx, pstart, pend, room[0], room[1], *out)
    return out


@pytest.mark.parametrize("index", INDEX)
def test_diagnosis_sums_add_up_as_numpy(index):
    rng = np.random.default_rng(12)
    nh = 5000
    words, rank, values = _scored(rng, nh)
    arr = rng.integers(-1, 10**6, nh).astype(np.int64)
    rx = rng.integers(0, 10**6, nh).astype(np.int64)
    hop_rx = np.arange(nh, dtype=index)
    one = np.array([0], np.int64)
    idx = rng.choice(nh, 2500, replace=False).astype(index)
    ends = [1, 5, 7, 8, 9, 100, 129, 129, 2500]
    Ls, Is = _diagnosis_sums(words, rank, values, idx, ends, hop_rx, arr, rx, one, one)[:2]
    L, I = np.empty(len(idx)), np.empty(len(idx))
    _attrib.gather_scores(words, rank, values, idx, L, I)
    for b, n in enumerate(ends):
        # pairwise from 8 terms on: each prefix's own sum, not a running one
        assert (Ls[b].tobytes(), Is[b].tobytes()) == (L[:n].sum().tobytes(),
                                                      I[:n].sum().tobytes())
    with pytest.raises(ValueError, match="hold 2500"):
        _diagnosis_sums(words, rank, values, idx, ends, hop_rx, arr, rx, one, one, room=10)
    with pytest.raises(ValueError, match="hold a hop"):
        _diagnosis_sums(words, rank, values, idx, [0, 4], hop_rx, arr, rx, one, one)


@pytest.mark.parametrize("index", INDEX)
def test_earliest_period_of_prefixes(index):
    rng = np.random.default_rng(7)
    pstart = np.array([100, 500, 900], np.int64)
    pend = np.array([200, 700, -1], np.int64)
    arr = rng.integers(-1, 1200, 60).astype(np.int64)
    rx = rng.integers(0, 1200, 60).astype(np.int64)
    words, rank, values = _scored(rng, 60)
    idx = rng.choice(60, 25, replace=False).astype(index)
    ends = [1, 2, 9, 25]
    got = _diagnosis_sums(words, rank, values, idx, ends, np.arange(60, dtype=index), arr, rx,
                          pstart, pend)[3:]
    for b, n in enumerate(ends):
        a = np.where(arr[idx[:n]] >= 0, arr[idx[:n]], rx[idx[:n]])
        p = np.searchsorted(pstart, a, side="right") - 1
        ok = (p >= 0) & ((pend[np.maximum(p, 0)] < 0) | (pend[np.maximum(p, 0)] >= a))
        assert [int(g[b]) for g in got] == [p[ok].min() if ok.any() else -1, a.min(), a.max()]
    assert -1 in got[0].tolist() and got[0][-1] >= 0      # none yet, then one


# -- scores and rankings ---------------------------------------------------------

def _contributions(rng, nv=120, nc=7, n=900):
    rows = rng.integers(0, nv, n).astype(np.int32)
    cols = rng.integers(0, nc, n).astype(np.int32)
    vals = rng.choice([0.0, 1e-4, 3e-4, 0.1, 2.5, 1e3 / 3], n) * rng.random(n)
    vals[rng.random(n) < 0.2] = 1.0 / 3.0              # equal scores: ties
    return rows, cols, vals


def _scores(rows, cols, vals, excess, rate, nv, nc):
    """score_csr's CSR, counted then filled, as attribute() calls it."""
    off = np.zeros(nv + 1, np.int64)
    _attrib.score_csr(rows, cols, vals, excess, rate, nc, off, np.zeros(0, np.int32),
                      np.zeros(0), np.zeros(0))
    culprit, capped, S = np.empty(off[-1], np.int32), np.empty(off[-1]), np.empty(off[-1])
    _attrib.score_csr(rows, cols, vals, excess, rate, nc, off, culprit, capped, S)
    return off, culprit, capped, S


def _dense(off, culprit, values, nc):
    out = np.zeros((len(off) - 1, nc))
    out[np.repeat(np.arange(len(off) - 1), np.diff(off)), culprit] = values
    return out


def test_score_csr_matches_add_at():
    rng = np.random.default_rng(8)
    nv, nc = 120, 7
    rows, cols, vals = _contributions(rng, nv, nc)
    excess = np.where(rng.random(nv) < 0.2, np.inf, rng.random(nv) * 3)
    rate = rng.random(nv) + 0.5
    off, culprit, capped, S = _scores(rows, cols, vals, excess, rate, nv, nc)
    ref = np.zeros((nv, nc))
    np.add.at(ref, (rows, cols), vals)
    # an entry per cell some contribution reached, by victim, then column
    hit = np.zeros((nv, nc), bool)
    hit[rows, cols] = True
    v, c = np.nonzero(hit)
    assert off.tolist() == [0] + np.cumsum(hit.sum(axis=1)).tolist()
    assert culprit.tolist() == c.tolist()
    assert S.tobytes() == (ref * rate[:, None])[v, c].tobytes()
    assert capped.tobytes() == (np.minimum(ref, excess[:, None]) * rate[:, None])[v, c].tobytes()
    # victims without contributions have no entries
    off, culprit, capped, S = _scores(rows[:0], cols[:0], vals[:0], excess, rate, nv, nc)
    assert off.tolist() == [0] * (nv + 1) and len(culprit) == 0


def _csr(S, raw):
    v, c = np.nonzero((S != 0) | (raw != 0))
    off = np.zeros(len(S) + 1, np.int64)
    np.cumsum(np.bincount(v, minlength=len(S)), out=off[1:])
    return off, c.astype(np.int32), S[v, c], raw[v, c]


def test_rank_victims_and_top_match_the_sorts():
    rng = np.random.default_rng(9)
    nv, nc = 120, 7
    rows, cols, vals = _contributions(rng, nv, nc)
    raw = np.zeros((nv, nc))
    np.add.at(raw, (rows, cols), vals)
    S = np.minimum(raw, 0.5)
    S[:5] = np.array([0.5, 0.2, 0.5, 0.5, 0.1, 0.2, 0.5])        # every cell set
    raw[:5] = S[:5] * 2
    eps = 1e-9
    off_in, col, capped, uncapped = _csr(S, raw)
    off = np.zeros(nv + 1, np.int64)
    _attrib.rank_victims(off_in, col, capped, uncapped, eps, off, np.zeros(0, np.int32),
                         np.zeros(0))
    culprit, score = np.empty(off[-1], np.int32), np.empty(off[-1])
    _attrib.rank_victims(off_in, col, capped, uncapped, eps, off, culprit, score)
    # Attribution.ranked_all on the dense matrices
    order = np.lexsort((-raw, -S), axis=-1)
    rounded = np.round(np.take_along_axis(S, order, axis=1), 3)
    for v in range(nv):
        keep = rounded[v] > eps
        assert culprit[off[v]:off[v + 1]].tolist() == order[v][keep].tolist()
        assert score[off[v]:off[v + 1]].tolist() == rounded[v][keep].tolist()
    # Attribution.top on the dense matrices
    m = S.max(axis=1, keepdims=True)
    t = np.argmax(np.where(S >= m - eps * np.maximum(m, 1), raw, -np.inf), axis=1)
    ref = np.where(S[np.arange(nv), t] > eps, t, -1)
    out = np.empty(nv, np.int64)
    _attrib.top_culprits(off_in, col, capped, uncapped, nc, eps, out)
    assert out.tolist() == ref.tolist()


@pytest.mark.parametrize("seed", range(4))
def test_merge_row_columns_as_a_sort_and_reduceat(seed):
    # nested surges moved onto one column: each row's entries of a column
    # summed, the columns ascending (what _merge_nested_surges's numpy did)
    rng = np.random.default_rng(seed)
    nv = 300
    sizes = rng.integers(0, 30, nv)             # runs past 8: pairwise sums
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    col = rng.integers(0, 4, offsets[-1]).astype(np.int32)
    vals = rng.random(offsets[-1]) * 10.0 ** rng.integers(-3, 4, offsets[-1])
    row = np.repeat(np.arange(nv), sizes)
    o = np.lexsort((col, row))
    r, c, x = row[o], col[o], vals[o]
    first = np.flatnonzero(np.concatenate([[True], (r[1:] != r[:-1]) | (c[1:] != c[:-1])]))
    ref_off = np.zeros(nv + 1, np.int64)
    np.cumsum(np.bincount(r[first], minlength=nv), out=ref_off[1:])
    out_off = np.empty(nv + 1, np.int64)
    out_col, out_val = np.empty(len(col), np.int32), np.empty(len(col))
    m = _attrib.merge_row_columns(offsets, col, vals, out_off, out_col, out_val)
    assert m == len(first) < len(col)
    assert out_off.tolist() == ref_off.tolist()
    assert out_col[:m].tolist() == c[first].tolist()
    assert out_val[:m].tobytes() == np.add.reduceat(x, first).tobytes()


def _ref_tandem(arrivals, ru, rd, room, at, side=()):
    """Two fluid servers in tandem, stepped finely in time: U drains at ru,
    what leaves it joins D (at most `room` held), D drains at rd; the
    `side` arrivals join D directly."""
    qu = qd = 0.0
    out, out_u = [], []
    ev = sorted([(x, 0) for x in arrivals] + [(x, 1) for x in side])
    t, i, step = (ev[0][0] if ev else 0), 0, 0.5
    for x in at:
        while i < len(ev) and ev[i][0] <= x:
            while t + step <= ev[i][0]:
                moved = min(qu, ru * step)
                qu -= moved
                qd = min(room, max(0.0, qd + moved - rd * step))
                t += step
            if ev[i][1]:
                qd = min(room, qd + 1.0)
            else:
                qu += 1.0
            i += 1
        out.append(qd if i else 0.0)
        out_u.append(qu if i else 0.0)
    return np.array(out), np.array(out_u)


@pytest.mark.parametrize("with_side", [False, True])
@pytest.mark.parametrize("index", INDEX)
def test_tandem_queue_is_two_fluid_servers(index, with_side):
    rng = np.random.default_rng(21)
    n = 400
    # bursts of arrivals faster than D takes them, with quiet gaps between
    gaps = np.where(rng.random(n) < 0.9, rng.integers(0, 20, n), rng.integers(200, 600, n))
    arr = np.cumsum(gaps).astype(np.int64)
    arr[rng.random(n) < 0.1] = -1                      # not recorded: its rx counts
    rx = np.cumsum(gaps).astype(np.int64)
    hops = np.arange(n, dtype=index)
    eff = np.where(arr >= 0, arr, rx)
    at = np.sort(rng.choice(eff, 60))
    # both servers empty at each query's start: the first arrival for the
    # first 30 queries, a later time for the rest
    start = np.where(np.arange(60) < 30, eff[0], at[30] - 300)
    # a tenth of them apart, as times (U's drops), merged as they come
    apart = rng.random(n) < 0.1
    extra = np.sort(eff[apart])
    kept = hops[~apart]
    # D's traffic from elsewhere: a steady stream, joining D directly
    side = (np.sort(rng.integers(eff[0] - 100, eff[-1], 150)).astype(np.int64) if with_side
            else np.zeros(0, np.int64))
    for ru, rd, room in ((0.2, 0.05, 1e9), (0.2, 0.05, 30.0), (0.08, 0.05, 1e9)):
        q, q_u = np.empty(len(at)), np.empty(len(at))
        _attrib.tandem_queue_at(kept, arr, rx, extra, side, ru, rd, room, start, at, q, q_u)
        ref, ref_u = _ref_tandem(eff.tolist(), ru, rd, room, at[:30].tolist(),
                                 [x for x in side.tolist() if x >= start[0]])
        ref2, ref2_u = _ref_tandem([x for x in eff.tolist() if x >= start[30]], ru, rd, room,
                                   at[30:].tolist(), [x for x in side.tolist() if x >= start[30]])
        # the reference steps every 0.5 ns, the kernel exactly
        assert np.allclose(q, np.concatenate([ref, ref2]), atol=0.2)
        assert np.allclose(q_u, np.concatenate([ref_u, ref2_u]), atol=0.2)
        assert q.max() > 5 and q.max() <= room
        if with_side:                   # the side stream queues at D
            q0 = np.empty(len(at))
            _attrib.tandem_queue_at(kept, arr, rx, extra, np.zeros(0, np.int64), ru, rd, room,
                                    start, at, q0, q_u)
            assert (q > q0 + 1).any() and (q >= q0 - 1e-9).all()
    with pytest.raises(ValueError, match="ascend"):
        _attrib.tandem_queue_at(hops, arr, rx, extra, side, 0.2, 0.05, 1e9, start,
                                at[::-1].copy(), q, q_u)


@pytest.mark.parametrize("nc", [0, 1, 5, 8, 9, 59, 128, 129, 300])
def test_row_sums_add_up_as_numpy(nc):
    # ndarray.sum(axis=1) adds pairwise, zeros included: the sparse sum
    # must group the same way to give the same last bit
    rng = np.random.default_rng(nc)
    nv = 400
    S = rng.random((nv, nc)) * 10.0 ** rng.integers(-3, 6, (nv, nc))
    S[rng.random(S.shape) < 0.8] = 0
    off, col, capped, _ = _csr(S, S)
    out = np.empty(nv)
    _attrib.row_sums(off, col, capped, nc, out)
    assert out.tobytes() == S.sum(axis=1).tobytes()


@pytest.mark.parametrize("index", INDEX)
def test_waits_of_prefixes_are_the_hops_waits(index):
    rng = np.random.default_rng(3)
    n = 500
    rx_ns = rng.integers(10_000, 20_000, n).astype(np.int64)
    arrival = rx_ns - rng.integers(-50, 2_000, n)        # a few received "before" they came
    arrival[rng.random(n) < 0.2] = -1                     # not recorded: no wait
    hop_rx = np.where(rng.random(n) < 0.1, -1, np.arange(n)).astype(index)   # never received
    P = rng.choice(n, 200, replace=False).astype(index)
    a = arrival[P]
    w = np.where(hop_rx[P] >= 0, rx_ns[P] - np.where(a >= 0, a, rx_ns[P]), 0)
    one = np.array([0], np.int64)
    words, rank, values = _scored(rng, n)
    ends = [1, 50, 200]
    waits = _diagnosis_sums(words, rank, values, P, ends, hop_rx, arrival, rx_ns, one, one)[2]
    for b, m in enumerate(ends):
        # added in order: a running sum
        assert waits[b] == float(np.cumsum(np.maximum(w, 0).astype(float))[m - 1])
    assert (w < 0).any() and (hop_rx[P] < 0).any()


def test_busy_after_is_length_at_by_a_merge():
    rng = np.random.default_rng(12)
    step_ns = np.sort(rng.choice(10_000, 400, replace=False)).astype(np.int64)
    step_len = rng.integers(0, 3, 400).astype(np.int32)
    t = np.sort(rng.integers(-50, 10_050, 900)).astype(np.int64)
    t[100:103] = step_ns[40]                           # at a step: after it
    t.sort()
    i = np.searchsorted(step_ns, t, side="right") - 1
    want = (i >= 0) & (step_len[np.maximum(i, 0)] > 0)
    out = np.empty(len(t), np.uint8)
    assert _attrib.busy_after(step_ns, step_len, t, out)
    assert (out.view(bool) == want).all()
    assert not _attrib.busy_after(step_ns, step_len, t[::-1].copy(), out)


def test_rx_addresses_scatters_by_rx_entry_and_trusts_no_index():
    rng = np.random.default_rng(13)
    hop_packet = rng.integers(0, 50, 300).astype(np.int32)
    hop_rx = rng.permutation(300).astype(np.int32)
    src = rng.integers(1, 2**32, 50, dtype=np.uint64).astype(np.uint32)
    hops = np.flatnonzero(rng.random(300) < 0.5).astype(np.int32)
    want = np.zeros(300, np.uint32)
    want[hop_rx[hops]] = src[hop_packet[hops]]
    out = np.zeros(300, np.uint32)
    assert _attrib.rx_addresses(hops, hop_rx, hop_packet, src, out) == 0
    assert (out == want).all()
    assert _attrib.rx_addresses(hops, hop_rx, hop_packet, src, np.zeros(100, np.uint32)) == -1
    hop_packet[hops[0]] = 50
    assert _attrib.rx_addresses(hops, hop_rx, hop_packet, src, out) == -1


@pytest.mark.parametrize("index", INDEX)
def test_batch_durations_are_rx_to_last_tx_and_trust_no_index(index):
    rng = np.random.default_rng(17)
    nh, nrx, nb = 400, 300, 60
    hop_rx = rng.permutation(nh)[:nh].astype(index) % nrx
    hop_tx_ns = np.where(rng.random(nh) < 0.2, -1, rng.integers(10**6, 2 * 10**6, nh))
    rx_batch = np.sort(rng.integers(0, nb - 5, nrx)).astype(np.int32)   # the last 5 idle
    batch_ns = np.sort(rng.integers(0, 10**6, nb)).astype(np.int64)
    hops = rng.permutation(np.flatnonzero(rng.random(nh) < 0.7)).astype(index)
    # the numpy it replaced: a bincount and a maximum.at, then a where
    b = rx_batch[hop_rx[hops]]
    want_count = np.bincount(b, minlength=nb)
    last = np.full(nb, -1, np.int64)
    np.maximum.at(last, b, hop_tx_ns[hops])
    want = np.where(last >= 0, last - batch_ns, 0)
    count, duration = np.zeros(nb, np.int64), np.full(nb, 7, np.int64)
    assert _attrib.batch_durations(hops, hop_rx, hop_tx_ns, rx_batch, batch_ns, count,
                                   duration) == 0
    assert count.tolist() == want_count.tolist() and duration.tolist() == want.tolist()
    assert (duration[-5:] == 0).all() and (want_count[-5:] == 0).all()
    # an rx slot or a batch out of range: refused, not followed
    bad_rx = hop_rx.copy()
    bad_rx[hops[3]] = nrx
    assert _attrib.batch_durations(hops, bad_rx, hop_tx_ns, rx_batch, batch_ns,
                                   np.zeros(nb, np.int64), np.empty(nb, np.int64)) == -1
    assert _attrib.batch_durations(hops, hop_rx, hop_tx_ns, rx_batch, batch_ns[:10],
                                   np.zeros(10, np.int64), np.empty(10, np.int64)) == -1
    with pytest.raises(ValueError):
        _attrib.batch_durations(hops, hop_rx, hop_tx_ns, rx_batch, batch_ns, count,
                                np.empty(nb - 1, np.int64))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_add_counts_below_grid_is_searchsorted_at_its_edges(dtype):
    rng = np.random.default_rng(15)
    a = np.sort(rng.integers(0, 100_000, 5000)).astype(np.int64)
    out = np.full(4001, 3, dtype)
    assert _attrib.add_counts_below_grid(a, -37, 25, out)
    assert (out == np.searchsorted(a, -37 + 25 * np.arange(4001)) + 3).all()
    assert _attrib.add_counts_below_grid(a[:0], -37, 25, out)               # adds nothing
    assert (out == np.searchsorted(a, -37 + 25 * np.arange(4001)) + 3).all()
    assert not _attrib.add_counts_below_grid(a, 0, 0, out)


def _busy_before(pstart, pend, t):
    end = np.where(pend >= 0, pend, np.iinfo(np.int64).max)
    return np.clip(t - pstart, 0, end - pstart).sum()


def test_most_behind_is_the_largest_shortfall_over_any_busy_part():
    rng = np.random.default_rng(15)
    sends = np.sort(rng.integers(0, 100_000, 3000)).astype(np.int64)
    # nothing sent in [40_000, 60_000)
    sends = sends[(sends < 40_000) | (sends >= 60_000)]
    t0 = np.array([0, 0, 10_000, 60_000, 45_000], np.int64)
    t1 = np.array([100_000, 39_000, 90_000, 100_000, 50_000], np.int64)
    lo = np.searchsorted(sends, t0).astype(np.int64)
    hi = np.searchsorted(sends, t1, "right").astype(np.int64)
    rate = 0.03

    def behind(pstart, pend):
        pstart, pend = np.array(pstart, np.int64), np.array(pend, np.int64)
        out = np.empty(len(t0))
        _attrib.most_behind(sends, lo, hi, t0, t1, rate, pstart, pend, out)
        for b in range(len(t0)):
            # every part [a, c] of the span, a and c at t0, a send or t1
            x = np.concatenate([[t0[b]], sends[lo[b]:hi[b]], [t1[b]]])
            done = np.concatenate([[0], np.arange(hi[b] - lo[b]), [hi[b] - lo[b]]])
            f = np.array([rate * (_busy_before(pstart, pend, y) - _busy_before(pstart, pend, t0[b]))
                          for y in x]) - done
            want = max(0.0, (f[None, :] - f[:, None])[np.triu_indices(len(f))].max())
            assert out[b] == pytest.approx(want)
        return out

    # busy throughout: the stop is ~20 us at 0.03/ns behind, ~0 elsewhere
    out = behind([0], [-1])
    assert out[0] > 0.8 * rate * 20_000 and out[2] > 0.8 * rate * 20_000
    assert out[4] == pytest.approx(rate * 5_000)                 # inside it: all behind
    assert out[3] < 0.1 * rate * 40_000 and out[1] < 0.1 * rate * 39_000
    # idle through the gap (its queue empty): not behind there
    out = behind([0, 60_000], [40_000, -1])
    assert out[0] < 0.1 * rate * 80_000 and out[4] == 0.0
    # many short periods, some starting before t0 or ending after t1
    starts = np.arange(-3_000, 100_000, 7_000)
    behind(starts, starts + 4_000)
    # busy for part of it: behind for that part only
    out = behind([0, 50_000], [45_000, -1])
    assert out[4] == pytest.approx(0.0) and 0.8 * rate * 15_000 < out[0] < 1.2 * rate * 15_000
    with pytest.raises(ValueError):
        _attrib.most_behind(sends, lo, hi + len(sends), t0, t1, rate, np.zeros(1, np.int64),
                            np.full(1, -1, np.int64), np.empty(len(t0)))


def test_taken_times_are_the_rx_of_the_taken_hops_raised_to_the_latest():
    rng = np.random.default_rng(16)
    hop_rx_ns = rng.integers(0, 10_000, 500).astype(np.int64)
    hop_rx_ns[rng.random(500) < 0.2] = -1                      # dropped
    hops = rng.permutation(500)[:300].astype(np.int64)
    ends = np.array([0, 5, 120, 120, 300], np.int64)
    out, n_taken = np.empty(300, np.int64), np.empty(len(ends), np.int64)
    c = _attrib.taken_times(hops, hop_rx_ns, ends, out, n_taken)
    rx = hop_rx_ns[hops]
    want = np.maximum.accumulate(rx[rx >= 0])
    assert c == len(want) and out[:c].tolist() == want.tolist()
    assert n_taken.tolist() == [int((rx[:e] >= 0).sum()) for e in ends]
    with pytest.raises(ValueError):                              # a hop out of range
        _attrib.taken_times(np.array([3, 500], np.int64), hop_rx_ns,
                            np.array([2], np.int64), out, n_taken)
    with pytest.raises(ValueError):                              # ends not ascending
        _attrib.taken_times(hops, hop_rx_ns, np.array([5, 3], np.int64), out, n_taken)


@pytest.mark.parametrize("seed", range(4))
def test_slow_runs_kernel_is_numpys(seed):
    # the runs of slow batches by one pass give what numpy's comparison
    # over the timed batches gives, borderline batches included
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    count = rng.integers(0, 33, n).astype(np.int64)
    rate = float(rng.uniform(0.002, 0.02))
    duration = np.where(rng.random(n) < 0.1, 0, (count / rate * rng.choice(
        [1.0, 1.1, 2.0, 2.5, 4.0], n) + rng.integers(0, 200, n))).astype(np.int64)
    batch_ns = np.cumsum(rng.integers(1, 5000, n)).astype(np.int64)
    timed = np.flatnonzero(duration > 0)
    overhead = float(np.median(duration[timed] - count[timed] / rate)) if len(timed) else 0.0
    at_peak = count[timed] / rate
    # numpy's runs over the timed batches only
    s = (duration[timed] - at_peak - overhead > at_peak).astype(np.int8)
    edge = np.diff(s, prepend=np.int8(0), append=np.int8(0))
    want = np.stack([batch_ns[timed[edge[:-1] == 1]], batch_ns[timed[edge[1:] == -1]]], axis=1)
    k = _attrib.slow_runs(batch_ns, count, duration, rate, overhead, np.empty((0, 2), np.int64))
    got = np.empty((k, 2), np.int64)
    assert _attrib.slow_runs(batch_ns, count, duration, rate, overhead, got) == k
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_fluid_queue_is_lindleys_over_the_whole_grid_in_any_chunks(chunk, monkeypatch):
    # _dropped_even_so's queue, a pass of a million edges at a time, is
    # the running-minimum form over the whole grid at once, and a queue
    # that emptied stays empty until arrivals outrun the server again
    from mscope.analyzer import attribution
    rng = np.random.default_rng(5)
    below = np.cumsum(rng.poisson(3.0, 5_000)).astype(np.int32)
    at = np.sort(rng.integers(0, len(below), 300))
    g = below - 3.1 * np.arange(len(below), dtype=float)
    monkeypatch.setattr(attribution, "_FLUID_CHUNK", chunk)
    got = attribution._fluid_queue_at(below, 3.1, at)
    assert np.allclose(got, (g - np.minimum.accumulate(g))[at])
    assert (got >= 0).all() and got.max() > 0
    # 10 arrivals a step for 5 steps, then none: the queue builds by 7 a
    # step from the first edge (28 at the fifth), drains by 3, and stays
    # empty once drained
    burst = np.cumsum([10] * 5 + [0] * 20).astype(np.int32)
    q = attribution._fluid_queue_at(burst, 3.0, np.array([4, 5, 13, 14, 24]))
    assert np.allclose(q, [28.0, 25.0, 1.0, 0.0, 0.0])
