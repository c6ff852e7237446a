"""Speed and memory of `mscope diagnose`, end to end and stage by stage:
packet-hops per second of what `mscope diagnose CAP --json OUT` does (read,
topology, trajectories, queues, attribution, patterns, the victims'
ranking, writing the JSON, the summary) and its peak memory against the
decoded capture.  The target is on one core: each speed run is made with
one thread (MSCOPE_THREADS=1), and beside it, alternating, one with the
threads `mscope diagnose` uses by default (mscope.workers: one per CPU, at
most 4), which a user with more cores waits for.  The memory run is a
threaded one.

    python bench/analyze.py [--seconds 2.0] [--repeat 3] [--capture DIR]
                            [--one-core] [--pages-baseline] [--baseline-code DIR]

The capture is simulated once (no counterfactual labels): the SCENARIO.md
example (its chain, its 1.2 Mpps, its four faults repeated every 200 ms)
stretched to `--seconds`, which at 2 s is 2.4 M packets and about 10 M
packet-hops (~25 s to simulate).  `--capture DIR` diagnoses an existing
capture instead (e.g. one kept with `--keep DIR`).

Each measurement runs in a fresh process, through
``mscope.diagnose.run_diagnose`` (the code behind the command: the JSON
written to a file, the summary printed to a buffer): the speed runs
plainly, the memory run under tracemalloc (numpy reports its buffers to
it).  Per stage: wall time (best of the speed runs), the best run's user
and system time and minor faults (fresh 4 KiB pages, which the kernel
zeroes: the system time), and from the memory
run the traced peak while the stage ran (everything held then, earlier
stages' results included), what was still held at its end, and the
process's resident size.  `process s` is the speed run's whole process,
interpreter start and imports included, as a user waits for it.
Targets (issue 5): >= 5 M packet-hops/s, peak <= 2x the decoded capture
(records x 32 B + ids x 8 B).

Prints one JSON line per measurement, then tables.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mscope import workers

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE / "scenarios" / "fw-bug-and-burst.json"

_CHILD = r"""
import io, json, os, sys, time, tracemalloc
cap, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")     # as mscope diagnose sets it
from mscope.diagnose import run_diagnose
import mscope.analyzer  # imports paid before measuring
def status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))
# The peak RSS of this run alone: ru_maxrss (and VmHWM) start at the
# parent's peak after exec, and the parent has read the whole capture to
# size it; "5" resets VmHWM to the current RSS (Linux >= 4.0).
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
rss0 = status_kib("VmRSS")
if mode == "mem":
    tracemalloc.start()
t0 = time.perf_counter()
diag, ctx = run_diagnose(cap, json_path=out, file=io.StringIO(), slo_us=150)
dt = time.perf_counter() - t0
peak = tracemalloc.get_traced_memory()[1] if mode == "mem" else None
rss1 = status_kib("VmHWM")
t = ctx["traj"]
print(json.dumps({"seconds": dt, "hops": int(len(t.hop_packet)), "packets": int(len(t.packet_id)),
                  "victims": len(diag["victims"]), "json_bytes": os.path.getsize(out),
                  "traced_peak_bytes": max([peak or 0] + [s.get("traced_peak_bytes", 0)
                                                          for s in ctx["stages"]]) or None,
                  "rss_growth_bytes": (rss1 - rss0) * 1024, "stages": ctx["stages"]}))
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


