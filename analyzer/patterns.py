"""Stage 6 of the analyzer: aggregate per-victim relations into rules.

Each victim contributes ⟨culprit, victim⟩ relations weighted by its culprit
scores.  Rules aggregate them by culprit (NF and cause, or a source prefix,
itself a heavy hitter of the source's excess) and victim NF; a rule is kept
when it is the top culprit of at least `threshold` of all victims (scores
of long stalls dwarf short ones, so the share of victims decides what a
reader sees first), and its victims are named
by the hierarchical heavy hitter (AutoFocus-style) of their source
addresses weighted by blame.  An NF blamed locally is also asked which flows it served slowly
(slowflows.py); when one prefix stands out the rule's culprit names it
(``"flows"``: a bug on those flows rather than a stall of the whole NF).
"""
import numpy as np

from . import _attrib
from .prefixes import covering_prefix, heavy_prefixes
from .queues import batch_durations
from .slowflows import slow_prefix, slow_prefix_timed

__all__ = ["find_patterns", "DEFAULT_THRESHOLD"]

#: Keep rules that are the top culprit of at least this share of victims.
DEFAULT_THRESHOLD = 0.02
#: A rule's victims are named by the most specific source prefix holding
#: this share of the rule's blame (FIFO queues delay every flow behind a
#: culprit, so this is usually the cover of all flows).
VICTIM_SHARE = 0.8
#: Where the busy batches' fit had fewer busy batches than this and named
#: no flows, the batches are timed each by its own rx and tx
#: (slowflows.slow_prefix_timed).  With more, their times are the fit's
#: own (a busy batch's gap is its service): on bench/analyze.py's capture,
#: fw2's 1,679 busy batches, 85 ms again for nothing.
TIMED_BELOW = 256


def _blamed_periods(traj, queue, packets):
    """The queuing periods of the NF of `queue` that `packets` (the
    victims blamed on its local cause) waited in there: (starts, ends),
    ends -1 where the period lasts to the capture's end; empty where none
    waited there.  By the NF's own hops (a search of every victim's hops
    was 100 ms on bench/analyze.py's capture)."""
    mark = np.zeros(len(traj.packet_id), bool)
    mark[packets] = True
    h = queue.hops[mark[traj.hop_packet[queue.hops]]]
    del mark
    a = traj.hop_arrival_ns[h]
    a = np.where(a >= 0, a, traj.hop_rx_ns[h])
    ps, pe = queue.period_start_ns, queue.period_end_ns
    p = np.searchsorted(ps, a, side="right") - 1
    ok = p >= 0
    ok[ok] = (pe[p[ok]] < 0) | (pe[p[ok]] >= a[ok])
    p = np.unique(p[ok])
    return ps[p], pe[p]


def _slow_flows(name, traj, view, queue, packets=None):
    """Source prefix NF `name` served slowly, or None: over the queuing
    periods in which `packets` (the victims blamed on its local cause)
    waited there, where given and any did.  A bug of a millisecond in a
    capture of a hundred, judged over every busy batch of the NF, was
    lost among the batches it did not slow (bench/heldout.py, 699 bugs
    whose victims were blamed right: 47 named exactly over the whole
    capture, 91 with slowflows.OUTLIER raised, 147 with both)."""
    if view is None or queue is None or not traj.has_addr:
        return None
    k = traj.nf_names.index(name)
    n = view.nfs[k]
    h = queue.hops                  # the hops received at k: their rx is where they sat
    if len(h) == 0:
        return None
    addr = np.zeros(len(n.rx_ids), np.uint32)
    if _attrib.rx_addresses(h, traj.hop_rx, traj.hop_packet,
                            np.ascontiguousarray(traj.src_addr, np.uint32), addr) < 0:
        raise IndexError(f"{name}: a hop's rx entry or packet out of range")
    cnt = np.bincount(n.rx_batch, minlength=len(n.batch_ns))
    batch_ns = np.ascontiguousarray(n.batch_ns, np.int64)
    busy = np.empty(len(batch_ns), np.uint8)
    if _attrib.busy_after(queue.step_ns, queue.step_len, batch_ns, busy):
        busy = busy.view(bool)
    else:
        busy = queue.length_at(batch_ns) > 0
    ps = pe = ()
    if packets is not None and len(packets):
        ps, pe = _blamed_periods(traj, queue, packets)
        if len(ps):
            # only the batches taken within those periods
            busy &= _batches_in(len(batch_ns), np.searchsorted(batch_ns, ps, side="left"),
                                _period_stops(batch_ns, pe))
    peak_ns = 1 / queue.peak_rate if queue.peak_rate > 0 else None
    found = slow_prefix(n.batch_ns, cnt, busy, n.rx_batch, addr,
                        int(n.batch_ns[0]), int(n.batch_ns[-1]), queue.silences[:, 0], peak_ns)
    if found is None and len(ps) and peak_ns is not None and busy.sum() < TIMED_BELOW:
        # few busy batches to fit (a bug at light load, short or fast):
        # every batch of the blamed periods, and of the busy runs that led
        # into them, timed each by its own rx and tx
        _, dur = batch_durations(n, h, traj)
        found = slow_prefix_timed(dur, cnt, _runs_into(batch_ns, dur, queue, ps, pe),
                                  n.rx_batch, addr, peak_ns)
    return found


