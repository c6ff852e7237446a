"""mscope-collect: drain every ring in the registry, ship and/or write chunks.

One loop, one thread:

  scan the registry (every 200 ms) -> drain every ring -> cut chunks by
  size or age -> ship (PUSH, spool, drop+count) and/or write a capture ->
  retire rings whose producer is gone -> stats -> sleep if idle.

It sleeps ``--poll-us`` (1000 us) whenever a pass drained little: a reader
spinning on a ring pulls its head and record cache lines away from the NF
on every call and makes each recorded batch ~2x dearer (bench/fastpath.py,
consumer_busy against consumer_timer), while an 8 MiB ring absorbs ~25 ms
of a 10 Mpps NF.
"""
import argparse
import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

from mscope import __version__
from mscope.argtypes import non_negative, positive_int, seconds
from mscope.capture.format import CODEC_IDS
from mscope.errors import MscopeError, RingClaimedError, RingFormatError
from mscope.wire import make_meta

__all__ = ["Collector", "build_parser", "main"]

DEFAULT_DIR = "/dev/shm/mscope"
#: zstd -1: the ratio of zstd 1 (2.13x on loaded rings) for 15% less CPU,
#: 3.6-4.0 M records/s on one core (bench/collect.py, docs/benchmarks.md).
DEFAULT_LEVELS = {"zstd": -1, "lz4": 0, "none": 0}


