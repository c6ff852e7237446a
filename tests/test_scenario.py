"""Scenario files (SCENARIO.md): the example loads with the right values, the
suite in bench/scenarios/ validates, and every rule is refused in one line
that names the file, the place and the rule."""
import copy
import dataclasses
import ipaddress
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mscope import errors
from mscope.errors import MscopeError, ScenarioError
from mscope.sim.scenario import (FAULT_KINDS, SINK, SOURCE, Fault, Scenario,
                                 load_scenario)

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "bench" / "scenarios"
SUITE_FILES = sorted(SUITE.glob("*.json"))

# The example of SCENARIO.md, as data; bench/scenarios/fw-bug-and-burst.json
# is the same text.
EXAMPLE = {
    "name": "fw-bug-and-burst",
    "seed": 7,
    "duration_ms": 200,
    "objective": {"latency_us": 150},
    "nfs": [
        {"name": "lb", "type": "lb", "service_ns": 80, "batch": 32, "queue": 1024},
        {"name": "fw1", "type": "firewall", "service_ns": 220, "batch": 32, "queue": 1024},
        {"name": "fw2", "type": "firewall", "service_ns": 220, "batch": 32, "queue": 1024},
        {"name": "nat", "type": "nat", "service_ns": 300, "batch": 32, "queue": 1024},
        {"name": "vpn", "type": "vpn", "service_ns": 450, "batch": 32, "queue": 1024},
    ],
    "links": [["source", "lb"], ["lb", "fw1"], ["lb", "fw2"],
              ["fw1", "nat"], ["fw2", "nat"], ["nat", "vpn"], ["vpn", "sink"]],
    "traffic": {"rate_mpps": 1.2, "flows": 4000, "flow_sizes": "pareto",
                "src_prefix": "10.0.0.0/8", "dst_prefix": "192.168.0.0/16"},
    "faults": [
        {"id": "f1", "kind": "interrupt", "nf": "nat", "at_ms": 50, "duration_us": 300},
        {"id": "f2", "kind": "bug", "nf": "fw1", "flows": "10.0.0.0/10",
         "from_ms": 80, "to_ms": 120, "slowdown": 30},
        {"id": "f3", "kind": "burst", "flows": "10.2.3.0/24",
         "at_ms": 150, "duration_us": 500, "rate_mpps": 6},
        {"id": "f4", "kind": "contention", "nf": "fw2", "from_ms": 20, "to_ms": 30,
         "share": 0.1},
    ],
}
KNOWN = "lb, fw1, fw2, nat, vpn"


def example():
    return copy.deepcopy(EXAMPLE)


# --- the example -------------------------------------------------------------

def test_example_file_is_the_scenario_md_example():
    assert json.loads((SUITE / "fw-bug-and-burst.json").read_text()) == EXAMPLE


