"""A capture written again as another deployment or recorder would have
written it: some streams left out (an unrecorded traffic source), or
their records changed (no idle polls, no occupancy).  For measuring what
the analyzer makes of such captures from kept ones (bench/accuracy.py
--without-source) and for tests."""
import numpy as np

from .reader import open_capture
from .writer import CaptureWriter

__all__ = ["rewrite_capture"]


def rewrite_capture(src, out, keep=None, records=None, idle_ns=True):
    """Write capture `src` again to `out` (a new directory), one chunk per
    stream.

    Parameters
    ----------
    src, out : path
    keep : callable, optional
        ``keep(entry)`` of each stream's manifest entry: whether to write
        it (default all).  The manifest's topology is kept either way (it
        names an unrecorded source as ``source`` as well).
    records : callable, optional
        ``records(entry, recs, ids) -> (recs, ids)``: each stream's records
        and ids as written (default as they are).  Seqs are renumbered
        from 0 after it.
    idle_ns : bool
        Keep the idle-poll interval each stream declares (False: as a
        recorder from before them).
    """
    cap = open_capture(src)
    data = cap.read()
    streams = [st for st in cap.manifest["streams"] if keep is None or keep(st)]
    with CaptureWriter(out) as w:
        h = w.add_host("h")
        w.set_manifest_entry("topology", cap.manifest.get("topology"))
        for st in streams:
            extra = {"idle_ns": st["idle_ns"]} if idle_ns and "idle_ns" in st else None
            sid = w.add_stream(h, st["nf_id"], st["nf_name"], extra=extra)
            # read() holds a stream's records together: a slice, its ids too
            lo, hi = np.searchsorted(data.stream, [st["stream"], st["stream"] + 1])
            recs = data.records[lo:hi].copy()       # its seqs are renumbered
            ids = data.ids[data.id_offsets[lo]:data.id_offsets[hi]]
            if records is not None:
                recs, ids = records(st, recs, ids)
            recs["seq"] = np.arange(len(recs), dtype=np.uint64)
            w.write_chunk(sid, recs, ids, first_seq=0, final=True)
