"""The simulator's source: a realistic IPv4 packet mix, or a pcap replayed.

`generate` draws the packets a scenario's ``traffic`` object describes
(SCENARIO.md) plus the extra packets of its ``burst`` faults; `from_pcap`
reads ``traffic.pcap`` instead.  Both return `Packets`: one array per field,
sorted by send time, with the packet ids live NFs would record for those
packets (mscope.packet_id, docs/packet-ids.md), so the simulator's capture
can be matched like a live one.

Limits, by design:

- IPv4 only, TCP and UDP only (a pcap may bring other IPv4 protocols), one
  direction (source to sink), nothing fragmented, DF set on every
  generated packet.
- Deterministic: the same arguments give byte-identical arrays with the same
  numpy version (numpy's ``Generator`` streams are stable in practice but not
  promised across versions).
- Counterfactual-safe: the normal traffic comes from its own random stream,
  and each burst from a stream of its own keyed by its fault index, so
  dropping a burst removes exactly its packets and leaves every other packet
  the same, bit for bit (time, fields, id).
"""
import dataclasses
import ipaddress
import math
import struct
from pathlib import Path

import numpy as np

from mscope.errors import PcapFormatError
from mscope.packet_id import ipv4_packet_ids, mix

__all__ = ["Packets", "generate", "from_pcap", "hash_five_tuple",
           "BURST_FLOWS", "PACKET_DTYPES"]

# --- the container ------------------------------------------------------

#: Field name -> dtype of every `Packets` array; ``payload`` is (n, 16).
PACKET_DTYPES = {
    "time_ns": np.int64, "flow": np.int32,
    "src_ip": np.uint32, "dst_ip": np.uint32,
    "sport": np.uint16, "dport": np.uint16, "proto": np.uint8,
    "length": np.uint16, "ip_id": np.uint16, "frag": np.uint16,
    "tcp_seq": np.uint32, "tcp_ack": np.uint32, "payload": np.uint8,
    "pkt_id": np.uint64, "flow_hash": np.uint32, "burst": np.int16,
}


@dataclasses.dataclass(frozen=True, eq=False)
class Packets:
    """Packets as the source sends them: one array per field, all length n.

    Sorted by ``time_ns``; packets sent in the same nanosecond are ordered
    by ``flow``, then by their order in the flow, so the order is as
    deterministic as the times.

    Invariant: ``pkt_id == ipv4_packet_ids(ip_id, length, frag, proto,
    tcp_seq, tcp_ack, payload)`` for every packet, so an id can be checked
    (or a frame rebuilt) from the fields alone.

    Attributes
    ----------
    time_ns : int64
        When the source sends the packet, from 0 (the run's start).
    flow : int32
        Flow index.  Generated traffic: 0 .. flows-1 for the normal flows,
        ``flows + BURST_FLOWS * fault_index + j`` for burst flow j.  Pcap:
        the order in which each 5-tuple first appears.
    src_ip, dst_ip : uint32
        IPv4 addresses as integers (``int(ipaddress.IPv4Address)``).
    sport, dport : uint16
        L4 ports (0 where the packet has none).
    proto : uint8
        IPv4 protocol: 6 (TCP) or 17 (UDP); a pcap may bring others.
    length : uint16
        IPv4 total length.
    ip_id : uint16
        IPv4 identification: a per-flow counter from a random start.
    frag : uint16
        IPv4 flags and fragment offset halfword (0x4000, DF, when generated).
    tcp_seq, tcp_ack : uint32
        TCP sequence and acknowledgement numbers (0 for other protocols).
    payload : uint8, shape (n, 16)
        The 16 payload bytes the id hashes, zero past the packet's end.
    pkt_id : uint64
        The packet id (mscope.packet_id), never 0.
    flow_hash : uint32
        `hash_five_tuple` of the 5-tuple, for splitting flows at a DAG's
        fork: equal for every packet of a flow.
    burst : int16
        The fault index of the burst that added the packet, -1 for the
        normal traffic (and for a pcap).
    skipped : int
        Not an array: frames of the replayed pcap within its window that
        were not Ethernet/IPv4 and so were left out; 0 for generated traffic.
    """

    time_ns: np.ndarray
    flow: np.ndarray
    src_ip: np.ndarray
    dst_ip: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    proto: np.ndarray
    length: np.ndarray
    ip_id: np.ndarray
    frag: np.ndarray
    tcp_seq: np.ndarray
    tcp_ack: np.ndarray
    payload: np.ndarray
    pkt_id: np.ndarray
    flow_hash: np.ndarray
    burst: np.ndarray
    skipped: int = 0

    def __post_init__(self):
        n = len(self.time_ns)
        for name, dtype in PACKET_DTYPES.items():
            a = getattr(self, name)
            shape = (n, 16) if name == "payload" else (n,)
            if not isinstance(a, np.ndarray) or a.dtype != dtype \
                    or a.shape != shape:
                raise ValueError(
                    f"Packets.{name} must be a {np.dtype(dtype)} array of "
                    f"shape {shape}, got {getattr(a, 'dtype', type(a))} "
                    f"{getattr(a, 'shape', '')}")

    def __len__(self):
        return len(self.time_ns)

    def take(self, mask_or_index):
        """The packets a boolean mask or an index array selects.

        Parameters
        ----------
        mask_or_index : array_like of bool, shape (n,), or of int
            A mask, or indexes (in the order wanted: an unsorted index
            gives packets out of time order).

        Returns
        -------
        Packets
            New arrays (copies); ``skipped`` is carried over.

        Examples
        --------
        >>> import ipaddress
        >>> p = generate(seed=1, duration_ns=10**6, rate_pps=10**6, flows=10,
        ...              src_net=ipaddress.ip_network("10.0.0.0/8"),
        ...              dst_net=ipaddress.ip_network("192.168.0.0/16"))
        >>> len(p.take(p.proto == 6)) + len(p.take(p.proto == 17)) == len(p)
        True
        """
        sel = np.asarray(mask_or_index)
        if sel.dtype == bool and sel.shape != (len(self),):
            raise ValueError(f"mask must have shape ({len(self)},), "
                             f"got {sel.shape}")
        return Packets(**{name: getattr(self, name)[sel]
                          for name in PACKET_DTYPES}, skipped=self.skipped)


