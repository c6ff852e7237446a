"""Stage 3 of the analyzer: every packet's path through the NFs.

A packet is one source tx (or, where no source was recorded, one rx that no
upstream tx accounts for).  At each hop: its arrival at the NF's queue (its
tx time at the upstream NF or the source; -1 where unrecorded), its rx and
tx times there; a packet sent towards B that B never receives was dropped
at B's queue.  Ids are header-invariant, so NATs change nothing here; joins
pool the tx of every upstream NF that feeds B, splits follow each out-link.

Two id matches per NF (upstream tx -> rx, rx -> tx), then one compiled walk
(``_match.walk_paths``) that follows each packet from its start and writes
its hops in path order -- no sort of all hops, and no capture-wide
concatenation of ids or times: on a 9.5 M-hop capture (bench/analyze.py)
the lexsort of hops and the concatenated copies were the larger part of
this stage's time and its ~1 GiB of temporaries.  The walk writes only the
int32 hop arrays; the matches are freed before a second pass
(``_match.hop_times``) adds the three int64 time arrays, so the stage's
peak is its result: 644 -> 460 MiB over the capture there (0.15 s for the
walk either way).

The matches run upstream first so that each can use what the previous one
established (``_match.match_known_into``): ids checked once to be distinct
where packets enter the chain stay "known" along every pair matched by
them, and the pairs of known ids are found by position (a FIFO keeps
them in order) instead of by a hash join -- 0.71 -> 0.19 s for the 11
matches of that capture, same result.
"""
from dataclasses import dataclass, field

import numpy as np

from . import _match
from .arrivals import arrivals_from_occupancy
from .fates import REASONS, unknown_inputs, unknown_inside
from .matching import DEFAULT_WINDOW_NS
from .topology import port_codes

__all__ = ["Trajectories", "build_trajectories"]

#: The per-packet arrays of the capture view that nothing reads once the
#: ids are matched (build_trajectories(..., release_ids=True)).
_MATCHED_ARRAYS = ("rx_ids", "tx_ids", "rx_port", "tx_port", "tx_batch")


@dataclass
class Trajectories:
    """Paths of all packets, as flat arrays.

    Per packet (index p): ``packet_id``, ``src_ns`` (source tx, -1 when not
    recorded), ``exit_ns`` (tx towards the sink, -1 if none), ``drop_nf``
    (int32 index into ``nf_names`` of the NF whose queue dropped it, -1),
    ``drop_ns`` (when it reached that queue), ``latency_ns`` (exit - src,
    -1 where either is unknown).  With one source, ``packet_id`` and
    ``src_ns`` are read-only views of its ``tx_ids`` and ``tx_ns`` (no
    copy; see ``_packet_starts``).

    Per hop (index h, grouped by packet, in path order): ``hop_packet``,
    ``hop_nf``, ``hop_arrival_ns``, ``hop_rx_ns`` and ``hop_tx_ns`` (-1 when
    dropped before), ``hop_rx`` / ``hop_tx`` (index into that NF's rx / tx
    arrays, -1).  A drop is a hop whose ``hop_rx`` is -1.  ``hop_packet``,
    ``hop_nf``, ``hop_rx`` and ``hop_tx`` are int32 (a diagnosis stays
    below 2**31 packets and hops; times are int64).

    ``src_addr``, ``dst_addr`` (uint32 per packet, 0 unknown): the IPv4
    addresses from the first hop whose NF wrote address records.

    ``collisions``: ids that had to be told apart by time, per NF name
    (count of matched-side entries), and ``collision_rate`` over all
    matched entries.

    A packet no recorded tx sent (its path starts at an NF's rx: the
    chain's source is not recorded) has as ``src_ns`` its arrival at that
    NF's queue as the NF's occupancy records tell it
    (:func:`~mscope.analyzer.arrivals.arrivals_from_occupancy`), -1 where
    they cannot; ``arrivals_estimated`` and ``arrivals_unknown`` count
    those packets per NF name (NFs with none left out).

    ``fate_unknown``: per NF name, the packets sent to it (or taken by it)
    whose fate its records cannot tell, by window
    (:data:`~mscope.analyzer.fates.REASONS`: before they begin, after they
    end, in lost records; NFs with none left out).  Their paths end with
    no hop there and no drop: they are no victims
    (:mod:`mscope.analyzer.fates`).
    """
    nf_names: list
    packet_id: np.ndarray
    src_ns: np.ndarray
    exit_ns: np.ndarray
    drop_nf: np.ndarray
    drop_ns: np.ndarray
    latency_ns: np.ndarray
    hop_packet: np.ndarray
    hop_nf: np.ndarray
    hop_arrival_ns: np.ndarray
    hop_rx_ns: np.ndarray
    hop_tx_ns: np.ndarray
    hop_rx: np.ndarray
    hop_tx: np.ndarray
    collisions: dict
    collision_rate: float
    src_addr: np.ndarray = None
    dst_addr: np.ndarray = None
    arrivals_estimated: dict = field(default_factory=dict)
    arrivals_unknown: dict = field(default_factory=dict)
    fate_unknown: dict = field(default_factory=dict)

    @property
    def has_addr(self) -> bool:
        """Whether any packet's addresses are known (address records)."""
        return self.src_addr is not None and bool((self.src_addr != 0).any())

    def hops_at(self, nf_name):
        """Boolean mask of the hops at NF `nf_name`."""
        return self.hop_nf == self.nf_names.index(nf_name)


