"""When packets reached an NF's input queue, where nothing recorded them
sent: from the queue's occupancy in the NF's own rx records.

A chain whose traffic source is not recorded (a NIC feeds its first NF,
the common live deployment) starts every packet's path at that NF's rx,
and its wait in the NF's input queue is then unknown: without it a stall
of the first NF would leave no late packet at all.  The rx records say
how many packets each batch took and how many were left in the queue
right after (docs/record-format.md, ``occupancy``); an idle poll says the
queue was empty.  Taken together, at each such record the queue had been
offered every packet taken so far plus those left: the count of arrivals
by that time.  The queue is FIFO, so the packet taken n-th arrived when
that count passed n; between two records the arrivals are spread evenly
over the time between them (a stall of 3 ms with no record in it: its
backlog's packets arrived across the 3 ms).
"""
import numpy as np

from . import _match

__all__ = ["arrivals_from_occupancy", "interpolate"]


def arrivals_from_occupancy(nf, rx):
    """Estimated arrival time at NF `nf`'s queue of its rx entries `rx`
    (indices into ``nf.rx_ns``), as int64 ns; -1 where its records cannot
    tell (no batch of that queue with a known occupancy, and no idle
    poll).

    Per queue (a port of one stream: each lcore polls queues of its own):
    the arrivals counted at each rx batch whose occupancy is known (taken
    so far plus left; the others only bound them by their rx) and at each
    idle poll of that queue (taken so far: where the NF has one queue, or
    the records say which stream and port each poll was of); their
    running maximum, never above the packets the queue's batches took in
    all (an occupancy read from a record is not trusted beyond what could
    follow); the n-th packet taken arrived where that count passed n,
    linearly between the two records around it, and never after its own
    rx.  A batch that left its queue empty, all of whose packets were
    taken since the record before it, took packets that came no earlier
    than as many mean gaps between arrivals before it (where no idle poll
    says when the queue was last empty); after batches that could not
    count the queue (full bursts draining a stall's backlog) it bounds
    nothing.

    Parameters
    ----------
    nf : mscope.analyzer.ingest.NFRecords
        With ``rx_ns``, ``rx_batch``, ``rx_port``, ``batch_ns``,
        ``batch_occupancy``, ``idle_ns``, ``streams`` and ``batch_stream``
        (and ``idle_stream``, ``idle_port`` where several streams).
    rx : ndarray of int
        Rx entries to estimate, each in ``[0, len(nf.rx_ns))``.

    Returns
    -------
    ndarray of int64, one per entry of `rx`
    """
    rx = np.asarray(rx, np.int64)
    out = np.full(len(rx), -1, np.int64)
    streams = getattr(nf, "streams", 1)
    by_stream = getattr(nf, "batch_stream", None)
    if len(rx) == 0 or len(nf.batch_ns) == 0 or (streams > 1 and by_stream is None):
        return out
    # each packet's queue: its port, and its stream where there are several
    port = nf.rx_port if nf.rx_port is not None and len(nf.rx_port) == len(nf.rx_ns) else None
    if port is not None and (len(port) == 0 or port.strides == (0,) or (port == port[0]).all()):
        port = None                                 # one port (a zero-stride view, often)
    queue = None if port is None else np.asarray(port, np.int64)
    if streams > 1:
        lcore = np.asarray(by_stream, np.int64)[nf.rx_batch]
        queue = lcore if queue is None else lcore * (int(queue.max(initial=0)) + 1) + queue
    # (one queue: its key, or None where every record is of it; all its
    # packets, no selection)
    one = queue is None or bool((queue == queue[0]).all())
    queues = [None if queue is None else int(queue[0])] if one else np.unique(queue).tolist()
    idle_q = _idle_queues(nf, streams, port)
    for p in queues:
        mine = None if one else np.flatnonzero(queue == p)
        batch = nf.rx_batch if mine is None else nf.rx_batch[mine]
        count = np.bincount(batch, minlength=len(nf.batch_ns))
        b = np.flatnonzero(count)                              # batches in time order
        count = count[b]
        occ = nf.batch_occupancy[b]
        taken = np.cumsum(count)
        t_all = nf.batch_ns[b]
        # the batches whose occupancy is known (a queue that cannot be
        # counted may still say it is empty, after a short burst)
        known = occ >= 0
        t, occ = t_all[known], occ[known]
        seen = np.maximum.accumulate(np.minimum(taken[known] + occ, taken[-1]))
        ts, ss = [t], [seen]
        # a batch that left its queue empty took what came since the record
        # before, as its packets come: no earlier than that many usual
        # gaps between arrivals (a few packets after an idle millisecond
        # did not wait it out; a stall's backlog leaves the queue full)
        span = int(t_all[-1] - t_all[0])
        if span > 0 and len(t):
            gap = span / taken[-1]
            before = np.r_[0, seen[:-1]]
            at = t - (seen - before) * gap
            last = np.r_[np.iinfo(np.int64).min, t[:-1]]
            # (no batch of unknown occupancy in between: a drain's full
            # bursts before it say the queue was not empty meanwhile)
            own = (taken[known] - np.r_[0, taken[known][:-1]]) == count[known]
            cut = (occ == 0) & (at > last) & own
            ts.append(np.rint(at[cut]).astype(np.int64))
            ss.append(before[cut])
        if idle_q is None:                  # the NF's one queue
            idle = nf.idle_ns
        elif idle_q is _NOT_SAID:
            idle = None
        else:
            idle = nf.idle_ns[idle_q == p]
        if idle is not None and len(idle):
            # an idle poll of this queue: empty, everything offered taken
            idle = np.asarray(idle, np.int64)
            ts.append(idle)
            ss.append(np.r_[0, taken][np.searchsorted(t_all, idle, "right")])
        if sum(map(len, ts)) == 0:
            continue                                           # the queue could not tell
        # everything taken had come by the last batch (its count is known
        # where its occupancy is not)
        ts.append(t_all[-1:])
        ss.append(taken[-1:])
        t, seen = np.concatenate(ts), np.concatenate(ss)
        o = np.argsort(t, kind="stable")
        t, seen = t[o], np.maximum.accumulate(seen[o])
        # which of `rx` are this queue's, and each one's place in its order
        if one:
            sel, n = slice(None), rx
        else:
            place = np.full(len(nf.rx_ns), -1, np.int64)
            place[mine] = np.arange(len(mine))
            n = place[rx]
            sel = np.flatnonzero(n >= 0)
            n = n[sel]
        # no later than its rx; times are >= 0 (-1 is "unknown")
        got = np.empty(len(n), np.int64)
        _match.interpolate_arrivals(t, seen, np.ascontiguousarray(n, np.int64),
                                    np.ascontiguousarray(nf.rx_ns[rx[sel]], np.int64), got)
        out[sel] = got
    return out


