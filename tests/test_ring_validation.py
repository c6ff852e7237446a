"""The reader against ring files it must not trust: wrong headers, broken
indexes, malformed records, random contents.  A bad file gives a clear
RingFormatError; nothing reads out of bounds (the tests run the real C
reader in this process: an out-of-bounds read would crash pytest)."""
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mscope.collector import RingReader
from mscope.errors import RingFormatError
from mscope.record import (MAX_BATCH, REC_F_ADDR, REC_F_NOIDS, REC_F_PAD, REC_F_REFUSED,
                           REC_F_TX, REC_MAGIC, REC_VERSION, RING_HDR_SIZE, RING_MAGIC,
                           RING_MIN_DATA, RING_RECORD_DTYPE, RING_VERSION, id_counts)

DATA = RING_MIN_DATA


def ring_header(magic=RING_MAGIC, version=RING_VERSION, hdr_size=RING_HDR_SIZE,
                data_size=DATA, head=0, tail=0, name=b"fuzz"):
    """A ring header page laid out as csrc/mscope_record.h says."""
    page = bytearray(RING_HDR_SIZE)
    struct.pack_into("<QIIQQiHHQQ", page, 0, magic, version, hdr_size,
                     data_size, 0, os.getpid() + 1_000_000, 1, 0, 0, 0)
    struct.pack_into("<QQQQI", page, 64, head, 0, 0, 0, 1)
    struct.pack_into("<Qi", page, 128, tail, 0)
    page[192:192 + len(name)] = name
    return bytes(page)


def record(count, seq=0, flags=0, magic=REC_MAGIC, version=REC_VERSION, ids=None):
    """A record as the recorder lays it out: `count` ids (0..count-1 unless
    given) after the header, none after a batch-only header."""
    body = struct.pack("<HBBHHHHIQQ", magic, version, flags, 1, 0, 0, count,
                       0xFFFFFFFF, 1000 + seq, seq)
    if ids is None:
        ids = [] if flags & REC_F_NOIDS else list(range(count))
    return body + struct.pack(f"<{len(ids)}Q", *ids)


def write_ring(path, data=b"", file_size=None, **hdr):
    blob = ring_header(**hdr) + data.ljust(min(hdr.get("data_size", DATA), DATA), b"\0")
    if file_size is not None:
        blob = blob[:file_size].ljust(file_size, b"\0")
    path.write_bytes(blob)
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def ring_path(tmp_path):
    return tmp_path / "t.1.1.ring"


def test_valid_handmade_ring_reads(ring_path):
    data = record(3, seq=0) + record(1, seq=1, flags=1)
    write_ring(ring_path, data, head=len(data))
    with RingReader(ring_path) as r:
        recs, ids = r.drain()
    assert list(recs["seq"]) == [0, 1] and list(recs["count"]) == [3, 1]
    assert list(ids) == [0, 1, 2, 0]


@pytest.mark.parametrize("hdr, message", [
    (dict(magic=0x1234), "bad magic"),
    (dict(version=99), "unsupported ring version"),
    (dict(hdr_size=8192), "invalid ring header or data size"),
    (dict(data_size=DATA + 8), "invalid ring header or data size"),
    (dict(data_size=1024), "invalid ring header or data size"),
    (dict(data_size=1 << 40), "invalid ring header or data size"),
])
def test_bad_header_is_refused(ring_path, hdr, message):
    write_ring(ring_path, file_size=RING_HDR_SIZE + DATA, **hdr)
    with pytest.raises(RingFormatError, match=message) as err:
        RingReader(ring_path)
    assert str(ring_path) in str(err.value)


def test_file_shorter_than_header_says(ring_path):
    write_ring(ring_path, data_size=DATA * 2, file_size=RING_HDR_SIZE + DATA)
    with pytest.raises(RingFormatError, match="shorter than its ring header"):
        RingReader(ring_path)


@pytest.mark.parametrize("size", [0, 100, RING_HDR_SIZE, RING_HDR_SIZE + 100])
def test_tiny_files(ring_path, size):
    ring_path.write_bytes(b"\xff" * size)
    with pytest.raises(RingFormatError):
        RingReader(ring_path)


def test_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "fifo.ring")
    with pytest.raises((RingFormatError, OSError)):
        RingReader(tmp_path / "fifo.ring")
    (tmp_path / "dir.ring").mkdir()
    with pytest.raises((RingFormatError, OSError)):
        RingReader(tmp_path / "dir.ring")


def test_symlink_is_not_followed(ring_path, tmp_path):
    write_ring(ring_path)
    link = tmp_path / "link.ring"
    link.symlink_to(ring_path)
    with pytest.raises(OSError):
        RingReader(link)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        RingReader(tmp_path / "nope.ring")


