#!/usr/bin/env python3
"""Collector (issue 3): which codec the chunks get, and ring -> capture speed.

Two parts, each runnable alone:

* ``codec`` (needs nothing but the package): synthesises what an NF ring
  really holds -- a poll loop's alternating rx/tx records over a modelled
  flow mix -- cuts it into chunks of 4096, 16384 and 65536 records as the
  collector would, and measures every codec setting on one pinned core:
  compression ratio (raw / stored), compress and decompress speed in MB/s
  and records/s, the ratio of the records part and of the ids part alone,
  and the floor the ids set (a 64-bit hash is incompressible the first time
  it appears).  It also measures, as prototypes that the capture format
  does not have, lossless transforms inside a chunk (a tx batch stored as
  a reference to the rx batch it repeats; records byte-shuffled) and what
  they would give.
* ``e2e`` (needs ``mscope-collect``): a C producer writes records as fast
  as the ring takes them on cpu 0 while ``mscope-collect --exit-when-idle``
  drains the ring on cpu 1 into a capture directory (and, when ``mscope
  receive`` exists, ships them to it over ZeroMQ); records/s from start to
  the collector's exit, ring drops, capture bytes, compression ratio.

    python bench/collect.py                 # both parts, ~5-7 min
    python bench/collect.py codec --quick   # ~30 s
    python bench/collect.py e2e --quick     # ~30 s

Prints one JSON object per measurement, then tables (bench/README.md).
Not a test: pytest never collects bench/.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import harness
import packet_ids

from mscope.capture.format import (
    CAPTURE_OCC_UNKNOWN, CAPTURE_RECORD_DTYPE, CAPTURE_RECORD_SIZE,
    CODEC_LZ4, CODEC_NONE, CODEC_ZSTD, FRAME_HEADER_SIZE, compress_payload,
    decompress_payload, encode_frame)
from mscope.packet_id import ipv4_packet_ids, ipv6_packet_ids

TARGET_RECORDS_PER_S = 20e6     # drained per core (issues 2 and 3)
TARGET_RATIO = 4.0              # "compressed >= 4x" (issue 3)
CHUNK_SIZES = (4096, 16384, 65536)

# (label, codec, level).  lz4.frame: level 0 is its default fast mode,
# negative levels are LZ4F "fast acceleration" (-level), 3 and up the slow
# HC mode (not worth measuring for a collector).  zstd: negative levels
# are its fast modes.
SETTINGS = [
    ("zstd-3", CODEC_ZSTD, 3),
    ("zstd-1", CODEC_ZSTD, 1),
    ("zstd--1", CODEC_ZSTD, -1),
    ("zstd--3", CODEC_ZSTD, -3),
    ("zstd--7", CODEC_ZSTD, -7),
    ("lz4-0", CODEC_LZ4, 0),
    ("lz4--4", CODEC_LZ4, -4),
    ("lz4--16", CODEC_LZ4, -16),
    ("none", CODEC_NONE, 0),
]

# --- what an NF ring holds ----------------------------------------------------
#
# One NF lcore runs a poll loop: rx burst (<= 32) on a port, process, tx
# burst of the same packets (minus the ones it drops) on the other port.
# The recorder writes an rx record and a tx record per non-empty burst;
# empty polls write nothing.  The model is a queue: packets arrive as a
# Poisson process whose rate changes in phases (offered load relative to
# the NF's capacity), the NIC queue holds up to RXQ descriptors, a burst
# takes min(32, backlog).  So under overload every burst is 32 and the
# occupancy sits near the queue's size; under light load bursts are 1-3
# packets with long gaps between them.

BURST = 32
RXQ = 1024                       # rx descriptors
TIME_BASE_NS = 1_764_115_200_000_000_000   # a 2025 wall clock, ns
# Offered load / capacity per phase, and each kind's share of the time.
SCENARIOS = {
    # the design point: at or near capacity, mostly full bursts
    "loaded": [(0.70, (1.0, 1.5)), (0.30, (0.8, 1.0))],
    # half the time overloaded, the rest quieter: by records, the quiet
    # spells dominate (a loop at half load writes a record per 1-2
    # packets, ~10x the records per second of a saturated one)
    "mixed": [(0.50, (1.0, 1.5)), (0.30, (0.5, 1.0)), (0.20, (0.01, 0.5))],
    "saturated": [(1.0, (1.05, 1.5))],      # every burst full
    "light": [(1.0, (0.01, 0.5))],           # well below capacity
}
PHASE_MS = (0.5, 20.0)           # phase length, log-uniform
DROP_SHARE = 0.003               # packets the NF drops between rx and tx
REVERSE_SHARE = 0.15             # bursts rx on port 1 -> tx on port 0
RING_DROP_PER_RECORD = 1e-5      # records lost on a full ring (seq gaps)


def simulate_loop(n_records, scenario, rng):
    """The records of one NF's ring, as the collector converts them.

    Returns
    -------
    records : ndarray of CAPTURE_RECORD_DTYPE, n_records of them
    rx_of : ndarray of int64
        For each record, the index of the rx burst (0, 1, ...) it belongs to.
    keep : ndarray of bool
        Per packet of the rx bursts (in order): not dropped before tx.
    n_packets : int
        Packets in the rx bursts.
    """
    per_pkt = rng.uniform(40.0, 120.0)       # ns of NF work per packet
    overhead = rng.uniform(80.0, 200.0)      # ns per loop iteration
    capacity = 1e9 / per_pkt                 # packets/s at batch -> inf
    kinds = SCENARIOS[scenario]
    shares = np.array([k[0] for k in kinds])
    n_iter = n_records // 2 + 2
    t = 0.0
    phase_end = -1.0
    lam = 0.0
    backlog = 0
    # Pre-drawn variates: one Python-level draw per iteration is too slow.
    u_proc = rng.lognormal(0.0, 0.2, n_iter)
    u_jit = rng.lognormal(0.0, 0.15, n_iter)
    u_small = rng.random(n_iter)
    u_rev = rng.random(n_iter) < REVERSE_SHARE
    rx_t = np.empty(n_iter)
    tx_t = np.empty(n_iter)
    batch = np.empty(n_iter, np.int64)
    occ = np.empty(n_iter, np.int64)
    for i in range(n_iter):
        if t >= phase_end:
            k = rng.choice(len(kinds), p=shares)
            lo, hi = kinds[k][1]
            rel = np.exp(rng.uniform(np.log(lo), np.log(hi)))
            lam = rel * capacity / 1e9       # packets per ns
            phase_end = t + np.exp(rng.uniform(*np.log(PHASE_MS))) * 1e6
        if backlog == 0:
            # Idle polls until a packet arrives (not recorded), then the
            # poll that sees it also takes what came during its own rx call.
            t += rng.exponential(1.0 / lam) + overhead * rng.random()
            backlog = 1 + rng.poisson(lam * overhead * 0.5)
        b = min(BURST, backlog)
        if b == BURST and u_small[i] < 0.03:
            b = int(1 + u_small[i] / 0.03 * (BURST - 1))   # descriptor-ring wrap
        backlog -= b
        rx_t[i] = t
        batch[i] = b
        occ[i] = min(backlog, RXQ)
        proc = b * per_pkt * u_proc[i]
        tx_t[i] = t + 20.0 + proc
        # The next rx comes after this tx (and the loop's overhead).
        dt = max((overhead + proc) * u_jit[i], 40.0 + proc)
        t += dt
        backlog = min(backlog + rng.poisson(lam * dt), RXQ)

    n_packets = int(batch.sum())
    keep = rng.random(n_packets) >= DROP_SHARE
    starts = np.cumsum(batch) - batch
    tx_count = np.add.reduceat(keep.astype(np.int64), starts)
    # Interleave rx and tx records; a tx burst everything of which was
    # dropped writes no record.
    has_tx = tx_count > 0
    kind = np.zeros((n_iter, 2), np.int8)
    kind[:, 1] = 1
    present = np.ones((n_iter, 2), bool)
    present[:, 1] = has_tx
    it = np.repeat(np.arange(n_iter), 2).reshape(n_iter, 2)[present]
    is_tx = kind[present].astype(bool)
    it, is_tx = it[:n_records], is_tx[:n_records]
    n = it.size

    rec = np.zeros(n, CAPTURE_RECORD_DTYPE)
    tns = np.where(is_tx, tx_t[it], rx_t[it])
    rec["time_ns"] = TIME_BASE_NS + np.round(tns).astype(np.int64)
    seq0 = int(rng.integers(0, 1 << 40))
    step = 1 + (rng.random(n) < RING_DROP_PER_RECORD) * rng.integers(1, 50, n)
    rec["seq"] = seq0 + np.cumsum(step) - step[0]
    rec["nf_id"] = 3
    rx_port = u_rev[it].astype(np.uint16)
    rec["port"] = np.where(is_tx, 1 - rx_port, rx_port)
    rec["queue"] = 2
    rec["flags"] = is_tx.astype(np.uint8)
    rec["count"] = np.where(is_tx, tx_count[it], batch[it])
    rec["occupancy"] = np.where(is_tx, CAPTURE_OCC_UNKNOWN, occ[it])
    return rec, it, keep, n_packets


def flow_ids(n_packets, rng):
    """Ids of n_packets packets of the modelled flow mix (bench/packet_ids.py:
    Pareto flow sizes, per-flow IPv4 id counters, advancing TCP seq/ack,
    70/30 IPv4/IPv6 by flow, random payload bytes), in arrival order."""
    trace = packet_ids.flow_mix(n_packets, rng)
    pay = packet_ids.payload_bytes("random", trace, rng)
    n = trace["flow"].size
    v6 = trace["ipv6"]
    v4 = ~v6
    proto = np.where(trace["tcp"], 6, 17)
    ids = np.empty(n, np.uint64)
    ids[v4] = ipv4_packet_ids(
        ip_id=trace["ip_id"][v4], total_length=trace["length"][v4],
        frag=np.full(int(v4.sum()), 0x4000), proto=proto[v4],
        tcp_seq=trace["tcp_seq"][v4], tcp_ack=trace["tcp_ack"][v4],
        payload=pay[v4])
    ids[v6] = ipv6_packet_ids(
        payload_length=trace["length"][v6] - packet_ids.IPV6_HDR,
        next_header=proto[v6], tcp_seq=trace["tcp_seq"][v6],
        tcp_ack=trace["tcp_ack"][v6], payload=pay[v6])
    return ids[:n_packets]


def ring_span(n_records, scenario, seed):
    """n_records records and their ids, as drained from one NF's ring."""
    rng = np.random.default_rng(seed)
    rec, it, keep, n_packets = simulate_loop(n_records, scenario, rng)
    pkt = flow_ids(n_packets, rng)
    # rx record of burst i: the burst's packets; tx record: those kept.
    counts = rec["count"].astype(np.int64)
    is_tx = rec["flags"].astype(bool)
    burst_len = np.zeros(int(it.max()) + 1, np.int64)
    burst_len[it[~is_tx]] = counts[~is_tx]
    # Bursts whose rx record was cut off (the first record is always rx).
    starts = np.concatenate(([0], np.cumsum(burst_len)))
    pieces = []
    for r in range(rec.size):
        b = it[r]
        s, e = starts[b], starts[b + 1]
        if is_tx[r]:
            pieces.append(pkt[s:e][keep[s:e]])
        else:
            pieces.append(pkt[s:e])
    ids = np.concatenate(pieces)
    assert ids.size == counts.sum()
    return rec, ids


