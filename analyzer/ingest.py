"""Stage 1 of the analyzer: read a capture into per-NF packet-id arrays.

The capture reader (mscope.capture) does the byte-level work and the
sequence checks; this module regroups its records by NF and expands them to
one entry per packet id, which is what every later stage indexes.  numpy
is enough: it never imports mscope.collector, and its one compiled part,
the expansion of a stream (``_ingest.pyx``), is optional -- without it (or
with ``MSCOPE_INGEST=numpy``) the numpy version here builds the same
NFRecords, so the analyzer runs on a laptop.

Records of one batch that the recorder split (more ids than a record holds)
share a time stamp; consecutive records of one stream with the same kind
and time are one *batch* here.

An NF is built from its one stream in one pass (its rx and tx records are
in time order: no sort), its stream's records let go as soon as it is
built (load reads stream by stream, largest NF first), and indices are
int32: on bench/analyze.py's 2 s capture (444 MiB decoded) the view is 482
MiB instead of 717, and load() takes ~1.2 s instead of 2.59 and peaks at
574 MiB traced (1.29x the decoded capture) instead of 1,418 (this module
and the reader together).  With the compiled expansion the read stage
takes 0.76 s instead of 1.19 and peaks at 530 MiB traced.
"""
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from mscope.capture import (CAPTURE_F_NOIDS, CAPTURE_F_REFUSED, CAPTURE_OCC_UNKNOWN,
                            CAPTURE_RECORD_DTYPE, CaptureData, id_counts, open_capture)
from mscope.capture.format import TIME_BACK_NS
from mscope.capture.reader import records_in_window, wall_clocks
from mscope import workers
from mscope.errors import CaptureFormatError
from mscope.record import IDLE_NS

from . import host_windows

try:
    from . import _ingest
    _INGEST_MISSING = None
except ImportError as exc:          # optional: the numpy version stands in
    _ingest, _INGEST_MISSING = None, exc

__all__ = ["NFRecords", "CaptureView", "load", "from_capture_data", "INGEST_ENV"]

SOURCE_NAME = "source"

#: ``MSCOPE_INGEST=numpy``: expand streams with numpy even where the
#: compiled version is built (what ``compiled=None`` of :func:`load` reads).
INGEST_ENV = "MSCOPE_INGEST"


def _kernel(compiled):
    """The compiled expansion to use, or None for numpy: `compiled` None
    (the built one unless MSCOPE_INGEST=numpy), False (numpy) or True (the
    compiled one, ImportError when it is not built)."""
    if compiled is None:
        return None if os.environ.get(INGEST_ENV, "").lower() == "numpy" else _ingest
    if not compiled:
        return None
    if _ingest is None:
        raise ImportError(
            "mscope.analyzer._ingest (analyzer/_ingest.pyx) is not built: reinstall mscope "
            "with `pip install -e .` (needs Cython and a C compiler), or build it in place "
            "with `cythonize -i -3 analyzer/_ingest.pyx`") from _INGEST_MISSING
    return _ingest


#: One refused record as NFRecords keeps it.
REFUSED_DTYPE = np.dtype([("time_ns", "<i8"), ("window_ns", "<i8"), ("packets", "<i8"),
                          ("port", "<i4"), ("occupancy", "<i8")])


@dataclass
class NFRecords:
    """One NF's records, expanded to one entry per packet id, in time order.

    Attributes
    ----------
    name : str
    nf_id : int
    rx_ids, rx_ns : ndarray of uint64, int64
        Packets this NF took from its queue, and when (batch start).
    rx_batch : ndarray of int32
        Index of each rx packet's batch into ``batch_ns``/``batch_occupancy``.
    batch_ns : ndarray of int64
        Time of each rx batch.
    batch_occupancy : ndarray of int64
        Packets left in the queue right after each rx batch, -1 unknown.
    tx_ids, tx_ns, tx_port : ndarray of uint64, int64, int32
        Packets this NF sent, when, and on which out-link.
    tx_batch : ndarray of int32
        Index of each tx packet's tx batch (same stream, same time).
    rx_addr : ndarray of uint64
        ``src_ipv4 << 32 | dst_ipv4`` of each rx packet where the NF wrote
        address records (the chain's ingress), else 0.
    rx_port : ndarray of int32
        The port (or ring) each rx packet came from.
    idle_ns : ndarray of int64
        Times of the NF's idle-poll records (rx records of 0 packets,
        docs/record-format.md): it polled and its queue was empty.  Not
        batches: no ``batch_ns`` entry.  Empty where the recorder writes
        none (an older one) or the NF was never idle for MSCOPE_IDLE_NS.
    silences : ndarray of int64, shape (k, 2)
        ``[from, to]``: the NF was free at ``from`` (a tx or an idle poll,
        no batch taken after it) and wrote nothing until ``to``, more than
        SILENCE_NS later (:func:`silences`).  Where it writes idle polls,
        it had stopped polling by ``from + SILENCE_NS``.
    idle_interval_ns : int
        The interval of its idle-poll records its streams' manifest
        entries declare (``idle_ns``, from the ring header: 0 where a
        stream declares none, or from before them); silences are
        measured against 1.1 times it (:func:`silence_ns_of`).
    streams : int
        How many streams (lcores, each with its own queue) recorded it.
    batch_stream : ndarray of int32, optional
        The stream of each rx batch, where several recorded the NF (None
        for one).
    idle_stream, idle_port : ndarray of int32, optional
        The stream and port of each idle poll (``idle_ns`` order), where
        several streams recorded the NF (None for one): which queue the
        poll found empty.
    refused : ndarray of REFUSED_DTYPE
        Its refused records (docs/record-format.md), in time order: at
        ``time_ns`` its ``port`` had refused ``packets`` at its input (the
        NIC's imissed) in the ``window_ns`` before; ``occupancy`` of the
        queue polled then, -1 unknown.  Those packets are in no other
        record.  Empty where nothing read the port's statistics (a
        linked-in recorder that does not call mscope_dpdk_read_refused, a
        PMD without them) or none were refused.
    spans : ndarray of int64, shape (k, 3)
        ``[stream, first, last]``: the time of the first and of the last
        record of each of its streams (a stream without records left out),
        the last as late as the stream's manifest ``recorded_until_ns``
        (until then its records are whole: an NF silent to then stopped).
        Outside them the records cannot tell what became of a packet sent
        to the NF: it may have been taken before they begin, or still be
        queued when they end (``trajectories.fate_unknown``).
    lost : ndarray of int64, shape (k, 2)
        ``[from, to]`` of each window where records of its streams were
        lost (``CaptureView.incomplete``): the last record before and the
        first after, int64 min / max where the capture has none.
    stopped_at_end : bool
        Its last silence runs to the stream's ``recorded_until_ns``: it was
        still stopped when the recording ended.
    hosts : tuple of str
        The hosts its streams were recorded on (the manifest's host names,
        else their ids), sorted.  Each host's times are its own
        CLOCK_MONOTONIC: NFs on different hosts cannot be compared until
        :func:`mscope.analyzer.clocks.align_hosts` aligns them.

    Indices and ports are int32 (a packet-hop costs 20 bytes here: id,
    time, batch); a port array of an NF that uses one port is a read-only
    zero-stride view (``np.broadcast_to``), no memory per packet.
    """
    name: str
    nf_id: int
    rx_ids: np.ndarray
    rx_ns: np.ndarray
    rx_batch: np.ndarray
    batch_ns: np.ndarray
    batch_occupancy: np.ndarray
    tx_ids: np.ndarray
    tx_ns: np.ndarray
    tx_port: np.ndarray
    tx_batch: np.ndarray
    rx_addr: np.ndarray = None
    rx_port: np.ndarray = None
    idle_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    silences: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    idle_interval_ns: int = 0
    streams: int = 1
    batch_stream: np.ndarray = None
    idle_stream: np.ndarray = None
    idle_port: np.ndarray = None
    refused: np.ndarray = field(default_factory=lambda: np.zeros(0, REFUSED_DTYPE))
    spans: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    lost: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    hosts: tuple = ()
    stopped_at_end: bool = False

    @property
    def has_addr(self) -> bool:
        return self.rx_addr is not None and bool(self.rx_addr.any())


