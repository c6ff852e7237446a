"""`mscope inspect BINARY`: can `mscope attach` record this program? Read
from its ELF file with pyelftools (issue 6, item 1). Programs are built here
with gcc and pkg-config, dynamically and statically against Debian's DPDK."""
import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

from conftest import dpdk_flags, requires_dpdk
from mscope.inspect_binary import _decode_return_constant, inspect_binary

MSCOPE = [sys.executable, "-m", "mscope.cli"]
TESTPMD = shutil.which("dpdk-testpmd")
STATIC_ETHDEV = "/usr/lib/x86_64-linux-gnu/librte_ethdev.a"

APP = r"""
#include <stdio.h>
#include <rte_eal.h>
#include <rte_ethdev.h>

int main(int argc, char **argv)
{
	uint16_t port;

	if (rte_eal_init(argc, argv) < 0)
		return 1;
	RTE_ETH_FOREACH_DEV(port)
		rte_eth_dev_start(port);
	printf("%u ports\n", rte_eth_dev_count_avail());
	return rte_eal_cleanup();
}
"""

NO_ETHDEV_APP = r"""
#include <rte_eal.h>
int main(int argc, char **argv) { return rte_eal_init(argc, argv) < 0; }
"""

STAND_IN = r"""
/* Stands for DPDK linked into the object: it defines rte_eth_dev_start. */
int rte_eth_dev_start(unsigned short port_id) { return port_id ? -19 : 0; }
int rte_eth_dev_configure(unsigned short port_id) { return rte_eth_dev_start(port_id); }
"""


