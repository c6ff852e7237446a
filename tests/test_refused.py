"""Packets an NF's port refused at its input (refused records: the NIC's
imissed as the attach shim reads it): written by the simulator where the
shim would, kept apart from batches by ingest, and reported by the
diagnosis, checked against the drops the source's own records show."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from mscope.analyzer import load
from mscope.analyzer.ingest import from_capture_data
from mscope.capture import (CAPTURE_F_REFUSED, CAPTURE_RECORD_DTYPE, CaptureData,
                            CaptureFormatError, id_counts, open_capture)
from mscope.capture.format import records_problem
from mscope.capture.rewrite import rewrite_capture
from mscope.diagnose import diagnose, format_summary
from mscope.sim.engine import refused_readings
from mscope.sim.run import simulate_to_capture
from mscope.sim.scenario import load_scenario


def test_readings_every_ms_and_after_a_silence():
    # a busy NF: a batch every 10 us (its tx 5 us later) for 3 ms, but
    # none from 1.5 to 2.0 ms (stopped); 11 packets refused at 1.6-1.7 ms
    # and one at 2.5 ms.  Readings: 0 (where counting starts), 1.0 ms (1 ms
    # on), 2.0 ms (the poll that ends the silence), 3.0 ms (1 ms on).
    b_rx = np.array([t for t in range(0, 3_000_001, 10_000)
                     if not 1_500_000 < t < 2_000_000], np.int64)
    b_occ = np.arange(len(b_rx)) % 7
    refused = np.r_[np.linspace(1_600_000, 1_700_000, 11).astype(np.int64), 2_500_000]
    poll, t, packets, window, occ = refused_readings(b_rx, b_occ, [], b_rx + 5_000, refused)
    assert t.tolist() == [2_000_000, 3_000_000]
    assert packets.tolist() == [11, 1]
    assert window.tolist() == [1_000_000, 1_000_000]
    assert poll.tolist() == [int(np.searchsorted(b_rx, x)) for x in (2_000_000, 3_000_000)]
    assert occ.tolist() == b_occ[poll].tolist()
    # idle polls are polls too (occupancy 0), and one after a stop reads:
    # the refusals at 1.6 ms are read by the idle poll ending the stop
    b_rx2 = np.array([0, 10_000], np.int64)
    # (readings at 0, at 1.01 ms, the first poll 1 ms on; at 1.9 ms, the
    # stop's end; at 2.9 ms; the refusals after the last reading are not
    # read, as the shim's would not be before the NF polls again)
    idle = np.r_[np.arange(30_000, 1_500_000, 20_000), np.arange(1_900_000, 3_000_000, 20_000)]
    refused = np.r_[refused, 2_950_000]
    poll, t, packets, window, occ = refused_readings(b_rx2, [0, 0], idle, b_rx2 + 5_000,
                                                     refused)
    assert t.tolist() == [1_900_000, 2_900_000]
    assert packets.tolist() == [11, 1]
    assert window.tolist() == [1_900_000 - 1_010_000, 1_000_000]
    assert poll.tolist() == [-1 - int(np.searchsorted(idle, x)) for x in (1_900_000, 2_900_000)]
    assert occ.tolist() == [0, 0]
    # nothing refused: no records
    assert all(len(a) == 0 for a in refused_readings(b_rx, b_occ, [], b_rx, []))


CHAIN = {
    "name": "first-refuses", "seed": 3, "duration_ms": 40, "objective": {"latency_us": 200},
    "nfs": [{"name": "fw", "type": "firewall", "service_ns": 300, "batch": 32, "queue": 512},
            {"name": "nat", "type": "nat", "service_ns": 350, "batch": 32, "queue": 1024}],
    "links": [["source", "fw"], ["fw", "nat"], ["nat", "sink"]],
    "traffic": {"rate_mpps": 1.5, "flows": 2000, "flow_sizes": "pareto",
                "src_prefix": "10.0.0.0/8", "dst_prefix": "192.168.0.0/16"},
    "faults": [{"id": "i1", "kind": "interrupt", "nf": "fw", "at_ms": 10, "duration_us": 1500},
               {"id": "i2", "kind": "interrupt", "nf": "fw", "at_ms": 30.3,
                "duration_us": 800}]}


@pytest.fixture(scope="module")
def caps(tmp_path_factory):
    """The chain's capture (`full`), the same without its refused records
    (`plain`) and without its source's stream (`bare`)."""
    d = tmp_path_factory.mktemp("refused")
    spec = d / "first.json"
    spec.write_text(json.dumps(CHAIN))
    full, plain, bare = d / "full", d / "plain", d / "bare"
    simulate_to_capture(load_scenario(spec), full, truth=False, log=lambda *a, **k: None)

    def no_refused(st, recs, ids):
        keep = recs["flags"] != CAPTURE_F_REFUSED
        per = np.repeat(keep, id_counts(recs))
        return recs[keep], ids[per]
    rewrite_capture(full, plain, records=no_refused)
    rewrite_capture(full, bare, keep=lambda st: st["nf_name"] != "source")
    return {"full": full, "plain": plain, "bare": bare}


