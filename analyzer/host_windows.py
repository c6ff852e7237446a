"""Where a window of time lies in each host's clock, before the clocks are
aligned.

A window (``mscope diagnose --from/--to``) is cut from each stream as its
frames are decoded, in its host's clock; the clocks are aligned afterwards
(:mod:`mscope.analyzer.clocks`) by the packets crossing between hosts.  So
a window of a capture from several hosts is read twice: first with each
other host's part of it placed by this module's estimate of its clock,
then, once the records so read have aligned the clocks, placed by them.

The estimate: the packets the reference host recorded in the first
second of the window, looked for among the other host's records where the
hosts' wall clocks put the window (each collector writes its host's
CLOCK_REALTIME less CLOCK_MONOTONIC: NTP's milliseconds apart), or where
none did, where its first record says it would be if the two had begun
recording together; and further and further from there.  Any packet seen on both
hosts (each at the first time it was seen there) gives the clocks'
difference to within how long it took to cross; their median, to within a
typical crossing.
"""
import numpy as np

from mscope.capture.format import CAPTURE_F_ADDR, CAPTURE_F_REFUSED, id_counts
from mscope.capture.reader import records_in_window
from mscope.errors import CaptureFormatError

#: How much of the window the reference host's packets are taken from.
PROBE_NS = 1_000_000_000
#: How far from its first guess another host's records are searched for
#: them, a step at a time.
REACH_NS = (1_000_000_000, 60_000_000_000, 3_600_000_000_000)
#: Fewest packets seen on both hosts to place a host's window by.
MIN_SHARED = 20
_END = np.iinfo(np.int64).max
#: Widening of each other host's window on the first read, on top of the
#: spread of the estimate.
MARGIN_NS = 10_000_000


def estimate_shifts(cap, host_of, firsts, offsets, where, anchors=None, simulated=False):
    """Each host's clock less the reference host's (the first by name:
    :func:`mscope.analyzer.clocks.align_hosts`' too), estimated, and how
    far the estimate may be off.

    Parameters
    ----------
    cap : Capture
    host_of : dict
        Host name of each stream to read (stream id -> name).
    firsts : dict
        Each host's first record time, in its own clock (None: none).
    offsets : (int, int or None)
        The window, in ns from the capture's first record (None: to the
        end); from 0 in a `simulated` capture.
    where : str
        The capture, for errors.
    anchors : dict, optional
        Each host's CLOCK_REALTIME less its CLOCK_MONOTONIC (ns), where its
        collector said (the manifest's host entries).

    Returns
    -------
    (dict, int)
        ``{host: ns}`` (the reference's 0), and the margin to widen the
        other hosts' windows by.

    Raises
    ------
    CaptureFormatError
        The reference host has no packets in the window, or another host
        none of them within REACH_NS[-1] of the guess (one line).
    """
    hosts = sorted(firsts)
    ref = hosts[0]
    streams = {h: {sid for sid, x in host_of.items() if x == h} for h in hosts}
    walled = {h for h in hosts if anchors and anchors.get(h) is not None
              and anchors.get(ref) is not None}
    # where each host's clock reads the reference's zero: by the wall
    # clocks, else as if the hosts had begun recording together
    guess = {h: anchors[ref] - anchors[h] if h in walled else
             0 if firsts[h] is None or firsts[ref] is None else firsts[h] - firsts[ref]
             for h in hosts}
    # the capture's first record, in the reference's clock, by the guesses
    base = 0 if simulated else min((f - guess[h] for h, f in firsts.items() if f is not None),
                                   default=0)
    lo = base + offsets[0]
    hi = _END if offsets[1] is None else base + offsets[1]
    probe = (lo, min(hi, lo + PROBE_NS))
    ref_ids, ref_t = _first_seen(cap, streams[ref], probe)
    if not len(ref_ids):
        raise CaptureFormatError(
            f"{where}: no packets of host {ref} in the window's first second, to place "
            f"the other hosts' part of it by (each host's clock counts from its own boot); "
            f"move the window, or diagnose one host at a time (--host NAME)")
    shifts, spread = {ref: 0}, 0
    for h in hosts[1:]:
        for reach in REACH_NS:
            ids, t = _first_seen(cap, streams[h], (probe[0] + guess[h] - reach,
                                                   probe[1] + guess[h] + reach))
            _, i, j = np.intersect1d(ref_ids, ids, assume_unique=True, return_indices=True)
            if len(i) >= MIN_SHARED:
                d = t[j] - ref_t[i]
                shifts[h] = int(np.median(d))
                p10, p90 = np.percentile(d, [10, 90])
                spread = max(spread, int(p90 - p10))
                break
        else:
            placed = "the hosts' wall clocks put" if h in walled else "its first record puts"
            raise CaptureFormatError(
                f"{where}: --from/--to: none of the packets host {ref} recorded in the "
                f"window's first second was recorded on host {h} within "
                f"{REACH_NS[-1] // 60_000_000_000} minutes of where {placed} it: the "
                f"hosts' clocks cannot be placed for a window (each counts from its "
                f"own boot); diagnose the capture whole, or one host at a time (--host NAME)")
    return shifts, MARGIN_NS + spread


def _first_seen(cap, streams, window):
    """The packet ids `streams` recorded in `window` (ns, in their clock),
    each once, and the first time each was seen (sorted by id)."""
    ids, times = [], []
    for recs, got in _records_in(cap, streams, window):
        counts = id_counts(recs)
        # address records' "ids" are addresses, refused ones' words
        packets = (recs["flags"] & (CAPTURE_F_ADDR | CAPTURE_F_REFUSED)) == 0
        keep = np.repeat(packets, counts)
        ids.append(got[keep])
        times.append(np.repeat(recs["time_ns"], counts)[keep])
    if not ids:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    ids, times = np.concatenate(ids), np.concatenate(times)
    order = np.lexsort((times, ids))
    ids, times = ids[order], times[order]
    first = np.r_[True, ids[1:] != ids[:-1]] if len(ids) else np.zeros(0, bool)
    return ids[first], times[first]


def _records_in(cap, streams, window):
    """Each of `streams`' records in `window` and their ids, frame by
    frame where the capture allows (else read whole, and cut)."""
    feed = cap.stream_feed(streams)
    try:
        if feed.unambiguous:
            for sid in sorted(streams):
                d = feed.take(sid, offsets=False, window=window)
                if d is not None:
                    yield d.records, d.ids
            return
    finally:
        feed.close()
    # chunks written twice or overlapping: which copy counts is known only
    # once every frame is read
    parts, _ = cap.read_streams(streams)
    for d in parts.values():
        cut = records_in_window(d.records, d.ids, *window)
        if cut is not None:
            yield cut
