"""Stage 3 of the analyzer: every packet's path through the NFs.

A packet is one source tx (or, where no source was recorded, one rx that no
upstream tx accounts for).  At each hop: its arrival at the NF's queue (its
tx time at the upstream NF or the source; -1 where unrecorded), its rx and
tx times there; a packet sent towards B that B never receives was dropped
at B's queue.  Ids are header-invariant, so NATs change nothing here; joins
pool the tx of every upstream NF that feeds B, splits follow each out-link.

Vectorised: one :func:`match_next` per NF (upstream tx -> rx, rx -> tx),
then a walk over hops -- as many steps as the longest path, never one per
packet.
"""
from dataclasses import dataclass

import numpy as np

from .matching import DEFAULT_WINDOW_NS, match_next
from .topology import SINK

__all__ = ["Trajectories", "build_trajectories"]


@dataclass
class Trajectories:
    """Paths of all packets, as flat arrays.

    Per packet (index p): ``packet_id``, ``src_ns`` (source tx, -1 when not
    recorded), ``exit_ns`` (tx towards the sink, -1 if none), ``drop_nf``
    (index into ``nf_names`` of the NF whose queue dropped it, -1),
    ``drop_ns`` (when it reached that queue), ``latency_ns`` (exit - src,
    -1 where either is unknown).

    Per hop (index h, grouped by packet, in path order): ``hop_packet``,
    ``hop_nf``, ``hop_arrival_ns``, ``hop_rx_ns`` and ``hop_tx_ns`` (-1 when
    dropped before), ``hop_rx`` / ``hop_tx`` (index into that NF's rx / tx
    arrays, -1).  A drop is a hop whose ``hop_rx`` is -1.

    ``src_addr``, ``dst_addr`` (uint32 per packet, 0 unknown): the IPv4
    addresses from the first hop whose NF wrote address records.

    ``collisions``: ids that had to be told apart by time, per NF name
    (count of matched-side entries), and ``collision_rate`` over all
    matched entries.
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

    @property
    def has_addr(self) -> bool:
        """Whether any packet's addresses are known (address records)."""
        return self.src_addr is not None and bool((self.src_addr != 0).any())

    def hops_at(self, nf_name):
        """Boolean mask of the hops at NF `nf_name`."""
        return self.hop_nf == self.nf_names.index(nf_name)


