"""Stage 5 of the analyzer: causal attribution of victims (DESIGN.md §3.4).

A *victim* is a packet whose end-to-end latency exceeds the objective, or
that was dropped.  At every NF f where it waited noticeably (and at the NF
whose queue dropped it) we ask what built the queue ahead of it, over f's
queuing period ``[s, a]`` up to its arrival ``a``, with f's peak rate r:

- **local score**: how much of its wait f's own slowness explains -- the
  wait it would have had had f served at r whenever busy (the queue then is
  ``Q_local(a) = max over t in [s, a] of n_in(t, a) - r (a - t)``, cleared at
  r) taken from its actual wait, times r;
- **input score**: how much the input explains -- the wait it would have
  had had packets arrived at f's usual rate (the median over the capture)
  while f served as it actually did (``Q_input(a) = max over t of
  usual x (a - t) - n_out(t, a)``, cleared by the actual departures), taken
  from its actual wait, times r.

Both are the packets of delay a cause accounts for: DESIGN.md's
``r T - n_out`` and ``n_in - r T`` over the window that maximises them,
measured against what the victim waited for instead of the whole period,
so they stay within the queue ahead of the victim.  For drops the queue at
arrival is used in place of the wait.

The input score is split over the previous hops (upstream NFs, the source)
of the packets that arrived in ``[s, a]``, by how far each sent above its
own usual rate (by count when none did).  An upstream NF u keeps the part it
*compressed* -- of the packets P it sent to f, those beyond what u itself
received for f over the same span, a backlog released as a burst -- and
that part is split between u's own local and input scores for P
(recursively); the rest passes through u to its previous hops.  Blame rests
on ``(nf, "local")``, on the source's flows (``("flows", prefix,
"source")``, the prefix holding most of the source's excess in the window,
see prefixes.py; ``"*"`` without address records), or on ``(nf, "input")``
where the recursion bound stops it.

Victims at one NF in one queuing period are grouped by arrival time (buckets
of ``bucket_ns`` from the period start) for the upstream split, which is
computed once per group; local and input scores are per victim.

The loops numpy cannot do in one pass are compiled (``_attrib.pyx``): every
hop's two scores (a merge over the NF's sorted events) and their compact
store, the victims' hops, the per-call scans of the upstream split, the
sparse scores and the rankings.  The split's recursion itself stays
here.  The kernels evaluate each expression as the numpy code they
replaced did, so scores agree to the last bit
(tests/test_attribution_kernels.py).
"""
import functools
import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import pages
from .prefixes import SourceRates

try:
    from . import _attrib
except ImportError as e:                    # pragma: no cover
    raise ImportError("mscope.analyzer._attrib is not built: pip install -e . "
                      "(or cd analyzer && cythonize -i -3 _attrib.pyx)") from e

__all__ = ["Attribution", "CulpritScores", "RankedCulprits", "attribute", "culprit_dict",
           "BASELINE_BIN_NS"]

#: A hop counts for a victim when it waited at least this share of the
#: victim's total queuing delay (drops always count).
MIN_DELAY_SHARE = 0.1
#: Without a local cause an NF serves at its peak rate less this share:
#: the estimate (queues.PEAK_PERCENTILE of busy batch rates) is 2-5% above
#: the NF's mean rate on the simulator's NFs, and a healthy NF serving at
#: its mean is not slow (a 1% overestimate made a healthy NF the only
#: culprit of victims 0.3 us over the objective).  0, 0.025 and 0.05 on
#: bench/heldout.py's 60 scenarios of seeds 1-3: 94.1, 94.8, 94.7%.
LOCAL_TOLERANCE = 0.025
#: ... or more, as far as the NF keeps up less than its peak while busy
#: (queues.QueueTimeline.busy_rate: its slower batches' cost), up to this
#: share.  Over a 25 ms queuing period at a bottleneck 0.885 loaded, 0.9%
#: below the peak less LOCAL_TOLERANCE made 425 packets of local score and
#: a healthy NF the culprit of a burst's victims (held-out ho49-12).
#: 0.04, 0.05, 0.08 on 25 kept sets: +1,452, +1,471, +1,345 labels.
LOCAL_TOLERANCE_MAX = 0.05
#: An NF kept up while an upstream NF's packets reached it when over no
#: part of their span it fell behind its busy rate (less its tolerance),
#: while busy, by more than this share of the span's packets
#: (_Attributor._kept_up).  A contention at 25% falls ~75% behind; a
#: healthy NF a few packets.  0.05, 0.1, 0.2 on the 1,560 kept held-out
#: scenarios: +5,277, +5,354, +5,373 labels (the suite the same).
KEPT_UP_SHARE = 0.1
#: A source culprit's prefix is a surge, whose own packets it explains
#: (_own_surge_is_necessary), when it carries at most this share of the
#: source's long-run packets, and when it delayed the victim by at least
#: SURGE_DELAY of the victim's excess over the objective.
SURGE_SHARE = 0.1
SURGE_DELAY = 0.1
# grid edges per pass of _fluid_queue_at
_FLUID_CHUNK = 1 << 20
#: The time in batches larger than usual is scored for victims whose waits
#: explain less than this share of their excess (_batch_inflation).
BATCH_SHORT = 0.8
#: An input score stands only where the NF's arrivals ran beyond their
#: natural variation (_beyond_natural_variation): a window of one of these
#: lengths whose count exceeds the usual rate's by more than NATURAL_Z
#: robust standard deviations of all such windows at the NF.  Traffic of a
#: few heavy flows runs 20% over its usual rate for a millisecond with no
#: fault at all.  NATURAL_Z 2, 3 and 4 on bench/heldout.py's seeds 1-3:
#: 96.0, 96.2, 96.0%; seeds 4-6: 92.1, 92.6, 92.6%; seeds 7-8: 95.5, 95.5,
#: 95.7% (without the rule: 96.1, 92.1, 95.4%).  10 ms (where the capture
#: is 8 times as long): a backlog drained at an upstream NF's peak, 19%
#: over the usual rate for 9 ms of bursty traffic, stood out at no
#: shorter length, and its victims went to the NF it reached (held-out
#: ho143-03: 1,243 of a burst's 7,916 own victims).
NATURAL_WINDOWS_NS = (50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000,
                      10_000_000)
