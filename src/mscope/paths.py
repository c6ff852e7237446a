"""Where the installed native parts of mscope live."""
import os
from pathlib import Path

__all__ = ["native_dir", "libmscope", "plugin_library", "include_dir", "demo_forwarder",
           "sample_nf",
           "testbed_program", "ovs_vswitchd"]


def native_dir() -> Path:
    """Directory holding libmscope.so, include/ and bin/."""
    return Path(__file__).resolve().parent / "_native"


def libmscope() -> Path:
    return native_dir() / "libmscope.so"


def _world_writable_above(path: Path):
    for d in [path, *path.parents]:
        if d.exists() and d.stat().st_mode & 0o002:
            return d
    return None


def plugin_library() -> Path:
    """libmscope.so at a path EAL's ``-d`` accepts.

    EAL refuses a plugin with a world-writable directory above it (an
    install under /tmp, say).  Then this is a private copy in
    ``~/.cache/mscope/plugin`` (mode 0700), refreshed when the installed
    library changes.

    Raises
    ------
    MscopeError
        No such place either (the home directory is world-writable too).
    """
    from mscope.errors import MscopeError
    lib = libmscope()
    if _world_writable_above(lib) is None:
        return lib
    base = Path.home() / ".cache" / "mscope" / "plugin"
    bad = _world_writable_above(base.parent.parent)
    if bad is not None:
        raise MscopeError(f"EAL refuses -d {lib}: {bad} is world-writable, and so is the "
                          f"home directory's path; use attach without --plugin")
    base.mkdir(parents=True, exist_ok=True)
    for d in (base, base.parent):
        d.chmod(0o700)
    copy = base / "libmscope.so"
    st = lib.stat()
    if not copy.exists() or copy.stat().st_size != st.st_size or \
            copy.stat().st_mtime_ns != st.st_mtime_ns:
        import shutil
        tmp = base / f".libmscope.so.{os.getpid()}"
        shutil.copy2(lib, tmp)
        os.replace(tmp, copy)            # a running app keeps its mapping
    return copy


def include_dir() -> Path:
    return native_dir() / "include"


def demo_forwarder() -> Path:
    """The DPDK demo forwarder (built only where DPDK was found)."""
    return native_dir() / "bin" / "mscope-demo-fwd"


def sample_nf() -> Path:
    """mscope-nf, the sample NFs (csrc/nfs/; built where DPDK and libcrypto were found)."""
    return native_dir() / "bin" / "mscope-nf"


def testbed_program(role) -> Path:
    """The testbed's programs (csrc/testbed/): role is primary, source, sink or hog."""
    return native_dir() / "bin" / f"mscope-tb-{role}"


def ovs_vswitchd() -> Path:
    """The DPDK build of ovs-vswitchd (Debian's openvswitch-switch-dpdk): the
    ``ovs-vswitchd`` alternative may point at the non-DPDK build."""
    return Path("/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk")
