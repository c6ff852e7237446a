"""Stage 1 of the analyzer: read a capture into per-NF packet-id arrays.

The capture reader (mscope.capture) does the byte-level work and the
sequence checks; this module regroups its records by NF and expands them to
one entry per packet id, which is what every later stage indexes.  numpy
only: it never imports mscope.collector or anything compiled, so the
analyzer runs on a laptop.

Records of one batch that the recorder split (more ids than a record holds)
share a time stamp; consecutive records of one stream with the same kind
and time are one *batch* here.
"""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from mscope.capture import (CAPTURE_F_ADDR, CAPTURE_F_NOIDS, CAPTURE_F_TX, CAPTURE_OCC_UNKNOWN,
                            open_capture)
from mscope.errors import CaptureFormatError

__all__ = ["NFRecords", "CaptureView", "load", "from_capture_data"]

SOURCE_NAME = "source"


@dataclass
class NFRecords:
    """One NF's records, expanded to one entry per packet id, in time order.

    Attributes
    ----------
    name : str
    nf_id : int
    rx_ids, rx_ns : ndarray of uint64, int64
        Packets this NF took from its queue, and when (batch start).
    rx_batch : ndarray of int64
        Index of each rx packet's batch into ``batch_ns``/``batch_occupancy``.
    batch_ns : ndarray of int64
        Time of each rx batch.
    batch_occupancy : ndarray of int64
        Packets left in the queue right after each rx batch, -1 unknown.
    tx_ids, tx_ns, tx_port : ndarray of uint64, int64, int64
        Packets this NF sent, when, and on which out-link.
    tx_batch : ndarray of int64
        Index of each tx packet's tx batch (same stream, same time).
    rx_addr : ndarray of uint64
        ``src_ipv4 << 32 | dst_ipv4`` of each rx packet where the NF wrote
        address records (the chain's ingress), else 0.
    rx_port : ndarray of int64
        The port (or ring) each rx packet came from.
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
    """
    nfs: list
    incomplete: list = field(default_factory=list)
    topology: Optional[list] = None
    path: Optional[str] = None

    def nf(self, name: str) -> NFRecords:
        """The NF called `name` (KeyError if absent)."""
        for n in self.nfs:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def names(self) -> list:
        return [n.name for n in self.nfs]


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


def _rx_addresses(records, stream, ids, id_rec, ridx, rcnt, addr_sel):
    """Address words aligned with the rx ids of records `ridx`.

    An address record belongs to the rx record of its stream with seq one
    below and the same count; one without such a partner (its rx record
    was dropped, or the capture was cut between them) is ignored.
    """
    out = np.zeros(int(rcnt.sum()), np.uint64)
    a = np.flatnonzero(addr_sel)
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


