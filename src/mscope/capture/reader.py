"""Read a capture directory into numpy arrays, with every loss as a fact.

``open_capture(path)`` checks the manifest; ``Capture.read()`` decodes every
frame of the chosen streams into one record array, one id array and a list
of :class:`Loss`.  Nothing in a file is trusted: lengths are bounded by the
file and by ``MAX_CHUNK_RAW_BYTES`` before anything is allocated, and a
damaged frame becomes a loss, never an exception.  Every frame is
decompressed straight into its slot of one records array and one ids array
(per stream for ``read_streams()``), found by a pass over the headers
first, so the capture is held once (it was twice: per-frame buffers, then
their concatenation: 1,069 -> 609 MiB traced peak for 444 MiB decoded,
bench/analyze.py's 2 s capture); checks are vectorised per chunk; the only
Python loops are per frame and per loss.

numpy, the standard library and the codec packages only: this module must
import on a laptop without mscope's compiled parts.
"""
import bisect
import json
import os
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from mscope import workers
from mscope.errors import CaptureFormatError

from .format import (CAPTURE_F_NOIDS, CAPTURE_F_REFUSED, CAPTURE_RECORD_DTYPE, FORMAT_NAME,
                     FORMAT_VERSION, FRAME_HEADER_SIZE, FRAME_MAGIC, MANIFEST_NAME,
                     MAX_MANIFEST_BYTES, PACKET_ID_DTYPE, RECORD_VERSION, SEGMENT_RE,
                     TIME_BACK_NS,
                     check_frame_header, decode_payload_counted, decode_payload_into,
                     first_record_time, id_counts, segment_name, seq_problem,
                     unpack_frame_header)
from .index import indexed_time, read_index

__all__ = ["Loss", "Capture", "CaptureData", "StreamFeed", "open_capture", "records_in_window",
           "load_manifest", "last_chunk_headers", "wall_clocks"]


class Loss(NamedTuple):
    """Records missing from a capture, and where they are missing.

    ``stream`` is None when damage cannot be tied to one stream.
    ``kind`` is one of ``LOSS_KINDS``.  ``first_seq`` is the first missing
    ring seq and ``n_records`` how many are missing (None where unknown; 0
    for damage that cost no record).  ``t_start_ns``/``t_end_ns`` bound the
    window without data: the time of the last record before and of the first
    record after (None where there is none).  ``detail`` is one line.
    """
    stream: Optional[int]
    kind: str
    first_seq: Optional[int]
    n_records: Optional[int]
    t_start_ns: Optional[int]
    t_end_ns: Optional[int]
    detail: str


# --- manifest -------------------------------------------------------------

_REQUIRED = ("format", "version", "record_version", "time", "hosts", "nfs",
             "streams")


def wall_clocks(manifest) -> dict:
    """Each host's CLOCK_REALTIME less its CLOCK_MONOTONIC (ns), by host
    name (else id), where its collector wrote one (the host entry's
    optional ``realtime_offset_ns``): a time of that host plus it is its
    wall clock then."""
    out = {}
    for h in (manifest or {}).get("hosts") or ():
        v = h.get("realtime_offset_ns") if isinstance(h, dict) else None
        if _is_int(v, 0, (1 << 63) - 1):
            out[str(h.get("name") or h.get("host"))] = v
    return out


def _is_int(x, lo=0, hi=(1 << 64) - 1) -> bool:
    # bool is an int subclass; true/false in JSON is not an id.
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


def _check_entries(where, items, key, required, id_hi, unique=None):
    """Check a manifest list of objects; return {id: entry} (`unique`:
    the entry's key to be unique by, instead of its id)."""
    if not isinstance(items, list):
        raise CaptureFormatError(f"{where}: {key!r} is not a list")
    out = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise CaptureFormatError(f"{where}: {key}[{i}] is not an object")
        missing = [k for k in required if k not in item]
        if missing:
            raise CaptureFormatError(
                f"{where}: {key}[{i}] missing key(s) {', '.join(map(repr, missing))}")
        ident = item[required[0]]
        if not _is_int(ident, 0, id_hi):
            raise CaptureFormatError(
                f"{where}: {key}[{i}].{required[0]} is not an integer in 0..{id_hi}")
        if unique is not None:
            ident = unique(item)
        if ident in out:
            raise CaptureFormatError(
                f"{where}: {key}[{i}] repeats {required[0]} {item[required[0]]}"
                + (f" on host {item['host']!r}" if unique is not None else ""))
        out[ident] = item
    return out


