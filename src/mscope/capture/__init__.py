"""The capture directory format: what the collector and simulator write and
the analyzer reads (layout in docs/capture-format.md).

numpy, the standard library and the codec packages only: no compiled part
of mscope is needed to read or write a capture.

Examples
--------
>>> from mscope.capture import open_capture                # doctest: +SKIP
>>> data = open_capture("run1.capture").read()             # doctest: +SKIP
>>> data.records["time_ns"], data.ids_of(0), data.losses   # doctest: +SKIP
"""
from mscope.errors import CaptureFormatError

from .format import (CAPTURE_F_ADDR, CAPTURE_F_NOIDS, CAPTURE_F_REFUSED, CAPTURE_F_TX,
                     CAPTURE_OCC_UNKNOWN, CAPTURE_RECORD_DTYPE, LOSS_KINDS, id_counts)
from .info import describe, format_text
from .reader import Capture, CaptureData, Loss, StreamFeed, open_capture
from .writer import CaptureStats, CaptureWriter

__all__ = [
    "CaptureWriter", "CaptureStats",
    "open_capture", "Capture", "CaptureData", "StreamFeed", "Loss", "LOSS_KINDS",
    "describe", "format_text",
    "CAPTURE_RECORD_DTYPE", "CAPTURE_F_TX", "CAPTURE_F_ADDR", "CAPTURE_F_NOIDS",
    "CAPTURE_F_REFUSED",
    "CAPTURE_OCC_UNKNOWN", "id_counts",
    "CaptureFormatError",
]
