"""Attaching to an unmodified DPDK app: Debian's dpdk-testpmd under
`mscope attach` (LD_PRELOAD=libmscope.so), drained by mscope-collect
(issue 6, first part)."""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import requires_dpdk
from mscope.capture import open_capture
from mscope.capture.format import CAPTURE_F_TX

pytestmark = requires_dpdk
TESTPMD = shutil.which("dpdk-testpmd")


def start_collector(registry, cap):
    return subprocess.Popen([sys.executable, "-m", "mscope.collector.daemon", "--dir",
                             str(registry), "--out", str(cap), "--exit-when-idle",
                             "--keep-rings"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_attached_testpmd(registry, cap, eal_args, nf_name, nf_id, vdevs, fwd_args, env=None):
    """testpmd on lcores 0-1, `mscope attach`ed as `nf_name` (`nf_id`)
    with ports `vdevs` and `--auto-start` plus `fwd_args`, for 1.5 s,
    mscope-collect --out `cap` draining it.  Returns (stdout, stderr) of
    testpmd once both exited 0."""
    registry.mkdir()
    col = start_collector(registry, cap)
    args = [a for a in eal_args if a not in ("-l", "0")]
    pmd = subprocess.Popen([sys.executable, "-m", "mscope.cli", "attach", "--nf-name", nf_name,
                            "--nf-id", str(nf_id), "--dir", str(registry), "--",
                            TESTPMD, *args, "-l", "0-1", *(f"--vdev={v}" for v in vdevs),
                            "--", "--total-num-mbufs=8192", *fwd_args, "--auto-start"],
                           env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        out, err = pmd.communicate("\n", timeout=60)     # "Press enter to exit"
        rc, (_, col_err) = col.wait(timeout=60), col.communicate(timeout=10)
    finally:
        for p in (pmd, col):
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    assert pmd.returncode == 0, err[-2000:]
    assert rc == 0, col_err
    return out, err


def forward_totals(out):
    """testpmd's accumulated RX-packets and TX-packets (summed over every
    "stop" it printed)."""
    found = re.findall(r"Accumulated forward statistics for all ports.*?RX-packets:\s+(\d+)"
                       r".*?TX-packets:\s+(\d+)", out, re.S)
    assert found, out[-2000:]
    return sum(int(r) for r, _ in found), sum(int(t) for _, t in found)


def assert_every_packet_accounted(cap, nf_name, nf_id, rx_total, tx_total):
    """The capture holds every packet testpmd's forwarding lcore (1) moved,
    or counts it as lost on a full ring, exactly; its main lcore (0) only
    flushes rx queues at start and stop (uncounted by testpmd)."""
    from mscope.capture import describe
    c = open_capture(cap)
    data = c.read()
    assert {s["nf_name"] for s in c.manifest["streams"]} == {nf_name}
    assert (data.records["nf_id"] == nf_id).all()
    tx = (data.records["flags"] & CAPTURE_F_TX) != 0
    assert set(np.unique(data.records["port"][~tx])) == {0, 1}
    assert set(np.unique(data.records["port"][tx])) == {0, 1}
    streams = {s["lcore"]: s for s in describe(cap)["streams"]}
    fwd = streams[1]
    assert fwd["ids"] + fwd["drop_packets"] == rx_total + tx_total
    for lcore, s in streams.items():
        if lcore != 1:
            sel = data.stream == s["stream"]
            assert not tx[sel].any(), "only rx flushes outside the forwarding lcore"


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
def test_testpmd_attached_every_packet_accounted(registry, eal_args, tmp_path):
    """testpmd io-forwards between two net_null ports as fast as it can;
    every packet it received and sent is in the capture or counted as lost
    on a full ring, exactly."""
    cap = tmp_path / "cap"
    out, err = run_attached_testpmd(registry, cap, eal_args, "testpmd", 9,
                                    ["net_null0", "net_null1"], ["--forward-mode=io"])
    assert "mscope: recording port 0" in err and "mscope: recording port 1" in err
    rx_total, tx_total = forward_totals(out)
    assert rx_total > 100_000
    assert_every_packet_accounted(cap, "testpmd", 9, rx_total, tx_total)


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
def test_a_short_burst_records_an_empty_queue(registry, eal_args, tmp_path):
    """net_pcap cannot count its rx queue.  testpmd drains a pcap of 600
    packets from it (its start-up flush of the rx queues takes 512 at a
    time): full bursts (occupancy unknown), a short one, which took all
    there was (occupancy 0), then idle polls (0): the records the
    analyzer's arrivals at a first NF rest on where no source is
    recorded."""
    import struct
    from mscope.capture import CAPTURE_OCC_UNKNOWN
    udp = struct.pack("!HHHH", 1000, 2000, 8 + 18, 0) + bytes(18)
    frames = [bytes(12) + b"\x08\x00" + struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), k, 0x4000, 64, 17, 0,
        bytes([10, 0, k >> 8, k & 255]), bytes([192, 168, 0, 1])) + udp for k in range(600)]
    pcap = tmp_path / "in.pcap"
    pcap.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"".join(
        struct.pack("<IIII", 0, k, len(f), len(f)) + f for k, f in enumerate(frames)))
    cap = tmp_path / "cap"
    run_attached_testpmd(registry, cap, eal_args, "pcaprx", 6,
                         [f"net_pcap0,rx_pcap={pcap},tx_pcap={tmp_path / 'out.pcap'}"],
                         ["--forward-mode=rxonly", "--port-topology=loop"])
    data = open_capture(cap).read()
    rx = data.records[(data.records["flags"] & 7) == 0]
    busy = rx[rx["count"] > 0]
    assert busy["count"].sum() == 600, busy["count"]
    full = busy["count"] == busy["count"].max()         # as many as asked for
    assert full.any() and (~full).any(), busy["count"]
    assert (busy["occupancy"][full] == CAPTURE_OCC_UNKNOWN).all()
    assert (busy["occupancy"][~full] == 0).all()
    assert (rx["count"] == 0).any() and (rx["occupancy"][rx["count"] == 0] == 0).all()