def _idle_queues(nf, streams, port):
    """The queue of each idle poll of `nf`, keyed as arrivals_from_occupancy
    keys its packets' (`port`: per packet, None for one port), or None:
    every poll is of the NF's one queue (one stream, one port), or the
    records do not say whose (one stream, several ports: not used)."""
    if streams == 1:
        return None if port is None else _NOT_SAID
    by_stream = getattr(nf, "idle_stream", None)
    if by_stream is None or len(by_stream) != len(nf.idle_ns):
        return _NOT_SAID
    lcore = np.asarray(by_stream, np.int64)
    if port is None:
        return lcore
    idle_port = getattr(nf, "idle_port", None)
    if idle_port is None or len(idle_port) != len(nf.idle_ns):
        return _NOT_SAID
    return lcore * (int(np.max(port, initial=0)) + 1) + np.asarray(idle_port, np.int64)


#: No idle poll is known to be of any queue (never equal to a queue key).
_NOT_SAID = np.int64(-1)


def interpolate(t, seen, n, rx_ns):
    """numpy's version of ``_match.interpolate_arrivals`` (the reference
    its test holds it to): packet n arrived where `seen` (counted at `t`)
    passed n, linearly between the records around it."""
    i = np.searchsorted(seen, n + 1, "left")                # first record that counted it
    at = t[np.minimum(i, len(t) - 1)].astype(np.float64)
    mid = i > 0
    a0, a1 = seen[i[mid] - 1], seen[i[mid]]
    t0, t1 = t[i[mid] - 1], t[i[mid]]
    at[mid] = t0 + (n[mid] + 1 - a0) / (a1 - a0) * (t1 - t0)
    return np.clip(np.rint(at).astype(np.int64), 0, rx_ns)
