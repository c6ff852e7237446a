"""`mscope diagnose --from/--to`: a window of a capture, cut frame by frame
as it is decoded, diagnosed as a capture of its own; judged against the
simulator's truth."""
import json
import re

import numpy as np
import pytest

from mscope.capture import open_capture
from mscope.capture.rewrite import rewrite_capture
from mscope.cli import main
from mscope.diagnose import diagnose, format_summary
from mscope.errors import MscopeError
from mscope.sim.run import simulate_to_capture
from mscope.sim.scenario import load_scenario

#: fw stops 400 us at 5 ms, vpn 400 us at 15 ms: two windows, one fault each.
SCENARIO = {
    "name": "two-apart", "seed": 4, "duration_ms": 20, "objective": {"latency_us": 200},
    "nfs": [{"name": n, "type": "firewall", "service_ns": s, "batch": 32, "queue": 1024}
            for n, s in (("fw", 200), ("nat", 280), ("vpn", 420))],
    "links": [["source", "fw"], ["fw", "nat"], ["nat", "vpn"], ["vpn", "sink"]],
    "traffic": {"rate_mpps": 1.5, "flows": 2000, "flow_sizes": "pareto",
                "src_prefix": "100.0.0.0/8", "dst_prefix": "30.0.0.0/8"},
    "faults": [{"id": "s1", "kind": "interrupt", "nf": "fw", "at_ms": 5, "duration_us": 400},
               {"id": "s2", "kind": "interrupt", "nf": "vpn", "at_ms": 15,
                "duration_us": 400}]}

#: A live capture's clock counts from boot: the same records 1,000 s on.
BOOT_NS = 10**12


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """The scenario's capture with a live clock (times from BOOT_NS), and
    its truth: the packets each fault made victims."""
    d = tmp_path_factory.mktemp("window")
    spec = d / "two.json"
    spec.write_text(json.dumps(SCENARIO))
    simulate_to_capture(load_scenario(spec), d / "sim", log=lambda *a, **k: None)
    truth = json.loads((d / "sim" / "truth.json").read_text())

    def later(entry, recs, ids):
        recs["time_ns"] += BOOT_NS
        return recs, ids
    rewrite_capture(d / "sim", d / "live", records=later)
    assert open_capture(d / "live").manifest["time"]["clock"].startswith("CLOCK_MONOTONIC")
    return d / "live", {f["id"]: set(f["victims"]) for f in truth["faults"]}


def _first_ns(cap):
    """The capture's first record: what its summary (and a window) count from."""
    return int(open_capture(cap).read().records["time_ns"].min())


def _tops(diag):
    return {v["packet"]: v["culprits"][0] for v in diag["victims"] if v["culprits"]}


@pytest.mark.parametrize("window, mine, other, nf", [
    ((2, 10), "s1", "s2", "fw"), ((12, None), "s2", "s1", "vpn")])
def test_a_window_diagnoses_the_fault_inside_it(capture, window, mine, other, nf):
    cap, truth = capture
    diag, ctx = diagnose(cap, slo_us=200, window_ms=window)
    tops = _tops(diag)
    found = truth[mine] & set(tops)
    assert len(found) >= 0.95 * len(truth[mine]), (len(found), len(truth[mine]))
    right = sum(1 for p in found if tops[p] == {"kind": "nf", "nf": nf, "cause": "local",
                                                "score": tops[p]["score"]})
    assert right >= 0.95 * len(found), (right, len(found))
    assert not truth[other] & set(tops), "the other fault's victims are outside the window"
    assert {r["culprit"].get("nf") for r in diag["patterns"]} == {nf}
    base = _first_ns(cap)
    assert BOOT_NS <= base < BOOT_NS + 10**5
    lo = base + window[0] * 10**6
    hi = np.iinfo(np.int64).max if window[1] is None else base + window[1] * 10**6
    assert diag["window"] == {"from_ns": lo, "to_ns": None if window[1] is None else hi}
    assert all(lo <= t < hi for n in ctx["traj"].src_ns[ctx["traj"].src_ns >= 0][:1000]
               for t in [int(n)])


def test_a_windows_times_count_from_the_captures_first_record(capture):
    # the summary of the whole capture and of a window name fw's stop at
    # the same time: the window counts from the capture's first record,
    # as the user read it in the first summary
    cap, _ = capture

    def stop_ms(**kw):
        text = format_summary(*diagnose(cap, slo_us=200, **kw))
        m = re.search(r"fw stopped polling for [\d,]+ us at ([\d,.]+) ms", text)
        assert m, text
        return m.group(1)
    whole = stop_ms()
    assert stop_ms(window_ms=(4.5, 8)) == whole
    assert float(whole) == pytest.approx(5.0, abs=0.05)