def _refused_records(cap):
    data = open_capture(cap).read()
    at = np.flatnonzero(data.records["flags"] & CAPTURE_F_REFUSED)
    words = np.array([data.ids_of(i) for i in at]).reshape(-1, 2)
    return data.records[at], words


def test_the_simulator_writes_what_the_ingress_queue_refused(caps):
    # the source's records say which packets never reached fw: the refused
    # records count exactly those, each within its window
    v = load(caps["plain"])
    src, fw = v.nf("source"), v.nf("fw")
    lost = np.isin(src.tx_ids, fw.rx_ids, invert=True)
    lost_ns = np.sort(src.tx_ns[lost])
    recs, words = _refused_records(caps["full"])
    assert len(recs) >= 2 and (recs["flags"] == CAPTURE_F_REFUSED).all()
    assert set(recs["nf_id"].tolist()) == {v.nf("fw").nf_id}    # the ingress NF only
    assert int(words[:, 0].sum()) == int(lost.sum()) > 1000
    t = recs["time_ns"].astype(np.int64)
    in_window = (np.searchsorted(lost_ns, t, "right")
                 - np.searchsorted(lost_ns, t - words[:, 1].astype(np.int64), "right"))
    assert in_window.tolist() == words[:, 0].astype(np.int64).tolist()
    # read at the first poll after each stall: within a few us of its end
    for f in CHAIN["faults"]:
        end = int((f["at_ms"] * 1000 + f["duration_us"]) * 1000)
        assert ((t >= end) & (t < end + 20_000)).any(), (end, t)


@pytest.mark.parametrize("compiled", [True, False])
def test_ingest_keeps_refused_records_apart(caps, compiled):
    a, b = load(caps["full"], compiled=compiled), load(caps["plain"], compiled=compiled)
    recs, words = _refused_records(caps["full"])
    for x, y in zip(a.nfs, b.nfs):
        for name in ("rx_ids", "rx_ns", "rx_batch", "batch_ns", "batch_occupancy", "tx_ids",
                     "tx_ns", "tx_port", "tx_batch", "idle_ns", "silences"):
            assert np.array_equal(getattr(x, name), getattr(y, name)), (x.name, name)
        assert len(y.refused) == 0
    r = a.nf("fw").refused
    assert r["time_ns"].tolist() == recs["time_ns"].tolist()
    assert r["packets"].tolist() == words[:, 0].tolist()
    assert r["window_ns"].tolist() == words[:, 1].tolist()
    assert (r["occupancy"] >= 0).all() and (r["port"] == 0).all()


