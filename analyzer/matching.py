"""Id matching shared by topology and trajectories: each occurrence of a
packet id on one side (a tx) to the nearest later occurrence of the same id
on the other side (an rx), one to one, within a time window.

A hash join in Cython (``_match.pyx``): one table of the a side's ids,
probed with the b side.  It replaced a lexsort of both sides' 64-bit ids
that took 1.4 s of the 2.8 s of stages 2-3 on a 2.38 M-hop capture
(bench/analyze.py); ids seen more than once on a side -- none in any
bench/scenarios run, whose ids are 64-bit hashes, but one per NF in
topology's global match -- are solved per id, in time order.  Trajectories, whose sides are in FIFO
order and whose ids it tracks from side to side, call the cursor variant
(``_match.match_known_into``, same result) directly.
"""
import numpy as np

try:
    from . import _match
except ImportError as exc:          # pragma: no cover - a build problem
    raise ImportError(
        "mscope.analyzer._match (analyzer/_match.pyx) is not built: reinstall mscope "
        "with `pip install -e .` (needs Cython and a C compiler), or build it in place "
        "with `cythonize -i -3 analyzer/_match.pyx`") from exc

__all__ = ["match_next", "match_next_int32", "DEFAULT_WINDOW_NS"]

#: Longest tx -> rx gap for an id sent more than once (seen on several
#: a): it keeps recycled ids apart.  An id sent once has no window (a
#: queue holds a packet for as long as its NF stops: a 100 ms stop's
#: packets waited longer than this).  The worst queueing delay in
#: the bench suite is a few ms (a 1024-packet queue behind a 30x bug).
DEFAULT_WINDOW_NS = 100_000_000


def match_next_int32(a_ids, a_ns, b_ids, b_ns, window_ns=DEFAULT_WINDOW_NS):
    """:func:`match_next` with an int32 `match` (half the memory).

    Raises
    ------
    ValueError
        A side has 2**31 entries or more.
    """
    a_ids = np.ascontiguousarray(a_ids, np.uint64)
    b_ids = np.ascontiguousarray(b_ids, np.uint64)
    a_ns = np.ascontiguousarray(a_ns, np.int64)
    b_ns = np.ascontiguousarray(b_ns, np.int64)
    if len(a_ns) != len(a_ids) or len(b_ns) != len(b_ids):
        raise ValueError("match_next: ids and times of a side must have one length")
    match = np.empty(len(a_ids), np.int32)
    ambiguous = _match.match_into(a_ids, a_ns, b_ids, b_ns, int(window_ns), match)
    return match, int(ambiguous)


def match_next(a_ids, a_ns, b_ids, b_ns, window_ns=DEFAULT_WINDOW_NS):
    """Match each a to the nearest b with the same id and b_ns >= a_ns.

    Parameters
    ----------
    a_ids, a_ns : ndarray of uint64, int64
        Earlier occurrences (e.g. tx at the upstream NF).
    b_ids, b_ns : ndarray of uint64, int64
        Later occurrences (e.g. rx at the downstream NF).
    window_ns : int
        Largest accepted ``b_ns - a_ns`` for an id seen on several a.
        An id seen on one a matches its first b at or after it at any
        gap: there is no other a to tell it apart from.

    Returns
    -------
    match : ndarray of int64
        Index into b of each a's match, -1 where none.  One to one: when
        several a claim one b, the latest a (nearest in time; at equal
        times the later index) keeps it and the others try the next free b
        of their id (at equal times, the lower index first); then the
        matched a and b of each colliding id are paired in time order
        (FIFO).
    ambiguous : int
        Number of a whose id occurs on another a within `window_ns` (the
        id collisions that matching had to resolve by time).

    Raises
    ------
    ValueError
        A side has 2**31 entries or more, or its ids and times differ in
        length.

    Examples
    --------
    >>> m, amb = match_next(np.array([5, 5], np.uint64), np.array([0, 10]),
    ...                     np.array([5], np.uint64), np.array([12]))
    >>> m.tolist(), amb
    ([-1, 0], 2)
    """
    match, ambiguous = match_next_int32(a_ids, a_ns, b_ids, b_ns, window_ns)
    return match.astype(np.int64), ambiguous
