"""Speed and memory of `mscope diagnose`: packet-hops per second of the whole
analyzer (read, topology, trajectories, queues, attribution, patterns) and
its peak memory against the decoded capture, on one core.

    python bench/analyze.py [--seconds 2.0] [--repeat 3]

The capture is simulated once (no counterfactual labels): the SCENARIO.md
example (its chain, its 1.2 Mpps, its four faults repeated every 200 ms)
stretched to `--seconds`, which at 2 s is 2.4 M packets and about 10 M
packet-hops.  Each measurement
runs in a fresh process: the speed runs plainly, the memory run under
tracemalloc (numpy reports its buffers to it), and the process's peak RSS
growth is given too.  Targets (issue 5): >= 5 M packet-hops/s, peak <= 2x
the decoded capture (records x 32 B + ids x 8 B).

Prints one JSON line per measurement, then a table.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE / "scenarios" / "fw-bug-and-burst.json"

_CHILD = r"""
import json, resource, sys, time, tracemalloc
cap, mode = sys.argv[1], sys.argv[2]
from mscope.diagnose import diagnose
from mscope.capture import open_capture
import mscope.analyzer  # imports paid before measuring
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "mem":
    tracemalloc.start()
t0 = time.perf_counter()
diag, ctx = diagnose(cap, slo_us=150)
dt = time.perf_counter() - t0
peak = tracemalloc.get_traced_memory()[1] if mode == "mem" else None
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = ctx["traj"]
print(json.dumps({"seconds": dt, "hops": int(len(t.hop_packet)), "packets": int(len(t.packet_id)),
                  "victims": len(diag["victims"]), "traced_peak_bytes": peak,
                  "rss_growth_bytes": (rss1 - rss0) * 1024}))
"""


def make_capture(seconds, out):
    from mscope.sim.run import write_capture, make_traffic
    from mscope.sim.engine import simulate
    from mscope.sim.scenario import load_scenario
    doc = json.loads(EXAMPLE.read_text())
    doc["name"] = "analyze-bench"
    doc["duration_ms"] = int(round(1000 * seconds))
    # the example's faults, repeated every 200 ms of the stretched run
    faults = []
    for k in range(max(1, doc["duration_ms"] // 200)):
        for f in json.loads(EXAMPLE.read_text())["faults"]:
            f = dict(f, id=f"{f['id']}.{k}")
            for key in ("at_ms", "from_ms", "to_ms"):
                if key in f:
                    f[key] += 200 * k
            faults.append(f)
    doc["faults"] = faults
    path = Path(out) / "scenario.json"
    path.write_text(json.dumps(doc))
    sc = load_scenario(path)
    run = simulate(sc, make_traffic(sc))
    write_capture(sc, run, Path(out) / "cap")
    return Path(out) / "cap"


def decoded_bytes(cap):
    from mscope.capture import open_capture
    d = open_capture(cap).read()
    return len(d.records) * 32 + len(d.ids) * 8


def child(cap, mode):
    out = subprocess.run([sys.executable, "-c", _CHILD, str(cap), mode], check=True,
                         capture_output=True, text=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0,
                    help="seconds of traffic (default 2: ~10 M packet-hops)")
    ap.add_argument("--repeat", type=int, default=3, help="speed runs (default 3)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mscope-bench-analyze-") as tmp:
        print(f"simulating {a.seconds:g} s of the SCENARIO.md example ...", file=sys.stderr,
              flush=True)
        cap = make_capture(a.seconds, tmp)
        dec = decoded_bytes(cap)
        runs = []
        for i in range(a.repeat):
            r = child(cap, "speed")
            r.update(kind="speed", run=i, hops_per_s=r["hops"] / r["seconds"])
            print(json.dumps(r), flush=True)
            runs.append(r)
        m = child(cap, "mem")
        m.update(kind="memory", decoded_bytes=dec,
                 traced_peak_ratio=m["traced_peak_bytes"] / dec,
                 rss_growth_ratio=m["rss_growth_bytes"] / dec)
        print(json.dumps(m), flush=True)
    med = statistics.median(r["hops_per_s"] for r in runs)
    print()
    print(f"{'packet-hops':>12} {'packets':>10} {'victims':>8} {'median s':>9} "
          f"{'M hops/s':>9} {'target':>7}")
    print(f"{runs[0]['hops']:12,d} {runs[0]['packets']:10,d} {runs[0]['victims']:8,d} "
          f"{statistics.median(r['seconds'] for r in runs):9.2f} {med / 1e6:9.2f} {'5.00':>7}")
    print()
    print(f"decoded capture {dec / 2**20:,.0f} MiB; peak traced {m['traced_peak_bytes'] / 2**20:,.0f}"
          f" MiB ({m['traced_peak_ratio']:.2f}x); RSS growth {m['rss_growth_bytes'] / 2**20:,.0f}"
          f" MiB ({m['rss_growth_ratio']:.2f}x); target <= 2.00x")
    print(json.dumps({"summary": {"hops_per_s": med, "traced_peak_ratio": m["traced_peak_ratio"],
                                  "rss_growth_ratio": m["rss_growth_ratio"]}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
