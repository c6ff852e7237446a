"""Packets an NF's port refused at its input, from its refused records.

A NIC whose rx queue is full drops what arrives and counts it (imissed);
the attach shim reads that count now and then and writes a refused record
when it grew (docs/record-format.md).  Those packets reach no rx burst, so
no other record has them: for a chain's first NF, fed by a NIC whose
sender is not recorded, they are the only trace of its losses, and the
trajectories cannot make them victims (no ids).  Where a recorded tx
feeds the NF, its drops are in the trajectories already and these records
count the same packets again from the NIC's side.

Each record says how many packets were refused in the window since the
reading before; records whose windows touch (consecutive readings that
both found refusals) make one episode.
"""
import numpy as np

__all__ = ["refused_episodes"]


def refused_episodes(nfs, topology):
    """The refusals of NFs `nfs` (NFRecords) as episodes, most packets
    first: one dict per run of touching windows of one NF's port.

    Parameters
    ----------
    nfs : list of NFRecords
    topology : mscope.analyzer.topology.Topology
        Whether a recorded tx feeds each NF (``in_capture``).

    Returns
    -------
    list of dict
        ``nf``, ``port``, ``packets``, ``from_ns`` (the first window's
        start: the reading before, when nothing was refused yet),
        ``to_ns`` (the last reading), ``readings`` (records) and
        ``in_capture``: True where a recorded tx feeds the NF, so the
        trajectories have these packets as drops; False where they are in
        no other record (a NIC feeds it).
    """
    recorded = {n.name for n in nfs}
    fed = {d for s, d in topology.edges if s in recorded}
    out = []
    for n in nfs:
        r = n.refused
        if not len(r):
            continue
        for port in np.unique(r["port"]).tolist():
            p = r[r["port"] == port]
            start = p["time_ns"] - p["window_ns"]
            # a new episode where the window does not reach back to the
            # reading of the record before (a reading in between found none)
            new = np.r_[True, start[1:] > p["time_ns"][:-1]]
            first = np.flatnonzero(new)
            last = np.r_[first[1:], len(p)] - 1
            packets = np.add.reduceat(p["packets"], first)
            for a, b, k in zip(first.tolist(), last.tolist(), packets.tolist()):
                out.append({"nf": n.name, "port": int(port), "packets": int(k),
                            "from_ns": int(start[a]), "to_ns": int(p["time_ns"][b]),
                            "readings": b - a + 1, "in_capture": n.name in fed})
    out.sort(key=lambda e: (-e["packets"], e["from_ns"]))
    return out