@pytest.mark.parametrize("head, tail", [
    (DATA + 8, 0),          # more bytes pending than the ring holds
    (8, 16),                # head behind tail
    (12, 0),                # head not 8-aligned
])
def test_bad_indexes(ring_path, head, tail):
    write_ring(ring_path, record(1) * 4, head=head, tail=tail)
    with RingReader(ring_path) as r:
        with pytest.raises(RingFormatError, match="inconsistent head/tail"):
            r.drain()
        # Once corrupt, always corrupt: no resynchronising on garbage.
        with pytest.raises(RingFormatError):
            r.drain()


def test_misaligned_tail(ring_path):
    write_ring(ring_path, record(1), head=40, tail=4)
    with RingReader(ring_path) as r, pytest.raises(RingFormatError, match="head/tail"):
        r.drain()


@pytest.mark.parametrize("bad", [
    record(1, magic=0xBEEF),
    record(1, version=7),
    record(MAX_BATCH + 1, ids=[0]),       # count beyond the limit
    record(200, ids=[0] * 4),             # count beyond head
    record(4, flags=REC_F_NOIDS | REC_F_ADDR),                # batch-only address record
    record(1, flags=REC_F_NOIDS | REC_F_ADDR | REC_F_TX),
    record(MAX_BATCH + 1, flags=REC_F_NOIDS),                 # count beyond the limit
    # refused records: count 2 and no other bit (csrc/mscope_record.h)
    record(1, flags=REC_F_REFUSED),
    record(3, flags=REC_F_REFUSED),
    record(0, flags=REC_F_REFUSED),
    record(2, flags=REC_F_REFUSED | REC_F_TX),
    record(2, flags=REC_F_REFUSED | REC_F_ADDR),
    record(2, flags=REC_F_REFUSED | REC_F_NOIDS),             # the header alone
    record(2, flags=REC_F_REFUSED | 0x10),
])
def test_malformed_record_after_good_ones(ring_path, bad):
    good = record(2, seq=0) + record(2, seq=1)
    data = good + bad
    write_ring(ring_path, data, head=len(data))
    with RingReader(ring_path) as r:
        recs, ids = r.drain()
        assert list(recs["seq"]) == [0, 1], "records before the damage are delivered"
        with pytest.raises(RingFormatError, match=f"at byte {len(good)}: malformed record"):
            r.drain()


def test_batch_only_records_take_no_ids(ring_path):
    """Full, address and batch-only records in one ring: each comes out with
    its count, only the full and address ones bring ids, and what follows a
    batch-only header is read as the next record (a batch-only record whose
    count is a multiple of 4 would land a reader taking ids on a later
    header)."""
    data = (record(3, seq=0) + record(3, seq=1, flags=REC_F_ADDR, ids=[7, 8, 9])
            + record(4, seq=2, flags=REC_F_NOIDS)
            + record(MAX_BATCH, seq=3, flags=REC_F_NOIDS | REC_F_TX)
            + record(4, seq=4, flags=REC_F_NOIDS) + record(2, seq=5, flags=REC_F_TX))
    write_ring(ring_path, data, head=len(data))
    recs = np.empty(16, RING_RECORD_DTYPE)
    with RingReader(ring_path) as r:
        ids = np.full(MAX_BATCH, 99, np.uint64)
        n, k = r.drain_into(recs, ids)
        assert r.state()["tail"] == len(data)
    assert (n, k) == (6, 8)
    recs = recs[:n]
    assert recs["seq"].tolist() == list(range(6))
    assert recs["count"].tolist() == [3, 3, 4, MAX_BATCH, 4, 2]
    assert recs["flags"].tolist() == [0, REC_F_ADDR, REC_F_NOIDS, REC_F_NOIDS | REC_F_TX,
                                      REC_F_NOIDS, REC_F_TX]
    assert id_counts(recs).tolist() == [3, 3, 0, 0, 0, 2]
    assert ids[:k].tolist() == [0, 1, 2, 7, 8, 9, 0, 1]
    assert (ids[k:] == 99).all(), "nothing written past the ids returned"


def test_refused_records_bring_their_two_words(ring_path):
    """A refused record (flags 0x08, count 2) between an rx and a tx
    record: its two words (packets refused, ns) come out in the id array
    at its place, id_counts gives it 2, and the next record is read right
    after them."""
    data = (record(3, seq=0) + record(2, seq=1, flags=REC_F_REFUSED, ids=[43463, 104460269])
            + record(2, seq=2, flags=REC_F_TX, ids=[5, 6])
            + record(2, seq=3, flags=REC_F_REFUSED, ids=[1, 2**64 - 1]))
    write_ring(ring_path, data, head=len(data))
    with RingReader(ring_path) as r:
        recs, ids = r.drain()
        assert r.state()["tail"] == len(data)
    assert recs["seq"].tolist() == [0, 1, 2, 3]
    assert recs["flags"].tolist() == [0, REC_F_REFUSED, REC_F_TX, REC_F_REFUSED]
    assert id_counts(recs).tolist() == [3, 2, 2, 2]
    assert ids.tolist() == [0, 1, 2, 43463, 104460269, 5, 6, 1, 2**64 - 1]


