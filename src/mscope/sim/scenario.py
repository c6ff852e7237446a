"""Scenario files (SCENARIO.md): load one, check every rule, hand out plain data.

The checks run once, here, at the boundary; the simulator and the testbed
take the returned `Scenario` as given. Every broken rule is a
`ScenarioError` with a one-line message that says where and what, e.g.
``fw-bug.json: links[3]: unknown NF 'natt' (known: lb, fw1, ..., sink)``.

Rules beyond the format's own text, decided here:

- Unknown keys are errors at every level (top level, ``objective``, each
  NF, ``traffic``, each fault), so a typo cannot pass silently; keys that
  start with ``x_`` are ignored anywhere (the extension rule: local
  annotations and experiments use ``x_``, new optional keys of the format
  itself are added to this module). A key a JSON object holds twice is an
  error too (``json`` would keep the last silently).
- Optional keys beyond SCENARIO.md's example: ``description`` (top level);
  ``traffic.flow_sizes`` (``"pareto"``, the default, or ``"constant"``),
  ``traffic.src_prefix`` / ``dst_prefix`` (default ``10.0.0.0/8`` and
  ``192.168.0.0/16``), ``traffic.pareto_shape`` (default 1.2, > 1 for a
  finite mean; pareto only), ``traffic.tcp_share`` (default 0.8, in
  [0, 1]), ``traffic.pcap``.
- With ``traffic.pcap`` (a path relative to the scenario file, which must
  exist), ``rate_mpps`` and ``flows`` become optional: an absent
  ``rate_mpps`` means the capture's own timing.
- Prefixes are IPv4 and must have no host bits set (``10.0.0.1/8`` is an
  error that suggests ``10.0.0.0/8``): a prefix with host bits is usually
  a mistyped address, and silently widening it would change which flows a
  fault names. A ``bug``'s flows must overlap ``traffic.src_prefix`` (else
  the bug never acts); a ``burst`` brings its own packets and may lie
  outside it.
- NF names are letters, digits, ``_``, ``-``, ``.``, starting with a letter;
  ``source`` and ``sink`` are reserved. NF types are `NF_TYPES`.
- The links form a DAG from ``source`` to ``sink``: every NF reachable from
  ``source`` and reaching ``sink``; no cycles, no duplicate links, no
  ``source -> sink`` link (it would bypass every NF).
- A fault's window lies in [0, duration]; ``slowdown`` > 1; ``share`` in
  (0, 1]; times, sizes and rates are positive (``at_ms``/``from_ms`` may be
  0).

Examples
--------
>>> from mscope.sim.scenario import load_scenario
>>> sc = load_scenario("bench/scenarios/fw-bug-and-burst.json")  # doctest: +SKIP
>>> sc.topo_order, sc.out_links["lb"], sc.faults[0].start_ns     # doctest: +SKIP
(('lb', 'fw1', 'fw2', 'nat', 'vpn'), ('fw1', 'fw2'), 50000000)
"""
from __future__ import annotations

import difflib
import ipaddress
import json
import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mscope.errors import ScenarioError

__all__ = ["load_scenario", "Scenario", "NF", "Traffic", "Fault", "ScenarioError",
           "SOURCE", "SINK", "FAULT_KINDS", "NF_TYPES", "FLOW_SIZES"]

SOURCE, SINK = "source", "sink"
FAULT_KINDS = ("interrupt", "bug", "burst", "contention")
NF_TYPES = ("lb", "firewall", "nat", "vpn", "router", "ids", "monitor", "forwarder")
FLOW_SIZES = ("pareto", "constant")

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*\Z")

# (required, optional) keys of each object
_TOP_KEYS = (("name", "seed", "duration_ms", "objective", "nfs", "links", "traffic"),
             ("description", "faults"))
_OBJECTIVE_KEYS = (("latency_us",), ())
_NF_KEYS = (("name", "type", "service_ns", "batch", "queue"), ())
_TRAFFIC_OPTIONAL = ("flow_sizes", "src_prefix", "dst_prefix", "pcap",
                     "pareto_shape", "tcp_share")
_TRAFFIC_KEYS = (("rate_mpps", "flows"), _TRAFFIC_OPTIONAL)
_TRAFFIC_PCAP_KEYS = ((), ("rate_mpps", "flows") + _TRAFFIC_OPTIONAL)
_FAULT_KEYS = {
    "interrupt": ("nf", "at_ms", "duration_us"),
    "bug": ("nf", "flows", "from_ms", "to_ms", "slowdown"),
    "burst": ("flows", "at_ms", "duration_us", "rate_mpps"),
    "contention": ("nf", "from_ms", "to_ms", "share"),
}
_DEFAULT_SRC_PREFIX = "10.0.0.0/8"
_DEFAULT_DST_PREFIX = "192.168.0.0/16"