def from_capture_data(data, manifest=None, path=None) -> CaptureView:
    """Build a CaptureView from a ``CaptureData`` (see :func:`load`)."""
    records, stream, ids = data.records, data.stream, data.ids
    if len(records) and len(ids) == 0 and (records["flags"] & CAPTURE_F_NOIDS).all():
        raise CaptureFormatError(
            f"{path or 'capture'}: batch-only capture (counts, no packet ids): diagnosis "
            f"needs packet ids; record without MSCOPE_IDS=0 / MSCOPE_F_NOIDS")
    if len(records) == 0 or len(ids) == 0:
        raise CaptureFormatError(f"{path or 'capture'}: capture holds no packet records")
    id_rec = data.id_offsets[:-1]
    info = data.stream_info
    # NF of each stream: by (nf_id, nf_name) so several lcores of one NF merge
    keys = sorted({(int(s["nf_id"]), str(s.get("nf_name") or f"nf{s['nf_id']}"))
                   for s in info.values()})
    names = [k[1] for k in keys]
    if len(set(names)) != len(names):
        raise CaptureFormatError(
            f"{path or 'capture'}: streams: one NF name for several nf_ids ({names})")
    nf_of_stream = {sid: keys.index((int(s["nf_id"]),
                                     str(s.get("nf_name") or f"nf{s['nf_id']}")))
                    for sid, s in info.items()}
    lut = np.full(max(info) + 1 if info else 1, -1, np.int64)
    for sid, k in nf_of_stream.items():
        lut[sid] = k
    rec_nf = lut[stream] if len(stream) else np.zeros(0, np.int64)
    is_tx = (records["flags"] & CAPTURE_F_TX) != 0
    is_addr = (records["flags"] & CAPTURE_F_ADDR) != 0
    # batch-only records (counts, no ids) cannot be followed packet by
    # packet: left out here (the capture reader still accounts them)
    has_ids = (records["flags"] & CAPTURE_F_NOIDS) == 0
    nfs = []
    for k, (nf_id, name) in enumerate(keys):
        mine = (rec_nf == k) & has_ids
        ridx, rcnt, rb, rfirst, rx_ids = _side(records, stream, ids, id_rec,
                                               mine & ~is_tx & ~is_addr)
        addr_sel = mine & is_addr & ~is_tx
        rx_addr = (_rx_addresses(records, stream, ids, id_rec, ridx, rcnt, addr_sel)
                   if addr_sel.any() else None)
        tidx, tcnt, tb, _, tx_ids = _side(records, stream, ids, id_rec, mine & is_tx)
        occ = records["occupancy"][ridx[rfirst]].astype(np.int64)
        occ[occ == CAPTURE_OCC_UNKNOWN] = -1
        nfs.append(NFRecords(
            name=name, nf_id=nf_id,
            rx_ids=rx_ids, rx_ns=np.repeat(records["time_ns"][ridx], rcnt),
            rx_batch=np.repeat(rb, rcnt),
            batch_ns=records["time_ns"][ridx[rfirst]].astype(np.int64),
            batch_occupancy=occ,
            tx_ids=tx_ids, tx_ns=np.repeat(records["time_ns"][tidx], tcnt),
            tx_port=np.repeat(records["port"][tidx].astype(np.int64), tcnt),
            tx_batch=np.repeat(tb, tcnt), rx_addr=rx_addr,
            rx_port=np.repeat(records["port"][ridx].astype(np.int64), rcnt)))
    nfs = [part for n in nfs for part in split_revisited(n)]
    topo = (manifest or {}).get("topology")
    if topo is not None:
        if (not isinstance(topo, list)
                or not all(isinstance(l, (list, tuple)) and len(l) == 2
                           and all(isinstance(x, str) for x in l) for l in topo)):
            raise CaptureFormatError(
                f"{path or 'capture'}: manifest topology must be a list of [src, dst] names")
        topo = [tuple(l) for l in topo]
    return CaptureView(nfs, data.incomplete_windows(), topo,
                       None if path is None else str(path))


#: An NF is split by rx port when at least this share of its packets come
#: back to it on another port (a switch between the chain's NFs).
REVISIT_SHARE = 0.01


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
    from .matching import match_next

    if nf.rx_port is None or len(nf.rx_ids) == 0:
        return [nf]
    ports = np.unique(nf.rx_port)
    if len(ports) < 2:
        return [nf]
    pairs = np.unique(np.stack([nf.rx_ids, nf.rx_port.astype(np.uint64)]), axis=1)
    ids, cnt = np.unique(pairs[0], return_counts=True)
    if (cnt > 1).sum() < REVISIT_SHARE * len(ids):
        return [nf]
    # each tx to the rx it left from: nearest earlier rx of the same id
    m, _ = match_next(nf.rx_ids, nf.rx_ns, nf.tx_ids, nf.tx_ns)
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
            rx_ids=nf.rx_ids[r], rx_ns=nf.rx_ns[r], rx_batch=rb.astype(np.int64),
            batch_ns=nf.batch_ns[ub], batch_occupancy=nf.batch_occupancy[ub],
            tx_ids=nf.tx_ids[t], tx_ns=nf.tx_ns[t], tx_port=nf.tx_port[t],
            tx_batch=tb.astype(np.int64),
            rx_addr=None if nf.rx_addr is None else nf.rx_addr[r],
            rx_port=nf.rx_port[r]))
    return out


def load(path) -> CaptureView:
    """Read the capture directory `path` into per-NF packet-id arrays.

    Parameters
    ----------
    path : str or os.PathLike
        A capture directory (``mscope simulate``, ``mscope receive``,
        ``mscope-collect --out``).

    Returns
    -------
    CaptureView

    Raises
    ------
    CaptureFormatError
        Not a capture (no or malformed manifest), a capture without packet
        records, or a malformed manifest topology.  One-line messages.

    Examples
    --------
    >>> view = load("run1.capture")                     # doctest: +SKIP
    >>> view.nf("fw").rx_ns[:3], view.incomplete        # doctest: +SKIP
    """
    cap = open_capture(path)
    return from_capture_data(cap.read(), cap.manifest, path)
