"""From a scenario to the testbed's processes: rings, lcores, CPUs, argv.

Layout (2 CPUs, the common case here):

- CPU 0, the control core: the primary (asleep on stdin), the source
  (spins while packets are due), the sink (sleeps when idle) and
  mscope-collect;
- CPU 1, the NF core: every NF, each sleeping ~20 us when its ring is
  empty.  With more CPUs the NFs are spread over CPUs 1..n-1, round robin
  in topological order; with one CPU everything shares CPU 0.

Every process has an EAL lcore id of its own (mempool caches are per lcore
id): primary 0, source 1, sink 2, NF i (file order) 3 + i.

Rings: one per NF input (``q<i>``, multi-producer when it has several
in-links) and one per link into the sink (``s<j>``, so the sink records on
which link a packet arrived); capacity = the NF's ``queue``, exactly.
Recorder names are the scenario's NF names; the source records as
``source``, the sink as ``egress`` (the analyzer reserves ``sink``).
"""
import os
import re
from dataclasses import dataclass, field

from mscope import paths
from mscope.errors import MscopeError
from mscope.sim.scenario import SINK, SOURCE

__all__ = ["TESTBED_NF_TYPES", "SINK_NAME", "Plan", "NodePlan", "make_plan", "binaries"]

#: NF types the testbed runs (mscope-nf --type).
TESTBED_NF_TYPES = ("firewall", "lb", "monitor", "nat", "vpn")
#: Recorder name of the sink.
SINK_NAME = "egress"
SINK_QUEUE = 8192
SOURCE_NF_ID = 0

_RECORDER_NAME = re.compile(r"[A-Za-z0-9_-]{1,31}\Z")


def binaries():
    """The testbed's programs, by role; MscopeError when one is missing."""
    progs = {role: paths.testbed_program(role) for role in ("primary", "source", "sink", "hog")}
    progs["nf"] = paths.sample_nf()
    for role, path in progs.items():
        if not path.exists():
            raise MscopeError(f"testbed: {path} not found: mscope was built without DPDK or "
                              f"libcrypto (install.sh installs dpdk-dev, libssl-dev and "
                              f"pkg-config; then pip install . again, or make -C csrc "
                              f"OUT={paths.native_dir()})")
    return progs


@dataclass
class NodePlan:
    """One process of the chain."""
    role: str                 # "source", "nf", "sink"
    name: str                 # recorder name
    nf_id: int
    lcore: int
    cpu: int
    in_rings: list = field(default_factory=list)
    out_rings: list = field(default_factory=list)
    args: list = field(default_factory=list)      # role-specific options


@dataclass
class Plan:
    prefix: str
    registry: str
    rings: list               # (name, size, multi_producer)
    pool_mbufs: int
    nodes: list               # NodePlan: source, NFs in topological order, sink
    control_cpu: int
    nf_cpus: list
    ring_name: dict           # link (src, dst) -> ring name

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)


def _cpus():
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:                                   # pragma: no cover
        return list(range(os.cpu_count() or 1))


def check_scenario(sc):
    """Refuse what the testbed cannot run, in one line naming it."""
    for nf in sc.nfs:
        if nf.type not in TESTBED_NF_TYPES:
            raise MscopeError(f"testbed: NF {nf.name!r} has type {nf.type!r}, which the "
                              f"testbed cannot run (it runs {', '.join(TESTBED_NF_TYPES)})")
        if not _RECORDER_NAME.match(nf.name) or nf.name == SINK_NAME:
            raise MscopeError(f"testbed: NF name {nf.name!r} cannot name a recorder "
                              f"(letters, digits, '_' and '-', at most 31; not "
                              f"{SINK_NAME!r})")
        if nf.batch > 256:
            raise MscopeError(f"testbed: NF {nf.name!r}: batch {nf.batch} > 256")
        if len(sc.out_links[nf.name]) > 16 or len(sc.in_links[nf.name]) > 64:
            raise MscopeError(f"testbed: NF {nf.name!r} has more than 16 out-links")
    if len(sc.out_links[SOURCE]) > 16 or len(sc.in_links[SINK]) > 16:
        raise MscopeError("testbed: the source and the sink take at most 16 links each")


def make_plan(sc, prefix, registry, time_scale=1.0, nf_args=None, cpus=None):
    """Lay out the processes of scenario `sc` (see the module docstring).

    Parameters
    ----------
    nf_args : dict name -> list of str, optional
        Extra mscope-nf options per NF (tests: firewall rules, vpn mode...).
    cpus : list of int, optional
        CPUs to use (default: this process's affinity).
    """
    check_scenario(sc)
    cpus = cpus or _cpus()
    control = cpus[0]
    nf_cpus = cpus[1:] or cpus[:1]
    nf_args = nf_args or {}
    by_name = {nf.name: nf for nf in sc.nfs}
    rings, ring_name = [], {}
    for nf in sc.nfs:
        name = f"q{nf.index}"
        rings.append((name, nf.queue, len(sc.in_links[nf.name]) > 1))
        for src in sc.in_links[nf.name]:
            ring_name[(src, nf.name)] = name
    for j, src in enumerate(sc.in_links[SINK]):
        rings.append((f"s{j}", SINK_QUEUE, False))
        ring_name[(src, SINK)] = f"s{j}"
    # Every ring full at once, plus each process's burst and a mempool
    # cache per lcore id: no packet ever waits for an mbuf.
    pool = sum(size for _, size, _ in rings) + 256 * (len(sc.nfs) + 3) + 4096
    pool = (1 << max(13, (pool - 1).bit_length())) - 1       # 2^k - 1: the mempool's best size

    nodes = [NodePlan("source", "source", SOURCE_NF_ID, 1, control,
                      out_rings=[ring_name[(SOURCE, d)] for d in sc.out_links[SOURCE]])]
    fed_by_source = set(sc.out_links[SOURCE])
    for k, name in enumerate(sc.topo_order):
        nf = by_name[name]
        args = ["--type", nf.type, "--batch", str(nf.batch),
                "--service-ns", f"{nf.service_ns * time_scale:g}"]
        if name in fed_by_source:
            args.append("--addrs")
        args += [str(a) for a in nf_args.get(name, [])]
        nodes.append(NodePlan("nf", name, nf.index + 1, 3 + nf.index,
                              nf_cpus[k % len(nf_cpus)],
                              in_rings=[f"q{nf.index}"],
                              out_rings=[ring_name[(name, d)] for d in sc.out_links[name]],
                              args=args))
    nodes.append(NodePlan("sink", SINK_NAME, len(sc.nfs) + 1, 2, control,
                          in_rings=[ring_name[(s, SINK)] for s in sc.in_links[SINK]]))
    return Plan(prefix=prefix, registry=str(registry), rings=rings, pool_mbufs=pool,
                nodes=nodes, control_cpu=control, nf_cpus=nf_cpus, ring_name=ring_name)


def eal_args(plan, primary, lcore, cpu):
    """EAL arguments: one file prefix for the whole chain, an lcore id of
    its own for each process."""
    return [f"--proc-type={'primary' if primary else 'secondary'}",
            f"--file-prefix={plan.prefix}", f"--lcores={lcore}@{cpu}", "--no-pci",
            "--no-telemetry", "--log-level=error"]
