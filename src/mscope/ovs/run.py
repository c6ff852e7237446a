"""`mscope ovs up / down / run`: a scenario's chain behind OVS-DPDK.

up:   ovsdb-server -> ovs-vswitchd-dpdk (LD_PRELOAD=libmscope, NF "ovs")
      -> netdev bridge, one vhost-user port per NF side plus source and
      sink, one OpenFlow rule per link -> sink and NFs (mscope-nf in port
      mode, virtio-user on those sockets), each "ready" -> state.json.
run:  up (and the source with the scenario's schedule) -> mscope-collect
      --out -> t0 -> fault hogs / OVS stops -> the source sends -> the sink
      stops receiving -> SIGTERM to NFs (upstream first), sink, vswitchd,
      ovsdb -> the collector drains -> truth.json (window labels,
      mscope.ovs.truth) -> down.
down: every process of state.json (only those: pid and start time
      checked), then sockets, hugepage files, /var/run/dpdk/<prefix>*,
      the ring registry.
"""
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np

from mscope import paths
from mscope.errors import MscopeError
from mscope.testbed.procs import Child

from .plan import OVS_NAME, OVS_SOCKET_LIMIT_MB, PROC_MEM_MB, SINK_NAME, eal_args, make_plan
from .switch import Switch, check_ovs

__all__ = ["ovs_up", "ovs_down", "run_ovs", "load_ovs_scenario", "ensure_hugepages"]

#: The control block every process maps (nf_chain.h, struct nf_ctl).
_CTL = struct.Struct("<QII")
_CTL_MAGIC = 0x6d73746b
#: Margin between writing t0 and t0: every process is already waiting.
START_DELAY_NS = 50_000_000
CHAIN_NICE = -10
DEFAULT_POLL_US = 100.0
#: 2 MiB pages to have: OVS's socket memory plus each process's.
_HUGEPAGES_WANTED = 1024
#: The sink has received nothing new for this long: the chain has drained.
_QUIET_S = 0.3


def _log_name(name):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def load_ovs_scenario(source):
    """A scenario (SCENARIO.md) whose faults may also name ``"nf": "ovs"``.

    OVS is not one of the scenario's NFs, so such a fault is validated as
    if it named the first NF and then given back to OVS.  Kinds on OVS:
    ``contention`` (a hog on the PMD's core) and ``interrupt`` (vswitchd
    stopped with SIGSTOP for the duration).
    """
    from mscope.sim.scenario import Scenario, ScenarioError, load_scenario

    if isinstance(source, Scenario):
        return source
    if isinstance(source, (str, os.PathLike)):
        try:
            doc = json.loads(Path(source).read_text())
        except (OSError, ValueError):
            return load_scenario(source)       # its own one-line error
    else:
        doc = source
    faults = doc.get("faults") if isinstance(doc, dict) else None
    mine = [i for i, f in enumerate(faults or []) if isinstance(f, dict)
            and f.get("nf") == OVS_NAME]
    if not mine:
        return load_scenario(source)
    first = doc["nfs"][0]["name"] if doc.get("nfs") else None
    doc2 = dict(doc, faults=[dict(f, nf=first) if i in mine else f
                             for i, f in enumerate(faults)])
    sc = load_scenario(doc2)
    out = []
    for i, f in enumerate(sc.faults):
        if i in mine:
            if f.kind not in ("contention", "interrupt"):
                where = f"{source}: " if isinstance(source, (str, os.PathLike)) else ""
                raise ScenarioError(f"{where}faults[{i}]: a {f.kind} fault cannot act on "
                                    f"{OVS_NAME!r} (contention or interrupt can)")
            f = replace(f, nf=OVS_NAME)
        out.append(f)
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    return replace(sc, faults=tuple(out), path=path)


