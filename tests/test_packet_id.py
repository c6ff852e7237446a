"""Packet ids: the C scheme (csrc/mscope_pktid.h) held to its Python
reference (src/mscope/packet_id.py) on generated frames, and the properties
hop-to-hop matching through NATs relies on."""
import shutil
import struct
import subprocess
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TESTS_C
from mscope.packet_id import (ipv4_packet_ids, ipv6_packet_ids, mix,
                               packet_id)

M64 = (1 << 64) - 1
K1, K2 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F

# Every hypothesis test runs the probe once per example; ASan startup is
# ~5 ms, so a few hundred examples stay within a couple of seconds.
FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


@pytest.fixture(scope="session")
def c_ids(cbuild):
    """ids from the C function, via tests/c/pktid_probe.c under ASan/UBSan:
    takes [(frame, pkt_len)], returns a list of ints."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found: the C side of these tests needs it")
    exe = cbuild("pktid_probe", [TESTS_C / "pktid_probe.c"], sanitize=True)

    def run(frames):
        data = b"".join(struct.pack("=II", pkt_len, len(f)) + bytes(f)
                        for f, pkt_len in frames)
        proc = subprocess.run([str(exe)], input=data, capture_output=True,
                              timeout=60)
        # UBSan reports and carries on, so its stderr is checked too.
        assert proc.returncode == 0 and not proc.stderr, proc.stderr.decode()
        return [int(w) for w in proc.stdout.split()]

    return run


# --- frames -------------------------------------------------------------

@dataclass(frozen=True)
class Packet:
    """A well-formed Ethernet/IPv4 or Ethernet/IPv6 packet by its fields;
    frame() builds it.  For IPv6, ttl is the hop limit, tos the traffic
    class, proto the next header; ip_id, frag, ip_opts and ip_csum are
    IPv4's only (an IPv6 packet is never a later fragment to the parser)."""
    version: int = 4
    proto: int = 6
    ip_id: int = 0
    frag: int = 0x4000               # flags and offset halfword (DF set)
    tcp_seq: int = 0
    tcp_ack: int = 0
    payload: bytes = b""
    ip_opts: bytes = b""             # a multiple of 4 bytes, up to 40
    tcp_opts: bytes = b""            # a multiple of 4 bytes, up to 40
    src: bytes = bytes(4)            # 16 bytes for IPv6
    dst: bytes = bytes(4)
    sport: int = 0
    dport: int = 0
    icmp_id: int = 0                 # the echo id an ICMP NAT rewrites
    ttl: int = 64
    tos: int = 0                     # DSCP and ECN
    flow_label: int = 0              # IPv6 only, 20 bits
    ip_csum: int = 0
    l4_csum: int = 0
    mac_dst: bytes = bytes(6)
    mac_src: bytes = bytes(6)
    vlan: tuple | None = None        # (TPID, TCI)
    trailer: bytes = b""             # Ethernet padding past the IP packet

    @property
    def l3(self):
        return 18 if self.vlan else 14

    @property
    def l4(self):
        """Offset of the L4 header (of the payload, for other protocols)."""
        return self.l3 + (40 if self.version == 6 else 20 + len(self.ip_opts))

    @property
    def length_offset(self):
        """Offset of the IPv4 total length or IPv6 payload length field."""
        return self.l3 + (4 if self.version == 6 else 2)

    @property
    def first_fragment(self):
        return self.version == 6 or self.frag & 0x1FFF == 0

    def l4_header(self):
        if not self.first_fragment:
            return b""
        if self.proto == 6:
            return (struct.pack("!HHIIBBHHH", self.sport, self.dport,
                                self.tcp_seq, self.tcp_ack,
                                (5 + len(self.tcp_opts) // 4) << 4, 0x18,
                                512, self.l4_csum, 0) + self.tcp_opts)
        if self.proto == 17:
            return struct.pack("!HHHH", self.sport, self.dport,
                               8 + len(self.payload), self.l4_csum)
        if self.proto == (58 if self.version == 6 else 1):
            return struct.pack("!BBHHH", 128 if self.version == 6 else 8, 0,
                               self.l4_csum, self.icmp_id, self.sport)
        return b""

    def ip_length(self):
        """The IPv4 total length or the IPv6 payload length."""
        n = len(self.l4_header()) + len(self.payload)
        return n if self.version == 6 else 20 + len(self.ip_opts) + n

    def frame(self):
        eth = self.mac_dst + self.mac_src
        if self.vlan:
            eth += struct.pack("!HH", *self.vlan)
        if self.version == 6:
            ip = struct.pack("!IHBB16s16s",
                             6 << 28 | self.tos << 20 | self.flow_label,
                             self.ip_length(), self.proto, self.ttl,
                             self.src, self.dst)
            return (eth + b"\x86\xdd" + ip + self.l4_header() + self.payload
                    + self.trailer)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45 + len(self.ip_opts) // 4,
                         self.tos, self.ip_length(), self.ip_id, self.frag,
                         self.ttl, self.proto, self.ip_csum, self.src,
                         self.dst)
        return (eth + b"\x08\x00" + ip + self.ip_opts + self.l4_header()
                + self.payload + self.trailer)

    def payload16(self):
        return (self.payload[:16] + bytes(16))[:16]


