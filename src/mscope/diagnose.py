"""`mscope diagnose`: capture -> victims, ranked culprits, patterns.

Runs the analyzer stages (docs/analyzer.md) and builds the diagnosis JSON
of SCENARIO.md: ``{"victims": [...], "patterns": [...], "incomplete": [...]}``.
The victims are most of it (400k victims: ~100 MB of JSON): the command
streams them to the file from the attribution's arrays (:func:`write_json`)
instead of making a dict per victim.
"""
import datetime
import functools
import ipaddress
import json
import operator
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from mscope import _victims_json
from mscope.errors import MscopeError

try:
    import resource
except ImportError:                 # not on Windows: max_rss_bytes left out
    resource = None

__all__ = ["diagnose", "run_diagnose", "write_json", "format_summary", "VictimList",
           "StageLog", "DEFAULT_SLO_US"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

#: Latency objective when none is given.
DEFAULT_SLO_US = 150.0


def _set_madvise_hugepage(enabled):
    """numpy's ``madvise(MADV_HUGEPAGE)`` of its large arrays, switched;
    the setting before (None where this numpy has no such switch)."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return None
    return _set_madvise_hugepage(enabled)


def _memory_policy(run):
    """Run `run` with numpy's memory set for a diagnosis, then put it back.

    - Large arrays on ordinary pages.  A diagnosis writes most of its
      memory once, fresh (the decoded capture, the hop arrays): on the VMs
      of docs/benchmarks.md a huge page's first touch cost the kernel ~3x
      an ordinary page's per byte (clear_page was a third of
      bench/analyze.py's samples), and turning the advice off took the
      9.5 M-hop run from 4.4-5.1 s to 3.8-3.9 s, its user time within
      0.2 s.
    - Freed large arrays' pages kept for the next ones
      (mscope.analyzer.pages)."""
    @functools.wraps(run)
    def wrapped(*args, **kwargs):
        from mscope.analyzer.pages import kept_pages
        before = _set_madvise_hugepage(False)
        try:
            with kept_pages():
                return run(*args, **kwargs)
        finally:
            if before is not None:
                _set_madvise_hugepage(before)
    return wrapped


def load_topology_hint(path):
    """Links from a JSON file: a list of [from, to] names, or an object with
    "links" (a scenario file).  One-line MscopeError on anything else."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise MscopeError(f"--topology {path}: {e.strerror}") from None
    except ValueError as e:
        raise MscopeError(f"--topology {path}: not JSON ({e})") from None
    links = doc.get("links") if isinstance(doc, dict) else doc
    if (not isinstance(links, list) or not links
            or not all(isinstance(l, list) and len(l) == 2
                       and all(isinstance(x, str) for x in l) for l in links)):
        raise MscopeError(f"--topology {path}: expected a list of [from, to] names "
                          f"(or an object with \"links\")")
    return [tuple(l) for l in links]


@_memory_policy
def diagnose(capture, slo_us=DEFAULT_SLO_US, pattern_threshold=None, peak_rates=None,
             topology=None, progress=False, lazy=False, window_ms=None, hosts=None):
    """Diagnose the capture directory `capture`.

    Parameters
    ----------
    capture : str or os.PathLike
    slo_us : float
        Latency objective in microseconds (> 0).
    pattern_threshold : float, optional
        Share of victims whose top culprit a pattern must be (default 0.02).
    peak_rates : dict name -> packets/ns, optional
        NFs' peak service rates, instead of the rates their busy batches
        show (``mscope diagnose --peak-rate NF=MPPS``); each a finite
        number > 0 for an NF of the capture.
    topology : str or list, optional
        A links file (see :func:`load_topology_hint`) or a list of links;
        the inferred topology must match it (it replaces the manifest's).
    progress : bool
        Print each stage to stderr as it starts.
    lazy : bool
        Give ``"victims"`` as a :class:`VictimList` (each victim's dict made
        when asked for; :func:`write_json` streams it without making them)
        instead of a list.  ``mscope diagnose`` does: for 393k victims
        (bench/analyze.py, 2 s) the dicts took 1.8 s and json.dump 6.0 s,
        the ranking and the streamed JSON 0.2 + 0.4 s.
    window_ms : (float or None, float or None), optional
        Diagnose only the records from ``window_ms[0]`` to ``window_ms[1]``
        ms (None: from the start, to the end), counted as the summary
        counts its times (``mscope diagnose --from/--to``): a long
        capture then costs the window's memory.  The JSON says it under
        the optional key ``"window"`` (``from_ns``, ``to_ns``: null to the
        end).
    hosts : list of str, optional
        Diagnose only the NFs recorded on these hosts (``mscope diagnose
        --host``): a chain across hosts cannot be followed, whose clocks
        are not aligned.  The JSON says it under the optional key
        ``"hosts"``.

    Returns
    -------
    (dict, dict)
        The diagnosis JSON object and a context dict for
        :func:`format_summary` (``attribution``, ``queues``, ``traj``,
        ``seconds``, and ``stages``: per stage its wall time and memory,
        see :class:`StageLog`).

    Raises
    ------
    MscopeError
        ``slo_us`` not positive; not a capture; empty capture (or window);
    a window that ends before it begins; a peak rate not a number > 0, or
    for an NF the capture does not have.
    """
    from mscope.analyzer import build_trajectories, infer_topology, queue_timelines
    from mscope.analyzer.attribution import attribute
    from mscope.analyzer.patterns import DEFAULT_THRESHOLD, find_patterns
    from mscope.analyzer.refused import refused_episodes

    if not (slo_us > 0) or slo_us == float("inf"):
        raise MscopeError(f"--slo-us must be a positive number, got {slo_us}")
    if pattern_threshold is not None and not 0 <= pattern_threshold <= 1:
        raise MscopeError(f"--pattern-threshold must be a share from 0 to 1, "
                          f"got {pattern_threshold}")
    if window_ms is not None:
        a, b = window_ms
        if not (a is None or 0 <= a < float("inf")) or not (b is None or 0 < b < float("inf")):
            raise MscopeError(f"--from and --to must be ms >= 0, got {a} and {b}")
        if a is not None and b is not None and not a < b:
            raise MscopeError(f"--from ({a:g} ms) must come before --to ({b:g} ms)")
        if a is None and b is None:
            window_ms = None
    hint = load_topology_hint(topology) if isinstance(topology, (str, bytes)) or \
        hasattr(topology, "__fspath__") else topology
    peak_rates = dict(peak_rates or {})
    for name, rate in peak_rates.items():
        try:
            peak_rates[name] = float(rate)
        except (TypeError, ValueError):
            peak_rates[name] = float("nan")
        if not 0 < peak_rates[name] < float("inf"):
            raise MscopeError(f"peak rate of {name}: {rate!r} is not a rate > 0")
    log = StageLog(progress)
    log.start("read", "reading the capture")
    view = _read(capture, window_ms, hosts, hint)
    if view.window_estimated:
        # a window of a capture from several hosts: the other hosts' parts
        # of it were placed by an estimate of their clocks; their records
        # have aligned the clocks, and place them now
        shifts = dict(view.window_shifts)
        shifts.update((c.host, c.shift_ns) for c in view.clock_shifts)
        del view
        view = _read(capture, window_ms, hosts, hint, shifts)
    names = [n.name for n in view.nfs]
    unknown = sorted(set(peak_rates) - set(names))
    if unknown:
        raise MscopeError(f"peak rate of {unknown[0]}: the capture has no such NF "
                          f"(its NFs: {', '.join(sorted(names))})")
    base = _time_base(view)
    log.start("topology", f"topology of {len(view.nfs)} NFs")
    topo = infer_topology(view)
    refused = refused_episodes(view.nfs, topo)
    log.start("trajectories", "trajectories")
    traj = build_trajectories(view, topo, release_ids=True)
    # the trajectories hold what the per-packet ids and times said; queues
    # and patterns read only the batches: ~0.8x the decoded capture freed
    view.release_packets()
    log.start("queues", f"queues of {len(traj.packet_id):,} packets")
    queues = queue_timelines(view, traj, peak_rates)
    log.start("attribution", "attribution")
    att = attribute(traj, queues, int(round(slo_us * 1000)))
    log.start("patterns", f"patterns over {len(att.packet):,} victims")
    thr = DEFAULT_THRESHOLD if pattern_threshold is None else pattern_threshold
    patterns = find_patterns(att, thr, traj, view, queues)
    log.start("victims", "ranking the victims' culprits")
    victims = VictimList(att)
    victims.ranked()
    if not lazy:
        victims = victims.tolist()
    out = {"victims": victims, "patterns": patterns,
           "incomplete": [dict(w) for w in view.incomplete]}
    if hosts:
        out["hosts"] = list(hosts)
    if view.clock_shifts:
        out["clocks"] = [{"host": c.host, "aligned_to": c.to, "shift_ns": c.shift_ns,
                          "links": [list(l) for l in c.via], "links_inferred": c.inferred,
                          "packets": c.packets, "spread_ns": c.spread_ns}
                         for c in view.clock_shifts]
    if view.window_ns is not None:
        lo, hi = view.window_ns             # to the end: null
        out["window"] = {"from_ns": lo, "to_ns": None if hi == np.iinfo(np.int64).max else hi}
    # optional keys (SCENARIO.md allows them), only where they have something
    # to say: packets no recorded tx sent, whose arrival the queue
    # occupancy gave, or nothing did (their latency unknown: victims only
    # by a drop)
    for key, counts in (("arrivals_from_occupancy", traj.arrivals_estimated),
                        ("latency_unknown", traj.arrivals_unknown)):
        if counts:
            out[key] = [{"nf": n, "packets": k} for n, k in counts.items()]
    # and packets whose fate the records cannot tell (sent to an NF before
    # its records begin, after they end, in lost ones): not drops
    if traj.fate_unknown:
        out["fate_unknown"] = [{"nf": n, "packets": sum(c.values()), **c}
                               for n, c in traj.fate_unknown.items()]
    # and packets NICs refused (refused records), most first
    if refused:
        out["refused"] = refused
    # and victims no culprit explains, per NF
    unexplained = unexplained_victims(att, traj)
    if unexplained:
        out["unexplained"] = unexplained
    log.end()
    ctx = {"attribution": att, "queues": queues, "traj": traj, "topology": topo,
           "slo_us": slo_us, "pattern_threshold": thr, "seconds": log.elapsed(),
           "stages": log.rows,
           "time_base_ns": base, "clock": view.clock, "peak_rates": peak_rates,
           "window_ms": window_ms, "unindexed_frames": view.unindexed_frames,
           "wall_clock": _wall_clock(view)}
    return out, ctx


#: Frames a window's read found in no frame index before the summary says
#: how to index the capture (a few cost nothing; a long capture's, seconds).
UNINDEXED_NOTE = 100


def _read(capture, window_ms, hosts, hint, host_shifts=None):
    """The capture's view (:func:`load`), its hosts' clocks aligned where
    its NFs are on several."""
    from mscope.analyzer import load
    from mscope.analyzer.clocks import align_hosts
    view = load(capture, window_ms=window_ms, hosts=hosts or None, host_shifts=host_shifts)
    if hint is not None:
        view.topology = hint
    if len({h for n in view.nfs for h in n.hosts}) > 1:
        # NFs on several hosts: each host's times its own clock, until the
        # packets crossing the links between them (declared, else found
        # in each host's records) align them
        view.clock_shifts, view.clock_groups = align_hosts(view, view.topology)
    return view


def _wall_clock(view):
    """(host, CLOCK_REALTIME less CLOCK_MONOTONIC) of the clock the times
    are in, where its collector wrote it; None otherwise (a simulated
    capture, an older collector, hosts not aligned)."""
    hosts = sorted({h for n in view.nfs for h in n.hosts})
    if view.clock is None or view.clock.startswith("simulated") or not hosts:
        return None
    if len(hosts) > 1 and len(view.clock_groups or ()) != 1:
        return None                 # each group its own clock
    ref = hosts[0]                  # the hosts were aligned to the first by name
    off = view.wall_clocks.get(ref)
    return None if off is None else (ref, off)


def _time_base(view):
    """What the summary counts its times from: 0 for a simulated capture
    (its clock starts with the run, as its scenario's times do), else its
    first record (a live capture's clock is the host's since boot:
    "56,989,773.257 ms" says nothing to a reader)."""
    if view.clock is None or view.clock.startswith("simulated"):
        return 0
    if view.first_ns is not None:       # a window: the whole capture's
        return view.first_ns
    firsts = [int(a[0]) for n in view.nfs for a in (n.batch_ns, n.tx_ns, n.idle_ns) if len(a)]
    return min(firsts, default=0)


@_memory_policy
def _check_writable(path):
    """A one-line MscopeError unless a file can be written at `path`."""
    d = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise MscopeError(f"--json {path}: is a directory")
    if not os.path.isdir(d):
        raise MscopeError(f"--json {path}: no directory {d}")
    if not os.access(d, os.W_OK):
        raise MscopeError(f"--json {path}: directory {d} is not writable")


def run_diagnose(capture, json_path=None, top=5, file=None, **options):
    """What ``mscope diagnose CAPTURE [--json OUT]`` does, stage by stage.

    Diagnoses `capture` (:func:`diagnose` with ``lazy=True`` and
    `options`), streams the JSON to `json_path` when given, prints the
    summary to `file` (default stdout).  bench/analyze.py times this.

    Returns
    -------
    (dict, dict)
        As :func:`diagnose`; ``ctx["stages"]`` gains ``write`` and
        ``summary``, ``ctx["seconds"]`` is the whole run.
    """
    t0 = time.perf_counter()
    if json_path is not None:
        _check_writable(json_path)           # before minutes of work, not after
    diag, ctx = diagnose(capture, lazy=True, **options)
    log = StageLog(False, ctx["stages"])
    if json_path is not None:
        log.start("write", "writing the JSON")
        # whole or not at all: written aside, then renamed over the path
        part = f"{json_path}.part-{os.getpid()}"
        try:
            with open(part, "wb") as f:
                write_json(diag, f)
            os.replace(part, json_path)
        except BaseException:
            if os.path.exists(part):
                os.unlink(part)
            raise
    log.start("summary", "summary")
    ctx["seconds"] = time.perf_counter() - t0
    print(format_summary(diag, ctx, top=top), file=file or sys.stdout)
    log.end()
    return diag, ctx


class StageLog:
    """Wall time and memory of each stage of one run, as ``rows``.

    A row per stage: ``stage``, ``seconds``; ``rss_bytes`` (resident at
    the stage's end, Linux), ``max_rss_bytes`` (the process's high-water
    mark so far); ``user_seconds``, ``system_seconds`` and
    ``minor_faults`` the stage took (the system time is mostly the kernel
    zeroing fresh pages, one minor fault per 4 KiB); and while tracemalloc
    traces, ``traced_bytes`` (held at the stage's end) and
    ``traced_peak_bytes`` (the most held during the stage: the peak is
    reset at each stage's end).
    """

    def __init__(self, progress=False, rows=None):
        self.progress = progress
        self.rows = [] if rows is None else rows
        self.t0 = time.perf_counter()
        self.key = None

    def elapsed(self):
        return time.perf_counter() - self.t0

    def start(self, key, message):
        self.end()
        if self.progress:
            print(f"mscope diagnose: {message} ({self.elapsed():.1f} s)", file=sys.stderr,
                  flush=True)
        self.key, self.t, self.usage = key, time.perf_counter(), _usage()

    def end(self):
        if self.key is None:
            return
        row = {"stage": self.key, "seconds": time.perf_counter() - self.t}
        usage = _usage()
        if usage and self.usage:
            row.update((k, usage[k] - self.usage[k]) for k in usage)
        row.update(_memory())
        self.rows.append(row)
        self.key = None


def _usage():
    if resource is None:
        return None
    u = resource.getrusage(resource.RUSAGE_SELF)
    return {"user_seconds": u.ru_utime, "system_seconds": u.ru_stime,
            "minor_faults": u.ru_minflt}


def _memory():
    import tracemalloc
    out = {}
    try:
        with open("/proc/self/statm", "rb") as f:
            out["rss_bytes"] = int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        pass
    # VmHWM, not ru_maxrss: that one keeps the parent's peak across exec
    try:
        with open("/proc/self/status", "rb") as f:
            out["max_rss_bytes"] = next(int(l.split()[1]) for l in f
                                        if l.startswith(b"VmHWM:")) * 1024
    except (OSError, ValueError, StopIteration):
        if resource is not None:
            out["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if tracemalloc.is_tracing():
        out["traced_bytes"], out["traced_peak_bytes"] = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
    return out


# --- the victims, streamed --------------------------------------------------

#: Victims formatted per block: ~2 MB of JSON.
BLOCK = 8192


class VictimList(Sequence):
    """The diagnosis' victims: SCENARIO.md dicts made on demand.

    A read-only sequence over an Attribution; ``victims[i]``, iteration
    and :meth:`tolist` give exactly the dicts :func:`diagnose` lists
    (culprits ranked as ``Attribution.ranked_all``), and :func:`write_json`
    formats all of them straight from the arrays, without making them.

    Parameters
    ----------
    att : mscope.analyzer.attribution.Attribution
    """

    def __init__(self, att):
        self.att = att
        self._ranked = None

    def __len__(self):
        return len(self.att.packet_id)

    def __repr__(self):
        return f"<VictimList: {len(self):,} victims>"

    def __getitem__(self, i):
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step == 1:
                return self._dicts(lo, max(lo, hi))
            return [self[j] for j in range(lo, hi, step)]
        n = len(self)
        j = operator.index(i)
        j = j + n if j < 0 else j
        if not 0 <= j < n:
            raise IndexError(f"victim index {i} out of range ({n} victims)")
        return self._dicts(j, j + 1)[0]

    def __iter__(self):
        for lo in range(0, len(self), BLOCK):
            yield from self._dicts(lo, min(lo + BLOCK, len(self)))

    def __eq__(self, other):
        if isinstance(other, (VictimList, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def tolist(self):
        """Every victim's dict, as :func:`diagnose` (not lazy) returns them."""
        return self._dicts(0, len(self))

    def ranked(self):
        """Every victim's ranked culprits, compressed by victim.

        Returns
        -------
        ptr : ndarray of int64, len(self) + 1
            Victim i's culprits are entries ``ptr[i]:ptr[i + 1]``.
        col : ndarray of intp
            Index into ``att.culprits`` of each entry.
        score : ndarray of float64
            Its score, rounded to 3 decimals; only those > 1e-9.
        """
        if self._ranked is None:
            r = self.att.ranked_arrays()
            self._ranked = (r.offsets, r.culprit, r.score)
        return self._ranked

    def _dicts(self, lo, hi):
        att = self.att
        ptr, col, score = self.ranked()
        base = att.culprit_dicts()
        a, b = int(ptr[lo]), int(ptr[hi])
        cols, scores = col[a:b].tolist(), score[a:b].tolist()
        p = (ptr[lo:hi + 1] - a).tolist()
        nf = list(att.nf[lo:hi])
        out = []
        for k, (pid, lat, d) in enumerate(zip(att.packet_id[lo:hi].tolist(),
                                              att.latency_ns[lo:hi].tolist(),
                                              att.dropped[lo:hi].tolist())):
            out.append({"packet": pid, "nf": nf[k], "latency_ns": None if d else lat,
                        "dropped": d,
                        "culprits": [dict(base[j], score=s) for j, s in
                                     zip(cols[p[k]:p[k + 1]], scores[p[k]:p[k + 1]])]})
        return out

    def json_chunks(self, block=BLOCK):
        """The victims' JSON array, ``[`` to ``]``, in pieces (bytes-like).

        Byte for byte what ``json.dump`` writes for :meth:`tolist`.
        """
        yield b"["
        n = len(self)
        if n == 0:
            yield b"]"
            return
        fmt = _Formatter(self)
        for lo in range(0, n, block):
            yield fmt.block(lo, min(lo + block, n))
        yield b"]}]"


def write_json(diag, f):
    """Write the diagnosis JSON `diag` to the binary file `f`.

    Byte for byte what ``json.dump(diag, f)`` writes; a :class:`VictimList`
    is streamed block by block (about 1 s less per 400k victims than
    ``json.dump`` of their dicts, and no dicts held).

    Parameters
    ----------
    diag : dict
        As :func:`diagnose` returns it.
    f : binary file
    """
    f.write(b"{")
    for i, (key, value) in enumerate(diag.items()):
        f.write(f"{', ' if i else ''}{json.dumps(key)}: ".encode())
        if isinstance(value, VictimList):
            for piece in value.json_chunks():
                f.write(piece)
        else:
            f.write(json.dumps(value).encode())
    f.write(b"}")


def _texts(strings):
    """Byte strings as one buffer and their offsets (n + 1)."""
    at = np.zeros(len(strings) + 1, np.int64)
    np.cumsum([len(x) for x in strings], out=at[1:])
    return np.frombuffer(b"".join(strings) or b"\0", np.uint8), at


class _Formatter:
    """JSON text of blocks of victims, from the arrays
    (``_victims_json.victims_text``, one pass in C: ~0.14 -> ~0.03 s for
    bench/analyze.py's 393k victims and 1.0 M culprits, against the numpy
    matrix of words it replaces).  The text around the numbers is
    ``json.dumps``'s, made here once: each NF's, each culprit's dict up to
    its score (with and without the ", " before it)."""

    def __init__(self, victims):
        att = victims.att
        self.att = att
        ptr, col, self.score = victims.ranked()
        self.ptr = np.ascontiguousarray(ptr, np.int64)
        self.col = np.ascontiguousarray(col, np.int32)
        names, nf = att.nf_groups()
        self.nf = np.ascontiguousarray(nf, np.int64)
        self.nf_text = _texts([b', "nf": ' + json.dumps(x).encode() + b', "latency_ns": '
                               for x in names])
        self.pre_text = _texts([json.dumps(d)[:-1].encode() + b', "score": '
                                for d in att.culprit_dicts()])
        self.packet_id = np.ascontiguousarray(att.packet_id, np.uint64)
        self.latency_ns = np.ascontiguousarray(att.latency_ns, np.int64)
        self.dropped = np.ascontiguousarray(att.dropped, bool).view(np.uint8)
        self._nf_w = int(np.diff(self.nf_text[1]).max(initial=0))
        self._pre_w = int(np.diff(self.pre_text[1]).max(initial=0))

    def block(self, lo, hi):
        """The JSON text of victims lo..hi, as uint8 (after the first: "]}, " first)."""
        a, b = int(self.ptr[lo]), int(self.ptr[hi])
        score = self.score[a:b]
        slow = [json.dumps(x).encode() + b"}"
                for x in score[~(score < _victims_json.FAST_MAX)].tolist()]
        out = np.empty(_victims_json.bound(hi - lo, b - a, self._nf_w, self._pre_w,
                                           max([len(x) for x in slow], default=0)), np.uint8)
        n = _victims_json.victims_text(self.ptr, self.col, self.score, self.packet_id,
                                       self.latency_ns, self.dropped, self.nf, *self.nf_text,
                                       *self.pre_text, *_texts(slow), lo, hi, out)
        return out[:n]



def _culprit_text(c):
    if c["kind"] == "nf":
        return f"{c['nf']} ({c['cause']})"
    if c.get("parts"):
        return f"flows {c['flows']} [{', '.join(c['parts'])}] ({c['cause']})"
    return f"flows {c['flows']} ({c['cause']})"


def _ranked_text(culprits):
    """A victim's culprits, ranked: ``a 570 > b 12``, with ``=`` between
    two of the same score.  Scores are capped at the victim's delay beyond
    the objective, so equal ones are each a whole explanation (the one
    first delayed it more in all); ``>`` between them would read as a
    difference the numbers do not show."""
    out = ""
    for i, c in enumerate(culprits):
        if i:
            out += " = " if c["score"] == culprits[i - 1]["score"] else " > "
        out += f"{_culprit_text(c)} {c['score']:,.0f}"
    return out


def _cause_text(c, cover=None):
    """What culprit `c` (a culprit dict) did; `cover`: the prefix of all
    the source's addresses (Attribution.source_cover), which names a surge
    no narrower prefix held."""
    if c["kind"] == "flows":
        if c.get("parts"):
            return (f"surges from {' and '.join(c['parts'])} together "
                    f"(flows {c['flows']}) above their usual rate")
        if c["flows"] == cover:
            return (f"the traffic as a whole (flows {c['flows']}) above its usual rate, "
                    f"no narrower prefix standing out")
        return f"flows {c['flows']} sent above their usual rate"
    if c["cause"] == "local":
        if c.get("flows"):
            return f"{c['nf']} served flows {c['flows']} slowly"
        return f"{c['nf']} served below its peak rate (stall or lost core)"
    return f"{c['nf']} passed on a burst it received"


#: Victims of one rule further apart than this (and EPISODE_GAPS times
#: their median gap) belong to separate episodes of it: more than the
#: few ms a live host's hiccups pause traffic for.
EPISODE_MIN_GAP_NS = 10_000_000
EPISODE_GAPS = 20


def _episodes(arr):
    """The episodes of a rule's victims, arrival times `arr` (sorted): rows
    (first, last ns) split where the gap between two victims is both
    EPISODE_MIN_GAP_NS or more and EPISODE_GAPS times their median gap: a
    fault that came back (every 200 ms, say) is several, not one span
    across the quiet between."""
    gaps = np.diff(arr)
    if len(gaps) == 0:
        return np.array([[arr[0], arr[-1]]]) if len(arr) else np.zeros((0, 2), np.int64)
    cut = np.flatnonzero(gaps >= max(EPISODE_MIN_GAP_NS, EPISODE_GAPS * np.median(gaps)))
    return np.stack([arr[np.r_[0, cut + 1]], arr[np.r_[cut, len(arr) - 1]]], axis=1)


def _episodes_text(spans, base):
    """"10.016-10.251 ms", or for several episodes "80.068-123.449,
    280.091-323.512, ..., 1,880.102-1,923.916 ms (10 episodes)" (an
    episode of one time as that time)."""
    parts = [f"{(a - base) / 1e6:,.3f}" + (f"-{(b - base) / 1e6:,.3f}" if b > a else "")
             for a, b in spans.tolist()]
    if len(parts) == 1:
        return parts[0] + " ms"
    shown = parts if len(parts) <= 6 else parts[:4] + ["...", parts[-1]]
    return f"{', '.join(shown)} ms ({len(parts)} episodes)"


#: A rule names up to this many stops by the victims that came in by
#: them (:func:`_stops`), each after the first for at least this share.
STOPS_NAMED, STOP_SHARE = 4, 0.02


def _stops(queues, name, arr, downstream=False):
    """The stops of NF `name` that its victims (arrival times `arr`, at it
    or `downstream` of it) came in during or just after, as rows (from,
    to ns, held) in time order, or None: silences (QueueTimeline.silences:
    it stopped polling) or batches it held (QueueTimeline.held: it
    stopped while serving one), twice SILENCE_NS long or more (shorter
    silences are mostly a preempted thread: ~2% of an idle lcore's gaps on
    the bench VM).

    The stop that a quarter of the victims or more came in by, during it
    or within as long again after it (the backlog it left drains about as
    long), twice as long for victims downstream (the released backlog
    reaches them later); then, up to STOPS_NAMED, each that a quarter of
    those left and STOP_SHARE of all came in by (a second stop, one the
    recording ended in, say).  An NF that sleeps when idle, as mscope-nf does
    for 50 us, is silent then too, but few victims come in then; a 20 ms
    contention slows every batch, none ten times over.

    Else a stop that repeats (a periodic timer, a thread descheduled now
    and then: :func:`_repeated_stops`)."""
    q = queues.get(name)
    if q is None or len(arr) == 0:
        return None
    s, held = _long_stops(q)
    if len(s) == 0:
        return None
    arr = np.sort(arr)
    late = 2 if downstream else 1
    d = s[:, 1] - s[:, 0]
    lo = np.searchsorted(arr, s[:, 0], "left")
    hi = np.searchsorted(arr, s[:, 1] + late * d, "right")
    left = np.ones(len(arr), bool)
    picked = []
    for _ in range(STOPS_NAMED):
        # victims not yet by a stop named, per stop
        cs = np.r_[0, np.cumsum(left)]
        came = cs[hi] - cs[lo]
        j = int(np.argmax(came))
        if came[j] < left.sum() / 4 or (picked and came[j] < STOP_SHARE * len(arr)):
            break
        picked.append(j)
        left[lo[j]:hi[j]] = False
    if picked:
        return [(int(s[j, 0]), int(s[j, 1]), bool(held[j])) for j in sorted(picked)]
    return _repeated_stops(q, s, held, arr, late)


def _long_stops(q):
    """The stops of queue `q`'s NF a rule may name: its silences and held
    batches twice SILENCE_NS long or more (shorter silences are mostly a
    preempted thread), as rows (from, to ns), and which are held batches."""
    from mscope.analyzer.ingest import SILENCE_NS
    s = np.concatenate([q.silences, q.held])
    held = np.arange(len(s)) >= len(q.silences)
    long = s[:, 1] - s[:, 0] >= 2 * SILENCE_NS
    return s[long], held[long]


def _repeated_stops(q, s, held, arr, late):
    """Stops that repeat, as :func:`_stops` rows, or None: from the stops
    `s` (rows from, to ns; `held` marks the held batches) of the NF of
    queue `q`, the fewest silences, most victims first, that half the
    victims (arrival times `arr`, sorted) came in by, where they span at
    most an eighth of the time the victims do (victims crowd into them
    fourfold or more) and are two or more.  Silences only: a batch held
    ten times the usual is one stall, but many are a bug's or a
    contention's slowness.  Then every stop half as long as the shortest
    of those or longer that victims came in by, held batches too.

    A victim came in by a stop when it arrived during it, or after it
    while the backlog it left drained: a loaded NF takes many times a
    stop's length to serve its arrivals over the stop at its peak rate
    less its arrival rate (twice that allowed here), though no longer
    than its queue stayed busy; at least as long again as the stop, and
    later by its length again for victims downstream (`late` 2)."""
    d = s[:, 1] - s[:, 0]
    p = np.searchsorted(q.period_start_ns, s[:, 1], "right") - 1
    busy = p >= 0
    drained = np.where(busy, q.period_end_ns[np.maximum(p, 0)], s[:, 1])
    drained[busy & (drained < 0)] = arr[-1]          # still busy at the capture's end
    span = q.step_ns[-1] - q.step_ns[0] if len(q.step_ns) > 1 else 0
    rate = len(q.hops) / span if span > 0 else 0.0  # arrivals per ns
    room = q.peak_rate - rate
    drain = 2 * rate * d / room if room > 0 else np.inf
    end = s[:, 1] + (late - 1) * d + np.clip(drained - s[:, 1], d, np.maximum(drain, d))
    came = np.searchsorted(arr, end, "right") - np.searchsorted(arr, s[:, 0], "left")
    order = np.argsort(-came, kind="stable")
    order = order[(came[order] >= 2) & ~held[order]]

    def cover(m):
        """Victims that came in by the first m of `order`, and the time
        their windows span: both over the windows' union."""
        a, b = s[order[:m], 0], end[order[:m]]
        o = np.argsort(a, kind="stable")
        a, b = a[o], np.maximum.accumulate(b[o])
        first = np.r_[True, a[1:] > b[:-1]]                # a new run of windows
        a, b = a[first], b[np.r_[first[1:], True]]
        n = (np.searchsorted(arr, b, "right") - np.searchsorted(arr, a, "left")).sum()
        return int(n), int((b - a).sum())
    lo, hi = 1, len(order) + 1                              # cover(m) grows with m
    while lo < hi:
        mid = (lo + hi) // 2
        if cover(mid)[0] >= len(arr) / 2:
            hi = mid
        else:
            lo = mid + 1
    if lo < 2 or lo > len(order) or cover(lo)[1] > (arr[-1] - arr[0]) / 8:
        return None
    # half as long: one of 3,140 us among stops of 3,156-3,236 us (the
    # demo's, injected alike) was left out as shorter than the shortest
    pick = np.flatnonzero((d >= d[order[:lo]].min() / 2) & (came >= 2))
    pick = pick[np.argsort(s[pick, 0], kind="stable")]
    return [(a, b, h) for (a, b), h in zip(s[pick].tolist(), held[pick].tolist())]


def _stop_text(nf, stops, usual_batch_ns, base, to_end=None):
    """How :func:`_stops`' `stops` of `nf` read in a rule, times in ms from
    `base` ns: "nat stopped polling for 300 us at 10.000 ms (no records)",
    "nat took 401 us over one batch at 8.000 ms (usually 0.7 us)", "nat
    stopped 6 times for 2,998-3,010 us, at 10.265, 510.280, ... ms (no
    records)"."""
    # a silence to where the NF's records run was still on at the end
    ended = to_end is not None and not stops[-1][2] and stops[-1][1] >= to_end
    if len(stops) == 1:
        a, b, held = stops[0]
        at = (a - base) / 1e6
        if held:
            return (f"{nf} took {(b - a) / 1e3:,.0f} us over one batch at {at:,.3f} ms "
                    f"(usually {usual_batch_ns / 1e3:,.1f} us)")
        return (f"{nf} stopped polling for {(b - a) / 1e3:,.0f} us at {at:,.3f} ms (no records"
                + (", still stopped when the recording ended)" if ended else ")"))
    us = [(b - a) / 1e3 for a, b, _ in stops]
    at = [f"{(a - base) / 1e6:,.3f}" for a, _, _ in stops]
    if len(at) > 6:
        at = at[:4] + ["...", at[-1]]
    n_held = sum(h for _, _, h in stops)
    how = ("no records" if n_held == 0 else "each over one batch" if n_held == len(stops) else
           f"{len(stops) - n_held} with no records, {n_held} over one batch")
    if ended:
        how += "; the last still on when the recording ended"
    return (f"{nf} stopped {len(stops)} times for {min(us):,.0f}-{max(us):,.0f} us, "
            f"at {', '.join(at)} ms ({how})")


def _chain(rule, att, queues, at_nf, base=0, refused=None, top=None):
    """One causal chain: culprit and when -> the victims' queue -> victims.
    `at_nf(name)`: which victims are at NF `name`; times in ms from `base`
    ns; `top`: each victim's top culprit (``att.top()``), whose drops among
    the rule's victims are counted (those the culprit only shares are
    another rule's).  A local culprit that stopped then (:func:`_stops`)
    is named for its stops (:func:`_stop_text`).  `refused`: episodes of packets
    refused at an NF's input that no other record has (the diagnosis'
    ``refused``); those at the victims' NF during their episodes are the
    rule's too, counted with its victims and taken from the list."""
    c, nf = rule["culprit"], rule["victims"]["nf"]
    key = (("nf", c["nf"], c["cause"]) if c["kind"] == "nf"
           else ("flows", c["flows"], c["cause"]))
    j = att.culprits.index(key) if key in att.culprits else None
    at = at_nf(nf)
    sel = at & (att.scores.column(j) > 0) if j is not None else at
    own = sel if j is None or top is None else at & (top == j)
    when, peak, drops = "", "", int(att.dropped[own].sum()) if len(own) else 0
    # when: the victims it is the top culprit of, where it is of any (a
    # long stop's share in a later burst's victims is no episode of it)
    arr = att.arrival_ns[own if own.any() else sel] if att.arrival_ns is not None \
        else np.zeros(0)
    arr = arr[arr >= 0]
    lost = ""
    if len(arr):
        t0, t1 = int(arr.min()), int(arr.max())
        spans = _episodes(np.sort(arr))
        when = " " + _episodes_text(spans, base)
        mine = [e for e in refused or () if e["nf"] == nf and (
            (spans[:, 0] <= e["to_ns"]) & (spans[:, 1] >= e["from_ns"])).any()]
        if mine:
            lost = (f" (+{sum(e['packets'] for e in mine):,} refused at its input, "
                    f"in no other record)")
            refused[:] = [e for e in refused if e not in mine]
        q = queues.get(nf)
        if q is not None and len(q.step_ns):
            a, b = np.searchsorted(q.step_ns, [t0, t1 + 1])
            if b > a:
                peak = f" -> {nf} queue peaked at {int(q.step_len[a:b].max()):,} pkts"
    dropped = f" ({drops:,} dropped)" if drops else ""
    cause = _cause_text(c, att.source_cover)
    stops = (_stops(queues, c["nf"], arr, c["nf"] != nf)
             if len(arr) and c["kind"] == "nf" and c["cause"] == "local" else None)
    if stops:
        # a prefix it served slowly as well, where one stood out: a bug
        # during the stop, or a drain that made one look slow (the stop
        # came first: 1 live run in 25 named only a /17)
        slow = f", and served flows {c['flows']} slowly" if c.get("flows") else ""
        q = queues[c["nf"]]
        cause = _stop_text(c["nf"], stops, q.usual_batch_ns, base,
                           getattr(q, "recorded_to_ns", None)) + slow + ";"
        when = f" victims arrived{when}"
    return (f"{cause}{when}{peak} -> {rule['count']:,} victims at {nf}{lost}"
            f"{dropped} (flows {rule['victims']['flows']}), score {rule['score']:,.0f}")


def _utc(ns):
    """`ns` since the epoch as ``2026-11-27 22:40:01.123456``."""
    t = datetime.datetime.fromtimestamp(ns // 10**9, datetime.timezone.utc)
    return f"{t:%Y-%m-%d %H:%M:%S}.{ns % 10**9 // 1000:06d}"


def _clock_text(c):
    """The summary's line for one host's clock aligned to another's (a
    ``clocks`` entry of the diagnosis JSON).

    >>> print(_clock_text({"host": "b", "aligned_to": "a", "shift_ns": 3_600_000_012_345,
    ...                    "links": [["core", "shaper"]], "packets": 39254,
    ...                    "spread_ns": None}))  # doctest: +NORMALIZE_WHITESPACE
    clocks: b's read 3,600,000.012 ms ahead of a's, aligned by 39,254 packets
    core -> shaper (the shortest wait there read as none)
    """
    links = ", ".join(f"{u} -> {v}" for u, v in c["links"]) + (
        " (found in each host's records)" if c.get("links_inferred") else "")
    how = ("the shortest wait there read as none" if c["spread_ns"] is None else
           f"both ways: within {c['spread_ns'] / 2e3:,.1f} us")
    ahead = "ahead of" if c["shift_ns"] >= 0 else "behind"
    return (f"clocks: {c['host']}'s read {abs(c['shift_ns']) / 1e6:,.3f} ms {ahead} "
            f"{c['aligned_to']}'s, aligned by {c['packets']:,} packets {links} ({how})")


def format_summary(diag, ctx, top=5):
    """A readable summary: counts, top rules, worst victims, incomplete windows."""
    att = ctx["attribution"]
    traj = ctx["traj"]
    v = diag["victims"]
    # from the arrays: a VictimList would make every victim's dict to count
    nd = int(np.count_nonzero(att.dropped))
    lines = [f"{len(traj.packet_id):,} packets, {len(v):,} victims "
             f"({len(v) - nd:,} over {ctx['slo_us']:g} us, {nd:,} dropped), "
             f"{ctx['seconds']:.2f} s"]
    base = ctx.get("time_base_ns", 0)
    if base:
        wall = ctx.get("wall_clock")
        at = "" if wall is None else f"; {_utc(base + wall[1])} UTC by {wall[0]}'s wall clock"
        lines.append(f"times in ms from the capture's first record ({ctx.get('clock')}: "
                     f"{base / 1e6:,.3f} ms{at})")
    if diag.get("hosts"):
        lines.append(f"hosts: only the NFs recorded on {', '.join(diag['hosts'])} (--host)")
    for c in diag.get("clocks") or ():
        lines.append(_clock_text(c))
    if diag.get("window"):
        a, b = ctx.get("window_ms") or (None, None)
        lines.append(f"window: {a or 0:,.3f} ms to {'the end' if b is None else f'{b:,.3f} ms'}"
                     " (--from/--to): only its records; what was under way at its edges reads"
                     " as at a capture's")
        if ctx.get("unindexed_frames", 0) >= UNINDEXED_NOTE:
            lines.append(f"frame index: {ctx['unindexed_frames']:,} frames have none, each read "
                         f"for where it lies; `mscope capture index` on the capture writes it, "
                         f"and its windows then read only the frames near them")
    rate = traj.collision_rate
    if rate:
        per = sorted(((k, n) for n, k in traj.collisions.items() if k), reverse=True)
        lines.append(f"id collisions: {100 * rate:.3g}% of matched entries told apart by time ("
                     + ", ".join(f"{n} {k:,}" for k, n in per[:top]) + ")")
    from mscope.analyzer.topology import SOURCE
    est = traj.arrivals_estimated
    topo = ctx.get("topology")
    # at an NF every recorded: packets in flight as that NF's records began
    # or ended (a live recording's edges), not an unrecorded source's
    edge = {n: k for n, k in est.items() if topo is not None and
            (SOURCE not in topo.upstream.get(n, [SOURCE]) or SOURCE in traj.nf_names)}
    est = {n: k for n, k in est.items() if n not in edge}
    if edge:
        lines.append("packets taken with no recorded tx before them, at the edges of the records "
                     "of the NFs before them (in flight as those began or ended), their arrival "
                     "from the queue occupancy: " + ", ".join(
                         f"{k:,} at {n}" for n, k in edge.items()))
    if est:
        told = {e["nf"] for e in diag.get("refused", ())}
        lines.append("arrivals of packets no recorded tx sent, from the queue occupancy in "
                     "their NF's rx records: " + ", ".join(
                         f"{k:,} at {n}" for n, k in est.items())
                     + ("" if set(est) <= told else
                        " (what a full queue refused there is not in the capture"
                        + (" but where its NIC counted it, below)" if told else ")")))
    unknown = traj.arrivals_unknown
    if unknown:
        lines.append("latency unknown for " + ", ".join(
            f"{k:,} packets starting at {n}" for n, k in unknown.items())
            + " (no recorded tx sent them, and no queue occupancy in the rx records): "
            "victims there only by a drop")
    if diag.get("fate_unknown"):
        lines.append(_fate_text(diag["fate_unknown"], top))
    if diag.get("refused"):
        lines.append(_refused_text(diag["refused"], ctx["queues"], base, top))
    if diag.get("unexplained"):
        lines.append(_unexplained_text(diag["unexplained"], top, ctx["attribution"],
                                       ctx["queues"], base))
    given = ctx.get("peak_rates")
    if given:
        lines.append("peak rates as given: " + ", ".join(
            f"{n} {r * 1e3:,.3f} Mpps" for n, r in sorted(given.items())))
    if not v:
        lines.append("no victims: every packet met the objective")
    if v and not diag["patterns"]:
        from mscope.analyzer.patterns import DEFAULT_THRESHOLD
        thr = ctx.get("pattern_threshold", DEFAULT_THRESHOLD)
        lines.append(f"no rules: no culprit is the top one of {100 * thr:g}% of the victims "
                     f"at one NF (--pattern-threshold {thr:g})")
    if diag["patterns"]:
        lines.append("top rules (culprit -> queue -> victims):")
        names, code = att.nf_groups()

        def at_nf(name):
            return code == names.index(name) if name in names else \
                np.zeros(len(code), bool)
        unseen = [e for e in diag.get("refused", ()) if not e["in_capture"]]
        tops = att.top()
        for r in diag["patterns"][:top]:
            lines.append("  " + _chain(r, att, ctx["queues"], at_nf, base, unseen, tops))
    if v:
        lines.append("worst victims:")
        tot = att.scores.row_sums()
        for i in _largest(tot, top).tolist():
            x = v[i]
            what = "dropped" if x["dropped"] else f"{x['latency_ns'] / 1000:,.1f} us"
            chain = _ranked_text(x["culprits"][:3]) or "unexplained"
            lines.append(f"  packet {x['packet']} at {x['nf']}, {what}: {chain}")
    if diag["incomplete"]:
        lines.append(f"incomplete: {len(diag['incomplete'])} window(s) where records were "
                     f"lost; the diagnosis there stands on less data:")
        for w in diag["incomplete"][:top]:
            lines.append(f"  {w.get('nf')}: {w.get('kind')} {w.get('records')} records, "
                         f"{_ms(w.get('from_ns'), base)} .. {_ms(w.get('to_ns'), base)} ms")
    else:
        lines.append("incomplete: none (no records lost)")
    return "\n".join(lines)


def unexplained_victims(att, traj):
    """The victims with no culprit, per NF, most first: ``{"nf", "victims",
    "late", "dropped_at_queue", "dropped_inside", "flows"}`` (``flows``:
    the prefix covering their sources, where address records gave them).
    Dropped inside is taken and never sent on: with no queue behind it,
    the NF's own choice (a firewall's rule, a policy), not its load."""
    from mscope.analyzer.prefixes import covering_prefix
    top = att.top()
    none = np.flatnonzero(top < 0)
    if not len(none):
        return []
    names, code = att.nf_groups()
    p = att.packet[none]
    last = np.searchsorted(traj.hop_packet, p, side="right") - 1   # hops by packet
    ok = last >= 0
    ok[ok] = traj.hop_packet[last[ok]] == p[ok]
    inside = att.dropped[none] & ok & (traj.hop_rx[np.maximum(last, 0)] >= 0)
    out = []
    for k in np.unique(code[none]).tolist():
        at = code[none] == k
        e = {"nf": names[k], "victims": int(at.sum()),
             "late": int((at & ~att.dropped[none]).sum()),
             "dropped_at_queue": int((at & att.dropped[none] & ~inside).sum()),
             "dropped_inside": int((at & inside).sum())}
        if traj.has_addr:
            src = traj.src_addr[p[at]]
            src = src[src != 0]
            if len(src):
                net, bits = covering_prefix(src)
                e["flows"] = f"{ipaddress.IPv4Address(net)}/{bits}"
        out.append(e)
    return sorted(out, key=lambda e: -e["victims"])


def _unexplained_text(entries, top, att=None, queues=None, base=0):
    """The summary's line on victims no culprit explains; with `att` and
    `queues`, the stops of their NF they came in during (a late victim
    there, say, that no queue and no stop's share explained)."""
    if att is not None:
        names, code = att.nf_groups()
        none = att.top() < 0

    def one(e):
        kinds = [f"{e[k]:,} {w}" for k, w in (("late", "late"),
                                              ("dropped_at_queue", "dropped at its queue"),
                                              ("dropped_inside", "dropped inside it"))
                 if e[k]]
        flows = f", flows {e['flows']}" if e.get("flows") else ""
        stops = None
        if att is not None and att.arrival_ns is not None and e["nf"] in names:
            arr = att.arrival_ns[none & (code == names.index(e["nf"]))]
            stops = _stops(queues, e["nf"], arr[arr >= 0])
        q = queues.get(e["nf"])
        when = f"; {_stop_text(e['nf'], stops, q.usual_batch_ns, base, q.recorded_to_ns)}" \
            if stops else ""
        return f"{e['victims']:,} at {e['nf']} ({', '.join(kinds)}{flows}{when})"
    more = f", and {len(entries) - top} more NFs" if len(entries) > top else ""
    line = (f"no culprit for {sum(e['victims'] for e in entries):,} victims: "
            + "; ".join(one(e) for e in entries[:top]) + more)
    if any(e["dropped_inside"] for e in entries):
        line += (" (dropped inside: taken and never sent on, and no queue nor a full NF "
                 "after it explains it: the NF's own choice, as a firewall rule's, not its "
                 "load)")
    return line


#: How the summary says each window of fate_unknown.
_FATE_WINDOWS = (("before_records", "before its records begin"),
                 ("after_records", "after its records end"),
                 ("in_lost_records", "in its lost records"))


def _fate_text(entries, top):
    """The summary's line on packets whose fate the records cannot tell."""
    parts = [f"{e[key]:,} {'to' if key != 'after_records' else 'at'} {e['nf']} {text}"
             for e in sorted(entries, key=lambda e: -e["packets"])
             for key, text in _FATE_WINDOWS if e.get(key)]
    more = f", and {len(parts) - top} more" if len(parts) > top else ""
    return ("fate unknown, not counted as drops (the records cannot tell whether they were "
            "taken or dropped): " + "; ".join(parts[:top]) + more)


def _refused_text(episodes, queues, base, top):
    """The summary's line on packets refused at an NF's input (the
    diagnosis' ``refused``), per NF, most first, its largest episodes each
    with the longest stop of the NF inside it: "refused at their input
    (the NIC's imissed; in no other record, so not among the victims): fw
    2,132 packets: 1,417 at 19.064-21.500 ms (fw stopped polling for
    1,500 us at 20.000 ms), 715 at ..."."""
    per = {}
    for e in episodes:
        per.setdefault(e["nf"], []).append(e)
    parts = []
    for nf, eps in sorted(per.items(), key=lambda kv: -sum(e["packets"] for e in kv[1])):
        q = queues.get(nf)
        s, held = _long_stops(q) if q is not None else (None, None)
        texts = []
        for e in eps[:3]:
            t = f"{e['packets']:,} at {_ms(e['from_ns'], base)}-{_ms(e['to_ns'], base)} ms"
            if q is not None:
                inside = (s[:, 1] > e["from_ns"]) & (s[:, 0] < e["to_ns"])
                if inside.any():
                    j = int(np.argmax(np.where(inside, s[:, 1] - s[:, 0], -1)))
                    us = f"{(s[j, 1] - s[j, 0]) / 1e3:,.0f} us"
                    how = (f"took {us} over one batch" if held[j]
                           else f"stopped polling for {us}")
                    t += f" ({nf} {how} at {_ms(s[j, 0], base)} ms)"
            texts.append(t)
        if len(eps) > 3:
            rest = eps[3:]
            texts.append(f"{len(rest)} more ({sum(e['packets'] for e in rest):,})")
        ports = sorted({e["port"] for e in eps})
        where = nf if len(ports) == 1 else f"{nf} (ports {', '.join(map(str, ports))})"
        parts.append(f"{where} {sum(e['packets'] for e in eps):,} packets: " + ", ".join(texts))
    if len(parts) > top:
        parts = parts[:top] + [f"{len(parts) - top} NFs more"]
    seen = all(e["in_capture"] for e in episodes)
    return ("refused at their input (the NIC's imissed; "
            + ("among the victims as drops" if seen else
               "in no other record, so not among the victims") + "): " + "; ".join(parts))


def _ms(t_ns, base):
    """A time of the capture as the summary gives it: ms from `base` ns
    ("?" when unknown)."""
    return "?" if t_ns is None else f"{(t_ns - base) / 1e6:,.3f}"


def _largest(x, k):
    """Indices of the `k` largest of `x`, largest first, ties by index:
    ``np.argsort(-x, kind="stable")[:k]`` without sorting all of `x`."""
    if len(x) <= k or np.isnan(x).any():
        return np.argsort(-x, kind="stable")[:k]
    cand = np.flatnonzero(x >= np.partition(x, len(x) - k)[len(x) - k])
    return cand[np.argsort(-x[cand], kind="stable")[:k]]