def test_example_loads_with_the_right_values():
    sc = load_scenario(SUITE / "fw-bug-and-burst.json")
    assert isinstance(sc, Scenario)
    assert (sc.name, sc.seed, sc.duration_ns, sc.slo_ns) == ("fw-bug-and-burst", 7,
                                                             200_000_000, 150_000)
    assert sc.description == "" and sc.path == SUITE / "fw-bug-and-burst.json"
    assert [(nf.name, nf.type, nf.service_ns, nf.batch, nf.queue, nf.index) for nf in sc.nfs] == [
        ("lb", "lb", 80.0, 32, 1024, 0), ("fw1", "firewall", 220.0, 32, 1024, 1),
        ("fw2", "firewall", 220.0, 32, 1024, 2), ("nat", "nat", 300.0, 32, 1024, 3),
        ("vpn", "vpn", 450.0, 32, 1024, 4)]
    assert all(isinstance(nf.service_ns, float) for nf in sc.nfs)
    assert sc.links == (("source", "lb"), ("lb", "fw1"), ("lb", "fw2"), ("fw1", "nat"),
                        ("fw2", "nat"), ("nat", "vpn"), ("vpn", "sink"))
    assert sc.out_links == {"source": ("lb",), "lb": ("fw1", "fw2"), "fw1": ("nat",),
                            "fw2": ("nat",), "nat": ("vpn",), "vpn": ("sink",), "sink": ()}
    assert sc.in_links == {"source": (), "lb": ("source",), "fw1": ("lb",), "fw2": ("lb",),
                           "nat": ("fw1", "fw2"), "vpn": ("nat",), "sink": ("vpn",)}
    assert sc.topo_order == ("lb", "fw1", "fw2", "nat", "vpn")
    t = sc.traffic
    assert (t.rate_pps, t.flows, t.flow_sizes, t.pcap) == (1.2e6, 4000, "pareto", None)
    assert t.src_net == ipaddress.IPv4Network("10.0.0.0/8")
    assert t.dst_net == ipaddress.IPv4Network("192.168.0.0/16")
    assert (t.pareto_shape, t.tcp_share) == (1.2, 0.8)
    net = ipaddress.IPv4Network
    assert sc.faults == (
        Fault("f1", "interrupt", "nat", None, 50_000_000, 50_300_000),
        Fault("f2", "bug", "fw1", net("10.0.0.0/10"), 80_000_000, 120_000_000, slowdown=30.0),
        Fault("f3", "burst", None, net("10.2.3.0/24"), 150_000_000, 150_500_000,
              rate_pps=6e6),
        Fault("f4", "contention", "fw2", None, 20_000_000, 30_000_000, share=0.1))
    assert all(type(f.start_ns) is int and type(f.end_ns) is int for f in sc.faults)


