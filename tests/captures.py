"""Captures written again stream by stream, for tests that cut, stretch or
damage a real (simulated) capture's records in ways the chunk headers must
tell of (mscope.capture.rewrite writes one plain chunk per stream)."""
import numpy as np

from mscope.capture import CaptureWriter, open_capture


def each_stream(src, out, codec="zstd"):
    """For each stream of capture `src`, in a new capture `out` (one host,
    the same topology and idle-poll intervals, `codec`): ``(writer,
    stream, entry, records, ids)``, the records a copy to change and write
    as chunks of ``stream``.  Consume it whole: `out` is closed at the end."""
    cap = open_capture(src)
    data = cap.read()
    with CaptureWriter(out, codec=codec) as w:
        h = w.add_host("h")
        w.set_manifest_entry("topology", cap.manifest.get("topology"))
        for st in cap.manifest["streams"]:
            sid = w.add_stream(h, st["nf_id"], st["nf_name"], extra={"idle_ns": st["idle_ns"]})
            lo, hi = np.searchsorted(data.stream, [st["stream"], st["stream"] + 1])
            yield (w, sid, st, data.records[lo:hi].copy(),
                   data.ids[data.id_offsets[lo]:data.id_offsets[hi]])
