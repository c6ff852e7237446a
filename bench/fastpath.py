#!/usr/bin/env python3
"""Fast-path cost of the mscope recorder (foundation issue 2).

Builds bench/fastpath/fastpath_bench.c with gcc -O2 against the installed
libmscope.so and headers (and DPDK through pkg-config), runs it pinned to
cores 0 (producer) and 1 (consumer), and prints one JSON object per
measurement, then tables.  See bench/README.md for what each figure means.

    python bench/fastpath.py            # ~20 s
    python bench/fastpath.py --quick    # ~10 s, fewer runs
    python bench/fastpath.py --no-dpdk  # mscope_record_ids only
    python bench/fastpath.py --old-lib /path/to/old/libmscope.so --only mbuf
                                        # A/B of two builds, interleaved

Target (issue 2): <= 40 ns per 32-packet batch and <= 1 ns per extra
packet for mscope_record_ids, read here as: median at batch 32 <= 40 ns and
least-squares slope over batches 1..64 <= 1 ns/packet.
"""
import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import harness

TARGET_BATCH32_NS = 40.0
TARGET_SLOPE_NS = 1.0
TABLE_BATCHES = (1, 8, 32, 64)

# (config tag, subcommand, arguments); mbuf configs need DPDK.
CONFIGS = [
    ("raw", "raw", ["--consumer", "none"]),
    ("raw", "raw", ["--consumer", "busy"]),
    ("raw", "raw", ["--consumer", "timer"]),
    ("raw", "raw", ["--consumer", "gap"]),
    ("parts", "parts", []),
    ("drop", "drop", []),
    ("mbuf", "mbuf", []),
    ("mbuf", "mbuf", ["--consumer", "busy"]),
    ("mbuf", "mbuf", ["--consumer", "timer"]),
    ("mbuf", "mbuf", ["--consumer", "gap"]),
    ("mbuf", "mbuf", ["--cold"]),
    ("mbuf", "mbuf", ["--mix", "udp64"]),
    ("mbuf", "mbuf", ["--pool", "page"]),
    ("mbuf", "mbuf", ["--addrs"]),
]

RAW_MODES = ("no_consumer", "no_consumer_gap", "consumer_timer", "consumer_busy")
MBUF_VARIANTS = ("mbuf_baseline", "mbuf_rx", "mbuf_rx_tx", "mbuf_tx_hash",
                 "mbuf_pktid_only", "mbuf_prefetch_rx")


def run_all(binary, registry, runs_raw, runs_mbuf, with_dpdk, wait_idle, libs=(("new", []),),
            only=None):
    """Every config, each with every library of `libs` ((tag, command
    prefix) pairs: the prefix points the dynamic linker at another
    libmscope.so), one after the other, so an A/B shares the machine's
    state; rows carry the library's tag as "lib"."""
    rows = []
    for k, (tag, cmd, args) in enumerate(CONFIGS):
        if cmd == "mbuf" and not with_dpdk:
            continue
        if only and tag not in only:
            continue
        for lib_tag, prefix_cmd in (libs if k % 2 == 0 else libs[::-1]):
            busy = harness.wait_idle(wait_idle) if wait_idle else harness.cpu_busy_share(0.2)
            harness.warn_if_busy(busy)
            first = len(rows)
            if cmd == "mbuf":
                prefix, eal = harness.eal_args(f"fp{k}")
                try:
                    rows += harness.run_json_lines(
                        [*prefix_cmd, binary, "mbuf", *eal, "--", "--dir", registry,
                         "--runs", str(runs_mbuf), *args], tag=tag)
                finally:
                    harness.remove_eal_runtime(prefix)
            else:
                rows += harness.run_json_lines(
                    [*prefix_cmd, binary, cmd, "--dir", registry, "--runs", str(runs_raw),
                     *args], tag=tag)
            for r in rows[first:]:
                r["cpu_busy_before"] = None if busy is None else round(busy, 3)
                r["lib"] = lib_tag
    return rows


def by_key(rows, name):
    """{(mode, batch): row} for rows of one measurement name."""
    return {(r["mode"], r["batch"]): r for r in rows if r.get("name") == name}


