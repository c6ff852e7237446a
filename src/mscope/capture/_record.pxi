# CAPTURE_RECORD_DTYPE (mscope.capture.format, docs/capture-format.md) as
# Cython sees it: 32 bytes, little-endian, no padding.  The buffer protocol
# checks the field types of every array handed in against this.  Included
# (textually) by the modules that read capture records: the reader's frame
# checks (mscope.capture._checks) and stage 1's expansion
# (mscope.analyzer._ingest).
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef packed struct capture_record_t:
    int64_t time_ns
    uint64_t seq
    uint16_t nf_id
    uint16_t port
    uint16_t queue
    uint8_t flags
    uint8_t reserved
    uint32_t count
    uint32_t occupancy
