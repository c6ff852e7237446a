"""Packet ids from header-invariant fields: the reference implementation.

This is ``mscope_pktid_bytes`` and ``mscope_pktid_mix`` from
csrc/mscope_pktid.h in Python, bit for bit (tests/test_packet_id.py holds
the C to it on generated frames).  The analyzer never needs it to read a
capture, since the ids are in the records; it is here so that a simulator
or a pcap replay can emit the ids live NFs would have recorded, and so the
scheme has an executable definition.  Scheme, limits and measured collision
rates: docs/packet-ids.md.

For IPv4 the id mixes the IPv4 id, total length, fragment field, protocol,
TCP sequence and acknowledgement numbers and the first 16 L4-payload bytes;
for IPv6, the payload length, next header, TCP sequence and acknowledgement
numbers and the first 16 bytes after the L4 header (after the fixed header
when the next header is not TCP, UDP or ICMPv6: extension headers are not
walked); for any other frame, its length, ethertype and bytes [14, 38).
None of those is touched by a NAT or NAT66 (addresses, ports, checksums,
ICMP echo id), a router (TTL, hop limit), a QoS box (DSCP/ECN, traffic
class, flow label) or an L2 forwarder (MACs, VLAN tag), so the same packet
has the same id before and after such an NF.
"""
import numpy as np

__all__ = ["packet_id", "mix", "ipv4_packet_ids", "ipv6_packet_ids"]

_M64 = 0xFFFFFFFFFFFFFFFF

# Odd multipliers (golden ratio and xxHash primes); the same four as
# MSCOPE_PKTID_K1..K4.  Odd, so each w*K is a bijection of w.
_K1 = 0x9E3779B97F4A7C15
_K2 = 0xC2B2AE3D27D4EB4F
_K3 = 0x165667B19E3779F9
_K4 = 0xD6E8FEB86659FD93
# MurmurHash3's 64-bit finaliser constants (mscope_fmix64).
_F1 = 0xFF51AFD7ED558CCD
_F2 = 0xC4CEB9FE1A85EC53

# Rotations applied to w1, w2, w3, so that equal words in different slots
# do not cancel in the xor.
_R1, _R2, _R3 = 23, 41, 11

_ETH_IPV4, _ETH_IPV6 = 0x0800, 0x86DD
_ETH_VLAN = (0x8100, 0x88A8)
_PROTO_ICMP, _PROTO_TCP, _PROTO_UDP, _PROTO_ICMPV6 = 1, 6, 17, 58

# The id a packet gets when the mix comes out 0: 0 means "no id" in records.
_ZERO_ID = 1


def _rotl_int(x, r):
    return ((x << r) | (x >> (64 - r))) & _M64


def _fmix_int(k):
    k ^= k >> 33
    k = (k * _F1) & _M64
    k ^= k >> 33
    k = (k * _F2) & _M64
    k ^= k >> 33
    return k


def _mix_int(w0, w1, w2, w3):
    """`mix` on Python ints, for `packet_id` (no numpy per frame)."""
    h = ((w0 * _K1) & _M64) ^ _rotl_int((w1 * _K2) & _M64, _R1) \
        ^ _rotl_int((w2 * _K3) & _M64, _R2) ^ _rotl_int((w3 * _K4) & _M64, _R3)
    h = _fmix_int(h)
    return h if h != 0 else _ZERO_ID


def _load_le(frame, off, end):
    """Little-endian load of up to 8 bytes in [off, end), zero-padded."""
    if off >= end:
        return 0
    return int.from_bytes(frame[off:min(off + 8, end)], "little")