#: Arrivals are counted on a grid of this step, which divides every half
#: window of NATURAL_WINDOWS_NS.
NATURAL_STEP_NS = math.gcd(*[T // 2 for T in NATURAL_WINDOWS_NS])
NATURAL_Z = 3.0
#: In the upstream recursion, the waits of the packets an NF released
#: that neither of their scores explains count as input where the scores
#: explain less than this share of them (_Attributor.diagnose), and so do
#: a victim's own (_unexplained_waits_as_input).  0 (never),
#: 0.5, 0.25 (chosen), 0.09 and 1 (always) on bench/heldout.py's seeds 1-3:
#: 96.2, 96.5, 96.6, 96.6, 96.4%; seeds 4-6: 92.6, 93.0, 93.0, 93.0,
#: 93.0%; seeds 7-8: 95.5, 95.7, 95.7, 95.7, 95.7%.  Always cost 0.65 s
#: of attribution on bench/analyze.py's capture (0.25: 0.1-0.25 s), the
#: blame going further upstream.
SCORES_SHORT = 0.25
#: Victims of one period are grouped by arrival in buckets this long.
BUCKET_NS = 100_000
#: Arrival rates are counted in bins this long; an NF's usual rate is the
#: median bin (robust to the bursts being diagnosed).
BASELINE_BIN_NS = 1_000_000
#: Hop scores are made this many rows at a time (1.25 MiB of room).
SCORE_CHUNK = 1 << 16
_EPS = 1e-9
_NO_POS = np.zeros(0, np.int32)
_NO_ADDR = np.zeros(0, np.uint32)
_NO_TIMES = np.zeros(0, np.int64)
#: In _moved_downstream, the next NF's queue in the tandem is full (the
#: victim would have been dropped there) from this share of the most it
#: was seen to hold: the fluid queue drains a little between arrivals, and
#: that most is a lower bound on its room.  0.9, 0.95 and 0.99 on
#: bench/heldout.py's seed 43: 94.6, 94.7, 93.9% (92.1% without the rule;
#: seeds 21-23 the same at all three).
DOWNSTREAM_FULL = 0.95
#: Victims' hops looked at per pass for displaced delay (_moved_downstream).
_MOVED_CHUNK = 1 << 16

#: A family's source traffic is judged by the long-run rates of the
#: packets that reached the NF it came through, unless at least this share
#: of the source's packets reached that NF (a chain: the source's own).
PATH_ALL = 0.95


@dataclass
class CulpritScores:
    """Every victim's culprit scores, sparse: compressed by victim (CSR).

    A victim has a handful of culprits among the capture's tens, so only
    the cells some contribution reached are kept (on bench/analyze.py's
    9.5 M-hop capture: 393k victims x 59 culprits, 998k entries, 22 MiB
    here against 354 MiB as two dense float64 matrices).  A culprit
    without an entry scores 0.

    Attributes
    ----------
    offsets : ndarray of int64, (victims + 1,)
        Victim v's entries are ``offsets[v]:offsets[v + 1]``.
    culprit : ndarray of int32
        Index into ``Attribution.culprits``, ascending within a victim.
    capped : ndarray of float64
        Packets of blame: the score, capped at the victim's excess over
        the objective.
    uncapped : ndarray of float64
        The score before the cap: orders culprits whose capped scores are
        equal (may be ``capped`` itself).
    n_culprits : int
        Number of culprit columns (``len(Attribution.culprits)``).
    """
    offsets: np.ndarray
    culprit: np.ndarray
    capped: np.ndarray
    uncapped: np.ndarray
    n_culprits: int

    @classmethod
    def from_dense(cls, capped, uncapped=None):
        """The sparse form of (victims, culprits) matrices, keeping the
        cells not 0 in either; `uncapped` defaults to `capped`.  For tests
        and small inputs: attribute() builds the sparse form directly."""
        capped = np.asarray(capped, float)
        uncapped = capped if uncapped is None else np.asarray(uncapped, float)
        if capped.ndim != 2 or uncapped.shape != capped.shape:
            raise ValueError(f"capped and uncapped must be matrices of one shape, "
                             f"got {capped.shape} and {uncapped.shape}")
        v, c = np.nonzero((capped != 0) | (uncapped != 0))      # victim-major
        offsets = np.zeros(len(capped) + 1, np.int64)
        np.cumsum(np.bincount(v, minlength=len(capped)), out=offsets[1:])
        return cls(offsets, c.astype(np.int32), capped[v, c], uncapped[v, c],
                   capped.shape[1])

    @property
    def n_victims(self):
        return len(self.offsets) - 1

    def victim_of(self, entries):
        """The victim of each entry index in `entries`."""
        return np.searchsorted(self.offsets, entries, side="right") - 1

    def column(self, j):
        """Capped score of culprit `j` for every victim (0 where none), as
        a dense (victims,) float64 vector."""
        out = np.zeros(self.n_victims)
        at = np.flatnonzero(self.culprit == j)
        out[self.victim_of(at)] = self.capped[at]
        return out

    def row_sums(self):
        """Each victim's total capped score, as the sum over its row of the
        dense matrix (``scores.sum(axis=1)``, to the last bit)."""
        out = np.empty(self.n_victims)
        _attrib.row_sums(self.offsets, self.culprit, self.capped, self.n_culprits, out)
        return out


class NFLabels(Sequence):
    """Each victim's NF name (``""``: none), held as an index into `names`
    per victim (-1: none) rather than a str per victim, which every reader
    turned back into codes (s2's 393k victims: 13 ms to make the strings,
    19 ms for each of three readers)."""

    def __init__(self, code, names):
        self.code, self.names = code, list(names)
        self._groups = None

    def __len__(self):
        return len(self.code)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.names[c] if c >= 0 else "" for c in self.code[i].tolist()]
        c = int(self.code[i])
        return self.names[c] if c >= 0 else ""

    def groups(self):
        """(the distinct names, sorted; each victim's index into them),
        made once (the patterns, the JSON and the summary each ask)."""
        if self._groups is None:
            self._groups = self._make_groups()
        return self._groups

    def _make_groups(self):
        present = np.flatnonzero(np.bincount(self.code + 1, minlength=1)) - 1
        text = [self.names[c] if c >= 0 else "" for c in present.tolist()]
        order = sorted(range(len(text)), key=text.__getitem__)
        lut = np.empty(len(self.names) + 1, np.intp)
        lut[present[order] + 1] = np.arange(len(order))
        return [text[k] for k in order], lut[self.code + 1]


@dataclass
class Attribution:
    """Per-victim ranked culprits.

    Attributes
    ----------
    packet : ndarray of int64
        Trajectory packet index of each victim.
    packet_id : ndarray of uint64
    latency_ns : ndarray of int64
        -1 for drops (and unknown latency).
    dropped : ndarray of bool
    nf : sequence of str
        The NF where the victim was dropped or waited longest
        (:class:`NFLabels` from :func:`attribute`; see :meth:`nf_groups`).
    culprits : list of tuple
        Column keys: ``("nf", name, "local"|"input")`` or
        ``("flows", prefix, "source")``.
    scores : CulpritScores
        Packets of blame per victim and culprit (capped and uncapped),
        sparse.
    arrival_ns : ndarray of int64
        Arrival of each victim at its ``nf`` (-1 unknown).
    source_cover : str or None
        The prefix covering every address the source sent from (None:
        none known).  A source culprit of that prefix is all the traffic:
        no narrower prefix held the excess it is blamed for.
    source_parts : dict
        For a source culprit's prefix named so because two surges came
        together (prefixes.SECOND_SURGE), the surges it holds, the most
        blamed first: ``{prefix: [prefix, ...]}``.
    """
    packet: np.ndarray
    packet_id: np.ndarray
    latency_ns: np.ndarray
    dropped: np.ndarray
    nf: list
    culprits: list
    scores: CulpritScores
    arrival_ns: np.ndarray = None
    source_cover: str = None
    source_parts: dict = field(default_factory=dict)

    def culprit_json(self, key):
        """Culprit `key`'s SCENARIO.md dict, without a score; a source
        culprit's parts (``source_parts``) with it."""
        return culprit_dict(key, parts=self.source_parts.get(key[1]) if key[0] == "flows"
                            else None)

    def culprit_dicts(self):
        """Each culprit column's :meth:`culprit_json`."""
        return [self.culprit_json(k) for k in self.culprits]

    def ranked_arrays(self):
        """Every victim's culprits, ranked, as flat arrays (no Python object
        per victim): what :meth:`ranked_all` lists, for writers that format
        the victims' JSON themselves.

        Returns
        -------
        RankedCulprits
            Victim i's culprits are ``culprit[offsets[i]:offsets[i + 1]]``,
            best first, with their JSON scores ``score[...]``.
        """
        sc = self.scores
        offsets = np.zeros(sc.n_victims + 1, np.int64)
        # once to count each victim's culprits, once to fill them in
        _attrib.rank_victims(sc.offsets, sc.culprit, sc.capped, sc.uncapped, _EPS, offsets,
                             np.zeros(0, np.int32), np.zeros(0))
        culprit = np.empty(int(offsets[-1]), np.int32)
        score = np.empty(int(offsets[-1]))
        _attrib.rank_victims(sc.offsets, sc.culprit, sc.capped, sc.uncapped, _EPS, offsets,
                             culprit, score)
        return RankedCulprits(offsets, culprit, score)

    def ranked_all(self):
        """Every victim's culprits as SCENARIO.md dicts, ranked (see
        :meth:`ranked_arrays`)."""
        r = self.ranked_arrays()
        base = self.culprit_dicts()
        js, vals, off = r.culprit.tolist(), r.score.tolist(), r.offsets.tolist()
        return [[dict(base[j], score=v) for j, v in zip(js[b:e], vals[b:e])]
                for b, e in zip(off[:-1], off[1:])]

    def nf_groups(self):
        """(the distinct names in ``nf``, sorted; each victim's index into
        them, an ndarray)."""
        if isinstance(self.nf, NFLabels):
            return self.nf.groups()
        names = sorted(set(self.nf))
        code = {x: i for i, x in enumerate(names)}
        return names, np.fromiter(map(code.__getitem__, self.nf), np.intp, len(self.nf))

    def top(self):
        """Index into ``culprits`` of each victim's top culprit (-1: none)."""
        sc = self.scores
        if sc.n_culprits == 0:
            return np.full(len(self.packet), -1)
        # per victim: the best score's culprits (within _EPS), the one with
        # the largest uncapped score among them
        out = np.empty(sc.n_victims, np.int64)
        _attrib.top_culprits(sc.offsets, sc.culprit, sc.capped, sc.uncapped, sc.n_culprits,
                             _EPS, out)
        return out


@dataclass
class RankedCulprits:
    """Every victim's ranked culprits as flat arrays (CSR layout).

    Attributes
    ----------
    offsets : ndarray of int64, (victims + 1,)
        Victim i's culprits are entries ``offsets[i]:offsets[i + 1]``.
    culprit : ndarray of int32
        Index into ``Attribution.culprits``; per victim by score, then
        uncapped score, descending, then by index.
    score : ndarray of float64
        The culprit's score rounded to 3 decimals (``np.round``), > 0: the
        JSON ``score``.
    """
    offsets: np.ndarray
    culprit: np.ndarray
    score: np.ndarray


def culprit_dict(key, score=None, parts=None):
    """The SCENARIO.md JSON form of a culprit key; a source culprit's
    `parts` (the surges its prefix holds) as the optional key "parts"."""
    if key[0] == "nf":
        d = {"kind": "nf", "nf": key[1], "cause": key[2]}
    else:
        d = {"kind": "flows", "flows": key[1], "cause": key[2]}
        if parts:
            d["parts"] = list(parts)
    if score is not None:
        d["score"] = round(float(score), 3)
    return d


def _median_rate(bin_counts, t0, t1):
    """Median packets/ns over the BASELINE_BIN_NS bins of [t0, t1] (the
    last one open-ended), from the packets' counts per bin; for spans
    under 5 bins, the mean."""
    n = int(bin_counts.sum())
    if n == 0:
        return 0.0
    if len(bin_counts) < 5:
        return n / max(t1 - t0, 1)
    return float(np.median(bin_counts)) / BASELINE_BIN_NS


def group_shares(counts, usual_from, spans):
    """Each upstream group's share of each prefix's arrivals at an NF:
    ``counts[g, b]`` arrivals from group g (NF g - 1, the source for g = 0)
    in prefix b, which spans ``spans[b]`` ns; ``usual_from[g]`` the usual
    rate (packets/ns) from g.  A present group's share is its excess over
    its usual rate, ``counts - usual_from * spans`` clipped at 0, over the
    present groups' total; or its count over theirs where the excesses sum
    to at most _EPS (nothing came above its usual rate).  Totals are added
    as ``ndarray.sum`` adds the present groups' values, in group order.

    Returns
    -------
    ndarray of float64, like `counts`
        Meaningful where ``counts > 0``.
    """
    if len(counts) < 8:                 # the usual case, by one kernel call
        out = np.empty(counts.shape)
        _attrib.group_shares_small(np.ascontiguousarray(counts, np.int64),
                                   np.ascontiguousarray(usual_from, float),
                                   np.ascontiguousarray(spans, np.int64), _EPS, out)
        return out
    present = counts > 0
    x = counts - usual_from[:, None] * spans.astype(float)[None, :]
    w = np.where(present, np.where(x > 0.0, x, 0.0), 0.0)
    total = _column_sums(w, present)
    by_count = total <= _EPS
    if by_count.any():
        w[:, by_count] = np.where(present[:, by_count], counts[:, by_count], 0.0)
        total[by_count] = _column_sums(w[:, by_count], present[:, by_count])
    with np.errstate(invalid="ignore", divide="ignore"):
        return w / total


def _column_sums(w, present):
    # each column's sum over its present rows as ndarray.sum adds them:
    # in order below 8 terms (the absent rows' zeros change nothing),
    # pairwise from 8
    if len(w) < 8:
        return w.sum(axis=0)
    return np.array([w[present[:, b], b].sum() for b in range(w.shape[1])])


class _NF:
    """One NF's queue as sorted event arrays, for window counts and the two
    counterfactual queues.

    What was offered to the queue is two runs, each in (arrival, hop)
    order, never merged into arrays of their own: the accepted arrivals
    (``hops_by_arr``: the queue stage's ``hops``, no copy where they are
    in that order, as a FIFO queue's are) and the dropped ones (``d_arr``,
    ``d_hops``, a few).  The accepted arrivals' times are kept only until
    their hop scores are made (``scores``, :class:`_HopScores`): the
    upstream split looks them up through their hops (``_attrib.
    arrivals_between``), which leaves 8 bytes per arrival (72 MiB on
    bench/analyze.py's 9.5 M-hop capture) out of the stage's peak.
    """

    def __init__(self, k, q, traj, drops, prev_nf, next_nf, t0, t1):
        self.k = k
        r = q.peak_rate
        self.rate = float(r) if np.isfinite(r) and r > 0 else 0.0
        # how far under its peak the NF keeps up while busy, healthy or
        # not, within LOCAL_TOLERANCE..LOCAL_TOLERANCE_MAX
        kept = q.busy_rate
        known = bool(np.isfinite(kept) and kept > 0)
        self.busy_rate = float(kept) if known else self.rate
        self.tolerance = LOCAL_TOLERANCE
        if known and self.rate > 0:
            self.tolerance = min(LOCAL_TOLERANCE_MAX, max(LOCAL_TOLERANCE, self.rate / kept - 1))
        idx = q.hops.dtype
        acc, rx = q.arrival_rx()                            # accepted arrivals
        self._dep = rx if _attrib.is_sorted(rx) else np.sort(rx)
        order = _attrib.arrival_order(acc, q.hops)
        if order:
            acc_hops, acc_rx = q.hops, rx
            if order == 1:                  # sorted, ties not in hop order
                acc_hops, acc_rx = acc_hops.copy(), acc_rx.copy()
                _attrib.order_ties_by_hop(acc, acc_hops, acc_rx)
        else:
            # a stable argsort of the arrivals taken in hop order
            h = np.sort(q.hops)
            a = _arrival(traj, h)
            o = np.argsort(a, kind="stable")
            acc, acc_hops = a[o], h[o]
            acc_rx = traj.hop_rx_ns[acc_hops]
            del h, a, o
        del rx
        self.hops_by_arr = acc_hops
        self._traj = traj
        self.d_hops = drops[np.lexsort((drops, traj.hop_arrival_ns[drops]))].astype(idx)
        self.d_arr = traj.hop_arrival_ns[self.d_hops]
        self.offered = len(acc_hops) + len(self.d_hops)     # packets that reached it
        self.pstart, self.pend = q.period_start_ns, q.period_end_ns
        # the periods that began while the NF was silent, and where it went
        # silent: their no-input-cause queue starts there
        self.pquiet = q.period_quiet
        # the most packets the queue held: its room, as far as it shows
        self.room = float(q.step_len.max(initial=0))
        # usual arrival rate, in total and per previous hop's NF (-1:
        # source); arrivals per next hop's NF (for compression towards it)
        nb = max(1, int((t1 - t0) // BASELINE_BIN_NS))
        ng = len(traj.nf_names) + 1
        from_bins, to_bins = np.zeros((ng, nb), np.int64), np.zeros((ng, nb), np.int64)
        first = min(acc[:1].tolist() + self.d_arr[:1].tolist(), default=None)
        start = min(t0, first) if nb < 5 and first is not None else t0
        next_of_arr = np.empty(len(acc), next_nf.dtype)
        _attrib.neighbours(acc, acc_hops, prev_nf, next_nf, start, BASELINE_BIN_NS,
                           from_bins, to_bins, next_of_arr)
        # the accepted arrivals per next NF, before the dropped ones add
        # to the bins (a bincount of next_of_arr widened it to 8 bytes each)
        n_to = to_bins.sum(axis=1)[1:]
        d_next = np.empty(len(self.d_arr), next_nf.dtype)
        _attrib.neighbours(self.d_arr, self.d_hops, prev_nf, next_nf, start, BASELINE_BIN_NS,
                           from_bins, to_bins, d_next)
        self.usual = _median_rate(from_bins.sum(axis=0), t0, t1)
        # by previous NF + 1, 0 where none came (group_shares)
        self.usual_from = np.zeros(ng)
        for g in np.flatnonzero(from_bins.any(axis=1)).tolist():
            self.usual_from[g] = _median_rate(from_bins[g], t0, t1)
        self.usual_to = {g - 1: _median_rate(to_bins[g], t0, t1)
                         for g in np.flatnonzero(to_bins.any(axis=1)).tolist()}
        # where the arrivals ran beyond their natural variation: an input
        # score stands only where one of these windows overlaps the hop's
        # queuing period up to its arrival (hop_scores).  After a stall the
        # drain is prolonged by whatever arrives, and arrivals 20% over
        # their usual rate for a millisecond of heavy-flow traffic would
        # otherwise explain as much of the wait as the stall
        self.grid = _arrival_grid(acc, self.d_arr)
        variation = _natural_variation(acc, self.d_arr, self.usual, self.grid)
        self.surge_start, self.surge_end, ws, we = _windows_beyond(variation)
        # its scale per window length, to judge surges carried from
        # upstream (carry_surges) and what natural variation a source
        # name allows for (_Attributor._slack)
        self.scales = None if variation is None else [(T, med, sd) for T, _, _, med, sd
                                                      in variation]
        # the no-input-cause queue counts the arrivals that came, but at
        # the usual rate where they ran beyond their natural variation
        # either way (hop_scores)
        self._either = (ws, we)
        # the arrivals bound for each next NF, for bound_for: the
        # accepted ones as positions into hops_by_arr (4 bytes each, none
        # where all go to one NF, as in a chain: None), the dropped ones
        # (none, unless a dropped hop has a next) as times; those leaving
        # the chain are never asked for
        if np.count_nonzero(n_to) == 1 and n_to.max() == len(acc):
            self.to_pos = {int(n_to.argmax()): None}
        else:
            at = np.concatenate([[0], np.cumsum(n_to)[:-1]]).astype(np.int64)
            pos = np.empty(int(n_to.sum()), idx)
            _attrib.positions_by_group(next_of_arr, at, pos)
            self.to_pos = {g: pos[at[g]:at[g] + n_to[g]]
                           for g in np.flatnonzero(n_to).tolist()}
        del next_of_arr
        self.to_dropped = {g: self.d_arr[d_next == g]
                           for g in np.unique(d_next[d_next >= 0]).tolist()}
        self._arr, self._rx = acc, acc_rx   # until hop_scores

    def period_of(self, t):
        """Queuing period containing times `t` (-1 where the queue was empty)."""
        t = np.asarray(t, np.int64)
        p = np.searchsorted(self.pstart, t, side="right") - 1
        pe = self.pend[np.maximum(p, 0)] if len(self.pend) else np.zeros(len(t), np.int64)
        ok = (p >= 0) & ((pe < 0) | (pe >= t))
        return np.where(ok, p, -1)

    def arrived(self, s, e):
        """Hops that arrived in [s, e], in (arrival, hop) order."""
        t = self._traj
        i0, i1 = _attrib.arrivals_between(self.hops_by_arr, t.hop_arrival_ns, t.hop_rx_ns, s, e)
        j0, j1 = np.searchsorted(self.d_arr, s, "left"), np.searchsorted(self.d_arr, e, "right")
        if j0 == j1:
            return self.hops_by_arr[i0:i1]
        h = self.hops_by_arr[i0:i1]
        arr = np.empty(len(h), np.int64)
        _attrib.gather_arrival(h, t.hop_arrival_ns, t.hop_rx_ns, arr)
        out = np.empty(i1 - i0 + j1 - j0, self.hops_by_arr.dtype)
        _attrib.merge_hops_by_arrival(arr, h, self.d_arr[j0:j1], self.d_hops[j0:j1], out)
        return out

    def carry_surges(self, t, upstream):
        """Add to the surge windows those of the NFs that feed this one
        (`upstream`, their own carried ones included) where their packets
        came on here, as far as they still stand out here.

        A burst that queues at one NF reaches the next at that NF's peak
        rate, spread over as long as the backlog took to clear: 39% over
        the usual rate for 4 ms at the bottleneck, where heavy-tailed
        traffic varies by 15% a millisecond (held-out ho44-08), so the
        NF's own windows (fixed lengths, a grid) never saw it, and the
        bottleneck's wait was all blamed on a stall there.  Over the span
        the surge's packets took to arrive here, it stands out: judged by
        this NF's own variation (:func:`_stands_out`), so that a heavy
        flow's ebb and flow on one branch of a DAG, a surge there, does not
        carry into the join."""
        if self.surge_start is None:
            return
        starts, ends = [], []
        for U in upstream:
            if U.surge_start is None:
                continue
            for s0, e0 in zip(U.surge_start.tolist(), U.surge_end.tolist()):
                n, a0, a1 = _attrib.next_arrival_span(U.arrived(s0, e0), t.hop_packet,
                                                      t.hop_nf, t.hop_arrival_ns, self.k)
                if n >= 2:
                    starts.append(a0)
                    ends.append(a1)
        if not starts:
            return
        s, e = np.array(starts, np.int64), np.array(ends, np.int64)
        keep = _stands_out(self.scales, self._arr, self.d_arr, self.usual, s, e)
        if not keep.any():
            return
        s, e = s[keep], e[keep] + 1                     # e: the last one's arrival, in
        self.surge_start, self.surge_end = _merged_windows(
            [(self.surge_start, self.surge_end), (s, e)])
        self._either = _merged_windows([self._either, (s, e)])

    def hop_scores(self, n_hops):
        """The local and input scores (packets) of every hop that arrived
        here, kept compact in ``self.scores`` (:class:`_HopScores`): one
        merge over the sorted arrivals and departures (_attrib.hop_scores).

        A hop arriving at ``a`` in queuing period ``[s, ...)``, waiting
        until its rx, with ``q`` accepted packets queued at ``a``:

        - no local cause (served at r whenever busy, from the period start,
          with room for what was dropped): ``q_loc = max over t in [s, a]
          of offered(t, a) - r (a - t)``, a running minimum; and not before
          the batch taken last is served at r, while the NF at r would
          still be busy then (the same maximum over all t <= a, periods
          not restarting it, bounds that wait);
        - no input cause (the arrivals without their surges against the
          actual departures): ``q_in = max over t of A(a) - A(t) -
          departures(t, a)``, where A counts the arrivals that came, but
          the usual rate within the windows where they ran beyond their
          natural variation either way (a burst, or an upstream stall's
          gap and the backlog it released; traffic that ran over or under
          its median for a while with no surge ran so without one too),
          from where the NF went silent before the period if
          it did (``period_quiet``): an NF that stopped polling while its
          queue was empty would have queued its arrivals since;
        - the waits without each cause: the queue ahead (the victim itself
          not counted) cleared at r (local), or by the departures that
          actually followed, the victim's own one included (input); the
          scores are the actual wait minus those, times r (for drops, the
          queue at arrival minus each counterfactual queue, the one without
          a local cause holding no more than ``room``: dropping what would
          not fit, it drains a burst's backlog as the NF at r would);
        - the input score is 0 unless the arrivals ran beyond their natural
          variation somewhere in [s, a] (``surge_start``/``surge_end``).
        """
        arr, rx, dep = self._arr, self._rx, self._dep
        ws, we = self._either
        unusual = _unusual_windows(arr, self.d_arr, self.usual, ws, we)
        del self._arr, self._rx, self._dep, self._either
        judge = self.surge_start is not None
        surge_start, surge_end = ((self.surge_start, self.surge_end) if judge else
                                  (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        self.scores = S = _HopScores(n_hops)
        n = len(arr) + len(self.d_arr)
        if n == 0 or self.rate <= 0:
            S.seal([])
            return
        # a chunk at a time, kept compact: room for every arrival would be
        # the stage's peak (20 bytes each)
        state = np.zeros(_attrib.HOP_SCORES_STATE, np.int64)
        state_d = np.zeros(_attrib.HOP_SCORES_STATE_D)
        room = min(n, SCORE_CHUNK)
        parts = []
        while state[0] < len(arr) or state[1] < len(self.d_arr):
            kept, scores = np.empty(room, self.hops_by_arr.dtype), np.empty((room, 2))
            c = _attrib.hop_scores(arr, rx, self.hops_by_arr, self.d_arr, self.d_hops,
                                   dep, self.pstart, self.pend, self.pquiet, self.rate,
                                   self.rate / (1 + self.tolerance), self.usual,
                                   surge_start, surge_end, judge, *unusual, judge,
                                   S.words, kept, scores, state, state_d, self.room)
            if c < 0:                       # a run of equal arrivals longer than room
                room = -c
                continue
            parts.append((kept[:c].copy(), scores[:c].copy()))
        # the times go before the scores are laid out beside their parts:
        # both at once were this stage's peak (the last NF's 35 MiB of
        # times on bench/analyze.py's 9.5 M-hop capture)
        del kept, scores, arr, rx, dep
        S.seal(parts)


class _HopScores:
    """One NF's hops' local and input scores (packets), kept compact: only
    the hops with a score not 0 have a row (on bench/analyze.py's 9.5 M-hop
    capture 28% of them: 40 MiB where (hops, 2) float64 took 145 MiB).

    Bit h of ``words`` is set where hop h has a row of ``values``: row
    ``rank[h // 64]`` + the bits set below h in its word.  One per NF, each
    laid out by hop as soon as the NF's scores are made, so that no NF's
    scores wait in arrival order for the others' (1.2 MiB of bits per NF
    and 10 M hops).
    """

    def __init__(self, n_hops):
        self.words = np.zeros((n_hops + 63) // 64, np.uint64)

    def seal(self, parts):
        """Lay out the scores by hop: `parts` is a list of (hops, their
        scores as rows), their bits set; emptied on the way."""
        self.rank = np.empty(len(self.words), np.int64)
        n = _attrib.rank_words(self.words, self.rank)
        self.values = np.empty((n, 2))
        while parts:
            hops, scores = parts.pop()
            _attrib.scatter_scored(self.words, self.rank, hops, scores, self.values)

    def gather(self, idx, local, input):
        """``local[i], input[i]`` = the scores of hop ``idx[i]`` (0 where it
        has none)."""
        _attrib.gather_scores(self.words, self.rank, self.values, idx, local, input)


class _Attributor:
    def __init__(self, traj, queues, max_depth):
        self.t = traj
        names = traj.nf_names
        nh = len(traj.hop_packet)
        # the capture's span, and the hops dropped at each NF's queue
        # (received never, but sent there)
        index = np.int32 if nh < 2**31 else np.int64
        drops = np.empty(nh, index)
        t0, t1, n_packets, n_drops = _attrib.hop_summary(
            traj.hop_packet, traj.hop_rx, traj.hop_arrival_ns, traj.hop_rx_ns, drops)
        t1 = t1 if nh else 1
        drops.resize(n_drops, refcheck=False)
        drop_nf = traj.hop_nf[drops]
        # the NF of each hop's previous and next hop (-1: none)
        code = np.int8 if len(names) < 127 else np.int16
        self.prev_nf, next_nf = np.empty(nh, code), np.empty(nh, code)
        # hops from each NF to each (row: from)
        self.links = links = np.zeros((len(names), len(names)), np.int64)
        _attrib.hop_neighbours(traj.hop_packet, traj.hop_nf, self.prev_nf, next_nf, links)
        # every hop's local and input scores, once (the recursion sums
        # them), upstream first: an NF's surges carry on to the NFs after it
        queued = {names.index(n): q for n, q in queues.items()}
        self.nfs = {}
        for k in _upstream_first(links, list(queued)):
            F = _NF(k, queued[k], traj, drops[drop_nf == k], self.prev_nf, next_nf, t0, t1)
            F.carry_surges(traj, [self.nfs[u] for u in np.flatnonzero(links[:, k]).tolist()
                                  if u in self.nfs])
            F.hop_scores(nh)
            self.nfs[k] = F
        self.nfs = dict(sorted(self.nfs.items()))
        self.names = names
        self.max_depth = max_depth
        # room to gather the scores of one family's hops (_diagnose_family),
        # grown as needed: the recursion makes thousands of calls
        self._scratch = np.empty((2, 0))
        # the source's usual rates per address, from the first hops
        self.src_addr = None if traj.src_addr is None else \
            np.ascontiguousarray(traj.src_addr, np.uint32)
        if traj.src_addr is not None:
            addr = np.empty(n_packets, np.uint32)
            _attrib.first_hop_addr(traj.hop_packet, self.src_addr, addr)
        else:
            addr = np.zeros(0, np.uint32)
        self.sources = SourceRates(addr, t1 - t0)
        self._span = t1 - t0
        self._n_sent = int(np.count_nonzero(addr))
        self._rates_at = {}
        # the most of its population's long-run packets each source name
        # held, among those it was named in (_surge_prefix)
        self.named_shares = {}
        # per source name held two surges: the blame of the windows each
        # surge was seen in (source_parts)
        self._parts = {}
        # per (NF, NF further down its path): what would feed the latter
        # without the former's slowness (_far_feeds, _moved_downstream)
        self.far_feeds = {}

    def rates(self):
        """Each NF's peak rate by code (packets/ns; inf where it has none:
        never the slower)."""
        r = np.full(len(self.names), np.inf)
        for k, F in self.nfs.items():
            if F.rate > 0:
                r[k] = F.rate
        return r

    def _add(self, acc, key, v):
        acc[key] = acc.get(key, 0.0) + v

    def unit_splits(self, k, s, ends):
        """How one packet of input score at NF k divides over the arrivals
        there in [s, e], for each e of `ends` (ascending): a list of
        {culprit: share}.

        The windows share their start, so their arrivals are prefixes of
        one list, and every step of the recursion (:meth:`_split_family`)
        splits a family of prefixes in one pass over the longest: one
        split per window, each from the period's start, was quadratic in
        a long period's buckets (bench/analyze.py's capture: 1,137 splits
        over 101 periods passed 16 M hops through the upstream grouping).
        """
        F = self.nfs[k]
        H, ns = self._arrived_prefixes(F, s, np.asarray(ends, np.int64))
        spans = np.maximum(np.asarray(ends, np.int64) - s, 0)
        accs = [{} for _ in ends]
        self._split_family(k, H, ns, spans, np.ones(len(ends)), accs, 0, k)
        return accs

    def _arrived_prefixes(self, U, s, ends):
        """``U.arrived(s, ends[-1])`` and, for each end, how many of them
        arrived by it (``U.arrived(s, e)`` is that prefix)."""
        t = self.t
        H = U.arrived(s, int(ends[-1]))
        arr = np.empty(len(H), np.int64)
        _attrib.gather_arrival(H, t.hop_arrival_ns, t.hop_rx_ns, arr)
        return H, np.searchsorted(arr, ends, "right").astype(np.int64)

    def _slack(self, k, spans):
        """How far the arrivals at NF k run over their usual count by
        natural variation alone, over windows of `spans` ns: a share of the
        usual count, each, at the median and NATURAL_Z deviations above it
        (:func:`_stands_out`'s scales); None without a baseline."""
        F = self.nfs[k]
        if F.scales is None or F.usual <= 0:
            return None
        w = np.maximum(np.asarray(spans, float), 1.0)
        med, sd = _scaled(F.scales, w)
        return np.maximum(med + NATURAL_Z * sd, 0.0) / (F.usual * w)

    def _narrower(self, a, b):
        """Of NFs `a` and `b`, the one fewer packets reached."""
        return a if self.nfs[a].offered <= self.nfs[b].offered else b

    def _rates_via(self, k):
        """The source's long-run rates per prefix among the packets that
        reached NF k: what a family that went through k is judged by.

        Behind a split only some of the traffic reaches k, while a burst's
        flows may all go its way: against all the source's packets, the
        rest of the traffic at k ran far under its long-run rate, the
        window held no excess, and the burst was named for the whole
        address space (bench/heldout.py seed 46: a /24 named 0.0.0.0/0 for
        3,232 victims).  Where (nearly) all the source's packets reach k,
        as in a chain, the source's own rates."""
        if self._n_sent == 0 or self.nfs[k].offered >= PATH_ALL * self._n_sent:
            return self.sources
        rates = self._rates_at.get(k)
        if rates is None:
            F, t = self.nfs[k], self.t
            addr, n = np.empty(F.offered, np.uint32), len(F.hops_by_arr)
            _attrib.hops_addr(F.hops_by_arr, t.hop_packet, self.src_addr, addr[:n])
            _attrib.hops_addr(F.d_hops, t.hop_packet, self.src_addr, addr[n:])
            rates = self._rates_at[k] = SourceRates(addr, self._span)
        return rates

    def _split_family(self, k, H, ns, spans, amounts, accs, depth, via):
        """Split ``amounts[b]`` over the previous hops of the arrivals
        ``H[:ns[b]]`` at NF k (over ``spans[b]`` ns) by how far each
        upstream NF, or the source, sent above its usual rate, for each b
        (`ns` ascending), each culprit's part added to ``accs[b]``.  Each
        step finishes every prefix of its family before the next, so each
        window's parts are added in the order of a recursion over it alone
        (depth first): the same sums, to the last bit.

        What an upstream NF u sent beyond its usual rate towards k is
        either its own backlog released (it sent more than it received
        over the span of those sends, and faster than those packets had
        come in: compressed), diagnosed at u
        (:meth:`_diagnose_family`), or an excess of its input passed
        through, split again at u; the source's share goes to the flows
        that sent above their long-run rate (:meth:`_source_family`).
        `via`: the NF fewest packets reached among those the recursion
        came through, k included (:meth:`_rates_via`)."""
        via = self._narrower(via, k)
        live = np.flatnonzero((amounts > _EPS) & (ns > 0))
        if len(live) == 0:
            return
        if len(live) < len(ns):
            ns, spans, amounts = ns[live], spans[live], amounts[live]
            accs = [accs[b] for b in live.tolist()]
        F = self.nfs[k]
        t = self.t
        ng = len(F.usual_from)
        grouped = np.empty(int(ns[-1]), H.dtype)
        counts = np.empty((ng, len(ns)), np.int64)
        at = _attrib.upstream_groups_at(H, self.prev_nf, ns, grouped, counts)
        present = counts > 0
        shares = group_shares(counts, F.usual_from, spans)
        for g in np.flatnonzero(present.any(axis=1)).tolist():
            u = g - 1
            sel = np.flatnonzero(present[g] & (shares[g] > _EPS))
            if len(sel) == 0:
                continue
            c_u = counts[g, sel]
            a_u = amounts[sel] * shares[g, sel]
            G = grouped[at[g]:at[g] + int(c_u[-1])]
            if u < 0:
                self._source_family(G, c_u, a_u, [accs[b] for b in sel.tolist()], via)
                continue
            if depth >= self.max_depth or u not in self.nfs:
                key = ("nf", self.names[u], "input")
                for b, a in zip(sel.tolist(), a_u.tolist()):
                    self._add(accs[b], key, a)
                continue
            U = self.nfs[u]
            # the same packets' hops at u (G's prefixes): their tx span,
            # u's arrivals bound for k over it, their arrival span
            nb = len(sel)
            t0, t1, n_arr = np.empty(nb, np.int64), np.empty(nb, np.int64), np.empty(nb, np.int64)
            s_u, e_u = np.empty(nb, np.int64), np.empty(nb, np.int64)
            pos = U.to_pos.get(k, _NO_POS)
            _attrib.upstream_windows_at(G, c_u, t.hop_tx_ns, t.hop_arrival_ns, t.hop_rx_ns,
                                        U.hops_by_arr, _NO_POS if pos is None else pos,
                                        pos is None, t0, t1, n_arr, s_u, e_u)
            d = U.to_dropped.get(k)
            if d is not None:
                n_arr += np.searchsorted(d, t1, "right") - np.searchsorted(d, t0, "left")
            # What u compressed: its sends beyond its arrivals over their
            # span (c_u - n_arr), but no more than the share by which
            # those packets' own span shrank at u, from their arrivals to
            # their sends.  A burst that came in as fast as u let it out
            # passed through u, however long u held it (bench/heldout.py
            # seed 40: a burst that queued at a contended NF was named
            # for that NF at the next one).  Where no arrival at u was
            # recorded, the first measure alone.
            comp = np.maximum(0.0, c_u - n_arr)
            thru = np.maximum(0.0, n_arr - U.usual_to.get(k, 0.0) * np.maximum(t1 - t0, 0))
            shrank = np.where((s_u == t0) & (e_u == t1), 1.0, np.clip(
                1.0 - np.maximum(t1 - t0, 0) / np.maximum(e_u - s_u, 1), 0.0, 1.0))
            squeezed = np.minimum(comp, c_u * shrank)
            thru += comp - squeezed
            comp = squeezed
            # What passes through u is what came in to it beyond its
            # natural variation.  Where the packets u sent came in within
            # it, over the span they arrived in, u passed on no surge:
            # what it sent beyond its usual rate was its backlog, however
            # its arrivals ran while it sent them (held-out ho75-13: a
            # bug's backlog drained one NF down, the source's ebb and flow
            # over the drain tied with the bug at the cap).  Unless k fell
            # behind while they reached it: then k's own slowness held
            # them too, and the send span's measure stands (bug-contention:
            # a contended NAT's own victims went to the firewall whose
            # backlog reached it).
            judge = np.flatnonzero((comp > _EPS) & (thru > 0))
            if U.scales is not None and len(judge):
                s_j = s_u[judge]
                e_j = np.maximum(e_u[judge], s_j + 1)
                judge = judge[~_count_stands_out(U.scales, _grid_counts(U.grid, s_j, e_j),
                                                 U.usual, s_j, e_j)]
                if len(judge):
                    kept = self._kept_up(k, H, ns[sel[judge]], t0[judge], t1[judge])
                    thru[judge[kept]] = 0.0
            both = comp + thru
            with np.errstate(invalid="ignore", divide="ignore"):
                c = np.where(both > _EPS, comp / both, 1.0)
            d_sel = np.flatnonzero(c > 0)
            if len(d_sel):
                self._diagnose_family(u, G, c_u[d_sel], (a_u * c)[d_sel],
                                      [accs[sel[i]] for i in d_sel.tolist()], depth + 1, via)
            s_sel = np.flatnonzero(c < 1)
            if len(s_sel):
                self._split_family(u, G, c_u[s_sel], np.maximum(e_u - s_u, 0)[s_sel],
                                   (a_u * (1 - c))[s_sel],
                                   [accs[sel[i]] for i in s_sel.tolist()], depth + 1, via)

    def _kept_up(self, k, H, ns, t0, t1):
        """Whether NF k kept up its busy rate over every part of each span
        [t0, t1] while it was busy (it fell no more than KEPT_UP_SHARE of
        the span's packets behind over any part; its queue empty, it
        sends nothing and is not slow: held-out ho50-00, an interrupt's
        backlog passing NFs loaded 8-72%): counted among its arrivals
        ``H[:ns]`` (first in, first out, whatever k sent over a span that
        ends by their last arrival came in among them)."""
        F = self.nfs[k]
        rx, n_ok = np.empty(int(ns[-1]), np.int64), np.empty(len(ns), np.int64)
        rx = rx[:_attrib.taken_times(H, self.t.hop_rx_ns, ns, rx, n_ok)]
        lo = np.minimum(np.searchsorted(rx, t0, "left"), n_ok)
        hi = np.minimum(np.searchsorted(rx, t1, "right"), n_ok)
        r = F.busy_rate / (1 + F.tolerance)
        behind = np.empty(len(t0))
        _attrib.most_behind(rx, lo, hi, t0, t1, r, F.pstart, F.pend, behind)
        span = np.maximum(t1 - t0, 0)
        return (span > 0) & (behind <= KEPT_UP_SHARE * r * span)

    def _source_family(self, G, ns, amounts, accs, via):
        """``amounts[b]`` to the flows that sent the arrivals ``G[:ns[b]]``
        (from the source) above their long-run rate among the packets that
        reached NF `via`, over those arrivals' span."""
        t = self.t
        addr = np.empty(len(G) if t.src_addr is not None else 0, np.uint32)
        span = np.empty(len(ns), np.int64)
        _attrib.source_windows_at(G, ns, t.hop_packet,
                                  self.src_addr if t.src_addr is not None else _NO_ADDR,
                                  t.hop_arrival_ns, addr, span)
        rates = self._rates_via(via)
        names, parts = rates.excess_prefixes(addr, ns, span, slack=self._slack(via, span),
                                             parts=True)
        for name, two, a in zip(names, parts, amounts.tolist()):
            # surges both: not, say, the two halves of the usual traffic
            if two and all(_usual_share(x, rates) <= SURGE_SHARE for x in two):
                held = self._parts.setdefault(name, {})
                for x in two:
                    held[x] = held.get(x, 0.0) + a
        if rates is not self.sources:
            for name in set(names):
                share = _usual_share(name, rates)
                if share > self.named_shares.get(name, 0.0):
                    self.named_shares[name] = share
        for acc, name, a in zip(accs, names, amounts.tolist()):
            self._add(acc, ("flows", name, "source"), a)

    def _diagnose_family(self, u, G, ns, amounts, accs, depth, via):
        """Split ``amounts[b]`` between u's local and input causes for the
        packets ``G[:ns[b]]`` (hops at u), as their own scores there say;
        the input part split upstream from the start of the first queuing
        period they arrived in (:meth:`_split_family`).

        Where the scores explain less than SCORES_SHORT of the packets'
        waits there, the rest (u served at its peak, and its usual input
        would have left the same departures: the packets waited out u's
        batches, or the queue a burst left at a healthy u) counts as
        input, as DESIGN.md's ``n_in - r T`` counts the queue of an NF
        serving at its peak: a healthy batching NF that released an
        upstream stall's backlog passes it on, where the scores alone gave
        it all (6.4 packets of local score against 5,016 of wait)."""
        U = self.nfs[u]
        t = self.t
        nb, n = len(ns), int(ns[-1])
        if self._scratch.shape[1] < n:
            self._scratch = np.empty((2, 2 * n))
        Ls, Is, wait = np.empty(nb), np.empty(nb), np.empty(nb)
        p, lo, hi = np.empty(nb, np.int64), np.empty(nb, np.int64), np.empty(nb, np.int64)
        _attrib.diagnosis_sums_at(U.scores.words, U.scores.rank, U.scores.values, G, ns,
                                  t.hop_rx, t.hop_arrival_ns, t.hop_rx_ns, U.pstart, U.pend,
                                  self._scratch[0], self._scratch[1], Ls, Is, wait, p, lo, hi)
        W = wait * U.rate
        Is = np.where(Ls + Is < SCORES_SHORT * W, W - Ls, Is)
        tot = Ls + Is
        local_key, input_key = ("nf", self.names[u], "local"), ("nf", self.names[u], "input")
        rec = []
        for b in range(nb):
            if tot[b] <= _EPS:
                self._add(accs[b], input_key, float(amounts[b]))
                continue
            self._add(accs[b], local_key, float(amounts[b] * Ls[b] / tot[b]))
            if Is[b] > 0:
                rec.append(b)
        if not rec:
            return
        rec = np.array(rec)
        # from the start of the first queuing period they arrived in, to
        # the last arrival: the prefixes that start together are a family
        s = np.where(p[rec] >= 0, U.pstart[np.maximum(p[rec], 0)], lo[rec])
        e = hi[rec]
        a = amounts[rec] * Is[rec] / tot[rec]
        for s0 in np.unique(s).tolist():
            m = np.flatnonzero(s == s0)
            H, hn = self._arrived_prefixes(U, s0, e[m])
            self._split_family(u, H, hn, np.maximum(e[m] - s0, 0), a[m],
                               [accs[rec[i]] for i in m.tolist()], depth, via)


def _arrival_grid(acc, dropped):
    """Counts of an NF's arrivals (`acc` accepted and `dropped`, each
    sorted) on a grid of edges every NATURAL_STEP_NS from the first
    arrival: (first edge, arrivals before each edge), what
    :func:`_natural_variation` counts its windows from, and
    :func:`_grid_counts` any span to a step.  The edges are not kept, and
    the counts are int32 where they fit: a grid is kept per NF, and over
    a 10-minute capture of 24 M steps the edges and int64 counts were
    384 MiB an NF."""
    lo = min(acc[:1].tolist() + dropped[:1].tolist(), default=0)
    hi = max(acc[-1:].tolist() + dropped[-1:].tolist(), default=0)
    n = max(0, -(-(hi - lo) // NATURAL_STEP_NS))         # len(np.arange(lo, hi, step))
    below = np.zeros(n, np.int32 if len(acc) + len(dropped) < 2**31 else np.int64)
    for a in (acc, dropped):
        _attrib.add_counts_below_grid(np.ascontiguousarray(a, np.int64), lo, NATURAL_STEP_NS,
                                      below)
    return lo, below


def _grid_counts(grid, s, e):
    """Arrivals in each [s, e] from :func:`_arrival_grid`, the span widened
    to the grid's steps (those after its last edge not counted)."""
    lo, below = grid
    n = len(below)
    if not n:
        return np.zeros(len(s), np.int64)
    s, e = np.asarray(s, np.int64), np.asarray(e, np.int64)
    i = np.clip((s - lo) // NATURAL_STEP_NS, 0, n - 1)           # the last edge <= s
    j = np.clip(-((lo - e) // NATURAL_STEP_NS), 0, n - 1)         # the first edge >= e
    return below[np.maximum(i, j)].astype(np.int64) - below[i]


class _Starts:
    """Window starts ``first + every * i`` (i < n), not kept: indexed by a
    mask, the starts it marks."""

    def __init__(self, first, every, n):
        self.first, self.every, self.n = first, every, n

    def __len__(self):
        return self.n

    def __getitem__(self, mask):
        return self.first + self.every * np.flatnonzero(mask).astype(np.int64)


def _natural_variation(acc, dropped, usual, grid=None):
    """An NF's arrivals against their natural variation: for each length T
    of NATURAL_WINDOWS_NS that fits 8 times in the arrivals' span, the
    windows of T starting every T / 2, each window's excess of arrivals
    (`acc` accepted and `dropped`, each sorted; drops were offered too)
    over ``usual * T``, its median and robust standard deviation (the
    median absolute deviation x 1.4826, at least Poisson's sqrt(usual T)):
    a list of (T, starts, excesses, median, deviation), None where no
    length fits or nothing arrives usually (no baseline to judge by)."""
    lo = min(acc[:1].tolist() + dropped[:1].tolist(), default=0)
    hi = max(acc[-1:].tolist() + dropped[-1:].tolist(), default=0)
    lengths = [T for T in NATURAL_WINDOWS_NS if hi - lo >= 8 * T and usual > 0]
    if not lengths:
        return None
    # every length's edges (a half window apart) are every k-th of the
    # grid's, whose step divides every half window: one count for all
    # (35 searches of 2 M arrivals were 56 ms on bench/analyze.py's
    # capture), by a merge (a search per edge: 35 ms; the merge ~10)
    first, fine_below = _arrival_grid(acc, dropped) if grid is None else grid
    step = NATURAL_STEP_NS
    out = []
    for T in lengths:
        # window i is [edge i, edge i + 2): one count per edge serves two
        below = fine_below[::T // 2 // step]
        excess = (below[2:] - below[:-2]) - usual * T
        # the MAD, not the IQR: a burst over a quarter of the capture puts
        # the upper quartile in it (ho54-14: 35 ms of 100, and nothing
        # stood out); the MAD holds until half the windows are a burst's
        med = np.median(excess)
        mad = np.median(np.abs(excess - med))
        out.append((T, _Starts(first, T // 2, len(excess)), excess, med,
                    max(mad * 1.4826, np.sqrt(usual * T))))
    return out


def _windows_beyond(variation):
    """From :func:`_natural_variation`: the windows whose excess is beyond
    the median by more than NATURAL_Z deviations (a burst, or a backlog
    released upstream, stands out; the ebb and flow of a few heavy flows
    does not), and those beyond it either way (a backlog released
    upstream comes after a gap, the upstream stall's), each merged into
    disjoint (starts, ends), sorted: (starts, ends, either_starts,
    either_ends), all None without a baseline."""
    if variation is None:
        return None, None, None, None
    above, either = [], []
    for T, start, excess, med, sd in variation:
        up = excess > med + NATURAL_Z * sd
        above.append((start[up], start[up] + T))
        out = up | (excess < med - NATURAL_Z * sd)
        either.append((start[out], start[out] + T))
    return (*_merged_windows(above), *_merged_windows(either))


def _beyond_natural_variation(acc, dropped, usual):
    """The windows in which the arrivals at an NF ran beyond their natural
    variation (:func:`_windows_beyond`): (starts, ends), (None, None)
    without a baseline."""
    return _windows_beyond(_natural_variation(acc, dropped, usual))[:2]


def _stands_out(scales, acc, dropped, usual, s, e):
    """Whether the arrivals in each window [s, e] (a surge's, carried from
    upstream) stand out from an NF's natural variation: their excess over
    the usual rate beyond the median by more than NATURAL_Z deviations,
    both taken at the longest of the NF's window lengths that fits in the
    window (the shortest where none does) and scaled to the window's
    length, the median in proportion, the deviation by its square root.
    `scales`: (T, median, deviation) per length, ascending, from
    :func:`_natural_variation` (None: no baseline, nothing stands out)."""
    if scales is None:
        return np.zeros(len(s), bool)
    n = (np.searchsorted(acc, e, "right") - np.searchsorted(acc, s, "left")
         + np.searchsorted(dropped, e, "right") - np.searchsorted(dropped, s, "left"))
    return _count_stands_out(scales, n, usual, s, e)


def _count_stands_out(scales, n, usual, s, e):
    """:func:`_stands_out` of `n` arrivals in each window [s, e]."""
    span = np.maximum(e - s, 1).astype(float)
    med, sd = _scaled(scales, span)
    return n - usual * span > med + NATURAL_Z * sd


def _scaled(scales, span):
    """The median and deviation of the excess over windows of `span` ns
    (array), from an NF's (T, median, deviation) per window length (the
    longest that fits, else the shortest): the median in proportion, the
    deviation by the square root."""
    lengths, meds, sds = (np.array(x, float) for x in zip(*scales))
    which = np.maximum(np.searchsorted(lengths, span, "right") - 1, 0)
    T = lengths[which]
    return meds[which] * span / T, sds[which] * np.sqrt(span / T)


def _merged_windows(parts):
    """(starts, ends) of the union of the windows of `parts`, a list of
    (starts, ends): disjoint, sorted."""
    s = np.concatenate([p[0] for p in parts]).astype(np.int64)
    e = np.concatenate([p[1] for p in parts]).astype(np.int64)
    if len(s) == 0:
        return s, e
    o = np.argsort(s, kind="stable")
    s, e = s[o], np.maximum.accumulate(e[o])
    # a window starting after every earlier one ended opens a new run
    new = np.concatenate([[True], s[1:] > e[:-1]])
    last = np.concatenate([np.flatnonzero(new)[1:] - 1, [len(s) - 1]])
    return s[new], e[last]


def _surges_judged_over_their_span(t, A, h, h_nf, nfs_here, L_h, I_h, excess_h):
    """Zero the input score of the victims' hops (`h`, at NFs `h_nf`) whose
    local score alone covers their excess (`excess_h`, ns; the scores are
    packets) where the surges in their queuing period do not stand out of
    the NF's natural variation taken together: the arrivals from the first
    surge window in the period to the end of the last one before the hop's
    arrival, judged over that span (:func:`_stands_out`).

    Each surge window stands out at its own length, but a long drain
    after a stall or a bug at a loaded NF spans many of them: traffic whose
    rate wanders for milliseconds passes the test in one window or two
    (3 deviations of 0.5 ms, held-out ho81-19), and its excess over the
    whole drain then counts as input, as large as the stall's own score,
    and the victim goes to the source on the tie.  A burst stands out over
    its span as well as in its windows."""
    for k in nfs_here:
        F = A.nfs[k]
        if F.surge_start is None or F.scales is None or not len(F.surge_start):
            continue
        sel = np.flatnonzero((h_nf == k) & (I_h > 0) & (excess_h > 0)
                             & (L_h >= F.rate * excess_h))
        if not len(sel):
            continue
        a = _arrival(t, h[sel])
        p = F.period_of(a)
        # the surge windows from the period's start to the arrival: the
        # first ending after the start, the last starting before the arrival
        first = np.searchsorted(F.surge_end, F.pstart[np.maximum(p, 0)], "left")
        last = np.searchsorted(F.surge_start, a, "right") - 1
        ok = (p >= 0) & (first <= last)
        sel, a, p, first, last = sel[ok], a[ok], p[ok], first[ok], last[ok]
        if not len(sel):
            continue
        s = np.maximum(F.pstart[p], F.surge_start[first])
        e = np.maximum(np.minimum(a, F.surge_end[last]), s + 1)
        keep = _count_stands_out(F.scales, _grid_counts(F.grid, s, e), F.usual, s, e)
        I_h[sel[~keep]] = 0.0


def _upstream_first(links, nfs):
    """`nfs` (NF indices) ordered so that every NF comes after those that
    feed it (``links[u, d] > 0``: packets went from u to d), ties by
    index; NFs on a cycle, should there be one, in index order after."""
    left, order = sorted(nfs), []
    while left:
        ready = [k for k in left if not any(links[u, k] for u in left if u != k)]
        order += ready or left
        left = [k for k in left if k not in order]
    return order


def _unusual_windows(acc, dropped, usual, ws, we):
    """The windows (ws, we) as hop_scores takes them (``cf_start, cf_end,
    cf_base, cf_cum``): where the arrivals (`acc` accepted and `dropped`,
    each sorted) ran beyond their natural variation either way, and what
    counting the usual rate there makes of the arrivals by each time."""
    if ws is None:
        ws = we = np.zeros(0, np.int64)
    def came_by(t):
        return (np.searchsorted(acc, t, "right")
                + np.searchsorted(dropped, t, "right")).astype(float)
    n_s = came_by(ws)
    excess = (came_by(we) - n_s) - usual * (we - ws).astype(float)
    cum = np.concatenate([[0.0], np.cumsum(excess)])
    return ws, we, n_s - cum[:-1], cum


def _batch_inflation(t, A, queues, h, h_nf, wait, nfs_here, L_h, I_h, which):
    """A packet is served with its whole batch before it is sent (run to
    completion): in a batch of c packets, where the NF's batches hold cu
    on average, it spends (c - cu) / r longer in the NF than usual even
    at the NF's peak rate r.  Those c - cu packets (up to its time in the
    batch) are added to its scores at each hop `h` that counts, shared
    between local and input as the hop's wait is.  A burst into an NF with
    a large batch cap delays its packets this way more than by their wait.
    Only the hops where `which` is set; `wait` is each hop's wait (ns).
    Fills `L_h` and `I_h` in place."""
    names = t.nf_names
    for k in nfs_here:
        F, q = A.nfs[k], queues.get(names[k])
        if q is None or F.rate <= 0 or q.batch_count is None or not q.batch_count.any():
            continue
        sel = np.flatnonzero((h_nf == k) & which)
        if len(sel) == 0:
            continue
        hk = h[sel]
        rx, tx = t.hop_rx_ns[hk], t.hop_tx_ns[hk]
        # the batch each was received in, and the NF's mean batch
        r = t.hop_rx[hk]
        ok = (r >= 0) & (tx >= rx)
        c = np.where(ok, q.batch_count[q.rx_batch[np.where(ok, r, 0)]], 0)
        cu = q.mean_batch
        extra = np.minimum(np.maximum(c - cu, 0.0), F.rate * np.maximum(tx - rx, 0))
        # the batch was large for what built the queue ahead: shared as
        # the wait's scores are, the part of the wait neither explains
        # counted as input (as _unexplained_waits_as_input does)
        L, I = L_h[sel], I_h[sel]
        whole = np.maximum(L + I, F.rate * wait[sel])
        share = np.divide(L, whole, out=np.zeros(len(sel)), where=whole > _EPS)
        L_h[sel] = L + extra * share
        I_h[sel] = I + extra * (1 - share)


def _slow_service(t, A, queues, h, h_nf, nfs_here, rate, L_h):
    """A packet leaves an NF only once its whole batch is served (run to
    completion): a batch served slowly keeps it inside the NF, a delay no
    queue wait shows and the NF's own.  At each hop `h` that counts, the
    time from rx to tx beyond the batch at the NF's peak rate r and its
    usual overhead (``QueueTimeline.usual_overhead_ns``), where that is
    more than the batch at r (served at under half of r), is added to the
    local score as the packets r serves in it.  A batch merely larger
    than usual is :func:`_batch_inflation`'s.

    Where the packet's hop before that counts, at U, has a local score, and
    without U's slowness it would have reached this NF before the run of
    slow batches it was served in began (``QueueTimeline.slow_runs``),
    the time is U's doing, as :func:`_held_into_a_stop` has it for a stop:
    held-out ho6-05, bugs at cgn and then at tap.20 two NFs on, and
    ho306-06, an interrupt at cls2 and a contention at relay4 from near
    its end: victims of the first alone, served in the second's slow
    batches only because the first held them.  `rate` is each NF's peak
    (packets/ns).  Fills `L_h` in place."""
    names = t.nf_names
    slow_j, slow_extra, slow_since = [], [], []
    for k in nfs_here:
        F, q = A.nfs[k], queues.get(names[k])
        if q is None or F.rate <= 0 or q.batch_count is None or not len(q.slow_runs):
            continue
        sel = np.flatnonzero(h_nf == k)
        hk = h[sel]
        r = t.hop_rx[hk]
        rx, tx = t.hop_rx_ns[hk], t.hop_tx_ns[hk]
        ok = (r >= 0) & (tx >= rx)
        at_peak = np.where(ok, q.batch_count[q.rx_batch[np.where(ok, r, 0)]], 0) / F.rate
        beyond = np.where(ok, (tx - rx) - at_peak - q.usual_overhead_ns, 0.0)
        slow = np.flatnonzero(beyond > at_peak)
        if len(slow) == 0:
            continue
        slow_j.append(sel[slow])
        slow_extra.append(beyond[slow] * F.rate)
        # the run of slow batches it was served in: the last to begin by
        # its rx (its batch, timed to its last tx, is slow where it is)
        i = np.searchsorted(q.slow_runs[:, 0], rx[slow], side="right") - 1
        slow_since.append(q.slow_runs[np.maximum(i, 0), 0])
    if not slow_j:
        return
    j, extra, since = (np.concatenate(x) for x in (slow_j, slow_extra, slow_since))
    held, jp, sooner = _held_before(t, h, h_nf, rate, L_h, j)
    ru = rate[h_nf[jp]]
    moved = held & (sooner < since)
    # (no hop twice in jp[moved], nor in j: one hop before each)
    L_h[jp[moved]] += extra[moved] / rate[h_nf[j[moved]]] * ru[moved]
    L_h[j[~moved]] += extra[~moved]


def _held_before(t, h, h_nf, rate, L_h, j):
    """For the hops `j` (positions into `h`, which is in hop order):
    whether the packet's hop before each that counts, at U, has a local
    score there; that hop (position into `h`); and the arrival at j's NF
    sooner by what U's slowness held it (its local score at U's peak
    `rate`; the actual arrival where not held)."""
    jp = np.maximum(j - 1, 0)
    ru = rate[h_nf[jp]]
    held = ((j > 0) & (t.hop_packet[h[jp]] == t.hop_packet[h[j]]) & (L_h[jp] > _EPS)
            & (ru > 0))
    sooner = _arrival(t, h[j]) - np.divide(L_h[jp], ru, out=np.zeros(len(j)), where=held)
    return held, jp, sooner


def _unexplained_waits_as_input(h_nf, hv_of, wait, nv, rate, L_h, I_h):
    """A victim that waited where neither counterfactual finds a cause
    (the NF served at its peak, and its input at the usual rate would have
    left the same departures: e.g. it waited out a batch taken just before
    it came, larger than usual) waited for packets that came before it: its
    longest wait becomes an input score there, split upstream like any
    other.  So does the part of it the local score leaves, where the
    victim's scores explain less than SCORES_SHORT of its waits, as in
    the upstream recursion (:meth:`_Attributor._diagnose_family`): late in
    a long drain at a loaded, healthy NF (held-out ho91-10: 10 ms at tun
    after a bug's backlog upstream came through) the surge that began it
    is long past, the input score is small, and the local score's slow
    drift (the NF's peak a little over what it keeps up for that long)
    was all the victim had.  `wait` is each hop's wait (ns), `rate` each
    NF's peak (packets/ns).  Fills `I_h` (the hops' input scores) in
    place."""
    if len(hv_of) == 0:
        return
    W = np.bincount(hv_of, weights=rate[h_nf] * wait, minlength=nv)
    S = np.bincount(hv_of, weights=L_h + I_h, minlength=nv)
    explained = (S > _EPS) & (S >= SCORES_SHORT * W)
    cand = np.flatnonzero(~explained[hv_of] & (wait > 0))
    if len(cand) == 0:
        return
    # each such victim's longest wait (ties: its later hop)
    o = cand[np.lexsort((cand, wait[cand], hv_of[cand]))]
    last = np.concatenate([hv_of[o][1:] != hv_of[o][:-1], [True]])
    x = o[last]
    x = x[rate[h_nf[x]] > 0]
    I_h[x] = np.maximum(I_h[x], rate[h_nf[x]] * wait[x] - L_h[x])


def source_parts(parts, limit=4):
    """``{name: [surge prefix, ...]}`` from ``{name: {prefix: blame}}``:
    a surge seen under nested prefixes in different windows is the widest
    of them, its blame theirs; the most blamed first, at most `limit`."""
    out = {}
    for name, held in parts.items():
        nets = sorted(((ipaddress.IPv4Network(x), a) for x, a in held.items()),
                      key=lambda t: t[0].prefixlen)
        kept = []
        for net, a in nets:
            for i, (k, b) in enumerate(kept):
                if net.subnet_of(k):
                    kept[i] = (k, b + a)
                    break
            else:
                kept.append((net, a))
        kept.sort(key=lambda t: (-t[1], t[0]))
        out[name] = [str(k) for k, _ in kept[:limit]]
    return out


def _surges(culprits, sources, named_shares):
    """Per culprit column: the (network, mask) of a source culprit whose
    prefix is a surge (:func:`_surge_prefix`), mask 0 for every other
    column."""
    value, mask = np.zeros(len(culprits), np.uint32), np.zeros(len(culprits), np.uint32)
    for j, key in enumerate(culprits):
        if key[0] == "flows":
            value[j], mask[j] = _surge_prefix(key[1], sources, named_shares.get(key[1], 0.0))
    return value, mask


@functools.lru_cache(maxsize=4096)
def _network(name):
    """(network, prefix length, netmask) of the prefix `name`: parsed once
    (the recursion asks for a few hundred names thousands of times)."""
    net = ipaddress.IPv4Network(name)
    return int(net.network_address), net.prefixlen, int(net.netmask)


def _usual_share(name, rates):
    """The share of `rates`' long-run packets the prefix `name` holds (1.0
    for "*")."""
    if "/" not in name:
        return 1.0
    value, length, _ = _network(name)
    return rates.usual_share(value, length)


def _surge_prefix(name, sources, share=0.0):
    """(network, mask) of the flows `name` where that prefix is a surge (at
    most SURGE_SHARE of the source's long-run packets, and of `share`: what
    it held of the packets it was named among, where only some of the
    source's reached the NF it was named at), else mask 0 (as for "*" or a
    /0: it matches nothing).

    Behind a split, flows a bug slows may hold twice their share of the
    source's packets (bench/heldout.py ho24-12: 9% of the source's, 19% of
    the slowed NF's); named for its input, they are not a surge whose own
    packets would not exist without it."""
    if "/" not in name or max(share, _usual_share(name, sources)) > SURGE_SHARE:
        return 0, 0
    value, _, mask = _network(name)
    return value, mask


def _merge_nested_surges(culprits, sources, named_shares, dropped, excess, r_v, offsets,
                         culprit, uncapped, capped):
    """One surge blamed under nested prefixes (a /24 in one window, a /25
    or /27 of it in others) is one culprit: the entries of a surge column
    inside another surge column's prefix move to the widest such column,
    summed per victim and capped again.  Returns the new (offsets,
    culprit, capped, uncapped)."""
    value, mask = _surges(culprits, sources, named_shares)
    cols = np.flatnonzero(mask)
    if len(cols) < 2:
        return offsets, culprit, capped, uncapped
    to = np.arange(len(culprits))
    for j in cols.tolist():
        # the widest surge prefix holding j's (fewest mask bits)
        inside = cols[(value[j] & mask[cols]) == value[cols]]
        to[j] = inside[np.argmin([bin(int(m)).count("1") for m in mask[inside]])]
    if (to[culprit] == culprit).all():
        return offsets, culprit, capped, uncapped
    new_offsets = np.empty_like(offsets)
    col, unc = np.empty(len(culprit), np.int32), np.empty(len(culprit))
    m = _attrib.merge_row_columns(offsets, to[culprit].astype(np.int32), uncapped,
                                  new_offsets, col, unc)
    col, unc = col[:m].astype(culprit.dtype, copy=False), unc[:m]
    row = np.repeat(np.arange(len(offsets) - 1), np.diff(new_offsets))
    whole = np.where(dropped[row], np.inf, excess[row] * r_v[row])
    return new_offsets, col, np.minimum(unc, whole), unc


def _own_surge_is_necessary(t, vp, culprits, sources, named_shares, dropped, excess, r_v,
                            offsets, culprit, uncapped, capped, drop_nf, room, rate, slo_ns,
                            even_so=None):
    """A victim sent by the flows of a source culprit that is a surge -- a
    prefix carrying at most SURGE_SHARE of the source's long-run packets,
    so that most of its packets in the window were the surge's -- and
    that the surge delayed by at least SURGE_DELAY of its excess, would
    not exist without the surge.  By the counterfactual definition of a
    victim (SCENARIO.md) the surge then explains it whatever else delayed
    it: that culprit's capped score becomes the victim's whole excess, as
    any cause that alone explains it.  Other causes that also explain it
    fully still rank by their uncapped delay.  Drops: see
    :func:`_own_drops_first`.  In place."""
    value, mask = _surges(culprits, sources, named_shares)
    e = np.flatnonzero(mask[culprit] != 0)
    if len(e) == 0:
        return
    v = np.searchsorted(offsets, e, "right") - 1             # the entries' victims
    d = dropped[v]
    if d.any():
        _own_drops_first(t, vp, culprits, value, mask, e[d], v[d], offsets, culprit,
                         uncapped, capped, drop_nf, room, rate, slo_ns, even_so)
    e, v = e[~d], v[~d]
    whole = excess[v] * r_v[v]
    c = culprit[e]
    own = (((t.src_addr[vp[v]] & mask[c]) == value[c])
           & (uncapped[e] >= SURGE_DELAY * whole))
    capped[e[own]] = whole[own]


def _drops_late_anyway(t, vp, culprits, v, offsets, culprit, uncapped, drop_nf, room, rate,
                       slo_ns, even_so):
    """For dropped victims `v`: whether the NF that dropped each was not
    needed, and the queue the drop met beyond that NF's local cause.
    Without its local cause the queue the drop met (the most the queue
    held, less that cause's score) would have held it past the objective;
    or, `even_so` (:func:`_dropped_even_so`), a fluid queue at the NF's
    peak would have dropped it or held it past the objective."""
    nv = len(offsets) - 1
    row = np.repeat(np.arange(nv), np.diff(offsets))
    loc = np.full(len(rate), -1, np.int64)
    for j, key in enumerate(culprits):
        if key[0] == "nf" and key[2] == "local" and key[1] in t.nf_names:
            loc[t.nf_names.index(key[1])] = j
    k = drop_nf[vp[v]]
    want = np.full(nv, -2, np.int64)    # -1 (no local score) matches nothing either
    want[v] = loc[k]
    at = np.flatnonzero(culprit == want[row])
    local = np.zeros(nv)
    local[row[at]] = uncapped[at]
    q_loc = np.maximum(room[k] - local[v], 0.0)
    src = t.src_ns[vp[v]]
    late_anyway = (src >= 0) & ((q_loc / np.maximum(rate[k], _EPS)
                                 + (t.drop_ns[vp[v]] - src)) > slo_ns)
    if even_so is not None:
        late_anyway |= even_so[v]
    return late_anyway, q_loc


def _fluid_queue_at(below, per_step, at):
    """The queue of a fluid server taking `per_step` packets a grid step,
    fed the arrivals counted before each edge (`below`), at edges `at`:
    G(x) - min G up to x, where G(x) is the arrivals before x less what
    the server took by x.  A million edges at a time: over a 10-minute
    capture the grid has 24 M, and two float arrays of it were 384 MiB."""
    out = np.zeros(len(at))
    if len(at) == 0:
        return out
    low = np.inf
    last = int(at.max())
    for c0 in range(0, last + 1, _FLUID_CHUNK):
        c1 = min(last + 1, c0 + _FLUID_CHUNK)
        g = below[c0:c1] - per_step * np.arange(c0, c1, dtype=float)
        run = np.minimum(np.minimum.accumulate(g), low)
        low = float(run[-1])
        m = np.flatnonzero((at >= c0) & (at < c1))
        out[m] = g[at[m] - c0] - run[at[m] - c0]
    return out


def _own_drops_first(t, vp, culprits, value, mask, e, v, offsets, culprit, uncapped, capped,
                     drop_nf, room, rate, slo_ns, even_so=None):
    """A dropped victim sent by a surge's flows (entries `e` of the
    surges, victims `v`, all dropped), whose scores the surge holds at
    least SURGE_DELAY of, ranks that surge first -- unless the NF that
    dropped it was needed too (:func:`_drops_late_anyway`).  Then both
    are needed and the larger delay ranks first, as for late victims.  A
    drop has no excess to cap at: the surge takes the victim's top score
    and ranks just above it.

    The surge is needed for every packet of its own (without it they were
    never sent); the NF that dropped one often is not: a burst that
    overflows a stalled NF's queue is late downstream all the same
    (bench/heldout.py seeds 13-19: 127 such drops named for the NF)."""
    nv = len(offsets) - 1
    n_in = np.diff(offsets)
    full = np.flatnonzero(n_in > 0)
    total, top, top_u = np.zeros(nv), np.zeros(nv), np.zeros(nv)
    total[full] = np.add.reduceat(capped, offsets[full])
    top[full] = np.maximum.reduceat(capped, offsets[full])
    top_u[full] = np.maximum.reduceat(uncapped, offsets[full])
    c = culprit[e]
    addr = t.src_addr[vp[v]]
    own = (addr != 0) & ((addr & mask[c]) == value[c]) & (capped[e] >= SURGE_DELAY * total[v])
    if not own.any():
        return
    e, v = e[own], v[own]
    late_anyway, _ = _drops_late_anyway(t, vp, culprits, v, offsets, culprit, uncapped, drop_nf,
                                        room, rate, slo_ns, even_so)
    e, v = e[late_anyway], v[late_anyway]
    capped[e] = top[v]
    uncapped[e] = np.nextafter(np.maximum(top_u[v], uncapped[e]), np.inf)


def _own_drops_unnamed(t, vp, culprits, sources, named_shares, dropped, offsets, culprit,
                       uncapped, capped, drop_nf, room, rate, slo_ns, vnf, even_so=None):
    """A dropped victim sent by a surge's flows while the surge was on
    (between the first and last send of the victims whose rows hold the
    surge), at an NF where the surge was named (some victim's there),
    whose own row names no flows at all: the NF met a queue that its
    local cause (a stall's) filled, and the drop's input score, and with
    it the upstream split, came to nothing.  Without the surge the
    packet was never sent.  Where the NF was not needed
    (:func:`_drops_late_anyway`), the surge ranks first, as in
    :func:`_own_drops_first`: an entry of the queue the drop met beyond
    the local cause, or just above the row's top.

    An interrupt at edge.22 (room for 256 packets) while a burst came
    through it (held-out ho419-03): 514 of the burst's own packets
    dropped there were named for edge.22 or for nothing, though the burst
    alone would have filled the queue (now 130).  Returns the new
    (offsets, culprit, capped, uncapped)."""
    value, mask = _surges(culprits, sources, named_shares)
    cols = np.flatnonzero(mask)
    nv = len(offsets) - 1
    if len(cols) == 0 or not dropped.any():
        return offsets, culprit, capped, uncapped
    row = np.repeat(np.arange(nv), np.diff(offsets))
    addr, src = t.src_addr[vp], t.src_ns[vp]
    d = np.flatnonzero(dropped & (src >= 0) & (addr != 0) & (drop_nf[vp] >= 0))
    late_anyway, q_loc = _drops_late_anyway(t, vp, culprits, d, offsets, culprit, uncapped,
                                            drop_nf, room, rate, slo_ns, even_so)
    d, q_loc = d[late_anyway], q_loc[late_anyway]
    # only rows that name no flows at all (the split reached no source),
    # each given one surge
    flows = np.array([key[0] == "flows" for key in culprits], bool)
    named = np.zeros(nv, bool)
    named[row[flows[culprit]]] = True
    skip = named[d]
    new_v, new_c = [], []
    for j in cols.tolist():
        vj = row[culprit == j]
        sj = src[vj]
        sj = sj[sj >= 0]
        if len(sj) == 0:
            continue
        x = np.flatnonzero(~skip & np.isin(vnf[d], vnf[vj])
                           & ((addr[d] & mask[j]) == value[j])
                           & (src[d] >= sj.min()) & (src[d] <= sj.max()))
        skip[x] = True
        new_v.append(x)
        new_c.append(np.full(len(x), j, culprit.dtype))
    x = np.concatenate(new_v) if new_v else np.zeros(0, np.int64)
    if len(x) == 0:
        return offsets, culprit, capped, uncapped
    full = np.flatnonzero(np.diff(offsets) > 0)
    top_u = np.zeros(nv)
    top_u[full] = np.maximum.reduceat(uncapped, offsets[full])
    v = d[x]
    score = np.nextafter(np.maximum(top_u[v], q_loc[x]), np.inf)
    rows = np.concatenate([row, v])
    cul = np.concatenate([culprit, np.concatenate(new_c)])
    o = np.lexsort((cul, rows))
    new_offsets = np.zeros(nv + 1, np.int64)
    new_offsets[1:] = np.cumsum(np.bincount(rows, minlength=nv))
    return (new_offsets, cul[o], np.concatenate([capped, score])[o],
            np.concatenate([uncapped, score])[o])


def _dropped_even_so(t, A, vp, dv, slo_ns):
    """Per victim: dropped at an NF F, and dropped or late there even
    without F's slowness: the queue of a fluid server at F's peak fed
    everything F was offered (its arrival grid, :func:`_arrival_grid`)
    fills F's room by the drop, or holds the victim past the objective."""
    out = np.zeros(len(vp), bool)
    k = np.where(dv, t.drop_nf[vp], -1)
    for kk in np.unique(k[k >= 0]).tolist():
        F = A.nfs.get(kk)
        if F is None or not F.rate > 0 or not len(F.grid[1]):
            continue
        lo, below = F.grid
        v = np.flatnonzero(k == kk)
        a = t.drop_ns[vp[v]]
        qa = _fluid_queue_at(below, F.rate * NATURAL_STEP_NS,
                             np.clip(-((lo - a) // NATURAL_STEP_NS), 0, len(below) - 1))
        src = t.src_ns[vp[v]]
        out[v] = (qa >= F.room) | ((src >= 0) & (qa / F.rate + (a - src) > slo_ns))
    return out


def _usual_stay(t):
    """Each NF's usual time with a packet (rx to tx: its batch served):
    the median over a sample of the hops (one in 1,024; every hop of a
    capture under 64k hops)."""
    smp = np.arange(0, len(t.hop_packet), 1024 if len(t.hop_packet) >= 1 << 16 else 1)
    smp = smp[(t.hop_rx[smp] >= 0) & (t.hop_tx_ns[smp] >= 0)]
    stay = (t.hop_tx_ns[smp] - t.hop_rx_ns[smp]).astype(float)
    usual = np.zeros(len(t.nf_names))
    for k in np.unique(t.hop_nf[smp]).tolist():
        usual[k] = float(np.median(stay[t.hop_nf[smp] == k]))
    return usual


def _along_path(t, hops, first, step=1):
    """Walk the path of each of `hops`' packets from hop ``h + first`` on,
    `step` hops at a time: per step, ``(jj, live)``, the hops reached
    (clipped into range) and which are still the packet's.  A caller may
    clear `live` in place to stop a packet's walk."""
    nh = len(t.hop_packet)
    pk = t.hop_packet[hops]
    j = hops.astype(np.int64) + first
    live = np.ones(len(hops), bool)
    while live.any():
        jj = np.clip(j, 0, nh - 1)
        live &= (j >= 0) & (j < nh) & (t.hop_packet[jj] == pk)
        yield jj, live
        j += step


def _usual_time_from(t, hops, usual):
    """Each hop's packet's usual time in the NFs from that hop on: the sum
    of ``usual[nf]`` over that hop and every later one."""
    tot = np.zeros(len(hops))
    for jj, live in _along_path(t, hops, 0):
        tot[live] += usual[t.hop_nf[jj[live]]]
    return tot


def _surge_from(F, starts):
    """Where each queuing period's upstream split begins (`starts`: the
    periods' starts at NF F): at the first surge window that reaches into
    the period (an input score stands only where one does: hop_scores),
    if it began after the period did.  What queued ahead of a victim
    since the period began includes what came before the surge; over a
    span holding an upstream stall's gap and then its release, nothing
    upstream ran above its usual rate, and the blame went to the traffic
    as a whole (held-out ho405-18)."""
    if F.surge_start is None or len(F.surge_end) == 0:
        return starts
    i = np.minimum(np.searchsorted(F.surge_end, starts, "left"), len(F.surge_end) - 1)
    return np.where(F.surge_end[i] >= starts, np.maximum(starts, F.surge_start[i]), starts)


def _arrival(t, hops):
    """Each hop's arrival at its NF, its rx where no arrival was recorded
    (as ``_attrib.gather_arrival``)."""
    return np.where(t.hop_arrival_ns[hops] >= 0, t.hop_arrival_ns[hops], t.hop_rx_ns[hops])


def _next_hops(t, hops):
    """Each hop's next one (hop + 1), and whether it is the same packet's,
    received there, its arrival recorded."""
    nh = len(t.hop_packet)
    nxt = np.minimum(hops.astype(np.int64) + 1, nh - 1)
    ok = ((hops + 1 < nh) & (t.hop_packet[nxt] == t.hop_packet[hops])
          & (t.hop_rx[nxt] >= 0) & (t.hop_arrival_ns[nxt] >= 0))
    return nxt, ok


def _late_even_so(t, hops, a_u, w_u, w_d, usual, slo_ns):
    """Whether the victims of `hops` at an NF U (arriving there at `a_u`)
    would be late with waits `w_u` at U and `w_d` at an NF after it: their
    time before U, those waits and each NF's usual time with a packet from
    U on, not their actual times after U (which hold what U's own release
    did downstream)."""
    src = t.src_ns[t.hop_packet[hops]]
    return (src >= 0) & ((a_u - src) + w_u + w_d + _usual_time_from(t, hops, usual) > slo_ns)


def _dropped_while_stopped(t, queues, h, h_nf, rate, L_h, I_h):
    """A drop at D that no queuing period explains (no score at all), come
    while D was silent (stopped polling: ``QueueTimeline.silences``), is
    D's stop: locally what D would have served from the stop's start to
    the drop, ``r_D x (arrival - start)`` packets (no packet left D then).
    The records showed D's queue empty: a stop the recording ended in,
    whose queue's accepted packets have no known fate and so no hop
    (:mod:`mscope.analyzer.fates`), and whose drops the queue model named.
    In place.

    Live: nat stopped 100 ms, the recording ending 70 ms in: 101 drops
    with no culprit, now nat's."""
    j = np.flatnonzero((t.hop_rx[h] < 0) & (L_h <= _EPS) & (I_h <= _EPS))
    if len(j) == 0:
        return
    names = t.nf_names
    for k in np.unique(h_nf[j]).tolist():
        q = queues.get(names[k])
        if q is None or len(q.silences) == 0 or rate[k] <= 0:
            continue
        sel = j[h_nf[j] == k]
        a = t.hop_arrival_ns[h[sel]]
        s = q.silences[np.argsort(q.silences[:, 0], kind="stable")]
        r = np.searchsorted(s[:, 0], a, side="right") - 1
        inside = (a >= 0) & (r >= 0) & (a <= s[np.maximum(r, 0), 1])
        L_h[sel[inside]] = rate[k] * (a[inside] - s[r[inside], 0])


def _held_into_a_stop(t, A, queues, h, h_nf, rate, L_h):
    """A victim that U's slowness held until after D, the NF of its next
    hop that counts, stopped (went silent with its queue empty:
    ``period_quiet``), and that without it would have reached D before D
    stopped, waited out D's stop only because U held it: D's local wait
    is U's doing (SCENARIO.md's counterfactual: without U's slowness it
    is not a victim of D's stop; without D's, U's hold alone may still
    make it late).  Its local score at D moves to its local score at U,
    as ns of its delay.  `h` is in hop order (a packet's hops in path
    order, one after another).  In place.

    So where D went slow while busy (a run of slow batches, begun after
    the victim's sooner arrival: ``QueueTimeline.slow_runs``, the last to
    begin by its rx) and the victim, come that much sooner, would have
    been taken before the run began: the queue D held then, served at
    D's peak.  Only where D's slowness had not begun then, as the packet
    that actually came to D last by then shows (a local score there of a
    tenth of the victim's or less): a bug's slow batches come in runs with
    healthy ones between, and a victim sooner by a few us would have met
    the same bug.  And so where the victim came while D was silent
    (``QueueTimeline.silences``, where silence is a stop) and would have
    come before the silence began: D had gone quiet a few us before it
    came, too short a time by then for its queuing period to count as
    begun in a stop (held-out ho403-00: a contention at l4lb and an
    interrupt at fw9 five NFs on, 102 of the contention's 182 own victims
    named for fw9).

    Interrupts at steer8 and then at xlat4, the NF after it (held-out
    ho45-15): 316 victims of steer8's alone, held until xlat4 had
    stopped, were named for xlat4.  A bug at guard.76 and an interrupt at
    filt two NFs on, its queue not empty when it stopped (ho407-13): 64 of
    the bug's 76 own victims held into it were named for filt."""
    if len(h) < 2:
        return
    # hops with a local score whose previous hop that counts (the same
    # packet's, at U) has one too
    j = np.flatnonzero(L_h > _EPS)
    held, jp, sooner = _held_before(t, h, h_nf, rate, L_h, j)
    rd = rate[h_nf[j]]
    ok = held & (rd > 0)
    j, jp, sooner, rd = j[ok], jp[ok], sooner[ok], rd[ok]
    ru = rate[h_nf[jp]]
    if len(j) == 0:
        return
    hd = h[j]
    a_d = _arrival(t, hd)
    held = np.zeros(len(j), bool)
    for k in np.unique(h_nf[j]).tolist():
        D, q = A.nfs[k], queues.get(t.nf_names[k])
        sel = np.flatnonzero(h_nf[j] == k)
        held[sel] = _stopped_by(D, q, a_d[sel], sooner[sel])
        sel = sel[~held[sel]]
        if q is not None and len(q.slow_runs) and len(sel):
            held[sel] = _slowed_by(t, D, q, hd[sel], sooner[sel], rd[sel], L_h[j[sel]])
    # sooner by what U's slowness held it
    x = np.flatnonzero(held)
    L_h[jp[x]] += L_h[j[x]] / rd[x] * ru[x]
    L_h[j[x]] = 0.0


def _stopped_by(D, q, a_d, sooner):
    """Whether victims arriving at D at `a_d` met a stop of D's they would
    have come before, arriving at `sooner`: D went silent before the
    queuing period they met began (``period_quiet``); or D was silent when
    they came, from before to after (``QueueTimeline.silences``, where
    silence is a stop), though not yet long enough by then for the period
    to count as begun in a stop."""
    held = np.zeros(len(a_d), bool)
    if len(D.pquiet):
        p = D.period_of(a_d)
        r = np.minimum(np.searchsorted(D.pquiet[:, 0], p), len(D.pquiet) - 1)
        stopped = np.where((p >= 0) & (D.pquiet[r, 0] == p), D.pquiet[r, 1], -1)
        held = (stopped >= 0) & (sooner < stopped)
    if q is not None and len(q.silences):
        sel = np.flatnonzero(~held)
        i = np.searchsorted(q.silences[:, 0], a_d[sel], "right") - 1
        sel, i = sel[i >= 0], i[i >= 0]
        inside = q.silences[i, 1] >= a_d[sel]
        held[sel[inside]] = sooner[sel[inside]] < q.silences[i[inside], 0]
    return held


def _slowed_by(t, D, q, hd, sooner, rd, L_d):
    """Whether the victims of hops `hd` at D met a run of D's slow batches
    (``QueueTimeline.slow_runs``, the last begun by their rx) that, come
    at `sooner`, they would have been taken before: the queue D held then,
    served at D's peak `rd`.  Only where D's slowness had not begun then:
    the packet that came to D last by that time waited for a tenth of the
    victim's local score there (`L_d`) or less.  A bug's slow batches come
    in runs with healthy batches between (held-out ho403-09: without
    this, 431 of a bug's victims at probe-x3 moved to cgn-y3 before it,
    which held them a few us)."""
    held = np.zeros(len(hd), bool)
    i = np.searchsorted(q.slow_runs[:, 0], t.hop_rx_ns[hd], "right") - 1
    sel = np.flatnonzero(i >= 0)
    since = q.slow_runs[i[sel], 0]
    s_at = sooner[sel].astype(np.int64)
    sel = sel[s_at + q.length_at(s_at) / rd[sel] < since]
    last = np.empty(len(sel), D.hops_by_arr.dtype)
    ok = np.zeros(len(sel), bool)
    for n, x in enumerate(sel.tolist()):
        i0, _ = _attrib.arrivals_between(D.hops_by_arr, t.hop_arrival_ns, t.hop_rx_ns,
                                         int(sooner[x]), int(sooner[x]))
        if i0 > 0:
            last[n], ok[n] = D.hops_by_arr[i0 - 1], True
    sel, last = sel[ok], last[ok]
    L_s, I_s = np.empty(len(sel)), np.empty(len(sel))
    D.scores.gather(last, L_s, I_s)
    held[sel] = L_s <= 0.1 * L_d[sel]
    return held


def _moved_downstream(t, A, h, h_nf, hv_of, vp, L_h, I_h, slo_ns):
    """A victim that waited at an NF U for U's slowness (its local score
    there) would, without it, have reached the next NF D sooner -- and
    where U's input was a surge that D could not take, waited at D instead:
    the delay moves downstream, it does not go.  Where the victim would be
    late even so, U's slowness is not what made it a victim (SCENARIO.md's
    counterfactual asks which fault was needed, not which made more of the
    delay): its whole local score at U moves to the input score, which is
    split upstream as usual.  (It moved only the wait the victim would have
    had at D beyond its actual one there.  An interrupt at snort while a
    burst came through it (held-out ho106-13): the burst's packets waited
    out the stop, and U kept the wait its stop added, though the burst
    alone, queued at dpi.25 before it, made them late: 103 of the burst's
    219 own victims were named for snort, now none.)

    The waits at U and D are those of two fluid servers in tandem, U at
    its peak passing on what arrived at it for D, D at its peak with no
    more room than it was seen to hold (``_attrib.tandem_queue_at``):
    nothing queues at D when D is the faster.  "Late even so": its time
    before U, those two waits and each NF's usual time with a packet (rx
    to tx, the median) from U on -- not its actual times after U, which
    hold the large batches U's own release made downstream.  Only where
    U's input ran beyond its natural variation in the victim's queuing
    period there (hop_scores' rule for an input score): the ebb and flow
    of usual traffic makes no victims.  In place.

    A bug at waf and a burst that overloads gw, the NF after it (held-out
    ho25-17): without this, 453 victims the burst alone made late were
    blamed on waf, where they waited for the bug's backlog; without the
    bug they would have waited at gw as long.

    A victim U dropped goes the same way where U passes packets to one NF
    D only: without U's slowness it would have gone on to D.  The tandem
    is fed U's drops too, and a victim that finds D's queue full in it
    (DOWNSTREAM_FULL) would have been dropped there: a victim even so.  A
    bug at filt1 while a burst overloads probe, the NF after it (held-out
    ho43-03): filt1 dropped 567 of the burst's packets and made 440 late
    that the truth gives to the burst alone, all named for filt1; the
    tandem without filt1's drops filled a quarter of probe's seen room.

    Where the next NF is not slower than U, D is the slowest NF further on
    the victim's path (a drop's: the one most of U's packets meet), where
    that one is slower than U: the NFs between pass U's output on faster
    than it comes.  The tandem then feeds D what else reaches it too, D's
    arrivals from elsewhere, moved earlier by the usual time from U's tx
    to D (_far_feeds).  An interrupt at probe while a burst, split between
    two branches, overloads relay9 three NFs on (held-out ho49-12): probe
    held and dropped half the burst, and the other half alone did not
    queue at relay9; without the stall, both halves would have.  588
    victims the truth gives to the burst alone were named for probe."""
    usual = None
    # NF by NF, those whose input ever ran beyond its natural variation:
    # their victims' hops only (the stage's peak is near)
    for u, U in sorted(A.nfs.items()):
        if not (U.rate > 0 and U.surge_start is not None and len(U.surge_start)):
            continue
        every = np.flatnonzero((h_nf == u) & (L_h > _EPS))
        # a chunk of them at a time: this runs near the stage's peak
        for c0 in range(0, len(every), _MOVED_CHUNK):
            usual = _moved_chunk(t, A, h, U, every[c0:c0 + _MOVED_CHUNK], hv_of, vp, L_h,
                                 I_h, slo_ns, usual)
    A.far_feeds.clear()                 # (kept for this pass only)


def _moved_chunk(t, A, h, U, cand, hv_of, vp, L_h, I_h, slo_ns, usual):
    # _moved_downstream for the hops `cand` at U; returns `usual`, made
    # when first needed
    went_on = t.latency_ns[vp[hv_of[cand]]] >= 0            # not dropped anywhere
    recv = cand[went_on]
    nxt, ok = _next_hops(t, h[recv])
    recv, nxt = recv[ok], nxt[ok]
    d_nf = t.hop_nf[nxt]
    # (D, the hops at U, dropped at U, D's feeds from elsewhere)
    groups = [(d, recv[d_nf == d], False, None) for d in np.unique(d_nf).tolist()]
    # where the next NF is not the slower, the slowest one further on
    rate = A.rates()
    fast = rate[d_nf] >= U.rate
    if fast.any():
        far = _slowest_after(t, h[recv[fast]], rate, U.rate)
        ok = far >= 0
        i, f_nf = recv[fast][ok], t.hop_nf[far[ok]]
        for d in np.unique(f_nf).tolist():
            groups.append((d, i[f_nf == d], False, _far_feeds(t, A, U, d)))
    # drops at U, where U passes packets to one NF only: without U's
    # slowness they would have gone on to it (or to the slowest NF its
    # packets meet further on, where that one is not the slower)
    # (a position array where some of U's packets go elsewhere or nowhere:
    # `None in values()` compared it with None element by element)
    one_out = len(U.to_pos) == 1 and any(p is None for p in U.to_pos.values())
    if one_out:
        gone = cand[~went_on & (t.hop_rx[h[cand]] < 0)]
        d = next(iter(U.to_pos))
        if len(gone) and rate[d] >= U.rate:
            d = _usual_slowest_after(t, U, rate)
            if d >= 0:
                groups.append((d, gone, True, _far_feeds(t, A, U, d)))
        elif len(gone):
            groups.append((d, gone, True, None))
    for d, i, dropped_at_u, feeds in groups:
        D = A.nfs.get(d)
        if D is None or not 0 < D.rate < U.rate:
            continue
        hu = h[i]
        a_u = _arrival(t, hu)
        js = np.searchsorted(U.surge_start, a_u, "right") - 1
        y = np.flatnonzero(js >= 0)
        p = U.period_of(a_u[y])
        s0 = np.where(p >= 0, U.pstart[np.maximum(p, 0)], a_u[y])
        y = y[U.surge_end[js[y]] >= s0]
        if len(y) == 0:
            continue
        i, hu, a_u, js = i[y], hu[y], a_u[y], js[y]
        if feeds is None:
            # U's drops would have gone on too, where d is the only NF after U
            bound, extra = _bound_for(U, d)
            side = None                 # a join's other inputs (_side_feeds)
        else:
            # U's drops would have gone on too, where U passes packets to
            # one NF only
            bound, side = feeds
            extra = U.d_arr if one_out else _NO_TIMES
        # the tandem empty where U's input started to run beyond its
        # natural variation (the surge window of each victim)
        w_cf, w_cf_u = _tandem_waits(t, A, U, D, bound, extra, side, U.surge_start[js], a_u)
        if usual is None:
            usual = _usual_stay(t)
        # still late without U's slowness -- its waits at U and D those of
        # the tandem, or D's queue full when it came -- U's slowness was
        # not necessary (a drop at U has no hop at D: D's usual time too),
        # and its whole local score there moves
        w_x = w_cf + (usual[d] if dropped_at_u else 0.0)
        x = i[_late_even_so(t, hu, a_u, w_cf_u, w_x, usual, slo_ns)
              | (w_cf * D.rate >= DOWNSTREAM_FULL * D.room)]
        I_h[x] += L_h[x]
        L_h[x] = 0.0
    return usual


def _slowest_after(t, hops, rate, below):
    """For each of `hops`: the later hop of its packet at the slowest NF
    it visits after the next one (received there, its arrival recorded),
    where that NF is slower than `below` (packets/ns); -1 where none."""
    best = np.full(len(hops), -1, np.int64)
    best_r = np.full(len(hops), float(below))
    for jj, live in _along_path(t, hops, 2):
        r = rate[t.hop_nf[jj]]
        better = (live & (r < best_r) & (t.hop_rx[jj] >= 0) & (t.hop_arrival_ns[jj] >= 0))
        best[better], best_r[better] = jj[better], r[better]
    return best


def _usual_slowest_after(t, U, rate):
    """The NF most of U's packets meet as the slowest after the next one,
    where slower than U (-1: none): from one arrival in 64."""
    smp = U.hops_by_arr[::64]
    far = _slowest_after(t, smp, rate, U.rate)
    far = far[far >= 0]
    if len(far) < max(1, len(smp) // 2):
        return -1
    return int(np.bincount(t.hop_nf[far]).argmax())


def _visits(t, hops, d, later):
    """The hop at NF `d` of the packet of each of `hops`, after it
    (`later`) or before it; -1 where none.  A chunk of hops at a time:
    this runs near the attribution stage's peak, over an NF's arrivals."""
    step = 1 if later else -1
    out = np.full(len(hops), -1, np.int64)
    for c0 in range(0, len(hops), _MOVED_CHUNK):
        hc = hops[c0:c0 + _MOVED_CHUNK]
        at = out[c0:c0 + len(hc)]
        for jj, live in _along_path(t, hc, step, step):
            hit = live & (t.hop_nf[jj] == d)
            at[hit] = jj[hit]
            live &= ~hit
    return out


def _bound_for(U, d):
    """U's arrivals bound for NF d (hops by arrival), and U's drops where d
    is the only NF after U (times; none otherwise): what would have gone
    on to d without U's slowness."""
    pos = U.to_pos.get(d, _NO_POS)
    if pos is None:
        return U.hops_by_arr, U.d_arr
    return U.hops_by_arr[pos], _NO_TIMES


def _tandem_waits(t, A, U, D, bound, extra, side, starts, at):
    """The waits at U and at D after it of packets arriving at U at times
    `at`, had U served `bound` and `extra` at its peak and D taken what U
    passed on at its peak (``_attrib.tandem_queue_at``), the two empty at
    each one's `starts`: ``(at D, at U)``, ns.  `side`: D's arrivals from
    elsewhere (sorted times), or None for those of a join
    (:func:`_side_feeds`), read over each start's span only."""
    w_cf, w_cf_u = np.empty(len(at)), np.empty(len(at))
    for s0 in np.unique(starts).tolist():
        g = np.flatnonzero(starts == s0)
        g = g[np.argsort(at[g], kind="stable")]
        sd = _side_feeds(t, A, U, D.k, s0, int(at[g[-1]])) if side is None else side
        q, q_u = np.empty(len(g)), np.empty(len(g))
        _attrib.tandem_queue_at(bound, t.hop_arrival_ns, t.hop_rx_ns, extra, sd, U.rate,
                                D.rate, D.room, np.full(len(g), s0, np.int64),
                                np.ascontiguousarray(at[g]), q, q_u)
        w_cf[g] = q / D.rate
        w_cf_u[g] = np.maximum(q_u - 1, 0) / U.rate
    return w_cf, w_cf_u


def _side_feeds(t, A, U, d, s, e):
    """The arrivals at D, the NF after U, in [s, e] that came from
    elsewhere (sorted times): at a join, what else fills D's queue while
    U's output reaches it.  Without them the tandem of
    :func:`_moved_downstream` held only U's share of D's input: an
    interrupt at probe-a2 while a burst through it met lbx-c2, which two
    other NFs feed (held-out ho402-13), and the tandem left no queue at
    lbx-c2 where the three feeds together did."""
    D = A.nfs[d]
    if not np.delete(A.links[:, d], U.k).any() and D.usual_from[0] <= 0:
        return _NO_TIMES                # U feeds D alone (a chain)
    i0, i1 = _attrib.arrivals_between(D.hops_by_arr, t.hop_arrival_ns, t.hop_rx_ns, s, e)
    H = D.hops_by_arr[i0:i1]
    return np.ascontiguousarray(_arrival(t, H[A.prev_nf[H] != U.k]), np.int64)


def _far_feeds(t, A, U, d):
    """What would feed NF `d`, further down U's path, without U's
    slowness: U's arrivals bound for d (by arrival), and d's arrivals from
    elsewhere (sorted times), moved earlier by the usual time from U's
    tx to d so that they meet U's output as they did (the tandem passes
    U's output to d at once)."""
    key = (U.k, d)
    if key in A.far_feeds:
        return A.far_feeds[key]
    D = A.nfs[d]
    at_d = _visits(t, U.hops_by_arr, d, True)
    bound = at_d >= 0
    hu, hd = U.hops_by_arr[bound], at_d[bound]
    del at_d, bound
    smp = np.arange(0, len(hu), max(1, len(hu) // 4096))
    ok = (t.hop_tx_ns[hu[smp]] >= 0) & (t.hop_arrival_ns[hd[smp]] >= 0)
    transit = (int(np.median(t.hop_arrival_ns[hd[smp][ok]] - t.hop_tx_ns[hu[smp][ok]]))
               if ok.any() else 0)
    other = _visits(t, D.hops_by_arr, U.k, False) < 0
    side = _arrival(t, D.hops_by_arr[other]) - transit
    A.far_feeds[key] = out = (hu, np.ascontiguousarray(side, np.int64))
    return out


def _waited_out_upstream(t, A, queues, h, h_nf, hv_of, vp, I_h, slo_ns):
    """The mirror of :func:`_moved_downstream`: a victim that waited at an
    NF U for U's input surge (its input score there) would, without it,
    have reached the next NF D sooner -- and where D was slow then, waited
    at D instead, as D actually served.  Where the victim would be late
    even so, the surge was not what made it a victim; the wait it would
    have had at D beyond its actual one there (up to U's input score, and
    only what D's slowness adds: beyond the queue D at its peak would have
    had, and one of its usual batches) is then D's local cause: taken from
    the input score at U (in place) and returned as (victims, NF codes,
    ns) of local delay.

    D's wait is that of a packet arriving at D that much sooner, behind
    D's queue had its arrivals come at their usual rate, served by D's
    actual departures (hop_scores' no-input-cause queue); "late even so"
    as in _moved_downstream.  Only where the victim's hop at D has a local
    score (D was slow when it got there), and never for a surge's own
    packets (they would not exist without it).

    A burst into U and a bug at D, the NF after it (held-out ho11-05):
    without this, 349 victims the bug alone made late were blamed on the
    burst they waited behind at U; without the burst they would have
    waited at D as long."""
    out = ([], [], [])
    usual = None
    for u, U in sorted(A.nfs.items()):
        if not U.rate > 0:
            continue
        cand = np.flatnonzero((h_nf == u) & (I_h > _EPS))
        cand = cand[t.latency_ns[vp[hv_of[cand]]] >= 0]
        nxt, ok = _next_hops(t, h[cand])
        ok[ok] &= ~_surges_own(t, A, U, h[cand[ok]])
        cand, nxt = cand[ok], nxt[ok]
        d_nf = t.hop_nf[nxt]
        for d in np.unique(d_nf).tolist():
            D, q = A.nfs.get(d), queues.get(t.nf_names[d])
            if D is None or not D.rate > 0 or q is None or len(q.hops) == 0:
                continue
            sel = np.flatnonzero(d_nf == d)
            i, jd = cand[sel], nxt[sel]
            L_d, I_d = np.empty(len(jd)), np.empty(len(jd))
            D.scores.gather(jd.astype(h.dtype), L_d, I_d)
            i, jd = i[L_d > _EPS], jd[L_d > _EPS]
            hu = h[i]
            a_u = _arrival(t, hu)
            w_u = (t.hop_rx_ns[hu] - a_u).astype(float)
            shift = np.minimum(I_h[i] / U.rate, w_u)
            x = t.hop_arrival_ns[jd] - shift.astype(np.int64)      # at D, sooner
            o = np.argsort(x, kind="stable")
            i, jd, hu, a_u, w_u, shift, x = (v[o] for v in (i, jd, hu, a_u, w_u, shift, x))
            p = D.period_of(x)
            y = np.flatnonzero(p >= 0)
            if len(y) == 0:
                continue
            w_cf, q_cf = _usual_input_wait(t, D, q, x[y], p[y])
            if usual is None:
                usual = _usual_stay(t)
            w_d = (t.hop_rx_ns[jd[y]] - t.hop_arrival_ns[jd[y]]).astype(float)
            slow = w_cf - q_cf / D.rate - usual[d]
            moved = np.clip(np.minimum(w_cf - w_d, slow), 0.0, shift[y])
            z = np.flatnonzero(moved > 0)
            y, moved, w_cf = y[z], moved[z], w_cf[z]
            # still late without the surge -- its wait at U less the
            # surge's part, and that at D -- the surge was not necessary
            late = _late_even_so(t, hu[y], a_u[y], w_u[y] - shift[y], w_cf, usual, slo_ns)
            y, moved = y[late], moved[late]
            I_h[i[y]] -= moved * U.rate
            out[0].append(hv_of[i[y]])
            out[1].append(np.full(len(y), d))
            out[2].append(moved)
    return out


def _surges_own(t, A, U, hops):
    """Which of `hops` (at U) are packets of the surge named for U's input
    surge window they arrived in: the prefix that holds its excess, where
    that prefix is a surge (:func:`_surge_prefix`), among the packets that
    reached U."""
    own = np.zeros(len(hops), bool)
    if t.src_addr is None or U.surge_start is None or len(U.surge_start) == 0 \
            or len(hops) == 0:
        return own
    a = _arrival(t, hops)
    js = np.searchsorted(U.surge_start, a, "right") - 1
    addr = t.src_addr[t.hop_packet[hops]]
    for j in np.unique(js[js >= 0]).tolist():
        ws, we = int(U.surge_start[j]), int(U.surge_end[j])
        H = U.arrived(ws, we)
        if len(H) == 0:
            continue
        rates = A._rates_via(U.k)
        name = rates.excess_prefixes(
            np.ascontiguousarray(t.src_addr[t.hop_packet[H]], np.uint32), [len(H)],
            [we - ws], slack=A._slack(U.k, [we - ws]))[0]
        value, mask = _surge_prefix(name, A.sources, _usual_share(name, rates))
        if mask:
            own |= (js == j) & ((addr & np.uint32(mask)) == np.uint32(value))
    return own


def _usual_input_wait(t, D, q, x, p):
    """The wait at D of packets arriving at times `x` (ascending; in D's
    queuing periods `p`) behind the queue D would have had, had its
    arrivals come at their usual rate since the period's start, served by
    D's actual departures (hop_scores' no-input-cause queue, no more than
    the actual one, counted from where D went silent before the period
    if it did); and that queue."""
    w, qn = np.zeros(len(x)), np.zeros(len(x))
    end_of_time = int(np.iinfo(np.int64).max)
    quiet = dict(D.pquiet.tolist())
    for pp in np.unique(p).tolist():
        m = np.flatnonzero(p == pp)
        s = int(D.pstart[pp])
        e = int(D.pend[pp]) if D.pend[pp] >= 0 else end_of_time
        xs = x[m]
        # the departures (rx) after the period's start; Ms before it
        Ms, r1 = _attrib.arrivals_between(q.hops, t.hop_rx_ns, t.hop_rx_ns, s + 1, e)
        dep = t.hop_rx_ns[q.hops[Ms:r1]]
        if len(dep) == 0:
            continue
        M = np.searchsorted(dep, xs, "right")
        run = np.minimum.accumulate(D.usual * dep.astype(float) - (np.arange(len(dep)) + Ms + 1))
        m0 = D.usual * quiet.get(pp, s) - Ms
        low = np.where(M > 0, np.minimum(m0, run[np.maximum(M - 1, 0)]), m0)
        a0, a1 = _attrib.arrivals_between(D.hops_by_arr, t.hop_arrival_ns, t.hop_rx_ns, s,
                                          int(xs[-1]))
        ha = D.hops_by_arr[a0:a1]
        arr = _arrival(t, ha)
        queued = np.maximum(a0 + np.searchsorted(arr, xs, "right") - (Ms + M), 0)
        qi = np.clip((D.usual * xs - (Ms + M)) - low, 0.0, queued)
        k = np.minimum(M + np.ceil(np.maximum(qi - 1, 0)).astype(np.int64), len(dep) - 1)
        w[m] = np.maximum(dep[k] - xs, 0)
        qn[m] = qi
    return w, qn


def _released_ahead(t, A, h, hv_of, rel, slo_ns, contribute):
    """The mirror of :func:`_moved_downstream` one NF on.  A victim that
    waited at D behind what U, the NF before it, released (the share of
    its input score at D that the upstream split gives to U's local
    cause) would, without U's slowness, still have met at D what U's
    input surge left there: the surge would have passed U at U's peak and
    queued at the slower D.  Where the victim would be late even so, with
    the wait at D that the surge alone would have left (the tandem of
    :func:`_moved_downstream`), U's slowness was not needed to make it a
    victim (SCENARIO.md's counterfactual), and U's whole share goes to the
    split's other culprits, in their proportions.

    The tandem starts empty at U's first surge window that reaches into
    the victim's queuing period at D (as the split does: _surge_from),
    not at the one it passed U in: a victim late in D's drain passed U
    long after U's own surge window ended.  It is fed U's arrivals bound
    for D and, at a join, D's arrivals from elsewhere (_side_feeds).

    `rel`: (D's code, U's code, positions into `h` of the hops at D, the
    ns of delay the split gave U's local cause, the split's other
    {culprit: share}), from the contributions' loop.  Contributions
    through `contribute`.

    A contention at cls (4.9% of a core) while a burst came through it
    (held-out ho306-18): filt.69 after it, fed by l4lb-y2 too, queued
    what cls released, and the split gave cls's local cause most of it;
    297 of the burst's 581 own victims were named for cls (now 30).

    A burst (4.15 Mpps) inside the flows of a bug (12.6x) at l4lb3
    (held-out ho407-17): lbx-y3 after it queued what l4lb3 released, and
    the victims' wait there was more the bug's release than the burst's.
    The burst alone would have made them late, the bug alone not: 1,407
    of the burst's own victims were named for l4lb3 while U kept the wait
    beyond the surge's (now 996)."""
    usual = None
    by_pair = {}
    for x in rel:
        by_pair.setdefault((x[0], x[1]), []).append(x)
    for (d, u), parts in sorted(by_pair.items()):
        D, U = A.nfs.get(d), A.nfs.get(u)
        if D is None or U is None or not 0 < D.rate < U.rate or U.surge_start is None \
                or len(U.surge_start) == 0:
            continue
        i = np.concatenate([p[2] for p in parts])
        X = np.concatenate([p[3] for p in parts])
        which = np.repeat(np.arange(len(parts)), [len(p[2]) for p in parts])
        hd = h[i].astype(np.int64)
        hu = hd - 1                     # the previous hop, at U (rel's rule)
        a_u = _arrival(t, hu)
        # the tandem from U's first surge window reaching into the victim's
        # queuing period at D (both empty then)
        p = D.period_of(_arrival(t, hd))
        s_d = np.where(p >= 0, D.pstart[np.maximum(p, 0)], _arrival(t, hd))
        js = np.searchsorted(U.surge_end, s_d, "left")
        y = np.flatnonzero(js < len(U.surge_end))
        y = y[U.surge_start[js[y]] <= a_u[y]]
        if len(y) == 0:
            continue
        i, X, which, hd, hu, a_u, js = (v[y] for v in (i, X, which, hd, hu, a_u, js))
        bound, extra = _bound_for(U, d)
        w_cf, w_cf_u = _tandem_waits(t, A, U, D, bound, extra, None, U.surge_start[js], a_u)
        if usual is None:
            usual = _usual_stay(t)
        x = np.flatnonzero((X > 0)
                           & _late_even_so(t, hu, a_u, w_cf_u, w_cf, usual, slo_ns))
        key_u = ("nf", t.nf_names[u], "local")
        for b in np.unique(which[x]).tolist():
            xb = x[which[x] == b]
            vb, mb = hv_of[i[xb]], X[xb]
            others = parts[b][4]
            tot = sum(others.values())
            contribute(vb, key_u, -mb)
            for key, f in others.items():
                contribute(vb, key, mb * (f / tot))


def attribute(traj, queues, slo_ns, bucket_ns=BUCKET_NS,
              min_delay_share=MIN_DELAY_SHARE, max_depth=None) -> Attribution:
    """Attribute every victim (latency > `slo_ns`, or dropped).

    Parameters
    ----------
    traj : Trajectories
    queues : dict name -> QueueTimeline
    slo_ns : int
        Latency objective.
    bucket_ns : int
        Victims of one queuing period at one NF share one upstream split
        per arrival bucket this long.
    min_delay_share : float
        Hops where the victim waited less than this share of its total
        queuing delay are not considered.
    max_depth : int, optional
        Recursion bound (default: the number of NFs).

    Returns
    -------
    Attribution
    """
    t = traj
    names = t.nf_names
    dropped_pk = t.drop_nf >= 0
    victim = dropped_pk | (t.latency_ns > slo_ns)
    vp = np.flatnonzero(victim)
    nv = len(vp)
    A = _Attributor(t, queues, max_depth or len(names) + 1)
    index = np.int32 if max(len(t.hop_packet), len(t.packet_id)) < 2**31 else np.int64
    vidx = np.full(len(t.packet_id), -1, index)
    vidx[vp] = np.arange(nv, dtype=index)

    # the hops that count for each victim (waited noticeably, or dropped
    # there; see below for drops), and the victim's NF: where it waited longest among those,
    # else where it spent longest (wait + service)
    tot = np.zeros(nv)
    vnf, varr = np.full(nv, -1, np.int64), np.full(nv, -1, np.int64)
    n = _attrib.victim_delays(t.hop_packet, t.hop_nf, t.hop_rx, t.hop_arrival_ns, t.hop_rx_ns,
                              t.hop_tx_ns, vidx, tot, vnf, varr)
    h = np.empty(n, index)
    n = _attrib.victim_kept_hops(t.hop_packet, t.hop_nf, t.hop_rx, t.hop_arrival_ns,
                                 t.hop_rx_ns, vidx, float(min_delay_share), tot, vnf, varr, h)
    h = h[:n]
    del tot
    hv_of = vidx[t.hop_packet[h]]
    del vidx
    dv = dropped_pk[vp]
    # a drop is explained by the queue that dropped it: the waits a
    # dropped victim had before do not make it dropped (an NF's long
    # waits upstream outweighed the full queue of a contended one, whose
    # drops went to the source) -- unless they had made it late before it
    # got there: without the dropping NF's local cause it would have gone
    # on, late all the same, so the causes of its waits before are needed
    # and that one is not (bench/heldout.py seed 41: 482 drops a burst
    # had made late, named for a bug at the NF that dropped them)
    if dv.any():
        src_v = t.src_ns[vp]
        late_in = dv & (src_v >= 0) & (t.drop_ns[vp] - src_v > slo_ns)
        keep = ~(dv[hv_of] & (t.hop_rx[h] >= 0) & ~late_in[hv_of])
        h, hv_of = h[keep], hv_of[keep]
    vnf[dv] = t.drop_nf[vp[dv]]
    varr[dv] = t.drop_ns[vp[dv]]

    keys = {}

    def col(key):
        if key not in keys:
            keys[key] = len(keys)
        return keys[key]

    # contributions (victims, culprit column, ns of delay), summed per
    # victim and culprit in this order at the end
    part_rows, part_cols, part_ns = [], [], []

    def contribute(victims, key, ns):
        part_rows.append(victims)
        part_cols.append(col(key))          # one column per part: expanded at the end
        part_ns.append(ns)

    h_nf = t.hop_nf[h]
    nfs_here = [k for k in np.unique(h_nf).tolist() if k in A.nfs]
    L_h, I_h = np.zeros(len(h)), np.zeros(len(h))
    for k in nfs_here:
        sel = np.flatnonzero(h_nf == k)
        L, I = np.empty(len(sel)), np.empty(len(sel))
        A.nfs[k].scores.gather(h[sel], L, I)
        L_h[sel], I_h[sel] = L, I
    # the ebb and flow of the traffic over a long drain is no input cause
    _surges_judged_over_their_span(t, A, h, h_nf, nfs_here, L_h, I_h,
                                   (t.latency_ns[vp] - slo_ns)[hv_of])
    # the batches' time only for victims their waits leave well short of
    # their excess: for every victim it made 5x the upstream splits on
    # bench/analyze.py's capture (attribution 1.2 -> 4.5 s), for all those
    # short of it 1.5x (2.2 s); held-out accuracy within 0.1 point of both
    rate = np.array([A.nfs[k].rate if k in A.nfs else 0.0 for k in range(len(names))])
    rate_h = rate[h_nf]
    waits_ns = np.bincount(hv_of, np.divide(L_h + I_h, rate_h, out=np.zeros(len(h)),
                                            where=rate_h > 0), minlength=nv)
    short = ~dropped_pk[vp] & (waits_ns < BATCH_SHORT * (t.latency_ns[vp] - slo_ns))
    del rate_h, waits_ns
    # each hop's wait (0 where not received or its arrival not recorded)
    rx_h = t.hop_rx_ns[h]
    wait_h = np.maximum(np.where(t.hop_rx[h] >= 0, rx_h - np.where(
        t.hop_arrival_ns[h] >= 0, t.hop_arrival_ns[h], rx_h), 0), 0)
    del rx_h
    _batch_inflation(t, A, queues, h, h_nf, wait_h, nfs_here, L_h, I_h, short[hv_of])
    _slow_service(t, A, queues, h, h_nf, nfs_here, rate, L_h)
    _unexplained_waits_as_input(h_nf, hv_of, wait_h, nv, rate, L_h, I_h)
    # the per-hop and per-victim arrays done with go before the
    # contributions are made: their pages serve those (bench/analyze.py's
    # run peaked in the loop below, 3.4 MiB an array)
    del wait_h, short
    _moved_downstream(t, A, h, h_nf, hv_of, vp, L_h, I_h, slo_ns)
    _held_into_a_stop(t, A, queues, h, h_nf, rate, L_h)
    _dropped_while_stopped(t, queues, h, h_nf, rate, L_h, I_h)
    waited_v, waited_nf, waited_ns = _waited_out_upstream(t, A, queues, h, h_nf, hv_of, vp,
                                                          I_h, slo_ns)
    # the hops whose split gave the local cause of the NF before them a
    # share (_released_ahead)
    rel = []
    for k in nfs_here:
        F = A.nfs[k]
        sel = np.flatnonzero(h_nf == k)
        hk = h[sel]
        a_k = _arrival(t, hk)
        L, I = L_h[sel], I_h[sel]
        # in ns of the victim's delay: packets at k take 1 / r_k each, so
        # a fast NF's packets weigh less than a slow NF's
        r_k = F.rate if F.rate > 0 else 1.0
        contribute(hv_of[sel], ("nf", names[k], "local"), L / r_k)
        p = F.period_of(a_k)
        use = (p >= 0) & (I > _EPS)
        if not use.any():
            continue
        sel, p, a_k, I = sel[use], p[use], a_k[use], I[use]
        # groups: one queuing period, one arrival bucket
        b = (a_k - F.pstart[p]) // max(int(bucket_ns), 1)
        nb = int(b.max()) + 1
        g = p.astype(np.int64) * nb + b
        o = np.argsort(g, kind="stable")
        first = np.flatnonzero(np.concatenate([[True], g[o][1:] != g[o][:-1]]))
        last = np.concatenate([first[1:], [len(o)]])
        emax = np.maximum.reduceat(a_k[o], first)
        s0 = F.pstart[g[o[first]] // nb]
        s_f = _surge_from(F, s0)
        # victims and input scores in group order: a group is a slice
        hv_g, I_g = hv_of[sel[o]], I[o]
        # a period's buckets split together (their windows share its
        # start): from the period's first surge on, those after its start
        pg = g[o[first]] // nb
        runs = np.flatnonzero(np.concatenate([[True], pg[1:] != pg[:-1], [True]]))
        splits = []
        for r0, r1 in zip(runs[:-1].tolist(), runs[1:].tolist()):
            e = emax[r0:r1]
            cut = int(np.searchsorted(e, s_f[r0], "left"))
            if cut:
                splits += A.unit_splits(k, int(s0[r0]), e[:cut].tolist())
            if cut < len(e):
                splits += A.unit_splits(k, int(s_f[r0]), e[cut:].tolist())
        sel_g, prev_g = sel[o], A.prev_nf[h[sel[o]]]
        for gi, (i0, i1) in enumerate(zip(first.tolist(), last.tolist())):
            sp = splits[gi]
            for key, frac in sp.items():
                contribute(hv_g[i0:i1], key, I_g[i0:i1] * frac / r_k)
            for key, frac in sp.items():
                if key[0] == "nf" and key[2] == "local" and frac > _EPS:
                    others = {c: f for c, f in sp.items() if c != key and f > _EPS}
                    u = names.index(key[1])
                    m = np.flatnonzero(prev_g[i0:i1] == u)
                    if len(m) and others:
                        rel.append((k, u, sel_g[i0:i1][m], I_g[i0:i1][m] * frac / r_k, others))
    _released_ahead(t, A, h, hv_of, rel, slo_ns, contribute)
    del rel
    # the waits a surge at U moved from a slow D (_waited_out_upstream)
    for vv, kk, ns in zip(waited_v, waited_nf, waited_ns):
        for k in np.unique(kk).tolist():
            contribute(vv[kk == k], ("nf", names[k], "local"), ns[kk == k])
    culprits = [None] * len(keys)
    for key, j in keys.items():
        culprits[j] = key
    lat = np.where(dv, -1, t.latency_ns[vp])
    # Summed per victim and culprit, the contributions are ns of each
    # victim's delay.  A cause that alone would bring the victim under the
    # objective is what the counterfactual definition of a victim asks
    # for; beyond that, more delay does not explain more: cap each culprit
    # at the victim's excess over the objective, and keep the uncapped
    # value to order culprits the cap makes equal.  Reported in packets at
    # the rate of the NF where the victim waited longest (one factor per
    # victim, so the ranking is the ranking by delay).
    # before the per-NF arrays go: whether each drop would have been one
    # without its NF's slowness (_own_drops_first, _own_drops_unnamed: only
    # where the source addresses are known)
    drop_even_so = (_dropped_even_so(t, A, vp, dv, slo_ns)
                    if dv.any() and t.src_addr is not None else None)
    sources, named_shares, parts = A.sources, A.named_shares, source_parts(A._parts)
    room = np.array([A.nfs[k].room if k in A.nfs else 0.0 for k in range(len(names))])
    A = F = None                        # free the per-hop and per-NF arrays
    # and let their pages go (mscope.analyzer.pages): what follows is
    # smaller, and kept beside it they took bench/analyze.py's peak RSS up
    # by ~10 MiB (933 against 923 MiB; 925 with this)
    pages.release()
    r_v = np.where(vnf >= 0, rate[np.maximum(vnf, 0)], 0.0)
    r_v = np.where(r_v > 0, r_v, 1.0)
    excess = np.where(dv, np.inf, np.maximum(lat - slo_ns, 0)).astype(float)
    # each list freed once joined: the contributions are held once more,
    # not twice, beside the scores
    rows = np.concatenate(part_rows) if part_rows else np.zeros(0, index)
    del part_rows[:]
    cols = np.repeat(np.array(part_cols, np.int32), [len(x) for x in part_ns])
    del part_cols[:]
    vals = np.concatenate(part_ns) if part_ns else np.zeros(0)
    del part_ns[:]
    # once to count each victim's culprits, once to fill them in
    offsets = np.zeros(nv + 1, np.int64)
    _attrib.score_csr(rows, cols, vals, excess, r_v, len(keys), offsets,
                      np.zeros(0, np.int32), np.zeros(0), np.zeros(0))
    nnz = int(offsets[-1])
    culprit, capped, uncapped = np.empty(nnz, np.int32), np.empty(nnz), np.empty(nnz)
    _attrib.score_csr(rows, cols, vals, excess, r_v, len(keys), offsets, culprit, capped,
                      uncapped)
    del rows, cols, vals
    if t.src_addr is not None:
        offsets, culprit, capped, uncapped = _merge_nested_surges(
            culprits, sources, named_shares, dv, excess, r_v, offsets, culprit, uncapped,
            capped)
        _own_surge_is_necessary(t, vp, culprits, sources, named_shares, dv, excess, r_v,
                                offsets, culprit, uncapped, capped, t.drop_nf, room, rate,
                                slo_ns, drop_even_so)
        offsets, culprit, capped, uncapped = _own_drops_unnamed(
            t, vp, culprits, sources, named_shares, dv, offsets, culprit, uncapped, capped,
            t.drop_nf, room, rate, slo_ns, vnf, drop_even_so)
    return Attribution(vp, t.packet_id[vp], lat, dv,
                       NFLabels(vnf, names), culprits,
                       CulpritScores(offsets, culprit, capped, uncapped, len(keys)), varr,
                       sources.cover_str() if sources.known else None,
                       {k[1]: parts[k[1]] for k in culprits if k[0] == "flows" and k[1] in parts})