def build_trajectories(view, topo, window_ns=DEFAULT_WINDOW_NS) -> Trajectories:
    """Reconstruct every packet's path.

    Parameters
    ----------
    view : mscope.analyzer.ingest.CaptureView
    topo : mscope.analyzer.topology.Topology
    window_ns : int
        Longest accepted gap between an upstream tx and the rx downstream,
        and between an NF's rx and tx of one packet.

    Returns
    -------
    Trajectories
    """
    names = [n.name for n in view.nfs]
    nfi = {n: k for k, n in enumerate(names)}
    ntx = np.array([len(n.tx_ids) for n in view.nfs], np.int64)
    nrx = np.array([len(n.rx_ids) for n in view.nfs], np.int64)
    tx_off = np.concatenate([[0], np.cumsum(ntx)])
    rx_off = np.concatenate([[0], np.cumsum(nrx)])
    TX_ns = np.concatenate([n.tx_ns for n in view.nfs]).astype(np.int64)
    RX_ns = np.concatenate([n.rx_ns for n in view.nfs]).astype(np.int64)
    TX_ids = np.concatenate([n.tx_ids for n in view.nfs]).astype(np.uint64)
    RX_ids = np.concatenate([n.rx_ids for n in view.nfs]).astype(np.uint64)
    TX_nf = np.repeat(np.arange(len(names)), ntx)
    RX_nf = np.repeat(np.arange(len(names)), nrx)
    # where each tx goes: downstream NF index, -1 sink
    TX_dest = np.full(len(TX_ns), -1, np.int64)
    for k, n in enumerate(view.nfs):
        for port in np.unique(n.tx_port).tolist():
            d = topo.port_to.get((n.name, port), SINK)
            sl = slice(tx_off[k], tx_off[k + 1])
            TX_dest[sl][n.tx_port == port] = nfi[d] if d in nfi else -1

    tx2rx = np.full(len(TX_ns), -1, np.int64)
    rx2tx = np.full(len(RX_ns), -1, np.int64)
    rx_claimed = np.zeros(len(RX_ns), bool)
    collisions, matched = {}, 0
    for k, b in enumerate(view.nfs):
        feed = np.flatnonzero(TX_dest == k)
        if len(feed) and len(b.rx_ids):
            a_ids = TX_ids[feed]
            m, amb1 = match_next(a_ids, TX_ns[feed], b.rx_ids, b.rx_ns, window_ns)
            ok = m >= 0
            tx2rx[feed[ok]] = rx_off[k] + m[ok]
            rx_claimed[rx_off[k] + m[ok]] = True
            matched += int(ok.sum())
        else:
            amb1 = 0
        m2, amb2 = match_next(b.rx_ids, b.rx_ns, b.tx_ids, b.tx_ns, window_ns)
        ok2 = m2 >= 0
        rx2tx[rx_off[k] + np.flatnonzero(ok2)] = tx_off[k] + m2[ok2]
        matched += int(ok2.sum())
        collisions[b.name] = amb1 + amb2

    # packets: source tx (tx of an NF without rx) and unclaimed rx
    src_nf = np.array([k for k, n in enumerate(view.nfs) if len(n.tx_ids) and not len(n.rx_ids)],
                      np.int64)
    start_tx = np.flatnonzero(np.isin(TX_nf, src_nf))
    start_rx = np.flatnonzero(~rx_claimed)
    n_pk = len(start_tx) + len(start_rx)
    packet_id = np.concatenate([TX_ids[start_tx], RX_ids[start_rx]])
    src_ns = np.concatenate([TX_ns[start_tx], np.full(len(start_rx), -1, np.int64)])
    exit_ns = np.full(n_pk, -1, np.int64)
    drop_nf = np.full(n_pk, -1, np.int64)
    drop_ns = np.full(n_pk, -1, np.int64)

    rx_only = (nrx > 0) & (ntx == 0)
    hops = []                                   # (packet, nf, arrival, rx, tx) per step
    # packets entering at an rx with no recorded upstream tx
    cur_pk = np.arange(len(start_tx), n_pk)
    cur_rx = start_rx
    cur_arr = np.full(len(start_rx), -1, np.int64)
    cur_pk_tx = np.arange(len(start_tx))
    cur_tx = start_tx
    while len(cur_tx) or len(cur_rx):
        # follow tx -> downstream rx
        r = tx2rx[cur_tx]
        dest = TX_dest[cur_tx]
        sink = (r < 0) & (dest < 0)
        exit_ns[cur_pk_tx[sink]] = TX_ns[cur_tx[sink]]
        drop = (r < 0) & (dest >= 0)
        dp = cur_pk_tx[drop]
        drop_nf[dp] = dest[drop]
        drop_ns[dp] = TX_ns[cur_tx[drop]]
        hops.append((dp, dest[drop], TX_ns[cur_tx[drop]], np.full(len(dp), -1, np.int64),
                     np.full(len(dp), -1, np.int64)))
        go = r >= 0
        pk = np.concatenate([cur_pk_tx[go], cur_pk])
        rx = np.concatenate([r[go], cur_rx])
        arr = np.concatenate([TX_ns[cur_tx[go]], cur_arr])
        # at the NF: rx -> tx
        t = rx2tx[rx]
        hops.append((pk, RX_nf[rx], arr, rx, t))
        # received, never sent on: lost inside -- unless the NF records no
        # tx at all (a recorded sink, rx only): then the packet left there
        lost = t < 0
        term = lost & rx_only[RX_nf[rx]]
        exit_ns[pk[term]] = RX_ns[rx[term]]
        lost &= ~term
        drop_nf[pk[lost]] = RX_nf[rx[lost]]
        drop_ns[pk[lost]] = RX_ns[rx[lost]]
        cur_pk_tx, cur_tx = pk[t >= 0], t[t >= 0]
        cur_pk = cur_rx = cur_arr = np.empty(0, np.int64)

    h_pk = np.concatenate([h[0] for h in hops]).astype(np.int64)
    h_nf = np.concatenate([h[1] for h in hops]).astype(np.int64)
    h_arr = np.concatenate([h[2] for h in hops]).astype(np.int64)
    h_rx = np.concatenate([h[3] for h in hops]).astype(np.int64)
    h_tx = np.concatenate([h[4] for h in hops]).astype(np.int64)
    step = np.concatenate([np.full(len(h[0]), i) for i, h in enumerate(hops)])
    o = np.lexsort((step, h_pk))
    h_pk, h_nf, h_arr, h_rx, h_tx = h_pk[o], h_nf[o], h_arr[o], h_rx[o], h_tx[o]
    rx_ns = np.where(h_rx >= 0, RX_ns[np.maximum(h_rx, 0)], -1)
    tx_ns = np.where(h_tx >= 0, TX_ns[np.maximum(h_tx, 0)], -1)
    # local indices into each NF's own arrays
    h_rx_local = np.where(h_rx >= 0, h_rx - rx_off[h_nf], -1)
    h_tx_local = np.where(h_tx >= 0, h_tx - tx_off[h_nf], -1)
    latency = np.where((exit_ns >= 0) & (src_ns >= 0), exit_ns - src_ns, -1)
    total = sum(collisions.values())
    # addresses: the earliest hop with an address word wins (reverse order,
    # so the last write is the first hop)
    word = np.zeros(n_pk, np.uint64)
    if any(n.rx_addr is not None for n in view.nfs):
        RX_addr = np.concatenate([n.rx_addr if n.rx_addr is not None
                                  else np.zeros(len(n.rx_ids), np.uint64) for n in view.nfs])
        hw = np.where(h_rx >= 0, RX_addr[np.maximum(h_rx, 0)], np.uint64(0))
        nz = np.flatnonzero(hw)[::-1]
        word[h_pk[nz]] = hw[nz]
    return Trajectories(names, packet_id, src_ns, exit_ns, drop_nf, drop_ns, latency,
                        h_pk, h_nf, h_arr, rx_ns, tx_ns, h_rx_local, h_tx_local,
                        collisions, total / matched if matched else 0.0,
                        (word >> np.uint64(32)).astype(np.uint32),
                        (word & np.uint64(0xFFFFFFFF)).astype(np.uint32))

