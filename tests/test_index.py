"""The frame index beside each segment (capture/index.py): written as the
frames are, read for a window of a long capture instead of every frame's
first record, never trusted past its checksums, rebuilt by `mscope capture
index`."""
import doctest
import os
import stat

import numpy as np
import pytest

import mscope.capture.reader as reader
from mscope.capture import CAPTURE_RECORD_DTYPE, CaptureWriter, id_counts, open_capture
from mscope.capture import index as index_mod
from mscope.capture.format import FRAME_HEADER_SIZE, decode_payload
from mscope.capture.index import INDEX_HEADER_SIZE, index_path, read_entries, read_index
from mscope.capture.reindex import index_capture
from mscope.cli import main
from test_capture import frame_table

#: 3 streams of records 1 ms apart for 20 s, 200 a chunk, segments of ~40 frames
SECONDS, STEP_NS, CHUNK = 20, 1_000_000, 200
BOOT_NS = 5 * 10**12


def _records(nf_id, n, t0):
    r = np.zeros(n, CAPTURE_RECORD_DTYPE)
    r["seq"] = np.arange(n, dtype=np.uint64)
    r["time_ns"] = t0 + STEP_NS * np.arange(n)
    r["count"], r["nf_id"], r["occupancy"] = 2, nf_id, 0xFFFFFFFF
    r["flags"][1::2] = 1                                # rx, tx, rx, ...
    return r


def _write(path, exist_ok=False):
    n = SECONDS * 10**9 // STEP_NS
    with CaptureWriter(path, segment_bytes=100_000, exist_ok=exist_ok) as w:
        h = w.add_host("h")
        streams = [(w.add_stream(h, k + 1, f"nf{k}"), _records(k + 1, n, BOOT_NS + k * 7))
                   for k in range(3)]
        for a in range(0, n, CHUNK):
            for s, recs in streams:
                part = recs[a:a + CHUNK]
                ids = np.arange(2 * len(part), dtype=np.uint64) + (s << 40) + 2 * a
                w.write_chunk(s, part, ids, final=a + CHUNK >= n)
    return path


@pytest.fixture
def cap(tmp_path):
    return _write(tmp_path / "cap")


def _frames_first(cap):
    """{(segment path, offset): first record time} of every frame with
    records, from its payload."""
    out = {}
    for seg, off, n, h in frame_table(cap):
        if h.n_records:
            payload = seg.read_bytes()[off + FRAME_HEADER_SIZE:off + n]
            out[(seg, off)] = int(decode_payload(h, payload)[0]["time_ns"][0])
    return out


def _window(cap, lo_s, hi_s):
    feed = open_capture(cap).stream_feed()
    lo, hi = BOOT_NS + int(lo_s * 1e9), BOOT_NS + int(hi_s * 1e9)
    got = {s: feed.take(s, window=(lo, hi)) for s in list(feed.streams)}
    whole = feed.finish()
    return {s: (d.records.copy(), d.ids.copy()) for s, d in got.items() if d}, whole.losses


def _same(a, b):
    assert a.keys() == b.keys()
    for s in a:
        assert np.array_equal(a[s][0], b[s][0]) and np.array_equal(a[s][1], b[s][1])


@pytest.fixture
def payload_reads(monkeypatch):
    """Frames whose first record was read from their payload."""
    seen = []
    real = reader._first_time
    monkeypatch.setattr(reader, "_first_time",
                        lambda e, src: seen.append((e.seg, e.off)) or real(e, src))
    return seen


def test_the_writer_indexes_every_frame_with_records(cap):
    segs = sorted(cap.glob("chunks-*.msc"))
    assert len(segs) >= 3
    want = _frames_first(cap)
    got = read_index(dict(open_capture(cap).segments))
    assert {(segs[k], off): v[3] for (k, off), v in got.items()} == want
    for (k, off), (stream, chunk_seq, crc, _) in got.items():
        h = next(f[3] for f in frame_table(cap) if f[0] == segs[k] and f[1] == off)
        assert (stream, chunk_seq, crc) == (h.stream, h.chunk_seq, h.payload_crc32)
    for seg in segs:
        assert stat.S_IMODE(os.stat(index_path(seg)).st_mode) == 0o640