def chunks_of(rec, ids, size):
    """Cut a span into chunks of `size` records: [(records, ids)]."""
    off = np.concatenate(([0], np.cumsum(rec["count"].astype(np.int64))))
    out = []
    for a in range(0, rec.size, size):
        b = min(a + size, rec.size)
        out.append((rec[a:b], ids[off[a]:off[b]]))
    return out


def raw_payload(rec, ids):
    return b"".join((np.ascontiguousarray(rec).view(np.uint8).data,
                     np.ascontiguousarray(ids).view(np.uint8).data))


# --- prototype transforms (not in the capture format) ---------------------
#
# txref: a tx record whose ids are the previous record's (an rx record)
# minus some, in order, stores no ids: a bit per record says "ids by
# reference", and the positions of the rx ids it dropped follow as u8 (a
# burst is <= 255 here; the real thing would use a bitmap).  Lossless: the
# decoder rebuilds the tx ids from the rx ids it has just decoded.
#
# shuffle: the records part, with time_ns and seq replaced by their deltas
# from the previous record, stored field-transposed byte by byte (byte k of
# every record, then byte k+1 ...), as blosc's shuffle filter does: the
# high bytes of small deltas become long runs of zeros.


def txref_encode(rec, ids):
    """(by_ref bitmap bytes, dropped positions u8, remaining ids)."""
    n = rec.size
    count = rec["count"].astype(np.int64)
    off = np.concatenate(([0], np.cumsum(count)))
    is_tx = (rec["flags"] & 1).astype(bool)
    cand = np.zeros(n, bool)
    cand[1:] = is_tx[1:] & ~is_tx[:-1] & (count[1:] <= count[:-1]) & (count[1:] > 0)
    # Equal counts: the tx ids must equal the rx ids position by position.
    # Fewer: every tx id must be in the rx burst, in order.  Checked with
    # vectorised compares; anything that does not check out stays verbatim.
    idx = np.flatnonzero(cand)
    ok = np.zeros(n, bool)
    dropped = np.zeros(0, np.uint8)
    if idx.size:
        rxc, txc = count[idx - 1], count[idx]
        rx_pos = np.repeat(off[idx - 1], rxc) + _ranges(rxc)
        rx_pair = np.repeat(np.arange(idx.size), rxc)
        tx_pos = np.repeat(off[idx], txc) + _ranges(txc)
        tx_pair = np.repeat(np.arange(idx.size), txc)
        # Which rx ids reappear in their pair's tx burst: ids salted with
        # the pair number.  A false match only costs compression: the
        # check below then fails and the pair stays verbatim.
        salt = np.uint64(0x9E3779B97F4A7C15)
        with np.errstate(over="ignore"):
            kept = np.isin(ids[rx_pos] ^ (rx_pair.astype(np.uint64) * salt),
                           ids[tx_pos] ^ (tx_pair.astype(np.uint64) * salt))
        good = np.bincount(rx_pair, weights=kept, minlength=idx.size) == txc
        # The kept rx ids of the good pairs, in rx order, must be exactly
        # their tx ids.
        sel = kept & good[rx_pair]
        mism = ids[rx_pos][sel] != ids[tx_pos][good[tx_pair]]
        good[np.unique(rx_pair[sel][mism])] = False
        ok[idx[good]] = True
        dropped = _ranges(rxc)[~kept & good[rx_pair]].astype(np.uint8)
    off = off[:-1]
    keep_ids = np.ones(ids.size, bool)
    for_ref = np.flatnonzero(ok)
    if for_ref.size:
        keep_ids[np.repeat(off[for_ref], count[for_ref]) + _ranges(count[for_ref])] = False
    bitmap = np.packbits(ok, bitorder="little")
    return bitmap.tobytes(), dropped.tobytes(), ids[keep_ids]


