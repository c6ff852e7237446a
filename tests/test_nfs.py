"""The sample NFs (csrc/nfs/, mscope-nf) as real DPDK secondaries between
the testbed's source and sink: each forwards, and its work is real (NAT
rewriting, ACL drops, per-flow counters, AES-GCM, Maglev hashing).  Each
test runs a short chain with `run_testbed` (frames dumped at source and
sink) and checks the frames, the NF's own report and the capture."""
import csv
import ipaddress
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import CSRC, TESTS_C, requires_dpdk


def _setup_hugepages():
    """As install.sh: 256 x 2 MiB pages and hugetlbfs on /dev/hugepages.
    Returns None, or why the live tests cannot run."""
    from mscope.testbed import check_hugepages
    try:
        with open("/proc/sys/vm/nr_hugepages") as f:
            have = int(f.read())
        if have < 256:
            with open("/proc/sys/vm/nr_hugepages", "w") as f:
                f.write("256")
        os.makedirs("/dev/hugepages", exist_ok=True)
        if subprocess.run(["mountpoint", "-q", "/dev/hugepages"]).returncode != 0:
            subprocess.run(["mount", "-t", "hugetlbfs", "nodev", "/dev/hugepages"], check=True)
        check_hugepages(128)
    except Exception as e:        # not root, no hugetlbfs in this kernel, ...
        return f"no hugepages for a DPDK primary/secondary chain: {e}"
    return None


@pytest.fixture(scope="session")
def hugepages():
    why = _setup_hugepages()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="session")
def testbed_built():
    from mscope import paths
    missing = [p for p in [paths.sample_nf()] + [paths.testbed_program(r) for r in
                                                 ("primary", "source", "sink", "hog")]
               if not p.exists()]
    if missing:
        pytest.skip(f"{missing[0]} not built (make -C csrc OUT={paths.native_dir()}; needs "
                    f"libssl-dev)")


def scenario(nfs, links, rate_mpps=0.05, duration_ms=40, flows=300, faults=(), slo_us=20000,
             **traffic):
    return {"name": "nf-test", "seed": 5, "duration_ms": duration_ms,
            "objective": {"latency_us": slo_us},
            "nfs": [{"name": n, "type": t, "service_ns": 200, "batch": 32, "queue": 1024}
                    for n, t in nfs],
            "links": links, "faults": list(faults),
            "traffic": {"rate_mpps": rate_mpps, "flows": flows, **traffic}}


def run_chain(tmp_path, sc, **kw):
    from mscope.testbed import run_testbed
    out = tmp_path / "cap"
    summary = run_testbed(sc, out, dumps=True, log=lambda *a: None, **kw)
    from mscope.testbed.schedule import read_dump
    return summary, read_dump(out / "source.dump"), read_dump(out / "sink.dump"), out


def tuples(fields):
    return list(zip(fields["src"].tolist(), fields["dst"].tolist(), fields["sport"].tolist(),
                    fields["dport"].tolist(), fields["proto"].tolist()))


def ip_ids(dump):
    """IPv4 identification of each dumped frame."""
    b = dump["bytes"].astype(np.int64)
    return (b[:, 18] << 8) | b[:, 19]


def ipv4_header_ok(dump):
    """Each frame's IPv4 header checksum verifies (ones' complement sum 0xffff)."""
    hdr = dump["bytes"][:, 14:34].astype(np.uint32)
    words = (hdr[:, 0::2] << 8) | hdr[:, 1::2]
    s = words.sum(axis=1)
    while (s >> 16).any():
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


pytestmark = [requires_dpdk, pytest.mark.usefixtures("hugepages", "testbed_built")]


def test_nat_rewrites_source_address_and_port_per_flow(tmp_path):
    from mscope.analyzer import load
    from mscope.testbed.schedule import frame_fields

    sc = scenario([("nat", "nat")], [["source", "nat"], ["nat", "sink"]])
    summary, src, sink, cap = run_chain(tmp_path, sc, nf_args={"nat": ["--nat-ip", "203.0.113.7"]})
    rep = summary["reports"]["nat"]
    assert len(src) > 1000 and len(sink) == len(src), "one path, no drops: every frame arrives"
    s, d = frame_fields(src), frame_fields(sink)
    ext = int(ipaddress.IPv4Address("203.0.113.7"))
    assert (d["src"] == ext).all()
    assert (s["src"] >> 24 == 10).all()                      # 10.0.0.0/8 before the NAT
    # Order is kept on a single path: frame i at the sink is frame i of the source.
    for f in ("dst", "dport", "proto", "length"):
        assert (d[f] == s[f]).all(), f
    # One external port per flow, distinct across flows.
    port_of = {}
    for t, p in zip(tuples(s), d["sport"].tolist()):
        assert port_of.setdefault(t, p) == p, "a flow changed external port"
    assert len(set(port_of.values())) == len(port_of) == rep["nat_flows"]
    assert rep["translated"] == len(src) and rep["table_full"] == 0
    assert ipv4_header_ok(sink).all(), "IPv4 header checksum recomputed"
    # The capture: the nat's tx carries the source's ids although the
    # headers changed (the rx stamp), and the sink sees the same ids.
    view = load(cap)
    src_ids = np.sort(view.nf("source").tx_ids)
    assert np.array_equal(np.sort(view.nf("nat").tx_ids), src_ids)
    assert np.array_equal(np.sort(view.nf("egress").rx_ids), src_ids)


