"""bench/heldout: random held-out scenarios, simulated, diagnosed and scored.

The suite in bench/scenarios is what the analyzer was tuned on; this draws
N fresh scenarios from a seed -- other topologies (chains of 2-8 NFs, DAGs
with a fork and sometimes a join, forks at the source, branches of unequal
length), other NF names and types, service times, batch and queue sizes,
loads from light to ~90% at the bottleneck, flow counts and sizes, address
prefixes, and one or two faults of any kind at random NFs and times,
sometimes overlapping -- and scores them exactly as bench/accuracy.py does
(mscope simulate with truth.json, mscope diagnose with the scenario's
objective, mscope.sim.score).

How each scenario is made honest:

1. *Load.*  The rate is set from the NFs' service times and the fork
   shares for a target bottleneck load (0.1-0.9 of ``service_ns`` x
   (1 + 0.5 / batch), the cost of a full batch in the simulator); a
   fault-free dry run then measures every NF's real arrival rate (pareto
   flows split unevenly) and the rate is cut until the measured
   bottleneck load is <= 0.92 and nothing drops.
2. *Objective.*  ``objective.latency_us`` is put 15-60% above the worst
   fault-free latency of that dry run (at least +15 us), so victims come
   only from the faults.
3. *Faults.*  Sized by the arithmetic of bench/scenarios/README.md with the
   measured rates: an interrupt of D = (1.3-5) x objective builds
   lambda x D; an overload (bug, contention, burst) is given a load L of
   1.3-3 while on and lasts T = (1.5-5) x objective / (L - 1), so its
   queueing delay reaches beyond the objective.  A bug's share of the NF's
   packets and a burst's share at each NF are measured (a probe run), not
   assumed.
4. *Check.*  A counterfactual labelling run confirms each fault has at
   least MIN_VICTIMS victims; a fault with fewer is made twice as long (up
   to 3 times) and the scenario drawn again if it still has fewer.

Besides the score, each line counts ``false_victims``: victims the
diagnosis lists that truth.json does not have (mscope.sim.score never
looks at them).  The first study with this file found three simulator
bugs this way (a forking source's records on the wrong port, a crash from
the 7th NF, a bug behind a NAT never acting), all fixed since.

The sizing is written into the scenario as ``x_heldout`` (ignored by the
loader).  Scenario files go to OUT/<name>.json; with --keep, each capture,
truth.json and the diagnosis (diag.json) go to OUT/<name>/.

Prints one JSON line per scenario, the per-fault table and per-kind
accuracy of bench/accuracy.py, then the worst (scenario, fault) rows with
what their victims' top culprits were instead.  --without-source: as
bench/accuracy.py's (each capture diagnosed without its source's
records, written beside it as OUT/<name>-without-source with --keep).

usage: python bench/heldout.py --seed S --count N --out DIR [--keep] [--without-source]
"""
import argparse
import ipaddress
import json
import math
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from accuracy import print_source_names, score_scenario  # noqa: E402  (bench/ is not a package)

MIN_VICTIMS = 50          # labelled victims a fault must have to be scored
MAX_LOAD = 0.92           # measured bottleneck load the dry run may show
BAD_ACC = 0.85            # rows under this are listed as the worst

# per type: (low, high) service_ns
SERVICE_NS = {"lb": (50, 150), "forwarder": (40, 120), "router": (100, 300),
              "firewall": (150, 400), "monitor": (80, 250), "nat": (200, 450),
              "ids": (300, 700), "vpn": (300, 800)}
NAME_STEMS = ("edge", "scrub", "lbx", "gw", "dpi", "shaper", "acl", "cgn", "tun",
              "probe", "relay", "mux", "guard", "filt", "tap", "pol", "meter",
              "cls", "l4lb", "ipsec", "waf", "cache", "snort", "core", "bng",
              "sbc", "xlat", "ratelim", "mirror", "steer", "fw", "nat", "vpn")
