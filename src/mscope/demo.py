"""`mscope demo`: a real DPDK chain recorded end to end into a capture.

mscope-demo-fwd (source -> net_ring -> NAT -> net_null, linked with
libmscope, with an injected stall) writes its rings; mscope-collect drains
them and ships the chunks over ZeroMQ on loopback to `mscope receive`,
which writes a capture directory.  The demo then summarises the capture
(NFs, records, losses, duration) and, from the records alone, how long
packets waited in the NAT's input queue and how many never reached it.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np

from mscope import paths
from mscope.errors import MscopeError

__all__ = ["run_demo"]


def _eal_args(prefix):
    return ["--no-huge", "-m", "256", "--no-shconf", f"--file-prefix={prefix}",
            "--no-pci", "-l", "0", "--log-level=error", "--no-telemetry",
            "--vdev=net_ring0", "--vdev=net_null0"]


def _free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(argv, **kw):
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _off_cpu0():
    """In the child, before exec: every CPU but 0, where there are others.
    The forwarder runs on CPU 0 (EAL -l 0) and its stalls must be its own:
    the collector's and receiver's start (a second of imports each) would
    otherwise share its CPU."""
    cpus = os.sched_getaffinity(0) - {0}
    if cpus:
        os.sched_setaffinity(0, cpus)


def _wait(proc, timeout):
    """Wait for a process we started (killing it past `timeout`)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
    return proc.returncode, out, err


def _stop(proc, sig=signal.SIGTERM, timeout=30):
    if proc.poll() is None:
        proc.send_signal(sig)
    return _wait(proc, timeout)


def run_demo(seconds=3.0, rate=500_000, stall_us=3000.0, stall_every_ms=500.0,
             out=sys.stdout, keep=None):
    """Run the demo chain end to end and print its summary; returns it as a dict.

    producer (mscope-demo-fwd, DPDK) -> rings -> mscope-collect -> ZeroMQ on
    loopback -> mscope receive -> capture directory -> summary.

    Parameters
    ----------
    keep : path, optional
        Write the capture here (and keep it) instead of a temporary directory.

    Raises
    ------
    MscopeError
        The demo forwarder is missing (mscope was built without DPDK), or a
        part of the pipeline failed (its last line of output says why).
    """
    exe = paths.demo_forwarder()
    if not exe.exists():
        raise MscopeError(f"{exe} not found: mscope was built without DPDK "
                          "(install dpdk-dev and pkg-config, then pip install . again)")
    prefix = f"msdemo{uuid.uuid4().hex[:8]}"
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    registry = Path(tempfile.mkdtemp(prefix="mscope-demo-", dir=shm))
    workdir = Path(tempfile.mkdtemp(prefix="mscope-demo-cap-"))
    capture = Path(keep) if keep else workdir / "capture"
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    py = sys.executable
    procs = []
    try:
        print(f"demo: DPDK forwarder -> mscope-collect -> {endpoint} -> mscope receive "
              f"-> {capture}", file=out)
        receiver = _start([py, "-m", "mscope.cli", "receive", "--listen", endpoint,
                           "--out", str(capture), "--stats", "0"], preexec_fn=_off_cpu0)
        procs.append(receiver)
        collector = _start([py, "-m", "mscope.collector.daemon", "--dir", str(registry),
                            "--ship", endpoint, "--exit-when-idle", "--stats", "1"],
                           preexec_fn=_off_cpu0)
        procs.append(collector)
        fwd = _start([str(exe), *_eal_args(prefix), "--", "--seconds", str(seconds),
                      "--rate", str(rate), "--dir", str(registry),
                      "--stall-us", str(stall_us), "--stall-every-ms", str(stall_every_ms)])
        procs.append(fwd)
        print(f"recording for {seconds:g} s at {rate:,.0f} packets/s: "
              "source -> net_ring -> nat -> net_null", file=out)
        if stall_us > 0:
            print(f"injected fault: nat stops polling for {stall_us:,.0f} us "
                  f"every {stall_every_ms:,.0f} ms", file=out)
        try:
            fwd_out, fwd_err = fwd.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            raise MscopeError("the demo forwarder did not finish in time") from None
        if fwd.returncode != 0:
            raise MscopeError("demo forwarder failed: "
                              + (fwd_err.strip().splitlines() or ["no output"])[-1])
        done = json.loads(fwd_out.strip().splitlines()[-1])
        rc, _, col_err = _wait(collector, timeout=60)
        if rc != 0:
            raise MscopeError("mscope-collect failed: "
                              + (col_err.strip().splitlines() or ["no output"])[-1])
        rc, _, rcv_err = _stop(receiver)
        if rc != 0:
            raise MscopeError("mscope receive failed: "
                              + (rcv_err.strip().splitlines() or ["no output"])[-1])
        summary = _summarise(capture, done, out)
        summary["diagnosis"] = diagnose_live(capture, _live_slo_us(stall_us), out,
                                             done.get("stall_ns", []), stall_us)
        summary["simulated"] = diagnose_simulated(workdir / "simulated", out)
        return summary
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(registry, ignore_errors=True)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)