def _tx_dest(nf, port_to, nfi):
    """Per tx of `nf`: index of the NF its out-link leads to, -1 for the
    sink; or, when every tx has the same (one out-link), (None, that
    index)."""
    port = nf.tx_port
    if len(port) == 0:
        return np.empty(0, np.int32), None
    dest_of = {p: nfi.get(d, -1) for (name, p), d in port_to.items() if name == nf.name}
    codes, values = port_codes(port)
    if codes is None:                              # one out-link: no array at all
        return None, dest_of.get(values, -1)
    dest = np.full(len(values), -1, np.int32)      # values ascend
    for p, d in dest_of.items():
        i = int(np.searchsorted(values, p))
        if i < len(values) and values[i] == p:
            dest[i] = d
    return dest[codes], None


def _upstream_first(names, topo):
    """NF indices with every NF after those that feed it (topology's order;
    NFs it does not list, last)."""
    nfi = {n: k for k, n in enumerate(names)}
    first = [nfi[n] for n in topo.order if n in nfi]
    listed = set(first)
    return first + [k for k in range(len(names)) if k not in listed]


def build_trajectories(view, topo, window_ns=DEFAULT_WINDOW_NS,
                       release_ids=False) -> Trajectories:
    """Reconstruct every packet's path.

    Parameters
    ----------
    view : mscope.analyzer.ingest.CaptureView
    topo : mscope.analyzer.topology.Topology
    window_ns : int
        Longest accepted gap between an upstream tx and the rx downstream,
        and between an NF's rx and tx of one packet, for the copies of an
        id sent more than once (:func:`~mscope.analyzer.matching.match_next`),
        where the NF paused no longer: an NF's window is this plus its
        longest gap between rx batches (:func:`_window_of`).
    release_ids : bool
        Free the view's ids, ports and tx batches once matched
        (``CaptureView.release_packets``): ``mscope diagnose`` reads them
        no more.

    Returns
    -------
    Trajectories

    Raises
    ------
    ValueError
        An NF has 2**31 rx or tx entries or more, or the capture 2**31
        packets or hops (int32 indices).
    """
    nfs = view.nfs
    names = [n.name for n in nfs]
    nfi = {n: k for k, n in enumerate(names)}
    # tx_dest[k] is None where every tx of k takes one out-link, one_dest[k]:
    # no array for the NFs with one (all but an lb), 4 B per tx saved
    tx_dest, one_dest = [None] * len(nfs), np.full(len(nfs), -1, np.int32)
    for k, n in enumerate(nfs):
        d, one = _tx_dest(n, topo.port_to, nfi)
        if one is None:
            tx_dest[k] = d
        else:
            one_dest[k] = one
    n_tx = [len(n.tx_ids) for n in nfs]
    tx_ns = [np.ascontiguousarray(n.tx_ns, np.int64) for n in nfs]
    rx_ns = [np.ascontiguousarray(n.rx_ns, np.int64) for n in nfs]
    tx_ids = [np.ascontiguousarray(n.tx_ids, np.uint64) for n in nfs]
    rx_ids = [np.ascontiguousarray(n.rx_ids, np.uint64) for n in nfs]
    # the tx of every out-link feeding k, pooled in NF then index order;
    # (u, sel, n): NF u's tx, all of them (sel None) or those with
    # tx_dest[u] == sel, gathered when the pool is built
    feeds = [[] for _ in nfs]
    for u, d in enumerate(tx_dest):
        if not n_tx[u]:
            continue
        if d is None:                              # one out-link: no pass over d
            if one_dest[u] >= 0:
                feeds[one_dest[u]].append((u, None, n_tx[u]))
            continue
        per_dest = np.bincount(d + 1, minlength=len(nfs) + 1)
        for k in np.flatnonzero(per_dest[1:]).tolist():
            whole = per_dest[k + 1] == n_tx[u]
            feeds[k].append((u, None if whole else k, int(per_dest[k + 1])))
    # filled by the matches; -1 (unmatched) where no NF is fed by that tx
    tx2rx = [None] * len(nfs)
    rx2tx = [None] * len(nfs)
    rx_mark = [None] * len(nfs)
    amb = [0] * len(nfs)
    fate = [np.zeros(len(REASONS), np.int64) for _ in nfs]
    # ids known to be distinct (match_known_into): those of the entries no
    # recorded tx feeds (source tx, rx of an NF nothing feeds) are checked
    # together; every later side inherits them through its matched pairs.
    # A feed not done yet when its NF is (no such order) counts as unknown
    known_tx, known_rx = [None] * len(nfs), [None] * len(nfs)
    roots = ([("tx", k) for k, n in enumerate(nfs) if len(n.tx_ids) and not len(n.rx_ids)]
             + [("rx", k) for k, n in enumerate(nfs) if len(n.rx_ids) and not feeds[k]])
    if roots:
        ids = [(tx_ids if side == "tx" else rx_ids)[k] for side, k in roots]
        flags = np.empty(sum(len(i) for i in ids), np.uint8)
        _match.unique_into(np.concatenate(ids) if len(ids) > 1 else ids[0], flags)
        at = np.cumsum([0] + [len(i) for i in ids])
        for (side, k), lo, hi in zip(roots, at[:-1], at[1:]):
            (known_tx if side == "tx" else known_rx)[k] = flags[lo:hi]
        del ids, flags
    matched = 0
    for k in _upstream_first(names, topo):
        window_k = _window_of(nfs[k], window_ns)       # its queue's and inside it
        if feeds[k] and len(rx_ids[k]):
            pool = feeds[k]
            segments = np.cumsum([0] + [n for _, _, n in pool])
            picked = [None] * len(pool)            # per part with a sel: its tx indices
            if len(pool) == 1 and pool[0][1] is None:
                u = pool[0][0]
                a_ids, a_ns = tx_ids[u], tx_ns[u]
                a_known = known_tx[u] if known_tx[u] is not None else np.zeros(n_tx[u], np.uint8)
            else:
                # written in place, part by part: no per-part copies to
                # concatenate; one slot of slack for gather_dest
                room = int(segments[-1]) + 1
                a_ids, a_ns = np.empty(room, np.uint64), np.empty(room, np.int64)
                a_known = np.empty(room, np.uint8)
                for q, ((u, sel, n), lo, hi) in enumerate(zip(pool, segments[:-1],
                                                              segments[1:])):
                    if sel is None:
                        a_ids[lo:hi], a_ns[lo:hi] = tx_ids[u], tx_ns[u]
                        a_known[lo:hi] = 0 if known_tx[u] is None else known_tx[u]
                    else:
                        picked[q] = np.empty(n + 1, np.int32)
                        _match.gather_dest(tx_dest[u], sel, tx_ids[u], tx_ns[u], known_tx[u],
                                           a_ids, a_ns, a_known, int(lo), picked[q])
                a_ids, a_ns, a_known = a_ids[:-1], a_ns[:-1], a_known[:-1]
            m = np.empty(len(a_ids), np.int32)
            mark = np.empty(len(rx_ids[k]), np.uint8)
            amb[k] += _match.match_known_into(a_ids, a_ns, a_known, segments, rx_ids[k],
                                              rx_ns[k], window_k, m, mark)
            fate[k] += unknown_inputs(nfs[k], a_ns, m, segments)
            del a_ids, a_ns, a_known
            for (u, sel, n), ix, lo, hi in zip(pool, picked, segments[:-1], segments[1:]):
                if sel is None:
                    tx2rx[u] = m[lo:hi].copy() if len(pool) > 1 else m
                else:
                    if tx2rx[u] is None:
                        tx2rx[u] = np.full(n_tx[u], -1, np.int32)
                    tx2rx[u][ix[:n]] = m[lo:hi]
            del m, pool, picked
            known_rx[k] = mark >> 1
        else:
            mark = np.zeros(len(rx_ids[k]), np.uint8)
            if known_rx[k] is None:
                known_rx[k] = mark
        rx_mark[k] = mark
        r2t = np.empty(len(rx_ids[k]), np.int32)
        mark = np.empty(len(tx_ids[k]), np.uint8)
        amb[k] += _match.match_known_into(rx_ids[k], rx_ns[k], known_rx[k],
                                          np.array([0, len(rx_ids[k])], np.int64), tx_ids[k],
                                          tx_ns[k], window_k, r2t, mark)
        fate[k] += unknown_inside(nfs[k], rx_ns[k], r2t, tx_ns[k])
        if len(rx_ids[k]):
            known_tx[k] = mark >> 1
        known_rx[k] = None                         # no NF after k reads it
        rx2tx[k] = r2t
        matched += int(np.count_nonzero(rx_mark[k])) + int(np.count_nonzero(mark))
        del mark, r2t
    del known_tx, known_rx, feeds, rx_ids
    tx2rx = [np.full(n, -1, np.int32) if m is None else m for n, m in zip(n_tx, tx2rx)]
    collisions = {b.name: amb[k] for k, b in enumerate(nfs)}

    # packets: source tx (tx of an NF without rx), then unclaimed rx
    src = [k for k, n in enumerate(nfs) if len(n.tx_ids) and not len(n.rx_ids)]
    start_rx = [np.flatnonzero(c == 0) for c in rx_mark]
    del rx_mark
    n_src = sum(n_tx[k] for k in src)
    n_pk = n_src + sum(len(s) for s in start_rx)
    # every hop takes an rx entry, or is a drop: a tx towards an NF, unmatched
    n_drop = 0
    for k, (d, m) in enumerate(zip(tx_dest, tx2rx)):
        if d is not None:
            n_drop += int(np.count_nonzero((d >= 0) & (m == -1)))
        elif one_dest[k] >= 0:
            n_drop += int(np.count_nonzero(m == -1))
    cap = sum(len(n.rx_ids) for n in nfs) + n_drop
    if max([n_pk, cap] + [len(n.rx_ids) for n in nfs] + n_tx) >= 2**31:
        raise ValueError("build_trajectories: 2**31 packets, hops or entries of one NF or "
                         "more (int32 indices)")
    packet_id, src_ns = _packet_starts(nfs, src, start_rx, tx_ids, tx_ns, n_src, n_pk)
    del tx_ids
    # where no tx sent a packet, its arrival from the occupancy of the
    # queue it started in (before the ports go with the ids)
    estimated, unknown = {}, {}
    at = n_src
    for k, s in enumerate(start_rx):
        if len(s):
            src_ns[at:at + len(s)] = arrivals_from_occupancy(nfs[k], s)
            known = int(np.count_nonzero(src_ns[at:at + len(s)] >= 0))
            if known:
                estimated[nfs[k].name] = known
            if known < len(s):
                unknown[nfs[k].name] = len(s) - known
            at += len(s)
    if release_ids:
        # matched: the ids (~0.4x the decoded capture) are not read again,
        # and freeing them before the hop arrays exist keeps this stage's
        # peak under the capture's own size plus its result
        view.release_packets(_MATCHED_ARRAYS)
    start_rx_nf = np.repeat(np.arange(len(nfs), dtype=np.int32), [len(s) for s in start_rx])
    start_rx = np.concatenate(start_rx + [np.empty(0, np.int64)]).astype(np.int32)
    rx_only = np.array([len(n.rx_ids) > 0 and len(n.tx_ids) == 0 for n in nfs], np.uint8)
    rx_addr = [None if n.rx_addr is None else np.ascontiguousarray(n.rx_addr, np.uint64)
               for n in nfs]

    exit_ns = np.full(n_pk, -1, np.int64)
    drop_nf = np.full(n_pk, -1, np.int32)
    drop_ns = np.full(n_pk, -1, np.int64)
    src_addr, dst_addr = np.zeros(n_pk, np.uint32), np.zeros(n_pk, np.uint32)
    h_pk = np.empty(cap, np.int32)
    h_nf = np.empty(cap, np.int32)
    h_rx = np.empty(cap, np.int32)
    h_tx = np.empty(cap, np.int32)
    n_hops = _match.walk_paths(tx_ns, tx_dest, one_dest, tx2rx, rx_ns, rx2tx, rx_addr,
                               rx_only, np.array(src, np.int32), start_rx_nf, start_rx,
                               exit_ns, drop_nf, drop_ns, src_addr, dst_addr,
                               h_pk, h_nf, h_rx, h_tx)
    # the matches are spent: their ~0.8x the hop arrays' int32 (tx2rx and
    # rx2tx, 82 MiB on bench/analyze.py's capture) go before the times come
    del tx_dest, tx2rx, rx2tx, rx_addr, start_rx_nf, start_rx
    if n_hops < cap:
        # rx claimed by a tx no walk reaches (a tx that matched no rx of
        # its own NF): rare; shrinking in place gives the tail back
        for a in (h_pk, h_nf, h_rx, h_tx):
            a.resize(n_hops, refcheck=False)
    h_arr = np.empty(n_hops, np.int64)
    h_rx_ns = np.empty(n_hops, np.int64)
    h_tx_ns = np.empty(n_hops, np.int64)
    _match.hop_times(tx_ns, rx_ns, src_ns, h_pk, h_nf, h_rx, h_tx, h_arr, h_rx_ns, h_tx_ns)
    # exit - src, -1 where either is unknown: in place, no n-packet temporaries
    latency = np.subtract(exit_ns, src_ns)
    latency[exit_ns < 0] = -1
    latency[src_ns < 0] = -1
    total = sum(collisions.values())
    return Trajectories(names, packet_id, src_ns, exit_ns, drop_nf, drop_ns, latency,
                        h_pk, h_nf, h_arr, h_rx_ns, h_tx_ns, h_rx, h_tx,
                        collisions, total / matched if matched else 0.0,
                        src_addr, dst_addr, estimated, unknown,
                        {nfs[k].name: dict(zip(REASONS, map(int, f)))
                         for k, f in enumerate(fate) if f.any()})


