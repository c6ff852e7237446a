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


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
def test_testpmd_attached_every_packet_accounted(registry, eal_args, tmp_path):
    """testpmd io-forwards between two net_null ports as fast as it can;
    every packet it received and sent is in the capture or counted as lost
    on a full ring, exactly."""
    registry.mkdir()
    cap = tmp_path / "cap"
    col = subprocess.Popen([sys.executable, "-m", "mscope.collector.daemon", "--dir",
                            str(registry), "--out", str(cap), "--exit-when-idle",
                            "--keep-rings"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    args = [a for a in eal_args if a not in ("-l", "0")]
    pmd = subprocess.Popen([sys.executable, "-m", "mscope.cli", "attach", "--nf-name", "testpmd",
                            "--nf-id", "9", "--dir", str(registry), "--",
                            TESTPMD, *args, "-l", "0-1", "--vdev=net_null0",
                            "--vdev=net_null1", "--", "--total-num-mbufs=8192",
                            "--forward-mode=io", "--auto-start"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
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
    assert "mscope: recording port 0" in err and "mscope: recording port 1" in err
    totals = re.search(r"Accumulated forward statistics for all ports.*?RX-packets:\s+(\d+)"
                       r".*?TX-packets:\s+(\d+)", out, re.S)
    rx_total, tx_total = int(totals.group(1)), int(totals.group(2))
    assert rx_total > 100_000
    c = open_capture(cap)
    data = c.read()
    assert {s["nf_name"] for s in c.manifest["streams"]} == {"testpmd"}
    assert (data.records["nf_id"] == 9).all()
    tx = (data.records["flags"] & CAPTURE_F_TX) != 0
    assert set(np.unique(data.records["port"][~tx])) == {0, 1}
    assert set(np.unique(data.records["port"][tx])) == {0, 1}
    # testpmd's forwarding lcore (1) moves every packet it counts; its main
    # lcore (0) only flushes rx queues at start and stop (uncounted by it).
    from mscope.capture import describe
    streams = {s["lcore"]: s for s in describe(cap)["streams"]}
    fwd = streams[1]
    assert fwd["ids"] + fwd["drop_packets"] == rx_total + tx_total
    for lcore, s in streams.items():
        if lcore != 1:
            sel = data.stream == s["stream"]
            assert not tx[sel].any(), "only rx flushes outside the forwarding lcore"


@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
def test_attach_addrs_env_writes_address_records(registry, eal_args):
    """MSCOPE_ADDRS=1: rx records of the attached app come with address
    records.  testpmd sends one txonly burst (198.18.0.1 -> 198.18.0.2) into
    two net_ring loops (--tx-first) and io-forwards it round and round; the
    rings are read as they are left, with the collector's RingReader."""
    from ipaddress import IPv4Address
    from mscope.collector import RingReader
    from mscope.record import REC_F_ADDR, REC_F_TX

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
    n_addr = 0
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
    assert n_addr > 0


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