def packet_id(frame, pkt_len=None):
    """The id ``mscope_pktid_bytes`` computes for one frame.

    Parameters
    ----------
    frame : bytes-like
        The frame from its Ethernet header on, as far as it is contiguous
        (an mbuf's first segment): the C function's ``p`` and ``len``.
        Nothing past its end is read.
    pkt_len : int, optional
        The whole frame's length (an mbuf's ``pkt_len``), which can exceed
        ``len(frame)`` for a multi-segment mbuf.  Default ``len(frame)``.
        It enters the id only for frames that are not parsed as IPv4 or
        IPv6, which use their IP total or payload length instead.

    Returns
    -------
    int
        The id, in [1, 2**64).

    Raises
    ------
    ValueError
        If ``pkt_len`` is not in [0, 2**32).

    Examples
    --------
    A UDP datagram before and after a NAT that rewrote its source address
    and port (and would fix the checksums): the same id.

    >>> ip = bytes([0x45, 0, 0, 36, 0x12, 0x34, 0x40, 0, 64, 17]) + bytes(10)
    >>> udp = bytes([0x30, 0x39, 0, 53, 0, 16, 0, 0]) + b"payload!"
    >>> frame = bytes(12) + b"\\x08\\x00" + ip + udp
    >>> natted = bytearray(frame)
    >>> natted[26:30] = bytes([203, 0, 113, 7])        # source address
    >>> natted[34:36] = (40000).to_bytes(2, "big")     # source port
    >>> packet_id(natted) == packet_id(frame)
    True
    >>> hex(packet_id(b""))        # nothing to hash: the 0 mix becomes 1
    '0x1'
    """
    p = bytes(frame)
    n = len(p)
    if pkt_len is None:
        pkt_len = n
    elif not 0 <= pkt_len <= 0xFFFFFFFF:
        raise ValueError(f"pkt_len must be in [0, 2**32), got {pkt_len}")
    if n < 14:
        return _mix_int(pkt_len, _load_le(p, 0, n), 0, 0)
    l3 = 14
    etype = p[12] << 8 | p[13]
    if etype in _ETH_VLAN and n >= 18:
        etype = p[16] << 8 | p[17]
        l3 = 18
    if (etype == _ETH_IPV4 and n >= l3 + 20 and p[l3] >> 4 == 4
            and (p[l3] & 0xF) >= 5):
        ihl = (p[l3] & 0xF) * 4
        tot = p[l3 + 2] << 8 | p[l3 + 3]
        frag = (p[l3 + 6] << 8 | p[l3 + 7]) & 0x3FFF
        proto = p[l3 + 9]
        ip_id = p[l3 + 4] << 8 | p[l3 + 5]
        w0 = ip_id << 48 | tot << 32 | frag << 16 | proto << 8 | 4
        end = min(l3 + tot, n)
        if frag & 0x1FFF:           # not the first fragment: no L4 header
            proto = None
        return _l4_id(p, w0, proto, _PROTO_ICMP, l3 + ihl, end)
    if etype == _ETH_IPV6 and n >= l3 + 40 and p[l3] >> 4 == 6:
        plen = p[l3 + 4] << 8 | p[l3 + 5]
        nh = p[l3 + 6]
        w0 = plen << 32 | nh << 8 | 6
        return _l4_id(p, w0, nh, _PROTO_ICMPV6, l3 + 40,
                      min(l3 + 40 + plen, n))
    return _mix_int(pkt_len << 16 | etype, _load_le(p, 14, n),
                    _load_le(p, 22, n), _load_le(p, 30, min(n, 38)))


def _l4_id(p, w0, proto, icmp, l4, end):
    """The id from w0 and the L4 part at ``l4``, for IPv4 and IPv6 alike:
    ``mscope_pktid_l4``.  ``proto`` is None past a first fragment; ``icmp``
    is ICMP's protocol number in this IP version."""
    w1 = 0
    pay = l4
    if proto == _PROTO_TCP and l4 + 20 <= end:
        w1 = int.from_bytes(p[l4 + 4:l4 + 12], "big")     # seq<<32 | ack
        pay = l4 + (p[l4 + 12] >> 4) * 4
    elif proto == _PROTO_UDP or proto == icmp:
        # UDP: ports, length, checksum.  ICMP and ICMPv6: type, code,
        # checksum and the echo id a NAT may rewrite, then the sequence
        # number.
        pay = l4 + 8
    return _mix_int(w0, w1, _load_le(p, pay, end), _load_le(p, pay + 8, end))


