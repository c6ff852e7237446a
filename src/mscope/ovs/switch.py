"""Open vSwitch with DPDK, by hand, in a private run directory.

No systemd (the packaged service does not start here) and not the
``ovs-vswitchd`` alternative (the non-DPDK build): ovsdb-server and
``ovs-vswitchd-dpdk`` run as our own children, every file of theirs in the
run directory (``OVS_RUNDIR``: database, sockets, logs, vhost-user
sockets), vswitchd with ``LD_PRELOAD=libmscope.so``.  The commands that
were seen to work are in /work/shared/MACHINE-NOTES.md; docs/ovs.md.
"""
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from mscope import paths
from mscope.errors import MscopeError
from mscope.testbed.procs import Child

from .plan import OVS_NAME, OVS_NF_ID, OVS_SOCKET_LIMIT_MB, OVS_SOCKET_MEM_MB

__all__ = ["Switch", "check_ovs"]

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


def check_ovs():
    """One-line MscopeError unless OVS-DPDK is installed."""
    missing = [p for p in (paths.ovs_vswitchd(), SCHEMA) if not p.exists()]
    missing += [p for p in ("ovsdb-server", "ovsdb-tool", "ovs-vsctl", "ovs-ofctl",
                            "ovs-appctl") if shutil.which(p) is None]
    if missing:
        raise MscopeError(f"ovs: {missing[0]} not found: install Debian's "
                          f"openvswitch-switch-dpdk (install.sh does)")


