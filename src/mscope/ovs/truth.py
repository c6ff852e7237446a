"""Window-labelled truth for a chain behind OVS: the testbed's rule
(mscope.testbed.truth, quoted in ``RULE``) with OVS as a hop.

What differs from the ring testbed, and only that:

- **Ids hold across vhost by construction**: every copy of a packet is
  hashed from the same header fields (docs/packet-ids.md), so the source's
  id is found again at OVS, at each NF and at the sink.
- **Reaching NF X's queue** is OVS's tx on the vhost port ``<X>-in`` (its
  recorded port number from ``ovs-ports.json``), the first time.
- **An NF that records no occupancy** (testpmd, attached: virtio-user
  cannot count its rx queue) gets 0 for each rx batch shorter than its
  burst (the scenario's ``batch``: the burst emptied the queue), unknown
  for the others, so its window still ends when its queue drains.
- **OVS as the faulty hop** (``"nf": "ovs"``): a packet was at OVS from
  its source tx to its last tx by OVS (its last rx there when OVS never
  sent it on); OVS's queues are all its vhost rx queues, and the window
  ends when the last of them is back to its pre-fault level (each judged
  as an NF's input queue is).

The capture is read with mscope.capture alone (not the analyzer's view,
which may split OVS into one node per rx port).
"""
from types import SimpleNamespace

import numpy as np

from mscope.capture import CAPTURE_F_ADDR, CAPTURE_F_TX, CAPTURE_OCC_UNKNOWN, open_capture
from mscope.sim.scenario import SOURCE
from mscope.testbed.truth import RULE, _drained, _Ids, label_windows

from .plan import OVS_NAME, SINK_NAME

__all__ = ["ovs_window_truth", "records_by_nf", "RULE"]


def _expand(data, idx):
    """Ids, times, ports of the records `idx`, one entry per packet."""
    off = data.id_offsets
    counts = (off[idx + 1] - off[idx]).astype(np.int64)
    total = int(counts.sum())
    within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.repeat(off[idx], counts) + within
    rec = data.records
    return (data.ids[pos].astype(np.uint64),
            np.repeat(rec["time_ns"][idx].astype(np.int64), counts),
            np.repeat(rec["port"][idx].astype(np.int64), counts))


def records_by_nf(data):
    """Per recorder name: rx and tx ids/times/ports, rx batch times,
    occupancies (-1 unknown) and ports.  A plain dict of arrays."""
    rec, stream = data.records, data.stream
    names = {sid: str(info.get("nf_name") or f"nf{info.get('nf_id')}")
             for sid, info in data.stream_info.items()}
    is_tx = (rec["flags"] & CAPTURE_F_TX) != 0
    is_addr = (rec["flags"] & CAPTURE_F_ADDR) != 0
    out = {}
    for name in sorted(set(names.values())):
        sids = [s for s, n in names.items() if n == name]
        mine = np.isin(stream, sids)
        ridx = np.flatnonzero(mine & ~is_tx & ~is_addr)
        tidx = np.flatnonzero(mine & is_tx)
        ridx = ridx[np.argsort(rec["time_ns"][ridx], kind="stable")]
        tidx = tidx[np.argsort(rec["time_ns"][tidx], kind="stable")]
        rx_ids, rx_ns, rx_port = _expand(data, ridx)
        tx_ids, tx_ns, tx_port = _expand(data, tidx)
        occ = rec["occupancy"][ridx].astype(np.int64)
        occ[rec["occupancy"][ridx] == CAPTURE_OCC_UNKNOWN] = -1
        count = rec["count"][ridx].astype(np.int64)
        out[name] = SimpleNamespace(
            rx_ids=rx_ids, rx_ns=rx_ns, rx_port=rx_port, tx_ids=tx_ids, tx_ns=tx_ns,
            tx_port=tx_port, batch_ns=rec["time_ns"][ridx].astype(np.int64),
            batch_occupancy=occ, batch_port=rec["port"][ridx].astype(np.int64),
            batch_count=count)
    return out


def _last_time(ids, query_ids, ns):
    """Per packet of `ids` (_Ids): the latest of `ns` where `query_ids`
    holds its id, -1 if none."""
    out = np.full(ids.n, -1, np.int64)
    if len(query_ids) and ids.n:
        pos = np.minimum(np.searchsorted(ids.sorted, query_ids), ids.n - 1)
        hit = ids.sorted[pos] == query_ids
        np.maximum.at(out, ids.order[pos[hit]], ns[hit].astype(np.int64))
    return out


