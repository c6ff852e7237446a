"""numpy views of the record layout defined in csrc/mscope_record.h.

The C header is the definition; these dtypes mirror it field by field and
tests/test_layout.py compiles a probe against the header to hold them to it.
"""
import numpy as np

__all__ = ["RING_RECORD_DTYPE", "REC_MAGIC", "REC_VERSION", "REC_F_TX",
           "REC_F_ADDR", "REC_F_NOIDS", "REC_F_REFUSED", "REC_F_PAD", "OCC_UNKNOWN", "MAX_BATCH",
           "IDLE_NS", "REFUSED_NS",
           "RING_MAGIC", "RING_VERSION", "RING_HDR_SIZE", "RING_MIN_DATA",
           "REC_HDR_SIZE", "id_counts"]

REC_MAGIC = 0x534D
REC_VERSION = 1
REC_F_TX = 0x01
#: Address record: its words are IPv4 ``src << 32 | dst`` (0: not IPv4) of
#: the packets of the rx record one seq before it (csrc/mscope_record.h).
REC_F_ADDR = 0x02
#: Batch-only record: ``count`` packets and no id words after the header
#: (csrc/mscope_record.h); never combined with REC_F_ADDR.
REC_F_NOIDS = 0x04
#: Refused record: 2 words, the packets a port refused at its input
#: (imissed) since the previous reading and the ns since it; never with
#: another bit (csrc/mscope_record.h).
REC_F_REFUSED = 0x08
REC_F_PAD = 0x80
OCC_UNKNOWN = 0xFFFFFFFF
MAX_BATCH = 1024
#: An empty poll writes an idle-poll record (rx, ``count`` 0) when the
#: recorder has written nothing for this long (csrc/mscope_record.h).
IDLE_NS = 20000
#: The attach shim reads a port's refusals at most this often (and at the
#: first poll after a silence).
REFUSED_NS = 1000000
RING_MAGIC = 0x474E495245504F43
RING_VERSION = 1
RING_HDR_SIZE = 4096
RING_MIN_DATA = 64 * 1024
REC_HDR_SIZE = 32

#: One record header as it sits in a ring (32 bytes, little-endian).
RING_RECORD_DTYPE = np.dtype([
    ("magic", "<u2"),
    ("version", "u1"),
    ("flags", "u1"),
    ("nf_id", "<u2"),
    ("port", "<u2"),
    ("queue", "<u2"),
    ("count", "<u2"),
    ("occupancy", "<u4"),
    ("tsc", "<u8"),
    ("seq", "<u8"),
])
assert RING_RECORD_DTYPE.itemsize == 32


def id_counts(records):
    """Id words each ring record carries: ``count``, 0 for batch-only ones.

    What ``RingReader.drain_into`` copies into its id array per record, in
    record order, so ``np.cumsum(id_counts(records))`` locates each
    record's ids.

    Parameters
    ----------
    records : ndarray of RING_RECORD_DTYPE

    Returns
    -------
    ndarray of int64
        ``records["count"]``, with 0 where ``flags & REC_F_NOIDS``.

    Examples
    --------
    >>> r = np.zeros(3, RING_RECORD_DTYPE)
    >>> r["count"], r["flags"] = [3, 4, 2], [0, REC_F_NOIDS, REC_F_TX]
    >>> id_counts(r).tolist()
    [3, 0, 2]
    """
    counts = records["count"].astype(np.int64)
    counts[(records["flags"] & REC_F_NOIDS) != 0] = 0
    return counts
