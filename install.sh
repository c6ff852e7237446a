#!/bin/sh
# Install everything mscope needs on a fresh Debian 12 machine and build it
# into ./.venv: Debian packages (DPDK 22.11, compiler, pkg-config, venv),
# 2 MiB hugepages, then `pip install .[test]`.  Safe to run again.
set -eu
cd "$(dirname "$0")"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

missing=""
for pkg in dpdk dpdk-dev libdpdk-dev dpdk-doc libssl-dev openvswitch-switch-dpdk pkg-config build-essential python3 python3-venv python3-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "install.sh: installing Debian packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# Hugepages for multi-process DPDK chains (single-process runs use --no-huge).
# Best effort: a container may not let us; the tests that need them say so.
if [ "$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)" -lt 256 ]; then
    echo 256 | $SUDO tee /proc/sys/vm/nr_hugepages >/dev/null 2>&1 \
        || echo "install.sh: warning: could not reserve hugepages"
fi
if [ -d /dev/hugepages ] || $SUDO mkdir -p /dev/hugepages 2>/dev/null; then
    mountpoint -q /dev/hugepages || $SUDO mount -t hugetlbfs nodev /dev/hugepages 2>/dev/null \
        || echo "install.sh: warning: could not mount hugetlbfs on /dev/hugepages"
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q ".[test]"
echo "install.sh: mscope installed in $(pwd)/.venv"
