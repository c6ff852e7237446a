"""The collector side: drain mscope rings (``RingReader``).

The ring reader is a compiled extension; the rest of mscope, the analyzer
and the capture reader included, works without it.
"""
from mscope.errors import NativeBuildError

try:
    from mscope.collector._ringreader import (MAX_BATCH, RingReader, rdtsc,
                                              tsc_monotonic_pair)
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise NativeBuildError(
        "mscope's ring reader extension is not built: run `pip install .` "
        "(or `pip install -e .`) from the mscope source tree; it needs a C "
        f"compiler and Cython ({exc})") from exc

__all__ = ["RingReader", "MAX_BATCH", "rdtsc", "tsc_monotonic_pair"]
