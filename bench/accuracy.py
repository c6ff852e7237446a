"""bench/accuracy: simulate every scenario of the suite, diagnose it, score it.

For each scenario in bench/scenarios (or the files/directories given):
simulate into a temporary directory (mscope simulate, with truth.json),
diagnose the capture with the scenario's latency objective (the analyzer
never sees truth.json or the scenario), and score with the SCENARIO.md rule:
a victim labelled with fault F is correct when its top-ranked culprit names
F's NF with cause ``local`` (interrupt, bug, contention), or a flows culprit
overlapping F's ``flows`` with cause ``source`` (burst) -- mscope.sim.score.
Prints one JSON line per scenario, then a per-kind table, then how
precisely the bursts' victims named for a source name the burst
(mscope.sim.score.source_names: the rule counts a /0 right too).

--without-source diagnoses each capture written again without its
`source` stream (mscope.capture.rewrite): a chain fed by a NIC, whose
arrivals at the first NF come from its queue occupancy (docs/analyzer.md);
the packets its full queue refused are then not in the capture, only in
its refused records (the NIC's count): each line gives the packets the
diagnosis reports refused and those the source's records show its
ingress NFs never took, which must be equal.

usage: python bench/accuracy.py [SCENARIO_OR_DIR ...] [--keep DIR] [--without-source]
"""
import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def score_scenario(path, dest, without_source=False):
    """Simulate the scenario file `path` into `dest` (replaced) with its
    truth, diagnose the capture with the scenario's objective (written
    again without its source's stream beside it, `dest`-without-source,
    where `without_source`), score it.

    Returns
    -------
    (raw, truth, diag, ctx, res)
        The scenario's JSON, truth.json, the diagnosis and its context
        (mscope.diagnose.diagnose; with `without_source`, its
        ``refused_check``: the packets the diagnosis reports refused at the
        ingress NFs and those the source's records show they never took)
        and mscope.sim.score's result.
    """
    import shutil

    from mscope.diagnose import diagnose
    from mscope.sim.run import simulate_to_capture
    from mscope.sim.scenario import load_scenario
    from mscope.sim.score import score

    sc = load_scenario(path)
    raw = json.loads(Path(path).read_text())
    if dest.exists():
        shutil.rmtree(dest)
    simulate_to_capture(sc, dest, truth=True)
    truth = json.loads((dest / "truth.json").read_text())
    cap = dest
    if without_source:
        from mscope.capture.rewrite import rewrite_capture
        cap = dest.with_name(dest.name + "-without-source")
        if cap.exists():
            shutil.rmtree(cap)
        rewrite_capture(dest, cap, keep=lambda st: st["nf_name"] != "source")
    diag, ctx = diagnose(cap, slo_us=float(raw["objective"]["latency_us"]))
    if without_source:
        ctx["refused_check"] = (sum(e["packets"] for e in diag.get("refused", ())),
                                ingress_refused(dest))
    return raw, truth, diag, ctx, score(diag, truth, raw["faults"])


def ingress_refused(cap):
    """Packets the source's records show its NFs never took (their full
    queues refused them), from capture `cap` with the source's stream."""
    import numpy as np

    from mscope.analyzer import load
    v = load(cap)
    src = v.nf("source")
    took = [n.rx_ids for n in v.nfs if n.name != "source" and len(n.rx_ids)]
    return int(np.isin(src.tx_ids, np.concatenate(took), invert=True).sum())


def print_source_names(names):
    """How the bursts' victims named for a source were named, summed over
    scenarios (mscope.sim.score.source_names)."""
    nn = sum(names.values())
    print()
    print("bursts' victims named for a source, by how the name stands to the burst's flows:")
    print("  ".join(f"{k} {n:,} ({n / nn if nn else float('nan'):.1%})" for k, n in names.items()))


