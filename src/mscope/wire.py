"""What mscope-collect sends to `mscope receive` over ZeroMQ.

One ZeroMQ message per chunk, two parts:

1. ``meta``: a msgpack map describing where the chunk comes from (see
   :func:`make_meta`).  Every message carries it whole, so a receiver that
   restarts, or a message that arrives first after a reconnect, needs no
   earlier handshake: ZeroMQ drops what was in flight to a peer that went
   away, and a protocol that relied on a one-time "hello" would lose it.
   It is ~150 bytes against chunks of tens of kilobytes.
2. ``frame``: one capture frame exactly as written to a segment file
   (mscope.capture.format.encode_frame), its ``stream`` field the
   collector's own stream number.  The receiver maps (collector, stream)
   to a stream of its capture and rewrites that field.

A collector is identified by a random id chosen at start-up, so two
collectors on one host, or one restarted, never share streams.
"""
import ipaddress
import re

import msgpack

from mscope.errors import MscopeError

__all__ = ["WIRE_VERSION", "WireFormatError", "make_meta", "encode_message",
           "decode_message", "META_KEYS", "is_loopback_host"]

WIRE_VERSION = 1

#: Required meta keys and their types.
META_KEYS = {
    "v": int,                # WIRE_VERSION
    "collector": str,        # random id of the collector process (hex)
    "host": str,             # host name as the collector knows it
    "tsc_hz": (float, type(None)),   # the collector's calibrated TSC rate
    "stream": int,           # the collector's stream number (= frame's stream)
    "nf_id": int,
    "nf_name": str,
    "lcore": int,
    "pid": int,              # the NF process
    "ring": str,             # ring file path on the collector's host
    "dropped_chunks": int,   # chunks of this stream the collector dropped so far
    "dropped_records": int,  # records in them
}

#: Optional meta keys (a collector from before them sends none), checked
#: where present: type, and the range a u32 ring header field can hold.
OPTIONAL_META_KEYS = {
    "idle_ns": int,          # the ring's idle-poll interval, 0: none
    "recorded_until_ns": int,   # the stream's records are whole up to then
    "realtime_offset_ns": int,  # the host's CLOCK_REALTIME less its CLOCK_MONOTONIC
}
#: The range each optional key's value must lie in.
_OPTIONAL_RANGE = {"idle_ns": (2**32, "a u32"), "recorded_until_ns": (2**63, "an int64 >= 0"),
                   "realtime_offset_ns": (2**63, "an int64 >= 0")}


class WireFormatError(MscopeError, ValueError):
    """A message that is not a valid mscope chunk message."""


#: An optional meta key, a string: the collector host's boot id
#: (collector.clock.boot_id), where it could read one.
BOOT_ID_RE = re.compile(r"[0-9a-f-]{8,64}")


def make_meta(*, collector, host, tsc_hz, stream, nf_id, nf_name, lcore, pid, ring,
              dropped_chunks=0, dropped_records=0, idle_ns=0, recorded_until_ns=None,
              boot_id=None, realtime_offset_ns=None):
    """The meta map of one chunk message (all keys of META_KEYS and
    OPTIONAL_META_KEYS; ``recorded_until_ns`` only where given: the
    collector's last message of a stream says until when its records are
    whole, see docs/capture-format.md; ``boot_id`` and
    ``realtime_offset_ns`` where known)."""
    meta = {"v": WIRE_VERSION, "collector": collector, "host": host,
            "tsc_hz": None if tsc_hz is None else float(tsc_hz), "stream": int(stream),
            "nf_id": int(nf_id), "nf_name": nf_name, "lcore": int(lcore), "pid": int(pid),
            "ring": ring, "dropped_chunks": int(dropped_chunks),
            "dropped_records": int(dropped_records), "idle_ns": int(idle_ns)}
    if recorded_until_ns is not None:
        meta["recorded_until_ns"] = int(recorded_until_ns)
    if boot_id is not None:
        meta["boot_id"] = str(boot_id)
    if realtime_offset_ns is not None:
        meta["realtime_offset_ns"] = int(realtime_offset_ns)
    return meta


def encode_message(meta, frame):
    """The parts to pass to ``socket.send_multipart``."""
    return [msgpack.packb(meta, use_bin_type=True), frame]


def decode_message(parts):
    """Split and check a received message.

    Parameters
    ----------
    parts : list of bytes-like
        What ``socket.recv_multipart`` returned.

    Returns
    -------
    meta : dict
    frame : bytes-like
        The frame, not yet checked (mscope.capture.format.decode_frame or the
        receiver's own header check does that).

    Raises
    ------
    WireFormatError
        Wrong number of parts, meta that is not a msgpack map, an unknown
        wire version, a missing key or a key of the wrong type.
    """
    if len(parts) != 2:
        raise WireFormatError(f"expected 2 message parts (meta, frame), got {len(parts)}")
    try:
        meta = msgpack.unpackb(bytes(parts[0]), raw=False, max_str_len=4096,
                               max_map_len=64, max_array_len=64, max_bin_len=4096)
    except Exception as exc:  # msgpack raises several unrelated types
        raise WireFormatError(f"meta is not msgpack: {exc}") from None
    if not isinstance(meta, dict):
        raise WireFormatError("meta is not a map")
    if meta.get("v") != WIRE_VERSION:
        raise WireFormatError(f"unknown wire version {meta.get('v')!r} "
                              f"(this receiver speaks {WIRE_VERSION})")
    for key, typ in META_KEYS.items():
        if key not in meta:
            raise WireFormatError(f"meta lacks {key!r}")
        if not isinstance(meta[key], typ) or isinstance(meta[key], bool):
            raise WireFormatError(f"meta {key!r} has the wrong type "
                                  f"({type(meta[key]).__name__})")
    for key, typ in OPTIONAL_META_KEYS.items():
        top, what = _OPTIONAL_RANGE[key]
        if key in meta and (not isinstance(meta[key], typ) or isinstance(meta[key], bool)
                            or not 0 <= meta[key] < top):
            raise WireFormatError(f"meta {key!r} is not {what} ({meta[key]!r})")
    b = meta.get("boot_id")
    if b is not None and not (isinstance(b, str) and BOOT_ID_RE.fullmatch(b)):
        raise WireFormatError(f"meta 'boot_id' is not a boot id ({b!r})")
    return meta, parts[1]


def is_loopback_host(host):
    """Whether a tcp endpoint's host stays on this machine: ``localhost`` or
    a loopback address (the one rule both ends apply before ``--allow-remote``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False                     # "*", an interface or a host name
