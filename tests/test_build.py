"""libmscope builds with and without DPDK; the analyzer side needs neither
DPDK nor the compiled extension."""
import subprocess
import sys

from conftest import CSRC, requires_dpdk


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_libmscope_builds_without_dpdk(tmp_path):
    """With pkg-config unable to find DPDK, the ring and raw recorder still
    build; the rte_mbuf API is simply absent."""
    proc = subprocess.run(["make", "-C", str(CSRC), f"OUT={tmp_path}", "PKGCONF=false"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    syms = exported(tmp_path / "libmscope.so")
    assert {"mscope_open", "mscope_close", "mscope_record_ids"} <= syms
    assert "mscope_rx" not in syms
    assert not (tmp_path / "bin" / "mscope-demo-fwd").exists()
    assert (tmp_path / "include" / "mscope_record.h").exists()


@requires_dpdk
def test_libmscope_builds_with_dpdk(tmp_path):
    proc = subprocess.run(["make", "-C", str(CSRC), f"OUT={tmp_path}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    syms = exported(tmp_path / "libmscope.so")
    assert {"mscope_rx", "mscope_tx", "mscope_mbuf_pktid", "mscope_record_ids"} <= syms
    assert (tmp_path / "bin" / "mscope-demo-fwd").exists()


BLOCK_NATIVE = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith(("mscope.collector", "zmq")) or name == "elftools":
            raise ImportError(f"blocked for this test: {name}")
sys.meta_path.insert(0, Block())
"""


def test_analyzer_imports_without_compiled_extension():
    code = BLOCK_NATIVE + "import mscope.analyzer, mscope.capture, mscope.record\nprint('ok')\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