def _runs_into(batch_ns, dur, queue, ps, pe):
    """The batches of the queuing periods [`ps`, `pe`) (`pe` -1: to the
    end), each period with the batches before it in one run of service:
    back to the first batch the NF began with nothing waiting, each
    later one taken at once after the last, packets having come while it
    served.  A bug's slow batches build the backlog of a period that may
    begin only after them, as the last of them is served (at light load,
    one batch of its packets took every one queued)."""
    nb = len(batch_ns)
    end = batch_ns + np.maximum(dur, 0)
    cont = np.zeros(nb, bool)
    # waiting just before the last batch ended (the next rx at that ns
    # takes them): the NF went on at once
    cont[1:] = (dur[:-1] > 0) & (queue.length_at(end[:-1] - 1) > 0)
    first = np.flatnonzero(~cont)                       # each run's first batch
    at = np.maximum(np.searchsorted(batch_ns, ps, side="right") - 1, 0)
    return _batches_in(nb, first[np.searchsorted(first, at, side="right") - 1],
                       _period_stops(batch_ns, pe))


def _period_stops(batch_ns, pe):
    """The first batch at or after each period's end `pe` (-1: none, the
    period lasting to the end)."""
    return np.where(pe < 0, len(batch_ns), np.searchsorted(batch_ns, pe, side="left"))


def _batches_in(nb, first, stop):
    """Which of `nb` batches lie in any range [first[i], stop[i]) of batch
    indexes: +1 where one begins, -1 where it ends, summed along them."""
    edge = np.zeros(nb + 1, np.int32)
    np.add.at(edge, first, 1)
    np.add.at(edge, stop, -1)
    return np.cumsum(edge[:-1]) > 0


def find_patterns(att, threshold=DEFAULT_THRESHOLD, traj=None, view=None, queues=None):
    """Rules ``{"culprit", "victims", "score", "count"}``, highest score first.

    Parameters
    ----------
    att : mscope.analyzer.attribution.Attribution
    threshold : float
        Share of all victims (0..1) whose top culprit the rule's culprit
        must be (at the rule's victim NF) for the rule to be reported.
    traj, view, queues : optional
        The trajectories, capture view and queue timelines; with them
        victims are grouped by source prefix and locally blamed NFs are
        checked for slow flows.  Without, victims' flows are ``"*"``.

    Returns
    -------
    list of dict
        ``victims`` is ``{"nf", "flows"}``; ``count`` the number of victims
        at that NF whose top culprit it is; ``score`` the sum of all scores
        for it over the victims at that NF.  Most victims first.
    """
    S = att.scores
    # scores are >= 0: their sum is 0 when every cell is (empty: no cells)
    if S.n_victims == 0 or S.n_culprits == 0 or float(S.capped.sum()) <= 0:
        return []
    top = att.top()
    need = threshold * len(top)
    names, vnf = att.nf_groups()
    # victims per (victim NF, top culprit), all at once: rules are few
    C = len(att.culprits)
    n_tops = np.bincount(vnf[top >= 0] * C + top[top >= 0],
                         minlength=len(names) * C).reshape(len(names), C)
    addr = None
    if traj is not None and traj.has_addr:
        addr = traj.src_addr[att.packet]
    rules = []
    slow = {}
    # each entry's victim, once: S.column(j) per rule searched all entries
    # and filled a vector over all victims (s2: 5 rules, 50 of 240 ms)
    entry_victim = None
    for i, nf in enumerate(names):
        rows = None
        for j in np.flatnonzero((n_tops[i] > 0) & (n_tops[i] >= need)).tolist():
            key, n_top = att.culprits[j], int(n_tops[i, j])
            if rows is None:
                rows = np.flatnonzero(vnf == i)
                at_row = np.full(len(vnf), -1, np.intp)
                at_row[rows] = np.arange(len(rows))
            if entry_victim is None:
                entry_victim = np.repeat(np.arange(S.n_victims), np.diff(S.offsets))
            # dense over the NF's victims, zeros included: col.sum() adds
            # up as S.column(j)[rows].sum() always has
            col = np.zeros(len(rows))
            at = np.flatnonzero(S.culprit == j)
            r = at_row[entry_victim[at]]
            col[r[r >= 0]] = S.capped[at[r >= 0]]
            flows = "*"
            if addr is not None:
                a = addr[rows]
                known = a != 0
                lo = covering_prefix(a[known])[1] if known.any() else 0
                hh = heavy_prefixes(a[known], col[known], VICTIM_SHARE, min_length=lo)
                if hh:
                    flows = hh[0][0]
            c = att.culprit_json(key)
            if key[0] == "nf" and key[2] == "local":
                if key[1] not in slow:
                    slow[key[1]] = _slow_flows(key[1], traj, view, (queues or {}).get(key[1]),
                                               att.packet[top == j]) \
                        if traj is not None else None
                if slow[key[1]]:
                    c["flows"] = slow[key[1]]
            rules.append({"culprit": c, "victims": {"nf": nf, "flows": flows},
                          "score": round(float(col.sum()), 3), "count": n_top})
    rules.sort(key=lambda r: (-r["count"], -r["score"]))
    return rules
