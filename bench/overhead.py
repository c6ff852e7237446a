#!/usr/bin/env python3
"""What attaching mscope costs an unmodified DPDK app (issue 6, part 4),
and what recording costs a sample NF.

Debian's dpdk-testpmd forwards between two net_null ports on one
forwarding lcore (EAL -l 0-1: lcore 0 is the main lcore, idle on stdin;
lcore 1 forwards), plain and with libmscope attached, the variants of one
case run one after the other, in the same run, repetition after
repetition (A B A B ...; every other repetition in reverse order, so a
drift in the machine's state favours no variant).  Throughput is
testpmd's own port counters (telemetry /ethdev/stats, ipackets of both
ports) over a fixed window after a warm-up.

    python bench/overhead.py               # ~4 min
    python bench/overhead.py --quick       # ~1.5 min: fewer, shorter runs
    python bench/overhead.py --cases io --reps 9
    python bench/overhead.py --old-lib OLD/libmscope.so --variants full,batch
                                           # A/B of two builds, interleaved
    python bench/overhead.py --cases nf_chain            # ~2.5 min: nat, firewall

Cases (variant names in the JSON rows):
  macswap  plain | full   (swaps the MACs of every packet: near-zero work;
                           full = timestamps, counts and packet ids)
  io       plain | full | batch | empty   (touches no packet data; batch =
                           the batch-only mode, MSCOPE_IDS=0: counts and
                           timestamps, no ids; empty = attached, recording
                           switched off by /mscope/disable: the callbacks
                           are called and return at once, the floor of any
                           ethdev-callback recorder; plugin = full records
                           with libmscope loaded by EAL -d instead of
                           LD_PRELOAD: same callbacks, plus the watcher
                           thread waking every 10 ms)
  cycles   the callbacks timed inside testpmd (MSCOPE_CB_CYCLES=1: two
           serialised TSC reads around each callback, summed per thread and
           read from /mscope/status), once recording and once after
           /mscope/disable in the same process (the callbacks then return
           at once: timer plus call floor); per batch = the difference.
  nf_chain a sample NF (mscope-nf --type nat / firewall, --nfs) between a
           source and a sink, fed as fast as it can forward: plain =
           --no-record (no libmscope call at all) | full (full records,
           rings drained); target <= 1% loss.  Rows are cases nf_nat and
           nf_firewall; how the NF is made and checked to be the
           bottleneck: nf_chain_case() below.

Attached runs preload libmscope (LD_PRELOAD, as `mscope attach`), except
io/plugin (EAL -d, as `mscope attach --plugin`).  A consumer in this process
(pinned to cpu 0, beside testpmd's idle main lcore) moves each ring's tail
up to its head every millisecond without reading the records, so the
rings never fill and the recorder always takes its full write path (the
cost of a consumer reading the lines the producer writes is in
bench/fastpath.py's consumer modes).  --consumer none leaves the rings
to fill: after ~0.1 s every record is dropped (cheaper for the NF).

Prints one JSON object per run and per summary, then tables.  EAL runs
--in-memory on hugepages when enough are free (else --no-huge: see
bench/README.md on the --no-huge pool layout, which slows the baseline
itself), each with its own --file-prefix, removed afterwards.
"""
import argparse
import json
import mmap
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

import harness

TESTPMD = shutil.which("dpdk-testpmd")
TARGET_LOSS = {"macswap": 0.03, "io": 0.03,       # issue 6, full / batch-only
               "nf_nat": 0.01, "nf_firewall": 0.01}
VARIANTS = {"macswap": ("plain", "full"), "io": ("plain", "full", "batch", "empty", "plugin")}
CYCLE_VARIANTS = (("macswap", "full"), ("io", "full"), ("io", "batch"))


# ---------------------------------------------------------------- testpmd

def free_hugepage_mb():
    try:
        info = dict(line.split(":", 1) for line in open("/proc/meminfo"))
        return int(info["HugePages_Free"]) * int(info["Hugepagesize"].split()[0]) // 1024
    except (OSError, KeyError, ValueError):
        return 0


