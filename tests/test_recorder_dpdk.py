"""The recorder in real DPDK processes: rte_mbuf batches, ids checked
against the independent Python reference of the packet-id scheme."""
import json
import os
import stat
import struct
import subprocess
from ipaddress import IPv4Address

import numpy as np

from conftest import CSRC, TESTS_C, recorder_sources, requires_dpdk
from mscope import paths
from mscope.collector import RingReader
from mscope.packet_id import packet_id
from mscope.record import OCC_UNKNOWN, REC_F_ADDR, REC_F_TX

pytestmark = requires_dpdk

DUMP_LEN = 128


def read_frames(path, with_id):
    """Frames written by the C side: [u64 id] u16 pkt_len, u16 len, 128 bytes."""
    head = 8 if with_id else 0
    entry = head + 4 + DUMP_LEN
    blob = path.read_bytes()
    assert len(blob) % entry == 0
    out = []
    for off in range(0, len(blob), entry):
        e = blob[off:off + entry]
        pkt_len, n = np.frombuffer(e[head:head + 4], "<u2")
        frame = e[head + 4:head + 4 + n]
        out.append((int(np.frombuffer(e[:8], "<u8")[0]) if with_id else None,
                    frame, int(pkt_len)))
    return out


def test_recorder_on_mbufs_c(cbuild, registry, eal_args, tmp_path):
    """Stamps carried rx->tx across rewrites, upstream trust, splitting and
    drops on a full ring, and reading a port's refusals (checked in C),
    then every id recomputed here."""
    exe = cbuild("test_recorder_dpdk",
                 [TESTS_C / "test_recorder_dpdk.c", *recorder_sources(),
                  CSRC / "mscope_dpdk.c"], dpdk=True)
    dump = tmp_path / "frames.bin"
    proc = subprocess.run([str(exe), *eal_args, "--vdev=net_null_refused", "--", str(registry),
                           str(dump)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "0 failed" in proc.stdout
    frames = read_frames(dump, with_id=True)
    assert len(frames) == 1500
    for rec_id, frame, pkt_len in frames:
        assert packet_id(frame, pkt_len) == rec_id


def short_payload_frames():
    """Frames whose hashed payload words end early: IPv4 and IPv6 TCP, UDP,
    ICMP(v6) and another protocol with 0..24 payload bytes, each also cut
    short at every length (a first segment that ends inside the headers or
    the payload), and runts of 0..13 bytes."""
    frames = []
    for version, proto, l4_len in ((4, 6, 20), (4, 17, 8), (4, 1, 8), (4, 47, 0),
                                   (6, 6, 20), (6, 17, 8), (6, 58, 8), (6, 0, 0)):
        for pay in range(25):
            l4 = bytes(range(100, 100 + l4_len))
            if proto == 6:
                l4 = l4[:12] + b"\x50" + l4[13:]            # data offset 5
            body = l4 + bytes((7 * i + pay) & 0xff for i in range(pay))
            if version == 4:
                ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0x1234 + pay,
                                 0x4000, 64, proto, 0, bytes(4), bytes(4))
                eth = bytes(12) + b"\x08\x00"
            else:
                ip = struct.pack("!IHBB16s16s", 0x60000000, len(body), proto, 64,
                                 bytes(16), bytes(16))
                eth = bytes(12) + b"\x86\xdd"
            frame = eth + ip + body
            frames += [(frame[:cut], len(frame)) for cut in range(len(frame) + 1)]
    frames += [(bytes(range(1, 1 + n)), n) for n in range(14)]
    return frames


def test_short_payload_loads_agree_with_the_reference(cbuild):
    """The parser's loads of payload words cut short by the end of the
    packet or of the first segment (the 8 bytes ending there, shifted
    down; bytes one by one below 8), checked against the reference under
    ASan/UBSan, each frame in a buffer of exactly its length."""
    exe = cbuild("pktid_probe", [TESTS_C / "pktid_probe.c"], sanitize=True)
    frames = short_payload_frames()
    data = b"".join(struct.pack("=II", pkt_len, len(f)) + f for f, pkt_len in frames)
    proc = subprocess.run([str(exe)], input=data, capture_output=True, timeout=120)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr.decode()[-4000:]
    got = [int(w) for w in proc.stdout.split()]
    assert got == [packet_id(f, pkt_len) for f, pkt_len in frames]


def drain_all(path):
    with RingReader(path) as r:
        recs, ids = r.drain(max_records=1 << 20, max_ids=1 << 23)
        state = r.state()
    return recs, ids, state


def addr_word(src, dst):
    """An address record's word: the IPv4 addresses as numbers, src high."""
    return int(IPv4Address(src)) << 32 | int(IPv4Address(dst))


def test_address_records_on_mbufs_c(cbuild, registry, eal_args):
    """MSCOPE_F_ADDRS on mbufs, checked in C: words of IPv4 (untagged and
    behind a VLAN tag) and 0 for IPv6, ARP and a cut-short header; each
    address record right after its rx record; splitting; none from tx or
    from a handle without the flag; drops on a full ring.  Then the pair it
    leaves, read here through the collector's RingReader."""
    exe = cbuild("test_addr_records_dpdk",
                 [TESTS_C / "test_addr_records_dpdk.c", *recorder_sources(),
                  CSRC / "mscope_dpdk.c"], dpdk=True)
    proc = subprocess.run([str(exe), *eal_args, "--", str(registry)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "0 failed" in proc.stdout
    (ring,) = registry.glob("nfd.*.ring")
    recs, words, state = drain_all(str(ring))
    assert state["state"] == "closed" and state["drop_records"] == 0
    assert recs["flags"].tolist() == [0, REC_F_ADDR]
    assert recs["seq"][1] == recs["seq"][0] + 1 and recs["tsc"][1] == recs["tsc"][0]
    assert recs["count"].tolist() == [6, 6] and recs["port"].tolist() == [3, 3]
    assert words[6:].tolist() == [
        addr_word("10.1.2.3", "192.168.10.11"),
        0,                                           # IPv6
        addr_word("172.16.0.5", "8.8.8.8"),          # behind an 802.1Q tag
        0,                                           # ARP
        addr_word("255.255.255.254", "128.0.0.1"),
        0,                                           # IPv4 header cut short
    ]


def test_demo_forwarder_ids_follow_packets(registry, eal_args, tmp_path):
    """A real DPDK forwarder (source -> net_ring -> NAT -> net_null): the ids
    the source recorded are the reference ids of the frames it built, the NAT
    saw the same ids in the same order, and its tx kept them through the
    address rewrite."""
    exe = paths.demo_forwarder()
    assert exe.exists(), f"{exe} missing: pip install . builds it where DPDK is found"
    dump = tmp_path / "sent.bin"
    n = 20000
    proc = subprocess.run(
        [str(exe), *eal_args, "--vdev=net_ring0", "--vdev=net_null0", "--",
         "--packets", str(n), "--rate", "400000", "--dir", str(registry),
         "--dump", str(dump), "--seed", "11"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    ready, done = events[0], events[-1]
    assert done["generated"] == n and done["unsent"] == 0 and done["forwarded"] == n
    for ring in (ready["src_ring"], ready["nf_ring"]):
        assert stat.S_IMODE(os.stat(ring).st_mode) == 0o600

    frames = read_frames(dump, with_id=False)
    reference = np.array([packet_id(f, pkt_len) for _, f, pkt_len in frames], np.uint64)
    assert len(np.unique(reference)) == n, "distinct frames, distinct ids"

    src, src_ids, src_state = drain_all(ready["src_ring"])
    nat, nat_ids, nat_state = drain_all(ready["nf_ring"])
    assert src_state["state"] == nat_state["state"] == "closed"
    assert src_state["drop_records"] == nat_state["drop_records"] == 0
    assert (src["flags"] & REC_F_TX).all() and (src["nf_id"] == 1).all()
    assert np.array_equal(src_ids, reference)

    rx = (nat["flags"] & REC_F_TX) == 0
    offsets = np.concatenate([[0], np.cumsum(nat["count"].astype(np.int64))])
    per_id_rx = np.repeat(rx, nat["count"].astype(np.int64))
    assert np.array_equal(nat_ids[per_id_rx], reference)
    assert np.array_equal(nat_ids[~per_id_rx], reference)
    assert len(offsets) == len(nat) + 1
    # The NAT's input queue is a real rte_ring: occupancy is known at rx.
    assert (nat["occupancy"][rx] != OCC_UNKNOWN).all()
    assert (nat["occupancy"][~rx] == OCC_UNKNOWN).all()
    # Time only moves forward within a ring.
    assert (np.diff(src["tsc"].astype(np.int64)) >= 0).all()
    assert (np.diff(nat["tsc"].astype(np.int64)) >= 0).all()
