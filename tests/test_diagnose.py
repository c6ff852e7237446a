"""mscope diagnose: attribution, patterns, JSON and CLI, on small simulated
captures with a known answer (the analyzer reads only the capture)."""
import json

import pytest

from mscope.capture import CaptureWriter
from mscope.cli import main
from mscope.diagnose import diagnose
from mscope.sim.run import simulate_to_capture
from mscope.sim.scenario import load_scenario


def _nf(name, service, queue=1024):
    return {"name": name, "type": "firewall", "service_ns": service, "batch": 32,
            "queue": queue}


def _capture(tmp_path, name, nfs, faults, rate=1.0, ms=20, slo=150):
    chain = [n["name"] for n in nfs]
    links = [["source", chain[0]]] + [[a, b] for a, b in zip(chain, chain[1:])] \
        + [[chain[-1], "sink"]]
    doc = {"name": name, "seed": 3, "duration_ms": ms, "objective": {"latency_us": slo},
           "nfs": nfs, "links": links,
           "traffic": {"rate_mpps": rate, "flows": 500, "flow_sizes": "pareto",
                       "src_prefix": "10.0.0.0/8", "dst_prefix": "192.168.0.0/16"},
           "faults": faults}
    f = tmp_path / f"{name}.json"
    f.write_text(json.dumps(doc))
    out = tmp_path / name
    simulate_to_capture(load_scenario(f), out, truth=False, log=lambda *a, **k: None)
    return out


def _tops(diag, nf=None):
    return [v["culprits"][0] if v["culprits"] else None
            for v in diag["victims"] if nf is None or v["nf"] == nf]


def _share(tops, pred):
    return sum(1 for c in tops if c is not None and pred(c)) / max(len(tops), 1)


@pytest.fixture(scope="module")
def stall(tmp_path_factory):
    d = tmp_path_factory.mktemp("stall")
    return _capture(d, "stall", [_nf("fw", 200), _nf("nat", 300)],
                    [{"id": "i1", "kind": "interrupt", "nf": "nat", "at_ms": 8,
                      "duration_us": 400}])


def test_single_stall_blames_the_nf_locally(stall):
    diag, _ = diagnose(stall, slo_us=150)
    tops = _tops(diag)
    assert len(tops) > 100
    assert _share(tops, lambda c: c == {"kind": "nf", "nf": "nat", "cause": "local",
                                        "score": c["score"]}) > 0.95


def test_stall_upstream_overflowing_downstream_blames_upstream(tmp_path):
    # a is fast; stopped 1 ms it builds ~1500 packets and releases them at its
    # peak (10 Mpps) into b (2.5 Mpps, queue 512): b drops and delays.
    cap = _capture(tmp_path, "cascade", [_nf("a", 100), _nf("b", 400, queue=512)],
                   [{"id": "i1", "kind": "interrupt", "nf": "a", "at_ms": 8,
                     "duration_us": 1000}], rate=1.5, slo=1500)
    diag, _ = diagnose(cap, slo_us=1500)
    at_b = _tops(diag, "b")
    assert len(at_b) > 100
    assert any(v["dropped"] for v in diag["victims"] if v["nf"] == "b")
    assert _share(at_b, lambda c: c["kind"] == "nf" and c["nf"] == "a"
                  and c["cause"] == "local") > 0.9


def test_source_burst_blames_flows(tmp_path):
    cap = _capture(tmp_path, "burst", [_nf("fw", 200), _nf("nat", 300)],
                   [{"id": "u1", "kind": "burst", "flows": "10.9.0.0/16", "at_ms": 8,
                     "duration_us": 1000, "rate_mpps": 3}])
    diag, _ = diagnose(cap, slo_us=150)
    tops = _tops(diag)
    assert len(tops) > 100
    assert _share(tops, lambda c: c["kind"] == "flows" and c["cause"] == "source") > 0.95
    assert diag["patterns"][0]["culprit"] == {"kind": "flows", "flows": "*",
                                              "cause": "source"}


def test_json_has_exactly_the_scenario_keys(stall, tmp_path):
    out = tmp_path / "d.json"
    assert main(["diagnose", str(stall), "--slo-us", "150", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert set(d) == {"victims", "patterns", "incomplete"}
    assert d["incomplete"] == []
    v = d["victims"][0]
    assert set(v) == {"packet", "nf", "latency_ns", "dropped", "culprits"}
    assert isinstance(v["packet"], int) and isinstance(v["dropped"], bool)
    for v in d["victims"]:
        sc = [c["score"] for c in v["culprits"]]
        assert sc == sorted(sc, reverse=True)
        for c in v["culprits"]:
            assert c["cause"] in ("local", "input", "source")
            if c["kind"] == "nf":
                assert set(c) == {"kind", "nf", "cause", "score"}
            else:
                assert c["kind"] == "flows" and set(c) == {"kind", "flows", "cause", "score"}
        if not v["dropped"]:
            assert v["latency_ns"] > 150_000
    assert d["patterns"]
    for p in d["patterns"]:
        assert set(p) == {"culprit", "victims", "score", "count"}
        assert set(p["victims"]) == {"nf", "flows"}


def test_no_victims_when_slo_is_loose(stall, capsys):
    diag, _ = diagnose(stall, slo_us=1e6)
    assert diag["victims"] == [] and diag["patterns"] == []
    assert main(["diagnose", str(stall), "--slo-us", "1000000"]) == 0
    assert "no victims" in capsys.readouterr().out


def _one_line_error(capsys, argv):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mscope: error:") and "\n" not in err
    return err


def test_cli_errors(tmp_path, stall, capsys):
    _one_line_error(capsys, ["diagnose", str(tmp_path)])              # not a capture
    with CaptureWriter(tmp_path / "empty") as w:
        w.add_stream(w.add_host("h"), 1, "fw")
    assert "no packet records" in _one_line_error(capsys, ["diagnose", str(tmp_path / "empty")])
    assert "--slo-us" in _one_line_error(capsys, ["diagnose", str(stall), "--slo-us", "0"])
    assert "--slo-us" in _one_line_error(capsys, ["diagnose", str(stall), "--slo-us", "-5"])


def test_help_has_example(capsys):
    with pytest.raises(SystemExit):
        main(["diagnose", "--help"])
    assert "example: mscope diagnose" in capsys.readouterr().out
