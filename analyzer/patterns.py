"""Stage 6 of the analyzer: aggregate per-victim relations into rules.

Each victim contributes ⟨culprit, victim NF⟩ relations weighted by its
culprit scores.  v1 has no packet addresses (the records carry ids only), so
rules aggregate by culprit (NF and cause, or the source) and victim NF; the
victim flows are ``*``.  A rule is kept when it covers at least `threshold`
of the total blame; rules are ranked by score.  AutoFocus-style hierarchies
over source/destination prefixes are the next step once addresses are known.
"""
import numpy as np

from .attribution import culprit_dict

__all__ = ["find_patterns", "DEFAULT_THRESHOLD"]

#: Keep rules covering at least this share of the total blame.
DEFAULT_THRESHOLD = 0.05


def find_patterns(att, threshold=DEFAULT_THRESHOLD):
    """Rules ``{"culprit", "victims", "score", "count"}``, highest score first.

    Parameters
    ----------
    att : mscope.analyzer.attribution.Attribution
    threshold : float
        Share of the total blame (0..1) a rule must cover to be reported.

    Returns
    -------
    list of dict
        ``count`` is the number of victims whose culprits include the rule's
        culprit; ``score`` the sum of their scores for it.
    """
    S = att.scores
    if S.size == 0:
        return []
    total = float(S.sum())
    if total <= 0:
        return []
    vnf = np.array(att.nf, dtype=object)
    rules = []
    for nf in sorted(set(att.nf)):
        rows = vnf == nf
        sub = S[rows]
        for j, key in enumerate(att.culprits):
            col = sub[:, j]
            sc = float(col.sum())
            if sc >= threshold * total and sc > 0:
                rules.append({"culprit": culprit_dict(key),
                              "victims": {"nf": nf, "flows": "*"},
                              "score": round(sc, 3), "count": int((col > 0).sum())})
    rules.sort(key=lambda r: -r["score"])
    return rules