class PmdSession:
    """testpmd --interactive, driven line by line through stdin, its stdout
    and stderr read as they come (so the test can wait for mscope's
    "recording port" lines before it sends "start")."""

    def __init__(self, cmd, env=None):
        import threading
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=self._read, args=(f, buf), daemon=True)
                        for f, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.readers:
            t.start()

    @staticmethod
    def _read(f, buf):
        for line in f:
            buf.append(line)

    def wait_stderr(self, text, count=1, timeout=30):
        deadline = time.monotonic() + timeout
        while sum(text in line for line in list(self.err)) < count:
            assert self.proc.poll() is None, "".join(self.err)[-2000:]
            assert time.monotonic() < deadline, f"no {text!r}: {''.join(self.err)[-2000:]}"
            time.sleep(0.02)

    def send(self, *lines, pause=0.3):
        for line in lines:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            time.sleep(pause)

    def finish(self, timeout=60):
        """Send quit; return (returncode, stdout, stderr)."""
        try:
            self.send("quit", pause=0)
            self.proc.stdin.close()
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for t in self.readers:
            t.join(timeout=10)
        return self.proc.returncode, "".join(self.out), "".join(self.err)


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
@pytest.mark.parametrize("how", ["plugin", "preload"])
def test_restarted_ports_recorded_once(how, registry, eal_args, tmp_path):
    """`mscope attach --plugin` (EAL -d: a watcher thread adds the callbacks)
    and plain `mscope attach` (LD_PRELOAD): testpmd stops and restarts its
    ports, then io-forwards for a second; every packet is in the capture
    once, exactly as in the preload test above.  Interactive, so "start"
    waits for mscope's lines: the watcher installs up to 10 ms after a port
    is configured and would miss the first packets of --auto-start."""
    registry.mkdir()
    cap = tmp_path / "cap"
    col = start_collector(registry, cap)
    args = [a for a in eal_args if a not in ("-l", "0")]
    attach = ["--plugin"] if how == "plugin" else []
    pmd = PmdSession([sys.executable, "-m", "mscope.cli", "attach", *attach, "--nf-name", "tp",
                   "--nf-id", "11", "--dir", str(registry), "--",
                   TESTPMD, *args, "-l", "0-1", "--vdev=net_null0", "--vdev=net_null1", "--",
                   "--total-num-mbufs=8192", "--forward-mode=io", "--interactive"])
    try:
        pmd.wait_stderr("mscope: recording port 1")
        pmd.send("port stop all", "port start all")
        pmd.send("start", pause=1.0)
        pmd.send("stop")
        rc, out, err = pmd.finish()
        col_rc = col.wait(timeout=60)
        _, col_err = col.communicate(timeout=10)
    finally:
        if col.poll() is None:
            col.kill()
            col.wait(timeout=10)
    assert rc == 0, err[-2000:]
    assert col_rc == 0, col_err
    # Each port announced once: the restart added no second callback.
    for port in (0, 1):
        lines = [l for l in err.splitlines() if l.startswith(f"mscope: recording port {port} ")]
        assert len(lines) == 1, err
        assert ("EAL plugin" in lines[0]) == (how == "plugin")
    rx_total, tx_total = forward_totals(out)
    assert rx_total > 100_000
    assert_every_packet_accounted(cap, "tp", 11, rx_total, tx_total)


def private_copy_of_libmscope():
    """libmscope copied where EAL takes it for -d: no world-writable
    directory above it (so not under /tmp)."""
    import tempfile
    from mscope import paths
    base = Path.home() / ".cache"
    for d in [base, *base.parents]:
        if d.exists() and d.stat().st_mode & 0o002:
            pytest.skip(f"{d} is world-writable: no private place for a -d library")
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="mscope-plugin-", dir=base))
    os.chmod(tmp, 0o755)
    shutil.copy2(paths.libmscope(), tmp / "libmscope.so")
    return tmp


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
@pytest.mark.parametrize("copy", ["same file", "second copy"])
def test_preload_and_plugin_together_record_once(copy, registry, eal_args, tmp_path):
    """LD_PRELOAD=libmscope.so and -d libmscope.so (the same file, or a copy
    elsewhere): the preloaded library records, the plugin stays idle, and
    no packet is recorded twice.  No MSCOPE_ATTACH: -d is found on the
    command line, the preload in LD_PRELOAD."""
    from mscope import paths
    registry.mkdir()
    cap = tmp_path / "cap"
    lib = paths.plugin_library()      # where -d takes it (a private copy under /tmp)
    tmp = private_copy_of_libmscope() if copy == "second copy" else None
    plugin = tmp / "libmscope.so" if tmp else lib
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSCOPE_")}
    env.update(LD_PRELOAD=str(lib), MSCOPE_DIR=str(registry), MSCOPE_NF_NAME="both",
               MSCOPE_NF_ID="12")
    col = start_collector(registry, cap)
    args = [a for a in eal_args if a not in ("-l", "0")]
    try:
        pmd = PmdSession([TESTPMD, "-d", str(plugin), *args, "-l", "0-1", "--vdev=net_null0",
                       "--vdev=net_null1", "--", "--total-num-mbufs=8192",
                       "--forward-mode=io", "--interactive"], env=env)
        pmd.wait_stderr("mscope: recording port 1")
        pmd.send("start", pause=0.5)
        pmd.send("stop")
        rc, out, err = pmd.finish()
        col_rc = col.wait(timeout=60)
        _, col_err = col.communicate(timeout=10)
    finally:
        if col.poll() is None:
            col.kill()
            col.wait(timeout=10)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    assert rc == 0, err[-2000:]
    assert col_rc == 0, col_err
    recording = [l for l in err.splitlines() if l.startswith("mscope: recording port")]
    assert len(recording) == 2 and not any("EAL plugin" in l for l in recording), err
    if tmp:
        assert "stays idle" in err, err
    rx_total, tx_total = forward_totals(out)
    assert_every_packet_accounted(cap, "both", 12, rx_total, tx_total)


