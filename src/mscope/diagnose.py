"""`mscope diagnose`: capture -> victims, ranked culprits, patterns.

Runs the analyzer stages (docs/analyzer.md) and builds the diagnosis JSON
of SCENARIO.md: ``{"victims": [...], "patterns": [...], "incomplete": [...]}``.
"""
import sys
import time

import numpy as np

from mscope.errors import MscopeError

__all__ = ["diagnose", "format_summary", "DEFAULT_SLO_US"]

#: Latency objective when none is given.
DEFAULT_SLO_US = 150.0


def load_topology_hint(path):
    """Links from a JSON file: a list of [from, to] names, or an object with
    "links" (a scenario file).  One-line MscopeError on anything else."""
    import json
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise MscopeError(f"--topology {path}: {e.strerror}") from None
    except ValueError as e:
        raise MscopeError(f"--topology {path}: not JSON ({e})") from None
    links = doc.get("links") if isinstance(doc, dict) else doc
    if (not isinstance(links, list) or not links
            or not all(isinstance(l, list) and len(l) == 2
                       and all(isinstance(x, str) for x in l) for l in links)):
        raise MscopeError(f"--topology {path}: expected a list of [from, to] names "
                          f"(or an object with \"links\")")
    return [tuple(l) for l in links]


def diagnose(capture, slo_us=DEFAULT_SLO_US, pattern_threshold=None, peak_rates=None,
             topology=None, progress=False):
    """Diagnose the capture directory `capture`.

    Parameters
    ----------
    capture : str or os.PathLike
    slo_us : float
        Latency objective in microseconds (> 0).
    pattern_threshold : float, optional
        Share of victims whose top culprit a pattern must be (default 0.02).
    peak_rates : dict name -> packets/ns, optional
    topology : str or list, optional
        A links file (see :func:`load_topology_hint`) or a list of links;
        the inferred topology must match it (it replaces the manifest's).
    progress : bool
        Print each stage to stderr as it starts.

    Returns
    -------
    (dict, dict)
        The diagnosis JSON object and a context dict for
        :func:`format_summary` (``attribution``, ``queues``, ``traj``,
        ``seconds``).

    Raises
    ------
    MscopeError
        ``slo_us`` not positive; not a capture; empty capture.
    """
    from mscope.analyzer import build_trajectories, infer_topology, load, queue_timelines
    from mscope.analyzer.attribution import attribute
    from mscope.analyzer.patterns import DEFAULT_THRESHOLD, find_patterns

    if not (slo_us > 0) or slo_us == float("inf"):
        raise MscopeError(f"--slo-us must be a positive number, got {slo_us}")
    hint = load_topology_hint(topology) if isinstance(topology, (str, bytes)) or \
        hasattr(topology, "__fspath__") else topology
    t0 = time.perf_counter()

    def stage(name):
        if progress:
            print(f"mscope diagnose: {name} ({time.perf_counter() - t0:.1f} s)",
                  file=sys.stderr, flush=True)

    stage("reading the capture")
    view = load(capture)
    if hint is not None:
        view.topology = hint
    stage(f"topology of {len(view.nfs)} NFs")
    topo = infer_topology(view)
    stage("trajectories")
    traj = build_trajectories(view, topo)
    stage(f"queues of {len(traj.packet_id):,} packets")
    queues = queue_timelines(view, traj, peak_rates)
    stage("attribution")
    att = attribute(traj, queues, int(round(slo_us * 1000)))
    stage(f"patterns over {len(att.packet):,} victims")
    thr = DEFAULT_THRESHOLD if pattern_threshold is None else pattern_threshold
    patterns = find_patterns(att, thr, traj, view, queues)
    victims = [{"packet": p, "nf": nf, "latency_ns": None if d else lat, "dropped": d,
                "culprits": c}
               for p, nf, lat, d, c in zip(att.packet_id.tolist(), att.nf,
                                           att.latency_ns.tolist(), att.dropped.tolist(),
                                           att.ranked_all())]
    out = {"victims": victims, "patterns": patterns,
           "incomplete": [dict(w) for w in view.incomplete]}
    ctx = {"attribution": att, "queues": queues, "traj": traj, "topology": topo,
           "slo_us": slo_us, "seconds": time.perf_counter() - t0}
    return out, ctx