def options(max_bytes=40):
    """Zero or more 4-byte words, as IP and TCP options come."""
    return st.integers(0, max_bytes // 4).flatmap(
        lambda k: st.binary(min_size=4 * k, max_size=4 * k))


u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
mac = st.binary(min_size=6, max_size=6)
flow_label = st.integers(0, 0xFFFFF)


def addr(version):
    n = 16 if version == 6 else 4
    return st.binary(min_size=n, max_size=n)


# Mostly first fragments (an L4 header to parse), some later ones, some junk.
frag_field = st.integers(0, 9).flatmap(lambda k: (
    st.sampled_from([0, 0x4000, 0x2000, 0x8000 | 0x4000]) if k < 7 else
    st.builds(lambda mf, off: mf | off, st.sampled_from([0, 0x2000]),
              st.integers(1, 0x1FFF)) if k < 9 else
    u16))
# IPv4 protocols and IPv6 next headers: TCP, UDP, ICMP, the other version's
# ICMP (not parsed as ICMP), and some that are not parsed at all (for IPv6
# extension headers: hop-by-hop, routing, fragment, destination options).
V4_PROTOS = st.sampled_from([6, 6, 6, 17, 17, 1, 58, 47, 50, 0])
V6_NEXT_HEADERS = st.sampled_from([6, 6, 6, 17, 17, 58, 1, 0, 43, 44, 50,
                                   59, 60])


def packets(versions=st.sampled_from([4, 6]), frags=frag_field,
            min_payload=0, max_payload=48):
    def build(v):
        v4 = v == 4
        return st.builds(
            Packet, version=st.just(v),
            proto=V4_PROTOS if v4 else V6_NEXT_HEADERS,
            ip_id=u16 if v4 else st.just(0),
            frag=frags if v4 else st.just(0),
            tcp_seq=u32, tcp_ack=u32,
            payload=st.binary(min_size=min_payload, max_size=max_payload),
            ip_opts=options() if v4 else st.just(b""),
            tcp_opts=options(), src=addr(v), dst=addr(v),
            sport=u16, dport=u16, icmp_id=u16, ttl=st.integers(0, 255),
            tos=st.integers(0, 255),
            flow_label=st.just(0) if v4 else flow_label,
            ip_csum=u16 if v4 else st.just(0), l4_csum=u16, mac_dst=mac,
            mac_src=mac,
            vlan=st.one_of(st.none(),
                           st.tuples(st.sampled_from([0x8100, 0x88A8]), u16)),
            trailer=st.one_of(st.just(b""), st.binary(max_size=24)))
    return versions.flatmap(build)