def test_a_window_holds_what_it_cuts_not_the_capture(capture):
    cap, _ = capture
    whole, _ = diagnose(cap, slo_us=200)
    part, ctx = diagnose(cap, slo_us=200, window_ms=(2, 10))
    n_whole = len(whole["victims"])
    assert 0 < len(part["victims"]) < n_whole
    # the view held only the window's records: its NFs' times lie in it
    traj = ctx["traj"]
    t = traj.hop_rx_ns[traj.hop_rx_ns >= 0]
    base = _first_ns(cap)
    assert base + 2 * 10**6 <= t.min() and t.max() < base + 10 * 10**6


@pytest.mark.parametrize("args, message", [
    (["--from", "10", "--to", "5"], r"--from \(10 ms\) must come before --to \(5 ms\)"),
    (["--from", "500"], r"\(500\.000-end ms\): no packet records in that window \(--from/--to, "
                        r"in ms from the capture's first record\); `mscope capture info .*` says "
                        r"when its records begin and end$"),
    (["--to", "-1"], r"argument --to: '-1' is not a number >= 0"),
])
def test_bad_windows_are_one_line_errors(capture, capsys, args, message):
    cap, _ = capture
    with pytest.raises(SystemExit) if "argument" in message else _no_raise():
        rc = main(["diagnose", str(cap), *args])
        assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 or "argument" in message, err
    assert re.search(message, err[-1]), err


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_window_is_in_the_json(capture, tmp_path):
    cap, _ = capture
    out = tmp_path / "d.json"
    assert main(["diagnose", str(cap), "--slo-us", "200", "--from", "2", "--to", "10",
                 "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    base = _first_ns(cap)
    assert d["window"] == {"from_ns": base + 2 * 10**6, "to_ns": base + 10 * 10**6}
    with pytest.raises(MscopeError, match="must be ms >= 0"):
        diagnose(cap, window_ms=(float("nan"), 5))


def test_a_window_of_a_capture_with_a_repeated_chunk(capture, tmp_path):
    # a chunk written twice makes the stream feed ambiguous: the capture is
    # read with read_streams() and each stream cut after; the same NFs
    import shutil
    from test_capture import frame_table
    from test_ingest_paths import same_nf
    from mscope.analyzer.ingest import load
    cap, _ = capture
    twice = tmp_path / "twice"
    shutil.copytree(cap, twice)
    frames = frame_table(twice)
    seg, off, n, _ = frames[len(frames) // 2]
    last = frames[-1][0]
    last.write_bytes(last.read_bytes() + seg.read_bytes()[off:off + n])
    assert not open_capture(twice).stream_feed().unambiguous
    want = load(cap, window_ms=(2, 10))
    got = load(twice, window_ms=(2, 10))
    assert got.window_ns == want.window_ns and got.first_ns == want.first_ns
    for x, y in zip(got.nfs, want.nfs):
        same_nf(x, y)


def _stretched(src, out, times=200, chunk=400, lost=None, codec="zstd"):
    """Capture `src` written again with its times `times` times longer (a
    20 ms run made 4 s) in chunks of `chunk` records; `lost`: (stream
    name, from, to) records left out as a full ring loses them."""
    from captures import each_stream
    from mscope.capture import id_counts
    for w, sid, st, recs, ids in each_stream(src, out, codec):
        recs["time_ns"] = (recs["time_ns"] - recs["time_ns"][0]) * times + BOOT_NS
        recs["seq"] = np.arange(len(recs), dtype=np.uint64)
        off = np.r_[0, np.cumsum(id_counts(recs))]
        keep = np.ones(len(recs), bool)
        if lost and lost[0] == st["nf_name"]:
            keep &= ~((recs["time_ns"] >= lost[1]) & (recs["time_ns"] < lost[2]))
        dropped = 0
        for a in range(0, len(recs), chunk):
            b = min(a + chunk, len(recs))
            k = np.flatnonzero(keep[a:b]) + a
            dropped += (b - a) - len(k)
            if not len(k):
                continue
            r = recs[k]
            i = np.concatenate([ids[off[j]:off[j + 1]] for j in k])
            w.write_chunk(sid, r, i, first_seq=int(r["seq"][0]), drop_records=dropped,
                          final=b == len(recs))
    return out


def test_frames_far_from_the_window_are_not_decoded_and_change_nothing(capture, tmp_path,
                                                                        monkeypatch):
    # the run stretched to 4 s in frames of 400 records, fw's records of
    # 0.5-0.6 s lost: a 1 s window from 2.5 s decodes only the frames
    # within a second of it, and reads the same records and losses as
    # when every frame is decoded
    import mscope.capture.reader as reader
    from test_ingest_paths import same_nf
    from mscope.analyzer.ingest import load
    sim = capture[0].parent / "sim"
    cap = _stretched(sim, tmp_path / "long", lost=("fw", BOOT_NS + 500_000_000,
                                                    BOOT_NS + 600_000_000))
    decoded = []
    real = reader._decode
    monkeypatch.setattr(reader, "_decode",
                        lambda e, *a, **k: decoded.append(e.h.chunk_seq) or real(e, *a, **k))
    for window in ((2500, 3500), (400, 700)):
        decoded.clear()
        got = load(cap, window_ms=window)
        skipped = len(decoded)
        monkeypatch.setattr(reader, "WINDOW_SLACK_NS", 1 << 62)      # decode them all
        decoded.clear()
        want = load(cap, window_ms=window)
        monkeypatch.setattr(reader, "WINDOW_SLACK_NS", 10**9)
        assert skipped < 0.7 * len(decoded), (skipped, len(decoded))
        assert got.window_ns == want.window_ns and got.incomplete == want.incomplete
        for x, y in zip(got.nfs, want.nfs):
            same_nf(x, y)
    # the lost records touch the second window, not the first
    assert [w["nf"] for w in want.incomplete] == ["fw"]
    assert load(cap, window_ms=(2500, 3500)).incomplete == []


def test_a_damaged_frame_in_the_window_is_reported(capture, tmp_path):
    # a frame of the window whose first record's time was hit (a high bit,
    # in an uncompressed payload: the frame now seems to begin 2**61 ns
    # on): its checksum fails, so it is decoded, found damaged and said,
    # not skipped as lying after the window with its records gone unsaid
    from test_capture import frame_table
    from mscope.analyzer.ingest import load
    cap = _stretched(capture[0].parent / "sim", tmp_path / "long", codec="none")
    frames = [f for f in frame_table(cap) if f[3].n_records]
    seg, off, n, h = frames[len(frames) // 2]
    buf = bytearray(seg.read_bytes())
    first = int.from_bytes(buf[off + 80:off + 88], "little")
    buf[off + 87] ^= 0x20
    seg.write_bytes(bytes(buf))
    at_ms = (first - BOOT_NS) / 1e6
    view = load(cap, window_ms=(at_ms - 100, at_ms + 100))
    bad = [w for w in view.incomplete if w["kind"] == "corrupt"]
    assert bad and bad[0]["stream"] == h.stream, view.incomplete


def test_a_window_of_a_capture_without_frame_index_says_how_to_index_it(capture, tmp_path):
    # a capture from before the frame index: every frame is read for where
    # it lies, and the summary says what makes its windows cheap
    from test_capture import frame_table
    cap = _stretched(capture[0].parent / "sim", tmp_path / "long", chunk=100)
    frames = sum(1 for f in frame_table(cap) if f[3].n_records)
    assert frames >= 100

    def summary():
        d, ctx = diagnose(cap, slo_us=200, window_ms=(2500, 3500))
        return ctx["unindexed_frames"], format_summary(d, ctx)
    n, text = summary()
    assert n == 0 and "frame index" not in text
    for p in cap.glob("chunks-*.idx"):
        p.unlink()
    n, text = summary()
    assert n == frames
    assert f"frame index: {frames:,} frames have none, each read for where it lies; " \
           "`mscope capture index` on the capture writes it" in text
    assert main(["capture", "index", str(cap)]) == 0
    assert summary()[0] == 0


def test_the_summary_says_when_the_first_record_was_by_the_wall_clock(capture, tmp_path):
    # a live capture's times count from its host's boot; where its
    # collector wrote the host's CLOCK_REALTIME less CLOCK_MONOTONIC, the
    # summary says when, by that host's wall clock, its first record was
    # (what an operator matches against the logs); a window's too
    import shutil
    cap = tmp_path / "walled"
    shutil.copytree(capture[0], cap)
    first = _first_ns(cap)
    assert "wall clock" not in format_summary(*diagnose(cap, slo_us=200))
    man = json.loads((cap / "manifest.json").read_text())
    # the first record at 2025-11-27 22:00:00.000250 UTC
    man["hosts"][0]["realtime_offset_ns"] = 1_764_280_800 * 10**9 + 250_000 - first
    (cap / "manifest.json").write_text(json.dumps(man))
    for kw in ({}, {"window_ms": (2, 10)}):
        text = format_summary(*diagnose(cap, slo_us=200, **kw))
        assert f"times in ms from the capture's first record (CLOCK_MONOTONIC of host 0: " \
               f"{first / 1e6:,.3f} ms; 2025-11-27 22:00:00.000250 UTC by h's wall clock)" \
               in text, text
    # and capture info, its span
    from mscope.capture import describe, format_text
    info = format_text(describe(cap))
    assert "(span 19.99" in info and "; 2025-11-27 22:00:00 .. 2025-11-27 22:00:00 UTC by its " \
           "wall clock" in info, info