def record_ids_fits(rows):
    out = []
    rec = by_key(rows, "record_ids")
    for mode in sorted({m for m, _ in rec}):
        pts = sorted((b, r["ns_median"]) for (m, b), r in rec.items() if m == mode)
        xs, ys = [b for b, _ in pts], [y for _, y in pts]
        intercept, slope = harness.least_squares(xs, ys)
        r2 = harness.r_squared(xs, ys, intercept, slope)
        at32 = rec[(mode, 32)]["ns_median"]
        out.append({
            "name": "record_ids_fit", "mode": mode,
            "batches": xs, "r2": round(r2, 3),
            "intercept_ns": round(intercept, 3), "slope_ns_per_pkt": round(slope, 4),
            "ns_batch32_median": at32,
            "target_batch32_ns": TARGET_BATCH32_NS, "target_slope_ns_per_pkt": TARGET_SLOPE_NS,
            "meets_batch32": at32 <= TARGET_BATCH32_NS,
            "meets_slope": slope <= TARGET_SLOPE_NS,
        })
    return out


def mbuf_marginals(rows):
    """Recorder cost over the baseline loop, per mode and batch (medians)."""
    v = {name: by_key(rows, name) for name in MBUF_VARIANTS}
    raw = by_key(rows, "record_ids")
    out = []
    for (mode, b), base in sorted(v["mbuf_baseline"].items()):
        med = {name: v[name][(mode, b)]["ns_median"] for name in MBUF_VARIANTS}
        raw_mode = max((m for m in RAW_MODES if mode.startswith(m)), key=len)
        raw_row = raw.get((raw_mode, b))
        row = {
            "name": "mbuf_marginal", "mode": mode, "batch": b,
            "baseline_ns": med["mbuf_baseline"],
            "rx_ns": med["mbuf_rx"] - med["mbuf_baseline"],
            "rx_tx_ns": med["mbuf_rx_tx"] - med["mbuf_baseline"],
            "tx_stamped_ns": med["mbuf_rx_tx"] - med["mbuf_rx"],
            "tx_hash_ns": med["mbuf_tx_hash"] - med["mbuf_baseline"],
            "pktid_ns": med["mbuf_pktid_only"] - med["mbuf_baseline"],
            "prefetch_rx_ns": med["mbuf_prefetch_rx"] - med["mbuf_baseline"],
            "ratio_rx_tx_over_baseline": med["mbuf_rx_tx"] / med["mbuf_baseline"],
            "raw_record_ids_ns": raw_row["ns_median"] if raw_row else None,
        }
        for k in ("rx_ns", "rx_tx_ns", "tx_stamped_ns", "tx_hash_ns", "pktid_ns",
                  "prefetch_rx_ns"):
            row[k] = round(row[k], 3)
            row[k.replace("_ns", "_ns_per_pkt")] = round(row[k] / b, 3)
        row["ratio_rx_tx_over_baseline"] = round(row["ratio_rx_tx_over_baseline"], 3)
        out.append(row)
    # Per-packet slope of the rx and rx+tx marginals, per mode.
    for mode in sorted({r["mode"] for r in out}):
        pts = [r for r in out if r["mode"] == mode]
        b = [r["batch"] for r in pts]
        i_rx, s_rx = harness.least_squares(b, [r["rx_ns"] for r in pts])
        i_rt, s_rt = harness.least_squares(b, [r["rx_tx_ns"] for r in pts])
        out.append({"name": "mbuf_marginal_fit", "mode": mode,
                    "rx_intercept_ns": round(i_rx, 2), "rx_slope_ns_per_pkt": round(s_rx, 3),
                    "rx_tx_intercept_ns": round(i_rt, 2),
                    "rx_tx_slope_ns_per_pkt": round(s_rt, 3)})
    return out


