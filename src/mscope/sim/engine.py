"""Simulate a chain of NFs: who waited where, who was dropped, what mscope
would have recorded.

The chain is a DAG, so NFs are simulated one at a time in topological
order: an NF's input is fully known once its upstream NFs are done (its
arrivals are their tx times; links take no time).  Each NF is the batch
loop of mscope.sim._nfloop.serve; everything else is numpy over packets.

The model (documented in docs/simulator.md):

- a packet's service time at an NF is ``service_ns`` times a factor drawn
  from the packet's id and the NF (uniform 0.9-1.1, and 3x for ~1.2% of
  packets: cache misses, slow paths), scaled to mean 1; drawing it from the
  id keeps it identical in every counterfactual run;
- a non-empty poll costs ``BATCH_COST`` x service_ns on top; an idle NF
  polls every POLL_NS;
- ``bug``: matching flows (by source address as sent, before any NAT) cost
  ``slowdown`` times more while the fault is on; ``interrupt``: the NF
  makes no progress for the duration (a batch in service is paused);
  ``contention``: it runs at ``share`` of its speed;
- the source sends in bursts on a 1 us grid (a DPDK generator's tx loop);
  a node with several out-links splits by flow hash; joins share one queue.

What is recorded is what the recorder would write (csrc/mscope_record.h):
every NF's rx and tx batches and idle polls; the ingress NFs' addresses and,
as the attach shim reads a NIC's imissed, their refused records (the
packets their full queue turned away, read at the shim's readings).
"""
import numpy as np

from mscope.capture.format import (CAPTURE_F_ADDR, CAPTURE_F_REFUSED, CAPTURE_F_TX,
                                   CAPTURE_OCC_UNKNOWN, CAPTURE_RECORD_DTYPE)
from mscope.record import IDLE_NS, MAX_BATCH, REFUSED_NS

__all__ = ["SimRun", "simulate", "speed_segments", "service_factors", "idle_polls",
           "refused_readings",
           "SOURCE", "SINK", "SOURCE_NF_ID", "POLL_NS", "BATCH_COST", "SOURCE_QUANTUM_NS"]

