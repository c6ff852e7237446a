"""The simulator's traffic (mscope.sim.traffic): the generated mix, its
packet ids held to frames built byte by byte, determinism and the
independence of bursts that counterfactual labelling relies on, and the
pcap reader."""
import ipaddress
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mscope.errors import MscopeError, PcapFormatError
from mscope.packet_id import ipv4_packet_ids, packet_id
from mscope.sim import traffic
from mscope.sim.traffic import (BURST_FLOWS, PACKET_DTYPES, Packets,
                                from_pcap, generate, hash_five_tuple)

net = ipaddress.ip_network
SRC, DST = net("10.0.0.0/8"), net("192.168.0.0/16")
MS = 1_000_000


def run(seed=7, duration_ns=100 * MS, rate_pps=1e6, flows=2000, **kw):
    return generate(seed=seed, duration_ns=duration_ns, rate_pps=rate_pps,
                    flows=flows, src_net=kw.pop("src_net", SRC),
                    dst_net=kw.pop("dst_net", DST), **kw)


@pytest.fixture(scope="module")
def mix():
    """The SCENARIO.md example's traffic, 100 ms of it, with its burst."""
    return run(seed=7, duration_ns=100 * MS, rate_pps=1.2e6, flows=4000,
               bursts=[(2, net("10.2.3.0/24"), 50 * MS, 50 * MS + 500_000,
                        6e6)])


def same(a, b):
    """Byte-identical Packets."""
    return len(a) == len(b) and a.skipped == b.skipped and all(
        getattr(a, name).tobytes() == getattr(b, name).tobytes()
        for name in PACKET_DTYPES)


# --- the mix --------------------------------------------------------------

def test_fields_have_their_dtypes_and_times_are_sorted(mix):
    for name, dtype in PACKET_DTYPES.items():
        a = getattr(mix, name)
        assert a.dtype == dtype, name
        assert a.shape == ((len(mix), 16) if name == "payload"
                           else (len(mix),)), name
    assert np.all(np.diff(mix.time_ns) >= 0)
    assert mix.time_ns.min() >= 0 and mix.time_ns.max() < 100 * MS
    # Ties in time are ordered by flow.
    tie = np.diff(mix.time_ns) == 0
    assert np.all(np.diff(mix.flow)[tie] > 0)


@pytest.mark.parametrize("seed,rate,duration,flows", [
    (1, 1.2e6, 100 * MS, 4000), (2, 2e5, 200 * MS, 300),
    (3, 5e6, 20 * MS, 10000)])