def _window_of(nf, window_ns):
    """The matching window at NF `nf` (its queue, and inside it): `window_ns`
    plus its longest gap between rx batches.  A packet waits in its queue,
    or inside it, about as long as the NF takes nothing: a stop of 150 ms
    held the copies of an id (2-5% of packets in traffic with little
    payload entropy, docs/packet-ids.md) past a fixed 100 ms window, and
    they were named dropped."""
    b = nf.batch_ns
    if len(b) < 2:
        return int(window_ns)
    gap = np.diff(b)
    # several streams' batches interleave: their gaps sorted together
    longest = int(gap.max()) if gap.min() >= 0 else int(np.diff(np.sort(b)).max())
    return int(window_ns) + max(longest, 0)


def _packet_starts(nfs, src, start_rx, tx_ids, tx_ns, n_src, n_pk):
    """``packet_id`` and ``src_ns`` of the packets: the source tx, then the
    rx no tx accounts for (`start_rx`, per NF).

    With one source and every packet its (the common case), they are the
    source's ``tx_ids`` and ``tx_ns`` themselves, handed out read-only:
    no copy (37 MiB less at this stage's peak on bench/analyze.py's
    capture), and ``CaptureView.release_packets`` then leaves them to the
    trajectories.  Only an array that owns its memory is shared, so that
    a part never keeps a larger decoded buffer alive."""
    if (len(src) == 1 and n_pk == n_src and tx_ids[src[0]].base is None
            and tx_ns[src[0]].base is None):
        packet_id, src_ns = tx_ids[src[0]].view(), tx_ns[src[0]].view()
        packet_id.flags.writeable = src_ns.flags.writeable = False
        return packet_id, src_ns
    packet_id = np.concatenate([tx_ids[k] for k in src]
                               + [nfs[k].rx_ids[s] for k, s in enumerate(start_rx)]
                               ).astype(np.uint64, copy=False)
    src_ns = np.full(n_pk, -1, np.int64)
    if src:
        np.concatenate([tx_ns[k] for k in src], out=src_ns[:n_src])
    return packet_id, src_ns