SOURCE, SINK = "source", "sink"
SOURCE_NF_ID = 0            # NFs get index + 1
POLL_NS = 50.0              # an empty rte_eth_rx_burst + loop: tens of ns
BATCH_COST = 0.5            # fixed cost of a non-empty poll, in service_ns
SOURCE_QUANTUM_NS = 1000    # the source's tx loop runs every 1 us
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix(x):
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def service_factors(pkt_id, nf_index):
    """Per-packet service-time factors at one NF, mean 1, from the ids."""
    # The salt is a 64-bit product: reduced mod 2**64 as C would, since the
    # Python int passes 2**64 from the 7th NF (index 6) on; the first six
    # NFs' salts are below it, so their factors (and captures) are unchanged.
    salt = np.uint64(((nf_index + 1) * 0x2545F4914F6CDD1D) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        x = _splitmix(pkt_id.astype(np.uint64) ^ salt)
    u = (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    f = 0.9 + 0.2 * u
    f = np.where((x & np.uint64(0xFF)) < 3, 3.0 * f, f)
    return f / (1.0 + 2.0 * 3 / 256)


def speed_segments(nf_name, faults, disabled):
    """The NF's speed over time as (seg_start, seg_rate) for _nfloop.serve."""
    cuts = {0.0}
    wins = []
    for i, f in enumerate(faults):
        if i in disabled or f.nf != nf_name or f.kind not in ("interrupt", "contention"):
            continue
        rate = 0.0 if f.kind == "interrupt" else float(f.share)
        wins.append((float(f.start_ns), float(f.end_ns), rate))
        cuts.update((float(f.start_ns), float(f.end_ns)))
    starts = np.array(sorted(cuts), np.float64)
    rates = np.ones(len(starts), np.float64)
    for s, e, r in wins:
        inside = (starts >= s) & (starts < e)
        rates[inside] = np.where(r == 0.0, 0.0, rates[inside] * r)
    return starts, rates


class SimRun:
    """What one simulation produced.

    Attributes
    ----------
    src_ns : int64 per packet, when the source sent it
    exit_ns : int64 per packet, when it left the chain, -1 if dropped
    drop_nf : int16 per packet, index of the NF whose queue dropped it, -1
    latency_ns : int64 per packet, exit - source, -1 if dropped
    victim : bool per packet, dropped or over the objective
    streams : list of (nf_id, name, records, ids) in capture layout, or None
    """

    def __init__(self, src_ns, exit_ns, drop_nf, slo_ns, streams, queue_samples):
        self.src_ns, self.exit_ns, self.drop_nf = src_ns, exit_ns, drop_nf
        self.latency_ns = np.where(exit_ns >= 0, exit_ns - src_ns, -1)
        self.victim = (exit_ns < 0) | (self.latency_ns > slo_ns)
        self.streams = streams
        self.queue_samples = queue_samples


def _route(nports, flow_hash, salt):
    """Output port of each packet at a node with nports out-links."""
    if nports == 1:
        return np.zeros(len(flow_hash), np.int64)
    h = _splitmix(flow_hash.astype(np.uint64) ^ np.uint64(salt))
    return (h % np.uint64(nports)).astype(np.int64)


def _records(times, counts, ports, flags, occupancy, nf_id):
    """Capture records; batches over MAX_BATCH are split as the recorder does."""
    counts = np.asarray(counts, np.int64)
    pieces = np.maximum(1, -(-counts // MAX_BATCH))
    rep = np.repeat(np.arange(len(counts)), pieces)
    within = np.arange(len(rep)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    cnt = np.minimum(MAX_BATCH, counts[rep] - within * MAX_BATCH)
    r = np.zeros(len(rep), CAPTURE_RECORD_DTYPE)
    r["time_ns"] = np.asarray(times, np.int64)[rep]
    r["nf_id"] = nf_id
    r["port"] = np.asarray(ports, np.int64)[rep]
    r["flags"] = np.asarray(flags, np.int64)[rep]
    r["count"] = cnt
    r["occupancy"] = np.asarray(occupancy, np.int64)[rep]
    return r


def simulate(scenario, packets, disabled=frozenset(), records=True, sample_queues=None):
    """Run the scenario over `packets` with the faults not in `disabled`.

    Parameters
    ----------
    scenario : mscope.sim.scenario.Scenario
    packets : mscope.sim.traffic.Packets
        Already without the packets of disabled burst faults.
    disabled : set of int
        Indices (into scenario.faults) of faults switched off.
    records : bool
        Build what mscope would have recorded (skipped for counterfactuals).
    sample_queues : int64 array, optional
        Times at which to report every NF's queue length from the
        simulator's own state (for the conservation test).

    Returns
    -------
    SimRun
    """
    from mscope.sim._nfloop import serve

    n = len(packets.time_ns)
    q = SOURCE_QUANTUM_NS
    src_ns = (-(-packets.time_ns // q)) * q       # next tick of the source's loop
    pkt_id = packets.pkt_id
    exit_ns = np.full(n, -1, np.int64)
    drop_nf = np.full(n, -1, np.int16)
    inbox = {}                                      # node -> [(times, packet indices)]
    streams = [] if records else None
    queue_samples = {}
    nf_by_name = {nf.name: nf for nf in scenario.nfs}

    # What downstream NFs see of each packet's 5-tuple: a NAT rewrites it
    # (and so how a later fork splits it); the packet id does not change.
    cur_hash = packets.flow_hash.copy()

    def send(node, times, idx, salt):
        out = scenario.out_links[node]
        port = _route(len(out), cur_hash[idx], salt)
        for j, dst in enumerate(out):
            sel = port == j
            if dst == SINK:
                exit_ns[idx[sel]] = times[sel]
            else:
                inbox.setdefault(dst, []).append((times[sel], idx[sel]))
        return port

    all_idx = np.arange(n, dtype=np.int64)
    port = send(SOURCE, src_ns, all_idx, 0x51)
    if records:
        # one tx record per (tick, port): what a recorded generator writes.
        # Group on the sorted order: within one tick the ports interleave.
        order = np.lexsort((port, src_ns))
        t_sorted, p_sorted = src_ns[order], port[order]
        starts = np.flatnonzero(np.concatenate(
            [[True], (t_sorted[1:] != t_sorted[:-1]) | (p_sorted[1:] != p_sorted[:-1])])) \
            if n else np.empty(0, np.int64)
        counts = np.diff(np.concatenate([starts, [n]]))
        streams.append((SOURCE_NF_ID, SOURCE,
                        _records(t_sorted[starts], counts, p_sorted[starts],
                                 np.full(len(starts), CAPTURE_F_TX),
                                 np.full(len(starts), CAPTURE_OCC_UNKNOWN), SOURCE_NF_ID),
                        pkt_id[order]))

    for name in scenario.topo_order:
        if name in (SOURCE, SINK):
            continue
        nf = nf_by_name[name]
        parts = inbox.pop(name, [])
        times = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
        idx = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.int64)
        order = np.lexsort((idx, times))            # joins: one queue, by arrival
        times, idx = times[order], idx[order]
        work = nf.service_ns * service_factors(pkt_id[idx], nf.index)
        for i, f in enumerate(scenario.faults):
            if i in disabled or f.kind != "bug" or f.nf != name:
                continue
            # `flows` names sources as the source sends them (SCENARIO.md),
            # wherever the NF sits: behind a NAT too, whose rewrite would
            # otherwise hide every flow (and the ingress address records,
            # all the analyzer can name prefixes from, hold these addresses)
            net = f.flows
            mask = ((packets.src_ip[idx] & np.uint32(int(net.netmask)))
                    == np.uint32(int(net.network_address)))
            mask &= (times >= f.start_ns) & (times < f.end_ns)
            work = np.where(mask, work * f.slowdown, work)
        seg_start, seg_rate = speed_segments(name, scenario.faults, disabled)
        dropped, b_rx, b_tx, b_count, b_occ = serve(
            np.ascontiguousarray(times, np.int64), np.ascontiguousarray(work, np.float64),
            int(nf.batch), int(nf.queue), BATCH_COST * nf.service_ns, POLL_NS,
            seg_start, seg_rate)
        dropped = dropped.astype(bool)
        drop_nf[idx[dropped]] = nf.index
        acc = idx[~dropped]
        tx_t = np.repeat(b_tx, b_count)
        if nf.type == "nat":
            _nat_rewrite(packets, acc, cur_hash, nf.index)
        port = send(name, tx_t, acc, 0x9E37 * (nf.index + 1))
        if sample_queues is not None:
            arrived = np.searchsorted(times[~dropped], sample_queues, side="right")
            taken = np.searchsorted(b_rx, sample_queues, side="right")
            served = np.concatenate([[0], np.cumsum(b_count)])[taken]
            queue_samples[name] = arrived - served
        if records:
            # the ingress NFs record addresses (MSCOPE_F_ADDRS), as a live
            # chain's first NF would: src/dst as the source sent them
            addrs = None
            if name in scenario.out_links[SOURCE]:
                addrs = ((packets.src_ip[acc].astype(np.uint64) << np.uint64(32))
                         | packets.dst_ip[acc].astype(np.uint64))
            idle = idle_polls(b_rx, b_tx, seg_start, seg_rate, scenario.duration_ns)
            refused = None
            if addrs is not None:
                # an ingress NF is fed by a NIC: what its full queue turned
                # away is the NIC's imissed, read as the attach shim does
                refused = refused_readings(b_rx, b_occ, idle, b_tx, times[dropped])
            streams.append(_nf_stream(nf, acc, pkt_id, b_rx, b_tx, b_count, b_occ, port,
                                      len(scenario.out_links[name]), addrs, idle, refused))
    return SimRun(src_ns, exit_ns, drop_nf, scenario.slo_ns, streams, queue_samples)


NAT_POOL = 0xC6336400        # 198.51.100.0/24: the NAT's public addresses


def _nat_rewrite(packets, idx, cur_hash, nf_index):
    """Source NAT: a pool address and a mapped port per flow, as a real
    NAT's flow table would give; downstream forks split on the new tuple.
    (Bugs still match the original source: see simulate.)"""
    from mscope.sim.traffic import hash_five_tuple
    flow = packets.flow[idx].astype(np.uint64) + np.uint64(nf_index << 24)
    mixed = _splitmix(flow)
    new_src = (np.uint32(NAT_POOL) | (mixed & np.uint64(0xFF)).astype(np.uint32))
    new_sport = (1024 + (mixed >> np.uint64(8)) % np.uint64(64000)).astype(np.uint16)
    cur_hash[idx] = hash_five_tuple(new_src, packets.dst_ip[idx], new_sport,
                                    packets.dport[idx], packets.proto[idx])


def idle_polls(b_rx, b_tx, seg_start, seg_rate, end_ns, every=IDLE_NS, poll_ns=POLL_NS):
    """When an NF writes idle-poll records (csrc/mscope_record.h): at its
    first empty poll `every` ns or more after its last record, never while
    it is interrupted.

    The NF is idle from each batch's tx (and from 0) until it takes the
    next batch (or `end_ns`), polling every `poll_ns` from there, so in an
    idle spell without an interrupt the records fall every `every` ns
    after the tx, strictly before the next batch's rx (that poll was not
    empty).  In one an interrupt cuts, the polls resume at its end: a
    record there if `every` has passed since the last one.

    Returns
    -------
    int64 array, sorted
    """
    every = int(every)
    u = np.concatenate([[0], np.asarray(b_tx, np.int64)])
    v = np.concatenate([np.asarray(b_rx, np.int64), [max(int(end_ns), int(u[-1]))]])
    stops = np.flatnonzero(seg_rate == 0)
    s0 = seg_start[stops]
    s1 = np.append(seg_start, np.inf)[stops + 1]
    # spells an interrupt overlaps (few): walked one by one below
    cut = np.zeros(len(u), bool)
    for a, b in zip(s0.tolist(), s1.tolist()):
        cut[(u < b) & (v > a)] = True
    n = np.where(cut, 0, np.maximum(v - u - 1, 0) // every)
    base = np.repeat(u, n)
    j = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + 1
    times = [base + j * every]
    for k in np.flatnonzero(cut).tolist():
        last, t, out = int(u[k]), float(u[k]), []
        while True:
            t = max(t, last + every)
            for a, b in zip(s0.tolist(), s1.tolist()):
                if a <= t < b:                  # interrupted: the next poll is at its end
                    t = b + np.ceil(max(0.0, last + every - b) / poll_ns) * poll_ns
            if t >= v[k]:
                break
            last = int(t)
            out.append(last)
        times.append(np.array(out, np.int64))
    return np.sort(np.concatenate(times))


def refused_readings(b_rx, b_occ, idle, b_tx, refused_ns, every=REFUSED_NS,
                     silence=2 * IDLE_NS):
    """The refused records the attach shim writes for an NF
    (csrc/mscope_attach.c, read_refused): it reads its port's imissed after
    a poll's record, at the first one `every` ns or more after the last
    reading and at the first one that ends a silence (more than `silence`
    since the NF's previous record of any kind), the first reading being
    where counting starts; a reading that finds refusals writes a record.

    Parameters
    ----------
    b_rx, b_occ : int64 arrays
        The NF's rx batches (sorted) and the occupancy each left.
    idle : int64 array
        Its idle-poll records (sorted; occupancy 0).
    b_tx : int64 array
        Its tx batches: records too, so a poll after one ends no silence.
    refused_ns : int64 array
        When each packet its full queue refused arrived (sorted).

    Returns
    -------
    (int64 array, int64 array, int64 array, int64 array, int64 array)
        Per refused record: its poll (an index into the batches, or -1 - j
        for idle poll j), time, packets, window (ns since the reading
        before) and occupancy.
    """
    empty = np.zeros(0, np.int64)
    if not len(refused_ns):
        return empty, empty, empty, empty, empty
    b_rx, idle = np.asarray(b_rx, np.int64), np.asarray(idle, np.int64)
    polls = np.concatenate([b_rx, idle])
    which = np.concatenate([np.arange(len(b_rx)), -1 - np.arange(len(idle))])
    occ = np.concatenate([np.asarray(b_occ, np.int64), np.zeros(len(idle), np.int64)])
    o = np.argsort(polls, kind="stable")
    polls, which, occ = polls[o], which[o], occ[o]
    if not len(polls):
        return empty, empty, empty, empty, empty
    every_record = np.sort(np.concatenate([polls, np.asarray(b_tx, np.int64)]))
    before = np.searchsorted(every_record, polls, "left") - 1
    gap = polls - np.where(before >= 0, every_record[np.maximum(before, 0)], polls[0])
    ends_silence = np.flatnonzero(gap > silence)
    reads, i = [0], 0
    while True:                     # one turn per reading: ~1 per ms of the run
        nxt = int(np.searchsorted(polls, polls[i] + every, "left"))
        k = int(np.searchsorted(ends_silence, i, "right"))
        if k < len(ends_silence):
            nxt = min(nxt, int(ends_silence[k]))
        if nxt >= len(polls):
            break
        reads.append(nxt)
        i = nxt
    reads = np.array(reads, np.int64)
    seen = np.searchsorted(np.asarray(refused_ns, np.int64), polls[reads], "right")
    got = np.diff(seen)
    w = np.flatnonzero(got > 0)
    at = reads[1:][w]
    return (which[at], polls[at], got[w].astype(np.int64),
            (polls[at] - polls[reads[:-1][w]]).astype(np.int64), occ[at])


def _nf_stream(nf, acc, pkt_id, b_rx, b_tx, b_count, b_occ, port, nports, addrs=None,
               idle=None, refused=None):
    """rx and tx records of one NF, interleaved in time as the ring has them.

    With `addrs` (one word per accepted packet, in service order), every rx
    record is followed by its address record (CAPTURE_F_ADDR).  `idle`:
    times of idle-poll records (:func:`idle_polls`), rx records of 0
    packets between the batches.  `refused`: :func:`refused_readings`,
    each record right after the poll's record (and its address record)
    that read it."""
    nb = len(b_rx)
    nf_id = nf.index + 1
    batch_of = np.repeat(np.arange(nb), b_count)
    # rx: one record per batch, ids in service order
    rx = _records(b_rx, b_count, np.zeros(nb), np.zeros(nb), b_occ, nf_id)
    rx_batch = np.repeat(np.arange(nb), np.maximum(1, -(-b_count // MAX_BATCH)))
    # tx: one record per (batch, out port)
    key = batch_of * nports + port
    order = np.argsort(key, kind="stable")
    k_sorted = key[order]
    starts = np.flatnonzero(np.concatenate([[True], k_sorted[1:] != k_sorted[:-1]])) \
        if len(k_sorted) else np.empty(0, np.int64)
    counts = np.diff(np.concatenate([starts, [len(k_sorted)]]))
    tb = k_sorted[starts] // nports
    tx = _records(b_tx[tb], counts, k_sorted[starts] % nports, np.full(len(starts), CAPTURE_F_TX),
                  np.full(len(starts), CAPTURE_OCC_UNKNOWN), nf_id)
    tx_batch = np.repeat(tb, np.maximum(1, -(-counts // MAX_BATCH)))
    # interleave: batch b's rx (each piece followed by its address record),
    # then its tx records
    rx_off = np.cumsum(rx["count"].astype(np.int64)) - rx["count"].astype(np.int64)
    tx_off = np.cumsum(tx["count"].astype(np.int64)) - tx["count"].astype(np.int64) + len(acc)
    pool = [pkt_id[acc], pkt_id[acc[order]]]
    parts, which, sub, start = [rx, tx], [rx_batch * 2, tx_batch * 2 + 1], \
        [np.arange(len(rx)) * 2, np.arange(len(tx)) * 2], [rx_off, tx_off]
    if addrs is not None:
        ad = rx.copy()
        ad["flags"] = CAPTURE_F_ADDR
        parts.append(ad)
        which.append(rx_batch * 2)
        sub.append(np.arange(len(rx)) * 2 + 1)
        start.append(rx_off + 2 * len(acc))
        pool.append(np.asarray(addrs, np.uint64))
    if idle is not None and len(idle):
        # after the tx of the batch before them (the spell they fall in)
        parts.append(_records(idle, np.zeros(len(idle), np.int64), np.zeros(len(idle)),
                              np.zeros(len(idle)), np.zeros(len(idle)), nf_id))
        which.append(np.searchsorted(b_rx, idle, side="right") * 2 - 1)
        sub.append(np.arange(len(idle)) + 2 * (len(rx) + len(tx)) + 2)
        start.append(np.zeros(len(idle), np.int64))
    recs = np.concatenate(parts)
    o = np.lexsort((np.concatenate(sub), np.concatenate(which)))
    recs = recs[o]
    # ids follow the records: rx ids are in service order, tx ids grouped
    # by (batch, port); gather each record's slice of the pooled ids
    pool = np.concatenate(pool)
    start = np.concatenate(start)[o]
    cnt = recs["count"].astype(np.int64)
    within = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    ids = pool[np.repeat(start, cnt) + within].astype(np.uint64)
    if refused is not None and len(refused[0]):
        after_rx = len(rx) + len(tx) if addrs is not None else 0   # its address record
        recs, ids = _with_refused(recs, ids, o, refused, rx_batch, after_rx,
                                  len(rx) + len(tx) + (len(rx) if addrs is not None else 0),
                                  nf_id)
    return nf_id, nf.name, recs, ids


def _with_refused(recs, ids, o, refused, rx_batch, after_rx, idle_row, nf_id):
    """`recs` and `ids` with the refused records of :func:`refused_readings`
    put in, each right after the record of the poll that read it: the last
    rx piece of its batch, row p of the unsorted parts (`o` sorted them),
    or its address record, row `after_rx` + p; or idle poll j, row
    `idle_row` + j."""
    poll, t, packets, window, occ = refused
    last_piece = np.flatnonzero(np.r_[rx_batch[1:] != rx_batch[:-1], True])
    row = np.where(poll >= 0, last_piece[np.maximum(poll, 0)] + after_rx, idle_row - 1 - poll)
    where = np.empty(len(o), np.int64)
    where[o] = np.arange(len(o))
    at = where[row] + 1                       # insert after the poll's record
    r = np.zeros(len(poll), CAPTURE_RECORD_DTYPE)
    r["time_ns"], r["nf_id"], r["flags"], r["count"] = t, nf_id, CAPTURE_F_REFUSED, 2
    r["occupancy"] = occ
    id_end = np.cumsum(recs["count"].astype(np.int64))
    words = np.stack([packets, window], axis=1).astype(np.uint64).ravel()
    return (np.insert(recs, at, r),
            np.insert(ids, np.repeat(id_end[at - 1], 2), words))
