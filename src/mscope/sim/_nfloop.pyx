# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The one loop of the simulator that cannot be vectorised: an NF polling
its input queue, batch after batch (mscope.sim.engine calls it per NF).

A DPDK NF polls: takes up to `batch` packets from its queue, works on
them, sends them on, polls again.  Each batch depends on when the last one
finished, so the loop is sequential in batches, but it is over batches,
not packets, and typed: a 200 ms, 1.2 Mpps chain takes milliseconds.
"""
import numpy as np

from libc.math cimport ceil
from libc.stdint cimport int64_t, uint8_t


cdef inline double _advance(double t, double work, const double[::1] seg_start,
                            const double[::1] seg_rate, Py_ssize_t *p) noexcept nogil:
    """When `work` ns of service started at `t` ends, given the NF's speed
    over time: piecewise constant, 0 in an interrupt, `share` under
    contention, 1 otherwise.  *p is the segment holding t (moves forward)."""
    cdef Py_ssize_t nseg = seg_start.shape[0]
    cdef double end, r, cap
    while p[0] + 1 < nseg and seg_start[p[0] + 1] <= t:
        p[0] += 1
    while True:
        end = seg_start[p[0] + 1] if p[0] + 1 < nseg else 1e300
        r = seg_rate[p[0]]
        if r > 0:
            cap = (end - t) * r
            if work <= cap:
                return t + work / r
            work -= cap
        t = end
        p[0] += 1


cdef inline double _runnable(double t, const double[::1] seg_start,
                             const double[::1] seg_rate, Py_ssize_t *p) noexcept nogil:
    """The first instant >= t at which the NF runs (skips interrupts)."""
    cdef Py_ssize_t nseg = seg_start.shape[0]
    while p[0] + 1 < nseg and seg_start[p[0] + 1] <= t:
        p[0] += 1
    while seg_rate[p[0]] == 0 and p[0] + 1 < nseg:
        p[0] += 1
        t = seg_start[p[0]]
    return t


def serve(const int64_t[::1] arrival, const double[::1] work, int batch, int64_t capacity,
          double batch_ns, double poll_ns, const double[::1] seg_start,
          const double[::1] seg_rate):
    """Run one NF over its arrivals.

    Parameters
    ----------
    arrival : int64 array, sorted
        When each packet reaches the NF's input queue (ns).
    work : float64 array
        Each packet's service time at full speed (ns).
    batch, capacity : int
        Burst size and queue length; a packet finding `capacity` packets
        queued is dropped.
    batch_ns : float
        Fixed cost of a non-empty poll.
    poll_ns : float
        Interval of empty polls: a packet arriving at an idle NF is taken at
        the next poll instant.
    seg_start, seg_rate : float64 arrays
        The NF's speed over time: from seg_start[i] on it runs at
        seg_rate[i] (0: interrupted); seg_start[0] must be <= 0.

    Returns
    -------
    dropped : uint8 array, one per packet
    b_rx, b_tx : int64 arrays, one per batch: when it was taken, when sent
    b_count : int64 array: packets in the batch (the accepted packets, in
        arrival order, fill the batches one after the other)
    b_occ : int64 array: packets left in the queue right after the batch was
        taken (what mscope records as occupancy)
    """
    cdef Py_ssize_t n = arrival.shape[0]
    dropped_a = np.zeros(n, np.uint8)
    cdef uint8_t[::1] dropped = dropped_a
    # at most one batch per accepted packet
    b_rx_a = np.empty(n, np.int64)
    b_tx_a = np.empty(n, np.int64)
    b_count_a = np.empty(n, np.int64)
    b_occ_a = np.empty(n, np.int64)
    cdef int64_t[::1] b_rx = b_rx_a, b_tx = b_tx_a, b_count = b_count_a, b_occ = b_occ_a
    acc_a = np.empty(n, np.int64)
    cdef int64_t[::1] acc = acc_a
    cdef Py_ssize_t i = 0, head = 0, n_acc = 0, nb = 0, j, k, p = 0
    cdef int64_t occ = 0
    cdef double t = 0.0, a, w, tend
    with nogil:
        while True:
            # Admit everything that arrived by now.  Nothing left the queue
            # since the last poll, so counting in arrival order gives each
            # arrival the occupancy it really met.
            while i < n and arrival[i] <= t:
                if occ < capacity:
                    acc[n_acc] = i
                    n_acc += 1
                    occ += 1
                else:
                    dropped[i] = 1
                i += 1
            if occ == 0:
                if i >= n:
                    break
                a = <double>arrival[i]
                if a > t:
                    t += ceil((a - t) / poll_ns) * poll_ns
                t = _runnable(t, seg_start, seg_rate, &p)
                continue
            k = occ if occ < batch else batch
            occ -= k
            w = batch_ns
            for j in range(head, head + k):
                w += work[acc[j]]
            tend = _advance(t, w, seg_start, seg_rate, &p)
            b_rx[nb] = <int64_t>t
            b_tx[nb] = <int64_t>tend
            b_count[nb] = k
            b_occ[nb] = occ
            nb += 1
            head += k
            t = _runnable(tend, seg_start, seg_rate, &p)
    return dropped_a, b_rx_a[:nb], b_tx_a[:nb], b_count_a[:nb], b_occ_a[:nb]