BATCHES = (4, 8, 16, 32, 32, 32, 64, 128)
QUEUES = (256, 512, 1024, 1024, 2048, 4096, 8192)


# --- topology -------------------------------------------------------------

def _names(rng, n):
    out = {}                        # a dict, not a set: its order is the seed's
    while len(out) < n:
        stem = rng.choice(NAME_STEMS)
        style = rng.random()
        if style < 0.35:
            name = f"{stem}{rng.randint(0, 9)}"
        elif style < 0.55:
            name = f"{stem}-{rng.choice('abcxyz')}{rng.randint(1, 3)}"
        elif style < 0.65:
            name = f"{stem}.{rng.randint(1, 99)}"
        elif style < 0.75:
            name = f"{stem}_{rng.choice(('in', 'out', 'v2', 'pri'))}"
        else:
            name = stem
        out[name] = None
    names = list(out)
    rng.shuffle(names)
    return names


def _topology(rng, max_nfs):
    """(label, number of NFs, links over NF slot numbers and 'source'/'sink')."""
    while True:
        label, n, links = _draw_topology(rng)
        if n <= max_nfs:
            return label, n, links


def _draw_topology(rng):
    r = rng.random()
    if r < 0.45:                                   # chain of 2-8
        n = rng.randint(2, 8)
        links = [("source", 0)] + [(i, i + 1) for i in range(n - 1)] + [(n - 1, "sink")]
        return f"chain{n}", n, links
    # DAG: head chain (0 = the source forks), 2-3 branches of 1-2 NFs,
    # then a join NF and a tail, or each branch straight to the sink
    head = rng.choice((0, 1, 1, 1, 2))
    k = rng.choice((2, 2, 2, 3))
    lens = [rng.choice((1, 1, 2)) for _ in range(k)]
    join = rng.random() < 0.75
    tail = rng.choice((0, 1, 1, 2)) if join else 0
    links, nxt = [], 0
    prev = "source"
    for _ in range(head):
        links.append((prev, nxt))
        prev, nxt = nxt, nxt + 1
    fork = prev
    ends = []
    for ln in lens:
        p = fork
        for _ in range(ln):
            links.append((p, nxt))
            p, nxt = nxt, nxt + 1
        ends.append(p)
    if join:
        j = nxt
        nxt += 1
        for e in ends:
            links.append((e, j))
        p = j
        for _ in range(tail):
            links.append((p, nxt))
            p, nxt = nxt, nxt + 1
        links.append((p, "sink"))
    else:
        for e in ends:
            links.append((e, "sink"))
    label = (f"dag-h{head}-b{'+'.join(map(str, lens))}"
             + (f"-join-t{tail}" if join else "-nojoin"))
    return label, nxt, links


def _shares(n, links):
    """Expected share of the source's packets reaching each slot (equal fork split)."""
    out = defaultdict(list)
    for a, b in links:
        out[a].append(b)
    share = defaultdict(float)
    share["source"] = 1.0
    indeg = Counter(b for _, b in links)
    ready, done = ["source"], set()
    while ready:
        a = ready.pop()
        done.add(a)
        for b in out[a]:
            share[b] += share[a] / len(out[a])
            indeg[b] -= 1
            if indeg[b] == 0 and b != "sink":
                ready.append(b)
    return [share[i] for i in range(n)]


# --- prefixes ---------------------------------------------------------------

def _random_net(rng, length, first_octets=None):
    first = rng.choice(first_octets or (10, 20, 44, 100, 172, 185, 198, 203))
    addr = (first << 24) | rng.getrandbits(24)
    return ipaddress.IPv4Network((addr, length), strict=False)


def _subnet(rng, net, extra):
    k = rng.randrange(1 << extra)
    return list(net.subnets(prefixlen_diff=extra))[k] if extra <= 8 else \
        ipaddress.IPv4Network((int(net.network_address) + (k << (32 - net.prefixlen - extra)),
                               net.prefixlen + extra))


# --- simulation helpers -------------------------------------------------------

