"""The testbed's child processes: start, read their JSON lines, stop.

Every process the testbed starts is a `Child`: its stdout is read line by
line on a thread (the C programs print one JSON object per line: "ready",
"started", "status", "done"), its stderr is kept for the error message.
Only processes started here are ever signalled, by their own pid.

A child may also write to log files instead of pipes (``log=PATH``: stdout
to PATH, stderr to PATH.err), read back by the same threads, in a session
of its own: then it outlives this Python process (``mscope ovs up``), and
its lines stay in the files for whoever stops it later.
"""
import json
import os
import queue
import signal
import subprocess
import threading
import time

from mscope.errors import MscopeError

__all__ = ["Child", "ChildDied"]


class ChildDied(MscopeError, RuntimeError):
    """A testbed process exited when it should not have."""


class Child:
    """One child process.

    Parameters
    ----------
    name : str
        What error messages call it ("primary", "nf nat", ...).
    argv : list of str
    cpus : set of int, optional
        Pin it (and its threads) to these CPUs right after the start.
    stdin : bool
        Keep a pipe to its stdin (the primary takes commands there).
    nice : int, optional
        Its main thread's nice value, set right after the start (threads it
        creates later inherit it); ignored where not allowed (not root).
    log : str or os.PathLike, optional
        Write stdout to this file and stderr to ``<log>.err`` rather than
        to pipes, in a new session (see the module docstring).
    """

    def __init__(self, name, argv, cpus=None, stdin=False, env=None, nice=None, log=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.events = queue.Queue()
        self.lines = []
        self.stderr = []
        self.done = None
        self.ended_at = None           # when its output ended (monotonic s)
        self.log = None if log is None else str(log)
        if self.log is None:
            out = err = subprocess.PIPE
        else:
            out, err = open(self.log, "w"), open(self.log + ".err", "w")
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=out, stderr=err, text=True, bufsize=1, env=env,
                start_new_session=self.log is not None)
        finally:
            if self.log is not None:
                out.close()
                err.close()
        if cpus:
            try:
                os.sched_setaffinity(self.proc.pid, cpus)
            except OSError:
                pass
        self.nice = None
        if nice is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, nice)
                self.nice = nice
            except OSError:
                pass
        self._threads = [threading.Thread(target=self._read_out, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._threads:
            t.start()

    def _follow(self, path):
        """Lines of a log file as they come, until the child has exited
        and the file is read to its end."""
        with open(path) as f:
            buf = ""
            while True:
                chunk = f.readline()
                if chunk:
                    buf += chunk
                    if buf.endswith("\n"):
                        yield buf
                        buf = ""
                    continue
                if self.proc.poll() is not None:
                    rest = f.read()
                    for line in (buf + rest).splitlines(True):
                        yield line
                    return
                time.sleep(0.02)

    def _read_out(self):
        for line in (self.proc.stdout if self.log is None else self._follow(self.log)):
            line = line.strip()
            if not line:
                continue
            self.lines.append(line)
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                if doc.get("event") == "done":
                    self.done = doc
                self.events.put(doc)
        self.ended_at = time.monotonic()
        self.events.put(None)          # end of output

    def _read_err(self):
        for line in (self.proc.stderr if self.log is None else self._follow(self.log + ".err")):
            self.stderr.append(line.rstrip("\n"))

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def last_error(self):
        """The last non-empty line it wrote to stderr (or a placeholder)."""
        for t in self._threads[1:]:
            t.join(timeout=0.5)
        for line in reversed(self.stderr):
            if line.strip():
                return line.strip()
        return "no message"

    def died(self, what="exited"):
        rc = self.proc.poll()
        status = (f"killed by signal {-rc}" if rc is not None and rc < 0
                  else f"exit status {rc}")
        return ChildDied(f"testbed: {self.name} {what} ({status}): {self.last_error()}")

    def expect(self, event, timeout):
        """Wait for the next JSON line with ``"event": event``; return it.

        Raises ChildDied when the process ends first, MscopeError on timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MscopeError(f"testbed: {self.name} did not say {event!r} within "
                                  f"{timeout:g} s")
            try:
                doc = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if doc is None:
                self.proc.wait(timeout=5)
                raise self.died(f"exited before {event!r}")
            if doc.get("event") == event:
                return doc

    def send(self, line):
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self.died("stopped taking commands") from None

    def wait(self, timeout):
        """Wait for it to exit; its exit status, or None if it is still up."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        for t in self._threads:
            t.join(timeout=2)
        return rc

    def stop(self, timeout=10.0, sig=signal.SIGTERM):
        """Signal it (SIGTERM by default), wait, kill past `timeout`.

        Returns its exit status (negative: killed by that signal)."""
        if self.alive():
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
            rc = self.proc.returncode
        return rc

    def kill(self):
        if self.alive():
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for t in self._threads:
            t.join(timeout=2)