def test_a_dict_loads_like_the_file_and_the_result_is_frozen():
    sc = load_scenario(example())
    assert sc.path is None
    assert sc == dataclasses.replace(load_scenario(SUITE / "fw-bug-and-burst.json"), path=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sc.seed = 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        sc.faults[0].start_ns = 0
    doc = example()
    doc["links"] = [tuple(link) for link in doc["links"]]
    doc["nfs"], doc["faults"] = tuple(doc["nfs"]), tuple(doc["faults"])
    assert load_scenario(doc) == sc


def test_fractional_times_become_integer_ns():
    doc = example()
    doc["duration_ms"] = 0.75
    doc["objective"]["latency_us"] = 12.5
    doc["faults"] = [
        {"id": "a", "kind": "interrupt", "nf": "nat", "at_ms": 0.3, "duration_us": 0.0007},
        {"id": "b", "kind": "contention", "nf": "fw2", "from_ms": 0, "to_ms": 0.75,
         "share": 1}]
    sc = load_scenario(doc)
    assert (sc.duration_ns, sc.slo_ns) == (750_000, 12_500)
    assert [(f.start_ns, f.end_ns) for f in sc.faults] == [(300_000, 300_001), (0, 750_000)]


def test_defaults_and_optional_keys():
    doc = example()
    for key in ("flow_sizes", "src_prefix", "dst_prefix"):
        del doc["traffic"][key]
    del doc["faults"]
    sc = load_scenario(doc)
    assert sc.faults == ()
    t = sc.traffic
    assert (t.flow_sizes, str(t.src_net), str(t.dst_net)) == ("pareto", "10.0.0.0/8",
                                                              "192.168.0.0/16")
    doc["traffic"].update(flow_sizes="constant", tcp_share=0)
    doc["description"] = "constant sizes, UDP only"
    sc = load_scenario(doc)
    assert (sc.traffic.flow_sizes, sc.traffic.tcp_share, sc.description) == (
        "constant", 0.0, "constant sizes, UDP only")
    doc["traffic"].update(flow_sizes="pareto", pareto_shape=2.5)
    assert load_scenario(doc).traffic.pareto_shape == 2.5


def test_x_keys_are_ignored_at_every_level():
    doc = example()
    doc["x_note"] = "top"
    doc["objective"]["x_p99"] = True
    doc["nfs"][0]["x_core"] = 3
    doc["traffic"]["x_source"] = {"anything": [1, 2]}
    doc["faults"][0]["x_why"] = "cabling"
    assert load_scenario(doc) == load_scenario(example())


# --- the suite -----------------------------------------------------------------

def test_the_suite_has_at_least_twelve_scenarios():
    assert len(SUITE_FILES) >= 12


@pytest.mark.parametrize("path", SUITE_FILES, ids=lambda p: p.name)
def test_every_suite_file_validates(path):
    sc = load_scenario(path)
    assert sc.name == path.stem
    assert sc.duration_ns <= 200_000_000 and sc.traffic.rate_pps <= 2e6
    if path.name != "fw-bug-and-burst.json":
        assert sc.description


def bottleneck(sc):
    """(NF name, utilisation) of the busiest NF: arrival rate x service_ns,
    out-links splitting evenly."""
    arrival = {nf.name: 0.0 for nf in sc.nfs}
    for node in (SOURCE,) + sc.topo_order:
        rate = sc.traffic.rate_pps if node == SOURCE else arrival[node]
        for dst in sc.out_links[node]:
            if dst != SINK:
                arrival[dst] += rate / len(sc.out_links[node])
    util = {nf.name: arrival[nf.name] * nf.service_ns * 1e-9 for nf in sc.nfs}
    name = max(util, key=util.get)
    return name, util[name]


def readme_rows():
    rows = {}
    for line in (SUITE / "README.md").read_text().splitlines():
        m = re.match(r"\| `([^`]+\.json)` \|", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in line.strip("|").split("|")]
    return rows


def test_readme_lists_every_scenario_with_its_bottleneck_load():
    rows = readme_rows()
    assert sorted(rows) == [p.name for p in SUITE_FILES]
    for path in SUITE_FILES:
        name, util = bottleneck(load_scenario(path))
        load = rows[path.name][2]
        assert load.startswith(f"`{name}` {round(util * 100)}%"), (path.name, load)
        if "(light)" in load:
            assert util <= 0.40, path.name
        if "(heavy)" in load:
            assert util >= 0.85, path.name


def test_the_suite_covers_what_the_issue_asks():
    suite = [load_scenario(p) for p in SUITE_FILES]
    alone = {sc.faults[0].kind for sc in suite if len(sc.faults) == 1}
    assert alone == set(FAULT_KINDS)
    assert any(not sc.faults and bottleneck(sc)[1] <= 0.40 for sc in suite)
    assert any(bottleneck(sc)[1] <= 0.40 and sc.faults for sc in suite)
    assert any(bottleneck(sc)[1] >= 0.85 for sc in suite)
    assert any(any(nf.type == "nat" for nf in sc.nfs) for sc in suite)
    chains = {len(sc.nfs) for sc in suite
              if all(len(v) <= 1 for v in sc.out_links.values())}
    assert {2, 3, 4, 5} <= chains
    assert sum(any(len(v) > 1 for v in sc.out_links.values()) for sc in suite) >= 2
    pairs = {tuple(sorted(f.kind for f in sc.faults)) for sc in suite if len(sc.faults) == 2}
    assert {("burst", "interrupt"), ("bug", "contention"), ("interrupt", "interrupt"),
            ("bug", "burst")} <= pairs


# --- every rule, refused -------------------------------------------------------

def _set(path, value):
    def edit(doc):
        *parents, last = path
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


def _del(path):
    def edit(doc):
        *parents, last = path
        node = doc
        for key in parents:
            node = node[key]
        del node[last]
    return edit


def _links(*extra, drop=()):
    def edit(doc):
        doc["links"] = [link for link in doc["links"] if link not in [list(d) for d in drop]]
        doc["links"] += [list(e) for e in extra]
    return edit


def _fault(i, **changes):
    def edit(doc):
        doc["faults"][i].update(changes)
        for key, value in changes.items():
            if value is None:
                del doc["faults"][i][key]
    return edit


BROKEN = [
    # top level
    ("missing seed", _del(["seed"]), r"top level: missing required key 'seed'$"),
    ("missing nfs", _del(["nfs"]), r"top level: missing required key 'nfs'$"),
    ("missing traffic", _del(["traffic"]), r"top level: missing required key 'traffic'$"),
    ("typo key", _set(["sed"], 7), r"top level: unknown key 'sed' \(did you mean 'seed'\?; "
                                    r"extensions start with 'x_'\)$"),
    ("unknown key", _set(["colour"], "red"), r"top level: unknown key 'colour' \(known: name, "),
    ("name not string", _set(["name"], 5), r"name: must be a non-empty string, got 5$"),
    ("name empty", _set(["name"], ""), r"name: must be a non-empty string, got ''$"),
    ("description not string", _set(["description"], ["x"]), r"description: must be a string"),
    ("seed negative", _set(["seed"], -1), r"seed: must be an integer >= 0, got -1$"),
    ("seed float", _set(["seed"], 1.5), r"seed: must be an integer >= 0, got 1.5$"),
    ("seed bool", _set(["seed"], True), r"seed: must be an integer >= 0, got true$"),
    ("duration zero", _set(["duration_ms"], 0), r"duration_ms: must be a positive number, got 0$"),
    ("duration negative", _set(["duration_ms"], -5), r"duration_ms: must be a positive number"),
    ("duration string", _set(["duration_ms"], "200"),
     r"duration_ms: must be a positive number, got '200'$"),
    ("duration rounds to 0", _set(["duration_ms"], 1e-7), r"duration_ms: 1e-07 rounds to 0 ns$"),
    ("objective not object", _set(["objective"], [150]),
     r"objective: must be an object, got an array$"),
    ("objective missing", _del(["objective", "latency_us"]),
     r"objective: missing required key 'latency_us'$"),
    ("latency zero", _set(["objective", "latency_us"], 0),
     r"objective.latency_us: must be a positive number, got 0$"),
    # nfs
    ("nfs not array", _set(["nfs"], {}), r"nfs: must be a non-empty array of NFs, got \{\}$"),
    ("nfs empty", _set(["nfs"], []), r"nfs: must be a non-empty array of NFs, got \[\]$"),
    ("nf not object", _set(["nfs", 1], "fw1"), r"nfs\[1\]: must be an object, got a string$"),
    ("nf missing batch", _del(["nfs", 1, "batch"]), r"nfs\[1\]: missing required key 'batch'$"),
    ("nf typo key", _set(["nfs", 2, "servce_ns"], 1),
     r"nfs\[2\]: unknown key 'servce_ns' \(did you mean 'service_ns'\?"),
    ("service zero", _set(["nfs", 1, "service_ns"], 0),
     r"nfs\[1\].service_ns: must be a positive number, got 0$"),
    ("service negative", _set(["nfs", 1, "service_ns"], -5),
     r"nfs\[1\].service_ns: must be a positive number, got -5$"),
    ("service string", _set(["nfs", 1, "service_ns"], "fast"),
     r"nfs\[1\].service_ns: must be a positive number, got 'fast'$"),
    ("service null", _set(["nfs", 1, "service_ns"], None),
     r"nfs\[1\].service_ns: must be a positive number, got null$"),
    ("batch zero", _set(["nfs", 0, "batch"], 0), r"nfs\[0\].batch: must be a positive integer, got 0$"),
    ("batch float", _set(["nfs", 0, "batch"], 32.0),
     r"nfs\[0\].batch: must be a positive integer, got 32.0$"),
    ("queue zero", _set(["nfs", 4, "queue"], 0), r"nfs\[4\].queue: must be a positive integer, got 0$"),
    ("queue bool", _set(["nfs", 4, "queue"], True), r"nfs\[4\].queue: must be a positive integer"),
    ("unknown type", _set(["nfs", 3, "type"], "natt"),
     r"nfs\[3\].type: unknown NF type 'natt' \(known: lb, firewall, nat, vpn, "),
    ("name source", _set(["nfs", 0, "name"], "source"),
     r"nfs\[0\].name: 'source' is reserved \(the chain's entry\)$"),
    ("name sink", _set(["nfs", 4, "name"], "sink"),
     r"nfs\[4\].name: 'sink' is reserved \(the chain's exit\)$"),
    ("duplicate name", _set(["nfs", 2, "name"], "fw1"),
     r"nfs\[2\].name: duplicate NF name 'fw1' \(first at nfs\[1\]\)$"),
    ("bad name", _set(["nfs", 2, "name"], "fw 2"),
     r"nfs\[2\].name: must be letters, digits, '_', '-' or '.' starting with a letter, "
     r"got 'fw 2'$"),
    # links
    ("links not array", _set(["links"], "source>lb"), r"links: must be a non-empty array"),
    ("links empty", _set(["links"], []), r"links: must be a non-empty array"),
    ("unknown NF in links", _set(["links", 3], ["fw1", "natt"]),
     rf"links\[3\]: unknown NF 'natt' \(known: {KNOWN}, source, sink\)$"),
    ("link not pair", _set(["links", 2], ["lb", "fw2", "nat"]),
     r"links\[2\]: must be a pair \[from, to\] of node names, got \[\"lb\", \"fw2\", \"nat\"\]$"),
    ("link not strings", _set(["links", 2], ["lb", 2]), r"links\[2\]: must be a pair"),
    ("link from sink", _links(["sink", "lb"]), r"links\[7\]: 'sink' cannot send"),
    ("link to source", _links(["vpn", "source"]), r"links\[7\]: 'source' cannot receive"),
    ("source to sink", _links(["source", "sink"]),
     r"links\[7\]: 'source' -> 'sink' would bypass every NF$"),
    ("self loop", _links(["nat", "nat"]), r"links\[7\]: cycle nat -> nat$"),
    ("duplicate link", _links(["fw1", "nat"]),
     r"links\[7\]: duplicate of links\[3\] \(fw1 -> nat\)$"),
    ("source without out-link", _links(drop=[["source", "lb"]]),
     r"links: 'source' has no out-link: no traffic would enter the chain$"),
    ("cycle", _links(["vpn", "fw1"]), r"links: cycle fw1 -> nat -> vpn -> fw1$"),
    ("unreachable", _links(drop=[["lb", "fw2"]]), r"links: NF 'fw2' is unreachable from 'source'$"),
    ("no path to sink", _links(drop=[["fw2", "nat"]]), r"links: NF 'fw2' has no path to 'sink'$"),
    # traffic
    ("traffic not object", _set(["traffic"], 1.2), r"traffic: must be an object, got a number$"),
    ("missing rate", _del(["traffic", "rate_mpps"]),
     r"traffic: missing required key 'rate_mpps'$"),
    ("missing flows", _del(["traffic", "flows"]), r"traffic: missing required key 'flows'$"),
    ("rate zero", _set(["traffic", "rate_mpps"], 0),
     r"traffic.rate_mpps: must be a positive number, got 0$"),
    ("flows zero", _set(["traffic", "flows"], 0),
     r"traffic.flows: must be a positive integer, got 0$"),
    ("flows float", _set(["traffic", "flows"], 4000.5), r"traffic.flows: must be a positive integer"),
    ("flow sizes", _set(["traffic", "flow_sizes"], "zipf"),
     r"traffic.flow_sizes: unknown flow size distribution 'zipf' \(known: pareto, constant\)$"),
    ("host bits", _set(["traffic", "src_prefix"], "10.0.0.1/8"),
     r"traffic.src_prefix: '10.0.0.1/8' has host bits set \(did you mean '10.0.0.0/8'\?\)$"),
    ("bad prefix", _set(["traffic", "dst_prefix"], "192.168.0.0/33"),
     r"traffic.dst_prefix: '192.168.0.0/33' is not an IPv4 prefix \(a.b.c.d/len\)$"),
    ("ipv6 prefix", _set(["traffic", "src_prefix"], "fd00::/8"),
     r"traffic.src_prefix: 'fd00::/8' is not an IPv4 prefix"),
    ("prefix not string", _set(["traffic", "src_prefix"], 10),
     r"traffic.src_prefix: must be an IPv4 prefix like '10.0.0.0/8', got 10$"),
    ("pareto shape", _set(["traffic", "pareto_shape"], 1),
     r"traffic.pareto_shape: must be a number > 1 \(a finite mean flow size\), got 1$"),
    ("tcp share", _set(["traffic", "tcp_share"], 1.5),
     r"traffic.tcp_share: must be a number in \[0, 1\], got 1.5$"),
    ("traffic typo", _set(["traffic", "rate_pps"], 1),
     r"traffic: unknown key 'rate_pps' \(did you mean 'rate_mpps'\?"),
    # faults
    ("faults not array", _set(["faults"], {}), r"faults: must be an array of faults, got an object$"),
    ("fault not object", _set(["faults", 0], "f1"), r"faults\[0\]: must be an object, got a string$"),
    ("fault missing kind", _fault(1, kind=None), r"faults\[1\]: missing required key 'kind'$"),
    ("unknown kind", _fault(1, kind="crash"),
     r"faults\[1\].kind: unknown fault kind 'crash' "
     r"\(known: interrupt, bug, burst, contention\)$"),
    ("fault missing id", _fault(0, id=None), r"faults\[0\]: missing required key 'id' "
                                             r"\(kind 'interrupt' needs id, kind, nf, at_ms, "
                                             r"duration_us\)$"),
    ("fault empty id", _fault(0, id=""), r"faults\[0\].id: must be a non-empty string"),
    ("duplicate fault id", _fault(2, id="f1"),
     r"faults\[2\].id: duplicate fault id 'f1' \(first at faults\[0\]\)$"),
    ("fault on unknown NF", _fault(0, nf="natt"),
     rf"faults\[0\].nf: unknown NF 'natt' \(known: {KNOWN}\)$"),
    ("fault on source", _fault(3, nf="source"), r"faults\[3\].nf: unknown NF 'source'"),
    ("interrupt missing duration", _fault(0, duration_us=None),
     r"faults\[0\]: missing required key 'duration_us' \(kind 'interrupt' needs "),
    ("bug missing flows", _fault(1, flows=None), r"faults\[1\]: missing required key 'flows'"),
    ("burst missing rate", _fault(2, rate_mpps=None),
     r"faults\[2\]: missing required key 'rate_mpps'"),
    ("contention missing share", _fault(3, share=None),
     r"faults\[3\]: missing required key 'share'"),
    ("key of another kind", _fault(0, slowdown=3),
     r"faults\[0\]: key 'slowdown' does not apply to kind 'interrupt' "
     r"\(its keys: id, kind, nf, at_ms, duration_us\)$"),
    ("burst with nf", _fault(2, nf="nat"), r"faults\[2\]: key 'nf' does not apply to kind 'burst'"),
    ("unknown fault key", _fault(1, slowdwn=3),
     r"faults\[1\]: unknown key 'slowdwn' \(did you mean 'slowdown'\?"),
    ("window past the end", _fault(0, at_ms=199.9),
     r"faults\[0\]: window 199.9-200.2 ms ends after the run \(duration_ms 200\)$"),
    ("to past the end", _fault(1, to_ms=201),
     r"faults\[1\]: window 80-201 ms ends after the run \(duration_ms 200\)$"),
    ("to before from", _fault(1, to_ms=60),
     r"faults\[1\].to_ms: must be a number > from_ms \(80\), got 60$"),
    ("to equals from", _fault(3, to_ms=20), r"faults\[3\].to_ms: must be a number > from_ms"),
    ("negative start", _fault(0, at_ms=-1), r"faults\[0\].at_ms: must be a number >= 0, got -1$"),
    ("negative from", _fault(3, from_ms=-1), r"faults\[3\].from_ms: must be a number >= 0"),
    ("zero duration", _fault(0, duration_us=0),
     r"faults\[0\].duration_us: must be a positive number, got 0$"),
    ("slowdown one", _fault(1, slowdown=1), r"faults\[1\].slowdown: must be a number > 1, got 1$"),
    ("slowdown below one", _fault(1, slowdown=0.5), r"faults\[1\].slowdown: must be a number > 1"),
    ("share zero", _fault(3, share=0), r"faults\[3\].share: must be a number in \(0, 1\], got 0$"),
    ("share above one", _fault(3, share=1.5), r"faults\[3\].share: must be a number in \(0, 1\]"),
    ("burst rate zero", _fault(2, rate_mpps=0),
     r"faults\[2\].rate_mpps: must be a positive number, got 0$"),
    ("fault flows host bits", _fault(1, flows="10.64.0.1/10"),
     r"faults\[1\].flows: '10.64.0.1/10' has host bits set \(did you mean '10.64.0.0/10'\?\)$"),
    ("burst flows bad", _fault(2, flows="10.2.3/24"),
     r"faults\[2\].flows: '10.2.3/24' is not an IPv4 prefix"),
    ("bug outside the traffic", _fault(1, flows="11.0.0.0/10"),
     r"faults\[1\].flows: 11.0.0.0/10 lies outside traffic.src_prefix 10.0.0.0/8: "
     r"the bug would never act$"),
]


@pytest.mark.parametrize("edit, message", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_each_rule_is_refused_in_one_line(edit, message):
    doc = example()
    edit(doc)
    with pytest.raises(ScenarioError, match="^" + message) as info:
        load_scenario(doc)
    assert "\n" not in str(info.value)


def test_host_bits_suggest_the_network():
    doc = example()
    doc["faults"][1]["flows"] = "10.1.2.3/10"
    with pytest.raises(ScenarioError, match=r"'10.1.2.3/10' has host bits set "
                                            r"\(did you mean '10.0.0.0/10'\?\)$"):
        load_scenario(doc)


def test_a_burst_may_come_from_outside_the_traffic_prefix():
    doc = example()
    doc["faults"][2]["flows"] = "172.16.0.0/12"
    assert str(load_scenario(doc).faults[2].flows) == "172.16.0.0/12"


def test_pareto_shape_with_constant_sizes_is_refused():
    doc = example()
    doc["traffic"].update(flow_sizes="constant", pareto_shape=1.5)
    with pytest.raises(ScenarioError, match=r"^traffic.pareto_shape: applies only to "
                                            r"flow_sizes 'pareto', not 'constant'$"):
        load_scenario(doc)


# --- files: the message names the file ------------------------------------------

def write(tmp_path, doc, name="fw-bug.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_the_message_names_the_file(tmp_path):
    doc = example()
    doc["links"][3] = ["fw1", "natt"]
    path = write(tmp_path, doc)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == (f"{path}: links[3]: unknown NF 'natt' "
                               f"(known: lb, fw1, fw2, nat, vpn, source, sink)")


def test_the_message_names_the_file_as_given(tmp_path, monkeypatch):
    doc = example()
    doc["links"][3] = ["fw1", "natt"]
    write(tmp_path, doc)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScenarioError, match=r"^fw-bug.json: links\[3\]: unknown NF 'natt'"):
        load_scenario("fw-bug.json")


def test_scenario_error_is_a_value_error_and_listed():
    assert issubclass(ScenarioError, ValueError) and issubclass(ScenarioError, MscopeError)
    assert "ScenarioError" in errors.__all__


@pytest.mark.parametrize("text, message", [
    ('{"name": "x",', r"line 1 column 14: not valid JSON: Expecting property name"),
    ('{"seed": 1, "seed": 2}', r"key 'seed' appears twice in one object"),
    ('{"duration_ms": NaN}', r"NaN is not a JSON number$"),
    ('[1, 2]', r"top level: must be an object, got an array$"),
], ids=["syntax", "duplicate key", "nan", "not an object"])
def test_unreadable_files_are_refused_in_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError, match="^" + re.escape(str(path)) + ": " + message):
        load_scenario(path)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(ScenarioError, match=r"nope.json: cannot read: No such file"):
        load_scenario(tmp_path / "nope.json")
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ScenarioError, match=r"bin.json: not UTF-8 text"):
        load_scenario(path)
    with pytest.raises(TypeError, match="path or a Mapping"):
        load_scenario(42)