def ensure_hugepages(need_mb, log=print):
    """Free 2 MiB hugepages for `need_mb`; raises vm.nr_hugepages to 1024
    (root) when fewer are free, and says so."""
    from mscope.testbed import check_hugepages
    try:
        check_hugepages(need_mb)
        return
    except MscopeError:
        pass
    try:
        with open("/proc/sys/vm/nr_hugepages") as f:
            have = int(f.read())
        want = max(_HUGEPAGES_WANTED, have + int(need_mb / 2) + 1)
        with open("/proc/sys/vm/nr_hugepages", "w") as f:
            f.write(str(want))
        log(f"ovs: raised vm.nr_hugepages from {have} to {want} (2 MiB pages)")
    except OSError:
        pass
    check_hugepages(need_mb)


def _proc_start_time(pid):
    """Field 22 of /proc/PID/stat (start time in ticks), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class _Chain:
    """The processes of one chain, written to state.json as they start."""

    def __init__(self, plan, log, keep_run_dir):
        self.plan = plan
        self.log = log
        self.children = []          # Child, in start order
        self.keep_run_dir = keep_run_dir
        (plan.run_dir / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, name, argv, **kw):
        kw.setdefault("log", self.plan.run_dir / "logs" / f"{_log_name(name)}.log")
        c = Child(name, argv, **kw)
        self.children.append(c)
        self.save()
        return c

    def state(self):
        p = self.plan
        return {"prefix": p.prefix, "registry": str(p.registry), "run_dir": str(p.run_dir),
                "bridge": p.bridge, "port_type": p.port_type, "ports": p.ports,
                "flows": p.flows, "keep_run_dir": self.keep_run_dir,
                "cpus": {"control": p.control_cpu, "pmd": p.pmd_cpu},
                "processes": [{"name": c.name, "pid": c.pid, "argv0": c.argv[0],
                               "start_time": _proc_start_time(c.pid)}
                              for c in self.children]}

    def save(self, **extra):
        path = self.plan.run_dir / "state.json"
        doc = self.state() | extra
        if path.exists():
            try:
                old = json.loads(path.read_text())
                doc = {k: old[k] for k in ("t0_ns",) if k in old} | doc
            except ValueError:
                pass
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        os.replace(tmp, path)

    def check_alive(self, expected_exit=()):
        for c in self.children:
            if c not in expected_exit and not c.alive():
                raise c.died()

    def write_ctl(self, t0_ns):
        with open(self.plan.ctl_file, "r+b") as f:
            f.write(_CTL.pack(t0_ns, 0, _CTL_MAGIC))


def _bring_up(sc, plan, chain, time_scale, poll_us, perf_metrics, with_source, schedule,
              sink_status_ms, before_ovs=None):
    """Switch, bridge, ports, flows, then the DPDK processes; returns
    {name: Child} of the chain's processes and the two OVS Childs."""
    progs = {"nf": paths.sample_nf(), "source": paths.testbed_program("source"),
             "sink": paths.testbed_program("sink")}
    for path in progs.values():
        if not path.exists():
            raise MscopeError(f"ovs: {path} not found: build the sample NFs (make -C csrc "
                              f"OUT={paths.native_dir()}; needs dpdk-dev and libssl-dev)")
    plan.registry.mkdir(parents=True, exist_ok=True)
    plan.ctl_file.write_bytes(_CTL.pack(0, 0, _CTL_MAGIC))
    if before_ovs is not None:
        before_ovs()
    sw = Switch(plan.run_dir, start=chain.start)
    ovsdb = sw.start_db()
    sw.configure_dpdk(plan.ovs_prefix, plan.pmd_cpu, plan.control_cpu, perf_metrics)
    # nice as the chain: its PMD (which inherits it) keeps its core against
    # other work on the machine
    vswitchd = sw.start_vswitchd(plan.registry, plan.control_cpu, nice=CHAIN_NICE)
    sw.add_bridge(plan.bridge, plan.ports, plan.port_type, plan.flows)
    common = ["--dir", plan.registry, "--idle-us", f"{poll_us:g}", "--ctl", plan.ctl_file]
    procs = {}
    # the sink first (one port: its connection makes OVS create its mbuf
    # pool, Switch.wait_mempool), then the NFs downstream first, the source
    order = [plan.procs[-1], *plan.procs[-2:0:-1], plan.procs[0]]
    for p in order:
        if p.role == "source" and not with_source:
            continue
        eal = eal_args(plan, p)
        if p.role == "source":
            argv = [progs["source"], *eal, "--", *common, "--name", p.name, "--nf-id", p.nf_id,
                    "--schedule", schedule,
                    "--out", ",".join(f"port:{i}" for i in range(len(p.out_ports)))]
            label = "source"
        elif p.role == "testpmd":
            procs[p.name] = _start_testpmd(chain, plan, p, p.name in sc.out_links["source"])
            continue
        elif p.role == "sink":
            argv = [progs["sink"], *eal, "--", *common, "--name", p.name, "--nf-id", p.nf_id,
                    "--in", "port:0"]
            if sink_status_ms:
                argv += ["--status-ms", sink_status_ms]
            label = "sink"
        else:
            argv = [progs["nf"], *eal, "--", *common, "--name", p.name, "--nf-id", p.nf_id,
                    "--in", "port:0",
                    "--out", ",".join(f"port:{1 + i}" for i in range(len(p.out_ports))),
                    *p.args]
            label = f"NF {p.name!r} ({p.args[1]})"
        procs[p.name] = chain.start(label, argv, nice=CHAIN_NICE)
        # one at a time: each connects to its sockets during EAL init
        procs[p.name].expect("ready", 60)
        if p is order[0]:
            sw.wait_mempool()
    chain.check_alive()
    sw.wait_connected([port for p in plan.procs if p.name in procs for port in p.vdev_ports])
    return sw, ovsdb, vswitchd, procs