@dataclass
class CaptureView:
    """What the analyzer knows of a capture: NFs, gaps, declared topology.

    Attributes
    ----------
    nfs : list of NFRecords
        Ordered by nf_id, then name.
    incomplete : list of dict
        ``CaptureData.incomplete_windows()``: where records were lost.
    topology : list of (str, str) or None
        The manifest's optional "topology" links.
    path : str or None
    clock : str or None
        The manifest's ``time.clock``: what the times count from
        ("CLOCK_MONOTONIC of host 0", "simulated, from the run's start").
    window_ns : (int, int) or None
        ``[from, to)``: the records kept, where :func:`load` was given a
        window (None: all of them); ``incomplete`` then lists the losses
        that touch it.
    first_ns : int or None
        With a window: the time of the whole capture's first record, which
        the window was counted from (0 for a simulated capture).
    window_shifts : dict or None
        With a window of a capture from several hosts: each host's clock
        less the reference host's, as the window was placed in it (that
        host's records are those of ``window_ns`` plus its shift), and
        whether those were estimated (``window_estimated``: then each
        other host's window was widened, for the clocks to be aligned by
        and the window read again).
    unindexed_frames : int
        With a window: the frames with records that no frame index placed
        (``mscope capture index`` writes it), each read for its first
        record.
    wall_clocks : dict
        Each host's CLOCK_REALTIME less its CLOCK_MONOTONIC (ns), by name,
        where its collector wrote one: a time plus it is the host's wall
        clock then.
    clock_shifts : list of mscope.analyzer.clocks.HostShift
        The hosts whose times :func:`mscope.analyzer.clocks.align_hosts`
        shifted onto another host's clock (none until it is called).
    clock_groups : list of set of str, or None
        The hosts whose times can be compared, once aligned; None: not
        aligned (every host's times its own).
    """
    nfs: list
    incomplete: list = field(default_factory=list)
    topology: Optional[list] = None
    path: Optional[str] = None
    clock: Optional[str] = None
    window_ns: Optional[tuple] = None
    first_ns: Optional[int] = None
    window_shifts: Optional[dict] = None
    window_estimated: bool = False
    unindexed_frames: int = 0
    wall_clocks: dict = field(default_factory=dict)
    clock_shifts: list = field(default_factory=list)
    clock_groups: Optional[list] = None

    def nf(self, name: str) -> NFRecords:
        """The NF called `name` (KeyError if absent)."""
        for n in self.nfs:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def names(self) -> list:
        return [n.name for n in self.nfs]

    def release_packets(self, names=None):
        """Free the per-packet arrays the trajectories have consumed
        (`names`: only those of :data:`_PACKET_ARRAYS`, e.g. the ids once
        matched, default all).

        ``rx_ids``, ``rx_ns``, ``rx_port``, ``rx_addr``, ``tx_ids``,
        ``tx_ns``, ``tx_port`` and ``tx_batch`` of every NF become
        :class:`Released` stand-ins that keep only their length (``len()``
        still counts packets; reading a value raises); the batches
        (``batch_ns``, ``batch_occupancy``, ``rx_batch``), which the queue
        and pattern stages read, stay.  ``mscope diagnose`` calls it after
        building trajectories: these arrays are ~0.8x the decoded capture.
        """
        for n in self.nfs:
            for name in _PACKET_ARRAYS if names is None else names:
                if name not in _PACKET_ARRAYS:
                    raise ValueError(f"release_packets: {name} is not a per-packet array")
                a = getattr(n, name)
                if a is not None and not isinstance(a, Released):
                    setattr(n, name, Released(len(a), f"{n.name}.{name}"))


#: NFRecords arrays release_packets() frees.
_PACKET_ARRAYS = ("rx_ids", "rx_ns", "rx_port", "rx_addr", "tx_ids", "tx_ns", "tx_port",
                  "tx_batch")


class Released:
    """A per-packet array freed by :meth:`CaptureView.release_packets`:
    its length, nothing else."""
    __slots__ = ("n", "what")

    def __init__(self, n, what):
        self.n, self.what = n, what

    def __len__(self):
        return self.n

    def __repr__(self):
        return f"<Released {self.what}: {self.n} entries>"

    def _gone(self, *args, **kwargs):
        raise RuntimeError(f"{self.what} was released after the trajectories were built "
                           f"(CaptureView.release_packets)")

    __getitem__ = __array__ = __iter__ = _gone


def _batches(rec_time, rec_stream):
    """Batch index of each record: a new batch where stream or time changes."""
    if len(rec_time) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    new = np.ones(len(rec_time), bool)
    new[1:] = (rec_time[1:] != rec_time[:-1]) | (rec_stream[1:] != rec_stream[:-1])
    return np.cumsum(new) - 1, np.flatnonzero(new)


def _side(records, stream, ids, id_rec, rec_sel):
    """Per-id arrays of the records selected by `rec_sel`, in time order."""
    idx = np.flatnonzero(rec_sel)
    # stable: within a stream, seq order; across streams of one NF, by time
    idx = idx[np.argsort(records["time_ns"][idx], kind="stable")]
    b_of_rec, first = _batches(records["time_ns"][idx], stream[idx])
    counts = records["count"][idx].astype(np.int64)
    starts = id_rec[idx]
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.repeat(starts, counts) + within
    return (idx, counts, b_of_rec, first, ids[pos].astype(np.uint64, copy=False))


def _rx_addresses(records, stream, ids, id_rec, ridx, rcnt, a):
    """Address words aligned with the rx ids of records `ridx`; `a` the
    indices of the address records.

    An address record belongs to the rx record of its stream with seq one
    below and the same count; one without such a partner (its rx record
    was dropped, or the capture was cut between them) is ignored.
    """
    out = np.zeros(int(rcnt.sum()), np.uint64)
    if len(a) == 0 or len(ridx) == 0:
        return out
    pa, pr = [], []
    for st in np.unique(stream[a]).tolist():
        aa = a[stream[a] == st]
        rr = np.flatnonzero(stream[ridx] == st)          # positions in ridx
        if len(rr) == 0:
            continue
        seq = records["seq"][ridx[rr]]
        o = np.argsort(seq, kind="stable")
        want = records["seq"][aa] - np.uint64(1)
        j = np.minimum(np.searchsorted(seq[o], want), len(o) - 1)
        pa.append(aa)
        pr.append(rr[o[j]])
    if not pa:
        return out
    a, r = np.concatenate(pa), np.concatenate(pr)
    ok = ((records["seq"][ridx[r]] + np.uint64(1) == records["seq"][a])
          & (records["count"][ridx[r]] == records["count"][a]))
    a, r = a[ok], r[ok]
    if len(a) == 0:
        return out
    cnt = records["count"][a].astype(np.int64)
    within = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    dst = np.repeat((np.cumsum(rcnt) - rcnt)[r], cnt) + within
    out[dst] = ids[np.repeat(id_rec[a], cnt) + within]
    return out


def silence_ns_of(interval_ns):
    """The silence an NF writing idle polls every `interval_ns` (0: the
    format's MSCOPE_IDLE_NS) cannot have while it polls: 10% over it (the
    recorder converts the interval to TSC cycles with a calibrated rate,
    and a poll takes time too)."""
    interval_ns = interval_ns or IDLE_NS
    return interval_ns + interval_ns // 10


#: A polling NF writes a record at least every MSCOPE_IDLE_NS (an idle-poll
#: record where nothing else: docs/record-format.md); a silence longer
#: than this after it was last free means it stopped.
SILENCE_NS = silence_ns_of(IDLE_NS)


def _idle_interval(where, info, nf_of_stream, k):
    """The idle-poll interval the streams of NF `k` declare (manifest
    ``idle_ns``), 0 unless every one of them declares one."""
    vals = []
    for sid in (sid for sid, j in nf_of_stream.items() if j == k):
        v = info.get(sid, {}).get("idle_ns", 0)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**32:
            raise CaptureFormatError(f"{where}: stream {sid} idle_ns is not a u32 ({v!r})")
        vals.append(v)
    return min(vals) if vals else 0


