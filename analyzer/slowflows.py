"""Which flows an NF served slowly: per-prefix service cost from batch times.

When the NF's queue stays busy after a batch, the next batch starts as soon
as this one is done, so the gap between the two is the batch's service
time.  That time is a sum over the batch's packets; regressing it on how
many packets of each source prefix the batch held (least squares over the
busy batches) gives each prefix's cost per packet.  Prefixes that cost well
above the rest are summed into the most specific prefix holding most of
the extra cost (hierarchical heavy hitter), then looked at again one level
finer, down to single addresses.  This is how a bug that slows one prefix
is named by prefix even though FIFO makes every flow behind it a victim.
At light load, where few batches leave the queue busy, each batch is timed
by its own rx and tx instead, and with a handful of slow batches every
prefix is fitted as one column against the rest (slow_prefix_timed).
"""
import ipaddress

import numpy as np

from . import _prefix
from .prefixes import covering_prefix, heavy_prefixes

__all__ = ["slow_prefix", "slow_prefix_timed", "SLOW_FACTOR"]

#: A prefix is slow when its per-packet cost is this many times the median.
SLOW_FACTOR = 2.0
#: Share of the extra cost the named prefix must hold.
SLOW_SHARE = 0.8
#: Busy batches slower per packet than this many times the median are
#: stalls, left out of the regression.  Above the slowest bug: a prefix
#: 200 times slower makes batches of its packets up to 200 times slower
#: (at 40, bench/heldout.py's bugs of 80x and more lost the very batches
#: that show them).
OUTLIER = 250.0
_STEP = 8            # bits refined per regression
_MIN_PKTS = 8        # packets a prefix needs to get its own column
#: A prefix disjoint from the best fit's that fits within this factor of
#: its squared residual leaves the batches undecided (_best_fit).
RIVAL = 1.1
#: Slow batches slow_prefix_timed needs: each left out in turn, 3 still fit
#: the 2 costs its check compares.
MIN_TIMED = 4


def _costs(batch_dur, batch_of, col, n_cols):
    """Per-packet cost of each column (least squares over batches) and its
    packets."""
    # packets per (batch, column), as float: the integer counts numpy's
    # bincount gave, without its int64 matrix (1.3 M cells on s2)
    X = np.zeros((len(batch_dur), n_cols))
    _prefix.count_matrix(batch_of, col, X)
    return _least_squares(X, batch_dur), np.bincount(col, minlength=n_cols).astype(float)


def _least_squares(X, y):
    """``lstsq(X, y)``'s solution, by the normal equations' Cholesky factor
    where ``X'X`` is well conditioned (every column a prefix with packets
    in batches of its own: 5,344 x 251 on bench/analyze.py's capture, 58 ->
    20 ms, the solution equal to 3e-14); lstsq's SVD otherwise (columns
    that always share their batches)."""
    try:
        L = np.linalg.cholesky(X.T @ X)
    except np.linalg.LinAlgError:
        L = None
    if L is not None:
        d = np.diag(L)
        if d.min() > 1e-5 * d.max():           # condition of X'X under 1e10
            return np.linalg.solve(L.T, np.linalg.solve(L, X.T @ y))
    return np.linalg.lstsq(X, y, rcond=None)[0]


def _columns(addr, inside, net, length, fine):
    """The regression's columns at prefix length `fine` under the prefix
    `net`/`length` that `inside` marks (None: every packet).

    Returns (values, column of each packet): the prefixes under `net` with
    at least _MIN_PKTS packets, each its own column, ascending, after one
    column (-2) for the rest under `net` and one (-1) for the packets
    outside; the -2 and -1 columns only when they hold packets.  As
    ``np.unique`` over those labels, but with no sort: under `net` there
    are at most 2 ** _STEP prefixes, so a bincount finds them.
    """
    w = fine - length
    first = net >> (32 - fine)
    sub = (addr >> np.uint32(32 - fine)).astype(np.int64) - first
    if inside is not None:
        sub[~inside] = 0
    n_sub = np.bincount(sub if inside is None else sub[inside], minlength=1 << w)
    named = np.flatnonzero(n_sub >= _MIN_PKTS)
    lead = []
    if ((n_sub > 0) & (n_sub < _MIN_PKTS)).any():
        lead.append(-2)
    if inside is not None and not inside.all():
        lead.append(-1)
    vals = np.concatenate([np.array(lead, np.int64), named + first])
    lut = np.zeros(1 << w, np.int64)            # not named: the -2 column
    lut[named] = len(lead) + np.arange(len(named))
    col = lut[sub]
    if -1 in lead:
        col[~inside] = len(lead) - 1
    return vals, col


