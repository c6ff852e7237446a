"""The capture format: writer/reader round trip, and every kind of damage
reported as a loss (docs/capture-format.md)."""
import contextlib
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mscope.capture import (CAPTURE_RECORD_DTYPE, LOSS_KINDS, CaptureFormatError,
                            CaptureWriter, describe, format_text, open_capture)
from mscope.capture.format import (CODEC_NONE, CODEC_ZSTD, FRAME_HEADER_DTYPE,
                                   FRAME_HEADER_SIZE, FRAME_VERSION, FrameHeader,
                                   decode_frame, encode_frame, pack_frame_header,
                                   unpack_frame_header)


# --- helpers ---------------------------------------------------------------

def make_records(seqs, t0=0, counts=2, nf_id=1, tx=False):
    seqs = np.asarray(list(seqs), np.uint64)
    r = np.zeros(len(seqs), CAPTURE_RECORD_DTYPE)
    r["seq"] = seqs
    r["time_ns"] = t0 + 100 * np.arange(len(seqs))
    r["count"] = counts
    r["nf_id"] = nf_id
    r["flags"] = int(tx)
    r["occupancy"] = 0xFFFFFFFF
    return r


def ids_for(records, base):
    n = int(records["count"].sum())
    return np.arange(base, base + n, dtype=np.uint64)


class Written:
    """What a test capture holds, stream by stream, chunk by chunk."""

    def __init__(self):
        self.chunks = {}          # stream -> list of (records, ids)

    def add(self, stream, records, ids):
        self.chunks.setdefault(stream, []).append((records, ids))

    def records(self, stream, skip=()):
        parts = [r for k, (r, _) in enumerate(self.chunks[stream]) if k not in skip]
        return np.concatenate(parts) if parts else np.zeros(0, CAPTURE_RECORD_DTYPE)


def write_three_streams(path, codec="zstd", segment_bytes=64 << 20, close=True):
    """Three streams on two hosts, 6 chunks each, empty chunks included."""
    out = Written()
    w = CaptureWriter(path, producer="test", codec=codec, segment_bytes=segment_bytes)
    h0 = w.add_host("node1", tsc_hz=2.6e9)
    h1 = w.add_host("node2")
    streams = [w.add_stream(h0, 1, "src", lcore=0, pid=11, ring="/dev/shm/r0"),
               w.add_stream(h0, 2, "fw", lcore=1),
               w.add_stream(h1, 3, "nat", lcore=0)]
    base = 0
    next_seq = [0, 0, 0]
    for k in range(6):
        for s in streams:
            n = 0 if (k == 2 and s == 1) else 3 + s + k      # one empty chunk
            first = next_seq[s]
            next_seq[s] += n
            recs = make_records(range(first, first + n), t0=k * 10_000 + s * 10,
                                counts=(np.arange(n) % 4) + 1, nf_id=s + 1,
                                tx=bool(s % 2))
            ids = ids_for(recs, base)
            base += len(ids)
            w.write_chunk(s, recs, ids, first_seq=None if n else first,
                          drop_records=0, final=(k == 5 and s == 0))
            out.add(s, recs, ids)
    if close:
        w.close()
    return w, out


def frame_table(path):
    """(segment, offset, length, header) of every frame, in file order."""
    out = []
    for seg in sorted(Path(path).glob("chunks-*.msc")):
        buf = seg.read_bytes()
        pos = 0
        while pos < len(buf):
            h = unpack_frame_header(buf[pos:pos + FRAME_HEADER_SIZE])
            n = FRAME_HEADER_SIZE + h.payload_len
            out.append((seg, pos, n, h))
            pos += n
    return out


def cut_out(seg, off, length):
    buf = seg.read_bytes()
    seg.write_bytes(buf[:off] + buf[off + length:])


def stream_ids(data, s):
    sel = np.flatnonzero(data.stream == s)
    if not len(sel):
        return np.zeros(0, np.uint64)
    return data.ids[data.id_offsets[sel[0]]:data.id_offsets[sel[-1] + 1]]


# --- round trip --------------------------------------------------------------

@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_round_trip_three_streams(tmp_path, codec):
    cap = tmp_path / "cap"
    w, out = write_three_streams(cap, codec=codec, segment_bytes=700)
    segs = sorted(p.name for p in cap.glob("chunks-*.msc"))
    assert len(segs) > 3 and segs[0] == "chunks-000000.msc"
    assert segs == [f"chunks-{i:06d}.msc" for i in range(len(segs))]
    for seg in cap.glob("chunks-*.msc"):
        frames = [f for f in frame_table(cap) if f[0] == seg]
        # Rotation: a segment exceeds segment_bytes only with a lone frame.
        assert seg.stat().st_size <= 700 or len(frames) == 1

    data = open_capture(cap).read()
    assert data.losses == []
    assert data.incomplete_windows() == []
    expect = np.concatenate([out.records(s) for s in range(3)])
    np.testing.assert_array_equal(data.records, expect)
    assert data.records.dtype == CAPTURE_RECORD_DTYPE
    assert data.stream.dtype == np.uint32 and data.ids.dtype == np.uint64
    np.testing.assert_array_equal(
        data.stream, np.repeat([0, 1, 2], [len(out.records(s)) for s in range(3)]))
    all_ids = np.concatenate([i for s in range(3) for _, i in out.chunks[s]])
    np.testing.assert_array_equal(data.ids, all_ids)
    assert data.id_offsets[0] == 0 and data.id_offsets[-1] == len(data.ids)
    np.testing.assert_array_equal(np.diff(data.id_offsets), data.records["count"])
    r0 = out.chunks[0][0][0]
    c0, c1 = int(r0["count"][0]), int(r0["count"][1])
    np.testing.assert_array_equal(data.ids_of(1), out.chunks[0][0][1][c0:c0 + c1])

    st_ = w.stats
    assert st_.chunks == 18 and st_.records == len(expect) and st_.ids == len(all_ids)
    assert st_.raw_bytes == 32 * st_.records + 8 * st_.ids
    assert st_.stored_bytes == sum(p.stat().st_size for p in cap.glob("chunks-*.msc"))
    codec_id = {"none": 0, "zstd": 1, "lz4": 2}[codec]
    assert {f[3].codec for f in frame_table(cap)} == {codec_id}


def test_read_selected_streams(tmp_path):
    cap = tmp_path / "cap"
    _, out = write_three_streams(cap)
    data = open_capture(cap).read(streams=[2, 1])
    np.testing.assert_array_equal(data.records,
                                  np.concatenate([out.records(1), out.records(2)]))
    assert set(data.stream.tolist()) == {1, 2}
    with pytest.raises(ValueError, match=r"streams: 7 is not in .*manifest.json"):
        open_capture(cap).read(streams=[7])


def test_empty_capture_and_empty_chunks(tmp_path):
    cap = tmp_path / "cap"
    with CaptureWriter(cap) as w:
        s = w.add_stream(w.add_host("h"), 4, "idle")
        w.write_chunk(s, make_records([]), [])
        w.write_chunk(s, make_records([]), [], first_seq=0, final=True)
    data = open_capture(cap).read()
    assert len(data) == 0 and len(data.ids) == 0
    assert data.id_offsets.tolist() == [0] and data.losses == []
    assert [f[3].n_records for f in frame_table(cap)] == [0, 0]
    assert frame_table(cap)[-1][3].final


