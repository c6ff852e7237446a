"""Give a capture written without frame indexes its indexes
(``mscope capture index``): captures from before them, or segments whose
index was lost.  Each frame's payload is read once, for its first record.
"""
import os
import zlib
from typing import NamedTuple

from mscope.errors import MscopeError

from .files import replace_whole
from .format import FRAME_HEADER_SIZE, check_frame_header, first_record_time, unpack_frame_header
from .index import INDEX_HEADER, index_path, pack_index_entry, read_index
from .lock import lock_capture
from .reader import open_capture

__all__ = ["IndexStats", "index_capture"]


class IndexStats(NamedTuple):
    segments: int       # segment files in the capture
    written: int        # of them, indexed now
    frames: int         # frames with records indexed now


def index_capture(path, log=None) -> IndexStats:
    """Write the frame index of each segment of capture `path` that has
    none, or one that leaves out frames with records.

    A segment is read up to its first frame that cannot be read (a
    damaged header, a cut frame): the frames after it keep no entry, and a
    window's read finds their times in their payloads, as without an
    index.  A frame whose payload checksum fails gets no entry either.

    Parameters
    ----------
    path : str or os.PathLike
        A capture directory.
    log : callable, optional
        Called with a line per segment indexed.

    Raises
    ------
    CaptureFormatError
        Not a capture.
    FileExistsError
        A writer has the capture open (it indexes its own segments).
    MscopeError
        An index file cannot be written (one line).
    """
    cap = open_capture(path)
    fd = lock_capture(cap.path)
    try:
        written = frames = 0
        for seg, seg_path in cap.segments:
            entries = _entries(seg_path)
            have = read_index({seg: seg_path})
            if all(have.get((seg, off)) == v for off, v in entries.items()):
                continue
            try:
                _write_index(seg_path, entries)
            except OSError as exc:
                raise MscopeError(f"{index_path(seg_path)}: cannot write the index: "
                                  f"{exc.strerror or exc}") from None
            written, frames = written + 1, frames + len(entries)
            if log is not None:
                log(f"{seg_path.name}: {len(entries):,} frames indexed")
        return IndexStats(len(cap.segments), written, frames)
    finally:
        os.close(fd)


def _entries(seg_path):
    """``{offset: (stream, chunk_seq, payload_crc32, first_time)}`` of the
    readable frames with records of one segment file."""
    out = {}
    with open(seg_path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos + FRAME_HEADER_SIZE <= size:
            f.seek(pos)
            try:
                h = unpack_frame_header(f.read(FRAME_HEADER_SIZE))
            except ValueError:
                break
            end = pos + FRAME_HEADER_SIZE + h.payload_len
            if check_frame_header(h) is not None or end > size:
                break
            if h.n_records:
                payload = f.read(h.payload_len)
                first = (first_record_time(payload, h.codec)
                         if zlib.crc32(payload) == h.payload_crc32 else None)
                if first is not None:
                    out[pos] = (h.stream, h.chunk_seq, h.payload_crc32, first)
            pos = end
    return out


def _write_index(seg_path, entries):
    """Replace `seg_path`'s index with `entries`, at once (rename): a
    reader sees the old index or the new, never part of one."""
    body = b"".join(pack_index_entry(off, *v) for off, v in sorted(entries.items()))
    replace_whole(index_path(seg_path), INDEX_HEADER + body,
                  os.stat(seg_path).st_mode & 0o777, sync=False)
