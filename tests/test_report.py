"""The diagnosis JSON as `mscope diagnose` writes it: streamed from the
attribution's arrays (mscope.diagnose.write_json, VictimList), byte for
byte what json.dump writes for the victims as dicts."""
import io
import json
import re

import numpy as np
import pytest

from mscope.analyzer.attribution import Attribution, CulpritScores, NFLabels, culprit_dict
from mscope.cli import main
from mscope.diagnose import VictimList, diagnose, format_summary, run_diagnose, write_json

from test_diagnose import _capture, _nf


def _dicts(att):
    """The victims as diagnose() made them before streaming: ranked_all."""
    return [{"packet": p, "nf": nf, "latency_ns": None if d else lat, "dropped": d,
             "culprits": c}
            for p, nf, lat, d, c in zip(att.packet_id.tolist(), list(att.nf),
                                        att.latency_ns.tolist(), att.dropped.tolist(),
                                        att.ranked_all())]


def _streamed(diag):
    f = io.BytesIO()
    write_json(diag, f)
    return f.getvalue()


def _att(scores, uncapped=None, ids=None, lat=None, dropped=None, nf=None, culprits=None):
    scores = np.asarray(scores, float)
    n, c = scores.shape
    return Attribution(
        packet=np.arange(n), packet_id=np.asarray(ids if ids is not None else
                                                  np.arange(n) * 7919 + 3, np.uint64),
        latency_ns=np.asarray(lat if lat is not None else np.full(n, 200_000), np.int64),
        dropped=np.asarray(dropped if dropped is not None else np.zeros(n, bool), bool),
        nf=nf if nf is not None else ["fw"] * n,
        culprits=culprits if culprits is not None else
        [("nf", f"nf{j}", "local") if j % 2 else ("flows", f"10.{j}.0.0/16", "source")
         for j in range(c)],
        scores=CulpritScores.from_dense(scores, uncapped))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    return _capture(d, "report", [_nf("fw", 200), _nf("nat", 300, queue=256)],
                    [{"id": "i1", "kind": "interrupt", "nf": "nat", "at_ms": 6,
                      "duration_us": 600},
                     {"id": "u1", "kind": "burst", "flows": "10.9.0.0/16", "at_ms": 12,
                      "duration_us": 500, "rate_mpps": 3}], ms=16)


def test_streamed_json_is_json_dump_of_the_dicts(small):
    diag, ctx = diagnose(small, slo_us=150)
    lazy, _ = diagnose(small, slo_us=150, lazy=True)
    assert isinstance(lazy["victims"], VictimList) and isinstance(diag["victims"], list)
    assert len(diag["victims"]) > 100 and any(v["dropped"] for v in diag["victims"])
    assert diag["victims"] == _dicts(ctx["attribution"])
    text = _streamed(lazy)
    assert text == json.dumps(diag).encode()
    assert json.loads(text) == diag
    assert _streamed(diag) == text                      # a plain dict goes through json


