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