def silences(recs, silence_ns=SILENCE_NS):
    """An NF's silences in its records `recs` (time order): ``[from, to]``
    rows where it was free at ``from`` -- its last record a tx or an idle
    poll, no batch taken since (a batch in service writes nothing until
    its tx, however long it takes) -- and its next record, at ``to``, came
    more than `silence_ns` later.  The compiled expansion finds the same
    in its passes (``_ingest._heard``)."""
    t = np.asarray(recs["time_ns"], np.int64)
    if len(t) < 2:
        return np.zeros((0, 2), np.int64)
    f = recs["flags"] & 7
    kind = np.take(_KIND, f)
    tx = (kind == _TX) | ((kind == _NOIDS) & ((f & 1) == 1))
    idle = (f == 0) & (recs["count"] == 0)
    took = ((kind == _RX) | ((kind == _NOIDS) & ((f & 1) == 0))) & ~idle
    # the state after each record: free since the last tx/idle poll
    # unless a batch was taken after it (address records change nothing)
    event = tx | idle | took
    i = np.flatnonzero(event)
    last = np.full(len(t), -1)
    last[i] = i
    last = np.maximum.accumulate(last)
    free = np.zeros(len(t), bool)
    ok = last >= 0
    free[ok] = (tx | idle)[last[ok]]
    free_t = np.where(ok, t[np.maximum(last, 0)], 0)
    end = np.flatnonzero(free[:-1] & (t[1:] - free_t[:-1] > silence_ns)) + 1
    out = np.zeros((len(end), 2), np.int64)
    out[:, 0], out[:, 1] = free_t[end - 1], t[end]
    return out


#: Kind of a record by ``flags & 7`` (bit 0 tx, 1 address, 2 batch-only):
#: rx, tx (an address bit with tx is tx), address of an rx batch, no ids.
_RX, _TX, _ADDR, _NOIDS = 0, 1, 2, 3
_KIND = np.array([_RX, _TX, _ADDR, _TX, _NOIDS, _NOIDS, _NOIDS, _NOIDS], np.uint8)


def _ports(port, counts, n):
    """Per-id int32 ports from per-record `port`: a zero-stride view when
    the records use one port (most NFs: no memory per packet)."""
    if len(port) == 0:
        return np.zeros(0, np.int32)
    if (port == port[0]).all():
        return np.broadcast_to(np.int32(port[0]), (n,))
    return np.repeat(port.astype(np.int32), counts)


def _one_side(t, port, sel, cnt, ids, id_sel):
    """One side (rx or tx) of one stream: its record indices, their id
    counts (intp), the first record of each batch (None: a batch per
    record), the batches' times, and per-id ids, times, batch indices and
    ports.

    `id_sel` picks the side's ids: a per-id mask, or True (the stream has
    no other ids, or the side has no records: a view of `ids`, no copy).
    `port` is per record, or one port for all of them.  Per id this is one
    np.repeat, one gather and one compress; every per-record array is cut
    to the side's records first (np.repeat is ~2.5 ns per id out)."""
    r = np.flatnonzero(sel)
    c = cnt.take(r)
    tr = t.take(r)
    new = np.empty(len(r), bool)
    new[:1] = True
    np.not_equal(tr[1:], tr[:-1], out=new[1:])
    if new.all():                      # a batch per record (the usual case)
        b = np.arange(len(r), dtype=np.int32)
        first = None
    else:
        b = np.cumsum(new, dtype=np.int32)
        b -= 1
        first = np.flatnonzero(new)
    if len(r) == 0:
        side_ids = np.empty(0, ids.dtype)
    else:
        side_ids = ids if id_sel is True else np.compress(id_sel, ids)
    side_port = (port if len(port) == 1 and len(r) else port[r])
    id_batch = np.repeat(b, c)
    # a batch's records share its time: the ids' times are a gather by
    # batch (~1.9 ns per id) rather than a second np.repeat (~2.9)
    batch_t = tr if first is None else tr.take(first)
    return (r, c, first, batch_t, side_ids, batch_t.take(id_batch), id_batch,
            _ports(side_port, c, len(side_ids)))


def _one_stream(name, nf_id, recs, ids, id_rec=None, compiled=None, silence_ns=SILENCE_NS):
    """NFRecords of an NF recorded by one stream (or none): its records
    `recs` in seq order, their ids `ids` (``id_rec[i]`` the first of
    record i's; None: worked out here if needed).  The common case, in one
    pass over the stream: its rx and tx records are already in time order.
    None when times go back (an lcore's clock; :class:`_General` sorts).

    The compiled expansion (see :func:`_kernel` for `compiled`) when it
    takes the stream, else :func:`_one_stream_numpy`: the same NFRecords,
    array for array, down to dtypes, zero-stride ports and `ids` handed
    over as they are.  It writes each output once in two passes over the
    records: ~0.22 s for the 23.6 M ids of bench/analyze.py's s2 capture
    against ~0.8 s, half of it the kernel zeroing the outputs' new pages.
    It declines (None) what the numpy version decides: empty streams,
    times that go back, ids other than the records claim."""
    kernel = _kernel(compiled)
    if (kernel is not None and len(recs) and recs.dtype == CAPTURE_RECORD_DTYPE
            and ids.dtype == np.uint64 and recs.flags.c_contiguous
            and ids.flags.c_contiguous):
        parts = kernel.expand_stream(recs, ids, silence_ns)
        if parts is not None:
            return _from_kernel(name, nf_id, recs, ids, id_rec, parts)
    return _one_stream_numpy(name, nf_id, recs, ids, id_rec, silence_ns)


def _port_ids(port, n):
    """Per-id ports of the kernel's `port`: an int32 array as it is, one
    port as a zero-stride view of `n` (as :func:`_ports`), None (no
    records) as an empty array."""
    if port is None:
        return np.zeros(0, np.int32)
    if isinstance(port, int):
        return np.broadcast_to(np.int32(port), (n,))
    return port


def _from_kernel(name, nf_id, recs, ids, id_rec, parts):
    """NFRecords of ``_ingest.expand_stream(recs, ids)``'s `parts`."""
    (rx_ids, rx_ns, rx_batch, rx_port), (tx_ids, tx_ns, tx_batch, tx_port), \
        batch_ns, occ, rx_addr, n_addr, idle_ns, silent = parts
    rx_ids = ids if rx_ids is None else rx_ids
    tx_ids = ids if tx_ids is None else tx_ids
    if n_addr and rx_addr is None:
        # address records not each right after its rx record: paired by
        # seq, as the numpy version does (records lost between them)
        f = recs["flags"] & 7
        rr = np.flatnonzero((f == 0) & (recs["count"] > 0))
        if id_rec is None:
            id_rec = _id_offsets(recs)
        rx_addr = _rx_addresses(recs, np.zeros(len(recs), np.uint32), ids, id_rec, rr,
                                recs["count"][rr].astype(np.int64), np.flatnonzero(f == 2))
    return NFRecords(name=name, nf_id=nf_id, rx_ids=rx_ids, rx_ns=rx_ns, rx_batch=rx_batch,
                     batch_ns=batch_ns, batch_occupancy=occ, tx_ids=tx_ids, tx_ns=tx_ns,
                     tx_port=_port_ids(tx_port, len(tx_ids)), tx_batch=tx_batch,
                     rx_addr=rx_addr, rx_port=_port_ids(rx_port, len(rx_ids)),
                     idle_ns=idle_ns, silences=silent)


