"""bench/rescore.py: kept scenarios diagnosed again and scored, each count
checked here against the truth and the diagnosis directly."""
import ipaddress
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from mscope.diagnose import diagnose
from mscope.sim.run import simulate_to_capture
from mscope.sim.scenario import load_scenario

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import rescore  # noqa: E402

DOC = {"name": "stall-and-burst", "seed": 11, "duration_ms": 20,
       "objective": {"latency_us": 120},
       "nfs": [{"name": "fw", "type": "firewall", "service_ns": 300, "batch": 32,
                "queue": 1024},
               {"name": "nat", "type": "nat", "service_ns": 450, "batch": 32, "queue": 1024}],
       "links": [["source", "fw"], ["fw", "nat"], ["nat", "sink"]],
       "traffic": {"rate_mpps": 1.6, "flows": 2000, "flow_sizes": "pareto",
                   "src_prefix": "10.0.0.0/8", "dst_prefix": "30.0.0.0/8"},
       "faults": [{"id": "i1", "kind": "interrupt", "nf": "nat", "at_ms": 8.0,
                   "duration_us": 300},
                  {"id": "u1", "kind": "burst", "flows": "77.1.2.0/24", "at_ms": 8.1,
                   "duration_us": 300, "rate_mpps": 2.0}]}


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """One kept scenario as bench/heldout.py --keep leaves it: NAME.json
    beside NAME/ (capture and truth.json)."""
    top = tmp_path_factory.mktemp("kept")
    spec = top / f"{DOC['name']}.json"
    spec.write_text(json.dumps(DOC))
    simulate_to_capture(load_scenario(spec), top / DOC["name"], truth=True,
                        log=lambda *a, **k: None)
    return top


def _right(fault, c):
    # SCENARIO.md's rule, spelled out here rather than taken from score()
    if c is None:
        return False
    if fault["kind"] == "burst":
        return c["kind"] == "flows" and c["cause"] == "source" and ipaddress.ip_network(
            c["flows"]).overlaps(ipaddress.ip_network(fault["flows"]))
    return c["kind"] == "nf" and c["nf"] == fault["nf"] and c["cause"] == "local"


def test_rescore_counts_what_the_truth_and_the_diagnosis_say(kept, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert rescore.main([str(kept), "--out", str(out), "-j", "1"]) == 0
    got = json.loads(out.read_text())[DOC["name"]]
    truth = json.loads((kept / DOC["name"] / "truth.json").read_text())
    diag, _ = diagnose(kept / DOC["name"], slo_us=120)
    top = {v["packet"]: (v["culprits"][0] if v["culprits"] else None) for v in diag["victims"]}
    times = Counter(p for f in truth["faults"] for p in f["victims"])
    spec = {f["id"]: f for f in DOC["faults"]}
    assert any(n > 1 for n in times.values())       # some victims both faults made
    for f in truth["faults"]:
        r = got[f["id"]]
        own = [p for p in f["victims"] if times[p] == 1]
        assert r["labelled"] == len(f["victims"]) > 0
        assert r["correct"] == sum(_right(spec[f["id"]], top.get(p)) for p in f["victims"])
        assert r["own"] == len(own) < r["labelled"]
        assert r["own_correct"] == sum(_right(spec[f["id"]], top.get(p)) for p in own)
    text = capsys.readouterr().out
    assert "overall" in text and "one fault alone" in text


def test_rescore_compares_with_an_earlier_result(kept, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert rescore.main([str(kept), "--out", str(out), "-j", "1"]) == 0
    old = json.loads(out.read_text())
    old[DOC["name"]]["i1"]["correct"] -= 7
    before = tmp_path / "before.json"
    before.write_text(json.dumps(old))
    capsys.readouterr()
    assert rescore.main([str(kept), "--compare", str(before), "-j", "1"]) == 0
    text = capsys.readouterr().out
    assert "net +7 labels" in text and f"{DOC['name']}" in text


def test_rescore_refuses_what_holds_no_kept_scenario(tmp_path, capsys):
    assert rescore.main([str(tmp_path / "none")]) == 2
    assert rescore.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("rescore: error:") for line in err)


def test_rescore_without_source_diagnoses_the_capture_beside_it(kept, tmp_path, capsys):
    from mscope.capture.rewrite import rewrite_capture
    top = tmp_path / "ws"
    top.mkdir()
    (top / f"{DOC['name']}.json").write_text(json.dumps(DOC))
    orig = kept / DOC["name"]
    (top / DOC["name"]).mkdir()
    (top / DOC["name"] / "truth.json").write_text((orig / "truth.json").read_text())
    # none beside it yet: nothing to rescore
    assert rescore.main([str(top), "--without-source", "-j", "1"]) == 2
    assert "without-source" in capsys.readouterr().err
    cap = top / f"{DOC['name']}-without-source"
    rewrite_capture(orig, cap, keep=lambda st: st["nf_name"] != "source")
    out = tmp_path / "r.json"
    assert rescore.main([str(top), "--without-source", "--out", str(out), "-j", "1"]) == 0
    got = json.loads(out.read_text())[DOC["name"]]
    truth = json.loads((orig / "truth.json").read_text())
    diag, _ = diagnose(cap, slo_us=120)
    top_c = {v["packet"]: (v["culprits"][0] if v["culprits"] else None)
             for v in diag["victims"]}
    spec = {f["id"]: f for f in DOC["faults"]}
    for f in truth["faults"]:
        assert got[f["id"]]["labelled"] == len(f["victims"])
        assert got[f["id"]]["correct"] == sum(_right(spec[f["id"]], top_c.get(p))
                                              for p in f["victims"])
    # and not the capture with the source's records, scored otherwise
    with_src = tmp_path / "with.json"
    assert rescore.main([str(kept), "--out", str(with_src), "-j", "1"]) == 0
    assert json.loads(with_src.read_text())[DOC["name"]] != got
