"""The simulator against queueing theory, conservation, its own fault model,
determinism, and the scenario suite (issue 4)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mscope.capture import open_capture
from mscope.capture.format import CAPTURE_F_TX
from mscope.sim.engine import BATCH_COST, POLL_NS, simulate
from mscope.sim.run import simulate_to_capture
from mscope.sim.scenario import load_scenario
from mscope.sim.traffic import PACKET_DTYPES, Packets

SUITE = Path(__file__).resolve().parent.parent / "bench" / "scenarios"
MSCOPE = [sys.executable, "-m", "mscope.cli"]


def one_nf(service_ns, batch=1, queue=100_000, duration_ms=100, faults=(), slo_us=1000):
    return load_scenario({
        "name": "one", "seed": 1, "duration_ms": duration_ms,
        "objective": {"latency_us": slo_us},
        "nfs": [{"name": "q", "type": "forwarder", "service_ns": service_ns,
                 "batch": batch, "queue": queue}],
        "links": [["source", "q"], ["q", "sink"]],
        "traffic": {"rate_mpps": 0.1, "flows": 100},
        "faults": list(faults)})


def poisson_packets(rate_pps, n, seed=3):
    """Packets with Poisson arrivals (the generator's trains would not be)."""
    rng = np.random.default_rng(seed)
    cols = {}
    for name, dtype in PACKET_DTYPES.items():
        shape = (n, 16) if name == "payload" else (n,)
        cols[name] = np.zeros(shape, dtype)
    cols["time_ns"] = np.cumsum(rng.exponential(1e9 / rate_pps, n)).astype(np.int64)
    cols["pkt_id"] = rng.integers(1, 2**63, n, dtype=np.int64).astype(np.uint64)
    cols["flow_hash"] = rng.integers(0, 2**32, n, dtype=np.int64).astype(np.uint32)
    cols["burst"] = np.full(n, -1, np.int16)
    return Packets(**cols)


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.8])
def test_mg1_mean_wait_matches_pollaczek_khinchine(rho):
    """One NF, batch 1, Poisson arrivals: the mean wait in queue is the
    Pollaczek-Khinchine mean for the service times the NF really drew,
    plus the idle polling delay, within 8%."""
    service = 20_000.0
    sc = one_nf(service)
    s_mean = service * (1 + BATCH_COST)          # the factors average 1
    rate = rho / (s_mean * 1e-9)
    pk = poisson_packets(rate, 150_000)
    run = simulate(sc, pk, records=True)
    nf_id, name, recs, ids = run.streams[1]
    cnt = recs["count"].astype(np.int64)
    is_rx = np.repeat(recs["flags"] == 0, cnt)
    rx_t = np.repeat(recs["time_ns"], cnt)[is_rx].astype(np.float64)
    order = np.argsort(pk.pkt_id)
    sent = run.src_ns[order][np.searchsorted(pk.pkt_id[order], ids[is_rx])]
    wait = rx_t - sent
    from mscope.sim.engine import service_factors
    s = service * service_factors(pk.pkt_id, 0) + BATCH_COST * service
    lam = len(pk.time_ns) / ((run.src_ns[-1] - run.src_ns[0]) * 1e-9)
    r = lam * s.mean() * 1e-9
    theory = lam * 1e-9 * (s ** 2).mean() / (2 * (1 - r)) + POLL_NS / 2 * (1 - r)
    assert abs(wait.mean() - theory) / theory < 0.08, (wait.mean(), theory, r)


def stream(run, name):
    return next(s for s in run.streams if s[1] == name)