class Collector:
    """The collector's state and loop (see the module doc)."""

    def __init__(self, registry, *, out=None, codec="zstd", level=-1,
                 chunk_records=16384, flush_s=0.2, poll_s=0.001, scan_s=0.2,
                 host_name=None, keep_rings=False, shipper=None, log=None,
                 stats_s=0.0, metrics=None, clock=None):
        from mscope.collector import RingReader  # the compiled part
        from mscope.collector.clock import TscClock, boot_id, realtime_offset_ns

        self._RingReader = RingReader
        self.registry = Path(registry)
        self.codec, self.level = CODEC_IDS[codec], level
        self.chunk_records, self.flush_s = chunk_records, flush_s
        self.poll_s, self.scan_s = poll_s, scan_s
        self.keep_rings = keep_rings
        self.host = host_name or socket.gethostname()
        self.boot_id = boot_id()            # which CLOCK_MONOTONIC its times are
        self.realtime_offset = realtime_offset_ns()     # and about where in wall time
        self.collector_id = uuid.uuid4().hex
        self.log = log or (lambda msg: print(f"mscope-collect: {msg}", file=sys.stderr,
                                             flush=True))
        self.clock = clock or TscClock()
        self.shipper = shipper
        self.writer = None
        self.host_index = None
        if out is not None:
            from mscope.capture import CaptureWriter
            self.writer = CaptureWriter(out, producer=f"mscope-collect {__version__}",
                                        codec=codec)
            self.host_index = self.writer.add_host(
                self.host, tsc_hz=self.clock.hz,
                extra={"realtime_offset_ns": self.realtime_offset,
                       **({} if self.boot_id is None else {"boot_id": self.boot_id})})
        self.streams = {}            # ring path -> RingStream
        self.capture_stream = {}     # our stream number -> capture stream id
        self.refused = {}            # ring path -> (inode, reason) not to re-log
        self.nf_names = {}           # nf_id -> name, as the first ring said
        self.next_stream = 0
        self.stop = False
        self.saw_ring = False
        self.totals = dict(records=0, ids=0, raw_bytes=0, stored_bytes=0, chunks=0,
                           chunks_dropped=0, records_dropped=0)
        self.dropped = {}            # stream -> [chunks, records] dropped by the spool
        self.stats_s = stats_s
        self.metrics = metrics
        self._last_stats = time.monotonic()
        self._stats_base = dict(self.totals)

    # -- rings ---------------------------------------------------------------

    def scan(self):
        """Attach to rings that appeared in the registry."""
        try:
            names = sorted(p for p in self.registry.glob("*.ring"))
        except OSError as exc:
            self.log(f"cannot scan {self.registry}: {exc}")
            return
        for path in names:
            key = str(path)
            if key in self.streams:
                continue
            try:
                ino = path.stat().st_ino
            except OSError:
                continue
            if self.refused.get(key, (None,))[0] == ino:
                continue
            try:
                reader = self._RingReader(path)
            except (RingFormatError, RingClaimedError, OSError) as exc:
                self.refused[key] = (ino, str(exc))
                self.log(f"not attaching {path.name}: {exc}")
                continue
            self._attach(key, reader)

    def _attach(self, key, reader):
        from mscope.collector.stream import RingStream
        st = RingStream(self.next_stream, reader, codec=self.codec, level=self.level,
                        chunk_records=self.chunk_records)
        known = self.nf_names.setdefault(st.nf_id, st.nf_name)
        if known != st.nf_name:
            # The records carry only nf_id: two names for one id would make
            # the capture lie about which NF did what.
            reader.close()
            self.refused[key] = (Path(key).stat().st_ino, "nf_id clash")
            self.log(f"not attaching {Path(key).name}: nf_id {st.nf_id} is already "
                     f"{known!r}, this ring says {st.nf_name!r}")
            return
        self.next_stream += 1
        self.streams[key] = st
        self.dropped[st.stream] = [0, 0]
        self.saw_ring = True
        if self.writer is not None:
            self.capture_stream[st.stream] = self.writer.add_stream(
                self.host_index, st.nf_id, st.nf_name, lcore=st.lcore, pid=st.pid,
                ring=st.path, extra={"idle_ns": st.idle_ns})
        off = self.clock.disagreement(st.producer_hz)
        note = f", producer TSC rate differs by {off:.2%}" if off and off > 1e-3 else ""
        self.log(f"attached {Path(key).name} (nf {st.nf_name} id {st.nf_id}, "
                 f"lcore {st.lcore}, pid {st.pid}){note}")

    # -- one pass --------------------------------------------------------------

    def run_once(self, now):
        moved = 0
        limit = self.chunk_records
        for key, st in list(self.streams.items()):
            if st.finished:
                continue
            gone = st.producer_gone()   # read before draining: nothing after it is lost
            try:
                got = st.drain(limit)
            except RingFormatError as exc:
                self.log(f"{Path(key).name}: {exc}; closing this stream")
                got, gone = 0, True
            moved += got
            # The final chunk only once the ring is empty: a producer gone
            # with a full ring still has records for the next passes.
            last = gone and got < limit
            self._emit(st, st.cut(self.clock, now, self.flush_s, final=last))
            if last:
                self._retire(key, st)
        if self.shipper is not None:
            self.shipper.pump()
        return moved

    def _emit(self, st, chunks):
        for ch in chunks:
            self.totals["chunks"] += 1
            self.totals["records"] += ch.records
            self.totals["ids"] += ch.ids
            self.totals["raw_bytes"] += ch.raw_bytes
            self.totals["stored_bytes"] += len(ch.frame)
            if self.writer is not None:
                self.writer.write_frame(self.capture_stream[st.stream], ch.frame,
                                        encoded_here=True, first_time=ch.first_ns)
            if self.shipper is not None:
                meta = self._meta(st)
                if not self.shipper.put(meta, ch.frame):
                    self.dropped[st.stream][0] += 1
                    self.dropped[st.stream][1] += ch.records
                    self.totals["chunks_dropped"] += 1
                    self.totals["records_dropped"] += ch.records

    def _meta(self, st):
        d = self.dropped[st.stream]
        return make_meta(collector=self.collector_id, host=self.host, tsc_hz=self.clock.hz,
                         stream=st.stream, dropped_chunks=d[0], dropped_records=d[1],
                         recorded_until_ns=st.recorded_until_ns, boot_id=self.boot_id,
                         realtime_offset_ns=self.realtime_offset,
                         **st.describe())

    def _retire(self, key, st):
        self.log(f"retired {Path(key).name}: {st.records_drained} records, "
                 f"{st.ring_drops} lost to a full ring"
                 + ("" if self.keep_rings else ", ring file removed"))
        st.reader.close()
        if not self.keep_rings:
            try:
                os.unlink(key)
            except FileNotFoundError:
                pass

    def idle(self):
        """Every ring seen so far is retired (for --exit-when-idle)."""
        return self.saw_ring and all(st.finished for st in self.streams.values())

    # -- stats -----------------------------------------------------------------

    def stats_line(self, now):
        dt = max(now - self._last_stats, 1e-9)
        t, b = self.totals, self._stats_base
        rec_s = (t["records"] - b["records"]) / dt
        raw_s = (t["raw_bytes"] - b["raw_bytes"]) / dt
        ratio = t["raw_bytes"] / t["stored_bytes"] if t["stored_bytes"] else 0.0
        drops = sum(st.ring_drops for st in self.streams.values())
        live = sum(1 for st in self.streams.values() if not st.finished)
        spool = self.shipper.spool_bytes if self.shipper else 0
        self._last_stats, self._stats_base = now, dict(t)
        return (f"{live} rings, {rec_s / 1e6:.2f} M records/s, {raw_s / 1e6:.1f} MB/s raw, "
                f"compression {ratio:.2f}x, ring drops {drops}, chunks dropped "
                f"{t['chunks_dropped']}, spool {spool / 1e6:.1f} MB, "
                f"clock {self.clock.hz / 1e6:.3f} MHz (offset {self.clock.offset_error_ns:+.0f} ns)")

    # -- main loop ---------------------------------------------------------------

    def run(self, exit_when_idle=False, duration=None):
        start = last_scan = time.monotonic()
        idle_since = None
        self.scan()
        while not self.stop:
            now = time.monotonic()
            if now - last_scan >= self.scan_s:
                self.scan()
                last_scan = now
            moved = self.run_once(now)
            if self.stats_s and now - self._last_stats >= self.stats_s:
                self.clock.refine()
                self.log(self.stats_line(now))
            if self.metrics is not None:
                self.metrics.update(self)
            # Idle for a few scans in a row: a ring created just now is seen first.
            if exit_when_idle and self.idle():
                idle_since = idle_since or now
                if now - idle_since >= 3 * self.scan_s:
                    break
            else:
                idle_since = None
            if duration is not None and now - start >= duration:
                break
            if moved < self.chunk_records // 4:
                time.sleep(self.poll_s)
        return self.shutdown()

    def shutdown(self):
        """Drain once more, flush every pending chunk, close the outputs.

        A stream whose NF goes on is cut while it still records: each says
        until when its records are whole (``recorded_until_ns`` in the
        manifest, or in the meta of its last message), so that an NF silent
        until then (stopped, or idle without idle polls) is told from one
        whose records were cut earlier (docs/capture-format.md)."""
        now = time.monotonic()
        until = {}
        for key, st in list(self.streams.items()):
            if st.finished:
                continue
            gone = st.producer_gone()
            try:
                while True:
                    t = self.clock.now_ns()     # the drain that finds it empty has all before
                    if not st.drain():
                        break
                    self._emit(st, st.cut(self.clock, now, self.flush_s))
                if not gone:
                    st.recorded_until_ns = until[st.stream] = max(0, t - RECORDED_MARGIN_NS)
            except RingFormatError:
                gone = True
            # all it holds: a chunk begun by a drain above began after `now`
            pending = st.cut(self.clock, time.monotonic(), 0.0, final=gone)
            if not gone and self.shipper is not None and not pending:
                pending = [c for c in [st.mark_chunk()] if c is not None]
            self._emit(st, pending)
            if gone:
                self._retire(key, st)
            else:
                st.reader.close()   # the next collector continues from our tail
        if self.writer is not None and until:
            self.writer.update_streams({self.capture_stream[s]: {"recorded_until_ns": u}
                                        for s, u in until.items()})
        unsent = 0
        if self.shipper is not None:
            unsent = self.shipper.close()
            if unsent:
                self.log(f"{unsent} chunks could not be handed to the receiver before exit")
        if self.writer is not None:
            self.writer.close()
        self.log("stopped: " + self.stats_line(time.monotonic()).split(", clock")[0]
                 + f", {self.totals['records']} records in {self.totals['chunks']} chunks")
        return unsent