def _one_stream_numpy(name, nf_id, recs, ids, id_rec=None, silence_ns=SILENCE_NS):
    """:func:`_one_stream` with numpy alone (the reference of the compiled
    expansion).

    A stream of one kind of record (the source: tx only) hands its ids
    over as they are; one of rx and tx records only picks its ids with a
    one-byte mask per id, repeated from the records."""
    t = np.ascontiguousarray(recs["time_ns"])
    if len(t) > 1 and not (t[1:] >= t[:-1]).all():
        return None
    f = recs["flags"] & 7
    cnt = recs["count"].astype(np.intp)
    is_rx = f == 0                      # _KIND: 0 rx, 1 and 3 tx, 2 address, 4-7 no ids
    is_idle = is_rx & (cnt == 0)        # idle polls: no batch, no ids
    is_rx &= ~is_idle
    is_tx = (f & 5) == 1
    n_rx, n_tx = int(np.count_nonzero(is_rx)), int(np.count_nonzero(is_tx))
    port = recs["port"]
    if len(port) and (port == port[0]).all():
        port = port[:1]                 # one port: _one_side takes no per-record copy
    kid = None
    if n_rx + n_tx + int(np.count_nonzero(is_idle)) == len(f):  # rx, tx, idle only
        if n_tx == 0 or n_rx == 0:
            rx_sel = tx_sel = True      # all the ids are one side's
        else:
            tx_sel = np.repeat(is_tx, cnt)          # tx-ness of each id
            rx_sel = np.logical_not(tx_sel)
    else:
        kind = np.take(_KIND, f)
        kid = np.repeat(kind, np.where(kind == _NOIDS, 0, cnt))    # kind of each id
        rx_sel, tx_sel = kid == _RX, kid == _TX
    rr, rc, rfirst, batch_ns, rx_ids, rx_ns, rx_batch, rx_port = _one_side(
        t, port, is_rx, cnt, ids, rx_sel)
    _, _, _, _, tx_ids, tx_ns, tx_batch, tx_port = _one_side(
        t, port, is_tx, cnt, ids, tx_sel)
    occ = recs["occupancy"][rr if rfirst is None else rr[rfirst]].astype(np.int64)
    occ[occ == CAPTURE_OCC_UNKNOWN] = -1
    rx_addr = None
    a = np.flatnonzero(f == 2) if kid is not None else ()
    if len(a):
        seq = recs["seq"]
        if (len(a) == len(rr) and (a - 1 == rr).all() and (seq[a] == seq[rr] + 1).all()
                and (cnt[a] == rc).all()):
            rx_addr = np.compress(kid == _ADDR, ids)   # each rx record's right after it
        else:
            if id_rec is None:
                id_rec = _id_offsets(recs)
            rx_addr = _rx_addresses(recs, np.zeros(len(recs), np.uint32), ids, id_rec,
                                    rr, rc.astype(np.int64), a)
    return NFRecords(name=name, nf_id=nf_id, rx_ids=rx_ids, rx_ns=rx_ns, rx_batch=rx_batch,
                     batch_ns=batch_ns, batch_occupancy=occ, tx_ids=tx_ids, tx_ns=tx_ns,
                     tx_port=tx_port, tx_batch=tx_batch, rx_addr=rx_addr, rx_port=rx_port,
                     idle_ns=t[is_idle].astype(np.int64),
                     silences=silences(recs, silence_ns))


#: No port receives more than this many packets a ns (800GbE: 1.2 at 64
#: bytes), and a reading's count over its window above it (with room for
#: a few packets in a window of nothing) is a corrupt record.
MAX_REFUSED_PER_NS, REFUSED_SLACK = 2, 1 << 16


def _refused(recs, words, where="capture"):
    """REFUSED_DTYPE entries of refused records `recs`, whose 2 words each
    are `words` (packets, window ns: more than int64 holds is clipped, a
    reading no recorder makes).  A window reaching back before the clock's
    zero, or more packets in it than a port could receive, is a one-line
    CaptureFormatError: the summary would print what it said."""
    out = np.zeros(len(recs), REFUSED_DTYPE)
    big = np.uint64(np.iinfo(np.int64).max)
    out["time_ns"] = recs["time_ns"]
    out["packets"] = np.minimum(words[0::2], big)
    out["window_ns"] = np.minimum(words[1::2], big)
    for bad, why in ((out["window_ns"] > out["time_ns"], "reaches back before the clock's zero"),
                     (out["packets"] > MAX_REFUSED_PER_NS * out["window_ns"].astype(float)
                      + REFUSED_SLACK, f"is more than a port receives ({MAX_REFUSED_PER_NS} a ns)")):
        if bad.any():
            r, e = recs[np.argmax(bad)], out[np.argmax(bad)]
            raise CaptureFormatError(
                f"{where}: record seq {int(r['seq'])} is a refused record of "
                f"{int(e['packets']):,} packets in the {int(e['window_ns']):,} ns before "
                f"{int(e['time_ns']):,} ns, which {why}: a corrupt record")
    out["port"] = recs["port"]
    occ = recs["occupancy"].astype(np.int64)
    occ[occ == CAPTURE_OCC_UNKNOWN] = -1
    out["occupancy"] = occ
    return out[np.argsort(out["time_ns"], kind="stable")]


def _check_refused(recs, where):
    """Refused records `recs` are each flags 0x08 alone and 2 words: the
    reader refuses chunks with others, but a CaptureData may be made by
    hand."""
    bad = np.flatnonzero((recs["flags"] != CAPTURE_F_REFUSED) | (recs["count"] != 2))
    if len(bad):
        r = recs[bad[0]]
        raise CaptureFormatError(
            f"{where}: record seq {int(r['seq'])} is a refused record with flags "
            f"{int(r['flags']):#x} and {int(r['count'])} words (2 and no other flag)")


def _words(first):
    """Indices of the 2 words of each refused record whose first is at `first`."""
    return np.stack([first, first + 1], axis=1).ravel()


def _take_refused(d, where, name=None):
    """CaptureData `d` without its refused records and their words, and
    those records (REFUSED_DTYPE); `d` itself when it has none.  Refused
    records are neither batches nor idle polls: the expansion must not see
    them (flags & 7 of one is an rx record's)."""
    if d.refused_records == 0:          # the reader counted none
        return d, None
    recs = d.records
    at = np.flatnonzero(recs["flags"] & CAPTURE_F_REFUSED)
    if not len(at):
        return d, None
    _check_refused(recs[at], where)
    # their times as the stream's (the NF's checks see the rest only):
    # each against the records beside it, and the stream's ends
    near = np.unique(np.concatenate([[0, len(recs) - 1], at - 1, at, at + 1]))
    _check_times(where, name or f"stream {int(d.stream[at[0]])}",
                 recs[near[(near >= 0) & (near < len(recs))]])
    off = d.id_offsets if d.id_offsets is not None else _id_offsets(recs)
    word = _words(off[at])
    keep = np.ones(len(recs), bool)
    keep[at] = False
    keep_ids = np.ones(len(d.ids), bool)
    keep_ids[word] = False
    rest = recs[keep]
    return (CaptureData(rest, np.asarray(d.stream)[keep],
                        None if d.id_offsets is None else _id_offsets(rest),
                        d.ids[keep_ids], d.losses, d.stream_info),
            _refused(recs[at], d.ids[word], where))


def _id_offsets(recs):
    """``CaptureData.id_offsets`` of `recs`: where each record's ids start."""
    off = np.zeros(len(recs) + 1, np.int64)
    np.cumsum(id_counts(recs), out=off[1:])
    return off