def _empty():
    return Packets(**{name: np.zeros((0, 16) if name == "payload" else 0,
                                     dtype)
                      for name, dtype in PACKET_DTYPES.items()})


def hash_five_tuple(src_ip, dst_ip, sport, dport, proto):
    """A 32-bit hash of 5-tuples, elementwise: what a load balancer splits on.

    Parameters
    ----------
    src_ip, dst_ip : array_like of uint32
    sport, dport : array_like of uint16
    proto : array_like of uint8

    Returns
    -------
    numpy.ndarray of uint32
        The high half of `mscope.packet_id.mix` over the tuple: every input
        bit reaches every output bit, so ``flow_hash % k`` splits evenly.

    Examples
    --------
    >>> import numpy as np
    >>> h = hash_five_tuple(np.uint32([1, 1]), np.uint32([2, 2]),
    ...                     np.uint16([3, 4]), np.uint16([80, 80]),
    ...                     np.uint8([6, 6]))
    >>> h.dtype, bool(h[0] != h[1])
    (dtype('uint32'), True)
    """
    u = np.uint64
    w0 = (np.asarray(src_ip).astype(u) << u(32)) | np.asarray(dst_ip).astype(u)
    w1 = (np.asarray(sport).astype(u) << u(32)) \
        | (np.asarray(dport).astype(u) << u(16)) | np.asarray(proto).astype(u)
    # A constant third word keeps these hashes unrelated to packet ids of
    # the same words.
    return (mix(w0, w1, u(0x5F3759DF), u(0)) >> u(32)).astype(np.uint32)


# --- generated traffic --------------------------------------------------

#: Flows each burst fault sends from: enough that a load balancer splits a
#: burst over its ports, few enough to read as "these flows" in a diagnosis.
BURST_FLOWS = 8

# Trains: a flow sends 1-16 packets back to back, then idles (a TCP window
# per RTT, an application write).  16 is a typical initial window (10) to
# a GSO segment's worth; the length is uniform over 1..16.
_TRAIN_MAX = 16
# Back to back means at the sender's line rate: a 10 Gb/s NIC, and per
# packet the Ethernet header, FCS, preamble and inter-frame gap (38 bytes)
# besides the IP packet: 1230 ns for 1500 bytes, 72 ns for a 52-byte ACK.
_LINK_BPS = 10e9
_ETH_OVERHEAD = 38
# While it lasts, a flow sends at a log-uniform share of the run's rate in
# [1e-4, 1e-1] (the trace model of docs/packet-ids.md): mice are slow,
# and no single flow is more than a tenth of the load unless its size
# forces it (a flow lasts at most the run).
_FLOW_SHARE_LOG10 = (-4.0, -1.0)

# Packet sizes (IPv4 total length), trimodal as measured on Internet
# links: small (ACKs, requests, DNS), 576 (old default MSS) and 1500 (MTU).
# By packet, over TCP: 30% pure ACKs (52 bytes: 20 IP + 32 TCP with the
# timestamps option), 15% small data, 10% 576, 45% 1500; over UDP: 70%
# small, 10% 576, 20% 1500.  With 80% TCP that is about 50% small, 10%
# 576 and 40% 1500, the mix of docs/packet-ids.md.
_TCP_HDR, _UDP_HDR = 52, 28
_TCP_CUM = (0.30, 0.45, 0.55)        # ACK | small data | 576 | 1500
_UDP_CUM = (0.70, 0.80)              # small | 576 | 1500
_TCP_SMALL_PAYLOAD = (16, 60)        # bytes, inclusive: 68..112 total
_UDP_SMALL_PAYLOAD = (16, 100)       # 44..128 total
# Each pure ACK acknowledges two full segments (delayed ACK), but 1% are
# duplicate ACKs that repeat the last one, as after a loss.
_ACK_STEP = 2 * 1448
_DUP_ACK_SHARE = 0.01

# Well-known destination ports by share, then any port above 1023.
_TCP_DPORTS = ((443, 0.7), (80, 0.2))
_UDP_DPORTS = ((443, 0.5), (53, 0.3))

_FRAG_DF = 0x4000
_PROTO_TCP, _PROTO_UDP = 6, 17

# Random streams: spawn keys under the run's seed.  The normal traffic and
# each burst have their own, so none depends on whether another is drawn.
_STREAM_NORMAL = 0
_STREAM_BURST = 1

# Rounds of the collision fix before giving up: a round leaves about
# k * n / 2^64 of its k perturbed packets colliding again, so a second
# round is already never needed.
_ID_ROUNDS = 8