def test_permissions_and_manifest(tmp_path):
    cap = tmp_path / "cap"
    old = os.umask(0o077)       # the writer sets the documented modes anyway
    try:
        w, _ = write_three_streams(cap, close=False)
        w.set_manifest_entry("topology", {"links": [["src", "fw"]]})
        w.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(cap.stat().st_mode) == 0o750
    files = list(cap.iterdir())
    assert {p.name for p in files} >= {"manifest.json", "chunks-000000.msc"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p.name
    man = json.loads((cap / "manifest.json").read_text())
    assert man["format"] == "mscope-capture" and man["version"] == 1
    assert man["record_version"] == 1 and man["producer"] == "test"
    assert man["time"] == {"unit": "ns", "clock": "CLOCK_MONOTONIC of host 0"}
    assert man["hosts"] == [{"host": 0, "name": "node1", "tsc_hz": 2.6e9},
                            {"host": 1, "name": "node2", "tsc_hz": None}]
    assert man["nfs"][2] == {"nf_id": 3, "name": "nat", "host": 1}
    assert man["streams"][0] == {"stream": 0, "host": 0, "nf_id": 1, "nf_name": "src",
                                 "lcore": 0, "pid": 11, "ring": "/dev/shm/r0",
                                 "chunks_written": 6}
    assert man["topology"] == {"links": [["src", "fw"]]}
    assert open_capture(cap).manifest["topology"] == man["topology"]


def test_manifest_names_stream_before_its_first_frame(tmp_path):
    cap = tmp_path / "cap"
    w = CaptureWriter(cap)
    s = w.add_stream(w.add_host("h"), 1, "a")
    # Nothing written yet, the manifest already has the stream.
    assert open_capture(cap).streams[s]["nf_name"] == "a"
    w.write_chunk(s, make_records([0, 1]), np.arange(4, dtype=np.uint64))
    # A crash now (no close): the frame is on disk and readable.
    assert len(open_capture(cap).read()) == 2
    w.close()


# --- writer validation ---------------------------------------------------------

def test_writer_refuses_bad_input(tmp_path):
    cap = tmp_path / "cap"
    w = CaptureWriter(cap)
    s = w.add_stream(w.add_host("h"), 1, "a")
    good = make_records([5, 6])
    with pytest.raises(TypeError, match="records: must be an ndarray of CAPTURE_RECORD_DTYPE"):
        w.write_chunk(s, np.zeros(2, np.int64), [])
    with pytest.raises(ValueError, match="records: record counts sum to 4, the chunk holds 3 ids"):
        w.write_chunk(s, good, np.arange(3, dtype=np.uint64))
    with pytest.raises(ValueError, match="seq must increase strictly"):
        w.write_chunk(s, make_records([6, 6]), np.arange(4, dtype=np.uint64))
    with pytest.raises(ValueError, match=r"stream: 9 was not added"):
        w.write_chunk(9, good, np.arange(4, dtype=np.uint64))
    with pytest.raises(ValueError, match="first_seq: 4 is not the first record's seq 5"):
        w.write_chunk(s, good, np.arange(4, dtype=np.uint64), first_seq=4)
    with pytest.raises(TypeError, match="ids: must be unsigned integers"):
        w.write_chunk(s, good, np.zeros(4))
    w.write_chunk(s, good, np.arange(4, dtype=np.uint64), drop_records=3)
    with pytest.raises(ValueError, match="drop_records: cumulative counter cannot go from 3 to 1"):
        w.write_chunk(s, make_records([7]), np.arange(2, dtype=np.uint64), drop_records=1)
    with pytest.raises(ValueError, match="seq 6 is below next_seq 7"):
        w.write_chunk(s, make_records([6]), np.arange(2, dtype=np.uint64), drop_records=3)
    with pytest.raises(ValueError, match="nf_id: 1 is already 'a'"):
        w.add_stream(0, 1, "b")
    with pytest.raises(ValueError, match="host: 5 was not added"):
        w.add_stream(5, 2, "b")
    for hz in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="tsc_hz: .* is not a positive finite number"):
            w.add_host("h2", tsc_hz=hz)
    w.add_stream(w.add_host("h3", tsc_hz=2.5e9), 2, "b")     # the manifest still writes
    w.write_chunk(s, make_records([7]), np.arange(2, dtype=np.uint64), drop_records=3,
                  final=True)
    with pytest.raises(ValueError, match="already wrote its final chunk"):
        w.write_chunk(s, make_records([8]), np.arange(2, dtype=np.uint64), drop_records=3)
    w.close()
    with pytest.raises(ValueError, match="writer is closed"):
        w.write_chunk(s, make_records([8]), np.arange(2, dtype=np.uint64))
    assert [f[3].chunk_seq for f in frame_table(cap)] == [0, 1]


