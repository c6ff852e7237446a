"""`mscope diagnose`: capture -> victims, ranked culprits, patterns.

Runs the analyzer stages (docs/analyzer.md) and builds the diagnosis JSON
of SCENARIO.md: ``{"victims": [...], "patterns": [...], "incomplete": [...]}``.
"""
import time

import numpy as np

from mscope.errors import MscopeError

__all__ = ["diagnose", "format_summary", "DEFAULT_SLO_US"]

#: Latency objective when none is given.
DEFAULT_SLO_US = 150.0


def diagnose(capture, slo_us=DEFAULT_SLO_US, pattern_threshold=None, peak_rates=None):
    """Diagnose the capture directory `capture`.

    Parameters
    ----------
    capture : str or os.PathLike
    slo_us : float
        Latency objective in microseconds (> 0).
    pattern_threshold : float, optional
        Share of total blame a pattern must cover (default 0.05).
    peak_rates : dict name -> packets/ns, optional

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
    from mscope.analyzer.attribution import attribute, culprit_dict
    from mscope.analyzer.patterns import DEFAULT_THRESHOLD, find_patterns

    if not (slo_us > 0) or slo_us == float("inf"):
        raise MscopeError(f"--slo-us must be a positive number, got {slo_us}")
    t0 = time.perf_counter()
    view = load(capture)
    topo = infer_topology(view)
    traj = build_trajectories(view, topo)
    queues = queue_timelines(view, traj, peak_rates)
    att = attribute(traj, queues, int(round(slo_us * 1000)))
    thr = DEFAULT_THRESHOLD if pattern_threshold is None else pattern_threshold
    patterns = find_patterns(att, thr)
    victims = []
    for i in range(len(att.packet)):
        victims.append({
            "packet": int(att.packet_id[i]),
            "nf": att.nf[i],
            "latency_ns": None if att.dropped[i] else int(att.latency_ns[i]),
            "dropped": bool(att.dropped[i]),
            "culprits": [culprit_dict(k, s) for k, s in att.ranked(i)]})
    out = {"victims": victims, "patterns": patterns,
           "incomplete": [dict(w) for w in view.incomplete]}
    ctx = {"attribution": att, "queues": queues, "traj": traj, "topology": topo,
           "slo_us": slo_us, "seconds": time.perf_counter() - t0}
    return out, ctx


def _culprit_text(c):
    if c["kind"] == "nf":
        return f"{c['nf']} ({c['cause']})"
    return f"flows {c['flows']} ({c['cause']})"


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
        lines.append("top rules:")
        for r in diag["patterns"][:top]:
            lines.append(f"  {_culprit_text(r['culprit'])} -> victims at {r['victims']['nf']}: "
                         f"{r['count']:,} victims, score {r['score']:,.0f} pkts")
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
