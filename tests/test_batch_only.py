"""Batch-only records (MSCOPE_F_NOIDS; flags bit 2: a count, no ids) from
the real recorder, through the ring reader, mscope-collect and the capture:
every packet counted, none given an id, nothing misread.

The hand-made rings and capture files of the same rules are in
test_ring_validation.py, test_capture.py and test_collect.py; the C reader
is unit-tested in tests/c/test_ring.c."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import requires_dpdk
from producers import Producer
from mscope import paths
from mscope.capture import CAPTURE_F_NOIDS, CAPTURE_F_TX, describe, open_capture
from mscope.collector import RingReader
from mscope.record import MAX_BATCH, REC_F_NOIDS, REC_F_TX, RING_RECORD_DTYPE

pytestmark = requires_dpdk

# libmscope's own mscope_rx/mscope_tx on a handle opened with
# MSCOPE_F_NOIDS, in a process of its own, through ctypes.  No EAL: a
# batch-only handle never looks at the packets (csrc/mscope_dpdk.c,
# record_counts), so the mbuf array is never read.  Call i records
# 1 + (i * 7919) % 3000 packets (a call of more than MAX_BATCH becomes
# several records with one tsc), rx for even i and tx for odd, on port
# i % 3, queue i % 2, occupancy i.
PRODUCER = r"""
import ctypes, sys

class Params(ctypes.Structure):
    _fields_ = [("nf_name", ctypes.c_char_p), ("nf_id", ctypes.c_uint16),
                ("lcore", ctypes.c_uint16), ("ring_bytes", ctypes.c_size_t),
                ("dir", ctypes.c_char_p), ("flags", ctypes.c_uint32)]

class Stats(ctypes.Structure):
    _fields_ = [("records", ctypes.c_uint64), ("drop_records", ctypes.c_uint64),
                ("drop_packets", ctypes.c_uint64)]

lib_path, registry, name, calls, ring_bytes = sys.argv[1:6]
lib = ctypes.CDLL(lib_path)
lib.mscope_open.restype = ctypes.c_void_p
lib.mscope_open.argtypes = [ctypes.POINTER(Params)]
lib.mscope_ring_path.restype = ctypes.c_char_p
lib.mscope_ring_path.argtypes = [ctypes.c_void_p]
lib.mscope_get_stats.argtypes = [ctypes.c_void_p, ctypes.POINTER(Stats)]
lib.mscope_close.argtypes = [ctypes.c_void_p]
for f in (lib.mscope_rx, lib.mscope_tx):
    f.argtypes = [ctypes.c_void_p, ctypes.c_uint16, ctypes.c_uint16, ctypes.c_void_p,
                  ctypes.c_uint16, ctypes.c_uint32]
MSCOPE_F_NOIDS = 0x4
p = Params(name.encode(), 5, 2, int(ring_bytes), registry.encode(), MSCOPE_F_NOIDS)
ms = lib.mscope_open(ctypes.byref(p))
if not ms:
    sys.exit("mscope_open failed")
print(lib.mscope_ring_path(ms).decode(), flush=True)
sys.stdin.readline()
pkts = (ctypes.c_void_p * 3000)()
for i in range(int(calls)):
    f = lib.mscope_tx if i % 2 else lib.mscope_rx
    f(ms, i % 3, i % 2, pkts, 1 + (i * 7919) % 3000, i)
st = Stats()
lib.mscope_get_stats(ms, ctypes.byref(st))
print("done", st.records, st.drop_records, st.drop_packets, flush=True)
sys.exit(0 if lib.mscope_close(ms) == 0 else 1)
"""


def expected_records(calls):
    """The records PRODUCER writes, in seq order: (flags, port, queue,
    count, occupancy, call) per record."""
    i = np.arange(calls, dtype=np.int64)
    n = 1 + (i * 7919) % 3000
    per_call = (n + MAX_BATCH - 1) // MAX_BATCH
    call = np.repeat(i, per_call)
    part = np.arange(len(call)) - np.repeat(np.cumsum(per_call) - per_call, per_call)
    count = np.minimum(MAX_BATCH, np.repeat(n, per_call) - part * MAX_BATCH)
    flags = REC_F_NOIDS | np.where(call % 2 == 1, REC_F_TX, 0)
    return dict(flags=flags, port=call % 3, queue=call % 2, count=count,
                occupancy=call, call=call, packets=int(n.sum()))


class BatchOnlyProducer(Producer):
    """PRODUCER in its own process, with Producer's protocol."""

    result_timeout = 120     # a ctypes call per batch: slower than the C producer

    def __init__(self, registry, calls, ring_bytes, name="bo"):
        # Producer.__init__ starts the C producer; this runs PRODUCER instead.
        self._spawn([sys.executable, "-c", PRODUCER, str(paths.libmscope()), str(registry),
                     name, str(calls), str(ring_bytes)],
                    env={k: v for k, v in os.environ.items() if not k.startswith("MSCOPE_")})