def load_manifest(path) -> dict:
    """Read and check ``manifest.json`` of the capture directory `path`.

    Parameters
    ----------
    path : str or os.PathLike
        The capture directory.

    Returns
    -------
    dict
        The manifest as written, unknown optional keys included.

    Raises
    ------
    CaptureFormatError
        One line naming the file and the problem: missing, not JSON, wrong
        format or version, missing or malformed keys.

    Examples
    --------
    >>> load_manifest("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mscope.errors.CaptureFormatError: /nonexistent: not a capture directory (does not exist)
    """
    root = Path(path)
    if not root.is_dir():
        why = "not a directory" if root.exists() else "does not exist"
        raise CaptureFormatError(f"{root}: not a capture directory ({why})")
    mpath = root / MANIFEST_NAME
    try:
        with open(mpath, "rb") as f:
            text = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise CaptureFormatError(
            f"{mpath}: missing (is {root} an mscope capture?)") from None
    except OSError as exc:
        raise CaptureFormatError(f"{mpath}: cannot read: {exc.strerror}") from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise CaptureFormatError(f"{mpath}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        man = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CaptureFormatError(f"{mpath}: not JSON (not UTF-8: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise CaptureFormatError(
            f"{mpath}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise CaptureFormatError(f"{mpath}: not JSON (nested too deeply)") from None
    if not isinstance(man, dict):
        raise CaptureFormatError(f"{mpath}: not a JSON object")
    if man.get("format") != FORMAT_NAME:
        raise CaptureFormatError(
            f"{mpath}: format is {man.get('format')!r}, expected {FORMAT_NAME!r}")
    missing = [k for k in _REQUIRED if k not in man]
    if missing:
        raise CaptureFormatError(
            f"{mpath}: missing key(s) {', '.join(map(repr, missing))}")
    version = man["version"]
    if not _is_int(version, 1, 1 << 31):
        raise CaptureFormatError(f"{mpath}: version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise CaptureFormatError(
            f"{mpath}: version {version} is newer than this reader "
            f"(it reads version {FORMAT_VERSION})")
    if man["record_version"] != RECORD_VERSION:
        raise CaptureFormatError(
            f"{mpath}: record_version {man['record_version']!r} unsupported "
            f"(this reader knows {RECORD_VERSION})")
    tm = man["time"]
    if not isinstance(tm, dict) or tm.get("unit") != "ns":
        raise CaptureFormatError(f"{mpath}: 'time' must be an object with unit 'ns'")
    hosts = _check_entries(mpath, man["hosts"], "hosts", ("host", "name"), 1 << 31)
    streams = _check_entries(mpath, man["streams"], "streams",
                             ("stream", "host", "nf_id", "nf_name"), 0xFFFFFFFF)
    for key, table in (("nfs", enumerate(man["nfs"] if isinstance(man["nfs"], list) else ())),
                       ("streams", streams.items())):
        for ident, item in table:
            # (a list or an object is no host id, and unhashable)
            if not isinstance(item, dict) or "host" not in item:
                continue                    # _check_entries says what
            if not _is_int(item["host"], 0, 1 << 31) or item["host"] not in hosts:
                what = f"nfs[{ident}]" if key == "nfs" else f"streams entry {ident}"
                raise CaptureFormatError(
                    f"{mpath}: {what} names unknown host {item['host']!r}")
    # an NF is its host's (a fleet of hosts may run the same nf_ids); two
    # host entries of one name are one host seen twice
    _check_entries(mpath, man["nfs"], "nfs", ("nf_id", "name", "host"), 0xFFFF,
                   unique=lambda nf: (str(hosts[nf["host"]]["name"]), nf["nf_id"]))
    for sid, st in streams.items():
        if not _is_int(st["nf_id"], 0, 0xFFFF):
            raise CaptureFormatError(f"{mpath}: stream {sid} nf_id is not a u16")
        cw = st.get("chunks_written")
        if cw is not None and not _is_int(cw):
            raise CaptureFormatError(
                f"{mpath}: stream {sid} chunks_written is not a count")
        until = st.get("recorded_until_ns")
        if until is not None and not _is_int(until, 0, (1 << 63) - 1):
            raise CaptureFormatError(
                f"{mpath}: stream {sid} recorded_until_ns is not a time in ns")
    return man


# --- scanning -------------------------------------------------------------

# Positions in the capture as one sortable int: segment number, then offset.
# 2**40 bytes per segment is far beyond any segment_bytes a writer uses.
_SEG_SHIFT = 40
_END = (1 << 62)


def _pos(seg: int, off: int) -> int:
    return (seg << _SEG_SHIFT) | off


def _where(seg: int, off: int) -> str:
    return f"{segment_name(seg)} at byte {off}"


class _Entry:
    """One frame with a good header, in a manifest stream."""
    __slots__ = ("h", "seg", "off", "pos", "status", "detail", "records",
                 "ids", "t_first", "t_last", "runs", "batch_only", "refused", "slot")

    def __init__(self, h, seg, off, status, detail=""):
        self.h, self.seg, self.off = h, seg, off
        self.pos = _pos(seg, off)
        # ok: decoded; unread: stream not asked for; corrupt/truncated:
        # header good, payload lost; overlap: rejected by the seq walk.
        self.status, self.detail = status, detail
        self.records = self.ids = None
        self.t_first = self.t_last = None
        self.runs = None
        # (records, packets) of batch-only records, once decoded.
        self.batch_only = (0, 0)
        # (records, packets) of refused records (their 2 words each are in
        # the ids, not packet ids), once decoded.
        self.refused = (0, 0)
        # (group, first record, first id) in the scan's arrays once
        # decoded there (_decode_kept).
        self.slot = None

    @property
    def where(self) -> str:
        return _where(self.seg, self.off)


class _Damage:
    """Bytes holding no readable frame header (or a missing segment)."""
    __slots__ = ("kind", "pos", "detail", "stream_hint", "chunk_hint", "used")

    def __init__(self, kind, pos, detail, stream_hint=None, chunk_hint=None):
        self.kind, self.pos, self.detail = kind, pos, detail
        self.stream_hint, self.chunk_hint = stream_hint, chunk_hint
        self.used = False


class _Scan:
    def __init__(self):
        self.entries = []      # _Entry in file order
        self.damages = []      # _Damage in file order
        self.other = []        # Loss for frames outside any manifest stream
        self.stored_bytes = 0
        self.raw_bytes = 0
        self.segments = 0
        # group -> records / ids arrays the kept frames decode into
        self.records = self.ids = None


class _Segment:
    """Bounded positional reads of one segment file."""
    _BLOCK = 1 << 20

    def __init__(self, path):
        self.f = open(path, "rb")
        # The size at open: a collector may still be appending; what it
        # appends later is not read, and a cut last frame reads as truncated.
        self.size = os.fstat(self.f.fileno()).st_size

    def read(self, off: int, n: int) -> bytes:
        self.f.seek(off)
        return self.f.read(max(0, min(n, self.size - off)))

    def read_into(self, off: int, n: int, buf):
        """:meth:`read` into the uint8 array `buf` (at least `n` long): a
        view of what was read.  Payloads are read this way into one buffer
        used again frame after frame: a fresh bytes object per frame cost
        ~0.03 s of page faults on bench/analyze.py's 2 s capture."""
        n = max(0, min(n, self.size - off))
        self.f.seek(off)
        view, got = memoryview(buf)[:n], 0
        while got < n:
            k = self.f.readinto(view[got:])
            if not k:
                break
            got += k
        return view[:got]

    def find_header(self, start: int):
        """Offset of the next frame header with good magic and crc, or None."""
        pos = start
        while pos < self.size:
            block = self.read(pos, self._BLOCK + FRAME_HEADER_SIZE)
            i = block.find(FRAME_MAGIC)
            while 0 <= i < self._BLOCK:
                if len(block) - i >= FRAME_HEADER_SIZE:
                    try:
                        unpack_frame_header(block[i:i + FRAME_HEADER_SIZE])
                        return pos + i
                    except CaptureFormatError:
                        pass
                i = block.find(FRAME_MAGIC, i + 1)
            pos += self._BLOCK
        return None

    def close(self):
        self.f.close()


def _partial_hints(tail: bytes):
    """Stream and chunk_seq of a cut header, unverified (no crc to check)."""
    stream = int.from_bytes(tail[8:12], "little") if len(tail) >= 12 else None
    chunk = int.from_bytes(tail[16:24], "little") if len(tail) >= 24 else None
    return stream, chunk


def _decode(e: _Entry, payload, keep: bool, out=None):
    """Decode one payload into e (into the arrays `out` when given);
    raise CaptureFormatError if bad."""
    if out is None:
        recs, ids, batch_only = decode_payload_counted(e.h, payload)
    else:
        recs, ids = out
        batch_only = decode_payload_into(e.h, payload, recs, ids)
    if len(recs):
        t = recs["time_ns"]
        # decode_payload checked that the seqs rise strictly from first_seq
        # to next_seq - 1: none is missing when there are that many records
        if e.h.next_seq - e.h.first_seq != e.h.n_records:
            seq = recs["seq"]
            step = seq[1:] - seq[:-1]          # >= 1
            gap = np.flatnonzero(step > 1)
            # Runs of seqs the ring dropped: first seq, length, and the
            # times of the records on either side.
            e.runs = (seq[gap] + 1, step[gap] - 1, t[gap], t[gap + 1])
        e.t_first, e.t_last = int(t[0]), int(t[-1])
        if batch_only[0]:
            # Batch-only records: packets that have no ids (describe()).
            e.batch_only = batch_only[:2]
        if batch_only[2]:
            # refused records: words, not packet ids (describe())
            at = np.flatnonzero(recs["flags"] & CAPTURE_F_REFUSED)
            first = np.cumsum(id_counts(recs))[at] - 2
            e.refused = (len(at), int(ids[first].sum(dtype=np.uint64)))
    if keep:
        e.records, e.ids = recs, ids


def _scan_segment(scan, seg, path, streams, want, keep, defer=False):
    """Append the frames and damage of one segment file to `scan`; with
    `defer`, frames to decode are left for :func:`_decode_kept`."""
    f = _Segment(path)
    try:
        size, pos = f.size, 0
        scan.stored_bytes += size
        while pos < size:
            head = f.read(pos, FRAME_HEADER_SIZE)
            try:
                h = unpack_frame_header(head)
            except CaptureFormatError as exc:
                pos = _damaged_run(scan, f, seg, pos, str(exc))
                continue
            end = pos + FRAME_HEADER_SIZE + h.payload_len
            problem = check_frame_header(h)
            truncated = end > size
            if truncated:
                problem = (f"truncated frame: {size - pos} of "
                           f"{FRAME_HEADER_SIZE + h.payload_len} bytes")
            kind = "truncated" if truncated else "corrupt"
            if problem is None and h.stream not in streams:
                problem = f"stream {h.stream} is not in {MANIFEST_NAME}"
                if seq_problem(h) is None:
                    scan.other.append(Loss(h.stream, "corrupt", h.first_seq,
                                           h.n_records, None, None,
                                           f"{_where(seg, pos)}: {problem}"))
                    pos = end
                    continue
            if problem is not None:
                if h.stream in streams and seq_problem(h) is None:
                    # The header is checksummed and its seqs are coherent:
                    # the loss can be reported exactly.
                    scan.entries.append(_Entry(h, seg, pos, kind, problem))
                else:
                    scan.damages.append(_Damage(
                        kind, _pos(seg, pos), f"{_where(seg, pos)}: {problem}",
                        h.stream, h.chunk_seq))
                if truncated:
                    break
                pos = end
                continue
            scan.raw_bytes += h.raw_len
            e = _Entry(h, seg, pos, "ok" if h.stream in want else "unread")
            if e.status == "ok" and not defer:
                try:
                    _decode(e, f.read(pos + FRAME_HEADER_SIZE, h.payload_len), keep)
                except CaptureFormatError as exc:
                    e.status, e.detail = "corrupt", str(exc)
            scan.entries.append(e)
            pos = end
    finally:
        f.close()


def _decode_kept(scan, segments, per_stream=False):
    """Decode the frames `_scan_segment(defer=True)` left, each into its
    slot of a records array and an ids array (``scan.records[g]``,
    ``scan.ids[g]``; g the stream with `per_stream`, else None: one pair
    for the whole capture), laid out in (stream, chunk_seq) order: when
    every frame decodes, those arrays are what ``Capture.read()`` (or
    ``read_streams()``) hands out, with no copy.

    Parameters
    ----------
    segments : dict
        Segment number -> path.
    """
    todo = [e for e in scan.entries if e.status == "ok"]
    groups = {}
    for e in todo:
        groups.setdefault(e.h.stream if per_stream else None, []).append(e)
    scan.records, scan.ids = {}, {}
    with _payload_pool(segments) as pool:
        for g, ents in groups.items():
            _decode_group(scan, g, ents, pool)


def _payload_pool(segments):
    """_Payloads for threads that read at once, each its own files and
    buffer (``pool.taken()``), all closed with the pool."""
    return workers.Spares(lambda: _Payloads(segments), lambda src: src.__exit__())


class _Payloads:
    """Payloads read from the segment files (kept open) into one buffer."""

    def __init__(self, segments):
        self.paths, self.open = segments, {}
        self.buf = np.empty(0, np.uint8)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in self.open.values():
            f.close()
        self.open.clear()

    def read(self, e):
        f = self.open.get(e.seg)
        if f is None:
            f = self.open[e.seg] = _Segment(self.paths[e.seg])
        n = e.h.payload_len
        if len(self.buf) < n:
            # every payload_len was checked against its file (and is
            # at most MAX_CHUNK_RAW_BYTES plus the codec's bound)
            self.buf = np.empty(max(n, 2 * len(self.buf)), np.uint8)
        return f.read_into(e.off + FRAME_HEADER_SIZE, n, self.buf)


def _decode_group(scan, g, ents, pool):
    """Decode the frames `ents` (status ok) into fresh arrays
    ``scan.records[g]``, ``scan.ids[g]``, in (stream, chunk_seq) order,
    reading their payloads through `pool` (:func:`_payload_pool`)."""
    r = i = 0
    for e in sorted(ents, key=lambda e: (e.h.stream, e.h.chunk_seq, e.pos)):
        e.slot = (g, r, i)
        r, i = r + e.h.n_records, i + e.h.n_ids
    # every length was checked against its file and MAX_CHUNK_RAW_BYTES
    records = scan.records[g] = np.empty(r, CAPTURE_RECORD_DTYPE)
    ids = scan.ids[g] = np.empty(i, PACKET_ID_DTYPE)

    def decode(part):
        with pool.taken() as src:                    # its own files and buffer
            for e in part:                           # file order
                _, r, i = e.slot
                out = (records[r:r + e.h.n_records], ids[i:i + e.h.n_ids])
                try:
                    _decode(e, src.read(e), True, out)
                except CaptureFormatError as exc:
                    e.status, e.detail = "corrupt", str(exc)
                    e.slot = None

    parts = _shares(ents, workers.count())
    workers.map_in_threads(decode, parts, len(parts))


def _shares(ents, n):
    """`ents` (each with ``h.raw_len``) in up to `n` lists of about equal
    decoded bytes, each in file order; one list when there is one frame."""
    n = max(1, min(n, len(ents)))
    parts, load = [[] for _ in range(n)], [0] * n
    for e in sorted(ents, key=lambda e: -e.h.raw_len):
        k = load.index(min(load))
        parts[k].append(e)
        load[k] += e.h.raw_len
    order = {id(e): j for j, e in enumerate(ents)}
    return [sorted(p, key=lambda e: order[id(e)]) for p in parts]


def _assemble(scan, good, g, offsets=True):
    """Records and ids of the decoded frames `good` (in order, none empty)
    of slot group `g`: the decoded arrays themselves when the frames fill
    them in order (none damaged, duplicate or overlapping), else a copy."""
    r = i = 0
    for e in good:
        if e.slot != (g, r, i):
            break
        r, i = r + e.h.n_records, i + e.h.n_ids
    records = scan.records.get(g)
    ids = scan.ids.get(g)
    whole = records is not None and r == len(records) and i == len(ids)
    if whole:
        pass                            # the common case: no copy
    elif good:
        records = np.concatenate([e.records for e in good])
        ids = np.concatenate([e.ids for e in good])
    else:
        records = np.zeros(0, CAPTURE_RECORD_DTYPE)
        ids = np.zeros(0, PACKET_ID_DTYPE)
    if not offsets:
        return records, ids.astype(np.uint64, copy=False), None
    id_offsets = np.zeros(len(records) + 1, np.int64)
    if any(e.batch_only[0] for e in good):
        np.cumsum(id_counts(records), out=id_offsets[1:])
    else:                               # every record has its ids
        np.cumsum(records["count"], out=id_offsets[1:])
    return records, ids.astype(np.uint64, copy=False), id_offsets


def _damaged_run(scan, f, seg, start, reason):
    """Record bytes from `start` that hold no valid header; return where to go on."""
    size = f.size
    if size - start >= FRAME_HEADER_SIZE:
        nxt = f.find_header(start + 1)
        if nxt is not None:
            scan.damages.append(_Damage(
                "corrupt", _pos(seg, start),
                f"{_where(seg, start)}: {reason}; skipped {nxt - start} bytes"))
            return nxt
    # No header up to the end of the segment.  A last frame cut inside its
    # header leaves < 80 bytes that start like a header: that part is
    # "truncated", anything before it "corrupt".
    lo = max(start, size - FRAME_HEADER_SIZE + 1)
    tail = f.read(lo, size - lo)
    cut = None
    for i in range(len(tail)):
        if lo + i == start and size - start >= FRAME_HEADER_SIZE:
            continue
        if FRAME_MAGIC.startswith(tail[i:i + 4]):
            cut = lo + i
            break
    if cut is None or cut > start:
        stop = size if cut is None else cut
        to_end = " to the end of the segment" if cut is None else ""
        scan.damages.append(_Damage(
            "corrupt", _pos(seg, start),
            f"{_where(seg, start)}: {reason}; skipped {stop - start} bytes{to_end}"))
    if cut is not None:
        part = tail[cut - lo:]
        stream, chunk = _partial_hints(part)
        scan.damages.append(_Damage(
            "truncated", _pos(seg, cut),
            f"{_where(seg, cut)}: truncated frame header ({len(part)} of "
            f"{FRAME_HEADER_SIZE} bytes)", stream, chunk))
    return size


def last_chunk_headers(path, manifest) -> dict:
    """Header of the highest chunk_seq of each stream found in the segments.

    What a writer appending to a capture needs to go on checking each
    stream's sequence: only frame headers are read (no payload), and a frame
    whose header is good counts even if its payload is damaged or cut, as
    its chunk_seq was spent.

    Parameters
    ----------
    path : str or os.PathLike
        The capture directory.
    manifest : dict
        Its manifest (:func:`load_manifest`).

    Returns
    -------
    dict
        ``{stream: FrameHeader}`` for the manifest streams that have frames.

    Raises
    ------
    CaptureFormatError
        A segment file cannot be read.
    """
    cap = Capture(path, manifest)
    scan = _Scan()
    for num, seg in cap.segments:
        try:
            _scan_segment(scan, num, seg, cap.streams, want=(), keep=False)
        except OSError as exc:
            raise CaptureFormatError(f"{seg}: cannot read: {exc.strerror}") from None
    last = {}
    for e in scan.entries:
        top = last.get(e.h.stream)
        if top is None or e.h.chunk_seq > top.chunk_seq:
            last[e.h.stream] = e.h
    return last


# --- losses ---------------------------------------------------------------

class _DamageIndex:
    """Damage sorted by position, so gaps can claim what lies inside them."""

    def __init__(self, damages):
        self.items = sorted(damages, key=lambda d: d.pos)
        self.keys = [d.pos for d in self.items]

    def take(self, lo: int, hi: int):
        i = bisect.bisect_right(self.keys, lo)
        j = bisect.bisect_left(self.keys, hi)
        found = self.items[i:j]
        for d in found:
            d.used = True
        return found


def _cause(found, default, text):
    """Kind and detail of a gap, led by the damage that explains it, if any."""
    if not found:
        return default, text
    more = f" (and {len(found) - 1} more damaged places)" if len(found) > 1 else ""
    return found[0].kind, f"{found[0].detail}{more}; {text}"


def _reject_overlaps(ents):
    """Mark chunks whose seqs go back over earlier ones; return the rest."""
    kept, losses, top = [], [], None
    for e in ents:
        if top is not None and e.h.first_seq < top.h.next_seq:
            e.status = "overlap"
            losses.append(Loss(
                e.h.stream, "corrupt", e.h.first_seq, 0, None, None,
                f"{e.where}: chunk_seq {e.h.chunk_seq} seqs start at "
                f"{e.h.first_seq}, before next_seq {top.h.next_seq} of "
                f"chunk_seq {top.h.chunk_seq}; ignored"))
            continue
        kept.append(e)
        top = e
    return kept, losses


def _stream_losses(s, ents, chunks_written, index):
    """Losses of stream `s` from its chunks in chunk_seq order (see docs)."""
    out = []
    n = len(ents)
    # Time of the last record before entry i, and of the first one after it.
    before, after = [None] * n, [None] * n
    t = None
    for i, e in enumerate(ents):
        before[i] = t
        if e.t_last is not None:
            t = e.t_last
    t_last = t
    t = None
    for i in range(n - 1, -1, -1):
        after[i] = t
        if ents[i].t_first is not None:
            t = ents[i].t_first
    carry = 0      # drop-counter increase not yet matched to missing seqs
    prev = None
    for i, e in enumerate(ents):
        h = e.h
        t0 = before[i]
        t1 = e.t_first if e.t_first is not None else after[i]
        internal = h.next_seq - h.first_seq - h.n_records
        if prev is None:
            budget = h.drop_records
        else:
            # A counter that goes back is a writer fault; it explains nothing.
            budget = carry + max(0, h.drop_records - prev.h.drop_records)
        # Seqs missing inside a chunk that arrived were never read from the
        # ring: only the ring can have dropped them, so they take the
        # budget first.
        drops_in = min(internal, budget)
        budget -= drops_in
        if prev is None:
            if h.chunk_seq > 0:
                cause, why = _cause(index.take(-1, e.pos), "gap",
                                    f"chunk_seq 0..{h.chunk_seq - 1} missing "
                                    f"before the first chunk found")
                out.append(Loss(s, cause, None, None, None, t1, why))
                budget = 0     # the rest fell in the lost chunks
            else:
                # Drops counted before the capture's first record (a
                # collector that attached late) are not this capture's loss.
                budget -= min(budget, h.first_seq)
        else:
            between = h.first_seq - prev.h.next_seq
            missing = h.chunk_seq - prev.h.chunk_seq - 1
            drops = min(between, budget)
            budget -= drops
            lost = between - drops
            if drops:
                out.append(Loss(s, "ring_drop", prev.h.next_seq, drops, t0, t1,
                                f"{drops} records dropped on a full ring "
                                f"before chunk_seq {h.chunk_seq}"))
            first = prev.h.next_seq + drops
            if missing > 0:
                cause, why = _cause(index.take(prev.pos, e.pos), "gap",
                                    f"chunk_seq {prev.h.chunk_seq + 1}.."
                                    f"{h.chunk_seq - 1} missing ({missing} "
                                    f"chunks, {lost} records)")
                out.append(Loss(s, cause, first, lost, t0, t1, why))
            elif lost:
                out.append(Loss(s, "gap", first, lost, t0, t1,
                                f"seqs {first}..{h.first_seq - 1} missing between "
                                f"consecutive chunks, not explained by the "
                                f"drop counter"))
        carry = budget
        if e.status in ("corrupt", "truncated"):
            t_out = after[i]
            out.append(Loss(s, e.status, h.first_seq, h.n_records, t0, t_out,
                            f"{e.where}: {e.detail}"))
            if drops_in:
                out.append(Loss(s, "ring_drop", None, drops_in, t0, t_out,
                                f"{drops_in} records dropped on a full ring "
                                f"inside the damaged chunk_seq {h.chunk_seq}"))
            if internal > drops_in:
                out.append(Loss(s, "gap", None, internal - drops_in, t0, t_out,
                                f"{internal - drops_in} seqs missing inside the "
                                f"damaged chunk_seq {h.chunk_seq}, not explained "
                                f"by the drop counter"))
        elif e.runs is not None:
            left = drops_in
            rf, rn, ra, rb = e.runs
            for k in range(len(rf)):        # one iteration per run of drops
                f0, cnt = int(rf[k]), int(rn[k])
                ta, tb = int(ra[k]), int(rb[k])
                part = min(cnt, left)
                left -= part
                if part:
                    out.append(Loss(s, "ring_drop", f0, part, ta, tb,
                                    f"{part} records dropped on a full ring "
                                    f"(seqs {f0}..{f0 + part - 1})"))
                if cnt > part:
                    out.append(Loss(s, "gap", f0 + part, cnt - part, ta, tb,
                                    f"seqs {f0 + part}..{f0 + cnt - 1} missing "
                                    f"inside chunk_seq {h.chunk_seq}, not "
                                    f"explained by the drop counter"))
        prev = e
    if prev is not None and carry:
        out.append(Loss(s, "ring_drop", prev.h.next_seq, carry, t_last, None,
                        f"{carry} records dropped on a full ring after the "
                        f"last record (counter of chunk_seq {prev.h.chunk_seq})"))
    if chunks_written is not None:
        seen = prev.h.chunk_seq + 1 if prev is not None else 0
        if seen < chunks_written:
            cause, why = _cause(
                index.take(prev.pos if prev else -1, _END), "gap",
                f"chunk_seq {seen}..{chunks_written - 1} missing at the end "
                f"({MANIFEST_NAME} says {chunks_written} chunks were written)")
            out.append(Loss(s, cause, prev.h.next_seq if prev else None, None,
                            t_last, None, why))
    return out, t_last


# --- public objects -------------------------------------------------------

@dataclass
class CaptureData:
    """The records of a capture, grouped by stream, and what is missing.

    Attributes
    ----------
    records : ndarray of CAPTURE_RECORD_DTYPE
        All records, stream by stream (ascending stream id), each stream in
        chunk_seq order, so seqs increase strictly within a stream.
    stream : ndarray of uint32
        The stream of each record.
    id_offsets : ndarray of int64, length len(records) + 1
        The ids of record i are ``ids[id_offsets[i]:id_offsets[i + 1]]``:
        ``count`` of them, none (an empty slice) for a batch-only record
        (``flags & CAPTURE_F_NOIDS``), whose ``count`` packets have no ids.
    ids : ndarray of uint64
        Packet ids.
    losses : list of Loss
        Ordered by stream, then seq; losses not tied to a stream last.
    stream_info : dict
        Manifest entry of each stream, by stream id.
    refused_records : int or None
        Refused records (``CAPTURE_F_REFUSED``) among ``records``, where
        the reader counted them as it checked the chunks (None: not
        counted): a reader of the records need not look for them when 0.
    batch_only_records : int or None
        Batch-only records (``CAPTURE_F_NOIDS``) among ``records``, counted
        likewise (None: not counted).
    """
    records: np.ndarray
    stream: np.ndarray
    id_offsets: np.ndarray
    ids: np.ndarray
    losses: list = field(default_factory=list)
    stream_info: dict = field(default_factory=dict)
    refused_records: Optional[int] = None
    batch_only_records: Optional[int] = None

    def __len__(self) -> int:
        return len(self.records)

    def ids_of(self, i: int) -> np.ndarray:
        """Packet ids of record `i` (a view into ``ids``)."""
        return self.ids[self.id_offsets[i]:self.id_offsets[i + 1]]

    def incomplete_windows(self) -> list:
        """Windows where records are missing, for the diagnosis JSON.

        Returns
        -------
        list of dict
            One per loss that cost records (or may have):
            ``{"stream", "nf", "from_ns", "to_ns", "kind", "records"}``;
            ``nf`` is the stream's NF name, None-valued fields are unknown.

        Examples
        --------
        >>> d = CaptureData(np.zeros(0, CAPTURE_RECORD_DTYPE), np.zeros(0, np.uint32),
        ...                 np.zeros(1, np.int64), np.zeros(0, np.uint64),
        ...                 [Loss(0, "ring_drop", 7, 3, 100, 200, "x")],
        ...                 {0: {"nf_name": "fw1"}})
        >>> d.incomplete_windows()  # doctest: +NORMALIZE_WHITESPACE
        [{'stream': 0, 'nf': 'fw1', 'from_ns': 100, 'to_ns': 200,
          'kind': 'ring_drop', 'records': 3}]
        """
        out = []
        for loss in self.losses:
            if loss.n_records == 0:
                continue
            info = self.stream_info.get(loss.stream) or {}
            out.append({"stream": loss.stream, "nf": info.get("nf_name"),
                        "from_ns": loss.t_start_ns, "to_ns": loss.t_end_ns,
                        "kind": loss.kind, "records": loss.n_records})
        return out


class Capture:
    """An opened capture directory (its manifest checked, frames not yet read).

    Attributes
    ----------
    path : pathlib.Path
    manifest : dict
        The whole manifest, optional keys included.
    streams : dict
        Manifest entry of each stream, by stream id (ascending).
    segments : list of (int, pathlib.Path)
        Segment files found, by number.
    """

    def __init__(self, path, manifest):
        self.path = Path(path)
        self.manifest = manifest
        self.streams = {s["stream"]: s for s in
                        sorted(manifest["streams"], key=lambda s: s["stream"])}
        self.segments = self._list_segments()

    def __repr__(self):
        return (f"<Capture {str(self.path)!r}: {len(self.streams)} streams, "
                f"{len(self.segments)} segments>")

    def _list_segments(self):
        found = []
        try:
            names = os.listdir(self.path)
        except OSError as exc:
            raise CaptureFormatError(f"{self.path}: cannot list: {exc.strerror}") from None
        for name in names:
            m = SEGMENT_RE.match(name)
            if m:
                found.append((int(m.group(1)), self.path / name))
        return sorted(found)

    def nf_name(self, stream: int):
        """NF name of `stream` (None if the stream is not in the manifest)."""
        return self.streams.get(stream, {}).get("nf_name")

    def _survey(self, streams=None, keep=True, per_stream=False):
        """Scan every segment and work out the losses; the shared engine of
        read(), read_streams() and info.describe()."""
        scan, want = self._scan(streams, keep)
        if keep:
            try:
                _decode_kept(scan, dict(self.segments), per_stream)
            except OSError as exc:
                raise CaptureFormatError(f"{self.path}: cannot read: {exc.strerror}") from None
        return scan, self._losses(scan, want, all_streams=streams is None)

    def _scan(self, streams, keep):
        """Every segment's frame headers and damage, frames left undecoded
        when `keep` (for _decode_kept); and the set of streams asked for."""
        if streams is None:
            want = set(self.streams)
        else:
            want = set()
            for s in streams:
                if s not in self.streams:
                    raise ValueError(
                        f"streams: {s!r} is not in {self.path / MANIFEST_NAME} "
                        f"(known: {', '.join(map(str, self.streams)) or 'none'})")
                want.add(s)
        scan = _Scan()
        self.segments = self._list_segments()
        expect = 0
        for num, path in self.segments:
            for gone in range(expect, num):
                scan.damages.append(_Damage(
                    "gap", _pos(gone, 0), f"{segment_name(gone)} is missing"))
            expect = num + 1
            try:
                _scan_segment(scan, num, path, self.streams, want, keep, defer=keep)
            except OSError as exc:
                raise CaptureFormatError(f"{path}: cannot read: {exc.strerror}") from None
            scan.segments += 1
        return scan, want

    def _losses(self, scan, want, all_streams):
        by_stream = {s: {} for s in self.streams}
        dups = []
        for e in scan.entries:
            chunks = by_stream[e.h.stream]
            kept = chunks.get(e.h.chunk_seq)
            if kept is None:
                chunks[e.h.chunk_seq] = e
                continue
            # Our writer never repeats a chunk_seq; keep the copy that
            # decoded, else the first one.
            dropped = e
            if kept.status != "ok" and e.status == "ok":
                chunks[e.h.chunk_seq], kept, dropped = e, e, kept
            dropped.status = "duplicate"
            dups.append(Loss(
                e.h.stream, "corrupt", dropped.h.first_seq, 0, None, None,
                f"{dropped.where}: duplicate of chunk_seq {e.h.chunk_seq} at "
                f"{kept.where}; ignored"))
        index = _DamageIndex(scan.damages)
        per_stream, ordered, last_t = {}, {}, {}
        for s, chunks in by_stream.items():
            ents, bad = _reject_overlaps([chunks[k] for k in sorted(chunks)])
            ordered[s] = ents
            losses, last_t[s] = _stream_losses(
                s, ents, self.streams[s].get("chunks_written"), index)
            per_stream[s] = losses + bad
        unowned = self._unowned_damage(index, ordered, last_t, per_stream, scan)
        out = []
        for s in self.streams:
            if s in want:
                out.extend(per_stream[s])
        if all_streams:
            out.extend(scan.other)
        rest = [d for d in dups if d.stream in want]
        return out + rest + unowned

    def _unowned_damage(self, index, ordered, last_t, per_stream, scan):
        """Tie damage no gap claimed to the one stream it can belong to."""
        unused = [d for d in index.items if not d.used]
        if not unused:
            return []
        # Streams whose end is unknown: no FINAL chunk and no chunks_written.
        open_ended = {s for s, ents in ordered.items()
                      if self.streams[s].get("chunks_written") is None
                      and not (ents and ents[-1].h.final)}
        decoded = sorted((e for e in scan.entries if e.t_first is not None),
                         key=lambda e: e.pos)
        keys = [e.pos for e in decoded]
        run_max, t = [], None
        for e in decoded:
            t = e.t_last if t is None else max(t, e.t_last)
            run_max.append(t)
        run_min, t = [None] * len(decoded), None
        for i in range(len(decoded) - 1, -1, -1):
            t = decoded[i].t_first if t is None else min(t, decoded[i].t_first)
            run_min[i] = t
        out = []
        for d in unused:
            cands = sorted(s for s in open_ended
                           if not ordered[s] or ordered[s][-1].pos < d.pos)
            target = None
            if d.stream_hint in cands:
                last = ordered[d.stream_hint]
                expect = last[-1].h.chunk_seq + 1 if last else 0
                if d.chunk_hint is None or d.chunk_hint == expect:
                    target = d.stream_hint
            if target is None and len(cands) == 1:
                target = cands[0]
            if target is not None:
                ents = ordered[target]
                note = ("" if target == d.stream_hint
                        else "; the only stream whose end is unknown")
                per_stream[target].append(Loss(
                    target, d.kind, ents[-1].h.next_seq if ents else None, None,
                    last_t[target], None, f"{d.detail}{note}"))
                continue
            i = bisect.bisect_left(keys, d.pos)
            t0 = run_max[i - 1] if i > 0 else None
            t1 = run_min[i] if i < len(decoded) else None
            if cands:
                tail = (f"; may hold the end of stream(s) "
                        f"{', '.join(map(str, cands))}")
                n = None
            elif scan.other:
                # Frames of streams the manifest lacks: their gaps are not
                # analysed, so this damage may hide some of theirs.
                tail, n = "; may hold chunks of streams not in the manifest", None
            else:
                tail, n = "; no stream has a chunk missing there", 0
            out.append(Loss(None, d.kind, None, n, t0, t1, f"{d.detail}{tail}"))
        return out

    def read(self, streams=None) -> CaptureData:
        """Decode the capture's records, ids and losses.

        Parameters
        ----------
        streams : iterable of int, optional
            Stream ids to read (default: all in the manifest).  Losses of
            other streams are left out; damage not tied to any stream is
            always reported.

        Returns
        -------
        CaptureData

        Raises
        ------
        ValueError
            `streams` names a stream the manifest does not have.
        CaptureFormatError
            A segment file cannot be read at all (permissions, I/O error).
            Damaged frames never raise: they become losses.

        Examples
        --------
        >>> cap = open_capture(path)                     # doctest: +SKIP
        >>> data = cap.read()                            # doctest: +SKIP
        >>> tx = data.records["flags"] & CAPTURE_F_TX    # doctest: +SKIP
        """
        scan, losses = self._survey(streams, keep=True)
        good = sorted((e for e in scan.entries if e.status == "ok"),
                      key=lambda e: (e.h.stream, e.h.chunk_seq))
        good = [e for e in good if e.h.n_records or e.h.n_ids]
        records, ids, id_offsets = _assemble(scan, good, None)
        stream = np.repeat(np.array([e.h.stream for e in good], np.uint32),
                           [e.h.n_records for e in good])
        return CaptureData(records, stream, id_offsets, ids, losses, dict(self.streams))

    def read_streams(self, streams=None):
        """:meth:`read`, stream by stream: each stream's records and ids in
        arrays of their own.

        For a reader that consumes a capture one stream at a time and lets
        each go when done (the analyzer's ``load``): the capture is then
        never held twice.  Each stream's frames are decoded straight into
        its arrays, as read() does for the whole capture.

        Parameters
        ----------
        streams : iterable of int, optional
            Only these streams (as :meth:`stream_feed`'s).

        Returns
        -------
        parts : dict
            ``{stream: CaptureData}`` for every manifest stream with
            records, ascending: that stream's records and ids (``stream``
            a read-only view of its id), no losses.
        whole : CaptureData
            No records; every loss (as read() lists them) and the manifest
            streams, for ``incomplete_windows()``.

        Raises
        ------
        CaptureFormatError
            As :meth:`read`.
        """
        scan, losses = self._survey(streams, keep=True, per_stream=True)
        by = {}
        for e in sorted((e for e in scan.entries if e.status == "ok"),
                        key=lambda e: (e.h.stream, e.h.chunk_seq)):
            if e.h.n_records or e.h.n_ids:
                by.setdefault(e.h.stream, []).append(e)
        parts = {}
        for sid in sorted(by):
            records, ids, id_offsets = _assemble(scan, by[sid], sid)
            stream = np.broadcast_to(np.uint32(sid), (len(records),))
            parts[sid] = CaptureData(records, stream, id_offsets, ids, [],
                                     {sid: self.streams[sid]},
                                     sum(e.refused[0] for e in by[sid]))
        scan.records = scan.ids = None
        empty = CaptureData(np.zeros(0, CAPTURE_RECORD_DTYPE), np.zeros(0, np.uint32),
                            np.zeros(1, np.int64), np.zeros(0, np.uint64), losses,
                            {s: st for s, st in self.streams.items()
                             if streams is None or s in streams})
        return parts, empty


    def stream_feed(self, streams=None) -> "StreamFeed":
        """:meth:`read_streams`, one stream at a time, as the caller asks.

        Only the frame headers are read here; :meth:`StreamFeed.take`
        decodes one stream's frames into arrays of their own, and
        :meth:`StreamFeed.finish` works out the losses.  A reader that
        builds what it needs from each stream and lets it go before taking
        the next (the analyzer's ``load``) then never holds the decoded
        capture whole: its memory is used again stream after stream
        instead of touched fresh, which on a VM costs up to ~2 ms per MiB
        (bench/analyze.py's 2 s capture: 444 MiB decoded, the largest
        stream 158 MiB).

        Parameters
        ----------
        streams : iterable of int, optional
            Only these streams (e.g. one host's): the others are neither
            decoded nor reported, in its losses and stream_info.

        Returns
        -------
        StreamFeed

        Raises
        ------
        CaptureFormatError
            As :meth:`read`.
        """
        scan, want = self._scan(streams, keep=True)
        return StreamFeed(self, scan, None if streams is None else want)


class StreamFeed:
    """A capture's streams, decoded one at a time (:meth:`Capture.stream_feed`).

    Attributes
    ----------
    streams : list of int
        Manifest streams with frames to decode, ascending.
    stream_info : dict
        Manifest entry of each stream, by stream id.
    n_records, n_ids : int
        Records and ids the headers of those frames declare: what
        :meth:`take` gives, unless a frame turns out damaged.
    decoded_bytes : dict
        Bytes each stream of :attr:`streams` decodes to, by its headers
        (records x 32 + ids x 8): for a caller choosing the order to take
        them in.
    unambiguous : bool
        No stream has two frames of one chunk_seq, nor chunks whose seqs
        go back over an earlier chunk's.  Only then does :meth:`take` give
        what :meth:`Capture.read_streams` would (which of two copies is
        kept, or which chunk is rejected, is known once every frame is
        decoded); otherwise it raises ValueError: read_streams() it.
    """

    def __init__(self, cap, scan, keep=None):
        self._cap, self._scan, self._keep = cap, scan, keep
        self._todo = {}
        for e in scan.entries:
            if e.status == "ok":                # (the streams not kept: "unread")
                self._todo.setdefault(e.h.stream, []).append(e)
        self.streams = sorted(self._todo)
        self.stream_info = {s: st for s, st in cap.streams.items() if keep is None or s in keep}
        ents = [e for v in self._todo.values() for e in v]
        self.n_records = sum(e.h.n_records for e in ents)
        self.n_ids = sum(e.h.n_ids for e in ents)
        self.decoded_bytes = {s: sum(e.h.raw_len for e in v) for s, v in self._todo.items()}
        self.unambiguous = _unambiguous(scan.entries)
        scan.records, scan.ids = {}, {}
        # the files and buffers of the threads taking streams at once
        self._pool = _payload_pool(dict(cap.segments))
        self._frame_index = None             # read_index(), on the first window
        self._index_lock = threading.Lock()
        #: frames with records a window's read found in no frame index
        #: (their first record read from the payload instead)
        self.unindexed = 0

    def take(self, stream, offsets=True, window=None):
        """Decode `stream`'s frames: its CaptureData, as read_streams() has
        it in ``parts``, or None when it has no records.  Each stream once.

        Parameters
        ----------
        stream : int
        offsets : bool
            False: ``id_offsets`` is None, not worked out (a cumsum over
            the records, 8 bytes each), for a caller that needs it only
            now and then (``id_counts(records)`` gives it).
        window : (int, int), optional
            Keep only the records whose time is in ``[from, to)`` (ns), and
            their ids; None when there are none.  The frames are decoded
            one at a time and each let go once cut, so what is held is the
            window, not the stream (a long capture's few seconds).  Every
            frame is still decoded and checked: the losses are the same.

        Raises
        ------
        ValueError
            Taken before, or not :attr:`unambiguous`.
        CaptureFormatError
            A segment cannot be read (as :meth:`Capture.read`).
        """
        if not self.unambiguous:
            raise ValueError("stream_feed: chunks repeat or overlap; use read_streams()")
        if stream not in self._todo:
            if stream in self.streams:
                raise ValueError(f"stream {stream} was taken already")
            return None
        ents = self._todo.pop(stream)
        if window is not None:
            return self._take_window(stream, ents, window, offsets)
        scan = self._scan
        try:
            _decode_group(scan, stream, ents, self._pool)
        except OSError as exc:
            raise CaptureFormatError(
                f"{self._cap.path}: cannot read: {exc.strerror}") from None
        good = sorted((e for e in ents if e.status == "ok" and (e.h.n_records or e.h.n_ids)),
                      key=lambda e: e.h.chunk_seq)
        out = None
        if good:
            records, ids, id_offsets = _assemble(scan, good, stream, offsets)
            out = CaptureData(records, np.broadcast_to(np.uint32(stream), (len(records),)),
                              id_offsets, ids, [], {stream: self.stream_info[stream]},
                              sum(e.refused[0] for e in good),
                              sum(e.batch_only[0] for e in good))
        del scan.records[stream], scan.ids[stream]
        for e in ents:
            # each frame's views would keep the stream's arrays alive
            # until finish(): the whole decoded capture at once (911 MiB
            # traced before finish() on bench/analyze.py's 2 s capture,
            # 444 MiB decoded)
            e.records = e.ids = None
        return out

    def first_time(self, streams=None):
        """The time of the capture's first record (refused ones left out,
        as the analyzer's NFs have them), from the first frame of each
        stream alone (of `streams` alone, where given); None when no stream
        has such a record.  For a reader that cuts a window out of
        :meth:`take` counted from there."""
        first = []
        with self._pool.taken() as src:
            for sid, ents in self._todo.items():
                if streams is not None and sid not in streams:
                    continue
                for e in sorted(ents, key=lambda e: (e.h.chunk_seq, e.pos)):
                    if not e.h.n_records:
                        continue
                    try:
                        recs = decode_payload_counted(e.h, src.read(e))[0]
                    except (CaptureFormatError, OSError):
                        continue                    # take() will say what
                    t = recs["time_ns"][(recs["flags"] & CAPTURE_F_REFUSED) == 0]
                    if len(t):
                        first.append(int(t.min()))
                        break
        return min(first, default=None)

    def _take_window(self, stream, ents, window, offsets):
        """:meth:`take` of the records of `stream` (frames `ents`) in
        `window`, frame by frame.  A frame whose records all lie a
        WINDOW_SLACK_NS or more outside the window -- by the first record
        of it and of the frame after it -- is not decoded: its first record
        alone gives its times, for the losses around it.  That time comes
        from the segment's frame index (capture/index.py), else from the
        payload, taken at its word only where the frame's checksum holds
        (a flipped bit there could move a frame of the window out of it);
        any other frame is decoded, and found damaged as without a window."""
        lo, hi = window
        order = sorted(ents, key=lambda e: (e.h.chunk_seq, e.pos))
        recs, ids = [], []
        with self._pool.taken() as src:
            try:
                firsts = [self._indexed_first_time(e, src) for e in order]
                nexts, t = [None] * len(order), None
                for i in range(len(order) - 1, -1, -1):
                    nexts[i], t = t, (firsts[i] if firsts[i] is not None else t)
                for e, first, nxt in zip(order, firsts, nexts):
                    if e.h.n_records and first is not None and (
                            (nxt is not None and nxt + WINDOW_SLACK_NS <= lo)
                            or first - WINDOW_SLACK_NS >= hi):
                        _skipped(e, first, nxt)
                        continue
                    try:
                        _decode(e, src.read(e), True)
                    except CaptureFormatError as exc:
                        e.status, e.detail = "corrupt", str(exc)
                    cut = (records_in_window(e.records, e.ids, lo, hi)
                           if e.status == "ok" and len(e.records) else None)
                    if cut is not None:
                        recs.append(cut[0])
                        ids.append(cut[1])
                    e.records = e.ids = None            # the frame goes once cut
            except OSError as exc:
                raise CaptureFormatError(
                    f"{self._cap.path}: cannot read: {exc.strerror}") from None
        if not recs:
            return None
        records = np.concatenate(recs)
        ids = np.concatenate(ids).astype(np.uint64, copy=False)
        del recs
        counts = id_counts(records)
        id_offsets = np.r_[0, np.cumsum(counts)] if offsets else None
        flags = records["flags"]
        return CaptureData(records, np.broadcast_to(np.uint32(stream), (len(records),)),
                           id_offsets, ids, [], {stream: self.stream_info[stream]},
                           int(np.count_nonzero(flags & CAPTURE_F_REFUSED)),
                           int(np.count_nonzero(flags & CAPTURE_F_NOIDS)))

    def _indexed_first_time(self, e, src):
        """The time of frame `e`'s first record: from the segment's frame
        index where it has the frame, else from its payload
        (:func:`_first_time`)."""
        with self._index_lock:
            if self._frame_index is None:
                self._frame_index = read_index(dict(self._cap.segments))
        t = indexed_time(self._frame_index, e.seg, e.off, e.h)
        if t is not None:
            return t
        if e.h.n_records:
            self.unindexed += 1             # (threads: a count to tell, not to act on)
        return _first_time(e, src)

    def frame_times(self):
        """``{(segment, offset): (stream, chunk_seq, payload_crc32,
        first_time)}`` of the frames with records not yet taken whose
        payload's checksum holds, each from its payload's first record:
        what a frame index of them says (``mscope capture index``)."""
        out = {}
        with self._pool.taken() as src:
            for ents in self._todo.values():
                for e in ents:
                    t = _first_time(e, src)
                    if t is not None:
                        out[(e.seg, e.off)] = (e.h.stream, e.h.chunk_seq, e.h.payload_crc32, t)
        return out

    def close(self):
        """Let go of the segment files without :meth:`finish`: for a
        reader that took what it wanted to look at, not a capture."""
        self._pool.close()

    def finish(self) -> CaptureData:
        """The losses, once every stream is taken (those not taken are
        decoded now, for the times around their gaps): a CaptureData with
        no records, as read_streams()' ``whole``."""
        for s in list(self._todo):
            if self.unambiguous:
                self.take(s, offsets=False)
            else:
                _decode_group(self._scan, s, self._todo.pop(s), self._pool)
        self._pool.close()
        cap = self._cap
        losses = cap._losses(self._scan, set(cap.streams) if self._keep is None else self._keep,
                             all_streams=self._keep is None)
        return CaptureData(np.zeros(0, CAPTURE_RECORD_DTYPE), np.zeros(0, np.uint32),
                           np.zeros(1, np.int64), np.zeros(0, np.uint64), losses,
                           dict(self.stream_info))


#: How far a frame's records may lie past the next frame's first: a
#: stream's times step back by less than TIME_BACK_NS.
WINDOW_SLACK_NS = TIME_BACK_NS


def records_in_window(records, ids, lo, hi):
    """Capture records (and their ids, the records' id block) whose time is
    in ``[lo, hi)``, as ``(records, ids)``; None for none."""
    t = records["time_ns"]
    k = (t >= lo) & (t < hi)
    if not k.any():
        return None
    return records[k], ids[np.repeat(k, id_counts(records))]


def _first_time(e, src):
    """The time of frame `e`'s first record (read through `src`), None
    where it has none or its payload's checksum does not hold."""
    if not e.h.n_records:
        return None
    payload = src.read(e)
    if zlib.crc32(payload) != e.h.payload_crc32:
        return None
    return first_record_time(payload, e.h.codec)


def _skipped(e, first, nxt):
    """Entry `e`, not decoded for being far from a window: its times from
    its first record and the next frame's (`nxt`, None for none), and the
    seqs its header says are missing inside as one run over them, so that
    the losses around it and in it are still told."""
    e.t_first, e.t_last = first, first if nxt is None else max(first, nxt)
    internal = e.h.next_seq - e.h.first_seq - e.h.n_records
    if internal > 0:
        e.runs = (np.array([e.h.first_seq + 1], np.uint64), np.array([internal], np.uint64),
                  np.array([e.t_first]), np.array([e.t_last]))


def _unambiguous(entries):
    """No chunk_seq twice in a stream and no chunk's seqs going back over
    the previous chunk's: then every frame is kept and _losses keeps
    exactly those that decode."""
    by = {}
    for e in entries:
        by.setdefault(e.h.stream, []).append(e.h)
    for hs in by.values():
        hs.sort(key=lambda h: h.chunk_seq)
        for a, b in zip(hs, hs[1:]):
            if a.chunk_seq == b.chunk_seq or b.first_seq < a.next_seq:
                return False
    return True


def open_capture(path) -> Capture:
    """Open a capture directory and check its manifest.

    Parameters
    ----------
    path : str or os.PathLike
        The capture directory (``manifest.json`` and ``chunks-*.msc``).

    Returns
    -------
    Capture
        Call :meth:`Capture.read` for the records.

    Raises
    ------
    CaptureFormatError
        The directory or its manifest is missing or malformed (one line
        naming the file and the problem).

    Examples
    --------
    >>> cap = open_capture("run1.capture")                # doctest: +SKIP
    >>> data = cap.read()                                 # doctest: +SKIP
    >>> [l.kind for l in data.losses]                     # doctest: +SKIP
    ['ring_drop']
    """
    return Capture(path, load_manifest(path))
