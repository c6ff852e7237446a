"""Stage 1's two ways of expanding a stream: the compiled one
(mscope.analyzer._ingest) builds exactly the NFRecords of the numpy one,
array for array -- values, dtypes, shapes, zero-stride ports, read-only
flags, ids handed over as they are -- on simulated chains, hand-built
streams of every record kind, and damaged captures."""
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mscope.analyzer import ingest
from mscope.capture import (CAPTURE_F_ADDR, CAPTURE_F_NOIDS, CAPTURE_F_TX,
                            CAPTURE_OCC_UNKNOWN, CAPTURE_RECORD_DTYPE, CaptureWriter,
                            id_counts, open_capture)
from mscope.errors import CaptureFormatError

from test_capture import (_mutation, _nf_capture, damage_three_streams, damaged_copy,
                          make_records, mixed_chunk, write_three_streams)

_ingest = pytest.importorskip("mscope.analyzer._ingest",
                              reason="build it: cd analyzer && cythonize -i -3 _ingest.pyx")

SUITE = Path(__file__).resolve().parent.parent / "bench" / "scenarios"

FIELDS = ("rx_ids", "rx_ns", "rx_batch", "batch_ns", "batch_occupancy", "tx_ids", "tx_ns",
          "tx_port", "tx_batch", "rx_addr", "rx_port", "idle_ns", "silences", "spans", "lost")


def same_nf(x, y, ids=None):
    """NFRecords `x` (compiled) and `y` (numpy) are the same, field by
    field; with `ids`, the stream's ids: handed over in both or neither."""
    assert (x.name, x.nf_id) == (y.name, y.nf_id)
    for f in FIELDS:
        u, v = getattr(x, f), getattr(y, f)
        assert (u is None) == (v is None), (x.name, f)
        if u is None:
            continue
        where = (x.name, f)
        assert u.dtype == v.dtype and u.shape == v.shape, where
        assert u.strides == v.strides, where                 # zero-stride ports alike
        assert u.flags.writeable == v.flags.writeable, where
        assert u.flags.c_contiguous == v.flags.c_contiguous, where
        assert np.array_equal(u, v), where
        if ids is not None:
            assert (u is ids) == (v is ids), where


def same_view(a, b):
    assert a.names == b.names
    assert a.incomplete == b.incomplete and a.topology == b.topology
    for x, y in zip(a.nfs, b.nfs):
        same_nf(x, y)


def both_loads(path):
    """load() both ways: the same view, or the same error."""
    try:
        want = ingest.load(path, compiled=False)
    except CaptureFormatError as exc:
        with pytest.raises(CaptureFormatError) as got:
            ingest.load(path, compiled=True)
        assert str(got.value) == str(exc)
        return None
    got = ingest.load(path, compiled=True)
    same_view(got, want)
    return got


def both_streams(recs, ids, id_rec=None):
    """_one_stream both ways on one stream: the same NFRecords, or both
    None (times that go back)."""
    want = ingest._one_stream("nf", 7, recs, ids, id_rec, False)
    got = ingest._one_stream("nf", 7, recs, ids, id_rec, True)
    assert (got is None) == (want is None)
    if want is not None:
        same_nf(got, want, ids)
    return got


# --- whole captures ------------------------------------------------------------

@pytest.mark.parametrize("name", ["interrupt-drops", "dag-burst-drops"])
def test_simulated_scenarios(tmp_path, name):
    from mscope.sim.engine import simulate
    from mscope.sim.run import make_traffic, write_capture
    from mscope.sim.scenario import load_scenario
    sc = load_scenario(SUITE / f"{name}.json")
    write_capture(sc, simulate(sc, make_traffic(sc)), tmp_path / "cap")
    view = both_loads(tmp_path / "cap")
    assert view is not None and len(view.nfs) >= 3
    assert any(n.rx_addr is not None for n in view.nfs)            # the ingress's


def test_bench_capture_if_present():
    cap = Path("/work/anbench/s05/cap")
    if not cap.is_dir():
        pytest.skip("no bench capture here")
    both_loads(cap)


