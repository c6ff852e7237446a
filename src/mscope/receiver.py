"""`mscope receive`: chunk messages from collectors over ZeroMQ into one capture.

A PULL socket binds one endpoint (loopback unless told otherwise) and any
number of mscope-collect processes connect to it.  Each message is one
chunk (mscope.wire: msgpack meta + one capture frame).  The receiver maps
(collector id, collector stream) to a stream of its capture, declaring the
host and stream in the manifest on first sight, checks the frame (header,
lengths, payload crc32) and the stream's sequence (chunk_seq never repeats
or goes back; a jump is chunks lost, logged and left for the capture reader
to report), and appends the frame as it came: no decompression, no
recompression, only the header's stream field and crc32 rewritten.

Bad input never stops the receiver: a message that fails a check is
counted by kind, logged in one line (rate-limited) and dropped, and the
rest of its stream goes on.

Started again on a capture an earlier run wrote, it appends: the manifest's
collector mapping and each stream's last chunk_seq are taken from the
capture, frames go to a new segment, and the chunks lost while no receiver
ran show up as gaps.

One thread does the receiving and writing; ZeroMQ's I/O thread buffers up
to ``rcvhwm`` messages per connected collector while it writes.
"""
import collections
import ipaddress
import signal
import sys
import threading
import time
from pathlib import Path

import msgpack
import zmq

from mscope import __version__
from mscope.capture.format import (CODEC_ZSTD, FRAME_HEADER_SIZE, MANIFEST_NAME,
                                   MAX_CHUNK_RAW_BYTES, max_payload_len,
                                   unpack_frame_header)
from mscope.capture.writer import FRAME_REJECT_KINDS, CaptureWriter, check_frame
from mscope.errors import CaptureFormatError, FrameRejectedError, MscopeError
from mscope.wire import WIRE_VERSION, WireFormatError, decode_message, is_loopback_host

__all__ = ["Receiver", "REJECT_KINDS", "check_bind_endpoint", "open_output",
           "serve"]

#: Why a message is rejected: the wire-level kinds, then the frame kinds of
#: mscope.capture.writer.FRAME_REJECT_KINDS.
#: parts          not two message parts
#: meta           meta not msgpack, not a map, a key missing or mistyped
#: wire_version   a wire version this receiver does not speak
#: stream_mismatch  the frame's stream field is not the meta's stream
#: stream_refused   the capture cannot take the stream (an nf_id that another
#:                  NF of its host already has), see the log line
REJECT_KINDS = ("parts", "meta", "wire_version", "stream_mismatch",
                "stream_refused") + FRAME_REJECT_KINDS

#: Largest message part a peer may send: a frame of the largest chunk a
#: writer accepts (the meta is far smaller).  libzmq drops the connection
#: of a peer that sends more, before buffering it.
MAX_PART_BYTES = FRAME_HEADER_SIZE + max_payload_len(CODEC_ZSTD, MAX_CHUNK_RAW_BYTES)

#: How often the manifest (collector drop counters, this run's counts) is
#: rewritten and the segment fsync'd.  A rewrite costs two fsyncs and a
#: rename, a few ms; 2 s bounds how stale a killed receiver's counts are.
SYNC_SECONDS = 2.0
#: Messages taken per poll wake-up before timers are looked at again.
_BATCH = 256
#: Log lines of one kind (a rejection kind, "gap", "auth") per period; the
#: rest are counted and summed up in the next line of that kind that is
#: let through, so a flood of bad input cannot flood the log.
_LOG_BURST = 10
_LOG_PERIOD_S = 10.0

_PROG = "mscope receive"