@dataclass(frozen=True)
class NF:
    """One network function of the chain.

    Attributes
    ----------
    name : str
        Unique; never ``source`` or ``sink``.
    type : str
        One of `NF_TYPES`.
    service_ns : float
        Mean per-packet cost at the NF's peak rate, > 0.
    batch : int
        Most packets taken per poll, >= 1.
    queue : int
        Input queue capacity in packets, >= 1; arrivals beyond it drop.
    index : int
        Position in the file's ``nfs`` list, 0..n-1.
    """
    name: str
    type: str
    service_ns: float
    batch: int
    queue: int
    index: int


@dataclass(frozen=True)
class Traffic:
    """What the source sends.

    Attributes
    ----------
    rate_pps : float or None
        Mean packet rate (``rate_mpps`` x 1e6). None only with `pcap` and no
        ``rate_mpps``: replay at the capture's own timing.
    flows : int or None
        Number of flows. None only with `pcap` and no ``flows``.
    flow_sizes : str
        ``"pareto"`` (heavy-tailed, shape `pareto_shape`) or ``"constant"``.
    src_net, dst_net : ipaddress.IPv4Network
        Source and destination address prefixes of the generated flows.
    pcap : pathlib.Path or None
        Absolute path of a pcap to replay instead of the generated mix.
    pareto_shape : float
        Shape of the flow-size distribution, > 1 (pareto only).
    tcp_share : float
        Fraction of flows that are TCP (the rest UDP), in [0, 1].
    """
    rate_pps: float | None
    flows: int | None
    flow_sizes: str
    src_net: ipaddress.IPv4Network
    dst_net: ipaddress.IPv4Network
    pcap: Path | None = None
    pareto_shape: float = 1.2
    tcp_share: float = 0.8


@dataclass(frozen=True)
class Fault:
    """One injected fault, acting over [start_ns, end_ns).

    Attributes
    ----------
    id : str
        Unique among the scenario's faults.
    kind : str
        One of `FAULT_KINDS`.
    nf : str or None
        The NF it acts on; None for ``burst``.
    flows : ipaddress.IPv4Network or None
        Source prefix of the flows it names (``bug``, ``burst``), else None.
    start_ns, end_ns : int
        Its window, 0 <= start_ns < end_ns <= the scenario's duration_ns.
    slowdown : float or None
        ``bug`` only: the named flows cost this many times more, > 1.
    rate_pps : float or None
        ``burst`` only: the named flows' extra rate, > 0.
    share : float or None
        ``contention`` only: the share of its core the NF keeps, in (0, 1].
    """
    id: str
    kind: str
    nf: str | None
    flows: ipaddress.IPv4Network | None
    start_ns: int
    end_ns: int
    slowdown: float | None = None
    rate_pps: float | None = None
    share: float | None = None


@dataclass(frozen=True)
class Scenario:
    """A validated scenario, times in integer nanoseconds.

    Plain data: treat it, its tuples and its dicts as read-only.

    Attributes
    ----------
    name : str
    seed : int
        >= 0.
    duration_ns : int
        Length of the run, > 0.
    slo_ns : int
        ``objective.latency_us`` in ns: a packet slower end to end (or
        dropped) is a victim.
    nfs : tuple of NF
        In file order; ``nfs[i].index == i``.
    links : tuple of (str, str)
        The file's links in file order; node names include ``source`` and
        ``sink``.
    out_links, in_links : dict of str -> tuple of str
        Every node (``source``, each NF in file order, ``sink``) to the nodes
        it sends to / receives from, in the order of ``links``. A node with
        several out-links splits its traffic by flow hash over them.
    topo_order : tuple of str
        The NF names (without ``source`` and ``sink``) in an order where
        every link goes forward: by depth (the longest path from
        ``source``), so NFs fed only by ``source`` come first; ties in file
        order.
    traffic : Traffic
    faults : tuple of Fault
        In file order (may be empty).
    description : str
        Free text, "" when absent.
    path : pathlib.Path or None
        The file it was loaded from; None when loaded from a dict.
    """
    name: str
    seed: int
    duration_ns: int
    slo_ns: int
    nfs: tuple
    links: tuple
    out_links: dict
    in_links: dict
    topo_order: tuple
    traffic: Traffic
    faults: tuple
    description: str = ""
    path: Path | None = None


