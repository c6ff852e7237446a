"""Write a capture directory: manifest.json plus append-only frame segments.

Used by mscope-collect, `mscope receive` and the simulator.  Crash safety
comes from the layout: the manifest is replaced atomically (temp file,
fsync, rename) before the first frame of any new stream, and each frame goes
to its segment in one ``write`` call, so a crash leaves at most the last
frame cut, which the reader reports as "truncated".

One writer per directory (an flock on the directory keeps a second one out),
used from one thread.  ``write_chunk`` encodes records; ``write_frame``
appends a frame encoded elsewhere (a collector's, received over the wire)
as is.  ``CaptureWriter.open_append`` goes on writing a capture that an
earlier writer, closed or killed, left behind.
"""
import json
import os
import time
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mscope import __version__
from mscope.errors import CaptureFormatError, FrameRejectedError

from .format import (CAPTURE_RECORD_DTYPE, CAPTURE_RECORD_SIZE, CODEC_IDS,
                     FORMAT_NAME, FORMAT_VERSION, FRAME_HEADER_SIZE,
                     FRAME_VERSION, MANIFEST_NAME, MAX_CHUNK_RAW_BYTES,
                     PACKET_ID_DTYPE, RECORD_VERSION, SEGMENT_BYTES_DEFAULT,
                     SEGMENT_RE, FrameHeader, check_frame_header,
                     compress_payload, decode_payload, encode_frame,
                     first_record_time, pack_frame_header, records_problem,
                     segment_name, unpack_frame_header)
from .files import replace_whole
from .files import write_all as _write_all
from .index import IndexFile, index_path
from .lock import lock_capture
from .reader import last_chunk_headers, load_manifest

__all__ = ["CaptureWriter", "CaptureStats", "StreamPosition", "FRAME_REJECT_KINDS",
           "check_frame"]

_DIR_MODE = 0o750      # the analyzer's group may read a capture, others not
_FILE_MODE = 0o640
#: Manifest keys the writer owns; set_manifest_entry() may set any other.
_MANAGED = ("format", "version", "record_version", "hosts", "nfs", "streams")
#: Keys of hosts[] and streams[] entries the writer owns; add_host,
#: add_stream and update_streams may add any other (e.g. "collector").
_HOST_KEYS = ("host", "name", "tsc_hz")
_STREAM_KEYS = ("stream", "host", "nf_id", "nf_name", "lcore", "pid", "ring",
                "chunks_written")

#: Why write_frame refuses a frame (FrameRejectedError.kind):
#: short_frame   fewer bytes than a header, or than the header's payload_len
#: frame_length  more bytes than the header says
#: frame_header  bad magic or header crc32
#: frame_version a frame version this writer does not know
#: frame_fields  codec, lengths or seq fields that cannot be right
#: payload_crc   payload crc32 mismatch
#: payload       payload does not decode to what the header says (check_payload)
#: duplicate     the stream's last chunk_seq again
#: regression    a chunk_seq below the stream's last
#: seq_regression  ring seqs or drop counters below the previous chunk's
#: after_final   a chunk after the stream's FINAL chunk
FRAME_REJECT_KINDS = ("short_frame", "frame_length", "frame_header",
                      "frame_version", "frame_fields", "payload_crc", "payload",
                      "duplicate", "regression", "seq_regression", "after_final")
_LEVEL_DEFAULT = {"none": 0, "zstd": 3, "lz4": 0}
_U64 = (1 << 64) - 1


class CaptureStats(NamedTuple):
    """What a writer has written so far."""
    chunks: int
    records: int
    ids: int
    raw_bytes: int       # sum of raw_len
    stored_bytes: int    # frame bytes on disk, headers included