def check_bind_endpoint(endpoint: str, allow_remote: bool = False):
    """Check an endpoint to bind: loopback tcp or ipc unless `allow_remote`.

    Parameters
    ----------
    endpoint : str
        ``tcp://HOST:PORT`` (HOST an IP address, ``[IPv6]``, ``localhost``
        or, with `allow_remote`, ``*`` or an interface; PORT a number, or
        ``*``/``0`` for any free port) or ``ipc://PATH``.
    allow_remote : bool
        Allow a tcp address other hosts can reach.

    Returns
    -------
    bool
        True when the address is IPv6 (the socket needs ``zmq.IPV6``).

    Raises
    ------
    MscopeError
        One line: a malformed endpoint, an unsupported transport, or a
        non-loopback address without `allow_remote`.

    Examples
    --------
    >>> check_bind_endpoint("tcp://127.0.0.1:5555")
    False
    >>> check_bind_endpoint("tcp://0.0.0.0:5555")
    Traceback (most recent call last):
    ...
    mscope.errors.MscopeError: --listen tcp://0.0.0.0:5555: not a loopback address; pass --allow-remote to accept collectors from other hosts (and use CURVE keys)
    """
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc"):
        raise MscopeError(f"--listen {endpoint}: use tcp://HOST:PORT or ipc://PATH")
    if scheme == "ipc":
        if not rest:
            raise MscopeError(f"--listen {endpoint}: ipc:// needs a path")
        return False
    if rest.startswith("["):
        host, close, port = rest[1:].partition("]")
        if not close or not port.startswith(":"):
            raise MscopeError(f"--listen {endpoint}: malformed [IPv6]:PORT")
        port = port[1:]
    else:
        host, colon, port = rest.rpartition(":")
        if not colon:
            raise MscopeError(f"--listen {endpoint}: no port (tcp://HOST:PORT)")
    if port != "*" and not (port.isdigit() and int(port) <= 65535):
        raise MscopeError(f"--listen {endpoint}: port {port!r} is not 0..65535 or *")
    if not host:
        raise MscopeError(f"--listen {endpoint}: no host (tcp://HOST:PORT)")
    try:
        ipv6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        ipv6 = False
    if not is_loopback_host(host) and not allow_remote:
        raise MscopeError(
            f"--listen {endpoint}: not a loopback address; pass --allow-remote to "
            f"accept collectors from other hosts (and use CURVE keys)")
    return ipv6


def open_output(out, segment_bytes=None):
    """The capture writer of ``--out``: a new capture, or the one there.

    Parameters
    ----------
    out : str or os.PathLike
        A missing or empty directory (a new capture is made), or a capture
        an earlier run wrote (it is appended to).
    segment_bytes : int, optional
        Segment size (the writer's default if None).

    Returns
    -------
    writer : CaptureWriter
    appended : bool

    Raises
    ------
    MscopeError, OSError
        One line: `out` is a file, a non-empty directory that is no
        capture, a malformed capture, or open by another writer.
    """
    out = Path(out)
    kw = {} if segment_bytes is None else {"segment_bytes": segment_bytes}
    producer = f"{_PROG} {__version__}"
    if out.exists() and not out.is_dir():
        raise MscopeError(f"--out {out}: exists and is not a directory")
    if (out / MANIFEST_NAME).exists():
        return CaptureWriter.open_append(out, producer=producer, **kw), True
    if out.is_dir() and any(out.iterdir()):
        raise MscopeError(f"--out {out}: directory is not empty and holds no capture "
                          f"({MANIFEST_NAME} missing)")
    w = CaptureWriter(out, producer=producer, exist_ok=True, **kw)
    # Each collector converts its own host's TSC to that host's
    # CLOCK_MONOTONIC; nothing aligns hosts to one another.
    w.set_manifest_entry("time", {"unit": "ns", "clock": "CLOCK_MONOTONIC of each "
                                  "stream's host, as converted by its mscope-collect"})
    return w, False


class _LogLimiter:
    """At most _LOG_BURST lines per kind per _LOG_PERIOD_S; counts the rest."""

    def __init__(self, emit, clock=time.monotonic):
        self.emit, self.clock = emit, clock
        self.window = {}      # kind -> (period start, lines let through)
        self.suppressed = collections.Counter()

    def __call__(self, kind, line):
        now = self.clock()
        start, n = self.window.get(kind, (now, 0))
        if now - start >= _LOG_PERIOD_S:
            start, n = now, 0
        if n >= _LOG_BURST:
            self.suppressed[kind] += 1
            self.window[kind] = (start, n)
            return
        held = self.suppressed.pop(kind, 0)
        if held:
            line += f" ({held} more like it not logged)"
        self.window[kind] = (start, n + 1)
        self.emit(line)

    def flush(self):
        """Say how many lines were held back (at exit)."""
        for kind, held in sorted(self.suppressed.items()):
            self.emit(f"{_PROG}: {held} more '{kind}' lines not logged")
        self.suppressed.clear()


