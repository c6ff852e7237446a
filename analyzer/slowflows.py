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
"""
import ipaddress

import numpy as np

from .prefixes import covering_prefix, heavy_prefixes

__all__ = ["slow_prefix", "SLOW_FACTOR"]

#: A prefix is slow when its per-packet cost is this many times the median.
SLOW_FACTOR = 2.0
#: Share of the extra cost the named prefix must hold.
SLOW_SHARE = 0.8
#: Busy batches slower per packet than this many times the median are
#: stalls, left out of the regression.
OUTLIER = 40.0
_STEP = 8            # bits refined per regression
_MIN_PKTS = 8        # packets a prefix needs to get its own column


def _costs(batch_dur, batch_of, prefix):
    """Per-packet cost of each prefix value in `prefix` (lstsq over batches)."""
    vals, col = np.unique(prefix, return_inverse=True)
    nb = len(batch_dur)
    # packets per (batch, prefix): one bincount (np.add.at is ~10x slower)
    X = np.bincount(batch_of * len(vals) + col, minlength=nb * len(vals)) \
        .astype(float).reshape(nb, len(vals))
    beta, *_ = np.linalg.lstsq(X, batch_dur, rcond=None)
    return vals, beta, X.sum(axis=0)


def slow_prefix(batch_ns, batch_count, busy_after, pkt_batch, pkt_addr, t0, t1):
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

    Returns
    -------
    str or None
        e.g. ``"10.0.0.0/10"``; None when no prefix stands out (the whole
        NF was slow: an interrupt or contention) or addresses are unknown.
    """
    nb = len(batch_ns)
    if nb < 3:
        return None
    gap = np.diff(batch_ns).astype(float)
    use = np.zeros(nb, bool)
    use[:-1] = busy_after[:-1] & (gap > 0) & (batch_ns[:-1] >= t0) & (batch_ns[:-1] <= t1)
    # a stall (the NF stopped polling) shows as one huge gap: not a cost of
    # the packets in that batch
    per = gap / np.maximum(batch_count[:-1], 1)
    use[:-1] &= per <= OUTLIER * np.median(per[use[:-1]]) if use.any() else False
    b_sel = np.flatnonzero(use)
    if len(b_sel) < 16:
        return None
    remap = np.full(nb, -1, np.int64)
    remap[b_sel] = np.arange(len(b_sel))
    pb = remap[pkt_batch]
    keep = (pb >= 0) & (pkt_addr != 0)
    pb, addr = pb[keep], pkt_addr[keep].astype(np.uint32)
    if len(addr) == 0:
        return None
    dur = gap[b_sel]
    base_val, base_len = covering_prefix(addr)
    found = None
    length = base_len
    inside = np.ones(len(addr), bool)
    while length < 32:
        # as many columns as the busy batches can pin down (>= 4 each)
        step = max(1, min(_STEP, int(np.log2(max(len(b_sel) / 4, 2)))))
        fine = min(32, length + step)
        pre = (addr >> np.uint32(32 - fine)).astype(np.int64)
        pre = np.where(inside, pre, -1)                     # outside: one column
        vals, cnt = np.unique(pre, return_counts=True)
        small = np.isin(pre, vals[cnt < _MIN_PKTS])
        pre = np.where(small & inside, -2, pre)
        v, beta, n = _costs(dur, pb, pre)
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
        pval = int(ipaddress.ip_network(found).network_address)
        inside = (addr >> np.uint32(32 - plen)) == (np.uint32(pval) >> np.uint32(32 - plen))
        length = plen
    if found is None:
        return None
    # check: inside the prefix against everything else, both with standard
    # errors; contention slows every flow alike and must not name one
    net = ipaddress.ip_network(found)
    m = np.uint32(int(net.netmask))
    ins = (addr & m) == np.uint32(int(net.network_address))
    X = np.zeros((len(dur), 2))
    np.add.at(X, (pb, (~ins).astype(np.int64)), 1.0)
    beta, res, rank, _ = np.linalg.lstsq(X, dur, rcond=None)
    if rank < 2 or len(dur) <= 2:
        return None
    sigma2 = float(np.sum((dur - X @ beta) ** 2)) / (len(dur) - 2)
    cov = sigma2 * np.linalg.inv(X.T @ X)
    # the rest may come out near zero (batches of mostly slow packets)
    f = SLOW_FACTOR if beta[1] > 0 else 0.0
    d = beta[0] - f * beta[1]
    se = np.sqrt(max(cov[0, 0] + f ** 2 * cov[1, 1] - 2 * f * cov[0, 1], 0.0))
    return found if d > 3 * se else None
