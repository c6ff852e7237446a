"""A chain behind real OVS-DPDK (ovs-vswitchd-dpdk, vhost-user ports, the
sample NFs on virtio-user), recorded end to end: OVS by the preloaded
libmscope (its vhost rx/tx, not ethdev), every DPDK process by the linked
API.  Needs root, 2 CPUs, hugepages and Debian's openvswitch-switch-dpdk
(install.sh installs it); skipped with the reason otherwise."""
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import requires_dpdk
from test_nfs import hugepages, testbed_built  # noqa: F401  (fixtures)

pytestmark = [requires_dpdk, pytest.mark.usefixtures("hugepages", "testbed_built", "ovs")]

#: source -> OVS -> fw -> OVS -> sink; fw stops for 2 ms at 100 ms and
#: OVS's PMD keeps 10% of its core over 140-160 ms.  At --seconds-scale 10
#: (2 s of traffic at 20 kpps, 5 ms objective) as tests/test_testbed.py.
CHAIN = {
    "name": "ovs-fw", "seed": 3, "duration_ms": 200, "objective": {"latency_us": 500},
    "nfs": [{"name": "fw", "type": "firewall", "service_ns": 200, "batch": 32,
             "queue": 1024}],
    "links": [["source", "fw"], ["fw", "sink"]],
    "traffic": {"rate_mpps": 0.2, "flows": 500},
    "faults": [{"id": "f1", "kind": "interrupt", "nf": "fw", "at_ms": 100,
                "duration_us": 2000},
               {"id": "o1", "kind": "contention", "nf": "ovs", "from_ms": 140, "to_ms": 160,
                "share": 0.1}]}

#: Share of f1's window-labelled victims whose top culprit must be fw
#: (local), a culprit tied with the first counting as top.  Measured: 100%
#: in 4 of 5 runs (287/287, 307/307, 328/328, 287/287); in the fifth fw
#: tied with egress (same score) for 237 victims and came second, 70/307
#: strictly (capture kept for the analyzer: docs/ovs.md); room left for VM
#: stalls.
MIN_SHARE = 0.75
#: The same for o1, counting any "ovs@<port>" node as OVS.  Measured:
#: 93-96% (docs/ovs.md).
MIN_OVS_SHARE = 0.5


@pytest.fixture(scope="module")
def ovs():
    from mscope.ovs.switch import check_ovs
    from mscope.errors import MscopeError
    try:
        check_ovs()
    except MscopeError as e:
        pytest.skip(str(e))
    if os.geteuid() != 0:
        pytest.skip("OVS-DPDK with vhost-user needs root (hugepages, /var/run/dpdk)")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("OVS's PMD needs a CPU of its own: 2 CPUs at least")


def _dpdk_leftovers(prefix):
    out = []
    for base in ("/var/run/dpdk", "/dev/hugepages"):
        if Path(base).is_dir():
            out += [str(p) for p in Path(base).iterdir() if p.name.startswith(prefix)]
    return out


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _per_hop(cap, summary):
    """Packets each process recorded, per OVS port and direction: where a
    lost packet went missing."""
    by = _records(cap)
    name = {int(k): v["ovs_port"] for k, v in summary["ports"].items()}
    out = {}
    for nf, r in sorted(by.items()):
        if nf == "ovs":
            for p, n in sorted(Counter(r.rx_port.tolist()).items()):
                out[f"ovs rx {name.get(p, p)}"] = n
            for p, n in sorted(Counter(r.tx_port.tolist()).items()):
                out[f"ovs tx {name.get(p, p)}"] = n
        else:
            out[f"{nf} rx"], out[f"{nf} tx"] = len(r.rx_ids), len(r.tx_ids)
    return out


