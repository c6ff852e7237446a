"""`mscope testbed run`: a scenario on live DPDK processes, recorded, with
window-labelled truth; the diagnosis of the capture names the injected
fault.  Errors: one line naming the cause, nonzero exit, nothing left
running."""
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import requires_dpdk
from test_nfs import hugepages, testbed_built  # noqa: F401  (fixtures)

pytestmark = [requires_dpdk, pytest.mark.usefixtures("hugepages", "testbed_built")]

#: The 3-NF chain of the issue: firewall -> nat -> monitor, nat stops for
#: 2 ms at 100 ms.  Run at --seconds-scale 10 (2 s of traffic, a 20 ms
#: stall, 5 ms objective): on these VMs an idle sleep costs ~25 us of CPU,
#: so real-time microsecond objectives are out of reach (docs/testbed.md).
CHAIN = {
    "name": "fw-nat-mon-stall", "seed": 3, "duration_ms": 200,
    "objective": {"latency_us": 500},
    "nfs": [{"name": "fw", "type": "firewall", "service_ns": 200, "batch": 32, "queue": 1024},
            {"name": "nat", "type": "nat", "service_ns": 300, "batch": 32, "queue": 1024},
            {"name": "mon", "type": "monitor", "service_ns": 200, "batch": 32, "queue": 1024}],
    "links": [["source", "fw"], ["fw", "nat"], ["nat", "mon"], ["mon", "sink"]],
    "traffic": {"rate_mpps": 0.2, "flows": 500},
    "faults": [{"id": "f1", "kind": "interrupt", "nf": "nat", "at_ms": 100,
                "duration_us": 2000}]}

#: Share of f1's window-labelled victims whose top culprit must be nat
#: (local).  Measured: 100% (307/307 and 331/331 in two runs, docs/testbed.md).
MIN_SHARE = 0.75