def _summarise(capture, done, out):
    from mscope.analyzer import build_trajectories, infer_topology, load, queue_timelines
    from mscope.capture import describe, format_text

    info = describe(capture)
    print("", file=out)
    print(format_text(info), file=out)
    # The analyzer's own stages rebuild every packet's path from the ids.
    view = load(capture)
    traj = build_trajectories(view, infer_topology(view))
    nat_q = queue_timelines(view, traj)["demo-nat"]
    nat = traj.nf_names.index("demo-nat")
    at_nat = (traj.hop_nf == nat) & (traj.hop_rx_ns >= 0) & (traj.hop_tx_ns >= 0)
    inside = traj.hop_tx_ns[at_nat] - traj.hop_rx_ns[at_nat]
    lost_at_input = int((traj.drop_nf == nat).sum())
    occ = next(v for v in view.nfs if v.name == "demo-nat").batch_occupancy
    occ = occ[occ >= 0]

    def pct(ns):
        return ({"packets": int(len(ns)), "p50": float(np.percentile(ns, 50)),
                 "p99": float(np.percentile(ns, 99)), "max": float(ns.max())}
                if len(ns) else None)

    summary = {"capture": info, "forwarder": done,
               "nat_queueing_ns": pct(nat_q.delay_ns), "nat_service_ns": pct(inside),
               "nat_input_dropped": lost_at_input,
               "nat_queue_max": int(occ.max()) if len(occ) else None}
    print("", file=out)
    for key, what in (("nat_queueing_ns", "waited in nat's input queue"),
                      ("nat_service_ns", "spent inside nat (rx to tx)")):
        t = summary[key]
        if t:
            print(f"{what:<30} p50 {t['p50']:>10,.0f} ns   p99 {t['p99']:>10,.0f} ns   "
                  f"max {t['max']:>10,.0f} ns   ({t['packets']:,} packets matched by id)",
                  file=out)
    if summary["nat_queue_max"] is not None:
        print(f"nat's input queue peaked at {summary['nat_queue_max']:,} packets", file=out)
    print(f"packets the source sent that nat never received: {lost_at_input:,} "
          f"(the forwarder counted {done.get('unsent', '?'):,} refused by the full queue)",
          file=out)
    return summary


def _live_slo_us(stall_us):
    """The objective the recorded chain is diagnosed against: a third of
    the injected stall (its victims waited longer), within 100-1,000 us;
    1,000 us without one."""
    return max(100.0, min(1000.0, stall_us / 3)) if stall_us > 0 else 1000.0


