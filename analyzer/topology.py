"""Stage 2 of the analyzer: the NF graph, inferred from whose tx ids show up
in whose rx, checked against the manifest's declared topology.

An edge A -> B exists when packets A sent on some out-link are received by
B; each out-link (A, port) leads to the NF that receives most of its
matched packets, or to ``sink`` when (almost) none reappear.  The source is
the stream named ``source`` or any NF with tx records but no rx; an NF whose
rx mostly comes from no recorded tx is fed by an unrecorded ``source``.
"""
from dataclasses import dataclass, field

import numpy as np

from mscope.errors import CaptureFormatError

from . import _match
from .matching import DEFAULT_WINDOW_NS, match_next_int32

__all__ = ["Topology", "TopologyError", "infer_topology", "SOURCE", "SINK"]

SOURCE, SINK = "source", "sink"
#: An out-link or an in-flow counts when it carries at least this share of
#: the packets concerned; below it, what is left is id collisions or loss.
MIN_SHARE = 0.01


#: What a chain across hosts cannot be without its hosts' clocks aligned
#: (the collectors give each host's CLOCK_MONOTONIC, which counts from
#: that host's boot; mscope.analyzer.clocks aligns them by the packets
#: crossing the declared links between them).
_ACROSS_HOSTS = ("the capture's NFs are on {} hosts ({}), each with its own clock (counting "
                 "from its boot), and no link between them, declared or found in each "
                 "host's records, carried packets to align the clocks by (an NF of one host "
                 "between two of another's is not found): declare the chain's links (the "
                 "manifest's topology, or mscope diagnose --topology FILE), or diagnose one "
                 "host's NFs at a time (mscope diagnose --host NAME)")


def _one_clock(view, hosts):
    """Whether the times of `hosts` (a set of names) can be compared: the
    hosts' clocks were aligned by :func:`mscope.analyzer.clocks.align_hosts`."""
    return any(hosts <= g for g in getattr(view, "clock_groups", None) or ())


class TopologyError(CaptureFormatError):
    """The records do not determine an NF graph, or contradict the manifest."""


@dataclass
class Topology:
    """The NF graph of a capture.

    Attributes
    ----------
    edges : list of (str, str)
        Sorted links, ``source``/``sink`` included (the source stream keeps
        its own name).
    port_to : dict (str, int) -> str
        Where each out-link of each NF leads (an NF name or ``sink``).
    sources : list of str
        Names of the source NFs (tx only).
    order : list of str
        Every recorded NF, upstream before downstream.
    """
    edges: list
    port_to: dict
    sources: list
    order: list
    upstream: dict = field(default_factory=dict)

    def downstream(self, name):
        return sorted({d for (s, d) in self.edges if s == name})


#: Votes come only from ids no NF has twice on a side where at least this
#: share of the tx, or this many, have them (:func:`_once_per_nf`).
MIN_CLEAN, MIN_CLEAN_VOTES = 0.05, 1000
#: A topology error says how many packets share their id at an NF where
#: at least this share of ALIKE_SAMPLE in a row do.
ALIKE_NOTE = 0.5
ALIKE_SAMPLE = 100_000
#: Above this many tx entries the graph is inferred from a sample of ids.
SAMPLE_ABOVE = 400_000
#: ... one id in this many (the hash rule of _match.sample_into).
SAMPLE_EVERY = _match.SAMPLE_EVERY
#: An out-link sampled down keeps at least about this many votes.
MIN_VOTES = 200


def port_codes(port):
    """An NF's per-tx out-ports as small codes: ``(None, p)`` when every tx
    has port p (one out-link: no pass over a broadcast view, no array), else
    ``(codes, values)`` with ``values[codes]`` the ports -- the ports
    themselves over ``arange`` when they are small, else np.unique's."""
    if port.strides[0] == 0:                       # one out-link, broadcast
        lo = hi = int(port[0])
    else:
        lo, hi = int(port.min()), int(port.max())
    if lo == hi:
        return None, lo
    if lo >= 0 and hi < 1 << 16:
        return port, np.arange(hi + 1)
    values, codes = np.unique(port, return_inverse=True)
    return codes, values


