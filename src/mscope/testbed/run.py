"""`mscope testbed run`: a scenario on real DPDK processes, recorded.

primary (pool, rings, control memzone) -> mscope-collect --out DIR ->
sink, NFs, source (secondaries; each prints "ready") -> "start": t0 ->
contention hogs -> the source sends its schedule -> the rings drain ->
SIGTERM to NFs and sink -> the primary quits -> the collector exits once
every ring is drained -> truth.json (window labels, mscope.testbed.truth)
and testbed.json (what each process reported) in DIR.
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from mscope.errors import MscopeError

from .plan import SINK_NAME, binaries, check_scenario, eal_args, make_plan
from .procs import Child, ChildDied
from .schedule import write_schedule

__all__ = ["run_testbed", "check_hugepages"]

#: Margin between "start" and t0: every process is already waiting for it.
START_DELAY_NS = 20_000_000
#: Nice value of the chain's processes (primary, source, NFs, sink): on a
#: shared machine they then preempt other work on their CPUs quickly after
#: an idle sleep (docs/testbed.md, "Timing on shared cores").
CHAIN_NICE = -10
#: Idle sleep of the chain's processes.  A sleep and its wake-up cost
#: ~25-30 us of CPU on the 2-vCPU VMs here whatever the length asked
#: (docs/testbed.md), so three NFs polling every 100 us take ~60% of their
#: shared core doing nothing; every hop adds up to this much latency.
DEFAULT_POLL_US = 100.0
#: Hugepage memory the chain needs besides its mbufs (rings, tables, heap).
_BASE_MB = 64
_MBUF_BYTES = 2560          # RTE_MBUF_DEFAULT_BUF_SIZE + headers, rounded up


def _meminfo():
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def check_hugepages(need_mb):
    """One-line MscopeError unless hugetlbfs is mounted with `need_mb` free."""
    mounted = False
    try:
        with open("/proc/mounts") as f:
            mounted = any(line.split()[2] == "hugetlbfs" for line in f if len(line.split()) > 2)
    except OSError:
        pass
    info = _meminfo()
    free_mb = info.get("HugePages_Free", 0) * info.get("Hugepagesize", 0) / 1024
    how = ("echo 256 > /proc/sys/vm/nr_hugepages; mount -t hugetlbfs nodev /dev/hugepages "
           "(install.sh does both)")
    if not mounted:
        raise MscopeError(f"testbed: no hugetlbfs mounted (DPDK primary and secondaries "
                          f"share hugepages): {how}")
    if free_mb < need_mb:
        raise MscopeError(f"testbed: {free_mb:.0f} MB of hugepages free, the chain needs "
                          f"{need_mb:.0f} MB: {how}")


def _out_index(sc, packets):
    """Out-link of each packet at the source: by flow hash, as every fork."""
    n = len(sc.out_links["source"])
    return (packets.flow_hash % np.uint32(n)).astype(np.uint8)


class _Run:
    """The processes of one run, and their teardown."""

    def __init__(self, plan, log):
        self.plan = plan
        self.log = log
        self.children = []

    def start(self, name, argv, **kw):
        c = Child(name, argv, **kw)
        self.children.append(c)
        return c

    def check_alive(self, expected_exit=()):
        for c in self.children:
            if c not in expected_exit and not c.alive():
                raise c.died()

    def teardown(self):
        for c in reversed(self.children):
            if c.alive():
                c.kill()
        prefix = self.plan.prefix
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
        huge = Path("/dev/hugepages")
        if huge.is_dir():
            for f in huge.glob(f"{prefix}*"):
                try:
                    f.unlink()
                except OSError:
                    pass
        shutil.rmtree(self.plan.registry, ignore_errors=True)


def run_testbed(scenario, out, time_scale=1.0, poll_us=DEFAULT_POLL_US, nf_args=None,
                dumps=False, force=False, log=print, cpus=None, collector_args=(),
                record_ms=None):
    """Run `scenario` on live DPDK processes; write the capture and truth to `out`.

    Parameters
    ----------
    scenario : str, os.PathLike, Mapping or Scenario
        A scenario (SCENARIO.md); loaded with mscope.sim.scenario.load_scenario.
    out : str or os.PathLike
        The capture directory to write (new or empty); truth.json and
        testbed.json go into it.
    time_scale : float
        ``--seconds-scale``: every scenario time (duration, fault times,
        service_ns, the objective) is multiplied by it and every rate
        divided by it, so queues see the same packet counts on a slower
        clock.
    poll_us : float
        How long the source, the NFs and the sink sleep when they find
        nothing to do (their poll period when lightly loaded).
    nf_args : dict name -> list of str, optional
        Extra mscope-nf options per NF (e.g. firewall rules).
    dumps : bool
        Also have the source and the sink dump every frame (source.dump,
        sink.dump in `out`; mscope.testbed.schedule.read_dump).
    force : bool
        Replace a non-empty `out`.
    cpus : list of int, optional
        CPUs to lay the chain out on (default: all this process may use).
    record_ms : float, optional
        Stop mscope-collect this many ms (wall clock) after the traffic
        starts, while it still flows, as a recording of a live chain ends:
        its rings are drained one after the other, each to a later time.
        The window labels need the whole run, so there is then no
        truth.json (and the summary's ``truth`` is None).

    Returns
    -------
    dict
        The run summary (also testbed.json).

    Raises
    ------
    MscopeError
        Unknown NF type or unusable name, missing binaries or hugepages, a
        process that died or hung (named, with its last error line).
        Everything started is stopped first.
    """
    from mscope.sim.run import make_traffic
    from mscope.sim.scenario import Scenario, load_scenario

    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    if not (time_scale > 0 and np.isfinite(time_scale)):
        raise MscopeError(f"--seconds-scale must be a positive number, got {time_scale}")
    if not (poll_us >= 0 and np.isfinite(poll_us)):
        raise MscopeError(f"--poll-us must be a number >= 0, got {poll_us}")
    if record_ms is not None and not (record_ms > 0 and np.isfinite(record_ms)):
        raise MscopeError(f"--record-ms must be a number > 0, got {record_ms}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force or not out.is_dir():
            raise MscopeError(f"{out} is not empty (use --force to replace it)")
        shutil.rmtree(out)
    check_scenario(sc)
    progs = binaries()
    prefix = f"mstb{uuid.uuid4().hex[:10]}"
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    registry = Path(tempfile.mkdtemp(prefix="mscope-tb-", dir=shm))
    plan = make_plan(sc, prefix, registry, time_scale, nf_args, cpus)
    run = _Run(plan, log)
    try:
        check_hugepages(_BASE_MB + plan.pool_mbufs * _MBUF_BYTES / 2**20)
        t_begin = time.monotonic()
        packets = make_traffic(sc)
        schedule = registry / "schedule.bin"
        write_schedule(schedule, packets, _out_index(sc, packets), time_scale)
        summary = _run(sc, plan, run, progs, out, packets, schedule, time_scale, poll_us,
                       dumps, collector_args, record_ms)
        summary["seconds"] = round(time.monotonic() - t_begin, 2)
        (out / "testbed.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        run.teardown()


def _run(sc, plan, run, progs, out, packets, schedule, time_scale, poll_us, dumps,
         collector_args, record_ms=None):
    log = run.log
    primary = run.start("primary", [progs["primary"], *eal_args(plan, True, 0, plan.control_cpu),
                                    "--", "--pool", plan.pool_mbufs,
                                    *[a for name, size, mp in plan.rings
                                      for a in ("--ring", f"{name}:{size}{':mp' if mp else ''}")]],
                        stdin=True, nice=CHAIN_NICE)
    ready = primary.expect("ready", 60)
    if ready.get("id_stamp_offset", -1) < 0:
        raise MscopeError(f"testbed: the primary could not register libmscope's id stamp: "
                          f"{primary.last_error()}")
    collector = run.start("mscope-collect",
                          [sys.executable, "-m", "mscope.collector.daemon", "--dir",
                           plan.registry, "--out", str(out), "--exit-when-idle",
                           "--flush-ms", "50", *collector_args])
    common = ["--dir", plan.registry, "--idle-us", f"{poll_us:g}"]
    nodes = {}
    for node in plan.nodes:
        eal = eal_args(plan, False, node.lcore, node.cpu)
        if node.role == "source":
            argv = [progs["source"], *eal, "--", *common, "--name", node.name,
                    "--nf-id", node.nf_id, "--schedule", schedule,
                    "--out", ",".join(node.out_rings)]
            if dumps:
                argv += ["--dump", Path(plan.registry) / "source.dump"]
            label = "source"
        elif node.role == "sink":
            argv = [progs["sink"], *eal, "--", *common, "--name", node.name,
                    "--nf-id", node.nf_id, "--in", ",".join(node.in_rings)]
            if dumps:
                argv += ["--dump", Path(plan.registry) / "sink.dump"]
            label = "sink"
        else:
            argv = [progs["nf"], *eal, "--", *common, "--name", node.name,
                    "--nf-id", node.nf_id, "--in", node.in_rings[0],
                    "--out", ",".join(node.out_rings), *node.args,
                    *_fault_args(sc, node.name, time_scale)]
            label = f"NF {node.name!r} ({node.args[1]})"
        nodes[node.name] = run.start(label, argv, nice=CHAIN_NICE)
    # One after another: EAL init of secondaries is serialised by the primary anyway.
    try:
        for node in plan.nodes:
            nodes[node.name].expect("ready", 60)
    except ChildDied:
        # A secondary that dies can make another fail in DPDK's multi-process
        # requests under way (rte_hash_create: ENOENT): name the first to go.
        time.sleep(0.2)
        gone = [c for c in nodes.values() if c.ended_at is not None]
        raise min(gone, key=lambda c: c.ended_at).died("exited before 'ready'") from None
    run.check_alive()

    primary.send(f"start {START_DELAY_NS}")
    t0 = int(primary.expect("started", 10)["t0_ns"])
    hogs = []
    for f in sc.faults:
        if f.kind == "contention":
            cpu = plan.node(f.nf).cpu
            hogs.append(run.start(f"contention hog for {f.nf!r}", [
                progs["hog"], "--cpu", cpu,
                "--from-ns", t0 + int(f.start_ns * time_scale),
                "--to-ns", t0 + int(f.end_ns * time_scale), "--share", f"{f.share:g}"]))
    duration_s = sc.duration_ns * time_scale / 1e9
    log(f"testbed: {sc.name}: {len(packets.time_ns):,} packets over {duration_s * 1e3:,.0f} ms "
        f"through {len(sc.nfs)} NFs (NFs on CPU {','.join(map(str, plan.nf_cpus))}, source, "
        f"sink on CPU {plan.control_cpu}, collector unpinned)")

    source = nodes["source"]
    now = time.monotonic()
    deadline = now + duration_s + START_DELAY_NS / 1e9 + 60
    # the traffic starts START_DELAY_NS after t0 was sent
    stop_recording = None if record_ms is None else now + START_DELAY_NS / 1e9 + record_ms / 1e3
    while source.alive():
        if time.monotonic() > deadline:
            raise MscopeError("testbed: the source did not finish in time")
        if stop_recording is not None and time.monotonic() >= stop_recording:
            collector.proc.send_signal(signal.SIGINT)       # it drains, then exits
            stop_recording = None
            log(f"testbed: mscope-collect stopped {record_ms:g} ms into the traffic")
        run.check_alive(expected_exit=[source, *hogs] + ([collector] if record_ms else []))
        time.sleep(0.02)
    if source.wait(5) != 0:
        raise source.died()
    _drain(primary, run, [source, *hogs] + ([collector] if record_ms else []))
    reports = {"source": source.done}
    for node in plan.nodes[1:]:                  # NFs upstream first, then the sink
        c = nodes[node.name]
        rc = c.stop(timeout=15)
        if rc != 0:
            raise c.died("failed to stop cleanly")
        reports[node.name] = c.done
    for h in hogs:
        h.stop(timeout=5)
    primary.send("quit")
    if primary.wait(15) is None:
        primary.stop(timeout=5)
    if collector.wait(60) is None:
        raise MscopeError("testbed: mscope-collect did not finish draining within 60 s")
    if collector.proc.returncode != 0:
        raise collector.died()
    if dumps:            # kept apart until now: the collector wants an empty directory
        for name in ("source.dump", "sink.dump"):
            shutil.move(str(Path(plan.registry) / name), str(out / name))
    return _finish(sc, plan, out, t0, time_scale, poll_us, reports, [h.done for h in hogs],
                   truth=record_ms is None)


def _fault_args(sc, name, time_scale):
    args = []
    for f in sc.faults:
        if f.nf != name:
            continue
        at = int(round(f.start_ns * time_scale))
        dur = int(round((f.end_ns - f.start_ns) * time_scale))
        if f.kind == "interrupt":
            args += ["--interrupt", f"{at},{dur}"]
        elif f.kind == "bug":
            nf = next(n for n in sc.nfs if n.name == name)
            extra = (f.slowdown - 1) * nf.service_ns * time_scale
            args += ["--bug", f"{f.flows},{at},{at + dur},{extra:g}"]
    return args


def _drain(primary, run, exited, timeout=10.0):
    """Wait until every ring of the chain is empty on two polls in a row."""
    deadline = time.monotonic() + timeout
    empty = 0
    while empty < 2:
        if time.monotonic() > deadline:
            raise MscopeError("testbed: the chain did not drain within "
                              f"{timeout:g} s after the source finished")
        run.check_alive(expected_exit=exited)
        primary.send("status")
        st = primary.expect("status", 5)
        empty = empty + 1 if not any(st["rings"].values()) else 0
        time.sleep(0.02)


def _finish(sc, plan, out, t0, time_scale, poll_us, reports, hogs, truth=True):
    from mscope.analyzer import load
    from .truth import window_truth

    if truth:
        truth = window_truth(load(out), sc, t0, time_scale, SINK_NAME)
        tmp = out / ".truth.json.tmp"
        tmp.write_text(json.dumps(truth))
        os.replace(tmp, out / "truth.json")
    links = [[a, b] for a, b in sc.links if b != "sink"] + \
        [[a, SINK_NAME] for a, b in sc.links if b == "sink"] + [[SINK_NAME, "sink"]]
    (out / "topology.json").write_text(json.dumps(links))
    return {
        "scenario": sc.name, "seconds_scale": time_scale, "poll_us": poll_us, "t0_ns": t0,
        "layout": {"control_cpu": plan.control_cpu, "nf_cpus": plan.nf_cpus,
                   "processes": [{"name": n.name, "role": n.role, "lcore": n.lcore,
                                  "cpu": n.cpu, "in": n.in_rings, "out": n.out_rings}
                                 for n in plan.nodes],
                   "rings": [{"name": r, "size": s, "multi_producer": mp}
                             for r, s, mp in plan.rings],
                   "pool_mbufs": plan.pool_mbufs},
        "reports": reports, "hogs": hogs,
        "truth": {k: truth[k] for k in ("packets", "delivered", "dropped", "victims_total",
                                        "latency_ns")}
        | {"faults": {f["id"]: len(f["victims"]) for f in truth["faults"]},
           "unexplained": len(truth["victims_unexplained"])} if truth else None,
    }