def ring_walk(path):
    """Every record of a ring nobody has drained, straight from the file:
    (headers, bytes each record took).  Knows batch-only records
    (MSCOPE_REC_F_NOIDS: 32 bytes, no ids)."""
    from mscope.record import REC_F_NOIDS, REC_F_PAD, RING_HDR_SIZE, RING_RECORD_DTYPE
    raw = Path(path).read_bytes()
    data_size, = np.frombuffer(raw, "<u8", 1, 16)
    head, = np.frombuffer(raw, "<u8", 1, 64)
    tail, = np.frombuffer(raw, "<u8", 1, 128)
    assert tail == 0 and head <= data_size, "a ring nobody drained does not wrap"
    data = raw[RING_HDR_SIZE:RING_HDR_SIZE + int(data_size)]
    recs, sizes, pos = [], [], 0
    while pos < head:
        r = np.frombuffer(data, RING_RECORD_DTYPE, 1, pos)[0]
        assert r["magic"] == 0x534D, pos
        if r["flags"] & REC_F_PAD:
            break
        size = 32 if r["flags"] & REC_F_NOIDS else 32 + 8 * int(r["count"])
        recs.append(r)
        sizes.append(size)
        pos += size
    return np.array(recs, RING_RECORD_DTYPE), np.array(sizes)