def txref_decode(rec, bitmap, dropped, rest):
    """Inverse of txref_encode: the chunk's ids."""
    n = rec.size
    ok = np.unpackbits(np.frombuffer(bitmap, np.uint8), count=n,
                       bitorder="little").astype(bool)
    count = rec["count"].astype(np.int64)
    off = np.cumsum(count) - count
    ids = np.empty(int(count.sum()), np.uint64)
    verb = ~ok
    vpos = np.repeat(off[verb], count[verb]) + _ranges(count[verb])
    ids[vpos] = rest
    idx = np.flatnonzero(ok)
    if idx.size:
        rxc = count[idx - 1]
        rx_pos = np.repeat(off[idx - 1], rxc) + _ranges(rxc)
        pos_in_rx = _ranges(rxc)
        # The dropped positions come pair by pair in rx order: mark them.
        ndrop = rxc - count[idx]
        rx_pair = np.repeat(np.arange(idx.size), rxc)
        drop_pair = np.repeat(np.arange(idx.size), ndrop)
        dpos = np.frombuffer(dropped, np.uint8).astype(np.int64)
        key = rx_pair * 256 + pos_in_rx
        kept = ~np.isin(key, drop_pair * 256 + dpos)
        tx_pos = np.repeat(off[idx], count[idx]) + _ranges(count[idx])
        # rx ids are all verbatim (a tx follows an rx, never a tx by ref).
        ids[tx_pos] = ids[rx_pos][kept]
    return ids


