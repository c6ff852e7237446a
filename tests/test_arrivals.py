"""Arrivals at the first NF's queue where the source is not recorded: worked
out from the queue occupancy in the NF's rx records (analyzer/arrivals.py),
checked by hand and against the source's own records of a simulated run."""
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from mscope.analyzer import build_trajectories, infer_topology, load
from mscope.analyzer.arrivals import arrivals_from_occupancy
from mscope.capture import CAPTURE_OCC_UNKNOWN
from mscope.capture.rewrite import rewrite_capture
from mscope.diagnose import diagnose, format_summary
from mscope.sim.run import simulate_to_capture
from mscope.sim.scenario import load_scenario


def _nf(batch_ns, counts, occupancy, idle_ns=(), streams=1):
    """NFRecords-like: rx batches at `batch_ns` taking `counts` packets and
    leaving `occupancy`; one port."""
    counts = np.asarray(counts)
    rx_batch = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    return SimpleNamespace(
        rx_ns=np.asarray(batch_ns, np.int64)[rx_batch], rx_batch=rx_batch,
        rx_port=np.zeros(len(rx_batch), np.int32), batch_ns=np.asarray(batch_ns, np.int64),
        batch_occupancy=np.asarray(occupancy, np.int64),
        idle_ns=np.asarray(idle_ns, np.int64), streams=streams)


def test_a_stall_spreads_its_backlog_over_the_stall():
    # one packet every 10 us, taken at once; then the NF stops 100 us: the
    # 10 packets that came meanwhile are taken 4 at a time after it, and
    # arrived one every 10 us across the stall
    t = [0, 10_000, 20_000, 130_000, 131_000, 132_000]
    nf = _nf(t, [1, 1, 1, 4, 4, 2], [0, 0, 0, 6, 2, 0], idle_ns=[30_000])
    got = arrivals_from_occupancy(nf, np.arange(13))
    assert got[:3].tolist() == [0, 10_000, 20_000]
    # after the idle poll at 30 us (queue empty), 10 arrivals by 130 us
    assert got[3:].tolist() == [30_000 + 10_000 * k for k in range(1, 11)]


def test_a_batch_after_an_idle_gap_did_not_wait_it_out():
    # a packet every 10 us for 100 us, 1 ms idle without idle polls, then 2
    # packets: they came within two mean gaps of the batch that took them,
    # not across the idle millisecond
    t = list(range(0, 100_000, 10_000)) + [1_100_000]
    nf = _nf(t, [1] * 10 + [2], [0] * 11)
    got = arrivals_from_occupancy(nf, np.arange(12))
    gap = (1_100_000 - 0) / 12
    assert got[:10].tolist() == t[:10]
    assert 1_100_000 - 2 * gap - 1 <= got[10] < got[11] <= 1_100_000


def test_batches_whose_queue_could_not_tell_only_bound():
    # a queue counted only when empty (occupancy 0 after a short burst,
    # unknown after a full one, as the sample NFs on virtio-user record
    # it): a packet every 10 us; the NF stops 100 us, then takes the 10
    # packets in full bursts of 4, 4 and a short one of 2: the backlog is
    # still spread evenly over the stop, from the batch that last left the
    # queue empty (20 us) to the short burst that emptied it again (they
    # came from 30 us on).  The full bursts say the queue was not empty
    # meanwhile: the short burst does not bound the backlog by the mean
    # gap, as it would its own packets after an idle spell.
    t = [0, 10_000, 20_000, 130_000, 131_000, 132_000]
    nf = _nf(t, [1, 1, 1, 4, 4, 2], [0, 0, 0, -1, -1, 0])
    got = arrivals_from_occupancy(nf, np.arange(13))
    assert got[:3].tolist() == [0, 10_000, 20_000]
    step = np.diff(got[3:])
    assert (abs(step - step[0]) <= 1).all() and 10_000 < step[0] < 12_000
    assert 30_000 < got[3] < 35_000 and got[-1] == 132_000


def test_occupancy_is_not_trusted_beyond_what_follows():
    # a record claims 4e9 packets left: no estimate goes before the record
    # before it or after its packet's rx
    t = [0, 10_000, 20_000, 30_000]
    nf = _nf(t, [1, 1, 1, 1], [0, 2**32 - 2, 0, 0])
    got = arrivals_from_occupancy(nf, np.arange(4))
    assert (got >= 0).all() and (got <= nf.rx_ns).all()
    assert got[0] == 0 and got[3] >= 10_000


