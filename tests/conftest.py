"""Shared fixtures: C programs built from csrc/, ring registries in /dev/shm,
and EAL arguments for short, single-core DPDK runs."""
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
TESTS_C = Path(__file__).resolve().parent / "c"


def have_dpdk():
    return subprocess.run(["pkg-config", "--exists", "libdpdk"]).returncode == 0


def dpdk_flags():
    cflags = subprocess.run(["pkg-config", "--cflags", "libdpdk"], check=True,
                            capture_output=True, text=True).stdout.split()
    libs = subprocess.run(["pkg-config", "--libs", "libdpdk"], check=True,
                          capture_output=True, text=True).stdout.split()
    return cflags, libs


requires_dpdk = pytest.mark.skipif(
    not have_dpdk(),
    reason="DPDK development files not found (pkg-config libdpdk); "
           "install.sh installs them")


class CBuilder:
    """Compile a test program once per session from csrc/ and tests/c/."""

    def __init__(self, outdir):
        self.outdir = outdir
        self.cache = {}

    def __call__(self, name, sources, dpdk=False, sanitize=False):
        key = (name, tuple(sources), dpdk, sanitize)
        if key in self.cache:
            return self.cache[key]
        out = self.outdir / name
        cmd = ["gcc", "-O2", "-g", "-std=gnu11", "-Wall", "-Wextra",
               f"-I{CSRC}", "-o", str(out)]
        if sanitize:
            cmd += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        libs = []
        if dpdk:
            cflags, libs = dpdk_flags()
            cmd += cflags
        cmd += [str(s) for s in sources] + libs
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0:
            pytest.fail(f"compiling {name} failed:\n{proc.stderr}")
        self.cache[key] = out
        return out


@pytest.fixture(scope="session")
def cbuild(tmp_path_factory):
    return CBuilder(tmp_path_factory.mktemp("cbuild"))


@pytest.fixture
def registry():
    """A fresh ring registry in shared memory (rings must not hit a disk)."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
    path = base / f"mscope-test-{uuid.uuid4().hex[:12]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def eal_args():
    """EAL arguments for one short single-process run, and their cleanup."""
    prefix = f"mst{uuid.uuid4().hex[:10]}"
    args = ["--no-huge", "-m", "256", "--no-shconf", f"--file-prefix={prefix}",
            "--no-pci", "-l", "0", "--log-level=warning", "--no-telemetry"]
    yield args
    shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    for f in Path("/dev/hugepages").glob(f"{prefix}*") if Path("/dev/hugepages").is_dir() else []:
        try:
            f.unlink()
        except OSError:
            pass


@pytest.fixture
def producer_exe(cbuild):
    """tests/c/ring_producer.c, built (see tests/producers.py)."""
    return cbuild("ring_producer", [TESTS_C / "ring_producer.c", *recorder_sources()])


def recorder_sources():
    return [CSRC / "mscope_recorder.c", CSRC / "mscope_reader.c"]


def pytest_configure(config):
    os.environ.setdefault("MSCOPE_DIR", "/dev/shm/mscope-test-default")