def eal_memory(mode):
    """EAL memory arguments: hugepages (--in-memory: no files, no shared
    config; memory taken as needed, ~40 MB here) or --no-huge."""
    if mode == "auto":
        mode = "huge" if free_hugepage_mb() >= 128 else "nohuge"
    if mode == "huge":
        return "huge", ["--in-memory"]
    return "nohuge", ["--no-huge", "-m", "256", "--no-shconf"]


# --old-lib's library, resolved (harness.with_old_lib); set by main().
old_lib = None


def variant_env(variant, registry, timing=False):
    """Environment of one run: nothing of ours for plain."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MSCOPE_") and k != "LD_PRELOAD"}
    if variant == "plain":
        return env
    variant, lib = harness.variant_library(variant, old_lib)
    env.update(MSCOPE_ATTACH="1", MSCOPE_DIR=registry, MSCOPE_NF_NAME="overhead")
    if variant != "plugin":
        env["LD_PRELOAD"] = str(lib)
    if variant == "batch":
        env["MSCOPE_IDS"] = "0"
    if timing:
        env["MSCOPE_CB_CYCLES"] = "1"
    return env


class Telemetry:
    """One connection to a DPDK app's telemetry socket (v2)."""

    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                self.s.settimeout(5)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no telemetry socket at {path}")
                time.sleep(0.05)
        json.loads(self.s.recv(4096))                  # the greeting

    def __call__(self, cmd):
        self.s.send(cmd.encode())
        return json.loads(self.s.recv(65536))[cmd.split(",")[0]]

    def close(self):
        self.s.close()


def port_packets(tel):
    """(time, rx packets summed over ports 0 and 1, tx packets)."""
    a, b = tel("/ethdev/stats,0"), tel("/ethdev/stats,1")
    return time.monotonic(), a["ipackets"] + b["ipackets"], a["opackets"] + b["opackets"]


class TailMover(threading.Thread):
    """Keeps every ring in `registry` from filling: each millisecond, tail =
    head (the records are not read)."""

    def __init__(self, registry):
        super().__init__(daemon=True)
        self.registry, self.maps, self.stop = Path(registry), {}, threading.Event()

    def run(self):
        last_scan = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if now - last_scan > 0.05:
                last_scan = now
                for p in self.registry.glob("*.ring"):
                    if p not in self.maps:
                        try:
                            with open(p, "r+b") as f:
                                m = mmap.mmap(f.fileno(), 4096)
                            self.maps[p] = (m, memoryview(m).cast("Q"))
                        except (OSError, ValueError):
                            pass
            for _, words in self.maps.values():
                words[16] = words[8]            # tail (offset 128) = head (offset 64)
            time.sleep(0.001)
        for m, words in self.maps.values():
            words.release()
            m.close()


def remove_runtime(prefix):
    harness.remove_eal_runtime(prefix)


