"""Captures written again stream by stream, for tests that cut, stretch or
damage a real (simulated) capture's records in ways the chunk headers must
tell of (mscope.capture.rewrite writes one plain chunk per stream)."""
import numpy as np

from mscope.capture import CaptureWriter, open_capture


def each_stream(src, out, codec="zstd", hosts=lambda entry: ("h",)):
    """For each stream of capture `src`, in a new capture `out` (the same
    topology and idle-poll intervals, `codec`), on each host ``hosts(its
    manifest entry)`` names (one, "h", by default): ``(writer, stream,
    entry, records, ids)``, the entry's "host" that host's name, the
    records a copy to change and write as chunks of ``stream``.  Consume
    it whole: `out` is closed at the end."""
    cap = open_capture(src)
    data = cap.read()
    with CaptureWriter(out, codec=codec) as w:
        made = {}
        w.set_manifest_entry("topology", cap.manifest.get("topology"))
        for st in cap.manifest["streams"]:
            lo, hi = np.searchsorted(data.stream, [st["stream"], st["stream"] + 1])
            for name in hosts(st):
                if name not in made:
                    made[name] = w.add_host(name)
                sid = w.add_stream(made[name], st["nf_id"], st["nf_name"],
                                   extra={"idle_ns": st["idle_ns"]})
                yield (w, sid, dict(st, host=name), data.records[lo:hi].copy(),
                       data.ids[data.id_offsets[lo]:data.id_offsets[hi]])


def on_two_hosts(src, out, on_b, shift_ns, twice=False):
    """Capture `src` written again with the streams of NFs `on_b` on a
    second host "b" whose clock reads `shift_ns` more (`twice`: every
    stream on both hosts, the same chain on each, as a fleet ships it)."""
    def hosts(st):
        return ("a", "b") if twice else ("b" if st["nf_name"] in on_b else "a",)
    for w, sid, st, recs, ids in each_stream(src, out, hosts=hosts):
        recs["time_ns"] += shift_ns if st["host"] == "b" else 0
        w.write_chunk(sid, recs, ids)
    return out