def test_the_kernel_interpolates_as_numpy_does():
    from mscope.analyzer import _match
    from mscope.analyzer.arrivals import interpolate
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.integers(1, 50_000, 2000))
    seen = np.cumsum(rng.integers(0, 40, 2000))
    n = np.sort(rng.integers(0, seen[-1], 30_000))
    rx_ns = t[np.searchsorted(seen, n + 1)] + rng.integers(-5_000, 5_000, len(n))
    for order in (np.arange(len(n)), rng.permutation(len(n))):    # a cursor, a search
        got = np.empty(len(n), np.int64)
        _match.interpolate_arrivals(t, seen, n[order], rx_ns[order], got)
        assert (got == interpolate(t, seen, n[order], rx_ns[order])).all()
    # a packet the records never counted: refused, not read past the end
    with pytest.raises(ValueError, match="never counted"):
        _match.interpolate_arrivals(t, seen, np.array([seen[-1]]), np.array([0]),
                                    np.empty(1, np.int64))


def test_nothing_said_where_the_queue_could_not_tell():
    t = [0, 10_000]
    assert arrivals_from_occupancy(_nf(t, [1, 1], [-1, -1]), np.arange(2)).tolist() == [-1, -1]
    # several lcores and no word of which batch is whose: one count would
    # mix their queues
    assert (arrivals_from_occupancy(_nf(t, [1, 1], [0, 0], streams=2), np.arange(2)) == -1).all()


def test_each_lcore_its_own_queue():
    # lcore 0 takes a packet every 10 us at once; lcore 1 stops 100 us and
    # then finds 10 packets, which came across its stop, and takes them 4
    # at a time: counted per queue (merged, lcore 0's batches would seem
    # to have taken some of lcore 1's)
    t0 = [0, 10_000, 20_000, 30_000, 40_000, 50_000]
    t1 = {5_000: (1, 0), 105_000: (4, 6), 106_000: (4, 2), 107_000: (2, 0)}
    t = sorted(t0 + list(t1))
    stream = [0 if x in t0 else 1 for x in t]
    counts = [1 if x in t0 else t1[x][0] for x in t]
    nf = _nf(t, counts, [0 if x in t0 else t1[x][1] for x in t], streams=2)
    nf.batch_stream = np.array(stream, np.int32)
    got = arrivals_from_occupancy(nf, np.arange(len(nf.rx_ns)))
    mine = np.array(stream)[nf.rx_batch] == 1
    assert got[~mine].tolist() == t0
    assert got[mine].tolist() == [5_000] + [5_000 + 10_000 * k for k in range(1, 11)]


def test_an_lcores_idle_polls_say_when_its_queue_was_empty():
    # testpmd as `mscope attach` records it: the main lcore (stream 0)
    # flushed the port at start and took nothing; the forwarding lcore
    # (stream 1) polled an empty queue the PMD cannot count (idle polls
    # every 20 us, occupancy 0), stopped 100 ms, then drained the 1,000
    # packets that came meanwhile in full bursts of 32 (unknown) and a
    # short one (0 left).  Its idle polls say the queue was empty up to
    # the stop: the backlog is spread over the stop, not over the drain.
    idle = np.arange(0, 1_000_000, 20_000)
    t = [1_100_000 + 500 * k for k in range(32)]
    counts = [32] * 31 + [8]
    nf = _nf(t, counts, [-1] * 31 + [0], idle_ns=idle, streams=2)
    nf.batch_stream = np.ones(len(t), np.int32)
    nf.idle_stream = np.ones(len(idle), np.int32)
    nf.idle_port = np.zeros(len(idle), np.int32)
    got = arrivals_from_occupancy(nf, np.arange(1000))
    assert idle[-1] <= got[0] < idle[-1] + 1_000
    assert abs(got[500] - (idle[-1] + t[-1]) / 2) < 2_000, got[500]
    # whose polls they are matters: another lcore's say nothing of this
    # queue, and then the drain bounds only itself
    nf.idle_stream = np.zeros(len(idle), np.int32)
    other = arrivals_from_occupancy(nf, np.arange(1000))
    assert (other[:992] == nf.rx_ns[:992]).all()


CHAIN = {
    "name": "first-stalls", "seed": 4, "duration_ms": 20, "objective": {"latency_us": 150},
    "nfs": [{"name": "fw", "type": "firewall", "service_ns": 200, "batch": 32, "queue": 1024},
            {"name": "nat", "type": "nat", "service_ns": 300, "batch": 32, "queue": 1024}],
    "links": [["source", "fw"], ["fw", "nat"], ["nat", "sink"]],
    "traffic": {"rate_mpps": 1.0, "flows": 500, "flow_sizes": "pareto",
                "src_prefix": "10.0.0.0/8", "dst_prefix": "192.168.0.0/16"},
    "faults": [{"id": "i1", "kind": "interrupt", "nf": "fw", "at_ms": 8,
                "duration_us": 400}]}


def _capture(tmp_path):
    spec = tmp_path / "first.json"
    spec.write_text(json.dumps(CHAIN))
    cap = tmp_path / "full"
    simulate_to_capture(load_scenario(spec), cap, truth=False, log=lambda *a, **k: None)
    return cap