@pytest.mark.parametrize("corrupt", [(), (2,), (1, 4), (0, 1, 2, 3, 4, 5)])
def test_address_records_ports_and_corrupt_frames(tmp_path, corrupt):
    # _nf_capture: a source, an NF with address records and two out
    # ports, one with rx and tx records; damaged frames lose records
    _nf_capture(tmp_path / "cap", corrupt)
    view = both_loads(tmp_path / "cap")
    if not corrupt:
        lb = view.nf("lb")
        assert lb.rx_addr is not None and lb.tx_port.strides == (4,)
        assert view.nf("fw").rx_port.strides == (0,)


@pytest.mark.parametrize("damage", ["crc", "cut", "removed", "duplicate"])
def test_truncated_and_damaged_three_streams(tmp_path, damage):
    cap = tmp_path / "cap"
    write_three_streams(cap, codec="zstd", segment_bytes=2000)
    # "duplicate" is read whole (read_streams), not stream by stream
    damage_three_streams(cap, damage)
    both_loads(cap)


@pytest.fixture(scope="module")
def pristine_nf():
    with tempfile.TemporaryDirectory() as tmp:
        cap = Path(tmp) / "cap"
        _nf_capture(cap)
        return {p.name: p.read_bytes() for p in sorted(cap.iterdir())}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.lists(st.integers(0, 99), min_size=1, max_size=3),
       mutations=st.lists(_mutation, min_size=1, max_size=3))
def test_fuzzed_capture_loads_alike(pristine_nf, which, mutations):
    with damaged_copy(pristine_nf, which, mutations) as tmp:
        both_loads(tmp)


def test_batch_only_records(tmp_path):
    # every kind in one stream: rx, its address record, batch-only rx and
    # tx, tx; then a capture of batch-only records alone (refused alike)
    cap = tmp_path / "mixed"
    with CaptureWriter(cap) as w:
        h = w.add_host("h")
        src = w.add_stream(h, 0, "source")
        s = w.add_stream(h, 1, "bo")
        for k in range(3):
            recs, ids = mixed_chunk(5 * k, t0=1000 * k)
            recs["nf_id"] = 1
            w.write_chunk(s, recs, ids)
        sr = make_records(range(3), counts=3, nf_id=0, tx=True)
        w.write_chunk(src, sr, np.array([1000, 1001, 1002, 6000, 6001, 6002,
                                         11000, 11001, 11002], np.uint64))
    view = both_loads(cap)
    assert view.nf("bo").rx_ids.tolist() == [1000, 1001, 1002, 6000, 6001, 6002,
                                             11000, 11001, 11002]
    only = tmp_path / "only"
    with CaptureWriter(only) as w:
        s = w.add_stream(w.add_host("h"), 1, "bo")
        r = make_records(range(4), counts=[1, 1024, 7, 2])
        r["flags"] = CAPTURE_F_NOIDS | np.array([0, 1, 0, 1], np.uint8)
        w.write_chunk(s, r, np.zeros(0, np.uint64))
    assert both_loads(only) is None


def test_lcores_and_clocks_that_go_back(tmp_path):
    # one NF on two streams, and a stream whose times go back: the
    # general path, whichever expansion is asked for
    cap = tmp_path / "cap"
    with CaptureWriter(cap) as w:
        h = w.add_host("h")
        for lcore in (0, 1):
            s = w.add_stream(h, 1, "fw", lcore=lcore)
            r = make_records(range(6), t0=lcore * 50, counts=2, nf_id=1)
            r["flags"] = [0, 1, 0, 1, 0, 1]
            w.write_chunk(s, r, np.arange(12, dtype=np.uint64) + 100 * lcore + 1)
        s = w.add_stream(h, 2, "nat")
        r = make_records(range(4), counts=1, nf_id=2)
        r["time_ns"] = [50, 40, 60, 70]
        r["flags"] = [0, 1, 0, 1]
        w.write_chunk(s, r, np.array([1, 1, 2, 2], np.uint64))
    both_loads(cap)