def diagnose_live(capture, slo_us, out=sys.stdout, stall_ns=(), stall_us=0.0):
    """Diagnose the recorded chain's capture as `mscope diagnose` does and
    print its summary, then where the injected stalls (`stall_ns`: when
    each began, CLOCK_MONOTONIC ns as the forwarder read it; `stall_us`
    long) are in nat's records: each should be a silence (no record, not
    even an idle poll, from its start to its end).  Returns the victims'
    count, the top rules, how many victims each top culprit has and, per
    stall, whether nat's records show it."""
    from collections import Counter

    from mscope.diagnose import diagnose, format_summary

    diag, ctx = diagnose(capture, slo_us=slo_us, lazy=True)
    print("", file=out)
    print(f"$ mscope diagnose {capture} --slo-us {slo_us:g}", file=out)
    print(format_summary(diag, ctx, top=3), file=out)
    tops = Counter(json.dumps({k: x for k, x in v["culprits"][0].items() if k != "score"},
                              sort_keys=True) if v["culprits"] else "null"
                   for v in diag["victims"])
    # the silence around each stall: from nat's last record before it (up
    # to an idle interval earlier) to its first after it; 50 us of slack
    # for the collector's TSC conversion
    quiet = ctx["queues"]["demo-nat"].silences if "demo-nat" in ctx["queues"] else \
        np.zeros((0, 2), np.int64)
    slack, long = 50_000, int(stall_us * 1000)
    seen = [bool(((quiet[:, 0] <= t + slack) & (quiet[:, 1] >= t + long - slack)).any())
            for t in stall_ns]
    if len(stall_ns):
        base = ctx["time_base_ns"]
        at = ", ".join(f"{(t - base) / 1e6:,.3f}" for t in stall_ns[:6])
        more = ", ..." if len(stall_ns) > 6 else ""
        print(f"injected stalls began at {at}{more} ms; nat's records show "
              f"{sum(seen)} of {len(seen)} as a silence of {stall_us:,.0f} us or more "
              "(any other stop was the machine's: the forwarder's one thread, on CPU 0, "
              "was not running)", file=out)
    return {"slo_us": slo_us, "victims": len(diag["victims"]),
            "patterns": diag["patterns"][:3],
            "top_culprits": [{"culprit": json.loads(k), "victims": n}
                             for k, n in tops.most_common()],
            "stalls_seen": seen}


#: The demo's simulated chain: a 3-NF chain whose nat stops for 300 us and
#: whose source bursts 1 ms later (SCENARIO.md format).
DEMO_SCENARIO = {
    "name": "demo-chain", "seed": 11, "duration_ms": 30, "objective": {"latency_us": 150},
    "nfs": [{"name": "fw", "type": "firewall", "service_ns": 200, "batch": 32, "queue": 1024},
            {"name": "nat", "type": "nat", "service_ns": 300, "batch": 32, "queue": 1024},
            {"name": "vpn", "type": "vpn", "service_ns": 450, "batch": 32, "queue": 1024}],
    "links": [["source", "fw"], ["fw", "nat"], ["nat", "vpn"], ["vpn", "sink"]],
    "traffic": {"rate_mpps": 1.0, "flows": 2000, "flow_sizes": "pareto",
                "src_prefix": "10.0.0.0/8", "dst_prefix": "192.168.0.0/16"},
    "faults": [{"id": "f1", "kind": "interrupt", "nf": "nat", "at_ms": 10, "duration_us": 300},
               {"id": "f2", "kind": "burst", "flows": "10.2.3.0/24", "at_ms": 20,
                "duration_us": 500, "rate_mpps": 2.5}]}


def diagnose_simulated(workdir, out=sys.stdout):
    """Simulate DEMO_SCENARIO, diagnose its capture (the analyzer sees only
    the capture), print the diagnosis and how it scores against the
    simulator's ground truth; return the per-fault scores."""
    from mscope.diagnose import diagnose, format_summary
    from mscope.sim.run import simulate_to_capture
    from mscope.sim.scenario import load_scenario
    from mscope.sim.score import score

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec = workdir / "scenario.json"
    spec.write_text(json.dumps(DEMO_SCENARIO))
    cap = workdir / "capture"
    print("", file=out)
    print("simulated chain: source -> fw -> nat -> vpn; injected: nat stops 300 us at 10 ms, "
          "flows 10.2.3.0/24 burst at 2.5 Mpps for 500 us at 20 ms", file=out)
    simulate_to_capture(load_scenario(spec), cap, truth=True, log=lambda *a, **k: None)
    slo = DEMO_SCENARIO["objective"]["latency_us"]
    diag, ctx = diagnose(cap, slo_us=slo)
    print(f"$ mscope diagnose {cap} --slo-us {slo}", file=out)
    print(format_summary(diag, ctx, top=3), file=out)
    res = score(diag, json.loads((cap / "truth.json").read_text()), DEMO_SCENARIO["faults"])
    parts = [f"{fid} ({r['kind']}) {r['correct']:,}/{r['labelled']:,}" for fid, r in res.items()]
    print("against the simulator's ground truth (top culprit right): " + ", ".join(parts),
          file=out)
    return res