def test_conservation_and_queue_lengths():
    """Packets in = out + dropped at every NF and end to end, and the queue
    length rebuilt from the records alone is the simulator's own."""
    sc = load_scenario(SUITE / "interrupt-drops.json")
    from mscope.sim.run import make_traffic
    pk = make_traffic(sc)
    samples = np.linspace(0, sc.duration_ns, 400).astype(np.int64)
    run = simulate(sc, pk, sample_queues=samples)
    n = len(pk.time_ns)
    delivered = (run.exit_ns >= 0).sum()
    dropped = (run.drop_nf >= 0).sum()
    assert delivered + dropped == n and dropped > 0
    assert not ((run.exit_ns >= 0) & (run.drop_nf >= 0)).any()
    # rebuild each NF's queue from records: arrivals = upstream tx of the
    # ids this NF received; departures = its rx
    by_name = {s[1]: s for s in run.streams}
    src_of = {dst: src for src, dst in sc.links}
    for nf in sc.nfs:
        _, _, recs, ids = by_name[nf.name]
        _, _, up_recs, up_ids = by_name[src_of[nf.name]]
        cnt = recs["count"].astype(np.int64)
        is_rx = np.repeat(recs["flags"] == 0, cnt)
        rx_t = np.repeat(recs["time_ns"], cnt)[is_rx]
        rx_ids = ids[is_rx]
        ucnt = up_recs["count"].astype(np.int64)
        up_tx = np.repeat((up_recs["flags"] & CAPTURE_F_TX) != 0, ucnt)
        up_t = np.repeat(up_recs["time_ns"], ucnt)[up_tx]
        up_i = up_ids[up_tx]
        got = np.isin(up_i, rx_ids)          # accepted here (the rest: dropped here)
        assert (~got).sum() == (run.drop_nf == nf.index).sum()
        assert len(rx_ids) + (~got).sum() == len(up_i)
        arrived = np.searchsorted(np.sort(up_t[got]), samples, side="right")
        taken = np.searchsorted(np.sort(rx_t), samples, side="right")
        assert np.array_equal(arrived - taken, run.queue_samples[nf.name]), nf.name
        # the occupancy recorded at rx is the queue right after the batch
        rx_recs = recs[recs["flags"] == 0]
        after = np.searchsorted(np.sort(up_t[got]), rx_recs["time_ns"], side="right") \
            - np.searchsorted(np.sort(rx_t), rx_recs["time_ns"], side="right")
        assert np.array_equal(after, rx_recs["occupancy"].astype(np.int64)), nf.name


def test_interrupt_builds_lambda_times_d():
    """An interrupt of D us at an NF fed at rate lambda leaves ~lambda*D
    packets queued when it ends."""
    d_us, rate = 500, 400_000
    sc = one_nf(1000.0, batch=32, faults=[{"id": "i", "kind": "interrupt", "nf": "q",
                                           "at_ms": 40, "duration_us": d_us}])
    pk = poisson_packets(rate, 40_000)
    end = int(40e6 + d_us * 1e3)
    run = simulate(sc, pk, sample_queues=np.array([end - 1], np.int64))
    backlog = int(run.queue_samples["q"][0])
    expect = rate * d_us * 1e-6
    assert abs(backlog - expect) < 0.15 * expect + 10, (backlog, expect)


def test_no_faults_low_load_has_no_victims(tmp_path):
    sc = load_scenario(SUITE / "no-faults-light.json")
    s = simulate_to_capture(sc, tmp_path / "cap")
    truth = json.loads((tmp_path / "cap" / "truth.json").read_text())
    assert s["victims"] == 0
    assert truth["faults"] == [] and truth["victims_unexplained"] == []


def test_counterfactual_labels_follow_the_fault(tmp_path):
    """Victims of a lone interrupt all belong to it, and they are all
    packets that met the interrupted NF during or after the stall."""
    sc = load_scenario(SUITE / "interrupt-latency.json")
    simulate_to_capture(sc, tmp_path / "cap")
    truth = json.loads((tmp_path / "cap" / "truth.json").read_text())
    (fault,) = truth["faults"]
    assert fault["nf"] == "nat" and len(fault["victims"]) > 0
    assert truth["victims_unexplained"] == []
    data = open_capture(tmp_path / "cap").read()
    assert np.isin(np.array(fault["victims"], np.uint64), data.ids).all()