def ring_counters(path):
    raw = Path(path).read_bytes()[:128]
    _, next_seq, drop_records, drop_packets = np.frombuffer(raw, "<u8", 4, 64)
    return int(next_seq), int(drop_records), int(drop_packets)


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
def test_batch_only_records_counts_without_ids(registry, eal_args):
    """MSCOPE_IDS=0: every record is a bare 32-byte header with the batch's
    packet count (flags bit 2), and the counts add up to testpmd's own
    statistics exactly (with what the full ring dropped)."""
    registry.mkdir()
    args = [a for a in eal_args if a not in ("-l", "0")]
    env = dict(os.environ, MSCOPE_IDS="0")
    pmd = PmdSession([sys.executable, "-m", "mscope.cli", "attach", "--plugin", "--nf-name", "bo",
                   "--dir", str(registry), "--", TESTPMD, *args, "-l", "0-1",
                   "--vdev=net_null0", "--vdev=net_null1", "--", "--total-num-mbufs=8192",
                   "--forward-mode=io", "--interactive"], env=env)
    pmd.wait_stderr("mscope: recording port 1")
    pmd.send("start", pause=0.5)
    pmd.send("stop")
    rc, out, err = pmd.finish()
    assert rc == 0, err[-2000:]
    assert "batch-only" in err, err
    rx_total, tx_total = forward_totals(out)
    fwd = [r for r in registry.glob("bo.1.*.ring")]
    assert len(fwd) == 1, list(registry.iterdir())
    for ring in registry.glob("bo.*.ring"):
        recs, sizes = ring_walk(ring)
        assert len(recs) > 0
        assert (recs["flags"] & 0x04).all() and (sizes == 32).all()
        assert (recs["count"] > 0).all()
        next_seq, drop_records, drop_packets = ring_counters(ring)
        assert next_seq == len(recs) + drop_records
        assert (np.diff(recs["seq"].astype(np.int64)) == 1).all()
        if ring == fwd[0]:
            assert int(recs["count"].sum()) + drop_packets == rx_total + tx_total
            assert set(np.unique(recs["port"])) == {0, 1}


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
def test_plugin_status_reports_mode_and_callback_cycles(registry, eal_args):
    """Loaded with -d alone (no MSCOPE_ATTACH: found on the command line),
    MSCOPE_CB_CYCLES=1: /mscope/status says "plugin" and carries the
    callbacks' cycle counts."""
    from mscope import paths
    registry.mkdir()
    prefix = next(a.split("=", 1)[1] for a in eal_args if a.startswith("--file-prefix="))
    args = [a for a in eal_args if a not in ("-l", "0", "--no-telemetry")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSCOPE_")}
    env.update(MSCOPE_DIR=str(registry), MSCOPE_CB_CYCLES="1")
    pmd = PmdSession([TESTPMD, "-d", str(paths.plugin_library()), *args, "-l", "0-1",
                   "--vdev=net_null0", "--vdev=net_null1", "--", "--total-num-mbufs=8192",
                   "--forward-mode=macswap", "--auto-start"], env=env)
    try:
        pmd.wait_stderr("mscope: recording port 1")
        sock = f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2"
        time.sleep(0.5)
        st, = telemetry(sock, ["/mscope/status"])
    finally:
        rc, _, err = pmd.finish()      # "Press enter to exit": any line will do
    assert rc == 0, err[-2000:]
    assert st["mode"] == "plugin" and st["ids"] == 1 and st["nf_name"] == "dpdk-testpmd"
    assert st["cb_rx_batches"] > 1000 and st["cb_tx_batches"] > 1000
    assert st["cb_rx_packets"] >= st["cb_rx_batches"]
    per_batch = st["cb_rx_cycles"] / st["cb_rx_batches"]
    assert 10 < per_batch < 1_000_000, st


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
def test_attach_addrs_env_writes_address_records(registry, eal_args):
    """MSCOPE_ADDRS=1: rx records of the attached app come with address
    records.  testpmd sends one txonly burst (198.18.0.1 -> 198.18.0.2) into
    two net_ring loops (--tx-first) and io-forwards it round and round; the
    rings are read as they are left, with the collector's RingReader."""
    from ipaddress import IPv4Address
    from mscope.collector import RingReader
    from mscope.record import OCC_UNKNOWN, REC_F_ADDR, REC_F_TX

    registry.mkdir()
    args = [a for a in eal_args if a not in ("-l", "0")]
    pmd = subprocess.Popen([sys.executable, "-m", "mscope.cli", "attach", "--nf-name", "tpa",
                            "--dir", str(registry), "--",
                            TESTPMD, *args, "-l", "0-1", "--vdev=net_ring0",
                            "--vdev=net_ring1", "--", "--total-num-mbufs=8192",
                            "--forward-mode=io", "--auto-start", "--tx-first"],
                           env=dict(os.environ, MSCOPE_ADDRS="1"),
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        _, err = pmd.communicate("\n", timeout=60)
    finally:
        if pmd.poll() is None:
            pmd.kill()
            pmd.wait(timeout=10)
    assert pmd.returncode == 0, err[-2000:]
    assert "(nf_id" in err and "rx addresses)" in err, err[-2000:]
    word = int(IPv4Address("198.18.0.1")) << 32 | int(IPv4Address("198.18.0.2"))
    n_addr = n_full = 0
    for ring in registry.glob("tpa.*.ring"):
        with RingReader(str(ring)) as r:
            recs, words = r.drain(max_records=1 << 20, max_ids=1 << 24)
        addr = np.flatnonzero(recs["flags"] & REC_F_ADDR)
        if len(addr) == 0:
            continue
        n_addr += len(addr)
        prev = recs[addr - 1]
        assert (prev["flags"] == 0).all() and (prev["seq"] + 1 == recs["seq"][addr]).all()
        for f in ("tsc", "count", "port", "queue"):
            assert (prev[f] == recs[f][addr]).all(), f
        per_word = np.repeat(recs["flags"] & REC_F_ADDR, recs["count"].astype(np.int64))
        assert (words[per_word != 0] == word).all()
        # Never after a tx record.
        after_tx = np.flatnonzero(recs["flags"][:-1] & REC_F_TX) + 1
        assert not (recs["flags"][after_tx] & REC_F_ADDR).any()
        # net_ring cannot count its queue: unknown after a full burst (the
        # loops keep every burst full: testpmd asks for 32 and finds them)
        rx = (recs["flags"] == 0) & (recs["count"] > 0)
        n_full += int((rx & (recs["count"] == 32)).sum())
        assert (recs["occupancy"][rx & (recs["count"] == 32)] == OCC_UNKNOWN).all()
    assert n_addr > 0 and n_full > 0


def telemetry(path, cmds, timeout=20):
    """Send DPDK telemetry commands over the app's v2 socket; return replies."""
    import json
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    deadline = time.monotonic() + timeout
    while True:
        try:
            s.connect(str(path))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        json.loads(s.recv(4096))                     # the greeting
        out = []
        for cmd in cmds:
            if cmd == "sleep":
                time.sleep(0.3)
                continue
            s.send(cmd.encode())
            out.append(json.loads(s.recv(16384))[cmd])
        return out
    finally:
        s.close()


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
def test_telemetry_shows_and_switches_the_recorder(registry, eal_args):
    registry.mkdir()
    prefix = next(a.split("=", 1)[1] for a in eal_args if a.startswith("--file-prefix="))
    args = [a for a in eal_args if a not in ("-l", "0", "--no-telemetry")]
    pmd = subprocess.Popen([sys.executable, "-m", "mscope.cli", "attach", "--nf-name", "tpmd",
                            "--dir", str(registry), "--", TESTPMD, *args, "-l", "0-1",
                            "--vdev=net_null0", "--vdev=net_null1", "--",
                            "--total-num-mbufs=8192", "--forward-mode=io", "--auto-start"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        sock = f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2"
        wait = time.monotonic() + 30
        while not os.path.exists(sock) and time.monotonic() < wait:
            time.sleep(0.05)
        time.sleep(0.5)
        seen = lambda st: st["records"] + st["drop_records"]      # noqa: E731
        on1, on2, off, off1, off2, back, back1 = telemetry(
            sock, ["/mscope/status", "sleep", "/mscope/status", "/mscope/disable", "sleep",
                   "/mscope/status", "sleep", "/mscope/status", "/mscope/enable", "sleep",
                   "/mscope/status"])
        assert on1["nf_name"] == "tpmd" and on1["enabled"] == 1 and on1["rings"] >= 1
        assert seen(on2) > seen(on1), "recording while enabled"
        assert off["enabled"] == 0
        assert seen(off2) == seen(off1), "nothing recorded while disabled"
        assert back["enabled"] == 1 and seen(back1) > seen(off2)
        out, err = pmd.communicate("\n", timeout=60)
        assert pmd.returncode == 0, err[-2000:]
    finally:
        if pmd.poll() is None:
            pmd.kill()
            pmd.wait(timeout=10)


EXAMPLES = Path("/usr/share/dpdk/examples")


@pytest.fixture(scope="module")
def built_examples(tmp_path_factory):
    """DPDK's own l2fwd and skeleton (basicfwd), built unmodified with their
    Makefiles (pkg-config libdpdk), linked dynamically."""
    if not (EXAMPLES / "l2fwd").is_dir():
        pytest.skip("DPDK example sources missing (Debian package dpdk-doc; install.sh installs it)")
    root = tmp_path_factory.mktemp("examples")
    out = {}
    for name, binary in (("l2fwd", "l2fwd-shared"), ("skeleton", "basicfwd-shared")):
        shutil.copytree(EXAMPLES / name, root / name)
        proc = subprocess.run(["make", "-C", str(root / name), "shared"], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[name] = root / name / "build" / binary
    return out


@pytest.mark.parametrize("example, app_args", [
    ("l2fwd", ["-p", "0x3", "-q", "1", "-T", "0"]),
    ("skeleton", []),
])
def test_dpdk_examples_attached(built_examples, example, app_args, registry, eal_args,
                                tmp_path):
    registry.mkdir()
    cap = tmp_path / "cap"
    col = subprocess.Popen([sys.executable, "-m", "mscope.collector.daemon", "--dir",
                            str(registry), "--out", str(cap), "--exit-when-idle"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    args = [a for a in eal_args if a not in ("-l", "0")]
    app = subprocess.Popen([sys.executable, "-m", "mscope.cli", "attach", "--nf-name", example,
                            "--nf-id", "4", "--dir", str(registry), "--",
                            str(built_examples[example]), *args, "-l", "0-1",
                            "--vdev=net_null0", "--vdev=net_null1", "--", *app_args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        app.terminate()            # l2fwd quits cleanly; basicfwd just dies
        _, err = app.communicate(timeout=30)
        rc = col.wait(timeout=60)
        _, col_err = col.communicate(timeout=10)
    finally:
        for p in (app, col):
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    assert "mscope: recording port 0" in err and "mscope: recording port 1" in err, err
    assert rc == 0, col_err
    data = open_capture(cap).read()
    assert (data.records["nf_id"] == 4).all()
    tx = (data.records["flags"] & CAPTURE_F_TX) != 0
    for port in (0, 1):
        assert data.records["count"][~tx & (data.records["port"] == port)].sum() > 0
        assert data.records["count"][tx & (data.records["port"] == port)].sum() > 0
    assert [l for l in data.losses if l.kind not in ("ring_drop",)] == []


def test_plugin_library_copies_out_of_world_writable_dirs(tmp_path, monkeypatch):
    """EAL's -d refuses a library under a world-writable directory (a clone
    under /tmp): plugin_library() hands it a private copy instead."""
    import tempfile
    from mscope import paths
    native = tmp_path / "native"            # under /tmp: world-writable above
    native.mkdir()
    (native / "libmscope.so").write_bytes(b"\x7fELF not really")
    home = Path(tempfile.mkdtemp(prefix="mscope-home-", dir=Path.home()))
    try:
        monkeypatch.setattr(paths, "native_dir", lambda: native)
        monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
        lib = paths.plugin_library()
        assert lib != native / "libmscope.so"
        assert lib.read_bytes() == b"\x7fELF not really"
        assert not any(d.stat().st_mode & 0o002 for d in [lib.parent, *lib.parent.parents])
        assert (lib.parent.stat().st_mode & 0o777) == 0o700
        (native / "libmscope.so").write_bytes(b"\x7fELF rebuilt, longer")
        assert paths.plugin_library().read_bytes() == b"\x7fELF rebuilt, longer"
    finally:
        shutil.rmtree(home)


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
def test_an_idle_forwarding_lcore_writes_idle_polls(registry, eal_args, tmp_path):
    """testpmd polls two net_ring ports nothing is sent to: its forwarding
    lcore's empty polls write an idle-poll record (rx, 0 packets) once per
    MSCOPE_IDLE_NS of TSC, no more often, and the analyzer keeps them
    apart from batches, with no silence while the lcore polls."""
    from mscope.analyzer.ingest import SILENCE_NS, _one_stream
    from mscope.record import IDLE_NS
    cap = tmp_path / "cap"
    run_attached_testpmd(registry, cap, eal_args, "idle", 5, ["net_ring0", "net_ring1"],
                         ["--forward-mode=rxonly"])
    c = open_capture(cap)
    data = c.read()
    fwd = [s["stream"] for s in c.manifest["streams"] if s["lcore"] == 1]
    assert len(fwd) == 1, c.manifest["streams"]
    recs = data.records[data.stream == fwd[0]]
    assert len(recs) > 1000                        # ~50,000 a second of polling
    assert (recs["count"] == 0).all() and (recs["flags"] == 0).all()
    assert (recs["occupancy"] == 0).all()            # each poll found its queue empty
    gaps = np.diff(recs["time_ns"].astype(np.int64))
    assert gaps.min() >= 0.95 * IDLE_NS, gaps.min()   # the collector's ns from the TSC
    assert np.median(gaps) < 1.1 * IDLE_NS
    # (no packets: not a capture mscope diagnose takes; its stream is)
    nf = _one_stream("idle", 5, np.ascontiguousarray(recs), np.zeros(0, np.uint64))
    assert len(nf.batch_ns) == 0 and len(nf.idle_ns) == len(recs)
    # polling all along: a silence is a pause of the thread (the VM's
    # other work preempts it: ~2% of the gaps here), not the rule
    assert np.mean(gaps < 1.1 * IDLE_NS) > 0.9
    assert nf.silences.tolist() == [[int(a), int(b)] for a, b, g in zip(
        recs["time_ns"][:-1], recs["time_ns"][1:], gaps) if g > SILENCE_NS]


@pytest.fixture
def veth_pair():
    """A veth pair (names), both ends up with IPv6 off so that neither
    kernel end sends anything of its own (router solicitations, MLD)
    into the other: what arrives is what the test sends.  Deleted at the
    end whatever happens."""
    import uuid
    if os.geteuid() != 0:
        pytest.skip("creating a veth pair needs root (CAP_NET_ADMIN)")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (Debian package iproute2)")
    tag = uuid.uuid4().hex[:8]
    a, b = f"msr{tag}a", f"msr{tag}b"
    proc = subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot create a veth pair: {proc.stderr.strip()}")
    try:
        for end in (a, b):
            knob = Path(f"/proc/sys/net/ipv6/conf/{end}/disable_ipv6")
            if knob.exists():
                knob.write_text("1")
            subprocess.run(["ip", "link", "set", end, "up"], check=True, timeout=30)
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True, timeout=30)


def wait_stopped(pid, timeout=5.0):
    """Until every thread of `pid` is stopped (state T): SIGSTOP is
    delivered to each thread on its own."""
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            try:
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
            except (OSError, IndexError):
                pass
        if states and all(s in "Tt" for s in states):
            return
        assert time.monotonic() < deadline, f"{pid} not stopped: {states}"
        time.sleep(0.002)


def run_refusing_testpmd(registry, cap, eal_args, veth, nf_name, nf_id, frames, env=None,
                         forward="rxonly"):
    """testpmd `forward`ing (rxonly; io: back out of the port) on net_pcap
    over veth end A, `mscope attach`ed, made
    to refuse packets: once forwarding, it is stopped (SIGSTOP), `frames`
    60-byte IPv4 frames go into end B from an AF_PACKET socket, far more
    than libpcap's buffer holds, and it is continued (SIGCONT) for 0.5 s;
    then "stop" (forward statistics), "show port stats 0" (NIC
    statistics) and "quit".  mscope-collect --out `cap` drains it.
    Returns a dict: frames sent, the kernel's count of frames into A,
    testpmd's RX-packets, RX-dropped (forward statistics) and RX-missed
    (NIC statistics) for port 0, CLOCK_MONOTONIC ns of SIGSTOP, of every
    thread seen stopped and of SIGCONT, testpmd's stdout and stderr."""
    import signal
    import socket
    import struct
    a, b = veth
    registry.mkdir()
    col = start_collector(registry, cap)
    args = [x for x in eal_args if x not in ("-l", "0")]
    pmd = PmdSession([sys.executable, "-m", "mscope.cli", "attach", "--nf-name", nf_name,
                      "--nf-id", str(nf_id), "--dir", str(registry), "--",
                      TESTPMD, *args, "-l", "0-1", f"--vdev=net_pcap0,iface={a}", "--",
                      "--total-num-mbufs=8192", f"--forward-mode={forward}", "--interactive"],
                     env=env)
    mac = bytes.fromhex(Path(f"/sys/class/net/{a}/address").read_text().strip().replace(":", ""))
    # each frame its own packet id: the IP id and UDP source port count
    head = mac + bytes.fromhex("020000000001") + b"\x08\x00"
    sent_frames = [head + struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 46, k & 0xFFFF, 0x4000, 64, 17, 0, bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2])) + struct.pack("!HHHH", 1000 + (k >> 16), 2000, 26, 0) + bytes(18)
        for k in range(frames)]
    assert len(sent_frames[0]) == 60
    rx_count = Path(f"/sys/class/net/{a}/statistics/rx_packets")
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    got = {}
    try:
        sock.bind((b, 0))
        pmd.wait_stderr("mscope: recording port 0")
        pmd.send("start", pause=0)
        # the forwarding lcore's first poll opens its ring (and takes the
        # port's first imissed reading, the baseline)
        deadline = time.monotonic() + 30
        while not list(registry.glob(f"{nf_name}.1.*.ring")):
            assert pmd.proc.poll() is None and time.monotonic() < deadline, \
                "".join(pmd.err)[-2000:]
            time.sleep(0.01)
        time.sleep(0.2)
        into_a = int(rx_count.read_text())
        got["stop_ns"] = time.monotonic_ns()
        os.kill(pmd.proc.pid, signal.SIGSTOP)       # `mscope attach` execs testpmd
        wait_stopped(pmd.proc.pid)
        got["stopped_ns"] = time.monotonic_ns()
        sent, deadline = 0, time.monotonic() + 5
        while sent < frames and time.monotonic() < deadline:
            try:
                sock.send(sent_frames[sent])
                sent += 1
            except BlockingIOError:
                pass
        time.sleep(0.05)                             # the last frames through veth
        got["sent"], got["into_a"] = sent, int(rx_count.read_text()) - into_a
        got["cont_ns"] = time.monotonic_ns()
        os.kill(pmd.proc.pid, signal.SIGCONT)
        time.sleep(0.5)
        pmd.send("stop", pause=0.2)
        pmd.send("show port stats 0", pause=0.2)
        rc, out, err = pmd.finish(timeout=30)
        col_rc = col.wait(timeout=60)
        _, col_err = col.communicate(timeout=10)
    finally:
        sock.close()
        if pmd.proc.poll() is None:
            os.kill(pmd.proc.pid, signal.SIGCONT)    # never leave it stopped
            pmd.proc.kill()
            pmd.proc.wait(timeout=10)
        if col.poll() is None:
            col.kill()
            col.wait(timeout=10)
    assert rc == 0, err[-2000:]
    assert col_rc == 0, col_err
    fwd = re.search(r"Forward statistics for port 0.*?RX-packets:\s+(\d+)\s+RX-dropped:\s+(\d+)",
                    out, re.S)
    nic = re.search(r"NIC statistics for port 0.*?RX-missed:\s+(\d+)", out, re.S)
    assert fwd and nic, out[-3000:]
    got.update(rx_packets=int(fwd[1]), rx_dropped=int(fwd[2]), rx_missed=int(nic[1]),
               out=out, err=err)
    return got


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
@pytest.mark.parametrize("idle", ["idle polls", "MSCOPE_IDLE=0"])
def test_refused_packets_recorded_as_testpmd_counts_them(idle, registry, eal_args, veth_pair,
                                                         tmp_path):
    """testpmd reads veth end A through net_pcap (libpcap on a live
    interface, whose ps_drop the PMD reports as imissed).  Stopped
    (SIGSTOP) while 50,000 frames arrive, it refuses most of them: the
    kernel drops what libpcap's buffer cannot hold.  The shim reads imissed
    at the forwarding lcore's first poll after the stop and writes a
    refused record (flags 0x08 alone, count 2: packets, ns) right after
    that poll's rx record; its packets are testpmd's own RX-missed
    exactly, and with the rx records they account for every frame sent.
    With MSCOPE_IDLE=0 no silence can be seen (empty polls write nothing),
    and the reading is the one due every MSCOPE_REFUSED_NS: the stop was
    longer, so it is that same first poll's."""
    from mscope.capture.format import CAPTURE_F_REFUSED, CAPTURE_OCC_UNKNOWN, id_counts
    from mscope.record import REFUSED_NS
    frames = 50_000
    cap = tmp_path / "cap"
    env = dict(os.environ, MSCOPE_IDLE="0") if idle == "MSCOPE_IDLE=0" else None
    run = run_refusing_testpmd(registry, cap, eal_args, veth_pair, "refu", 13, frames, env=env)
    assert run["sent"] == frames and run["into_a"] == frames, run["sent"]
    # testpmd refused some and received the rest: nothing else came in
    assert run["rx_missed"] == run["rx_dropped"] > 0, run["out"][-3000:]
    assert run["rx_packets"] + run["rx_dropped"] == frames
    c = open_capture(cap)
    data = c.read()
    assert data.losses == []
    recs = data.records
    at = np.concatenate([[0], np.cumsum(id_counts(recs))])
    assert (at == data.id_offsets).all()
    refused = np.flatnonzero(recs["flags"] & CAPTURE_F_REFUSED)
    assert len(refused) >= 1
    assert (recs["flags"][refused] == CAPTURE_F_REFUSED).all()     # never with another bit
    assert (recs["count"][refused] == 2).all()
    assert (recs["port"][refused] == 0).all() and (recs["queue"][refused] == 0).all()
    assert (recs["nf_id"] == 13).all()
    packets = data.ids[at[refused]].astype(np.int64)
    window_ns = data.ids[at[refused] + 1].astype(np.int64)
    # Every refusal happened during the stop, before the first poll after
    # it, whose reading took them all: the records carry testpmd's count
    # exactly (later readings found no growth and wrote nothing).
    assert packets.sum() == run["rx_missed"], (packets, run["rx_missed"])
    assert (packets > 0).all() and (window_ns > 0).all()
    # The first was read at the forwarding lcore's first poll after the
    # stop: the record before it in its stream is that poll's rx batch,
    # after SIGCONT -- or, with idle polls, an empty-poll record where that
    # poll found nothing yet (its own, or the other port's just before;
    # seen once in a full CI run on a loaded VM); any before that, from
    # before the stop.  Or the stop fell inside a poll, between its record
    # and the periodic reading that poll was due (net_pcap's stats are
    # syscalls, where a SIGSTOP lands): that poll's record is from before
    # the stop, and its reading, stamped when it is written, after it
    # (seen once in a full CI run).
    fwd, = [s["stream"] for s in c.manifest["streams"] if s["lcore"] == 1]
    first = refused[0]
    assert data.stream[first] == fwd
    mine = np.flatnonzero(data.stream == fwd)
    k = int(np.searchsorted(mine, first))
    assert k >= 1
    prev, r0 = recs[mine[k - 1]], recs[first]
    assert prev["seq"] + 1 == r0["seq"]
    assert prev["flags"] == 0
    assert run["cont_ns"] <= r0["time_ns"] < run["cont_ns"] + 1_000_000_000
    assert prev["time_ns"] <= r0["time_ns"]
    in_poll = prev["time_ns"] < run["stopped_ns"]
    assert in_poll or run["cont_ns"] <= prev["time_ns"], (prev, run["stop_ns"], run["cont_ns"])
    assert (recs["time_ns"][mine[:k - 1]] < run["stopped_ns"]).all()
    if prev["count"] == 0:
        # an empty poll: its queue empty, which the reading carries too
        assert idle == "idle polls"
        assert prev["occupancy"] == 0 and r0["occupancy"] == 0
    else:
        # net_pcap cannot count its queue, and the batch was a full one
        assert prev["occupancy"] == CAPTURE_OCC_UNKNOWN and r0["occupancy"] == prev["occupancy"]
    # Its window runs from the last reading before the stop to its own:
    # the whole stop at least (TSC rates, the shim's and the collector's,
    # may differ by 0.1%).  With idle polls, the last reading came at most
    # one reading interval before the last record then (an idle poll's),
    # and not after it but for the reading's own time.  The interval is
    # MSCOPE_REFUSED_NS, or 200 times a reading's least cost: net_pcap's
    # ~7 us on the bench VM; the bound allows 150 us (a clean clone's CI on
    # a VM 1.6x slower than the bench's: the reading 13.3 ms before the
    # last record, a least cost of 66 us).
    stop = run["cont_ns"] - run["stopped_ns"]
    assert window_ns[0] >= stop - stop // 1000, (window_ns[0], stop)
    if idle == "idle polls":
        span = int(r0["time_ns"]) - int(recs["time_ns"][mine[k - 2]])
        slack = 1_000_000 + span // 500
        assert span - slack <= window_ns[0] <= span + 30 * REFUSED_NS + slack, \
            (window_ns[0], span)
    # Every frame sent is in an rx batch or refused (the forwarding lcore
    # received what testpmd says it did; lcore 0's start-up flush found
    # nothing, nothing having been sent by then).
    rx = recs["flags"] == 0
    assert recs["count"][rx & (data.stream == fwd)].sum() == run["rx_packets"]
    assert recs["count"][rx].sum() + packets.sum() == frames
    after_cont, after_poll = int(r0["time_ns"]) - run["cont_ns"], r0["time_ns"] - prev["time_ns"]
    print(f"{idle}: sent {frames}; RX-packets {run['rx_packets']} RX-missed "
          f"{run['rx_missed']}; refused records {list(zip(packets.tolist(), window_ns.tolist()))}"
          f"; stop {stop / 1e6:.1f} ms; first read {after_cont / 1e6:.3f} ms after SIGCONT, "
          f"{after_poll / 1e3:.1f} us after its poll's rx record")


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
def test_refused_packets_unrecorded_with_refused_off(registry, eal_args, veth_pair, tmp_path):
    """MSCOPE_REFUSED=0: testpmd refuses as in the test above, and no
    refused record says so; the rx records and testpmd's RX-missed account
    for every frame sent."""
    from mscope.capture.format import CAPTURE_F_REFUSED
    frames = 50_000
    cap = tmp_path / "cap"
    run = run_refusing_testpmd(registry, cap, eal_args, veth_pair, "refuoff", 14, frames,
                               env=dict(os.environ, MSCOPE_REFUSED="0"))
    assert run["sent"] == run["into_a"] == frames
    assert run["rx_missed"] == run["rx_dropped"] > 0
    data = open_capture(cap).read()
    assert data.losses == [] and len(data.records) > 0
    assert not (data.records["flags"] & CAPTURE_F_REFUSED).any()
    rx = data.records["flags"] == 0
    assert data.records["count"][rx].sum() + run["rx_missed"] == frames
    print(f"MSCOPE_REFUSED=0: sent {frames}; RX-packets {run['rx_packets']} RX-missed "
          f"{run['rx_missed']}")


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
def test_a_stopped_nic_fed_nf_diagnosed_end_to_end(registry, eal_args, veth_pair, tmp_path):
    """testpmd io-forwarding on net_pcap (a NIC feeds it; nothing records
    the sender), stopped ~100 ms while 50,000 frames arrive: `mscope
    diagnose` finds the packets libpcap held late (their arrivals from the
    forwarding lcore's idle polls before the stop, though the PMD cannot
    count its queue and the main lcore's start-up flush makes two
    streams), names the stop, and counts what the NIC refused with its
    rule, as testpmd counts it."""
    from mscope.diagnose import diagnose, format_summary
    run = run_refusing_testpmd(registry, tmp_path / "cap", eal_args, veth_pair, "fwd", 15,
                               50_000, forward="io")
    assert run["rx_missed"] > 0 and run["rx_packets"] + run["rx_missed"] == 50_000
    diag, ctx = diagnose(tmp_path / "cap", slo_us=1000)
    stop_ms = (run["cont_ns"] - run["stop_ns"]) / 1e6          # SIGSTOP to SIGCONT
    assert diag["refused"] == [dict(diag["refused"][0], nf="fwd", packets=run["rx_missed"],
                                    in_capture=False)]
    # nearly every packet it took waited out the stop (the last few came
    # as it drained)
    assert len(diag["victims"]) >= 0.9 * run["rx_packets"], len(diag["victims"])
    text = format_summary(diag, ctx)
    rule = next((line for line in text.splitlines() if line.startswith("  fwd stopped polling")),
                "")
    stopped = re.search(r"fwd stopped polling for ([\d,]+) us", rule)
    assert stopped and abs(int(stopped[1].replace(",", "")) / 1e3 - stop_ms) < 10, (rule, stop_ms)
    assert f"(+{run['rx_missed']:,} refused at its input, in no other record)" in rule, text
