"""Score a diagnosis against ground truth with the SCENARIO.md rule.

A victim labelled with fault F is correct when its top-ranked culprit names
F's NF with cause ``local`` (interrupt, bug, contention), or a flow
aggregate overlapping F's ``flows`` with cause ``source`` (burst).
"""
import ipaddress

__all__ = ["score", "correct", "alone", "ceiling", "kind_ceilings", "source_names",
           "NAME_CLASSES"]


def _overlaps(a, b):
    if a == "*" or b == "*":
        return True
    return ipaddress.ip_network(a, strict=False).overlaps(ipaddress.ip_network(b, strict=False))


def correct(fault, culprit):
    """Whether `culprit` (a diagnosis culprit dict, or None) explains `fault`."""
    if culprit is None:
        return False
    if fault["kind"] == "burst":
        return (culprit["kind"] == "flows" and culprit["cause"] == "source"
                and _overlaps(culprit["flows"], fault.get("flows", "*")))
    return (culprit["kind"] == "nf" and culprit["nf"] == fault["nf"]
            and culprit["cause"] == "local")


def _fault(spec, f):
    """Truth's fault `f` with what the scenario's fault specs (`spec`, by
    id) add: ``flows`` and ``nf`` where truth lacks them."""
    return dict(spec.get(f["id"], {}), **{k: f[k] for k in ("kind", "nf", "flows") if f.get(k)})


def score(diag, truth, faults=None):
    """Per fault id: ``{"kind", "nf", "labelled", "correct", "missed"}``.

    Parameters
    ----------
    diag : dict
        The diagnosis JSON.
    truth : dict
        truth.json.
    faults : list of dict, optional
        The scenario's fault specs (for ``flows`` and ``nf`` where truth
        lacks them).
    """
    top = {v["packet"]: (v["culprits"][0] if v["culprits"] else None)
           for v in diag["victims"]}
    spec = {f["id"]: f for f in (faults or [])}
    out = {}
    for f in truth["faults"]:
        fs = _fault(spec, f)
        ok = sum(1 for p in f["victims"] if correct(fs, top.get(p)))
        out[f["id"]] = {"kind": fs["kind"], "nf": fs.get("nf"), "labelled": len(f["victims"]),
                        "correct": ok, "missed": sum(1 for p in f["victims"] if p not in top)}
    return out


def alone(diag, truth, faults=None):
    """Per fault id, over the victims that fault alone made (the truth
    lists them under no other): ``{"own", "own_correct", "own_wrong"}``,
    the last the top culprits of those it misses, most frequent first (3
    at most; "missed" where the diagnosis has no such victim).  A victim
    two faults share can be right for one of them only (:func:`ceiling`):
    these are the labels a diagnosis can get right without choosing.
    """
    from collections import Counter
    top = {v["packet"]: (v["culprits"][0] if v["culprits"] else None)
           for v in diag["victims"]}
    times = Counter(p for f in truth["faults"] for p in f["victims"])
    spec = {f["id"]: f for f in (faults or [])}
    out = {}
    for f in truth["faults"]:
        fs = _fault(spec, f)
        own = [p for p in f["victims"] if times[p] == 1]
        wrong = Counter()
        for p in own:
            c = top.get(p)
            if not correct(fs, c):
                wrong["missed" if p not in top else "none" if c is None else
                      f"{c.get('nf') or c.get('flows')}/{c['cause']}"] += 1
        out[f["id"]] = {"own": len(own), "own_correct": len(own) - sum(wrong.values()),
                        "own_wrong": dict(wrong.most_common(3))}
    return out


#: How a source culprit's prefix stands to the burst's ``flows``, most
#: precise first (:func:`source_names`).
NAME_CLASSES = ("exact", "inside", "wider 1-4", "wider 5+", "/0", "disjoint")


def source_names(diag, truth, faults=None):
    """How precisely the bursts' victims named for a source name the burst:
    ``{class: victims}`` over NAME_CLASSES, for every label of a burst
    whose victim's top culprit has cause ``source``.

    The scoring rule counts any overlapping prefix right, a /0 too, which
    tells a reader nothing: ``exact`` is the burst's own prefix, ``inside``
    one inside it, ``wider N`` one holding it that is N bits shorter,
    ``/0`` the whole address space, ``disjoint`` a prefix outside it
    (``"*"``, no address known, counts as ``/0``)."""
    top = {v["packet"]: (v["culprits"][0] if v["culprits"] else None)
           for v in diag["victims"]}
    spec = {f["id"]: f for f in (faults or [])}
    out = dict.fromkeys(NAME_CLASSES, 0)
    for f in truth["faults"]:
        fs = _fault(spec, f)
        if fs["kind"] != "burst" or not fs.get("flows"):
            continue
        burst = ipaddress.ip_network(fs["flows"], strict=False)
        for p in f["victims"]:
            c = top.get(p)
            if c is None or c.get("kind") != "flows" or c.get("cause") != "source":
                continue
            out[_name_class(c["flows"], burst)] += 1
    return out


def _name_class(name, burst):
    if name == "*":
        return "/0"
    n = ipaddress.ip_network(name, strict=False)
    if not n.overlaps(burst):
        return "disjoint"
    if n == burst:
        return "exact"
    if n.subnet_of(burst):
        return "inside"
    if n.prefixlen == 0:
        return "/0"
    return "wider 1-4" if burst.prefixlen - n.prefixlen <= 4 else "wider 5+"


def ceiling(truth, faults=None):
    """The most labels any diagnosis can get right: ``(best, labelled)``.

    A victim the truth lists under several faults has one top culprit. It
    is right for every fault at the NF it names (cause ``local``), or, as a
    flow aggregate, for every burst (some prefix overlaps all their
    ``flows``), never for both kinds at once: the victim counts for its
    largest such group of labels.  Accuracy beyond ``best / labelled`` is
    impossible, so a score reads against this, not against 100%.
    """
    groups, labelled = _label_groups(truth, faults)
    return sum(max(sum(g.values()) for g in gs.values()) for gs in groups.values()), labelled


def kind_ceilings(truth, faults=None):
    """Each fault kind's ceiling taken alone: ``{kind: (best, labelled)}``.

    For every victim, the most of its labels of that kind one top culprit
    can satisfy, as :func:`ceiling` groups them.  A victim of an interrupt
    and a burst counts for both kinds here (either name is right), so the
    kinds' ceilings cannot all be reached at once; two interrupts at
    different NFs count once in two labels.  What a kind's accuracy reads
    against when the victims it shares are named for it."""
    groups, _ = _label_groups(truth, faults)
    out = {}
    for gs in groups.values():
        kinds = {k for g in gs.values() for k in g}
        for kind in kinds:
            best, n = out.get(kind, (0, 0))
            out[kind] = (best + max(g.get(kind, 0) for g in gs.values()),
                         n + sum(g.get(kind, 0) for g in gs.values()))
    return out


def _label_groups(truth, faults):
    """Per victim: its labels grouped by the culprit that satisfies them
    (the NF for a local fault, any flow aggregate for the bursts), each
    group a count per fault kind; and the number of labels."""
    spec = {f["id"]: f for f in (faults or [])}
    groups = {}
    labelled = 0
    for f in truth["faults"]:
        fs = _fault(spec, f)
        key = ("flows",) if fs["kind"] == "burst" else ("nf", fs.get("nf"))
        for p in f["victims"]:
            g = groups.setdefault(p, {}).setdefault(key, {})
            g[fs["kind"]] = g.get(fs["kind"], 0) + 1
            labelled += 1
    return groups, labelled