def generate(*, seed, duration_ns, rate_pps, flows, flow_sizes="pareto",
             src_net, dst_net, pareto_shape=1.2, tcp_share=0.8, bursts=()):
    """Draw a scenario's packets: a realistic IPv4 mix, plus burst faults.

    The normal traffic has ``round(rate_pps * duration_ns / 1e9)`` packets,
    so the aggregate rate is ``rate_pps`` over the run, split over
    ``flows`` flows:

    - **Flow sizes**: Pareto with shape ``pareto_shape`` (1.2: the top 10%
      of flows carry about two thirds of the packets), scaled so the sizes
      add up to the packet count, at least one packet each; or all equal
      (``"constant"``).  Shape 1.2 is wild at scenario sizes: over 4,000
      flows the largest carried 2% to 28% of the packets across seeds 0-3
      (the largest of n Pareto draws grows as n^(1/1.2)), so a fork's
      split by flow hash can be far from even.
    - **Flow starts**: uniform over the run, i.e. a Poisson process given
      the number of flows.  Time is circular: a flow that would run past
      the end continues from 0, as if the run were one period of a
      stationary process.  So the load is steady from the first
      microsecond instead of ramping up while flows start.
    - **Within a flow**: trains of 1-16 packets back to back at 10 Gb/s,
      separated by idle gaps that are exponential given the flow's span
      (a Poisson process of trains).  The span follows from a rate drawn
      log-uniformly between 1e-4 and 1e-1 of ``rate_pps``, and is at most
      the run (see the module constants for the numbers and why).
    - **Fields**: per flow, TCP with probability ``tcp_share`` else UDP;
      source inside ``src_net``, destination inside ``dst_net`` (not the
      network or broadcast address where the prefix has more than 2);
      ephemeral source port; a well-known or random destination port.
      Per packet: trimodal lengths (TCP: pure ACKs, small data, 576,
      1500), IPv4 id a per-flow counter from a random start, TCP
      sequence numbers advancing by each segment's payload, ACK numbers by
      two segments per pure ACK (1% duplicates), and random payload bytes
      (encrypted traffic), so that ids are as good as they get.

    Each burst adds packets at an even rate from `BURST_FLOWS` flows
    (round robin) whose sources lie inside its ``flows_net``; their content
    is drawn like the normal traffic's.

    Parameters
    ----------
    seed : int
        Seed of every random draw (>= 0).
    duration_ns : int
        Length of the run; every packet has ``0 <= time_ns < duration_ns``.
    rate_pps : float
        Normal traffic's aggregate rate, packets per second (>= 0).
    flows : int
        Number of normal flows (>= 1); fewer when there are fewer packets
        than flows (one packet each).
    flow_sizes : {"pareto", "constant"}
    src_net, dst_net : ipaddress.IPv4Network or str
        Prefixes the sources and destinations are drawn in.
    pareto_shape : float
        Shape of the Pareto flow sizes (> 0; heavier tail when smaller).
    tcp_share : float
        Share of flows that are TCP, in [0, 1].
    bursts : sequence of (fault_index, flows_net, start_ns, end_ns, rate_pps)
        Burst faults.  ``fault_index`` (0..32767, distinct) is the fault's
        index in the scenario: it keys the burst's random stream, its flow
        indexes and its packets' ``burst`` value, so it must stay the same
        in the counterfactual runs that leave other faults out.
        ``flows_net`` (IPv4Network, str, or None for ``src_net``) holds the
        burst's sources; the burst sends
        ``round(rate_pps * (end - start) / 1e9)`` packets evenly over
        ``[start_ns, min(end_ns, duration_ns))``, less those past the run.

    Returns
    -------
    Packets
        Sorted by (time_ns, flow); burst flows are numbered after the
        normal ones, so the order does not depend on which bursts are in.

    Raises
    ------
    ValueError
        If an argument is out of its range (the message names it).
    RuntimeError
        If packet ids could not be made unique (never seen: see below).

    Notes
    -----
    Packet ids are unique within the normal traffic, and each burst's ids
    are unique within the burst and against the normal traffic.  Where two
    packets share an id, the later one (the burst's one, against normal
    traffic) has its payload bytes xored with a mask drawn from its id and
    position, or its IPv4 id where it has no payload (a pure ACK), and its
    id recomputed, until none is shared.  With random payloads that
    happens to about n^2/2^65 packets of n (3e-8 at a million).  Two
    different bursts are not checked against each other, since fixing one
    would make it depend on the other; they share an id with probability
    n_a * n_b / 2^64.

    Examples
    --------
    >>> import ipaddress
    >>> net = ipaddress.ip_network
    >>> p = generate(seed=7, duration_ns=10**7, rate_pps=10**6, flows=100,
    ...              src_net=net("10.0.0.0/8"), dst_net=net("192.168.0.0/16"),
    ...              bursts=[(2, net("10.2.3.0/24"), 2 * 10**6, 3 * 10**6,
    ...                       6 * 10**6)])
    >>> int((p.burst == -1).sum()), int((p.burst == 2).sum())
    (10000, 6000)
    >>> bool(np.all(np.diff(p.time_ns) >= 0))
    True
    """
    src_net = _network("src_net", src_net)
    dst_net = _network("dst_net", dst_net)
    _check_int("seed", seed, 0)
    _check_int("duration_ns", duration_ns, 1)
    _check_int("flows", flows, 1)
    _check_real("rate_pps", rate_pps, 0)
    if flow_sizes not in ("pareto", "constant"):
        raise ValueError(f"flow_sizes must be 'pareto' or 'constant', "
                         f"got {flow_sizes!r}")
    _check_real("pareto_shape", pareto_shape, 0, strict=True)
    _check_real("tcp_share", tcp_share, 0, hi=1)
    bursts = [_check_burst(i, b, src_net, flows) for i, b in
              enumerate(bursts)]
    seen = [b[0] for b in bursts]
    if len(set(seen)) != len(seen):
        raise ValueError(f"bursts: fault_index values must be distinct, "
                         f"got {seen}")

    rng = _stream(seed, _STREAM_NORMAL)
    normal = _normal_traffic(rng, duration_ns, rate_pps, flows, flow_sizes,
                             src_net, dst_net, pareto_shape, tcp_share)
    _unique_ids(normal, known=None)
    cols = normal
    # In fault index order, so that each burst's flows (numbered by fault
    # index) come after every flow already merged: _merge then keeps the
    # (time, flow) order.
    for fault_index, net, start, end, rate in sorted(bursts,
                                                     key=lambda b: b[0]):
        rng = _stream(seed, _STREAM_BURST, fault_index)
        part = _burst_traffic(rng, fault_index, net, start,
                              min(end, duration_ns), rate, flows, dst_net,
                              tcp_share)
        _unique_ids(part, known=normal["pkt_id"])
        cols = _merge(cols, part)
    del cols["k"]
    cols["flow_hash"] = hash_five_tuple(cols["src_ip"], cols["dst_ip"],
                                        cols["sport"], cols["dport"],
                                        cols["proto"])
    return Packets(**{name: cols[name].astype(dtype, copy=False)
                      for name, dtype in PACKET_DTYPES.items()})