def _ranges(counts):
    """concatenate(arange(c) for c in counts), vectorised."""
    counts = np.asarray(counts, np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    starts = np.cumsum(counts) - counts
    return np.arange(total) - np.repeat(starts, counts)


def shuffle_records(rec):
    """Delta time/seq, then byte-transpose the 32-byte records."""
    r = rec.copy()
    t = rec["time_ns"].astype(np.int64)
    s = rec["seq"].astype(np.uint64)
    r["time_ns"][1:] = np.diff(t)
    r["seq"][1:] = np.diff(s)
    b = r.view(np.uint8).reshape(-1, CAPTURE_RECORD_SIZE)
    return np.ascontiguousarray(b.T).tobytes()


def unshuffle_records(buf, n):
    b = np.frombuffer(buf, np.uint8).reshape(CAPTURE_RECORD_SIZE, n)
    r = np.ascontiguousarray(b.T).view(CAPTURE_RECORD_DTYPE).reshape(n).copy()
    r["time_ns"] = np.cumsum(r["time_ns"].astype(np.int64))
    r["seq"] = np.cumsum(r["seq"].astype(np.uint64))
    return r


def ids32(ids):
    """Lossy what-if: the low 32 bits of each id."""
    return (ids & np.uint64(0xFFFFFFFF)).astype("<u4")


class CTransforms:
    """The C encoders of bench/collect/txref.c (built here with gcc -O2),
    with output buffers kept between calls as a collector would keep them."""

    def __init__(self):
        import ctypes
        src = harness.BENCH / "collect" / "txref.c"
        harness.BUILD_DIR.mkdir(parents=True, exist_ok=True)
        so = harness.BUILD_DIR / "collect_txref.so"
        subprocess.run(["gcc", "-O2", "-std=gnu11", "-Wall", "-Wextra", "-shared", "-fPIC",
                        "-o", str(so), str(src)], check=True)
        lib = ctypes.CDLL(str(so))
        P, S = ctypes.c_void_p, ctypes.c_size_t
        lib.txref_encode.argtypes = [P, S, P, P, P, ctypes.POINTER(S), P]
        lib.txref_encode.restype = S
        lib.shuffle_records.argtypes = [P, S, P, P]
        lib.shuffle_records.restype = None
        self._lib, self._ct = lib, ctypes
        self._nd = ctypes.c_size_t()
        self._cap = 0
        self._idcap = 0

    def _grow(self, n, n_ids):
        if n > self._cap:
            self._cap = n
            self.bitmap = np.zeros((n + 7) // 8, np.uint8)
            self.shuf = np.zeros(n * CAPTURE_RECORD_SIZE, np.uint8)
            self.tmp = np.zeros(n, CAPTURE_RECORD_DTYPE)
        if n_ids > self._idcap:
            self._idcap = n_ids
            self.rest = np.zeros(n_ids, np.uint64)
            self.dropped = np.zeros(n_ids, np.uint8)

    def txref(self, rec, ids):
        """(bitmap, dropped, rest) as memoryviews of the kept buffers."""
        n = rec.size
        self._grow(n, ids.size)
        nr = self._lib.txref_encode(rec.ctypes.data, n, ids.ctypes.data,
                                    self.bitmap.ctypes.data, self.dropped.ctypes.data,
                                    self._ct.byref(self._nd), self.rest.ctypes.data)
        return (self.bitmap[:(n + 7) // 8].data, self.dropped[:self._nd.value].data,
                self.rest[:nr].view(np.uint8).data)

    def shuffle(self, rec):
        n = rec.size
        self._grow(n, 0)
        self._lib.shuffle_records(rec.ctypes.data, n, self.shuf.ctypes.data,
                                  self.tmp.ctypes.data)
        return self.shuf[:n * CAPTURE_RECORD_SIZE].data


CT = None       # CTransforms, built by bench_codec


# Variants: name -> encode(rec, ids, codec, level) -> list of stored byte
# strings (what a frame would carry).  The prototypes use the C encoders;
# check_roundtrip decodes their output with the numpy reference.
def enc_plain(rec, ids, codec, level):
    return [compress_payload(raw_payload(rec, ids), codec, level)]


def enc_txref(rec, ids, codec, level):
    bm, dp, rest = CT.txref(rec, ids)
    raw = b"".join((rec.view(np.uint8).data, bm, dp, rest))
    return [compress_payload(raw, codec, level)]


def enc_txref_shuffle(rec, ids, codec, level):
    bm, dp, rest = CT.txref(rec, ids)
    raw = b"".join((CT.shuffle(rec), bm, dp, rest))
    return [compress_payload(raw, codec, level)]


def enc_txref_shuffle_split(rec, ids, codec, level):
    # The ids left after txref are random 64-bit values: store them as
    # they are and spend the codec on the records only.
    bm, dp, rest = CT.txref(rec, ids)
    head = b"".join((CT.shuffle(rec), bm, dp))
    return [compress_payload(head, codec, level), bytes(rest)]


def enc_txref_shuffle_id32(rec, ids, codec, level):
    bm, dp, rest = CT.txref(rec, ids)
    low = ids32(np.frombuffer(rest, np.uint64))
    raw = b"".join((CT.shuffle(rec), bm, dp, low.data))
    return [compress_payload(raw, codec, level)]


VARIANTS = {
    "plain": (enc_plain, "the capture format as it is: records then ids, one codec call"),
    "txref": (enc_txref, "prototype: a tx burst that repeats its rx burst stored as a reference (lossless)"),
    "txref+shuffle": (enc_txref_shuffle, "prototype: txref, records delta-coded and byte-shuffled (lossless)"),
    "txref+shuffle+split": (enc_txref_shuffle_split,
                            "prototype: txref+shuffle, the codec on the records part only, ids stored as they are (lossless)"),
    "id32 (lossy)": (enc_txref_shuffle_id32,
                     "what-if: txref+shuffle with ids cut to their low 32 bits (LOSSY, not a proposal)"),
}


def check_roundtrip(rec, ids):
    """The prototypes must be lossless: decode what the numpy and the C
    encoders produce with the numpy decoder and compare.  Returns the ids
    stored by reference."""
    bm, dp, rest = txref_encode(rec, ids)
    if not np.array_equal(txref_decode(rec, bm, dp, rest), ids):
        raise AssertionError("txref (numpy) round trip failed")
    cbm, cdp, crest = (bytes(x) for x in CT.txref(rec, ids))
    crest = np.frombuffer(crest, np.uint64)
    if not np.array_equal(txref_decode(rec, cbm, cdp, crest), ids):
        raise AssertionError("txref (C) round trip failed")
    if crest.size > rest.size:
        # (The C encoder may store fewer: the numpy one gives up on a
        # burst holding the same id twice, a duplicate ACK.)
        print("note: the C txref encoder stored more ids than numpy's", file=sys.stderr)
    if bytes(CT.shuffle(rec)) != shuffle_records(rec):
        raise AssertionError("C and numpy shuffle differ")
    r2 = unshuffle_records(shuffle_records(rec), rec.size)
    if r2.tobytes() != rec.tobytes():
        raise AssertionError("shuffle round trip failed")
    return ids.size - rest.size


CPU_SHARES = []     # this process's CPU time / wall time of every timed block


def time_it(fn, min_s, min_reps):
    """(median s, runs) of fn() repeated until min_s total and min_reps runs.

    Records in CPU_SHARES how much of the wall time this process had the
    CPU: below ~0.95, something else ran on our core and the figure is low.
    """
    times = []
    t_all = time.perf_counter()
    c_all = time.process_time()
    while len(times) < min_reps or time.perf_counter() - t_all < min_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 50:
            break
    CPU_SHARES.append((time.process_time() - c_all) / (time.perf_counter() - t_all))
    return float(np.median(times)), len(times)


def span_stats(rec, ids):
    is_tx = rec["flags"].astype(bool)
    cnt = rec["count"].astype(np.int64)
    return {"records": int(rec.size), "ids": int(ids.size),
            "mean_batch": round(float(cnt.mean()), 2),
            "rx_batch_32_share": round(float((cnt[~is_tx] == 32).mean()), 3),
            "tx_share": round(float(is_tx.mean()), 3),
            "bytes_per_record": round((rec.size * 32 + ids.size * 8) / rec.size, 1),
            "id_bytes_share": round(ids.size * 8 / (rec.size * 32 + ids.size * 8), 3),
            "span_ms": round((int(rec["time_ns"][-1]) - int(rec["time_ns"][0])) / 1e6, 2)}


def bench_codec(span_records, scenarios, sizes, quick, seed):
    """Rows for the codec part."""
    global CT
    CT = CTransforms()
    rows = []
    min_s = 0.05 if quick else 0.25
    min_reps = 1 if quick else 3
    for si, scenario in enumerate(scenarios):
        t0 = time.perf_counter()
        rec, ids = ring_span(span_records, scenario, seed + si)
        info = span_stats(rec, ids)
        by_ref = check_roundtrip(rec, ids)
        info.update(name="span", scenario=scenario, seed=seed + si,
                    ids_by_ref_share=round(by_ref / ids.size, 4),
                    distinct_id_share=round(np.unique(ids).size / ids.size, 4),
                    synth_seconds=round(time.perf_counter() - t0, 2))
        rows.append(info)
        main = scenario == scenarios[0]
        if main:
            rows += bench_parts(rec, ids, 65536 if 65536 in sizes else sizes[-1], quick)
        # Non-default scenarios: the ratios matter, fewer timings.
        settings = SETTINGS if main else [s for s in SETTINGS if s[0] in
                                          ("zstd-1", "zstd--1", "zstd--3", "lz4-0", "none")]
        for size in sizes:
            chunks = chunks_of(rec, ids, size)
            raw_bytes = sum(c[0].size * 32 + c[1].size * 8 for c in chunks)
            rec_bytes = sum(c[0].size * 32 for c in chunks)
            id_bytes = raw_bytes - rec_bytes
            n_recs = sum(c[0].size for c in chunks)
            # The floor: every id's first appearance in its chunk is 8
            # random bytes; nothing lossless stores it in less.
            first_ids = sum(np.unique(c[1]).size for c in chunks)
            floor = first_ids * 8
            for label, codec, level in settings:
                for vname, (enc, _) in VARIANTS.items():
                    if not main and vname not in ("plain", "txref+shuffle"):
                        continue
                    if codec == CODEC_NONE and vname not in ("plain", "txref+shuffle+split"):
                        continue
                    stored = [enc(r, i, codec, level) for r, i in chunks]
                    stored_bytes = sum(len(p) for s in stored for p in s)
                    secs, runs = time_it(lambda: [enc(r, i, codec, level) for r, i in chunks],
                                         min_s, min_reps)
                    own_cpu = CPU_SHARES[-1]
                    row = {"name": "codec", "scenario": scenario, "variant": vname,
                           "setting": label, "codec": codec, "level": level,
                           "chunk_records": size, "chunks": len(chunks),
                           "records": n_recs, "raw_bytes": raw_bytes,
                           "stored_bytes": stored_bytes,
                           "ratio": raw_bytes / stored_bytes,
                           "ratio_with_headers": raw_bytes / (stored_bytes + FRAME_HEADER_SIZE * len(chunks)),
                           "compress_s": secs, "runs": runs, "own_cpu_share": round(own_cpu, 3),
                           "compress_MBps": raw_bytes / secs / 1e6,
                           "compress_records_per_s": n_recs / secs,
                           "ids_floor_bytes": floor,
                           "ratio_bound_ids_only": raw_bytes / floor}
                    if vname == "plain":
                        # Decompress, and the encode_frame the collector
                        # calls (join + compress + crc32 + header).
                        payloads = [s[0] for s in stored]
                        dsecs, _ = time_it(lambda: [decompress_payload(p, codec, r.size * 32 + i.size * 8)
                                                    for p, (r, i) in zip(payloads, chunks)],
                                           min_s, min_reps)
                        fsecs, _ = time_it(lambda: [encode_frame(r, i, stream=0, chunk_seq=0, first_seq=0,
                                                                 next_seq=1 << 62, codec=codec, level=level)
                                                    for r, i in chunks], min_s, min_reps)
                        row.update(decompress_s=dsecs, decompress_MBps=raw_bytes / dsecs / 1e6,
                                   decompress_records_per_s=n_recs / dsecs,
                                   encode_frame_records_per_s=n_recs / fsecs,
                                   encode_frame_MBps=raw_bytes / fsecs / 1e6)
                        # Where the bytes go: each part compressed alone.
                        if codec != CODEC_NONE:
                            rs = sum(len(compress_payload(r.tobytes(), codec, level)) for r, _ in chunks)
                            is_ = sum(len(compress_payload(i.tobytes(), codec, level)) for _, i in chunks)
                            row.update(records_part_stored=rs, ids_part_stored=is_,
                                       ratio_records_part=rec_bytes / rs,
                                       ratio_ids_part=id_bytes / is_)
                    rows.append(row)
    return rows


def bench_parts(rec, ids, size, quick):
    """Where the time of one chunk goes (loaded scenario): the steps of
    encode_frame and of the prototype, each timed alone over all chunks."""
    import zlib
    min_s = 0.05 if quick else 0.25
    min_reps = 1 if quick else 3
    chunks = chunks_of(rec, ids, size)
    raws = [raw_payload(r, i) for r, i in chunks]
    raw_bytes = sum(len(x) for x in raws)
    n_recs = sum(c[0].size for c in chunks)
    z1 = [compress_payload(x, CODEC_ZSTD, 1) for x in raws]
    steps = [
        ("join records+ids (encode_frame's first copy)", lambda: [raw_payload(r, i) for r, i in chunks]),
        ("crc32 of the raw payload (codec none)", lambda: [zlib.crc32(x) for x in raws]),
        ("crc32 of a zstd-1 payload", lambda: [zlib.crc32(x) for x in z1]),
        ("txref encode (C)", lambda: [CT.txref(r, i) for r, i in chunks]),
        ("record shuffle (C)", lambda: [CT.shuffle(r) for r, _ in chunks]),
        ("zstd-1 of the records part alone", lambda: [compress_payload(r.data, CODEC_ZSTD, 1) for r, _ in chunks]),
        ("zstd-1 of the ids part alone", lambda: [compress_payload(i.data, CODEC_ZSTD, 1) for _, i in chunks]),
    ]
    rows = []
    for label, fn in steps:
        secs, runs = time_it(fn, min_s, min_reps)
        rows.append({"name": "cost_part", "step": label, "chunk_records": size,
                     "records": n_recs, "raw_bytes": raw_bytes, "seconds": secs, "runs": runs,
                     "ns_per_record": secs / n_recs * 1e9,
                     "records_per_s": n_recs / secs, "raw_MBps": raw_bytes / secs / 1e6})
    return rows


# --- end to end -----------------------------------------------------------

PRODUCER_SRC = harness.BENCH / "collect" / "replay_producer.c"
# E2E_SETTINGS: (label, --codec, --level) the end-to-end part runs.
E2E_SETTINGS = [("zstd-3", "zstd", 3), ("zstd-1", "zstd", 1), ("zstd--1", "zstd", -1),
                ("zstd--3", "zstd", -3), ("lz4-0", "lz4", 0), ("none", "none", 0)]
# Records per chunk: mscope-collect's default (--chunk-records 16384; it was
# 65536 until commit 14abd85).  The 65536 rows of E2E_COMPARE_CHUNK repeat
# the zstd -1 runs at the old size, for comparison with figures taken then.
E2E_CHUNK_RECORDS = 16384
E2E_COMPARE_CHUNK = 65536


def collector_cmd():
    """argv prefix for mscope-collect, or None when it is not there yet."""
    exe = shutil.which("mscope-collect")
    if exe:
        return [exe]
    for mod in ("mscope.collector.daemon", "collector.daemon"):
        probe = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True,
                               cwd=harness.ROOT)
        if probe.returncode == 0:
            return [sys.executable, "-m", mod]
    return None


def receive_cmd():
    """argv prefix for `mscope receive`, or None."""
    probe = subprocess.run([sys.executable, "-m", "mscope.cli", "receive", "--help"],
                           capture_output=True)
    return [sys.executable, "-m", "mscope.cli", "receive"] if probe.returncode == 0 else None


def build_producer():
    lib, inc = harness.native_paths()
    harness.BUILD_DIR.mkdir(parents=True, exist_ok=True)
    out = harness.BUILD_DIR / "replay_producer"
    subprocess.run(["gcc", "-O2", "-std=gnu11", "-Wall", "-Wextra", f"-I{inc}", "-o", str(out),
                    str(PRODUCER_SRC), f"-L{lib.parent}", "-lmscope",
                    f"-Wl,-rpath,{lib.parent}"], check=True)
    return out


def write_span(path, rec, ids):
    with open(path, "wb") as f:
        f.write(np.array([rec.size, ids.size], "<u8").tobytes())
        f.write(rec.tobytes())
        f.write(ids.astype("<u8").tobytes())


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_rusage(proc, timeout):
    """Wait for a child; return its CPU seconds (user + system), or None on
    timeout (the child is then killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return ru.ru_utime + ru.ru_stime
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    return None


def reader_attached(ring_path):
    """The ring's reader_pid (consumer line, offset 136) is set."""
    try:
        with open(ring_path, "rb") as f:
            f.seek(136)
            return int.from_bytes(f.read(4), "little", signed=True) != 0
    except OSError:
        return False


def capture_totals(path):
    """mscope.capture.info.describe() of a capture, and its bytes on disk."""
    from mscope.capture.info import describe
    d = describe(path)
    nbytes = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
    return d, nbytes


def e2e_run(label, codec, level, *, collect, producer, span_file, registry, work,
            n_records, rate=0, ring_bytes=0, prefill=False, ship=None, chunk_records=E2E_CHUNK_RECORDS,
            timeout=600):
    """One producer -> mscope-collect (-> mscope receive) -> capture run.

    prefill: the producer writes everything (into a ring big enough) and
    closes it before the collector starts: the collector's capacity, no
    producer sharing the memory system.  Otherwise the collector attaches
    first and the producer writes while it drains.
    """
    name = f"nf{label.replace('-', 'm')}"
    out = Path(work) / (f"cap-{label}-{'ship' if ship else 'dir'}-{'pre' if prefill else 'live'}"
                        f"-{chunk_records}")
    env = dict(os.environ)
    prod = subprocess.Popen(["taskset", "-c", "0", str(producer), registry, name, span_file,
                             str(n_records), str(rate), str(ring_bytes)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ring = prod.stdout.readline().strip()
    recv = None
    recv_log = Path(work) / f"{out.name}.receive.log"
    if ship:
        port = free_port()
        endpoint = f"tcp://127.0.0.1:{port}"
        # The receiver gets cpu 0, which the producer leaves once it is done
        # (live runs share it with the producer).
        recv = subprocess.Popen(["taskset", "-c", "0", *receive_cmd(), "--listen", endpoint,
                                 "--out", str(out), "--stats", "0"],
                                stdout=subprocess.DEVNULL, stderr=open(recv_log, "w"))
        time.sleep(0.5)
        dest = ["--ship", endpoint]
    else:
        dest = ["--out", str(out)]
    cargs = ["taskset", "-c", "1", *collect, "--dir", registry, *dest, "--codec", codec,
             f"--level={level}", "--chunk-records", str(chunk_records), "--exit-when-idle",
             "--stats", "1"]
    log = Path(work) / f"{out.name}.collect.log"
    t_launch = None
    if prefill:
        prod.stdin.write("go\n")
        prod.stdin.flush()
        done = prod.stdout.readline().split()
        prod.wait()
        t_launch = time.monotonic()
        col = subprocess.Popen(cargs, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
        t0 = t_launch
    else:
        t_launch = time.monotonic()
        col = subprocess.Popen(cargs, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
        deadline = time.monotonic() + 30
        while not reader_attached(ring) and time.monotonic() < deadline:
            time.sleep(0.005)
        t0 = time.monotonic()
        prod.stdin.write("go\n")
        prod.stdin.flush()
        done = prod.stdout.readline().split()
        prod.wait()
    cpu = wait_rusage(col, timeout)
    t1 = time.monotonic()
    if recv is not None:
        time.sleep(1.0)          # the last chunks in flight
        recv.send_signal(signal.SIGINT)
        try:
            recv.wait(60)
        except subprocess.TimeoutExpired:
            recv.kill()
            recv.wait()
    t2 = time.monotonic()
    row = {"name": "e2e", "setting": label, "codec": codec, "level": level,
           "mode": ("prefilled" if prefill else "live") + ("_ship" if ship else "_dir"),
           "rate_per_s": rate, "ring_bytes": ring_bytes or 8 << 20,
           "chunk_records": chunk_records, "collector_rc": col.returncode,
           "collector_cmd": " ".join(cargs[3:]).replace(registry, "REGISTRY").replace(str(out), "OUT")}
    if not done or done[0] != "done":
        row["error"] = "producer did not finish"
        return row
    p_rec, p_drop, p_drop_pk, p_ids, p_ns = (int(x) for x in done[1:6])
    row.update(producer_records=p_rec, producer_drop_records=p_drop,
               producer_drop_packets=p_drop_pk, producer_ids=p_ids,
               producer_seconds=p_ns / 1e9, producer_records_per_s=(p_rec + p_drop) / (p_ns / 1e9))
    if cpu is None:
        row["error"] = f"collector did not exit within {timeout} s"
        return row
    try:
        d, nbytes = capture_totals(out)
    except Exception as exc:       # report, do not hide
        row["error"] = f"reading the capture: {exc}"
        d, nbytes = {}, None
    wall = t1 - t0
    recs, ids = d.get("records"), d.get("ids")
    row.update(wall_seconds=wall, launch_to_exit_seconds=t1 - t_launch,
               collector_cpu_seconds=cpu, captured_records=recs, captured_ids=ids,
               capture_bytes=nbytes, stored_bytes=d.get("stored_bytes"),
               capture_raw_bytes=d.get("raw_bytes"), chunks=d.get("chunks"),
               capture_drop_records=sum(st.get("drop_records", 0) for st in d.get("streams", [])),
               loss_totals=d.get("loss_totals"),
               receiver_stop_seconds=t2 - t1 if recv is not None else None)
    if recs:
        raw = recs * CAPTURE_RECORD_SIZE + ids * 8
        row.update(raw_bytes=raw, ratio=raw / nbytes,
                   records_per_s=recs / wall, records_per_cpu_s=recs / cpu if cpu else None,
                   raw_MBps=raw / wall / 1e6)
    rates = []
    for line in open(log):
        if "M records/s" in line and "stopped" not in line:
            try:
                rates.append(float(line.split("rings, ")[1].split(" M records/s")[0]))
            except (IndexError, ValueError):
                pass
    busy = [r for r in rates if r > 0]
    row.update(stats_M_records_per_s=rates,
               peak_stats_M_records_per_s=max(busy) if busy else None,
               collector_log_tail=open(log).read().strip().splitlines()[-2:])
    if recv is not None:
        row["receiver_log_tail"] = open(recv_log).read().strip().splitlines()[-2:]
    shutil.rmtree(out, ignore_errors=True)
    return row


def bench_e2e(quick, seed, settings=None, ship=True):
    collect = collector_cmd()
    if collect is None:
        return [{"name": "e2e", "skipped": "mscope-collect not found (neither on PATH "
                 "nor as python -m mscope.collector.daemon)"}]
    producer = build_producer()
    rec, ids = ring_span(65536 if quick else 262144, "loaded", seed)
    rows = []
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    settings = settings or (E2E_SETTINGS[:1] + E2E_SETTINGS[2:3] + E2E_SETTINGS[4:]
                            if quick else E2E_SETTINGS)
    bpr = (rec.size * 32 + ids.size * 8) / rec.size
    # Prefilled: as many records as a 1 GiB ring holds (record + ids, 8-byte
    # aligned; 90% of it to stay clear of the edge); 256 MiB with --quick.
    big = (256 << 20) if quick else (1 << 30)
    n_pre = int(big * 0.9 / (bpr))
    n_live = 50_000_000 if quick else 300_000_000
    with tempfile.TemporaryDirectory(prefix="mscope-bench-e2e-", dir=base) as work:
        span_file = str(Path(work) / "span.bin")
        write_span(span_file, rec, ids)
        for label, codec, level in settings:
            with harness.ring_registry() as reg:
                rows.append(e2e_run(label, codec, level, collect=collect, producer=producer,
                                    span_file=span_file, registry=reg, work=work,
                                    n_records=n_pre, ring_bytes=big, prefill=True))
            with harness.ring_registry() as reg:
                rows.append(e2e_run(label, codec, level, collect=collect, producer=producer,
                                    span_file=span_file, registry=reg, work=work,
                                    n_records=n_live))
        # The recommended setting again at the old default chunk size.
        if not quick:
            for label, codec, level in [s for s in settings if s[0] == "zstd--1"]:
                with harness.ring_registry() as reg:
                    rows.append(e2e_run(label, codec, level, collect=collect, producer=producer,
                                        span_file=span_file, registry=reg, work=work,
                                        n_records=n_pre, ring_bytes=big, prefill=True,
                                        chunk_records=E2E_COMPARE_CHUNK))
                with harness.ring_registry() as reg:
                    rows.append(e2e_run(label, codec, level, collect=collect, producer=producer,
                                        span_file=span_file, registry=reg, work=work,
                                        n_records=n_live, chunk_records=E2E_COMPARE_CHUNK))
        # Paced: the producer at a fixed rate for ~3 s (1 s with --quick),
        # default 8 MiB ring: the rate the collector sustains without ring
        # drops, with the setting recommended in docs/benchmarks.md.
        secs = 1.0 if quick else 3.0
        for rate in ([250_000, 1_000_000] if quick else [250_000, 500_000, 1_000_000, 2_000_000]):
            for label, codec, level in [s for s in settings if s[0] == "zstd--1"]:
                with harness.ring_registry() as reg:
                    rows.append(e2e_run(label, codec, level, collect=collect, producer=producer,
                                        span_file=span_file, registry=reg, work=work,
                                        n_records=int(rate * secs), rate=rate))
        if ship and receive_cmd() is not None:
            for label, codec, level in settings[:1] + [s for s in settings if s[0] == "zstd--1"]:
                with harness.ring_registry() as reg:
                    rows.append(e2e_run(label, codec, level, collect=collect, producer=producer,
                                        span_file=span_file, registry=reg, work=work,
                                        n_records=n_pre, ring_bytes=big, prefill=True, ship=True))
                with harness.ring_registry() as reg:
                    rows.append(e2e_run(label, codec, level, collect=collect, producer=producer,
                                        span_file=span_file, registry=reg, work=work,
                                        n_records=n_live, ship=True))
    for r in rows:
        r["span_bytes_per_record"] = round(bpr, 1)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python bench/collect.py codec --quick")
    ap.add_argument("part", nargs="?", choices=("codec", "e2e", "all"), default="all")
    ap.add_argument("--quick", action="store_true", help="smaller spans, fewer repeats")
    ap.add_argument("--span-records", type=int,
                    help="records synthesised per scenario (default 262144; --quick 65536)")
    ap.add_argument("--scenarios", default="loaded,mixed,saturated,light",
                    help="comma-separated, the first gets every setting (default loaded,mixed,saturated,light)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-ship", action="store_true", help="e2e: skip the --ship runs")
    ap.add_argument("--json-only", action="store_true", help="no tables")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="S",
                    help="first wait up to S seconds for the machine to be <10%% busy")
    args = ap.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r} (one of {', '.join(SCENARIOS)})")
    span = args.span_records or (65536 if args.quick else 262144)

    rows = []
    t0 = time.monotonic()
    busy = harness.wait_idle(args.wait_idle) if args.wait_idle else harness.cpu_busy_share()
    harness.warn_if_busy(busy)
    pinned = harness.pin_self(1)
    if args.part in ("codec", "all"):
        rows += bench_codec(span, scenarios, CHUNK_SIZES, args.quick, args.seed)
    if args.part in ("e2e", "all"):
        rows += bench_e2e(args.quick, args.seed, ship=not args.no_ship)
    shares = CPU_SHARES or [None]
    harness.emit({"name": "machine", **harness.machine_info(), "pinned_cpu1": pinned,
                  "min_own_cpu_share": None if shares[0] is None else round(min(shares), 3),
                  "seconds": round(time.monotonic() - t0, 2), "quick": args.quick,
                  "cpu_busy_before": None if busy is None else round(busy, 3)})
    for r in rows:
        harness.emit(r)
    if not args.json_only:
        print_tables(rows)
        print_e2e(rows)
    return 0


def _m(x):
    return f"{x / 1e6:.2f}"


def print_tables(rows):
    if not [r for r in rows if r["name"] in ("span", "codec")]:
        return
    spans = [r for r in rows if r["name"] == "span"]
    if spans:
        harness.table(
            ["scenario", "records", "ids", "mean batch", "rx bursts of 32", "bytes/record",
             "ids' share of raw", "span ms", "ids by ref", "distinct ids"],
            [[r["scenario"], r["records"], r["ids"], r["mean_batch"],
              f"{r['rx_batch_32_share']:.0%}", r["bytes_per_record"],
              f"{r['id_bytes_share']:.0%}", r["span_ms"], f"{r['ids_by_ref_share']:.1%}",
              f"{r['distinct_id_share']:.1%}"] for r in spans],
            "synthesised NF rings (one span per scenario, cut into chunks)")
    codec = [r for r in rows if r["name"] == "codec"]
    if not codec:
        return
    main = codec[0]["scenario"]
    plain = [r for r in codec if r["variant"] == "plain" and r["scenario"] == main]
    harness.table(
        ["setting", "chunk", "ratio", "+headers", "compress MB/s", "M rec/s",
         "encode_frame M rec/s", "decompress MB/s", "M rec/s dec", "records part", "ids part",
         "ids-only bound", "20M rec/s?"],
        [[r["setting"], r["chunk_records"], r["ratio"], r["ratio_with_headers"],
          r["compress_MBps"], _m(r["compress_records_per_s"]),
          _m(r["encode_frame_records_per_s"]),
          r["decompress_MBps"] if r["codec"] != CODEC_NONE else "-",
          _m(r["decompress_records_per_s"]) if r["codec"] != CODEC_NONE else "-",
          r.get("ratio_records_part", ""),
          r.get("ratio_ids_part", ""), r["ratio_bound_ids_only"],
          "yes" if r["compress_records_per_s"] >= TARGET_RECORDS_PER_S else "no"]
         for r in plain],
        f"capture format as it is ({main} scenario): ratio = raw / stored payload; "
        "speeds on one core (cpu 1), compress_payload alone and the whole encode_frame")
    proto = [r for r in codec if r["variant"] != "plain" and r["scenario"] == main]
    if proto:
        harness.table(
            ["variant", "setting", "chunk", "ratio", "compress MB/s", "M rec/s", "20M rec/s?"],
            [[r["variant"], r["setting"], r["chunk_records"], r["ratio"],
              r["compress_MBps"], _m(r["compress_records_per_s"]),
              "yes" if r["compress_records_per_s"] >= TARGET_RECORDS_PER_S else "no"]
             for r in proto],
            f"prototypes, not in the format ({main} scenario); time includes the C transform")
    other = [r for r in codec if r["scenario"] != main]
    if other:
        harness.table(
            ["scenario", "variant", "setting", "chunk", "ratio", "compress M rec/s",
             "records part", "ids part", "ids-only bound"],
            [[r["scenario"], r["variant"], r["setting"], r["chunk_records"], r["ratio"],
              _m(r["compress_records_per_s"]), r.get("ratio_records_part", ""),
              r.get("ratio_ids_part", ""), r["ratio_bound_ids_only"]] for r in other],
            "other load scenarios")
    parts = [r for r in rows if r["name"] == "cost_part"]
    if parts:
        harness.table(
            ["step", "chunk", "ns/record", "M rec/s", "raw MB/s"],
            [[r["step"], r["chunk_records"], r["ns_per_record"], _m(r["records_per_s"]),
              r["raw_MBps"]] for r in parts],
            f"where a chunk's time goes ({main} scenario), each step alone")
    print("\nvariants: " + "; ".join(f"{k}: {v[1]}" for k, v in VARIANTS.items()))


def print_e2e(rows):
    e2e = [r for r in rows if r["name"] == "e2e"]
    for r in e2e:
        if "skipped" in r:
            print(f"\nend to end: skipped ({r['skipped']})")
        elif "error" in r:
            print(f"\nend to end {r.get('setting')} {r.get('mode')}: ERROR {r['error']}")
    e2e = [r for r in e2e if "skipped" not in r and "error" not in r]
    if not e2e:
        return
    def steady(r):
        busy = [x for x in r["stats_M_records_per_s"] if x > 0]
        return f"{min(busy):.2f}-{max(busy):.2f}" if busy else "-"
    harness.table(
        ["mode", "setting", "chunk", "rate/s", "produced", "ring drops", "captured",
         "rec/frame", "wall s", "M rec/s", "steady M rec/s", "M rec/CPU-s", "MB/s raw",
         "capture MB", "ratio", "rc", "20M?", "4x?"],
        [[r["mode"], r["setting"], r["chunk_records"], r["rate_per_s"] or "max",
          r["producer_records"] + r["producer_drop_records"], r["producer_drop_records"],
          r["captured_records"],
          round(r["captured_records"] / r["chunks"]) if r.get("chunks") else "-",
          r["wall_seconds"], _m(r["records_per_s"]), steady(r),
          _m(r["records_per_cpu_s"]), r["raw_MBps"], r["capture_bytes"] / 1e6, r["ratio"],
          r["collector_rc"],
          "yes" if r["records_per_s"] >= TARGET_RECORDS_PER_S else "no",
          "yes" if r["ratio"] >= TARGET_RATIO else "no"] for r in e2e],
        "end to end: replay_producer (cpu 0) -> mscope-collect (cpu 1) -> capture on tmpfs; "
        "wall from the producer's start (prefilled: the collector's launch) to the collector's exit; "
        "steady: the collector's own --stats 1 lines (seconds it had records)")


if __name__ == "__main__":
    sys.exit(main())