def run(paths, keep=None, without_source=False):
    from mscope.sim.score import NAME_CLASSES, alone, ceiling, kind_ceilings, source_names

    files = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.json")) if p.is_dir() else [p]
    per_kind = defaultdict(lambda: [0, 0])
    own_kind = defaultdict(lambda: [0, 0])     # the victims one fault alone made
    kind_best = defaultdict(int)
    rows = []
    best = 0
    names = dict.fromkeys(NAME_CLASSES, 0)
    refused = [0, 0]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(keep) if keep else Path(tmp)
        for f in files:
            name = json.loads(Path(f).read_text())["name"]
            raw, truth, diag, ctx, res = score_scenario(f, base / name, without_source)
            top, _ = ceiling(truth, raw["faults"])
            best += top
            for kind, (b, _) in kind_ceilings(truth, raw["faults"]).items():
                kind_best[kind] += b
            named = source_names(diag, truth, raw["faults"])
            for k, n in named.items():
                names[k] += n
            line = {"scenario": name, "victims": len(diag["victims"]),
                    "seconds": round(ctx["seconds"], 2), "ceiling": top, "faults": res,
                    "source_names": named}
            if without_source:
                line["refused_reported"], line["refused_by_source"] = ctx["refused_check"]
                refused[0] += line["refused_reported"]
                refused[1] += line["refused_by_source"]
            print(json.dumps(line), flush=True)
            rows.append(line)
            for fid, o in alone(diag, truth, raw["faults"]).items():
                own_kind[res[fid]["kind"]][0] += o["own_correct"]
                own_kind[res[fid]["kind"]][1] += o["own"]
            for r in res.values():
                per_kind[r["kind"]][0] += r["correct"]
                per_kind[r["kind"]][1] += r["labelled"]
    print()
    print(f"{'scenario':24} {'fault':6} {'kind':11} {'nf':5} {'labelled':>8} {'correct':>8} {'acc':>7}")
    for line in rows:
        for fid, r in line["faults"].items():
            acc = r["correct"] / r["labelled"] if r["labelled"] else float("nan")
            print(f"{line['scenario']:24} {fid:6} {r['kind']:11} {str(r['nf'] or '-'):5} "
                  f"{r['labelled']:8d} {r['correct']:8d} {acc:7.1%}")
    print()
    tc = tl = oc = ol = 0
    summary = {}
    kind_ceiling = {}
    own_accuracy = {}
    # a kind's own ceiling: every victim it shares with another kind named
    # for it (the kinds' ceilings cannot all be reached at once); and how
    # it did on the victims one fault alone made, where nothing is shared
    for kind in sorted(per_kind):
        c, l = per_kind[kind]
        o, n = own_kind[kind]
        tc, tl, oc, ol = tc + c, tl + l, oc + o, ol + n
        summary[kind] = c / l if l else None
        kind_ceiling[kind] = kind_best[kind] / l if l else None
        own_accuracy[kind] = o / n if n else None
        print(f"{kind:11} {c:7d}/{l:<7d} {c / l if l else float('nan'):7.1%}"
              f"   (alone at most {kind_best[kind] / l if l else float('nan'):.1%};"
              f" one fault alone {o / n if n else float('nan'):.2%} of {n:,})")
    own_accuracy["overall"] = oc / ol if ol else None
    print(f"{'overall':11} {tc:7d}/{tl:<7d} {tc / tl if tl else float('nan'):7.1%}"
          f"   (one fault alone {oc / ol if ol else float('nan'):.2%} of {ol:,})")
    # victims the truth lists under faults with different culprits can be
    # right for one of them only: no diagnosis scores above this
    print(f"{'ceiling':11} {best:7d}/{tl:<7d} {best / tl if tl else float('nan'):7.1%}")
    summary["overall"] = tc / tl if tl else None
    summary["ceiling"] = best / tl if tl else None
    print_source_names(names)
    summary["source_names"] = names
    if without_source:
        print(f"refused at the ingress NFs: {refused[0]:,} packets reported from their "
              f"refused records, {refused[1]:,} by the source's records")
        summary["refused_reported"], summary["refused_by_source"] = refused
    print(json.dumps({"accuracy": summary, "kind_ceiling": kind_ceiling,
                      "own_accuracy": own_accuracy}))
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="*", default=[str(HERE / "scenarios")])
    ap.add_argument("--keep", metavar="DIR", help="keep the captures under DIR")
    ap.add_argument("--without-source", action="store_true",
                    help="diagnose each capture without its source's records (a chain "
                         "fed by a NIC: arrivals from the first NF's queue occupancy)")
    a = ap.parse_args(argv)
    run(a.scenarios, a.keep, a.without_source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