def load_scenario(source):
    """Load and validate a scenario.

    Parameters
    ----------
    source : str, os.PathLike or Mapping
        A scenario file, or its already-parsed JSON object. A relative
        ``traffic.pcap`` is taken relative to the file's folder (to the
        current directory for a Mapping).

    Returns
    -------
    Scenario

    Raises
    ------
    ScenarioError
        The file cannot be read or parsed, or breaks a rule (module
        docstring). The one-line message starts with the file's path as
        given, when there is a file.
    TypeError
        `source` is neither a path nor a Mapping.

    Examples
    --------
    >>> sc = load_scenario("bench/scenarios/fw-bug-and-burst.json")  # doctest: +SKIP
    >>> sc.duration_ns, sc.slo_ns, [nf.name for nf in sc.nfs]         # doctest: +SKIP
    (200000000, 150000, ['lb', 'fw1', 'fw2', 'nat', 'vpn'])
    """
    if isinstance(source, Mapping):
        return _Loader(None, Path.cwd()).scenario(source, None)
    if isinstance(source, (str, os.PathLike)):
        label = os.fspath(source)
        path = Path(source)
        doc = _read_json(path, label)
        return _Loader(label, Path(os.path.abspath(path)).parent).scenario(doc, path)
    raise TypeError(f"load_scenario: source must be a path or a Mapping, "
                    f"got {type(source).__name__}")


# --- reading the file --------------------------------------------------------

class _DuplicateKey(Exception):
    pass


class _NonFinite(Exception):
    pass


def _no_duplicate_keys(pairs):
    doc = {}
    for key, value in pairs:
        if key in doc:
            raise _DuplicateKey(key)
        doc[key] = value
    return doc


def _no_constant(name):
    raise _NonFinite(name)


def _read_json(path, label):
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"{label}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{label}: not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys,
                          parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ScenarioError(f"{label}: line {e.lineno} column {e.colno}: "
                            f"not valid JSON: {e.msg}") from None
    except _DuplicateKey as e:
        raise ScenarioError(f"{label}: key {e.args[0]!r} appears twice in one object "
                            f"(JSON readers would silently keep one)") from None
    except _NonFinite as e:
        raise ScenarioError(f"{label}: {e.args[0]} is not a JSON number") from None


# --- value checks --------------------------------------------------------------

def _shown(value):
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, numbers.Number):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def _is_number(value):
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _to_ns(value, scale):
    """`value` (ms, us) times `scale` as integer ns, rounded to nearest."""
    return int(value) * scale if _is_int(value) else int(round(float(value) * scale))


