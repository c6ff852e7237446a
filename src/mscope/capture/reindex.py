"""Give a capture written without frame indexes its indexes
(``mscope capture index``): captures from before them, or segments whose
index was lost.  Each frame's payload is read once, for its first record
(``StreamFeed.frame_times``).
"""
import os
from typing import NamedTuple

from mscope.errors import MscopeError

from .files import replace_whole
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

    The frames are those the reader finds (past damage, as it reads
    them), each entry from its payload's first record; a frame whose
    payload checksum fails gets none, and a window's read finds its time
    as without an index.

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
        feed = cap.stream_feed()
        try:
            times = feed.frame_times()
        finally:
            feed.close()
        by_segment = {}
        for (seg, off), v in times.items():
            by_segment.setdefault(seg, {})[off] = v
        written = frames = 0
        for seg, seg_path in cap.segments:
            entries = by_segment.get(seg, {})
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


def _write_index(seg_path, entries):
    """Replace `seg_path`'s index with `entries`, at once (rename): a
    reader sees the old index or the new, never part of one."""
    body = b"".join(pack_index_entry(off, *v) for off, v in sorted(entries.items()))
    replace_whole(index_path(seg_path), INDEX_HEADER + body,
                  os.stat(seg_path).st_mode & 0o777, sync=False)
