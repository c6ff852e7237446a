"""Write a capture directory: manifest.json plus append-only frame segments.

Used by mscope-collect and the simulator.  Crash safety comes from the
layout, not from locking: the manifest is replaced atomically (temp file,
fsync, rename) before the first frame of any new stream, and each frame goes
to its segment in one ``write`` call, so a crash leaves at most the last
frame cut, which the reader reports as "truncated".

One writer per directory, used from one thread.
"""
import json
import os
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mscope import __version__
from mscope.errors import CaptureFormatError

from .format import (CAPTURE_RECORD_DTYPE, CAPTURE_RECORD_SIZE, CODEC_IDS,
                     FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME,
                     MAX_CHUNK_RAW_BYTES, PACKET_ID_DTYPE, RECORD_VERSION,
                     SEGMENT_BYTES_DEFAULT, SEGMENT_RE, compress_payload,
                     encode_frame, segment_name)
from .reader import load_manifest

__all__ = ["CaptureWriter", "CaptureStats"]

_DIR_MODE = 0o750      # the analyzer's group may read a capture, others not
_FILE_MODE = 0o640
#: Manifest keys the writer owns; set_manifest_entry() may set any other.
_MANAGED = ("format", "version", "record_version", "hosts", "nfs", "streams")
_LEVEL_DEFAULT = {"none": 0, "zstd": 3, "lz4": 0}
_U64 = (1 << 64) - 1


class CaptureStats(NamedTuple):
    """What a writer has written so far."""
    chunks: int
    records: int
    ids: int
    raw_bytes: int       # sum of raw_len
    stored_bytes: int    # frame bytes on disk, headers included


class _StreamState:
    __slots__ = ("chunk_seq", "next_seq", "drop_records", "drop_packets", "final")

    def __init__(self):
        self.chunk_seq = self.next_seq = 0
        self.drop_records = self.drop_packets = 0
        self.final = False