def test_frames_written_as_received_are_indexed(cap, tmp_path):
    # write_frame (the receiver's path) takes the first record from the
    # payload it was handed
    out = tmp_path / "received"
    src = open_capture(cap)
    with CaptureWriter(out) as w:
        h = w.add_host("h")
        ids = {st["stream"]: w.add_stream(h, st["nf_id"], st["nf_name"])
               for st in src.manifest["streams"]}
        for seg, off, n, hd in frame_table(cap):
            w.write_frame(ids[hd.stream], seg.read_bytes()[off:off + n])
    assert sorted(v[3] for v in read_index(dict(open_capture(out).segments)).values()) \
        == sorted(_frames_first(cap).values())


def test_a_window_reads_no_payload_far_from_it_and_the_same_records(cap, payload_reads):
    indexed = _window(cap, 9.0, 10.0)
    assert payload_reads == []
    lines = sum(1 for _ in frame_table(cap))
    for seg in cap.glob("chunks-*.idx"):
        seg.unlink()
    plain = _window(cap, 9.0, 10.0)
    assert len(payload_reads) == lines                   # every frame's first record
    _same(indexed[0], plain[0])
    assert indexed[1] == plain[1] == []
    recs = indexed[0][1][0]
    assert len(recs) == 1000 and recs["time_ns"].min() >= BOOT_NS + 9 * 10**9


def test_broken_or_foreign_entries_are_not_taken(cap, payload_reads):
    want = _window(cap, 12.0, 12.5)
    segs = sorted(cap.glob("chunks-*.msc"))
    # a flipped bit in one entry's time: its crc32 fails, its frame is read
    idx = index_path(segs[1])
    buf = bytearray(idx.read_bytes())
    buf[INDEX_HEADER_SIZE + 3 * 40 + 16] ^= 0x01
    idx.write_bytes(bytes(buf))
    payload_reads.clear()
    _same(_window(cap, 12.0, 12.5)[0], want[0])
    assert len(payload_reads) == 1 and payload_reads[0][0] == 1
    # two segments' indexes swapped: no entry names the frame at its offset
    a, b = index_path(segs[0]), index_path(segs[2])
    ba, bb = a.read_bytes(), b.read_bytes()
    a.write_bytes(bb)
    b.write_bytes(ba)
    payload_reads.clear()
    _same(_window(cap, 12.0, 12.5)[0], want[0])
    assert {k for k, _ in payload_reads} == {0, 1, 2}
    # cut inside an entry, and grown past what the segment has room for
    a.write_bytes(ba[:len(ba) - 13])
    b.write_bytes(bb + os.urandom(40 * 10**4))
    assert len(read_entries(a.read_bytes())) == (len(ba) - INDEX_HEADER_SIZE) // 40 - 1
    _same(_window(cap, 12.0, 12.5)[0], want[0])
    # not an index at all
    a.write_bytes(b"not an index" * 10)
    assert len(read_entries(a.read_bytes())) == 0
    _same(_window(cap, 12.0, 12.5)[0], want[0])


def test_a_damaged_frame_far_from_the_window_is_not_read(cap, payload_reads):
    # its payload's checksum fails: without the index its first record
    # cannot be taken at its word, so it is decoded and reported; the
    # index (the writer's, from the records it wrote) places it far away
    seg, off, n, h = frame_table(cap)[5]
    buf = bytearray(seg.read_bytes())
    buf[off + n - 3] ^= 0xFF
    seg.write_bytes(bytes(buf))
    recs, losses = _window(cap, 15.0, 16.0)
    assert losses == [] and payload_reads == []
    index_path(seg).unlink()
    recs2, losses2 = _window(cap, 15.0, 16.0)
    _same(recs, recs2)
    assert [(x.stream, x.kind) for x in losses2] == [(h.stream, "corrupt")]