def slow_prefix(batch_ns, batch_count, busy_after, pkt_batch, pkt_addr, t0, t1, stops=None,
                peak_ns=None):
    """The source prefix an NF served slowly in [t0, t1], or None.

    Parameters
    ----------
    batch_ns, batch_count : ndarray
        The NF's rx batches (ascending times, packets each).
    busy_after : ndarray of bool
        Queue non-empty right after each batch.
    pkt_batch : ndarray of int64
        Batch index of each received packet.
    pkt_addr : ndarray of uint32
        Its source address (0 unknown).
    t0, t1 : int
        Window (ns) where the NF was blamed.
    stops : ndarray of int64, optional
        Where the NF went silent (QueueTimeline.silences' starts): a gap
        to the next batch that holds one is no batch's service time,
        however busy the queue stayed (a preempted thread, on a shared
        core, made some prefix look slow).
    peak_ns : float, optional
        The NF's service time per packet at its peak rate.  Where the
        prefix the fit finds fails the final check over every busy batch,
        it is checked again over the batches slower than SLOW_FACTOR times
        this per packet: the blamed periods often run on past the bug,
        draining its backlog at full speed, and a prefix's one cost over
        both stretches fits neither.

    Returns
    -------
    str or None
        e.g. ``"10.0.0.0/10"``; None when no prefix stands out (the whole
        NF was slow: an interrupt or contention) or addresses are unknown.
    """
    nb = len(batch_ns)
    if nb < 3:
        return None
    if stops is not None and len(stops):
        b = np.searchsorted(batch_ns, np.asarray(stops, np.int64), side="right") - 1
        busy_after = np.array(busy_after, bool)
        busy_after[b[b >= 0]] = False
    # the busy batches in one pass over all of them, then the packets of
    # those in one pass over all packets (445,781 batches and 1.1 M packets
    # for 5,344 busy batches on s2: numpy's dozen passes took 29 ms a call)
    batch_ns = np.ascontiguousarray(batch_ns, np.int64)
    cand = np.empty(nb - 1, np.int64)
    gap, per = np.empty(nb - 1), np.empty(nb - 1)
    m = _prefix.busy_batches(batch_ns, np.ascontiguousarray(batch_count, np.int64),
                             np.ascontiguousarray(busy_after, np.bool_).view(np.uint8),
                             int(t0), int(t1), cand, gap, per)
    if m == 0:
        return None
    # a stall (the NF stopped polling) shows as one huge gap: not a cost of
    # the packets in that batch
    ok = per[:m] <= OUTLIER * np.median(per[:m])
    if ok.sum() < 16:
        return None
    pb, addr, dur = _packets(nb, cand[:m][ok], gap[:m][ok], pkt_batch, pkt_addr)
    if len(addr) == 0:
        return None
    found = _search(pb, addr, dur)
    if found is None:
        return None
    if _stands_out(found, pb, addr, dur):
        return _widened(found, pb, addr, dur)
    if peak_ns is None:
        return None
    slow = ok & (per[:m] > SLOW_FACTOR * peak_ns)
    if not 16 <= slow.sum() < ok.sum():
        return None
    pb, addr, dur = _packets(nb, cand[:m][slow], gap[:m][slow], pkt_batch, pkt_addr)
    return _widened(found, pb, addr, dur) if _stands_out(found, pb, addr, dur) else None


