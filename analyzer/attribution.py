"""Stage 5 of the analyzer: causal attribution of victims (DESIGN.md §3.4).

A *victim* is a packet whose end-to-end latency exceeds the objective, or
that was dropped.  At every NF f where it waited noticeably (and at the NF
whose queue dropped it) we take f's queuing period containing its arrival,
``[s, e]`` with ``e`` the victim's arrival, and, with f's peak rate r_f:

- local score  ``max(0, r_f (e - s) - n_out)``  (f served slower than it can);
- input score  ``max(0, n_in - r_f (e - s))``   (more arrived than f can serve).

The input score is split over the previous hops (upstream NFs, or the
source) of the packets that arrived at f in the window, by their share.  An
upstream NF u keeps the part it *compressed*: of the packets P it sent to f
in the window, those beyond what u itself received for f over the same span
(a backlog released as a burst); that part is split between u's own local
and input scores over u's queuing period (recursively); the uncompressed
part passes through u to its own previous hops.  Blame rests on ``(nf,
"local")``, on the source (``("flows", "*", "source")``: packets' source
addresses are not in the records, so v1 names no prefix), or on ``(nf,
"input")`` where it cannot be traced further.

Victims at one NF in one queuing period are grouped by arrival time (buckets
of ``bucket_ns`` from the period start); a group is attributed once, with the
window ending at its last victim's arrival, and the result broadcast.
Scores are in packets and add up over the NFs a victim waited at.
"""
from dataclasses import dataclass

import numpy as np

__all__ = ["Attribution", "attribute", "SOURCE_CULPRIT", "culprit_dict"]

#: The source culprit in v1: no addresses in the records, so no prefix.
SOURCE_CULPRIT = ("flows", "*", "source")
#: A hop counts for a victim when it waited at least this share of the
#: victim's total queuing delay (drops always count).
MIN_DELAY_SHARE = 0.1
#: Victims of one period are grouped by arrival in buckets this long.
BUCKET_NS = 100_000
_EPS = 1e-9
#: The window at an NF starts at the queuing period's start, or this many
#: times the victims' wait before their arrival if later (0: period start,
#: the default; 1-3 measured worse on the suite).
LOOKBACK = 0.0
#: Scale each NF's culprit scores to the queue ahead of its victims there
#: (the packets that actually delayed them).  Off by default: on the suite
#: it moved interrupt-two-nfs victims between its two faults, no net gain.
NORMALISE = False


@dataclass
class Attribution:
    """Per-victim ranked culprits.

    Attributes
    ----------
    packet : ndarray of int64
        Trajectory packet index of each victim.
    packet_id : ndarray of uint64
    latency_ns : ndarray of int64
        -1 for drops (and unknown latency).
    dropped : ndarray of bool
    nf : list of str
        The NF where the victim was dropped or waited longest.
    culprits : list of tuple
        Column keys: ``("nf", name, "local"|"input")`` or ``SOURCE_CULPRIT``.
    scores : ndarray of float, (victims, culprits)
        Packets of blame per victim and culprit.
    """
    packet: np.ndarray
    packet_id: np.ndarray
    latency_ns: np.ndarray
    dropped: np.ndarray
    nf: list
    culprits: list
    scores: np.ndarray

    def ranked(self, i):
        """Culprits of victim `i`: list of (key, score), highest first, > 0."""
        row = self.scores[i]
        o = np.argsort(-row, kind="stable")
        return [(self.culprits[j], float(row[j])) for j in o if row[j] > _EPS]

    def top(self):
        """Index into ``culprits`` of each victim's top culprit (-1: none)."""
        if self.scores.shape[1] == 0:
            return np.full(len(self.packet), -1)
        t = np.argmax(self.scores, axis=1)
        return np.where(self.scores[np.arange(len(t)), t] > _EPS, t, -1)


def culprit_dict(key, score=None):
    """The SCENARIO.md JSON form of a culprit key."""
    if key[0] == "nf":
        d = {"kind": "nf", "nf": key[1], "cause": key[2]}
    else:
        d = {"kind": "flows", "flows": key[1], "cause": key[2]}
    if score is not None:
        d["score"] = round(float(score), 3)
    return d