@st.composite
def any_frame(draw):
    """(frame, pkt_len): IPv4 and IPv6 built well or broken on purpose,
    other ethertypes, short frames and random bytes."""
    kind = draw(st.sampled_from(["ip"] * 8 + ["non_ip", "random"]))
    if kind == "random":
        frame = bytearray(draw(st.binary(max_size=90)))
        if len(frame) >= 14 and draw(st.booleans()):
            # Random bytes behind an IP ethertype reach the IP parsers.
            frame[12:14] = draw(st.sampled_from(
                [b"\x08\x00", b"\x81\x00", b"\x86\xdd"]))
            if len(frame) > 14 and draw(st.booleans()):
                frame[14] = draw(st.sampled_from([0x40, 0x60])) \
                    | frame[14] & 0xF
    elif kind == "non_ip":
        etype = draw(st.one_of(
            st.sampled_from([0x88B5, 0x0806, 0x8847, 0x8100]), u16))
        tag = draw(st.one_of(st.just(b""), st.binary(min_size=4, max_size=4)
                             .map(lambda b: b"\x81\x00" + b[2:])))
        frame = bytearray(draw(mac) + draw(mac) + tag
                          + struct.pack("!H", etype)
                          + draw(st.binary(max_size=60)))
    else:
        pkt = draw(packets())
        frame = bytearray(pkt.frame())
        l3, at = pkt.l3, pkt.length_offset
        if draw(st.booleans()):       # IP length field larger or smaller
            length = draw(st.one_of(u16, st.integers(-30, 30).map(
                lambda d: max(0, min(0xFFFF, pkt.ip_length() + d)))))
            frame[at:at + 2] = struct.pack("!H", length)
        if pkt.version == 4 and draw(st.integers(0, 5)) == 0:
            frame[l3] = 0x40 | draw(st.integers(0, 15))   # IHL < 5 included
        if draw(st.integers(0, 9)) == 0:   # another version, maybe
            frame[l3] = draw(st.integers(0, 255))
        tcp = pkt.proto == 6 and pkt.first_fragment
        if tcp and draw(st.integers(0, 4)) == 0:   # TCP data offset garbage
            frame[pkt.l4 + 12] = draw(st.integers(0, 255))
        if draw(st.integers(0, 4)) == 0:   # short: cut anywhere in headers
            frame = frame[:draw(st.integers(0, min(len(frame),
                                                   pkt.l4 + 40)))]
    pkt_len = draw(st.one_of(st.just(len(frame)),
                             st.integers(len(frame), len(frame) + 9000),
                             st.integers(0, 0xFFFFFFFF)))
    return bytes(frame), pkt_len


def py_ids(frames):
    return [packet_id(f, pkt_len) for f, pkt_len in frames]


# --- (a) C and Python agree ---------------------------------------------

@FAST
@given(st.lists(any_frame(), min_size=1, max_size=40))
def test_c_and_python_agree_on_generated_frames(c_ids, frames):
    want = py_ids(frames)
    assert c_ids(frames) == want
    assert 0 not in want


def test_c_and_python_agree_on_mutated_frames(c_ids):
    """30,000 well-formed frames with 1-3 random header bytes overwritten
    and random cuts: corners a field-level generator does not reach."""
    rng = np.random.default_rng(20240601)
    v6 = dict(version=6, src=bytes(range(16)), dst=bytes(16), ttl=1)
    templates = [
        Packet(proto=6, payload=bytes(range(40)), tcp_opts=bytes(12)).frame(),
        Packet(proto=17, payload=b"q" * 30, vlan=(0x8100, 5)).frame(),
        Packet(proto=1, payload=bytes(20), ip_opts=bytes(8)).frame(),
        Packet(proto=6, frag=0x2000 | 185, payload=bytes(50)).frame(),
        Packet(proto=17, payload=bytes(3), vlan=(0x88A8, 7)).frame(),
        Packet(proto=6, payload=bytes(range(30)), tcp_opts=bytes(12),
               **v6).frame(),
        Packet(proto=17, payload=b"q" * 30, vlan=(0x8100, 5), **v6).frame(),
        Packet(proto=58, payload=bytes(20), **v6).frame(),
        Packet(proto=0, payload=bytes(range(24)), vlan=(0x88A8, 7),
               **v6).frame(),
    ]
    frames = []
    for i in range(30_000):
        f = bytearray(templates[i % len(templates)])
        for _ in range(rng.integers(1, 4)):
            f[rng.integers(0, min(len(f), 96))] = rng.integers(0, 256)
        if rng.random() < 0.3:
            f = f[:rng.integers(0, len(f) + 1)]
        frames.append((bytes(f), len(f) + int(rng.integers(0, 3)) * 1000))
    assert c_ids(frames) == py_ids(frames)