def _rx_ids(run):
    """NF name -> packet ids it accepted (rx records), from a SimRun's streams."""
    out = {}
    for _nf_id, name, recs, ids in run.streams:
        if name == "source":
            continue
        cnt = recs["count"].astype(np.int64)
        rx = np.repeat(recs["flags"] == 0, cnt)
        out[name] = ids[rx]
    return out


def _index_of(packets, ids):
    order = np.argsort(packets.pkt_id, kind="stable")
    pos = np.searchsorted(packets.pkt_id[order], ids)
    pos = np.clip(pos, 0, len(order) - 1)
    return order[pos]


def _sim(doc, records=True):
    from mscope.sim.engine import simulate
    from mscope.sim.run import make_traffic
    from mscope.sim.scenario import load_scenario
    sc = load_scenario(doc)
    packets = make_traffic(sc)
    return sc, packets, simulate(sc, packets, records=records)


def _eff_ns(nf):
    return nf["service_ns"] * (1 + 0.5 / nf["batch"])


# --- one scenario ---------------------------------------------------------------

def _base(rng, seed, index, max_nfs):
    label, n, slots = _topology(rng, max_nfs)
    names = _names(rng, n)
    nfs = []
    for i in range(n):
        t = rng.choice(("lb", "firewall", "nat", "vpn", "router", "ids", "monitor", "forwarder"))
        lo, hi = SERVICE_NS[t]
        nfs.append({"name": names[i], "type": t,
                    "service_ns": int(round(rng.uniform(lo, hi) / 5) * 5),
                    "batch": rng.choice(BATCHES), "queue": rng.choice(QUEUES)})
    name_of = lambda x: x if isinstance(x, str) else names[x]
    links = [[name_of(a), name_of(b)] for a, b in slots]
    share = _shares(n, slots)
    target = rng.uniform(0.1, 0.9)
    per_pkt = max(s * _eff_ns(nf) for s, nf in zip(share, nfs))   # ns of bottleneck work per source pkt
    rate = min(2.0, target / per_pkt * 1e3)                          # Mpps
    src_len = rng.choice((8, 8, 10, 12, 16))
    src = _random_net(rng, src_len, (10, 20, 44, 100, 172))
    dst = _random_net(rng, rng.choice((8, 12, 16, 20, 24)), (192, 198, 203, 30, 60))
    traffic = {"rate_mpps": round(rate, 3), "flows": rng.choice((200, 500, 1000, 4000, 8000, 20000)),
               "flow_sizes": rng.choice(("pareto", "pareto", "constant")),
               "src_prefix": str(src), "dst_prefix": str(dst)}
    if traffic["flow_sizes"] == "pareto" and rng.random() < 0.4:
        traffic["pareto_shape"] = round(rng.uniform(1.1, 2.0), 2)
    if rng.random() < 0.3:
        traffic["tcp_share"] = round(rng.uniform(0.3, 1.0), 2)
    return {"name": f"ho{seed}-{index:02d}-{label}", "seed": rng.randrange(1, 10**6),
            "duration_ms": rng.choice((30, 40, 50, 60, 80, 100)),
            "objective": {"latency_us": 1000},
            "nfs": nfs, "links": links, "traffic": traffic, "faults": []}


def _dry_run(doc):
    """Cut the rate until the fault-free run is stable; measure it."""
    for _ in range(8):
        sc, packets, run = _sim(doc)
        ids = _rx_ids(run)
        dur_ns = sc.duration_ns
        lam = {nf["name"]: len(ids.get(nf["name"], ())) / dur_ns for nf in doc["nfs"]}  # pkts/ns
        load = {nf["name"]: lam[nf["name"]] * _eff_ns(nf) for nf in doc["nfs"]}
        drops = int((run.drop_nf >= 0).sum())
        if max(load.values()) <= MAX_LOAD and drops == 0:
            delivered = run.exit_ns >= 0
            worst = float(run.latency_ns[delivered].max()) if delivered.any() else 0.0
            return {"sc": sc, "packets": packets, "ids": ids, "lam": lam, "load": load,
                    "worst_ns": worst,
                    "p99_ns": float(np.percentile(run.latency_ns[delivered], 99))}
        doc["traffic"]["rate_mpps"] = round(doc["traffic"]["rate_mpps"] * 0.85, 3)
    raise RuntimeError("dry run never stable")