def test_rate_is_met_over_the_run_and_steady_within_it(seed, rate, duration,
                                                       flows):
    p = run(seed=seed, rate_pps=rate, duration_ns=duration, flows=flows)
    assert len(p) == round(rate * duration / 1e9)
    # No ramp-up at the start nor drain at the end: every tenth of the run
    # carries its tenth of the packets within 25% (flows wrap around).
    tenths = np.bincount(p.time_ns * 10 // duration, minlength=10)
    assert np.all(np.abs(tenths / (len(p) / 10) - 1) < 0.25), tenths


def test_flow_sizes_are_heavy_tailed():
    shares = []
    for seed in range(5):
        sizes = np.sort(np.bincount(run(seed=seed, flows=2000).flow))[::-1]
        assert len(sizes) == 2000 and sizes.min() >= 1
        shares.append(sizes[:200].sum() / sizes.sum())
    # Pareto 1.2 puts 0.1^(1 - 1/1.2) = 68% in the top tenth asymptotically.
    assert np.mean(shares) > 0.55 and min(shares) > 0.45, shares
    sizes = np.bincount(run(flows=2000, flow_sizes="constant").flow)
    assert sizes.max() - sizes.min() <= 1


def test_flows_send_in_trains_of_at_most_16():
    p = run(seed=5)
    o = np.lexsort((p.time_ns, p.flow))
    flow, t = p.flow[o], p.time_ns[o]
    wire = (p.length[o][:-1] + 38) * 0.8          # ns at 10 Gb/s
    in_flow = flow[1:] == flow[:-1]
    b2b = in_flow & (np.abs(np.diff(t) - wire) <= 1.5)
    # Not a Poisson process per packet: most packets of a flow follow the
    # one before back to back.
    assert 0.7 < b2b.sum() / in_flow.sum() < 0.95
    edges = np.flatnonzero(np.diff(np.concatenate([[0], b2b, [0]])))
    runs = edges[1::2] - edges[::2] + 1           # packets per train
    assert runs.max() <= 16 and runs.mean() > 3


def test_packet_mix_is_trimodal_and_tcp_share_holds():
    p = run(flows=3000, flow_sizes="constant", tcp_share=0.8)
    tcp = p.proto == 6
    assert set(np.unique(p.proto)) == {6, 17}
    assert abs(tcp.mean() - 0.8) < 0.05
    small, mid, big = p.length <= 128, p.length == 576, p.length == 1500
    assert np.all(small | mid | big)
    assert abs(small.mean() - 0.5) < 0.05
    assert abs(mid.mean() - 0.1) < 0.02
    assert abs(big.mean() - 0.4) < 0.05
    assert abs((p.length[tcp] == 52).mean() - 0.3) < 0.03    # pure ACKs
    assert np.all(p.frag == 0x4000)


def test_addresses_lie_in_their_prefixes(mix):
    normal = mix.burst == -1
    assert np.all(mix.src_ip[normal] >> 24 == 10)
    assert np.all(mix.dst_ip >> 16 == (192 << 8 | 168))
    assert np.all(mix.src_ip[~normal] >> 8 == int(ipaddress.IPv4Address(
        "10.2.3.0")) >> 8)
    # Per flow, one 5-tuple.
    for name in ("src_ip", "dst_ip", "sport", "dport", "proto", "flow_hash"):
        a = getattr(mix, name)
        first = np.zeros(mix.flow.max() + 1, a.dtype)
        first[mix.flow] = a
        assert np.all(first[mix.flow] == a), name


def test_tcp_and_ip_id_counters_advance_per_flow(mix):
    o = np.lexsort((mix.time_ns, mix.flow))
    f, ip_id = mix.flow[o], mix.ip_id[o].astype(np.int64)
    seq, ack = mix.tcp_seq[o].astype(np.int64), mix.tcp_ack[o].astype(
        np.int64)
    pay = mix.length[o].astype(np.int64) - 52
    tcp = mix.proto[o] == 6
    # Consecutive in the flow's own order; a flow that wraps around the
    # run's end breaks time order once.
    nxt = (f[1:] == f[:-1]) & ((ip_id[1:] - ip_id[:-1]) % 65536 == 1)
    assert (f[1:] == f[:-1]).sum() - nxt.sum() <= len(np.unique(f))
    both = nxt & tcp[1:]
    assert np.all((seq[1:] - seq[:-1])[both] % 2**32 == pay[:-1][both])
    step = (ack[1:] - ack[:-1])[both] % 2**32
    assert set(np.unique(step)) <= {0, 2896}
    pure_ack = (pay == 0)[1:][both]
    assert np.all(pure_ack[step == 2896])
    assert 0 < (step[pure_ack] == 0).mean() < 0.03       # duplicate ACKs


# --- packet ids -----------------------------------------------------------

def test_ids_are_unique_and_those_of_the_fields(mix):
    assert len(np.unique(mix.pkt_id)) == len(mix)
    assert np.all(mix.pkt_id != 0)
    ids = ipv4_packet_ids(mix.ip_id, mix.length, mix.frag, mix.proto,
                          mix.tcp_seq, mix.tcp_ack, mix.payload)
    assert np.array_equal(ids, mix.pkt_id)


def frame_of(p, i, filler=0xAB):
    """Packet i of p as an Ethernet frame, built byte by byte; the bytes
    past the 16 hashed ones are filler (the id never reads them)."""
    proto, length = int(p.proto[i]), int(p.length[i])
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, int(p.ip_id[i]),
                     int(p.frag[i]), 64, proto, 0xBEEF,
                     int(p.src_ip[i]).to_bytes(4, "big"),
                     int(p.dst_ip[i]).to_bytes(4, "big"))
    if proto == 6:
        # 32-byte header: NOP, NOP, timestamps.
        l4 = struct.pack("!HHIIBBHHH", int(p.sport[i]), int(p.dport[i]),
                         int(p.tcp_seq[i]), int(p.tcp_ack[i]), 8 << 4, 0x10,
                         512, 0, 0) + b"\x01\x01\x08\x0a" + bytes(8)
    else:
        l4 = struct.pack("!HHHH", int(p.sport[i]), int(p.dport[i]),
                         length - 20, 0)
    body = length - 20 - len(l4)
    assert body >= 0
    data = bytes(p.payload[i][:min(body, 16)]) + bytes([filler]) * max(
        body - 16, 0)
    return bytes(6) + bytes(range(6)) + b"\x08\x00" + ip + l4 + data


