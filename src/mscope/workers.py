"""Threads for the parts of a diagnosis that can run side by side.

The capture's frames decode, and the NFs' queue timelines build, each on
their own: zstd, crc32, numpy's large operations and the analyzer's
kernels let go of the GIL, so threads use the machine's CPUs without a
copy of the data per process.  Each part writes only its own output, so
the results are the same with one thread or several.

How many: as :func:`limit` says (``mscope diagnose --threads``), else
``MSCOPE_THREADS``, else one per CPU this process may run on, at most
:data:`MAX_THREADS`.
"""
import contextlib
import contextvars
import ctypes
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

from mscope.errors import MscopeError

__all__ = ["MAX_THREADS", "Spares", "count", "limit", "map_in_threads"]

#: The most threads used when MSCOPE_THREADS does not say: the stages
#: split into a handful of parts (streams, NFs), so more would idle.
MAX_THREADS = 4


_limit = None


@contextlib.contextmanager
def limit(n):
    """Use `n` threads (>= 1) within the block; None: as before it."""
    global _limit
    before, _limit = _limit, (None if n is None else max(1, int(n)))
    try:
        yield
    finally:
        _limit = before


#: Set in the threads map_in_threads starts: their own maps run in them
#: alone (the CPUs are taken already, and each thread would hold scratch).
_inside = threading.local()


def count() -> int:
    """Threads to use: :func:`limit`'s, else MSCOPE_THREADS, else the CPUs
    usable, at most MAX_THREADS; 1 in a thread of :func:`map_in_threads`.
    MscopeError on an MSCOPE_THREADS that is not a whole number >= 1."""
    if getattr(_inside, "yes", False):
        return 1
    if _limit is not None:
        return _limit
    v = os.environ.get("MSCOPE_THREADS", "").strip()
    if v:
        try:
            n = int(v)
        except ValueError:
            n = 0
        if n < 1:
            raise MscopeError(f"MSCOPE_THREADS={v!r}: not a whole number of threads >= 1")
        return n
    cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1)
    return max(1, min(MAX_THREADS, cpus))


def map_in_threads(fn, items, n=None) -> list:
    """``[fn(x) for x in items]``, by up to `n` threads (:func:`count`);
    in the caller's thread alone when one would do, or when that is a
    thread of this map's already.  The first exception
    an item raised is raised here, once every item has finished.  With
    threads, the heap's free pages go back to the kernel after."""
    items = list(items)
    n = min(count() if n is None or getattr(_inside, "yes", False) else n, len(items))
    if n <= 1:
        return [fn(x) for x in items]
    _one_arena()
    with ThreadPoolExecutor(n, thread_name_prefix="mscope", initializer=_mark) as ex:
        # each in a copy of the caller's context: numpy's memory handler
        # (mscope.analyzer.pages) is a context variable
        futures = [ex.submit(contextvars.copy_context().run, fn, x) for x in items]
    _trim()
    return [f.result() for f in futures]


class Spares:
    """Things the threads of a map each need one of at a time (scratch
    arrays, open files): :meth:`taken` hands one no other thread holds,
    made by `make()` when none is free and kept for the next taker;
    `close(x)` for each made, at :meth:`close` (or the ``with`` block's
    end)."""

    def __init__(self, make, close=None):
        self._make, self._close = make, close
        self._free, self._made = queue.SimpleQueue(), []

    @contextlib.contextmanager
    def taken(self):
        try:
            x = self._free.get_nowait()
        except queue.Empty:
            x = self._make()
            self._made.append(x)
        try:
            yield x
        finally:
            self._free.put(x)

    def close(self):
        if self._close is not None:
            for x in self._made:
                self._close(x)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _trim():
    """Give the kernel back the free pages inside the heap (malloc_trim):
    what the threads freed lies between what they keep, where glibc's own
    trimming (the heap's top only) never reaches.  bench/analyze.py: RSS
    after the read stage 570 -> 521 MiB, its growth over the run 2.01x ->
    1.99x the decoded capture, run time the same."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _mark():
    _inside.yes = True


_M_ARENA_MAX = -8                   # glibc's mallopt parameter (malloc.h)
_arena_set = False


def _one_arena():
    """Have glibc's malloc serve every thread from one arena, once.  A
    thread of its own arena kept what the thread freed: bench/analyze.py's
    RSS growth went from 1.99x to 2.19x the decoded capture with the queue
    timelines in two threads (1.99x with one arena, no slower: the
    threads allocate a few large arrays, seldom)."""
    global _arena_set
    if _arena_set:
        return
    _arena_set = True
    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):   # not glibc: its own allocator's ways
        pass

