"""Build mscope: the Python package, the Cython ring reader and libmscope.

libmscope (C, csrc/) is built by csrc/Makefile against DPDK when
`pkg-config libdpdk` finds it, and without the rte_mbuf API otherwise; it
lands in src/mscope/_native/ beside its headers and the demo forwarder.
"""
import os
import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext

ROOT = Path(__file__).parent.resolve()


class build_ext(_build_ext):
    """Build the Cython extensions, then libmscope with csrc/Makefile."""

    def finalize_options(self):
        super().finalize_options()
        # the extensions side by side, one per CPU (pip passes no -j):
        # the analyzer's at -O3 are most of an install's build time
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self):
        super().run()
        if self.inplace or getattr(self, "editable_mode", False):
            out = ROOT / "src" / "mscope" / "_native"
        else:
            out = Path(self.build_lib).resolve() / "mscope" / "_native"
        subprocess.run(["make", "-C", str(ROOT / "csrc"), f"OUT={out}",
                        f"-j{os.cpu_count() or 1}"], check=True)


# The analyzer's kernels (and the capture checks and victims' JSON they
# feed) at -O3: bench/analyze.py's one-core run 1.08x median over median
# against -O2, kernels ~9% less time (docs/benchmarks.md, twentieth
# session).  It changes no floating-point result: GCC reorders no float
# operation without -ffast-math, and -ffp-contract=off (where set) keeps
# out fused multiply-adds, so the diagnosis is the same to the bit.
_ANALYZER_OPT = "-O3"

setup(
    name="mscope",
    version="0.1.0",
    description="Queue-based performance diagnosis for DPDK network-function chains",
    python_requires=">=3.9",
    packages=["mscope", "mscope.capture", "mscope.collector", "mscope.analyzer", "mscope.sim",
              "mscope.testbed", "mscope.ovs"],
    # src/ layout: a `python` started in the repository root must not find a
    # half package (no collector/analyzer) under ./mscope.
    package_dir={"mscope": "src/mscope", "mscope.collector": "collector",
                 "mscope.analyzer": "analyzer"},
    package_data={"mscope": ["_native/*.so", "_native/include/*.h", "_native/bin/*"]},
    ext_modules=[Extension(
        "mscope.collector._ringreader",
        sources=["collector/_ringreader.pyx", "csrc/mscope_reader.c"],
        include_dirs=["csrc"],
        extra_compile_args=["-O2", "-std=gnu11"],
    ), Extension(
        "mscope.sim._nfloop",
        sources=["src/mscope/sim/_nfloop.pyx"],
        extra_compile_args=["-O2"],
    ), Extension(
        # the analyzer's id matching (hash join) and path walk
        "mscope.analyzer._match",
        sources=["analyzer/_match.pyx"],
        extra_compile_args=[_ANALYZER_OPT],
    ), Extension(
        # the attribution's scans and scores; no fused multiply-add, so the
        # scores are the numpy formulas' to the last bit
        "mscope.analyzer._attrib",
        sources=["analyzer/_attrib.pyx"],
        extra_compile_args=[_ANALYZER_OPT, "-ffp-contract=off"],
    ), Extension(
        # SourceRates' per-window search and the slow-flow regression's
        # passes; no fused multiply-add, so the same prefix wins as in numpy
        "mscope.analyzer._prefix",
        sources=["analyzer/_prefix.pyx"],
        extra_compile_args=[_ANALYZER_OPT, "-ffp-contract=off"],
    ), Extension(
        # stage 1's expansion of a stream into per-packet arrays; optional at
        # run time (ingest falls back to numpy without it)
        "mscope.analyzer._ingest",
        sources=["analyzer/_ingest.pyx"],
        extra_compile_args=[_ANALYZER_OPT],
    ), Extension(
        # the checks of a decoded frame's records in one pass; optional at
        # run time (mscope.capture.format falls back to numpy without it)
        "mscope.capture._checks",
        sources=["src/mscope/capture/_checks.pyx"],
        extra_compile_args=[_ANALYZER_OPT],
    ), Extension(
        # the victims' JSON text, straight from the attribution's arrays
        "mscope._victims_json",
        sources=["src/mscope/_victims_json.pyx"],
        extra_compile_args=[_ANALYZER_OPT],
    ), Extension(
        # numpy's memory handler during a diagnosis: freed large arrays'
        # pages kept for the next ones; optional (analyzer/pages.py)
        "mscope.analyzer._pages",
        sources=["analyzer/_pages.pyx"],
        extra_compile_args=[_ANALYZER_OPT],
    )],
    cmdclass={"build_ext": build_ext},
    install_requires=[
        "numpy>=1.22",
        "msgpack>=1.0",
        "pyzmq>=25",
        "zstandard>=0.21",
        "lz4>=4.0",
        "pyelftools>=0.29",
        "prometheus-client>=0.17",
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6.80"]},
    entry_points={"console_scripts": ["mscope=mscope.cli:main",
                                     "mscope-collect=mscope.collector.daemon:main"]},
    zip_safe=False,
)
