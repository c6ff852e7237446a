"""The live testbed: a scenario (SCENARIO.md) run on real DPDK processes.

`run_testbed` starts a DPDK primary (mbuf pool, rte_rings, control
memzone), one secondary per NF (``mscope-nf``, csrc/nfs/), a source and a
sink (csrc/testbed/), and mscope-collect writing the capture; injects the
scenario's faults at their times; and writes truth.json with window labels
beside the capture.  See docs/testbed.md.
"""
from .plan import SINK_NAME, TESTBED_NF_TYPES
from .run import check_hugepages, run_testbed
from .truth import window_truth

__all__ = ["run_testbed", "window_truth", "check_hugepages", "TESTBED_NF_TYPES", "SINK_NAME"]