def print_tables(rows, derived):
    tsc = [r for r in rows if r.get("name") == "tsc"]
    if tsc:
        hz = tsc[0]["tsc_hz"]
        extra = f", DPDK rte_get_tsc_hz {[r['rte_tsc_hz'] for r in tsc if 'rte_tsc_hz' in r][0] / 1e6:.1f} MHz" \
            if any("rte_tsc_hz" in r for r in tsc) else ""
        print(f"\nTSC {hz / 1e6:.1f} MHz, calibrated against CLOCK_MONOTONIC{extra}")

    rec = by_key(rows, "record_ids")
    harn = by_key(rows, "harness_call")
    trs = []
    for mode in RAW_MODES:
        for b in TABLE_BATCHES:
            r = rec.get((mode, b))
            if r:
                trs.append([mode, b, r["ns_median"], r["p10"], r["p90"],
                            r["ns_per_pkt_median"], r.get("drop_records", 0),
                            harn[(mode, b)]["ns_median"]])
    harness.table(["mode", "batch", "ns/record", "p10", "p90", "ns/pkt", "drops",
                   "loop+call"], trs,
                  "mscope_record_ids: ns per call (one record), median over runs of 256 calls")
    fits = [d for d in derived if d["name"] == "record_ids_fit"]
    harness.table(
        ["mode", "fit: ns + ns/pkt", "R^2", "at 32 (measured)", "target <=40 ns @32",
         "target <=1 ns/pkt"],
        [[f["mode"], f"{f['intercept_ns']:.1f} + {f['slope_ns_per_pkt']:.3f}*n", f["r2"],
          f["ns_batch32_median"], "met" if f["meets_batch32"] else "MISSED",
          ("met" if f["meets_slope"] else "MISSED") + (" (poor fit)" if f["r2"] < 0.8 else "")]
         for f in fits],
        "least-squares over batch 1,2,4,8,16,32,48,64 (poor fit: cost not linear in n)")

    parts = defaultdict(dict)
    for r in rows:
        if r.get("name", "").startswith("parts_"):
            parts[r["batch"]][r["name"][6:]] = r["ns_median"]
    if parts:
        cols = ["record_ids", "inline_write", "inline_no_tsc", "inline_no_copy", "rdtsc_only",
                "rx_ids_addrs"]
        harness.table(["batch", *cols], [[b, *[parts[b].get(c) for c in cols]]
                                         for b in sorted(parts)],
                      "where the raw cost goes (no consumer): ns per call, medians")

    drops = [r for r in rows if r.get("name") == "drop_path"]
    if drops:
        harness.table(["batch", "ns/dropped record", "p10", "p90", "dropped"],
                      [[r["batch"], r["ns_median"], r["p10"], r["p90"], r["dropped"]]
                       for r in drops], "drop path (ring full, 64 KiB ring)")

    m = [d for d in derived if d["name"] == "mbuf_marginal"]
    if not m:
        return
    v = {name: by_key(rows, name) for name in MBUF_VARIANTS}
    main = [[name, b, v[name][("no_consumer", b)]["ns_median"], v[name][("no_consumer", b)]["p10"],
             v[name][("no_consumer", b)]["p90"], v[name][("no_consumer", b)]["ns_per_pkt_median"]]
            for b in TABLE_BATCHES for name in MBUF_VARIANTS if ("no_consumer", b) in v[name]]
    harness.table(["variant", "batch", "ns/batch", "p10", "p90", "ns/pkt"], main,
                  "rte_mbuf batches, no consumer, warm caches (each variant includes the "
                  "baseline loop)")
    harness.table(
        ["mode", "batch", "baseline", "+rx", "+rx+tx", "tx(stamp)", "tx(hash)",
         "pktid only", "prefetch+rx", "(rx+tx)/base", "raw record_ids"],
        [[d["mode"], d["batch"], d["baseline_ns"], d["rx_ns"], d["rx_tx_ns"],
          d["tx_stamped_ns"], d["tx_hash_ns"], d["pktid_ns"], d["prefetch_rx_ns"],
          d["ratio_rx_tx_over_baseline"], d["raw_record_ids_ns"]]
         for d in m if d["batch"] in TABLE_BATCHES],
        "recorder cost over the baseline loop, ns per batch (differences of medians)")
    harness.table(["mode", "rx: ns + ns/pkt", "rx+tx: ns + ns/pkt"],
                  [[d["mode"], f"{d['rx_intercept_ns']:.1f} + {d['rx_slope_ns_per_pkt']:.2f}*n",
                    f"{d['rx_tx_intercept_ns']:.1f} + {d['rx_tx_slope_ns_per_pkt']:.2f}*n"]
                   for d in derived if d["name"] == "mbuf_marginal_fit"],
                  "least-squares fit of the marginals over batch 1..64")


