"""mscope-collect against real producer processes, real rings, real sockets."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from conftest import TESTS_C, recorder_sources
from producers import Producer, expected_counts
from mscope.capture import describe, open_capture
from mscope.record import IDLE_NS

COLLECT = [sys.executable, "-m", "mscope.collector.daemon"]
MSCOPE = [sys.executable, "-m", "mscope.cli"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A process we started, ended by us only, within bounded waits."""

    def __init__(self, argv, **kw):
        self.argv = argv
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, **kw)

    def wait(self, timeout=60):
        out, err = self.p.communicate(timeout=timeout)
        return self.p.returncode, out, err

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        return self.wait(timeout)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=10)


@pytest.fixture
def procs():
    started = []
    yield lambda argv, **kw: started.append(Proc(argv, **kw)) or started[-1]
    for p in started:
        p.kill()


def wait_for(cond, timeout=30, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


def attached(ring_path):
    """The collector has claimed this ring (it drains it from now on)."""
    from mscope.collector import RingReader
    with RingReader(ring_path, claim=False) as r:
        return r.state()["reader_pid"] != 0


def start_when_attached(*producers):
    for p in producers:
        assert wait_for(lambda: attached(p.path), timeout=30), "collector never attached"
        p.start()


def check_pattern(records, ids, max_batch):
    """The capture holds the producer's pattern exactly (see tests/producers.py)."""
    seq = records["seq"].astype(np.int64)
    counts = records["count"].astype(np.int64)
    assert (counts == expected_counts(records["seq"], max_batch)).all()
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    want = (np.repeat(seq.astype(np.uint64), counts) << np.uint64(16)) | (
        np.arange(counts.sum(), dtype=np.uint64) - starts.astype(np.uint64))
    assert np.array_equal(ids, want)
    assert (np.diff(records["time_ns"]) >= 0).all(), "time runs forward in a ring"


def test_collect_to_capture_exact(producer_exe, registry, tmp_path, procs):
    """N records from a producer process reach the capture whole: ids, order,
    monotonic time, and the ring file is removed once drained."""
    registry.mkdir()
    n, maxb = 300_000, 16
    cap = tmp_path / "cap"
    col = procs([*COLLECT, "--dir", str(registry), "--out", str(cap), "--exit-when-idle",
                 "--poll-us", "500"])
    prod = Producer(producer_exe, registry, n, maxb, rate=500_000, ring_bytes=1 << 23)
    start_when_attached(prod)
    assert prod.result() == (n, 0, 0)
    rc, out, err = col.wait(timeout=60)
    assert rc == 0, err
    data = open_capture(cap).read()
    assert len(data.records) == n
    assert data.losses == [] or all(l.n_records == 0 for l in data.losses)
    check_pattern(data.records, data.ids, maxb)
    assert not os.path.exists(prod.path), "a drained, closed ring is removed"
    assert "retired" in err
    with open("/proc/sys/kernel/random/boot_id") as f:      # which clock the times are
        assert [h["boot_id"] for h in open_capture(cap).manifest["hosts"]] == [f.read().strip()]
    # and where that clock lies in wall time (NTP's ms: where to look for a
    # window's packets on another host)
    [h] = open_capture(cap).manifest["hosts"]
    assert abs(h["realtime_offset_ns"] - (time.time_ns() - time.monotonic_ns())) < 10**8
    # every frame in the frame index, at its first record (the collector's
    # own time, not read back from the payload)
    s = describe(cap)
    assert s["indexed_chunks"] == s["chunks_with_records"] > 1 and s["index_wrong"] == 0


def test_several_rings_and_late_ring(producer_exe, registry, tmp_path, procs):
    registry.mkdir()
    cap = tmp_path / "cap"
    col = procs([*COLLECT, "--dir", str(registry), "--out", str(cap), "--exit-when-idle"])
    first = [Producer(producer_exe, registry, 50_000, 8, rate=200_000,
                      ring_bytes=1 << 22, name=f"nf{i}", nf_id=10 + i) for i in range(2)]
    start_when_attached(*first)
    late = Producer(producer_exe, registry, 30_000, 8, rate=1_000_000,
                    ring_bytes=1 << 22, name="late", nf_id=20)
    start_when_attached(late)
    for p in (*first, late):
        assert p.result()[1] == 0
    rc, out, err = col.wait(timeout=60)
    assert rc == 0, err
    data = open_capture(cap).read()
    names = {s["stream"]: s["nf_name"] for s in open_capture(cap).manifest["streams"]}
    assert {s["idle_ns"] for s in open_capture(cap).manifest["streams"]} == {IDLE_NS}
    per = {}
    for sid, name in names.items():
        sel = data.stream == sid
        recs = data.records[sel]
        lo = data.id_offsets[:-1][sel]
        hi = data.id_offsets[1:][sel]
        ids = np.concatenate([data.ids[a:b] for a, b in zip(lo, hi)]) if len(lo) else \
            np.empty(0, np.uint64)
        check_pattern(recs, ids, 8)
        per[name] = len(recs)
    assert per == {"nf0": 50_000, "nf1": 50_000, "late": 30_000}


def test_overload_drops_agree_exactly(producer_exe, registry, tmp_path, procs):
    """A producer far faster than a collector that polls slowly, on a tiny
    ring: the capture reports exactly the ring's drop counter."""
    registry.mkdir()
    n, maxb = 400_000, 32
    cap = tmp_path / "cap"
    col = procs([*COLLECT, "--dir", str(registry), "--out", str(cap), "--exit-when-idle",
                 "--poll-us", "5000", "--chunk-records", "512"])
    prod = Producer(producer_exe, registry, n, maxb, rate=0, ring_bytes=1 << 16)
    start_when_attached(prod)
    records, drop_records, drop_packets = prod.result()
    assert drop_records > 0
    rc, out, err = col.wait(timeout=60)
    assert rc == 0, err
    data = open_capture(cap).read()
    assert len(data.records) == records
    ring_lost = sum(l.n_records for l in data.losses if l.kind == "ring_drop")
    other = [l for l in data.losses if l.kind != "ring_drop" and l.n_records]
    assert ring_lost == drop_records
    assert other == []
    missing = np.setdiff1d(np.arange(n, dtype=np.uint64), data.records["seq"])
    assert len(missing) == drop_records
    assert expected_counts(missing, maxb).sum() == drop_packets
    check_pattern(data.records, data.ids, maxb)


def test_tsc_conversion_matches_clock_monotonic(cbuild, registry, tmp_path, procs):
    """The producer stamps CLOCK_MONOTONIC into each id just before the
    recorder reads the TSC: the capture's time_ns must agree within a few us."""
    exe = cbuild("clock_producer", [TESTS_C / "clock_producer.c", *recorder_sources()])
    registry.mkdir()
    cap = tmp_path / "cap"
    col = procs([*COLLECT, "--dir", str(registry), "--out", str(cap), "--exit-when-idle"])
    subprocess.run([str(exe), str(registry), "clk", "400", "2000"], check=True, timeout=60)
    rc, out, err = col.wait(timeout=60)
    assert rc == 0, err
    data = open_capture(cap).read()
    assert len(data.records) == 400
    err_ns = data.records["time_ns"].astype(np.int64) - data.ids.astype(np.int64)
    # The id is read before the TSC: time_ns is later, by well under 20 us
    # unless the clock is off.
    assert np.median(np.abs(err_ns)) < 5_000, np.median(err_ns)
    assert np.percentile(np.abs(err_ns), 99) < 20_000


def test_sigterm_flushes_what_was_drained(producer_exe, registry, tmp_path, procs):
    """A collector told to stop writes out its partial chunk: everything the
    producer wrote before is in the capture, and the live ring stays."""
    registry.mkdir()
    cap = tmp_path / "cap"
    prod = Producer(producer_exe, registry, 20_000, 4, rate=0, ring_bytes=1 << 22)
    prod.start()
    prod.result()
    col = procs([*COLLECT, "--dir", str(registry), "--out", str(cap), "--keep-rings",
                 "--flush-ms", "60000"])
    time.sleep(1.5)
    rc, out, err = col.stop(signal.SIGTERM)
    assert rc == 0, err
    data = open_capture(cap).read()
    assert len(data.records) == 20_000


@pytest.mark.parametrize("how, flush_ms", [("--out", 1000), ("--ship", 1000), ("--out", 1)])
def test_a_collector_stopped_while_its_nf_runs_says_until_when_it_recorded(
        how, flush_ms, producer_exe, registry, tmp_path, procs, receivers):
    """A collector stopped while the producer goes on writes, per stream,
    the time until which its records are whole (manifest
    recorded_until_ns; through the wire in its last message's meta).
    Checked by a second collector that drains the rest of the ring: its
    first record was stamped after that time, and the first one's last
    before it; and no record is lost between the two.  With chunks
    flushed every ms, the chunk being filled is empty as the stop comes:
    what the last drain took went into a chunk begun after the stop's
    clock reading, and was never written, before the stop cut with the
    time of its own last drain."""
    registry.mkdir()
    cap, rest = tmp_path / "cap", tmp_path / "rest"
    rcv = receivers(cap) if how == "--ship" else None
    col = procs([*COLLECT, "--dir", str(registry), how, rcv.endpoint if rcv else str(cap),
                 "--keep-rings", "--flush-ms", str(flush_ms)])
    prod = Producer(producer_exe, registry, 400_000, 4, rate=200_000, ring_bytes=1 << 24)
    start_when_attached(prod)
    time.sleep(1.0)
    rc, out, err = col.stop(signal.SIGTERM)
    assert rc == 0, err
    assert not prod.finished(), "the producer must still be writing"
    if rcv:
        assert rcv.stop() == 0
    (st,) = open_capture(cap).manifest["streams"]
    until = st["recorded_until_ns"]
    first = open_capture(cap).read().records["time_ns"]
    assert first[-1] <= until + 2_000_000
    col2 = procs([*COLLECT, "--dir", str(registry), "--out", str(rest), "--exit-when-idle"])
    assert prod.result()[1:] == (0, 0)
    rc, out, err = col2.wait(timeout=60)
    assert rc == 0, err
    later = open_capture(rest).read().records
    assert len(first) + len(later) == 400_000
    assert later["time_ns"][0] >= until, (later["time_ns"][0], until)
    assert "recorded_until_ns" not in open_capture(rest).manifest["streams"][0], \
        "a producer that finished needs none"


def test_metrics_endpoint_serves_counters(producer_exe, registry, tmp_path, procs):
    registry.mkdir()
    port = free_port()
    col = procs([*COLLECT, "--dir", str(registry), "--out", str(tmp_path / "cap"),
                 "--metrics-port", str(port), "--duration", "20"])
    prod = Producer(producer_exe, registry, 10_000, 4, rate=0, ring_bytes=1 << 22)
    start_when_attached(prod)
    prod.result()

    def scrape():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return r.read().decode()
        except OSError:
            return ""
    assert wait_for(lambda: 'mscope_collect_records{ring="' in scrape() and
                    " 10000.0" in scrape(), timeout=20)
    col.stop()


def test_conflicting_ring_is_refused_not_fatal(producer_exe, registry, tmp_path, procs):
    """Two NFs claiming one nf_id under different names: the second ring is
    refused with one line, the first is still collected."""
    registry.mkdir()
    cap = tmp_path / "cap"
    col = procs([*COLLECT, "--dir", str(registry), "--out", str(cap), "--exit-when-idle"])
    good = Producer(producer_exe, registry, 1000, 4, rate=0, ring_bytes=1 << 22,
                    name="fw", nf_id=3)
    start_when_attached(good)
    good.result()
    bad = Producer(producer_exe, registry, 10, 4, rate=0, ring_bytes=1 << 22,
                   name="nat", nf_id=3)
    bad.start()
    bad.result()
    rc, out, err = col.wait(timeout=60)
    assert rc == 0, err
    assert "not attaching nat" in err and "nf_id 3" in err
    assert len(open_capture(cap).read().records) == 1000


def test_bad_arguments_are_one_line_errors(tmp_path):
    for args, msg in ((["--dir", str(tmp_path)], "nothing to do"),
                      (["--dir", str(tmp_path), "--ship", "tcp://192.0.2.1:5555"],
                       "not on this host"),
                      (["--dir", str(tmp_path), "--ship", "tcp://127.0.0.1:1",
                        "--curve-server-key", "x"], "both")):
        proc = subprocess.run([*COLLECT, *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        assert msg in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --- through mscope receive: real collector, real receiver, real sockets ----

class Receiver:
    """`mscope receive` on a free loopback port, stderr to a file."""

    def __init__(self, tmp_path, out, *extra, endpoint="tcp://127.0.0.1:*", tag="r"):
        self.err = tmp_path / f"receive-{tag}.err"
        with open(self.err, "w") as err:
            self.p = subprocess.Popen([*MSCOPE, "receive", "--listen", endpoint, "--out",
                                       str(out), "--stats", "0", *extra],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=err)
        found = []

        def listening():
            m = [w for w in self.err.read_text().split() if w.startswith("tcp://")]
            found[:] = m
            return bool(m) or self.p.poll() is not None
        assert wait_for(listening, timeout=20), self.err.read_text()
        assert self.p.poll() is None, self.err.read_text()
        self.endpoint = found[0].rstrip(",")

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        return self.p.wait(timeout=30)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)


@pytest.fixture
def receivers(tmp_path):
    started = []
    yield lambda *a, **kw: started.append(Receiver(tmp_path, *a, **kw)) or started[-1]
    for r in started:
        r.kill()


def test_ring_to_capture_over_zeromq(producer_exe, registry, tmp_path, procs, receivers):
    """producer -> mscope-collect -> tcp://127.0.0.1 -> mscope receive: the
    capture holds exactly the N records, in order, with monotonic time."""
    registry.mkdir()
    n, maxb = 200_000, 16
    cap = tmp_path / "cap"
    rcv = receivers(cap)
    col = procs([*COLLECT, "--dir", str(registry), "--ship", rcv.endpoint,
                 "--exit-when-idle"])
    prod = Producer(producer_exe, registry, n, maxb, rate=400_000, ring_bytes=1 << 23)
    start_when_attached(prod)
    assert prod.result() == (n, 0, 0)
    rc, out, err = col.wait(timeout=60)
    assert rc == 0, err
    assert rcv.stop() == 0
    data = open_capture(cap).read()
    assert len(data.records) == n
    assert [l for l in data.losses if l.n_records] == []
    check_pattern(data.records, data.ids, maxb)
    st = open_capture(cap).manifest["streams"]
    assert len(st) == 1 and st[0]["nf_name"] == "prod"
    # the ring header's idle-poll interval, through the wire
    assert st[0]["idle_ns"] == IDLE_NS
    # and the host's boot (which CLOCK_MONOTONIC the times are)
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    assert [h.get("boot_id") for h in open_capture(cap).manifest["hosts"]] == [boot]
    [h] = open_capture(cap).manifest["hosts"]                  # through the wire too
    assert abs(h["realtime_offset_ns"] - (time.time_ns() - time.monotonic_ns())) < 10**8
    s = describe(cap)              # the receiver indexes what it writes
    assert s["indexed_chunks"] == s["chunks_with_records"] > 1 and s["index_wrong"] == 0


def test_receiver_killed_and_restarted(producer_exe, registry, tmp_path, procs, receivers):
    """The receiver dies mid-stream and comes back on the same port and
    capture.  The NF never waits; the capture holds every record that got
    through, and its losses account exactly for the rest."""
    registry.mkdir()
    n, maxb, rate = 600_000, 8, 200_000
    cap = tmp_path / "cap"
    first = receivers(cap, tag="first")
    col = procs([*COLLECT, "--dir", str(registry), "--ship", first.endpoint,
                 "--exit-when-idle", "--flush-ms", "50", "--chunk-records", "4096"])
    prod = Producer(producer_exe, registry, n, maxb, rate=rate, ring_bytes=1 << 23)
    start_when_attached(prod)
    t0 = time.monotonic()
    time.sleep(1.0)
    first.kill()                                   # SIGKILL: no goodbye
    time.sleep(0.5)
    second = receivers(cap, endpoint=first.endpoint, tag="second")
    records, drops, _ = prod.result()
    elapsed = time.monotonic() - t0
    assert (records, drops) == (n, 0), "the NF lost nothing while the receiver was away"
    assert elapsed < 2 * n / rate + 2, "the NF was not slowed down"
    rc, out, err = col.wait(timeout=60)
    assert rc == 0, err
    assert second.stop() == 0
    data = open_capture(cap).read()
    got = len(data.records)
    lost = [l for l in data.losses if l.n_records]
    assert all(l.n_records is not None for l in lost), lost
    assert got + sum(l.n_records for l in lost) == n, (got, lost)
    assert all(l.kind in ("gap", "truncated") for l in lost), lost
    check_pattern(data.records, data.ids, maxb)
    missing = np.setdiff1d(np.arange(n, dtype=np.uint64), data.records["seq"])
    assert len(missing) == n - got


def test_curve_refuses_unauthenticated_collector(producer_exe, registry, tmp_path, procs,
                                                 receivers):
    keys = tmp_path / "keys"
    for name in ("receiver", "good", "rogue"):
        subprocess.run([*MSCOPE, "keygen", str(keys / name), name], check=True, timeout=60)
    allow = tmp_path / "allow"
    allow.mkdir()
    (allow / "good.key").write_bytes((keys / "good" / "good.key").read_bytes())
    cap = tmp_path / "cap"
    rcv = receivers(cap, "--curve-secret-key", str(keys / "receiver" / "receiver.key_secret"),
                    "--curve-allow", str(allow))
    server_pub = str(keys / "receiver" / "receiver.key")

    def run_collector(name, *curve):
        reg = registry / name
        reg.mkdir(parents=True)
        col = procs([*COLLECT, "--dir", str(reg), "--ship", rcv.endpoint,
                     "--exit-when-idle", *curve])
        prod = Producer(producer_exe, reg, 5000, 4, rate=0, ring_bytes=1 << 22, name=name,
                        nf_id=len(name))
        start_when_attached(prod)
        prod.result()
        return col

    plain = run_collector("plain")
    rogue = run_collector("rogue", "--curve-server-key", server_pub, "--curve-secret-key",
                          str(keys / "rogue" / "rogue.key_secret"))
    good = run_collector("good", "--curve-server-key", server_pub, "--curve-secret-key",
                         str(keys / "good" / "good.key_secret"))
    rc, _, err = good.wait(timeout=60)
    assert rc == 0, err
    # The refused ones cannot hand their chunks over: they say so and exit 3.
    for col in (plain, rogue):
        rc, _, err = col.wait(timeout=60)
        assert rc == 3 and "could not be handed" in err, err
    assert rcv.stop() == 0
    manifest = open_capture(cap).manifest
    assert [s["nf_name"] for s in manifest["streams"]] == ["good"]
    assert len(open_capture(cap).read().records) == 5000


def test_ring_flags_map_to_capture_flags():
    from mscope.capture import CAPTURE_F_ADDR, CAPTURE_F_NOIDS, CAPTURE_F_REFUSED, CAPTURE_F_TX
    from mscope.collector.clock import TscClock
    from mscope.collector.stream import ring_records_to_capture
    from mscope.record import REC_F_ADDR, REC_F_NOIDS, REC_F_REFUSED, REC_F_TX, RING_RECORD_DTYPE
    r = np.zeros(6, RING_RECORD_DTYPE)
    r["flags"] = [0, REC_F_ADDR, REC_F_TX, REC_F_NOIDS, REC_F_NOIDS | REC_F_TX, REC_F_REFUSED]
    r["count"] = [1, 1, 2, 1024, 7, 2]
    r["occupancy"][5] = 17
    out = ring_records_to_capture(r, TscClock())
    assert out["flags"].tolist() == [0, CAPTURE_F_ADDR, CAPTURE_F_TX, CAPTURE_F_NOIDS,
                                     CAPTURE_F_NOIDS | CAPTURE_F_TX, CAPTURE_F_REFUSED]
    assert out["count"].tolist() == [1, 1, 2, 1024, 7, 2]
    assert out["occupancy"][5] == 17


def _ring_file(path, records):
    """A ring file (csrc/mscope_record.h) holding `records`: (flags, count)
    pairs, ids (seq << 16 | i) after each record that is not batch-only."""
    import struct
    from mscope.record import (REC_F_NOIDS, REC_MAGIC, REC_VERSION, RING_HDR_SIZE,
                               RING_MAGIC, RING_MIN_DATA, RING_VERSION)
    data = b""
    for seq, (flags, count) in enumerate(records):
        data += struct.pack("<HBBHHHHIQQ", REC_MAGIC, REC_VERSION, flags, 3, 0, 0, count,
                            0xFFFFFFFF, 1000 + seq, seq)
        if not flags & REC_F_NOIDS:
            data += struct.pack(f"<{count}Q", *((seq << 16) | i for i in range(count)))
    size = RING_MIN_DATA * 4
    assert len(data) <= size
    page = bytearray(RING_HDR_SIZE)
    struct.pack_into("<QIIQQiHHQQ", page, 0, RING_MAGIC, RING_VERSION, RING_HDR_SIZE, size,
                     0, os.getpid(), 3, 0, 0, 0)
    struct.pack_into("<QQQQI", page, 64, len(data), len(records), 0, 0, 2)
    path.write_bytes(bytes(page) + data.ljust(size, b"\0"))
    os.chmod(path, 0o600)
    return path


def test_stream_keeps_refused_words_in_the_id_block(tmp_path):
    """rx, refused, batch-only, refused, tx through RingReader and
    RingStream into one frame: the refused records keep flag 0x08 and
    count 2, their two words (packets refused, ns) where id_counts'
    cumulative sum puts them, and the frame passes the capture's check."""
    from mscope.capture.format import (CAPTURE_F_NOIDS, CAPTURE_F_REFUSED, CAPTURE_F_TX,
                                       decode_frame, id_counts, records_problem)
    from mscope.collector import RingReader
    from mscope.collector.clock import TscClock
    from mscope.collector.stream import RingStream
    from mscope.record import REC_F_NOIDS, REC_F_REFUSED, REC_F_TX
    kinds = [(0, 3), (REC_F_REFUSED, 2), (REC_F_NOIDS, 5), (REC_F_REFUSED, 2), (REC_F_TX, 2)]
    ring = _ring_file(tmp_path / "rf.0.1.ring", kinds)
    with RingReader(ring) as reader:
        st = RingStream(0, reader, chunk_records=1024, ids_per_record=8)
        while st.drain():
            pass
        assert st.records_drained == 5 and st.ids_drained == 9
        chunks = st.cut(TscClock(), 0.0, 0.0, final=True)
    (hdr, recs, ids), = [decode_frame(c.frame) for c in chunks if not c.final]
    assert hdr.n_ids == 9 and records_problem(recs, hdr.n_ids) is None
    assert recs["flags"].tolist() == [0, CAPTURE_F_REFUSED, CAPTURE_F_NOIDS, CAPTURE_F_REFUSED,
                                      CAPTURE_F_TX]
    assert recs["count"].tolist() == [3, 2, 5, 2, 2]
    at = np.concatenate([[0], np.cumsum(id_counts(recs))])
    assert [ids[at[i]:at[i + 1]].tolist() for i in (1, 3)] == [
        [1 << 16, (1 << 16) | 1], [3 << 16, (3 << 16) | 1]]


def test_stream_chunks_of_batch_only_records(tmp_path):
    """A batch-only ring becomes frames whose records keep their counts and
    whose n_ids is 0; a stream that has seen only batch-only records fills
    chunks with one record's worth of id room, and a record with ids
    after them still gets through whole."""
    from mscope.capture.format import CAPTURE_F_NOIDS, decode_frame, id_counts
    from mscope.collector import RingReader
    from mscope.collector.clock import TscClock
    from mscope.collector.stream import RingStream
    from mscope.record import MAX_BATCH, REC_F_NOIDS, REC_F_TX
    kinds = [(REC_F_NOIDS | (REC_F_TX if s % 2 else 0), 1 + (s * 7919) % MAX_BATCH)
             for s in range(3000)]
    kinds += [(0, 1000), (REC_F_NOIDS, 5), (REC_F_TX, 1000), (REC_F_TX, 30)]
    ring = _ring_file(tmp_path / "bo.0.1.ring", kinds)
    with RingReader(ring) as reader:
        st = RingStream(0, reader, chunk_records=1024, ids_per_record=8)
        while st.drain():
            pass
        assert st.records_drained == len(kinds) and st.ids_drained == 2030
        chunks = st.cut(TscClock(), 0.0, 0.0, final=True)
    frames = [decode_frame(c.frame) for c in chunks if not c.final]
    recs = np.concatenate([r for _, r, _ in frames])
    ids = np.concatenate([i for _, _, i in frames])
    assert recs["seq"].tolist() == list(range(len(kinds)))
    assert recs["count"].tolist() == [c for _, c in kinds]
    assert ((recs["flags"] & CAPTURE_F_NOIDS) != 0).tolist() == [
        bool(f & REC_F_NOIDS) for f, _ in kinds]
    assert [h.n_ids for h, _, _ in frames] == [int(id_counts(r).sum()) for _, r, _ in frames]
    assert ids.tolist() == ([(3000 << 16) | i for i in range(1000)]
                            + [(3002 << 16) | i for i in range(1000)]
                            + [(3003 << 16) | i for i in range(30)])
    # Chunks of 1024 records; the third, sized for one record's ids as the
    # ring looked batch-only, takes the first full record (1000 ids) and
    # the batch-only one after it, then is cut: no room for 1000 more ids.
    assert [(c.records, c.ids) for c in chunks if not c.final] == [
        (1024, 0), (1024, 0), (954, 1000), (2, 1030)]
