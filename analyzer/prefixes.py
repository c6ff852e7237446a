"""IPv4 prefixes over packet addresses: names, covers, heavy hitters.

Addresses are ``uint32`` numbers (10.0.0.1 is 0x0A000001), 0 where a
packet's address is unknown (no address records): callers drop those.
Everything here works level by level on sorted addresses, one
``np.add.reduceat`` per prefix length, never one Python step per packet.
"""
import numpy as np

__all__ = ["prefix_str", "covering_prefix", "heavy_prefixes", "SourceRates",
           "EXCESS_SHARE"]

#: A burst is named by the most specific prefix holding this share of the
#: source's excess packets in the window.
EXCESS_SHARE = 0.8


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


def _level(sorted_addrs, length):
    """Prefix values at `length` of sorted addresses, and their run starts."""
    p = sorted_addrs >> np.uint32(32 - length) if length < 32 else sorted_addrs
    if length == 0:
        p = np.zeros(len(sorted_addrs), np.uint32)
    starts = np.flatnonzero(np.concatenate([[True], p[1:] != p[:-1]])) if len(p) else \
        np.zeros(0, np.int64)
    return p, starts


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
    o = np.argsort(a, kind="stable")
    a, w = a[o], w[o].copy()
    thr = share * w.sum()
    out = []
    for length in range(max_length, min_length - 1, -1):
        p, st = _level(a, length)
        tot = np.add.reduceat(w, st)
        hit = np.flatnonzero(tot >= thr)
        for i in hit.tolist():
            out.append((prefix_str(int(p[st[i]]) << (32 - length) if length else 0, length),
                        float(tot[i])))
            end = st[i + 1] if i + 1 < len(st) else len(a)
            w[st[i]:end] = 0.0
    return out


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
        a = np.sort(a[a != 0])
        self.span = max(int(span_ns), 1)
        self.cover = covering_prefix(a)
        self.known = len(a) > 0
        self.levels = []
        for length in range(33):
            p, st = _level(a, length)
            cnt = np.diff(np.concatenate([st, [len(a)]])) if len(a) else np.zeros(0, np.int64)
            self.levels.append((p[st] if len(a) else p, cnt / self.span))

    def cover_str(self):
        return prefix_str(*self.cover) if self.known else "*"

    def excess_prefix(self, addrs, window_ns, share=EXCESS_SHARE):
        """The flows that sent above their long-run rate in a window.

        Parameters
        ----------
        addrs : array of uint32
            Source addresses of the packets that arrived in the window.
        window_ns : int

        Returns
        -------
        str
            The most specific prefix holding at least `share` of the
            window's excess packets (count minus long-run rate x window);
            the cover of all source addresses when the window held no
            excess (the source sent at its usual rate), ``"*"`` when no
            address is known.
        """
        a = np.asarray(addrs, np.uint32)
        a = np.sort(a[a != 0])
        if not self.known or len(a) == 0:
            return "*" if not self.known else self.cover_str()
        T = max(int(window_ns), 1)
        root = len(a) - self.levels[0][1].sum() * T
        if root <= 0:
            return self.cover_str()
        best = (self.cover[1], self.cover[0])
        for length in range(self.cover[1] + 1, 33):
            p, st = _level(a, length)
            vals = p[st]
            cnt = np.diff(np.concatenate([st, [len(a)]]))
            gp, grate = self.levels[length]
            j = np.minimum(np.searchsorted(gp, vals), max(len(gp) - 1, 0))
            rate = np.where((len(gp) > 0) & (gp[j] == vals), grate[j], 0.0)
            ex = cnt - rate * T
            i = int(np.argmax(ex))
            if ex[i] < share * root:
                break
            best = (length, int(vals[i]) << (32 - length) if length < 32 else int(vals[i]))
        return prefix_str(best[1], best[0])