def run_testpmd(case, variant, args, registry, timing=False):
    """One testpmd run; returns its JSON row."""
    prefix = f"msov{os.getpid()}{uuid.uuid4().hex[:6]}"
    mem, mem_args = eal_memory(args.memory)
    env = variant_env(variant, registry, timing)
    base, lib = harness.variant_library(variant, old_lib)
    plugin = ["-d", str(lib)] if base == "plugin" else []
    cmd = [TESTPMD, *plugin, "--no-pci", "--vdev=net_null0", "--vdev=net_null1", "-l", "0-1",
           f"--file-prefix={prefix}", "--log-level=lib.eal:warning", *mem_args, "--",
           "--total-num-mbufs=8192", f"--forward-mode={case}", "--auto-start"]
    for p in Path(registry).glob("*.ring"):
        p.unlink()
    busy = harness.cpu_busy_share(0.2)
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    mover = TailMover(registry) if variant != "plain" and args.consumer == "skip" else None
    tel = None
    row = {"name": "overhead_run", "case": case, "variant": variant, "memory": mem,
           "consumer": args.consumer if variant != "plain" else None,
           "cpu_busy_before": None if busy is None else round(busy, 3)}
    try:
        if mover:
            mover.start()
        tel = Telemetry(f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2")
        if variant != "plain":
            # The mscope commands exist once the first port has started
            # (an unknown command answers null).
            deadline = time.monotonic() + 30
            while tel("/mscope/status") is None:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("no /mscope/status")
                time.sleep(0.05)
        if base == "empty":
            tel("/mscope/disable")
        time.sleep(args.warmup)
        st0 = tel("/mscope/status") if variant != "plain" else None
        samples = [port_packets(tel)]
        for _ in range(args.window):
            time.sleep(1.0)
            samples.append(port_packets(tel))
        st1 = tel("/mscope/status") if variant != "plain" else None
        t, rx, tx = (np.array(c, dtype=float) for c in zip(*samples))
        row["rx_mpps"] = float((rx[-1] - rx[0]) / (t[-1] - t[0]) / 1e6)
        row["tx_mpps"] = float((tx[-1] - tx[0]) / (t[-1] - t[0]) / 1e6)
        row["rx_mpps_per_s"] = [round(float(v), 3) for v in np.diff(rx) / np.diff(t) / 1e6]
        if st0 is not None:
            seen = lambda s: s["records"] + s["drop_records"]      # noqa: E731
            n = seen(st1) - seen(st0)
            row["records_per_s"] = n / (t[-1] - t[0])
            row["drop_share"] = (st1["drop_records"] - st0["drop_records"]) / n if n else None
        if timing:
            row.update(callback_cycles(tel, st0, st1, args.window))
    finally:
        if tel is not None:
            tel.close()
        try:
            _, err = proc.communicate("\n", timeout=30)  # "Press enter to exit"
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=10)
        if mover:
            mover.stop.set()
            mover.join(timeout=5)
        remove_runtime(prefix)
    if "rx_mpps" not in row or (variant != "plain" and "mscope: recording port" not in err):
        raise RuntimeError(f"testpmd {case}/{variant} failed:\n{err[-3000:]}")
    return row


def callback_cycles(tel, on0, on1, window):
    """ns per batch of each callback, recording (on0..on1) and, in the same
    process, disabled (callbacks return at once: the timer floor)."""
    tel("/mscope/disable")
    time.sleep(0.3)
    off0 = tel("/mscope/status")
    time.sleep(window)
    off1 = tel("/mscope/status")
    tel("/mscope/enable")
    ns = 1e9 / on1["tsc_hz"]
    out = {}
    for d in ("rx", "tx"):
        def per(a, b, what):
            n = b[f"cb_{d}_batches"] - a[f"cb_{d}_batches"]
            return (b[f"cb_{d}_{what}"] - a[f"cb_{d}_{what}"]) / n if n else float("nan")
        on, off = per(on0, on1, "cycles") * ns, per(off0, off1, "cycles") * ns
        out[f"{d}_ns_per_batch_recording"] = on
        out[f"{d}_ns_per_batch_disabled"] = off
        out[f"{d}_ns_per_batch"] = on - off
        out[f"{d}_packets_per_batch"] = per(on0, on1, "packets")
    return out


# ------------------------------------------------------- sample NF (nf_chain)

NF_TYPES = ("nat", "firewall")
NF_VARIANTS = ("plain", "full")       # plain: mscope-nf --no-record
NF_CPU = 1                            # the NF alone (of ours) on vCPU 1
NF_BATCH = 32
NF_RING_MB = 64                       # 8 MiB (the default) is ~25 ms of records here
NF_PCAP_PACKETS, NF_PCAP_FLOWS = 4096, 1024