def test_writer_refuses_existing_directories(tmp_path):
    cap = tmp_path / "cap"
    write_three_streams(cap)
    with pytest.raises(FileExistsError, match="directory is not empty"):
        CaptureWriter(cap)
    with pytest.raises(FileExistsError, match="appending to a capture is not supported"):
        CaptureWriter(cap, exist_ok=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        CaptureWriter(tmp_path / "file")
    with pytest.raises(ValueError, match="codec: 'xz' is not one of"):
        CaptureWriter(tmp_path / "other", codec="xz")
    # exist_ok into a directory holding only the simulator's truth.json.
    sim = tmp_path / "sim"
    sim.mkdir()
    (sim / "truth.json").write_text("{}")
    with CaptureWriter(sim, exist_ok=True) as w:
        s = w.add_stream(w.add_host("h"), 1, "a")
        w.write_chunk(s, make_records([0]), np.arange(2, dtype=np.uint64))
    assert len(open_capture(sim).read()) == 1


def test_failed_write_leaves_a_cut_segment_and_moves_on(tmp_path, monkeypatch):
    import mscope.capture.writer as writer_mod
    cap = tmp_path / "cap"
    w = CaptureWriter(cap, codec="none")
    s = w.add_stream(w.add_host("h"), 1, "a")
    w.write_chunk(s, make_records([0, 1]), np.zeros(4, np.uint64))
    real = writer_mod._write_all

    def disk_full(fd, data):
        real(fd, data[:100])
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(writer_mod, "_write_all", disk_full)
    with pytest.raises(OSError):
        w.write_chunk(s, make_records([2, 3]), np.zeros(4, np.uint64))
    monkeypatch.setattr(writer_mod, "_write_all", real)
    w.write_chunk(s, make_records([2, 3]), np.zeros(4, np.uint64), final=True)
    w.close()
    assert sorted(p.name for p in cap.glob("*.msc")) == ["chunks-000000.msc",
                                                        "chunks-000001.msc"]
    data = open_capture(cap).read()
    assert data.records["seq"].tolist() == [0, 1, 2, 3]
    # The cut copy is damage that cost nothing: its chunk arrived whole later.
    [loss] = data.losses
    assert loss.n_records == 0 and loss.kind == "corrupt"
    assert "duplicate of chunk_seq 1" in loss.detail


def test_header_dtype_matches_struct_layout():
    h = FrameHeader(1, 2, 3, 1, 5, 6, 7, 1, 9, 10, 11, 12, 13, 14)
    row = np.frombuffer(pack_frame_header(h), FRAME_HEADER_DTYPE)[0]
    assert row["magic"] == b"MSCK"
    assert tuple(int(row[f]) for f in FrameHeader._fields) == tuple(h)
    assert int(row["header_crc32"]) == zlib.crc32(pack_frame_header(h)[:76])


def test_docstring_examples():
    import doctest
    import mscope.capture.format
    import mscope.capture.reader
    import mscope.capture.writer
    for mod in (mscope.capture.format, mscope.capture.reader, mscope.capture.writer):
        assert doctest.testmod(mod).failed == 0, mod.__name__


# --- truncation --------------------------------------------------------------

def _last_frame(cap):
    seg, off, n, h = frame_table(cap)[-1]
    return seg, off, n, h


@pytest.mark.parametrize("into", [1, 3, 11, 12, 40, 79, 80, 81, 120, -1])
@pytest.mark.parametrize("closed", [True, False])
def test_truncated_last_frame(tmp_path, into, closed):
    cap = tmp_path / "cap"
    _, out = write_three_streams(cap, codec="none")
    if not closed:
        # As after a crash: no chunks_written in the manifest.
        man = json.loads((cap / "manifest.json").read_text())
        for s in man["streams"]:
            del s["chunks_written"]
        (cap / "manifest.json").write_text(json.dumps(man))
    seg, off, n, h = _last_frame(cap)
    assert h.stream == 2 and h.chunk_seq == 5
    cut = off + (into if into > 0 else n + into)
    with open(seg, "r+b") as f:
        f.truncate(cut)
    data = open_capture(cap).read()
    for s in (0, 1):
        np.testing.assert_array_equal(data.records[data.stream == s], out.records(s))
    np.testing.assert_array_equal(data.records[data.stream == 2], out.records(2, skip={5}))
    # Without chunks_written, two streams (1 and 2) are open-ended: a cut
    # before the stream field (12 bytes) cannot be tied to either.
    if not closed and 0 < into < 12:
        [loss] = data.losses
        assert loss.stream is None and loss.kind == "truncated"
        assert loss.n_records is None and "may hold the end of stream(s) 1, 2" in loss.detail
        return
    [loss] = data.losses
    assert loss.stream == 2 and loss.kind == "truncated"
    assert loss.t_start_ns == int(out.records(2, skip={5})["time_ns"][-1])
    assert loss.t_end_ns is None
    assert loss.detail.startswith(f"{seg.name} at byte {off}: truncated")
    if into >= 80 or into < 0:        # the header is whole: exact loss
        assert (loss.first_seq, loss.n_records) == (h.first_seq, h.n_records)
    else:
        assert loss.first_seq == h.first_seq   # the previous chunk's next_seq
    [win] = data.incomplete_windows()
    assert win["stream"] == 2 and win["nf"] == "nat" and win["kind"] == "truncated"


def test_cut_at_frame_boundary_found_by_chunks_written(tmp_path):
    cap = tmp_path / "cap"
    _, out = write_three_streams(cap)
    seg, off, n, h = _last_frame(cap)
    with open(seg, "r+b") as f:
        f.truncate(off)
    data = open_capture(cap).read()
    [loss] = data.losses
    assert (loss.stream, loss.kind, loss.first_seq, loss.n_records) == (2, "gap", 35, None)
    assert "chunk_seq 5..5 missing at the end" in loss.detail


# --- gaps and ring drops ----------------------------------------------------------

def test_frame_removed_from_middle_is_a_gap(tmp_path):
    cap = tmp_path / "cap"
    _, out = write_three_streams(cap, codec="lz4")
    seg, off, n, h = [f for f in frame_table(cap) if f[3].stream == 1][3]
    cut_out(seg, off, n)
    data = open_capture(cap).read()
    np.testing.assert_array_equal(data.records[data.stream == 1], out.records(1, skip={3}))
    [loss] = data.losses
    assert (loss.stream, loss.kind) == (1, "gap")
    assert (loss.first_seq, loss.n_records) == (9, 7) == (h.first_seq, h.n_records)
    # chunk 2 was empty: the window runs from chunk 1's last record to chunk 4's first
    assert loss.t_start_ns == int(out.chunks[1][1][0]["time_ns"][-1])
    assert loss.t_end_ns == int(out.chunks[1][4][0]["time_ns"][0])
    assert "chunk_seq 3..3 missing (1 chunks, 7 records)" in loss.detail


def _drop_capture(cap, remove=None):
    """One stream with ring drops inside chunks, between chunks and at the end."""
    with CaptureWriter(cap, codec="zstd") as w:
        s = w.add_stream(w.add_host("h"), 1, "a")
        plan = [                       # (seqs, cumulative drop_records)
            ([0, 1, 2, 3], 0),
            ([4, 5, 9, 10, 11], 3),    # 6..8 dropped inside the chunk
            ([14, 15], 5),             # 12, 13 dropped between chunks
            ([16, 17, 20], 7),         # 18, 19 dropped
            ([21, 22], 7),
            ([25], 10),                # 23, 24 dropped; 26 after the last record
        ]
        for k, (seqs, drops) in enumerate(plan):
            w.write_chunk(s, make_records(seqs, t0=1000 * k), np.zeros(2 * len(seqs), np.uint64),
                          drop_records=drops, drop_packets=2 * drops,
                          final=k == len(plan) - 1)
    if remove is not None:
        seg, off, n, _ = frame_table(cap)[remove]
        cut_out(seg, off, n)
    return open_capture(cap).read()


def test_ring_drops_exact(tmp_path):
    data = _drop_capture(tmp_path / "cap")
    got = [(l.kind, l.first_seq, l.n_records, l.t_start_ns, l.t_end_ns) for l in data.losses]
    assert got == [
        ("ring_drop", 6, 3, 1100, 1200),
        ("ring_drop", 12, 2, 1400, 2000),
        ("ring_drop", 18, 2, 3100, 3200),
        ("ring_drop", 23, 2, 4100, 5000),
        ("ring_drop", 26, 1, 5000, None),
    ]
    assert sum(l.n_records for l in data.losses) == 10
    assert all(l.stream == 0 for l in data.losses)


def test_ring_drops_mixed_with_a_missing_chunk(tmp_path):
    # Chunk 3 (seqs 16, 17, 20; drops 18, 19) is lost in transport: of the
    # 5 seqs missing before chunk 4, the counter explains 2.  Which 2 is not
    # knowable; the reader puts the drops first.
    data = _drop_capture(tmp_path / "cap", remove=3)
    got = [(l.kind, l.first_seq, l.n_records) for l in data.losses]
    assert got == [("ring_drop", 6, 3), ("ring_drop", 12, 2),
                   ("ring_drop", 16, 2), ("gap", 18, 3),
                   ("ring_drop", 23, 2), ("ring_drop", 26, 1)]
    for loss in data.losses[2:4]:
        assert (loss.t_start_ns, loss.t_end_ns) == (2100, 4000)
    assert "chunk_seq 3..3 missing (1 chunks, 3 records)" in data.losses[3].detail


def test_unexplained_seq_gap_between_consecutive_chunks(tmp_path):
    cap = tmp_path / "cap"
    with CaptureWriter(cap) as w:
        s = w.add_stream(w.add_host("h"), 1, "a")
        w.write_chunk(s, make_records([0, 1]), np.zeros(4, np.uint64))
        w.write_chunk(s, make_records([5, 6]), np.zeros(4, np.uint64), drop_records=1)
    got = [(l.kind, l.first_seq, l.n_records) for l in open_capture(cap).read().losses]
    assert got == [("ring_drop", 2, 1), ("gap", 3, 2)]


# --- corruption -------------------------------------------------------------------

def _flip(path, at):
    buf = bytearray(path.read_bytes())
    buf[at] ^= 0x5A
    path.write_bytes(bytes(buf))


def test_corrupt_payload_crc(tmp_path):
    cap = tmp_path / "cap"
    _, out = write_three_streams(cap, codec="zstd")
    seg, off, n, h = [f for f in frame_table(cap) if f[3].stream == 0][2]
    _flip(seg, off + FRAME_HEADER_SIZE + 3)
    data = open_capture(cap).read()
    np.testing.assert_array_equal(data.records[data.stream == 0], out.records(0, skip={2}))
    assert len(data.records) == sum(len(out.records(s)) for s in range(3)) - h.n_records
    [loss] = data.losses
    assert (loss.stream, loss.kind, loss.first_seq, loss.n_records) == (0, "corrupt", 7, 5)
    assert loss.detail == f"{seg.name} at byte {off}: payload crc32 mismatch"
    assert loss.t_start_ns == int(out.chunks[0][1][0]["time_ns"][-1])
    assert loss.t_end_ns == int(out.chunks[0][3][0]["time_ns"][0])


def test_corrupt_header_resyncs_and_is_tied_to_the_gap(tmp_path):
    cap = tmp_path / "cap"
    _, out = write_three_streams(cap, codec="none")
    seg, off, n, h = [f for f in frame_table(cap) if f[3].stream == 2][1]
    _flip(seg, off + 30)
    data = open_capture(cap).read()
    np.testing.assert_array_equal(data.records[data.stream == 2], out.records(2, skip={1}))
    [loss] = data.losses
    assert (loss.stream, loss.kind, loss.first_seq, loss.n_records) == (2, "corrupt", 5, 6)
    assert loss.detail.startswith(
        f"{seg.name} at byte {off}: frame header crc32 mismatch; skipped {n} bytes")


def test_garbage_in_the_middle_loses_nothing(tmp_path):
    cap = tmp_path / "cap"
    _, out = write_three_streams(cap)
    seg, off, n, h = frame_table(cap)[7]
    buf = seg.read_bytes()
    junk = b"MSCK" + bytes(range(200))       # even a fake magic
    seg.write_bytes(buf[:off] + junk + buf[off:])
    data = open_capture(cap).read()
    assert len(data.records) == sum(len(out.records(s)) for s in range(3))
    [loss] = data.losses
    assert (loss.stream, loss.kind, loss.n_records) == (None, "corrupt", 0)
    assert f"skipped {len(junk)} bytes" in loss.detail
    assert "no stream has a chunk missing there" in loss.detail
    assert data.incomplete_windows() == []


def test_missing_segment_file(tmp_path):
    cap = tmp_path / "cap"
    write_three_streams(cap, segment_bytes=700)
    gone = cap / "chunks-000001.msc"
    lost = [f[3] for f in frame_table(cap) if f[0] == gone]
    gone.unlink()
    data = open_capture(cap).read()
    assert data.losses
    assert all(l.kind == "gap" for l in data.losses)
    assert all("chunks-000001.msc is missing" in l.detail for l in data.losses)
    assert sum(l.n_records for l in data.losses) == sum(h.n_records for h in lost)


def test_hostile_header_fields_are_capped(tmp_path):
    """Frames with good header crc whose fields lie: no big allocation, no crash."""
    cap = tmp_path / "cap"
    with CaptureWriter(cap) as w:
        s = w.add_stream(w.add_host("h"), 1, "a")
        w.write_chunk(s, make_records([0]), np.zeros(2, np.uint64))
    seg = cap / "chunks-000000.msc"
    import zstandard
    bomb = zstandard.ZstdCompressor().compress(bytes(64 << 20))
    frames = [
        # raw_len 4 GiB-1, inconsistent with the counts
        (FrameHeader(FRAME_VERSION, CODEC_NONE, 0, 0, 1, 1, 2, 1, 2, 0, 0, 48,
                     0xFFFFFFFF, 0), b"x" * 48),
        # a zstd bomb: 64 MiB inside, header promises 48 bytes
        (FrameHeader(FRAME_VERSION, CODEC_ZSTD, 0, 0, 2, 2, 3, 1, 2, 0, 0, len(bomb),
                     48, zlib.crc32(bomb)), bomb),
        # a payload_len far past the end of the file
        (FrameHeader(FRAME_VERSION, CODEC_ZSTD, 0, 0, 3, 3, 4, 1, 2, 0, 0, 1 << 30,
                     48, 0), b""),
    ]
    with open(seg, "ab") as f:
        for h, payload in frames:
            f.write(pack_frame_header(h) + payload)
    data = open_capture(cap).read()
    assert len(data) == 1
    got = [(l.kind, l.first_seq, l.n_records) for l in data.losses]
    assert got == [("corrupt", 1, 1), ("corrupt", 2, 1), ("truncated", 3, 1)]
    assert "raw_len 4294967295 != n_records*32 + n_ids*8 = 48" in data.losses[0].detail
    assert "zstd frame holds 67108864 bytes, header says 48" in data.losses[1].detail
    assert "truncated frame" in data.losses[2].detail


def test_decode_frame_checks_the_whole_message():
    recs = make_records([3, 4])
    buf = encode_frame(recs, np.arange(4, dtype=np.uint64), stream=1, chunk_seq=0,
                       first_seq=3, next_seq=5, codec=CODEC_ZSTD)
    h, got, ids = decode_frame(buf)
    assert (h.stream, h.n_records, h.n_ids) == (1, 2, 4)
    np.testing.assert_array_equal(got, recs)
    with pytest.raises(CaptureFormatError, match=r"frame is \d+ bytes, header says"):
        decode_frame(buf[:-1])
    bad = encode_frame(recs, np.arange(4, dtype=np.uint64), stream=1, chunk_seq=0,
                       first_seq=2, next_seq=5, codec=CODEC_NONE)
    with pytest.raises(CaptureFormatError, match="records hold seqs 3..4, header says 2..4"):
        decode_frame(bad)


# --- manifests --------------------------------------------------------------------

@pytest.mark.parametrize("edit, message", [
    (None, r"manifest.json: missing \(is .* an mscope capture\?\)"),
    ("{not json", r"manifest.json: not JSON \(Expecting property name"),
    ({"version": 2}, r"manifest.json: version 2 is newer than this reader \(it reads version 1\)"),
    ({"version": "1"}, r"manifest.json: version '1' is not a positive integer"),
    ({"format": "pcap"}, r"manifest.json: format is 'pcap', expected 'mscope-capture'"),
    ({"streams": "DELETE", "hosts": "DELETE"},
     r"manifest.json: missing key\(s\) 'hosts', 'streams'"),
    ({"streams": [{"stream": 0, "host": 0, "nf_name": "a"}]},
     r"manifest.json: streams\[0\] missing key\(s\) 'nf_id'"),
    ({"streams": [{"stream": 0, "host": 9, "nf_id": 1, "nf_name": "a"}]},
     r"manifest.json: streams entry 0 names unknown host 9"),
    ({"streams": [{"stream": 0, "host": [0], "nf_id": 1, "nf_name": "a"}]},
     r"manifest.json: streams entry 0 names unknown host \[0\]"),
    ({"nfs": [{"nf_id": 1, "name": "src", "host": 0}, {"nf_id": 1, "name": "x", "host": 0}]},
     r"manifest.json: nfs\[1\] repeats nf_id 1 on host 0"),
    ({"nfs": [{"nf_id": 1, "name": "src", "host": 7}]},
     r"manifest.json: nfs\[0\] names unknown host 7"),
    ({"record_version": 3}, r"manifest.json: record_version 3 unsupported"),
    ({"streams": [{"stream": 0, "host": 0, "nf_id": 1, "nf_name": "a",
                   "recorded_until_ns": -5}]},
     r"manifest.json: stream 0 recorded_until_ns is not a time in ns"),
    ({"streams": [{"stream": 0, "host": 0, "nf_id": 1, "nf_name": "a",
                   "recorded_until_ns": "soon"}]},
     r"manifest.json: stream 0 recorded_until_ns is not a time in ns"),
    ([1, 2], r"manifest.json: not a JSON object"),
])
def test_bad_manifest(tmp_path, edit, message):
    cap = tmp_path / "cap"
    write_three_streams(cap)
    mpath = cap / "manifest.json"
    if edit is None:
        mpath.unlink()
    elif isinstance(edit, str):
        mpath.write_text(edit)
    elif isinstance(edit, list):
        mpath.write_text(json.dumps(edit))
    else:
        man = json.loads(mpath.read_text())
        for k, v in edit.items():
            if v == "DELETE":
                del man[k]
            else:
                man[k] = v
        mpath.write_text(json.dumps(man))
    with pytest.raises(CaptureFormatError, match=message):
        open_capture(cap)


def test_not_a_capture_directory(tmp_path):
    with pytest.raises(CaptureFormatError, match="not a capture directory \\(does not exist\\)"):
        open_capture(tmp_path / "nope")
    (tmp_path / "f").write_text("")
    with pytest.raises(CaptureFormatError, match="not a capture directory \\(not a directory\\)"):
        open_capture(tmp_path / "f")
    # CaptureFormatError is also a ValueError, for callers that catch that.
    with pytest.raises(ValueError):
        open_capture(tmp_path / "nope")


# --- summary and isolation ----------------------------------------------------------

def test_describe_and_format_text(tmp_path):
    cap = tmp_path / "cap"
    data = _drop_capture(cap)
    s = describe(cap)
    assert s["records"] == len(data) == 17 and s["chunks"] == 6
    assert (s["first_ns"], s["last_ns"], s["span_ns"]) == (0, 5000, 5000)
    [row] = s["streams"]
    assert row["nf_name"] == "a" and row["final"] and row["drop_records"] == 10
    assert row["drop_packets"] == 20 and row["lost_records"] == 10 and row["losses"] == 5
    assert s["loss_totals"] == {"ring_drop": {"count": 5, "records": 10, "unknown": 0}}
    json.dumps(s)                          # plain data
    text = format_text(s)
    assert "17 in 6 chunks" in text and "ring_drop 5 (10 records)" in text
    assert "span 5.000 us" in text
    assert "stream 0  ring_drop  seq 6  3 records  1100..1200 ns" in text


def test_loss_kinds_are_the_documented_ones(tmp_path):
    assert LOSS_KINDS == ("ring_drop", "gap", "truncated", "corrupt")
    doc = (Path(__file__).parent.parent / "docs" / "capture-format.md").read_text()
    for kind in LOSS_KINDS:
        assert f"`{kind}`" in doc


def test_reader_needs_no_compiled_part():
    code = ("import sys, mscope.capture; "
            "bad = [m for m in sys.modules if m.startswith('mscope.collector')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- fuzz ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pristine():
    with tempfile.TemporaryDirectory() as tmp:
        cap = Path(tmp) / "cap"
        _, out = write_three_streams(cap, codec="lz4", segment_bytes=900)
        files = {p.name: p.read_bytes() for p in sorted(cap.iterdir())}
    originals = {}
    for s, chunks in out.chunks.items():
        for recs, ids in chunks:
            offs = np.concatenate([[0], np.cumsum(recs["count"], dtype=np.int64)])
            for i in range(len(recs)):
                originals[(s, int(recs["seq"][i]))] = (
                    recs[i].tobytes(), ids[offs[i]:offs[i + 1]].tolist())
    return files, originals


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=90)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 300)),
)