def _small_links(port):
    """Per tx (uint8): whether its out-link has too few entries for a 1-in-64
    sample; None when no out-link has."""
    if len(port) == 0:
        return None
    codes, values = port_codes(port)
    if codes is None:
        return np.ones(len(port), np.uint8) if len(port) < SAMPLE_EVERY * MIN_VOTES else None
    cnt = np.bincount(codes, minlength=len(values))
    small = cnt < SAMPLE_EVERY * MIN_VOTES
    if not (small & (cnt > 0)).any():
        return None
    return small[codes].view(np.uint8)


def _votes(view):
    """The tx and rx entries that vote, concatenated in NF order: all of
    them, or above SAMPLE_ABOVE tx a sample (written NF by NF into arrays
    sized by a first counting pass, so no copy of every id in the capture
    is made)."""
    nfs = view.nfs
    if sum(len(n.tx_ids) for n in nfs) <= SAMPLE_ABOVE:
        def side(name):
            cols = [[getattr(n, name + "_ids") for n in nfs],
                    [getattr(n, name + "_ns") for n in nfs],
                    [np.full(len(n.rx_ids if name == "rx" else n.tx_ids), k, np.int64)
                     for k, n in enumerate(nfs)]]
            return [np.concatenate(c) for c in cols]

        tx_ids, tx_ns, tx_nf = side("tx")
        rx_ids, rx_ns, rx_nf = side("rx")
        return (tx_ids, tx_ns, tx_nf, np.concatenate([n.tx_port for n in nfs]),
                rx_ids, rx_ns, rx_nf)
    # the graph needs votes, not every packet: keep one id in SAMPLE_EVERY
    # (ids are hashes, so a bit pattern -- _match.sample_into's rule, the
    # top 3 bits of a multiplicative hash zero, as ids from other schemes
    # need not be uniform -- is a uniform sample and keeps a packet's tx
    # and rx together), and all the packets of any out-link that would get
    # too few votes that way: at every NF, tx and rx alike, or an NF they
    # reach further on (after a join) would see their rx come from no
    # recorded tx, and be given an unrecorded source (held-out ho58-04)
    u64 = lambda a: np.ascontiguousarray(a, np.uint64)
    i64 = lambda a: np.ascontiguousarray(a, np.int64)
    small_ids = [n.tx_ids[f.view(bool)] for n in nfs
                 if (f := _small_links(n.tx_port)) is not None]
    small_ids = u64(np.concatenate(small_ids)) if small_ids else None

    def forced(ids):
        if small_ids is None or not len(ids):
            return None
        seen = np.empty(len(ids), np.uint8)
        _match.contains(small_ids, u64(ids), seen)
        return seen

    tx_force = [forced(n.tx_ids) for n in nfs]
    rx_force = [forced(n.rx_ids) for n in nfs]

    def side(name, force):
        ids = [u64(getattr(n, name + "_ids")) for n in nfs]
        ns = [i64(getattr(n, name + "_ns")) for n in nfs]
        port = ([n.tx_port.astype(np.int32, copy=False) for n in nfs] if name == "tx"
                else [None] * len(nfs))
        counts = [_match.sample_count(i, f) for i, f in zip(ids, force)]
        room = sum(counts) + 1                     # sample_into's one slot of slack
        out_ids, out_ns = np.empty(room, np.uint64), np.empty(room, np.int64)
        out_port = np.empty(room, np.int32) if name == "tx" else None
        at = 0
        for k in range(len(nfs)):
            at = _match.sample_into(ids[k], ns[k], port[k], force[k], out_ids, out_ns,
                                    out_port, at)
        out_nf = np.repeat(np.arange(len(nfs), dtype=np.int64), counts)
        return (out_ids[:at], out_ns[:at], out_nf,
                None if out_port is None else out_port[:at])

    tx_ids, tx_ns, tx_nf, tx_port = side("tx", tx_force)
    rx_ids, rx_ns, rx_nf, _ = side("rx", rx_force)
    return tx_ids, tx_ns, tx_nf, tx_port, rx_ids, rx_ns, rx_nf