def _stream(seed, *key):
    return np.random.Generator(np.random.PCG64(
        np.random.SeedSequence(seed, spawn_key=key)))


def _network(name, net):
    try:
        net = ipaddress.ip_network(net, strict=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be an IPv4 prefix, got {net!r} "
                         f"({e})") from None
    if net.version != 4:
        raise ValueError(f"{name} must be an IPv4 prefix, got {net}")
    return net


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


def _check_real(name, v, lo, hi=None, strict=False):
    ok = isinstance(v, (int, float, np.integer, np.floating)) \
        and not isinstance(v, bool) and math.isfinite(v) \
        and (v > lo if strict else v >= lo) and (hi is None or v <= hi)
    if not ok:
        rule = (f"> {lo}" if strict else f">= {lo}") if hi is None \
            else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be a finite number {rule}, "
                         f"got {v!r}")


def _check_burst(i, burst, src_net, flows):
    where = f"bursts[{i}]"
    try:
        fault_index, net, start, end, rate = burst
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be (fault_index, flows_net, "
                         f"start_ns, end_ns, rate_pps), got {burst!r}") \
            from None
    _check_int(f"{where} fault_index", fault_index, 0)
    if fault_index > np.iinfo(np.int16).max:
        raise ValueError(f"{where} fault_index must be <= 32767, "
                         f"got {fault_index}")
    if flows + BURST_FLOWS * (fault_index + 1) > np.iinfo(np.int32).max:
        raise ValueError(f"{where}: flow indexes past int32 (flows={flows})")
    net = src_net if net is None else _network(f"{where} flows_net", net)
    _check_int(f"{where} start_ns", start, 0)
    _check_int(f"{where} end_ns", end, 0)
    if end <= start:
        raise ValueError(f"{where} end_ns must be > start_ns, got "
                         f"[{start}, {end})")
    _check_real(f"{where} rate_pps", rate, 0)
    return int(fault_index), net, int(start), int(end), rate


def _normal_traffic(rng, duration_ns, rate_pps, flows, flow_sizes, src_net,
                    dst_net, pareto_shape, tcp_share):
    """The normal traffic's columns, sorted by time, ids not yet unique."""
    n = int(round(rate_pps * duration_ns / 1e9))
    if n == 0:
        return _columns_of(_empty())
    nflows = min(flows, n)
    sizes = _flow_sizes(rng, n, nflows, flow_sizes, pareto_shape)
    tuples = _flow_tuples(rng, nflows, src_net, dst_net, tcp_share)
    flow_of = np.repeat(np.arange(nflows), sizes)
    first = np.cumsum(sizes) - sizes              # each flow's first packet
    cols = _packet_fields(rng, tuples, flow_of, first)
    cols["flow"] = flow_of
    cols["time_ns"] = _flow_times(rng, sizes, flow_of, first,
                                  cols["length"], duration_ns, rate_pps)
    cols["burst"] = np.full(n, -1, np.int16)
    return _finish(cols)


def _flow_sizes(rng, n, nflows, kind, shape):
    """Packets per flow: >= 1 each, adding up to n exactly."""
    if kind == "constant":
        return n // nflows + (np.arange(nflows) < n % nflows)
    # Pareto with x_m = 1; the sizes are then this shape scaled to the
    # packet count, so the run has exactly n packets whatever the draw
    # (a Pareto 1.2 sum is too wild to meet a rate by sampling alone).
    raw = rng.pareto(shape, nflows) + 1.0
    share = raw / raw.sum() * (n - nflows)
    base = np.floor(share).astype(np.int64)
    # Largest remainders get the packets flooring left over; a stable sort
    # breaks ties by flow index.
    left = (n - nflows) - int(base.sum())
    base[np.argsort(-(share - base), kind="stable")[:left]] += 1
    return base + 1


def _hosts(rng, net, n):
    """n addresses drawn uniformly in net, skipping the network and
    broadcast addresses where the prefix has more than two."""
    lo, size = int(net.network_address), net.num_addresses
    if size > 2:
        lo, size = lo + 1, size - 2
    return (lo + rng.integers(0, size, n)).astype(np.uint32)


def _ports(rng, n, table):
    u = rng.random(n)
    port = rng.integers(1024, 65536, n)
    cum = 0.0
    for value, share in table:
        port = np.where((u >= cum) & (u < cum + share), value, port)
        cum += share
    return port.astype(np.uint16)


