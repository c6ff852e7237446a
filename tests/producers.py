"""The test producer (tests/c/ring_producer.c) and its record pattern, for
tests that need a real separate process writing a ring."""
import subprocess

import numpy as np

from mscope.record import REC_MAGIC

class Producer:
    """The test producer (tests/c/ring_producer.c) in its own process."""

    def __init__(self, exe, registry, n, max_batch, rate, ring_bytes, name="prod", nf_id=7):
        self.n, self.max_batch = n, max_batch
        self.proc = subprocess.Popen(
            [str(exe), str(registry), name, str(n), str(max_batch), str(rate),
             str(ring_bytes), str(nf_id)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.path = self.proc.stdout.readline().strip()
        assert self.path.endswith(".ring"), self.path

    def start(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finished(self):
        return self.proc.poll() is not None

    def result(self, timeout=60):
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0
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



