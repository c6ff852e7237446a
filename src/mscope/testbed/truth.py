"""Ground truth for a live run: victims labelled by the window of each fault.

A live run cannot be replayed without a fault, so the simulator's
counterfactual labels are out of reach; the testbed labels by time
window instead (SCENARIO.md, ``"labels": "window"``).  The rule, exactly:

1. **Packets** are the source's tx records (stream ``source``).  Every
   process of the chain passes the source's id along (the recorders trust
   upstream stamps over the shared mbufs), so a packet's id is the same at
   every hop, and this module follows it by exact id, without the
   analyzer's matching.
2. **Victim**: a packet whose sink rx (stream ``egress``) comes more than
   ``objective.latency_us`` after its source tx, or that never reached the
   sink (dropped at a full queue or by an NF).
3. **A fault's window** is [start, drained]: start is the fault's start
   (t0 + ``at_ms``/``from_ms``, times ``--seconds-scale``); drained is the
   first rx batch of the affected queue, at or after the fault's end,
   whose recorded occupancy (``rte_ring_count`` after the dequeue) is back
   to the queue's pre-fault level: the 90th percentile of the occupancies
   recorded over the 2 ms (scaled) before the start, 0 when the queue was
   never polled then.  The affected queue of an ``interrupt``, ``bug`` or
   ``contention`` fault is its NF's input queue.  A ``burst`` affects every
   NF's queue: each NF, in topological order, is searched from the fault's
   end or from the latest drain of the NFs feeding it, whichever is later,
   and the window ends at the latest drain of all.  No such batch before
   the capture ends: the window runs to the capture's end.
4. **Membership**: a victim belongs to an NF fault F at X when it was at X
   during F's window: it reached X's queue (its tx time at X's upstream on
   the link to X, or its source tx) no later than the window's end, and
   left X (its tx at X; its rx when X dropped it; its arrival when X's full
   queue did) no earlier than the window's start.  It belongs to a burst
   when its time in the chain (source tx to sink rx, or to the last record
   of it) overlaps the burst's window.  A victim several faults claim is
   listed under each; one no fault claims is unexplained.
"""
import numpy as np

from mscope.sim.scenario import SOURCE

__all__ = ["window_truth", "label_windows", "RULE"]

RULE = ("window: a victim (over objective.latency_us from source tx to sink rx, or "
        "never reaching the sink) belongs to fault F when it was at F's NF (for a burst: "
        "anywhere in the chain) during [F's start, first rx batch after F's end at which "
        "the affected queue's recorded occupancy is back to its pre-fault p90]")

_NONE = np.iinfo(np.int64).max


class _Ids:
    """Exact lookup of packet ids among the source's packets."""

    def __init__(self, ids):
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]
        self.n = len(ids)

    def first_time(self, ids, ns):
        """Per packet: the earliest of `ns` where `ids` holds its id, -1 if none."""
        out = np.full(self.n, _NONE, np.int64)
        if len(ids) and self.n:
            pos = np.minimum(np.searchsorted(self.sorted, ids), self.n - 1)
            hit = self.sorted[pos] == ids
            np.minimum.at(out, self.order[pos[hit]], ns[hit].astype(np.int64))
        return np.where(out == _NONE, -1, out)


def _drained(nf, start, end, lookback):
    """Time of nf's first rx batch at or after `end` whose occupancy is back
    to its pre-fault level (module docstring, rule 3); None if none."""
    b_ns, occ = nf.batch_ns, nf.batch_occupancy
    known = occ >= 0
    pre = occ[known & (b_ns >= start - lookback) & (b_ns < start)]
    base = float(np.percentile(pre, 90)) if len(pre) else 0.0
    ok = np.flatnonzero(known & (b_ns >= end) & (occ <= base))
    return int(b_ns[ok[0]]) if len(ok) else None


