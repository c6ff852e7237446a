"""IPv4 prefixes over packet addresses: names, covers, heavy hitters.

Addresses are ``uint32`` numbers (10.0.0.1 is 0x0A000001), 0 where a
packet's address is unknown (no address records): callers drop those.
Everything here works level by level on sorted addresses, never one
Python step per packet: heavy hitters with one ``np.add.reduceat`` per
prefix length, SourceRates' per-window search in a compiled kernel
(mscope.analyzer._prefix) over the window's distinct addresses.
"""
import numpy as np

try:
    from . import _prefix
except ImportError as e:                    # pragma: no cover
    raise ImportError("mscope.analyzer._prefix is not built: pip install -e . "
                      "(or cd analyzer && cythonize -i -3 _prefix.pyx)") from e

__all__ = ["prefix_str", "covering_prefix", "heavy_prefixes", "SourceRates",
           "EXCESS_SHARE", "SECOND_SURGE"]

#: A burst is named by the most specific prefix reached by going down,
#: a bit at a time, to the prefix holding this share of the excess packets
#: of the one above it (of the window's, below the cover).
EXCESS_SHARE = 0.8
#: Where the excess beyond the traffic's natural variation leaves more than
#: this share of it outside the name, a second surge came in the window:
#: named as counted (the prefix holding both, as a rule).  0.05, 0.1, 0.2
#: on 25 kept sets (bench/heldout.py): 41, 202, 564 labels fewer than with
#: no allowance for natural variation; burst victims named by the burst's
#: own prefix 538,597, 539,674, 541,101 against 499,643.
SECOND_SURGE = 0.05


def prefix_str(value, length):
    """``"a.b.c.d/L"`` for the prefix of `value` (int) at `length` bits."""
    v = int(value) & _mask(length)
    return f"{v >> 24 & 255}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}/{int(length)}"


def _mask(length):
    return (0xFFFFFFFF << (32 - int(length))) & 0xFFFFFFFF if length else 0


def covering_prefix(addrs):
    """(value, length) of the longest prefix holding every address in `addrs`."""
    a = np.asarray(addrs, np.uint32)
    if len(a) == 0:
        return 0, 0
    lo, hi = int(a.min()), int(a.max())
    diff = lo ^ hi
    length = 32 - diff.bit_length()
    return lo & _mask(length), length


def heavy_prefixes(addrs, weights, share, min_length=0, max_length=32):
    """AutoFocus-style one-dimensional hierarchical heavy hitters.

    Walk the prefix lengths from `max_length` up to `min_length`; at each length, a
    prefix whose weight *not already covered by reported longer prefixes*
    is at least ``share`` of the total is reported, and its weight is then
    taken out of its ancestors.

    Parameters
    ----------
    addrs : array of uint32
    weights : array of float
        Non-negative, one per address (repeats allowed).
    share : float
        0..1.
    min_length, max_length : int
        Shortest and longest prefix reported (e.g. the cover of all
        addresses; the resolution the weights were measured at).

    Returns
    -------
    list of (prefix string, residual weight), most specific first.
    """
    a = np.asarray(addrs, np.uint32)
    w = np.asarray(weights, float)
    if len(a) == 0 or w.sum() <= 0:
        return []
    # the stable argsort, as one sort of (address, index) keys: they are
    # distinct, so their order is the stable one (5.5 -> 3.1 ms on 264,052
    # victims of s2); the weights must be summed in that order
    key = np.sort(a.astype(np.uint64) << np.uint64(32) | np.arange(len(a), dtype=np.uint64))
    o = (key & np.uint64(0xFFFFFFFF)).astype(np.intp)
    a, w = a[o], w[o].copy()
    thr = share * w.sum()
    out = []
    # runs are found among the distinct addresses (1,259 of 264,052 on s2);
    # a length with the runs of the one before and nothing reported there
    # has its totals too, so it is skipped
    first, uniq = _distinct(a)
    n_runs, cut = -1, True
    for length in range(max_length, min_length - 1, -1):
        if length == 0:
            new = np.zeros(1, bool)
        else:
            pu = uniq >> np.uint32(32 - length) if length < 32 else uniq
            new = np.concatenate([[True], pu[1:] != pu[:-1]])
        runs = int(np.count_nonzero(new))
        if runs == n_runs and not cut:
            continue
        n_runs, cut = runs, False
        st = first[new] if length else first[:1]
        tot = np.add.reduceat(w, st)
        hit = np.flatnonzero(tot >= thr)
        for i in hit.tolist():
            v = int(a[st[i]]) & _mask(length)
            out.append((prefix_str(v, length), float(tot[i])))
            end = st[i + 1] if i + 1 < len(st) else len(a)
            w[st[i]:end] = 0.0
            cut = True
    return out


def _distinct(sorted_addrs):
    """Where each distinct address starts in `sorted_addrs`, and its value."""
    a = sorted_addrs
    first = np.flatnonzero(np.concatenate([[True], a[1:] != a[:-1]]))
    return first, a[first]