def _window(rng, duration_ms, length_ms, anchor=None):
    """(start_ms, length_ms) inside the run; near `anchor` (start, len) if given."""
    length_ms = min(length_ms, 0.35 * duration_ms)
    if anchor is not None:
        a0, alen = anchor
        start = a0 + rng.uniform(-0.6, 1.0) * max(alen, length_ms)
    else:
        start = rng.uniform(0.1, 0.85 - length_ms / duration_ms) * duration_ms
    start = min(max(start, 0.05 * duration_ms), duration_ms * 0.97 - length_ms)
    return round(start, 3), length_ms


def _fault(rng, doc, dry, fid, kind, slo_us, anchor):
    """One fault dict sized to overload, plus its x_heldout note."""
    nfs = {nf["name"]: nf for nf in doc["nfs"]}
    dur = doc["duration_ms"]
    lam, load = dry["lam"], dry["load"]
    m = rng.uniform(1.5, 5.0)
    if kind == "interrupt":
        nf = rng.choice(list(nfs))
        d_us = round(slo_us * rng.uniform(1.3, 5.0))
        start, _ = _window(rng, dur, d_us / 1e3, anchor)
        f = {"id": fid, "kind": "interrupt", "nf": nf, "at_ms": start, "duration_us": d_us}
        note = {"load": round(load[nf], 3), "backlog_pkts": round(lam[nf] * d_us * 1e3),
                "queue": nfs[nf]["queue"]}
        return f, note, (start, d_us / 1e3)
    if kind == "contention":
        nf = rng.choice(list(nfs))
        L = rng.uniform(1.3, 3.0)
        share = max(0.02, load[nf] / L)
        L = load[nf] / share
        t_ms = max(0.1, m * slo_us / 1e3 / (L - 1)) if L > 1.05 else 0.35 * dur
        start, t_ms = _window(rng, dur, t_ms, anchor)
        f = {"id": fid, "kind": "contention", "nf": nf, "from_ms": start,
             "to_ms": round(start + t_ms, 3), "share": round(share, 3)}
        note = {"load": round(load[nf], 3), "load_on": round(L, 2),
                "backlog_pkts": round(lam[nf] * t_ms * 1e6 * (1 - 1 / L)),
                "queue": nfs[nf]["queue"]}
        return f, note, (start, t_ms)
    if kind == "bug":
        nf = rng.choice(list(nfs))
        src = ipaddress.IPv4Network(doc["traffic"]["src_prefix"])
        idx = _index_of(dry["packets"], dry["ids"][nf])
        src_ip = dry["packets"].src_ip[idx]
        for _ in range(20):
            net = _subnet(rng, src, rng.choice((1, 1, 2, 2, 3, 4)))
            mask = (src_ip & np.uint32(int(net.netmask))) == np.uint32(int(net.network_address))
            frac = float(mask.mean()) if len(mask) else 0.0
            if frac >= 0.03:
                break
        else:
            net, frac = src, 1.0
        L = rng.uniform(1.3, 3.0)
        rho = max(load[nf], 1e-3)
        slowdown = min(200.0, max(1.5, 1 + (L / rho - 1) / frac))
        L = rho * (1 - frac + frac * slowdown)
        t_ms = max(0.1, m * slo_us / 1e3 / (L - 1)) if L > 1.05 else 0.35 * dur
        start, t_ms = _window(rng, dur, t_ms, anchor)
        f = {"id": fid, "kind": "bug", "nf": nf, "flows": str(net),
             "from_ms": start, "to_ms": round(start + t_ms, 3), "slowdown": round(slowdown, 1)}
        note = {"load": round(load[nf], 3), "flow_share": round(frac, 3), "load_on": round(L, 2),
                "backlog_pkts": round(lam[nf] * t_ms * 1e6 * max(0.0, 1 - 1 / L)),
                "queue": nfs[nf]["queue"]}
        return f, note, (start, t_ms)
    # burst: inside the source prefix or outside it
    src = ipaddress.IPv4Network(doc["traffic"]["src_prefix"])
    if rng.random() < 0.5:
        extra = min(32 - src.prefixlen, rng.choice((4, 8, 8, 12)))
        net = _subnet(rng, src, extra)
    else:
        net = _random_net(rng, rng.choice((16, 20, 24, 28)), (45, 77, 91, 150, 203))
    f = {"id": fid, "kind": "burst", "flows": str(net)}
    share = _burst_shares(doc, f)
    L = rng.uniform(1.3, 3.0)
    rates = [(L / _eff_ns(nfs[n]) - lam[n]) / s * 1e3 for n, s in share.items() if s > 0.05]
    rate = max(0.2, min(min(rates) if rates else 2.0, 12.0))
    L_at = {n: (lam[n] + rate / 1e3 * s) * _eff_ns(nfs[n]) for n, s in share.items()}
    bottleneck = max(L_at, key=L_at.get)
    L = L_at[bottleneck]
    t_ms = max(0.1, m * slo_us / 1e3 / (L - 1)) if L > 1.05 else 0.35 * dur
    start, t_ms = _window(rng, dur, t_ms, anchor)
    f.update(at_ms=start, duration_us=round(t_ms * 1e3), rate_mpps=round(rate, 2))
    note = {"inside_src": net.subnet_of(src), "bottleneck": bottleneck,
            "load": round(load[bottleneck], 3), "load_on": round(L, 2),
            "shares": {n: round(s, 2) for n, s in share.items() if s > 0},
            "backlog_pkts": round((L - 1) / _eff_ns(nfs[bottleneck]) * t_ms * 1e6),
            "queue": nfs[bottleneck]["queue"]}
    return f, note, (start, t_ms)


