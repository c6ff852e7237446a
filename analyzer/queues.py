"""Stage 4 of the analyzer: per-NF queue timelines.

For each NF: the queuing delay of every packet it received (rx - arrival),
its queue length over time (accepted arrivals minus departures, a step
series), its queuing periods (maximal intervals with a non-empty queue) and
its peak service rate.  Drops never enter the queue, so they count in
neither arrivals nor departures.  A packet whose arrival was not recorded
(no source records) is counted as arriving at its rx: no wait.
"""
from dataclasses import dataclass

import numpy as np

__all__ = ["QueueTimeline", "queue_timelines", "peak_rate", "PEAK_PERCENTILE"]

#: Percentile of busy-batch departure rates taken as the NF's peak rate: a
#: high percentile rather than the max, so one batch of cheap packets (the
#: simulator's service factors go down to 0.9) does not set it.
PEAK_PERCENTILE = 90.0


@dataclass
class QueueTimeline:
    """One NF's queue.

    Attributes
    ----------
    name : str
    hops : ndarray of int64
        Indices (into the Trajectories hop arrays) of the packets this NF
        received, in rx order.
    arrival_ns, rx_ns : ndarray of int64
        Of those packets.
    delay_ns : ndarray of int64
        Queuing delay, ``rx_ns - arrival_ns``.
    step_ns, step_len : ndarray of int64
        The queue length is ``step_len[i]`` from ``step_ns[i]`` until
        ``step_ns[i + 1]`` (0 before the first step).
    period_start_ns, period_end_ns : ndarray of int64
        Queuing periods ``[start, end)``: from the arrival into an empty
        queue to the rx that empties it (end -1: still busy at capture end).
    hop_period : ndarray of int64
        Queuing period each received packet waited in, -1 if it did not wait.
    peak_rate : float
        Packets per ns the NF serves at its fastest (see :func:`peak_rate`).
    """
    name: str
    hops: np.ndarray
    arrival_ns: np.ndarray
    rx_ns: np.ndarray
    delay_ns: np.ndarray
    step_ns: np.ndarray
    step_len: np.ndarray
    period_start_ns: np.ndarray
    period_end_ns: np.ndarray
    hop_period: np.ndarray
    peak_rate: float

    def length_at(self, t_ns):
        """Queue length at times `t_ns` (after every event at that ns)."""
        i = np.searchsorted(self.step_ns, np.asarray(t_ns, np.int64), side="right") - 1
        return np.where(i >= 0, self.step_len[np.maximum(i, 0)], 0)


def peak_rate(batch_ns, batch_count, busy_after, percentile=PEAK_PERCENTILE):
    """Peak service rate from the batches taken while the queue stayed busy.

    A batch after which the queue is still non-empty is followed at once
    by the next, so ``count / (next batch time - this batch time)`` is the
    rate the NF served that batch at.

    Parameters
    ----------
    batch_ns : ndarray of int64
        rx batch times, ascending.
    batch_count : ndarray of int64
        Packets per batch.
    busy_after : ndarray of bool
        Queue non-empty right after the batch.
    percentile : float

    Returns
    -------
    float
        Packets per ns; nan when the NF never had a backlog.
    """
    if len(batch_ns) < 2:
        return float("nan")
    gap = np.diff(batch_ns)
    sel = busy_after[:-1] & (gap > 0)
    if not sel.any():
        return float("nan")
    return float(np.percentile(batch_count[:-1][sel] / gap[sel], percentile))


def _timeline(name, k, traj, view_nf, rate_override):
    hops = np.flatnonzero((traj.hop_nf == k) & (traj.hop_rx >= 0))
    hops = hops[np.argsort(traj.hop_rx[hops], kind="stable")]
    rx = traj.hop_rx_ns[hops]
    arr = traj.hop_arrival_ns[hops]
    arr = np.where(arr >= 0, arr, rx)
    delay = rx - arr
    # events: +1 at arrival, -1 at rx; the length after all events of a ns
    t = np.concatenate([arr, rx])
    d = np.concatenate([np.ones(len(arr), np.int64), -np.ones(len(rx), np.int64)])
    o = np.argsort(t, kind="stable")
    t, d = t[o], d[o]
    last = np.ones(len(t), bool)
    last[:-1] = t[1:] != t[:-1]
    step_ns = t[last]
    step_len = np.cumsum(d)[last]
    busy = step_len > 0
    before = np.concatenate([[False], busy[:-1]])
    starts = step_ns[busy & ~before]
    ends_i = np.flatnonzero(~busy & before)
    ends = step_ns[ends_i]
    if len(ends) < len(starts):
        ends = np.concatenate([ends, [-1]])
    # the period each packet waited in: the last start at or before its
    # arrival, if the packet actually waited
    p = np.searchsorted(starts, arr, side="right") - 1
    hop_period = np.where((delay > 0) & (p >= 0), p, -1)
    if rate_override is not None:
        rate = float(rate_override)
    else:
        nb = len(view_nf.batch_ns)
        cnt = np.bincount(view_nf.rx_batch, minlength=nb)
        after = np.searchsorted(step_ns, view_nf.batch_ns, side="right") - 1
        busy_after = (after >= 0) & (step_len[np.maximum(after, 0)] > 0)
        rate = peak_rate(view_nf.batch_ns, cnt, busy_after)
    return QueueTimeline(name, hops, arr, rx, delay, step_ns, step_len,
                         starts, ends, hop_period, rate)


def queue_timelines(view, traj, peak_rates=None) -> dict:
    """Queue timeline of every NF that receives packets.

    Parameters
    ----------
    view : mscope.analyzer.ingest.CaptureView
    traj : mscope.analyzer.trajectories.Trajectories
    peak_rates : dict name -> float, optional
        Packets per ns, overriding the estimate for those NFs.

    Returns
    -------
    dict name -> QueueTimeline
    """
    peak_rates = peak_rates or {}
    out = {}
    for k, n in enumerate(view.nfs):
        if len(n.rx_ids):
            out[n.name] = _timeline(n.name, k, traj, n, peak_rates.get(n.name))
    return out
