"""The frame index: where in time each frame of a segment begins.

A window of a long capture wants only the frames near it, but a frame
header has no time in it: the one place that says is the payload's first
record, behind the payload's checksum and codec.  Reading that for every
frame of a ten-minute capture took most of a 10 s window's read; for an
hour it would take seconds.  So the writer keeps beside each segment
``chunks-NNNNNN.msc`` a file ``chunks-NNNNNN.idx`` with one entry per
frame that holds records, and a reader cutting a window reads the
payloads of the frames near it alone.

The index is optional and only ever a shortcut: a reader that lacks it,
or finds an entry broken, reads the frame's first record as before.

Layout (little-endian; docs/capture-format.md, "Frame index")::

    header   16 bytes   magic "MSCI", version u16 (1), entry size u16 (40),
                        8 bytes zero
    entries  40 bytes   offset u64       the frame's byte offset in its segment
             each       chunk_seq u64    \\
                        first_time i64    the time_ns of its first record
                        stream u32        > as in the frame's header
                        payload_crc32 u32 /
                        reserved u32     zero
                        crc32 u32        of the 36 bytes before it

An entry counts only where its own crc32 holds and the frame found at its
offset has its stream, chunk_seq and payload_crc32: so neither a flipped
bit in the index nor an index beside another segment's frames can place a
frame.  What an entry says of a frame's time is what the writer took from
the records as it wrote them, so a frame whose payload was damaged later
is still placed right.
"""
import os
import struct
import zlib

import numpy as np

from .format import FRAME_HEADER_SIZE

__all__ = ["INDEX_MAGIC", "INDEX_VERSION", "INDEX_HEADER_SIZE", "INDEX_ENTRY_DTYPE",
           "index_path", "pack_index_entry", "IndexFile", "read_index", "indexed_time"]

INDEX_MAGIC = b"MSCI"
INDEX_VERSION = 1
INDEX_HEADER_SIZE = 16
_HEADER = struct.Struct("<4sHH8x")
_ENTRY = struct.Struct("<QQqIIII")
INDEX_ENTRY_DTYPE = np.dtype([
    ("offset", "<u8"), ("chunk_seq", "<u8"), ("first_time", "<i8"),
    ("stream", "<u4"), ("payload_crc32", "<u4"), ("reserved", "<u4"), ("crc32", "<u4"),
])
assert _ENTRY.size == INDEX_ENTRY_DTYPE.itemsize == 40
_CRC_OFF = 36
_INDEX_SUFFIX = ".idx"


def index_path(segment_path):
    """The index file beside segment file `segment_path` (a Path)."""
    return segment_path.with_suffix(_INDEX_SUFFIX)


def pack_index_entry(offset, stream, chunk_seq, payload_crc32, first_time) -> bytes:
    """One 40-byte entry, its crc32 included.

    >>> e = pack_index_entry(80, 1, 2, 0xdeadbeef, -5)
    >>> len(e), int(read_entries(INDEX_HEADER + e)[0]["first_time"])
    (40, -5)
    """
    head = _ENTRY.pack(offset, chunk_seq, first_time, stream, payload_crc32, 0, 0)[:_CRC_OFF]
    return head + zlib.crc32(head).to_bytes(4, "little")


#: The 16 bytes every index file begins with.
INDEX_HEADER = _HEADER.pack(INDEX_MAGIC, INDEX_VERSION, _ENTRY.size)


class IndexFile:
    """The index of the segment being written: entries appended as the
    segment's frames are.  A write that fails ends the index of this
    segment (the file is removed where it can be): it is a shortcut, and
    the segment's frames are read without it."""

    def __init__(self, path, mode):
        self.path, self._fd = path, None
        try:
            # O_TRUNC: a file of this name whose segment is gone is no index of ours
            flags = (os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                     | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
            self._fd = os.open(path, flags, mode)
            os.fchmod(self._fd, mode)
            self._write(INDEX_HEADER)
        except OSError:
            self.abandon()

    def add(self, offset, stream, chunk_seq, payload_crc32, first_time):
        """Index the frame at `offset` whose first record is at `first_time`."""
        if self._fd is not None:
            self._write(pack_index_entry(offset, stream, chunk_seq, payload_crc32,
                                         first_time))

    def _write(self, data):
        try:
            if os.write(self._fd, data) != len(data):
                raise OSError("short write")
        except OSError:
            self.abandon()

    def abandon(self):
        """Stop indexing this segment and remove what was written."""
        self.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def close(self):
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def read_entries(buf, max_entries=None):
    """The entries of an index file's bytes `buf` whose crc32 holds (a
    structured array of INDEX_ENTRY_DTYPE); none when the header is not an
    index's.  A cut last entry is left out, and so are entries past
    `max_entries`."""
    if len(buf) < INDEX_HEADER_SIZE or bytes(buf[:INDEX_HEADER_SIZE]) != INDEX_HEADER:
        return np.zeros(0, INDEX_ENTRY_DTYPE)
    n = (len(buf) - INDEX_HEADER_SIZE) // _ENTRY.size
    if max_entries is not None:
        n = min(n, max_entries)
    body = memoryview(buf)[INDEX_HEADER_SIZE:INDEX_HEADER_SIZE + n * _ENTRY.size]
    good = np.fromiter(
        (zlib.crc32(body[i:i + _CRC_OFF]) == int.from_bytes(body[i + _CRC_OFF:i + 40], "little")
         for i in range(0, len(body), _ENTRY.size)), bool, count=n)
    return np.frombuffer(body, INDEX_ENTRY_DTYPE)[good]


def read_index(segments) -> dict:
    """The first-record times the index files of `segments` (number ->
    segment path) give: ``{(segment, offset): (stream, chunk_seq,
    payload_crc32, first_time)}``.  A missing or unreadable index gives
    nothing; an index never holds more entries than its segment has room
    for frames, whatever its size says."""
    out = {}
    for seg, path in segments.items():
        try:
            room = os.stat(path).st_size // FRAME_HEADER_SIZE
            with open(index_path(path), "rb") as f:
                buf = f.read(INDEX_HEADER_SIZE + room * _ENTRY.size)
        except OSError:
            continue
        for e in read_entries(buf, room).tolist():
            out[(seg, e[0])] = (e[3], e[1], e[4], e[2])
    return out


def indexed_time(index, seg, off, h):
    """The first record's time `index` (:func:`read_index`) gives the frame
    at byte `off` of segment `seg`, whose header is `h`; None where no
    entry names that frame (its stream, chunk_seq and payload crc32)."""
    hit = index.get((seg, off))
    if hit is None or hit[:3] != (h.stream, h.chunk_seq, h.payload_crc32):
        return None
    return hit[3]