#: testpmd's recorder says this once both its ports have callbacks.
_TESTPMD_READY = "mscope: recording port 1 "


def _start_testpmd(chain, plan, p, fed_by_source, timeout=60.0):
    """dpdk-testpmd io-forwarding port 0 -> port 1 (and back: nothing
    comes back), unmodified, recorded by the preloaded libmscope as NF
    `p.name` (what `mscope attach` does).  It spins, at nice 0: the
    sleeping chain (nice -10) on its CPU preempts it when it wakes; at nice
    19 anything else on the CPU starved it (~200 late packets in the first
    100 ms of a run)."""
    eal = [a if not a.startswith("--lcores=") else f"--lcores=0@{p.cpu},1@{p.cpu}"
           for a in eal_args(plan, p)]
    env = dict(os.environ, LD_PRELOAD=str(paths.libmscope()), MSCOPE_ATTACH="1",
               MSCOPE_NF_NAME=p.name, MSCOPE_NF_ID=str(p.nf_id),
               MSCOPE_DIR=str(plan.registry), MSCOPE_ADDRS="1" if fed_by_source else "0")
    c = chain.start(f"NF {p.name!r} (testpmd)", [
        "dpdk-testpmd", *eal, "--", "--forward-mode=io", "--nb-cores=1", "--auto-start",
        "--total-num-mbufs=8192", "--rxd=1024", "--txd=1024", "--stats-period", "86400",
        "--no-lsc-interrupt", *p.args], env=env)
    deadline = time.monotonic() + timeout
    while not any(line.startswith(_TESTPMD_READY) for line in list(c.stderr)):
        if not c.alive():
            raise c.died("exited at start")
        if time.monotonic() > deadline:
            raise MscopeError(f"ovs: testpmd {p.name!r} did not start recording within "
                              f"{timeout:g} s (see {c.log}.err)")
        time.sleep(0.02)
    return c