def test_edge_frames_agree(c_ids):
    frames = [(b"", 0), (b"", 1514), (bytes(13), 13), (bytes(14), 14),
              (b"\xff" * 14, 0xFFFFFFFF),
              (bytes(12) + b"\x81\x00\x00\x01", 16),      # tag cut before type
              (bytes(12) + b"\x08\x00" + b"\x45" + bytes(18), 33),  # 1 short
              (bytes(12) + b"\x08\x00" + b"\x45" + bytes(19), 34),
              (bytes(12) + b"\x86\xdd" + b"\x60" + bytes(38), 53),  # 1 short
              (bytes(12) + b"\x86\xdd" + b"\x60" + bytes(39), 54),
              (bytes(12) + b"\x81\x00\x00\x01\x86\xdd" + b"\x60"
               + bytes(38), 57),
              (bytes(12) + b"\x81\x00\x00\x01\x86\xdd" + b"\x60"
               + bytes(39), 58),
              # Next header TCP, payload length 19 and 20 (and 65535) with
              # 20 bytes of 0xff after the fixed header: w1 only from 20 on.
              (bytes(12) + b"\x86\xdd" + bytes([0x60, 0, 0, 0, 0, 19, 6, 0])
               + bytes(32) + b"\xff" * 20, 74),
              (bytes(12) + b"\x86\xdd" + bytes([0x60, 0, 0, 0, 0, 20, 6, 0])
               + bytes(32) + b"\xff" * 20, 74),
              (bytes(12) + b"\x86\xdd" + bytes([0x60, 0, 0, 0, 255, 255, 6,
                                                 0])
               + bytes(32) + b"\xff" * 19, 73)]
    assert c_ids(frames) == py_ids(frames)


# --- (b) invariance under NAT and L2 rewrites ---------------------------

@st.composite
def rewritten(draw):
    """A packet and copies of it with the fields NFs rewrite changed."""
    pkt = draw(packets())
    v = pkt.version
    new = dict(src=draw(addr(v)), dst=draw(addr(v)), sport=draw(u16),
               dport=draw(u16), icmp_id=draw(u16), ip_csum=draw(u16),
               l4_csum=draw(u16), ttl=draw(st.integers(0, 255)),
               tos=draw(st.integers(0, 255)), mac_src=draw(mac),
               mac_dst=draw(mac),
               vlan=draw(st.one_of(st.none(), st.just((0x8100, 42)))),
               trailer=draw(st.binary(max_size=30)))
    # ttl is the hop limit and tos the traffic class for IPv6.
    groups = [("src", "dst"), ("sport", "dport"), ("icmp_id",),
              ("ip_csum", "l4_csum"), ("ttl",), ("tos",),
              ("mac_src", "mac_dst"), ("vlan",), ("trailer",)]
    if v == 6:
        new["flow_label"] = draw(flow_label)
        groups.append(("flow_label",))
    groups.append(tuple(new))
    return pkt, [(g, replace(pkt, **{k: new[k] for k in g})) for g in groups]


@settings(FAST, max_examples=150)
@given(rewritten())
def test_nat_and_l2_rewrites_keep_the_id(c_ids, case):
    pkt, copies = case
    frames = [(pkt.frame(), len(pkt.frame()))]
    frames += [(c.frame(), len(c.frame())) for _, c in copies]
    # A longer pkt_len (more segments) does not matter for IP either.
    frames.append((pkt.frame(), len(pkt.frame()) + 4000))
    ids = py_ids(frames)
    assert c_ids(frames) == ids
    for (group, _), got in zip(copies, ids[1:]):
        assert got == ids[0], f"rewriting {group} changed the id"
    assert ids[-1] == ids[0]


# --- (c) sensitivity -----------------------------------------------------

def change(old, draw, bits):
    return old ^ draw(st.integers(1, (1 << bits) - 1))


