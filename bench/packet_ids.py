"""Collision rate of mscope's packet ids on a modelled flow mix.

Usage::

    python bench/packet_ids.py [--packets N] [--seed S] [--ipv6-share F]

Builds a trace of N IPv4 and IPv6 packets (heavy-tailed flows, 80/20
TCP/UDP and by default 70/30 IPv4/IPv6 by flow, trimodal sizes, per-flow
IPv4 id counters, TCP sequence and acknowledgement numbers), computes their
ids with mscope.packet_id.ipv4_packet_ids and ipv6_packet_ids (bit for bit
what live NFs record), and counts, for each payload and IPv4-id variant:

- distinct ids, and packets whose id some other packet of the trace shares
  (and how many of those are IPv6);
- packets whose id another packet shares within +-W of it at R packets/s,
  i.e. within K = W*R positions in the trace: what the analyzer's hop-to-hop
  matching window sees;
- the same two counts expected of ideal random 64-bit ids (birthday bound).

Prints one JSON object per line (a "trace" line, then one per variant),
then the same as a table.  Results and the machine they came from are in
docs/packet-ids.md.  Not a test: pytest does not collect bench/.
"""
import argparse
import json
import sys
import time

import numpy as np

from mscope.packet_id import ipv4_packet_ids, ipv6_packet_ids

# (label, W seconds, R packets/s): matching windows the analyzer might use.
WINDOWS = [("1ms@1Mpps", 1e-3, 1e6), ("1ms@10Mpps", 1e-3, 10e6),
           ("10ms@1Mpps", 10e-3, 1e6), ("10ms@10Mpps", 10e-3, 10e6)]

# Flow sizes: Pareto with shape 1.2 and minimum 2 packets (mean 12): most
# flows are a handful of packets, most packets are in a few large flows.
PARETO_SHAPE, PARETO_MIN = 1.2, 2.0
TCP_SHARE = 0.8                      # of flows
IPV6_SHARE = 0.3                     # of flows, the default of --ipv6-share
# IP packet length (IPv4 total length, IPv6 40 + payload length): (share,
# low, high) per mode, ~64/576/1500-byte frames.  Small is ACKs and short
# requests, 576 the old default MTU, 1500 full-size Ethernet.  Small IPv6
# packets are IPV6_EXTRA bytes longer (the longer header); the other modes
# are MTU-bound, the same for both.  Of small TCP packets, PURE_ACK_SHARE
# are pure ACKs: no payload, so the sequence number does not move (~24% of
# all packets, as on links carrying both directions of bulk transfers).
SIZE_MODES = [(0.50, 52, 90), (0.10, 576, 576), (0.40, 1500, 1500)]
PURE_ACK_SHARE = 0.6
# Each pure ACK acknowledges ACK_STEP more bytes (delayed ACKs: one per two
# full-size segments) except DUP_ACK_SHARE of them, duplicate ACKs (after a
# loss) that repeat the last one: the same packet as far as the id goes,
# SACK blocks being TCP options.  Data segments carry the acknowledgement
# number as it stands.
ACK_STEP, DUP_ACK_SHARE = 2 * 1448, 0.01
# TCP with the timestamp option (Linux's default): a 32-byte header.
TCP_HDR, UDP_HDR, IP_HDR, IPV6_HDR = 32, 8, 20, 40
IPV6_EXTRA = IPV6_HDR - IP_HDR
# A flow's gap between its own packets, in units of the mean aggregate
# inter-packet time: log-uniform, so a flow takes 0.01%..10% of the link
# while it lasts.  Only the interleaving matters here, not absolute times.
GAP_RANGE = (10.0, 1e4)

PAYLOADS = ["random", "mixed", "flow-constant", "zeros"]
PAYLOAD_NOTES = {
    "random": "every packet random (encrypted: TLS, QUIC, IPsec)",
    "mixed": "per flow: 70% random, 20% flow-constant, 10% zeros",
    "flow-constant": "the same 16 bytes for every packet of a flow",
    "zeros": "all zero (worst case)",
}
IP_IDS = {"counter": "per-flow counter from a random start",
          "udp-zero": "counter on TCP, 0 on UDP (Linux, unconnected sockets)",
          "zero": "0 on every packet (all DF; RFC 6864 allows it)"}


