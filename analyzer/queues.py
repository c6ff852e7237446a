"""Stage 4 of the analyzer: per-NF queue timelines.

For each NF: the queuing delay of every packet it received (rx - arrival),
its queue length over time (accepted arrivals minus departures, a step
series), its queuing periods (maximal intervals with a non-empty queue) and
its peak service rate.  Drops never enter the queue, so they count in
neither arrivals nor departures.  A packet whose arrival was not recorded
(no source records) is counted as arriving at its rx: no wait.

One pass over the hops sorts every NF's received packets into rx order
(each rx entry is one hop's); a FIFO queue's arrivals are then sorted too,
so the step series is a merge (``_attrib.pyx``), not a sort.
"""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from mscope import workers

from .ingest import SILENCE_NS, silence_ns_of

try:
    from . import _attrib
except ImportError as e:                    # pragma: no cover
    raise ImportError("mscope.analyzer._attrib is not built: pip install -e . "
                      "(or cd analyzer && cythonize -i -3 _attrib.pyx)") from e

__all__ = ["QueueTimeline", "queue_timelines", "peak_rate", "quiet_since",
           "PEAK_PERCENTILE", "batch_durations"]

#: Percentile of busy-batch departure rates taken as the NF's peak rate: a
#: high percentile rather than the max, so one batch of cheap packets (the
#: simulator's service factors go down to 0.9) does not set it.
PEAK_PERCENTILE = 90.0
#: Batches with a tx that service_rate needs before it gives a rate.
MIN_TIMED_BATCHES = 10
#: service_rate takes a batch size's rate where at least this share of
#: the timed batches (and MIN_TIMED_BATCHES) had that size.
SIZE_SHARE = 0.01
#: The busy batches' rate is an NF's peak unless its batches' own times
#: (service_rate) say it serves more than this many times faster: then a
#: fault that lasted most of its busy time made its backlogs (a 35 ms
#: contention at 2% of a core, at an NF otherwise 2% loaded: busy rate 47x
#: below; its victims went to the source), not its load.  Elsewhere the
#: two agree within 0.95-1.0, and 1.96 where a bug slowed half the
#: traffic 4x throughout a burst (bench/scenarios' burst-during-bug).
TIMED_OVER_BUSY = 3.0
#: A batch is "held" (QueueTimeline.held) where its rx to last tx took this
#: many times the NF's median batch, and HELD_MIN_NS or more: a stall in
#: the middle of a batch (an interrupt while serving it), which writes no
#: silence -- the NF was in service all along, as far as records tell.
HELD_FACTOR = 10.0
HELD_MIN_NS = 2 * SILENCE_NS