def _run_whole(spec, cap, run_dir=None, **kw):
    """run_ovs; once more where the sink did not get every packet the
    source sent.  On this 2-vCPU VM a process on CPU 0 is at times kept
    off it for longer than the virtqueues (1024) absorb at the chain's
    rate: three full CI runs in seven lost 58-227 packets at OVS (never in
    fourteen runs of this file alone, nor under busy loops on both CPUs
    after bring-up).  The loss and where it happened are printed; a second
    loss fails the test."""
    from mscope.ovs import run_ovs
    for attempt in (1, 2):
        summary = run_ovs(spec, cap, time_scale=10, log=lambda *a: None, run_dir=run_dir, **kw)
        rep = summary["reports"]
        sent = sum(rep["source"]["sent"])
        if rep["egress"]["rx"] == [sent] or attempt == 2:
            return summary
        print(f"ovs run lost {sent - sum(rep['egress']['rx'])} of {sent} packets, recorded "
              f"per hop {_per_hop(cap, summary)}: running it again")
        shutil.rmtree(cap)
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory, ovs, hugepages, testbed_built):  # noqa: F811
    """One `mscope ovs run` of CHAIN, shared by the tests below."""
    base = tmp_path_factory.mktemp("ovs")
    spec = base / "chain.json"
    spec.write_text(json.dumps(CHAIN))
    cap = base / "cap"
    t = time.monotonic()
    run_dir = Path("/tmp") / f"msovs-t{os.getpid()}"
    try:
        summary = _run_whole(spec, cap, run_dir=run_dir)
        print(f"mscope ovs run: {time.monotonic() - t:.1f} s")
        yield cap, summary
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _records(cap):
    from mscope.capture import open_capture
    from mscope.ovs.truth import records_by_nf
    return records_by_nf(open_capture(cap).read())


def test_chain_forwards_and_every_process_records(run):
    cap, summary = run
    by = _records(cap)
    assert set(by) == {"source", "ovs", "fw", "egress"}
    rep = summary["reports"]
    assert rep["source"]["scheduled"] == 40_000
    # everything sent arrives: the virtqueues (1024) absorb the 20 ms stalls
    # (where not, the packets each hop recorded say where they went)
    assert rep["egress"]["rx"] == [sum(rep["source"]["sent"])] == [40_000], \
        _per_hop(cap, summary)
    assert rep["fw"]["interrupts"] == 1
    # OVS recorded each vhost-user port under its own port number
    names = {int(k): v["ovs_port"] for k, v in summary["ports"].items()}
    port = {v: k for k, v in names.items()}
    ovs = by["ovs"]
    assert sorted(names.values()) == ["fw-in", "fw-out", "snk", "src"]
    assert all(p & 0x8000 for p in names)
    rx_ports = Counter(ovs.rx_port.tolist())
    tx_ports = Counter(ovs.tx_port.tolist())
    assert rx_ports == {port["src"]: 40_000, port["fw-out"]: 40_000}
    assert tx_ports == {port["fw-in"]: 40_000, port["snk"]: 40_000}
    # the ids are the source's at every hop, through OVS and back
    src = np.sort(by["source"].tx_ids)
    assert len(np.unique(src)) == 40_000
    for ids in (ovs.rx_ids[ovs.rx_port == port["src"]], ovs.tx_ids[ovs.tx_port == port["fw-in"]],
                by["fw"].rx_ids, by["fw"].tx_ids, ovs.rx_ids[ovs.rx_port == port["fw-out"]],
                ovs.tx_ids[ovs.tx_port == port["snk"]], by["egress"].rx_ids):
        assert np.array_equal(np.sort(ids), src)
    # and in time order: OVS's tx on fw-in before fw's rx of the same packet
    o = np.argsort(ovs.tx_ids[ovs.tx_port == port["fw-in"]])
    f = np.argsort(by["fw"].rx_ids)
    lead = by["fw"].rx_ns[f] - ovs.tx_ns[ovs.tx_port == port["fw-in"]][o]
    assert (lead >= -50_000).all(), lead.min()      # TSC calibration slack, 50 us
    assert (cap / "ovs-ports.json").exists() and (cap / "truth.json").exists()