def _ipv4_checksum(header):
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def nf_traffic_pcap(path, packets=NF_PCAP_PACKETS, flows=NF_PCAP_FLOWS, seed=1):
    """Write the NF's input: `packets` frames of the simulator's traffic mix
    (mscope.sim.traffic.generate: `flows` flows, 80% TCP, Pareto sizes),
    built as the testbed's source builds them (Ethernet, IPv4, a 32-byte
    TCP header or UDP, the 16 payload bytes the id hashes) but cut short
    after those 16 bytes: 60-82-byte frames.  Neither the NFs' work nor
    the recorder's depends on the length; only net_pcap's copy does (work
    a NIC's DMA would do off the CPU), so short frames give the highest
    packet rate, where recording weighs most."""
    from mscope.sim.traffic import generate

    p = generate(seed=seed, duration_ns=10_000_000, rate_pps=packets / 0.01, flows=flows,
                 src_net="10.0.0.0/8", dst_net="172.16.0.0/12")
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(len(p.time_ns)):
        proto = int(p.proto[i])
        if proto == 6:     # data offset 8 words: NOP, NOP, timestamps
            l4 = struct.pack("!HHIIBBHHH", int(p.sport[i]), int(p.dport[i]), int(p.tcp_seq[i]),
                             int(p.tcp_ack[i]), 8 << 4, 0x18, 65535, 0, 0) + \
                bytes([1, 1, 8, 10]) + bytes(8)
        else:
            l4 = struct.pack("!HHHH", int(p.sport[i]), int(p.dport[i]), 8 + 16, 0)
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4) + 16,
                                   int(p.ip_id[i]), int(p.frag[i]), 64, proto, 0,
                                   int(p.src_ip[i]).to_bytes(4, "big"),
                                   int(p.dst_ip[i]).to_bytes(4, "big")))
        ip[10:12] = struct.pack("!H", _ipv4_checksum(bytes(ip)))
        frame = (bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]) + b"\x08\x00" + bytes(ip) + l4
                 + bytes(p.payload[i])).ljust(60, b"\0")
        out.append(struct.pack("<IIII", 0, i, len(frame), len(frame)) + frame)
    Path(path).write_bytes(b"".join(out))
    return len(p.time_ns)