def check_against_pattern(seq, recs, calls):
    """Drained records (any fields of RING_RECORD_DTYPE or CAPTURE_RECORD_DTYPE
    named like the ring's) equal the pattern's records of the same seqs."""
    want = expected_records(calls)
    seq = seq.astype(np.int64)
    assert (np.diff(seq) > 0).all()
    for field in ("port", "queue", "count", "occupancy"):
        np.testing.assert_array_equal(recs[field], want[field][seq], err_msg=field)
    return want


@pytest.fixture
def producer(registry):
    made = []

    def make(*args, **kw):
        made.append(BatchOnlyProducer(registry, *args, **kw))
        return made[-1]
    registry.mkdir()
    yield make
    for p in made:
        p.kill()


def test_recorder_batch_only_ring_drained_while_written(producer):
    """The recorder's batch-only records, drained while a separate process
    writes them into a small ring, by a reader that falls behind: each
    record's header comes out intact with its count, no ids ever, and
    every packet is drained or counted as dropped, exactly."""
    calls = 60_000
    prod = producer(calls, ring_bytes=1 << 16)
    reader = RingReader(prod.path)
    recs = np.empty(4096, RING_RECORD_DTYPE)
    ids = np.full(MAX_BATCH, 7, np.uint64)
    got = []
    prod.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = prod.proc.poll() is not None
        n, k = reader.drain_into(recs, ids)
        assert k == 0, "batch-only records bring no ids"
        if n:
            got.append(recs[:n].copy())
        elif done:
            break
        # ~300 k calls/s (ctypes) fill the 2048 records of the ring in a
        # few ms: 20 ms between drains make it drop.
        time.sleep(0.02)
    else:
        pytest.fail("the producer did not finish in time")
    records, drop_records, drop_packets = prod.result()
    assert drop_records > 0, "the reader was meant to fall behind"
    assert (ids == 7).all(), "the id array was never written"
    got = np.concatenate(got)
    assert (got["flags"] & REC_F_NOIDS).all()
    want = check_against_pattern(got["seq"], got, calls)
    np.testing.assert_array_equal(got["flags"], want["flags"][got["seq"].astype(np.int64)])
    assert len(got) == records and records + drop_records == len(want["count"])
    assert int(got["count"].sum()) + drop_packets == want["packets"]
    # One tsc per call: the records a call was split into share it.
    call = want["call"][got["seq"].astype(np.int64)]
    same = call[1:] == call[:-1]
    assert same.any() and (got["tsc"][1:][same] == got["tsc"][:-1][same]).all()
    state = reader.state()
    assert (state["drop_records"], state["drop_packets"]) == (drop_records, drop_packets)
    assert state["pending_bytes"] == 0 and state["next_seq"] == len(want["count"])
    reader.close()