def test_cli_writes_what_diagnose_returns(small, tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main(["diagnose", str(small), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    diag, ctx = diagnose(small, slo_us=150)
    assert out.read_bytes() == json.dumps(diag).encode()
    # the same summary but the time it took (the first line's last figure)
    untimed = [re.sub(r", [\d.]+ s$", "", x, flags=re.M) for x in (printed.strip(),
                                                        format_summary(diag, ctx))]
    assert untimed[0].splitlines() == untimed[1].splitlines()


def test_cli_json_unwritable_is_one_line_error(small, tmp_path, capsys):
    assert main(["diagnose", str(small), "--json", str(tmp_path / "no" / "d.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mscope: error:") and "\n" not in err


def test_run_diagnose_times_every_stage(small, tmp_path):
    buf = io.StringIO()
    diag, ctx = run_diagnose(small, json_path=tmp_path / "d.json", file=buf, slo_us=150)
    names = [s["stage"] for s in ctx["stages"]]
    assert names == ["read", "topology", "trajectories", "queues", "attribution", "patterns",
                     "victims", "write", "summary"]
    assert all(s["seconds"] >= 0 for s in ctx["stages"])
    # CPU time and fresh pages per stage, for bench/analyze.py's table
    assert all(s["user_seconds"] >= 0 and s["system_seconds"] >= 0 and s["minor_faults"] >= 0
               for s in ctx["stages"])
    assert "victims" in buf.getvalue()
    assert json.loads((tmp_path / "d.json").read_text())["victims"] == list(diag["victims"])


def test_victim_list_is_a_sequence(small):
    full, _ = diagnose(small, slo_us=150)
    lazy, _ = diagnose(small, slo_us=150, lazy=True)
    v, ref = lazy["victims"], full["victims"]
    assert len(v) == len(ref) and v == ref and v.tolist() == ref and list(v) == ref
    assert v[0] == ref[0] and v[-1] == ref[-1] and v[3:9] == ref[3:9] and v[::7] == ref[::7]
    with pytest.raises(IndexError):
        v[len(v)]
    assert v != ref[:-1]


def _check(att, block=None):
    """Stream att's victims (in blocks of `block`) against json.dumps."""
    v = VictimList(att)
    ref = _dicts(att)
    if block is None:
        text = _streamed({"victims": v, "patterns": [], "incomplete": []})
        assert text == json.dumps({"victims": ref, "patterns": [], "incomplete": []}).encode()
    else:
        text = b"".join(bytes(x) for x in v.json_chunks(block=block))
        assert text == json.dumps(ref).encode()
    assert v.tolist() == ref


def test_scores_format_as_float_repr():
    rng = np.random.default_rng(5)
    vals = np.concatenate([
        [0.0004, 0.0005, 0.0006, 0.0015, 0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 9.999, 10.0,
         99.9995, 100.05, 123456.789, 999999.9999, 2.0 ** 40, 9.99e11, 1e12, 3.3e14,
         1e16, 1.5e20, np.inf],
        rng.random(300) * 10.0 ** rng.integers(-3, 13, 300)])
    att = _att(vals[:, None], nf=["fw"] * len(vals))
    _check(att)
    _check(att, block=7)


def test_ranking_ties_and_empty_rows():
    S = np.array([[0, 0, 0], [1, 1, 1], [2, 0, 2], [0.0002, 5, 0], [3, 3.0004, 3]])
    raw = np.array([[0, 0, 0], [1, 2, 1], [2, 0, 9], [0.0002, 5, 0], [3, 3.0004, 3]])
    att = _att(S, uncapped=raw)
    v = VictimList(att)
    assert [[c["score"] for c in x["culprits"]] for x in v] == \
        [[], [1.0, 1.0, 1.0], [2.0, 2.0], [5.0], [3.0, 3.0, 3.0]]
    # equal scores: the larger uncapped score first, then by column
    assert [c.get("nf", c.get("flows")) for c in v[1]["culprits"]] == \
        ["nf1", "10.0.0.0/16", "10.2.0.0/16"]
    assert [c.get("nf", c.get("flows")) for c in v[2]["culprits"]] == \
        ["10.2.0.0/16", "10.0.0.0/16"]
    _check(att)
    _check(att, block=2)


def test_packets_latencies_names():
    n = 6
    att = _att(np.ones((n, 2)), ids=[0, 1, 9, 10, 2**63, 2**64 - 1],
               lat=[-1, 150_001, 9_999_999_999_999, -1, -5, 0],
               dropped=[True, False, False, True, False, False],
               nf=["fw", 'q"uote', "b\\s", "ünï", "", "x" * 40],
               culprits=[("nf", "a/b\"c", "input"), ("flows", "*", "source")])
    _check(att)
    _check(att, block=1)


def test_no_victims_no_culprits():
    _check(_att(np.zeros((0, 3))))
    _check(_att(np.zeros((4, 0))))
    assert _streamed({"victims": VictimList(_att(np.zeros((0, 0)))), "patterns": [],
                      "incomplete": []}) == b'{"victims": [], "patterns": [], "incomplete": []}'


def test_ranking_is_ranked_alls_order():
    # the writer's ranking (ranked_arrays) is ranked_all's order
    rng = np.random.default_rng(2)
    S = np.round(rng.random((200, 7)) * (rng.random((200, 7)) > 0.6) * 50, 1)
    att = _att(S, uncapped=S + np.round(rng.random(S.shape), 1))
    ref = _dicts(att)
    assert VictimList(att).tolist() == ref
    assert culprit_dict(att.culprits[1], 2.0)["score"] == 2.0


def test_every_thousandth_formats_as_float_repr():
    # each of 0.000 .. 0.999 after integer parts of every width: the
    # trailing zeros dropped as repr drops them (.5, .05, .0)
    frac = np.arange(1000) / 1000
    vals = np.concatenate([frac + k for k in (0, 1, 7, 99, 12345, 2**40)])
    _check(_att(vals[:, None], nf=["fw"] * len(vals)), block=333)


def test_numbers_of_every_width_in_one_block():
    # one block mixing short numbers with a few wide ones
    rng = np.random.default_rng(11)
    n = 64
    S = np.round(rng.random((n, 3)) * 9, 3) * (rng.random((n, 3)) > 0.3)
    S[5, 1], S[40, 0], S[41, 2] = 123456789.5, 10000.0, 9999.999
    lat = rng.integers(0, 9_999, n)
    lat[[3, 30]] = [12_345_678_901, 10_000]
    drop = rng.random(n) > 0.8
    att = _att(S, ids=rng.integers(0, 2**64 - 1, n, dtype=np.uint64), lat=lat,
               dropped=drop, nf=[("fw", "nat", "vpn")[i % 3] for i in range(n)])
    _check(att)
    _check(att, block=5)
    _check(_att(S, ids=np.arange(n), lat=lat, dropped=drop))


def test_pattern_scores_are_the_dense_column_sums():
    from mscope.analyzer.patterns import find_patterns
    rng = np.random.default_rng(4)
    n, c = 500, 6
    S = np.round(rng.random((n, c)) * (rng.random((n, c)) > 0.5) * 100, 3)
    nf = [("fw", "nat")[i % 2] if i % 7 else "vpn" for i in range(n)]
    att = _att(S, nf=nf)
    rules = find_patterns(att, threshold=0.01)
    assert rules
    vnf = np.array(nf)
    for r in rules:
        key = (("nf", r["culprit"]["nf"], r["culprit"]["cause"]) if r["culprit"]["kind"] == "nf"
               else ("flows", r["culprit"]["flows"], r["culprit"]["cause"]))
        j = att.culprits.index(key)
        col = att.scores.column(j)[vnf == r["victims"]["nf"]]
        assert r["score"] == round(float(col.sum()), 3)
        assert r["count"] == int(np.sum((att.top() == j) & (vnf == r["victims"]["nf"])))


def test_nf_labels_read_as_the_list_of_names():
    names = ["vpn", "fw", "nat", "unused"]
    code = np.array([1, -1, 0, 1, 2, 2, -1, 0])
    want = ["fw", "", "vpn", "fw", "nat", "nat", "", "vpn"]
    labels = NFLabels(code, names)
    assert list(labels) == want and len(labels) == 8
    assert labels[2:6] == want[2:6] and labels[1] == "" and labels[-1] == "vpn"
    att, ref = (_att(np.ones((8, 2)), nf=nf) for nf in (labels, want))
    g, r = att.nf_groups(), ref.nf_groups()
    assert g[0] == r[0] == ["", "fw", "nat", "vpn"]
    assert g[1].tolist() == r[1].tolist() == [1, 0, 3, 1, 2, 2, 0, 3]
