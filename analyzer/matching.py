"""Id matching shared by topology and trajectories: each occurrence of a
packet id on one side (a tx) to the nearest later occurrence of the same id
on the other side (an rx), one to one, within a time window.

Vectorised: one lexsort of both sides by (id, time, side), a reversed
running minimum for "next rx at or after here", then a few passes over the
colliding ids only.  Collisions (two packets with one id inside the window)
are rare -- none in any bench/scenarios run, whose ids are 64-bit -- so the
extra passes touch a handful of entries.
"""
import numpy as np

__all__ = ["match_next", "DEFAULT_WINDOW_NS"]

#: Longest tx -> rx gap accepted as one packet.  The worst queueing delay in
#: the bench suite is a few ms (a 1024-packet queue behind a 30x bug); 100 ms
#: leaves room while keeping recycled ids far apart.
DEFAULT_WINDOW_NS = 100_000_000

_NONE = np.iinfo(np.int64).max


def _next_b(ids, ns, is_b):
    """For each event, position of the next b event at or after it (or _NONE)."""
    pos = np.where(is_b, np.arange(len(ids), dtype=np.int64), _NONE)
    return np.minimum.accumulate(pos[::-1])[::-1]


def match_next(a_ids, a_ns, b_ids, b_ns, window_ns=DEFAULT_WINDOW_NS):
    """Match each a to the nearest b with the same id and b_ns >= a_ns.

    Parameters
    ----------
    a_ids, a_ns : ndarray of uint64, int64
        Earlier occurrences (e.g. tx at the upstream NF).
    b_ids, b_ns : ndarray of uint64, int64
        Later occurrences (e.g. rx at the downstream NF).
    window_ns : int
        Largest accepted ``b_ns - a_ns``.

    Returns
    -------
    match : ndarray of int64
        Index into b of each a's match, -1 where none.  One to one: when
        several a claim one b, the latest a (nearest in time) keeps it and
        the others try the next free b of their id; then the matched a and
        b of each colliding id are paired in time order (FIFO).
    ambiguous : int
        Number of a whose id occurs on another a within `window_ns` (the
        id collisions that matching had to resolve by time).

    Examples
    --------
    >>> m, amb = match_next(np.array([5, 5], np.uint64), np.array([0, 10]),
    ...                     np.array([5], np.uint64), np.array([12]))
    >>> m.tolist(), amb
    ([-1, 0], 2)
    """
    a_ids = np.asarray(a_ids, np.uint64)
    b_ids = np.asarray(b_ids, np.uint64)
    a_ns = np.asarray(a_ns, np.int64)
    b_ns = np.asarray(b_ns, np.int64)
    na, nb = len(a_ids), len(b_ids)
    match = np.full(na, -1, np.int64)
    if na == 0:
        return match, 0
    ids = np.concatenate([a_ids, b_ids])
    ns = np.concatenate([a_ns, b_ns])
    is_b = np.concatenate([np.zeros(na, bool), np.ones(nb, bool)])
    # a before b at equal times: a packet may be received the ns it was sent
    order = np.lexsort((is_b, ns, ids))
    ids, ns, is_b = ids[order], ns[order], is_b[order]
    orig = order - np.where(is_b, na, 0)           # index within its side

    # ambiguity: another a of the same id within the window
    a_pos = np.flatnonzero(~is_b)
    ai, at = ids[a_pos], ns[a_pos]
    close = (ai[1:] == ai[:-1]) & (at[1:] - at[:-1] <= window_ns)
    amb = np.zeros(len(a_pos), bool)
    amb[1:] |= close
    amb[:-1] |= close
    ambiguous = int(amb.sum())

    free_b = is_b.copy()
    todo = a_pos
    while len(todo):
        nxt = _next_b(ids, ns, free_b)[todo]
        ok = nxt != _NONE
        q = np.where(ok, nxt, 0)
        ok &= (ids[q] == ids[todo]) & (ns[q] - ns[todo] <= window_ns)
        todo, q = todo[ok], q[ok]
        if not len(todo):
            break
        # claimants of one b: todo is in time order, so the last one wins
        last = np.ones(len(q), bool)
        o = np.argsort(q, kind="stable")
        qs = q[o]
        last[o[:-1]] = qs[1:] != qs[:-1]
        win = todo[last]
        match[orig[win]] = orig[q[last]]
        free_b[q[last]] = False
        todo = todo[~last]                         # losers try the next free b
    # Untangle crossings among colliding ids: a queue serves in order, so
    # the k-th matched a of an id takes the k-th matched b of that id (the
    # same set of pairs' ends, always feasible when some pairing is).
    amb_a = np.zeros(na, bool)
    amb_a[orig[a_pos[amb]]] = True
    sel = np.flatnonzero(amb_a & (match >= 0))
    if len(sel):
        bs = match[sel]
        match[sel[np.lexsort((a_ns[sel], a_ids[sel]))]] = bs[np.lexsort((b_ns[bs], b_ids[bs]))]
    return match, ambiguous
