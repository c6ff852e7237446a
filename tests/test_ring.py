"""The ring end to end: C unit tests, a separate producer process against
the Cython reader, exact loss accounting, and the single-reader claim."""
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TESTS_C, recorder_sources
from producers import Producer, check_batch, expected_counts
from mscope.collector import RingReader
from mscope.record import RING_RECORD_DTYPE


def test_ring_unit_c(cbuild, registry):
    """Wraparound over hundreds of laps, exact round trip, full-ring drops,
    batch splitting, address records (rx/address pairs, their splitting and
    drops), batch-only records mixed with full and address ones (no ids,
    no id room needed, a batch-only address record or count over the limit
    is malformed), refused records (mscope_refused: flags 0x08 alone,
    count 2, the two words, none for 0 packets, a drop of no packets on a
    full ring, whole across the wrap; forged ones with another count or
    another flag bit are malformed), idle-poll records (due only after the
    interval, rx only, none with MSCOPE_F_NOIDLE) and open errors, under
    ASan/UBSan."""
    exe = cbuild("test_ring", [TESTS_C / "test_ring.c", *recorder_sources()],
                 sanitize=True)
    proc = subprocess.run([str(exe), str(registry)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "0 failed" in proc.stdout


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
    # 512 MiB: about a second of the producer's output, so a reader that a
    # busy machine holds off for a few hundred ms still loses nothing
    prod = Producer(producer_exe, registry, n, max_batch, rate=5_000_000,
                    ring_bytes=1 << 29)
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
