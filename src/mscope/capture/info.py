"""Summarise a capture: streams, records, ids, time span and losses.

Packets of batch-only records (``CAPTURE_F_NOIDS``: a count, no ids) are
counted apart from ids, so a batch-only stream does not read as empty;
refused records (``CAPTURE_F_REFUSED``: packets a port refused at its
input) are counted apart too, and their words are not counted as ids.

``describe(path)`` reads every frame but keeps only per-chunk figures, so it
runs on captures larger than memory; ``format_text`` renders the summary as
the table ``mscope`` prints.
"""
import datetime

from mscope.record import IDLE_NS

from .index import indexed_time, read_index
from .reader import open_capture, wall_clocks

__all__ = ["describe", "format_text"]


def describe(path) -> dict:
    """Summarise the capture directory `path` as plain, JSON-ready data.

    Parameters
    ----------
    path : str or os.PathLike
        A capture directory.

    Returns
    -------
    dict
        ``path``, ``format``, ``version``, ``producer``, ``created_unix_ns``,
        ``segments``, ``stored_bytes``, ``raw_bytes``, ``chunks``,
        ``records``, ``ids``, ``batch_only_records``,
        ``batch_only_packets``, ``first_ns``, ``last_ns``, ``span_ns``;
        ``streams``: one dict per stream (``stream``, ``host``,
        ``host_name``, ``nf_id``, ``nf_name``, ``lcore``, ``pid``,
        ``chunks``, ``records``, ``ids``, ``batch_only_records``,
        ``batch_only_packets``, ``first_ns``, ``last_ns``, ``final``,
        ``recorded_until_ns`` (None unless a stopped collector said it),
        ``drop_records``, ``drop_packets``, ``lost_records``, ``losses``);
        ``loss_totals``: ``{kind: {"count", "records", "unknown"}}``;
        ``losses``: every Loss as a dict; ``indexed_chunks``: the chunks
        with records (of ``chunks_with_records``) whose segment's frame
        index places them, ``index_wrong``: those it places elsewhere
        than their first record; ``wall_clocks``: each host's
        CLOCK_REALTIME less its CLOCK_MONOTONIC, by name, where its
        collector wrote one.  ``ids`` counts packet ids; the
        packets of batch-only records (``CAPTURE_F_NOIDS``), which have
        none, are counted in ``batch_only_packets`` (``batch_only_records``
        of the ``records``); ``refused_records`` and ``refused_packets``
        (per stream and in all) count refused records and the packets
        they say were refused, whose 2 words each are not counted in
        ``ids``.  Times are None for a capture without records.

    Raises
    ------
    CaptureFormatError
        The manifest is missing or malformed, or a segment cannot be read.

    Examples
    --------
    >>> s = describe("run1.capture")                     # doctest: +SKIP
    >>> s["records"], s["loss_totals"]                   # doctest: +SKIP
    (120000, {'ring_drop': {'count': 2, 'records': 17, 'unknown': 0}})
    """
    cap = open_capture(path)
    scan, losses = cap._survey(None, keep=False)
    hosts = {h["host"]: h for h in cap.manifest["hosts"]}
    per = {}
    for sid, st in cap.streams.items():
        per[sid] = {
            "stream": sid, "host": st["host"],
            "host_name": hosts.get(st["host"], {}).get("name"),
            "nf_id": st["nf_id"], "nf_name": st["nf_name"],
            "lcore": st.get("lcore"), "pid": st.get("pid"),
            "chunks": 0, "records": 0, "ids": 0,
            "batch_only_records": 0, "batch_only_packets": 0,
            "refused_records": 0, "refused_packets": 0,
            "first_ns": None, "last_ns": None, "final": False,
            "recorded_until_ns": st.get("recorded_until_ns"),
            "idle_ns": st.get("idle_ns"),
            "drop_records": 0, "drop_packets": 0,
            "lost_records": 0, "losses": 0,
        }
    for e in scan.entries:
        row = per.get(e.h.stream)
        if row is None or e.status in ("duplicate", "overlap"):
            continue
        # Counters are cumulative: the largest any good header shows.
        row["drop_records"] = max(row["drop_records"], e.h.drop_records)
        row["drop_packets"] = max(row["drop_packets"], e.h.drop_packets)
        if e.status != "ok":
            continue
        row["chunks"] += 1
        row["records"] += e.h.n_records
        row["ids"] += e.h.n_ids - 2 * e.refused[0]
        row["batch_only_records"] += e.batch_only[0]
        row["batch_only_packets"] += e.batch_only[1]
        row["refused_records"] += e.refused[0]
        row["refused_packets"] += e.refused[1]
        row["final"] = row["final"] or e.h.final
        if e.t_first is not None:
            row["first_ns"] = _min(row["first_ns"], e.t_first)
            row["last_ns"] = _max(row["last_ns"], e.t_last)
    index = read_index(dict(cap.segments))
    with_records = indexed = wrong = 0
    for e in scan.entries:
        if e.status != "ok" or not e.h.n_records or e.h.stream not in per:
            continue
        with_records += 1
        t = indexed_time(index, e.seg, e.off, e.h)
        if t is not None:
            indexed += t == e.t_first
            wrong += t != e.t_first
    totals = {}
    for loss in losses:
        t = totals.setdefault(loss.kind, {"count": 0, "records": 0, "unknown": 0})
        t["count"] += 1
        if loss.n_records is None:
            t["unknown"] += 1
        else:
            t["records"] += loss.n_records
        row = per.get(loss.stream)
        if row is not None:
            row["losses"] += 1
            row["lost_records"] += loss.n_records or 0
    rows = [per[s] for s in sorted(per)]
    first = min((r["first_ns"] for r in rows if r["first_ns"] is not None), default=None)
    last = max((r["last_ns"] for r in rows if r["last_ns"] is not None), default=None)
    man = cap.manifest
    return {
        "path": str(cap.path), "format": man["format"], "version": man["version"],
        "producer": man.get("producer"), "created_unix_ns": man.get("created_unix_ns"),
        "segments": scan.segments, "stored_bytes": scan.stored_bytes,
        "raw_bytes": scan.raw_bytes,
        "chunks": sum(r["chunks"] for r in rows),
        "records": sum(r["records"] for r in rows),
        "ids": sum(r["ids"] for r in rows),
        "batch_only_records": sum(r["batch_only_records"] for r in rows),
        "batch_only_packets": sum(r["batch_only_packets"] for r in rows),
        "refused_records": sum(r["refused_records"] for r in rows),
        "refused_packets": sum(r["refused_packets"] for r in rows),
        "first_ns": first, "last_ns": last,
        "span_ns": None if first is None else last - first,
        "streams": rows, "loss_totals": totals,
        "losses": [loss._asdict() for loss in losses],
        "chunks_with_records": with_records, "indexed_chunks": indexed, "index_wrong": wrong,
        "wall_clocks": wall_clocks(man),
    }