class SourceRates:
    """Long-run packet rates of the source's addresses, to find what burst.

    Parameters
    ----------
    addrs : array of uint32
        Source address of every packet the chain received from the source
        (unknown ones, 0, are ignored).
    span_ns : int
        The time those packets cover.
    """

    def __init__(self, addrs, span_ns):
        a = np.asarray(addrs, np.uint32)
        a = a[a != 0]                       # a copy, sorted in place
        a.sort()
        self.span = max(int(span_ns), 1)
        self.cover = covering_prefix(a)
        self.known = len(a) > 0
        # the levels from the distinct addresses (4,071 of 2.4 M on the
        # bench/analyze.py s2 capture), not 33 passes over every packet
        if self.known:
            first, uniq = _distinct(a)
            cnt = np.diff(np.append(first, len(a)))
        else:
            uniq, cnt = a, np.zeros(0, np.int64)
        self._prefix = np.empty(33 * len(uniq), np.uint32)
        count = np.empty(33 * len(uniq), np.int64)
        self._offset = np.empty(34, np.int64)
        k = _prefix.prefix_levels(uniq, cnt, self._prefix, count, self._offset)
        self._prefix, count = self._prefix[:k], count[:k]
        self._rate = count / self.span
        o = self._offset.tolist()
        self.levels = [(self._prefix[o[n]:o[n + 1]], self._rate[o[n]:o[n + 1]])
                       for n in range(33)]
        self._rate0 = float(self._rate[0]) if self.known else 0.0
        self._cover_str = self.cover_str()

    def cover_str(self):
        return prefix_str(*self.cover) if self.known else "*"

    def usual_share(self, value, length):
        """Share of the source's long-run packets from the prefix
        (`value`, `length`); 1.0 when no address is known."""
        if not self.known or self._rate0 <= 0:
            return 1.0
        pre, rate = self.levels[int(length)]       # values addr >> (32 - length)
        v = np.uint32((int(value) & 0xFFFFFFFF) >> (32 - int(length))) if length else 0
        i = int(np.searchsorted(pre, v))
        return float(rate[i]) / self._rate0 if i < len(pre) and pre[i] == v else 0.0

    def excess_prefix(self, addrs, window_ns, share=EXCESS_SHARE, slack=0.0):
        """The flows that sent above their long-run rate in a window.

        Parameters
        ----------
        addrs : array of uint32
            Source addresses of the packets that arrived in the window.
        window_ns : int
        slack : float
            The traffic's natural variation over the window, a share of
            its long-run count: each prefix's excess is counted beyond as
            much of its own, unless a second surge is left outside the
            name (SECOND_SURGE).  Heavy flows that ran 25% over their rate
            for a few milliseconds otherwise held a fifth of a window's
            excess, and a burst was named for the whole traffic.

        Returns
        -------
        str
            The most specific prefix reached by going down a bit at a
            time, each prefix holding at least `share` of the excess
            packets (count minus long-run rate x window, beyond `slack`)
            of the one before it, of the window's below the cover;
            the cover of all source addresses when the window held no
            excess (the source sent at its usual rate), ``"*"`` when no
            address is known.
        """
        if not self.known:
            return "*"
        length, value = _prefix.excess_prefix(
            np.ascontiguousarray(addrs, np.uint32), self._prefix, self._rate, self._offset,
            self.cover[1], self._rate0, max(int(window_ns), 1), share, float(slack),
            SECOND_SURGE)
        return self._cover_str if length < 0 else prefix_str(value, length)

    def excess_prefixes(self, addrs, ends, windows_ns, share=EXCESS_SHARE, slack=None,
                        parts=False):
        """:meth:`excess_prefix` of each window whose packets are
        ``addrs[:ends[b]]`` (`ends` ascending), over ``windows_ns[b]``,
        with ``slack[b]`` (None: 0): a list of str, the addresses counted
        once for all of them.

        With `parts`, also a list of tuples: for each window whose name is
        the prefix holding two surges (SECOND_SURGE), those two prefixes,
        the larger first (else an empty tuple)."""
        nb = len(ends)
        if not self.known:
            return (["*"] * nb, [()] * nb) if parts else ["*"] * nb
        length, value = np.empty(nb, np.int32), np.empty(nb, np.uint32)
        plen, pval = ((np.empty((nb, 2), np.int32), np.empty((nb, 2), np.uint32)) if parts
                      else (None, None))
        _prefix.excess_prefix_at(
            np.ascontiguousarray(addrs, np.uint32), np.asarray(ends, np.int64),
            np.maximum(np.asarray(windows_ns, np.int64), 1), self._prefix, self._rate,
            self._offset, self.cover[1], self._rate0, share, length, value,
            None if slack is None else np.ascontiguousarray(slack, np.float64), SECOND_SURGE,
            plen, pval)
        names = [self._cover_str if n < 0 else prefix_str(v, n)
                 for n, v in zip(length.tolist(), value.tolist())]
        if not parts:
            return names
        out = []
        for (n, v), (n0, n1), (v0, v1) in zip(zip(length.tolist(), value.tolist()),
                                               plen.tolist(), pval.tolist()):
            n, v = (n, v) if n >= 0 else self.cover[::-1]
            # the name holds both surges and is wider than either
            held = n0 >= 0 and n1 >= 0 and n < min(n0, n1) and all(
                (x ^ v) & _mask(n) == 0 for x in (v0, v1))
            out.append((prefix_str(v0, n0), prefix_str(v1, n1)) if held else ())
        return names, out