def per_flow_cumsum(flow, by_flow, x):
    """For each packet, the sum of x over the earlier packets of its flow
    (exclusive: 0 for a flow's first packet in the trace)."""
    xs = x[by_flow]
    acc = np.cumsum(xs) - xs
    f_sorted = flow[by_flow]
    first = np.flatnonzero(np.r_[True, f_sorted[1:] != f_sorted[:-1]])
    acc -= np.repeat(acc[first], np.diff(np.r_[first, f_sorted.size]))
    out = np.empty_like(acc)
    out[by_flow] = acc
    return out


def flow_mix(n, rng, ipv6_share=IPV6_SHARE):
    """A trace of about n packets of interleaved flows, in time order.

    Time is in units of the mean aggregate inter-packet time, the trace
    covers [0, n).  Flows start uniformly over [-10n, n) and send one
    packet per gap (with jitter) until their size is reached, so the trace
    opens on flows already under way, counters mid-course, and long flows
    are cut at both ends, as in a capture of a live link.

    Returns
    -------
    dict of numpy.ndarray
        Per packet: ``flow``, ``tcp`` and ``ipv6`` (bool), ``length`` (IP
        packet length: IPv4 total length, IPv6 40 + payload length),
        ``ip_id`` (IPv4 only), ``tcp_seq``, ``tcp_ack``, ``payload_len``;
        and ``n_flows``, flows ever started.
    """
    horizon = 10 * n
    parts, kept, n_flows = [], 0, 0
    while kept < n:
        m = 100_000
        size = np.floor(PARETO_MIN * (1.0 + rng.pareto(PARETO_SHAPE, m)))
        size = np.minimum(size, 1e12)
        gap = np.exp(rng.uniform(*np.log(GAP_RANGE), m))
        start = rng.uniform(-horizon, n, m)
        # Packet k is sent at start + (k + u) * gap, u in [0, 1): only
        # k in [lo, hi) can fall inside [0, n).
        lo = np.clip(np.floor(-start / gap), 0, size).astype(np.int64)
        hi = np.clip(np.ceil((n - start) / gap), 0, size).astype(np.int64)
        count = hi - lo
        flow = np.repeat(np.arange(m), count)
        k = np.arange(flow.size) - np.repeat(np.cumsum(count) - count, count) \
            + lo[flow]
        t = start[flow] + (k + rng.random(flow.size)) * gap[flow]
        inside = (t >= 0) & (t < n)
        flow, k, t = flow[inside], k[inside], t[inside]
        parts.append((flow + n_flows, k, t))
        kept += flow.size
        n_flows += m
    flow, k, t = (np.concatenate(x) for x in zip(*parts))
    order = np.argsort(t, kind="stable")[:n]
    flow, k = flow[order], k[order]

    # Per-flow state, drawn for every flow started (most are never seen).
    flow_tcp = rng.random(n_flows) < TCP_SHARE
    tcp = flow_tcp[flow]
    ipv6 = (rng.random(n_flows) < ipv6_share)[flow]
    mode = rng.choice(len(SIZE_MODES), flow.size, p=[m[0] for m in SIZE_MODES])
    lo = np.array([m[1] for m in SIZE_MODES])[mode]
    hi = np.array([m[2] for m in SIZE_MODES])[mode]
    length = rng.integers(lo, hi + 1) + np.where(ipv6 & (mode == 0),
                                                 IPV6_EXTRA, 0)
    ip_hdr = np.where(ipv6, IPV6_HDR, IP_HDR)
    pure_ack = tcp & (mode == 0) & (rng.random(flow.size) < PURE_ACK_SHARE)
    length[pure_ack] = ip_hdr[pure_ack] + TCP_HDR
    payload_len = length - ip_hdr - np.where(tcp, TCP_HDR, UDP_HDR)

    # The IPv4 id counter counts the flow's packets, k; the sequence number
    # advances by each segment's payload, the acknowledgement number by
    # ACK_STEP on each pure ACK that is not a duplicate.  All three start
    # at a random value.
    ip_id = (rng.integers(0, 1 << 16, n_flows)[flow] + k) & 0xFFFF
    by_flow = np.argsort(flow, kind="stable")       # each flow in time order
    tcp_seq = (rng.integers(0, 1 << 32, n_flows)[flow]
               + per_flow_cumsum(flow, by_flow, payload_len)) & 0xFFFFFFFF
    step = np.where(pure_ack & (rng.random(flow.size) >= DUP_ACK_SHARE),
                    ACK_STEP, 0)
    # Inclusive: a pure ACK acknowledges new data itself.
    tcp_ack = (rng.integers(0, 1 << 32, n_flows)[flow]
               + per_flow_cumsum(flow, by_flow, step) + step) & 0xFFFFFFFF
    return dict(flow=flow, tcp=tcp, ipv6=ipv6, length=length, ip_id=ip_id,
                tcp_seq=tcp_seq, tcp_ack=tcp_ack, payload_len=payload_len,
                n_flows=n_flows)


