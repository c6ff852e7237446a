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

Which NF feeds which across hosts the times cannot tell: with the offset
free, NFs on B that sit between two of A's are as consistent with the
records as NFs after all of A's, their times only later by the
difference; and the records' topology is inferred by matching times,
which needs the clocks aligned first.  So the links are the declared
ones (the manifest's topology, or ``mscope diagnose --topology``), or
else each host's own records tell them (one clock each): a packet an NF
of A sends that no NF of A takes after it, and that an NF of B takes with
no NF of B having sent it before, crossed from A to B.

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
        The links across the two hosts whose packets gave it.
    packets : int
        Packets seen crossing those links.
    inferred : bool
        The links were found in each host's own records, not declared.
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
    inferred: bool = False


def align_hosts(view, links=None):
    """Shift the times of the NFs of each host of `view` onto one clock, by
    the packets crossing the `links` (``(src, dst)`` NF names, as
    declared; None: inferred, :func:`_inferred_links`) between hosts; in
    place.

    Returns
    -------
    (list of HostShift, list of set of str)
        The hosts shifted, and the groups of hosts whose times can now be
        compared (a host alone is a group of one).  Hosts no link with
        enough packets joins keep their own clocks.
    """
    host_of = {n.name: n.hosts[0] for n in view.nfs if len(n.hosts) == 1}
    hosts = sorted(set(host_of.values()))
    if len(hosts) < 2:
        return [], [set(hosts)]
    sample = _votes(view)                   # the topology's: what votes for links
    inferred = links is None
    if inferred:
        links = _inferred_links(view, host_of, hosts, sample)
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
    shifts, groups = _spanning(hosts, bounds, inferred)
    _refuse_crossing(view, host_of, groups, sample)
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


#: A link across hosts is inferred where the packets some NF u of host A
#: sends to no NF of A and the packets some NF v of host B takes from none
#: of B's share at least this share of the fewer (of the topology's
#: sample), and MIN_CROSSING of them.
LINK_SHARE = 0.1


def _inferred_links(view, host_of, hosts, sample):
    """The links across hosts, from each host's own records (one clock): a
    packet NF u on host A sends that no NF of A takes after it, and that
    NF v on host B takes with no NF of B having sent it before, crossed
    from u to v.  A chain split once across hosts is found so.  An NF of B
    between two of A's is not: A takes the packet again later, and the
    packet that left A's last NF for nowhere on A reads as taken by B's
    next.  Where B's time of the packets fits in a gap between two of
    their visits on A (B may be there as well as after), no link is
    inferred (None), and :func:`_refuse_crossing` says to declare them."""
    names = [n.name for n in view.nfs]
    code = {h: i for i, h in enumerate(hosts)}
    nf_host = np.array([code.get(host_of.get(name), -1) for name in names], np.int64)
    tx_ids, tx_ns, tx_nf, _, rx_ids, rx_ns, rx_nf = sample
    tx_h, rx_h = nf_host[tx_nf], nf_host[rx_nf]
    per = {h: _per_id(tx_ids[tx_h == h], tx_ns[tx_h == h], rx_ids[rx_h == h],
                      rx_ns[rx_h == h]) for h in range(len(hosts))}
    left, came = {}, {}         # NF -> the ids it sends out of / takes into its host
    for k in np.unique(tx_nf).tolist():
        if nf_host[k] >= 0:
            sel = tx_nf == k
            t = _seen(per[nf_host[k]]["last_rx"], tx_ids[sel])
            left[k] = np.unique(tx_ids[sel][~((t >= 0) & (t >= tx_ns[sel]))])
    for k in np.unique(rx_nf).tolist():
        if nf_host[k] >= 0:
            sel = rx_nf == k
            t = _seen(per[nf_host[k]]["first_tx"], rx_ids[sel])
            came[k] = np.unique(rx_ids[sel][~((t >= 0) & (t <= rx_ns[sel]))])
    links = []
    for u, t in left.items():
        for v, r in came.items():
            if nf_host[u] == nf_host[v] or not len(t) or not len(r):
                continue
            both = np.intersect1d(t, r, assume_unique=True)
            if len(both) < MIN_CROSSING or len(both) < LINK_SHARE * min(len(t), len(r)):
                continue
            # the packets' time on v's host fits in a gap between two
            # visits on u's for (nearly) all of them: v's host may sit
            # between two of u's NFs as well as after them
            # (a packet B only takes, never sends, cannot come back)
            g = _seen(per[nf_host[u]]["gap"], both)
            d = _seen(per[nf_host[v]]["span"], both)
            if np.count_nonzero((d >= 0) & (g >= d)) >= BETWEEN_SHARE * len(both):
                return None
            links.append((names[u], names[v]))
    return links


#: Where the time packets spend on one host fits in a gap between two of
#: their visits on the other for this share of them, the first host may
#: sit in that gap as well as after: the links are not inferred.
BETWEEN_SHARE = 0.99


def _per_id(tx_ids, tx_ns, rx_ids, rx_ns):
    """For one host's sampled entries, one sorted pass: tables (distinct
    ids, sorted; a time per id, -1: none) for :func:`_seen` of each id's
    ``last_rx`` and ``first_tx`` there, its longest ``gap`` between a tx
    and the next rx of it there, and its ``span`` there, from its first rx
    to its last tx."""
    ids = np.concatenate([tx_ids, rx_ids])
    ns = np.concatenate([tx_ns, rx_ns])
    is_rx = np.r_[np.zeros(len(tx_ids), bool), np.ones(len(rx_ids), bool)]
    if not len(ids):
        return dict.fromkeys(("last_rx", "first_tx", "gap", "span"), (ids, ns))
    o = np.lexsort((is_rx, ns, ids))            # a tx before an rx at one time
    ids, ns, is_rx = ids[o], ns[o], is_rx[o]
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    g = np.full(len(ids), -1, np.int64)
    after = np.flatnonzero(is_rx[1:] & ~is_rx[:-1] & (ids[1:] == ids[:-1])) + 1
    g[after] = ns[after] - ns[after - 1]
    big = np.iinfo(np.int64).max
    first_rx = np.minimum.reduceat(np.where(is_rx, ns, big), first)
    last_rx = np.maximum.reduceat(np.where(is_rx, ns, -1), first)
    first_tx = np.minimum.reduceat(np.where(is_rx, big, ns), first)
    last_tx = np.maximum.reduceat(np.where(is_rx, -1, ns), first)
    u = ids[first]
    return {"last_rx": (u, last_rx), "first_tx": (u, np.where(first_tx < big, first_tx, -1)),
            "gap": (u, np.maximum.reduceat(g, first)),
            "span": (u, np.where((last_tx >= 0) & (first_rx < big), last_tx - first_rx, -1))}


def _seen(table, ids):
    """The time `table` (:func:`_per_id`'s) has for each id, -1 where
    none."""
    u, t = table
    if not len(u):
        return np.full(len(ids), -1, np.int64)
    at = np.minimum(np.searchsorted(u, ids), len(u) - 1)
    return np.where(u[at] == ids, t[at], -1)


def _refuse_crossing(view, host_of, groups, sample):
    """A one-line TopologyError where packets (of the topology's `sample`)
    cross between hosts whose clocks no link aligned: followed by their
    times as they are, such a chain reads as one chain ending where the
    other host's begins, fed from outside (which it is not, silently)."""
    if len(groups) < 2:
        return
    group = {h: i for i, g in enumerate(groups) for h in g}
    names = [n.name for n in view.nfs]
    tx_ids, _, tx_nf, _, rx_ids, _, rx_nf = sample
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


def _spanning(hosts, bounds, inferred):
    """Each host's HostShift onto the first host of its group (hosts joined
    by links with bounds), by host, itself too (a shift of 0); the
    groups."""
    adj = {h: [] for h in hosts}
    for (a, b), (up, low, via, n) in bounds.items():
        hi, lo = (min(up) if up else None), (max(low) if low else None)
        if hi is not None and lo is not None and hi < lo:
            # no shift has every packet sent before it was taken
            raise TopologyError(
                f"topology: the {'inferred' if inferred else 'declared'} links between "
                f"hosts {a} and {b} "
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
                shifts[b] = HostShift(b, root, shifts[a].shift_ns + off, via, n, spread,
                                      inferred)
                todo.append(b)
        groups.append(group)
    return shifts, groups


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