def child(cap, mode, out, threads=None, extra_env=None):
    t0 = time.perf_counter()
    env = dict(os.environ, **(extra_env or {}))
    if threads is not None:
        env["MSCOPE_THREADS"] = str(threads)
    res = subprocess.run([sys.executable, "-c", _CHILD, str(cap), mode, str(out)],
                         capture_output=True, text=True, timeout=1800, env=env)
    if res.returncode:
        sys.exit(f"bench/analyze.py: the {mode} run failed:\n{res.stderr[-3000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    r["process_seconds"] = time.perf_counter() - t0
    return r


def _mib(x):
    return f"{x / 2**20:,.0f}" if x is not None else "-"


def report(runs, mem, dec, threaded=()):
    """The tables: totals (one core, the target's measure; and with
    threads), then per stage."""
    best = min(runs, key=lambda r: r["seconds"])
    med = statistics.median(r["hops"] / r["seconds"] for r in runs)
    print()
    print(f"{'threads':>7} {'packet-hops':>12} {'packets':>10} {'victims':>8} {'JSON MiB':>9} "
          f"{'best s':>7} {'median s':>9} {'process s':>10} {'M hops/s':>9} {'target':>7}")
    for rs in (runs, threaded):
        if not rs:
            continue
        b = min(rs, key=lambda r: r["seconds"])
        print(f"{b['threads']:>7} {b['hops']:12,d} {b['packets']:10,d} {b['victims']:8,d} "
              f"{b['json_bytes'] / 2**20:9,.0f} {b['seconds']:7.2f} "
              f"{statistics.median(r['seconds'] for r in rs):9.2f} "
              f"{min(r['process_seconds'] for r in rs):10.2f} "
              f"{statistics.median(r['hops'] / r['seconds'] for r in rs) / 1e6:9.2f} "
              f"{'5.00' if rs is runs else '-':>7}")
    speedup = None
    if threaded:
        speedup = (statistics.median(r["seconds"] for r in runs)
                   / statistics.median(r["seconds"] for r in threaded))
        print(f"{threaded[0]['threads']} threads against one, median over median: "
              f"{speedup:.2f}x (the target is on one core)")
    print()
    names = [s["stage"] for s in best["stages"]]

    def per_stage(rs):
        return {n: min(s["seconds"] for r in rs for s in r["stages"] if s["stage"] == n)
                for n in names}

    per = per_stage(runs)
    with_threads = per_stage(threaded) if threaded else {}
    mstage = {s["stage"]: s for s in mem["stages"]}
    # user and system time, fresh pages: the best run's own
    bstage = {s["stage"]: s for s in best["stages"]}
    total = sum(per.values())
    print(f"{'stage':<13} {'best s':>7} {'share':>6} {'M hops/s':>9} {'user s':>7} {'sys s':>6} "
          f"{'k faults':>8} {'threads s':>9}  {'traced peak MiB':>15} {'x decoded':>9} "
          f"{'held after MiB':>14} {'RSS MiB':>8}")
    for n in names:
        m, b = mstage.get(n, {}), bstage[n]
        pk = m.get("traced_peak_bytes")
        wt = f"{with_threads[n]:9.3f}" if n in with_threads else f"{'-':>9}"
        print(f"{n:<13} {per[n]:7.3f} {per[n] / total:6.1%} "
              f"{best['hops'] / per[n] / 1e6 if per[n] else float('inf'):9.1f} "
              f"{b.get('user_seconds', float('nan')):7.3f} "
              f"{b.get('system_seconds', float('nan')):6.3f} "
              f"{b.get('minor_faults', 0) / 1000:8.1f} {wt}  "
              f"{_mib(pk):>15} {f'{pk / dec:.2f}' if pk else '-':>9} {_mib(m.get('traced_bytes')):>14} "
              f"{_mib(m.get('rss_bytes')):>8}")
    tot = {k: sum(b.get(k, 0) for b in best["stages"])
           for k in ("user_seconds", "system_seconds", "minor_faults")}
    wt = f"{sum(with_threads.values()):9.3f}" if with_threads else f"{'-':>9}"
    print(f"{'sum':<13} {total:7.3f} {'':>6} {'':>9} {tot['user_seconds']:7.3f} "
          f"{tot['system_seconds']:6.3f} {tot['minor_faults'] / 1000:8.1f} {wt}")
    print()
    if mem["traced_peak_bytes"] is None:
        print(f"decoded capture {dec / 2**20:,.0f} MiB; memory not measured (--no-memory)")
    else:
        print(f"decoded capture {dec / 2**20:,.0f} MiB; peak traced "
              f"{_mib(mem['traced_peak_bytes'])} MiB ({mem['traced_peak_ratio']:.2f}x); "
              f"RSS growth {_mib(mem['rss_growth_bytes'])} MiB ({mem['rss_growth_ratio']:.2f}x); "
              f"target <= 2.00x")
    print(json.dumps({"summary": {"hops_per_s": med, "best_seconds": best["seconds"],
                                  "threaded_hops_per_s": (statistics.median(
                                      r["hops"] / r["seconds"] for r in threaded)
                                      if threaded else None),
                                  "threads": threaded[0]["threads"] if threaded else 1,
                                  "threads_speedup": speedup,
                                  "stage_seconds": per,
                                  "traced_peak_ratio": mem["traced_peak_ratio"],
                                  "rss_growth_ratio": mem["rss_growth_ratio"]}}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0,
                    help="seconds of traffic (default 2: ~10 M packet-hops)")
    ap.add_argument("--repeat", type=int, default=3, help="speed runs (default 3)")
    ap.add_argument("--capture", metavar="DIR",
                    help="diagnose this capture directory instead of simulating one")
    ap.add_argument("--keep", metavar="DIR",
                    help="keep the simulated capture here (reuse it with --capture DIR)")
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc run")
    ap.add_argument("--one-core", action="store_true",
                    help="only the one-thread runs (the target's measure), not the "
                         "threaded ones beside them")
    ap.add_argument("--pages-baseline", action="store_true",
                    help="also one-thread runs and a memory run with numpy's own memory "
                         "handler (MSCOPE_KEEP_PAGES=0), alternating: what keeping freed "
                         "arrays' pages buys (mscope.analyzer.pages)")
    ap.add_argument("--baseline-code", metavar="DIR",
                    help="also one-thread runs of another build of mscope, alternating: DIR "
                         "holds its mscope package (e.g. `git worktree add /tmp/base REV && "
                         "cd /tmp/base && python setup.py build`, then DIR = "
                         "/tmp/base/build/lib.*); prints this code's speed against it")
    a = ap.parse_args(argv)
    if a.baseline_code and not (Path(a.baseline_code) / "mscope" / "diagnose.py").is_file():
        ap.error(f"--baseline-code {a.baseline_code}: no mscope package there "
                 f"(mscope/diagnose.py)")
    with tempfile.TemporaryDirectory(prefix="mscope-bench-analyze-") as tmp:
        if a.capture:
            cap = Path(a.capture)
        else:
            print(f"simulating {a.seconds:g} s of the SCENARIO.md example ...", file=sys.stderr,
                  flush=True)
            cap = make_capture(a.seconds, tmp)
            if a.keep:
                shutil.copytree(cap, a.keep)
                print(f"capture kept in {a.keep}", file=sys.stderr)
        dec = decoded_bytes(cap)
        out = Path(tmp) / "diagnosis.json"
        runs, threaded, plain, older = [], [], [], []
        threads = workers.count()
        no_pages = {"MSCOPE_KEEP_PAGES": "0"}
        other = {"PYTHONPATH": str(Path(a.baseline_code).resolve())} if a.baseline_code else {}
        for i in range(a.repeat):
            for n, rs, env in ((1, runs, None), (threads, threaded, None),
                               (1, plain, no_pages), (1, older, other)):
                if rs is threaded and (a.one_core or threads == 1):
                    continue
                if (rs is plain and not a.pages_baseline) or (rs is older and not other):
                    continue
                r = child(cap, "speed", out, n, env)
                r.update(kind="speed", run=i, threads=n, hops_per_s=r["hops"] / r["seconds"],
                         kept_pages=rs is not plain)
                if rs is older:
                    r["code"] = a.baseline_code
                print(json.dumps(r), flush=True)
                rs.append(r)
        if a.no_memory:
            m = {"stages": [], "traced_peak_bytes": None, "rss_growth_bytes": None,
                 "traced_peak_ratio": None, "rss_growth_ratio": None}
        else:
            m = child(cap, "mem", out)
            m.update(kind="memory", decoded_bytes=dec,
                     traced_peak_ratio=m["traced_peak_bytes"] / dec,
                     rss_growth_ratio=m["rss_growth_bytes"] / dec)
            print(json.dumps(m), flush=True)
        m0 = None
        if a.pages_baseline and not a.no_memory:
            m0 = child(cap, "mem", out, extra_env=no_pages)
            m0.update(kind="memory", kept_pages=False,
                      rss_growth_ratio=m0["rss_growth_bytes"] / dec)
            print(json.dumps(m0), flush=True)
    report(runs, m, dec, threaded)
    if plain:
        report_pages(runs, plain, m, m0, dec)
    if older:
        report_baseline(runs, older, a.baseline_code)
    return 0


def _median_stage_sums(rs):
    """Median seconds, system seconds and minor faults of runs `rs`."""
    def med(key):
        return statistics.median(key(r) for r in rs)
    return (med(lambda r: r["seconds"]),
            med(lambda r: sum(s.get("system_seconds", 0) for s in r["stages"])),
            med(lambda r: sum(s.get("minor_faults", 0) for s in r["stages"])))


def report_pages(runs, plain, mem, mem0, dec):
    """Kept pages (the default) against numpy's own handler, one thread."""
    base, kept = _median_stage_sums(plain), _median_stage_sums(runs)
    (sec0, _, faults0), (sec, _, faults) = base, kept
    print()
    print(f"{'handler':<22} {'median s':>9} {'sys s':>6} {'k faults':>9} {'RSS growth':>11}")
    for name, (s_, sys_s, f_), m in (("numpy's own", base, mem0),
                                     ("kept pages (default)", kept, mem)):
        g = f"{m['rss_growth_ratio']:.2f}x" if m and m.get("rss_growth_bytes") else "-"
        print(f"{name:<22} {s_:9.2f} {sys_s:6.2f} {f_ / 1000:9.1f} {g:>11}")
    print(f"kept pages against numpy's own handler, median over median: {sec0 / sec:.2f}x")
    print(json.dumps({"pages": {"speedup": sec0 / sec, "faults": faults,
                                "faults_baseline": faults0,
                                "rss_growth_ratio_baseline": (mem0 or {}).get("rss_growth_ratio")}}))


def report_baseline(runs, older, where):
    """This code against another build (--baseline-code), one thread each,
    per stage too."""
    base, this = _median_stage_sums(older), _median_stage_sums(runs)
    print()
    print(f"{'code':<22} {'median s':>9} {'sys s':>6} {'k faults':>9} {'M hops/s':>9}")
    for name, rs, (sec, sys_s, faults) in (("baseline", older, base), ("this code", runs, this)):
        print(f"{name:<22} {sec:9.2f} {sys_s:6.2f} {faults / 1000:9.1f} "
              f"{rs[0]['hops'] / sec / 1e6:9.2f}")
    per = {}
    print(f"{'stage':<13} {'baseline s':>10} {'this s':>7} {'ratio':>6}")
    for st in [x["stage"] for x in runs[0]["stages"]]:
        b, t = (statistics.median(next((x["seconds"] for x in r["stages"] if x["stage"] == st),
                                       0.0) for r in rs) for rs in (older, runs))
        per[st] = {"baseline_seconds": b, "seconds": t}
        print(f"{st:<13} {b:10.3f} {t:7.3f} {b / t if t else float('nan'):6.2f}")
    ratio = base[0] / this[0]
    print(f"this code against the baseline ({where}), median over median: {ratio:.2f}x")
    print(json.dumps({"baseline": {"code": where, "speedup": ratio, "stages": per}}))


if __name__ == "__main__":
    sys.exit(main())