class _General:
    """NFs recorded by several streams (lcores), or whose times go back:
    records selected over the whole capture and sorted by time."""

    def __init__(self, data, nf_of_stream, info):
        self.data, self.info = data, info
        records = data.records
        lut = np.full(max(info) + 1 if info else 1, -1, np.int64)
        for sid, k in nf_of_stream.items():
            lut[sid] = k
        self.rec_nf = lut[data.stream] if len(data.stream) else np.zeros(0, np.int64)
        kind = _KIND[records["flags"] & 7]
        self.is_rx, self.is_tx, self.is_addr = kind == _RX, kind == _TX, kind == _ADDR
        self.is_refused = (records["flags"] & CAPTURE_F_REFUSED) != 0
        self.is_rx &= ~self.is_refused
        self.is_idle = self.is_rx & (records["count"] == 0)
        self.is_rx &= ~self.is_idle

    def nf(self, k, name, nf_id, silence_ns=SILENCE_NS):
        d = self.data
        records, stream, ids, id_rec = d.records, d.stream, d.ids, d.id_offsets[:-1]
        mine = self.rec_nf == k
        ridx, rcnt, rb, rfirst, rx_ids = _side(records, stream, ids, id_rec,
                                               mine & self.is_rx)
        addr = np.flatnonzero(mine & self.is_addr)
        rx_addr = (_rx_addresses(records, stream, ids, id_rec, ridx, rcnt, addr)
                   if len(addr) else None)
        tidx, tcnt, tb, _, tx_ids = _side(records, stream, ids, id_rec, mine & self.is_tx)
        occ = records["occupancy"][ridx[rfirst]].astype(np.int64)
        occ[occ == CAPTURE_OCC_UNKNOWN] = -1
        idle = np.flatnonzero(mine & self.is_idle)
        idle = idle[np.argsort(records["time_ns"][idle], kind="stable")]
        return NFRecords(
            name=name, nf_id=nf_id,
            rx_ids=rx_ids, rx_ns=np.repeat(records["time_ns"][ridx], rcnt),
            rx_batch=np.repeat(rb.astype(np.int32), rcnt),
            batch_ns=records["time_ns"][ridx[rfirst]].astype(np.int64),
            batch_occupancy=occ,
            tx_ids=tx_ids, tx_ns=np.repeat(records["time_ns"][tidx], tcnt),
            tx_port=np.repeat(records["port"][tidx].astype(np.int32), tcnt),
            tx_batch=np.repeat(tb.astype(np.int32), tcnt), rx_addr=rx_addr,
            rx_port=np.repeat(records["port"][ridx].astype(np.int32), rcnt),
            idle_ns=records["time_ns"][idle].astype(np.int64),
            idle_stream=stream[idle].astype(np.int32),
            idle_port=records["port"][idle].astype(np.int32),
            silences=self._silences(mine, silence_ns),
            batch_stream=stream[ridx[rfirst]].astype(np.int32),
            refused=self._refused(mine), spans=self._spans(mine))

    def _spans(self, mine):
        """``NFRecords.spans`` of the NF's records `mine` (refused ones
        left out, as :func:`_nf` does)."""
        at = np.flatnonzero(mine & ~self.is_refused)
        sid = np.asarray(self.data.stream)[at]
        t = self.data.records["time_ns"][at]
        return _spans(self.info, [(x, t[sid == x].min(), t[sid == x].max())
                                  for x in np.unique(sid).tolist()])

    def _refused(self, mine):
        d = self.data
        at = np.flatnonzero(mine & self.is_refused)
        _check_refused(d.records[at], "capture")
        return _refused(d.records[at], d.ids[_words(d.id_offsets[at])], "capture")

    def _silences(self, mine, silence_ns):
        # over all the NF's streams: silent only while every lcore is
        recs = self.data.records[np.flatnonzero(mine & ~self.is_refused)]
        return silences(recs[np.argsort(recs["time_ns"], kind="stable")], silence_ns)


def from_capture_data(data, manifest=None, path=None, compiled=None) -> CaptureView:
    """Build a CaptureView from a ``CaptureData`` (see :func:`load`)."""
    stream, off = data.stream, data.id_offsets
    parts = None
    if len(stream) < 2 or bool((stream[1:] >= stream[:-1]).all()):
        # stream by stream (Capture.read): each stream is a slice
        sids = np.array(sorted(data.stream_info), np.uint32)
        parts = {}
        for sid, lo, hi in zip(sids.tolist(), np.searchsorted(stream, sids, "left").tolist(),
                               np.searchsorted(stream, sids, "right").tolist()):
            if hi > lo:
                parts[sid] = CaptureData(data.records[lo:hi], stream[lo:hi],
                                         off[lo:hi + 1] - off[lo], data.ids[off[lo]:off[hi]])
    return _view(parts, data, manifest, path, compiled)


def _view(parts, whole, manifest, path, compiled=None):
    """The CaptureView of `parts` (stream -> CaptureData of that stream
    alone, each let go once its NF is built), or of `whole` when None;
    `whole` gives the losses and the manifest streams."""
    where = path or "capture"
    info = whole.stream_info
    datas = [whole] if parts is None else list(parts.values())
    # (a refused record's 2 words are not packet ids)
    _check_packets(where, sum(len(d.records) for d in datas),
                   sum(len(d.ids) - 2 * _refused_count(d) for d in datas),
                   lambda ds=datas: all(((d.records["flags"] & _NO_PACKET_IDS) != 0).all()
                                        for d in ds)
                   and any((d.records["flags"] & CAPTURE_F_NOIDS).any() for d in ds))
    del datas
    keys, nf_of_stream = _nf_keys(where, info)
    nfs = []
    general = None
    if parts is None:
        _check_times_by_stream(where, whole, keys, nf_of_stream)
        general = _General(whole, nf_of_stream, info)
    for k, (nf_id, name) in enumerate(keys):
        if general is not None:
            interval = _idle_interval(where, info, nf_of_stream, k)
            nfs.append(general.nf(k, name, nf_id, silence_ns_of(interval)))
            nfs[-1].idle_interval_ns = interval
            continue
        mine = [parts.pop(sid) for sid in sorted(parts) if nf_of_stream.get(sid) == k]
        nfs.append(_nf(k, name, nf_id, mine, nf_of_stream, info, compiled, where))
        del mine                        # this NF's records and ids go
    return _finish(nfs, whole, manifest, path)


def _view_feed(feed, manifest, path, compiled=None, window=None):
    """:func:`_view` of a ``Capture.stream_feed()``: each stream decoded
    just before its NF is built and let go just after, so the decoded
    capture is never held whole (its memory serves stream after stream);
    None when the feed cannot stand in for read_streams() (see below)."""
    where = path or "capture"
    info = feed.stream_info
    keys, nf_of_stream = _nf_keys(where, info, check=False)
    if (not feed.unambiguous or not feed.n_records or not feed.n_ids
            or len({k[1] for k in keys}) != len(keys)):
        # repeated or overlapping chunks, no packets or one name for two
        # NFs: _view over read_streams(), in its order of checks
        return None
    streams_of = [[sid for sid in feed.streams if nf_of_stream.get(sid) == k]
                  for k in range(len(keys))]
    # Largest NF first: the peak comes with the last NF built, when the
    # others' arrays are all held, so the last should decode the least
    # (bench/analyze.py's 2 s capture: 608 -> 575 MiB traced peak).
    order = sorted(range(len(keys)),
                   key=lambda k: -sum(feed.decoded_bytes[sid] for sid in streams_of[k]))

    def build(k):
        """NF k built, and its records, ids, whether none has ids and
        whether some are batch-only (as the reader's checks counted them;
        else a pass over the flags)."""
        nf_id, name = keys[k]
        mine, n_rec, n_ids, no_ids, batch_only = [], 0, 0, True, False
        for sid in streams_of[k]:
            d = feed.take(sid, offsets=False, window=_window_of(window, sid))
            if d is not None:
                mine.append(d)
                n_rec, n_ids = n_rec + len(d.records), n_ids + len(d.ids)
                n_noids = d.batch_only_records
                if n_noids is not None and d.refused_records is not None:
                    # counted by the reader's checks: no pass over the flags
                    # (a refused record is never batch-only too)
                    no_ids = no_ids and n_noids + d.refused_records == len(d.records)
                    batch_only = batch_only or n_noids > 0
                    continue
                if no_ids:
                    no_ids = bool((d.records["flags"] & _NO_PACKET_IDS).all())
                    batch_only = batch_only or bool((d.records["flags"] & CAPTURE_F_NOIDS).any())
        return _nf(k, name, nf_id, mine, nf_of_stream, info, compiled, where), \
            (n_rec, n_ids, no_ids, batch_only)

    # NFs side by side (mscope.workers): each decodes and builds its own
    built = dict(zip(order, workers.map_in_threads(build, order)))
    nfs = [built[k][0] for k in range(len(keys))]
    counts = [built[k][1] for k in range(len(keys))]
    del built
    n_rec, n_ids = sum(c[0] for c in counts), sum(c[1] for c in counts)
    no_ids = all(c[2] for c in counts)
    batch_only = any(c[3] for c in counts)
    whole = feed.finish()
    # the headers promised packets; damaged frames may have taken them all
    # (a refused record's 2 words are not packet ids)
    n_ids -= 2 * sum(len(n.refused) for n in nfs)
    _check_packets(where, n_rec, n_ids, lambda: no_ids and batch_only)
    return _finish(nfs, whole, manifest, path)