@dataclass
class QueueTimeline:
    """One NF's queue.

    Attributes
    ----------
    name : str
    hops : ndarray of int32 (int64 beyond 2**31 hops)
        Indices (into the Trajectories hop arrays) of the packets this NF
        received, in rx order.
    arrival_ns, rx_ns : ndarray of int64 (properties)
        Of those packets (the arrival is the rx where not recorded):
        gathered from `hop_arrival_ns` and `hop_rx_ns` on each access
        rather than kept, 16 bytes per hop that the trajectories hold
        already (144 MiB on bench/analyze.py's 9.5 M-hop capture).
    delay_ns : ndarray of int64 (property)
        Queuing delay, ``rx_ns - arrival_ns``: worked out on each access
        rather than kept (8 bytes per hop).
    step_ns, step_len : ndarray of int64, int32
        The queue length is ``step_len[i]`` from ``step_ns[i]`` until
        ``step_ns[i + 1]`` (0 before the first step).
    period_start_ns, period_end_ns : ndarray of int64
        Queuing periods ``[start, end)``: from the arrival into an empty
        queue to the rx that empties it (end -1: still busy at capture end).
    hop_period : ndarray of int32 (property)
        Queuing period each received packet waited in, -1 if it did not
        wait: worked out on each access (a search of ``period_start_ns``)
        rather than kept (4 bytes per hop); no stage of ``mscope diagnose``
        reads it.
    peak_rate : float
        Packets per ns the NF serves at its fastest (see :func:`peak_rate`).
    hop_arrival_ns, hop_rx_ns : ndarray of int64
        The Trajectories arrays of the same names (shared, not copies).
    rx_batch : ndarray of int
        The batch of each of the NF's rx records (the capture view's,
        shared): hop h was received in batch ``rx_batch[hop_rx[h]]``.
    batch_count : ndarray of uint16 (int32 where a batch held 65536 or more)
        Packets received in each batch.
    period_quiet : ndarray of int64, shape (k, 2)
        ``[period, t]``: the queuing periods that began while the NF was
        silent, and where it went silent (:func:`quiet_since`): it was
        free (its last record a tx or an idle poll, not a batch in
        service) and wrote nothing for longer than SILENCE_NS, so it had
        stopped polling (an interrupt, a stall that began while its queue
        was empty) by ``t``, the time it was last heard of plus
        SILENCE_NS.  Few rows (none for an NF whose recorder declares no
        idle-poll records and wrote none: its silence cannot be told from
        idleness); one int64 per period would be 24 MiB on
        bench/analyze.py's capture.
    held : ndarray of int64, shape (k, 2)
        ``[rx, last tx]`` of the batches that took HELD_FACTOR times the
        NF's median batch (``usual_batch_ns``) and HELD_MIN_NS or more.
        For the summary.
    usual_batch_ns : float
        The NF's median rx-to-last-tx time of a batch (nan: none timed).
    usual_overhead_ns : float
        The NF's median time over a batch beyond its packets at
        ``peak_rate``: rx-to-last-tx less count / peak_rate (nan: none
        timed, or no peak rate).  What a batch takes besides its packets
        (a poll, the tx), so that a batch served slowly shows as more.
    slow_runs : ndarray of int64, shape (k, 2)
        ``[first rx, last rx]`` of each run of consecutive timed batches
        served at under half ``peak_rate`` beyond ``usual_overhead_ns``
        (rx to last tx over twice count / peak_rate, plus the overhead):
        where the NF was slow while it served, and from when.
    recorded_to_ns : int or None
        Where the NF's records run to, where it was still stopped then
        (``NFRecords.stopped_at_end``: silent to when a stopped collector
        said it recorded it until): a silence ending there was still on
        when the recording ended.  None otherwise.
    busy_rate : float
        The rate it kept up while busy: the packets of the batches after
        which its queue stayed busy over their gaps (nan: none, or the
        peak rate was given).  Below ``peak_rate``, a high percentile of
        the same batches' rates, by what its slower batches cost.
    silences : ndarray of int64, shape (k, 2)
        The NF's silences (``NFRecords.silences``: free, then no record
        for longer than SILENCE_NS) where it writes idle-poll records
        (declared or seen), so that they are stops; none otherwise.  For
        the summary.
    """
    name: str
    hops: np.ndarray
    step_ns: np.ndarray
    step_len: np.ndarray
    period_start_ns: np.ndarray
    period_end_ns: np.ndarray
    peak_rate: float
    hop_arrival_ns: np.ndarray = field(repr=False)
    hop_rx_ns: np.ndarray = field(repr=False)
    rx_batch: np.ndarray = field(repr=False, default=None)
    batch_count: np.ndarray = field(repr=False, default=None)
    period_quiet: np.ndarray = field(repr=False,
                                     default_factory=lambda: np.zeros((0, 2), np.int64))
    silences: np.ndarray = field(repr=False,
                                 default_factory=lambda: np.zeros((0, 2), np.int64))
    held: np.ndarray = field(repr=False,
                             default_factory=lambda: np.zeros((0, 2), np.int64))
    usual_batch_ns: float = float("nan")
    busy_rate: float = float("nan")
    recorded_to_ns: Optional[int] = None
    usual_overhead_ns: float = float("nan")
    slow_runs: np.ndarray = field(repr=False,
                                  default_factory=lambda: np.zeros((0, 2), np.int64))

    @property
    def mean_batch(self):
        """Packets per batch, over the batches that received any."""
        if self.batch_count is None:
            return float("nan")
        n = int(np.count_nonzero(self.batch_count))
        return float(self.batch_count.sum()) / n if n else float("nan")

    def arrival_rx(self):
        """``(arrival_ns, rx_ns)``, gathered in one pass."""
        arr, rx = np.empty(len(self.hops), np.int64), np.empty(len(self.hops), np.int64)
        _attrib.gather_arrival_rx(self.hops, self.hop_arrival_ns, self.hop_rx_ns, arr, rx)
        return arr, rx

    @property
    def arrival_ns(self):
        arr = np.empty(len(self.hops), np.int64)
        _attrib.gather_arrival(self.hops, self.hop_arrival_ns, self.hop_rx_ns, arr)
        return arr

    @property
    def rx_ns(self):
        return self.hop_rx_ns[self.hops]

    @property
    def delay_ns(self):
        arr, rx = self.arrival_rx()
        return rx - arr

    @property
    def hop_period(self):
        # the last period started at or before the arrival (periods start
        # at arrivals, in time order), kept where the packet waited
        arr, rx = self.arrival_rx()
        p = np.searchsorted(self.period_start_ns, arr, side="right") - 1
        return np.where((rx > arr) & (p >= 0), p, -1).astype(np.int32)

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
    return _busy_batches(batch_ns, batch_count, busy_after, percentile)[0]


