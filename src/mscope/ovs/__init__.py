"""A scenario's chain behind OVS-DPDK, recorded end to end (docs/ovs.md).

`ovs_up` starts ovsdb-server and ovs-vswitchd-dpdk in a private run
directory with libmscope preloaded (OVS records as the NF "ovs", one port
number per vhost-user port), a netdev bridge with one vhost-user port per
NF side, explicit OpenFlow rules along the chain, and the sample NFs and
sink in port mode (virtio-user); `ovs_down` stops all of it and removes
what it left.  `run_ovs` does both around one scenario run: traffic,
faults, capture and window-labelled truth, as `mscope testbed run`.
"""
from .plan import OVS_NAME, SINK_NAME
from .run import ensure_hugepages, load_ovs_scenario, ovs_down, ovs_up, run_ovs
from .truth import ovs_window_truth

__all__ = ["ovs_up", "ovs_down", "run_ovs", "ovs_window_truth", "load_ovs_scenario",
           "ensure_hugepages", "OVS_NAME", "SINK_NAME"]
