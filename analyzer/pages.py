"""Freed large arrays' pages kept for the next ones, while a diagnosis runs.

A diagnosis makes and drops large arrays stage after stage: the decoded
streams, the hop arrays, the attribution's per-hop scores.  Each new one
is a fresh mapping whose every page the kernel faults in and zeroes, and
on a VM whose host reclaims the guest's free memory (virtio-balloon free
page reporting, as on this project's machines) a page the guest gave back
costs a host fault as well: bench/analyze.py spent a quarter of its time
in the kernel.

:func:`kept_pages` makes numpy allocate its large arrays through
mscope.analyzer._pages, which keeps a freed array's pages for the next
large array instead of unmapping them, bounded so that the process's
peak resident memory stays what it was (see that module).  At the end of
the outermost block every kept page goes back to the kernel.  The
diagnosis is the same array for array: only where the memory comes from
changes.

``MSCOPE_KEEP_PAGES=0`` turns it off (numpy's own handler); so does a
build without the compiled module (``cythonize -i -3 analyzer/_pages.pyx``)
or a numpy older than 1.22.
"""
import contextlib
import os

import numpy as np

try:
    from mscope.analyzer import _pages
except ImportError:                 # not built: numpy's own handler
    _pages = None

__all__ = ["kept_pages", "release", "stats", "ENV"]

#: Set to 0 to leave numpy's memory handler alone.
ENV = "MSCOPE_KEEP_PAGES"


def _usable():
    if _pages is None or os.environ.get(ENV, "").strip() == "0":
        return False
    # numpy's memory handlers (NEP 49) came with 1.22
    return np.lib.NumpyVersion(np.__version__) >= "1.22.0"


@contextlib.contextmanager
def kept_pages():
    """Within the block, numpy's large arrays reuse the pages of freed
    ones (see the module's docstring).  The handler is a context variable:
    threads of mscope.workers inherit it, other threads use numpy's own."""
    if not _usable():
        yield
        return
    _pages.begin()
    before = _pages.install()
    try:
        yield
    finally:
        _pages.restore(before)
        _pages.end()


def release():
    """Let the pages kept so far go back to the kernel: where the arrays
    just freed will not be followed by as large ones, kept pages would
    only sit beside what is made next (a no-op without the handler)."""
    if _pages is not None:
        _pages.release()


def stats():
    """The compiled handler's byte counts (``_pages.stats()``), or None."""
    return None if _pages is None else _pages.stats()