def payload_bytes(kind, trace, rng):
    """(n, 16) first payload bytes of each packet, zero past its end."""
    n = trace["flow"].size
    flow = trace["flow"]
    n_flows = trace["n_flows"]
    if kind == "random":
        p = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    elif kind == "flow-constant":
        p = rng.integers(0, 256, (n_flows, 16), dtype=np.uint8)[flow]
    elif kind == "zeros":
        p = np.zeros((n, 16), np.uint8)
    elif kind == "mixed":
        flow_kind = rng.choice(3, n_flows, p=[0.7, 0.2, 0.1])[flow]
        p = rng.integers(0, 256, (n, 16), dtype=np.uint8)
        const = rng.integers(0, 256, (n_flows, 16), dtype=np.uint8)[flow]
        p = np.where((flow_kind == 1)[:, None], const, p)
        p[flow_kind == 2] = 0
    else:
        raise ValueError(f"unknown payload kind {kind!r}")
    p[np.arange(16) >= trace["payload_len"][:, None]] = 0
    return p


def collisions(ids, spans):
    """Collision counts of ids given in time order.

    Parameters
    ----------
    ids : numpy.ndarray of uint64, shape (n,)
    spans : list of int
        Window half-widths K in packets.

    Returns
    -------
    distinct : int
    in_collision : numpy.ndarray of bool, shape (n,)
        Packets whose id at least one other packet of the trace has.
    in_window : list of int
        For each K, packets whose id another packet within K positions has.
    """
    # A stable sort keeps equal ids in time order, so the nearest
    # same-id neighbour in time is the next one in sorted order.
    order = np.argsort(ids, kind="stable")
    same = ids[order][1:] == ids[order][:-1]
    marked = np.zeros(ids.size, bool)
    marked[1:] |= same
    marked[:-1] |= same
    gap = np.diff(order)
    in_window = []
    for k in spans:
        near = same & (gap <= k)
        w = np.zeros(ids.size, bool)
        w[1:] |= near
        w[:-1] |= near
        in_window.append(int(w.sum()))
    in_collision = np.zeros(ids.size, bool)
    in_collision[order] = marked
    return ids.size - int(same.sum()), in_collision, in_window


def ideal(n, k=None):
    """Expected packets sharing an id with another, for random 64-bit ids:
    over the whole trace (k None), or within k positions."""
    p = 2.0 ** -64
    return n * (n - 1) * p if k is None else n * min(2 * k, n - 1) * p