def _flow_tuples(rng, nflows, src_net, dst_net, tcp_share):
    """Per flow: 5-tuple and the random starts of its counters."""
    tcp = rng.random(nflows) < tcp_share
    return {
        "proto": np.where(tcp, _PROTO_TCP, _PROTO_UDP).astype(np.uint8),
        "src_ip": _hosts(rng, src_net, nflows),
        "dst_ip": _hosts(rng, dst_net, nflows),
        # Linux's default ephemeral range, 32768-60999.
        "sport": rng.integers(32768, 61000, nflows).astype(np.uint16),
        "dport": np.where(tcp, _ports(rng, nflows, _TCP_DPORTS),
                          _ports(rng, nflows, _UDP_DPORTS)),
        "ip_id0": rng.integers(0, 1 << 16, nflows),
        "seq0": rng.integers(0, 1 << 32, nflows),
        "ack0": rng.integers(0, 1 << 32, nflows),
    }


def _within_flow_cumsum(values, flow_of, first, inclusive):
    """Cumulative sums restarting at each flow (packets in flow-major
    order): one global cumsum less its value at the flow's start."""
    c = np.cumsum(values)
    before = c[first] - values[first]
    out = c - before[flow_of]
    return out if inclusive else out - values


def _packet_fields(rng, tuples, flow_of, first):
    """Per-packet fields of flows laid out flow-major (flow_of sorted)."""
    n = len(flow_of)
    proto = tuples["proto"][flow_of]
    tcp = proto == _PROTO_TCP
    k = np.arange(n) - first[flow_of]             # position in its flow
    u = rng.random(n)
    tcp_small = rng.integers(_TCP_SMALL_PAYLOAD[0], _TCP_SMALL_PAYLOAD[1] + 1,
                             n) + _TCP_HDR
    udp_small = rng.integers(_UDP_SMALL_PAYLOAD[0], _UDP_SMALL_PAYLOAD[1] + 1,
                             n) + _UDP_HDR
    length = np.where(
        tcp,
        np.select([u < _TCP_CUM[0], u < _TCP_CUM[1], u < _TCP_CUM[2]],
                  [_TCP_HDR, tcp_small, 576], 1500),
        np.select([u < _UDP_CUM[0], u < _UDP_CUM[1]], [udp_small, 576],
                  1500)).astype(np.int64)
    pay_len = length - np.where(tcp, _TCP_HDR, _UDP_HDR)

    pure_ack = tcp & (pay_len == 0)
    dup = rng.random(n) < _DUP_ACK_SHARE
    ack_step = np.where(pure_ack & ~dup, _ACK_STEP, 0)
    m32 = np.int64(0xFFFFFFFF)
    seq = (tuples["seq0"][flow_of] + _within_flow_cumsum(
        np.where(tcp, pay_len, 0), flow_of, first, inclusive=False)) & m32
    ack = (tuples["ack0"][flow_of] + _within_flow_cumsum(
        ack_step, flow_of, first, inclusive=True)) & m32

    payload = np.frombuffer(bytearray(rng.bytes(16 * n)),
                            np.uint8).reshape(n, 16)
    short = np.flatnonzero(pay_len < 16)              # pure ACKs, mostly
    payload[short] *= np.arange(16) < pay_len[short, None]   # 0 past end
    return {
        "k": k,
        "src_ip": tuples["src_ip"][flow_of],
        "dst_ip": tuples["dst_ip"][flow_of],
        "sport": tuples["sport"][flow_of],
        "dport": tuples["dport"][flow_of],
        "proto": proto,
        "length": length,
        "ip_id": (tuples["ip_id0"][flow_of] + k) & 0xFFFF,
        "frag": np.full(n, _FRAG_DF),
        "tcp_seq": np.where(tcp, seq, 0),
        "tcp_ack": np.where(tcp, ack, 0),
        "payload": payload,
    }


def _flow_times(rng, sizes, flow_of, first, length, duration_ns, rate_pps):
    """Send times: flows start uniformly over the run and send trains."""
    n, nflows = len(flow_of), len(sizes)
    # Trains: cut the flow-major packet sequence every 1-16 packets and at
    # every flow's start, so no train is longer than 16 nor spans flows.
    cuts = np.cumsum(rng.integers(1, _TRAIN_MAX + 1, n))
    starts = np.zeros(n, bool)
    starts[cuts[cuts < n]] = True
    starts[first] = True
    train_of = np.cumsum(starts) - 1
    train_first = np.flatnonzero(starts)
    train_flow = flow_of[train_first]

    # Wire time of each packet at the sender's line rate, and where it
    # falls in its flow's back-to-back time.
    wire = (length + _ETH_OVERHEAD) * (8e9 / _LINK_BPS)
    wire_before = _within_flow_cumsum(wire, flow_of, first, inclusive=False)
    wire_total = np.bincount(flow_of, wire, nflows)

    # The flow's span: its size at its own rate, at least its wire time,
    # at most the run.  A flow whose wire time alone exceeds the run is
    # squeezed (sent faster than 10 Gb/s): only when rate_pps asks for it.
    share = 10.0 ** rng.uniform(*_FLOW_SHARE_LOG10, nflows)
    span = np.minimum(np.maximum(sizes / (share * rate_pps) * 1e9,
                                 wire_total), float(duration_ns))
    squeeze = np.minimum(1.0, span / wire_total)
    idle = span - wire_total * squeeze

    # Idle time before each train: the flow's idle span cut by exponential
    # gaps, normalised over the flow (one extra gap after its last train),
    # i.e. uniform order statistics: a Poisson process of trains given
    # their number.  The first train starts the flow: no gap before it.
    gap = rng.exponential(1.0, len(train_first))
    gap[train_of[first]] = 0.0
    gap_before = _within_flow_cumsum(gap, train_flow, train_of[first],
                                     inclusive=True)
    gap_total = np.bincount(train_flow, gap, nflows) \
        + rng.exponential(1.0, nflows)
    idle_before = idle[train_flow] * gap_before / gap_total[train_flow]
    offset = idle_before[train_of] + wire_before * squeeze[flow_of]

    start = rng.integers(0, duration_ns, nflows)
    # offset < span <= duration_ns, so a flow never overlaps itself.
    return (start[flow_of] + offset.astype(np.int64)) % duration_ns