class _Loader:
    """Check one scenario document; `label` prefixes every message."""

    def __init__(self, label, base_dir):
        self.label = label
        self.base_dir = base_dir

    def fail(self, where, message):
        prefix = f"{self.label}: " if self.label is not None else ""
        raise ScenarioError(f"{prefix}{where}: {message}")

    # objects and keys

    def object(self, value, where, keys, what=None):
        """`value` must be an object with the required keys and no unknown ones."""
        required, optional = keys
        if not isinstance(value, Mapping):
            self.fail(where, f"must be an object, got {_json_kind(value)}")
        known = tuple(required) + tuple(optional)
        for key in value:
            if not isinstance(key, str):
                self.fail(where, f"key {key!r} is not a string")
            if key in known or key.startswith("x_"):
                continue
            self.unknown_key(key, where, known, what)
        for key in required:
            if key not in value:
                self.fail(where, f"missing required key {key!r}"
                          + (f" ({what} needs {', '.join(required)})" if what else ""))
        return value

    def unknown_key(self, key, where, known, what):
        if (what is not None and what.startswith("kind ")
                and any(key in kind_keys for kind_keys in _FAULT_KEYS.values())):
            self.fail(where, f"key {key!r} does not apply to {what} "
                      f"(its keys: {', '.join(known)})")
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
        self.fail(where, f"unknown key {key!r} ({hint}; extensions start with 'x_')")

    # scalars

    def string(self, value, where):
        if not isinstance(value, str) or not value:
            self.fail(where, f"must be a non-empty string, got {_shown(value)}")
        return value

    def number(self, value, where, rule, ok):
        if not _is_number(value) or not ok(value):
            self.fail(where, f"must be {rule}, got {_shown(value)}")
        return value

    def positive(self, value, where):
        return self.number(value, where, "a positive number", lambda v: v > 0)

    def non_negative(self, value, where):
        return self.number(value, where, "a number >= 0", lambda v: v >= 0)

    def integer(self, value, where, minimum):
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        if not _is_int(value) or value < minimum:
            self.fail(where, f"must be {rule}, got {_shown(value)}")
        return int(value)

    def duration_ns(self, value, where, scale):
        """A positive time (ms: scale 10**6, us: 10**3) as integer ns >= 1."""
        self.positive(value, where)
        ns = _to_ns(value, scale)
        if ns < 1:
            self.fail(where, f"{_shown(value)} rounds to 0 ns")
        return ns

    def prefix(self, value, where):
        if not isinstance(value, str):
            self.fail(where, f"must be an IPv4 prefix like '10.0.0.0/8', got {_shown(value)}")
        try:
            return ipaddress.IPv4Network(value, strict=True)
        except ValueError:
            pass
        try:
            loose = ipaddress.IPv4Network(value, strict=False)
        except ValueError:
            self.fail(where, f"{value!r} is not an IPv4 prefix (a.b.c.d/len)")
        self.fail(where, f"{value!r} has host bits set (did you mean '{loose}'?)")

    # sections

    def scenario(self, doc, path):
        self.object(doc, "top level", _TOP_KEYS)
        name = self.string(doc["name"], "name")
        description = doc.get("description", "")
        if not isinstance(description, str):
            self.fail("description", f"must be a string, got {_shown(description)}")
        seed = self.integer(doc["seed"], "seed", 0)
        duration_ns = self.duration_ns(doc["duration_ms"], "duration_ms", 10**6)
        objective = self.object(doc["objective"], "objective", _OBJECTIVE_KEYS)
        slo_ns = self.duration_ns(objective["latency_us"], "objective.latency_us", 10**3)
        nfs = self.nfs(doc["nfs"])
        links, out_links, in_links, topo_order = self.links(doc["links"], nfs)
        traffic = self.traffic(doc["traffic"])
        faults = self.faults(doc.get("faults", []), nfs, traffic, duration_ns)
        return Scenario(name=name, seed=seed, duration_ns=duration_ns, slo_ns=slo_ns,
                        nfs=nfs, links=links, out_links=out_links, in_links=in_links,
                        topo_order=topo_order, traffic=traffic, faults=faults,
                        description=description,
                        path=None if path is None else Path(path))

    def nfs(self, value):
        if not isinstance(value, (list, tuple)) or not value:
            self.fail("nfs", f"must be a non-empty array of NFs, got {_shown(value)}")
        nfs, first_at = [], {}
        for i, entry in enumerate(value):
            where = f"nfs[{i}]"
            self.object(entry, where, _NF_KEYS)
            name = entry["name"]
            if not isinstance(name, str) or not _NAME_RE.match(name):
                self.fail(f"{where}.name", f"must be letters, digits, '_', '-' or '.' "
                          f"starting with a letter, got {_shown(name)}")
            if name in (SOURCE, SINK):
                self.fail(f"{where}.name", f"{name!r} is reserved (the chain's "
                          f"{'entry' if name == SOURCE else 'exit'})")
            if name in first_at:
                self.fail(f"{where}.name", f"duplicate NF name {name!r} "
                          f"(first at nfs[{first_at[name]}])")
            first_at[name] = i
            kind = entry["type"]
            if kind not in NF_TYPES:
                self.fail(f"{where}.type", f"unknown NF type {_shown(kind)} "
                          f"(known: {', '.join(NF_TYPES)})")
            service_ns = self.positive(entry["service_ns"], f"{where}.service_ns")
            batch = self.integer(entry["batch"], f"{where}.batch", 1)
            queue = self.integer(entry["queue"], f"{where}.queue", 1)
            nfs.append(NF(name=name, type=kind, service_ns=float(service_ns),
                          batch=batch, queue=queue, index=i))
        return tuple(nfs)

    def links(self, value, nfs):
        if not isinstance(value, (list, tuple)) or not value:
            self.fail("links", f"must be a non-empty array of [from, to] pairs, "
                      f"got {_shown(value)}")
        names = [nf.name for nf in nfs]
        nodes = [SOURCE] + names + [SINK]
        known = ", ".join(names + [SOURCE, SINK])
        out_links = {node: [] for node in nodes}
        in_links = {node: [] for node in nodes}
        links, first_at = [], {}
        for i, link in enumerate(value):
            where = f"links[{i}]"
            if (not isinstance(link, (list, tuple)) or len(link) != 2
                    or not all(isinstance(n, str) for n in link)):
                self.fail(where, f"must be a pair [from, to] of node names, got {_shown(link)}")
            src, dst = link
            for node in (src, dst):
                if node not in out_links:
                    self.fail(where, f"unknown NF {node!r} (known: {known})")
            if src == SOURCE and dst == SINK:
                self.fail(where, "'source' -> 'sink' would bypass every NF")
            if src == SINK:
                self.fail(where, "'sink' cannot send (packets leave the chain there)")
            if dst == SOURCE:
                self.fail(where, "'source' cannot receive (packets enter the chain there)")
            if src == dst:
                self.fail(where, f"cycle {src} -> {dst}")
            if (src, dst) in first_at:
                self.fail(where, f"duplicate of links[{first_at[src, dst]}] ({src} -> {dst})")
            first_at[src, dst] = i
            links.append((src, dst))
            out_links[src].append(dst)
            in_links[dst].append(src)
        if not out_links[SOURCE]:
            self.fail("links", "'source' has no out-link: no traffic would enter the chain")
        topo_order = self.topo_order(nodes, out_links, in_links, {n: i for i, n in enumerate(names)})
        reached = _closure(SOURCE, out_links)
        for name in names:
            if name not in reached:
                self.fail("links", f"NF {name!r} is unreachable from 'source'")
        reaching = _closure(SINK, in_links)
        for name in names:
            if name not in reaching:
                self.fail("links", f"NF {name!r} has no path to 'sink'")
        return (tuple(links),
                {node: tuple(v) for node, v in out_links.items()},
                {node: tuple(v) for node, v in in_links.items()},
                topo_order)

    def topo_order(self, nodes, out_links, in_links, index):
        """NF names by depth (longest path from source), ties in file order.

        Every link goes to a strictly greater depth, so this is a
        topological order; Kahn's algorithm finds the depths and the cycles.
        """
        pending = {node: len(in_links[node]) for node in nodes}
        ready = [node for node in nodes if pending[node] == 0]
        depth = dict.fromkeys(nodes, 0)
        while ready:
            node = ready.pop()
            for dst in out_links[node]:
                depth[dst] = max(depth[dst], depth[node] + 1)
                pending[dst] -= 1
                if pending[dst] == 0:
                    ready.append(dst)
        stuck = [n for n in index if pending[n] > 0]
        if stuck:
            self.fail("links", "cycle " + " -> ".join(_cycle(stuck, in_links, index)))
        return tuple(sorted(index, key=lambda n: (depth[n], index[n])))

    def traffic(self, value):
        pcap_given = isinstance(value, Mapping) and "pcap" in value
        self.object(value, "traffic", _TRAFFIC_PCAP_KEYS if pcap_given else _TRAFFIC_KEYS)
        rate_pps = flows = pcap = None
        if "rate_mpps" in value:
            rate_pps = float(self.positive(value["rate_mpps"], "traffic.rate_mpps")) * 1e6
        if "flows" in value:
            flows = self.integer(value["flows"], "traffic.flows", 1)
        flow_sizes = value.get("flow_sizes", "pareto")
        if flow_sizes not in FLOW_SIZES:
            self.fail("traffic.flow_sizes", f"unknown flow size distribution "
                      f"{_shown(flow_sizes)} (known: {', '.join(FLOW_SIZES)})")
        src_net = self.prefix(value.get("src_prefix", _DEFAULT_SRC_PREFIX), "traffic.src_prefix")
        dst_net = self.prefix(value.get("dst_prefix", _DEFAULT_DST_PREFIX), "traffic.dst_prefix")
        pareto_shape = 1.2
        if "pareto_shape" in value:
            if flow_sizes != "pareto":
                self.fail("traffic.pareto_shape", f"applies only to flow_sizes 'pareto', "
                          f"not {flow_sizes!r}")
            pareto_shape = float(self.number(
                value["pareto_shape"], "traffic.pareto_shape",
                "a number > 1 (a finite mean flow size)", lambda v: v > 1))
        tcp_share = float(self.number(value.get("tcp_share", 0.8), "traffic.tcp_share",
                                      "a number in [0, 1]", lambda v: 0 <= v <= 1))
        if pcap_given:
            given = value["pcap"]
            if not isinstance(given, str) or not given:
                self.fail("traffic.pcap", f"must be a path string, got {_shown(given)}")
            pcap = Path(os.path.abspath(self.base_dir / given))
            if not pcap.is_file():
                relative = ("" if os.path.isabs(given) else
                            f" (relative to {'the scenario file' if self.label else 'the current directory'})")
                self.fail("traffic.pcap", f"no such file: {pcap}{relative}")
        return Traffic(rate_pps=rate_pps, flows=flows, flow_sizes=flow_sizes,
                       src_net=src_net, dst_net=dst_net, pcap=pcap,
                       pareto_shape=pareto_shape, tcp_share=tcp_share)

    def faults(self, value, nfs, traffic, duration_ns):
        if not isinstance(value, (list, tuple)):
            self.fail("faults", f"must be an array of faults, got {_json_kind(value)}")
        names = [nf.name for nf in nfs]
        faults, first_at = [], {}
        for i, entry in enumerate(value):
            where = f"faults[{i}]"
            if not isinstance(entry, Mapping):
                self.fail(where, f"must be an object, got {_json_kind(entry)}")
            kind = entry.get("kind")
            if kind is None:
                self.fail(where, "missing required key 'kind'")
            if kind not in FAULT_KINDS:
                self.fail(f"{where}.kind", f"unknown fault kind {_shown(kind)} "
                          f"(known: {', '.join(FAULT_KINDS)})")
            self.object(entry, where, (("id", "kind") + _FAULT_KEYS[kind], ()),
                        what=f"kind {kind!r}")
            fid = self.string(entry["id"], f"{where}.id")
            if fid in first_at:
                self.fail(f"{where}.id", f"duplicate fault id {fid!r} "
                          f"(first at faults[{first_at[fid]}])")
            first_at[fid] = i
            nf = None
            if "nf" in entry:
                nf = entry["nf"]
                if nf not in names:
                    self.fail(f"{where}.nf", f"unknown NF {_shown(nf)} (known: {', '.join(names)})")
            flows = None
            if "flows" in entry:
                flows = self.prefix(entry["flows"], f"{where}.flows")
                if kind == "bug" and traffic.pcap is None and not flows.overlaps(traffic.src_net):
                    self.fail(f"{where}.flows", f"{flows} lies outside traffic.src_prefix "
                              f"{traffic.src_net}: the bug would never act")
            if "at_ms" in entry:
                start_ns = _to_ns(self.non_negative(entry["at_ms"], f"{where}.at_ms"), 10**6)
                end_ns = start_ns + self.duration_ns(entry["duration_us"],
                                                     f"{where}.duration_us", 10**3)
            else:
                from_ms = self.non_negative(entry["from_ms"], f"{where}.from_ms")
                to_ms = self.number(entry["to_ms"], f"{where}.to_ms",
                                    f"a number > from_ms ({_shown(from_ms)})",
                                    lambda v: v > from_ms)
                start_ns, end_ns = _to_ns(from_ms, 10**6), _to_ns(to_ms, 10**6)
            if end_ns > duration_ns:
                self.fail(where, f"window {start_ns / 1e6:g}-{end_ns / 1e6:g} ms ends after "
                          f"the run (duration_ms {duration_ns / 1e6:g})")
            slowdown = rate_pps = share = None
            if kind == "bug":
                slowdown = float(self.number(entry["slowdown"], f"{where}.slowdown",
                                             "a number > 1", lambda v: v > 1))
            elif kind == "burst":
                rate_pps = float(self.positive(entry["rate_mpps"], f"{where}.rate_mpps")) * 1e6
            elif kind == "contention":
                share = float(self.number(entry["share"], f"{where}.share",
                                          "a number in (0, 1]", lambda v: 0 < v <= 1))
            faults.append(Fault(id=fid, kind=kind, nf=nf, flows=flows, start_ns=start_ns,
                                end_ns=end_ns, slowdown=slowdown, rate_pps=rate_pps,
                                share=share))
        return tuple(faults)


def _closure(start, edges):
    """Every node reachable from `start` along `edges` (start included)."""
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _cycle(stuck, in_links, index):
    """One cycle among `stuck` (nodes Kahn could not order), in link
    direction, from its NF that comes first in the file.

    Every stuck node has a stuck predecessor, so walking predecessors from
    any of them must revisit a node.
    """
    stuck_set = set(stuck)
    walk, at = [], {}
    node = stuck[0]
    while node not in at:
        at[node] = len(walk)
        walk.append(node)
        node = next(p for p in in_links[node] if p in stuck_set)
    loop = walk[at[node]:][::-1]
    first = min(range(len(loop)), key=lambda k: index[loop[k]])
    loop = loop[first:] + loop[:first]
    return loop + [loop[0]]
