"""Where the installed native parts of mscope live."""
from pathlib import Path

__all__ = ["native_dir", "libmscope", "include_dir", "demo_forwarder"]


def native_dir() -> Path:
    """Directory holding libmscope.so, include/ and bin/."""
    return Path(__file__).resolve().parent / "_native"


def libmscope() -> Path:
    return native_dir() / "libmscope.so"


def include_dir() -> Path:
    return native_dir() / "include"


def demo_forwarder() -> Path:
    """The DPDK demo forwarder (built only where DPDK was found)."""
    return native_dir() / "bin" / "mscope-demo-fwd"
