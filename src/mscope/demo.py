"""`mscope demo`: a real DPDK forwarder recorded through the real ring.

Starts mscope-demo-fwd (source -> net_ring -> NAT -> net_null, linked with
libmscope), drains its two rings while it runs with the Cython reader, and
prints what came out: records, packets, drops, the NAT's input queue and how
long packets spent inside it (rx to tx, matched by packet id).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from mscope import paths
from mscope.errors import MscopeError
from mscope.record import OCC_UNKNOWN, REC_F_TX, RING_RECORD_DTYPE

__all__ = ["run_demo", "batch_times", "match_delays"]


def batch_times(records, ids, tx):
    """Packet ids of one direction and the TSC of the batch each came in.

    Parameters
    ----------
    records : ndarray of RING_RECORD_DTYPE
    ids : ndarray of uint64
        The records' packet ids, record after record.
    tx : bool
        True for tx records, False for rx records.

    Returns
    -------
    (ndarray of uint64, ndarray of int64)
    """
    counts = records["count"].astype(np.int64)
    is_tx = np.repeat((records["flags"] & REC_F_TX) != 0, counts)
    tsc = np.repeat(records["tsc"].astype(np.int64), counts)
    keep = is_tx if tx else ~is_tx
    return ids[keep], tsc[keep]


def match_delays(from_ids, from_tsc, to_ids, to_tsc):
    """For each id seen at `from`, the cycles until it was seen at `to`.

    Returns
    -------
    delays : ndarray of int64
        One per `from` id that reappears at `to`.
    missing : int
        `from` ids never seen at `to`.
    """
    if len(to_ids) == 0:
        return np.empty(0, np.int64), len(from_ids)
    order = np.argsort(to_ids, kind="stable")
    sorted_ids = to_ids[order]
    pos = np.minimum(np.searchsorted(sorted_ids, from_ids), len(order) - 1)
    hit = sorted_ids[pos] == from_ids
    return to_tsc[order][pos[hit]] - from_tsc[hit], int((~hit).sum())


class _RingTally:
    """Running totals for one ring while the demo drains it."""

    def __init__(self, reader):
        self.reader = reader
        self.records = np.empty(65536, dtype=RING_RECORD_DTYPE)
        self.ids = np.empty(65536 * 32, dtype=np.uint64)
        self.kept_records, self.kept_ids = [], []

    def drain(self):
        n, k = self.reader.drain_into(self.records, self.ids)
        if n:
            self.kept_records.append(self.records[:n].copy())
            self.kept_ids.append(self.ids[:k].copy())
        return n

    def all(self):
        if not self.kept_records:
            return np.empty(0, RING_RECORD_DTYPE), np.empty(0, np.uint64)
        return np.concatenate(self.kept_records), np.concatenate(self.kept_ids)


def _eal_args(prefix):
    return ["--no-huge", "-m", "256", "--no-shconf", f"--file-prefix={prefix}",
            "--no-pci", "-l", "0", "--log-level=error", "--no-telemetry",
            "--vdev=net_ring0", "--vdev=net_null0"]


def run_demo(seconds=3.0, rate=500_000, stall_us=3000.0, stall_every_ms=500.0,
             out=sys.stdout):
    """Run the demo chain and print its summary; returns a summary dict.

    Raises
    ------
    MscopeError
        The demo forwarder is missing (mscope was built without DPDK) or
        failed to start.
    """
    exe = paths.demo_forwarder()
    if not exe.exists():
        raise MscopeError(f"{exe} not found: mscope was built without DPDK "
                          "(install dpdk-dev and pkg-config, then pip install . again)")
    from mscope.collector import RingReader  # the compiled part, needed here only

    prefix = f"msdemo{uuid.uuid4().hex[:8]}"
    registry = Path(tempfile.mkdtemp(prefix="mscope-demo-", dir="/dev/shm"
                                     if os.path.isdir("/dev/shm") else None))
    proc = subprocess.Popen(
        [str(exe), *_eal_args(prefix), "--", "--seconds", str(seconds),
         "--rate", str(rate), "--dir", str(registry),
         "--stall-us", str(stall_us), "--stall-every-ms", str(stall_every_ms)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline() or "{}")
        if ready.get("event") != "ready":
            proc.wait(timeout=30)
            raise MscopeError("demo forwarder failed to start: "
                              + (proc.stderr.read().strip().splitlines() or ["no output"])[-1])
        print(f"recording a DPDK chain for {seconds:g} s at {rate:,.0f} packets/s: "
              "source -> net_ring -> nat -> net_null", file=out)
        if stall_us > 0:
            print(f"injected fault: nat stops polling for {stall_us:,.0f} us "
                  f"every {stall_every_ms:,.0f} ms", file=out)
        src = _RingTally(RingReader(ready["src_ring"]))
        nat = _RingTally(RingReader(ready["nf_ring"]))
        last = start = time.monotonic()
        deadline = start + seconds + 30
        while time.monotonic() < deadline:
            running = proc.poll() is None
            got = src.drain() + nat.drain()
            now = time.monotonic()
            if now - last >= 1.0:
                last = now
                st = nat.reader.state()
                print(f"  t={now - start:4.1f}s  nat records {st['next_seq']:>9,}  "
                      f"ring drops {st['drop_records']}", file=out)
            if not running and got == 0:
                break
            if got == 0:
                time.sleep(0.002)
        done_line = proc.stdout.read().strip().splitlines()
        proc.wait(timeout=30)
        done = json.loads(done_line[-1]) if done_line else {}
        return _summarise(src, nat, done, out)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(registry, ignore_errors=True)
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)


def _summarise(src, nat, done, out):
    tsc_hz = float(done.get("tsc_hz") or nat.reader.state()["tsc_hz"])
    rows = []
    summary = {"rings": {}, "tsc_hz": tsc_hz}
    for name, tally in (("demo-src", src), ("demo-nat", nat)):
        recs, ids = tally.all()
        st = tally.reader.state()
        tx = (recs["flags"] & REC_F_TX) != 0
        row = {"ring": name, "records": len(recs), "packets": len(ids),
               "rx_packets": int(recs["count"][~tx].sum()),
               "tx_packets": int(recs["count"][tx].sum()),
               "drop_records": st["drop_records"], "drop_packets": st["drop_packets"]}
        rows.append(row)
        summary["rings"][name] = row
    src_recs, src_ids = src.all()
    nat_recs, nat_ids = nat.all()
    sent_ids, sent_t = batch_times(src_recs, src_ids, tx=True)
    rx_ids, rx_t = batch_times(nat_recs, nat_ids, tx=False)
    tx_ids, tx_t = batch_times(nat_recs, nat_ids, tx=True)
    wait, lost_at_input = match_delays(sent_ids, sent_t, rx_ids, rx_t)
    inside, _ = match_delays(rx_ids, rx_t, tx_ids, tx_t)
    occ = nat_recs["occupancy"][(nat_recs["flags"] & REC_F_TX) == 0]
    occ = occ[occ != OCC_UNKNOWN]

    def pct(cycles):
        ns = cycles * 1e9 / tsc_hz
        return ({"packets": int(len(ns)), "p50": float(np.percentile(ns, 50)),
                 "p99": float(np.percentile(ns, 99)), "max": float(ns.max())}
                if len(ns) else None)

    summary["nat_queueing_ns"] = pct(wait)
    summary["nat_service_ns"] = pct(inside)
    summary["nat_input_dropped"] = lost_at_input
    summary["nat_queue_max"] = int(occ.max()) if len(occ) else None
    summary["forwarder"] = done

    print("", file=out)
    print(f"{'ring':<10} {'records':>9} {'packets':>9} {'rx':>9} {'tx':>9} {'dropped':>8}",
          file=out)
    for r in rows:
        print(f"{r['ring']:<10} {r['records']:>9,} {r['packets']:>9,} {r['rx_packets']:>9,} "
              f"{r['tx_packets']:>9,} {r['drop_records']:>8,}", file=out)
    for key, what in (("nat_queueing_ns", "waited in nat's input queue"),
                      ("nat_service_ns", "spent inside nat (rx to tx)")):
        t = summary[key]
        if t:
            print(f"{what:<30} p50 {t['p50']:>10,.0f} ns   p99 {t['p99']:>10,.0f} ns   "
                  f"max {t['max']:>10,.0f} ns   ({t['packets']:,} packets matched by id)",
                  file=out)
    if summary["nat_queue_max"] is not None:
        print(f"nat's input queue peaked at {summary['nat_queue_max']:,} packets", file=out)
    print(f"packets the source sent that nat never received: {lost_at_input:,} "
          f"(the forwarder counted {done.get('unsent', '?'):,} refused by the full queue)",
          file=out)
    lost = sum(r["drop_records"] for r in rows)
    print(f"records lost to full rings: {lost}" + (" (counted, not hidden)" if lost else ""),
          file=out)
    return summary
