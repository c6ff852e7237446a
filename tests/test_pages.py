"""mscope.analyzer.pages: freed large arrays' pages kept for the next
ones, the data intact, the handler in the workers' threads, the bound,
and a diagnosis the same byte for byte."""
import json
import resource

import numpy as np
import pytest

from mscope import workers
from mscope.analyzer import pages
from mscope.cli import main
from mscope.sim.run import simulate_to_capture
from mscope.sim.scenario import load_scenario

_pages = pytest.importorskip("mscope.analyzer._pages",
                             reason="analyzer/_pages.pyx is not built")

MIB = 1 << 20


def _handler_name():
    try:
        from numpy._core.multiarray import get_handler_name
    except ImportError:
        from numpy.core.multiarray import get_handler_name
    return get_handler_name()


def _faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.fixture(autouse=True)
def _on(monkeypatch):
    monkeypatch.delenv(pages.ENV, raising=False)


def test_the_handler_is_numpys_within_the_block_only(monkeypatch):
    before = _handler_name()
    with pages.kept_pages():
        assert _handler_name() == "mscope_kept_pages"
        with pages.kept_pages():
            assert _handler_name() == "mscope_kept_pages"
        assert _handler_name() == "mscope_kept_pages"
    assert _handler_name() == before
    monkeypatch.setenv(pages.ENV, "0")
    with pages.kept_pages():
        assert _handler_name() == before


def test_a_freed_array_serves_the_next_without_new_pages():
    with pages.kept_pages():
        a = np.empty(64 * MIB, np.uint8)
        a.fill(7)                               # every page resident
        del a
        assert pages.stats()["kept"] >= 64 * MIB
        s0, f0 = pages.stats(), _faults()
        b = np.empty(64 * MIB, np.uint8)
        b.fill(9)
        faults = _faults() - f0
        assert pages.stats()["reused"] - s0["reused"] >= 64 * MIB
        # 16,384 pages written, hardly any of them faulted in
        assert faults < 1000
        assert (b == 9).all()
        del b
    assert pages.stats()["kept"] == 0           # the block's end gave them back


def test_ranges_move_side_by_side_into_a_larger_array_data_intact():
    with pages.kept_pages():
        xs = [np.full(8 * MIB, i + 1, np.int64) for i in range(2)]   # 2 x 64 MiB
        del xs
        s0 = pages.stats()
        c = np.empty(24 * MIB, np.int64)        # 192 MiB: both, and 64 fresh
        assert pages.stats()["reused"] - s0["reused"] >= 128 * MIB
        c[:] = np.arange(len(c))
        assert (c == np.arange(len(c))).all()


def test_fresh_pages_of_an_empty_array_come_resident():
    # np.empty's new pages are faulted in at once, not one by one as written
    with pages.kept_pages():
        pages.release()
        a = np.empty(32 * MIB, np.uint8)
        f0 = _faults()
        a.fill(3)                                   # 8,192 pages
        assert _faults() - f0 < 1000
        del a


def test_zeros_are_zero_after_dirty_pages_were_kept():
    with pages.kept_pages():
        a = np.full(16 * MIB, -1, np.int64)
        del a
        z = np.zeros(16 * MIB, np.int64)
        assert not z.any()
        z2 = np.zeros((4 * MIB, 4), np.float64)
        assert not z2.any()


def test_resize_keeps_the_data_across_sizes():
    with pages.kept_pages():
        small = np.arange(1000, dtype=np.int64)
        small.resize(4 * MIB, refcheck=False)           # malloc'd -> mapped
        assert (small[:1000] == np.arange(1000)).all() and not small[1000:].any()
        big = np.arange(4 * MIB, dtype=np.int64)
        big.resize(8 * MIB, refcheck=False)             # mapped, grown
        assert (big[:4 * MIB] == np.arange(4 * MIB)).all()
        big.resize(3 * MIB, refcheck=False)             # mapped, shrunk
        assert (big == np.arange(3 * MIB)).all()
        big.resize(100, refcheck=False)                 # mapped -> malloc'd
        assert (big == np.arange(100)).all()