def test_ingest_keeps_them_apart_for_records_out_of_stream_order(caps):
    # records of all streams in one time order: the view of the whole
    # capture (ingest's general path, as for an NF of several lcores)
    data = open_capture(caps["full"]).read()
    o = np.argsort(data.records["time_ns"], kind="stable")
    ids = np.concatenate([data.ids_of(i) for i in o])
    off = np.r_[0, np.cumsum(id_counts(data.records[o]))]
    mixed = CaptureData(data.records[o], data.stream[o], off, ids, data.losses,
                        data.stream_info)
    a, b = from_capture_data(mixed, path="mixed"), load(caps["plain"])
    for x, y in zip(a.nfs, b.nfs):
        for name in ("rx_ids", "rx_ns", "batch_ns", "batch_occupancy", "tx_ids", "idle_ns",
                     "silences"):
            assert np.array_equal(getattr(x, name), getattr(y, name)), (x.name, name)
    assert a.nf("fw").refused["packets"].tolist() == _refused_records(caps["full"])[1][:, 0].tolist()


def test_a_refused_record_must_be_alone_with_two_words():
    r = np.zeros(2, CAPTURE_RECORD_DTYPE)
    r["count"], r["flags"], r["seq"] = [3, 1], [0, CAPTURE_F_REFUSED], [0, 1]
    assert records_problem(r, 4) == ("record 1 (seq 1) is a refused record with flags 0x8 "
                                     "and 1 words (2 and no other flag)")
    r["count"][1], r["flags"][1] = 2, CAPTURE_F_REFUSED | 1
    assert "is a refused record with flags 0x9" in records_problem(r, 5)
    r["flags"][1] = CAPTURE_F_REFUSED
    assert records_problem(r, 5) is None
    # a CaptureData made by hand does not pass the reader's check: ingest's
    bad = r.copy()
    bad["count"][1] = 1
    data = CaptureData(bad, np.zeros(2, np.uint32), np.array([0, 3, 4]),
                       np.arange(4, dtype=np.uint64),
                       stream_info={0: {"nf_id": 1, "nf_name": "fw", "stream": 0}})
    with pytest.raises(CaptureFormatError, match=r"^hand: record seq 1 is a refused record "
                       r"with flags 0x8 and 1 words \(2 and no other flag\)$"):
        from_capture_data(data, path="hand")


def test_the_diagnosis_reports_them(caps):
    full, ctx = diagnose(caps["full"], slo_us=200)
    plain, _ = diagnose(caps["plain"], slo_us=200)
    refused = full.pop("refused")
    assert full == plain                                  # the victims, the rules: the same
    assert "refused" not in plain
    fw_drops = sum(v["dropped"] and v["nf"] == "fw" for v in full["victims"])
    assert sum(e["packets"] for e in refused) == fw_drops > 1000
    assert all(e["nf"] == "fw" and e["port"] == 0 and e["in_capture"] for e in refused)
    # one episode per stall, each spanning its stall's end
    assert len(refused) == 2
    for f in CHAIN["faults"]:
        end = int((f["at_ms"] * 1000 + f["duration_us"]) * 1000)
        assert any(e["from_ns"] < end <= e["to_ns"] < end + 20_000 for e in refused), refused
    text = format_summary(dict(full, refused=refused), ctx)
    assert re.search(r"refused at their input \(the NIC's imissed; among the victims as "
                     rf"drops\): fw {fw_drops:,} packets: [\d,]+ at [\d.]+-[\d.]+ ms \(fw "
                     r"(stopped polling for|took) 1,50\d us (over one batch )?at 9\.99\d ms\)", text), text


