"""Packets whose fate the records cannot tell: not drops.

A packet sent towards an NF that never took it was dropped at the NF's
queue, and one an NF took and never sent on was lost inside it -- where
the NF's records were being written all along.  At the edges of what they
cover they cannot say:

- **before they begin**: the NF may have taken the packet before its
  recorder (or the collector) started;
- **after they end**: the packet may still have been queued, or in the
  NF, when the collector stopped (a live chain is not drained first, and
  its rings are drained one after the other);
- **in lost records** (a full ring, a gap in the capture): the NF may
  have taken or sent it in the records that are missing.

Each NF's queue is first in, first out, so its own records bound these
windows by what they do show.  A packet sent at ``a`` and never taken is
a drop where the NF took, from the same link, a packet sent after ``a``
(it would have been taken first), or where the queue was seen empty
after ``a`` (an idle poll, an rx record with occupancy 0), or where it
came while the records ran and found the queue full (a model of the
queue, trusted where it agrees with what the records show:
:func:`_full_at`); a packet taken and never sent is lost inside where
the NF sent a packet it took later, or polled again (its poll loop runs
to completion).  Otherwise its fate is unknown: it is no victim, and the diagnosis counts
it (``Trajectories.fate_unknown``).  Only the edges are in doubt: a
capture drained to its end (``mscope simulate``, the testbed) shows the
queue empty after its last drop.

Matches marked :data:`UNKNOWN` end the packet's path with no hop and no
drop (``_match.walk_paths``).
"""
import numpy as np

from . import _match

__all__ = ["UNKNOWN", "REASONS", "unknown_inputs", "unknown_inside"]

#: A tx2rx / rx2tx entry whose match the records cannot tell (-1: none),
#: as the walk over the matches reads it.
UNKNOWN = _match.MATCH_UNKNOWN
#: The windows, in the order of the counts both functions return.
REASONS = ("before_records", "after_records", "in_lost_records")
#: An empty queue at ``e`` says nothing of a packet sent after ``e -
#: SLACK_NS``: the sender stamps its tx around the burst that enqueues it.
SLACK_NS = 10_000
#: Entries looked at per step when seeking a link's first or last match.
_STEP = 4096
_LO, _HI = np.iinfo(np.int64).min, np.iinfo(np.int64).max


def _edge(arr, lo, hi, last, test=lambda c: c >= 0):
    """Index of the first (last: the last) entry of ``arr[lo:hi]`` that
    passes `test` (default: a match, >= 0), -1 for none; a few entries are
    read where one near the edge passes."""
    step = _STEP
    while lo < hi:
        a, b = (max(lo, hi - step), hi) if last else (lo, min(hi, lo + step))
        got = np.flatnonzero(test(arr[a:b]))
        if len(got):
            return a + int(got[-1] if last else got[0])
        hi, lo = (a, lo) if last else (hi, b)
        step *= 2
    return -1


def _one_queue(nf):
    """Whether the NF has one queue (one stream, one rx port), so that an
    idle poll or an rx record's occupancy speaks for every packet sent to
    it."""
    return (nf.streams == 1 and nf.rx_port is not None and nf.rx_port.strides == (0,)
            and nf.idle_stream is None)


def _emptied(nf, before=_HI):
    """The last time before `before` the NF's one queue was seen empty
    (an idle poll; an rx record leaving it 0), ``_LO`` for none."""
    e = _LO
    i = int(np.searchsorted(nf.idle_ns, before)) - 1
    if i >= 0:
        e = int(nf.idle_ns[i])
    b = _edge(nf.batch_occupancy, 0, int(np.searchsorted(nf.batch_ns, before)), True,
              lambda c: c == 0)
    if b >= 0:
        e = max(e, int(nf.batch_ns[b]))
    return e


