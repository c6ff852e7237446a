"""Speed of `mscope simulate`: the SCENARIO.md example (200 ms, 1.2 Mpps,
5 NFs, 4 faults) with counterfactual labelling, against the issue's 30 s.

    python bench/simulate.py [--repeat 5] [--suite]

Prints one JSON object per measurement, then a table.  Times are wall
seconds on one core, median of --repeat runs (the first run, which pays
imports and page faults, is reported apart).
"""
import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mscope.sim.engine import simulate
from mscope.sim.run import label_victims, make_traffic, write_capture
from mscope.sim.scenario import load_scenario

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE / "scenarios" / "fw-bug-and-burst.json"


def measure(path, repeat):
    sc = load_scenario(path)
    rows = []
    for i in range(repeat + 1):
        out = Path(tempfile.mkdtemp(prefix="mscope-bench-sim-")) / "cap"
        t0 = time.perf_counter()
        packets = make_traffic(sc)
        t1 = time.perf_counter()
        full = simulate(sc, packets)
        t2 = time.perf_counter()
        full, belongs, unexplained = label_victims(sc, packets, full)
        t3 = time.perf_counter()
        write_capture(sc, full, out)
        t4 = time.perf_counter()
        shutil.rmtree(out.parent)
        rows.append({"traffic_s": t1 - t0, "simulate_s": t2 - t1,
                     "counterfactual_s": t3 - t2, "capture_s": t4 - t3, "total_s": t4 - t0})
    warm = rows[1:] or rows
    med = {k: statistics.median(r[k] for r in warm) for k in warm[0]}
    return {"name": "simulate", "scenario": sc.name, "packets": len(packets.time_ns),
            "nfs": len(sc.nfs), "faults": len(sc.faults), "runs": 1 + len(sc.faults),
            "repeat": len(warm), "first_total_s": rows[0]["total_s"],
            **{k: round(v, 4) for k, v in med.items()},
            "target_s": 30.0, "met": med["total_s"] < 30.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--suite", action="store_true", help="also time every scenario in bench/scenarios")
    args = ap.parse_args()
    paths = [EXAMPLE] + (sorted((HERE / "scenarios").glob("*.json")) if args.suite else [])
    results = [measure(p, args.repeat) for p in dict.fromkeys(paths)]
    for r in results:
        print(json.dumps(r))
    print()
    print(f"{'scenario':<24} {'packets':>8} {'runs':>4} {'traffic':>8} {'sim':>7} "
          f"{'counterf.':>9} {'capture':>8} {'total s':>8} {'first':>7}  target <30 s")
    for r in results:
        print(f"{r['scenario']:<24} {r['packets']:>8,} {r['runs']:>4} {r['traffic_s']:>8.3f} "
              f"{r['simulate_s']:>7.3f} {r['counterfactual_s']:>9.3f} {r['capture_s']:>8.3f} "
              f"{r['total_s']:>8.3f} {r['first_total_s']:>7.3f}  {'met' if r['met'] else 'MISSED'}")


if __name__ == "__main__":
    main()