def _busy_batches(batch_ns, batch_count, busy_after, percentile=PEAK_PERCENTILE):
    """(peak_rate, the rate kept up over the same batches: their packets
    over their gaps), nan without one."""
    gap = np.diff(batch_ns)
    sel = busy_after[:-1] & (gap > 0) if len(batch_ns) > 1 else np.zeros(0, bool)
    if not sel.any():
        return float("nan"), float("nan")
    c, g = batch_count[:-1][sel], gap[sel]
    return float(np.percentile(c / g, percentile)), float(c.sum() / g.sum())


def _hops_in_rx_order(view, traj):
    """Per NF index k: its received hops in rx order.  One pass over the
    hops: each rx entry is one hop's, so a scatter by rx index sorts them
    (an argsort where two hops claim one rx entry).  The arrays of all NFs
    are views of one shared one."""
    rx_count = np.array([len(n.rx_ids) for n in view.nfs], np.int64)
    rx_offset = np.concatenate([[0], np.cumsum(rx_count)]).astype(np.int64)
    index = np.int32 if len(traj.hop_nf) < 2**31 else np.int64
    slot = np.full(int(rx_offset[-1]), -1, index)
    twice = _attrib.rx_slots(traj.hop_nf, traj.hop_rx, rx_offset, rx_count, slot)
    out = {}
    for k in range(len(view.nfs)):
        h = slot[rx_offset[k]:rx_offset[k + 1]]
        if twice:
            h = np.flatnonzero((traj.hop_nf == k) & (traj.hop_rx >= 0)).astype(index)
            h = h[np.argsort(traj.hop_rx[h], kind="stable")]
        elif (h < 0).any():
            h = h[h >= 0]
        out[k] = h
    return out


def _sorted_distinct(t):
    """`t` sorted (itself when it already is) and its number of distinct
    values."""
    d = _attrib.distinct_sorted(t)
    if d >= 0:
        return t, d
    t = np.sort(t)
    return t, _attrib.distinct_sorted(t)


def _peak_rate(view_nf, step_ns, step_len, work):
    """peak_rate of the NF's batches, and the rate it kept up over them
    (their packets over their gaps; nan without one): the rates it takes
    the percentile of worked out in one kernel pass into `work` (scratch
    shared by the NFs: no bincount of a widened rx_batch, no busy, gap or
    selection arrays, and the percentile partitions the rates where they
    are), the same values in the same order."""
    nb = len(view_nf.batch_ns)
    if nb < 2:
        return float("nan"), float("nan")
    rx_batch = np.ascontiguousarray(view_nf.rx_batch, np.int32)
    sums = np.zeros(2, np.int64)
    m = _attrib.busy_batch_rates(step_ns, step_len, view_nf.batch_ns, rx_batch, work, sums)
    if m >= 0:
        rates = work[:m].view(np.float64)
        if not m:
            return float("nan"), float("nan")
        return (float(np.percentile(rates, PEAK_PERCENTILE, overwrite_input=True)),
                float(sums[0] / sums[1]))
    # batches not in time order, or rx_batch not sorted: count and search
    cnt = np.bincount(view_nf.rx_batch, minlength=nb)
    after = np.searchsorted(step_ns, view_nf.batch_ns, side="right") - 1
    busy = (after >= 0) & (step_len[np.maximum(after, 0)] > 0)
    return _busy_batches(view_nf.batch_ns, cnt, busy)