def _culprit_text(c):
    if c["kind"] == "nf":
        return f"{c['nf']} ({c['cause']})"
    return f"flows {c['flows']} ({c['cause']})"


def _cause_text(c):
    if c["kind"] == "flows":
        return f"flows {c['flows']} sent above their usual rate"
    if c["cause"] == "local":
        if c.get("flows"):
            return f"{c['nf']} served flows {c['flows']} slowly"
        return f"{c['nf']} served below its peak rate (stall or lost core)"
    return f"{c['nf']} passed on a burst it received"


def _chain(rule, att, queues):
    """One causal chain: culprit and when -> the victims' queue -> victims."""
    c, nf = rule["culprit"], rule["victims"]["nf"]
    key = (("nf", c["nf"], c["cause"]) if c["kind"] == "nf"
           else ("flows", c["flows"], c["cause"]))
    j = att.culprits.index(key) if key in att.culprits else None
    sel = np.array([x == nf for x in att.nf]) if att.nf else np.zeros(0, bool)
    if j is not None:
        sel &= att.scores[:, j] > 0
    when, peak, drops = "", "", int(att.dropped[sel].sum()) if len(sel) else 0
    arr = att.arrival_ns[sel] if att.arrival_ns is not None else np.zeros(0)
    arr = arr[arr >= 0]
    if len(arr):
        t0, t1 = int(arr.min()), int(arr.max())
        when = f" {t0 / 1e6:,.3f}-{t1 / 1e6:,.3f} ms"
        q = queues.get(nf)
        if q is not None and len(q.step_ns):
            a, b = np.searchsorted(q.step_ns, [t0, t1 + 1])
            if b > a:
                peak = f" -> {nf} queue peaked at {int(q.step_len[a:b].max()):,} pkts"
    dropped = f" ({drops:,} dropped)" if drops else ""
    return (f"{_cause_text(c)}{when}{peak} -> {rule['count']:,} victims at {nf}"
            f"{dropped} (flows {rule['victims']['flows']}), score {rule['score']:,.0f}")


def format_summary(diag, ctx, top=5):
    """A readable summary: counts, top rules, worst victims, incomplete windows."""
    att = ctx["attribution"]
    traj = ctx["traj"]
    v = diag["victims"]
    nd = sum(1 for x in v if x["dropped"])
    lines = [f"{len(traj.packet_id):,} packets, {len(v):,} victims "
             f"({len(v) - nd:,} over {ctx['slo_us']:g} us, {nd:,} dropped), "
             f"{ctx['seconds']:.2f} s"]
    if not v:
        lines.append("no victims: every packet met the objective")
    if diag["patterns"]:
        lines.append("top rules (culprit -> queue -> victims):")
        for r in diag["patterns"][:top]:
            lines.append("  " + _chain(r, att, ctx["queues"]))
    if v:
        lines.append("worst victims:")
        tot = att.scores.sum(axis=1) if att.scores.size else np.zeros(len(v))
        order = np.argsort(-tot, kind="stable")[:top]
        for i in order.tolist():
            x = v[i]
            what = "dropped" if x["dropped"] else f"{x['latency_ns'] / 1000:,.1f} us"
            chain = " > ".join(f"{_culprit_text(c)} {c['score']:,.0f}"
                               for c in x["culprits"][:3]) or "unexplained"
            lines.append(f"  packet {x['packet']} at {x['nf']}, {what}: {chain}")
    if diag["incomplete"]:
        lines.append(f"incomplete: {len(diag['incomplete'])} window(s) where records were "
                     f"lost; the diagnosis there stands on less data:")
        for w in diag["incomplete"][:top]:
            lines.append(f"  {w.get('nf')}: {w.get('kind')} {w.get('records')} records, "
                         f"{w.get('from_ns')} .. {w.get('to_ns')} ns")
    else:
        lines.append("incomplete: none (no records lost)")
    return "\n".join(lines)