def window_truth(view, sc, t0_ns, time_scale, sink_name, lookback_ns=2_000_000):
    """Label the victims of a live capture by fault windows.

    Parameters
    ----------
    view : mscope.analyzer.ingest.CaptureView
    sc : mscope.sim.scenario.Scenario
        The scenario as given (unscaled).
    t0_ns : int
        The run's start on the capture's clock (CLOCK_MONOTONIC).
    time_scale : float
        ``--seconds-scale``: scenario times and the objective are multiplied by it.
    sink_name : str
        Recorder name of the sink.

    Returns
    -------
    dict
        truth.json (SCENARIO.md) with ``"labels": "window"``, each fault's
        ``window_ns`` and the counts behind it.
    """
    names = set(view.names)
    src = view.nf("source")
    pkt = src.tx_ids.astype(np.uint64)
    s_ns = src.tx_ns.astype(np.int64)
    ids = _Ids(pkt)
    exit_ns = ids.first_time(view.nf(sink_name).rx_ids, view.nf(sink_name).rx_ns) \
        if sink_name in names else np.full(len(pkt), -1, np.int64)
    slo_ns = int(round(sc.slo_ns * time_scale))

    def tx_on_link(node, dst):
        if node == SOURCE:
            rec, tx_ids, tx_ns, tx_port = src, src.tx_ids, src.tx_ns, src.tx_port
        elif node in names:
            rec = view.nf(node)
            tx_ids, tx_ns, tx_port = rec.tx_ids, rec.tx_ns, rec.tx_port
        else:
            return np.full(len(pkt), -1, np.int64)
        port = sc.out_links[node].index(dst)
        sel = tx_port == port
        return ids.first_time(tx_ids[sel], tx_ns[sel])

    arrive, leave, seen_last = {}, {}, s_ns.copy()
    for nf in sc.nfs:
        x = nf.name
        arr = np.full(len(pkt), -1, np.int64)
        for u in sc.in_links[x]:
            a = tx_on_link(u, x)
            arr = np.where((arr < 0) | ((a >= 0) & (a < arr)), a, arr)
        rec = view.nf(x) if x in names else None
        rx = ids.first_time(rec.rx_ids, rec.rx_ns) if rec is not None else np.full_like(arr, -1)
        tx = ids.first_time(rec.tx_ids, rec.tx_ns) if rec is not None else np.full_like(arr, -1)
        arrive[x] = arr
        leave[x] = np.where(tx >= 0, tx, np.where(rx >= 0, rx, arr))
        seen_last = np.maximum(seen_last, np.maximum(tx, rx))
    chain_end = np.where(exit_ns >= 0, exit_ns, seen_last)
    capture_end = int(max([int(s_ns.max(initial=0))]
                          + [int(n.rx_ns.max(initial=0)) for n in view.nfs]
                          + [int(n.tx_ns.max(initial=0)) for n in view.nfs]))

    lookback = int(lookback_ns * time_scale)

    def drained(x, start, end):
        return _drained(view.nf(x), start, end, lookback) if x in names else None

    return label_windows(sc, pkt, s_ns, exit_ns, slo_ns, arrive, leave, chain_end,
                         capture_end, drained, t0_ns, time_scale, RULE)


def label_windows(sc, pkt, s_ns, exit_ns, slo_ns, arrive, leave, chain_end, capture_end,
                  drained, t0_ns, time_scale, rule):
    """Rules 3 and 4 of the module docstring, and truth.json.

    Parameters
    ----------
    pkt, s_ns, exit_ns : ndarray
        The source's packets (ids), their source tx and sink rx (-1 none).
    slo_ns : int
        The (scaled) objective.
    arrive, leave : dict name -> ndarray
        Per NF, when each packet reached its queue and left it (-1 never).
    chain_end : ndarray
        When each packet left the chain (sink rx, or its last record).
    capture_end : int
    drained : callable (name, start_ns, end_ns) -> ns or None
        When the NF's queue was back to its pre-fault level (rule 3).
    rule : str
        The rule, as written into truth.json.
    """
    latency = np.where(exit_ns >= 0, exit_ns - s_ns, -1)
    victim = (exit_ns < 0) | (latency > slo_ns)
    none = np.full(len(pkt), -1, np.int64)
    faults, claimed = [], np.zeros(len(pkt), bool)
    for f in sc.faults:
        start = t0_ns + int(round(f.start_ns * time_scale))
        end = t0_ns + int(round(f.end_ns * time_scale))
        if f.kind == "burst":
            done = {}
            for x in sc.topo_order:
                after = max([end] + [done[u] for u in sc.in_links[x] if u in done])
                d = drained(x, start, after)
                done[x] = d if d is not None else capture_end
            w_end = max(done.values(), default=end)
            present = (s_ns <= w_end) & (chain_end >= start)
        else:
            d = drained(f.nf, start, end)
            w_end = d if d is not None else capture_end
            a = arrive.get(f.nf, none)
            present = (a >= 0) & (a <= w_end) & (leave.get(f.nf, none) >= start)
        mine = victim & present
        claimed |= mine
        entry = {"id": f.id, "kind": f.kind}
        if f.nf is not None:
            entry["nf"] = f.nf
        if f.flows is not None:
            entry["flows"] = str(f.flows)
        entry["window_ns"] = [start, int(w_end)]
        entry["victims"] = [int(v) for v in pkt[mine]]
        faults.append(entry)
    delivered = exit_ns >= 0
    return {
        "scenario": sc.name, "labels": "window", "rule": rule,
        "objective": {"latency_us": slo_ns / 1000},
        "seconds_scale": time_scale, "t0_ns": int(t0_ns),
        "packets": int(len(pkt)), "delivered": int(delivered.sum()),
        "dropped": int((~delivered).sum()), "victims_total": int(victim.sum()),
        "latency_ns": {q: (float(np.percentile(latency[delivered], p)) if delivered.any()
                           else None)
                       for q, p in (("p50", 50), ("p99", 99), ("max", 100))},
        "faults": faults,
        "victims_unexplained": [int(v) for v in pkt[victim & ~claimed]],
    }
