"""Hosts' clocks, aligned by the packets that cross between them.

Each host's collector gives its records' times in that host's
CLOCK_MONOTONIC, which counts from the host's boot: the times of NFs on two
hosts cannot be compared as they are.  A packet that NF u on host A sends
to NF v on host B was sent before it was taken, so

    rx_v - tx_u = (B's clock - A's clock) + its wait at v

and the least of those over many packets is the clocks' difference plus
the shortest wait: a packet that found v's queue empty, taken at v's next
poll.  Aligning by it needs no clock synchronisation between the hosts
(NTP's milliseconds would make every packet crossing them late); the
shortest wait itself is what the aligned times cannot see, and count as
none.  A link back from B to A bounds the difference from below the same
way; with both, the difference is taken midway between the bounds.

Which NF feeds which across hosts must be declared (the manifest's
topology, or ``mscope diagnose --topology``): the times cannot tell it.
With the offset free, NFs on B that sit between two of A's are as
consistent with the records as NFs after all of A's, their times only
later by the difference; and the records' own topology is inferred by
matching times, which needs the clocks aligned first.

Every packet crossing a link votes, and the least difference is taken
among those within a millisecond of a low quantile, so that a few ids two
packets happen to share cannot move it.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .topology import _ACROSS_HOSTS, TopologyError, _votes


#: A link's differences more than OUTLIER_NS under its LOW_QUANTILE are
#: not its packets' own: ids two unrelated packets share, which can give
#: any difference at all.
LOW_QUANTILE = 0.001
OUTLIER_NS = 1_000_000
#: Fewest packets seen crossing a link to align its hosts by.
MIN_CROSSING = 20


@dataclass
class HostShift:
    """One host's clock aligned to another's.

    Attributes
    ----------
    host : str
        The host whose times were shifted.
    to : str
        The host it was aligned to (the first of its group, by name).
    shift_ns : int
        Subtracted from every time of `host`'s NFs: how far its clock read
        ahead of `to`'s.
    via : list of (str, str)
        The declared links across the two hosts whose packets gave it.
    packets : int
        Packets seen crossing those links.
    spread_ns : int or None
        Where links run both ways: how far apart the two bounds were (the
        aligned times may be off by up to half of it); None where they
        run one way (the aligned times read the shortest wait as none).
    """
    host: str
    to: str
    shift_ns: int
    via: list
    packets: int
    spread_ns: Optional[int] = None


def align_hosts(view, links):
    """Shift the times of the NFs of each host of `view` onto one clock, by
    the packets crossing the declared `links` (``(src, dst)`` NF names)
    between hosts; in place.

    Returns
    -------
    (list of HostShift, list of set of str)
        The hosts shifted, and the groups of hosts whose times can now be
        compared (a host alone is a group of one).  Hosts no declared link
        with enough packets joins keep their own clocks.
    """
    host_of = {n.name: n.hosts[0] for n in view.nfs if len(n.hosts) == 1}
    hosts = sorted(set(host_of.values()))
    if len(hosts) < 2:
        return [], [set(hosts)]
    names = [n.name for n in view.nfs]
    k_of = {name: k for k, name in enumerate(names)}
    cross = [(u, v) for u, v in links or ()
             if u in host_of and v in host_of and host_of[u] != host_of[v]]
    bounds = {}         # (A, B), A < B -> ([upper bounds], [lower bounds], links, packets)
    for u, v in cross:
        d = _differences(view.nfs[k_of[u]], view.nfs[k_of[v]])
        if len(d) < MIN_CROSSING:
            continue
        n = len(d)
        d = _least(d)
        a, b = host_of[u], host_of[v]
        key = (min(a, b), max(a, b))
        up, low, via, m = bounds.setdefault(key, ([], [], [], 0))
        # B - A <= rx_v - tx_u, for a link from A to B; for one from B to
        # A, A - B <= d, so B - A >= -d
        (up if a < b else low).append(d if a < b else -d)
        via.append((u, v))
        bounds[key] = (up, low, via, m + n)
    shifts, groups = _spanning(hosts, bounds, view, host_of)
    _refuse_crossing(view, host_of, groups)
    return shifts, groups


def _refuse_crossing(view, host_of, groups):
    """A one-line TopologyError where packets cross between hosts whose
    clocks no declared link aligned: followed by their times as they are,
    such a chain reads as one chain ending where the other host's begins,
    fed from outside (which it is not, silently)."""
    if len(groups) < 2:
        return
    group = {h: i for i, g in enumerate(groups) for h in g}
    names = [n.name for n in view.nfs]
    tx_ids, _, tx_nf, _, rx_ids, _, rx_nf = _votes(view)
    g = np.array([group.get(host_of.get(name), -1) for name in names], np.int64)
    best = None
    for k in np.unique(tx_nf).tolist():
        t = tx_ids[tx_nf == k]
        for j in np.unique(rx_nf).tolist():
            if g[k] < 0 or g[j] < 0 or g[k] == g[j]:
                continue
            n = len(np.intersect1d(t, rx_ids[rx_nf == j]))
            if n >= MIN_CROSSING and (best is None or n > best[0]):
                best = (n, names[k], names[j])
    if best is not None:
        n, u, v = best
        hosts = sorted(set(host_of.values()))
        raise TopologyError(
            f"topology: {u} (host {host_of[u]}) and {v} (host {host_of[v]}) share packets "
            f"({n:,} of the sample): "
            + _ACROSS_HOSTS.format(len(hosts), ", ".join(hosts)))


def _differences(U, V):
    """``rx - tx`` of every packet NF `U` sent and NF `V` took, paired by
    id (an id either side has twice: its first rx at V).  Every packet, not
    the topology's sample: the least wait of a sample of 4,676 was 3 us
    over the least of the link's 37,000 on a live capture, and the packets
    that waited less became drops."""
    if not len(V.rx_ids):
        return np.zeros(0, np.int64)
    o = np.argsort(V.rx_ids, kind="stable")
    ids = V.rx_ids[o]
    at = np.minimum(np.searchsorted(ids, U.tx_ids), len(ids) - 1)
    hit = np.flatnonzero(ids[at] == U.tx_ids)
    return V.rx_ns[o[at[hit]]] - U.tx_ns[hit]


def _least(d):
    """The least of the differences `d`, but for those more than
    OUTLIER_NS under their LOW_QUANTILE: ids two packets share, far from
    the link's own packets.  The least itself, not a quantile: a bound a
    few us too high makes the packets that waited less than that arrive
    after they were taken, which the matching reads as drops (199 false
    drops at nat of a live 15 s capture, its clock 3 us off)."""
    q = d[np.argpartition(d, int(LOW_QUANTILE * len(d)))[int(LOW_QUANTILE * len(d))]]
    return int(d[d >= q - OUTLIER_NS].min())


def _spanning(hosts, bounds, view, host_of):
    """Each host's HostShift onto the first host of its group (hosts joined
    by links with bounds), the groups; the NFs' times shifted."""
    adj = {h: [] for h in hosts}
    for (a, b), (up, low, via, n) in bounds.items():
        hi, lo = (min(up) if up else None), (max(low) if low else None)
        if hi is not None and lo is not None and hi < lo:
            # no shift has every packet sent before it was taken
            raise TopologyError(
                f"topology: the declared links between hosts {a} and {b} "
                f"({', '.join(f'{u} -> {v}' for u, v in via)}) cannot all be: the packets "
                f"crossing them would have to be taken {(lo - hi) / 1e3:,.1f} us before "
                f"they were sent, whatever the hosts' clocks; check the links' direction")
        if hi is not None and lo is not None:
            off, spread = (hi + lo) // 2, hi - lo
        else:
            off, spread = (hi if hi is not None else lo), None
        adj[a].append((b, off, via, n, spread))
        adj[b].append((a, -off, via, n, spread))
    shifts, groups, seen = {}, [], set()
    for root in hosts:
        if root in seen:
            continue
        group, todo = {root}, [root]
        seen.add(root)
        shifts[root] = HostShift(root, root, 0, [], 0)
        while todo:
            a = todo.pop(0)
            # the busiest crossing first: its bound is the surest
            for b, off, via, n, spread in sorted(adj[a], key=lambda e: -e[3]):
                if b in seen:
                    continue
                seen.add(b)
                group.add(b)
                shifts[b] = HostShift(b, root, shifts[a].shift_ns + off, via, n, spread)
                todo.append(b)
        groups.append(group)
    for n in view.nfs:
        s = shifts.get(host_of.get(n.name))
        if s is not None and s.shift_ns:
            _shift_nf(n, s.shift_ns)
    for w in view.incomplete:
        s = shifts.get(host_of.get(w.get("nf")))
        if s is not None and s.shift_ns:
            for k in ("from_ns", "to_ns"):
                if w.get(k) is not None:
                    w[k] -= s.shift_ns
    return [s for s in shifts.values() if s.host != s.to], groups


def _shift_nf(n, s):
    """Every time of NFRecords `n` less `s` ns, in place (int64's ends,
    where a loss has no record before or after it, kept)."""
    for name in ("rx_ns", "batch_ns", "tx_ns", "idle_ns"):
        a = getattr(n, name)
        setattr(n, name, a - s if len(a) else a)
    if len(n.silences):
        n.silences = n.silences - s
    if len(n.refused):
        r = n.refused.copy()
        r["time_ns"] -= s
        n.refused = r
    if len(n.spans):
        sp = n.spans.copy()
        sp[:, 1:] -= s
        n.spans = sp
    if len(n.lost):
        lo = n.lost.copy()
        big = np.iinfo(np.int64)
        inner = (lo != big.min) & (lo != big.max)
        lo[inner] -= s
        n.lost = lo
