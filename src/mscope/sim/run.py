"""`mscope simulate`: scenario -> traffic -> simulation -> capture + truth.json.

Ground truth is counterfactual (SCENARIO.md): the scenario is run once with
every fault, then once without each fault F, on the same traffic (minus
F's own packets when F is a burst); a victim of the full run that is not a
victim without F belongs to F.  Service-time noise is drawn from packet
ids, so a packet meets the same luck in every run.
"""
import json
import os
import time
from pathlib import Path

import numpy as np

from mscope import __version__
from mscope.record import IDLE_NS
from mscope.sim.engine import SOURCE_NF_ID, simulate

__all__ = ["make_traffic", "label_victims", "simulate_to_capture"]

CHUNK_RECORDS = 65536


def make_traffic(scenario):
    """The scenario's packets: generated, or replayed from its pcap."""
    from mscope.sim import traffic as tr
    t = scenario.traffic
    if t.pcap:
        return tr.from_pcap(t.pcap, duration_ns=scenario.duration_ns)
    bursts = [(i, f.flows, f.start_ns, f.end_ns, f.rate_pps)
              for i, f in enumerate(scenario.faults) if f.kind == "burst"]
    return tr.generate(seed=scenario.seed, duration_ns=scenario.duration_ns,
                       rate_pps=t.rate_pps, flows=t.flows, flow_sizes=t.flow_sizes,
                       src_net=t.src_net, dst_net=t.dst_net,
                       pareto_shape=t.pareto_shape, tcp_share=t.tcp_share, bursts=bursts)


def label_victims(scenario, packets, full=None):
    """Counterfactual labels: for each fault, the full run's victims it explains.

    Returns
    -------
    full : SimRun
        The run with every fault (records built).
    belongs : dict fault index -> bool array over packets
    unexplained : bool array over packets
    """
    if full is None:
        full = simulate(scenario, packets)
    belongs = {}
    for i, f in enumerate(scenario.faults):
        keep = packets.burst != i
        sub = packets.take(keep) if not keep.all() else packets
        run = simulate(scenario, sub, disabled=frozenset([i]), records=False)
        still = np.zeros(len(packets.time_ns), bool)
        still[np.flatnonzero(keep)] = run.victim   # absent packets: not victims there
        belongs[i] = full.victim & ~still
    explained = np.zeros(len(packets.time_ns), bool)
    for b in belongs.values():
        explained |= b
    return full, belongs, full.victim & ~explained


def _truth(scenario, packets, full, belongs, unexplained):
    faults = []
    for i, f in enumerate(scenario.faults):
        entry = {"id": f.id, "kind": f.kind}
        if f.nf is not None:
            entry["nf"] = f.nf
        if f.flows is not None:
            entry["flows"] = str(f.flows)
        entry["victims"] = [int(x) for x in packets.pkt_id[belongs[i]]]
        faults.append(entry)
    return {"scenario": scenario.name, "labels": "counterfactual",
            "objective": {"latency_us": scenario.slo_ns / 1000},
            "victims_total": int(full.victim.sum()),
            "faults": faults,
            "victims_unexplained": [int(x) for x in packets.pkt_id[unexplained]]}


def write_capture(scenario, run, out):
    """Write a run's records as a capture directory (as mscope-collect would)."""
    from mscope.capture import CaptureWriter
    with CaptureWriter(out, producer=f"mscope simulate {__version__}") as w:
        host = w.add_host("sim", tsc_hz=None)
        # Same seed, same bytes: no wall-clock time in a simulated capture.
        w.set_manifest_entry("created_unix_ns", None)
        w.set_manifest_entry("time", {"unit": "ns", "clock": "simulated, from the run's start"})
        w.set_manifest_entry("topology", [list(link) for link in scenario.links])
        for nf_id, name, recs, ids in run.streams:
            # NFs poll and write idle-poll records (engine.idle_polls), as
            # their ring headers would declare; the source only sends
            s = w.add_stream(host, nf_id, name, lcore=0,
                             extra={"idle_ns": 0 if nf_id == SOURCE_NF_ID else IDLE_NS})
            recs = recs.copy()
            recs["seq"] = np.arange(len(recs), dtype=np.uint64)
            counts = recs["count"].astype(np.int64)
            off = np.concatenate([[0], np.cumsum(counts)])
            for a in range(0, len(recs), CHUNK_RECORDS):
                b = min(a + CHUNK_RECORDS, len(recs))
                w.write_chunk(s, recs[a:b], ids[off[a]:off[b]],
                              first_seq=a, final=b == len(recs))
            if len(recs) == 0:
                w.write_chunk(s, recs, ids, first_seq=0, final=True)


def simulate_to_capture(scenario, out, truth=True, log=print):
    """Run a scenario, write its capture and truth.json; return a summary dict."""
    t0 = time.monotonic()
    packets = make_traffic(scenario)
    t_traffic = time.monotonic() - t0
    full = simulate(scenario, packets)
    if truth:
        full, belongs, unexplained = label_victims(scenario, packets, full)
    t_sim = time.monotonic() - t0 - t_traffic
    write_capture(scenario, full, out)
    if truth:
        doc = _truth(scenario, packets, full, belongs, unexplained)
        tmp = Path(out) / ".truth.json.tmp"
        tmp.write_text(json.dumps(doc))
        os.chmod(tmp, 0o640)
        os.replace(tmp, Path(out) / "truth.json")
    drops = {nf.name: int((full.drop_nf == nf.index).sum()) for nf in scenario.nfs}
    summary = {
        "scenario": scenario.name, "packets": int(len(packets.time_ns)),
        "delivered": int((full.exit_ns >= 0).sum()), "dropped": drops,
        "victims": int(full.victim.sum()),
        "latency_ns": {"p50": float(np.percentile(full.latency_ns[full.exit_ns >= 0], 50))
                       if (full.exit_ns >= 0).any() else None,
                       "p99": float(np.percentile(full.latency_ns[full.exit_ns >= 0], 99))
                       if (full.exit_ns >= 0).any() else None},
        "faults": ({f.id: int(belongs[i].sum()) for i, f in enumerate(scenario.faults)}
                   if truth else None),
        "unexplained": int(unexplained.sum()) if truth else None,
        "seconds": {"traffic": round(t_traffic, 3), "simulate_and_label": round(t_sim, 3),
                    "total": round(time.monotonic() - t0, 3)},
    }
    return summary