def test_recorder_batch_only_ring_to_capture(producer, tmp_path):
    """mscope-collect turns a batch-only ring into a capture of batch-only
    records: flags and counts kept, n_ids 0, every packet in a record or in
    the drop counter, ring drops reported exactly."""
    calls = 40_000
    cap = tmp_path / "cap"
    prod = producer(calls, ring_bytes=1 << 20)
    registry = os.path.dirname(prod.path)
    col = subprocess.Popen([sys.executable, "-m", "mscope.collector.daemon", "--dir",
                            registry, "--out", str(cap), "--exit-when-idle",
                            "--poll-us", "200"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with RingReader(prod.path, claim=False) as r:
                if r.state()["reader_pid"]:
                    break
            assert time.monotonic() < deadline, "the collector never claimed the ring"
            time.sleep(0.02)
        prod.start()
        records, drop_records, drop_packets = prod.result()
        _, err = col.communicate(timeout=60)
    finally:
        if col.poll() is None:
            col.kill()
            col.wait(timeout=10)
    assert col.returncode == 0, err
    data = open_capture(cap).read()
    recs = data.records
    assert len(recs) == records and len(data.ids) == 0
    assert (recs["flags"] & CAPTURE_F_NOIDS).all()
    assert not data.id_offsets.any()
    want = check_against_pattern(recs["seq"], recs, calls)
    tx = (want["flags"][recs["seq"].astype(np.int64)] & REC_F_TX) != 0
    np.testing.assert_array_equal((recs["flags"] & CAPTURE_F_TX) != 0, tx)
    assert int(recs["count"].sum()) + drop_packets == want["packets"]
    assert sum(l.n_records for l in data.losses if l.kind == "ring_drop") == drop_records
    assert [l for l in data.losses if l.kind != "ring_drop"] == []
    [row] = describe(cap)["streams"]
    assert (row["records"], row["ids"], row["batch_only_records"]) == (records, 0, records)
    assert row["batch_only_packets"] == want["packets"] - drop_packets


@pytest.mark.skipif(__import__("shutil").which("dpdk-testpmd") is None,
                    reason="dpdk-testpmd not installed (Debian package dpdk)")
def test_testpmd_batch_only_to_capture(registry, eal_args, tmp_path):
    """testpmd attached with MSCOPE_IDS=0 io-forwards between two net_null
    ports, mscope-collect --out drains it: the capture's batch-only records
    of the forwarding lcore count exactly the packets testpmd's port
    statistics say it received and sent (with what a full ring dropped),
    and hold no id."""
    from test_attach import forward_totals, run_attached_testpmd
    cap = tmp_path / "cap"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSCOPE_")}
    env["MSCOPE_IDS"] = "0"
    out, err = run_attached_testpmd(registry, cap, eal_args, "bo", 8, ["net_null0", "net_null1"],
                                    ["--forward-mode=io"], env=env)
    assert "batch-only" in err, err[-2000:]
    rx_total, tx_total = forward_totals(out)
    assert rx_total > 100_000

    data = open_capture(cap).read()
    # idle-poll records (an rx of 0 packets, never batch-only: the main
    # lcore's empty flushes) aside, every record is a batch-only one
    idle = (data.records["count"] == 0) & (data.records["flags"] == 0)
    recs = data.records[~idle]
    assert len(recs) > 0 and len(data.ids) == 0 and not data.id_offsets.any()
    assert (recs["flags"] & CAPTURE_F_NOIDS).all() and (data.records["nf_id"] == 8).all()
    assert (recs["count"] > 0).all() and (recs["count"] <= MAX_BATCH).all()
    assert [l for l in data.losses if l.kind != "ring_drop"] == []
    streams = {s["lcore"]: s for s in describe(cap)["streams"]}
    fwd = streams[1]
    stream = data.stream[~idle]
    sel = stream == fwd["stream"]
    tx = (recs["flags"] & CAPTURE_F_TX) != 0
    rx_pkts = int(recs["count"][sel & ~tx].sum())
    tx_pkts = int(recs["count"][sel & tx].sum())
    assert fwd["records"] == int((data.stream == fwd["stream"]).sum()) and fwd["ids"] == 0
    assert fwd["batch_only_packets"] == rx_pkts + tx_pkts
    assert rx_pkts + tx_pkts + fwd["drop_packets"] == rx_total + tx_total
    if fwd["drop_packets"] == 0:
        # Nothing lost on the ring: each direction adds up on its own.
        assert (rx_pkts, tx_pkts) == (rx_total, tx_total)
    fwd_losses = [l for l in data.losses if l.stream == fwd["stream"]]
    assert sum(l.n_records for l in fwd_losses) == fwd["drop_records"]
    for port in (0, 1):
        assert recs["count"][sel & ~tx & (recs["port"] == port)].sum() > 0
        assert recs["count"][sel & tx & (recs["port"] == port)].sum() > 0
    for lcore, s in streams.items():
        if lcore != 1:
            assert not tx[stream == s["stream"]].any(), \
                "only rx flushes outside the forwarding lcore"


def test_diagnose_refuses_a_batch_only_capture(tmp_path, capsys):
    import numpy as np
    from mscope.capture import CAPTURE_F_NOIDS, CAPTURE_OCC_UNKNOWN, CAPTURE_RECORD_DTYPE
    from mscope.capture import CaptureWriter
    from mscope.cli import main
    r = np.zeros(2, CAPTURE_RECORD_DTYPE)
    r["seq"] = [0, 1]
    r["flags"] = CAPTURE_F_NOIDS
    r["count"] = 32
    r["occupancy"] = CAPTURE_OCC_UNKNOWN
    with CaptureWriter(tmp_path / "c") as w:
        s = w.add_stream(w.add_host("h"), 1, "fwd")
        w.write_chunk(s, r, np.zeros(0, np.uint64), first_seq=0, final=True)
    assert main(["diagnose", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err.strip()
    assert "batch-only" in err and "\n" not in err
