"""The `mscope` command as a user meets it: help, errors, the demo."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import requires_dpdk
from mscope.capture import CAPTURE_RECORD_DTYPE, CaptureWriter
from mscope.capture.rewrite import rewrite_capture

MSCOPE = [sys.executable, "-m", "mscope.cli"]


def run(*args, timeout=120):
    return subprocess.run([*MSCOPE, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("cmd", [["demo"], ["rings"], ["capture", "info"], ["paths"],
                                 ["collect"], ["receive"], ["keygen"], ["simulate"],
                                 ["attach"]])
def test_every_subcommand_has_help_with_an_example(cmd):
    proc = run(*cmd, "--help")
    assert proc.returncode == 0
    assert "example:" in proc.stdout


def test_no_command_prints_help():
    proc = run()
    assert proc.returncode == 2 and "COMMAND" in proc.stdout


def test_missing_capture_is_one_line_error(tmp_path):
    proc = run("capture", "info", str(tmp_path / "nope"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mscope: error:") and "nope" in lines[0]


def test_out_of_memory_is_one_line_error(tmp_path):
    # two NFs' records 20 hours apart: sound times (under a day), but the
    # analyzer's time bins over that span want more than a 4 GiB address
    # space allows -- the user reads how much, not a traceback
    import resource
    from test_ingest_paths import _times_capture
    hour = 3600 * 10**9
    cap = _times_capture(tmp_path / "cap", [10**6, 10**6 + 10, 20 * hour, 20 * hour + 10])

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    proc = subprocess.run([*MSCOPE, "diagnose", str(cap), "--slo-us", "100"],
                          capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mscope: error: out of memory: "), lines


def test_diagnose_json_is_written_whole_or_not_at_all(tmp_path):
    # a --json path that cannot be written is said before the diagnosis
    # (it came after: minutes of a long capture's work lost), and a
    # diagnosis that fails leaves an earlier JSON as it was, no part-file
    from mscope.sim.run import simulate_to_capture
    from mscope.sim.scenario import load_scenario
    from conftest import ROOT
    cap = tmp_path / "cap"
    simulate_to_capture(load_scenario(ROOT / "tests" / "scenarios" / "late-drops.json"), cap,
                        truth=False, log=lambda *a, **k: None)
    for where, says in ((tmp_path / "no" / "d.json", f"no directory {tmp_path / 'no'}"),
                        (tmp_path, "is a directory")):
        proc = run("diagnose", str(cap), "--json", str(where))
        assert proc.returncode == 1 and not proc.stdout
        assert proc.stderr.strip().splitlines() == [f"mscope: error: --json {where}: {says}"]
    out = tmp_path / "d.json"
    assert run("diagnose", str(cap), "--json", str(out)).returncode == 0
    whole = out.read_bytes()
    assert json.loads(whole)["victims"]
    proc = run("diagnose", str(cap), "--json", str(out), "--topology", str(tmp_path / "nope"))
    assert proc.returncode == 1 and out.read_bytes() == whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap", "d.json"]


def test_a_reader_that_goes_ends_the_output_quietly(tmp_path):
    # `mscope capture info CAP | head -1`: the pipe closes before mscope
    # writes; it stops without an error line or a traceback
    cap = tmp_path / "cap"
    with CaptureWriter(cap, producer="test") as w:
        s = w.add_stream(w.add_host("node1"), 1, "fw")
        recs = np.zeros(2, CAPTURE_RECORD_DTYPE)
        recs["time_ns"], recs["seq"], recs["count"] = [10, 20], [0, 1], 1
        w.write_chunk(s, recs, np.arange(2, dtype=np.uint64))
    proc = subprocess.Popen([*MSCOPE, "capture", "info", str(cap)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    try:
        err = proc.communicate(timeout=60)[1].decode()
    finally:
        proc.kill()
    assert proc.returncode == 141 and err == "", err


def test_capture_info_says_until_when_a_live_stream_was_recorded(tmp_path):
    # the column appears only where a stopped collector said it
    cap = tmp_path / "cap"
    with CaptureWriter(cap, producer="test") as w:
        h = w.add_host("node1")
        s0 = w.add_stream(h, 1, "fw", extra={"recorded_until_ns": 12_345})
        s1 = w.add_stream(h, 2, "nat")
        recs = np.zeros(2, CAPTURE_RECORD_DTYPE)
        recs["time_ns"], recs["seq"], recs["count"] = [10, 20], [0, 1], 1
        for s in (s0, s1):
            w.write_chunk(s, recs, np.arange(2, dtype=np.uint64))
    rows = json.loads(run("capture", "info", str(cap), "--json").stdout)["streams"]
    assert [r["recorded_until_ns"] for r in rows] == [12_345, None]
    table = run("capture", "info", str(cap)).stdout
    assert "recorded_until_ns" in table and "12345" in table


def test_capture_info_gives_each_hosts_span(tmp_path):
    # each host's clock counts from its own boot: the span across two
    # hosts (an hour here) says nothing, each host's does
    cap = tmp_path / "cap"
    with CaptureWriter(cap, producer="test") as w:
        recs = np.zeros(2, CAPTURE_RECORD_DTYPE)
        recs["seq"], recs["count"] = [0, 1], 1
        for name, t0 in (("a", 1_000), ("b", 3600 * 10**9)):
            s = w.add_stream(w.add_host(name), 1, "fw")
            recs["time_ns"] = [t0, t0 + 5_000_000]
            w.write_chunk(s, recs, np.arange(2, dtype=np.uint64))
    table = run("capture", "info", str(cap)).stdout
    assert "(span 3600.005 s) across hosts whose clocks count from their own boots" in table
    assert "host a: 1000 .. 5001000 ns (span 5.000 ms)" in table, table
    assert "host b: 3600000000000 .. 3600005000000 ns (span 5.000 ms)" in table, table


def test_capture_info_reports_losses(tmp_path):
    cap = tmp_path / "cap"
    with CaptureWriter(cap, producer="test") as w:
        h = w.add_host("node1", tsc_hz=2.6e9)
        s = w.add_stream(h, 1, "fw")
        recs = np.zeros(4, CAPTURE_RECORD_DTYPE)
        recs["time_ns"] = [10, 20, 30, 40]
        recs["seq"] = [0, 1, 5, 6]          # 2..4 lost to a full ring
        recs["count"] = 1
        w.write_chunk(s, recs, np.arange(4, dtype=np.uint64), drop_records=3,
                      drop_packets=3)
    proc = run("capture", "info", str(cap), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    text = json.dumps(summary)
    assert "ring_drop" in text
    table = run("capture", "info", str(cap)).stdout
    assert "fw" in table


def test_rings_lists_and_flags_unreadable(registry):
    registry.mkdir()
    (registry / "junk.1.1.ring").write_bytes(b"\0" * 100)
    proc = run("rings", str(registry))
    assert proc.returncode == 0
    assert "junk.1.1.ring" in proc.stdout and "unreadable" in proc.stdout


@requires_dpdk
def test_demo_runs_end_to_end(tmp_path):
    """The README's main job: a real DPDK chain with an injected stall,
    recorded through mscope-collect and mscope receive into a capture.  The
    packets the capture says never reached the NAT are exactly those the
    forwarder counted as refused by its full input queue."""
    out = tmp_path / "demo.json"
    proc = run("demo", "--seconds", "1.2", "--rate", "400000", "--stall-us", "4000",
               "--stall-every-ms", "500", "--json", str(out), "--keep", str(tmp_path / "cap"),
               timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    fwd = summary["forwarder"]
    assert fwd["stalls"] >= 2
    assert fwd["unsent"] > 0, "a 4 ms stall at 400 kpps overflows a 1024-packet queue"
    assert summary["nat_input_dropped"] == fwd["unsent"]
    assert summary["nat_queue_max"] >= 900
    assert summary["nat_queueing_ns"]["max"] >= 3_000_000
    cap = summary["capture"]
    streams = {s["nf_name"]: s for s in cap["streams"]}
    assert streams["demo-src"]["ids"] == fwd["generated"]
    assert streams["demo-nat"]["ids"] == fwd["received"] + fwd["forwarded"]
    assert all(s["final"] for s in streams.values())
    assert cap["losses"] == []
    assert "waited in nat's input queue" in proc.stdout
    # the recorded chain diagnosed: every injected stall is a silence in
    # nat's records (its idle polls stop), and nat is the culprit
    live = summary["diagnosis"]
    assert live["stalls_seen"] == [True] * fwd["stalls"], live["stalls_seen"]
    assert live["victims"] > 0
    top = live["top_culprits"][0]
    assert top["culprit"] == {"kind": "nf", "nf": "demo-nat", "cause": "local"}
    assert top["victims"] >= 0.9 * live["victims"], live["top_culprits"]
    assert re.search(r"demo-nat stopped .* ms \(.*no records", proc.stdout), proc.stdout
    # the same chain as if a NIC fed nat (no source records): its arrivals
    # from net_ring's occupancy in its rx records; the stalls' victims and
    # culprit as with the source (ingress drops are then unseen).  There
    # may be more: where the machine stopped the forwarder's one thread,
    # its source stopped too and then sent its backlog at once, while the
    # occupancy spreads those arrivals over the stop, as a NIC that kept
    # receiving would have had them
    from mscope.diagnose import diagnose
    rewrite_capture(tmp_path / "cap", tmp_path / "bare",
                    keep=lambda st: st["nf_name"] != "demo-src")
    diag, ctx = diagnose(tmp_path / "bare", slo_us=live["slo_us"])
    assert ctx["traj"].arrivals_estimated == {"demo-nat": fwd["received"]}
    late = [v for v in diag["victims"] if not v["dropped"]]
    with_source = live["victims"] - fwd["unsent"]
    assert len(late) >= 0.7 * with_source, (len(late), with_source)
    nat = sum(1 for v in late if v["culprits"][0]["kind"] == "nf"
              and v["culprits"][0]["nf"] == "demo-nat" and v["culprits"][0]["cause"] == "local")
    assert nat >= 0.9 * len(late)