def test_capture_index_rebuilds_what_the_writer_wrote(cap, capsys):
    written = {p.name: p.read_bytes() for p in cap.glob("chunks-*.idx")}
    for p in cap.glob("chunks-*.idx"):
        p.unlink()
    assert main(["capture", "index", str(cap)]) == 0
    assert {p.name: p.read_bytes() for p in cap.glob("chunks-*.idx")} == written
    out = capsys.readouterr().out
    assert f"{len(written)} of {len(written)} segments indexed" in out
    assert main(["capture", "index", str(cap)]) == 0
    assert "0 of" in capsys.readouterr().out
    for p in cap.glob("chunks-*.idx"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
    # one entry lost: that segment alone is written again
    first = sorted(cap.glob("chunks-*.idx"))[0]
    first.write_bytes(first.read_bytes()[:-40])
    assert index_capture(cap).written == 1
    assert first.read_bytes() == written[first.name]


def test_capture_index_refuses_a_capture_being_written(cap, capsys):
    w = CaptureWriter.open_append(cap)
    try:
        assert main(["capture", "index", str(cap)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.endswith("another writer has this capture open") and "\n" not in err
    finally:
        w.close()
    assert main(["capture", "index", str(tmp := cap.parent / "none")]) == 1
    assert "not a capture" in capsys.readouterr().err and not tmp.exists()


def test_a_segment_whose_index_cannot_be_written_is_still_written(tmp_path, payload_reads):
    # the index file's name is taken by a directory: the capture is
    # written whole, and its windows read as without an index
    cap = tmp_path / "cap"
    cap.mkdir(mode=0o750)
    (cap / "chunks-000000.idx").mkdir()
    _write(cap, exist_ok=True)
    data = open_capture(cap).read()
    assert len(data.losses) == 0 and len(data.records) == 3 * SECONDS * 1000
    recs, losses = _window(cap, 3.0, 4.0)
    assert {k for k, _ in payload_reads} == {0}
    assert all(len(r) == 1000 for r, _ in recs.values())
    assert sum(int(id_counts(r).sum()) for r, _ in recs.values()) \
        == sum(len(i) for _, i in recs.values())


def test_docstring_examples():
    assert doctest.testmod(index_mod).failed == 0


def test_capture_info_says_what_the_index_places(cap):
    from mscope.capture import describe, format_text
    from mscope.capture.index import pack_index_entry
    s = describe(cap)
    n = s["chunks"]
    assert (s["chunks_with_records"], s["indexed_chunks"], s["index_wrong"]) == (n, n, 0)
    assert not [l for l in format_text(s).splitlines() if l.startswith("index")]
    segs = sorted(cap.glob("chunks-*.msc"))
    index_path(segs[0]).unlink()
    # an entry whose crc32 holds but whose time is not its frame's (a
    # writer's bug): the reader cannot tell, info can
    idx = index_path(segs[1])
    e = read_entries(idx.read_bytes())[0]
    body = pack_index_entry(int(e["offset"]), int(e["stream"]), int(e["chunk_seq"]),
                            int(e["payload_crc32"]), int(e["first_time"]) + 10**9)
    idx.write_bytes(idx.read_bytes()[:INDEX_HEADER_SIZE] + body
                    + idx.read_bytes()[INDEX_HEADER_SIZE + 40:])
    s = describe(cap)
    first = sum(1 for f in frame_table(cap) if f[0] == segs[0])
    assert (s["indexed_chunks"], s["index_wrong"]) == (n - first - 1, 1)
    text = format_text(s)
    assert f"{n - first - 1:,} of {n:,} chunks" in text and "1 placed wrong" in text
    assert index_capture(cap).written == 2
    assert describe(cap)["indexed_chunks"] == n


def test_capture_index_that_cannot_be_written_is_one_line(cap, capsys, monkeypatch):
    import mscope.capture.reindex as reindex

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    for p in cap.glob("chunks-*.idx"):
        p.unlink()
    monkeypatch.setattr(reindex, "replace_whole", denied)
    assert main(["capture", "index", str(cap)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"mscope: error: {cap / 'chunks-000000.idx'}: cannot write the index: " \
                  "Permission denied"