def test_ids_match_frames_built_byte_by_byte(mix):
    sample = np.random.default_rng(0).choice(len(mix), 400, replace=False)
    sample = np.concatenate([sample, np.flatnonzero(mix.burst >= 0)[:50],
                             np.flatnonzero(mix.length == 52)[:50]])
    for i in sample:
        assert packet_id(frame_of(mix, i)) == int(mix.pkt_id[i]), i


def test_colliding_ids_are_perturbed_deterministically(mix):
    # Packets repeated on purpose: a UDP datagram, a TCP data segment and a
    # pure ACK, three times each; 40 normal packets to collide with.
    later = np.arange(len(mix)) >= 1000         # not among the 40 known
    udp = np.flatnonzero(later & (mix.proto == 17))[0]
    data = np.flatnonzero(later & (mix.length == 1500) & (mix.proto == 6))[0]
    ack = np.flatnonzero(later & (mix.length == 52))[0]
    rows = np.array([udp, data, ack] * 3 + list(range(40)))
    p = mix.take(rows)
    cols = {name: getattr(p, name).copy() for name in PACKET_DTYPES}
    before = {name: a.copy() for name, a in cols.items()}
    known = mix.pkt_id[:40]
    traffic._unique_ids(cols, known=np.sort(known))
    ids = cols["pkt_id"]
    assert len(np.unique(ids)) == len(ids)
    assert not np.isin(ids, known).any()
    # The first of each repeat kept its id; the others changed only their
    # payload (their ip id, for the ACK with no payload byte).
    for name in PACKET_DTYPES:
        if name not in ("pkt_id", "payload", "ip_id"):
            assert np.array_equal(cols[name], before[name]), name
    assert np.array_equal(ids[:3], before["pkt_id"][:3])
    assert np.array_equal(cols["payload"][:3], before["payload"][:3])
    assert len(np.unique(cols["ip_id"][[2, 5, 8]])) == 3
    bare = (cols["proto"] == 6) & (cols["length"] == 52)
    assert np.array_equal(cols["ip_id"][~bare], before["ip_id"][~bare])
    assert not cols["payload"][bare].any()
    assert np.array_equal(ids, ipv4_packet_ids(
        cols["ip_id"], cols["length"], cols["frag"], cols["proto"],
        cols["tcp_seq"], cols["tcp_ack"], cols["payload"]))
    again = {name: a.copy() for name, a in before.items()}
    traffic._unique_ids(again, known=np.sort(known))
    assert np.array_equal(again["pkt_id"], ids)


def test_ids_that_stay_equal_are_an_error(mix, monkeypatch):
    monkeypatch.setattr(traffic, "_ID_ROUNDS", 0)
    p = mix.take([0, 0])
    cols = {name: getattr(p, name).copy() for name in PACKET_DTYPES}
    with pytest.raises(RuntimeError, match="packet ids still collide"):
        traffic._unique_ids(cols, known=None)


def test_flow_hash_is_the_5_tuple_hash_and_splits_evenly(mix):
    assert np.array_equal(mix.flow_hash, hash_five_tuple(
        mix.src_ip, mix.dst_ip, mix.sport, mix.dport, mix.proto))
    first = np.unique(mix.flow, return_index=True)[1]
    assert abs((mix.flow_hash[first] % 2).mean() - 0.5) < 0.03


# --- determinism and bursts ----------------------------------------------

def test_same_arguments_give_byte_identical_packets():
    a = run(seed=3, bursts=[(0, "10.1.0.0/16", 10 * MS, 12 * MS, 2e6)])
    b = run(seed=3, bursts=[(0, "10.1.0.0/16", 10 * MS, 12 * MS, 2e6)])
    assert same(a, b)
    c = run(seed=4, bursts=[(0, "10.1.0.0/16", 10 * MS, 12 * MS, 2e6)])
    assert not np.array_equal(a.pkt_id[:100], c.pkt_id[:100])


def test_dropping_a_burst_removes_exactly_its_packets():
    b1 = (1, net("10.2.3.0/24"), 20 * MS, 21 * MS, 6e6)
    b3 = (3, net("10.0.0.0/10"), 20 * MS + 500_000, 30 * MS, 1e6)
    none, only1, both = run(), run(bursts=[b1]), run(bursts=[b1, b3])
    assert same(both.take(both.burst == -1), none)
    assert same(both.take(both.burst != 3), only1)
    assert same(only1.take(only1.burst == -1), none)
    # The order of the bursts in the list does not matter either.
    assert same(run(bursts=[b3, b1]), both)