class Receiver:
    """The per-message logic, without sockets: map, check, append, count.

    Parameters
    ----------
    writer : CaptureWriter
        Open on the output capture (new or :meth:`CaptureWriter.open_append`).
    emit : callable
        Takes one log line (default: print to stderr).
    check_payload : bool
        Decompress every payload and check it against its header (see
        :meth:`CaptureWriter.write_frame`).
    listen : str
        Recorded in the manifest's ``receive_runs`` entry.
    curve : bool
        Recorded likewise.

    Notes
    -----
    The manifest keeps the collector mapping: host entries get a
    ``collector`` key, stream entries ``collector`` and ``collector_stream``,
    and ``collector_dropped_chunks``/``collector_dropped_records`` (the
    collector's own counts from the last meta).  ``receive_runs`` lists one
    entry per receiver run: when, where, and what it counted.
    """

    def __init__(self, writer, emit=None, check_payload=False, listen=None, curve=False,
                 clock=time.monotonic):
        self.writer = writer
        self.emit = emit or (lambda line: print(line, file=sys.stderr, flush=True))
        self.log = _LogLimiter(self.emit, clock)
        self.check_payload = check_payload
        self.clock = clock
        self.started = clock()
        self.hosts = {}          # (collector, host name) -> capture host
        self.streams = {}        # (collector, collector stream) -> capture stream
        self.refused = {}        # (collector, collector stream) -> reason
        self.dropped = {}        # capture stream -> [chunks, records] the collector dropped
        self.until = {}          # capture stream -> recorded_until_ns its collector said
        self.messages = self.records = self.bytes = 0
        self.gaps = self.chunks_lost = 0
        self.rejected = collections.Counter()
        self.auth_denied = self.handshake_failed = 0
        self._dirty = False
        self._synced = 0          # self.messages at the last sync
        man = writer.manifest
        for h in man["hosts"]:
            if isinstance(h.get("collector"), str):
                self.hosts[(h["collector"], h["name"])] = h["host"]
        for st in man["streams"]:
            col, cs = st.get("collector"), st.get("collector_stream")
            if isinstance(col, str) and isinstance(cs, int):
                self.streams[(col, cs)] = st["stream"]
                self.dropped[st["stream"]] = [st.get("collector_dropped_chunks", 0),
                                              st.get("collector_dropped_records", 0)]
        self._runs = list(man.get("receive_runs") or [])
        self._run = {"started_unix_ns": time.time_ns(), "stopped_unix_ns": None,
                     "listen": listen, "curve": bool(curve), "messages": 0,
                     "records": 0, "bytes": 0, "gaps": 0, "chunks_lost": 0,
                     "rejected": {}}

    # --- one message ----------------------------------------------------------

    def handle(self, parts, peer=None) -> bool:
        """Check one received message and append its frame; True if written.

        Parameters
        ----------
        parts : list of bytes-like
            The message parts as received (bytes, memoryviews or zmq.Frame
            buffers).
        peer : str, optional
            The sender's address, for log lines when the meta names no
            collector.
        """
        self.messages += 1
        who = peer or "an unknown sender"
        if len(parts) != 2:
            return self._reject("parts", who, f"expected 2 message parts (meta, frame), "
                                              f"got {len(parts)}")
        try:
            meta, frame = decode_message(parts)
        except WireFormatError as exc:
            return self._reject(_wire_kind(parts[0]), who, str(exc))
        who = f"collector {meta['collector']}"
        key = (meta["collector"], meta["stream"])
        stream = self.streams.get(key)
        if stream is None:
            if key in self.refused:
                return self._reject("stream_refused", who, self.refused[key])
            # Declare the stream only for a frame that would be written, so
            # a bad first message leaves no empty stream in the manifest.
            try:
                check_frame(frame, check_payload=self.check_payload)
            except FrameRejectedError as exc:
                return self._reject(exc.kind, who, str(exc))
            if not self._frame_stream_is(frame, meta["stream"], who):
                return False
            stream = self._add_stream(key, meta, who)
            if stream is None:
                return False
        elif not self._frame_stream_is(frame, meta["stream"], who):
            return False
        self._note_dropped(stream, meta)
        self._note_until(stream, meta)
        before = self.writer.position(stream)
        try:
            h = self.writer.write_frame(stream, frame, check_payload=self.check_payload)
        except FrameRejectedError as exc:
            return self._reject(exc.kind, who, f"stream {meta['stream']}: {exc}")
        if h.chunk_seq > before.chunk_seq:
            self._gap(stream, meta, before, h)
        self.records += h.n_records
        self.bytes += FRAME_HEADER_SIZE + h.payload_len
        return True

    def _frame_stream_is(self, frame, expect, who) -> bool:
        # The header's stream field at bytes 8..12; on a mismatch, unpack the
        # header first so a damaged one is reported as such.
        mv = memoryview(frame)
        if len(mv) >= 12 and int.from_bytes(mv[8:12], "little") == expect:
            return True
        try:
            h = unpack_frame_header(mv)
        except CaptureFormatError as exc:
            kind = "short_frame" if len(mv) < FRAME_HEADER_SIZE else "frame_header"
            return self._reject(kind, who, str(exc))
        return self._reject("stream_mismatch", who,
                            f"frame of stream {h.stream} in a message for stream {expect}")

    def _add_stream(self, key, meta, who):
        collector, cstream = key
        try:
            host = self.hosts.get((collector, meta["host"]))
            if host is None:
                boot = meta.get("boot_id")
                name = self._host_name(meta["host"], boot, who)
                extra = {"collector": collector}
                for k in ("boot_id", "realtime_offset_ns"):
                    if meta.get(k) is not None:
                        extra[k] = meta[k]
                host = self.writer.add_host(name, tsc_hz=meta["tsc_hz"], extra=extra)
                self.hosts[(collector, meta["host"])] = host
            stream = self.writer.add_stream(
                host, meta["nf_id"], meta["nf_name"], lcore=meta["lcore"],
                pid=meta["pid"], ring=meta["ring"],
                extra={"collector": collector, "collector_stream": cstream,
                       "idle_ns": meta.get("idle_ns", 0)})
        except ValueError as exc:
            reason = f"stream {cstream} ({meta['nf_name']} on {meta['host']}) not recorded: {exc}"
            self.refused[key] = reason
            self._reject("stream_refused", who, reason)
            return None
        self.streams[key] = stream
        self.dropped[stream] = [0, 0]
        self.emit(f"{_PROG}: new stream {stream}: {meta['nf_name']} (nf {meta['nf_id']}, "
                  f"lcore {meta['lcore']}) on {meta['host']}, {who} stream {cstream}")
        return stream

    def _host_name(self, name, boot, who):
        """The capture's name for a collector's host `name` of boot `boot`:
        `name`, unless the capture has a host of that name and another boot
        (a machine cloned with its name, or rebooted: its CLOCK_MONOTONIC
        counts from another zero), then ``name (boot xxxxxxxx)``.  Hosts of
        one name are one clock to the writer and the analyzer (a restarted
        collector's), so two clocks must not share one."""
        if boot is None:
            return name
        tagged = f"{name} (boot {boot[:8]})"
        same = [h for h in self.writer.manifest["hosts"] if h["name"] in (name, tagged)]
        for h in same:
            if h.get("boot_id") == boot:
                return h["name"]
        if any(h["name"] == name and h.get("boot_id") not in (None, boot) for h in same):
            self.emit(f"{_PROG}: {who}'s host {name!r} runs another boot than the capture's "
                      f"host of that name (its clock counts from another zero): recorded as "
                      f"host {tagged!r}")
            return tagged
        return name

    def _note_until(self, stream, meta):
        # the collector's last message of a stream it stopped following
        # says until when its records are whole; the latest such counts
        u = meta.get("recorded_until_ns")
        if u is not None and u > self.until.get(stream, -1):
            self.until[stream] = u
            self._dirty = True

    def _note_dropped(self, stream, meta):
        now = [meta["dropped_chunks"], meta["dropped_records"]]
        if self.dropped.get(stream) != now:
            self.dropped[stream] = now
            self._dirty = True

    def _gap(self, stream, meta, before, h):
        lost = h.chunk_seq - before.chunk_seq
        self.gaps += 1
        self.chunks_lost += lost
        seqs = h.first_seq - before.next_seq
        chunks = f"{lost} chunk{'s' if lost > 1 else ''}"
        if before.chunk_seq == 0 and before.next_seq == 0:
            # The stream's first chunk here: what came before never arrived
            # (a receiver started after the collector).
            what = (f"first chunk received is chunk_seq {h.chunk_seq}: "
                    f"chunk_seq 0..{h.chunk_seq - 1} not received ({chunks})")
        elif seqs:
            what = (f"chunk_seq {before.chunk_seq}..{h.chunk_seq - 1} not received "
                    f"({chunks}; ring seqs {before.next_seq}..{h.first_seq - 1}, "
                    f"{seqs} records, lost or dropped by the ring)")
        else:
            what = (f"chunk_seq {before.chunk_seq}..{h.chunk_seq - 1} not received "
                    f"({chunks}, without records)")
        self.log("gap", f"{_PROG}: gap in stream {stream} (collector {meta['collector']} "
                        f"stream {meta['stream']}, {meta['nf_name']}): {what}")
        self._dirty = True

    def _reject(self, kind, who, reason) -> bool:
        self.rejected[kind] += 1
        self._dirty = True
        self.log(kind, f"{_PROG}: rejected message from {who}: {reason}")
        return False

    # --- CURVE events (the authenticator calls note_denied from its thread) ---

    def note_denied(self, key):
        self.auth_denied += 1
        self.log("auth", f"{_PROG}: refused a collector: CURVE key {key} is not in "
                         f"--curve-allow")

    def note_handshake_failed(self, what):
        self.handshake_failed += 1
        self.log("handshake", f"{_PROG}: refused a connection: {what}")

    # --- reporting ------------------------------------------------------------

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def counts(self) -> dict:
        """What this run counted (as in its ``receive_runs`` entry)."""
        return {"messages": self.messages, "records": self.records, "bytes": self.bytes,
                "gaps": self.gaps, "chunks_lost": self.chunks_lost,
                "rejected": dict(sorted(self.rejected.items())),
                "auth_denied": self.auth_denied,
                "handshake_failed": self.handshake_failed}

    def sync(self, stopping=False, force=False):
        """Rewrite the manifest's collector counts and this run's entry, and
        fsync the segment (every SYNC_SECONDS, when something changed, and at
        exit)."""
        if not (self._dirty or stopping or force or self.messages != self._synced):
            return
        self._dirty = False
        self._synced = self.messages
        self.writer.update_streams({
            s: {"collector_dropped_chunks": c, "collector_dropped_records": r}
            | ({"recorded_until_ns": self.until[s]} if s in self.until else {})
            for s, (c, r) in self.dropped.items()})
        self._run.update(self.counts())
        if stopping:
            self._run["stopped_unix_ns"] = time.time_ns()
        self.writer.set_manifest_entry("receive_runs", self._runs + [self._run])
        self.writer.flush()

    def close(self):
        """Final manifest, close the capture (chunks_written per stream)."""
        try:
            self.sync(stopping=True)
        finally:
            self.writer.close()
        self.log.flush()

    def stats_line(self, prev, dt) -> str:
        """One line of rates since `prev` (a counts() dict) over `dt` seconds."""
        dt = max(dt, 1e-9)
        msgs = self.messages - prev["messages"]
        recs = self.records - prev["records"]
        mb = (self.bytes - prev["bytes"]) / 1e6
        return (f"{_PROG}: {msgs / dt:.0f} messages/s, {recs / dt:.0f} records/s, "
                f"{mb / dt:.2f} MB/s, {len(self.streams)} streams, {self.gaps} gaps, "
                f"{self.rejected_total} rejected")

    def summary_line(self) -> str:
        took = self.clock() - self.started
        line = (f"{_PROG}: stopped after {took:.1f} s: {self.messages} messages, "
                f"{self.records} records, {self.bytes / 1e6:.1f} MB written to "
                f"{self.writer.path}; {len(self.streams)} streams, {self.gaps} gaps "
                f"({self.chunks_lost} chunks lost), {self.rejected_total} rejected")
        if self.rejected:
            line += " (" + ", ".join(f"{k} {n}" for k, n in sorted(self.rejected.items())) + ")"
        if self.auth_denied or self.handshake_failed:
            line += (f"; {self.auth_denied} CURVE keys refused, "
                     f"{self.handshake_failed} handshakes failed")
        return line