def test_no_record_forwards_every_packet_and_writes_no_ring(tmp_path):
    """--no-record (the baseline of bench/overhead.py's nf_chain case): nat
    still forwards and rewrites every packet, but opens no ring and records
    nothing; the source and the sink around it still record, and the ids
    still hold from source to sink (the stamp rides in the mbuf)."""
    from mscope.analyzer import load

    sc = scenario([("nat", "nat")], [["source", "nat"], ["nat", "sink"]])
    summary, src, sink, cap = run_chain(tmp_path, sc, nf_args={"nat": ["--no-record"]})
    rep = summary["reports"]["nat"]
    assert rep["recording"] is False and rep["records"] == rep["drop_records"] == 0
    assert len(src) > 1000 and len(sink) == len(src)
    assert rep["rx"] == rep["tx"][0] == rep["translated"] == len(src)
    assert rep["idle_polls"] > 0 and sum(rep["drop_full"]) == rep["drop_nf"] == 0
    view = load(cap)
    assert "nat" not in view.names and {"source", "egress"} <= set(view.names)
    streams = json.loads((cap / "manifest.json").read_text())["streams"]
    assert "nat" not in [st["nf_name"] for st in streams], "the collector saw no ring of nat's"
    assert np.array_equal(np.sort(view.nf("egress").rx_ids), np.sort(view.nf("source").tx_ids))


def test_firewall_drops_the_denied_tuples_and_passes_the_rest(tmp_path):
    from mscope.analyzer import load
    from mscope.testbed.schedule import frame_fields

    deny = "deny:udp:10.0.0.0/9:any:any:any"
    sc = scenario([("fw", "firewall")], [["source", "fw"], ["fw", "sink"]], tcp_share=0.5)
    summary, src, sink, cap = run_chain(tmp_path, sc, nf_args={"fw": ["--rule", deny]})
    rep = summary["reports"]["fw"]
    s, d = frame_fields(src), frame_fields(sink)
    net = ipaddress.IPv4Network("10.0.0.0/9")
    lo, hi = int(net.network_address), int(net.broadcast_address)
    denied = (s["proto"] == 17) & (s["src"] >= lo) & (s["src"] <= hi)
    assert 0 < denied.sum() < len(src)
    assert rep["denied"] == denied.sum() and rep["allowed"] == (~denied).sum()
    assert rep["rules"][0] == {"rule": deny, "hits": int(denied.sum())}
    passed = (d["proto"] == 17) & (d["src"] >= lo) & (d["src"] <= hi)
    assert not passed.any()
    assert len(sink) == (~denied).sum()
    assert tuples(d) == [t for t, x in zip(tuples(s), denied) if not x]
    # In the capture a denied packet is received and never sent: dropped inside.
    view = load(cap)
    fw = view.nf("fw")
    assert len(fw.rx_ids) == len(src) and len(fw.tx_ids) == (~denied).sum()


def test_monitor_counts_packets_and_bytes_per_flow(tmp_path):
    from mscope.testbed.schedule import frame_fields

    dump = tmp_path / "flows.csv"
    sc = scenario([("mon", "monitor")], [["source", "mon"], ["mon", "sink"]])
    summary, src, sink, _ = run_chain(tmp_path, sc, nf_args={"mon": ["--monitor-dump", dump]})
    rep = summary["reports"]["mon"]
    s = frame_fields(src)
    want = {}
    for t, length in zip(tuples(s), src["pkt_len"].tolist()):
        p, b = want.get(t, (0, 0))
        want[t] = (p + 1, b + length)
    got = {}
    with open(dump) as f:
        for row in csv.DictReader(f):
            t = (int(ipaddress.IPv4Address(row["src"])), int(ipaddress.IPv4Address(row["dst"])),
                 int(row["sport"]), int(row["dport"]), int(row["proto"]))
            got[t] = (int(row["packets"]), int(row["bytes"]))
    assert got == want
    assert rep["flows"] == len(want) and rep["packets"] == len(src) == len(sink)
    assert rep["top_flow"]["packets"] == max(p for p, _ in want.values())