def test_nf_pause_on_the_live_chain_is_diagnosed_at_the_nf(run):
    from mscope.diagnose import diagnose
    from mscope.sim.score import score

    cap, summary = run
    truth = json.loads((cap / "truth.json").read_text())
    assert truth["labels"] == "window" and truth["objective"] == {"latency_us": 5000.0}
    f1, o1 = truth["faults"]
    assert f1["nf"] == "fw" and o1["nf"] == "ovs"
    assert f1["window_ns"][0] == summary["t0_ns"] + 1_000_000_000
    assert len(f1["victims"]) >= 100 and len(o1["victims"]) >= 100
    print(f"unexplained victims {len(truth['victims_unexplained'])}")

    diag, _ = diagnose(cap, slo_us=truth["objective"]["latency_us"])
    res = score(diag, truth)["f1"]
    share = res["correct"] / res["labelled"]
    top = {v["packet"]: v["culprits"][0] for v in diag["victims"] if v["culprits"]}
    tops = Counter(top[p]["nf"] if top[p]["kind"] == "nf" else top[p]["flows"]
                   for p in f1["victims"] if p in top)
    # fw (local) with the top score, also when another culprit ties with it
    # (the analyzer orders ties arbitrarily)
    ranked = {v["packet"]: v["culprits"] for v in diag["victims"]}
    tied = sum(1 for p in f1["victims"] if ranked.get(p) and any(
        c["kind"] == "nf" and c["nf"] == "fw" and c["cause"] == "local"
        and c["score"] >= ranked[p][0]["score"] for c in ranked[p]))
    print(f"f1: {res['correct']}/{res['labelled']} window-labelled victims with fw (local) "
          f"as top culprit ({share:.1%}), {tied} with ties; tops {dict(tops)}")
    assert tied >= MIN_SHARE * res["labelled"], res
    assert sum(n for nf, n in tops.items() if nf.startswith("ovs")) < 0.1 * len(f1["victims"])

    # OVS's PMD losing its core: OVS is the culprit, as one node per vhost rx port
    ovs_top = sum(1 for p in o1["victims"] if p in top and top[p]["kind"] == "nf"
                  and top[p]["nf"].split("@")[0] == "ovs" and top[p]["cause"] == "local")
    print(f"o1: {ovs_top}/{len(o1['victims'])} with ovs@<port> (local) as top culprit "
          f"({ovs_top / len(o1['victims']):.1%})")
    assert ovs_top >= MIN_OVS_SHARE * len(o1["victims"])


def test_run_leaves_nothing_behind(run):
    cap, summary = run
    prefix = summary["layout"]["processes"][0]["eal_prefix"][:-1]
    assert _dpdk_leftovers(prefix) == []
    run_dir = Path(f"/tmp/msovs-t{os.getpid()}")       # kept: logs, state.json
    assert [p.name for p in run_dir.iterdir() if p.is_socket()] == []
    assert json.loads((run_dir / "state.json").read_text())["down"] is True
    assert not any(_alive(p["pid"]) for p in
                   json.loads((run_dir / "state.json").read_text())["processes"])


def test_up_forwards_and_down_leaves_nothing_behind(tmp_path):
    """`mscope ovs up` leaves the chain running (processes outlive the
    command); a source started by hand on its src socket gets through; `down`
    stops every process and removes sockets, hugepage files and prefixes."""
    from mscope import paths
    from mscope.sim.run import make_traffic
    from mscope.sim.scenario import load_scenario
    from mscope.testbed.schedule import write_schedule

    sc = dict(CHAIN, faults=[], nfs=[dict(CHAIN["nfs"][0], type="monitor", name="mon")],
              links=[["source", "mon"], ["mon", "sink"]], duration_ms=20,
              traffic={"rate_mpps": 0.02, "flows": 50})
    spec = tmp_path / "up.json"
    spec.write_text(json.dumps(sc))
    run_dir = Path("/tmp") / f"msovs-u{os.getpid()}"
    proc = subprocess.run([sys.executable, "-m", "mscope.cli", "ovs", "up", spec,
                           "--run", run_dir], capture_output=True, text=True, timeout=120)
    try:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "ovs: chain up in" in proc.stdout
        st = json.loads((run_dir / "state.json").read_text())
        pids = {p["name"]: p["pid"] for p in st["processes"]}
        assert set(pids) == {"ovsdb-server", "ovs-vswitchd-dpdk", "NF 'mon' (monitor)", "sink"}
        assert all(_alive(p) for p in pids.values())        # outlived `mscope ovs up`
        assert all((run_dir / p).is_socket() for p in ("src", "mon-in", "mon-out", "snk"))
        # a source by hand, on the free src socket, the chain's control file
        packets = make_traffic(load_scenario(sc))
        write_schedule(tmp_path / "s.bin", packets, np.zeros(len(packets.time_ns), np.uint8))
        # its own start, 1 s from now: after its EAL init and OVS's reload of
        # its PMD's poll list for the new connection (the chain's t0 is when it
        # came up)
        ctl = tmp_path / "ctl"
        ctl.write_bytes(struct.pack("<QII", time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                                    + 1_000_000_000, 0, 0x6d73746b))
        src = subprocess.run(
            [paths.testbed_program("source"), f"--file-prefix={st['prefix']}x",
             "--single-file-segments", "-m", "64", "--lcores=0@0", "--no-pci",
             "--no-telemetry", "--log-level=error",
             f"--vdev=net_virtio_user0,path={run_dir / 'src'},queue_size=1024", "--",
             "--schedule", tmp_path / "s.bin", "--out", "port:0", "--ctl", ctl,
             "--dir", st["registry"]], capture_output=True, text=True, timeout=60)
        assert src.returncode == 0, src.stderr[-2000:]
        done = json.loads(src.stdout.strip().splitlines()[-1])
        # 400 packets at 20 kpps; a virtqueue that fills while another
        # process holds CPU 0 drops some (seen once under other load)
        assert len(packets.time_ns) == 400 and done["sent"][0] >= 360, done
        assert len(list(Path(st["registry"]).glob("ovs.*.ring"))) == 1
    finally:
        down = subprocess.run([sys.executable, "-m", "mscope.cli", "ovs", "down",
                               "--run", run_dir], capture_output=True, text=True, timeout=120)
        logs = run_dir / "logs"
        sink_log = (logs / "sink.log").read_text() if (logs / "sink.log").exists() else ""
        sockets = [p.name for p in run_dir.iterdir() if p.is_socket()] if run_dir.is_dir() else []
        shutil.rmtree(run_dir, ignore_errors=True)
    assert down.returncode == 0, down.stderr[-2000:]
    assert not any(_alive(p) for p in pids.values())
    assert down.stdout.startswith("ovs: stopped 4 processes")
    assert sockets == []
    assert _dpdk_leftovers(st["prefix"]) == []
    assert not Path(st["registry"]).exists()
    sink_done = [json.loads(line) for line in sink_log.splitlines() if '"done"' in line]
    print(f"up: source sent {done['sent'][0]}/400, sink received {sink_done[-1]['rx'][0]}")
    assert sink_done and sink_done[-1]["rx"][0] >= 0.95 * done["sent"][0]