def test_without_the_source_they_are_the_only_trace(caps):
    diag, ctx = diagnose(caps["bare"], slo_us=200)
    assert not any(v["dropped"] for v in diag["victims"])   # no ids: no dropped victims
    lost = sum(e["packets"] for e in diag["refused"])
    assert lost == sum(e["packets"] for e in diagnose(caps["full"], slo_us=200)[0]["refused"])
    assert all(not e["in_capture"] for e in diag["refused"])
    text = format_summary(diag, ctx)
    assert "refused at their input (the NIC's imissed; in no other record, so not among " \
           f"the victims): fw {lost:,} packets" in text, text
    # the stall's rule takes them in, with its victims
    rule = next(line for line in text.splitlines() if line.startswith("  fw ")
                and "victims at fw" in line)
    assert f"victims at fw (+{lost:,} refused at its input, in no other record)" in rule, rule
    assert "what a full queue refused there is not in the capture" not in text


def test_capture_info_counts_them_apart_from_ids(caps):
    from mscope.capture import describe, format_text
    full, plain = describe(caps["full"]), describe(caps["plain"])
    recs, words = _refused_records(caps["full"])
    assert full["ids"] == plain["ids"]                    # their words are not packet ids
    assert full["refused_records"] == len(recs) and plain["refused_records"] == 0
    assert full["refused_packets"] == int(words[:, 0].sum())
    fw = next(r for r in full["streams"] if r["nf_name"] == "fw")
    assert fw["refused_packets"] == full["refused_packets"]
    assert (f"{len(recs)} refused records: {int(words[:, 0].sum()):,} packets refused at a "
            f"port's input") in format_text(full)


def test_refused_records_alone_are_no_packets(caps, tmp_path):
    def only_refused(st, recs, ids):
        keep = recs["flags"] == CAPTURE_F_REFUSED
        return recs[keep], ids[np.repeat(keep, id_counts(recs))]
    rewrite_capture(caps["full"], tmp_path / "only", records=only_refused)
    with pytest.raises(CaptureFormatError, match=r"only: capture holds no packet records$"):
        load(tmp_path / "only")


@pytest.mark.parametrize("what, change, says", [
    ("time before zero", {"time": -5}, r"fw: record seq \d+ has time -5 ns, before the clock's zero"),
    ("time a day on", {"time": 86_400 * 10**9},
     r"fw: record seq \d+ has time [\d,]+ ns, 24 h from another of the stream's"),
    ("time 2 s on", {"time": 2 * 10**9},       # the record after it is 2 s back
     r"fw: record seq \d+ has time [\d,]+ ns, 2\.0 s before the record before it"),
    ("window before zero", {"window": 2**63 - 1},
     r"record seq \d+ is a refused record of [\d,]+ packets in the [\d,]+ ns before [\d,]+ "
     r"ns, which reaches back before the clock's zero"),
    ("packets", {"packets": 2**40},
     r"record seq \d+ is a refused record of 1,099,511,627,776 packets .* which is more than "
     r"a port receives \(2 a ns\)"),
])
def test_a_corrupt_refused_record_is_a_one_line_error(caps, tmp_path, what, change, says):
    # their times were checked with no other record's, and their words not
    # at all: a corrupt one became an episode at a time or of a size no
    # port could have, in the summary
    def corrupt(st, recs, ids):
        at = np.flatnonzero(recs["flags"] & CAPTURE_F_REFUSED)
        if not len(at):
            return recs, ids
        i, ids = at[-1], ids.copy()
        first = int(np.cumsum(id_counts(recs))[i]) - 2
        if "time" in change:
            recs["time_ns"][i] = change["time"] if change["time"] < 0 else \
                recs["time_ns"][i] + change["time"]
        if "window" in change:
            ids[first + 1] = np.uint64(change["window"])
        if "packets" in change:
            ids[first] = np.uint64(change["packets"])
        return recs, ids
    out = tmp_path / "bad"
    rewrite_capture(caps["full"], out, records=corrupt)
    proc = subprocess.run([sys.executable, "-m", "mscope.cli", "diagnose", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and not proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert re.search(says, line), line
    assert line.startswith(f"mscope: error: {out}") and line.endswith(": a corrupt record")