def test_burst_rate_window_and_flows(mix):
    fault, start, end = 2, 50 * MS, 50 * MS + 500_000
    b = mix.take(mix.burst == fault)
    assert len(b) == 3000                   # 6 Mpps for 500 us
    assert b.time_ns.min() == start and b.time_ns.max() < end
    gaps = np.diff(b.time_ns)
    assert gaps.min() >= 166 and gaps.max() <= 167     # evenly, 1e9 / 6e6
    assert np.array_equal(np.unique(b.flow),
                          4000 + BURST_FLOWS * fault + np.arange(BURST_FLOWS))
    assert np.all(np.bincount(b.flow - b.flow.min()) == 3000 // BURST_FLOWS)
    assert set(np.unique(mix.burst)) == {-1, fault}


def test_burst_past_the_run_is_cut_and_zero_rate_is_empty():
    p = run(duration_ns=10 * MS, rate_pps=0,
            bursts=[(0, None, 9 * MS, 12 * MS, 1e6)])
    assert len(p) == 1000 and np.all(p.burst == 0)
    assert p.time_ns.max() < 10 * MS
    assert np.all(p.src_ip >> 24 == 10)          # None: inside src_net


@pytest.mark.parametrize("kw,message", [
    ({"duration_ns": 0}, "duration_ns must be an integer >= 1"),
    ({"rate_pps": -1}, "rate_pps must be a finite number >= 0"),
    ({"flows": 0}, "flows must be an integer >= 1"),
    ({"flow_sizes": "zipf"}, "flow_sizes must be 'pareto' or 'constant'"),
    ({"tcp_share": 1.5}, r"tcp_share must be a finite number in \[0, 1\]"),
    ({"src_net": "2001:db8::/32"}, "src_net must be an IPv4 prefix"),
    ({"dst_net": "nonsense"}, "dst_net must be an IPv4 prefix"),
    ({"bursts": [(0, None, 5, 5, 1e6)]}, r"bursts\[0\] end_ns must be >"),
    ({"bursts": [(0, None, 0, 5, 1), (0, None, 0, 5, 1)]},
     "fault_index values must be distinct"),
    ({"bursts": [(0, None, 5)]}, r"bursts\[0\] must be \(fault_index"),
])
def test_bad_arguments_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        run(**kw)


def test_take_selects_by_mask_or_index(mix):
    idx = np.array([5, 1, 3])
    sub = mix.take(idx)
    assert np.array_equal(sub.pkt_id, mix.pkt_id[idx])
    assert sub.payload.shape == (3, 16)
    assert len(mix.take(mix.proto == 6)) == int((mix.proto == 6).sum())
    with pytest.raises(ValueError, match="mask must have shape"):
        mix.take(np.ones(3, bool))
    fields = {name: getattr(sub, name) for name in PACKET_DTYPES}
    with pytest.raises(ValueError, match="Packets.length must be a uint16"):
        Packets(**{**fields, "length": fields["length"].astype(np.int64)})


# --- pcap -----------------------------------------------------------------

def pcap_bytes(records, endian="<", nano=False, linktype=1, snaplen=65535):
    """A classic pcap: records are (time_ns, frame, orig_len or None)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen,
                       linktype)]
    for t, frame, orig in records:
        sec, frac = divmod(t, 10**9)
        out.append(struct.pack(endian + "IIII", sec,
                               frac if nano else frac // 1000, len(frame),
                               orig or len(frame)) + frame)
    return b"".join(out)


def eth(etype, body, vlan=False):
    tag = struct.pack("!HH", 0x8100, 42) if vlan else b""
    return bytes(12) + tag + struct.pack("!H", etype) + body


def ipv4(proto, l4, ip_id=1, frag=0x4000, opts=b"", src=b"\x0a\x00\x00\x01",
         dst=b"\xc0\xa8\x00\x01"):
    return struct.pack("!BBHHHBBH4s4s", 0x45 + len(opts) // 4, 0,
                       20 + len(opts) + len(l4), ip_id, frag, 64, proto, 0,
                       src, dst) + opts + l4


def tcp(sport, dport, seq, ack, data, opts=b""):
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack,
                       (5 + len(opts) // 4) << 4, 0x18, 512, 0, 0) + opts \
        + data


def udp(sport, dport, data):
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


T0 = 1_700_000_000 * 10**9 + 123_456_000


def sample_records():
    """(time, frame, orig_len): a mix of what a real capture holds, with
    the expected IPv4 (src, dst, sport, dport, proto) or None if skipped."""
    big = tcp(40000, 443, 1000, 2000, bytes(range(200)),
              opts=b"\x01\x01\x08\x0a" + bytes(8))
    recs = [
        (T0, eth(0x0800, ipv4(6, big, opts=b"\x01" * 4)), None,
         (0x0A000001, 0xC0A80001, 40000, 443, 6)),
        (T0 + 3000, eth(0x0806, bytes(28)), None, None),            # ARP
        (T0 + 1000, eth(0x0800, ipv4(17, udp(5353, 53, b"q" * 30))), None,
         (0x0A000001, 0xC0A80001, 5353, 53, 17)),
        (T0 + 5000, eth(0x0800, ipv4(17, udp(5353, 53, b"r" * 5)),
                        vlan=True), None,
         (0x0A000001, 0xC0A80001, 5353, 53, 17)),
        (T0 + 6000, eth(0x86DD, bytes(60)), None, None),            # IPv6
        (T0 + 7000, eth(0x0800, ipv4(6, b"later fragment bytes",
                                     frag=0x0010)), None,
         (0x0A000001, 0xC0A80001, 0, 0, 6)),
        (T0 + 8000, eth(0x0800, ipv4(1, struct.pack("!BBHHH", 8, 0, 0, 7, 1)
                                     + b"ping" * 4)), None,
         (0x0A000001, 0xC0A80001, 0, 0, 1)),
        (T0 + 9000, bytes(10), None, None),                         # runt
    ]
    # Snapped to 50 bytes: the TCP header is cut short.
    full = eth(0x0800, ipv4(6, big, ip_id=9))
    recs.append((T0 + 10000, full[:50], len(full),
                 (0x0A000001, 0xC0A80001, 40000, 443, 6)))
    return recs


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_round_trip(tmp_path, endian, nano):
    recs = sample_records()
    path = tmp_path / "trace.pcap"
    path.write_bytes(pcap_bytes([(t, f, o) for t, f, o, _ in recs],
                                endian=endian, nano=nano))
    p = from_pcap(path)
    kept = sorted((t, f, tup) for t, f, _, tup in recs if tup)
    assert len(p) == len(kept) and p.skipped == 3
    assert p.time_ns.tolist() == [t - T0 for t, _, _ in kept]
    assert p.pkt_id.tolist() == [packet_id(f) for _, f, _ in kept]
    got = list(zip(p.src_ip.tolist(), p.dst_ip.tolist(), p.sport.tolist(),
                   p.dport.tolist(), p.proto.tolist()))
    assert got == [tup for _, _, tup in kept]
    # The fields reproduce the ids, as for generated traffic.
    assert np.array_equal(p.pkt_id, ipv4_packet_ids(
        p.ip_id, p.length, p.frag, p.proto, p.tcp_seq, p.tcp_ack,
        p.payload))
    # Flows numbered by first appearance; the two UDP datagrams share one.
    assert p.flow.tolist() == [0, 1, 1, 2, 3, 0]
    assert np.all(p.burst == -1)
    assert p.tcp_seq[0] == 1000 and p.tcp_ack[0] == 2000
    assert p.tcp_seq[-1] == 0                 # header cut short: not read


def test_pcap_duration_cuts_the_window(tmp_path):
    path = tmp_path / "trace.pcap"
    path.write_bytes(pcap_bytes([(t, f, o) for t, f, o, _ in
                                 sample_records()]))
    p = from_pcap(path, duration_ns=5000)
    assert p.time_ns.tolist() == [0, 1000] and p.skipped == 1
    assert len(from_pcap(path, duration_ns=0)) == 0


def test_generated_packets_replay_with_the_same_ids(tmp_path, mix):
    """Frames built from generated packets, written to a pcap and read
    back, have the ids the generator gave them."""
    rows = np.flatnonzero(mix.time_ns < 2 * MS)
    path = tmp_path / "gen.pcap"
    path.write_bytes(pcap_bytes([(int(mix.time_ns[i]), frame_of(mix, i),
                                  None) for i in rows], nano=True))
    p = from_pcap(path)
    assert np.array_equal(p.pkt_id, mix.pkt_id[rows])
    assert np.array_equal(p.time_ns, mix.time_ns[rows] - mix.time_ns[0])
    for name in ("src_ip", "dst_ip", "sport", "dport", "proto", "length",
                 "ip_id", "tcp_seq", "tcp_ack", "payload", "flow_hash"):
        assert np.array_equal(getattr(p, name), getattr(mix, name)[rows]), \
            name


GOOD = pcap_bytes([(T0, eth(0x0800, ipv4(17, udp(1, 2, b"x" * 20))),
                    None)])


@pytest.mark.parametrize("data,offset,what", [
    (b"", 0, "truncated pcap header"),
    (GOOD[:10], 0, "truncated pcap header"),
    (b"\x0a\x0d\x0d\x0a" + bytes(40), 0, "pcapng is not supported"),
    (b"GIF89a" + bytes(40), 0, "not a pcap file"),
    (GOOD[:4] + struct.pack("<H", 3) + GOOD[6:], 4, "unsupported pcap "
     "version"),
    (GOOD[:20] + struct.pack("<I", 113) + GOOD[24:], 20, "link type 113"),
    (GOOD + GOOD[24:34], 24 + len(GOOD) - 24, "truncated record header"),
    (GOOD[:-5], 24, "truncated record"),
    (GOOD + struct.pack("<IIII", 0, 0, 10**9, 10**9), len(GOOD),
     "corrupt record header"),
])
def test_bad_pcap_is_one_line_naming_file_and_offset(tmp_path, data, offset,
                                                     what):
    path = tmp_path / "bad.pcap"
    path.write_bytes(data)
    with pytest.raises(PcapFormatError) as e:
        from_pcap(path)
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    assert isinstance(e.value, MscopeError)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: offset {offset}: {what}"), msg


# Frames near the edges of what packet_id parses: VLAN tags, short
# captures, odd header lengths, fragments, other ethertypes.
frames = st.builds(
    lambda etype, vlan, ihl_words, tot_delta, frag, proto, l4, cut:
    (eth(etype, struct.pack("!BBHHHBBH4s4s", 0x40 | ihl_words, 0,
                            max(0, 4 * max(ihl_words, 5) + len(l4)
                                + tot_delta) & 0xFFFF, 7, frag, 64, proto,
                            0, b"\x0a\x00\x00\x02", b"\xc0\xa8\x01\x01")
         + bytes(4 * max(ihl_words - 5, 0)) + l4, vlan=vlan))[:cut],
    etype=st.sampled_from([0x0800] * 6 + [0x86DD, 0x0806, 0x8100]),
    vlan=st.booleans(),
    ihl_words=st.sampled_from([5, 5, 5, 6, 15, 4]),
    tot_delta=st.integers(-30, 30) | st.just(0),
    frag=st.sampled_from([0x4000, 0, 0x2000, 0x0008, 0x2010]),
    proto=st.sampled_from([6, 17, 1, 47]),
    l4=st.binary(max_size=90),
    cut=st.just(1000) | st.integers(0, 200))


def parsed_as_ipv4(f):
    """packet_id's own test for IPv4, restated."""
    l3, etype = 14, f[12] << 8 | f[13] if len(f) >= 14 else None
    if etype in (0x8100, 0x88A8) and len(f) >= 18:
        l3, etype = 18, f[16] << 8 | f[17]
    return (etype == 0x0800 and len(f) >= l3 + 20 and f[l3] >> 4 == 4
            and f[l3] & 0xF >= 5)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(frames, min_size=1, max_size=40))
def test_pcap_ids_equal_packet_id_on_odd_frames(tmp_path, fs):
    path = tmp_path / "odd.pcap"
    path.write_bytes(pcap_bytes([(T0 + 10 * i, f, None)
                                 for i, f in enumerate(fs)]))
    p = from_pcap(path)
    kept = [f for f in fs if parsed_as_ipv4(f)]
    assert p.skipped == len(fs) - len(kept)
    assert p.pkt_id.tolist() == [packet_id(f) for f in kept]
    assert np.array_equal(p.pkt_id, ipv4_packet_ids(
        p.ip_id, p.length, p.frag, p.proto, p.tcp_seq, p.tcp_ack,
        p.payload))


def test_empty_pcap_gives_no_packets(tmp_path):
    path = tmp_path / "empty.pcap"
    path.write_bytes(pcap_bytes([]))
    p = from_pcap(path)
    assert isinstance(p, Packets) and len(p) == 0 and p.skipped == 0
