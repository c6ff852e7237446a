"""From a scenario to an OVS-DPDK chain: vhost-user ports, flows, processes.

Every NF of the scenario is one ``mscope-nf`` in port mode (type
``forwarder``: Debian's ``dpdk-testpmd`` io-forwarding, unmodified,
recorded by the preloaded libmscope as ``mscope attach`` does), a DPDK
primary of its own with one ``net_virtio_user`` vdev per side: port 0 on OVS port
``<nf>-in`` (everything OVS sends it), ports 1.. on ``<nf>-out`` (one per
out-link: ``-out``, or ``-out0``, ``-out1``, ... with several).  The source
has one port per out-link (``src``, or ``src0``, ...), the sink one
(``snk``).  OpenFlow rules, one per link, send what comes in on a node's
out port to the in port of the node it links to; nothing else is
forwarded (the bridge is ``fail_mode=secure``: no NORMAL flow).

Layout (2 CPUs): OVS's PMD thread alone on the last CPU
(``pmd-cpu-mask``); everything else (ovsdb-server, vswitchd's other
threads, source, NFs, sink, mscope-collect) on CPU 0, each process asleep
when it finds nothing to do.  With more CPUs the NFs take CPUs 2.. round
robin.

Port type: ``dpdkvhostuser`` (OVS creates the socket, the NF connects as
client when its EAL probes the vdev).  The NF's port is then up and
negotiated when it says "ready", so the chain comes up in one pass with
no reconnect timer; OVS calls this type deprecated because a restarted
OVS leaves its clients disconnected, which cannot happen here (OVS lives
exactly as long as the chain).  ``dpdkvhostuserclient`` (the NF as
server, ``server=1``) also works: ``port_type=`` below.
"""
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mscope.errors import MscopeError
from mscope.sim.scenario import SINK, SOURCE

__all__ = ["OvsPlan", "Proc", "make_plan", "OVS_NAME", "SINK_NAME", "PORT_TYPES",
           "TESTPMD_TYPE", "nf_types"]

#: Recorder name of OVS (MSCOPE_NF_NAME of the preloaded recorder).
OVS_NAME = "ovs"
#: Recorder name of the sink (the analyzer reserves "sink").
SINK_NAME = "egress"
OVS_NF_ID = 900
SOURCE_NF_ID = 0
SINK_NF_ID = 1000
PORT_TYPES = ("dpdkvhostuser", "dpdkvhostuserclient")
#: Hugepage memory of each port-mode process: its mbuf pool (8191 x 2.3 kB),
#: two or three virtqueues and EAL's heap.
PROC_MEM_MB = 64
#: OVS's share: it sizes its mbuf pool to fit (halving from 262144 mbufs).
OVS_SOCKET_MEM_MB = 256
OVS_SOCKET_LIMIT_MB = 512
#: virtqueue size of every vdev but an NF's input (which gets the NF's
#: queue): the most virtio-user takes, so a stalled OVS backs packets up
#: rather than dropping them at the sender (the default is 256).
DEFAULT_QUEUE_SIZE = 1024
_UNIX_PATH_MAX = 107
_NAME = re.compile(r"[A-Za-z0-9_-]{1,31}\Z")


@dataclass
class Proc:
    """One DPDK process of the chain (port mode)."""
    role: str                  # "source", "nf", "testpmd", "sink"
    name: str                  # recorder name
    nf_id: int
    cpu: int
    prefix: str                # EAL --file-prefix
    in_ports: list = field(default_factory=list)      # OVS port names (vdev order)
    out_ports: list = field(default_factory=list)
    args: list = field(default_factory=list)          # role-specific options

    @property
    def vdev_ports(self):
        return self.in_ports + self.out_ports


@dataclass
class OvsPlan:
    run_dir: Path
    prefix: str
    registry: Path
    bridge: str
    port_type: str
    control_cpu: int
    pmd_cpu: int
    ports: list                # OVS port names, in creation order
    flows: list                # ovs-ofctl flow specs
    procs: list                # Proc: source, NFs (topological order), sink
    queue_size: dict           # OVS port -> virtqueue size its NF asks for

    def socket(self, port):
        return self.run_dir / port

    def proc(self, name):
        return next(p for p in self.procs if p.name == name)

    @property
    def ovs_prefix(self):
        return f"{self.prefix}o"

    @property
    def ctl_file(self):
        return self.run_dir / "ctl"


def _cpus():
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:                                   # pragma: no cover
        return list(range(os.cpu_count() or 1))


#: NF type run as dpdk-testpmd (io forwarding, attached).
TESTPMD_TYPE = "forwarder"


def nf_types():
    from mscope.testbed.plan import TESTBED_NF_TYPES
    return (*TESTBED_NF_TYPES, TESTPMD_TYPE)


def check_scenario(sc):
    for nf in sc.nfs:
        if nf.type not in nf_types():
            raise MscopeError(f"ovs: NF {nf.name!r} has type {nf.type!r}, which the OVS chain "
                              f"cannot run (it runs {', '.join(nf_types())})")
        if nf.type == TESTPMD_TYPE:
            if len(sc.out_links[nf.name]) != 1:
                raise MscopeError(f"ovs: NF {nf.name!r} ({TESTPMD_TYPE}, testpmd) takes "
                                  f"exactly one out-link")
            for f in sc.faults:
                if f.nf == nf.name and f.kind not in ("interrupt",):
                    raise MscopeError(f"ovs: fault {f.id!r}: a {f.kind} fault cannot act on "
                                      f"{nf.name!r} ({TESTPMD_TYPE}, testpmd; interrupt can)")
        if not _NAME.match(nf.name) or nf.name in (SINK_NAME, OVS_NAME) \
                or len(nf.name) > 11:
            raise MscopeError(f"ovs: NF name {nf.name!r} cannot name a recorder and its OVS "
                              f"ports (letters, digits, '_' and '-', at most 11; not "
                              f"{SINK_NAME!r} or {OVS_NAME!r})")
        if nf.batch > 256:
            raise MscopeError(f"ovs: NF {nf.name!r}: batch {nf.batch} > 256")
        if len(sc.out_links[nf.name]) > 8:
            raise MscopeError(f"ovs: NF {nf.name!r} has more than 8 out-links")
    if len(sc.out_links[SOURCE]) > 8:
        raise MscopeError("ovs: the source takes at most 8 out-links")