def test_batch_only_records_need_no_id_room(ring_path):
    """More batch-only records than ids fit, and one as the last record
    before head with a count whose ids would reach far beyond it: all of
    them drain, n_ids 0, in pieces as small as the records array."""
    data = b"".join(record(1000, seq=s, flags=REC_F_NOIDS) for s in range(40))
    write_ring(ring_path, data, head=len(data))
    recs = np.empty(7, RING_RECORD_DTYPE)
    with RingReader(ring_path) as r:
        ids = np.empty(MAX_BATCH, np.uint64)
        got = []
        while True:
            n, k = r.drain_into(recs, ids)
            assert k == 0
            if n == 0:
                break
            got += recs["seq"][:n].tolist()
    assert got == list(range(40))


def test_batch_only_records_across_the_wrap(ring_path):
    """Batch-only records before and after a padding record."""
    pos = DATA - 80                # two 32-byte records, then 16 bytes of padding
    data = bytearray(DATA)
    data[pos:pos + 64] = (record(4, seq=5, flags=REC_F_NOIDS)
                          + record(8, seq=6, flags=REC_F_NOIDS))
    data[DATA - 16:] = record(0, flags=REC_F_PAD)[:16]
    after = record(12, seq=7, flags=REC_F_NOIDS) + record(2, seq=8)
    data[:len(after)] = after
    write_ring(ring_path, bytes(data), head=DATA + len(after), tail=pos)
    with RingReader(ring_path) as r:
        recs, ids = r.drain()
    assert recs["seq"].tolist() == [5, 6, 7, 8]
    assert recs["count"].tolist() == [4, 8, 12, 2] and ids.tolist() == [0, 1]


def test_padding_beyond_head_is_malformed(ring_path):
    # A pad record near the end claims the rest of the data area, but head
    # stops short of it.
    pos = DATA - 64
    data = bytearray(DATA)
    data[pos:pos + 32] = record(0, flags=REC_F_PAD)[:32]
    write_ring(ring_path, bytes(data), head=pos + 32, tail=pos)
    with RingReader(ring_path) as r, pytest.raises(RingFormatError, match="malformed"):
        r.drain()


def test_drain_into_needs_room_for_one_full_record(ring_path):
    data = record(3)
    write_ring(ring_path, data, head=len(data))
    with RingReader(ring_path) as r:
        recs = np.empty(8, dtype=r.drain()[0].dtype)
        with pytest.raises(ValueError, match="at least 1024 ids"):
            r.drain_into(recs, np.empty(16, np.uint64))


def test_wrapping_with_padding(ring_path):
    pos = DATA - 48
    data = bytearray(DATA)
    data[pos:pos + 32] = record(0, flags=REC_F_PAD)[:32]
    after = record(4, seq=5)
    data[:len(after)] = after
    write_ring(ring_path, bytes(data), head=DATA + len(after), tail=pos)
    with RingReader(ring_path) as r:
        recs, ids = r.drain()
    assert list(recs["seq"]) == [5] and list(ids) == [0, 1, 2, 3]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.one_of(
           st.builds(record, st.integers(0, 40), st.integers(0, 2**63),
                     st.integers(0, 255)),
           st.binary(min_size=1, max_size=64)), max_size=20),
       start=st.integers(0, DATA // 8 - 1).map(lambda x: x * 8),
       head_delta=st.integers(-64, DATA + 64),
       flip=st.lists(st.tuples(st.integers(0, DATA - 1), st.integers(0, 255)), max_size=8))
def test_fuzz_ring_contents(tmp_path_factory, chunks, start, head_delta, flip):
    """Random and half-valid ring contents: the reader returns well-formed
    records or raises RingFormatError, and never anything else."""
    path = tmp_path_factory.mktemp("fuzz") / "f.1.1.ring"
    data = bytearray(DATA)
    blob = b"".join(chunks)[:DATA]
    for i, b in enumerate(blob):
        data[(start + i) % DATA] = b
    for off, val in flip:
        data[off] = val
    head = max(0, start + head_delta)
    write_ring(path, bytes(data), head=head, tail=start)
    with RingReader(path) as r:
        for _ in range(3):
            try:
                recs, ids = r.drain(max_records=64, max_ids=4096)
            except RingFormatError:
                break
            assert (recs["magic"] == REC_MAGIC).all()
            assert (recs["version"] == REC_VERSION).all()
            assert (recs["count"] <= MAX_BATCH).all()
            assert int(id_counts(recs).sum()) == len(ids)
            both = REC_F_NOIDS | REC_F_ADDR
            assert not ((recs["flags"] & both) == both).any()
            refused = (recs["flags"] & REC_F_REFUSED) != 0
            assert (recs["flags"][refused] == REC_F_REFUSED).all()
            assert (recs["count"][refused] == 2).all()
            assert r.state()["tail"] <= max(head, start)
            if len(recs) == 0:
                break
