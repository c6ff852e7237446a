"""The ring end to end: C unit tests, a separate producer process against
the Cython reader, exact loss accounting, and the single-reader claim."""
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TESTS_C, recorder_sources
from mscope.collector import RingReader
from mscope.errors import RingClaimedError
from mscope.record import RING_RECORD_DTYPE, REC_MAGIC


def test_ring_unit_c(cbuild, registry):
    """Wraparound over hundreds of laps, exact round trip, full-ring drops,
    batch splitting and open errors, under ASan/UBSan."""
    exe = cbuild("test_ring", [TESTS_C / "test_ring.c", *recorder_sources()],
                 sanitize=True)
    proc = subprocess.run([str(exe), str(registry)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "0 failed" in proc.stdout


class Producer:
    """The test producer (tests/c/ring_producer.c) in its own process."""

    def __init__(self, exe, registry, n, max_batch, rate, ring_bytes, name="prod"):
        self.n, self.max_batch = n, max_batch
        self.proc = subprocess.Popen(
            [str(exe), str(registry), name, str(n), str(max_batch), str(rate),
             str(ring_bytes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.path = self.proc.stdout.readline().strip()
        assert self.path.endswith(".ring"), self.path

    def start(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finished(self):
        return self.proc.poll() is not None

    def result(self, timeout=60):
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0
        words = out.split()
        assert words[0] == "done", out
        return tuple(int(w) for w in words[1:4])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def producer_exe(cbuild):
    return cbuild("ring_producer", [TESTS_C / "ring_producer.c", *recorder_sources()])


def expected_counts(seq, max_batch):
    return (1 + (seq * 7919) % max_batch).astype(np.int64)


def check_batch(recs, ids, max_batch):
    """Every drained record and id matches the producer's pattern."""
    seq = recs["seq"]
    assert (recs["magic"] == REC_MAGIC).all()
    assert (recs["count"] == expected_counts(seq, max_batch)).all()
    assert (recs["flags"] == (seq & 1)).all()
    assert (recs["port"] == seq % 5).all() and (recs["queue"] == seq % 3).all()
    assert (recs["occupancy"] == (seq & 0xFFFFFFFF)).all()
    counts = recs["count"].astype(np.int64)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    want = (np.repeat(seq, counts) << np.uint64(16)) | (
        np.arange(counts.sum(), dtype=np.uint64) - starts.astype(np.uint64))
    assert np.array_equal(ids, want)


def consume(reader, producer, max_batch, pause=0.0, deadline_s=120):
    """Drain until the producer is done and the ring is empty; verify each
    batch as it comes and return the seqs seen."""
    recs = np.empty(65536, dtype=RING_RECORD_DTYPE)
    ids = np.empty(65536 * max_batch, dtype=np.uint64)
    seqs = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        done = producer.finished()
        n, k = reader.drain_into(recs, ids)
        if n:
            check_batch(recs[:n], ids[:k], max_batch)
            seqs.append(recs["seq"][:n].copy())
        elif done:
            break
        if pause:
            time.sleep(pause)
        elif not n:
            time.sleep(0.0005)
    else:
        pytest.fail("consumer did not finish in time")
    return np.concatenate(seqs) if seqs else np.empty(0, np.uint64)


def test_concurrent_10m_records_no_loss(producer_exe, registry):
    """10 M records from another process, drained while written: none lost,
    none reordered, every id exact."""
    n, max_batch = 10_000_000, 8
    prod = Producer(producer_exe, registry, n, max_batch, rate=5_000_000,
                    ring_bytes=1 << 28)
    try:
        reader = RingReader(prod.path)
        prod.start()
        seqs = consume(reader, prod, max_batch)
        records, drop_records, drop_packets = prod.result()
    finally:
        prod.kill()
    assert (drop_records, drop_packets) == (0, 0)
    assert records == n
    assert len(seqs) == n
    assert np.array_equal(seqs, np.arange(n, dtype=np.uint64))
    state = reader.state()
    assert state["state"] == "closed" and state["pending_bytes"] == 0
    assert state["next_seq"] == n


def test_overload_drops_are_counted_exactly(producer_exe, registry):
    """A producer much faster than a slow consumer on a small ring: every
    record is either drained intact or counted as dropped, and the seq gaps
    say exactly which."""
    n, max_batch = 1_000_000, 64
    prod = Producer(producer_exe, registry, n, max_batch, rate=0,
                    ring_bytes=1 << 16)
    try:
        reader = RingReader(prod.path)
        prod.start()
        seqs = consume(reader, prod, max_batch, pause=0.002)
        records, drop_records, drop_packets = prod.result()
    finally:
        prod.kill()
    assert drop_records > 0, "the consumer was meant to fall behind"
    assert records + drop_records == n
    assert len(seqs) == records
    assert (np.diff(seqs.astype(np.int64)) > 0).all()
    missing = np.setdiff1d(np.arange(n, dtype=np.uint64), seqs)
    assert len(missing) == drop_records
    assert expected_counts(missing, max_batch).sum() == drop_packets
    state = reader.state()
    assert (state["drop_records"], state["drop_packets"]) == (drop_records, drop_packets)


def test_single_reader_claim(producer_exe, registry):
    prod = Producer(producer_exe, registry, 10, 4, rate=0, ring_bytes=1 << 16)
    try:
        first = RingReader(prod.path)
        other = subprocess.run(
            [sys.executable, "-c",
             "import sys; from mscope.collector import RingReader\n"
             "from mscope.errors import RingClaimedError\n"
             "try:\n    RingReader(sys.argv[1])\n"
             "except RingClaimedError as e:\n    print(e); sys.exit(3)\n",
             prod.path], capture_output=True, text=True, timeout=60)
        assert other.returncode == 3, other.stderr
        assert "another live reader" in other.stdout
        first.close()
        # A reader that died holding the claim does not lock the ring forever.
        dead = subprocess.run(
            [sys.executable, "-c",
             "import os, sys; from mscope.collector import RingReader\n"
             "r = RingReader(sys.argv[1]); os._exit(0)\n", prod.path],
            timeout=60)
        assert dead.returncode == 0
        with RingReader(prod.path) as again:
            assert again.state()["reader_pid"] > 0
        with pytest.raises(ValueError, match="closed"):
            again.drain()
        prod.start()
        prod.result()
    finally:
        prod.kill()