def _mscope(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "mscope.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def _my_children():
    """Live processes whose parent is this test process."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            status = (d / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(os.getpid()) and \
                not fields.get("State", "").startswith("Z"):
            out.append((d.name, fields.get("Name", "").strip()))
    return out


@pytest.fixture(scope="module")
def stall_run(request, tmp_path_factory):
    """CHAIN run live once, at --seconds-scale 10: (capture, its stdout)."""
    for name in ("hugepages", "testbed_built"):
        request.getfixturevalue(name)
    d = tmp_path_factory.mktemp("stall")
    spec = d / "chain.json"
    spec.write_text(json.dumps(CHAIN))
    cap = d / "live"
    proc = _mscope("testbed", "run", spec, "--out", cap, "--seconds-scale", 10)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cap, proc.stdout


def test_three_nf_chain_with_a_stall_is_recorded_labelled_and_diagnosed(stall_run):
    from mscope.diagnose import diagnose
    from mscope.sim.score import score

    cap, stdout = stall_run
    assert "fw-nat-mon-stall: 40,000 packets" in stdout, stdout
    assert (cap / "manifest.json").exists()
    truth = json.loads((cap / "truth.json").read_text())
    assert truth["labels"] == "window" and truth["objective"] == {"latency_us": 5000.0}
    assert truth["packets"] == 40_000
    (f1,) = truth["faults"]
    assert f1["id"] == "f1" and f1["nf"] == "nat"
    start, end = f1["window_ns"]
    assert end - start >= 20_000_000, "the window runs at least to the stall's end"
    # ~20 kpps into a 20 ms stall: ~400 queued, those of the first ~15 ms are late
    assert len(f1["victims"]) >= 100
    summary = json.loads((cap / "testbed.json").read_text())
    assert summary["reports"]["nat"]["interrupts"] == 1
    # Unexplained victims and source drops come from VM stalls (other load on
    # the machine): reported, not asserted (docs/testbed.md).
    print(f"unexplained victims {len(truth['victims_unexplained'])}, source drops "
          f"{summary['reports']['source']['drop_full']}")

    diag, ctx = diagnose(cap, slo_us=truth["objective"]["latency_us"])
    res = score(diag, truth)["f1"]
    share = res["correct"] / res["labelled"]
    print(f"f1: {res['correct']}/{res['labelled']} window-labelled victims with nat (local) "
          f"as top culprit ({share:.1%})")
    assert share >= MIN_SHARE, res
    # a live capture's clock counts from boot: the summary's times count
    # from its first record, and say so; the rules' times within its span
    from mscope.diagnose import format_summary
    text = format_summary(diag, ctx)
    assert "times in ms from the capture's first record (CLOCK_MONOTONIC" in text, text
    rules = text.split("top rules")[1].split("worst victims")[0].replace(",", "")
    times = [float(x) for x in re.findall(r"\b(\d+\.\d{3})\b", rules)]    # ms, 3 decimals
    assert times and all(0 <= x < 5000 for x in times), text               # a 2 s run
    # nat stalled 20 ms (2 ms x the time scale) while polling an empty
    # queue: its records show the silence (the summary names it unless a
    # rule for nat names a prefix, as live noise sometimes makes it do).
    # The VM deschedules an NF for a few ms at times (silences of 3-17 ms
    # seen in these runs): one next to the stall lengthens its silence
    quiet = np.diff(ctx["queues"]["nat"].silences, axis=1)
    assert ((quiet > 19_000_000) & (quiet < 40_000_000)).any(), sorted(quiet.ravel())[-5:]


def test_a_live_chain_over_two_hosts_is_aligned_by_its_packets(stall_run, tmp_path):
    # the live chain's records with nat's stream on a second host whose
    # clock reads an hour ahead (each host's CLOCK_MONOTONIC counts from
    # its boot): the packets crossing fw -> nat and nat -> mon bound the
    # hour from above and below by their shortest waits there (a few us
    # live), and the diagnosis is the one-host capture's
    from captures import on_two_hosts
    from mscope.diagnose import diagnose
    cap, _ = stall_run
    hour = 3600 * 10**9
    two = on_two_hosts(cap, tmp_path / "two", {"nat"}, hour)
    slo, links = 5000, str(cap / "topology.json")
    one, _ = diagnose(cap, slo_us=slo, topology=links)
    got, _ = diagnose(two, slo_us=slo, topology=links)
    (c,) = got["clocks"]
    assert c["links"] == [["fw", "nat"], ["nat", "mon"]] and c["packets"] >= 2 * 35_000
    # midway between the bounds: off by at most half their spread, itself
    # the two least waits (0.025 us off, 5.3 us apart, on a 15 s capture)
    assert abs(c["shift_ns"] - hour) <= c["spread_ns"] / 2 + 1 and c["spread_ns"] < 200_000, c
    def tops(d):
        return {v["packet"]: [(c["kind"], c.get("nf") or c.get("flows"), c["cause"])
                              for c in v["culprits"][:1]] for v in d["victims"]}
    assert len(tops(one)) > 100 and tops(got) == tops(one)
    # a window of it (from 1 s on, as the summary counts from the first
    # record): nat's part placed by the packets a recorded in the window's
    # first second, then by the clocks they align to; live, the one-host
    # capture's window, to within the alignment (where nat's record is
    # the capture's first, the window's start moves with it: 75 ns in one
    # run), and its victims, bar a few at its edge
    want, _ = diagnose(cap, slo_us=slo, topology=links, window_ms=(1000, None))
    win, _ = diagnose(two, slo_us=slo, topology=links, window_ms=(1000, None))
    (c,) = win["clocks"]
    assert abs(c["shift_ns"] - hour) <= c["spread_ns"] / 2 + 1, c
    assert abs(win["window"]["from_ns"] - want["window"]["from_ns"]) <= c["spread_ns"] / 2 + 1
    tw, tg = tops(want), tops(win)
    assert len(tw) > 100 and len(set(tw) ^ set(tg)) <= 0.02 * len(tw) + 2
    assert all(tw[p] == tg[p] for p in set(tw) & set(tg))
    # the chain split once (nat, mon and egress on b): its link found in
    # each host's records, no file needed; the shift over by nat's least
    # wait (a poll: a few us), no packet named dropped for it
    split = on_two_hosts(cap, tmp_path / "split", {"nat", "mon", "egress"}, hour)
    got, _ = diagnose(split, slo_us=slo)
    (c,) = got["clocks"]
    assert c["links"] == [["fw", "nat"]] and c["links_inferred"], c
    assert 0 <= c["shift_ns"] - hour < 100_000, c
    assert {v["packet"] for v in got["victims"]} == set(tops(one))


def test_a_recording_stopped_while_traffic_flows_names_no_false_drops(tmp_path):
    # A user's capture of a live chain ends while traffic flows:
    # mscope-collect, stopped, drains the rings one after the other, each
    # to a later time, and packets are in flight between NFs.  The chain
    # drops nothing here (the sink's dump holds every frame the source
    # sent), so no victim may be a drop; what was in flight is counted as
    # fate unknown.
    from mscope.diagnose import diagnose, format_summary
    from mscope.testbed import run_testbed
    from mscope.testbed.schedule import read_dump

    sc = dict(CHAIN, name="fw-nat-mon-cut", faults=[])
    out = tmp_path / "cut"
    run_testbed(sc, out, time_scale=10, dumps=True, record_ms=1000, log=lambda *a: None)
    assert not (out / "truth.json").exists(), "window labels need the whole run"
    sent, got = len(read_dump(out / "source.dump")), len(read_dump(out / "sink.dump"))
    assert sent == 40_000
    if got != sent:
        pytest.skip(f"the live chain itself dropped {sent - got} frames (a VM stall)")
    diag, ctx = diagnose(out, slo_us=5000)
    traj = ctx["traj"]
    # recorded for ~1 of the 2 s of traffic
    assert 5_000 < len(traj.packet_id) < 38_000, len(traj.packet_id)
    dropped = [v for v in diag["victims"] if v["dropped"]]
    assert not dropped, f"{len(dropped)} drops named, none happened: {dropped[:3]}"
    unknown = sum(e["packets"] for e in diag.get("fate_unknown", ()))
    print(f"{len(traj.packet_id):,} packets, fate unknown {unknown}: "
          + format_summary(diag, ctx).splitlines()[0])


def test_a_recording_stopped_while_a_queue_overflows_names_only_real_drops(tmp_path):
    # nat stops 100 ms twice (x10: 50 and 150 ms of the scenario), each
    # time its 1,024-slot ring overflows (fw counts what it could not
    # enqueue); the recording stops ~90 ms into the second stop, while fw
    # still drops.  The first stop's drops are named by FIFO order (nat
    # took packets sent after them), the second's by nat's queue: the
    # collector said nat was recorded until it stopped (nat wrote nothing
    # while stopped), and its rx records show the level its queue
    # dropped at.  No more are named than fw counted, and none that nat
    # received: those queued all through a stop waited over 100 ms, the
    # matching's window for ids seen more than once (they had been named
    # dropped, 3-52 a run, in runs recorded to their end as well)
    from mscope.diagnose import diagnose
    from mscope.testbed import run_testbed

    sc = dict(CHAIN, name="two-stalls-cut", faults=[
        {"id": f"f{k}", "kind": "interrupt", "nf": "nat", "at_ms": at, "duration_us": 10000}
        for k, at in ((1, 50), (2, 150))])
    out = tmp_path / "cut"
    s = run_testbed(sc, out, time_scale=10, record_ms=1590, log=lambda *a: None)
    real = sum(s["reports"]["fw"]["drop_full"])
    assert s["reports"]["nat"]["interrupts"] == 2 and real > 1500, s["reports"]
    diag, ctx = diagnose(out, slo_us=5000)
    traj = ctx["traj"]
    at_nat = traj.drop_nf == traj.nf_names.index("nat")
    named = int(at_nat.sum())
    assert named == sum(1 for v in diag["victims"] if v["dropped"] and v["nf"] == "nat")
    took = np.isin(traj.hop_packet, np.flatnonzero(at_nat), invert=True) & \
        (traj.hop_nf == traj.nf_names.index("nat")) & (traj.hop_rx >= 0)
    twice = int(np.isin(traj.packet_id[at_nat], traj.packet_id[traj.hop_packet[took]]).sum())
    assert twice == 0 and 0.9 * real <= named <= real, (named, twice, real)
    t = np.sort(traj.drop_ns[at_nat])
    assert t[-1] - t[0] > 800_000_000, "drops of both stops are named"
    # the second stop's drops are nat's too (its queue's accepted packets
    # have no fate, so the records show no queue: they had no culprit),
    # and the summary names both stops, 1 s apart
    from mscope.diagnose import format_summary
    assert not any(e["nf"] == "nat" and e["dropped_at_queue"] >= 20
                   for e in diag.get("unexplained", ())), diag["unexplained"]
    text = format_summary(diag, ctx)
    at = []
    for one, many in re.findall(r"nat stopped polling for [\d,]+ us at ([\d,.]+) ms|"
                                r"nat stopped \d+ times for [\d,-]+ us, at ([\d,. ]+) ms", text):
        at += [float(x.replace(",", "")) for x in
               ([one] if one else many.replace(", ", " ").split())]
    assert any(990 < b - a < 1010 for a in at for b in at), text
    # where the second one was on when the recording ended (nat silent to
    # when the collector stopped), that is said: the stop lasted longer
    # than the records show.  Not where nat polled again before the end
    ended = re.search(r"nat stopped .*(still stopped|the last still on) when the recording "
                      r"ended", text)
    q = ctx["queues"]["nat"]
    last = q.silences[-1] if len(q.silences) else None
    to_end = q.recorded_to_ns is not None
    assert not ended or to_end, text
    if to_end and last[1] - last[0] > 50_000_000:     # the second stop, cut short
        assert ended, text
    print(f"named {named} of the {real} drops fw counted ({twice} ids nat received); "
          f"fate unknown "
          f"{sum(e['packets'] for e in diag.get('fate_unknown', ()))}")


def test_a_firewall_rules_drops_are_no_ones_fault_and_said_so(tmp_path):
    # fw denies UDP from 10.0.0.0/9 (a quarter of the packets here): they
    # are dropped, so victims by SCENARIO.md, but no queue or stall made
    # them so.  The diagnosis says so, with the flows, rather than leave
    # thousands of drops unaccounted for
    import ipaddress
    from mscope.diagnose import diagnose, format_summary
    from mscope.testbed import run_testbed

    deny = "deny:udp:10.0.0.0/9:any:any:any"
    sc = dict(CHAIN, name="fw-denies", faults=[], traffic=dict(CHAIN["traffic"], tcp_share=0.5))
    out = tmp_path / "deny"
    s = run_testbed(sc, out, time_scale=10, nf_args={"fw": ["--rule", deny]},
                    log=lambda *a: None)
    denied = s["reports"]["fw"]["denied"]
    assert denied > 2000, s["reports"]["fw"]
    diag, ctx = diagnose(out, slo_us=5000)
    (fw,) = [e for e in diag["unexplained"] if e["nf"] == "fw"]
    # every packet fw took and did not send is dropped inside it: those its
    # rule denied and any other it dropped by its own choice (drop_nf: also
    # a frame that was not IPv4, or that no rule matched; one more than
    # denied in a clean clone's CI run)
    dropped = s["reports"]["fw"]["drop_nf"]
    assert denied <= dropped <= denied + 10, s["reports"]["fw"]
    # a VM hiccup at fw can give a few of them a wait to blame as well
    assert 0.9 * denied <= fw["dropped_inside"] <= dropped, (fw, denied)
    assert ipaddress.ip_network(fw["flows"]).subnet_of(ipaddress.ip_network("10.0.0.0/9"))
    inside = sum(1 for v in diag["victims"] if v["dropped"] and v["nf"] == "fw")
    assert inside == dropped
    text = format_summary(diag, ctx)
    assert f"{fw['dropped_inside']:,} dropped inside it, flows {fw['flows']}" in text, text
    assert "the NF's own choice" in text


def test_a_coarser_idle_poll_interval_still_shows_the_stall(tmp_path, monkeypatch):
    # MSCOPE_IDLE_US=200: an idle-poll record every 200 us at most, not 20
    # (a long quiet capture is mostly those).  The rings say it, the
    # manifest carries it, the analyzer's silences go by it: nat's 20 ms
    # stall is still a silence, and its victims still nat's
    from mscope.capture import open_capture
    from mscope.diagnose import diagnose
    from mscope.testbed import run_testbed

    out = tmp_path / "idle"
    monkeypatch.setenv("MSCOPE_IDLE_US", "200")
    run_testbed(CHAIN, out, time_scale=10, log=lambda *a: None)
    streams = json.loads((out / "manifest.json").read_text())["streams"]
    assert {st["idle_ns"] for st in streams if st["nf_name"] in ("fw", "nat", "mon")} == \
        {200_000}
    # and capture info shows it, where it is not the default
    from mscope.capture.info import describe, format_text
    table = format_text(describe(out)).splitlines()
    head = next(x for x in table if x.startswith("stream"))
    col = head.split().index("idle_us")
    nat = next(x for x in table if " nat(" in x)
    assert nat.split()[col] == "200", (head, nat)
    # an idle-poll record only where the stream wrote nothing for 200 us
    # (the NFs poll every 100 us: at 20 us every empty poll wrote one)
    data = open_capture(out).read()
    for st in streams:
        at = np.flatnonzero(data.stream == st["stream"])
        recs = data.records[at[np.argsort(data.records["seq"][at])]]
        idle = np.flatnonzero((recs["count"] == 0) & ((recs["flags"] & 7) == 0))
        idle = idle[idle > 0]
        gap = recs["time_ns"][idle] - recs["time_ns"][idle - 1]
        assert (gap < 190_000).sum() <= 0.01 * len(gap), (st["nf_name"], np.sort(gap)[:5])
    diag, ctx = diagnose(out, slo_us=5000)
    quiet = np.diff(ctx["queues"]["nat"].silences, axis=1)
    assert ((quiet > 19_000_000) & (quiet < 40_000_000)).any(), sorted(quiet.ravel())[-5:]
    nat = [v for v in diag["victims"] if v["culprits"]
           and v["culprits"][0].get("nf") == "nat" and v["culprits"][0]["cause"] == "local"]
    assert len(nat) >= 0.75 * len(diag["victims"]) > 0


def test_unknown_nf_type_is_one_line_and_starts_nothing(tmp_path):
    spec = dict(CHAIN, nfs=[dict(CHAIN["nfs"][0]), dict(CHAIN["nfs"][1], type="router"),
                            dict(CHAIN["nfs"][2])])
    path = tmp_path / "router.json"
    path.write_text(json.dumps(spec))
    proc = _mscope("testbed", "run", path, "--out", tmp_path / "o", timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "mscope: error: testbed: NF 'nat' has type 'router', which the testbed cannot run "
        "(it runs firewall, lb, monitor, nat, vpn)"]
    assert not (tmp_path / "o").exists()


def test_missing_hugepages_is_named():
    from mscope.errors import MscopeError
    from mscope.testbed import check_hugepages
    with pytest.raises(MscopeError, match=r"^testbed: \d+ MB of hugepages free, the chain "
                                          r"needs 1000000000 MB: echo 256 > "
                                          r"/proc/sys/vm/nr_hugepages"):
        check_hugepages(10**9)


def test_a_process_that_dies_is_named_and_everything_is_stopped(tmp_path):
    """mon refuses an option and exits at start: the run stops with its name
    and last error line, and leaves no process, ring or DPDK runtime dir."""
    from mscope.errors import MscopeError
    from mscope.testbed import run_testbed

    before = set(Path("/var/run/dpdk").iterdir()) if Path("/var/run/dpdk").is_dir() else set()
    with pytest.raises(MscopeError) as info:
        run_testbed(CHAIN, tmp_path / "o", time_scale=10, log=lambda *a: None,
                    nf_args={"mon": ["--monitor-flows", "1"]})
    msg = str(info.value)
    assert msg.startswith("testbed: NF 'mon' (monitor) exited before 'ready' (exit status 2): "
                          "mscope-nf: --monitor-flows must be >= 8"), msg
    assert "\n" not in msg
    assert _my_children() == []
    after = set(Path("/var/run/dpdk").iterdir()) if Path("/var/run/dpdk").is_dir() else set()
    assert not {p for p in after - before if p.name.startswith("mstb")}


def test_contention_and_burst_faults_are_injected(tmp_path):
    """contention: the hog takes 90% of the NF core for its window; burst:
    the source sends the named flows on top.  Both get windows in truth."""
    from mscope.analyzer import load
    from mscope.testbed import run_testbed

    sc = dict(CHAIN, name="contention-burst", faults=[
        {"id": "c1", "kind": "contention", "nf": "nat", "from_ms": 40, "to_ms": 60,
         "share": 0.1},
        {"id": "b1", "kind": "burst", "flows": "10.2.3.0/24", "at_ms": 120,
         "duration_us": 2000, "rate_mpps": 1.0}])
    summary = run_testbed(sc, tmp_path / "cap", time_scale=10, log=lambda *a: None)
    (hog,) = summary["hogs"]
    assert hog["periods"] >= 150 and hog["spun_ns"] > 150_000_000      # ~90% of 200 ms
    truth = json.loads((tmp_path / "cap" / "truth.json").read_text())
    c1, b1 = truth["faults"]
    assert c1["window_ns"][0] == summary["t0_ns"] + 400_000_000
    assert b1["flows"] == "10.2.3.0/24"
    # the burst's packets came from the named prefix, recorded at fw (fed by the source)
    fw = load(tmp_path / "cap").nf("fw")
    src = (fw.rx_addr >> 32).astype("int64")
    burst = (src >> 8) == (10 << 16 | 2 << 8 | 3)
    # (by fw's rx: its queue may hold the burst's tail a few ms past the
    # 20 ms the source sends it for, more when the VM stalls fw's thread)
    inside = (fw.rx_ns >= b1["window_ns"][0]) & (fw.rx_ns < b1["window_ns"][0] + 30_000_000)
    assert burst[inside].sum() > 5 * burst[~inside].sum()
    assert summary["truth"]["packets"] == 40_000 + 2_000                # + 1 Mpps x 2 ms