def _times_capture(path, times):
    """fw -> nat, nat's four records (rx, tx, rx, tx) at `times`."""
    with CaptureWriter(path) as w:
        h = w.add_host("h")
        s = w.add_stream(h, 1, "fw")
        r = make_records(range(4), counts=1, nf_id=1)
        r["flags"] = [0, 1, 0, 1]
        w.write_chunk(s, r, np.array([1, 1, 2, 2], np.uint64))
        s = w.add_stream(h, 2, "nat")
        r = make_records(range(4), counts=1, nf_id=2)
        r["time_ns"] = times
        r["flags"] = [0, 1, 0, 1]
        w.write_chunk(s, r, np.array([1, 1, 2, 2], np.uint64))
    return path


@pytest.mark.parametrize("times, message", [
    ([150, 160, -5, 170], "nat: record seq 2 has time -5 ns, before the clock's zero"),
    ([150, 160, 2**62, 170], "nat: record seq 2 has time 4,611,686,018,427,387,904 ns, "
                             "1,281,024 h from another of the stream's (at most 24 h)"),
    ([3 * 10**9, 3 * 10**9 + 10, 10**9, 10**9 + 10],
     "nat: record seq 2 has time 1,000,000,000 ns, 2.0 s before the record before it"),
])
def test_times_that_cannot_be_times_are_one_line_errors(tmp_path, capsys, times, message):
    # a frame's checksum vouches only for what was written: a corrupt
    # time in a sound frame took the attribution down (an arrival before
    # the capture's start; a time grid of 168 TiB for a time 2**62 ns on)
    cap = _times_capture(tmp_path / "cap", times)
    assert both_loads(cap) is None                  # refused alike both ways
    with pytest.raises(CaptureFormatError) as e:
        ingest.load(cap)
    assert str(e.value) == f"{cap}: {message}: a corrupt record"
    # the same from the records held whole, out of stream order (the
    # general path), and from the command line, in one line
    data = open_capture(cap).read()
    lo = np.searchsorted(data.stream, data.stream[-1])
    o = np.r_[lo:len(data.records), 0:lo]
    counts = data.records["count"].astype(np.int64)[o]
    ids = np.concatenate([data.ids[data.id_offsets[i]:data.id_offsets[i + 1]] for i in o])
    swapped = type(data)(data.records[o], data.stream[o], np.concatenate([[0], np.cumsum(counts)]),
                         ids, data.losses, data.stream_info)
    with pytest.raises(CaptureFormatError, match=re.escape(message)):
        ingest.from_capture_data(swapped, open_capture(cap).manifest)
    from mscope.cli import main
    assert main(["diagnose", str(cap), "--slo-us", "100"]) == 1
    err = capsys.readouterr().err
    assert err == f"mscope: error: {cap}: {message}: a corrupt record\n"


