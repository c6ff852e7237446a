"""Ship chunks over ZeroMQ without ever making the collector wait.

A PUSH socket connects to the receiver's PULL.  ZeroMQ itself queues up to
``sndhwm`` messages (default 64: with chunks of 16384 records that is tens
of MB, a second or more of traffic from a busy host) for a connected
receiver, and none for one that is down or refused us (ZMQ_IMMEDIATE).  Past that, sends would block;
we never block (the rings behind us would overflow), so a chunk that ZeroMQ
will not take goes to a local spool bounded in bytes and is retried in
order.  A chunk that does not fit the spool either is dropped whole and
counted against its stream; the count travels in every later message's
meta, and the hole it leaves in the chunk and record sequences is what the
capture reader reports.
"""
import collections
import urllib.parse

import zmq

from mscope.errors import MscopeError
from mscope.wire import encode_message, is_loopback_host

__all__ = ["Shipper", "check_endpoint"]


def check_endpoint(endpoint, allow_remote=False, secured=False):
    """Refuse a tcp endpoint off this host unless allowed or authenticated.

    Raises
    ------
    MscopeError
        The endpoint is malformed or not loopback and neither
        `allow_remote` nor `secured` is set.
    """
    scheme, _, rest = endpoint.partition("://")
    if scheme not in ("tcp", "ipc", "inproc"):
        raise MscopeError(f"endpoint {endpoint!r}: use tcp://HOST:PORT or ipc://PATH")
    if scheme != "tcp":
        return
    host = urllib.parse.urlsplit(f"//{rest}").hostname or ""
    if not is_loopback_host(host) and not (allow_remote or secured):
        raise MscopeError(f"endpoint {endpoint!r} is not on this host: pass --allow-remote "
                          "(and preferably --curve-* keys) to ship off the machine")


class Shipper:
    """PUSH chunks to one receiver, spooling and dropping as described above."""

    def __init__(self, endpoint, sndhwm=64, spool_bytes=256 << 20, curve=None):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, sndhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        # IMMEDIATE: queue only to a receiver whose connection (and CURVE
        # handshake) completed.  Otherwise ZeroMQ would swallow up to
        # sndhwm chunks for a peer that is down or refuses us and drop them
        # at exit uncounted; this way they wait in our spool, which counts.
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        if curve is not None:
            curve(self.sock)
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.sock.close(0)
            self.ctx.term()
            raise MscopeError(f"cannot connect to {endpoint}: {exc}") from None
        self.endpoint = endpoint
        self.spool = collections.deque()
        self.spool_limit = spool_bytes
        self.spool_bytes = 0
        self.sent_messages = 0
        self.sent_bytes = 0

    def _try_send(self, parts):
        try:
            self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        self.sent_messages += 1
        self.sent_bytes += len(parts[1])
        return True

    def put(self, meta, frame):
        """Send or spool one chunk; False when it had to be dropped."""
        parts = encode_message(meta, frame)
        if not self.spool and self._try_send(parts):
            return True
        size = len(frame)
        if self.spool_bytes + size > self.spool_limit:
            return False
        self.spool.append(parts)
        self.spool_bytes += size
        return True

    def pump(self):
        """Send what the spool holds, in order, until ZeroMQ refuses."""
        while self.spool and self._try_send(self.spool[0]):
            self.spool_bytes -= len(self.spool.popleft()[1])
        return len(self.spool)

    def close(self, linger_s=5.0):
        """Flush the spool and ZeroMQ's queue for up to linger_s; return
        the number of chunks that could not be handed over."""
        import time
        deadline = time.monotonic() + linger_s
        while self.spool and time.monotonic() < deadline:
            if self.pump():
                time.sleep(0.01)
        left = len(self.spool)
        # What ZeroMQ still queues gets the rest of the time: term() waits
        # for it to reach the receiver or for the linger to run out.
        self.sock.setsockopt(zmq.LINGER, max(0, int((deadline - time.monotonic()) * 1000)))
        self.sock.close()
        self.ctx.term()
        return left