def _burst_traffic(rng, fault_index, net, start, end, rate_pps, flows,
                   dst_net, tcp_share):
    """One burst's columns, sorted by time, ids not yet unique."""
    if end <= start:
        return _columns_of(_empty())
    n = int(round(rate_pps * (end - start) / 1e9))
    if n == 0:
        return _columns_of(_empty())
    tuples = _flow_tuples(rng, BURST_FLOWS, net, dst_net, tcp_share)
    # Packet i of the burst goes at start + i * span / n from flow i % 8;
    # laid out flow-major for _packet_fields: flow j's k-th is i = j + 8k.
    sizes = n // BURST_FLOWS + (np.arange(BURST_FLOWS) < n % BURST_FLOWS)
    flow_of = np.repeat(np.arange(BURST_FLOWS), sizes)
    first = np.cumsum(sizes) - sizes
    cols = _packet_fields(rng, tuples, flow_of, first)
    i = flow_of + BURST_FLOWS * cols["k"]
    cols["time_ns"] = start + (i * (end - start)) // n
    cols["flow"] = flows + BURST_FLOWS * fault_index + flow_of
    cols["burst"] = np.full(n, fault_index, np.int16)
    return _finish(cols)


def _merge(cols, part):
    """Two column sets sorted by (time, flow), merged into one; where times
    are equal, ``part`` goes last (its flows are numbered higher)."""
    if not len(part["time_ns"]):
        return cols
    n, m = len(cols["time_ns"]), len(part["time_ns"])
    at = np.searchsorted(cols["time_ns"], part["time_ns"], side="right") \
        + np.arange(m)
    mine = np.ones(n + m, bool)
    mine[at] = False
    out = {}
    for name, a in cols.items():
        b = np.empty((n + m,) + a.shape[1:], a.dtype)
        b[mine] = a
        b[at] = part[name]
        out[name] = b
    return out


def _finish(cols):
    """Sort a part's columns by (time, flow, position in flow) and give
    them their dtypes and ids."""
    # The columns come flow-major, in flow order and each flow in its own
    # order: a stable sort on time alone keeps that order among equal times.
    order = np.argsort(cols["time_ns"], kind="stable")
    cols = {name: a.astype(PACKET_DTYPES.get(name, a.dtype),
                           copy=False)[order] for name, a in cols.items()}
    cols["pkt_id"] = _ids(cols)
    return cols


def _columns_of(packets):
    cols = {name: getattr(packets, name) for name in PACKET_DTYPES
            if name != "flow_hash"}
    cols["k"] = np.zeros(0, np.int64)
    return cols


def _ids(cols, idx=slice(None)):
    return ipv4_packet_ids(cols["ip_id"][idx], cols["length"][idx],
                           cols["frag"][idx], cols["proto"][idx],
                           cols["tcp_seq"][idx], cols["tcp_ack"][idx],
                           cols["payload"][idx])


def _pay_len(cols, idx):
    hdr = np.where(cols["proto"][idx] == _PROTO_TCP, _TCP_HDR, _UDP_HDR)
    return cols["length"][idx].astype(np.int64) - hdr


def _repeated(ids, known):
    """Indexes of the ids to change: each id equal to an earlier one, and
    each id in ``known`` (sorted or not, may be None)."""
    if known is None or not len(known):
        # The common case, settled by one plain sort.
        s = np.sort(ids)
        if not np.any(s[1:] == s[:-1]):
            return np.zeros(0, np.int64)
    # A stable sort keeps the earliest of equal ids first: it stays.
    order = np.argsort(ids, kind="stable")
    again = np.zeros(len(ids), bool)
    again[order[1:][ids[order][1:] == ids[order][:-1]]] = True
    if known is not None and len(known):
        again |= np.isin(ids, known)
    return np.flatnonzero(again)


def _unique_ids(cols, known):
    """Make cols' ids unique among themselves and absent from ``known``,
    in place, by perturbing the later of two packets (generate's Notes)."""
    ids = cols["pkt_id"]
    u = np.uint64
    for rnd in range(_ID_ROUNDS + 1):
        idx = _repeated(ids, known)
        if not len(idx):
            return
        if rnd == _ID_ROUNDS:
            break
        # The mask depends on the packet's position too, so that identical
        # packets get different masks.
        m0 = mix(ids[idx], idx.astype(u), u(rnd), u(1))
        m1 = mix(ids[idx], idx.astype(u), u(rnd), u(2))
        mask = np.stack([m0, m1], axis=1).astype("<u8").view(np.uint8)
        pay_len = _pay_len(cols, idx)
        mask[np.arange(16) >= pay_len[:, None]] = 0   # keep zero past end
        cols["payload"][idx] ^= mask
        bare = pay_len <= 0
        if bare.any():
            # No payload byte to change: the IPv4 id, never by 0.
            low = (m0[bare] & u(0xFFFF)).astype(np.uint16)
            cols["ip_id"][idx[bare]] ^= np.where(low == 0, 1, low) \
                .astype(np.uint16)
        ids[idx] = _ids(cols, idx)
    raise RuntimeError(f"packet ids still collide after {_ID_ROUNDS} "
                       f"rounds of perturbation")


# --- pcap replay ----------------------------------------------------------

