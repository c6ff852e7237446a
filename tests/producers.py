"""The test producer (tests/c/ring_producer.c) and its record pattern, for
tests that need a real separate process writing a ring."""
import subprocess

import numpy as np

from mscope.record import REC_MAGIC

class Producer:
    """The test producer (tests/c/ring_producer.c) in its own process.

    The protocol, which subclasses running another program keep: print the
    ring's path, wait for a line on stdin (start()), write, then print
    "done records drop_records drop_packets" and exit 0.
    """

    result_timeout = 60      # seconds result() waits for the producer to finish

    def __init__(self, exe, registry, n, max_batch, rate, ring_bytes, name="prod", nf_id=7):
        self.n, self.max_batch = n, max_batch
        self._spawn([str(exe), str(registry), name, str(n), str(max_batch), str(rate),
                     str(ring_bytes), str(nf_id)])

    def _spawn(self, argv, env=None):
        """Start the producer; returns once it has printed its ring's path."""
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self.path = self.proc.stdout.readline().strip()
        assert self.path.endswith(".ring"), self.path

    def start(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finished(self):
        return self.proc.poll() is not None

    def result(self, timeout=None):
        """(records, drop_records, drop_packets) once it has finished."""
        out, _ = self.proc.communicate(
            timeout=self.result_timeout if timeout is None else timeout)
        assert self.proc.returncode == 0, out
        words = out.split()
        assert words[0] == "done", out
        return tuple(int(w) for w in words[1:4])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def expected_counts(seq, max_batch):
    return (1 + (seq * 7919) % max_batch).astype(np.int64)


def check_batch(recs, ids, max_batch):
    """Every drained record and id matches the producer's pattern."""
    seq = recs["seq"]
    assert (recs["magic"] == REC_MAGIC).all()
    assert (recs["count"] == expected_counts(seq, max_batch)).all()
    assert (recs["flags"] == (seq & 1)).all()
    assert (recs["port"] == seq % 5).all() and (recs["queue"] == seq % 3).all()
    assert (recs["occupancy"] == (seq & 0xFFFFFFFF)).all()
    counts = recs["count"].astype(np.int64)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    want = (np.repeat(seq, counts) << np.uint64(16)) | (
        np.arange(counts.sum(), dtype=np.uint64) - starts.astype(np.uint64))
    assert np.array_equal(ids, want)



