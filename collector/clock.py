"""TSC to CLOCK_MONOTONIC nanoseconds, for one host.

The recorder stamps batches with the raw TSC (one ``rdtsc``, ~8 ns; a
clock_gettime would cost several times that on the fast path).  The
collector turns TSC values into CLOCK_MONOTONIC nanoseconds, the capture's
clock, with a rate it calibrates itself:

- At start it reads (TSC, CLOCK_MONOTONIC) pairs ``calibrate_s`` apart (50 ms
  by default) and takes the rate between them.  Each pair is the best of 9
  back-to-back reads, so the TSC read is pinned to within the pair's window
  (~25 ns here), which bounds the initial rate error to about
  2 * window / calibrate_s (1e-6).
- Every ``refine`` call (the daemon makes one per stats interval) it takes
  a new pair and re-estimates the rate over the whole baseline since start,
  so the rate error shrinks as 1/elapsed.  The mapping is re-anchored at the
  new pair's TSC *on the old line*, so converted times never jump or run
  backwards; the offset against CLOCK_MONOTONIC that accumulated is reported
  (``offset_error_ns``), not stepped away.
- The TSC must be invariant (constant_tsc, nonstop_tsc) and synchronised
  across cores, as on every x86 server of the last decade; DPDK assumes
  the same.  A producer's own rate, when it knows one (DPDK's
  rte_get_tsc_hz, in the ring header), is compared with ours and a
  disagreement over 0.1% is reported.
"""
import re
import time

import numpy as np

__all__ = ["TscClock", "boot_id", "realtime_offset_ns"]

#: Where Linux says which boot this is: a random id drawn at each boot.
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def boot_id(path=BOOT_ID_PATH):
    """This boot's id (a UUID), None where it cannot be read.  Two hosts'
    CLOCK_MONOTONIC are one clock only within one boot of one machine:
    the receiver tells hosts of one name apart by it (a machine cloned
    with its name, or rebooted, counts from another zero)."""
    try:
        with open(path) as f:
            text = f.read(128).strip()
    except OSError:
        return None
    return text if re.fullmatch(r"[0-9a-f-]{8,64}", text) else None


def realtime_offset_ns():
    """This host's CLOCK_REALTIME less its CLOCK_MONOTONIC, in ns (the
    wall clock at a record's time is its time plus this).  Hosts' wall
    clocks agree to NTP's milliseconds, so the offsets of two hosts place
    their records' times within that of each other: where to look for the
    packets that align them exactly (mscope.analyzer.host_windows).  Read
    between two monotonic reads, the closest of three tries."""
    best = None
    for _ in range(3):
        a = time.monotonic_ns()
        r = time.time_ns()
        b = time.monotonic_ns()
        if best is None or b - a < best[0]:
            best = (b - a, r - (a + b) // 2)
    return best[1]


class TscClock:
    """Maps TSC values to CLOCK_MONOTONIC nanoseconds.

    Parameters
    ----------
    pair : callable
        Returns (tsc, monotonic_ns, window_ns); defaults to the extension's
        ``tsc_monotonic_pair``.
    calibrate_s : float
        Time between the two start-up samples.
    """

    def __init__(self, pair=None, calibrate_s=0.05):
        if pair is None:
            from mscope.collector import tsc_monotonic_pair as pair
        self._pair = pair
        t0, ns0, w0 = pair()
        time.sleep(calibrate_s)
        t1, ns1, w1 = pair()
        if t1 <= t0 or ns1 <= ns0:
            raise RuntimeError("TSC or CLOCK_MONOTONIC did not advance during calibration")
        self._origin = (t0, ns0)
        self.hz = (t1 - t0) * 1e9 / (ns1 - ns0)
        self._anchor_tsc, self._anchor_ns = t1, float(ns1)
        self.window_ns = max(w0, w1)
        self.offset_error_ns = 0.0

    def to_ns(self, tsc):
        """Convert TSC values (uint64 array) to int64 CLOCK_MONOTONIC ns."""
        delta = tsc.astype(np.int64) - np.int64(self._anchor_tsc)
        return (self._anchor_ns + delta * (1e9 / self.hz)).round().astype(np.int64)

    def now_ns(self):
        """Now, on the records' clock: the TSC read now, converted as
        :meth:`to_ns` converts the records' stamps."""
        return int(self.to_ns(np.array([self._pair()[0]], np.uint64))[0])

    def refine(self):
        """Re-estimate the rate over the baseline since start; return it."""
        t, ns, _ = self._pair()
        t0, ns0 = self._origin
        if t <= self._anchor_tsc or ns <= ns0:
            return self.hz
        on_old_line = self._anchor_ns + (t - self._anchor_tsc) * 1e9 / self.hz
        self.offset_error_ns = on_old_line - ns
        self.hz = (t - t0) * 1e9 / (ns - ns0)
        self._anchor_tsc, self._anchor_ns = t, on_old_line
        return self.hz

    def disagreement(self, producer_hz):
        """Relative difference between a producer's rate and ours (None if unknown)."""
        if not producer_hz:
            return None
        return abs(producer_hz - self.hz) / self.hz