def run(*args):
    return subprocess.run([*MSCOPE, "inspect", *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def gcc(out, source, *flags):
    src = out.with_suffix(".c")
    src.write_text(source)
    proc = subprocess.run(["gcc", "-O2", "-o", str(out), str(src), *flags],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def static_dpdk_libs():
    """The -lrte_* libraries `pkg-config --static --libs libdpdk` names, taken
    from their static archives (-Wl,-Bstatic); the system libraries they need
    stay shared. The --whole-archive driver list is left out: this program
    starts no device, so it needs no PMD, and linking every PMD needs
    libraries not installed here (the examples' `make static` stops at
    -lsystemd)."""
    out = subprocess.run(["pkg-config", "--static", "--libs", "libdpdk"], check=True,
                         capture_output=True, text=True).stdout.split()
    rte = [t for t in out if t.startswith("-lrte_")]
    return ["-Wl,-Bstatic", *rte, "-Wl,-Bdynamic",
            "-lnuma", "-lbsd", "-lpthread", "-ldl", "-lm", "-latomic"]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return tmp_path_factory.mktemp("inspect")


def last_line(text):
    return text.strip().splitlines()[-1]


def one_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def as_json(path):
    proc = run("--json", path)
    return proc, json.loads(proc.stdout)


@requires_dpdk
@pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk)")
def test_testpmd_can_be_attached():
    proc = run(TESTPMD)
    assert proc.returncode == 0, proc.stderr
    assert last_line(proc.stdout) == "attach: yes"
    assert proc.stderr == ""
    proc, r = as_json(TESTPMD)
    assert proc.returncode == 0 and r["attach"] is True and r["reason"] is None
    assert r["elf"]["kind"] in ("pie executable", "executable")
    assert r["elf"]["linkage"] == "dynamic"
    assert r["dpdk"]["linkage"] == "dynamic"
    assert "librte_ethdev.so.23" in r["dpdk"]["libraries"]
    assert r["dpdk"]["abi"] == 23 and r["dpdk"]["release"] == "22.11"
    assert r["dpdk"]["version"].startswith("22.11.")        # Debian: 22.11.x
    assert "librte_eal" in r["dpdk"]["version_from"]
    start = r["rte_eth_dev_start"]
    assert start["status"] == "imported" and start["imported_by"] == [TESTPMD]
    assert start["version"] == "DPDK_23 (librte_ethdev.so.23)"
    assert os.path.basename(start["provider"]).startswith("librte_ethdev.so.23")
    assert r["callbacks"]["rte_eth_add_rx_callback"] is True
    assert r["callbacks"]["rte_eth_add_tx_callback"] is True


@requires_dpdk
def test_program_linking_dpdk_dynamically_can_be_attached(build):
    cflags, libs = dpdk_flags()
    app = gcc(build / "app_dynamic", APP, *cflags, *libs)
    proc, r = as_json(app)
    assert proc.returncode == 0, proc.stderr
    assert r["attach"] is True and r["verdict"] == "attach: yes"
    assert r["elf"]["stripped"] is False
    assert r["elf"]["arch"] == {"x86_64": "x86-64", "aarch64": "aarch64"}.get(
        platform.machine(), r["elf"]["arch"])
    assert {"librte_ethdev.so.23", "librte_eal.so.23"} <= set(r["dpdk"]["libraries"])
    assert r["rte_eth_dev_start"]["status"] == "imported"
    assert r["dpdk"]["abi"] == 23
    # Stripping changes nothing the loader uses.
    stripped = build / "app_dynamic_stripped"
    subprocess.run(["strip", "-o", str(stripped), str(app)], check=True)
    proc, r = as_json(stripped)
    assert proc.returncode == 0 and r["elf"]["stripped"] is True


@requires_dpdk
@pytest.mark.skipif(not os.path.exists(STATIC_ETHDEV),
                    reason="DPDK's static archives are not installed (librte_ethdev.a)")
def test_program_linking_dpdk_statically_is_refused(build):
    """The same program linked against DPDK's static archives: its own
    rte_eth_dev_start is called directly, LD_PRELOAD cannot get in between.
    Stripped, the symbol is gone but EAL's text still gives DPDK away."""
    cflags, _ = dpdk_flags()
    app = gcc(build / "app_static", APP, *cflags, *static_dpdk_libs())
    proc = run(app)
    assert proc.returncode == 1
    verdict = last_line(proc.stdout)
    assert verdict.startswith("attach: no — DPDK is linked statically")
    assert "docs/recorder.md" in verdict
    err = one_line(proc.stderr)
    assert err.startswith(f"mscope: cannot attach to {app}: DPDK is linked statically")
    assert "docs/recorder.md" in err
    proc, r = as_json(app)
    assert proc.returncode == 1 and r["attach"] is False
    assert r["dpdk"]["linkage"] == "static" and r["dpdk"]["libraries"] == []
    assert r["rte_eth_dev_start"]["status"] == "defined"
    assert r["dpdk"]["version"].startswith("22.11.") and r["dpdk"]["abi"] == 23

    stripped = build / "app_static_stripped"
    subprocess.run(["strip", "-o", str(stripped), str(app)], check=True)
    proc, r = as_json(stripped)
    assert proc.returncode == 1 and r["dpdk"]["linkage"] == "static"
    assert r["elf"]["stripped"] is True
    assert "linked statically" in r["reason"]


def test_object_defining_rte_eth_dev_start_is_refused(build):
    """A stand-in for static DPDK that needs no DPDK at all: a shared object
    and an executable that define rte_eth_dev_start themselves."""
    for name, flags in (("standin.so", ["-shared", "-fPIC"]), ("standin", [])):
        source = STAND_IN + ("" if flags else "int main(void) { return rte_eth_dev_configure(0); }\n")
        obj = gcc(build / name, source, *flags)
        proc, r = as_json(obj)
        assert proc.returncode == 1, proc.stderr
        assert r["rte_eth_dev_start"]["status"] == "defined"
        assert r["reason"].startswith("DPDK is linked statically (rte_eth_dev_start is "
                                      "defined inside the binary)")
        assert "docs/recorder.md" in r["advice"]
        assert r["elf"]["kind"] in (("shared object",) if flags
                                    else ("pie executable", "executable"))


@requires_dpdk
def test_dpdk_program_without_ethdev_ports_is_refused(build):
    cflags, libs = dpdk_flags()
    app = gcc(build / "app_no_ethdev", NO_ETHDEV_APP, *cflags, *libs)
    proc, r = as_json(app)
    assert proc.returncode == 1
    assert r["dpdk"]["linkage"] == "dynamic" and r["rte_eth_dev_start"]["status"] == "absent"
    assert "never calls rte_eth_dev_start" in r["reason"]


@requires_dpdk
def test_libmscope_built_for_another_dpdk_abi_is_refused(build):
    """libmscope needs librte_ethdev.so.N; a program on another ABI would
    load two ethdev libraries."""
    fake_ethdev = gcc(build / "librte_ethdev.so.24", "int rte_eth_dev_count_avail(void) "
                      "{ return 0; }\n", "-shared", "-fPIC",
                      "-Wl,-soname,librte_ethdev.so.24")
    fake_ms = gcc(build / "libmscope_abi24.so", "int f(void) { return 0; }\n", "-shared",
                  "-fPIC", "-Wl,--no-as-needed", str(fake_ethdev))
    cflags, libs = dpdk_flags()
    app = gcc(build / "app_dynamic", APP, *cflags, *libs)
    r = inspect_binary(app, libmscope=fake_ms)
    assert r["attach"] is False and r["libmscope"]["abi"] == 24
    assert "built against DPDK ABI 24, the program uses ABI 23" in r["reason"]
    assert inspect_binary(app)["attach"] is True          # the installed libmscope


def test_program_without_dpdk_is_refused():
    proc = run("/bin/true")
    assert proc.returncode == 1
    assert last_line(proc.stdout).startswith("attach: no — it does not use DPDK ethdev")
    err = one_line(proc.stderr)
    assert err.startswith("mscope: cannot attach to /bin/true: it does not use DPDK ethdev")
    proc, r = as_json("/bin/true")
    assert r["attach"] is False and r["dpdk"]["linkage"] == "none"
    assert r["rte_eth_dev_start"]["status"] == "absent"
    assert r["elf"]["linkage"] == "dynamic" and r["needed"]


def test_usage_errors_exit_2_with_one_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a program\n")
    truncated = tmp_path / "truncated"
    truncated.write_bytes(open("/bin/true", "rb").read()[:200])
    for path, words in ((text, "not an ELF file"), (tmp_path / "nope", "No such file"),
                        (truncated, "not a readable ELF file"), (tmp_path, "is a directory")):
        proc = run(path)
        assert proc.returncode == 2, (path, proc.stderr)
        assert proc.stdout == ""
        err = one_line(proc.stderr)
        assert err.startswith(f"mscope: error: {path}") and words in err
        assert run("--json", path).returncode == 2


def test_help_has_an_example():
    proc = run("--help")
    assert proc.returncode == 0 and "example: mscope inspect" in proc.stdout


def test_version_constants_are_read_from_function_bodies():
    """rte_version_year() and friends are `return N;`: x86-64 and aarch64."""
    assert _decode_return_constant(bytes([0xB8, 22, 0, 0, 0, 0xC3, 0, 0]), "x86-64", True) == 22
    mov_w0_11 = (0x52800000 | (11 << 5)).to_bytes(4, "little")
    ret = (0xD65F03C0).to_bytes(4, "little")
    assert _decode_return_constant(mov_w0_11 + ret, "aarch64", True) == 11
    assert _decode_return_constant(b"\x55\x48\x89\xe5\xc3\x00\x00\x00", "x86-64", True) is None
