"""What the capture shows of OVS: one row per rule (in port -> out port).

For each vhost-user port OVS receives on: packets and batches received,
the rx queue's recorded occupancy, and the time each packet spent in OVS,
from its rx on that port to its tx on the port the rule sends it to
(exact ids: each packet passes each port once).  The per-hop counterpart
of OVS's own ``ovs-appctl dpif-netdev/pmd-perf-show``, which sees
iterations and cycles, not packets (docs/ovs.md).
"""
import re

import numpy as np

from mscope.capture import open_capture

from .plan import OVS_NAME
from .truth import records_by_nf

__all__ = ["ovs_port_view", "format_port_view"]

_RULE = re.compile(r"in_port=([^,]+),actions=output:(\S+)")


def ovs_port_view(capture, ports_map, flows):
    """Rows (dicts) per rule; see the module docstring.

    Parameters
    ----------
    capture : str or os.PathLike
    ports_map : dict
        ``ovs-ports.json``.
    flows : list of str
        The rules, as in ovs.json's ``layout.flows``.
    """
    ovs = records_by_nf(open_capture(capture).read()).get(OVS_NAME)
    if ovs is None:
        return []
    port_of = {v["ovs_port"]: int(k) for k, v in ports_map.items()}
    rows = []
    for flow in flows:
        m = _RULE.search(flow)
        if not m or m.group(1) not in port_of or m.group(2) not in port_of:
            continue
        pin, pout = port_of[m.group(1)], port_of[m.group(2)]
        r = ovs.rx_port == pin
        t = ovs.tx_port == pout
        rx_ids, rx_ns = ovs.rx_ids[r], ovs.rx_ns[r]
        tx_ids, tx_ns = ovs.tx_ids[t], ovs.tx_ns[t]
        order = np.argsort(tx_ids, kind="stable")
        pos = np.minimum(np.searchsorted(tx_ids[order], rx_ids), max(len(order) - 1, 0))
        hit = (tx_ids[order][pos] == rx_ids) if len(order) else np.zeros(len(rx_ids), bool)
        stay = (tx_ns[order][pos[hit]] - rx_ns[hit]) / 1e3 if hit.any() else np.zeros(0)
        b = ovs.batch_port == pin
        occ = ovs.batch_occupancy[b]
        occ = occ[occ >= 0]
        rows.append({
            "rule": f"{m.group(1)} -> {m.group(2)}", "rx_port": pin, "tx_port": pout,
            "packets": int(r.sum()), "batches": int(b.sum()),
            "batch_mean": float(r.sum() / max(1, b.sum())),
            "occupancy_max": int(occ.max()) if len(occ) else None,
            "sent_on": int(hit.sum()),
            "in_ovs_us": {q: (float(np.percentile(stay, p)) if len(stay) else None)
                          for q, p in (("p50", 50), ("p99", 99), ("max", 100))}})
    return rows


def format_port_view(rows):
    lines = ["rule             rx port  packets  batches  pkts/batch  occ max  sent on  "
             "in OVS us p50    p99     max"]
    for r in rows:
        s = r["in_ovs_us"]
        occ = "-" if r["occupancy_max"] is None else r["occupancy_max"]
        lines.append(f"{r['rule']:<16} {r['rx_port']:7d}  {r['packets']:7d}  {r['batches']:7d}  "
                     f"{r['batch_mean']:10.1f}  {occ:>7}  {r['sent_on']:7d}  "
                     f"{s['p50'] or 0:13.1f}  {s['p99'] or 0:5.1f}  {s['max'] or 0:6.1f}")
    return "\n".join(lines)