def _by_id(traj):
    o = np.argsort(traj.packet_id)
    return traj.packet_id[o], o


def test_a_stall_of_the_first_nf_without_a_recorded_source(tmp_path):
    # The chain's first NF stalls; its source is not recorded (a NIC feeds
    # it).  Its rx records' occupancy gives when each packet arrived: within
    # a few us of the source's own records, and the same late packets and
    # culprit as with them.  Without it no packet would have a latency.
    full = _capture(tmp_path)
    bare = tmp_path / "bare"
    rewrite_capture(full, bare, keep=lambda st: st["nf_name"] != "source")

    def traj(cap):
        v = load(cap)
        return build_trajectories(v, infer_topology(v))
    a, b = traj(full), traj(bare)
    assert b.arrivals_estimated == {"fw": len(b.packet_id)} and not b.arrivals_unknown
    ids_a, oa = _by_id(a)
    ids_b, ob = _by_id(b)
    assert (ids_a == ids_b).all()
    # within the stall the records say only how many came (560 in 400 us:
    # the flows are bursty), spread evenly; elsewhere the batches, ~1 us
    # apart, pin them down
    err = np.abs(b.src_ns[ob] - a.src_ns[oa])
    assert np.percentile(err, 95) < 5_000 and err.max() < 100_000, np.percentile(err, [50, 99])

    diag_a, _ = diagnose(full, slo_us=150)
    diag_b, ctx = diagnose(bare, slo_us=150)
    late_a = {v["packet"] for v in diag_a["victims"]}
    late_b = {v["packet"] for v in diag_b["victims"]}
    assert len(late_a) > 200
    assert len(late_a & late_b) >= 0.97 * max(len(late_a), len(late_b))
    fw_local = sum(1 for v in diag_b["victims"]
                   if v["culprits"] and v["culprits"][0] == {**v["culprits"][0], "kind": "nf",
                                                             "nf": "fw", "cause": "local"})
    assert fw_local >= 0.95 * len(late_b)
    assert diag_b["arrivals_from_occupancy"] == [{"nf": "fw", "packets": len(b.packet_id)}]
    assert "arrivals_from_occupancy" not in diag_a and "latency_unknown" not in diag_b
    text = format_summary(diag_b, ctx)
    assert re.search(r"arrivals of packets no recorded tx sent, from the queue occupancy in "
                     r"their NF's rx records: [\d,]+ at fw \(what a full queue refused", text), text


def test_a_queue_counted_only_when_empty(tmp_path):
    # the same chain, its first NF's occupancy known only after a short
    # burst (0: the queue was drained) and unknown after a full one of 32,
    # as a recorder on a queue it cannot count would write: the estimates
    # as close as with every occupancy
    full = _capture(tmp_path)
    part = tmp_path / "part"

    def counted_when_empty(st, recs, ids):
        rx = ((recs["flags"] & 7) == 0) & (recs["count"] > 0)
        recs["occupancy"][rx & (recs["count"] >= 32)] = CAPTURE_OCC_UNKNOWN
        recs["occupancy"][rx & (recs["count"] < 32)] = 0
        return recs, ids
    rewrite_capture(full, part, keep=lambda st: st["nf_name"] != "source",
                    records=counted_when_empty)
    a, b = (build_trajectories(v, infer_topology(v)) for v in (load(full), load(part)))
    (_, oa), (_, ob) = _by_id(a), _by_id(b)
    err = np.abs(b.src_ns[ob] - a.src_ns[oa])
    assert np.percentile(err, 95) < 5_000 and err.max() < 100_000, np.percentile(err, [50, 99])


def test_without_occupancy_the_latency_is_said_to_be_unknown(tmp_path):
    full = _capture(tmp_path)
    blind = tmp_path / "blind"

    def no_occupancy(st, recs, ids):
        # a recorder that cannot count the queue, and writes no idle polls
        # (an idle poll says the queue was empty)
        recs = recs[(recs["count"] > 0) | ((recs["flags"] & 7) != 0)]
        recs["occupancy"][(recs["flags"] & 7) == 0] = CAPTURE_OCC_UNKNOWN
        return recs, ids
    rewrite_capture(full, blind, keep=lambda st: st["nf_name"] != "source",
                    records=no_occupancy, idle_ns=False)
    diag, ctx = diagnose(blind, slo_us=150)
    assert ctx["traj"].arrivals_unknown == {"fw": len(ctx["traj"].packet_id)}
    assert all(v["dropped"] for v in diag["victims"])
    assert diag["latency_unknown"] == [{"nf": "fw", "packets": len(ctx["traj"].packet_id)}]
    text = format_summary(diag, ctx)
    assert re.search(r"latency unknown for [\d,]+ packets starting at fw \(no recorded tx sent "
                     r"them, and no queue occupancy in the rx records\)", text), text