def unknown_inputs(nf, a_ns, m, segments):
    """Mark the packets sent to `nf` whose fate its records cannot tell.

    Parameters
    ----------
    nf : NFRecords
        The receiving NF (``spans``, ``lost``, its batches and idle polls).
    a_ns : int64 array
        When each packet was sent to it: the tx of its upstream links,
        pooled link by link, each link's in time order.
    m : int32 array
        Each packet's rx entry at `nf`, -1 for none; entries whose fate is
        unknown are set to :data:`UNKNOWN` here.
    segments : int64 array
        Where each link's packets start in the pool, and the pool's end.

    Returns
    -------
    tuple of int
        How many were marked, per :data:`REASONS`.
    """
    unm = np.flatnonzero(m == -1)
    if not len(unm):
        return (0, 0, 0)
    if not len(nf.spans):                   # no record of the NF at all
        m[unm] = UNKNOWN
        return (0, 0, len(unm))
    au = a_ns[unm]
    seg = np.searchsorted(segments, unm, "right") - 1
    nseg = len(segments) - 1
    first = [_edge(m, int(segments[s]), int(segments[s + 1]), False)
             for s in range(nseg)]
    last = [_edge(m, int(segments[s]), int(segments[s + 1]), True)
            for s in range(nseg)]
    one = _one_queue(nf)
    first, last = np.array(first), np.array(last)
    # before: taken before its records began, or dropped -- if it came in
    # before the first packet of its link the NF took (a link's packets
    # are in the order they were queued: a batch's share its time)
    before = au < int(nf.spans[:, 1].max())
    if nf.streams == 1:
        before &= unm < np.where(first >= 0, first, len(m))[seg]
        if one and (first >= 0).any():
            before &= au <= a_ns[first[first >= 0]].min()
    # after: still queued when they ended, unless the NF took a packet
    # queued after it, or saw its queue empty after it came in
    if nf.streams == 1:
        after = unm > last[seg]
        if one:
            taken = a_ns[last[last >= 0]].max() if (last >= 0).any() else _LO
            after &= (au >= taken) & (au > _emptied(nf) - SLACK_NS)
    else:
        after = au >= _last_by_stream(nf, a_ns, m, segments)[seg]
    after &= ~before
    # of those, the ones that came while its records still ran and found
    # its queue full were dropped all the same
    while_on = after & (au <= int(nf.spans[:, 2].min()))
    if one and while_on.any():
        after[while_on] = ~_full_at(nf, a_ns, m, au[while_on])
    lost = np.zeros(len(unm), bool)
    if len(nf.lost):
        lost = _in_lost_inputs(nf, a_ns, m, segments, unm, au, seg, one) & ~before & ~after
    m[unm[before | after | lost]] = UNKNOWN
    return (int(before.sum()), int(after.sum()), int(lost.sum()))


#: The queue model is trusted past the last take only where the drops the
#: records show before it (at least so many) came at the level it calls
#: full, this share of them, and no packet taken did.
_MODEL_MIN_DROPS = 20
_MODEL_DROPS_AT = 0.8


def _full_at(nf, a_ns, m, late):
    """Which of the packets sent at `late` (after the last packet the NF
    of one queue took, while its records ran) found its queue full:
    dropped, though the NF never took a packet after them.

    The queue when a packet came is what the rx record before it says it
    left (the occupancy, which counts every packet queued, taken later or
    never) plus the packets it accepted since.  The model is trusted where
    it tells the drops the records show (sent while they ran, before the
    last take) from the packets taken: most of the drops came at one
    level, 80% at it or above, and no packet taken did; otherwise none is
    called dropped.  On a live chain that level is below the queue's size:
    a sender stamps a burst before it enqueues it, so a burst under way as
    an rx record is written is in neither (the testbed's 1,024-packet ring
    dropped at a reckoned 1,015, by an offset that differs from stop to
    stop).  So a late packet is called dropped only at the most the queue
    was seen to hold (the occupancy an rx left plus its batch): a few
    drops are missed, none made up."""
    occ, t_b = nf.batch_occupancy, nf.batch_ns
    if not len(occ) or (occ < 0).all():
        return np.zeros(len(late), bool)
    came = np.sort(a_ns[m >= 0])

    def queued(t):
        """The queue as packets came at `t` (sorted), before any of them:
        the occupancy of the rx before each (-1: none, or unknown) plus
        the packets taken later that came since."""
        b = np.searchsorted(t_b, t, "left") - 1
        since = np.where(b >= 0, t_b[np.maximum(b, 0)], _LO)
        q = occ[np.maximum(b, 0)] + (np.searchsorted(came, t, "left")
                                     - np.searchsorted(came, since, "right"))
        return np.where((b >= 0) & (occ[np.maximum(b, 0)] >= 0), q, -1), b
    # the drops the records show: sent while they ran, before the last take
    dropped = a_ns[m == -1]
    dropped = np.sort(dropped[(dropped >= int(nf.spans[:, 1].max()))
                              & (dropped <= (came[-1] if len(came) else _LO))])
    qd = queued(dropped)[0]
    qd = qd[qd >= 0]
    if len(qd) < _MODEL_MIN_DROPS:
        return np.zeros(len(late), bool)        # too few drops to read the level by
    levels, counts = np.unique(qd, return_counts=True)
    level = int(levels[np.argmax(counts)])      # where the drops came, most of them
    qk = queued(came)[0]
    if (np.count_nonzero(qd >= level) < _MODEL_DROPS_AT * len(qd)
            or np.count_nonzero(qk >= level)):
        return np.zeros(len(late), bool)        # it does not tell them apart
    # The reckoning can only fall short of the queue (a packet stamped
    # before an rx record and queued after it is counted in neither), so
    # a late packet is called dropped only where it reaches the most the
    # queue was ever seen to hold: then the queue was full for sure
    n = np.bincount(nf.rx_batch, minlength=len(occ))
    full_at = max(level, int(np.max(np.where(occ >= 0, occ + n, 0))))
    order = np.argsort(late, kind="stable")     # several links: by when they came
    q, b = queued(late[order])
    full = np.zeros(len(late), bool)
    kept_late, at = 0, None
    for i, qi, bi in zip(order.tolist(), q.tolist(), b.tolist()):
        if bi != at:                            # the rx before counted those before it
            kept_late, at = 0, bi
        if qi < 0:
            continue                            # no occupancy to tell by
        if qi + kept_late >= full_at:
            full[i] = True
        else:
            kept_late += 1
    return full