def _refused_count(d):
    """Refused records in CaptureData `d`: the reader's count where it made
    one, else counted here."""
    if d.refused_records is not None:
        return d.refused_records
    return int(np.count_nonzero(d.records["flags"] & CAPTURE_F_REFUSED))


#: A stream's record trailing the one before it by TIME_BACK_NS (the
#: capture format's) or more, or records spanning more than MAX_SPAN_NS:
#: beyond either, a time is corrupt (a frame's checksum vouches only for
#: what was written).
MAX_SPAN_NS = 24 * 3600 * 1_000_000_000
_TIME_CHUNK = 1 << 16


def _check_times(where, name, recs, ascending=False):
    """One-line CaptureFormatError where a stream's records (`recs`, in seq
    order) hold a time that cannot be one: negative (the analyzer marks
    unknown times -1), TIME_BACK_NS or more before the record before it,
    or MAX_SPAN_NS or more from another record of the stream (the
    analyzer's time grids span the records: a time 2**62 ns away asked
    for 168 TiB).  Chunk by chunk: no array of the stream's length.
    `ascending`: the times are known not to go back (the expansion of one
    stream found so), and only the first and last are looked at (the
    scan took 58 ms of bench/analyze.py's 8.7 M records)."""
    t = recs["time_ns"]
    if len(t) == 0:
        return

    def bad(i, why):
        raise CaptureFormatError(
            f"{where}: {name}: record seq {int(recs['seq'][i])} has time {int(t[i]):,} ns, "
            f"{why}: a corrupt record")
    lo_i, hi_i = (0, len(t) - 1) if ascending else (int(np.argmin(t)), int(np.argmax(t)))
    if t[lo_i] < 0:
        bad(lo_i, "before the clock's zero")
    if int(t[hi_i]) - int(t[lo_i]) >= MAX_SPAN_NS:
        bad(hi_i if hi_i > lo_i else lo_i,
            f"{(int(t[hi_i]) - int(t[lo_i])) / 3.6e12:,.0f} h from another of the stream's "
            f"(at most {MAX_SPAN_NS / 3.6e12:.0f} h)")
    for s in range(0, 0 if ascending else len(t) - 1, _TIME_CHUNK):
        e = min(s + _TIME_CHUNK, len(t) - 1)
        step = t[s + 1:e + 1] - t[s:e]
        if step.min() <= -TIME_BACK_NS:
            i = s + 1 + int(np.argmin(step))
            bad(i, f"{-int(step.min()) / 1e9:,.1f} s before the record before it")


def _check_times_by_stream(where, data, keys, nf_of_stream):
    """:func:`_check_times` of each stream's records of CaptureData `data`
    (in any order), in seq order."""
    by = np.lexsort((data.records["seq"], data.stream))
    sids, first = np.unique(np.asarray(data.stream)[by], return_index=True)
    for sid, lo, hi in zip(sids.tolist(), first.tolist(), first[1:].tolist() + [len(by)]):
        k = nf_of_stream.get(sid)
        _check_times(where, keys[k][1] if k is not None else f"stream {sid}",
                     data.records[by[lo:hi]])


_NO_PACKETS = "capture holds no packet records"

#: Records with no packet ids: batch-only and refused ones.
_NO_PACKET_IDS = CAPTURE_F_NOIDS | CAPTURE_F_REFUSED


def _check_packets(where, n_rec, n_ids, all_batch_only):
    """Refuse a capture without packet ids: records `n_rec`, ids `n_ids`."""
    if n_rec and n_ids == 0 and all_batch_only():
        raise CaptureFormatError(
            f"{where}: batch-only capture (counts, no packet ids): diagnosis "
            f"needs packet ids; record without MSCOPE_IDS=0 / MSCOPE_F_NOIDS")
    if n_rec == 0 or n_ids == 0:
        raise CaptureFormatError(f"{where}: {_NO_PACKETS}")


def _nf_keys(where, info, check=True):
    """(nf_id, name) of each NF, sorted, and the index of each stream's NF:
    by (nf_id, nf_name), so several lcores of one NF merge."""
    keys = sorted({(int(s["nf_id"]), str(s.get("nf_name") or f"nf{s['nf_id']}"))
                   for s in info.values()})
    names = [k[1] for k in keys]
    if check and len(set(names)) != len(names):
        raise CaptureFormatError(
            f"{where}: streams: one NF name for several nf_ids ({names})")
    nf_of_stream = {sid: keys.index((int(s["nf_id"]),
                                     str(s.get("nf_name") or f"nf{s['nf_id']}")))
                    for sid, s in info.items()}
    return keys, nf_of_stream


def _nf(k, name, nf_id, mine, nf_of_stream, info, compiled=None, where="capture"):
    """NFRecords of NF `k` from the CaptureData of its streams `mine`
    (`compiled`: see :func:`_kernel`)."""
    interval = _idle_interval(where, info, nf_of_stream, k)
    quiet = silence_ns_of(interval)
    refused = []
    for i, d in enumerate(mine):
        mine[i], r = _take_refused(d, where, name)
        if r is not None:
            refused.append(r)
    n = None
    if len(mine) <= 1:
        d = mine[0] if mine else CaptureData(
            np.zeros(0, CAPTURE_RECORD_DTYPE), np.zeros(0, np.uint32),
            np.zeros(1, np.int64), np.zeros(0, np.uint64))
        n = _one_stream(name, nf_id, d.records, d.ids, d.id_offsets, compiled, quiet)
        if n is not None:
            _check_times(where, name, d.records, ascending=True)
            # its times were found ascending: its ends are its span
            t = d.records["time_ns"]
            n.spans = _spans(info, [(int(d.stream[0]), t[0], t[-1])] if len(t) else [])
    if n is None:                   # several streams, or times that go back
        for d in mine:
            _check_times(where, name, d.records)
        d = mine[0] if len(mine) == 1 else _concat(mine)
        if d.id_offsets is None:
            d = CaptureData(d.records, d.stream, _id_offsets(d.records), d.ids)
        n = _General(d, nf_of_stream, info).nf(k, name, nf_id, quiet)
    n.idle_interval_ns = interval
    n.streams = max(1, len(mine))
    if len(n.spans) == 1:
        had = len(n.silences)
        n.silences = _silent_to_the_end(
            n, info.get(int(n.spans[0, 0]), {}).get("recorded_until_ns"), quiet)
        n.stopped_at_end = len(n.silences) > had
    if refused:
        r = np.concatenate(refused)
        n.refused = r[np.argsort(r["time_ns"], kind="stable")]
    return n


def _spans(info, rows):
    """``NFRecords.spans`` of `rows` (stream, first, last record time),
    each stream's last as late as its manifest entry's (`info`)
    ``recorded_until_ns``: it ran on to when its collector last found its
    ring empty, where that is known (an NF silent until then was stopped,
    not cut off)."""
    return np.array([(sid, a, max(b, info.get(sid, {}).get("recorded_until_ns") or b))
                     for sid, a, b in rows], np.int64).reshape(-1, 3)


def _silent_to_the_end(n, until, silence_ns):
    """``n.silences`` and, where the stream's records ran on to `until`
    (its manifest ``recorded_until_ns``) with the NF free at its last
    record (a tx or an idle poll after its last batch) for more than
    `silence_ns` to then, that last silence too: an NF stopped when the
    recording ended wrote nothing more, and only the collector's word
    tells its silence from records cut short."""
    last = lambda a: int(a[-1]) if len(a) else -1      # noqa: E731
    free_at = max(last(n.tx_ns), last(n.idle_ns))
    if until is None or free_at < 0 or free_at < last(n.batch_ns) or \
            until - free_at <= silence_ns:
        return n.silences
    return np.concatenate([n.silences, np.array([[free_at, until]], np.int64)])