def thread_cpu_ns(pid):
    """ns the process's main thread (its EAL lcore) has run, scheduler's count."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def cpu_jiffies(cpu):
    """(total, idle) jiffies of one CPU from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return sum(v[:8]), v[3] + v[4]
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def run_nf(nf, variant, args, registry, pcap):
    """One mscope-nf run in port mode (pcap in, null out); returns its JSON row."""
    from mscope import paths
    # struct nf_ctl (csrc/nfs/nf_chain.h), as `mscope ovs` writes it
    from mscope.ovs.run import _CTL, _CTL_MAGIC
    from mscope.testbed.procs import Child

    prefix = f"msnf{os.getpid()}{uuid.uuid4().hex[:6]}"
    mem, mem_args = eal_memory(args.memory)
    ctl = Path(registry) / "ctl"
    # t0 already past: the NF starts forwarding as soon as its ports are up.
    ctl.write_bytes(_CTL.pack(time.monotonic_ns(), 0, _CTL_MAGIC))
    for p in Path(registry).glob("*.ring"):
        p.unlink()
    argv = [paths.sample_nf(), f"--file-prefix={prefix}", *mem_args, f"--lcores=0@{NF_CPU}",
            "--no-pci", "--log-level=lib.eal:warning",
            f"--vdev=net_pcap0,rx_pcap={pcap},infinite_rx=1", "--vdev=net_null0", "--",
            "--type", nf, "--name", nf, "--in", "port:0", "--out", "port:1",
            "--batch", NF_BATCH, "--dir", registry, "--ring-mb", NF_RING_MB, "--ctl", ctl]
    if variant == "plain":
        argv.append("--no-record")
    busy = harness.cpu_busy_share(0.2)
    row = {"name": "overhead_run", "case": f"nf_{nf}", "variant": variant, "memory": mem,
           "consumer": args.consumer if variant != "plain" else None,
           "cpu_busy_before": None if busy is None else round(busy, 3)}
    mover = TailMover(registry) if variant != "plain" and args.consumer == "skip" else None
    # nice -10 as the testbed's chain: the NF keeps its core against other
    # (nice 0) work there; it still loses a share, counted in cpu_share.
    child = Child(f"mscope-nf {nf}", argv, nice=-10)
    tel = None
    try:
        if mover:
            mover.start()
        child.expect("ready", 60)
        tel = Telemetry(f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2")
        time.sleep(args.warmup)
        samples = []
        for k in range(args.window + 1):
            if k:
                time.sleep(1.0)
            c = cpu_jiffies(NF_CPU)
            t = time.monotonic()
            rx, tx = tel("/ethdev/stats,0")["ipackets"], tel("/ethdev/stats,1")["opackets"]
            samples.append((t, rx, tx, thread_cpu_ns(child.pid), *c))
        t, rx, tx, cpu_ns, jt, ji = (np.array(c, dtype=float) for c in zip(*samples))
        wall = t[-1] - t[0]
        row["rx_mpps"] = float((rx[-1] - rx[0]) / wall / 1e6)
        row["tx_mpps"] = float((tx[-1] - tx[0]) / wall / 1e6)
        row["rx_mpps_per_s"] = [round(float(v), 3) for v in np.diff(rx) / np.diff(t) / 1e6]
        nf_cpu_s = (cpu_ns[-1] - cpu_ns[0]) / 1e9
        # The NF's rate per second it was on the CPU: what is left of the
        # rate once other work's share of vCPU 1 is taken out.
        row["rx_mpps_per_cpu_s"] = float((rx[-1] - rx[0]) / nf_cpu_s / 1e6)
        row["cpu_share"] = round(nf_cpu_s / wall, 4)
        hz = os.sysconf("SC_CLK_TCK")
        cpu_busy_s = ((jt[-1] - jt[0]) - (ji[-1] - ji[0])) / hz
        row["cpu1_other_busy"] = round(max(0.0, cpu_busy_s - nf_cpu_s) / wall, 3)
    finally:
        if tel is not None:
            tel.close()
        rc = child.stop(timeout=15)
        if mover:
            mover.stop.set()
            mover.join(timeout=5)
        remove_runtime(prefix)
    done = child.done
    if rc != 0 or done is None or "rx_mpps" not in row:
        raise RuntimeError(f"mscope-nf {nf}/{variant} failed (exit {rc}): "
                           f"{child.last_error()}")
    # The NF is the bottleneck when its input never ran dry: every poll of
    # the whole run (warm-up included) returned a full batch.
    row["idle_polls"] = done["idle_polls"]
    row["full_batch_share"] = done["rx"] / (done["batches"] * NF_BATCH) if done["batches"] else 0
    row["nf_bound"] = done["idle_polls"] == 0 and done["rx"] == done["batches"] * NF_BATCH
    row["drop_full"] = sum(done["drop_full"])
    row["recording"] = done["recording"]
    n = done["records"] + done["drop_records"]
    row["drop_share"] = done["drop_records"] / n if n else None
    if done["recording"] != (variant != "plain") or (variant == "plain" and n):
        raise RuntimeError(f"mscope-nf {nf}/{variant}: recording={done['recording']}, "
                           f"{n} records")
    return row


def nf_chain_case(args, registry, nfs):
    """A sample NF (nat, firewall) with recording on (full records, the
    rings drained by TailMover) and off (--no-record: no ring, neither
    mscope_rx nor mscope_tx called), interleaved, args.reps repetitions.

    The chain is source -> NF -> sink in one DPDK process (port mode,
    docs/testbed.md): a net_pcap port replaying nf_traffic_pcap()'s 4,096
    frames forever (infinite_rx) feeds the NF, a net_null port takes what
    it sends.  mscope-nf's EAL lcore is pinned to vCPU 1 at nice -10; its
    control threads, this script and the ring consumer sit on vCPU 0.  The
    testbed's ring chain (a source and a sink on vCPU 0) cannot feed it:
    the source replays a precomputed schedule (56 bytes a packet, ~1 GB for
    one run at these rates) and shares its core with the sink.

    Why the NF is the bottleneck: the source is a step of the NF's own
    poll loop that always has a full batch to give, so the NF is never
    idle; checked per run from the NF's exit report (idle_polls == 0 and
    rx == batches x 32: `nf_bound`), and the sink (net_null) never
    refuses a packet (`drop_full` 0).  Throughput is the NF's rx port
    counter (telemetry /ethdev/stats) over the window; the NF's share of
    vCPU 1 and the rate per second on the CPU (/proc schedstat) are in
    each row, because other work on the VM takes a varying share of that
    core.  The per-packet cost includes net_pcap's rx (allocate, copy
    60-82 bytes) and net_null's tx (free): what a NIC's PMD would cost.
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="mscope-nf-bench-") as d:
        pcap = Path(d) / "traffic.pcap"
        nf_traffic_pcap(pcap)
        order = [(nf, v) for nf in nfs for v in NF_VARIANTS]
        for rep in range(args.reps):
            for nf, v in (order if rep % 2 == 0 else order[::-1]):
                row = run_nf(nf, v, args, registry, pcap)
                row["rep"] = rep
                harness.emit(row)
                rows.append(row)
    return rows


# ------------------------------------------------------------ the driver

def summarise(rows, case, variants):
    """Per variant: median and spread of throughput; paired ratios against
    the plain run of the same repetition."""
    out = []
    plain = {r["rep"]: r["rx_mpps"] for r in rows if r["case"] == case and r["variant"] == "plain"}
    for v in variants:
        mine = [r for r in rows if r["case"] == case and r["variant"] == v]
        if not mine:
            continue
        mpps = [r["rx_mpps"] for r in mine]
        med, p10, p90 = harness.percentiles(mpps)
        s = {"name": "overhead", "case": case, "variant": v, "runs": len(mine),
             "rx_mpps_median": med, "rx_mpps_p10": p10, "rx_mpps_p90": p90,
             "rx_mpps_min": min(mpps), "rx_mpps_max": max(mpps)}
        if v != "plain":
            ratios = [r["rx_mpps"] / plain[r["rep"]] for r in mine if r["rep"] in plain]
            rmed, rp10, rp90 = harness.percentiles(ratios)
            s.update(ratio_median=rmed, ratio_p10=rp10, ratio_p90=rp90,
                     ratio_of_medians=med / harness.percentiles(list(plain.values()))[0],
                     loss_median=1 - rmed, target_loss=TARGET_LOSS.get(case),
                     drop_share_max=max((r.get("drop_share") or 0) for r in mine))
        if "rx_mpps_per_cpu_s" in mine[0]:       # the sample NF's runs
            cpu_plain = {r["rep"]: r["rx_mpps_per_cpu_s"] for r in rows
                         if r["case"] == case and r["variant"] == "plain"}
            s["rx_mpps_per_cpu_s_median"] = harness.percentiles(
                [r["rx_mpps_per_cpu_s"] for r in mine])[0]
            s["cpu_share_min"] = min(r["cpu_share"] for r in mine)
            s["cpu1_other_busy_max"] = max(r["cpu1_other_busy"] for r in mine)
            s["cpu_busy_before_max"] = max((r["cpu_busy_before"] or 0) for r in mine)
            s["nf_bound"] = all(r["nf_bound"] for r in mine)
            s["ns_per_packet_cpu"] = 1e3 / s["rx_mpps_per_cpu_s_median"]
            if v != "plain":
                cr = [r["rx_mpps_per_cpu_s"] / cpu_plain[r["rep"]] for r in mine
                      if r["rep"] in cpu_plain]
                s["cpu_ratio_median"], s["cpu_ratio_p10"], s["cpu_ratio_p90"] = \
                    harness.percentiles(cr)
                # What recording adds per packet, on the CPU, paired by repetition.
                s["added_ns_per_packet"] = harness.percentiles(
                    [1e3 / r["rx_mpps_per_cpu_s"] - 1e3 / cpu_plain[r["rep"]] for r in mine
                     if r["rep"] in cpu_plain])[0]
        out.append(s)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: python bench/overhead.py --reps 7")
    ap.add_argument("--cases", default="macswap,io,cycles",
                    help="comma-separated: macswap, io, cycles, nf_chain (default: "
                         "macswap,io,cycles)")
    ap.add_argument("--nfs", default="nat,firewall",
                    help="sample NF types the nf_chain case runs (default: nat,firewall)")
    ap.add_argument("--reps", type=int, default=6, help="repetitions per variant")
    ap.add_argument("--window", type=int, default=3, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds before the window")
    ap.add_argument("--memory", choices=("auto", "huge", "nohuge"), default="auto")
    ap.add_argument("--consumer", choices=("skip", "none"), default="skip")
    ap.add_argument("--quick", action="store_true", help="3 reps of 2-second windows")
    ap.add_argument("--variants", help="comma-separated subset of each case's variants "
                    "(plain is always run: the ratios need it)")
    ap.add_argument("--old-lib", help="another libmscope.so (e.g. a copy of the previous "
                    "build): each attached variant also runs with it as <variant>-old, "
                    "interleaved, for an A/B of two builds in one run")
    ap.add_argument("--json-only", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.window = 3, 2
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    nfs = [n.strip() for n in args.nfs.split(",") if n.strip()]
    if any(n not in NF_TYPES for n in nfs):
        raise SystemExit(f"--nfs: known sample NFs are {', '.join(NF_TYPES)}, got {args.nfs}")
    if TESTPMD is None and set(cases) & {"macswap", "io", "cycles"}:
        raise SystemExit("dpdk-testpmd not found (Debian package dpdk)")
    global old_lib
    if args.old_lib:
        old_lib = Path(args.old_lib).resolve()
    variants = {c: harness.with_old_lib([v for v in vs if v == "plain" or args.variants is None
                                         or v in args.variants.split(",")], old_lib)
                for c, vs in VARIANTS.items()}
    harness.pin_self(0)
    others = subprocess.run(["pgrep", "-fa", "dpdk-|mscope-nf|mscope-tb-|pytest"],
                            capture_output=True, text=True).stdout.splitlines()
    others = [o for o in others if str(os.getpid()) not in o.split()[0]]
    machine = {"name": "machine", **harness.machine_info(),
               "tsc_note": "per-batch ns from rte_get_tsc_hz()",
               "memory": eal_memory(args.memory)[0], "hugepages_free_mb": free_hugepage_mb(),
               "load_avg": os.getloadavg(), "other_dpdk_or_test_processes": len(others),
               "reps": args.reps, "window_s": args.window, "warmup_s": args.warmup}
    harness.emit(machine)
    if others:
        print(f"note: {len(others)} other DPDK/test processes are running; figures are "
              "taken beside them", file=sys.stderr)

    rows, summaries = [], []
    with harness.ring_registry() as registry:
        order = [(c, v) for c in ("macswap", "io") if c in cases for v in variants[c]]
        for rep in range(args.reps):
            for case, v in (order if rep % 2 == 0 else order[::-1]):
                row = run_testpmd(case, v, args, registry)
                row["rep"] = rep
                harness.emit(row)
                rows.append(row)
        for case in ("macswap", "io"):
            if case in cases:
                summaries += summarise(rows, case, variants[case])
        cycle_variants = [(c, x) for c, v in CYCLE_VARIANTS
                          for x in harness.with_old_lib([v], old_lib)]
        if "cycles" in cases:
            for rep in range(max(1, args.reps // 3)):
                for case, v in cycle_variants:
                    row = run_testpmd(case, v, args, registry, timing=True)
                    row.update(rep=rep, name="overhead_cycles_run")
                    harness.emit(row)
                    rows.append(row)
            for case, v in cycle_variants:
                mine = [r for r in rows if r["name"] == "overhead_cycles_run"
                        and r["case"] == case and r["variant"] == v]
                s = {"name": "overhead_cycles", "case": case, "variant": v, "runs": len(mine)}
                for k in ("rx_ns_per_batch", "tx_ns_per_batch", "rx_ns_per_batch_recording",
                          "rx_ns_per_batch_disabled", "tx_ns_per_batch_recording",
                          "tx_ns_per_batch_disabled", "rx_packets_per_batch"):
                    s[k] = harness.percentiles([r[k] for r in mine])[0]
                s["rx_mpps_timed"] = harness.percentiles([r["rx_mpps"] for r in mine])[0]
                summaries.append(s)
        if "nf_chain" in cases:
            rows += nf_chain_case(args, registry, nfs)
            for nf in nfs:
                summaries += summarise(rows, f"nf_{nf}", NF_VARIANTS)
    for s in summaries:
        harness.emit(s)
    if args.json_only:
        return
    thr = [s for s in summaries if s["name"] == "overhead" and not s["case"].startswith("nf_")]
    if thr:
        harness.table(
            ["case", "variant", "runs", "Mpps median", "p10", "p90", "ratio (paired)",
             "p10", "p90", "loss", "target", "ring drops"],
            [[s["case"], s["variant"], s["runs"], round(s["rx_mpps_median"], 2),
              round(s["rx_mpps_p10"], 2), round(s["rx_mpps_p90"], 2),
              *([f"{s['ratio_median']:.3f}", f"{s['ratio_p10']:.3f}", f"{s['ratio_p90']:.3f}",
                 f"{100 * s['loss_median']:.1f}%", f"<= {100 * s['target_loss']:.0f}%",
                 f"{100 * s['drop_share_max']:.1f}%"]
                if s["variant"] != "plain" else ["", "", "", "", "", ""])] for s in thr],
            title=f"testpmd forwarding rate, both ports' rx (telemetry /ethdev/stats), "
                  f"{args.window} s windows, {machine['memory']}")
    nf = [s for s in summaries if s["name"] == "overhead" and s["case"].startswith("nf_")]
    if nf:
        harness.table(
            ["NF", "variant", "runs", "Mpps median", "p10", "p90", "ratio (paired)", "p10",
             "p90", "loss", "target", "per CPU-s", "ratio", "ns/pkt", "+ns/pkt",
             "NF bound", "CPU share", "ring drops"],
            [[s["case"][3:], s["variant"], s["runs"], round(s["rx_mpps_median"], 2),
              round(s["rx_mpps_p10"], 2), round(s["rx_mpps_p90"], 2),
              *([f"{s['ratio_median']:.3f}", f"{s['ratio_p10']:.3f}", f"{s['ratio_p90']:.3f}",
                 f"{100 * s['loss_median']:.1f}%", f"<= {100 * s['target_loss']:.0f}%"]
                if s["variant"] != "plain" else ["", "", "", "", ""]),
              round(s["rx_mpps_per_cpu_s_median"], 2),
              f"{s['cpu_ratio_median']:.3f}" if s["variant"] != "plain" else "",
              f"{s['ns_per_packet_cpu']:.1f}",
              f"{s['added_ns_per_packet']:.1f}" if s["variant"] != "plain" else "",
              "yes" if s["nf_bound"] else "NO", f">= {100 * s['cpu_share_min']:.0f}%",
              f"{100 * s['drop_share_max']:.1f}%" if s["variant"] != "plain" else ""]
             for s in nf],
            title=f"sample NF forwarding rate (mscope-nf, pcap -> NF -> null, rx port "
                  f"counter), {args.window} s windows, {machine['memory']}; plain = "
                  f"--no-record")
    cyc = [s for s in summaries if s["name"] == "overhead_cycles"]
    if cyc:
        harness.table(
            ["case", "variant", "runs", "pkts/batch", "rx ns/batch", "tx ns/batch",
             "rx recording", "rx disabled", "tx recording", "tx disabled", "Mpps (timed)"],
            [[s["case"], s["variant"], s["runs"], round(s["rx_packets_per_batch"], 1),
              round(s["rx_ns_per_batch"], 1), round(s["tx_ns_per_batch"], 1),
              round(s["rx_ns_per_batch_recording"], 1), round(s["rx_ns_per_batch_disabled"], 1),
              round(s["tx_ns_per_batch_recording"], 1), round(s["tx_ns_per_batch_disabled"], 1),
              round(s["rx_mpps_timed"], 2)] for s in cyc],
            title="callback cost per batch inside testpmd (MSCOPE_CB_CYCLES=1; "
                  "ns/batch = recording - disabled)")


if __name__ == "__main__":
    main()