def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def mix(w0, w1, w2, w3):
    """Mix four 64-bit words into ids, elementwise: ``mscope_pktid_mix``.

    ``fmix64(w0*K1 ^ rotl(w1*K2, 23) ^ rotl(w2*K3, 41) ^ rotl(w3*K4, 11))``
    modulo 2**64, and 1 where that is 0.

    Parameters
    ----------
    w0, w1, w2, w3 : array_like of uint64
        The words, broadcast against each other.  Python ints must fit in
        64 bits; other integer arrays are cast to uint64.

    Returns
    -------
    numpy.ndarray of uint64
        The ids, never 0, in the broadcast shape (0-d for scalar inputs).

    Examples
    --------
    >>> import numpy as np
    >>> mix(np.array([0, 1], dtype=np.uint64), 0, 0, 0)[0]   # 0 is "no id"
    np.uint64(1)
    """
    w = [np.asarray(x).astype(np.uint64, copy=False) for x in (w0, w1, w2, w3)]
    # Wrapping mod 2**64 is the point: numpy does it for arrays and warns
    # only for 0-d operands, which the errstate silences.
    with np.errstate(over="ignore"):
        h = (w[0] * np.uint64(_K1)) \
            ^ _rotl(w[1] * np.uint64(_K2), _R1) \
            ^ _rotl(w[2] * np.uint64(_K3), _R2) \
            ^ _rotl(w[3] * np.uint64(_K4), _R3)
        h ^= h >> np.uint64(33)
        h *= np.uint64(_F1)
        h ^= h >> np.uint64(33)
        h *= np.uint64(_F2)
        h ^= h >> np.uint64(33)
    return np.where(h == 0, np.uint64(_ZERO_ID), h)