def _between_claimed(rx_nf, rx_ns, claimed, nn):
    """Which rx come between the first and the last rx of their NF that a
    recorded tx claims (every rx of an NF no recorded tx feeds).  Those
    before and after were in flight as the upstream's records began or
    ended (a live recording's edges, a window of a capture): not the
    mark of a source nobody recorded."""
    lo = np.full(nn, np.iinfo(np.int64).max)
    hi = np.full(nn, np.iinfo(np.int64).min)
    np.minimum.at(lo, rx_nf[claimed], rx_ns[claimed])
    np.maximum.at(hi, rx_nf[claimed], rx_ns[claimed])
    fed = lo <= hi
    lo[~fed], hi[~fed] = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    return (rx_ns >= lo[rx_nf]) & (rx_ns <= hi[rx_nf])


#: Mixes an NF's index into its ids (an odd 64-bit constant): one table
#: then finds an id an NF has twice on a side.
_NF_MIX = np.uint64(0x9E3779B97F4A7C15)


def _once_per_nf(tx_ids, tx_nf, rx_ids, rx_nf):
    """Which tx and rx vote: those of ids no NF has twice on a side (uint8
    masks), or None where every id passes.  A packet's id is on one tx
    and one rx of each NF on its path; one an NF sends or takes twice is
    several packets, which the window alone would tell apart.  Traffic
    whose packets hash alike (UDP of a constant payload: a traffic
    generator's) pairs an rx with another packet's tx at any NF, and its
    votes drew edges back upstream, into a cycle."""
    bad = []
    for ids, nf in ((tx_ids, tx_nf), (rx_ids, rx_nf)):
        with np.errstate(over="ignore"):
            key = ids ^ ((nf.astype(np.uint64) + np.uint64(1)) * _NF_MIX)
        once = np.empty(len(key), np.uint8)
        _match.unique_into(np.ascontiguousarray(key), once)
        bad.append(ids[once == 0])
    bad = np.concatenate(bad)
    if not len(bad):
        return None
    bad = np.unique(bad)
    out = []
    for ids in (tx_ids, rx_ids):
        hit = np.empty(len(ids), np.uint8)
        _match.contains(bad, np.ascontiguousarray(ids, np.uint64), hit)
        out.append(hit ^ 1)
    return out


def _alike(view, n=ALIKE_SAMPLE):
    """Share of the first `n` tx of each NF whose id another of them has:
    packets alike to the id hash (not the votes: a hash sample of ids
    has all of an id or none)."""
    ids = [np.asarray(nf.tx_ids[:n], np.uint64) for nf in view.nfs]
    ids = [i for i in ids if len(i)]
    if not ids:
        return 0.0
    once = [np.empty(len(i), np.uint8) for i in ids]
    for i, o in zip(ids, once):
        _match.unique_into(np.ascontiguousarray(i), o)
    return 1 - sum(int(o.sum()) for o in once) / sum(len(o) for o in once)