# --- pcap ---------------------------------------------------------------------

def test_pcap_is_relative_to_the_scenario_file(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "day1.pcap").write_bytes(b"\xd4\xc3\xb2\xa1")
    doc = example()
    doc["traffic"] = {"pcap": "traces/day1.pcap"}
    sc = load_scenario(write(tmp_path, doc))
    assert sc.traffic.pcap == tmp_path / "traces" / "day1.pcap"
    assert sc.traffic.pcap.is_absolute()
    assert (sc.traffic.rate_pps, sc.traffic.flows) == (None, None)
    doc["traffic"].update(rate_mpps=0.5, flows=10)
    sc = load_scenario(write(tmp_path, doc))
    assert (sc.traffic.rate_pps, sc.traffic.flows) == (0.5e6, 10)


def test_a_missing_pcap_is_refused(tmp_path):
    doc = example()
    doc["traffic"]["pcap"] = "traces/none.pcap"
    path = write(tmp_path, doc)
    with pytest.raises(ScenarioError, match=(
            "^" + re.escape(f"{path}: traffic.pcap: no such file: "
                            f"{tmp_path / 'traces' / 'none.pcap'} (relative to the scenario file)")
            + "$")):
        load_scenario(path)
    doc["traffic"]["pcap"] = ""
    with pytest.raises(ScenarioError, match=r"traffic.pcap: must be a path string"):
        load_scenario(doc)


