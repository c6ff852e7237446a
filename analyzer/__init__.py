"""Everything after the wire: ingest, trajectories, queue timelines,
attribution, patterns, report.  numpy only; no compiled extension needed."""
__all__ = []
