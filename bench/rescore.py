"""bench/rescore: diagnose kept scenario captures again and score them.

`bench/heldout.py --keep` and `bench/accuracy.py --keep` leave each
scenario's capture and truth.json in a directory; simulating them again
takes minutes a set, diagnosing them seconds.  This diagnoses every kept
scenario under the given directories with the installed analyzer, scores
it with SCENARIO.md's rule (`mscope.sim.score.score`) and prints per fault
kind, overall, and over the victims one fault alone made (those two faults
share can be right for one of them only).  `--out` keeps the per-fault
results as JSON; `--compare OLD.json` prints every fault whose count of
right labels moved, and the net.  `--without-source` diagnoses the
capture kept beside each scenario without its source's records
(``NAME-without-source/``, from ``bench/heldout.py --without-source
--keep``) and scores it against NAME's truth.

A scenario is a directory holding a capture and truth.json, next to its
scenario file (``NAME.json`` beside ``NAME/``): the layout both scripts
keep.  For the suite, whose scenario files stay in bench/scenarios/, pass
``--scenarios bench/scenarios``.

    python bench/heldout.py --seed 49 --count 20 --out ho/seed49 --keep
    python bench/rescore.py ho/seed* --out before.json
    ... change the analyzer ...
    python bench/rescore.py ho/seed* --out after.json --compare before.json
"""
import argparse
import json
import os
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def kept_scenarios(dirs, scenarios=None, without_source=False):
    """(scenario file, capture dir, truth dir) of every kept scenario under
    `dirs`: a directory with truth.json whose scenario file is beside it (or
    in `scenarios`); with `without_source`, the capture is the one beside
    it without the source's records, and scenarios without one are left
    out."""
    out = []
    for top in dirs:
        top = Path(top)
        for d in sorted(p for p in top.iterdir() if (p / "truth.json").is_file()):
            spec = (Path(scenarios) if scenarios else top) / (d.name + ".json")
            cap = d.with_name(d.name + "-without-source") if without_source else d
            if spec.is_file() and cap.is_dir():
                out.append((spec, cap, d))
    return out


def rescore_one(spec, cap, truth_dir):
    """Per fault id of one kept scenario (capture `cap`, its truth.json in
    `truth_dir`): kind, labelled, correct, and the same over the victims
    that fault alone made (``own``, ``own_correct``)."""
    from mscope.diagnose import diagnose
    from mscope.sim.score import alone, score

    raw = json.loads(Path(spec).read_text())
    truth = json.loads((Path(truth_dir) / "truth.json").read_text())
    diag, _ = diagnose(str(cap), slo_us=truth["objective"]["latency_us"])
    res = score(diag, truth, raw["faults"])
    for fid, own in alone(diag, truth, raw["faults"]).items():
        res[fid].update(own)
    return truth_dir.name, res


def totals(results):
    """Per kind and overall: [correct, labelled, own correct, own]."""
    kinds = defaultdict(lambda: [0, 0, 0, 0])
    for faults in results.values():
        for f in faults.values():
            for k in (f["kind"], "overall"):
                t = kinds[k]
                t[0] += f["correct"]
                t[1] += f["labelled"]
                t[2] += f["own_correct"]
                t[3] += f["own"]
    return kinds


def print_totals(results, file=None):
    file = file or sys.stdout
    kinds = totals(results)
    print(f"{'kind':<12} {'labels':>16} {'accuracy':>9} {'one fault alone':>18} {'accuracy':>9}",
          file=file)
    for k in sorted(kinds, key=lambda k: (k == "overall", k)):
        c, n, oc, on = kinds[k]
        print(f"{k:<12} {c:>7,}/{n:<8,} {c / n if n else 0:9.2%} {oc:>8,}/{on:<9,} "
              f"{oc / on if on else 0:9.2%}", file=file)
    print(json.dumps({"accuracy": {k: v[0] / v[1] for k, v in kinds.items() if v[1]},
                      "own_accuracy": {k: v[2] / v[3] for k, v in kinds.items() if v[3]},
                      "scenarios": len(results)}), file=file)


def compare(old, new, file=None):
    """Print each fault whose right labels moved between two results;
    return the net."""
    file = file or sys.stdout
    net = 0
    for name in sorted(set(old) & set(new)):
        for fid, f in old[name].items():
            g = new[name].get(fid)
            if g is None or g["correct"] == f["correct"]:
                continue
            d = g["correct"] - f["correct"]
            net += d
            print(f"{name:<40} {fid:<4} {f['kind']:<11} {f['correct']:>7,} -> {g['correct']:>7,}"
                  f" of {f['labelled']:>7,} ({d:+,})", file=file)
    only = sorted(set(old) ^ set(new))
    if only:
        print(f"(in one result only, not compared: {', '.join(only)})", file=file)
    print(f"net {net:+,} labels", file=file)
    return net


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", help="directories of kept scenarios")
    ap.add_argument("--scenarios", metavar="DIR",
                    help="where the scenario files are, if not beside the captures")
    ap.add_argument("--out", metavar="JSON", help="write the per-fault results here")
    ap.add_argument("--compare", metavar="JSON", help="an earlier --out to compare with")
    ap.add_argument("-j", "--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="scenarios diagnosed at once (default: 2, or the CPUs)")
    ap.add_argument("--without-source", action="store_true",
                    help="diagnose each scenario's capture without the source's records, "
                         "NAME-without-source/ beside it (bench/heldout.py --without-source "
                         "--keep)")
    a = ap.parse_args(argv)
    for d in a.dirs:
        if not Path(d).is_dir():
            print(f"rescore: error: not a directory: {d}", file=sys.stderr)
            return 2
    old = None
    if a.compare:
        try:
            old = json.loads(Path(a.compare).read_text())
        except (OSError, ValueError) as e:
            print(f"rescore: error: cannot read {a.compare}: {e}", file=sys.stderr)
            return 2
    todo = kept_scenarios(a.dirs, a.scenarios, a.without_source)
    if not todo:
        print("rescore: error: no kept scenario (a directory with truth.json beside its "
              "NAME.json" + (" and NAME-without-source/" if a.without_source else "")
              + ") under " + ", ".join(a.dirs), file=sys.stderr)
        return 2
    results = {}
    with ProcessPoolExecutor(max(1, a.jobs)) as pool:
        futures = [pool.submit(rescore_one, *t) for t in todo]
        for i, fut in enumerate(futures, 1):
            name, res = fut.result()
            results[name] = res
            print(f"rescore: {i}/{len(todo)} {name}", file=sys.stderr, flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(results))
    print_totals(results)
    if old is not None:
        compare(old, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
