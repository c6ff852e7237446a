"""The files the testbed's C programs read and write: the source's packet
schedule and the frame dumps of source and sink (csrc/testbed/tb_schedule.h).

The schedule is the scenario's traffic as the simulator draws it
(`mscope.sim.run.make_traffic`: the generated flow mix with its burst
faults, or the replayed pcap), so the live source sends the same packets,
with the same ids, at the same times as the simulated one.
"""
from pathlib import Path

import numpy as np

__all__ = ["SCHEDULE_DTYPE", "DUMP_DTYPE", "write_schedule", "read_dump", "frame_fields"]

MAGIC = b"MSTBSCH1"

#: struct tb_pkt, field for field (56 bytes, little-endian).
SCHEDULE_DTYPE = np.dtype({
    "names": ["time_ns", "src_ip", "dst_ip", "tcp_seq", "tcp_ack", "sport", "dport",
              "length", "ip_id", "frag", "proto", "out", "payload"],
    "formats": ["<i8", "<u4", "<u4", "<u4", "<u4", "<u2", "<u2", "<u2", "<u2", "<u2",
                "u1", "u1", ("u1", 16)],
    "offsets": [0, 8, 12, 16, 20, 24, 26, 28, 30, 32, 34, 35, 36],
    "itemsize": 56})

#: struct tb_dump: one frame as the source sent it or the sink received it.
DUMP_DTYPE = np.dtype({"names": ["pkt_len", "port", "bytes"],
                       "formats": ["<u2", "<u2", ("u1", 128)],
                       "offsets": [0, 2, 8], "itemsize": 136})


def write_schedule(path, packets, out, time_scale=1.0):
    """Write `packets` (mscope.sim.traffic.Packets) as a source schedule.

    Parameters
    ----------
    path : str or os.PathLike
    packets : Packets
        Sorted by time.
    out : ndarray of int
        Out-link index of each packet at the source (< 256).
    time_scale : float
        Send times are ``time_ns * time_scale`` (``--seconds-scale``).
    """
    n = len(packets.time_ns)
    rec = np.zeros(n, SCHEDULE_DTYPE)
    rec["time_ns"] = np.round(packets.time_ns.astype(np.float64) * time_scale).astype(np.int64)
    for f in ("src_ip", "dst_ip", "tcp_seq", "tcp_ack", "sport", "dport", "length",
              "ip_id", "frag", "proto"):
        rec[f] = getattr(packets, f)
    rec["out"] = out
    rec["payload"] = packets.payload
    header = MAGIC + np.array([SCHEDULE_DTYPE.itemsize, 0], "<u4").tobytes() \
        + np.array([n], "<u8").tobytes()
    with open(path, "wb") as f:
        f.write(header)
        f.write(rec.tobytes())


def read_dump(path):
    """Frames dumped with --dump: a DUMP_DTYPE array."""
    return np.fromfile(Path(path), DUMP_DTYPE)


def frame_fields(dump):
    """IPv4 5-tuple and length of dumped frames (untagged Ethernet/IPv4).

    Returns
    -------
    dict of ndarray
        ``src``, ``dst`` (uint32), ``sport``, ``dport`` (uint16, 0 when not
        TCP/UDP), ``proto`` (uint8), ``length`` (IPv4 total length).
    """
    b = dump["bytes"].astype(np.uint32)
    ip = 14
    ihl = (b[:, ip] & 0xF) * 4
    be16 = lambda o: (b[np.arange(len(b)), o] << 8) | b[np.arange(len(b)), o + 1]  # noqa: E731
    be32 = lambda o: (be16(o) << 16) | be16(o + 2)  # noqa: E731
    proto = b[:, ip + 9].astype(np.uint8)
    l4 = ip + ihl
    has_ports = (proto == 6) | (proto == 17)
    return {"src": be32(np.full(len(b), ip + 12)).astype(np.uint32),
            "dst": be32(np.full(len(b), ip + 16)).astype(np.uint32),
            "sport": np.where(has_ports, be16(l4), 0).astype(np.uint16),
            "dport": np.where(has_ports, be16(l4 + 2), 0).astype(np.uint16),
            "proto": proto,
            "length": be16(np.full(len(b), ip + 2)).astype(np.uint16)}
