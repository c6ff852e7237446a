"""The simulator behind ``mscope simulate``: NF chains described by a
scenario file (SCENARIO.md, mscope.sim.scenario), with injected faults and
counterfactual ground truth."""