def slow_prefix_timed(batch_dur, batch_count, sel, pkt_batch, pkt_addr, peak_ns):
    """The source prefix an NF served slowly in the batches `sel`, timed
    each from its rx to its last tx, or None.

    For a bug at light load, where :func:`slow_prefix` has too few busy
    batches: a batch's rx-to-tx time is its service time whether or not
    the queue stayed busy after it, and at light load most are not.  Only
    the slow batches are fitted (slower than SLOW_FACTOR times `peak_ns`
    per packet: the fault's, not the drain after it), and there are few of
    them, a handful to fifty, their packets of many prefixes.  So every
    prefix is tried as one column against the rest (:func:`_best_fit`),
    rather than refined a level at a time: with a handful of batches a
    level's columns are too many to fit, and a wrong turn at one level
    cannot be undone at the next.  The prefix must then stand out with
    each slow batch left out in turn: one that straddles a fault's end
    (contention that stops halfway through it, its packets mostly of one
    prefix) could make any prefix look slow on its own.

    Parameters
    ----------
    batch_dur, batch_count : ndarray of int64
        Each rx batch's rx-to-last-tx time (0: none sent) and packets.
    sel : ndarray of bool
        The batches to look at.
    pkt_batch, pkt_addr : ndarray
        As for :func:`slow_prefix`.
    peak_ns : float
        The NF's service time per packet at its peak rate.
    """
    b = np.flatnonzero(sel & (batch_dur > 0) & (batch_count > 0))
    if len(b) < MIN_TIMED or not peak_ns > 0:
        return None
    per = batch_dur[b] / batch_count[b]
    ok = per <= OUTLIER * np.median(per)               # stalls: as slow_prefix's
    slow = b[ok & (per > SLOW_FACTOR * peak_ns)]
    if len(slow) < MIN_TIMED:
        return None
    packets = _packets(len(batch_dur), slow, batch_dur[slow].astype(float), pkt_batch, pkt_addr)
    found = _best_fit(*packets)
    return found if found is not None and _stands_out_each(found, *packets) else None