def _port_view(nf, port):
    sel = nf.batch_port == port
    return SimpleNamespace(batch_ns=nf.batch_ns[sel], batch_occupancy=nf.batch_occupancy[sel])


def ovs_window_truth(capture, sc, t0_ns, time_scale, ports_map, lookback_ns=2_000_000):
    """truth.json for a capture of ``mscope ovs run`` (module docstring).

    Parameters
    ----------
    capture : str or os.PathLike
        The capture directory.
    sc : mscope.sim.scenario.Scenario
        As run (faults may name ``ovs``), unscaled.
    t0_ns : int
        The run's start (CLOCK_MONOTONIC, the capture's clock).
    time_scale : float
    ports_map : dict
        ``ovs-ports.json``: recorded port (str) -> {"ovs_port": name, ...}.

    Returns
    -------
    dict
        truth.json (SCENARIO.md), ``"labels": "window"``.
    """
    by = records_by_nf(open_capture(capture).read())
    port_of = {v["ovs_port"]: int(k) for k, v in ports_map.items()}
    src = by[SOURCE]
    pkt, s_ns = src.tx_ids, src.tx_ns
    ids = _Ids(pkt)
    sink = by.get(SINK_NAME)
    exit_ns = ids.first_time(sink.rx_ids, sink.rx_ns) if sink is not None \
        else np.full(len(pkt), -1, np.int64)
    slo_ns = int(round(sc.slo_ns * time_scale))
    ovs = by.get(OVS_NAME)
    none = np.full(len(pkt), -1, np.int64)

    arrive, leave, seen_last = {}, {}, s_ns.copy()
    for nf in sc.nfs:
        x = nf.name
        feed = port_of.get(f"{x}-in")
        if ovs is not None and feed is not None:
            sel = ovs.tx_port == feed
            arr = ids.first_time(ovs.tx_ids[sel], ovs.tx_ns[sel])
        else:
            arr = none
        rec = by.get(x)
        rx = ids.first_time(rec.rx_ids, rec.rx_ns) if rec is not None else none
        tx = ids.first_time(rec.tx_ids, rec.tx_ns) if rec is not None else none
        arrive[x] = arr
        leave[x] = np.where(tx >= 0, tx, np.where(rx >= 0, rx, arr))
        seen_last = np.maximum(seen_last, np.maximum(tx, rx))
    if ovs is not None:
        o_tx = _last_time(ids, ovs.tx_ids, ovs.tx_ns)
        o_rx = _last_time(ids, ovs.rx_ids, ovs.rx_ns)
        arrive[OVS_NAME] = s_ns
        leave[OVS_NAME] = np.where(o_tx >= 0, o_tx, np.where(o_rx >= 0, o_rx, s_ns))
        seen_last = np.maximum(seen_last, np.maximum(o_tx, o_rx))
    chain_end = np.where(exit_ns >= 0, exit_ns, seen_last)
    capture_end = int(max([int(s_ns.max(initial=0))]
                          + [int(n.rx_ns.max(initial=0)) for n in by.values()]
                          + [int(n.tx_ns.max(initial=0)) for n in by.values()]))

    def drained(x, start, end):
        if x == OVS_NAME:
            if ovs is None:
                return None
            ends = [_drained(_port_view(ovs, p), start, end, lookback)
                    for p in np.unique(ovs.batch_port).tolist()]
            return None if not ends or None in ends else max(ends)
        if x not in by:
            return None
        nf = by[x]
        if len(nf.batch_occupancy) and (nf.batch_occupancy < 0).all():
            # an attached NF whose PMD cannot count its rx queue (testpmd on
            # virtio-user): a burst shorter than it asked for emptied it
            nf = SimpleNamespace(batch_ns=nf.batch_ns, batch_occupancy=np.where(
                nf.batch_count < batch_of[x], 0, -1))
        return _drained(nf, start, end, lookback)

    batch_of = {nf.name: nf.batch for nf in sc.nfs}
    lookback = int(lookback_ns * time_scale)
    return label_windows(
        sc, pkt, s_ns, exit_ns, slo_ns, arrive, leave, chain_end, capture_end, drained,
        t0_ns, time_scale,
        RULE + "; OVS is a hop: a packet reaches NF X's queue at OVS's tx on port <X>-in, "
               "and is at OVS from its source tx to its last OVS tx")