# --- topology, for any DAG ----------------------------------------------------

@st.composite
def dags(draw):
    """A random valid chain DAG: NFs in a hidden order, every NF fed from
    source or an earlier NF and feeding sink or a later one."""
    n = draw(st.integers(1, 8))
    hidden = [f"nf{i}" for i in range(n)]
    links = set()
    for i, name in enumerate(hidden):
        links.add((draw(st.sampled_from([SOURCE] + hidden[:i])), name))
        links.add((name, draw(st.sampled_from(hidden[i + 1:] + [SINK]))))
    for _ in range(draw(st.integers(0, 2 * n))):
        i, j = sorted(draw(st.lists(st.integers(0, n), min_size=2, max_size=2, unique=True)))
        links.add((hidden[i], hidden[j]) if j < n else (hidden[i], SINK))
    links = draw(st.permutations(sorted(links)))
    file_order = draw(st.permutations(hidden))
    doc = example()
    doc["nfs"] = [{"name": name, "type": "forwarder", "service_ns": 100, "batch": 32,
                   "queue": 64} for name in file_order]
    doc["links"] = [list(link) for link in links]
    doc["faults"] = []
    return doc, hidden


@settings(max_examples=150, deadline=None)
@given(dags())
def test_any_dag_loads_with_a_consistent_order(case):
    doc, hidden = case
    sc = load_scenario(doc)
    assert sorted(sc.topo_order) == sorted(hidden)
    position = {name: k for k, name in enumerate(sc.topo_order)}
    position[SOURCE], position[SINK] = -1, len(hidden)
    for src, dst in sc.links:
        assert position[src] < position[dst]
        assert dst in sc.out_links[src] and src in sc.in_links[dst]
    fed_by_source_only = [n for n in sc.topo_order if sc.in_links[n] == (SOURCE,)]
    first = [n for n in sc.topo_order if all(p == SOURCE for p in sc.in_links[n])]
    assert list(sc.topo_order[:len(first)]) == first == fed_by_source_only
    assert sum(len(v) for v in sc.out_links.values()) == len(sc.links)


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_any_back_link_is_a_cycle(case, data):
    doc, hidden = case
    if len(hidden) < 2:
        return
    i = data.draw(st.integers(1, len(hidden) - 1))
    j = data.draw(st.integers(0, i - 1))
    # a link each way between two NFs: a cycle of two, maybe among longer ones
    doc["links"].append([hidden[j], hidden[i]])
    doc["links"].append([hidden[i], hidden[j]])
    doc["links"] = [list(x) for x in dict.fromkeys(map(tuple, doc["links"]))]
    with pytest.raises(ScenarioError, match=r"^links: cycle ") as info:
        load_scenario(doc)
    cycle = str(info.value).removeprefix("links: cycle ").split(" -> ")
    assert cycle[0] == cycle[-1] and len(set(cycle)) == len(cycle) - 1
    links = set(map(tuple, doc["links"]))
    assert all((a, b) in links for a, b in zip(cycle, cycle[1:]))