def _burst_shares(doc, f):
    """Share of burst `f`'s packets each NF receives, from a light probe run.

    A burst's flows are drawn from a random stream keyed by its fault
    index, so the probe puts it at the index it will have in the scenario
    (earlier faults replaced by a no-op: contention with share 1).
    """
    probe = json.loads(json.dumps({k: v for k, v in doc.items() if k != "x_heldout"}))
    noop = {"kind": "contention", "nf": doc["nfs"][0]["name"], "from_ms": 0, "to_ms": 1,
            "share": 1.0}
    probe["faults"] = [dict(noop, id=f"noop{j}") for j in range(len(doc["faults"]))]
    probe["faults"].append(dict(f, at_ms=2.0, duration_us=1000, rate_mpps=0.1))
    k = len(doc["faults"])
    _sc, packets, run = _sim(probe)
    total = max(1, int((packets.burst == k).sum()))
    share = {}
    for name, got in _rx_ids(run).items():
        share[name] = float((packets.burst[_index_of(packets, got)] == k).sum()) / total
    return share


def make_scenario(seed, index, max_nfs=8):
    """One held-out scenario dict (validated), sized and checked."""
    from mscope.sim.run import label_victims, make_traffic
    from mscope.sim.scenario import load_scenario
    rng = random.Random(seed * 100003 + index)
    for _attempt in range(6):
        doc = _base(rng, seed, index, max_nfs)
        try:
            dry = _dry_run(doc)
        except RuntimeError:
            continue
        worst_us = dry["worst_ns"] / 1e3
        slo = max(worst_us * rng.uniform(1.15, 1.6), worst_us + 15)
        slo = int(math.ceil(slo / 10) * 10)
        doc["objective"]["latency_us"] = slo
        nfault = 1 if rng.random() < 0.4 else 2
        kinds = [rng.choice(("interrupt", "bug", "contention", "burst")) for _ in range(nfault)]
        overlap = nfault == 2 and rng.random() < 0.5
        doc["x_heldout"] = {"seed": seed, "index": index, "topology": doc["name"].split("-", 2)[2],
                            "fault_free_worst_us": round(worst_us, 1),
                            "fault_free_p99_us": round(dry["p99_ns"] / 1e3, 1),
                            "load": {k: round(v, 3) for k, v in dry["load"].items()},
                            "overlap": overlap, "faults": {}}
        first = None
        for j, kind in enumerate(kinds):
            fid = {"interrupt": "i", "bug": "b", "burst": "u", "contention": "c"}[kind] + str(j + 1)
            anchor = first if (overlap and j == 1) else None
            f, note, win = _fault(rng, doc, dry, fid, kind, slo, anchor)
            doc["faults"].append(f)
            doc["x_heldout"]["faults"][fid] = note
            if j == 0:
                first = win
        # check: every fault has victims of its own; lengthen the weak
        # ones (at most 3 times), else draw the scenario again
        for rounds in range(4):
            sc = load_scenario(doc)
            _, belongs, _ = label_victims(sc, make_traffic(sc))
            counts = {f.id: int(belongs[i].sum()) for i, f in enumerate(sc.faults)}
            doc["x_heldout"]["labelled"] = counts
            weak = [f for f in doc["faults"] if counts[f["id"]] < MIN_VICTIMS]
            if not weak:
                doc["x_heldout"]["lengthened"] = rounds
                return doc
            for f in weak:
                _lengthen(f, doc["duration_ms"])
    raise RuntimeError("could not draw a stable scenario whose faults all have victims")