def service_rate(batch_count, batch_dur, percentile=PEAK_PERCENTILE, work=None):
    """Peak service rate from how long the NF took over each batch: from
    its rx to the last tx of its packets.

    Every batch says this, busy or not, so it is known for an NF that never
    had a backlog (where :func:`peak_rate` has no batch to go on) and is
    dominated by the NF's normal service, not by the fault windows that
    made its backlogs.  A batch's time includes the poll's fixed cost,
    which larger batches share out: the rate is the fastest of the batch
    sizes seen often enough, each size's `percentile`.  Where a fault made
    the backlogs, it made the full batches too: at an NF taking up to 4
    packets a poll, 2% loaded, that got 2% of its core for 21 ms, every
    batch of 4 was the contention's (0.19 Mpps against 10; held-out
    ho47-13), so the largest sizes alone, taken before, said what the
    fault did.  Where no size is seen that often, the top tenth by size.

    Parameters
    ----------
    batch_count : ndarray of int64
        Packets per batch (those received).
    batch_dur : ndarray of int64
        Last tx minus rx, ns; <= 0 where the batch sent nothing.
    percentile : float
    work : ndarray of int64, optional
        Scratch for the rates, at least one entry per batch (the queue
        stage's, shared with :func:`_peak_rate`); made here without it.

    Returns
    -------
    float
        Packets per ns; nan with fewer than MIN_TIMED_BATCHES timed batches.
    """
    batch_count = np.ascontiguousarray(batch_count, np.int64)
    batch_dur = np.ascontiguousarray(batch_dur, np.int64)
    # each size's own rates, the sizes apart (a counting sort: ~0.19 ->
    # ~0.05 s over bench/analyze.py's five NFs against an argsort and its
    # gathers); a size is seen often enough from MIN_TIMED_BATCHES and
    # SIZE_SHARE of the timed batches
    start = np.empty(_attrib.SIZE_BUCKETS + 1, np.int64)
    nb = len(batch_count)
    rs = np.empty(nb) if work is None or len(work) < nb else work[:nb].view(np.float64)
    n = _attrib.rates_by_size(batch_count, batch_dur, start, rs)
    if n < 0:                                   # a batch of 65,534 or more
        return _service_rate_sorted(batch_count, batch_dur, percentile)
    if n < MIN_TIMED_BATCHES:
        return float("nan")
    least = max(MIN_TIMED_BATCHES, int(SIZE_SHARE * n))
    often = np.flatnonzero(np.diff(start) >= least).tolist()
    if often:
        return float(max(np.percentile(rs[start[c]:start[c + 1]], percentile,
                                       overwrite_input=True) for c in often))
    ok = (batch_dur > 0) & (batch_count > 0)
    return _top_tenth_rate(batch_count[ok], batch_dur[ok], percentile)


def _service_rate_sorted(batch_count, batch_dur, percentile):
    """service_rate by a sort of the sizes (batches of any size)."""
    ok = (batch_dur > 0) & (batch_count > 0)
    if np.count_nonzero(ok) < MIN_TIMED_BATCHES:
        return float("nan")
    c, d = batch_count[ok], batch_dur[ok]
    o = np.argsort(c, kind="stable")
    cs, rs = c[o], c[o] / d[o]
    edge = np.flatnonzero(np.concatenate([[True], cs[1:] != cs[:-1], [True]]))
    least = max(MIN_TIMED_BATCHES, int(SIZE_SHARE * len(c)))
    rates = [np.percentile(rs[a:b], percentile)
             for a, b in zip(edge[:-1].tolist(), edge[1:].tolist()) if b - a >= least]
    if rates:
        return float(max(rates))
    return _top_tenth_rate(c, d, percentile)


def _top_tenth_rate(c, d, percentile):
    """service_rate where no size is seen often enough: over the top tenth
    of the timed batches (sizes `c`, durations `d`) by size."""
    # no size seen that often: the top tenth by size (c >=
    # np.percentile(c, 90)): counts are small integers, so read off their
    # histogram rather than partitioning them
    cum = np.cumsum(np.bincount(c))
    k = 0.9 * (len(c) - 1)
    lo, hi = (int(np.searchsorted(cum, x, "right")) for x in (np.floor(k), np.ceil(k)))
    big = c >= (hi if k > np.floor(k) and hi > lo else lo)
    return float(np.percentile(c[big] / d[big], percentile))