# Classic libpcap magic numbers, as read little-endian: (byte order of the
# file, nanosecond timestamps).
_PCAP_MAGIC = {
    0xA1B2C3D4: ("<", False), 0xD4C3B2A1: (">", False),
    0xA1B23C4D: ("<", True), 0x4D3CB2A1: (">", True),
}
_PCAPNG_MAGIC = 0x0A0D0D0A
_LINKTYPE_ETHERNET = 1
# Largest record a sane capture holds: libpcap's MAXIMUM_SNAPLEN for
# Ethernet.  A bigger incl_len is a corrupt header, not a huge frame.
_MAX_SNAPLEN = 262144
# Bytes of each frame the id and the 5-tuple can need: Ethernet with one
# VLAN tag (18), IPv4 with options (60), TCP with options (60), 16
# payload bytes: 154.
_HEAD = 160
# Frames parsed per numpy pass: bounds the (chunk, _HEAD) int64 gather
# index to 21 MB.
_CHUNK = 1 << 14


def from_pcap(path, *, duration_ns=None):
    """Replay a classic pcap file: its Ethernet/IPv4 frames as `Packets`.

    Classic libpcap format only (either byte order, micro- or nanosecond
    timestamps), link type Ethernet.  The reader is ~50 lines of struct
    over the file's bytes rather than a dependency: a replay needs only
    each record's time and bytes, and the byte-level parsing has to mirror
    mscope.packet_id exactly anyway (dpkt, the small well-kept choice on
    PyPI, parses every frame into Python objects and would still leave the
    id fields to us).

    Times are rebased so the file's earliest record is at 0 (a frame keeps
    its offset from the capture's start, as a replay of the whole file
    would send it), and packets are sorted by time (stable: a capture from
    several queues can be slightly out of order).  Ids are those
    ``mscope.packet_id.packet_id`` gives the captured bytes, computed with
    the vectorised `ipv4_packet_ids` from the same fields it reads (a test
    holds the two equal frame by frame).  They are not made unique: a
    replayed capture's duplicates (retransmissions, say) are real.

    Parameters
    ----------
    path : str or os.PathLike
        The pcap file.  It is read whole into memory.
    duration_ns : int, optional
        Keep only records with a rebased time below this.

    Returns
    -------
    Packets
        ``skipped`` counts the frames in the window that were not IPv4 over
        Ethernet (with at most one VLAN tag), as ``packet_id`` parses them.
        ``flow`` numbers the 5-tuples by first appearance; ports are 0 for
        protocols other than TCP and UDP and for non-first fragments;
        ``tcp_seq``, ``tcp_ack`` and ``payload`` are the fields the id
        hashes (seq and ack 0 where the TCP header is cut short); ``burst``
        is -1.

    Raises
    ------
    mscope.errors.PcapFormatError
        (a ValueError) If the file is not classic pcap over Ethernet, or is
        truncated or corrupt: one line naming the file and the offset.
    OSError
        If the file cannot be read.

    Examples
    --------
    >>> import struct, tempfile, os
    >>> ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 36, 1, 0x4000, 64, 17, 0,
    ...                  bytes([10, 0, 0, 1]), bytes([192, 168, 0, 1]))
    >>> frame = bytes(12) + b"\\x08\\x00" + ip + struct.pack(
    ...     "!HHHH", 5000, 53, 16, 0) + b"8 bytes!"
    >>> hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    >>> rec = struct.pack("<IIII", 1, 500, len(frame), len(frame)) + frame
    >>> with tempfile.TemporaryDirectory() as d:
    ...     f = os.path.join(d, "one.pcap")
    ...     _ = open(f, "wb").write(hdr + rec + rec)
    ...     p = from_pcap(f)
    >>> len(p), p.time_ns.tolist(), int(p.dport[0]), p.skipped
    (2, [0, 0], 53, 0)
    """
    path = Path(path)
    data = path.read_bytes()
    offsets, caplens, times = _pcap_records(path, data)
    if len(times):
        times -= times.min()
    keep = np.ones(len(times), bool) if duration_ns is None \
        else times < duration_ns
    offsets, caplens, times = offsets[keep], caplens[keep], times[keep]
    order = np.argsort(times, kind="stable")
    offsets, caplens, times = offsets[order], caplens[order], times[order]

    buf = np.frombuffer(data, np.uint8)
    parts = [_parse_frames(buf, offsets[a:a + _CHUNK], caplens[a:a + _CHUNK])
             for a in range(0, len(offsets), _CHUNK)]
    if not parts:
        return _empty()
    cols = {name: np.concatenate([p[name] for p in parts])
            for name in parts[0]}
    ipv4 = cols.pop("ipv4")
    skipped = int((~ipv4).sum())
    cols = {name: a[ipv4] for name, a in cols.items()}
    cols["time_ns"] = times[ipv4]
    n = len(cols["time_ns"])
    cols["pkt_id"] = _ids(cols)
    cols["flow_hash"] = hash_five_tuple(cols["src_ip"], cols["dst_ip"],
                                        cols["sport"], cols["dport"],
                                        cols["proto"])
    cols["flow"] = _flow_index(cols)
    cols["burst"] = np.full(n, -1, np.int16)
    return Packets(**{name: cols[name].astype(dtype, copy=False)
                      for name, dtype in PACKET_DTYPES.items()},
                   skipped=skipped)


def _pcap_error(path, offset, what):
    return PcapFormatError(f"{path}: offset {offset}: {what}")


