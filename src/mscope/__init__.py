"""mscope: queue-based performance diagnosis for DPDK network-function chains.

Subpackages: ``mscope.collector`` (ring reader, mscope-collect),
``mscope.capture`` (the capture directory format), ``mscope.analyzer``
(everything after the wire).  The analyzer and capture reader need numpy
only; the ring reader needs the compiled extension.
"""
__version__ = "0.1.0"
__all__ = ["__version__"]