def _best_fit(pb, addr, dur):
    """The prefix whose packets, as one column against the rest's, fit the
    batches' durations `dur` best (least squared residual), of all those
    under the packets' cover with _MIN_PKTS packets inside and outside;
    of those that fit alike (they hold the same packets), the narrowest:
    it claims no more flows than the slow batches show.
    None where no prefix costs SLOW_FACTOR times the rest, or where one
    disjoint from the best fits within RIVAL of it: the batches cannot
    tell which (held-out: contention over four batches, a fifth of each
    batch's packets in one /30, and two /32s outside it fit as well)."""
    nb = len(dur)
    if len(addr) < 2 * _MIN_PKTS:
        return None
    n = np.bincount(pb, minlength=nb).astype(float)
    nn, nd, dd = n @ n, n @ dur, dur @ dur
    base_len = covering_prefix(addr)[1]
    if base_len == 32:                           # one address: no rest to compare
        return None
    rss, length, value = [], [], []
    for L in range(base_len + 1, 33):
        # packets of each (prefix, batch): the fit's sums for every prefix
        # at this length in one pass (the rest's are the batch's less these)
        key = (addr >> np.uint32(32 - L)).astype(np.int64) * nb + pb
        pair, c = np.unique(key, return_counts=True)
        v, p = np.unique(pair // nb, return_inverse=True)
        b = pair % nb
        c = c.astype(float)
        fit_rss, fits = _two_column_fits(np.bincount(p, c * c), np.bincount(p, c * n[b]),
                                         np.bincount(p, c * dur[b]), np.bincount(p, c),
                                         len(addr), nn, nd, dd)
        rss.append(fit_rss[fits])
        length.append(np.full(fits.sum(), L))
        value.append(v[fits])
    rss, length, value = np.concatenate(rss), np.concatenate(length), np.concatenate(value)
    if len(rss) == 0:
        return None
    least = rss.min()
    tied = np.flatnonzero(rss <= least + 1e-9 * dd)
    k = tied[np.argmax(length[tied])]
    L, v = int(length[k]), int(value[k])
    m = np.minimum(length, L)
    disjoint = (value >> (length - m)) != (v >> (L - m))
    if (rss[disjoint] <= RIVAL * least + 1e-9 * dd).any():
        return None
    return f"{ipaddress.IPv4Address(v << (32 - L))}/{L}"


def _widened(found, pb, addr, dur):
    """`found`, or the prefix holding it that fits the batches' durations
    `dur` better as one column against the rest (:func:`_best_fit`'s
    rules), where that one stands out too.  The search a level at a time
    goes a level too deep where one half of a bug's prefix holds 80% of
    its extra cost by chance: held-out, 100.48.0.0/12 for a bug on
    100.0.0.0/10."""
    net = ipaddress.ip_network(found)
    cover = covering_prefix(addr)[1]
    # narrowest first: argmax takes the first of equal fits
    nets = [net] + [net.supernet(new_prefix=L) for L in range(net.prefixlen - 1, cover, -1)]
    if len(nets) == 1:
        return found
    X = np.stack([_inside_outside(str(x), pb, addr, len(dur))[:, 0] for x in nets])
    n = np.bincount(pb, minlength=len(dur)).astype(float)
    dd = dur @ dur
    rss, fits = _two_column_fits(np.einsum("kb,kb->k", X, X), X @ n, X @ dur, X.sum(1),
                                 len(addr), n @ n, n @ dur, dd)
    if not fits.any():
        return found
    least = rss[fits].min()
    best = str(nets[int(np.argmax(fits & (rss <= least + 1e-9 * dd)))])
    return best if best == found or _stands_out(best, pb, addr, dur) else found


def _two_column_fits(ii, io, c0, inside, n_pkts, nn, nd, dd):
    """Each candidate prefix's fit of the batches' durations on its packets
    and the rest's, from sums over the batches of its packets ``in``, the
    batch's ``n`` and duration: ``ii`` = sum in*in, ``io`` = sum in*n,
    ``c0`` = sum in*duration, `inside` its packets (of `n_pkts`); `nn`,
    `nd`, `dd` the same of every packet.  Returns (squared residual,
    whether the prefix is a candidate: _MIN_PKTS packets inside and out,
    the two columns apart, and its cost over SLOW_FACTOR times the
    rest's)."""
    a00, a01, a11 = ii, io - ii, nn - 2 * io + ii         # X'X of [inside, outside]
    c1 = nd - c0
    det = a00 * a11 - a01 * a01
    fits = ((inside >= _MIN_PKTS) & (n_pkts - inside >= _MIN_PKTS)
            & (det > 1e-12 * (a00 + a11) ** 2))
    det = np.where(fits, det, 1.0)
    cost_in, cost_out = (a11 * c0 - a01 * c1) / det, (a00 * c1 - a01 * c0) / det
    fits &= cost_in > SLOW_FACTOR * np.maximum(cost_out, 0.0)
    return dd - cost_in * c0 - cost_out * c1, fits


def _packets(nb, b_sel, dur, pkt_batch, pkt_addr):
    """The packets of batches `b_sel` (of `nb`) whose address is known:
    their index among `b_sel` and their address; and `dur`."""
    remap = np.full(nb, -1, np.int64)
    remap[b_sel] = np.arange(len(b_sel))
    pkt_batch = np.asarray(pkt_batch)
    if pkt_batch.dtype not in (np.int32, np.int64):
        pkt_batch = pkt_batch.astype(np.int64)
    pb = np.empty(len(pkt_batch), np.int64)
    addr = np.empty(len(pkt_batch), np.uint32)
    k = _prefix.packets_in(np.ascontiguousarray(pkt_batch),
                           np.ascontiguousarray(pkt_addr, np.uint32), remap, pb, addr)
    if k < 0:
        raise IndexError("pkt_batch: a batch index is out of range of batch_ns")
    return pb[:k], addr[:k], dur


def _search(pb, addr, dur):
    """The prefix whose packets cost well above the rest's in the fit of
    the batches' durations `dur` on their packets (`pb`, `addr`), refined
    level by level; None where none stands out."""
    base_val, base_len = covering_prefix(addr)
    found = None
    length, under = base_len, base_val
    inside = None
    while length < 32:
        # as many columns as the busy batches can pin down (>= 4 each)
        step = max(1, min(_STEP, int(np.log2(max(len(dur) / 4, 2)))))
        fine = min(32, length + step)
        v, col = _columns(addr, inside, under, length, fine)
        beta, n = _costs(dur, pb, col, len(v))
        named = v >= 0
        if named.sum() < 2:
            break
        med = np.median(beta[named])
        extra = np.where(named & (beta > SLOW_FACTOR * max(med, 1e-9)), (beta - med) * n, 0.0)
        if extra.sum() <= 0:
            break
        addrs_of = (v[named].astype(np.uint64) << np.uint64(32 - fine)).astype(np.uint32)
        hh = heavy_prefixes(addrs_of, extra[named], SLOW_SHARE, min_length=length,
                            max_length=fine)
        if not hh:
            break
        plen = int(hh[0][0].split("/")[1])
        if plen <= base_len:                                # no prefix stands out
            break
        found = hh[0][0]
        if plen < fine:                                     # resolved inside this level
            break
        under = int(ipaddress.ip_network(found).network_address)
        inside = (addr >> np.uint32(32 - plen)) == (np.uint32(under) >> np.uint32(32 - plen))
        length = plen
    return found


def _inside_outside(found, pb, addr, n):
    """Packets inside and outside prefix `found` in each of `n` batches."""
    net = ipaddress.ip_network(found)
    m = np.uint32(int(net.netmask))
    ins = (addr & m) == np.uint32(int(net.network_address))
    X = np.zeros((n, 2))
    _prefix.count_matrix(pb, (~ins).astype(np.int64), X)
    return X


def _stands_out(found, pb, addr, dur):
    """Whether the packets inside prefix `found` cost over SLOW_FACTOR
    times the rest's, by three standard errors, in the fit of `dur` on
    both: contention slows every flow alike and must not name one."""
    return _fit_stands_out(_inside_outside(found, pb, addr, len(dur)), dur)


def _stands_out_each(found, pb, addr, dur):
    """:func:`_stands_out` over every batch, and with each left out: all
    at once, from the fit's sums less each batch's part (2 x 2 each)."""
    X = _inside_outside(found, pb, addr, len(dur))
    n = len(dur)
    if n <= 3:
        return False
    A = np.einsum("ij,ik->ijk", X, X)                  # each batch's X'X
    c = X * dur[:, None]
    s = dur * dur
    A = np.concatenate([A.sum(0)[None], A.sum(0) - A])
    c = np.concatenate([c.sum(0)[None], c.sum(0) - c])
    s = np.concatenate([[s.sum()], s.sum() - s])
    dof = np.r_[n - 2, np.full(n, n - 3)]
    det = A[:, 0, 0] * A[:, 1, 1] - A[:, 0, 1] * A[:, 1, 0]
    # lstsq's rank 2, as _fit_stands_out asks: both columns in some batch
    if not (det > 1e-12 * np.einsum("kii->k", A) ** 2).all():
        return False
    inv = np.stack([np.stack([A[:, 1, 1], -A[:, 0, 1]], -1),
                    np.stack([-A[:, 1, 0], A[:, 0, 0]], -1)], 1) / det[:, None, None]
    beta = np.einsum("kij,kj->ki", inv, c)
    rss = np.maximum(s - np.einsum("ki,ki->k", beta, c), 0.0)
    return bool(_beats(beta, (rss / dof)[:, None, None] * inv).all())


def _fit_stands_out(X, dur):
    """_stands_out's test on the batches' packets inside and outside (`X`)."""
    beta, res, rank, _ = np.linalg.lstsq(X, dur, rcond=None)
    if rank < 2 or len(dur) <= 2:
        return False
    sigma2 = float(np.sum((dur - X @ beta) ** 2)) / (len(dur) - 2)
    cov = sigma2 * np.linalg.inv(X.T @ X)
    return bool(_beats(beta[None], cov[None])[0])


def _beats(beta, cov):
    """For each fit k (costs ``beta[k]``: inside, outside; their covariance
    ``cov[k]``), whether the inside's cost is over SLOW_FACTOR times the
    outside's by three standard errors."""
    # the rest may come out near zero (batches of mostly slow packets)
    f = np.where(beta[:, 1] > 0, SLOW_FACTOR, 0.0)
    d = beta[:, 0] - f * beta[:, 1]
    se = np.sqrt(np.maximum(cov[:, 0, 0] + f ** 2 * cov[:, 1, 1] - 2 * f * cov[:, 0, 1], 0.0))
    return d > 3 * se