def test_same_seed_same_bytes(tmp_path):
    sc = load_scenario(SUITE / "fw-bug-and-burst.json")
    for d in ("a", "b"):
        simulate_to_capture(sc, tmp_path / d)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_idle_polls_fall_where_the_recorder_writes_them():
    """At the first empty poll IDLE_NS after the NF's last record, none
    while it is interrupted, one at the poll that ends an interrupt."""
    from mscope.sim.engine import idle_polls
    got = idle_polls(np.array([100_000, 200_000]), np.array([110_000, 205_000]),
                     np.array([0.0, 150_000.0, 190_000.0]), np.array([1.0, 0.0, 1.0]),
                     end_ns=300_000, every=20_000)
    assert got.tolist() == [20_000, 40_000, 60_000, 80_000,      # idle from 0
                            130_000, 190_000,                   # cut by the interrupt
                            225_000, 245_000, 265_000, 285_000]
    # a batch taken right at a record's due time: that poll was not empty
    assert idle_polls(np.array([20_000]), np.array([30_000]), np.array([0.0]),
                      np.array([1.0]), end_ns=40_000, every=20_000).tolist() == []


def test_idle_polls_in_the_capture_leave_only_the_interrupt_silent(tmp_path):
    """An NF's idle-poll records are rx records of no packets, and the only
    silence in its records (free, then nothing for longer than
    SILENCE_NS) is its interrupt."""
    from mscope.analyzer.ingest import SILENCE_NS, load
    sc = one_nf(2000.0, batch=8, duration_ms=20,
                faults=[{"id": "i", "kind": "interrupt", "nf": "q", "at_ms": 10,
                         "duration_us": 300}])
    simulate_to_capture(sc, tmp_path / "cap", truth=False)
    data = open_capture(tmp_path / "cap").read()
    idle = (data.records["count"] == 0) & (data.records["nf_id"] == 1)
    assert idle.sum() > 100
    assert (data.records["flags"][idle] == 0).all()
    q = load(tmp_path / "cap").nf("q")
    assert len(q.idle_ns) == idle.sum() and len(q.batch_ns) > 300
    assert not np.isin(q.idle_ns, q.batch_ns).any()
    assert len(q.silences) == 1
    start, end = q.silences[0].tolist()
    assert 10_000_000 - SILENCE_NS <= start <= 10_000_000 and end >= 10_300_000
    assert end - start > 300_000


def test_capture_reads_like_a_collected_one(tmp_path):
    """The simulator's capture goes through the same reader, whole, with a
    stream per NF and the source, time ordered per stream."""
    sc = load_scenario(SUITE / "dag-burst-drops.json")
    simulate_to_capture(sc, tmp_path / "cap")
    cap = open_capture(tmp_path / "cap")
    data = cap.read()
    assert data.losses == []
    names = {s["nf_name"] for s in cap.manifest["streams"]}
    assert names == {"source"} | {nf.name for nf in sc.nfs}
    for sid in np.unique(data.stream):
        t = data.records["time_ns"][data.stream == sid]
        assert (np.diff(t) >= 0).all()