#: A record is stamped before it is written to the ring: what the drain
#: that found the ring empty at t vouches for is the records stamped before
#: t less this (an NF preempted between the two for longer is not covered).
RECORDED_MARGIN_NS = 1_000_000


class _Metrics:
    """Prometheus/OpenMetrics text on a loopback port (prometheus_client)."""

    def __init__(self, port, addr):
        import prometheus_client as pc
        self.reg = pc.CollectorRegistry()
        self.records = pc.Gauge("mscope_collect_records", "Records drained", ["ring"],
                                registry=self.reg)
        self.ring_drops = pc.Gauge("mscope_collect_ring_drop_records",
                                   "Records the ring dropped (full)", ["ring"], registry=self.reg)
        self.raw = pc.Gauge("mscope_collect_raw_bytes", "Uncompressed bytes cut into chunks",
                            registry=self.reg)
        self.stored = pc.Gauge("mscope_collect_stored_bytes", "Compressed bytes",
                               registry=self.reg)
        self.chunks_dropped = pc.Gauge("mscope_collect_chunks_dropped",
                                       "Chunks dropped because the spool was full",
                                       registry=self.reg)
        self.spool = pc.Gauge("mscope_collect_spool_bytes", "Bytes waiting in the spool",
                              registry=self.reg)
        self.rings = pc.Gauge("mscope_collect_rings", "Rings being drained", registry=self.reg)
        try:
            pc.start_http_server(port, addr=addr, registry=self.reg)
        except OSError as exc:
            raise MscopeError(f"cannot serve metrics on {addr}:{port}: {exc}") from None
        self._last = 0.0

    def update(self, c):
        now = time.monotonic()
        if now - self._last < 0.5:
            return
        self._last = now
        for key, st in c.streams.items():
            name = Path(key).name
            self.records.labels(name).set(st.records_drained)
            self.ring_drops.labels(name).set(st.ring_drops)
        self.raw.set(c.totals["raw_bytes"])
        self.stored.set(c.totals["stored_bytes"])
        self.chunks_dropped.set(c.totals["chunks_dropped"])
        self.spool.set(c.shipper.spool_bytes if c.shipper else 0)
        self.rings.set(sum(1 for st in c.streams.values() if not st.finished))