class _NF:
    """Sorted per-NF arrays for window counts."""

    def __init__(self, k, q, traj, nxt_nf):
        self.k, self.rate = k, q.peak_rate
        self.hops = q.hops                               # accepted hops, rx order
        o = np.argsort(q.arrival_ns, kind="stable")
        self.arr_sorted = q.arrival_ns[o]
        self.hops_by_arr = q.hops[o]
        self.rx_sorted = np.sort(q.rx_ns)
        self.pstart, self.pend = q.period_start_ns, q.period_end_ns
        # arrivals per next NF (for compression towards that NF)
        nx = nxt_nf[self.hops_by_arr]
        self.arr_to = {int(d): self.arr_sorted[nx == d] for d in np.unique(nx)}

    def count_in(self, s, e):
        return int(np.searchsorted(self.arr_sorted, e, "right")
                   - np.searchsorted(self.arr_sorted, s, "left"))

    def count_out(self, s, e):
        return int(np.searchsorted(self.rx_sorted, e, "right")
                   - np.searchsorted(self.rx_sorted, s, "left"))

    def arrived(self, s, e):
        """Hops that arrived in [s, e]."""
        return self.hops_by_arr[np.searchsorted(self.arr_sorted, s, "left"):
                                np.searchsorted(self.arr_sorted, e, "right")]

    def period_of(self, t):
        """Queuing period containing times `t` (-1 where the queue was empty)."""
        t = np.asarray(t, np.int64)
        p = np.searchsorted(self.pstart, t, side="right") - 1
        pe = self.pend[np.maximum(p, 0)] if len(self.pend) else np.zeros(len(t), np.int64)
        ok = (p >= 0) & ((pe < 0) | (pe >= t))
        return np.where(ok, p, -1)

    def scores(self, s, e):
        rate = self.rate if np.isfinite(self.rate) else 0.0
        cap = rate * max(e - s, 0)
        n_in, n_out = self.count_in(s, e), self.count_out(s, e)
        return max(0.0, cap - n_out), max(0.0, n_in - cap)


class _Attributor:
    def __init__(self, traj, queues, max_depth):
        self.t = traj
        names = traj.nf_names
        nh = len(traj.hop_packet)
        same_next = np.zeros(nh, bool)
        same_next[:-1] = traj.hop_packet[1:] == traj.hop_packet[:-1]
        self.prev = np.full(nh, -1, np.int64)
        self.prev[1:][same_next[:-1]] = np.arange(nh - 1)[same_next[:-1]]
        nxt_nf = np.full(nh, -1, np.int64)
        nxt_nf[:-1][same_next[:-1]] = traj.hop_nf[1:][same_next[:-1]]
        self.nfs = {names.index(n): _NF(names.index(n), q, traj, nxt_nf)
                    for n, q in queues.items()}
        self.names = names
        self.max_depth = max_depth

    # -- recursion -------------------------------------------------------
    def split_upstream(self, k, hops, amount, acc, depth):
        """Split `amount` over the previous hops of `hops` (at NF k)."""
        if amount <= _EPS or len(hops) == 0:
            return
        prev = self.prev[hops]
        src = prev < 0
        n = len(hops)
        if src.any():
            acc[SOURCE_CULPRIT] = acc.get(SOURCE_CULPRIT, 0.0) + amount * src.sum() / n
        prev = prev[~src]
        if len(prev) == 0:
            return
        up = self.t.hop_nf[prev]
        for u in np.unique(up).tolist():
            P = prev[up == u]
            a_u = amount * len(P) / n
            if depth >= self.max_depth or u not in self.nfs:
                key = ("nf", self.names[u], "input")
                acc[key] = acc.get(key, 0.0) + a_u
                continue
            U = self.nfs[u]
            tx = self.t.hop_tx_ns[P]
            t0, t1 = int(tx.min()), int(tx.max())
            arr_to = U.arr_to.get(k, np.zeros(0, np.int64))
            n_arr = int(np.searchsorted(arr_to, t1, "right") - np.searchsorted(arr_to, t0, "left"))
            c = max(0.0, (len(P) - n_arr) / len(P))
            if c > 0:
                self.diagnose(u, P, a_u * c, acc, depth + 1)
            if c < 1:
                self.split_upstream(u, P, a_u * (1 - c), acc, depth + 1)

    def diagnose(self, u, P, amount, acc, depth):
        """Split `amount` between u's local and input scores over the
        queuing period in which the packets P (hops at u) waited."""
        U = self.nfs[u]
        arr = np.where(self.t.hop_arrival_ns[P] >= 0, self.t.hop_arrival_ns[P],
                       self.t.hop_rx_ns[P])
        p = U.period_of(arr)
        p = p[p >= 0]
        e = int(arr.max())
        s = int(U.pstart[p.min()]) if len(p) else int(arr.min())
        L, I = U.scores(s, e)
        if L + I <= _EPS:
            key = ("nf", self.names[u], "input")
            acc[key] = acc.get(key, 0.0) + amount
            return
        key = ("nf", self.names[u], "local")
        acc[key] = acc.get(key, 0.0) + amount * L / (L + I)
        if I > 0:
            self.split_upstream(u, U.arrived(s, e), amount * I / (L + I), acc, depth)

    def group(self, k, s, e):
        """Culprit scores for victims at NF k whose window is [s, e]."""
        F = self.nfs[k]
        L, I = F.scores(s, e)
        acc = {}
        if L > 0:
            acc[("nf", self.names[k], "local")] = L
        if I > 0:
            self.split_upstream(k, F.arrived(s, e), I, acc, 0)
        return acc


