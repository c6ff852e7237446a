#!/usr/bin/env python3
"""A window of a long capture, read with and without the frame index.

`mscope diagnose CAP --from MS --to MS` decodes only the frames near its
window. Which frames those are, the segments' frame indexes say
(chunks-NNNNNN.idx, docs/capture-format.md); without them the reader
takes each frame's first record from its payload (read, checksummed, its
first block decompressed), for every frame of the capture. This script
diagnoses windows of one capture both ways, alternating, one thread on
one CPU, and prints the medians and their ratio.

The two ways read the same segment files: two directories of symbolic
links to the capture's segments and manifest, one with the index files
beside them (written there by `mscope capture index` where the capture
has none), one without.

    python bench/window.py                    # simulates 10 minutes of a quiet chain (~1 min) first
    python bench/window.py --capture DIR      # an existing capture; windows from its middle
    python bench/window.py --minutes 2 --runs 3

Prints one JSON object per run, then a summary object and a table.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import harness
from mscope.demo import DEMO_SCENARIO

#: The demo's fw -> nat -> vpn at 5 kpps (idle polls every 20 us); nat
#: stalls 5 ms midway (simulate())
SCENARIO = dict(DEMO_SCENARIO, name="long-light", seed=5,
                traffic=dict(DEMO_SCENARIO["traffic"], rate_mpps=0.005, flows=500))


def simulate(minutes, out):
    from mscope.sim.run import simulate_to_capture
    from mscope.sim.scenario import load_scenario
    ms = minutes * 60_000
    spec = dict(SCENARIO, duration_ms=ms,
                faults=[{"id": "i1", "kind": "interrupt", "nf": "nat", "at_ms": ms / 2,
                         "duration_us": 5000}])
    path = out / "scenario.json"
    path.write_text(json.dumps(spec))
    t0 = time.monotonic()
    simulate_to_capture(load_scenario(path), out / "cap", log=lambda *a, **k: None)
    print(f"simulated {minutes} min in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return out / "cap"


def linked(cap, out, with_index):
    """`out`: links to `cap`'s manifest and segments, and its index files
    where `with_index` (written there where `cap` has none)."""
    from mscope.capture.reindex import index_capture
    out.mkdir(mode=0o750)
    for p in cap.iterdir():
        if p.name == "manifest.json" or p.suffix == ".msc" \
                or (with_index and p.suffix == ".idx"):
            os.symlink(p.resolve(), out / p.name)
    if with_index:
        index_capture(out)
    return out


def span_ms(cap):
    """The capture's span from its first record, in ms, by the index."""
    from mscope.capture import open_capture
    from mscope.capture.index import read_index
    firsts = [v[3] for v in read_index(dict(open_capture(cap).segments)).values()]
    return (max(firsts) - min(firsts)) / 1e6


def run(cap, window, slo_us):
    from mscope.diagnose import diagnose
    t0 = time.perf_counter()
    diag, _ = diagnose(cap, slo_us=slo_us, window_ms=window)
    return time.perf_counter() - t0, len(diag["victims"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", type=Path, help="an existing capture (default: simulate one)")
    ap.add_argument("--minutes", type=float, default=10, help="simulated length (default 10)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each way, alternating (default 5)")
    ap.add_argument("--windows-s", default="10,60",
                    help="window lengths in s, centred on the capture's middle (default 10,60)")
    ap.add_argument("--slo-us", type=float, default=150)
    args = ap.parse_args()
    os.environ.setdefault("MSCOPE_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    harness.pin_self(1)
    harness.warn_if_busy(harness.cpu_busy_share())
    with tempfile.TemporaryDirectory(prefix="mscope-window-") as tmp:
        tmp = Path(tmp)
        cap = args.capture.resolve() if args.capture else simulate(args.minutes, tmp)
        ways = {"index": linked(cap, tmp / "indexed", True),
                "no index": linked(cap, tmp / "plain", False)}
        mid = span_ms(ways["index"]) / 2
        rows, summary = [], []
        for length in (float(x) for x in args.windows_s.split(",")):
            window = (mid - length * 500, mid + length * 500)
            times = {w: [] for w in ways}
            for k in range(args.runs):
                for way, path in ways.items():
                    s, victims = run(path, window, args.slo_us)
                    times[way].append(s)
                    harness.emit({"name": "window", "window_s": length, "way": way,
                                  "run": k, "seconds": s, "victims": victims})
            med = {w: harness.percentiles(t)[0] for w, t in times.items()}
            ratio = med["no index"] / med["index"]
            summary.append({"window_s": length, "from_ms": window[0], "to_ms": window[1],
                            "median_s": med, "speedup": ratio, "runs": args.runs})
            rows.append([f"{length:g} s", med["no index"], med["index"], ratio])
        harness.emit({"summary": summary, "capture": str(cap), "span_ms": 2 * mid,
                      "machine": harness.machine_info()})
        harness.table(["window", "no index s", "index s", "speedup"], rows,
                      title=f"mscope diagnose --from/--to, medians of {args.runs}, one thread")


if __name__ == "__main__":
    main()