def build_parser(prog="mscope-collect"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Drain every mscope ring in a registry directory, convert TSC to ns, "
                    "compress, and ship the chunks to `mscope receive` and/or write a "
                    "capture directory. Never blocks an NF: a full ring drops and counts, a "
                    "slow receiver fills a bounded spool, then whole chunks are dropped and "
                    "counted.",
        epilog="example: mscope-collect --ship tcp://127.0.0.1:5555 --stats 5\n"
               "         mscope-collect --out ./cap --exit-when-idle",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=os.environ.get("MSCOPE_DIR", DEFAULT_DIR),
                   help="ring registry directory (default $MSCOPE_DIR or /dev/shm/mscope)")
    p.add_argument("--ship", metavar="ENDPOINT",
                   help="ZeroMQ endpoint of `mscope receive` to connect to (tcp://HOST:PORT)")
    p.add_argument("--out", metavar="DIR", help="also (or only) write a capture directory")
    p.add_argument("--codec", choices=sorted(CODEC_IDS), default="zstd",
                   help="chunk compression (default zstd; see docs/collect.md)")
    p.add_argument("--level", type=int,
                   help="compression level (default: -1 for zstd, 0 for lz4; "
                        "bench/collect.py measured zstd -1 at the ratio of zstd 1 with "
                        "15%% less CPU, and zstd 3 at 2.9x the CPU)")
    p.add_argument("--chunk-records", type=positive_int, default=16384,
                   help="records per chunk at most (default 16384)")
    p.add_argument("--flush-ms", type=non_negative, default=200.0,
                   help="cut a partial chunk after this long (default 200)")
    p.add_argument("--poll-us", type=non_negative, default=1000.0,
                   help="sleep between passes when idle (default 1000)")
    p.add_argument("--sndhwm", type=positive_int, default=64,
                   help="chunks ZeroMQ may queue for the receiver (default 64)")
    p.add_argument("--spool-mb", type=non_negative, default=256.0,
                   help="local spool when ZeroMQ's queue is full, MB (default 256)")
    p.add_argument("--host-name", help="host name stamped on the chunks (default: hostname)")
    p.add_argument("--stats", type=seconds, default=0.0, metavar="SECONDS",
                   help="print a stats line every SECONDS (default off)")
    p.add_argument("--metrics-port", type=positive_int,
                   help="serve Prometheus/OpenMetrics text on this port")
    p.add_argument("--metrics-addr", default="127.0.0.1",
                   help="address for --metrics-port (default 127.0.0.1)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow --ship to an address off this host")
    p.add_argument("--curve-server-key", metavar="FILE",
                   help="the receiver's public key certificate (enables CURVE)")
    p.add_argument("--curve-secret-key", metavar="FILE",
                   help="this collector's secret key certificate (with --curve-server-key)")
    p.add_argument("--keep-rings", action="store_true",
                   help="do not remove ring files of producers that are gone")
    p.add_argument("--exit-when-idle", action="store_true",
                   help="exit once every ring seen is closed and drained")
    p.add_argument("--duration", type=seconds, metavar="SECONDS",
                   help="exit after this long")
    return p