def _pcap_records(path, data):
    """Walk the records: (offset of each frame, its captured length, its
    time in ns).  A Python loop, since each record's length says where the
    next one starts: 1.2 us a record (the SCENARIO.md example's 240,000
    packets written as a pcap: 0.28 s of a 0.56 s read, 2 vCPU VM)."""
    size = len(data)
    if size < 4:
        raise _pcap_error(path, 0, f"truncated pcap header ({size} of 24 "
                          f"bytes)")
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic == _PCAPNG_MAGIC:
        raise _pcap_error(path, 0, "pcapng is not supported; convert it "
                          "with 'editcap -F pcap IN OUT'")
    if magic not in _PCAP_MAGIC:
        raise _pcap_error(path, 0, f"not a pcap file (magic 0x{magic:08x})")
    order, nano = _PCAP_MAGIC[magic]
    if size < 24:
        raise _pcap_error(path, 0, f"truncated pcap header ({size} of 24 "
                          f"bytes)")
    major, minor, _, _, snaplen, network = struct.unpack_from(
        order + "HHiIII", data, 4)
    if major != 2:
        raise _pcap_error(path, 4, f"unsupported pcap version "
                          f"{major}.{minor} (want 2.x)")
    linktype = network & 0xFFFF          # the upper bits flag an FCS
    if linktype != _LINKTYPE_ETHERNET:
        raise _pcap_error(path, 20, f"link type {linktype} is not Ethernet "
                          f"(1)")
    limit = max(snaplen, _MAX_SNAPLEN)
    rec = struct.Struct(order + "IIII")
    unpack = rec.unpack_from
    offs, lens, secs, fracs = [], [], [], []
    pos = 24
    while pos < size:
        if pos + 16 > size:
            raise _pcap_error(path, pos, f"truncated record header "
                              f"({size - pos} of 16 bytes)")
        sec, frac, incl, _ = unpack(data, pos)
        if incl > limit:
            raise _pcap_error(path, pos, f"corrupt record header: captured "
                              f"length {incl} exceeds {limit}")
        if pos + 16 + incl > size:
            raise _pcap_error(path, pos, f"truncated record ({incl} bytes "
                              f"captured, {size - pos - 16} left)")
        offs.append(pos + 16)
        lens.append(incl)
        secs.append(sec)
        fracs.append(frac)
        pos += 16 + incl
    times = np.array(secs, np.int64) * 1_000_000_000 \
        + np.array(fracs, np.int64) * (1 if nano else 1000)
    return np.array(offs, np.int64), np.array(lens, np.int64), times


def _parse_frames(buf, offsets, caplens):
    """Fields of frames as mscope.packet_id.packet_id reads them, for a
    chunk of records; ``ipv4`` says which frames it parses as IPv4."""
    n = len(offsets)
    col = np.arange(_HEAD)
    at = np.minimum(offsets[:, None] + col, len(buf) - 1)
    m = buf[at]
    m[col >= caplens[:, None]] = 0          # nothing past the captured end
    rows = np.arange(n)

    def byte(off):
        return m[rows, np.minimum(off, _HEAD - 1)].astype(np.int64)

    def be16(off):
        return byte(off) << 8 | byte(off + 1)

    def be32(off):
        return be16(off) << 16 | be16(off + 2)

    # One VLAN tag (802.1Q or 802.1ad) is looked through, as packet_id
    # does, and only where the frame is long enough to hold it.
    etype = be16(12)
    tagged = ((etype == 0x8100) | (etype == 0x88A8)) & (caplens >= 18)
    l3 = np.where(tagged, 18, 14)
    etype = np.where(tagged, be16(16), etype)
    vihl = byte(l3)
    ipv4 = (caplens >= 14) & (etype == 0x0800) & (caplens >= l3 + 20) \
        & (vihl >> 4 == 4) & (vihl & 0xF >= 5)

    tot = be16(l3 + 2)
    frag = be16(l3 + 6)
    proto = byte(l3 + 9)
    end = np.minimum(l3 + tot, caplens)
    l4 = l3 + (vihl & 0xF) * 4
    first = (frag & 0x1FFF) == 0
    tcp = first & (proto == _PROTO_TCP) & (l4 + 20 <= end)
    udp_icmp = first & ((proto == _PROTO_UDP) | (proto == 1))
    pay = np.where(tcp, l4 + (byte(l4 + 12) >> 4) * 4,
                   np.where(udp_icmp, l4 + 8, l4))
    cols16 = pay[:, None] + np.arange(16)
    payload = np.where(cols16 < end[:, None],
                       m[rows[:, None], np.minimum(cols16, _HEAD - 1)], 0)
    ports = first & ((proto == _PROTO_TCP) | (proto == _PROTO_UDP)) \
        & (l4 + 4 <= end)
    return {
        "ipv4": ipv4,
        "src_ip": be32(l3 + 12), "dst_ip": be32(l3 + 16),
        "sport": np.where(ports, be16(l4), 0),
        "dport": np.where(ports, be16(l4 + 2), 0),
        "proto": proto, "length": tot, "ip_id": be16(l3 + 4), "frag": frag,
        "tcp_seq": np.where(tcp, be32(l4 + 4), 0),
        "tcp_ack": np.where(tcp, be32(l4 + 8), 0),
        "payload": payload.astype(np.uint8),
    }


def _flow_index(cols):
    """Flow numbers: 5-tuples in order of first appearance."""
    n = len(cols["src_ip"])
    if n == 0:
        return np.zeros(0, np.int32)
    # The 5-tuple packed in two words (a structured np.unique is ~10x
    # slower); a stable sort puts each tuple's first packet first.
    u = np.uint64
    hi = cols["src_ip"].astype(u) << u(32) | cols["dst_ip"].astype(u)
    lo = cols["sport"].astype(u) << u(24) | cols["dport"].astype(u) << u(8) \
        | cols["proto"].astype(u)
    order = np.lexsort((lo, hi))
    new = np.ones(n, bool)
    new[1:] = (hi[order][1:] != hi[order][:-1]) \
        | (lo[order][1:] != lo[order][:-1])
    group = np.empty(n, np.int64)
    group[order] = np.cumsum(new) - 1
    first = order[new]                      # each tuple's first packet
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[group].astype(np.int32)