@st.composite
def changed(draw):
    """A packet with >= 17 payload bytes and copies, each with one
    id-bearing field changed."""
    pkt = draw(packets(min_payload=17))
    copies = []
    if pkt.version == 4:
        copies.append(("ip_id",
                       replace(pkt, ip_id=change(pkt.ip_id, draw, 16))))
    if pkt.proto == 6 and pkt.first_fragment:
        copies.append(("tcp_seq",
                       replace(pkt, tcp_seq=change(pkt.tcp_seq, draw, 32))))
        copies.append(("tcp_ack",
                       replace(pkt, tcp_ack=change(pkt.tcp_ack, draw, 32))))
    for i in range(16):
        p = bytearray(pkt.payload)
        p[i] ^= draw(st.integers(1, 255))
        copies.append((f"payload[{i}]", replace(pkt, payload=bytes(p))))
    return pkt, copies


def with_ip_length(pkt, length):
    """pkt's frame with only its IPv4 total length or IPv6 payload length
    field changed."""
    f = bytearray(pkt.frame())
    f[pkt.length_offset:pkt.length_offset + 2] = struct.pack("!H", length)
    return bytes(f)


@settings(FAST, max_examples=150)
@given(changed(), st.integers(1, 0xFFFF))
def test_id_bearing_fields_change_the_id(c_ids, case, length_xor):
    pkt, copies = case
    frame = pkt.frame()
    frames = [(frame, len(frame))] + [(c.frame(), len(c.frame()))
                                      for _, c in copies]
    names = [name for name, _ in copies]
    # The length field alone, the frame bytes left as they are.
    frames.append((with_ip_length(pkt, pkt.ip_length() ^ length_xor),
                   len(frame)))
    names.append("total_length" if pkt.version == 4 else "payload_length")
    ids = py_ids(frames)
    assert c_ids(frames) == ids
    for name, got in zip(names, ids[1:]):
        assert got != ids[0], f"changing {name} left the id as it was"


@settings(FAST, max_examples=50)
@given(packets(min_payload=17), st.integers(16, 47), st.integers(1, 255))
def test_payload_past_16_bytes_does_not_change_the_id(pkt, i, x):
    p = bytearray(pkt.payload + bytes(48))
    p[i] ^= x
    base = replace(pkt, payload=pkt.payload + bytes(48))
    assert packet_id(replace(base, payload=bytes(p)).frame()) == \
        packet_id(base.frame())


# --- (d) never 0 ----------------------------------------------------------

def rotr(x, r):
    return ((x >> r) | (x << (64 - r))) & M64


def zero_preimage_w1(w0):
    """The w1 for which w0*K1 == rotl(w1*K2, 23), so mix(w0, w1, 0, 0)
    hashes 0 before the 0 -> 1 rule."""
    return (rotr(w0 * K1 & M64, 23) * pow(K2, -1, 1 << 64)) & M64