def test_a_clock_that_steps_back_a_little_is_sorted(tmp_path):
    # under TIME_BACK_NS back within a stream: sorted, not refused
    view = both_loads(_times_capture(tmp_path / "cap", [10**6, 10**6 + 10, 10**6 // 2, 10**6 + 20]))
    assert view is not None


# --- one stream ----------------------------------------------------------------

def _stream(rng, n, kinds, max_count=6, ports=(0,), batch_share=0.3, addr_ok=True,
            big=0.0, idle=0.0, gap=300):
    """A stream of `n` records drawn from `kinds` (flags values), their
    ids, and an address record after some rx ones (seq + 1, same count
    unless not `addr_ok`); a share `idle` of the rx ones idle polls
    (count 0), times 1 to `gap` ns apart (some silences where that is
    more than ingest.SILENCE_NS)."""
    flags = rng.choice(np.array(kinds, np.uint8), n)
    count = rng.integers(0 if big else 1, max_count + 1, n).astype(np.uint32)
    large = rng.random(n) < big                         # split batches of up to 1024
    count[large] = rng.integers(5, 1025, int(large.sum()))
    count[(flags == 0) & (rng.random(n) < idle)] = 0
    step = np.where(rng.random(n) < batch_share, 0, rng.integers(1, gap, n))
    r = np.zeros(n, CAPTURE_RECORD_DTYPE)
    r["time_ns"] = 1000 + np.cumsum(step)
    r["seq"] = np.cumsum(rng.integers(1, 3, n))          # gaps: lost records
    r["nf_id"] = 7
    r["port"] = rng.choice(np.array(ports, np.uint16), n)
    r["flags"] = flags
    r["count"] = count
    r["occupancy"] = np.where(rng.random(n) < 0.2, CAPTURE_OCC_UNKNOWN,
                              rng.integers(0, 5000, n))
    if CAPTURE_F_ADDR in kinds:
        # an address record follows its rx record as the recorder writes it
        for i in np.flatnonzero(flags == CAPTURE_F_ADDR):
            if i and r["flags"][i - 1] == 0 and addr_ok:
                r["seq"][i] = r["seq"][i - 1] + 1
                r["count"][i] = r["count"][i - 1]
                r["time_ns"][i] = r["time_ns"][i - 1]
        r["time_ns"] = np.maximum.accumulate(r["time_ns"])
    ids = rng.integers(1, 2**64, int(id_counts(r).sum()), dtype=np.uint64)
    return r, ids


KIND_SETS = [
    [0], [CAPTURE_F_TX], [0, CAPTURE_F_TX], [0, CAPTURE_F_TX, CAPTURE_F_TX | CAPTURE_F_ADDR],
    [0, CAPTURE_F_ADDR, CAPTURE_F_TX], [0, CAPTURE_F_NOIDS, CAPTURE_F_TX],
    [CAPTURE_F_NOIDS, CAPTURE_F_NOIDS | CAPTURE_F_TX, 0],
    [0, CAPTURE_F_ADDR, CAPTURE_F_TX, CAPTURE_F_NOIDS, 5, 6, 7],
    [CAPTURE_F_ADDR], [CAPTURE_F_NOIDS, 0],
]


@pytest.mark.parametrize("kinds", KIND_SETS)
@pytest.mark.parametrize("ports", [(0,), (3,), (0, 1), (2, 5, 9)])
def test_random_streams(kinds, ports):
    rng = np.random.default_rng(len(kinds) * 31 + sum(ports))
    for n, batch_share, big, addr_ok, idle in [
            (1, 0, 0, True, 0), (2, 0.5, 0, True, 0), (300, 0.3, 0, True, 0),
            (500, 0.6, 0.05, True, 0), (200, 0.3, 0, False, 0), (400, 0.3, 0, True, 0.3)]:
        recs, ids = _stream(rng, n, kinds, ports=ports, batch_share=batch_share, big=big,
                            addr_ok=addr_ok, idle=idle, gap=60_000 if idle else 300)
        nf = both_streams(recs, ids)
        both_streams(recs, ids, ingest._id_offsets(recs))
        if idle and 0 in kinds and (CAPTURE_F_TX in kinds or len(kinds) == 1):
            assert len(nf.idle_ns) and len(nf.silences)


def test_idle_polls_and_silences():
    # rx0 tx idle . . rx1 (a batch) . . tx idle . . idle: the NF was free
    # after its first tx and idle poll, silent until rx1; in service from
    # rx1 to its tx however long that took; then free and silent again
    S = ingest.SILENCE_NS
    t = [0, 10, 20, 20 + S + 1, 20 + 5 * S, 21 + 5 * S, 22 + 6 * S]
    r = make_records(range(7), counts=1, nf_id=7)
    r["time_ns"] = t
    r["flags"] = [0, CAPTURE_F_TX, 0, 0, CAPTURE_F_TX, 0, 0]
    r["count"] = [1, 1, 0, 1, 1, 0, 0]
    ids = np.array([5, 5, 6, 6], np.uint64)
    nf = both_streams(r, ids)
    assert nf.idle_ns.tolist() == [20, 21 + 5 * S, 22 + 6 * S]
    assert nf.batch_ns.tolist() == [0, 20 + S + 1] and nf.rx_ids.tolist() == [5, 6]
    assert nf.silences.tolist() == [[20, 20 + S + 1], [21 + 5 * S, 22 + 6 * S]]
    assert ingest.silences(r).tolist() == nf.silences.tolist()


@pytest.mark.parametrize("idle_ns, silent", [(None, 2), (20_000, 2), (100_000, 0), (0, 2),
                                             ("often", None), (-5, None)])
def test_the_declared_idle_interval(tmp_path, idle_ns, silent):
    # rx/tx pairs 50 us apart, free in between: silences against 22 us
    # (the format's interval, or 20 us declared), none against 110 us
    # (100 us declared); a declaration that is not a u32 is refused
    cap = tmp_path / "cap"
    with CaptureWriter(cap) as w:
        s = w.add_stream(w.add_host("h"), 1, "fw",
                         extra=None if idle_ns is None else {"idle_ns": idle_ns})
        r = make_records(range(6), counts=1, nf_id=1)
        r["time_ns"] = [0, 100, 50_000, 50_100, 100_000, 100_100]
        r["flags"] = [0, CAPTURE_F_TX] * 3
        w.write_chunk(s, r, np.array([1, 1, 2, 2, 3, 3], np.uint64))
    if silent is None:
        with pytest.raises(CaptureFormatError, match="idle_ns is not a u32"):
            ingest.load(cap)
        return
    view = both_loads(cap)
    nf = view.nf("fw")
    assert len(nf.silences) == silent
    assert nf.idle_interval_ns == (idle_ns or 0)


@pytest.mark.parametrize("until, last", [(None, None), (300_000, [100_100, 300_000]),
                                         (110_000, None)])
def test_a_silence_to_the_end_of_the_recording(tmp_path, until, last):
    # the same NF, and its collector said its records ran on to `until`:
    # free since its last tx (100.1 us), silent to then -- a silence when
    # longer than 22 us, as one between two records would be
    cap = tmp_path / "cap"
    with CaptureWriter(cap) as w:
        s = w.add_stream(w.add_host("h"), 1, "fw", extra={"idle_ns": 20_000} | (
            {} if until is None else {"recorded_until_ns": until}))
        r = make_records(range(6), counts=1, nf_id=1)
        r["time_ns"] = [0, 100, 50_000, 50_100, 100_000, 100_100]
        r["flags"] = [0, CAPTURE_F_TX] * 3
        w.write_chunk(s, r, np.array([1, 1, 2, 2, 3, 3], np.uint64))
    nf = both_loads(cap).nf("fw")
    assert len(nf.silences) == 2 + (last is not None)
    if last is not None:
        assert nf.silences[-1].tolist() == last
    assert nf.spans[0, 2] == max(100_100, until or 0)
    # and it was still stopped when the recording ended (the summary says
    # so of a stop that ends there), only where that silence was added
    assert nf.stopped_at_end == (last is not None)


def test_address_records_paired_by_seq():
    # address records not each right after their rx record (one's rx lost,
    # one with another count): paired by seq, as the numpy version does
    rng = np.random.default_rng(3)
    recs, ids = _stream(rng, 400, [0, CAPTURE_F_ADDR, CAPTURE_F_TX])
    a = np.flatnonzero(recs["flags"] == CAPTURE_F_ADDR)
    assert len(a) > 10
    got = both_streams(recs, ids)
    assert got.rx_addr is not None
    keep = np.ones(len(recs), bool)
    keep[a[3] - 1] = False                      # its rx record is lost
    r2 = recs[keep]
    ids2 = ids[np.repeat(keep, id_counts(recs))]
    assert both_streams(r2, ids2).rx_addr is not None
    # and every address record right after its rx one: words as they are
    r3 = make_records(range(6), counts=[2, 2, 1, 3, 3, 1])
    r3["flags"] = [0, CAPTURE_F_ADDR, CAPTURE_F_TX] * 2
    r3["time_ns"] = [10, 10, 20, 30, 30, 40]
    ids3 = np.arange(1, 13, dtype=np.uint64)
    got = both_streams(r3, ids3)
    assert got.rx_addr.tolist() == [3, 4, 9, 10, 11]
    assert got.rx_ids.tolist() == [1, 2, 6, 7, 8]


def test_one_kind_streams_hand_their_ids_over():
    r = make_records(range(5), counts=[1, 4, 2, 5, 3], tx=True)
    ids = np.arange(1, 16, dtype=np.uint64)
    got = both_streams(r, ids)
    assert got.tx_ids is ids and len(got.rx_ids) == 0
    r["flags"] = 0
    got = both_streams(r, ids)
    assert got.rx_ids is ids and got.rx_port.strides == (0,)
    assert not got.rx_port.flags.writeable


def test_times_that_go_back_are_left_to_the_general_path():
    r = make_records(range(4), counts=1)
    r["time_ns"] = [10, 20, 15, 30]
    assert both_streams(r, np.arange(1, 5, dtype=np.uint64)) is None
    assert _ingest.expand_stream(r, np.arange(1, 5, dtype=np.uint64)) is None


def test_kernel_declines_what_it_cannot_trust():
    # ids other than the records claim (too few, too many), no records:
    # None, and the numpy version decides
    r = make_records(range(3), counts=[2, 3, 1])
    r["flags"] = [0, 1, 0]
    ids = np.arange(1, 7, dtype=np.uint64)
    assert _ingest.expand_stream(r, ids) is not None
    assert _ingest.expand_stream(r, ids[:5]) is None
    assert _ingest.expand_stream(r, np.arange(1, 8, dtype=np.uint64)) is None
    assert _ingest.expand_stream(r[:0], ids[:0]) is None
    r["count"][1] = 0xFFFFFFFF                          # a hostile count
    assert _ingest.expand_stream(r, ids) is None
    r["flags"][1] = CAPTURE_F_NOIDS                     # no ids whatever its count
    assert _ingest.expand_stream(r, ids[:3]) is not None
    # records of another layout are refused by the buffer check
    with pytest.raises(ValueError):
        _ingest.expand_stream(np.zeros(3, [("a", "<i8"), ("b", "<i8")]), ids)


def test_strided_or_other_dtype_inputs_take_the_numpy_path():
    rng = np.random.default_rng(9)
    recs, ids = _stream(rng, 50, [0, CAPTURE_F_TX])
    both_streams(recs, ids)
    wide = np.zeros(2 * len(ids), np.uint64)
    wide[::2] = ids
    both_streams(recs, wide[::2])                    # not contiguous
    both_streams(recs, ids.astype(">u8"))            # another byte order


# --- choosing the path ---------------------------------------------------------

def test_environment_forces_numpy(monkeypatch):
    monkeypatch.setenv(ingest.INGEST_ENV, "numpy")
    assert ingest._kernel(None) is None
    assert ingest._kernel(True) is _ingest
    monkeypatch.setenv(ingest.INGEST_ENV, "")
    assert ingest._kernel(None) is _ingest
    assert ingest._kernel(False) is None


def test_numpy_path_works_without_the_kernel(tmp_path, monkeypatch):
    # as on a machine without a compiler: the numpy version throughout,
    # and asking for the compiled one says how to build it
    _nf_capture(tmp_path / "cap")
    want = ingest.load(tmp_path / "cap", compiled=True)
    monkeypatch.setattr(ingest, "_ingest", None)
    same_view(want, ingest.load(tmp_path / "cap"))
    with pytest.raises(ImportError, match="cythonize -i -3 analyzer/_ingest.pyx"):
        ingest.load(tmp_path / "cap", compiled=True)


def test_from_capture_data_both_ways(tmp_path):
    _nf_capture(tmp_path / "cap")
    c = open_capture(tmp_path / "cap")
    data = c.read()
    same_view(ingest.from_capture_data(data, c.manifest, compiled=True),
              ingest.from_capture_data(data, c.manifest, compiled=False))
