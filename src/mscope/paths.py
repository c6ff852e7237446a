"""Where the installed native parts of mscope live."""
from pathlib import Path

__all__ = ["native_dir", "libmscope", "include_dir", "demo_forwarder", "sample_nf",
           "testbed_program", "ovs_vswitchd"]


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