def print_ab(new, old):
    """The rte_mbuf marginals of the two builds side by side."""
    o = {(d["mode"], d["batch"]): d for d in old if d["name"] == "mbuf_marginal"}
    cols = ("rx_ns", "rx_tx_ns", "tx_stamped_ns", "tx_hash_ns", "pktid_ns")
    out = []
    for d in new:
        if d["name"] != "mbuf_marginal" or d["batch"] not in TABLE_BATCHES:
            continue
        b = o.get((d["mode"], d["batch"]))
        if b:
            out.append([d["mode"], d["batch"], *[f"{d[c]:.1f} / {b[c]:.1f}" for c in cols]])
    harness.table(["mode", "batch", "+rx new/old", "+rx+tx new/old", "tx(stamp) new/old",
                   "tx(hash) new/old", "pktid only new/old"], out,
                  "A/B (--old-lib): recorder cost over the baseline loop, ns per batch, "
                  "this build / the old one")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python bench/fastpath.py --quick")
    ap.add_argument("--quick", action="store_true", help="fewer runs (~10 s)")
    ap.add_argument("--runs", type=int, help="timed runs per raw measurement (default 1000)")
    ap.add_argument("--mbuf-runs", type=int, help="timed runs per mbuf measurement (default 300)")
    ap.add_argument("--no-dpdk", action="store_true", help="skip the rte_mbuf part")
    ap.add_argument("--json-only", action="store_true", help="no tables")
    ap.add_argument("--old-lib", metavar="SO", help="another libmscope.so (a copy of an "
                    "earlier build): every config also runs against it, interleaved, and "
                    "an A/B table of the rte_mbuf marginals follows (same bench binary; "
                    "LD_LIBRARY_PATH picks the library)")
    ap.add_argument("--only", help="comma-separated config tags to run: raw, parts, drop, "
                    "mbuf (default: all)")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="S",
                    help="before each part, wait up to S seconds for the machine to be "
                         "<10%% busy (shared machines)")
    args = ap.parse_args(argv)

    runs_raw = args.runs or (150 if args.quick else 1000)
    runs_mbuf = args.mbuf_runs or (60 if args.quick else 300)
    with_dpdk = not args.no_dpdk and harness.have_dpdk()
    binary = harness.build_fastpath()
    busy = harness.cpu_busy_share()
    t0 = time.monotonic()
    libs = [("new", [])]
    if args.old_lib:
        old = Path(args.old_lib).resolve()
        if old.name != "libmscope.so":
            raise SystemExit("--old-lib: the file must be named libmscope.so (the soname)")
        libs.append(("old", ["env", f"LD_LIBRARY_PATH={old.parent}"]))
    only = set(args.only.split(",")) if args.only else None
    with harness.ring_registry() as registry:
        all_rows = run_all(str(binary), registry, runs_raw, runs_mbuf, with_dpdk,
                           args.wait_idle, libs, only)
    elapsed = time.monotonic() - t0
    rows = [r for r in all_rows if r.get("lib") == "new"]
    old_rows = [r for r in all_rows if r.get("lib") == "old"]
    derived = record_ids_fits(rows) + mbuf_marginals(rows)
    old_derived = mbuf_marginals(old_rows) if old_rows else []
    for d in old_derived:
        d["lib"] = "old"

    harness.emit({"name": "machine", **harness.machine_info(),
                  "tsc_hz": next(r["tsc_hz"] for r in rows if r.get("name") == "tsc"),
                  "seconds": round(elapsed, 2), "quick": args.quick,
                  "cpu_busy_before": None if busy is None else round(busy, 3)})
    for r in all_rows + derived + old_derived:
        harness.emit(r)
    if not args.json_only:
        print_tables(rows, derived)
        if old_derived:
            print_ab(derived, old_derived)
        print(f"\n({elapsed:.1f} s; producer pinned to cpu 0, consumer to cpu 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