def test_untouched_arrays_are_not_kept():
    # an array whose pages were not all written would bring its untouched
    # pages back as if they were free to use: it is unmapped instead.
    # (np.zeros: the kernel's zero pages, faulted in only as written;
    # np.empty's fresh pages are faulted in when it is made.)
    with pages.kept_pages():
        pages.release()
        s0 = pages.stats()
        a = np.zeros(32 * MIB, np.uint8)
        a[:4096] = 1
        del a
        s1 = pages.stats()
        assert s1["kept"] == 0
        assert s1["untouched"] - s0["untouched"] >= 31 * MIB


def test_kept_pages_go_before_fresh_ones_would_raise_the_peak():
    with pages.kept_pages():
        a = np.ones(64 * MIB, np.uint8)
        del a
        assert pages.stats()["kept"] >= 64 * MIB
        # 128 MiB of new pages: with the 64 kept the process would hold
        # more than it ever did, so the kept ones go first
        z = np.zeros(128 * MIB, np.uint8)
        z[::4096] = 1
        assert pages.stats()["kept"] == 0
        assert pages.stats()["high"] >= 64 * MIB    # the first was resident
        del z


def test_release_lets_the_kept_pages_go():
    with pages.kept_pages():
        a = np.ones(16 * MIB, np.uint8)
        del a
        assert pages.stats()["kept"] >= 16 * MIB
        pages.release()
        assert pages.stats()["kept"] == 0


def test_a_diagnosis_runs_through_it_and_puts_numpys_handler_back(tmp_path, monkeypatch):
    from mscope import diagnose as D
    seen = []
    real = D.StageLog.start

    def start(self, key, msg):
        seen.append(_handler_name())
        return real(self, key, msg)

    monkeypatch.setattr(D.StageLog, "start", start)
    before = _handler_name()
    cap = _capture(tmp_path)
    D.diagnose(cap, slo_us=150)
    assert seen and set(seen) == {"mscope_kept_pages"}    # every stage
    assert _handler_name() == before and pages.stats()["kept"] == 0
    with pytest.raises(D.MscopeError):
        D.diagnose(cap, slo_us=-1)
    assert _handler_name() == before                      # after an error too


def test_worker_threads_allocate_through_it():
    with pages.kept_pages():
        names = workers.map_in_threads(lambda _: _handler_name(), range(4), n=2)
    assert names == ["mscope_kept_pages"] * 4


def _capture(tmp_path):
    """A chain of three with a stall and a burst: every stage has work."""
    nfs = [{"name": n, "type": "firewall", "service_ns": s, "batch": 32, "queue": 1024}
           for n, s in (("fw", 200), ("nat", 300), ("vpn", 250))]
    doc = {"name": "kept", "seed": 5, "duration_ms": 30, "objective": {"latency_us": 150},
           "nfs": nfs,
           "links": [["source", "fw"], ["fw", "nat"], ["nat", "vpn"], ["vpn", "sink"]],
           "traffic": {"rate_mpps": 1.5, "flows": 500, "flow_sizes": "pareto",
                       "src_prefix": "10.0.0.0/8", "dst_prefix": "192.168.0.0/16"},
           "faults": [{"id": "i1", "kind": "interrupt", "nf": "nat", "at_ms": 8,
                       "duration_us": 400},
                      {"id": "b1", "kind": "burst", "at_ms": 20, "duration_us": 500,
                       "rate_mpps": 6, "flows": "10.9.0.0/16"}]}
    f = tmp_path / "kept.json"
    f.write_text(json.dumps(doc))
    simulate_to_capture(load_scenario(f), tmp_path / "cap", truth=False,
                        log=lambda *a, **k: None)
    return tmp_path / "cap"


def test_a_diagnosis_is_the_same_through_the_cache(tmp_path, monkeypatch):
    # every array of 4 KiB or more through the cache: a small capture's
    # diagnosis goes through it array after array, and must not change
    cap = _capture(tmp_path)
    outs = []
    before = _pages.set_large(4096)
    try:
        for keep in ("0", "1"):
            monkeypatch.setenv(pages.ENV, keep)
            outs.append(tmp_path / f"k{keep}.json")
            s0 = pages.stats()
            assert main(["diagnose", str(cap), "--threads", "2", "--json", str(outs[-1])]) == 0
            reused = pages.stats()["reused"] - s0["reused"]
            assert (reused > 0) == (keep == "1")
    finally:
        _pages.set_large(before)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert json.loads(outs[0].read_text())["victims"]