def test_bad_chain_is_one_line_and_starts_nothing(tmp_path):
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps(dict(CHAIN, faults=[{"id": "x", "kind": "bug", "nf": "ovs",
                                                    "flows": "10.0.0.0/8", "from_ms": 1,
                                                    "to_ms": 2, "slowdown": 3}])))
    proc = subprocess.run([sys.executable, "-m", "mscope.cli", "ovs", "run", spec,
                           "--out", tmp_path / "o"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"mscope: error: {spec}: faults[0]: a bug fault cannot act on 'ovs' (contention or "
        f"interrupt can)"], proc.stderr
    assert not (tmp_path / "o").exists()


def test_testpmd_attached_as_an_nf(tmp_path):
    """Type "forwarder": Debian's dpdk-testpmd, unmodified, io-forwarding
    between its two virtio-user ports, recorded by the preloaded libmscope
    (ethdev callbacks) beside OVS's vhost records: the same ids on both
    sides of every vhost-user link."""
    sc = dict(CHAIN, name="ovs-testpmd", duration_ms=100, faults=[],
              nfs=[dict(CHAIN["nfs"][0], name="tp", type="forwarder")],
              links=[["source", "tp"], ["tp", "sink"]])
    summary = _run_whole(sc, tmp_path / "cap")
    assert summary["reports"]["egress"]["rx"] == [20_000], _per_hop(tmp_path / "cap", summary)
    by = _records(tmp_path / "cap")
    assert set(by) == {"source", "ovs", "tp", "egress"}
    port = {v["ovs_port"]: int(k) for k, v in summary["ports"].items()}
    ovs, tp = by["ovs"], by["tp"]
    src = np.sort(by["source"].tx_ids)
    assert len(src) == 20_000
    assert np.array_equal(np.sort(ovs.tx_ids[ovs.tx_port == port["tp-in"]]), src)
    assert np.array_equal(np.sort(tp.rx_ids[tp.rx_port == 0]), src)   # ethdev port 0 in
    assert np.array_equal(np.sort(tp.tx_ids[tp.tx_port == 1]), src)   # ethdev port 1 out
    assert np.array_equal(np.sort(ovs.rx_ids[ovs.rx_port == port["tp-out"]]), src)
    assert summary["reports"]["egress"]["rx"] == [20_000]
    assert summary["reports"]["tp"] is None          # testpmd prints no report