def _from_outside(tx_ids, tx_ns, rx_ids, rx_ns, rx_nf, unclaimed, nn):
    """Per NF, its `unclaimed` rx whose id no recorded tx sent before it:
    those of a source nobody recorded.  An rx with the id of an earlier
    recorded tx waited longer than the matching window (a packet sent to
    an NF that stopped for longer: the window parts the copies of an id,
    and in this match every hop of a packet is one)."""
    at = np.flatnonzero(unclaimed)
    ids = np.ascontiguousarray(rx_ids[at], np.uint64)
    sent = np.empty(len(tx_ids), np.uint8)
    _match.contains(ids, np.ascontiguousarray(tx_ids, np.uint64), sent)
    sent = np.flatnonzero(sent)
    if len(sent):
        # by id, then time: an id's first entry is its first tx
        sent = sent[np.lexsort((tx_ns[sent], tx_ids[sent]))]
        q = np.minimum(np.searchsorted(tx_ids[sent], ids), len(sent) - 1)
        before = (tx_ids[sent[q]] == ids) & (tx_ns[sent[q]] <= rx_ns[at])
        at = at[~before]
    return np.bincount(rx_nf[at], minlength=nn)


def infer_topology(view, check_manifest=True, window_ns=DEFAULT_WINDOW_NS) -> Topology:
    """Infer the NF graph of `view` from its records.

    Parameters
    ----------
    view : mscope.analyzer.ingest.CaptureView
    check_manifest : bool
        Compare with ``view.topology`` when the manifest has one.
    window_ns : int
        Matching window (see :func:`mscope.analyzer.matching.match_next`).

    Returns
    -------
    Topology

    Raises
    ------
    TopologyError
        Several NFs share no packet ids; the graph has a cycle; or it
        differs from the manifest's (the message names the edge).
    """
    names = [n.name for n in view.nfs]
    tx_ids, tx_ns, tx_nf, tx_port, rx_ids, rx_ns, rx_nf = _votes(view)
    clean = _once_per_nf(tx_ids, tx_nf, rx_ids, rx_nf)
    if clean is not None and (clean[0].sum() >= MIN_CLEAN * len(tx_ids)
                              or clean[0].sum() >= MIN_CLEAN_VOTES):
        tx_ids, tx_ns, tx_nf, tx_port = (a[clean[0].view(bool)]
                                         for a in (tx_ids, tx_ns, tx_nf, tx_port))
        rx_ids, rx_ns, rx_nf = (a[clean[1].view(bool)] for a in (rx_ids, rx_ns, rx_nf))
    del clean

    hosts = sorted({h for n in view.nfs for h in n.hosts})

    def error(text):
        # ids too alike to follow packets by are the likelier cause
        alike = _alike(view)
        if alike >= ALIKE_NOTE:
            text += (f"; {alike:.0%} of the packets share their id with another packet at "
                     f"one NF: packets alike in every field the id hashes (UDP with a "
                     f"constant payload and IPv4 id, as traffic generators send) cannot "
                     f"be told apart (docs/packet-ids.md)")
        # or a chain across hosts, whose times cannot be compared
        if len(hosts) > 1 and not _one_clock(view, set(hosts)):
            text += f"; {_ACROSS_HOSTS.format(len(hosts), ', '.join(hosts))}"
        return TopologyError(text)
    m, _ = match_next_int32(tx_ids, tx_ns, rx_ids, rx_ns, window_ns)
    got = m >= 0
    dst = np.full(len(m), -1, np.int64)         # (no rx at all: nothing to index)
    dst[got] = rx_nf[m[got]]

    edges, port_to = set(), {}
    # votes per (nf, port, dst): one unique over an encoded key
    nn = len(names)
    key = (tx_nf * (int(tx_port.max(initial=0)) + 1) + tx_port) * (nn + 1) + (dst + 1)
    if len(key) and key.min() >= 0 and key.max() < 1 << 20:
        cnt = np.bincount(key)                     # no sort of the votes
        uk = np.flatnonzero(cnt)
        cnt = cnt[uk]
    else:
        uk, cnt = np.unique(key, return_counts=True)
    per_link = {}
    for k, c in zip(uk.tolist(), cnt.tolist()):
        link, d = divmod(k, nn + 1)
        per_link.setdefault(link, []).append((c, d - 1))
    np1 = int(tx_port.max(initial=0)) + 1
    for link, votes in per_link.items():
        a, port = divmod(link, np1)
        total = sum(c for c, _ in votes)
        best_c, best_d = max((v for v in votes if v[1] >= 0), default=(0, -1))
        if best_d >= 0 and best_c >= MIN_SHARE * total:
            port_to[(names[a], port)] = names[best_d]
        else:
            port_to[(names[a], port)] = SINK
        edges.add((names[a], port_to[(names[a], port)]))

    sources = [n.name for n in view.nfs
               if (len(n.tx_ids) and not len(n.rx_ids)) or n.name == SOURCE]
    # NFs fed (in part) by a source nobody recorded
    claimed = np.zeros(len(rx_nf), bool)
    claimed[m[got]] = True
    n_rx = np.bincount(rx_nf, minlength=nn)
    unclaimed = ~claimed & _between_claimed(rx_nf, rx_ns, claimed, nn)
    n_unclaimed = np.bincount(rx_nf[unclaimed], minlength=nn)
    if (n_unclaimed >= MIN_SHARE * n_rx).any():
        n_unclaimed = _from_outside(tx_ids, tx_ns, rx_ids, rx_ns, rx_nf, unclaimed, nn)
    del tx_ids, tx_ns, rx_ids, rx_ns
    for k, n in enumerate(view.nfs):
        if n_rx[k] and n_unclaimed[k] >= MIN_SHARE * n_rx[k]:
            edges.add((SOURCE, n.name))
    declared = view.topology if check_manifest else None
    if (len(view.nfs) > 1 and not any(s in names and d in names for s, d in edges)
            and (declared is None or any(s in names and d in names for s, d in declared))):
        # NFs side by side, each fed by its own unrecorded source, share no
        # packets either; only a declared topology that says so tells them
        # from NFs whose ids do not match (checked edge by edge below)
        empty = [n.name for n in view.nfs if not len(n.rx_ids) and not len(n.tx_ids)]
        raise error(
            f"topology: no packet ids are shared between any two of the {len(names)} "
            f"NFs ({', '.join(names)}); cannot infer the NF graph "
            + (f"({', '.join(empty)} hold no packet records: lost? see mscope capture "
               f"info)" if empty else
               "(NFs side by side, each fed from outside: say so with --topology)"))

    # upstream-before-downstream order (Kahn); a cycle is an error
    inner = {(s, d) for s, d in edges if s in names and d in names}
    on = {n.name: set(n.hosts) for n in view.nfs}
    for s, d in sorted(inner):
        if on[s] and on[d] and on[s].isdisjoint(on[d]) and not _one_clock(view, on[s] | on[d]):
            raise TopologyError(
                f"topology: {s} (host {', '.join(sorted(on[s]))}) feeds {d} (host "
                f"{', '.join(sorted(on[d]))}): "
                + _ACROSS_HOSTS.format(len(hosts), ", ".join(hosts)))
    indeg = {n: 0 for n in names}
    for _, d in inner:
        indeg[d] += 1
    order, ready = [], sorted(n for n in names if indeg[n] == 0)
    while ready:
        n = ready.pop(0)
        order.append(n)
        for s, d in sorted(inner):
            if s == n:
                indeg[d] -= 1
                if indeg[d] == 0:
                    ready.append(d)
    if len(order) != len(names):
        stuck = sorted(n for n in names if n not in order)
        raise error(f"topology: the records form a cycle through {', '.join(stuck)}")

    edges = sorted(edges)
    if check_manifest and view.topology is not None:
        declared = set(view.topology)
        for e in edges:
            if e not in declared:
                raise error(
                    f"topology: edge {e[0]} -> {e[1]} is in the records but not in "
                    f"the manifest")
        for e in sorted(declared):
            if e not in set(edges):
                raise error(
                    f"topology: edge {e[0]} -> {e[1]} is in the manifest but not in "
                    f"the records")
    upstream = {n: sorted({s for s, d in edges if d == n}) for n in names}
    return Topology(edges, port_to, sources, order, upstream)