def _queue_size(n):
    """virtio-user's queue_size: a power of two in [64, 1024]."""
    return max(64, min(1024, 1 << max(0, int(n) - 1).bit_length()))


def _ports(node, n_out):
    if n_out == 1:
        return [f"{node}-out"]
    return [f"{node}-out{j}" for j in range(n_out)]


def make_plan(sc, run_dir, prefix, registry, time_scale=1.0, nf_args=None, cpus=None,
              port_type="dpdkvhostuser", bridge="br0"):
    """Lay out scenario `sc` on OVS (see the module docstring)."""
    from mscope.testbed.run import _fault_args

    check_scenario(sc)
    if port_type not in PORT_TYPES:
        raise MscopeError(f"ovs: port type must be one of {', '.join(PORT_TYPES)}, "
                          f"got {port_type!r}")
    run_dir = Path(run_dir)
    cpus = cpus or _cpus()
    if len(cpus) < 2:
        raise MscopeError("ovs: needs 2 CPUs (OVS's PMD thread spins on one of its own)")
    control, pmd = cpus[0], cpus[1]
    nf_cpus = cpus[2:] or [control]
    nf_args = nf_args or {}
    by_name = {nf.name: nf for nf in sc.nfs}
    src_ports = ["src"] if len(sc.out_links[SOURCE]) == 1 else \
        [f"src{j}" for j in range(len(sc.out_links[SOURCE]))]
    in_port = {name: f"{name}-in" for name in sc.topo_order}
    in_port[SINK] = "snk"
    procs, flows, ports, qsize = [], [], [], {}
    procs.append(Proc("source", "source", SOURCE_NF_ID, control, f"{prefix}s",
                      out_ports=src_ports))
    for port, dst in zip(src_ports, sc.out_links[SOURCE]):
        flows.append(f"priority=100,in_port={port},actions=output:{in_port[dst]}")
    ports += src_ports
    fed_by_source = set(sc.out_links[SOURCE])
    for k, name in enumerate(sc.topo_order):
        nf = by_name[name]
        outs = _ports(name, len(sc.out_links[name]))
        if nf.type == TESTPMD_TYPE:
            # no service time, no fault hooks: what testpmd does
            args = ["--burst", str(nf.batch), *[str(a) for a in nf_args.get(name, [])]]
            role = "testpmd"
        else:
            args = ["--type", nf.type, "--batch", str(nf.batch),
                    "--service-ns", f"{nf.service_ns * time_scale:g}"]
            if name in fed_by_source:
                args.append("--addrs")
            args += [str(a) for a in nf_args.get(name, [])]
            args += _fault_args(sc, name, time_scale)
            role = "nf"
        procs.append(Proc(role, name, nf.index + 1, nf_cpus[k % len(nf_cpus)],
                          f"{prefix}n{nf.index}", in_ports=[in_port[name]], out_ports=outs,
                          args=args))
        for port, dst in zip(outs, sc.out_links[name]):
            flows.append(f"priority=100,in_port={port},actions=output:{in_port[dst]}")
        ports += [in_port[name]] + outs
        qsize[in_port[name]] = _queue_size(nf.queue)
    procs.append(Proc("sink", SINK_NAME, SINK_NF_ID, control, f"{prefix}k",
                      in_ports=["snk"]))
    ports.append("snk")
    longest = max(len(str(run_dir / p)) for p in ports)
    if longest > _UNIX_PATH_MAX:
        raise MscopeError(f"ovs: run directory {run_dir} is too long for vhost-user socket "
                          f"paths ({longest} > {_UNIX_PATH_MAX} characters); use a shorter "
                          f"one (e.g. /tmp/ovs1)")
    return OvsPlan(run_dir=run_dir, prefix=prefix, registry=Path(registry), bridge=bridge,
                   port_type=port_type, control_cpu=control, pmd_cpu=pmd, ports=ports,
                   flows=flows, procs=procs, queue_size=qsize)


def vdev_args(plan, proc):
    """EAL --vdev options of `proc`: net_virtio_user<i> on its OVS ports,
    in ports first (ethdev port 0), then out ports."""
    out = []
    for i, port in enumerate(proc.vdev_ports):
        spec = (f"net_virtio_user{i},path={plan.socket(port)},"
                f"queue_size={plan.queue_size.get(port, DEFAULT_QUEUE_SIZE)}")
        if plan.port_type == "dpdkvhostuserclient":
            spec += ",server=1"
        out.append(f"--vdev={spec}")
    return out


def eal_args(plan, proc):
    """EAL options of a port-mode process: a primary of its own, memory in
    one hugepage file (vhost-user shares it with OVS by fd), lcore 0 on
    its CPU."""
    return [f"--file-prefix={proc.prefix}", "--single-file-segments", "-m", str(PROC_MEM_MB),
            f"--lcores=0@{proc.cpu}", "--no-pci", "--no-telemetry", "--log-level=error",
            *vdev_args(plan, proc)]
