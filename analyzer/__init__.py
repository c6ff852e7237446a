"""Everything after the wire: ingest, trajectories, queue timelines,
attribution, patterns, report.  numpy, and Cython where a loop cannot be
vectorised (_match: id matching as a hash join, the path walk); ingest
itself reads a capture with numpy alone.

Stages built so far (docs/analyzer.md): ``load`` (ingest) ->
``infer_topology`` -> ``build_trajectories`` -> ``queue_timelines`` ->
``attribute`` -> ``find_patterns`` (``mscope diagnose`` runs them all).
"""
from .ingest import CaptureView, NFRecords, load
from .queues import QueueTimeline, queue_timelines
from .topology import Topology, TopologyError, infer_topology
from .trajectories import Trajectories, build_trajectories
from .attribution import Attribution, attribute
from .patterns import find_patterns

__all__ = ["load", "CaptureView", "NFRecords",
           "infer_topology", "Topology", "TopologyError",
           "build_trajectories", "Trajectories",
           "queue_timelines", "QueueTimeline",
           "attribute", "Attribution", "find_patterns"]