def _finish(nfs, whole, manifest, path):
    """The CaptureView of NFs `nfs`: revisited NFs split, the topology and
    losses of `whole` added."""
    where = path or "capture"
    incomplete = whole.incomplete_windows()
    for n in nfs:
        n.lost = _lost_windows(incomplete, n.name)
    _hosts(nfs, whole.stream_info or {}, manifest, where)
    nfs = [part for n in nfs for part in split_revisited(n)]
    topo = (manifest or {}).get("topology")
    if topo is not None:
        if (not isinstance(topo, list)
                or not all(isinstance(l, (list, tuple)) and len(l) == 2
                           and all(isinstance(x, str) for x in l) for l in topo)):
            raise CaptureFormatError(
                f"{where}: manifest topology must be a list of [src, dst] names")
        topo = [tuple(l) for l in topo]
    clock = ((manifest or {}).get("time") or {}).get("clock")
    view = CaptureView(nfs, incomplete, topo,
                       None if path is None else str(path),
                       clock if isinstance(clock, str) else None)
    view.wall_clocks = wall_clocks(manifest)
    return view


def _hosts(nfs, info, manifest, where):
    """Each NF's ``hosts``, from its streams' manifest entries (`info`) and
    the manifest's host names; `nfs` in :func:`_nf_keys` order."""
    for n, h in zip(nfs, _one_host_each(where, info, manifest)):
        n.hosts = h


def _one_host_each(where, info, manifest):
    """The host names of each NF (:func:`_nf_keys` order) of the streams
    `info` (manifest entries by stream id), sorted; a one-line
    CaptureFormatError for an NF recorded on several.  An NF runs on one
    host: the same chain on several (a fleet shipping to one receiver)
    would be merged into one, of two clocks."""
    host_of = _stream_hosts(info, manifest)
    keys, nf_of_stream = _nf_keys(where, info, check=False)
    on = [set() for _ in keys]
    for sid, k in nf_of_stream.items():
        if sid in host_of:
            on[k].add(host_of[sid])
    on = [tuple(sorted(h)) for h in on]
    for (nf_id, name), h in zip(keys, on):
        if len(h) > 1:
            raise CaptureFormatError(
                f"{where}: NF {name} (nf_id {nf_id}) was recorded on {len(h)} hosts "
                f"({', '.join(h)}): each host's is an NF of its own, and their clocks "
                f"cannot be compared; diagnose one host at a time (mscope diagnose --host "
                f"NAME)")
    return on


def _concat(datas):
    """One CaptureData of the records of several (an NF's streams)."""
    records = np.concatenate([d.records for d in datas])
    return CaptureData(records, np.concatenate([np.asarray(d.stream) for d in datas]),
                       _id_offsets(records),
                       np.concatenate([d.ids for d in datas]))


#: An NF is split by rx port when at least this share of its packets come
#: back to it on another port (a switch between the chain's NFs).
REVISIT_SHARE = 0.01


def _lost_windows(incomplete, name):
    """``NFRecords.lost`` of the NF called `name`: the windows of
    `incomplete` (``CaptureData.incomplete_windows()``) of its streams,
    and those no stream could be tied to where both ends are known."""
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    rows = [(lo if w["from_ns"] is None else w["from_ns"],
             hi if w["to_ns"] is None else w["to_ns"])
            for w in incomplete
            if w["nf"] == name or (w["stream"] is None and w["from_ns"] is not None
                                   and w["to_ns"] is not None)]
    return np.array(rows, np.int64).reshape(-1, 2)


def split_revisited(nf):
    """One NF, or one node per rx port where packets revisit it.

    A switch in the chain (OVS between every two NFs) receives each packet
    several times, on a different port each time; as one node it would make
    the chain a cycle.  Each rx port has its own queue (a vhost or ethdev
    rx queue), so one node per rx port, named ``<nf>@<port>``, is what
    happened: the tx of each packet goes with the rx port it came in on
    (matched by id within the NF, nearest earlier rx).

    Returns
    -------
    list of NFRecords
        ``[nf]`` when no packet revisits it.
    """
    from .matching import match_next_int32

    if nf.rx_port is None or len(nf.rx_ids) == 0 or nf.rx_port.strides == (0,):
        return [nf]                                     # a zero-stride view: one port
    ports = np.unique(nf.rx_port)
    if len(ports) < 2:
        return [nf]
    pairs = np.unique(np.stack([nf.rx_ids, nf.rx_port.astype(np.uint64)]), axis=1)
    ids, cnt = np.unique(pairs[0], return_counts=True)
    if (cnt > 1).sum() < REVISIT_SHARE * len(ids):
        return [nf]
    # each tx to the rx it left from: nearest earlier rx of the same id
    m, _ = match_next_int32(nf.rx_ids, nf.rx_ns, nf.tx_ids, nf.tx_ns)
    tx_from = np.full(len(nf.tx_ids), -1, np.int64)
    got = m >= 0
    tx_from[m[got]] = nf.rx_port[got]
    # unmatched tx: the rx port most packets of their tx port came from
    for q in np.unique(nf.tx_port[tx_from < 0]).tolist():
        seen = tx_from[(nf.tx_port == q) & (tx_from >= 0)]
        guess = np.bincount(seen).argmax() if len(seen) else int(ports[0])
        tx_from[(nf.tx_port == q) & (tx_from < 0)] = guess
    out = []
    for p in ports.tolist():
        r = nf.rx_port == p
        t = tx_from == p
        ub, rb = np.unique(nf.rx_batch[r], return_inverse=True)
        tb = np.unique(nf.tx_batch[t], return_inverse=True)[1]
        out.append(NFRecords(
            name=f"{nf.name}@{p}", nf_id=nf.nf_id,
            rx_ids=nf.rx_ids[r], rx_ns=nf.rx_ns[r], rx_batch=rb.astype(np.int32),
            batch_ns=nf.batch_ns[ub], batch_occupancy=nf.batch_occupancy[ub],
            tx_ids=nf.tx_ids[t], tx_ns=nf.tx_ns[t], tx_port=nf.tx_port[t],
            tx_batch=tb.astype(np.int32),
            rx_addr=None if nf.rx_addr is None else nf.rx_addr[r],
            rx_port=nf.rx_port[r], idle_ns=nf.idle_ns, idle_stream=nf.idle_stream,
            idle_port=nf.idle_port, silences=nf.silences,
            idle_interval_ns=nf.idle_interval_ns, streams=nf.streams,
            batch_stream=None if nf.batch_stream is None else nf.batch_stream[ub],
            refused=nf.refused[nf.refused["port"] == p], spans=nf.spans, lost=nf.lost,
            hosts=nf.hosts, stopped_at_end=nf.stopped_at_end))
    return out