class Switch:
    """ovsdb-server and ovs-vswitchd-dpdk of one run directory."""

    def __init__(self, run_dir, start=None):
        self.run_dir = Path(run_dir)
        self.env = dict(os.environ, OVS_RUNDIR=str(self.run_dir), OVS_LOGDIR=str(self.run_dir),
                        OVS_DBDIR=str(self.run_dir), OVS_SYSCONFDIR=str(self.run_dir))
        self.start = start or Child

    @property
    def db(self):
        return f"unix:{self.run_dir / 'db.sock'}"

    def _run(self, argv, timeout=30, what=None):
        try:
            proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                                  timeout=timeout, env=self.env)
        except subprocess.TimeoutExpired:
            raise MscopeError(f"ovs: {what or argv[0]} did not finish within {timeout} s") \
                from None
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise MscopeError(f"ovs: {what or ' '.join(map(str, argv[:3]))} failed: {err}")
        return proc.stdout

    def vsctl(self, *args, timeout=30):
        return self._run(["ovs-vsctl", f"--db={self.db}", f"--timeout={timeout}", *args],
                         timeout=timeout + 5, what=f"ovs-vsctl {args[0] if args else ''}")

    def ofctl(self, *args, timeout=30):
        return self._run(["ovs-ofctl", *args], timeout=timeout,
                         what=f"ovs-ofctl {args[0] if args else ''}")

    def appctl(self, *args, timeout=30):
        return self._run(["ovs-appctl", "-t", self.run_dir / "vswitchd.ctl", *args],
                         timeout=timeout, what=f"ovs-appctl {args[0] if args else ''}")

    def start_db(self):
        """ovsdb-server on a fresh database; returns its Child."""
        db = self.run_dir / "conf.db"
        self._run(["ovsdb-tool", "create", db, SCHEMA], what="ovsdb-tool create")
        child = self.start("ovsdb-server", [
            "ovsdb-server", db, f"--remote=punix:{self.run_dir / 'db.sock'}",
            f"--unixctl={self.run_dir / 'ovsdb.ctl'}",
            f"--log-file={self.run_dir / 'ovsdb.log'}",
            f"--pidfile={self.run_dir / 'ovsdb.pid'}", "--verbose=console:err"],
            env=self.env)
        deadline = time.monotonic() + 10
        while not (self.run_dir / "db.sock").exists():
            if not child.alive():
                raise child.died("exited at start")
            if time.monotonic() > deadline:
                raise MscopeError("ovs: ovsdb-server did not create its socket within 10 s")
            time.sleep(0.02)
        self.vsctl("--no-wait", "init")
        return child

    def configure_dpdk(self, prefix, pmd_cpu, control_cpu, perf_metrics=False, extra=()):
        """other_config before vswitchd starts: DPDK on, memory, PMD on
        `pmd_cpu`, EAL's lcore on `control_cpu`, our EAL file prefix."""
        eal = " ".join(["--no-pci", f"--file-prefix={prefix}", "--log-level=error", *extra])
        self.vsctl("--no-wait", "set", "Open_vSwitch", ".",
                   "other_config:dpdk-init=true",
                   f"other_config:dpdk-socket-mem={OVS_SOCKET_MEM_MB}",
                   f"other_config:dpdk-socket-limit={OVS_SOCKET_LIMIT_MB}",
                   f"other_config:pmd-cpu-mask={1 << pmd_cpu:#x}",
                   f"other_config:dpdk-lcore-mask={1 << control_cpu:#x}",
                   f"other_config:pmd-perf-metrics={'true' if perf_metrics else 'false'}",
                   f"other_config:dpdk-extra={eal}")

    def start_vswitchd(self, registry, control_cpu, preload=True, nf_id=OVS_NF_ID, env=None,
                       nice=None):
        """ovs-vswitchd-dpdk, recorded by the preloaded libmscope into
        `registry` as NF "ovs"; waits until DPDK is initialised."""
        extra = env or {}
        env = dict(self.env)
        if preload:
            env.update(LD_PRELOAD=str(paths.libmscope()), MSCOPE_ATTACH="1",
                       MSCOPE_NF_NAME=OVS_NAME, MSCOPE_NF_ID=str(nf_id),
                       MSCOPE_DIR=str(registry))
        else:
            env.pop("LD_PRELOAD", None)
            env["MSCOPE_ATTACH"] = "0"
        env.update(extra)          # the caller's last (bench: MSCOPE_ATTACH=0)
        child = self.start("ovs-vswitchd-dpdk", [
            paths.ovs_vswitchd(), self.db, f"--unixctl={self.run_dir / 'vswitchd.ctl'}",
            f"--log-file={self.run_dir / 'vswitchd.log'}",
            f"--pidfile={self.run_dir / 'vswitchd.pid'}", "--verbose=console:err",
            # its mempool messages (wait_mempool) are debug messages
            "--verbose=netdev_dpdk:file:dbg"],
            env=env, cpus={control_cpu}, nice=nice)
        try:
            self.vsctl("wait-until", "Open_vSwitch", ".", "dpdk_initialized=true", timeout=60)
        except MscopeError:
            if not child.alive():
                raise child.died("exited at start") from None
            raise
        return child

    def add_bridge(self, bridge, ports, port_type, flows):
        """A netdev bridge without the NORMAL flow, its vhost-user ports,
        and `flows` (ovs-ofctl syntax, port names) as its only rules."""
        args = ["add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev",
                "fail_mode=secure"]
        for p in ports:
            args += ["--", "add-port", bridge, p, "--", "set", "Interface", p,
                     f"type={port_type}"]
            if port_type == "dpdkvhostuserclient":
                args += [f"options:vhost-server-path={self.run_dir / p}"]
        self.vsctl(*args, timeout=60)
        if port_type == "dpdkvhostuser":
            deadline = time.monotonic() + 10
            while not all((self.run_dir / p).exists() for p in ports):
                if time.monotonic() > deadline:
                    missing = [p for p in ports if not (self.run_dir / p).exists()]
                    raise MscopeError(f"ovs: vhost-user socket {self.run_dir / missing[0]} "
                                      f"not created within 10 s (see "
                                      f"{self.run_dir / 'vswitchd.log'})")
                time.sleep(0.02)
        self.ofctl("del-flows", bridge)
        spec = self.run_dir / "flows.txt"
        spec.write_text("".join(f + "\n" for f in flows))
        self.ofctl("add-flows", bridge, spec)

    def wait_connected(self, ports, timeout=10.0, settle_s=0.2):
        """Until every vhost-user port in `ports` says status=connected,
        then `settle_s` more: OVS enables the vrings and reloads its PMD's
        poll list after a connection, asynchronously (measured: packets
        sent within ~60 ms of the last connection were dropped at the
        source's full virtqueue)."""
        deadline = time.monotonic() + timeout
        while True:
            args = []
            for p in ports:
                args += ["--", "get", "Interface", p, "status:status"]
            states = [s.strip().strip('"') for s in self.vsctl(*args[1:]).splitlines()]
            waiting = [p for p, s in zip(ports, states) if s != "connected"]
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise MscopeError(f"ovs: vhost-user port {waiting[0]!r} not connected within "
                                  f"{timeout:g} s (see {self.run_dir / 'vswitchd.log'})")
            time.sleep(0.02)
        time.sleep(settle_s)

    def wait_mempool(self, timeout=15.0):
        """Until OVS has its shared mbuf pool.  OVS creates it on the first
        vhost device that connects (in its main thread, asking for 262144
        mbufs, then half as many until it fits); meanwhile its DPDK heap is
        full, and a vhost-user handshake that needs memory then fails
        (``failed to allocate memory for vq internal data`` in
        vswitchd.log: seen twice in ~60 bring-ups of bench/ovs.py, where
        testpmd connects two ports at once).  So the chain connects one
        process first and the others after this."""
        log = self.run_dir / "vswitchd.log"
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = log.read_text(errors="replace")
            except OSError:
                text = ""
            if re.search(r'Allocated "[^"]*" mempool|Reusing mempool', text):
                return
            if time.monotonic() > deadline:
                raise MscopeError(f"ovs: no mbuf pool in OVS within {timeout:g} s after the "
                                  f"first vhost-user connection (see {log})")
            time.sleep(0.02)

    def dump_flows(self, bridge):
        return self.ofctl("dump-flows", bridge)

    def pmd_perf(self):
        """`ovs-appctl dpif-netdev/pmd-perf-show` (OVS's own view; with
        pmd-perf-metrics=true it has the per-iteration histograms)."""
        return self.appctl("dpif-netdev/pmd-perf-show")

    def pmd_stats_clear(self):
        return self.appctl("dpif-netdev/pmd-stats-clear")

    def pmd_stats(self):
        return self.appctl("dpif-netdev/pmd-stats-show")