def _mutate(buf, mutation):
    buf = bytearray(buf)
    op, at = mutation[0], mutation[1] % (len(buf) + 1)
    if op == "flip" and buf:
        buf[at % len(buf)] ^= mutation[2]
    elif op == "truncate":
        del buf[at:]
    elif op == "insert":
        buf[at:at] = mutation[2]
    elif op == "delete":
        del buf[at:at + mutation[2]]
    return bytes(buf)


@contextlib.contextmanager
def damaged_copy(files, which, mutations):
    """A temporary capture directory holding `files` (name -> bytes) with
    `mutations` applied to the files `which` picks."""
    names = sorted(files)
    damaged = dict(files)
    for k, m in zip(which * 3, mutations):
        name = names[k % len(names)]
        damaged[name] = _mutate(damaged[name], m)
    with tempfile.TemporaryDirectory() as tmp:
        for name, buf in damaged.items():
            (Path(tmp) / name).write_bytes(buf)
        yield tmp


def damage_three_streams(cap, damage):
    """Damage frame 4 of a write_three_streams capture: "crc" flips a payload
    byte, "cut" shortens the last segment, "removed" cuts the frame out,
    "duplicate" appends a copy of it; "none" leaves it whole."""
    frames = frame_table(cap)
    seg, off, n, _ = frames[4]
    if damage == "crc":
        _flip(seg, off + FRAME_HEADER_SIZE + 3)
    elif damage == "cut":
        last = frames[-1][0]
        last.write_bytes(last.read_bytes()[:-7])
    elif damage == "removed":
        cut_out(seg, off, n)
    elif damage == "duplicate":
        last = frames[-1][0]
        last.write_bytes(last.read_bytes() + seg.read_bytes()[off:off + n])


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.lists(st.integers(0, 99), min_size=1, max_size=3),
       mutations=st.lists(_mutation, min_size=1, max_size=3))