def _index_line(s):
    """What the frame index gives a window of this capture."""
    n, got, wrong = s["chunks_with_records"], s["indexed_chunks"], s["index_wrong"]
    text = (f"index    {'none' if not got else f'{got:,}'} of {n:,} chunks: a window reads "
            f"the first record of each chunk left out (mscope capture index writes them)")
    if wrong:
        text += f"; {wrong:,} placed wrong (rewrite the index: mscope capture index)"
    return text


def _wall(a, b, offset):
    """`a` .. `b` (ns of a host's CLOCK_MONOTONIC) by its wall clock,
    where its collector said where that lies (`offset`)."""
    if offset is None:
        return ""
    t0, t1 = (datetime.datetime.fromtimestamp((x + offset) / 1e9, datetime.timezone.utc)
              for x in (a, b))
    return f"; {t0:%Y-%m-%d %H:%M:%S} .. {t1:%Y-%m-%d %H:%M:%S} UTC by its wall clock"


def _min(a, b):
    return b if a is None else min(a, b)


def _max(a, b):
    return b if a is None else max(a, b)


def _bytes(n) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _duration(ns) -> str:
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3f} {unit}"
    return f"{ns} ns"


def _cell(x) -> str:
    return "-" if x is None else str(x)


def format_text(summary: dict, max_losses: int = 20) -> str:
    """Render a :func:`describe` summary as a readable table.

    Parameters
    ----------
    summary : dict
        What :func:`describe` returned.
    max_losses : int
        Losses listed one per line; the rest are counted.

    Returns
    -------
    str
        Several lines, no trailing newline.

    Examples
    --------
    >>> print(format_text(describe("run1.capture")))    # doctest: +SKIP
    capture  run1.capture  (mscope-capture v1, mscope-collect 0.1.0)
    ...
    """
    s = summary
    batch_only = s.get("batch_only_records", 0)
    ratio = (f" ({s['raw_bytes'] / s['stored_bytes']:.1f}x)"
             if s["stored_bytes"] else "")
    lines = [
        f"capture  {s['path']}  ({s['format']} v{s['version']}, "
        f"{s.get('producer') or 'unknown producer'})",
        f"stored   {s['segments']} segments, {_bytes(s['stored_bytes'])} "
        f"on disk, {_bytes(s['raw_bytes'])} raw{ratio}",
        f"records  {s['records']:,} in {s['chunks']:,} chunks, "
        f"{s['ids']:,} packet ids"
        + (f"; {batch_only:,} batch-only records of "
           f"{s['batch_only_packets']:,} packets (no ids)" if batch_only else "")
        + (f"; {s['refused_records']:,} refused records: {s['refused_packets']:,} packets "
           f"refused at a port's input" if s.get("refused_records") else ""),
        f"time     {_cell(s['first_ns'])} .. {_cell(s['last_ns'])} ns "
        f"(span {_duration(s['span_ns'])})",
    ]
    walls = s.get("wall_clocks") or {}
    hosts = sorted({r["host_name"] for r in s["streams"] if r.get("host_name") is not None},
                   key=str)
    if len(hosts) > 1:
        # each host's clock counts from its own boot: a span across them
        # says nothing; each host's own does
        lines[-1] += " across hosts whose clocks count from their own boots"
        for h in hosts:
            mine = [r for r in s["streams"] if r.get("host_name") == h
                    and r["first_ns"] is not None]
            if mine:
                a, b = min(r["first_ns"] for r in mine), max(r["last_ns"] for r in mine)
                lines.append(f"         host {h}: {a} .. {b} ns (span {_duration(b - a)})"
                             + _wall(a, b, walls.get(str(h))))
    elif hosts and s["first_ns"] is not None:
        lines[-1] += _wall(s["first_ns"], s["last_ns"], walls.get(str(hosts[0])))
    lines.append("")
    # The batch-only packet column only where there are any.
    bo = ("bo_packets",) if batch_only else ()
    # and the refused packets' only where a port refused any
    refused = s.get("refused_records", 0)
    rf = ("refused",) if refused else ()
    # and until when a stopped collector said live streams were recorded
    until = any(r.get("recorded_until_ns") is not None for r in s["streams"])
    ru = ("recorded_until_ns",) if until else ()
    # and the idle-poll interval where a stream's is not the default
    # (MSCOPE_IDLE_US; 0: none): its silences are measured against it
    idle = any(r.get("idle_ns") not in (None, IDLE_NS) for r in s["streams"])
    iu = ("idle_us",) if idle else ()
    head = ("stream", "host", "nf", "lcore", "chunks", "records", "ids", *bo, *rf,
            "first_ns", "last_ns", *ru, *iu, "drops", "lost", "final")
    table = [head]
    for r in s["streams"]:
        bo = (str(r.get("batch_only_packets", 0)),) if batch_only else ()
        rf = (str(r.get("refused_packets", 0)),) if refused else ()
        ru = (_cell(r.get("recorded_until_ns")),) if until else ()
        iu = ((("off" if r["idle_ns"] == 0 else f"{r['idle_ns'] / 1000:g}")
               if r.get("idle_ns") is not None else "-"),) if idle else ()
        table.append((
            str(r["stream"]), _cell(r["host_name"] or r["host"]),
            f"{r['nf_name']}({r['nf_id']})", _cell(r["lcore"]),
            str(r["chunks"]), str(r["records"]), str(r["ids"]), *bo, *rf,
            _cell(r["first_ns"]), _cell(r["last_ns"]), *ru, *iu,
            str(r["drop_records"]), str(r["lost_records"]),
            "yes" if r["final"] else "no"))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    left = {1, 2}     # text columns; numbers align right
    for row in table:
        lines.append("  ".join(c.ljust(w) if i in left else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    lines.append("")
    # the frame index only where a window of this capture would miss it
    index = [_index_line(s)] if s.get("indexed_chunks", 0) < s.get("chunks_with_records", 0) \
        or s.get("index_wrong") else []
    if not s["losses"]:
        lines.append("losses   none")
        return "\n".join(lines + index)
    parts = []
    for kind, t in sorted(s["loss_totals"].items()):
        unknown = f" + {t['unknown']} of unknown size" if t["unknown"] else ""
        parts.append(f"{kind} {t['count']} ({t['records']} records{unknown})")
    lines.append("losses   " + ", ".join(parts))
    for loss in s["losses"][:max_losses]:
        who = "-" if loss["stream"] is None else loss["stream"]
        seq = "?" if loss["first_seq"] is None else loss["first_seq"]
        n = "?" if loss["n_records"] is None else loss["n_records"]
        lines.append(f"  stream {who}  {loss['kind']:<9}  seq {seq}  {n} records  "
                     f"{_cell(loss['t_start_ns'])}..{_cell(loss['t_end_ns'])} ns  "
                     f"{loss['detail']}")
    if len(s["losses"]) > max_losses:
        lines.append(f"  ... {len(s['losses']) - max_losses} more")
    return "\n".join(lines + index)