def _last_by_stream(nf, a_ns, m, segments):
    """Per link, the earliest over the NF's streams of the last packet
    each took from it (an NF of several lcores: each its own queue; which
    one an untaken packet was steered to is unknown)."""
    out = np.full(len(segments) - 1, _LO, np.int64)
    streams = nf.spans[:, 0]
    for s in range(len(segments) - 1):
        lo, hi = int(segments[s]), int(segments[s + 1])
        mm = m[lo:hi]
        took = np.flatnonzero(mm >= 0)
        if not len(took):
            continue
        st = nf.batch_stream[nf.rx_batch[mm[took]]] if nf.batch_stream is not None \
            else np.full(len(took), streams[0])
        last = [a_ns[lo + took[st == x]].max() if (st == x).any() else _LO
                for x in streams.tolist()]
        out[s] = min(last)
    return out


def _in_lost_inputs(nf, a_ns, m, segments, unm, au, seg, one):
    """Which untaken packets (`unm`, sent at `au`, on link `seg`) the NF
    may have taken in one of its windows of lost records ``[f, t]``: those
    sent after the last packet of their link it took by ``f`` (and after
    its queue was last seen empty by then), and before ``t`` and the first
    it took from ``t`` on."""
    took = np.flatnonzero(m >= 0)
    t_rx = nf.rx_ns[m[took]]
    t_seg = np.searchsorted(segments, took, "right") - 1
    t_a = a_ns[took]
    out = np.zeros(len(unm), bool)
    for f, t in nf.lost.tolist():
        lo = np.full(len(segments) - 1, _LO, np.int64)
        hi = np.full(len(segments) - 1, _HI, np.int64)
        for s in range(len(segments) - 1):
            mine = t_seg == s
            a_before = t_a[mine & (t_rx <= f)]
            a_after = t_a[mine & (t_rx >= t)]
            lo[s] = a_before.max() if len(a_before) else _LO
            hi[s] = a_after.min() if len(a_after) else _HI
        if one:
            lo[:] = max(int(lo.max()), _emptied(nf, f + 1) - SLACK_NS)
        out |= (au >= lo[seg]) & (au <= np.minimum(hi[seg], t))
    return out


def _last_poll(nf, stream=None):
    """When the NF (its lcore `stream`) last polled in its records: its
    last rx batch or idle poll.  A poll loop runs to completion, so a
    batch taken before it was done with: sent, or lost inside."""
    b, i = nf.batch_ns, nf.idle_ns
    if stream is not None:
        b = b[nf.batch_stream == stream]
        i = i[nf.idle_stream == stream] if nf.idle_stream is not None else i[:0]
    return max(int(b[-1]) if len(b) else _LO, int(i[-1]) if len(i) else _LO)


def unknown_inside(nf, rx_ns, r2t, tx_ns):
    """Mark the packets `nf` took and never sent whose fate its records
    cannot tell: taken after the last one it sent (of its lcore) in its
    last poll, or before a window of lost records that may hold their tx.

    `rx_ns`, `tx_ns`: the NF's rx and tx times; `r2t`: each rx entry's tx
    entry, -1 for none, set to :data:`UNKNOWN` here.  Returns the counts
    per :data:`REASONS` (none before the records: a recorded rx was
    recorded)."""
    unsent = np.flatnonzero(r2t == -1)
    if not len(unsent) or not len(tx_ns):
        return (0, 0, 0)
    tu = rx_ns[unsent]
    if nf.streams == 1 or nf.batch_stream is None:
        after = (unsent > _edge(r2t, 0, len(r2t), True)) & (tu >= _last_poll(nf))
    else:
        st = nf.batch_stream[nf.rx_batch]
        after = np.zeros(len(unsent), bool)
        su = st[unsent]
        for x in np.unique(su).tolist():
            sent = np.flatnonzero((st == x) & (r2t >= 0))
            after |= ((su == x) & (unsent > (sent[-1] if len(sent) else -1))
                      & (tu >= _last_poll(nf, x)))
    lost = np.zeros(len(unsent), bool)
    if len(nf.lost):
        sent = np.flatnonzero(r2t >= 0)
        s_rx, s_tx = rx_ns[sent], tx_ns[r2t[sent]]
        for f, t in nf.lost.tolist():
            by_f = s_rx[s_tx <= f]
            lost |= (tu >= (by_f.max() if len(by_f) else _LO)) & (tu <= t)
        lost &= ~after
    r2t[unsent[after | lost]] = UNKNOWN
    return (0, int(after.sum()), int(lost.sum()))
