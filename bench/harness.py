"""What the benches share: building the C bench program, a ring registry
on tmpfs, short pinned DPDK runs, --old-lib's A/B variants, percentiles,
JSON lines and tables.

Not a test module and not imported by the package: benchmarks live apart
(STYLE.md) and pytest never collects bench/.
"""
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
FASTPATH_SRC = BENCH / "fastpath" / "fastpath_bench.c"
# The C bench compiles the consumer (mscope_reader.c) in from source, as the
# Cython extension does, so its reader figures are the code the collector
# runs; libmscope.so carries the same file for C consumers.
READER_SRC = ROOT / "csrc" / "mscope_reader.c"
BUILD_DIR = BENCH / "out" / "build"     # bench/out/ is git-ignored

# The EAL arguments the brief and MACHINE-NOTES.md prescribe for a short
# single-process run: no hugepages, no shared config, no PCI, cores 0-1.
EAL_BASE = ["--no-huge", "-m", "256", "--no-shconf", "--no-pci", "-l", "0-1",
            "--log-level=lib.eal:warning"]


def native_paths():
    """(libmscope.so, include dir) of the installed (editable) package."""
    try:
        import mscope.paths as paths
    except ImportError:          # not installed: use the source tree
        sys.path.insert(0, str(ROOT / "src"))
        import mscope.paths as paths
    return paths.libmscope(), paths.include_dir()


def have_dpdk():
    return subprocess.run(["pkg-config", "--exists", "libdpdk"]).returncode == 0


def pkg_config(*args):
    return subprocess.run(["pkg-config", *args, "libdpdk"], check=True,
                          capture_output=True, text=True).stdout.split()


def build_fastpath(verbose=False):
    """Compile bench/fastpath/fastpath_bench.c (-O2) and return its path.

    Against src/mscope/_native/include and libmscope.so (rpath set), with the
    rte_mbuf part when pkg-config finds libdpdk.  Rebuilt on every call: it
    takes under a second and the library may have changed under us.
    """
    lib, inc = native_paths()
    if not lib.exists():
        raise SystemExit(f"{lib} not found: build mscope first (pip install -e .)")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    out = BUILD_DIR / "fastpath_bench"
    cmd = ["gcc", "-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", f"-I{inc}",
           "-o", str(out), str(FASTPATH_SRC), str(READER_SRC),
           f"-L{lib.parent}", "-lmscope", f"-Wl,-rpath,{lib.parent}", "-lpthread"]
    if have_dpdk():
        cmd[1:1] = ["-DMSCOPE_BENCH_DPDK", *pkg_config("--cflags")]
        cmd += pkg_config("--libs")
    if verbose:
        print(" ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    return out


@contextmanager
def ring_registry():
    """A temporary registry directory on tmpfs, removed afterwards."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = tempfile.mkdtemp(prefix="mscope-bench-", dir=base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def eal_args(tag):
    """EAL arguments with a file prefix unique to this process and tag."""
    prefix = f"mscope-bench-{os.getpid()}-{tag}"
    return prefix, [*EAL_BASE, f"--file-prefix={prefix}"]


def remove_eal_runtime(prefix):
    """Remove /var/run/dpdk/<prefix> (and a hugepage leftover, if any) of a
    run we started; never anything else."""
    for path in (Path("/var/run/dpdk") / prefix,
                 Path(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent")) / "dpdk" / prefix):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
    hp = Path("/dev/hugepages")
    if hp.is_dir():
        for f in hp.glob(f"{prefix}map_*"):
            f.unlink(missing_ok=True)


# --old-lib (bench/overhead.py, bench/ovs.py): an A/B of two libmscope
# builds in one run.  Every variant that loads libmscope also runs as
# "<variant>-old" with the old build, next to it in the run order, so the
# two share the machine's state.
OLD_SUFFIX = "-old"


def with_old_lib(variants, old_lib, unattached=("plain",)):
    """The variants to run: each followed by its "-old" twin when old_lib is
    given, except those in `unattached` (they load no libmscope)."""
    if not old_lib:
        return list(variants)
    return [x for v in variants for x in ((v,) if v in unattached else (v, v + OLD_SUFFIX))]


def variant_library(variant, old_lib):
    """(the variant without "-old", the libmscope.so it runs with): old_lib
    for a twin, this build's otherwise."""
    if variant.endswith(OLD_SUFFIX):
        return variant[:-len(OLD_SUFFIX)], old_lib
    return variant, native_paths()[0]


def run_json_lines(cmd, timeout=300, tag=None):
    """Run a command, return its stdout parsed as JSON lines.

    Non-JSON stdout lines are echoed to stderr; a non-zero exit raises.
    """
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    rows = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            print(line, file=sys.stderr)
            continue
        if tag is not None:
            row["config"] = tag
        rows.append(row)
    noise = [l for l in proc.stderr.splitlines()
             if "legacy socket not created" not in l]
    if noise:
        print("\n".join(noise), file=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}")
    return rows


def percentiles(values):
    """(median, p10, p90) of a sequence."""
    v = np.asarray(values, dtype=float)
    p10, med, p90 = np.percentile(v, [10, 50, 90])
    return float(med), float(p10), float(p90)


def least_squares(xs, ys):
    """(intercept, slope) of the least-squares line through the points."""
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(intercept), float(slope)


def r_squared(xs, ys, intercept, slope):
    """Share of the variance of ys the line explains (1: a perfect fit)."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    ss_res = float(((y - (intercept + slope * x)) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot else 1.0


def machine_info():
    """nproc, CPU model, kernel: the facts a figure needs beside it."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model,
            "kernel": platform.release(), "python": platform.python_version(),
            "numpy": np.__version__}


def cpu_busy_share(seconds=0.5):
    """Share of all CPUs' time spent non-idle over `seconds`, from
    /proc/stat: other people's jobs on a 2-vCPU machine skew every figure,
    so the drivers record this before they start and warn above 10%."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v[:8]), idle
    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except OSError:
        return None
    return 1.0 - (i1 - i0) / (t1 - t0) if t1 > t0 else None


def wait_idle(max_seconds, threshold=0.10):
    """Sample cpu_busy_share until it is below `threshold` or `max_seconds`
    have passed; return the last share (None where /proc/stat is missing)."""
    deadline = time.monotonic() + max_seconds
    while True:
        share = cpu_busy_share(0.3)
        if share is None or share < threshold or time.monotonic() >= deadline:
            return share


def warn_if_busy(share):
    if share is not None and share > 0.10:
        print(f"warning: the machine was {share:.0%} busy before the run (other "
              "processes); figures will be noisy: rerun when idle", file=sys.stderr)


def emit(row, stream=sys.stdout):
    print(json.dumps(row, sort_keys=False), file=stream, flush=True)


def table(headers, rows, title=None):
    """Print rows (lists) under headers, columns right-aligned except the first."""
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    if title:
        print(f"\n{title}")
    for k, r in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def fmt(c):
    if isinstance(c, float):
        if abs(c) >= 1e6:
            return f"{c / 1e6:.1f}M"
        return f"{c:.1f}" if abs(c) >= 10 else f"{c:.2f}"
    return str(c)


def pin_self(cpu):
    """Pin this process to one CPU; returns False where that is not allowed."""
    try:
        os.sched_setaffinity(0, {cpu})
        return True
    except (AttributeError, OSError):
        return False
