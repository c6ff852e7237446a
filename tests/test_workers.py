"""mscope.workers: how many threads, and a map over them."""
import threading
import time

import pytest

from mscope import workers
from mscope.errors import MscopeError


def test_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("MSCOPE_THREADS", "3")
    assert workers.count() == 3
    monkeypatch.delenv("MSCOPE_THREADS")
    assert 1 <= workers.count() <= workers.MAX_THREADS


def test_limit_overrides_the_environment_within_its_block(monkeypatch):
    monkeypatch.setenv("MSCOPE_THREADS", "3")
    with workers.limit(1):
        assert workers.count() == 1
        with workers.limit(None):
            assert workers.count() == 3
    assert workers.count() == 3


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_a_bad_count_is_one_error(monkeypatch, bad):
    monkeypatch.setenv("MSCOPE_THREADS", bad)
    with pytest.raises(MscopeError, match="MSCOPE_THREADS"):
        workers.count()


def test_map_keeps_order_and_uses_threads():
    names = []

    def slow(x):
        names.append(threading.current_thread().name)
        time.sleep(0.02 * (5 - x))          # the first ones finish last
        return x * x

    assert workers.map_in_threads(slow, range(5), 3) == [0, 1, 4, 9, 16]
    assert len(set(names)) > 1 and "MainThread" not in names
    names.clear()
    assert workers.map_in_threads(slow, [2], 3) == [4]
    assert names == ["MainThread"]          # one item: no thread started


def test_maps_inside_a_map_run_in_their_thread():
    def inner(x):
        return workers.count(), workers.map_in_threads(
            lambda y: threading.current_thread().name, range(3))

    def inner_asked(x):                     # even asked for 3 threads
        return workers.map_in_threads(lambda y: threading.current_thread().name, range(3), 3)

    got = workers.map_in_threads(inner, range(2), 2)
    for n, names in got:
        assert n == 1 and len(set(names)) == 1 and names[0] != "MainThread"
    for names in workers.map_in_threads(inner_asked, range(2), 2):
        assert len(set(names)) == 1 and names[0] != "MainThread"


def test_map_raises_the_first_error_after_every_item():
    done = []

    def f(x):
        if x == 1:
            raise OSError("item 1")
        time.sleep(0.05)
        done.append(x)
        return x

    with pytest.raises(OSError, match="item 1"):
        workers.map_in_threads(f, range(4), 2)
    assert sorted(done) == [0, 2, 3]


def test_spares_hand_each_thread_its_own_and_close_what_was_made():
    made, closed, held = [], [], set()
    lock = threading.Lock()

    def make():
        made.append(object())
        return made[-1]

    def use(_):
        with spares.taken() as x:
            with lock:
                assert x not in held             # no other thread holds it
                held.add(x)
            time.sleep(0.02)
            with lock:
                held.discard(x)
        return x

    with workers.Spares(make, closed.append) as spares:
        got = workers.map_in_threads(use, range(6), n=2)
    assert 1 <= len(made) <= 2                   # one per thread at most, reused
    assert set(got) <= set(made)
    assert closed == made