def load(path, compiled=None, window_ms=None, hosts=None, host_shifts=None) -> CaptureView:
    """Read the capture directory `path` into per-NF packet-id arrays.

    Parameters
    ----------
    path : str or os.PathLike
        A capture directory (``mscope simulate``, ``mscope receive``,
        ``mscope-collect --out``).
    compiled : bool or None, optional
        Expand streams with the compiled ``mscope.analyzer._ingest``
        (True; ImportError when it is not built) or with numpy (False);
        None, the default: the compiled one when it is built, unless the
        environment has ``MSCOPE_INGEST=numpy``.  The view is the same.
    window_ms : (float or None, float or None), optional
        Keep only the records from ``window_ms[0]`` to ``window_ms[1]`` ms
        (None: from the start, to the end),
        counted as the diagnosis summary counts its times: from the
        capture's first record, from the run's start for a simulated one.
        Each stream is cut frame by frame as it is decoded, so a long
        capture costs the window's memory, not its own.  What was under
        way at the window's edges is read as at a capture's edges
        (:mod:`mscope.analyzer.fates`).  On a capture from several hosts
        the ms count in the reference host's clock (the first by name, as
        :func:`mscope.analyzer.clocks.align_hosts` aligns to), and each
        other host's part of the window is placed by `host_shifts`, or
        else by an estimate (:mod:`mscope.analyzer.host_windows`) and
        widened: read it again with the shifts its records align to.
    hosts : list of str, optional
        Keep only the streams recorded on these hosts (their manifest
        names, or ids): a capture from several hosts, whose clocks cannot
        be compared, diagnosed one host at a time.  The manifest topology
        is kept to those hosts' NFs: a link to an NF elsewhere leads to
        ``sink``, one from it comes from ``source``.

    Returns
    -------
    CaptureView

    Raises
    ------
    CaptureFormatError
        Not a capture (no or malformed manifest), a capture (or window)
        without packet records, or a malformed manifest topology.
        One-line messages.
    ImportError
        `compiled` is True and ``mscope.analyzer._ingest`` is not built.

    Examples
    --------
    >>> view = load("run1.capture")                     # doctest: +SKIP
    >>> view.nf("fw").rx_ns[:3], view.incomplete        # doctest: +SKIP
    """
    _kernel(compiled)                   # not built: say so before reading
    cap = open_capture(path)
    # stream by stream: each stream is decoded just before its NF is built
    # and let go just after, so the capture and the view are not both
    # held whole
    manifest, keep = cap.manifest, None
    if hosts:
        keep, manifest = _only_hosts(cap, hosts)
        path = f"{path} (hosts {', '.join(hosts)})"
    # before the records are read: a fleet's capture is refused at once
    on = {h for hs in _one_host_each(path, {sid: st for sid, st in cap.streams.items()
                                             if keep is None or sid in keep}, manifest)
          for h in hs}
    feed = cap.stream_feed(keep)
    window = first = cut = shifts = None
    host_of = {}
    estimated = False
    if window_ms is not None:
        clock = (manifest.get("time") or {}).get("clock")
        simulated = isinstance(clock, str) and clock.startswith("simulated")
        a, b = window_ms
        a_ns, b_ns = int(round((a or 0) * 1e6)), None if b is None else int(round(b * 1e6))
        if len(on) > 1:
            # each host's clock counts from its own boot: its part of the
            # window is where the reference host's window is in its clock
            host_of = _stream_hosts(feed.stream_info, manifest)
            firsts = {h: feed.first_time({sid for sid, x in host_of.items() if x == h})
                      for h in on}
            ref = min(on)
            margin = 0
            shifts = dict(host_shifts or {})
            if not set(on) <= set(shifts):
                est, margin = host_windows.estimate_shifts(
                    cap, host_of, firsts, (a_ns, b_ns), path, wall_clocks(manifest),
                    simulated)
                shifts = est | shifts
                estimated = True
            first = 0 if simulated else min((f - shifts[h] for h, f in firsts.items()
                                             if f is not None), default=0)
            window = (first + a_ns, _END if b_ns is None else first + b_ns)
            cut = {sid: _shifted(window, shifts[h], 0 if h == ref else margin)
                   for sid, h in ((sid, host_of.get(sid, ref)) for sid in feed.stream_info)}
        else:
            first = 0 if simulated else (feed.first_time() or 0)
            window = cut = (first + a_ns, _END if b_ns is None else first + b_ns)
        path = f"{path} ({a or 0:,.3f}-{'end' if b is None else f'{b:,.3f}'} ms)"
    try:
        view = _view_feed(feed, manifest, path, compiled, cut)
        if view is None:
            parts, whole = cap.read_streams(keep)
            if cut is not None:
                parts = {sid: d for sid, d in
                         ((sid, _cut(d, *_window_of(cut, sid))) for sid, d in parts.items())
                         if d is not None}
            view = _view(parts, whole, manifest, path, compiled)
    except CaptureFormatError as e:
        if window is None or not str(e).endswith(_NO_PACKETS):
            raise
        raise CaptureFormatError(
            f"{path}: no packet records in that window (--from/--to, in ms from the "
            f"capture's first record); `mscope capture info {cap.path}` says when its "
            f"records begin and end") from None
    if window is not None:
        view.window_ns, view.first_ns = window, first
        view.window_shifts, view.window_estimated = shifts, estimated
        view.unindexed_frames = feed.unindexed
        view.path = str(cap.path)
        # the losses that touch the window, each in its host's clock
        def mine(host):
            return window if shifts is None else _shifted(window, shifts.get(host, 0), 0)
        view.incomplete = [w for w in view.incomplete
                           if _touches(w["from_ns"], w["to_ns"], mine(host_of.get(w["stream"])))]
        for n in view.nfs:          # the same, for each NF's own
            lo, hi = mine(n.hosts[0] if n.hosts else None)
            n.lost = n.lost[(n.lost[:, 1] >= lo) & (n.lost[:, 0] < hi)]
    return view


#: A window "to the end"
_END = np.iinfo(np.int64).max


def _window_of(window, stream):
    """Stream `stream`'s part of `window`: the window itself, or its
    entry where each stream has its own (a dict)."""
    return window.get(stream) if isinstance(window, dict) else window


def _shifted(window, shift, margin):
    """`window` in the clock of a host reading `shift` ns ahead, widened
    by `margin` each way (its end kept to int64)."""
    lo, hi = window
    return (lo + shift - margin, _END if hi == _END else min(_END, hi + shift + margin))


def _touches(lo, hi, window):
    """Whether ``[lo, hi]`` (None: unbounded) meets `window`."""
    return (hi is None or hi >= window[0]) and (lo is None or lo < window[1])


def _stream_hosts(info, manifest):
    """The host name of each stream of `info` (manifest entries by stream
    id): its manifest host's name, else its id."""
    names = {h.get("host"): h.get("name") for h in (manifest or {}).get("hosts") or ()
             if isinstance(h, dict)}
    return {sid: str(names.get(st.get("host")) or st.get("host"))
            for sid, st in info.items() if st.get("host") is not None}


def _only_hosts(cap, hosts):
    """The streams of capture `cap` recorded on `hosts` (names or ids), and
    its manifest kept to them: its streams and hosts, and its topology
    with a link to an NF elsewhere leading to ``sink``, one from it coming
    from ``source``.  A host the capture does not have is a one-line
    CaptureFormatError."""
    man = cap.manifest
    on = {h.get("host"): h for h in man.get("hosts") or () if isinstance(h, dict)}
    named = {str(h.get("name")): hid for hid, h in on.items()} | {str(hid): hid for hid in on}
    missing = [h for h in hosts if h not in named]
    if missing:
        have = ", ".join(f"{h.get('name')} ({hid})" for hid, h in on.items()) or "none"
        raise CaptureFormatError(f"{cap.path}: no host {missing[0]!r} (its hosts: {have})")
    ids = {named[h] for h in hosts}
    keep = {sid for sid, st in cap.streams.items() if st.get("host") in ids}
    names = {st.get("nf_name") for sid, st in cap.streams.items() if sid in keep}
    out = dict(man, streams=[st for st in man["streams"] if st["stream"] in keep],
               hosts=[h for hid, h in on.items() if hid in ids])
    topo = man.get("topology")
    if isinstance(topo, list):
        from .topology import SINK, SOURCE
        kept = {(a if a in names else SOURCE, b if b in names else SINK)
                for a, b in (tuple(l) for l in topo if isinstance(l, (list, tuple))
                             and len(l) == 2) if a in names or b in names}
        out["topology"] = sorted(map(list, kept))
    return keep, out


def _cut(d, lo, hi):
    """CaptureData `d` (one stream) with only its records in ``[lo, hi)``
    and their ids, None for none (StreamFeed.take's window, for a capture
    read with read_streams())."""
    cut = records_in_window(d.records, d.ids, lo, hi)
    if cut is None:
        return None
    recs, ids = cut
    return CaptureData(recs, np.broadcast_to(np.asarray(d.stream)[:1], (len(recs),)),
                       _id_offsets(recs), ids, d.losses, d.stream_info)