class StreamPosition(NamedTuple):
    """Where a stream of a writer stands (:meth:`CaptureWriter.position`)."""
    chunk_seq: int       # the chunk_seq that continues the stream without a gap
    next_seq: int        # ring seq the next chunk may start at, at the lowest
    final: bool          # the stream's FINAL chunk is written


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
        segment file (a manifest there is loaded and kept).  To go on
        writing a capture that has segments, use :meth:`open_append`.

    Raises
    ------
    FileExistsError
        `path` is a file, a non-empty directory without `exist_ok`, a
        capture that already holds segment files, or a directory another
        writer has open.
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
                 level=None, segment_bytes=SEGMENT_BYTES_DEFAULT, exist_ok=False,
                 _append=False):
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
        self._producer = producer
        self._fd = None
        self._index = None
        self._lock_fd = None
        self._seg_no = 0
        self._seg_size = 0
        self._closed = True          # until the directory is ours
        self._streams = {}
        self._chunks = self._records = self._ids = 0
        self._raw = self._stored = 0
        if _append:
            self._open_existing()
            return
        manifest = self._prepare_dir(exist_ok)
        self._lock()
        self._closed = False
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

    @classmethod
    def open_append(cls, path, producer=f"mscope {__version__}", codec="zstd",
                    level=None, segment_bytes=SEGMENT_BYTES_DEFAULT):
        """Go on writing an existing capture, in a new segment file.

        The manifest's hosts, NFs and streams are kept, with every optional
        key (e.g. a receiver's collector mapping).  Each stream's sequence
        checks go on from the last frame header found in the segments, so
        :meth:`write_frame` refuses what the capture already holds, and a
        chunk_seq jump across the restart is a gap the reader reports.
        A last frame cut short by a killed writer is left as it is (the
        reader reports it as "truncated"); nothing already written is
        rewritten but the manifest.

        Parameters
        ----------
        path : str or os.PathLike
            A capture directory with a manifest (segments optional).
        producer, codec, level, segment_bytes
            As for the constructor; `producer` is added to the manifest's
            ``appended_by`` list, ``producer`` stays the original writer's.

        Returns
        -------
        CaptureWriter

        Raises
        ------
        CaptureFormatError
            `path` is not a capture (no directory, no or a bad manifest), or
            a segment cannot be read.
        FileExistsError
            Another writer has the capture open.

        Examples
        --------
        >>> w = CaptureWriter.open_append("run1.capture")       # doctest: +SKIP
        >>> w.position(0).chunk_seq                             # doctest: +SKIP
        42
        """
        return cls(path, producer=producer, codec=codec, level=level,
                   segment_bytes=segment_bytes, _append=True)

    def _open_existing(self):
        p = self.path
        load_manifest(p)                     # a capture at all? (one-line error)
        self._lock()
        try:
            # Loaded again under the lock: the first look may predate a
            # writer that has just closed.
            manifest = load_manifest(p)
            last = last_chunk_headers(p, manifest)
            segs = [int(m.group(1)) for m in map(SEGMENT_RE.match, os.listdir(p)) if m]
        except BaseException:
            self._unlock()
            raise
        self._seg_no = max(segs, default=-1) + 1
        for st in manifest["streams"]:
            state = _StreamState()
            h = last.get(st["stream"])
            if h is not None:
                state.chunk_seq = h.chunk_seq + 1
                state.next_seq = h.next_seq
                state.drop_records, state.drop_packets = h.drop_records, h.drop_packets
                state.final = h.final
            # A closed writer's count may exceed the frames found (a lost
            # last segment): keep it, so the reader still sees the loss.
            written = st.pop("chunks_written", None)
            if isinstance(written, int) and written > state.chunk_seq:
                state.chunk_seq = written
            self._streams[st["stream"]] = state
        manifest.setdefault("appended_by", []).append(
            {"producer": self._producer, "unix_ns": time.time_ns(),
             "first_segment": self._seg_no})
        self._manifest = manifest
        self._closed = False
        self._write_manifest()

    def _lock(self):
        self._lock_fd = lock_capture(self.path)

    def _unlock(self):
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)          # releases the flock

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
                "appending to a capture is not supported here "
                "(CaptureWriter.open_append does it)")
        if MANIFEST_NAME in names:
            return load_manifest(p)
        return None

    def _write_manifest(self):
        data = (json.dumps(self._manifest, indent=1, allow_nan=False) + "\n").encode()
        replace_whole(self.path / MANIFEST_NAME, data, _FILE_MODE)
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

    def add_host(self, name: str, tsc_hz=None, extra=None) -> int:
        """Declare a host; return its host number.

        Parameters
        ----------
        name : str
            Host name as the user knows it.
        tsc_hz : float, optional
            The host's calibrated TSC rate (``null`` in the manifest if
            unknown).
        extra : dict, optional
            Optional keys for the host's manifest entry (JSON values; not
            host, name or tsc_hz).

        Returns
        -------
        int
            The new host's number (0, 1, ... in order of addition).

        Raises
        ------
        ValueError
            Empty name, a tsc_hz not positive and finite, or an `extra` key
            the writer owns.
        """
        self._check_open()
        extra = _check_extra("extra", extra, _HOST_KEYS)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: {name!r} is not a non-empty string")
        if tsc_hz is not None:
            tsc_hz = float(tsc_hz)
            # (inf is no JSON: taken into the manifest, every write of it
            # after failed, and a receiver refused every stream from then on)
            if not 0 < tsc_hz < float("inf"):
                raise ValueError(f"tsc_hz: {tsc_hz} is not a positive finite number")
        hosts = self._manifest["hosts"]
        host = max((h["host"] for h in hosts), default=-1) + 1
        hosts.append({"host": host, "name": name, "tsc_hz": tsc_hz, **extra})
        self._write_manifest()
        return host

    def add_stream(self, host: int, nf_id: int, nf_name: str, lcore: int = 0,
                   pid=None, ring=None, extra=None) -> int:
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
        extra : dict, optional
            Optional keys for the stream's manifest entry (JSON values; not
            one the writer owns, such as stream, nf_id or chunks_written).

        Returns
        -------
        int
            The new stream id (0, 1, ... in order of addition).

        Raises
        ------
        ValueError
            Unknown host, nf_id out of range, an nf_id already declared with
            another name on the same host (a host of the same name), or an
            `extra` key the writer owns.
        """
        self._check_open()
        extra = _check_extra("extra", extra, _STREAM_KEYS)
        hosts = {h["host"] for h in self._manifest["hosts"]}
        if host not in hosts:
            raise ValueError(f"host: {host!r} was not added (add_host first)")
        if isinstance(nf_id, bool) or not isinstance(nf_id, int) or not 0 <= nf_id <= 0xFFFF:
            raise ValueError(f"nf_id: {nf_id!r} is not an integer in 0..65535")
        if not isinstance(nf_name, str) or not nf_name:
            raise ValueError(f"nf_name: {nf_name!r} is not a non-empty string")
        # an NF is its host's: a fleet of hosts running the same chain
        # ships the same nf_ids to one receiver (mscope diagnose --host
        # takes them a host at a time)
        nfs = self._manifest["nfs"]
        known = next((nf for nf in nfs
                      if nf["nf_id"] == nf_id and self._same_host(nf["host"], host)), None)
        if known is None:
            nfs.append({"nf_id": nf_id, "name": nf_name, "host": host})
        elif known["name"] != nf_name:
            raise ValueError(
                f"nf_id: {nf_id} is already {known['name']!r} on host "
                f"{known['host']}, not {nf_name!r}")
        streams = self._manifest["streams"]
        stream = max((s["stream"] for s in streams), default=-1) + 1
        streams.append({"stream": stream, "host": host, "nf_id": nf_id,
                        "nf_name": nf_name, "lcore": int(lcore),
                        "pid": None if pid is None else int(pid),
                        "ring": None if ring is None else str(ring), **extra})
        self._write_manifest()
        self._streams[stream] = _StreamState()
        return stream

    def _same_host(self, a: int, b: int) -> bool:
        # Two host entries of one name are one machine seen twice (e.g. a
        # restarted collector, whose clock calibration is its own): its NFs
        # keep their nf_id.
        if a == b:
            return True
        names = {h["host"]: h["name"] for h in self._manifest["hosts"]}
        return names.get(a) == names.get(b)

    def update_streams(self, values: dict):
        """Set optional keys of stream entries; rewrite the manifest once.

        Parameters
        ----------
        values : dict
            ``{stream: {key: value}}``; keys the writer owns (stream, host,
            nf_id, nf_name, lcore, pid, ring, chunks_written) are refused.
            Nothing is written when no value changes.

        Raises
        ------
        ValueError
            Unknown stream, a key the writer owns, or NaN/infinity.
        TypeError
            A value that is not JSON-serialisable.
        """
        self._check_open()
        entries = {st["stream"]: st for st in self._manifest["streams"]}
        checked = []
        for stream, keys in values.items():
            if stream not in entries:
                raise ValueError(f"values: stream {stream!r} was not added")
            checked.append((entries[stream], _check_extra("values", keys, _STREAM_KEYS)))
        changed = False
        for entry, keys in checked:
            for key, value in keys.items():
                if entry.get(key, _MISSING) != value:
                    entry[key] = value
                    changed = True
        if changed:
            self._write_manifest()

    def position(self, stream: int) -> StreamPosition:
        """Where `stream` stands: the chunk_seq and seq that continue it.

        ``chunk_seq`` is 0 for a stream with no chunk yet; after
        :meth:`open_append`, one past the last chunk found in the capture.

        Raises
        ------
        ValueError
            Unknown stream.
        """
        st = self._streams.get(stream)
        if st is None:
            raise ValueError(f"stream: {stream!r} was not added (add_stream first)")
        return StreamPosition(st.chunk_seq, st.next_seq, st.final)

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
            The packet ids, record by record: ``count`` per record, none
            for a batch-only record (``CAPTURE_F_NOIDS``, whose ``count``
            is the batch's packets; see ``format.id_counts``).
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
            A rule above is broken (a record both batch-only and an
            address record among them), the stream is unknown or already
            final, the writer is closed, or the chunk exceeds
            MAX_CHUNK_RAW_BYTES.
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
        problem = records_problem(records, n_ids)
        if problem is not None:
            raise ValueError(f"records: {problem}")
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
        self._append(_write_all, frame, len(frame), unpack_frame_header(frame),
                     int(records["time_ns"][0]) if n else None)
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

    def write_frame(self, stream: int, frame, *, check_payload: bool = False,
                    encoded_here: bool = False, first_time=None) -> FrameHeader:
        """Append a frame encoded elsewhere (e.g. received from a collector).

        The frame is checked, its ``stream`` field set to `stream` (and its
        header crc32 recomputed), and written as is in one ``writev`` call:
        no decompression or recompression.  Unlike :meth:`write_chunk`, the
        frame keeps its own chunk_seq, which may jump (the chunks in between
        are lost, and the reader reports them) but never repeat or go back.

        Parameters
        ----------
        stream : int
            From :meth:`add_stream`.
        frame : bytes-like
            Exactly one frame: header and payload.
        check_payload : bool
            Also decompress the payload and check it against the header
            (record count, id count, seqs).  Without it, the payload crc32
            and the header's lengths are checked, and a payload that
            decompresses wrong is found by the reader and reported as
            damage of that one chunk.
        encoded_here : bool
            The frame was just built by this process (encode_frame): its
            payload crc32 is right by construction and is not computed a
            second time.  Header, lengths and sequence rules are still
            checked.
        first_time : int, optional
            The time of the frame's first record, for the segment's frame
            index, where the caller has it (a frame it encoded); else it is
            read from the payload's first record.

        Returns
        -------
        FrameHeader
            The header as written (with `stream`).

        Raises
        ------
        FrameRejectedError
            The frame breaks a rule; ``kind`` is one of FRAME_REJECT_KINDS.
            Nothing is written.
        ValueError
            The stream is unknown or the writer closed.
        OSError
            The write failed (as for write_chunk).
        """
        self._check_open()
        st = self._streams.get(stream)
        if st is None:
            raise ValueError(f"stream: {stream!r} was not added (add_stream first)")
        h, payload = check_frame(frame, check_payload=check_payload,
                                 check_crc=not encoded_here)
        size = FRAME_HEADER_SIZE + h.payload_len
        if st.final:
            raise FrameRejectedError(
                f"chunk_seq {h.chunk_seq} after the final chunk of stream {stream}",
                "after_final")
        if h.chunk_seq < st.chunk_seq:
            if h.chunk_seq == st.chunk_seq - 1:
                raise FrameRejectedError(
                    f"chunk_seq {h.chunk_seq} of stream {stream} again (duplicate)",
                    "duplicate")
            raise FrameRejectedError(
                f"chunk_seq {h.chunk_seq} goes back (stream {stream} is at "
                f"chunk_seq {st.chunk_seq - 1})", "regression")
        if h.first_seq < st.next_seq:
            raise FrameRejectedError(
                f"seqs start at {h.first_seq}, below next_seq {st.next_seq} of "
                f"stream {stream}'s previous chunk", "seq_regression")
        for name, new, old in (("drop_records", h.drop_records, st.drop_records),
                               ("drop_packets", h.drop_packets, st.drop_packets)):
            if new < old:
                raise FrameRejectedError(
                    f"{name} goes back from {old} to {new}", "seq_regression")
        h = h._replace(stream=stream)
        # the payload's crc32 was checked (or it was made here): its first
        # record is the frame's to index
        first = None
        if h.n_records:
            first = first_record_time(payload, h.codec) if first_time is None else int(first_time)
        self._append(_writev_all, (pack_frame_header(h), payload), size, h, first)
        st.chunk_seq = h.chunk_seq + 1
        st.next_seq = h.next_seq
        st.drop_records, st.drop_packets = h.drop_records, h.drop_packets
        st.final = h.final
        self._chunks += 1
        self._records += h.n_records
        self._ids += h.n_ids
        self._raw += h.raw_len
        self._stored += size
        return h

    def _append(self, write, data, size, h, first_time):
        """Write one frame (header `h`) to the current segment, starting a
        new one first if it would grow past segment_bytes; index it where it
        has records (its first at `first_time`)."""
        if self._fd is not None and self._seg_size \
                and self._seg_size + size > self.segment_bytes:
            self._close_segment()
            self._seg_no += 1
        if self._fd is None:
            self._open_segment()
        try:
            write(self._fd, data)
        except OSError:
            # Leave the partial frame as the cut end of this segment.
            self._close_segment(sync=False)
            self._seg_no += 1
            raise
        if first_time is not None:
            self._index.add(self._seg_size, h.stream, h.chunk_seq, h.payload_crc32, first_time)
        self._seg_size += size

    def _open_segment(self):
        path = self.path / segment_name(self._seg_no)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(path, flags, _FILE_MODE)
        os.fchmod(self._fd, _FILE_MODE)     # the umask may have narrowed it
        self._index = IndexFile(index_path(path), _FILE_MODE)
        self._seg_size = 0
        self._fsync_dir()

    def _close_segment(self, sync=True):
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # The index goes unsynced: an entry lost or cut in a crash is
        # found out by its crc32, and costs a window's read its shortcut.
        self._index.close()
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
        try:
            self._close_segment()
            for st in self._manifest["streams"]:
                st["chunks_written"] = self._streams[st["stream"]].chunk_seq
            self._write_manifest()
        finally:
            self._unlock()

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


def check_frame(frame, *, check_payload=False, check_crc=True):
    """Check one whole frame on its own (no stream state).

    Parameters
    ----------
    frame : bytes-like
        Exactly one frame: header and payload.
    check_payload : bool
        Also decompress and check the payload (see
        :meth:`CaptureWriter.write_frame`).
    check_crc : bool
        Check the payload crc32 (skipped only for frames this process built).

    Returns
    -------
    header : FrameHeader
    payload : memoryview
        The payload bytes of `frame` (a view, not a copy).

    Raises
    ------
    FrameRejectedError
        With ``kind`` one of short_frame, frame_length, frame_header,
        frame_version, frame_fields, payload_crc, payload.
    """
    mv = memoryview(frame)
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    try:
        h = unpack_frame_header(mv)
    except CaptureFormatError as exc:
        kind = "short_frame" if len(mv) < FRAME_HEADER_SIZE else "frame_header"
        raise FrameRejectedError(str(exc), kind) from None
    problem = check_frame_header(h)
    if problem is not None:
        kind = "frame_version" if h.version != FRAME_VERSION else "frame_fields"
        raise FrameRejectedError(problem, kind)
    size = FRAME_HEADER_SIZE + h.payload_len
    if len(mv) != size:
        raise FrameRejectedError(f"frame is {len(mv)} bytes, header says {size}",
                                 "short_frame" if len(mv) < size else "frame_length")
    payload = mv[FRAME_HEADER_SIZE:]
    if check_crc and zlib.crc32(payload) != h.payload_crc32:
        raise FrameRejectedError("payload crc32 mismatch", "payload_crc")
    if check_payload:
        try:
            decode_payload(h, payload)
        except CaptureFormatError as exc:
            raise FrameRejectedError(f"payload: {exc}", "payload") from None
    return h, payload


def _check_extra(name, extra, owned):
    """Optional entry keys: a dict of JSON values, none of them `owned`."""
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise TypeError(f"{name}: must be a dict, got {type(extra).__name__}")
    bad = [k for k in extra if not isinstance(k, str) or k in owned]
    if bad:
        raise ValueError(f"{name}: key(s) {', '.join(map(repr, bad))} are managed "
                         f"by the writer or not strings")
    json.dumps(extra, allow_nan=False)
    return dict(extra)


_MISSING = object()


def _writev_all(fd, parts):
    """Write header and payload in one writev call (the loop only covers a
    short write, as in _write_all)."""
    views = [memoryview(p) for p in parts]
    n = os.writev(fd, views)
    for v in views:
        if n >= len(v):
            n -= len(v)
            continue
        _write_all(fd, v[n:])
        n = 0