def test_vpn_encrypts_with_aes_gcm_and_decrypts_back(tmp_path):
    """enc splits flows over two links: straight to the sink (ciphertext) and
    through dec (decrypted) to the sink.  The ids hold through both."""
    from mscope.analyzer import load
    from mscope.testbed.schedule import frame_fields

    sc = scenario([("enc", "vpn"), ("dec", "vpn")],
                  [["source", "enc"], ["enc", "dec"], ["enc", "sink"], ["dec", "sink"]])
    summary, src, sink, cap = run_chain(tmp_path, sc, nf_args={"dec": ["--vpn-mode", "decrypt"]})
    assert summary["reports"]["dec"]["auth_fail"] == 0
    assert len(sink) == len(src)
    s, d = frame_fields(src), frame_fields(sink)
    # vpn keeps the headers but lengths and checksums: match frames by
    # 5-tuple and IPv4 id
    by_key = {k: i for i, k in enumerate(zip(tuples(s), ip_ids(src).tolist()))}
    assert len(by_key) == len(src)
    # sink ports follow sink's in-links in file order: enc -> sink is port 0, dec -> sink 1
    sealed = opened = 0
    for j, k in enumerate(zip(tuples(d), ip_ids(sink).tolist())):
        i = by_key[k]
        if sink["port"][j] == 1:                  # through dec: the original frame again
            n = min(int(src["pkt_len"][i]), 128)
            assert sink["pkt_len"][j] == src["pkt_len"][i]
            assert bytes(sink["bytes"][j, :n]) == bytes(src["bytes"][i, :n])
            opened += 1
        else:                                     # straight from enc: sealed
            assert sink["pkt_len"][j] == src["pkt_len"][i] + 24
            assert d["length"][j] == s["length"][i] + 24
            l4 = 14 + 20 + (8 if s["proto"][i] == 17 else 32)
            n = min(int(src["pkt_len"][i]), 128)
            if n - l4 >= 16:
                assert bytes(sink["bytes"][j, l4:n]) != bytes(src["bytes"][i, l4:n])
            sealed += 1
    assert sealed > 100 and opened > 100
    assert ipv4_header_ok(sink).all()
    view = load(cap)
    src_ids = np.sort(view.nf("source").tx_ids)
    assert np.array_equal(np.sort(view.nf("egress").rx_ids), src_ids), \
        "ids carried through encryption (shared dynfield, trusted upstream stamps)"


def test_lb_maglev_spreads_flows_and_keeps_each_on_one_output(tmp_path):
    from mscope.testbed.schedule import frame_fields

    sc = scenario([("lb", "lb"), ("m0", "monitor"), ("m1", "monitor"), ("m2", "monitor")],
                  [["source", "lb"], ["lb", "m0"], ["lb", "m1"], ["lb", "m2"],
                   ["m0", "sink"], ["m1", "sink"], ["m2", "sink"]], flows=600)
    summary, src, sink, _ = run_chain(tmp_path, sc)
    rep = summary["reports"]["lb"]
    assert len(sink) == len(src)
    out_of = {}
    for t, port in zip(tuples(frame_fields(sink)), sink["port"].tolist()):
        assert out_of.setdefault(t, port) == port, f"flow {t} left on two outputs"
    per_out = np.bincount(list(out_of.values()), minlength=3)
    assert (per_out > 0.2 * len(out_of)).all() and (per_out < 0.47 * len(out_of)).all(), per_out
    slots = [b["slots"] for b in rep["backends"]]
    assert max(slots) - min(slots) <= 1 and sum(slots) == rep["table"]
    assert [b["packets"] for b in rep["backends"]] == np.bincount(
        sink["port"], minlength=3).tolist()


def test_maglev_table_balance_and_disruption(cbuild):
    exe = cbuild("test_maglev", [TESTS_C / "test_maglev.c", CSRC / "nfs" / "maglev.c"], dpdk=True)
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_bug_fault_slows_only_the_named_flows_in_its_window(tmp_path):
    """A bug fault at nat: packets from 10.0.0.0/9 cost 20x the service time
    between 10 and 30 ms; the others, and the same flows outside the window,
    do not."""
    from mscope.analyzer import load

    sc = scenario([("nat", "nat")], [["source", "nat"], ["nat", "sink"]], duration_ms=40,
                  faults=[{"id": "b", "kind": "bug", "nf": "nat", "flows": "10.0.0.0/9",
                           "from_ms": 10, "to_ms": 30, "slowdown": 20}])
    sc["nfs"][0]["service_ns"] = 1000
    summary, _, _, cap = run_chain(tmp_path, sc)
    rep = summary["reports"]["nat"]
    t0 = summary["t0_ns"]
    nat = load(cap).nf("nat")
    src = (nat.rx_addr >> np.uint64(32)).astype(np.int64)
    named = (src >> 23) == (10 << 1)                       # 10.0.0.0/9
    inside = (nat.rx_ns >= t0 + 10_000_000) & (nat.rx_ns < t0 + 30_000_000)
    hit = named & inside
    # the NF counts a bug packet from its own clock read just before the rx record
    assert abs(rep["bug_packets"] - int(hit.sum())) <= 32 and rep["bug_packets"] > 50
    # residence in nat (rx -> tx, same ids) per batch: slow batches are the ones with named flows
    order = np.argsort(nat.tx_ids)
    tx_ns = nat.tx_ns[order][np.searchsorted(nat.tx_ids[order], nat.rx_ids)]
    stay = tx_ns - nat.rx_ns
    base = np.median(stay[~named & ~inside])
    assert np.median(stay[hit]) > 5 * base
    assert np.median(stay[named & ~inside]) < 3 * base