def run(n, seed, ipv6_share=IPV6_SHARE):
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    trace = flow_mix(n, rng, ipv6_share)
    n = trace["flow"].size
    spans = [int(round(w * r)) for _, w, r in WINDOWS]
    tcp, v6 = trace["tcp"], trace["ipv6"]
    v4 = ~v6
    yield dict(kind="trace", packets=n, seed=seed,
               flows=int(np.unique(trace["flow"]).size),
               tcp_packet_share=round(float(tcp.mean()), 4),
               ipv6_packet_share=round(float(v6.mean()), 4),
               pure_ack_share=round(float((tcp & (trace["payload_len"] == 0))
                                          .mean()), 4),
               largest_flow_share=round(float(np.bincount(trace["flow"]).max()
                                              / n), 4),
               windows={label: k for (label, _, _), k in zip(WINDOWS, spans)})
    zeros = np.zeros(n, np.int64)
    proto = np.where(tcp, 6, 17)            # also the IPv6 next header
    df = np.full(n, 0x4000)                 # DF set, nothing fragmented
    for payload in PAYLOADS:
        pay = payload_bytes(payload, trace, rng)
        ids = np.empty(n, np.uint64)
        # IPv6 has no id field: its ids are the same in every IP-id variant.
        ids[v6] = ipv6_packet_ids(
            payload_length=trace["length"][v6] - IPV6_HDR,
            next_header=proto[v6], tcp_seq=trace["tcp_seq"][v6],
            tcp_ack=trace["tcp_ack"][v6], payload=pay[v6])
        for ip_id_kind in IP_IDS:
            ip_id = {"counter": trace["ip_id"], "zero": zeros,
                     "udp-zero": np.where(tcp, trace["ip_id"], 0)}[ip_id_kind]
            ids[v4] = ipv4_packet_ids(
                ip_id=ip_id[v4], total_length=trace["length"][v4],
                frag=df[v4], proto=proto[v4], tcp_seq=trace["tcp_seq"][v4],
                tcp_ack=trace["tcp_ack"][v4], payload=pay[v4])
            distinct, whole, windowed = collisions(ids, spans)
            row = dict(kind="variant", payload=payload, ip_id=ip_id_kind,
                       packets=n, distinct_ids=distinct,
                       in_collision=int(whole.sum()),
                       in_collision_ipv6=int(whole[v6].sum()),
                       ideal_in_collision=ideal(n))
            for (label, _, _), k, c in zip(WINDOWS, spans, windowed):
                row[f"in_window_{label}"] = c
                row[f"ideal_in_window_{label}"] = ideal(n, k)
            yield row
    yield dict(kind="elapsed", seconds=round(time.perf_counter() - t0, 2))


def table(rows):
    trace = rows[0]
    out = [f"{trace['packets']:,} packets in {trace['flows']:,} flows "
           f"(seed {trace['seed']}); TCP {trace['tcp_packet_share']:.0%} of "
           f"packets, IPv6 {trace['ipv6_packet_share']:.0%}, pure ACKs "
           f"{trace['pure_ack_share']:.0%}, largest flow "
           f"{trace['largest_flow_share']:.1%}",
           "Packets sharing their id with another packet: over the whole "
           "trace, and within +-W at rate R.", ""]
    labels = [w[0] for w in WINDOWS]
    head = ["payload", "ip id", "distinct ids", "whole trace", "IPv6"] + \
        [f"+-{lab}" for lab in labels]
    body = []
    for r in rows[1:-1]:
        frac = r["in_collision"] / r["packets"]
        body.append([r["payload"], r["ip_id"], f"{r['distinct_ids']:,}",
                     f"{r['in_collision']:,} ({frac:.2%})",
                     f"{r['in_collision_ipv6']:,}"] +
                    [f"{r[f'in_window_{lab}']:,}" for lab in labels])
    r = rows[1]
    body.append(["ideal 64-bit", "", "", f"{r['ideal_in_collision']:.1e}",
                 ""] +
                [f"{r[f'ideal_in_window_{lab}']:.1e}" for lab in labels])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    for line in [head, ["-" * w for w in widths]] + body:
        out.append("  ".join(str(x).rjust(w) if i > 1 else str(x).ljust(w)
                             for i, (x, w) in enumerate(zip(line, widths))))
    out += ["", "payload: " + "; ".join(f"{k}: {v}" for k, v in
                                        PAYLOAD_NOTES.items()),
            "ip id (IPv4 only): " + "; ".join(f"{k}: {v}"
                                              for k, v in IP_IDS.items()),
            "IPv6: packets of the whole trace in collision that are IPv6",
            f"{rows[-1]['seconds']} s"]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python bench/packet_ids.py "
                                        "--packets 4000000 --seed 1")
    ap.add_argument("--packets", type=int, default=4_000_000,
                    help="packets in the trace (default 4,000,000)")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed (default 1)")
    ap.add_argument("--ipv6-share", type=float, default=IPV6_SHARE,
                    help=f"share of flows that are IPv6 (default "
                         f"{IPV6_SHARE})")
    args = ap.parse_args(argv)
    if args.packets < 2:
        ap.error("--packets must be at least 2")
    if not 0.0 <= args.ipv6_share <= 1.0:
        ap.error("--ipv6-share must be in [0, 1]")
    rows = []
    for row in run(args.packets, args.seed, args.ipv6_share):
        print(json.dumps(row), flush=True)
        rows.append(row)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