def _wire_kind(meta_part) -> str:
    """meta or wire_version, for a meta decode_message refused."""
    try:
        meta = msgpack.unpackb(bytes(meta_part), raw=False, max_str_len=4096,
                               max_map_len=64, max_array_len=64, max_bin_len=4096)
    except Exception:  # msgpack raises several unrelated types
        return "meta"
    if isinstance(meta, dict) and "v" in meta and meta["v"] != WIRE_VERSION:
        return "wire_version"
    return "meta"


def _peer(frame):
    try:
        return frame.get("Peer-Address")
    except (zmq.ZMQError, AttributeError, ValueError):
        return None


_HANDSHAKE_EVENTS = {
    getattr(zmq, "EVENT_HANDSHAKE_FAILED_NO_DETAIL", 0):
        "handshake failed (the connection broke off during the CURVE handshake)",
    getattr(zmq, "EVENT_HANDSHAKE_FAILED_PROTOCOL", 0):
        "CURVE handshake failed (a collector without keys, or with another "
        "receiver's public key?)",
}
_HANDSHAKE_EVENTS.pop(0, None)


def serve(listen, out, *, allow_remote=False, curve_secret_key=None, curve_allow=None,
          stats_s=10.0, rcvhwm=64, duration=None, check_payload=False,
          segment_bytes=None, emit=None, topology=None) -> int:
    """Run `mscope receive` until SIGINT/SIGTERM or `duration`; return 0.

    Parameters
    ----------
    listen : str
        Endpoint to bind (:func:`check_bind_endpoint`).
    out : str or os.PathLike
        Capture directory, new or to append to (:func:`open_output`).
    allow_remote : bool
    curve_secret_key, curve_allow : str, optional
        Both or neither: this receiver's secret certificate and the
        directory of allowed collectors' public certificates.
    stats_s : float
        Seconds between stats lines (0: none).
    rcvhwm : int
        Messages ZeroMQ queues per connected collector while the receiver
        is busy writing.
    duration : float, optional
        Stop after this many seconds.
    check_payload : bool
        Decompress and check every payload (:meth:`CaptureWriter.write_frame`).
    segment_bytes : int, optional
    emit : callable, optional
        Takes each log line (default: stderr).
    topology : list of (str, str), optional
        The chain's links, written into the manifest's ``topology``: what
        ``mscope diagnose`` checks the records against, and for a chain
        across hosts the links whose packets align their clocks.  A
        capture appended to keeps the links it has; other links are
        refused.

    Raises
    ------
    MscopeError, OSError
        One line, before anything is received: a bad endpoint, output or
        key file, an address that cannot be bound, or links other than
        the capture's own.
    """
    emit = emit or (lambda line: print(line, file=sys.stderr, flush=True))
    ipv6 = check_bind_endpoint(listen, allow_remote)
    if (curve_secret_key is None) != (curve_allow is None):
        raise MscopeError("CURVE needs both --curve-secret-key and --curve-allow")
    if isinstance(rcvhwm, bool) or not isinstance(rcvhwm, int) or rcvhwm < 1:
        raise MscopeError(f"--rcvhwm {rcvhwm}: must be a positive integer")
    if stats_s < 0 or (duration is not None and duration < 0):
        raise MscopeError("--stats and --duration must not be negative")
    if curve_secret_key is not None:
        from mscope.curve import allowed_client_keys, read_certificate
        # Read the keys before the capture is touched: a typo in a path
        # must not leave an empty capture behind.
        read_certificate(curve_secret_key, secret=True)
        allowed_client_keys(curve_allow)
    ctx = zmq.Context()
    sock = monitor = auth = writer = receiver = None
    denied = collections.deque()       # CURVE keys refused (authenticator thread)
    stop = threading.Event()
    old_handlers = {}

    def on_signal(signum, frame):
        stop.set()
    try:
        # From here on a signal only asks the loop to stop, so the capture
        # is always closed (manifest and all) before the process exits.
        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.signal(sig, on_signal)
        sock = ctx.socket(zmq.PULL)
        sock.linger = 0
        sock.rcvhwm = rcvhwm
        sock.maxmsgsize = MAX_PART_BYTES
        if ipv6:
            sock.ipv6 = True
        if curve_secret_key is not None:
            from mscope.curve import load_server
            auth = load_server(sock, curve_secret_key, curve_allow, on_denied=denied.append)
            if _HANDSHAKE_EVENTS:
                monitor = sock.get_monitor_socket(sum(_HANDSHAKE_EVENTS))
        try:
            sock.bind(listen)
        except zmq.ZMQError as exc:
            raise MscopeError(f"--listen {listen}: cannot bind: {exc}") from None
        # Bound before the capture is opened, so a busy port leaves no
        # capture behind; what arrives meanwhile waits in ZeroMQ's queue.
        writer, appended = open_output(out, segment_bytes)
        if topology is not None:
            _declare_links(writer, topology)
        bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        receiver = Receiver(writer, emit=emit, check_payload=check_payload,
                            listen=bound, curve=auth is not None)
        # This run's entry goes into the manifest now: a run that is killed
        # leaves one with "stopped_unix_ns": null.
        receiver.sync(stopping=False, force=True)
        what = (f"appending to {writer.path} ({len(receiver.streams)} streams known)"
                if appended else f"writing {writer.path}")
        emit(f"{_PROG}: listening on {bound}, {what}"
             f"{', CURVE' if auth is not None else ''}")
        _loop(sock, monitor, receiver, denied, stop, emit, stats_s, duration)
    finally:
        try:
            if monitor is not None:
                sock.disable_monitor()
                monitor.close(0)
            if sock is not None:
                sock.close(0)
            if auth is not None:
                auth.stop()
            ctx.term()
            if receiver is not None:
                receiver.close()
            elif writer is not None:
                writer.close()
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
    emit(receiver.summary_line())
    return 0