def test_the_whole_suite_validates_and_runs(tmp_path):
    proc = subprocess.run([*MSCOPE, "simulate", str(SUITE), "--out", str(tmp_path / "suite"),
                           "--json", str(tmp_path / "s.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summaries = json.loads((tmp_path / "s.json").read_text())
    assert len(summaries) == len(list(SUITE.glob("*.json"))) >= 12
    for s in summaries:
        assert (tmp_path / "suite" / s["scenario"] / "truth.json").exists()


def test_no_truth_writes_no_labels_and_says_so(tmp_path):
    out = tmp_path / "o"
    proc = subprocess.run([*MSCOPE, "simulate", str(SUITE / "dag-burst-drops.json"), "--no-truth",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "manifest.json").exists() and not (out / "truth.json").exists()
    assert "not labelled: --no-truth" in proc.stdout and "None" not in proc.stdout


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x"}')
    proc = subprocess.run([*MSCOPE, "simulate", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "bad.json" in proc.stderr


def test_nat_rewrites_tuples_not_ids():
    """A NAT rewrites source address and port: a fork after it splits flows
    by the new tuple (whole flows, but not as it would have before the NAT),
    while every packet keeps its id through the NAT."""
    sc = load_scenario({
        "name": "nat-fork", "seed": 5, "duration_ms": 20, "objective": {"latency_us": 500},
        "nfs": [{"name": "nat", "type": "nat", "service_ns": 100, "batch": 32, "queue": 4096},
                {"name": "lb", "type": "lb", "service_ns": 50, "batch": 32, "queue": 4096},
                {"name": "a", "type": "forwarder", "service_ns": 100, "batch": 32, "queue": 4096},
                {"name": "b", "type": "forwarder", "service_ns": 100, "batch": 32, "queue": 4096}],
        "links": [["source", "nat"], ["nat", "lb"], ["lb", "a"], ["lb", "b"],
                  ["a", "sink"], ["b", "sink"]],
        "traffic": {"rate_mpps": 0.5, "flows": 400}, "faults": []})
    from mscope.sim.engine import _route
    from mscope.sim.run import make_traffic
    pk = make_traffic(sc)
    run = simulate(sc, pk)
    by = {s[1]: s for s in run.streams}
    _, _, recs, ids = by["nat"]
    cnt = recs["count"].astype(np.int64)
    tx = np.repeat((recs["flags"] & CAPTURE_F_TX) != 0, cnt)
    rx = np.repeat(recs["flags"] == 0, cnt)
    assert np.array_equal(np.sort(ids[tx]), np.sort(ids[rx]))
    assert np.array_equal(np.sort(ids[rx]), np.sort(pk.pkt_id))
    # the ingress NAT records the addresses as sent, before its rewrite
    addr = ids[~tx & ~rx]                       # word i belongs to rx id i
    src_of = dict(zip(pk.pkt_id.tolist(), pk.src_ip.tolist()))
    assert (addr >> np.uint64(32)).tolist() == [src_of[i] for i in ids[rx].tolist()]
    went_a = np.isin(pk.pkt_id, by["a"][3])
    flows = pk.flow
    per_flow = np.bincount(flows, weights=went_a) / np.maximum(np.bincount(flows), 1)
    seen = np.bincount(flows) > 0
    assert np.isin(per_flow[seen], [0.0, 1.0]).all(), "whole flows go one way"
    lb = next(nf for nf in sc.nfs if nf.name == "lb")
    before_nat = _route(2, pk.flow_hash, 0x9E37 * (lb.index + 1)) == 0
    assert (before_nat != went_a).any(), "the fork split on the rewritten tuple"


def test_pcap_replay_scenario(tmp_path):
    """traffic.pcap: the scenario replays a capture's packets through the
    chain, with the ids live NFs would compute from those frames."""
    from test_traffic import pcap_bytes, sample_records
    from mscope.packet_id import packet_id
    recs = sample_records()
    (tmp_path / "t.pcap").write_bytes(pcap_bytes([(t, f, o) for t, f, o, _ in recs]))
    scenario = {
        "name": "replay", "seed": 1, "duration_ms": 10, "objective": {"latency_us": 100},
        "nfs": [{"name": "fw", "type": "firewall", "service_ns": 200, "batch": 32,
                 "queue": 1024}],
        "links": [["source", "fw"], ["fw", "sink"]],
        "traffic": {"pcap": "t.pcap"}, "faults": []}
    path = tmp_path / "replay.json"
    path.write_text(json.dumps(scenario))
    sc = load_scenario(path)
    s = simulate_to_capture(sc, tmp_path / "cap")
    data = open_capture(tmp_path / "cap").read()
    ipv4_ids = {packet_id(f) for _, f, _, tup in recs if tup}
    assert s["packets"] == len(ipv4_ids) > 0
    from mscope.capture import CAPTURE_F_ADDR
    is_addr = np.repeat((data.records["flags"] & CAPTURE_F_ADDR) != 0,
                        data.records["count"].astype(np.int64))
    assert set(int(i) for i in data.ids[~is_addr]) == ipv4_ids


_M64 = (1 << 64) - 1


def _splitmix64(x):
    """splitmix64's output function over Python ints, mod 2**64."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def test_service_factors_for_any_number_of_nfs():
    """An NF's salt is (index + 1) * 0x2545F4914F6CDD1D mod 2**64: the 7th
    NF on (whose product passes 2**64) gets factors like the others, and
    the first six keep theirs, so older captures stay bit-identical."""
    from mscope.sim.engine import service_factors
    ids = np.array([1, 2, 12345, 2**63 + 5, 2**64 - 1, 0xDEADBEEFCAFEBABE], np.uint64)
    for index in range(12):
        salt = ((index + 1) * 0x2545F4914F6CDD1D) & _M64
        want = []
        for pid in ids.tolist():
            x = _splitmix64(pid ^ salt)
            f = 0.9 + 0.2 * ((x >> 11) * (1.0 / (1 << 53)))
            want.append((3.0 * f if (x & 0xFF) < 3 else f) / (1.0 + 2.0 * 3 / 256))
        assert service_factors(ids, index).tolist() == want, index
    many = np.arange(1, 200_001, dtype=np.uint64)
    assert abs(service_factors(many, 9).mean() - 1.0) < 0.01


def test_chain_of_eight_nfs_runs():
    """A chain longer than six NFs simulates: at light load every packet
    crosses every NF and leaves."""
    names = [f"n{i}" for i in range(8)]
    sc = load_scenario({
        "name": "long", "seed": 1, "duration_ms": 5, "objective": {"latency_us": 100},
        "nfs": [{"name": n, "type": "forwarder", "service_ns": 100, "batch": 32,
                 "queue": 1024} for n in names],
        "links": [["source", names[0]]] + [[a, b] for a, b in zip(names, names[1:])]
        + [[names[-1], "sink"]],
        "traffic": {"rate_mpps": 0.5, "flows": 1000}, "faults": []})
    from mscope.sim.run import make_traffic
    pk = make_traffic(sc)
    run = simulate(sc, pk)
    assert (run.exit_ns >= 0).all() and not run.victim.any()
    for name in names:
        _, _, recs, ids = stream(run, name)
        rx = np.repeat(recs["flags"] == 0, recs["count"].astype(np.int64))
        assert np.array_equal(np.sort(ids[rx]), np.sort(pk.pkt_id)), name


def test_source_fork_records_each_packet_on_its_port(tmp_path):
    """A source with two out-links: each packet's source tx record names
    the port of the link it took (the NF whose rx records hold its id), at
    the tick it was sent, and a fault-free run diagnoses no drops."""
    sc = load_scenario({
        "name": "src-fork", "seed": 3, "duration_ms": 20, "objective": {"latency_us": 100},
        "nfs": [{"name": n, "type": "firewall", "service_ns": 200, "batch": 32,
                 "queue": 1024} for n in ("a", "b")],
        "links": [["source", "a"], ["source", "b"], ["a", "sink"], ["b", "sink"]],
        "traffic": {"rate_mpps": 1.0, "flows": 4000}, "faults": []})
    from mscope.sim.run import make_traffic
    pk = make_traffic(sc)
    run = simulate(sc, pk)
    # where each packet went, from the NFs' rx records alone
    went = {}
    for port, name in enumerate(sc.out_links["source"]):
        _, _, recs, ids = stream(run, name)
        rx = np.repeat(recs["flags"] == 0, recs["count"].astype(np.int64))
        went.update(dict.fromkeys(ids[rx].tolist(), port))
    assert len(went) == len(pk.pkt_id) and set(went.values()) == {0, 1}
    _, _, recs, ids = stream(run, "source")
    cnt = recs["count"].astype(np.int64)
    assert ((recs["flags"] & CAPTURE_F_TX) != 0).all()
    rec_port = np.repeat(recs["port"].astype(np.int64), cnt)
    rec_time = np.repeat(recs["time_ns"], cnt)
    assert np.array_equal(np.sort(ids), np.sort(pk.pkt_id))
    assert rec_port.tolist() == [went[i] for i in ids.tolist()]
    sent = dict(zip(pk.pkt_id.tolist(), (-(-pk.time_ns // 1000) * 1000).tolist()))
    assert rec_time.tolist() == [sent[i] for i in ids.tolist()]
    # a tick that sends to both ports: the case the records once got wrong
    ticks = np.unique(rec_time[rec_port == 0])
    assert np.isin(ticks, rec_time[rec_port == 1]).any()

    from mscope.diagnose import diagnose
    simulate_to_capture(sc, tmp_path / "cap", log=lambda *a: None)
    truth = json.loads((tmp_path / "cap" / "truth.json").read_text())
    assert truth["victims_total"] == 0
    diag, _ = diagnose(tmp_path / "cap", slo_us=100)
    assert not [v for v in diag["victims"] if v["dropped"]]


def test_bug_after_a_nat_matches_the_flows_as_sent():
    """A bug's `flows` name source addresses as the source sends them, so
    a bug at an NF behind a NAT (which rewrites the source to its pool)
    still slows those flows: batch 1, each packet's time in service at fw
    (its tx minus rx record) is the no-bug run's times the slowdown for the
    prefix's packets that reached fw during the bug, and unchanged for the
    other packets."""
    import ipaddress
    sc = load_scenario({
        "name": "nat-bug", "seed": 4, "duration_ms": 30, "objective": {"latency_us": 5},
        "nfs": [{"name": "nat", "type": "nat", "service_ns": 200, "batch": 1, "queue": 4096},
                {"name": "fw", "type": "firewall", "service_ns": 200, "batch": 1,
                 "queue": 4096}],
        "links": [["source", "nat"], ["nat", "fw"], ["fw", "sink"]],
        "traffic": {"rate_mpps": 0.05, "flows": 400},
        "faults": [{"id": "b1", "kind": "bug", "nf": "fw", "flows": "10.0.0.0/9",
                    "from_ms": 10, "to_ms": 15, "slowdown": 50}]})
    from mscope.sim.run import label_victims, make_traffic
    pk = make_traffic(sc)

    def fw_service(run):
        """Per packet id: fw's (rx time, tx - rx) and its arrival (nat's tx)."""
        out = {}
        for name in ("nat", "fw"):
            _, _, recs, ids = stream(run, name)
            cnt = recs["count"].astype(np.int64)
            t = np.repeat(recs["time_ns"], cnt)
            tx = np.repeat((recs["flags"] & CAPTURE_F_TX) != 0, cnt)
            rx = np.repeat(recs["flags"] == 0, cnt)
            out[name, "tx"] = dict(zip(ids[tx].tolist(), t[tx].tolist()))
            out[name, "rx"] = dict(zip(ids[rx].tolist(), t[rx].tolist()))
        return {i: (out["nat", "tx"][i], out["fw", "tx"][i] - out["fw", "rx"][i])
                for i in out["fw", "rx"]}

    with_bug = fw_service(simulate(sc, pk))
    without = fw_service(simulate(sc, pk, disabled=frozenset([0])))
    net = ipaddress.ip_network("10.0.0.0/9")
    in_net = {i: ipaddress.ip_address(s) in net
              for i, s in zip(pk.pkt_id.tolist(), pk.src_ip.tolist())}
    slowed = {i for i, (arrived, _) in with_bug.items()
              if in_net[i] and 10_000_000 <= arrived < 15_000_000}
    assert len(slowed) > 50
    for i, (_, took) in with_bug.items():
        base = without[i][1]
        if i in slowed:
            assert took > 10 * base, (i, took, base)
        else:
            assert abs(took - base) <= 1, (i, took, base)
    # and the truth labels those packets the bug's victims
    _, belongs, _ = label_victims(sc, pk)
    victims = set(pk.pkt_id[belongs[0]].tolist())
    assert slowed <= victims


def test_ceiling_counts_one_culprit_per_victim():
    from mscope.sim.score import ceiling, score
    faults = [{"id": "i1", "kind": "interrupt", "nf": "ids"},
              {"id": "i2", "kind": "interrupt", "nf": "vpn"},
              {"id": "b1", "kind": "bug", "nf": "vpn", "flows": "10.0.0.0/10"},
              {"id": "u1", "kind": "burst", "flows": "10.2.0.0/16"},
              {"id": "u2", "kind": "burst", "flows": "11.0.0.0/8"}]
    truth = {"faults": [{"id": "i1", "kind": "interrupt", "nf": "ids", "victims": [1, 2]},
                        {"id": "i2", "kind": "interrupt", "nf": "vpn", "victims": [2, 3]},
                        {"id": "b1", "kind": "bug", "nf": "vpn", "victims": [3]},
                        {"id": "u1", "kind": "burst", "victims": [3, 4]},
                        {"id": "u2", "kind": "burst", "victims": [4]}],
             "victims_unexplained": []}
    # 1: i1; 2: i1 or i2 (different NFs); 3: i2 and b1 (both vpn) or u1;
    # 4: u1 and u2 (one prefix overlaps both)
    assert ceiling(truth, faults) == (1 + 1 + 2 + 2, 8)
    # each kind alone: 2 is one interrupt label of two, 3 is i2's (vpn, as
    # b1) or u1's, 4 both bursts'
    from mscope.sim.score import kind_ceilings
    assert kind_ceilings(truth, faults) == {"interrupt": (3, 4), "bug": (1, 1),
                                            "burst": (3, 3)}
    # and a diagnosis can reach it: what the score confirms
    top = {1: {"kind": "nf", "nf": "ids", "cause": "local"},
           2: {"kind": "nf", "nf": "vpn", "cause": "local"},
           3: {"kind": "nf", "nf": "vpn", "cause": "local"},
           4: {"kind": "flows", "flows": "10.0.0.0/7", "cause": "source"}}
    diag = {"victims": [{"packet": p, "culprits": [c]} for p, c in top.items()]}
    assert sum(r["correct"] for r in score(diag, truth, faults).values()) == 6


def test_alone_scores_the_victims_one_fault_alone_made():
    from mscope.sim.score import alone
    faults = [{"id": "i1", "kind": "interrupt", "nf": "ids"},
              {"id": "i2", "kind": "interrupt", "nf": "vpn"},
              {"id": "u1", "kind": "burst", "flows": "10.2.0.0/16"}]
    truth = {"faults": [{"id": "i1", "kind": "interrupt", "nf": "ids", "victims": [1, 2, 5]},
                        {"id": "i2", "kind": "interrupt", "nf": "vpn", "victims": [2, 3]},
                        {"id": "u1", "kind": "burst", "victims": [4, 6, 7]}]}
    ids, vpn = ({"kind": "nf", "nf": n, "cause": "local"} for n in ("ids", "vpn"))
    burst = {"kind": "flows", "flows": "10.2.3.0/24", "cause": "source"}
    # 2 is both interrupts': in neither's own; 6 is not in the diagnosis,
    # 7 has no culprit
    diag = {"victims": [{"packet": 1, "culprits": [ids]}, {"packet": 2, "culprits": [ids]},
                        {"packet": 5, "culprits": [vpn, ids]}, {"packet": 3, "culprits": [vpn]},
                        {"packet": 4, "culprits": [burst]}, {"packet": 7, "culprits": []}]}
    got = alone(diag, truth, faults)
    assert got["i1"] == {"own": 2, "own_correct": 1, "own_wrong": {"vpn/local": 1}}
    assert got["i2"] == {"own": 1, "own_correct": 1, "own_wrong": {}}
    assert got["u1"] == {"own": 3, "own_correct": 1, "own_wrong": {"missed": 1, "none": 1}}


def test_source_names_say_how_precisely_a_burst_is_named():
    from mscope.sim.score import NAME_CLASSES, score, source_names
    faults = [{"id": "u1", "kind": "burst", "flows": "10.2.0.0/16"},
              {"id": "i1", "kind": "interrupt", "nf": "ids"}]
    names = {1: "10.2.0.0/16", 2: "10.2.3.0/24", 3: "10.0.0.0/14", 4: "10.0.0.0/8",
             5: "0.0.0.0/0", 6: "*", 7: "11.0.0.0/8"}
    truth = {"faults": [{"id": "u1", "kind": "burst", "victims": list(names) + [8, 9]},
                        {"id": "i1", "kind": "interrupt", "nf": "ids", "victims": [1, 9]}]}
    victims = [{"packet": p, "culprits": [{"kind": "flows", "flows": n, "cause": "source"}]}
               for p, n in names.items()]
    victims.append({"packet": 8, "culprits": [{"kind": "nf", "nf": "ids", "cause": "local"}]})
    got = source_names({"victims": victims}, truth, faults)
    assert list(got) == list(NAME_CLASSES)
    assert got == {"exact": 1, "inside": 1, "wider 1-4": 1, "wider 5+": 1, "/0": 2,
                   "disjoint": 1}
    # the scoring rule counts all but the disjoint one right
    assert score({"victims": victims}, truth, faults)["u1"]["correct"] == 6