def _as_field(name, a, n, limit, like="ip_id"):
    a = np.asarray(a)
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like {like}, "
                         f"got {a.shape}")
    if a.dtype.kind not in "iu" and a.size:   # [] comes as float64
        raise ValueError(f"{name} must be an integer array, got {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > limit):
        raise ValueError(f"{name} must be in [0, {limit}]")
    return a.astype(np.uint64)


def _first(name, a):
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {a.shape}")
    return a, a.shape[0]


def _payload_words(payload, n):
    """w2, w3 from (n, 16) payload bytes."""
    payload = np.asarray(payload)
    if payload.shape != (n, 16) or (payload.dtype != np.uint8 and n):
        raise ValueError(f"payload must be a ({n}, 16) uint8 array, got "
                         f"{payload.shape} {payload.dtype}")
    # The C loads are little-endian from the frame: the same bytes viewed
    # as "<u8" are the same words on any host.
    words = np.ascontiguousarray(payload, dtype=np.uint8).view("<u8")
    words = words.astype(np.uint64)
    return words[:, 0], words[:, 1]


def _tcp_word(tcp_seq, tcp_ack, has_tcp, n, where):
    """w1: seq<<32 | ack where has_tcp, else 0.  The two fields are checked
    only where they are used: elsewhere any integer filler is fine."""
    w1 = np.zeros(n, np.uint64)
    for shift, name, a in ((32, "tcp_seq", tcp_seq), (0, "tcp_ack", tcp_ack)):
        a = np.asarray(a)
        if a.shape != (n,) or (a.dtype.kind not in "iu" and n):
            raise ValueError(f"{name} must be an integer array of shape "
                             f"({n},), got {a.shape} {a.dtype}")
        used = a[has_tcp]
        if used.size and (used.min() < 0 or used.max() > 0xFFFFFFFF):
            raise ValueError(f"{name} must be in [0, 4294967295] {where}")
        w1[has_tcp] |= used.astype(np.uint64) << np.uint64(shift)
    return w1


def ipv4_packet_ids(ip_id, total_length, frag, proto, tcp_seq, tcp_ack,
                    payload):
    """Ids of IPv4 packets given by their fields, as live NFs compute them.

    For each packet, the id ``packet_id`` gives the frame carrying it,
    without building the frame: for a simulator or a trace generator that
    must emit ids the analyzer can match against recorded ones.

    The packets are taken to be well formed: the frame's first segment
    holds the IPv4 and L4 headers (and the 16 payload bytes, where the
    packet has them), and total_length covers the L4 header (20 bytes for
    TCP).  IP and TCP options, addresses, ports, checksums and TTL do not
    enter the id, so they are not asked for.

    Parameters
    ----------
    ip_id : array_like of int, shape (n,)
        IPv4 identification field, 0..65535.
    total_length : array_like of int, shape (n,)
        IPv4 total length, 0..65535.
    frag : array_like of int, shape (n,)
        The flags and fragment offset halfword as on the wire (DF is 0x4000,
        MF 0x2000, offset in 8-byte units in the low 13 bits), 0..65535; the
        reserved bit 0x8000 is ignored, as in C.
    proto : array_like of int, shape (n,)
        IPv4 protocol, 0..255.
    tcp_seq, tcp_ack : array_like of int, shape (n,)
        TCP sequence and acknowledgement numbers, 0..2**32-1; used only
        where ``proto == 6`` and the fragment offset is 0 (ignored
        elsewhere, any value).  The acknowledgement number enters the id
        whether or not the ACK flag is set, as the field is on the wire.
    payload : array_like of uint8, shape (n, 16)
        The first 16 bytes after the L4 header (TCP header with options,
        8-byte UDP or ICMP header; for other protocols and non-first
        fragments, after the IPv4 header), zero past the packet's end.

    Returns
    -------
    numpy.ndarray of uint64, shape (n,)
        The ids, never 0.

    Raises
    ------
    ValueError
        If a field is not a 1-d integer array of the same length as
        ``ip_id``, holds a value outside its range, or ``payload`` is not
        (n, 16) uint8.

    See Also
    --------
    ipv6_packet_ids : the same for IPv6 packets.

    Examples
    --------
    Two TCP segments of one flow, 100 payload bytes each, as a simulator
    would describe them; the second frame is built byte by byte and its id
    matches.

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> data = rng.integers(0, 256, (2, 100), dtype=np.uint8)
    >>> ids = ipv4_packet_ids(ip_id=[7, 8], total_length=[140, 140],
    ...                       frag=[0x4000, 0x4000], proto=[6, 6],
    ...                       tcp_seq=[1000, 1100], tcp_ack=[5000, 5000],
    ...                       payload=data[:, :16])
    >>> ids.dtype, ids.shape
    (dtype('uint64'), (2,))
    >>> ip = bytes([0x45, 0, 0, 140, 0, 8, 0x40, 0, 64, 6, 0, 0]) + bytes(8)
    >>> tcp = (bytes(4) + (1100).to_bytes(4, "big")
    ...        + (5000).to_bytes(4, "big") + bytes([0x50]) + bytes(7))
    >>> frame = bytes(12) + b"\\x08\\x00" + ip + tcp + data[1].tobytes()
    >>> int(ids[1]) == packet_id(frame)
    True

    Pure ACKs of one flow with IPv4 id 0 (allowed on DF packets) differ
    only in what they acknowledge, and so do their ids.

    >>> acks = ipv4_packet_ids([0, 0], [52, 52], [0x4000, 0x4000], [6, 6],
    ...                        tcp_seq=[1, 1], tcp_ack=[2897, 5793],
    ...                        payload=np.zeros((2, 16), np.uint8))
    >>> bool(acks[0] != acks[1])
    True
    """
    ip_id, n = _first("ip_id", ip_id)
    ip_id = _as_field("ip_id", ip_id, n, 0xFFFF)
    total_length = _as_field("total_length", total_length, n, 0xFFFF)
    frag = _as_field("frag", frag, n, 0xFFFF) & np.uint64(0x3FFF)
    proto = _as_field("proto", proto, n, 0xFF)
    w2, w3 = _payload_words(payload, n)
    has_tcp = (proto == _PROTO_TCP) & ((frag & np.uint64(0x1FFF)) == 0)
    w1 = _tcp_word(tcp_seq, tcp_ack, has_tcp, n,
                   "where proto is 6 and the fragment offset is 0")
    w0 = (ip_id << np.uint64(48)) | (total_length << np.uint64(32)) \
        | (frag << np.uint64(16)) | (proto << np.uint64(8)) | np.uint64(4)
    return mix(w0, w1, w2, w3)


def ipv6_packet_ids(payload_length, next_header, tcp_seq, tcp_ack, payload):
    """Ids of IPv6 packets given by their fields, as live NFs compute them.

    The IPv6 counterpart of `ipv4_packet_ids`: for each packet, the id
    ``packet_id`` gives the frame carrying it, without building the frame.

    The packets are taken to be well formed: the frame's first segment
    holds the 40-byte IPv6 header and the L4 header (and the 16 payload
    bytes, where the packet has them), and payload_length covers the L4
    header (20 bytes for TCP).  Addresses, flow label, traffic class, hop
    limit, ports, checksums and TCP options do not enter the id, so they
    are not asked for.  Extension headers are not walked: where the next
    header is not TCP (6), UDP (17) or ICMPv6 (58), the payload starts right
    after the fixed header, extension headers included.

    Parameters
    ----------
    payload_length : array_like of int, shape (n,)
        IPv6 payload length, 0..65535.
    next_header : array_like of int, shape (n,)
        The fixed header's next header, 0..255.
    tcp_seq, tcp_ack : array_like of int, shape (n,)
        TCP sequence and acknowledgement numbers, 0..2**32-1; used only
        where ``next_header == 6`` (ignored elsewhere, any value).
    payload : array_like of uint8, shape (n, 16)
        The first 16 bytes after the L4 header (TCP header with options,
        8-byte UDP or ICMPv6 header; for other next headers, after the
        40-byte IPv6 header), zero past the packet's end.

    Returns
    -------
    numpy.ndarray of uint64, shape (n,)
        The ids, never 0.

    Raises
    ------
    ValueError
        If a field is not a 1-d integer array of the same length as
        ``payload_length``, holds a value outside its range, or ``payload``
        is not (n, 16) uint8.

    See Also
    --------
    ipv4_packet_ids : the same for IPv4 packets.

    Examples
    --------
    A UDP datagram and a TCP segment over IPv6; the TCP frame is built
    byte by byte (hop limit 64, addresses and flow label left 0: none of
    them counts) and its id matches.

    >>> import numpy as np
    >>> data = np.arange(32, dtype=np.uint8).reshape(2, 16)
    >>> ids = ipv6_packet_ids(payload_length=[24, 36], next_header=[17, 6],
    ...                       tcp_seq=[0, 1000], tcp_ack=[0, 5000],
    ...                       payload=data)
    >>> ids.dtype, ids.shape
    (dtype('uint64'), (2,))
    >>> ip6 = bytes([0x60, 0, 0, 0, 0, 36, 6, 64]) + bytes(32)
    >>> tcp = (bytes(4) + (1000).to_bytes(4, "big")
    ...        + (5000).to_bytes(4, "big") + bytes([0x50]) + bytes(7))
    >>> frame = bytes(12) + b"\\x86\\xdd" + ip6 + tcp + data[1].tobytes()
    >>> int(ids[1]) == packet_id(frame)
    True
    """
    payload_length, n = _first("payload_length", payload_length)
    like = "payload_length"
    payload_length = _as_field("payload_length", payload_length, n, 0xFFFF,
                               like)
    next_header = _as_field("next_header", next_header, n, 0xFF, like)
    w2, w3 = _payload_words(payload, n)
    has_tcp = next_header == _PROTO_TCP
    w1 = _tcp_word(tcp_seq, tcp_ack, has_tcp, n, "where next_header is 6")
    w0 = (payload_length << np.uint64(32)) | (next_header << np.uint64(8)) \
        | np.uint64(6)
    return mix(w0, w1, w2, w3)
