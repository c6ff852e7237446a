#!/usr/bin/env python3
"""Records per second drained from an mscope ring by the Cython RingReader.

Target (issue 2): >= 20 M records/s drained on one core.

Two settings, both with records of 32 packet ids (288 bytes in the ring):

* prefilled: fastpath_bench fill (cpu 0) fills a large ring (default
  1 GiB, ~3.7 M records; a ring holds at most its data size) and waits;
  this process, pinned to cpu 1, drains it with RingReader.drain_into()
  into preallocated arrays of 4096 or 65536 records (a fresh ring each),
  then has it filled and drains it again: the first lap runs on a fresh
  mapping (faulted in at open by MAP_POPULATE), the second on a warm one.  The
  allocating RingReader.drain() is measured the same way.
* concurrent: fastpath_bench produce writes records as fast as it can on
  cpu 0 into a default-sized (8 MiB) ring for a second while this process
  drains it on cpu 1, back to back while there is anything to drain.  The
  producer outruns the reader, so the ring is never empty and the figure is
  the reader's capacity on hot data, cache-line traffic with a live
  producer included (the producer's drop count says it was outrun).

At the end, bench_capture_reader() measures the pure-numpy capture reader
(mscope.capture) on a capture written with CaptureWriter, if that module
is there.

    python bench/reader.py            # ~30 s
    python bench/reader.py --quick    # ~5 s (128 MiB ring, shorter runs)
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import harness

TARGET_RECORDS_PER_S = 20e6


# Concurrent runs: the reader drains back to back while there is anything
# to drain and sleeps this long after a poll that found the ring empty, as
# mscope-collect's loop would.
POLL_BACKOFF_S = 200e-6


def drain_loop(drain_call, producer=None):
    """Call drain_call() until the ring is empty (and `producer`, if given,
    has exited).

    Returns
    -------
    calls : list of (ns, records, ids), one per call that found records
    wall_ns : int
        From the first call that found records to the last one's end.
    empty_polls : int
    """
    calls = []
    empty_polls = 0
    started = end = None
    while True:
        t0 = time.perf_counter_ns()
        n, k = drain_call()
        t1 = time.perf_counter_ns()
        if n:
            if started is None:
                started = t0
            calls.append((t1 - t0, n, k))
            end = t1
            continue
        empty_polls += 1
        if producer is None or producer.poll() is not None:
            break
        time.sleep(POLL_BACKOFF_S)
    return calls, (end - started) if started is not None else 0, empty_polls


def summarise(name, mode, batch, array_records, calls, wall_ns, extra=None):
    """One JSON row.

    records_per_s is records over the time spent inside the drain calls
    (the reader's capacity on its core); wall_records_per_s is over the
    wall clock from the first to the last call (the same, for a prefilled
    ring drained back to back).  ns_median/p10/p90: ns per record of each
    call that returned a full array (all calls if none did).
    """
    recs = sum(c[1] for c in calls)
    ids = sum(c[2] for c in calls)
    busy = sum(c[0] for c in calls) / 1e9
    full = [c for c in calls if c[1] == array_records] or calls
    med, p10, p90 = harness.percentiles([c[0] / c[1] for c in full]) if full else (0, 0, 0)
    wall = wall_ns / 1e9 if wall_ns else float("nan")
    row = {"name": name, "mode": mode, "batch": batch, "array_records": array_records,
           "ns_median": round(med, 3), "p10": round(p10, 3), "p90": round(p90, 3),
           "runs": len(full), "calls": len(calls), "records": recs, "ids": ids,
           "busy_seconds": round(busy, 4), "wall_seconds": round(wall, 4),
           "records_per_s": recs / busy, "ids_per_s": ids / busy,
           "bytes_per_s": (recs * 32 + ids * 8) / busy,
           "wall_records_per_s": recs / wall,
           "target_records_per_s": TARGET_RECORDS_PER_S,
           "meets_target": recs / busy >= TARGET_RECORDS_PER_S}
    row.update(extra or {})
    return row


def bench_prefilled(binary, registry, ring_bytes, batch, sizes):
    """Drain a full ring twice per method and array size.

    fastpath_bench fill (cpu 0) fills the ring and waits; we drain it all
    (lap 0: our mapping of the file is fresh; MAP_POPULATE faulted it in
    at open), tell it to fill again and drain again (lap 1: the
    mapping is warm, the data still cold, as for a collector in steady
    state that fell behind).
    """
    from mscope.collector import RingReader

    out = []
    plans = [("ring_reader_drain_into", s) for s in sizes] + [("ring_reader_drain", 65536)]
    for name, size in plans:
        proc = subprocess.Popen(
            [binary, "fill", "--dir", registry, "--ring-bytes", str(ring_bytes),
             "--records", str(1 << 40), "--batch", str(batch), "--laps", "2",
             "--cpu", "0", "--runs", "10"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        path = None
        try:
            fill = json.loads(proc.stdout.readline())
            path = fill["path"]
            with RingReader(path) as reader:
                if name == "ring_reader_drain_into":
                    recs, ids = preallocated(size, batch)
                    call = lambda: reader.drain_into(recs, ids)        # noqa: E731
                else:
                    def call():
                        r, i = reader.drain(max_records=size)
                        return len(r), len(i)
                for lap, mode in enumerate(("prefilled_fresh_map", "prefilled")):
                    if lap:
                        proc.stdin.write("next\n")
                        proc.stdin.flush()
                        fill = json.loads(proc.stdout.readline())
                    calls, wall, _ = drain_loop(call)
                    if name == "ring_reader_drain" and lap == 0:
                        continue      # one figure is enough for drain()
                    out.append(summarise(name, mode, batch, size, calls, wall,
                                         {"ring_bytes": ring_bytes,
                                          "fill_records": fill["records"]}))
        finally:
            if proc.poll() is None:
                proc.stdin.close()
            proc.wait(timeout=60)
            if path and os.path.exists(path):
                os.unlink(path)
    return out


def bench_c_drain(binary, registry, ring_bytes, batch):
    """fastpath_bench drain: the C reader against memcpy of the same bytes."""
    return [r for r in harness.run_json_lines(
        [binary, "drain", "--dir", registry, "--ring-bytes", str(ring_bytes),
         "--batch", str(batch), "--records", "4096", "--runs", "50"])
        if r.get("name", "").startswith("c_")]


def preallocated(size, batch):
    """Record and id arrays for drain_into, faulted in (as a collector's
    long-lived buffers are) so the first call does not pay page faults."""
    from mscope.record import RING_RECORD_DTYPE

    recs = np.empty(size, RING_RECORD_DTYPE)
    ids = np.empty(size * batch, np.uint64)
    recs.view(np.uint8).fill(0)
    ids.fill(0)
    return recs, ids


def bench_concurrent(binary, registry, seconds, batch, sizes, ring_bytes):
    """Drain while fastpath_bench produce writes as fast as it can."""
    from mscope.collector import RingReader

    out = []
    for size in sizes:
        proc = subprocess.Popen(
            [binary, "produce", "--dir", registry, "--seconds", str(seconds),
             "--batch", str(batch), "--cpu", "0", "--runs", "10",
             *(["--ring-bytes", str(ring_bytes)] if ring_bytes else [])],
            stdout=subprocess.PIPE, text=True)
        try:
            ready = json.loads(proc.stdout.readline())
            recs, ids = preallocated(size, batch)
            with RingReader(ready["path"]) as reader:
                calls, wall, empty = drain_loop(
                    lambda: reader.drain_into(recs, ids), producer=proc)
            done = json.loads(proc.stdout.readline())
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for f in glob.glob(os.path.join(registry, "bench-produce.*.ring")):
                os.unlink(f)
        out.append(summarise(
            "ring_reader_drain_into", "concurrent", batch, size, calls, wall,
            {"ring_bytes": ring_bytes or 8 << 20, "producer_records": done["records"],
             "producer_drop_records": done["drop_records"],
             "producer_seconds": done["seconds"], "empty_polls": empty,
             "poll_backoff_s": POLL_BACKOFF_S}))
    return out


# ---------------------------------------------------------------------------
# The capture reader (mscope.capture, pure numpy).  Written against the API
# CaptureWriter(path, codec=...), add_host, add_stream, write_chunk, and
# open_capture(path).read() -> .records, .ids; skipped if the import fails.
# ---------------------------------------------------------------------------

def bench_capture_reader(workdir, n_records=1_000_000, batch=32,
                         codecs=("zstd", "lz4", "none"), chunk_records=65536,
                         repeats=3):
    """Records/s and ids/s of ``open_capture(path).read()``.

    Writes, per codec, one capture of `n_records` records of `batch` ids
    each (one host, one stream, chunks of `chunk_records`) with
    CaptureWriter, then times `repeats` full reads (page cache warm).

    Parameters
    ----------
    workdir : str
        Where the captures go; each is removed once measured.
    n_records, batch, chunk_records, repeats : int
    codecs : sequence of str

    Returns
    -------
    list of dict
        One JSON row per codec (``name`` "capture_read"), or one row with
        ``skipped`` when mscope.capture cannot be imported.
    """
    try:
        from mscope.capture import CaptureWriter, open_capture
        from mscope.capture.format import CAPTURE_RECORD_DTYPE
    except ImportError as exc:
        return [{"name": "capture_read", "skipped": f"mscope.capture: {exc}"}]

    rng = np.random.default_rng(1)
    out = []
    for codec in codecs:
        path = os.path.join(workdir, f"cap-{codec}")
        try:
            writer = CaptureWriter(path, codec=codec)
        except (ValueError, ImportError) as exc:   # codec package missing
            out.append({"name": "capture_read", "codec": codec, "skipped": str(exc)})
            continue
        t0 = time.perf_counter()
        with writer as w:
            host = w.add_host("bench")
            stream = w.add_stream(host, 1, "bench-nf")
            for start in range(0, n_records, chunk_records):
                m = min(chunk_records, n_records - start)
                recs = np.zeros(m, CAPTURE_RECORD_DTYPE)
                recs["seq"] = np.arange(start, start + m)
                recs["time_ns"] = 1_000_000 + 3_200 * recs["seq"].astype(np.int64)
                recs["count"] = batch
                recs["flags"] = recs["seq"] & 1
                recs["occupancy"] = 7
                # Realistic ids: 64-bit hashes, not a compressible counter.
                ids = rng.integers(0, 1 << 63, m * batch, dtype=np.uint64, endpoint=False)
                w.write_chunk(stream, recs, ids, final=start + m >= n_records)
        write_s = time.perf_counter() - t0
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            data = open_capture(path).read()
            times.append(time.perf_counter_ns() - t0)
            got_r, got_i = len(data.records), len(data.ids)
            del data
        shutil.rmtree(path)           # ~290 MB each: one at a time
        med, p10, p90 = harness.percentiles(times)
        out.append({
            "name": "capture_read", "codec": codec, "batch": batch,
            "records": got_r, "ids": got_i, "expected_records": n_records,
            "ns_median": round(med / got_r, 3), "p10": round(p10 / got_r, 3),
            "p90": round(p90 / got_r, 3), "runs": repeats,
            "records_per_s": got_r / (med / 1e9), "ids_per_s": got_i / (med / 1e9),
            "best_records_per_s": got_r / (min(times) / 1e9),
            "bytes_on_disk": size, "write_records_per_s": n_records / write_s,
        })
    return out


def print_tables(rows):
    ring = [r for r in rows if r["name"].startswith("ring_reader")]
    harness.table(
        ["method", "setting", "array", "M records/s", "M ids/s", "GB/s",
         "wall M rec/s", "ns/record", "p10", "p90", "calls", "target >=20M"],
        [[r["name"].replace("ring_reader_", ""), r["mode"], r["array_records"],
          r["records_per_s"] / 1e6, r["ids_per_s"] / 1e6, r["bytes_per_s"] / 1e9,
          r["wall_records_per_s"] / 1e6, r["ns_median"], r["p10"], r["p90"], r["calls"],
          "met" if r["meets_target"] else "MISSED"] for r in ring],
        "RingReader on one core (cpu 1), batch 32 (288 bytes per record); "
        "M records/s over time inside the drain calls")
    conc = [r for r in ring if r["mode"] == "concurrent"]
    if conc:
        harness.table(
            ["array", "producer M records", "producer M rec/s", "producer drops",
             "empty polls", "reader busy share"],
            [[r["array_records"], r["producer_records"] / 1e6,
              r["producer_records"] / r["producer_seconds"] / 1e6, r["producer_drop_records"],
              r["empty_polls"], f"{r['busy_seconds'] / r['wall_seconds']:.0%}"] for r in conc],
            "concurrent runs: the producer (cpu 0) side")
    c = [r for r in rows if r["name"].startswith("c_")]
    if c:
        harness.table(
            ["C loop", "ring data", "ring MiB", "M records/s", "ns/record", "p10", "p90"],
            [[r["name"], r["mode"], r["ring_bytes"] >> 20, r["records_per_s"] / 1e6,
              r["ns_median"], r["p10"], r["p90"]] for r in c],
            "what bounds it: mscope_reader_drain vs memcpy of the same bytes, array 4096")
    cap = [r for r in rows if r["name"] == "capture_read"]
    for r in cap:
        if "skipped" in r:
            print(f"\ncapture reader {r.get('codec', '')}: skipped ({r['skipped']})")
    cap = [r for r in cap if "skipped" not in r]
    if cap:
        harness.table(
            ["codec", "records", "M records/s", "best M rec/s", "M ids/s", "ns/record",
             "p10", "p90", "MB on disk", "write M rec/s"],
            [[r["codec"], r["records"], r["records_per_s"] / 1e6,
              r["best_records_per_s"] / 1e6, r["ids_per_s"] / 1e6,
              r["ns_median"], r["p10"], r["p90"], r["bytes_on_disk"] / 1e6,
              r["write_records_per_s"] / 1e6] for r in cap],
            "capture reader: open_capture(path).read(), batch 32, one core")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python bench/reader.py --quick")
    ap.add_argument("--quick", action="store_true", help="smaller ring, shorter runs")
    ap.add_argument("--ring-bytes", type=int, help="prefilled ring size (default 1 GiB)")
    ap.add_argument("--seconds", type=float, help="concurrent producer run (default 1)")
    ap.add_argument("--batch", type=int, default=32, help="ids per record (default 32)")
    ap.add_argument("--no-capture", action="store_true", help="skip the capture reader")
    ap.add_argument("--json-only", action="store_true", help="no tables")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="S",
                    help="first wait up to S seconds for the machine to be <10%% busy")
    args = ap.parse_args(argv)

    ring_bytes = args.ring_bytes or ((128 << 20) if args.quick else (1 << 30))
    seconds = args.seconds or (0.3 if args.quick else 1.0)
    sizes = (4096, 65536)
    pinned = harness.pin_self(1)
    binary = str(harness.build_fastpath())
    busy = harness.wait_idle(args.wait_idle) if args.wait_idle else harness.cpu_busy_share()
    harness.warn_if_busy(busy)
    t0 = time.monotonic()
    rows = []
    with harness.ring_registry() as registry:
        rows += bench_prefilled(binary, registry, ring_bytes, args.batch, sizes)
        rows += bench_concurrent(binary, registry, seconds, args.batch, sizes, 0)
        rows += bench_c_drain(binary, registry, ring_bytes, args.batch)
    if not args.no_capture:
        # tmpfs: the figure is the reader's, not the disk's (a capture just
        # written sits in the page cache anyway).
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        with tempfile.TemporaryDirectory(prefix="mscope-bench-cap-", dir=base) as work:
            rows += bench_capture_reader(work, n_records=200_000 if args.quick else 1_000_000,
                                         batch=args.batch, repeats=3 if args.quick else 5)
    harness.emit({"name": "machine", **harness.machine_info(), "reader_pinned_cpu1": pinned,
                  "seconds": round(time.monotonic() - t0, 2), "quick": args.quick,
                  "cpu_busy_before": None if busy is None else round(busy, 3)})
    for r in rows:
        harness.emit(r)
    if not args.json_only:
        print_tables(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