def ovs_up(scenario, run_dir, time_scale=1.0, poll_us=DEFAULT_POLL_US, perf_metrics=False,
           port_type="dpdkvhostuser", nf_args=None, log=print, cpus=None):
    """Bring up scenario `scenario`'s chain behind OVS-DPDK and leave it running.

    The NFs and the sink forward from now on (t0 is now; fault times count
    from it); the source's port ``src`` is free for any DPDK traffic
    generator (``--vdev=net_virtio_user0,path=RUN/src``).  Everything is
    recorded into the ring registry named in ``RUN/state.json``.

    Returns
    -------
    dict
        state.json: processes, ports, flows, registry, prefix.

    Raises
    ------
    MscopeError
        OVS or the binaries missing, no hugepages, a process that died
        (named, with its last error line).  Everything started is stopped.
    """
    sc = load_ovs_scenario(scenario)
    run_dir = Path(run_dir)
    if (run_dir / "state.json").exists():
        st = json.loads((run_dir / "state.json").read_text())
        if not st.get("down"):
            raise MscopeError(f"ovs: {run_dir} holds a chain that is up (mscope ovs down "
                              f"--run {run_dir} first)")
    run_dir.mkdir(parents=True, exist_ok=True)
    chain = _start(sc, run_dir, True, time_scale, poll_us, port_type, nf_args, log, cpus)
    try:
        _bring_up(sc, chain.plan, chain, time_scale, poll_us, perf_metrics, False, None, 0)
        t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        chain.write_ctl(t0)
        chain.save(t0_ns=t0)
        return json.loads((run_dir / "state.json").read_text())
    except BaseException:
        _down(json.loads((run_dir / "state.json").read_text()), log=lambda *a: None)
        raise


def _start(sc, run_dir, keep_run_dir, time_scale, poll_us, port_type, nf_args, log, cpus):
    check_ovs()
    if not (time_scale > 0 and np.isfinite(time_scale)):
        raise MscopeError(f"--seconds-scale must be a positive number, got {time_scale}")
    if not (poll_us >= 0 and np.isfinite(poll_us)):
        raise MscopeError(f"--poll-us must be a number >= 0, got {poll_us}")
    prefix = f"msovs{uuid.uuid4().hex[:8]}"
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    registry = Path(tempfile.mkdtemp(prefix="mscope-ovs-", dir=shm))
    try:
        plan = make_plan(sc, run_dir, prefix, registry, time_scale, nf_args, cpus, port_type)
        # OVS may grow to its socket limit, not its socket-mem: the
        # tests' chains took 638 MB at their peak, over the 512 MB that
        # the socket-mem sum passed with (a fresh machine's 256 pages)
        ensure_hugepages(OVS_SOCKET_LIMIT_MB + PROC_MEM_MB * len(plan.procs) + 64, log)
    except BaseException:
        shutil.rmtree(registry, ignore_errors=True)
        raise
    chain = _Chain(plan, log, keep_run_dir)
    chain.save()
    return chain


def ovs_down(run_dir, log=print):
    """Stop the chain of `run_dir` (state.json) and remove what it left.

    Only the processes state.json names are signalled, each by its pid and
    only while its start time still matches (no stranger that reused the
    pid).  Returns a summary dict.
    """
    run_dir = Path(run_dir)
    try:
        st = json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise MscopeError(f"ovs: no chain in {run_dir} ({e.__class__.__name__}: "
                          f"state.json missing or unreadable)") from None
    return _down(st, log)