def _timed_sample(duration):
    """Of the timed batches (`duration` ns, 0: untimed), 65,536 at most,
    evenly spread: what :func:`_held` and :func:`_slow_batches` take their
    medians over."""
    timed = np.flatnonzero(duration > 0)
    return timed[::max(1, len(timed) // 65536)]


def _held(batch_ns, duration, sample):
    """(held, usual): QueueTimeline's ``held`` batches and
    ``usual_batch_ns``, from each batch's start and duration (0: untimed),
    the median over `sample` (:func:`_timed_sample`)."""
    if len(sample) == 0:
        return np.zeros((0, 2), np.int64), float("nan")
    usual = float(np.median(duration[sample]))
    long = np.flatnonzero(duration >= max(HELD_MIN_NS, HELD_FACTOR * usual))
    out = np.zeros((len(long), 2), np.int64)
    out[:, 0] = batch_ns[long]
    out[:, 1] = batch_ns[long] + duration[long]
    return out, usual


def _slow_batches(batch_ns, count, duration, rate, sample):
    """QueueTimeline's ``usual_overhead_ns`` and ``slow_runs``, from each
    batch's start, packets and duration (0: untimed) and the peak `rate`
    (packets/ns), the median over `sample` (:func:`_timed_sample`).
    Batches not timed (idle polls among them) do not break a run
    (``_attrib.slow_runs``: two passes, where numpy's five took 70 ms over
    the NFs of bench/analyze.py's capture)."""
    if len(sample) == 0 or not (np.isfinite(rate) and rate > 0):
        return float("nan"), np.zeros((0, 2), np.int64)
    overhead = float(np.median(duration[sample] - count[sample] / rate))
    # counted, then written: a few runs where room for the most would be
    # 8 bytes a batch
    batch_ns = np.ascontiguousarray(batch_ns, np.int64)
    out = np.empty((0, 2), np.int64)
    n = _attrib.slow_runs(batch_ns, count, duration, float(rate), overhead, out)
    out = np.empty((n, 2), np.int64)
    _attrib.slow_runs(batch_ns, count, duration, float(rate), overhead, out)
    return overhead, out


def batch_durations(view_nf, hops, traj):
    """Packets and rx-to-last-tx time (ns, 0 when none was sent) of each
    batch of the NF, from its received `hops`."""
    nb = len(view_nf.batch_ns)
    count, duration = np.zeros(nb, np.int64), np.empty(nb, np.int64)
    if _attrib.batch_durations(hops, traj.hop_rx, traj.hop_tx_ns,
                               np.ascontiguousarray(view_nf.rx_batch, np.int32),
                               np.ascontiguousarray(view_nf.batch_ns, np.int64),
                               count, duration) < 0:
        raise IndexError("rx_batch or hop_rx out of range")
    return count, duration


def _steps(arr, rx, n_batches):
    """Step series and queuing periods of one NF (see QueueTimeline):
    `step_ns`, `step_len`, `starts`, `ends` (buffers, possibly longer) and
    the numbers of steps, starts and ends written in them."""
    # a FIFO queue receives in arrival order, so both are sorted already.
    # One step per distinct event time, and a period starts at an arrival
    # and ends at an rx: sized by those counts (shrunk in place after),
    # not by the 2n / n + 1 of the worst case, which on bench/analyze.py's
    # capture was ~60 MiB more at this stage's peak for lb alone.  The rx
    # times are batch times, so at most one distinct per batch: the merge
    # checks that bound, and rx's order, as it goes, which saves a pass
    # over rx to count them
    d_arr = _attrib.distinct_sorted(arr)
    if d_arr >= 0:
        n_steps, n_periods = d_arr + n_batches, min(d_arr, n_batches + 1) + 1
        bufs = (np.empty(n_steps, np.int64), np.empty(n_steps, np.int32),
                np.empty(n_periods, np.int64), np.empty(n_periods, np.int64))
        counts = _attrib.queue_steps(arr, rx, *bufs)
        if counts is not None:
            return bufs + counts
        del bufs
    # any other queue (or times the bound does not hold for): sorted copies
    # and exact counts
    arr_sorted, d_arr = _sorted_distinct(arr)
    rx_sorted, d_rx = _sorted_distinct(rx)
    n_periods = min(d_arr, d_rx + 1) + 1
    step_ns, step_len = np.empty(d_arr + d_rx, np.int64), np.empty(d_arr + d_rx, np.int32)
    starts, ends = np.empty(n_periods, np.int64), np.empty(n_periods, np.int64)
    # the kernel's period of each arrival: not kept (QueueTimeline.hop_period)
    counts = _attrib.step_series(arr_sorted, rx_sorted, step_ns, step_len, starts, ends,
                                 np.empty(len(arr), np.int32), False)
    return (step_ns, step_len, starts, ends) + counts


def _stops_show(view_nf):
    """Whether the NF's silences are stops: its recorder declares idle-poll
    records (the ring header's ``idle_ns``, in the manifest), or it wrote
    some (a capture whose manifest predates the key)."""
    return view_nf.idle_interval_ns > 0 or len(view_nf.idle_ns) > 0


def quiet_since(start_ns, view_nf, silence_ns=None):
    """The times of `start_ns` (sorted) that fell in a silence of the NF,
    and where it went silent: ``[index, t]`` rows
    (``QueueTimeline.period_quiet``); none for an NF without idle-poll
    records (declared or seen), whose silences may be idleness.

    A time inside one of the NF's silences (``NFRecords.silences``: free
    at ``from``, nothing written until ``to``) more than `silence_ns`
    after its ``from``: the NF had stopped by ``t = from + silence_ns``.
    """
    none = np.zeros((0, 2), np.int64)
    if not _stops_show(view_nf) or len(view_nf.silences) == 0:
        return none
    s = np.asarray(start_ns, np.int64)
    if silence_ns is None:
        silence_ns = silence_ns_of(view_nf.idle_interval_ns)
    quiet_from = view_nf.silences[:, 0] + silence_ns
    quiet_to = view_nf.silences[:, 1]
    # the starts inside a silence: each silence's range of them
    lo = np.searchsorted(s, quiet_from, side="right")
    hi = np.searchsorted(s, quiet_to, side="right")
    n = hi - lo
    if not n.any():
        return none
    idx = np.repeat(lo, n) + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
    return np.stack([idx, np.repeat(quiet_from, n)], axis=1).astype(np.int64)


def _timeline(name, hops, traj, view_nf, rate_override, work):
    # the arrivals and rx times only while the steps are made: one NF's at
    # a time (QueueTimeline gathers them again when asked)
    arr, rx = np.empty(len(hops), np.int64), np.empty(len(hops), np.int64)
    _attrib.gather_arrival_rx(hops, traj.hop_arrival_ns, traj.hop_rx_ns, arr, rx)
    # the step series merges arrivals (+1) and rx (-1) in time order
    step_ns, step_len, starts, ends, ns, nst, nen = _steps(arr, rx, len(view_nf.batch_ns))
    del arr, rx
    if nen < nst:
        ends[nen] = -1                      # still busy at the capture's end
        nen += 1
    for a, size in ((step_ns, ns), (step_len, ns), (starts, nst), (ends, nen)):
        a.resize(size, refcheck=False)
    count, duration = batch_durations(view_nf, hops, traj)
    kept = float("nan")
    if rate_override is not None:
        rate = float(rate_override)
    else:
        # the busy batches' rate; the batches' own service times where
        # the NF never had a backlog, or where a long fault made its
        # backlogs (TIMED_OVER_BUSY)
        rate, kept = _peak_rate(view_nf, step_ns, step_len, work)
        timed = service_rate(count, duration, work=work)
        if not np.isfinite(rate) or timed > TIMED_OVER_BUSY * rate:
            rate = timed
    sample = _timed_sample(duration)
    held, usual_batch = _held(view_nf.batch_ns, duration, sample)
    overhead, slow_runs = _slow_batches(view_nf.batch_ns, count, duration, rate, sample)
    del sample, duration
    # kept for the attribution: 2 bytes a batch where they fit (a batch per
    # packet or two at light load: 26 MiB as int64 on bench/analyze.py's
    # capture, which put the traced peak over 2x the decoded capture)
    count = count.astype(np.uint16 if count.max(initial=0) < 2**16 else np.int32)
    q = QueueTimeline(name, hops, step_ns, step_len, starts, ends, rate,
                      traj.hop_arrival_ns, traj.hop_rx_ns, view_nf.rx_batch, count,
                      quiet_since(starts, view_nf),
                      view_nf.silences if _stops_show(view_nf) else np.zeros((0, 2), np.int64),
                      held, usual_batch, kept, usual_overhead_ns=overhead,
                      slow_runs=slow_runs)
    if view_nf.stopped_at_end and len(q.silences):
        q.recorded_to_ns = int(view_nf.silences[-1, 1])
    return q


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
    hops = _hops_in_rx_order(view, traj)
    size = max([len(n.batch_ns) for n in view.nfs if len(n.rx_ids)
                and peak_rates.get(n.name) is None], default=0)
    # the NFs side by side (mscope.workers), each thread with scratch of
    # its own; the largest first, so that none is left to run alone
    spare = workers.Spares(lambda: np.empty(size, np.int64))

    def one(k):
        n = view.nfs[k]
        with spare.taken() as work:
            return _timeline(n.name, hops[k], traj, n, peak_rates.get(n.name), work)

    todo = sorted((k for k, n in enumerate(view.nfs) if len(n.rx_ids)),
                  key=lambda k: -len(hops[k]))
    made = dict(zip(todo, workers.map_in_threads(one, todo)))
    return {view.nfs[k].name: made[k] for k in sorted(made)}