def _declare_links(writer, links):
    """The manifest's ``topology``: `links`, unless the capture declares
    others (a one-line MscopeError: one capture, one chain)."""
    links = sorted([str(a), str(b)] for a, b in links)
    have = writer.manifest.get("topology")
    if have is not None and sorted(map(list, have)) != links:
        raise MscopeError(f"--topology: {writer.path} declares other links already "
                          f"({', '.join(f'{a} -> {b}' for a, b in sorted(map(tuple, have)))})")
    writer.set_manifest_entry("topology", links)


def _loop(sock, monitor, receiver, denied, stop, emit, stats_s, duration):
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    if monitor is not None:
        poller.register(monitor, zmq.POLLIN)
    now = time.monotonic()
    end = None if duration is None else now + duration
    next_stats = now + stats_s if stats_s else None
    next_sync = now + SYNC_SECONDS
    prev, prev_t = receiver.counts(), now
    while not stop.is_set():
        now = time.monotonic()
        deadlines = [d for d in (end, next_stats, next_sync) if d is not None]
        # 200 ms at most: a signal sets `stop` but does not end a poll.
        wait = max(0.0, min([now + 0.2] + deadlines) - now)
        events = dict(poller.poll(wait * 1000))
        if sock in events:
            _drain(sock, receiver, _BATCH)
        if monitor is not None and monitor in events:
            _monitor_events(monitor, receiver)
        while denied:
            receiver.note_denied(denied.popleft())
        now = time.monotonic()
        if next_stats is not None and now >= next_stats:
            emit(receiver.stats_line(prev, now - prev_t))
            prev, prev_t = receiver.counts(), now
            next_stats = now + stats_s
        if now >= next_sync:
            receiver.sync()
            next_sync = now + SYNC_SECONDS
        if end is not None and now >= end:
            break
    # Take what ZeroMQ already holds before closing (bounded: collectors may
    # still be sending).  What is still in the network is lost, and the next
    # run reports it as a gap.
    limit = time.monotonic() + 0.5
    while time.monotonic() < limit and _drain(sock, receiver, _BATCH):
        pass


def _drain(sock, receiver, limit) -> int:
    """Handle up to `limit` messages already queued; return how many."""
    n = 0
    while n < limit:
        try:
            parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            break
        n += 1
        receiver.handle([p.buffer for p in parts], peer=_peer(parts[0]))
    return n


def _monitor_events(monitor, receiver):
    from zmq.utils.monitor import recv_monitor_message
    while True:
        try:
            ev = recv_monitor_message(monitor, zmq.NOBLOCK)
        except zmq.Again:
            return
        what = _HANDSHAKE_EVENTS.get(ev["event"])
        if what is not None:
            receiver.note_handshake_failed(what)