@settings(FAST, max_examples=50)
@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 7))
def test_a_zero_mix_becomes_1(c_ids, pkt_len, extra):
    """Frames of under 14 bytes hash (pkt_len, their first 8 bytes, 0, 0),
    so a frame whose 8 bytes solve the xor for 0 reaches the rule."""
    frame = zero_preimage_w1(pkt_len).to_bytes(8, "little") + bytes(extra // 2)
    frames = [(frame, pkt_len), (b"", 0)]
    assert py_ids(frames) == [1, 1]
    assert c_ids(frames) == [1, 1]
    assert int(mix(pkt_len, zero_preimage_w1(pkt_len), 0, 0)) == 1


def test_mix_is_never_0():
    w0 = np.arange(1000, dtype=np.uint64)
    w1 = np.array([zero_preimage_w1(int(x)) for x in w0], dtype=np.uint64)
    assert (mix(w0, w1, 0, 0) == 1).all()
    assert int(mix(0, 0, 0, 0)) == 1
    rng = np.random.default_rng(3)
    w = rng.integers(0, 2**64, (4, 100_000), dtype=np.uint64)
    assert (mix(*w) != 0).all()


# --- mix on arrays ---------------------------------------------------------

@settings(FAST, max_examples=100)
@given(st.lists(st.tuples(*[st.integers(0, M64)] * 4), min_size=1,
                max_size=20))
def test_mix_on_arrays_matches_the_scalar_path(ws):
    """packet_id's 0..13-byte frames hash (pkt_len, bytes, 0, 0); the
    non-IP path hashes (pkt_len<<16 | ethertype, bytes 14..38): the Python
    int mix and the numpy one agree through both."""
    w = np.array(ws, dtype=np.uint64).T
    got = mix(*w)
    assert got.dtype == np.uint64 and got.shape == (len(ws),)
    for k, (w0, w1, w2, w3) in enumerate(ws):
        pkt_len = w0 & 0xFFFFFFFF
        short = packet_id(w1.to_bytes(8, "little"), pkt_len)
        assert short == int(mix(pkt_len, w1, 0, 0))
        frame = (bytes(12) + b"\x88\xb5" + w1.to_bytes(8, "little")
                 + w2.to_bytes(8, "little") + w3.to_bytes(8, "little"))
        assert packet_id(frame, pkt_len) == int(
            mix(pkt_len << 16 | 0x88B5, w1, w2, w3))
        assert int(got[k]) == int(mix(w0, w1, w2, w3))


def test_mix_broadcasts():
    got = mix(np.arange(3, dtype=np.uint64)[:, None], np.arange(4), 7, 9)
    assert got.shape == (3, 4) and got.dtype == np.uint64
    assert int(got[2, 3]) == int(mix(2, 3, 7, 9))


# --- (e) ipv4_packet_ids and ipv6_packet_ids ---------------------------------

def tcp_fields(pkts, rng, has_tcp):
    """tcp_seq and tcp_ack, with junk where they do not apply (ignored)."""
    junk = rng.integers(-2**40, 2**40, (2, len(pkts)))
    seq = np.array([p.tcp_seq for p in pkts], np.int64)
    ack = np.array([p.tcp_ack for p in pkts], np.int64)
    return dict(tcp_seq=np.where(has_tcp, seq, junk[0]),
                tcp_ack=np.where(has_tcp, ack, junk[1]))


def payloads(pkts):
    return np.array([list(p.payload16()) for p in pkts],
                    np.uint8).reshape(len(pkts), 16)


def fields(pkts, rng):
    """The arrays ipv4_packet_ids takes, for packets built as frames."""
    tcp = np.array([p.proto == 6 and p.first_fragment for p in pkts], bool)
    return dict(ip_id=[p.ip_id for p in pkts],
                total_length=[p.ip_length() for p in pkts],
                frag=[p.frag for p in pkts], proto=[p.proto for p in pkts],
                **tcp_fields(pkts, rng, tcp), payload=payloads(pkts))


def fields6(pkts, rng):
    """The arrays ipv6_packet_ids takes, for packets built as frames."""
    tcp = np.array([p.proto == 6 for p in pkts], bool)
    return dict(payload_length=[p.ip_length() for p in pkts],
                next_header=[p.proto for p in pkts],
                **tcp_fields(pkts, rng, tcp), payload=payloads(pkts))


@settings(FAST, max_examples=100)
@given(st.lists(packets(versions=st.just(4)), min_size=1, max_size=30),
       st.integers(0, 2**32))
def test_ipv4_packet_ids_matches_built_frames(pkts, seed):
    ids = ipv4_packet_ids(**fields(pkts, np.random.default_rng(seed)))
    assert ids.dtype == np.uint64 and ids.shape == (len(pkts),)
    assert [int(x) for x in ids] == [packet_id(p.frame()) for p in pkts]


@settings(FAST, max_examples=100)
@given(st.lists(packets(versions=st.just(6)), min_size=1, max_size=30),
       st.integers(0, 2**32))
def test_ipv6_packet_ids_matches_built_frames(pkts, seed):
    ids = ipv6_packet_ids(**fields6(pkts, np.random.default_rng(seed)))
    assert ids.dtype == np.uint64 and ids.shape == (len(pkts),)
    assert [int(x) for x in ids] == [packet_id(p.frame()) for p in pkts]


def test_packet_ids_on_no_packets():
    empty = np.zeros((0, 16), np.uint8)
    for ids in (ipv4_packet_ids([], [], [], [], [], [], empty),
                ipv6_packet_ids([], [], [], [], empty)):
        assert ids.shape == (0,) and ids.dtype == np.uint64


@pytest.mark.parametrize("name, value, message", [
    ("ip_id", [[1, 2]], r"ip_id must be 1-d, got shape \(1, 2\)"),
    ("total_length", [1, 2, 3], r"total_length must have shape \(2,\) "
                                r"like ip_id"),
    ("total_length", [1, 70000], r"total_length must be in \[0, 65535\]"),
    ("frag", [1.0, 2.0], r"frag must be an integer array"),
    ("proto", [6, 256], r"proto must be in \[0, 255\]"),
    ("tcp_seq", [2**32, 0], r"tcp_seq must be in \[0, 4294967295\] where "
                            r"proto is 6"),
    ("tcp_ack", [0, -1], r"tcp_ack must be in \[0, 4294967295\] where "
                         r"proto is 6"),
    ("tcp_ack", [0], r"tcp_ack must be an integer array of shape \(2,\)"),
    ("tcp_ack", [0.0, 1.0], r"tcp_ack must be an integer array"),
    ("payload", np.zeros((2, 8), np.uint8), r"payload must be a \(2, 16\) "
                                            r"uint8 array"),
    ("payload", np.zeros((2, 16), np.int64), r"payload must be a \(2, 16\) "
                                             r"uint8 array"),
])
def test_ipv4_packet_ids_rejects_bad_fields(name, value, message):
    args = dict(ip_id=[1, 2], total_length=[40, 40], frag=[0, 0],
                proto=[6, 6], tcp_seq=[0, 0], tcp_ack=[0, 0],
                payload=np.zeros((2, 16), np.uint8))
    args[name] = value
    with pytest.raises(ValueError, match=message):
        ipv4_packet_ids(**args)


@pytest.mark.parametrize("name, value, message", [
    ("payload_length", [[1, 2]], r"payload_length must be 1-d"),
    ("payload_length", [1, 65536], r"payload_length must be in "
                                   r"\[0, 65535\]"),
    ("next_header", [6], r"next_header must have shape \(2,\) like "
                         r"payload_length"),
    ("next_header", [6, -1], r"next_header must be in \[0, 255\]"),
    ("tcp_seq", [0, 2**32], r"tcp_seq must be in \[0, 4294967295\] where "
                            r"next_header is 6"),
    ("tcp_ack", [2**32, 0], r"tcp_ack must be in \[0, 4294967295\] where "
                            r"next_header is 6"),
    ("payload", np.zeros((2, 16), np.uint16), r"payload must be a \(2, 16\) "
                                              r"uint8 array"),
])
def test_ipv6_packet_ids_rejects_bad_fields(name, value, message):
    args = dict(payload_length=[20, 20], next_header=[6, 6], tcp_seq=[0, 0],
                tcp_ack=[0, 0], payload=np.zeros((2, 16), np.uint8))
    args[name] = value
    with pytest.raises(ValueError, match=message):
        ipv6_packet_ids(**args)


def test_tcp_fields_out_of_range_are_fine_where_unused():
    pay = np.zeros((2, 16), np.uint8)
    # UDP, and a TCP non-first fragment.
    ids = ipv4_packet_ids([1, 1], [40, 40], [0, 0x2001], [17, 6], [-1, -1],
                          [2**33, 2**33], pay)
    assert ids.shape == (2,)
    ids = ipv6_packet_ids([20, 20], [17, 0], [-1, 2**40], [2**33, -5], pay)
    assert ids.shape == (2,)


def test_ipv4_and_ipv6_ids_differ_on_equal_fields():
    """w0 ends in the IP version: an IPv4 and an IPv6 packet with the same
    L4 part never share w0."""
    pay = np.zeros((1, 16), np.uint8)
    v4 = ipv4_packet_ids([0], [0], [0], [17], [0], [0], pay)
    v6 = ipv6_packet_ids([0], [17], [0], [0], pay)
    assert int(v4[0]) != int(v6[0])


def test_docstring_examples():
    """The numpydoc examples in src/mscope/packet_id.py run as written."""
    import doctest

    import mscope.packet_id
    result = doctest.testmod(mscope.packet_id)
    assert result.attempted > 0 and result.failed == 0


def test_packet_id_rejects_bad_pkt_len():
    with pytest.raises(ValueError, match=r"pkt_len must be in \[0, 2\*\*32\)"):
        packet_id(b"", 1 << 32)