def test_fuzzed_capture_reads_or_raises_format_error(pristine, which, mutations):
    files, originals = pristine
    with damaged_copy(files, which, mutations) as tmp:
        try:
            data = open_capture(tmp).read()
        except CaptureFormatError:
            return
    assert all(l.kind in LOSS_KINDS for l in data.losses)
    # Whatever is returned is exactly what was written...
    for i in range(len(data)):
        key = (int(data.stream[i]), int(data.records["seq"][i]))
        rec, ids = originals[key]
        assert data.records[i].tobytes() == rec
        assert data.ids_of(i).tolist() == ids
    # ...and nothing is lost silently.
    if len(data) < len(originals):
        assert data.losses


def test_doc_example_reads_a_capture(tmp_path, capsys):
    """The numpy-only reader in docs/capture-format.md works on our files."""
    doc = (Path(__file__).parent.parent / "docs" / "capture-format.md").read_text()
    block = doc.split("<!-- example: read-with-numpy -->\n```python\n", 1)[1]
    code = block.split("```", 1)[0]
    cap = tmp_path / "cap"
    _, out = write_three_streams(cap, codec="zstd", segment_bytes=700)
    exec(compile(code, "capture-format.md", "exec"), {"capture_dir": str(cap)})
    lines = capsys.readouterr().out.splitlines()
    recs0 = out.records(0)
    first_ids = out.chunks[0][0][1][:recs0["count"][0]]
    assert lines[0] == (f"src: {len(recs0)} records (0 tx), {int(recs0['count'].sum())} "
                        f"packet ids, first record's ids {first_ids}")
    assert lines[1].startswith("fw: ") and lines[2].startswith("nat: ")


# --- appending and raw frames (what `mscope receive` uses) --------------------

_KILLED_WRITER = """
import os, sys
import numpy as np
from mscope.capture import CaptureWriter, CAPTURE_RECORD_DTYPE
w = CaptureWriter(sys.argv[1], producer="killed", codec="none")
s = w.add_stream(w.add_host("h", extra={"collector": "c1"}), 1, "a",
                 extra={"collector": "c1", "collector_stream": 9})
for k in range(5):
    r = np.zeros(3, CAPTURE_RECORD_DTYPE)
    r["seq"] = np.arange(3 * k, 3 * k + 3); r["count"] = 1; r["time_ns"] = 100 * k
    w.write_chunk(s, r, np.arange(3, dtype=np.uint64))
os._exit(0)        # as if killed: no close(), no chunks_written
"""


def test_open_append_after_a_killed_writer(tmp_path):
    cap = tmp_path / "cap"
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(cap)], check=True, timeout=60)
    seg = cap / "chunks-000000.msc"
    seg.write_bytes(seg.read_bytes()[:-10])         # the kill cut chunk_seq 4
    w = CaptureWriter.open_append(cap, producer="second")
    # The cut frame's header is whole: its chunk_seq was spent.
    assert tuple(w.position(0)) == (5, 15, False)
    assert w.manifest["streams"][0]["collector_stream"] == 9
    assert w.manifest["hosts"][0]["collector"] == "c1"
    w.write_chunk(0, make_records(range(15, 18), t0=500, counts=1), np.arange(3, dtype=np.uint64))
    frame = encode_frame(make_records([20], t0=900, counts=1), np.arange(1, dtype=np.uint64),
                         stream=77, chunk_seq=8, first_seq=20, next_seq=21, final=True)
    h = w.write_frame(0, frame)                    # chunk_seq 6, 7 lost on the way
    assert (h.stream, h.chunk_seq) == (0, 8)
    w.close()
    assert sorted(p.name for p in cap.glob("*.msc")) == ["chunks-000000.msc",
                                                        "chunks-000001.msc"]
    man = json.loads((cap / "manifest.json").read_text())
    assert man["producer"] == "killed" and man["streams"][0]["chunks_written"] == 9
    assert [a["producer"] for a in man["appended_by"]] == ["second"]
    data = open_capture(cap).read()
    assert data.records["seq"].tolist() == list(range(12)) + [15, 16, 17, 20]
    assert [(l.kind, l.first_seq, l.n_records) for l in data.losses] == \
        [("truncated", 12, 3), ("gap", 18, 2)]
    # And once more, after a clean close: the counts go on.
    w = CaptureWriter.open_append(cap)
    assert tuple(w.position(0)) == (9, 21, True)
    with pytest.raises(ValueError, match="already wrote its final chunk"):
        w.write_chunk(0, make_records([21]), np.arange(2, dtype=np.uint64))
    w.close()
    assert json.loads((cap / "manifest.json").read_text())["streams"][0]["chunks_written"] == 9


def test_one_writer_per_capture(tmp_path):
    cap = tmp_path / "cap"
    w = CaptureWriter(cap)
    w.add_stream(w.add_host("h"), 1, "a")
    with pytest.raises(FileExistsError, match="another writer has this capture open"):
        CaptureWriter.open_append(cap)
    w.close()
    CaptureWriter.open_append(cap).close()
    with pytest.raises(CaptureFormatError, match="missing"):
        CaptureWriter.open_append(tmp_path)
    with pytest.raises(CaptureFormatError, match="does not exist"):
        CaptureWriter.open_append(tmp_path / "nope")


def test_write_frame_rejects_by_kind(tmp_path):
    from mscope.errors import FrameRejectedError
    w = CaptureWriter(tmp_path / "cap", codec="none")
    s = w.add_stream(w.add_host("h"), 1, "a")

    def frame(chunk_seq, seqs, drops=0, **kw):
        recs = make_records(seqs, counts=1)
        first = seqs[0] if seqs else kw.pop("first_seq", 0)
        return encode_frame(recs, np.arange(len(recs), dtype=np.uint64), stream=3,
                            chunk_seq=chunk_seq, first_seq=first,
                            next_seq=(seqs[-1] + 1) if seqs else first,
                            drop_records=drops, **kw)

    good = frame(2, [5, 6], drops=1)
    h = w.write_frame(s, good)
    assert (h.stream, h.chunk_seq, w.position(s).chunk_seq) == (s, 2, 3)
    flipped = bytearray(frame(3, [7]))
    flipped[-1] ^= 1
    bad_version = unpack_frame_header(good)._replace(version=9)
    bad_fields = unpack_frame_header(good)._replace(raw_len=5)
    cases = [
        (good[:40], "short_frame", "frame header is 40 bytes"),
        (good[:-1], "short_frame", "header says"),
        (good + b"x", "frame_length", "header says"),
        (b"XXXX" + good[4:], "frame_header", "bad frame magic"),
        (pack_frame_header(bad_version) + good[80:], "frame_version", "frame version 9"),
        (pack_frame_header(bad_fields) + good[80:], "frame_fields", "raw_len 5"),
        (bytes(flipped), "payload_crc", "payload crc32 mismatch"),
        (good, "duplicate", "chunk_seq 2 of stream 0 again"),
        (frame(1, [7]), "regression", "chunk_seq 1 goes back"),
        (frame(3, [6]), "seq_regression", "seqs start at 6, below next_seq 7"),
        (frame(3, [7]), "seq_regression", "drop_records goes back from 1 to 0"),
    ]
    for buf, kind, message in cases:
        with pytest.raises(FrameRejectedError, match=re.escape(message)) as exc:
            w.write_frame(s, buf)
        assert exc.value.kind == kind and isinstance(exc.value, ValueError)
    # A payload that passes its crc but lies about its content: only
    # check_payload looks inside.
    h0 = unpack_frame_header(frame(3, [7, 8], drops=1, codec=CODEC_NONE))
    payload = np.zeros(2, CAPTURE_RECORD_DTYPE)
    payload["seq"], payload["count"] = [7, 9], 1        # seqs 7, 9 but next_seq says 9
    raw = payload.tobytes() + np.arange(2, dtype=np.uint64).tobytes()
    liar = pack_frame_header(h0._replace(payload_crc32=zlib.crc32(raw))) + raw
    with pytest.raises(FrameRejectedError, match="payload: records hold seqs 7..9") as exc:
        w.write_frame(s, liar, check_payload=True)
    assert exc.value.kind == "payload"
    w.write_frame(s, frame(3, [7], drops=1, final=True))
    with pytest.raises(FrameRejectedError, match="after the final chunk") as exc:
        w.write_frame(s, frame(4, [8], drops=1))
    assert exc.value.kind == "after_final"
    w.close()
    data = open_capture(tmp_path / "cap").read()
    assert data.records["seq"].tolist() == [5, 6, 7]
    # Chunks 0 and 1 never came: the reader says so.
    assert [l.kind for l in data.losses] == ["gap"]