def _validate(args):
    if not args.ship and not args.out:
        raise MscopeError("nothing to do: give --ship ENDPOINT and/or --out DIR")
    if args.chunk_records < 1 or args.chunk_records > 1 << 20:
        raise MscopeError("--chunk-records must be 1..1048576")
    if not Path(args.dir).is_dir():
        try:
            Path(args.dir).mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise MscopeError(f"registry {args.dir}: {exc}") from None
    if bool(args.curve_server_key) != bool(args.curve_secret_key):
        raise MscopeError("CURVE needs both --curve-server-key and --curve-secret-key")


def run(args):
    """Run the collector for parsed arguments; returns the exit status."""
    _validate(args)
    shipper = None
    if args.ship:
        from mscope.collector.shipper import Shipper, check_endpoint
        curve = None
        if args.curve_server_key:
            import functools
            from mscope.curve import load_client
            curve = functools.partial(load_client, secret_file=args.curve_secret_key,
                                      server_public_file=args.curve_server_key)
        check_endpoint(args.ship, args.allow_remote, secured=curve is not None)
        shipper = Shipper(args.ship, sndhwm=args.sndhwm,
                          spool_bytes=int(args.spool_mb * (1 << 20)), curve=curve)
    metrics = _Metrics(args.metrics_port, args.metrics_addr) if args.metrics_port else None
    level = args.level if args.level is not None else DEFAULT_LEVELS.get(args.codec, 0)
    col = Collector(args.dir, out=args.out, codec=args.codec, level=level,
                    chunk_records=args.chunk_records, flush_s=args.flush_ms / 1000,
                    poll_s=args.poll_us / 1e6, host_name=args.host_name,
                    keep_rings=args.keep_rings, shipper=shipper, stats_s=args.stats,
                    metrics=metrics)

    def on_signal(signum, frame):
        col.stop = True
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    col.log(f"collecting from {args.dir}"
            + (f", shipping to {args.ship}" if args.ship else "")
            + (f", writing {args.out}" if args.out else "")
            + f"; TSC {col.clock.hz / 1e6:.3f} MHz")
    unsent = col.run(exit_when_idle=args.exit_when_idle, duration=args.duration)
    return 0 if unsent == 0 else 3


def main(argv=None, prog="mscope-collect"):
    args = build_parser(prog).parse_args(argv)
    try:
        return run(args)
    except (MscopeError, OSError) as exc:
        print(f"mscope-collect: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