class CaptureWriter:
    """Write records to a capture directory.

    Parameters
    ----------
    path : str or os.PathLike
        Capture directory; created with mode 0750 if missing.
    producer : str
        Stored as the manifest's ``producer`` (e.g. ``"mscope-collect 0.1.0"``).
    codec : {"zstd", "lz4", "none"}
        Payload compression of every frame.
    level : int, optional
        Compression level; default 3 for zstd and 0 (fast mode) for lz4,
        whose levels from 3 up switch to the much slower HC mode.
    segment_bytes : int
        A new segment file is started when the next frame would take the
        current one past this size (a larger frame gets a segment alone).
    exist_ok : bool
        Allow an existing non-empty directory, as long as it holds no
        segment file (a manifest there is loaded and kept).  Appending
        frames to a capture that has some is not supported.

    Raises
    ------
    FileExistsError
        `path` is a file, a non-empty directory without `exist_ok`, or a
        capture that already holds segment files.
    ValueError
        Bad codec, level or segment_bytes.
    CaptureFormatError
        `exist_ok` and the directory's manifest is malformed, or the codec's
        package is not installed.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from mscope.capture import CaptureWriter, CAPTURE_RECORD_DTYPE, open_capture
    >>> d = os.path.join(tempfile.mkdtemp(), "cap")
    >>> rec = np.zeros(2, CAPTURE_RECORD_DTYPE)
    >>> rec["seq"], rec["count"], rec["time_ns"] = [0, 1], [2, 1], [100, 250]
    >>> with CaptureWriter(d, producer="doctest") as w:
    ...     host = w.add_host("node1", tsc_hz=2.6e9)
    ...     s = w.add_stream(host, nf_id=1, nf_name="fw1")
    ...     nbytes = w.write_chunk(s, rec, np.array([7, 8, 9], np.uint64), final=True)
    >>> data = open_capture(d).read()
    >>> data.ids_of(0).tolist(), data.losses
    ([7, 8], [])
    """

    def __init__(self, path, producer=f"mscope {__version__}", codec="zstd",
                 level=None, segment_bytes=SEGMENT_BYTES_DEFAULT, exist_ok=False):
        if codec not in CODEC_IDS:
            raise ValueError(f"codec: {codec!r} is not one of "
                             f"{', '.join(sorted(CODEC_IDS))}")
        if level is None:
            level = _LEVEL_DEFAULT[codec]
        if isinstance(level, bool) or not isinstance(level, int):
            raise ValueError(f"level: {level!r} is not an integer")
        if isinstance(segment_bytes, bool) or not isinstance(segment_bytes, int) \
                or segment_bytes <= 0:
            raise ValueError(f"segment_bytes: {segment_bytes!r} is not a positive integer")
        self._codec = CODEC_IDS[codec]
        self._level = level
        try:
            # Fail here, not on the first chunk, on a missing codec package
            # or a level the codec refuses.
            compress_payload(b"probe", self._codec, level)
        except CaptureFormatError:
            raise
        except Exception as exc:
            raise ValueError(f"level: {codec} refuses level {level}: {exc}") from None
        self.path = Path(path)
        self.segment_bytes = segment_bytes
        self._fd = None
        self._seg_no = 0
        self._seg_size = 0
        self._closed = False
        self._streams = {}
        self._chunks = self._records = self._ids = 0
        self._raw = self._stored = 0
        manifest = self._prepare_dir(exist_ok)
        if manifest is None:
            manifest = {
                "format": FORMAT_NAME, "version": FORMAT_VERSION,
                "record_version": RECORD_VERSION,
                "created_unix_ns": time.time_ns(), "producer": producer,
                "time": {"unit": "ns", "clock": "CLOCK_MONOTONIC of host 0"},
                "hosts": [], "nfs": [], "streams": [],
            }
        else:
            manifest["producer"] = producer
            for st in manifest["streams"]:
                # Counts of an earlier writer's close; ours are set at close().
                st.pop("chunks_written", None)
                self._streams[st["stream"]] = _StreamState()
        self._manifest = manifest
        self._write_manifest()

    # --- directory and manifest --------------------------------------------

    def _prepare_dir(self, exist_ok):
        p = self.path
        if not p.exists():
            p.mkdir(mode=_DIR_MODE, parents=True)
            os.chmod(p, _DIR_MODE)      # mkdir's mode is filtered by the umask
            return None
        if not p.is_dir():
            raise FileExistsError(f"{p}: exists and is not a directory")
        names = os.listdir(p)
        if names and not exist_ok:
            raise FileExistsError(
                f"{p}: directory is not empty (pass exist_ok=True to write into it)")
        segs = sorted(n for n in names if SEGMENT_RE.match(n))
        if segs:
            raise FileExistsError(
                f"{p}: already holds segment files ({segs[0]}, ...); "
                "appending to a capture is not supported")
        if MANIFEST_NAME in names:
            return load_manifest(p)
        return None

    def _write_manifest(self):
        data = (json.dumps(self._manifest, indent=1, allow_nan=False) + "\n").encode()
        fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=self.path)
        try:
            try:
                os.fchmod(fd, _FILE_MODE)
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            # The rename is the commit: a reader sees the old or the new
            # manifest, never half of one.
            os.replace(tmp, self.path / MANIFEST_NAME)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self._fsync_dir()

    def _fsync_dir(self):
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def set_manifest_entry(self, key: str, value):
        """Set an optional manifest key (e.g. ``"topology"``) and rewrite it.

        Parameters
        ----------
        key : str
            Any key but format, version, record_version, hosts, nfs, streams.
        value
            JSON-serialisable.

        Raises
        ------
        TypeError
            `value` is not JSON-serialisable.
        ValueError
            `key` is managed by the writer, or `value` holds NaN or infinity.
        """
        if key in _MANAGED:
            raise ValueError(f"key: {key!r} is managed by the writer")
        if key == "time" and not (isinstance(value, dict) and value.get("unit") == "ns"):
            raise ValueError("value: 'time' must be an object with unit 'ns'")
        json.dumps(value, allow_nan=False)
        self._check_open()
        self._manifest[key] = value
        self._write_manifest()

    @property
    def manifest(self) -> dict:
        """A copy of the manifest as last written."""
        return json.loads(json.dumps(self._manifest))

    # --- hosts and streams --------------------------------------------------

    def add_host(self, name: str, tsc_hz=None) -> int:
        """Declare a host; return its host number.

        Parameters
        ----------
        name : str
            Host name as the user knows it.
        tsc_hz : float, optional
            The host's calibrated TSC rate (``null`` in the manifest if
            unknown).

        Returns
        -------
        int
            The new host's number (0, 1, ... in order of addition).

        Raises
        ------
        ValueError
            Empty name or a non-positive tsc_hz.
        """
        self._check_open()
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: {name!r} is not a non-empty string")
        if tsc_hz is not None:
            tsc_hz = float(tsc_hz)
            if not tsc_hz > 0:
                raise ValueError(f"tsc_hz: {tsc_hz} is not positive")
        hosts = self._manifest["hosts"]
        host = max((h["host"] for h in hosts), default=-1) + 1
        hosts.append({"host": host, "name": name, "tsc_hz": tsc_hz})
        self._write_manifest()
        return host

    def add_stream(self, host: int, nf_id: int, nf_name: str, lcore: int = 0,
                   pid=None, ring=None) -> int:
        """Declare a stream (one ring: one NF on one lcore); return its id.

        The manifest is rewritten before this returns, so it always names
        every stream that has frames.  The NF is added to ``nfs`` if new.

        Parameters
        ----------
        host : int
            From :meth:`add_host`.
        nf_id : int
            The NF's numeric id (u16), as in its records.
        nf_name : str
        lcore : int
        pid : int, optional
            The NF process id.
        ring : str, optional
            Path of the ring file.

        Returns
        -------
        int
            The new stream id (0, 1, ... in order of addition).

        Raises
        ------
        ValueError
            Unknown host, nf_id out of range, or an nf_id already declared
            with another name or host.
        """
        self._check_open()
        hosts = {h["host"] for h in self._manifest["hosts"]}
        if host not in hosts:
            raise ValueError(f"host: {host!r} was not added (add_host first)")
        if isinstance(nf_id, bool) or not isinstance(nf_id, int) or not 0 <= nf_id <= 0xFFFF:
            raise ValueError(f"nf_id: {nf_id!r} is not an integer in 0..65535")
        if not isinstance(nf_name, str) or not nf_name:
            raise ValueError(f"nf_name: {nf_name!r} is not a non-empty string")
        nfs = self._manifest["nfs"]
        known = next((nf for nf in nfs if nf["nf_id"] == nf_id), None)
        if known is None:
            nfs.append({"nf_id": nf_id, "name": nf_name, "host": host})
        elif known["name"] != nf_name or known["host"] != host:
            raise ValueError(
                f"nf_id: {nf_id} is already {known['name']!r} on host "
                f"{known['host']}, not {nf_name!r} on host {host}")
        streams = self._manifest["streams"]
        stream = max((s["stream"] for s in streams), default=-1) + 1
        streams.append({"stream": stream, "host": host, "nf_id": nf_id,
                        "nf_name": nf_name, "lcore": int(lcore),
                        "pid": None if pid is None else int(pid),
                        "ring": None if ring is None else str(ring)})
        self._write_manifest()
        self._streams[stream] = _StreamState()
        return stream

    # --- frames -------------------------------------------------------------

    def write_chunk(self, stream: int, records, ids, *, drop_records: int = 0,
                    drop_packets: int = 0, first_seq=None, final: bool = False) -> int:
        """Append one chunk of one stream as a frame.

        Parameters
        ----------
        stream : int
            From :meth:`add_stream`.
        records : ndarray of CAPTURE_RECORD_DTYPE
            The chunk's records, seq strictly increasing (gaps are ring
            drops) and not below the previous chunk's.
        ids : array of unsigned integers
            ``records["count"].sum()`` packet ids, record by record.
        drop_records, drop_packets : int
            The ring's cumulative drop counters when the chunk was cut (they
            never decrease).
        first_seq : int, optional
            For an empty chunk, the next seq the ring will give (default:
            the previous chunk's next_seq); with records it must equal the
            first record's seq.
        final : bool
            The ring is closed and drained: no chunk may follow.

        Returns
        -------
        int
            Bytes written (header and payload).

        Raises
        ------
        TypeError
            records or ids of the wrong type.
        ValueError
            A rule above is broken, the stream is unknown or already final,
            the writer is closed, or the chunk exceeds MAX_CHUNK_RAW_BYTES.
        OSError
            The write failed; the chunk is not written (a partial frame may
            be on disk, which readers report as damage) and the next chunk
            goes to a new segment.
        """
        self._check_open()
        st = self._streams.get(stream)
        if st is None:
            raise ValueError(f"stream: {stream!r} was not added (add_stream first)")
        if st.final:
            raise ValueError(f"stream: {stream} already wrote its final chunk")
        if not isinstance(records, np.ndarray) or records.dtype != CAPTURE_RECORD_DTYPE:
            got = records.dtype if isinstance(records, np.ndarray) else type(records).__name__
            raise TypeError(f"records: must be an ndarray of CAPTURE_RECORD_DTYPE, got {got}")
        if records.ndim != 1:
            raise ValueError(f"records: must be 1-d, got shape {records.shape}")
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"ids: must be 1-d, got shape {ids.shape}")
        if ids.size and ids.dtype.kind not in "ui":
            raise TypeError(f"ids: must be unsigned integers, got {ids.dtype}")
        if ids.size and ids.dtype.kind == "i" and ids.min() < 0:
            raise ValueError("ids: negative packet id")
        ids = np.ascontiguousarray(ids, dtype=PACKET_ID_DTYPE)
        n, n_ids = len(records), len(ids)
        total = int(records["count"].sum(dtype=np.uint64))
        if total != n_ids:
            raise ValueError(f"ids: records' count sums to {total}, got {n_ids} ids")
        seq = records["seq"]
        if n > 1 and not np.all(seq[1:] > seq[:-1]):
            raise ValueError("records: seq must increase strictly within a chunk")
        if n:
            first = int(seq[0])
            if first_seq is not None and int(first_seq) != first:
                raise ValueError(f"first_seq: {first_seq} is not the first record's seq {first}")
            next_seq = int(seq[-1]) + 1
            if next_seq > _U64:
                raise ValueError("records: seq 2**64-1 leaves no next_seq")
        else:
            first = st.next_seq if first_seq is None else int(first_seq)
            if not 0 <= first <= _U64:
                raise ValueError(f"first_seq: {first} is not a u64")
            next_seq = first
        if first < st.next_seq:
            raise ValueError(f"records: seq {first} is below next_seq {st.next_seq} "
                             f"of stream {stream}'s previous chunk")
        drop_records, drop_packets = int(drop_records), int(drop_packets)
        for name, new, old in (("drop_records", drop_records, st.drop_records),
                               ("drop_packets", drop_packets, st.drop_packets)):
            if not old <= new <= _U64:
                raise ValueError(f"{name}: cumulative counter cannot go from {old} to {new}")
        raw_len = n * CAPTURE_RECORD_SIZE + n_ids * 8
        if raw_len > MAX_CHUNK_RAW_BYTES:
            raise ValueError(f"records: chunk of {raw_len} raw bytes exceeds "
                             f"MAX_CHUNK_RAW_BYTES ({MAX_CHUNK_RAW_BYTES}); split it")
        frame = encode_frame(records, ids, stream=stream, chunk_seq=st.chunk_seq,
                             first_seq=first, next_seq=next_seq,
                             drop_records=drop_records, drop_packets=drop_packets,
                             final=final, codec=self._codec, level=self._level)
        if self._fd is not None and self._seg_size \
                and self._seg_size + len(frame) > self.segment_bytes:
            self._close_segment()
            self._seg_no += 1
        if self._fd is None:
            self._open_segment()
        try:
            _write_all(self._fd, frame)
        except OSError:
            # Leave the partial frame as the cut end of this segment.
            self._close_segment(sync=False)
            self._seg_no += 1
            raise
        self._seg_size += len(frame)
        st.chunk_seq += 1
        st.next_seq = next_seq
        st.drop_records, st.drop_packets = drop_records, drop_packets
        st.final = bool(final)
        self._chunks += 1
        self._records += n
        self._ids += n_ids
        self._raw += raw_len
        self._stored += len(frame)
        return len(frame)

    def _open_segment(self):
        path = self.path / segment_name(self._seg_no)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(path, flags, _FILE_MODE)
        os.fchmod(self._fd, _FILE_MODE)     # the umask may have narrowed it
        self._seg_size = 0
        self._fsync_dir()

    def _close_segment(self, sync=True):
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def stats(self) -> CaptureStats:
        """Chunks, records, ids, raw bytes and stored bytes written so far."""
        return CaptureStats(self._chunks, self._records, self._ids,
                            self._raw, self._stored)

    def flush(self):
        """Make every frame written so far durable (fsync the segment)."""
        self._check_open()
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self):
        """fsync and close; record each stream's chunk count in the manifest.

        ``chunks_written`` lets a reader see that chunks at the end of a
        stream are missing (a capture cut at a frame boundary, a lost last
        segment), which frames alone cannot show.  Closing twice is a no-op.
        """
        if self._closed:
            return
        self._closed = True
        self._close_segment()
        for st in self._manifest["streams"]:
            st["chunks_written"] = self._streams[st["stream"]].chunk_seq
        self._write_manifest()

    def _check_open(self):
        if self._closed:
            raise ValueError(f"{self.path}: the capture writer is closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._closed else f"segment {self._seg_no}"
        return f"<CaptureWriter {str(self.path)!r} {state}, {self._chunks} chunks>"


def _write_all(fd, data):
    # os.write on a regular file writes everything short of an error or a
    # > 2 GiB buffer; the loop covers the latter without a second frame.
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