def test_optional_entry_keys_and_hosts_seen_twice(tmp_path):
    w = CaptureWriter(tmp_path / "cap")
    h0 = w.add_host("node1", extra={"collector": "aa"})
    h1 = w.add_host("node1", extra={"collector": "bb"})     # restarted collector
    s0 = w.add_stream(h0, 1, "fw", extra={"collector": "aa", "collector_stream": 0})
    s1 = w.add_stream(h1, 1, "fw", extra={"collector": "bb", "collector_stream": 0})
    # an NF is its host's: node2 runs the same chain (a fleet shipping to
    # one receiver), and node1 seen again keeps its nf_ids' names
    h2 = w.add_host("node2")
    s2 = w.add_stream(h2, 1, "fw")
    with pytest.raises(ValueError, match="nf_id: 1 is already 'fw' on host 0, not 'ids'"):
        w.add_stream(h1, 1, "ids")
    with pytest.raises(ValueError, match="'nf_id' are managed"):
        w.add_stream(h0, 2, "x", extra={"nf_id": 3})
    w.update_streams({s1: {"collector_dropped_chunks": 4}})
    with pytest.raises(ValueError, match="'chunks_written' are managed"):
        w.update_streams({s0: {"chunks_written": 4}})
    with pytest.raises(ValueError, match="stream 9 was not added"):
        w.update_streams({9: {"x": 1}})
    w.close()
    man = open_capture(tmp_path / "cap").manifest
    assert [s.get("collector") for s in man["streams"]] == ["aa", "bb", None]
    assert man["streams"][1]["collector_dropped_chunks"] == 4
    assert man["nfs"] == [{"nf_id": 1, "name": "fw", "host": 0},
                          {"nf_id": 1, "name": "fw", "host": h2}]
    assert man["streams"][s2]["host"] == h2
    # the same nf_id twice on hosts of one name is one NF named twice
    man["nfs"].append({"nf_id": 1, "name": "fw", "host": h1})
    (tmp_path / "cap" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(CaptureFormatError, match=r"nfs\[2\] repeats nf_id 1 on host 1"):
        open_capture(tmp_path / "cap")


# --- batch-only records (CAPTURE_F_NOIDS) -------------------------------------------

def mixed_chunk(first_seq, t0=0):
    """Records of every kind: full rx, its address record, batch-only rx and
    tx, full tx; and the ids they carry (none for the batch-only ones)."""
    from mscope.capture import CAPTURE_F_ADDR, CAPTURE_F_NOIDS, CAPTURE_F_TX
    r = make_records(range(first_seq, first_seq + 5), t0=t0)
    r["count"] = [3, 3, 32, 1024, 2]
    r["flags"] = [0, CAPTURE_F_ADDR, CAPTURE_F_NOIDS, CAPTURE_F_NOIDS | CAPTURE_F_TX,
                  CAPTURE_F_TX]
    base = 1000 * (first_seq + 1)
    ids = np.array([base, base + 1, base + 2, 0x0A000001C0A80001, 0, 7, base + 3,
                    base + 4], np.uint64)
    return r, ids


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_batch_only_round_trip(tmp_path, codec):
    """Batch-only records keep their count and take no ids: n_ids and
    raw_len count the other records' ids only, id_offsets give them empty
    slices, and `capture info` counts their packets apart."""
    from mscope.capture import CAPTURE_F_NOIDS, id_counts
    cap = tmp_path / "cap"
    with CaptureWriter(cap, codec=codec) as w:
        s = w.add_stream(w.add_host("h"), 1, "bo")
        chunks = [mixed_chunk(0), mixed_chunk(5, t0=1000)]
        only = make_records(range(10, 14), t0=2000, counts=[1, 1024, 7, 2])
        only["flags"] = CAPTURE_F_NOIDS
        chunks.append((only, np.zeros(0, np.uint64)))     # a chunk of no ids at all
        for recs, ids in chunks:
            w.write_chunk(s, recs, ids)
        assert w.stats.ids == 16 and w.stats.records == 14
    heads = [f[3] for f in frame_table(cap)]
    assert [h.n_ids for h in heads] == [8, 8, 0]
    assert [h.raw_len for h in heads] == [5 * 32 + 8 * 8, 5 * 32 + 8 * 8, 4 * 32]

    data = open_capture(cap).read()
    assert data.losses == []
    np.testing.assert_array_equal(data.records, np.concatenate([r for r, _ in chunks]))
    np.testing.assert_array_equal(data.ids, np.concatenate([i for _, i in chunks]))
    np.testing.assert_array_equal(np.diff(data.id_offsets), id_counts(data.records))
    assert data.id_offsets[-1] == len(data.ids) == 16
    noids = np.flatnonzero(data.records["flags"] & CAPTURE_F_NOIDS)
    assert noids.tolist() == [2, 3, 7, 8, 10, 11, 12, 13]
    assert all(len(data.ids_of(i)) == 0 for i in noids)
    assert data.ids_of(4).tolist() == [1003, 1004]          # the tx after them
    assert data.ids_of(6).tolist()[:2] == [0x0A000001C0A80001, 0]

    summary = describe(cap)
    [row] = summary["streams"]
    assert (row["records"], row["ids"]) == (14, 16)
    assert (row["batch_only_records"], row["batch_only_packets"]) == (8, 2 * 1056 + 1034)
    assert summary["batch_only_packets"] == 3146
    text = format_text(summary)
    assert "16 packet ids; 8 batch-only records of 3,146 packets (no ids)" in text
    assert "bo_packets" in text.splitlines()[5]

    # Without batch-only records the summary and table are as before.
    plain = tmp_path / "plain"
    with CaptureWriter(plain) as w:
        w.write_chunk(w.add_stream(w.add_host("h"), 1, "a"), make_records([0]),
                      np.arange(2, dtype=np.uint64))
    assert describe(plain)["batch_only_packets"] == 0
    assert "batch-only" not in format_text(describe(plain))
    assert "bo_packets" not in format_text(describe(plain))


def test_batch_only_frames_encode_and_decode():
    recs, ids = mixed_chunk(0)
    buf = encode_frame(recs, ids, stream=0, chunk_seq=0, first_seq=0, next_seq=5,
                       codec=CODEC_NONE)
    h, got, got_ids = decode_frame(buf)
    assert (h.n_records, h.n_ids, h.raw_len) == (5, 8, 5 * 32 + 8 * 8)
    np.testing.assert_array_equal(got, recs)
    np.testing.assert_array_equal(got_ids, ids)


def test_batch_only_id_count_mismatch_is_refused(tmp_path):
    """A frame whose n_ids counts batch-only packets as ids (what a writer
    that ignored the flag would make) is refused with one line everywhere:
    decode_frame, write_frame(check_payload=True), and the reader, which
    reports that chunk as corrupt and reads the rest."""
    from mscope.capture import CAPTURE_F_ADDR
    from mscope.errors import FrameRejectedError
    recs, _ = mixed_chunk(0)
    wrong = np.arange(int(recs["count"].sum()), dtype=np.uint64)     # 1064 "ids"
    recs5 = recs.copy()
    recs5["seq"] += 5
    bad = encode_frame(recs5, wrong, stream=0, chunk_seq=1, first_seq=5, next_seq=10,
                       codec=CODEC_NONE)
    message = ("record ids sum to 8 (1064 packets, 1056 of them in batch-only records), "
               "the chunk holds 1064 ids")
    with pytest.raises(CaptureFormatError) as exc:
        decode_frame(bad)
    assert str(exc.value) == message and "\n" not in str(exc.value)

    both = recs5.copy()
    both["flags"][2] |= CAPTURE_F_ADDR
    liar = encode_frame(both, np.zeros(8, np.uint64), stream=0, chunk_seq=1, first_seq=5,
                        next_seq=10, codec=CODEC_NONE)
    with pytest.raises(CaptureFormatError,
                       match=r"^record 2 \(seq 7\) is both batch-only and an address record$"):
        decode_frame(liar)

    cap = tmp_path / "cap"
    w = CaptureWriter(cap, codec="none")
    s = w.add_stream(w.add_host("h"), 1, "bo")
    with pytest.raises(ValueError, match=r"^records: " + re.escape(message) + "$"):
        w.write_chunk(s, recs, wrong)
    with pytest.raises(ValueError, match=r"^records: record 2 \(seq 7\) is both batch-only"):
        w.write_chunk(s, both, np.zeros(8, np.uint64))
    w.write_chunk(s, *mixed_chunk(0))
    for frame in (bad, liar):
        with pytest.raises(FrameRejectedError, match=re.escape("payload: record")) as err:
            w.write_frame(s, frame, check_payload=True)
        assert err.value.kind == "payload"
    w.write_frame(s, bad)                   # unchecked: the reader must catch it
    recs10, ids10 = mixed_chunk(10)
    w.write_chunk(s, recs10, ids10)
    w.close()
    data = open_capture(cap).read()
    assert data.records["seq"].tolist() == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
    [loss] = data.losses
    assert (loss.kind, loss.first_seq, loss.n_records) == ("corrupt", 5, 5)
    assert loss.detail.endswith(message)
    np.testing.assert_array_equal(np.diff(data.id_offsets), [3, 3, 0, 0, 2] * 2)
    assert describe(cap)["streams"][0]["batch_only_records"] == 4


def test_doc_example_reads_batch_only_records(tmp_path, capsys):
    """The numpy-only reader in docs/capture-format.md places ids right past
    batch-only records."""
    doc = (Path(__file__).parent.parent / "docs" / "capture-format.md").read_text()
    code = doc.split("<!-- example: read-with-numpy -->\n```python\n", 1)[1].split("```", 1)[0]
    from mscope.capture import CAPTURE_F_NOIDS
    cap = tmp_path / "cap"
    with CaptureWriter(cap) as w:
        s = w.add_stream(w.add_host("h"), 1, "bo")
        r = make_records(range(3), counts=[5, 2, 1])
        r["flags"] = [CAPTURE_F_NOIDS, 0, 0]
        w.write_chunk(s, r, np.array([11, 12, 13], np.uint64))
    exec(compile(code, "capture-format.md", "exec"), {"capture_dir": str(cap)})
    assert capsys.readouterr().out.splitlines() == [
        "bo: 3 records (0 tx), 3 packet ids, first record's ids [], "
        "5 packets of batch-only records"]


# --- stream by stream: Capture.stream_feed ------------------------------------

def _feed_matches_read_streams(cap, offsets=True):
    """stream_feed() gives what read_streams() gives; False when it steps
    aside (repeated or overlapping chunks)."""
    parts, whole = open_capture(cap).read_streams()
    feed = open_capture(cap).stream_feed()
    assert feed.streams == sorted(set(feed.streams))
    if not feed.unambiguous:
        with pytest.raises(ValueError, match="read_streams"):
            feed.take(feed.streams[0])
        assert feed.finish().losses == whole.losses
        return False
    for sid in feed.streams:
        got = feed.take(sid, offsets=offsets)
        want = parts.pop(sid, None)
        assert (got is None) == (want is None), sid
        if got is not None:
            np.testing.assert_array_equal(got.records, want.records)
            np.testing.assert_array_equal(got.ids, want.ids)
            assert got.ids.dtype == want.ids.dtype
            assert (got.stream == sid).all() and got.stream_info == want.stream_info
            if offsets:
                np.testing.assert_array_equal(got.id_offsets, want.id_offsets)
            else:
                assert got.id_offsets is None
    assert not parts
    with pytest.raises(ValueError, match="taken already"):
        feed.take(feed.streams[0])
    rest = feed.finish()
    assert rest.losses == whole.losses and not len(rest.records)
    assert rest.stream_info == whole.stream_info
    return True


@pytest.mark.parametrize("damage", ["none", "crc", "cut", "removed", "duplicate"])
def test_stream_feed_is_read_streams(tmp_path, damage):
    cap = tmp_path / "cap"
    write_three_streams(cap, codec="zstd", segment_bytes=2000)
    damage_three_streams(cap, damage)
    assert _feed_matches_read_streams(cap) == (damage != "duplicate")
    _feed_matches_read_streams(cap, offsets=False)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.lists(st.integers(0, 99), min_size=1, max_size=3),
       mutations=st.lists(_mutation, min_size=1, max_size=3))