def _signal(pid, start_time, sig):
    if start_time is None or _proc_start_time(pid) != start_time:
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _gone(pid, start_time):
    _reap(pid)
    if _proc_start_time(pid) != start_time:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def _stop_pid(pid, start_time, timeout=10.0, sig=signal.SIGTERM):
    if not _signal(pid, start_time, sig):
        return
    deadline = time.monotonic() + timeout
    while not _gone(pid, start_time):
        if time.monotonic() > deadline:
            _signal(pid, start_time, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while not _gone(pid, start_time) and time.monotonic() < deadline:
                time.sleep(0.02)
            return
        time.sleep(0.02)


def _down(st, log):
    procs = st.get("processes", [])
    # the chain's DPDK processes first (source, NFs upstream first, sink),
    # then vswitchd, then ovsdb-server
    order = [p for p in procs if not p["name"].startswith("ovs")] + \
        [p for p in procs if p["name"] == "ovs-vswitchd-dpdk"] + \
        [p for p in procs if p["name"] == "ovsdb-server"] + \
        [p for p in procs if p["name"].startswith("ovs") and
         p["name"] not in ("ovs-vswitchd-dpdk", "ovsdb-server")]
    for p in order:
        _stop_pid(p["pid"], p.get("start_time"))
    run_dir = Path(st["run_dir"])
    prefix = st["prefix"]
    removed = []
    for d in Path("/var/run/dpdk").glob(f"{prefix}*") if Path("/var/run/dpdk").is_dir() else []:
        shutil.rmtree(d, ignore_errors=True)
        removed.append(str(d))
    for f in Path("/dev/hugepages").glob(f"{prefix}*") if Path("/dev/hugepages").is_dir() else []:
        try:
            f.unlink()
            removed.append(str(f))
        except OSError:
            pass
    shutil.rmtree(st["registry"], ignore_errors=True)
    if st.get("keep_run_dir", True):
        for f in run_dir.iterdir() if run_dir.is_dir() else []:
            if f.is_socket() or f.suffix in (".pid", ".tmp") or f.name in (
                    "ctl", "conf.db", ".conf.db.~lock~"):
                try:
                    f.unlink()
                except OSError:
                    pass
        st = dict(st, down=True)
        try:
            (run_dir / "state.json").write_text(json.dumps(st, indent=2))
        except OSError:
            pass
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"stopped": [p["name"] for p in procs], "removed": removed}