def _lengthen(f, duration_ms):
    if "duration_us" in f:
        room = (duration_ms - f["at_ms"]) * 1e3 * 0.97
        f["duration_us"] = round(min(f["duration_us"] * 2, room))
    else:
        t = (f["to_ms"] - f["from_ms"]) * 2
        f["to_ms"] = round(min(f["from_ms"] + t, duration_ms * 0.97), 3)


def _dumps(doc):
    """The scenario as JSON, one NF, link or fault a line."""
    parts = []
    for k, v in doc.items():
        if k in ("nfs", "faults") and v:
            body = ",\n    ".join(json.dumps(x) for x in v)
            parts.append(f'  "{k}": [\n    {body}]')
        else:
            parts.append(f"  {json.dumps(k)}: {json.dumps(v)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


# --- running and scoring ------------------------------------------------------------

def _culprit_key(c):
    if c is None:
        return "none"
    if c["kind"] == "nf":
        return f"{c['nf']}/{c['cause']}"
    return f"flows {c['flows']}/{c['cause']}"


def run_one(path, dest, without_source=False):
    """Simulate, diagnose, score one scenario file, as bench/accuracy.py does
    (`without_source`: its capture without the source's records)."""
    from mscope.sim.score import alone, ceiling, correct, kind_ceilings

    raw, truth, diag, ctx, res = score_scenario(path, dest, without_source)
    best, _ = ceiling(truth, raw["faults"])
    kind_best = {k: b for k, (b, _) in kind_ceilings(truth, raw["faults"]).items()}
    # what the faults' victims were blamed on instead
    # and how it did on the victims no other fault explains too (a victim
    # labelled with two faults has one top culprit: it can be right for
    # both only when a flows culprit overlaps two bursts)
    top = {v["packet"]: (v["culprits"][0] if v["culprits"] else None) for v in diag["victims"]}
    spec = {f["id"]: f for f in raw["faults"]}
    times = Counter(p for f in truth["faults"] for p in f["victims"])
    true_victims = set(times) | set(truth["victims_unexplained"])
    res_extra = sum(1 for v in diag["victims"] if v["packet"] not in true_victims)
    own = alone(diag, truth, raw["faults"])
    for f in truth["faults"]:
        wrong = Counter(_culprit_key(top.get(p)) if p in top else "missed"
                        for p in f["victims"] if not correct(spec[f["id"]], top.get(p)))
        res[f["id"]]["shared"] = len(f["victims"]) - own[f["id"]]["own"]
        res[f["id"]]["own_correct"] = own[f["id"]]["own_correct"]
        res[f["id"]]["wrong_top"] = dict(wrong.most_common(4))
    return diag, truth, res, ctx, res_extra, best, kind_best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--out", required=True, help="directory for the scenario files")
    ap.add_argument("--max-nfs", type=int, default=8,
                    help="most NFs in a scenario (default 8)")
    ap.add_argument("--keep", action="store_true",
                    help="keep each capture, truth.json and diag.json under OUT/<name>/")
    ap.add_argument("--without-source", action="store_true",
                    help="diagnose each capture without its source's records (a chain "
                         "fed by a NIC: arrivals from the first NF's queue occupancy)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    from mscope.sim.score import NAME_CLASSES, source_names

    per_kind = defaultdict(lambda: [0, 0, 0, 0])    # correct, labelled, own correct, own
    names = dict.fromkeys(NAME_CLASSES, 0)
    rows, crashes = [], []
    refused = [0, 0]                # --without-source: reported, by the source
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.count):
            t0 = time.monotonic()
            try:
                doc = make_scenario(a.seed, i, a.max_nfs)
            except Exception:                            # noqa: BLE001 -- report, go on
                crashes.append({"scenario": f"seed {a.seed} index {i}", "stage": "generate",
                                "error": traceback.format_exc().strip().splitlines()[-3:]})
                print(json.dumps(crashes[-1]), flush=True)
                continue
            path = out / f"{doc['name']}.json"
            path.write_text(_dumps(doc))
            dest = (out / doc["name"]) if a.keep else Path(tmp) / doc["name"]
            try:
                diag, truth, res, ctx, extra, best, kind_best = run_one(path, dest,
                                                                        a.without_source)
            except Exception:                            # noqa: BLE001
                crashes.append({"scenario": doc["name"], "stage": "simulate/diagnose",
                                "error": traceback.format_exc().strip().splitlines()[-3:]})
                print(json.dumps(crashes[-1]), flush=True)
                continue
            if a.keep:
                (dest / "diag.json").write_text(json.dumps(diag))
            elif dest.exists():
                shutil.rmtree(dest)
            x = doc["x_heldout"]
            bott = max(x["load"], key=x["load"].get)
            line = {"scenario": doc["name"], "slo_us": doc["objective"]["latency_us"],
                    "rate_mpps": doc["traffic"]["rate_mpps"],
                    "bottleneck": [bott, x["load"][bott]], "overlap": x["overlap"],
                    "victims": len(diag["victims"]),
                    "unexplained": len(truth["victims_unexplained"]),
                    # victims the diagnosis lists that the simulator's truth
                    # does not have (the score never looks at these)
                    "false_victims": extra,
                    "seconds": round(time.monotonic() - t0, 2), "ceiling": best,
                    "kind_ceiling": kind_best, "faults": res,
                    "source_names": source_names(diag, truth, doc["faults"])}
            for k, n in line["source_names"].items():
                names[k] += n
            if a.without_source:
                line["refused_reported"], line["refused_by_source"] = ctx["refused_check"]
                refused[0] += line["refused_reported"]
                refused[1] += line["refused_by_source"]
            print(json.dumps(line), flush=True)
            rows.append(line)
            for r in res.values():
                k = per_kind[r["kind"]]
                k[0] += r["correct"]
                k[1] += r["labelled"]
                k[2] += r["own_correct"]
                k[3] += r["labelled"] - r["shared"]

    print()
    print(f"{'scenario':40} {'fault':6} {'kind':11} {'nf':10} {'labelled':>8} {'correct':>8} "
          f"{'acc':>7} {'shared':>7} {'own acc':>7}")
    table = []
    for line in rows:
        for fid, r in line["faults"].items():
            acc = r["correct"] / r["labelled"] if r["labelled"] else float("nan")
            table.append((acc, line["scenario"], fid, r))
            own = r["labelled"] - r["shared"]
            own_acc = r["own_correct"] / own if own else float("nan")
            print(f"{line['scenario']:40} {fid:6} {r['kind']:11} {str(r['nf'] or '-'):10} "
                  f"{r['labelled']:8d} {r['correct']:8d} {acc:7.1%} {r['shared']:7d} {own_acc:7.1%}")
    print()
    tc = tl = oc = ol = 0
    summary = {}
    pct = lambda a, b: f"{a / b if b else float('nan'):7.1%}"
    # a kind's own ceiling: every victim it shares with another kind named
    # for it (the kinds' ceilings cannot all be reached at once)
    kind_best = defaultdict(int)
    for line in rows:
        for k, b in line.get("kind_ceiling", {}).items():
            kind_best[k] += b
    kind_ceiling = {}
    print(f"{'kind':11} {'correct/labelled':>16} {'acc':>7}   {'own victims':>15} {'acc':>7}"
          f"   {'alone at most':>13}")
    for kind in sorted(per_kind):
        c, l, c1, l1 = per_kind[kind]
        tc, tl, oc, ol = tc + c, tl + l, oc + c1, ol + l1
        summary[kind] = c / l if l else None
        kind_ceiling[kind] = kind_best[kind] / l if l else None
        print(f"{kind:11} {c:8d}/{l:<7d} {pct(c, l)}   {c1:7d}/{l1:<7d} {pct(c1, l1)}"
              f"   {pct(kind_best[kind], l):>13}")
    print(f"{'overall':11} {tc:8d}/{tl:<7d} {pct(tc, tl)}   {oc:7d}/{ol:<7d} {pct(oc, ol)}")
    # victims the truth lists under faults with different culprits can be
    # right for one of them only: no diagnosis scores above this
    best = sum(l["ceiling"] for l in rows)
    print(f"{'ceiling':11} {best:8d}/{tl:<7d} {pct(best, tl)}")
    summary["overall"] = tc / tl if tl else None
    summary["ceiling"] = best / tl if tl else None
    print_source_names(names)
    summary["source_names"] = names
    if a.without_source:
        print(f"refused at the ingress NFs: {refused[0]:,} packets reported from their "
              f"refused records, {refused[1]:,} by the source's records")
        summary["refused_reported"], summary["refused_by_source"] = refused
    # per-fault mean (each fault counts once, however many victims it has)
    accs = defaultdict(list)
    for acc, _, _, r in table:
        if r["labelled"]:
            accs[r["kind"]].append(acc)
    print("per-fault mean: " + ", ".join(f"{k} {np.mean(v):.1%} (n={len(v)})"
                                          for k, v in sorted(accs.items())))
    print()
    false = [(l["false_victims"], l["victims"], l["scenario"]) for l in rows if l["false_victims"]]
    if false:
        print("diagnoses with victims the truth does not have (not scored):")
        for n, v, name in sorted(false, reverse=True):
            print(f"  {name:40} {n:7d} of {v:7d} diagnosed victims")
        print()
    print(f"worst rows (accuracy < {BAD_ACC:.0%}):")
    for acc, name, fid, r in sorted((t for t in table if t[3]["labelled"]), key=lambda t: t[0]):
        if acc >= BAD_ACC:
            break
        print(f"  {name:40} {fid:4} {r['kind']:10} {str(r['nf'] or '-'):10} "
              f"{acc:6.1%} of {r['labelled']:6d} ({r['shared']} shared)  "
              f"instead: {json.dumps(r['wrong_top'])}")
    if crashes:
        print()
        print("crashes:")
        for c in crashes:
            print("  " + json.dumps(c))
    print(json.dumps({"accuracy": summary, "kind_ceiling": kind_ceiling, "scenarios": len(rows),
                      "crashes": len(crashes)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