def attribute(traj, queues, slo_ns, bucket_ns=BUCKET_NS,
              min_delay_share=MIN_DELAY_SHARE, max_depth=None,
              lookback=None) -> Attribution:
    """Attribute every victim (latency > `slo_ns`, or dropped).

    Parameters
    ----------
    traj : Trajectories
    queues : dict name -> QueueTimeline
    slo_ns : int
        Latency objective.
    bucket_ns : int
        Victims of one queuing period at one NF are attributed together in
        arrival buckets this long.
    min_delay_share : float
        Hops where the victim waited less than this share of its total
        queuing delay are not considered.
    max_depth : int, optional
        Recursion bound (default: the number of NFs).

    Returns
    -------
    Attribution
    """
    t = traj
    names = t.nf_names
    dropped_pk = t.drop_nf >= 0
    victim = dropped_pk | (t.latency_ns > slo_ns)
    vp = np.flatnonzero(victim)
    A = _Attributor(t, queues, max_depth or len(names) + 1)
    vidx = np.full(len(t.packet_id), -1, np.int64)
    vidx[vp] = np.arange(len(vp))

    # candidate hops of victims: waited noticeably, or dropped there
    hv = vidx[t.hop_packet] >= 0
    h = np.flatnonzero(hv)
    arr = t.hop_arrival_ns[h]
    rx = t.hop_rx_ns[h]
    drop = t.hop_rx[h] < 0
    delay = np.where(drop | (arr < 0), 0, rx - arr)
    # fallback victim NF (no hop kept): where it spent longest, wait + service
    vnf = np.full(len(vp), -1, np.int64)
    spent = np.where((t.hop_tx_ns[h] >= 0) & (arr >= 0), t.hop_tx_ns[h] - arr, 0)
    o = np.lexsort((spent, vidx[t.hop_packet[h]]))
    vnf[vidx[t.hop_packet[h[o]]]] = t.hop_nf[h[o]]
    tot = np.bincount(vidx[t.hop_packet[h]], weights=delay, minlength=len(vp))
    keep = drop | ((delay > 0) & (delay >= min_delay_share * tot[vidx[t.hop_packet[h]]]))
    h, arr, delay, drop = h[keep], arr[keep], delay[keep], drop[keep]
    # victim NF: drop NF, else where it waited longest
    hv_of = vidx[t.hop_packet[h]]
    o = np.lexsort((delay, hv_of))
    vnf[hv_of[o]] = t.hop_nf[h[o]]              # last write = largest delay
    vnf[dropped_pk[vp]] = t.drop_nf[vp[dropped_pk[vp]]]

    keys = {}
    g_of_hop = np.full(len(h), -1, np.int64)
    group_scores = []
    for k in np.unique(t.hop_nf[h]).tolist():
        if k not in A.nfs:
            continue
        F = A.nfs[k]
        sel = np.flatnonzero(t.hop_nf[h] == k)
        p = F.period_of(arr[sel])
        ok = p >= 0
        sel, p = sel[ok], p[ok]
        if not len(sel):
            continue
        b = (arr[sel] - F.pstart[p]) // max(int(bucket_ns), 1)
        gk = p.astype(np.int64) * (int(b.max()) + 1) + b
        ug, inv = np.unique(gk, return_inverse=True)
        emax = np.full(len(ug), np.iinfo(np.int64).min)
        np.maximum.at(emax, inv, arr[sel])
        # wait of each victim here (drops: queue ahead / peak rate)
        w = delay[sel].astype(float)
        if drop[sel].any() and np.isfinite(F.rate) and F.rate > 0:
            dq = drop[sel]
            w[dq] = queues[names[k]].length_at(arr[sel][dq]) / F.rate
        wmax = np.zeros(len(ug))
        np.maximum.at(wmax, inv, w)
        base = len(group_scores)
        lb = LOOKBACK if lookback is None else lookback
        for gi, g in enumerate(ug.tolist()):
            pp = g // (int(b.max()) + 1)
            s0 = int(F.pstart[pp])
            if lb > 0:
                s0 = max(s0, int(emax[gi] - lb * wmax[gi]))
            acc = A.group(k, s0, int(emax[gi]))
            if NORMALISE:
                tot = sum(acc.values())
                q = float(queues[names[k]].length_at(int(emax[gi])))
                if tot > 0:
                    acc = {key: v * q / tot for key, v in acc.items()}
            group_scores.append(acc)
        g_of_hop[sel] = base + inv
    for acc in group_scores:
        for key in acc:
            if key not in keys:
                keys[key] = len(keys)
    G = np.zeros((len(group_scores), len(keys)))
    for gi, acc in enumerate(group_scores):
        for key, v in acc.items():
            G[gi, keys[key]] = v
    S = np.zeros((len(vp), len(keys)))
    use = g_of_hop >= 0
    if use.any() and len(keys):
        np.add.at(S, hv_of[use], G[g_of_hop[use]])
    culprits = [None] * len(keys)
    for key, j in keys.items():
        culprits[j] = key
    lat = np.where(dropped_pk[vp], -1, t.latency_ns[vp])
    return Attribution(vp, t.packet_id[vp], lat, dropped_pk[vp],
                       [names[x] if x >= 0 else "" for x in vnf.tolist()], culprits, S)