def run_ovs(scenario, out, time_scale=1.0, poll_us=DEFAULT_POLL_US, nf_args=None, force=False,
            log=print, cpus=None, run_dir=None, perf_metrics=False, port_type="dpdkvhostuser",
            collector_args=()):
    """Run `scenario` through OVS-DPDK once; write capture, truth and summary to `out`.

    As ``mscope testbed run`` (same scenario, same ``--seconds-scale``
    and ``--poll-us``, same window-labelled truth), with OVS between every
    two nodes of the chain, recorded as the NF ``ovs``.

    Parameters
    ----------
    run_dir : str or os.PathLike, optional
        Where OVS's files, sockets and the logs go (kept afterwards, less
        sockets and database); default a temporary directory, removed.

    Returns
    -------
    dict
        The run summary (also ovs.json in `out`).
    """
    from mscope.sim.run import make_traffic
    from mscope.testbed.schedule import write_schedule
    from mscope.testbed.run import _out_index

    sc = load_ovs_scenario(scenario)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force or not out.is_dir():
            raise MscopeError(f"{out} is not empty (use --force to replace it)")
        shutil.rmtree(out)
    keep = run_dir is not None
    run_dir = Path(run_dir) if keep else Path(tempfile.mkdtemp(prefix="msovs-", dir="/tmp"))
    run_dir.mkdir(parents=True, exist_ok=True)
    t_begin = time.monotonic()
    try:
        chain = _start(sc, run_dir, keep, time_scale, poll_us, port_type, nf_args, log, cpus)
    except BaseException:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    try:
        packets = make_traffic(sc)
        schedule = chain.plan.run_dir / "schedule.bin"
        write_schedule(schedule, packets, _out_index(sc, packets), time_scale)
        summary = _run(sc, chain, out, packets, schedule, time_scale, poll_us, perf_metrics,
                       collector_args)
        summary["seconds"] = round(time.monotonic() - t_begin, 2)
        (out / "ovs.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        for c in chain.children:          # a failure: nothing may outlive us
            if c.alive() and c.name == "mscope-collect":
                c.kill()
        _down(chain.state(), log=lambda *a: None)


def _interrupt_pid(pid, start_s, dur_s, stop_event):
    """An interrupt of OVS (vswitchd) or testpmd: the process stopped
    (SIGSTOP) from start_s for dur_s (time.monotonic seconds)."""
    while not stop_event.is_set() and time.monotonic() < start_s:
        time.sleep(min(0.001, max(0.0, start_s - time.monotonic())))
    if stop_event.is_set():
        return
    os.kill(pid, signal.SIGSTOP)
    try:
        end = start_s + dur_s
        while time.monotonic() < end:
            time.sleep(min(0.001, max(0.0, end - time.monotonic())))
    finally:
        os.kill(pid, signal.SIGCONT)


def _run(sc, chain, out, packets, schedule, time_scale, poll_us, perf_metrics, collector_args):
    plan = chain.plan
    started = []

    def start_collector():
        # first, so that its start-up is over before t0; on the control
        # CPU: the PMD's core is the PMD's
        c = Child("mscope-collect",
                  [sys.executable, "-m", "mscope.collector.daemon", "--dir", plan.registry,
                   "--out", str(out), "--exit-when-idle", "--flush-ms", "50",
                   *collector_args], cpus={plan.control_cpu})
        chain.children.append(c)
        started.append(c)

    sw, ovsdb, vswitchd, procs = _bring_up(sc, plan, chain, time_scale, poll_us, perf_metrics,
                                           True, schedule, 20, before_ovs=start_collector)
    collector = started[0]
    if perf_metrics:
        sw.pmd_stats_clear()
    t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + START_DELAY_NS
    mono0 = time.monotonic() + START_DELAY_NS / 1e9
    chain.write_ctl(t0)
    chain.save(t0_ns=t0)
    hogs, stops, stop_event = [], [], threading.Event()
    for f in sc.faults:
        if f.kind == "contention":
            cpu = plan.pmd_cpu if f.nf == OVS_NAME else plan.proc(f.nf).cpu
            # On OVS the period is stretched with the clock: OVS's own work
            # is not (service_ns is only the NFs'), so a 1 ms period would
            # only ever delay a packet by < 1 ms.
            period_us = 1000 * (time_scale if f.nf == OVS_NAME else 1)
            hogs.append(chain.start(f"contention hog for {f.nf!r}", [
                paths.testbed_program("hog"), "--cpu", cpu,
                "--from-ns", t0 + int(f.start_ns * time_scale),
                "--to-ns", t0 + int(f.end_ns * time_scale), "--share", f"{f.share:g}",
                "--period-us", f"{period_us:g}"]))
        elif f.kind == "interrupt" and (f.nf == OVS_NAME or
                                        plan.proc(f.nf).role == "testpmd"):
            pid = vswitchd.pid if f.nf == OVS_NAME else procs[f.nf].pid
            t = threading.Thread(target=_interrupt_pid, daemon=True, args=(
                pid, mono0 + f.start_ns * time_scale / 1e9,
                (f.end_ns - f.start_ns) * time_scale / 1e9, stop_event))
            t.start()
            stops.append(t)
    duration_s = sc.duration_ns * time_scale / 1e9
    chain.log(f"ovs: {sc.name}: {len(packets.time_ns):,} packets over {duration_s * 1e3:,.0f} ms "
              f"through OVS and {len(sc.nfs)} NFs (OVS PMD on CPU {plan.pmd_cpu}; NFs, "
              f"source, sink on CPU {plan.control_cpu})")
    source = procs["source"]
    deadline = time.monotonic() + duration_s + START_DELAY_NS / 1e9 + 60
    try:
        while source.alive():
            if time.monotonic() > deadline:
                raise MscopeError("ovs: the source did not finish in time")
            chain.check_alive(expected_exit=[source, *hogs])
            time.sleep(0.02)
        if source.wait(5) != 0:
            raise source.died()
        for t in stops:
            t.join(timeout=duration_s + 10)
        _drain(procs[SINK_NAME], chain, [source, *hogs])
    finally:
        stop_event.set()
    perf = None
    if perf_metrics:
        perf = sw.pmd_perf()
    ports_map = _read_ports(plan)
    reports = {"source": source.done}
    for p in plan.procs[1:]:                       # NFs upstream first, then the sink
        c = procs[p.name]
        rc = c.stop(timeout=15)
        # testpmd re-raises SIGTERM with SIG_DFL after its clean exit path
        if rc != 0 and not (p.role == "testpmd" and rc == -signal.SIGTERM):
            raise c.died("failed to stop cleanly")
        reports[p.name] = c.done
    for h in hogs:
        h.stop(timeout=5)
    vswitchd.stop(timeout=15)
    ovsdb.stop(timeout=10)
    if collector.wait(60) is None:
        raise MscopeError("ovs: mscope-collect did not finish draining within 60 s")
    if collector.proc.returncode != 0:
        raise collector.died()
    (out / "ovs-ports.json").write_text(json.dumps(ports_map, indent=2))
    return _finish(sc, plan, out, t0, time_scale, poll_us, reports,
                   [h.done for h in hogs], ports_map, perf)


def _read_ports(plan):
    """The preloaded recorder's port map (<registry>/ovs.<pid>.ports):
    recorded port -> OVS port name (the socket's file name)."""
    out = {}
    for f in plan.registry.glob(f"{OVS_NAME}.*.ports"):
        for line in f.read_text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            out[str(doc["port"])] = {"ovs_port": Path(doc["ifname"]).name,
                                     "socket": doc["ifname"], "vid": doc["vid"]}
    return out


def _drain(sink, chain, exited, timeout=15.0):
    """Wait until the sink has received nothing new for _QUIET_S."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        now = time.monotonic()
        if now > deadline:
            raise MscopeError(f"ovs: the chain did not drain within {timeout:g} s after the "
                              f"source finished")
        chain.check_alive(expected_exit=exited)
        try:
            doc = sink.events.get(timeout=0.05)
        except Exception:
            doc = None
        if doc and doc.get("event") == "status":
            if doc["rx"] != last:
                last, since = doc["rx"], now
        if now - since >= _QUIET_S and last >= 0:
            return


def _finish(sc, plan, out, t0, time_scale, poll_us, reports, hogs, ports_map, perf):
    from .truth import ovs_window_truth

    truth = ovs_window_truth(out, sc, t0, time_scale, ports_map)
    tmp = out / ".truth.json.tmp"
    tmp.write_text(json.dumps(truth))
    os.replace(tmp, out / "truth.json")
    summary = {
        "scenario": sc.name, "seconds_scale": time_scale, "poll_us": poll_us, "t0_ns": t0,
        "layout": {"control_cpu": plan.control_cpu, "pmd_cpu": plan.pmd_cpu,
                   "bridge": plan.bridge, "port_type": plan.port_type, "ports": plan.ports,
                   "flows": plan.flows,
                   "processes": [{"name": p.name, "role": p.role, "cpu": p.cpu,
                                  "eal_prefix": p.prefix, "in": p.in_ports,
                                  "out": p.out_ports} for p in plan.procs]},
        "ports": ports_map, "reports": reports, "hogs": hogs,
        "truth": {k: truth[k] for k in ("packets", "delivered", "dropped", "victims_total",
                                        "latency_ns")}
        | {"faults": {f["id"]: len(f["victims"]) for f in truth["faults"]},
           "unexplained": len(truth["victims_unexplained"])},
    }
    from .view import ovs_port_view
    summary["ovs_view"] = ovs_port_view(out, ports_map, plan.flows)
    if perf is not None:
        summary["pmd_perf_show"] = perf
    return summary