def test_fuzzed_stream_feed_is_read_streams(pristine, which, mutations):
    files, _ = pristine
    with damaged_copy(files, which, mutations) as tmp:
        try:
            open_capture(tmp).read_streams()
        except CaptureFormatError:
            return
        _feed_matches_read_streams(tmp)


def _nf_capture(path, corrupt=()):
    """An NF chain in one capture: a source (tx only), an NF with rx,
    address and tx records and two out ports, one with rx and tx; frames
    listed in `corrupt` get a payload bit flipped."""
    with CaptureWriter(path, codec="zstd") as w:
        h = w.add_host("h")
        src, lb, fw = (w.add_stream(h, k, name) for k, name in
                       enumerate(["source", "lb", "fw"]))
        rng = np.random.default_rng(5)
        n = 400
        cnt = rng.integers(1, 5, n)
        t = np.cumsum(rng.integers(50, 150, n))
        ids = np.arange(1, int(cnt.sum()) + 1, dtype=np.uint64) * 0x9E3779B97F4A7C15
        r = make_records(range(n), counts=cnt, nf_id=0, tx=True)
        r["time_ns"] = t
        w.write_chunk(src, r[:n // 2], ids[:cnt[:n // 2].sum()])
        w.write_chunk(src, r[n // 2:], ids[cnt[:n // 2].sum():])
        for sid, nf_id, addr in ((lb, 1, True), (fw, 2, False)):
            kinds = [0, 2, 1] if addr else [0, 1]
            rec = np.zeros(len(kinds) * n, CAPTURE_RECORD_DTYPE)
            rec["seq"] = np.arange(len(rec))
            rec["time_ns"] = np.repeat(t + 1000 * nf_id, len(kinds))
            rec["time_ns"][len(kinds) - 1::len(kinds)] += 40        # tx a bit later
            rec["count"] = np.repeat(cnt, len(kinds))
            rec["flags"] = np.tile(kinds, n)
            rec["nf_id"] = nf_id
            rec["port"] = np.where((rec["flags"] == 1) & (np.arange(len(rec)) % 2 == 0),
                                   nf_id, 0)
            rec["occupancy"] = np.repeat(cnt % 3, len(kinds))
            words = np.concatenate([ids[:0]] + [
                (ids[a:b] if k != 2 else ids[a:b] >> np.uint64(8))
                for i, (a, b) in enumerate(zip(np.r_[0, np.cumsum(cnt)[:-1]], np.cumsum(cnt)))
                for k in kinds])
            half = len(kinds) * (n // 2)
            w.write_chunk(sid, rec[:half], words[:int(rec["count"][:half].sum())])
            w.write_chunk(sid, rec[half:], words[int(rec["count"][:half].sum()):])
    for k in corrupt:
        seg, off, _, _ = frame_table(path)[k]
        _flip(seg, off + FRAME_HEADER_SIZE + 5)


@pytest.mark.parametrize("corrupt", [(), (2,), (0, 1, 2, 3, 4, 5)])
def test_load_stream_by_stream_is_load_of_read_streams(tmp_path, corrupt):
    # the analyzer's load() decodes each stream just before its NF is
    # built (stream_feed); what it builds, and the errors it gives, are
    # those of the NFs built from read_streams()
    from mscope.analyzer import ingest, load
    cap = tmp_path / "cap"
    _nf_capture(cap, corrupt)
    c = open_capture(cap)
    try:
        want = ingest._view(*c.read_streams(), c.manifest, cap)
    except CaptureFormatError as exc:
        with pytest.raises(CaptureFormatError) as got:
            load(cap)
        assert str(got.value) == str(exc)
        return
    got = load(cap)
    assert got.names == want.names and got.incomplete == want.incomplete
    for x, y in zip(got.nfs, want.nfs):
        for f in ("rx_ids", "rx_ns", "rx_batch", "batch_ns", "batch_occupancy", "tx_ids",
                  "tx_ns", "tx_port", "tx_batch", "rx_addr", "rx_port"):
            u, v = getattr(x, f), getattr(y, f)
            assert (u is None) == (v is None), (x.name, f)
            if u is not None:
                np.testing.assert_array_equal(u, v)
                assert u.dtype == v.dtype, (x.name, f)
    assert len(want.nfs) == 3 and want.nfs[1].rx_addr is not None


def test_stream_feed_lets_each_stream_go(tmp_path):
    # a stream's arrays are freed once its taker drops them: no frame
    # keeps a view of them until finish() (that held the whole decoded
    # capture at once)
    import gc
    import weakref
    from mscope.capture import StreamFeed
    cap = tmp_path / "cap"
    _, out = write_three_streams(cap, codec="zstd", segment_bytes=2000)
    feed = open_capture(cap).stream_feed()
    assert isinstance(feed, StreamFeed)
    for sid in feed.streams:
        d = feed.take(sid)
        want = sum(len(r) * 32 + len(i) * 8 for r, i in out.chunks[sid])
        assert feed.decoded_bytes[sid] == want == len(d.records) * 32 + len(d.ids) * 8
        gone = weakref.ref(d.records), weakref.ref(d.ids)
        del d
        gc.collect()
        assert gone[0]() is None and gone[1]() is None, sid
    feed.finish()


@pytest.mark.parametrize("damage", ["none", "crc", "cut", "removed"])
def test_frames_decoded_by_several_threads_as_by_one(tmp_path, monkeypatch, damage):
    # each frame decodes into its own slot, whichever thread takes it: the
    # arrays, the losses and their details are the same with 1 or 3
    from mscope.capture import reader
    cap = tmp_path / "cap"
    write_three_streams(cap, codec="zstd", segment_bytes=2000)
    damage_three_streams(cap, damage)
    got = {}
    real = reader._decode
    for n in (1, 3):
        monkeypatch.setenv("MSCOPE_THREADS", str(n))
        by = set()
        # a frame's decode held a little: the pool starts a thread for a
        # share only while the others are busy, and on a loaded machine one
        # thread had done every share of these small frames alone
        monkeypatch.setattr(reader, "_decode", lambda *a, **k: (
            by.add(threading.current_thread().name), time.sleep(0.002 * (n > 1)),
            real(*a, **k))[2])
        data = open_capture(cap).read()
        parts, _ = open_capture(cap).read_streams()
        got[n] = data, parts
        assert by == {"MainThread"} if n == 1 else len(by) > 1, by
    (a, pa), (b, pb) = got[1], got[3]
    np.testing.assert_array_equal(a.records, b.records)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.id_offsets, b.id_offsets)
    assert a.losses == b.losses and (damage == "none") == (a.losses == [])
    assert pa.keys() == pb.keys()
    for sid in pa:
        np.testing.assert_array_equal(pa[sid].records, pb[sid].records)
        np.testing.assert_array_equal(pa[sid].ids, pb[sid].ids)


def test_shares_split_frames_evenly_in_file_order():
    from types import SimpleNamespace as NS
    from mscope.capture.reader import _shares
    ents = [NS(h=NS(raw_len=n)) for n in (50, 10, 40, 30, 20, 60)]
    parts = _shares(ents, 2)
    assert sorted(map(id, sum(parts, []))) == sorted(map(id, ents))   # each once
    assert sorted(sum(e.h.raw_len for e in p) for p in parts) == [100, 110]
    for p in parts:
        assert p == sorted(p, key=ents.index)
    assert _shares(ents[:1], 4) == [ents[:1]]


def test_a_segment_gone_while_threads_decode_is_one_error(tmp_path, monkeypatch):
    # a helper thread's OSError reaches the caller: one error, no hang
    monkeypatch.setenv("MSCOPE_THREADS", "3")
    cap = tmp_path / "cap"
    write_three_streams(cap, codec="zstd", segment_bytes=700)
    feed = open_capture(cap).stream_feed()       # scanned: decoded at take()
    for seg in cap.glob("chunks-*.msc"):
        seg.unlink()
    with pytest.raises(CaptureFormatError, match="cannot read"):
        feed.take(feed.streams[0])


def test_zstd_decoder_recovers_after_a_bad_frame():
    # the reader keeps one ZstdDecompressor across frames: a frame that
    # fails half way must not spoil the next
    from mscope.capture.format import decode_payload_into, unpack_frame_header
    r = make_records(range(50), counts=3)
    ids = ids_for(r, 7)
    buf = encode_frame(r, ids, stream=0, chunk_seq=0, first_seq=0, next_seq=50)
    h = unpack_frame_header(buf)
    good = buf[FRAME_HEADER_SIZE:]
    bad = good[:len(good) // 2] + bytes(len(good) - len(good) // 2)
    out = np.empty(50, CAPTURE_RECORD_DTYPE), np.empty(len(ids), np.uint64)
    with pytest.raises(CaptureFormatError, match="zstd"):
        decode_payload_into(h._replace(payload_crc32=zlib.crc32(bad)), bad, *out)
    decode_payload_into(h, good, *out)
    np.testing.assert_array_equal(out[0], r)
    np.testing.assert_array_equal(out[1], ids)


def test_load_times_of_split_batches(tmp_path):
    # records of one batch share a time: the ids' times come from their
    # batch, equal to each record's own time
    from mscope.analyzer import load
    cap = tmp_path / "cap"
    t = np.array([10, 20, 20, 20, 35, 50, 50, 60])
    kinds = np.array([0, 1, 1, 0, 0, 1, 1, 0])
    cnt = np.array([2, 1, 3, 2, 1, 2, 1, 4])
    rec = make_records(range(len(t)), counts=cnt, nf_id=0)
    rec["time_ns"], rec["flags"] = t, kinds
    ids = ids_for(rec, 100)
    with CaptureWriter(cap, codec="zstd") as w:
        w.write_chunk(w.add_stream(w.add_host("h"), 0, "fw"), rec, ids)
    nf = load(cap).nf("fw")
    for side, sel in (("rx", kinds == 0), ("tx", kinds == 1)):
        ts, cs = t[sel], cnt[sel]
        new = np.r_[True, ts[1:] != ts[:-1]]
        batch = np.repeat(np.cumsum(new) - 1, cs)
        ns = getattr(nf, f"{side}_ns")
        assert ns.dtype == np.int64 and getattr(nf, f"{side}_batch").dtype == np.int32
        np.testing.assert_array_equal(ns, np.repeat(ts, cs))
        np.testing.assert_array_equal(getattr(nf, f"{side}_batch"), batch)
        np.testing.assert_array_equal(getattr(nf, f"{side}_ids"),
                                      ids[np.repeat(sel, cnt)])
        if side == "rx":
            np.testing.assert_array_equal(nf.batch_ns, ts[new])
            assert nf.batch_ns.dtype == np.int64
            np.testing.assert_array_equal(nf.batch_occupancy, np.full(new.sum(), -1))


# --- the frame checks' one compiled pass -----------------------------------------

def test_compiled_record_facts_are_the_numpy_checks(monkeypatch):
    """mscope.capture._checks.frame_facts gives what the numpy checks find,
    for records with every flag value (refused and batch-only ones well and
    badly formed), seqs that rise or not, and counts that overflow uint32
    sums; and the checks' messages are the same either way."""
    from mscope.capture import _checks, format as fmt
    rng = np.random.default_rng(5)
    for trial in range(300):
        n = int(rng.integers(0, 40))
        r = np.zeros(n, CAPTURE_RECORD_DTYPE)
        r["seq"] = np.cumsum(rng.integers(0 if trial % 5 == 0 else 1, 3, n)) + 7
        r["count"] = rng.integers(0, 2**32 if trial % 7 == 0 else 6, n, dtype=np.uint64)
        rare = rng.random(n) < (0.0 if trial % 4 == 0 else 0.3)
        r["flags"] = np.where(rare, rng.integers(0, 16, n), rng.integers(0, 4, n))
        if trial % 3 == 0:
            r["flags"][rare] = fmt.CAPTURE_F_REFUSED
            r["count"][rare] = 2
        got = _checks.frame_facts(r)
        monkeypatch.setattr(fmt, "_checks", None)
        want = fmt._record_facts(r)
        n_ids = int(rng.integers(0, 12)) if trial % 2 else int(r["count"].sum())
        want_check = fmt._records_check(r, n_ids)
        monkeypatch.undo()
        assert got == want, trial
        assert fmt._records_check(r, n_ids) == want_check, trial
    # a view of every other record: not contiguous, so numpy checks it
    r = np.zeros(6, CAPTURE_RECORD_DTYPE)
    r["seq"] = np.arange(6)
    assert fmt._record_facts(r[::2])[6] and not fmt._record_facts(r[::-1])[6]
