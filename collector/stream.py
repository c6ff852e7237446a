"""One ring as the collector follows it: drain, account losses, cut chunks.

A stream is one ring file (one NF lcore of one process).  Its records are
drained straight into the arrays of the chunk being filled, and chunks are
cut into capture frames when full or old.

Loss accounting is exact.  Every record the producer could not write still
took a sequence number, so a hole in the seqs the collector drained *is* a
ring drop, and the collector counts those holes itself: each frame's
``drop_records`` is the number of ring-dropped records with a seq below the
frame's ``next_seq``.  Holes the reader later finds that this count does not
explain were lost after the ring (a chunk dropped by a full spool, or lost
in transport).  The ring's own counter, which may already include drops
past the last drained record, is used for the final frame only, once the
ring is closed and empty.
"""
import os
import time

import numpy as np

from mscope.capture.format import (CAPTURE_F_ADDR, CAPTURE_F_NOIDS, CAPTURE_F_REFUSED,
                                   CAPTURE_F_TX, CAPTURE_RECORD_DTYPE, CODEC_ZSTD, encode_frame)
from mscope.record import (MAX_BATCH, REC_F_ADDR, REC_F_NOIDS, REC_F_REFUSED, REC_F_TX,
                           RING_RECORD_DTYPE)

__all__ = ["RingStream", "Chunk", "ring_records_to_capture"]


class Chunk:
    """A frame ready to ship or write, with what it holds."""

    __slots__ = ("stream", "frame", "records", "ids", "final", "raw_bytes", "first_ns")

    def __init__(self, stream, frame, records, ids, final, raw_bytes, first_ns=None):
        self.stream, self.frame, self.records, self.ids = stream, frame, records, ids
        self.final, self.raw_bytes = final, raw_bytes
        # the first record's time (None for no records): the frame index's
        self.first_ns = first_ns


def ring_records_to_capture(records, clock):
    """Ring records (RING_RECORD_DTYPE) as capture records, TSC turned into ns.

    Flags map bit by bit (tx, address, batch-only, refused); a batch-only record keeps
    its ``count`` (the batch's packets) and has no ids in the chunk, as in
    the ring.
    """
    out = np.empty(len(records), CAPTURE_RECORD_DTYPE)
    out["time_ns"] = clock.to_ns(records["tsc"])
    out["seq"] = records["seq"]
    out["nf_id"] = records["nf_id"]
    out["port"] = records["port"]
    out["queue"] = records["queue"]
    out["flags"] = (np.where(records["flags"] & REC_F_TX, CAPTURE_F_TX, 0)
                    | np.where(records["flags"] & REC_F_ADDR, CAPTURE_F_ADDR, 0)
                    | np.where(records["flags"] & REC_F_NOIDS, CAPTURE_F_NOIDS, 0)
                    | np.where(records["flags"] & REC_F_REFUSED, CAPTURE_F_REFUSED, 0))
    out["reserved"] = 0
    out["count"] = records["count"]
    out["occupancy"] = records["occupancy"]
    return out


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RingStream:
    """Follow one ring: drain it, count its holes, cut chunks.

    Parameters
    ----------
    stream : int
        The collector's number for this stream (frame header ``stream``).
    reader : RingReader
        Opened and claimed.
    codec, level : int
        Compression of the frames.
    """

    def __init__(self, stream, reader, codec=CODEC_ZSTD, level=3, chunk_records=65536,
                 ids_per_record=32):
        self.stream = stream
        self.reader = reader
        self.codec, self.level = codec, level
        st = reader.state()
        self.path = reader.path
        self.nf_id, self.nf_name = st["nf_id"], st["nf_name"]
        self.lcore, self.pid = st["lcore"], st["pid"]
        self.producer_hz = st["tsc_hz"]
        self.idle_ns = st["idle_ns"]      # its idle-poll interval, 0: none
        # A ring nobody drained before starts at seq 0: holes from there on
        # are ours to count.  One a previous collector drained starts at
        # whatever seq comes first.
        self.expected_seq = 0 if st["tail"] == 0 else None
        self.ring_drops = 0          # holes seen so far (exact, see the module doc)
        self.emitted_next_seq = self.expected_seq   # next_seq of the last chunk cut
        self.emitted_drops = 0       # drop_records of the last chunk cut
        self.drop_packets_base = st["drop_packets"] if st["tail"] else 0
        self.chunk_seq = 0
        # The ring is drained straight into the arrays of the chunk being
        # filled: no copy between the ring and the compressor.
        self.chunk_records = chunk_records
        self.chunk_ids = max(chunk_records * ids_per_record, 4 * MAX_BATCH)
        self.records_drained = 0
        self.ids_drained = 0
        self._new_chunk()
        self.full = []               # filled chunks waiting to be cut
        self.finished = False        # final frame cut
        self.recorded_until_ns = None   # set at shutdown: records whole up to then

    def _new_chunk(self):
        self.cur_recs = np.empty(self.chunk_records, RING_RECORD_DTYPE)
        # A ring whose records so far all came without ids is batch-only
        # (a recorder writes one kind all its life): its chunks get the
        # one record's worth of id room drain_into() asks for, not
        # chunk_records * ids_per_record.  Should a record with ids come
        # after all, that room fills and the chunk is cut early.
        batch_only = self.records_drained > 0 and self.ids_drained == 0
        self.cur_ids = np.empty(MAX_BATCH if batch_only else self.chunk_ids, np.uint64)
        self.n_recs = self.n_ids = 0
        self.cur_since = None

    def _close_chunk(self):
        if self.n_recs:
            self.full.append((self.cur_recs[:self.n_recs], self.cur_ids[:self.n_ids]))
            self._new_chunk()

    @property
    def pending_count(self):
        return self.n_recs + sum(len(r) for r, _ in self.full)

    def drain(self, limit=None):
        """Move what the ring holds into chunks; return the records moved.

        Stops after `limit` records (default: one chunk's worth), so a full
        ring is cut into chunks as it drains, not swallowed whole.
        """
        limit = self.chunk_records if limit is None else limit
        moved = 0
        while moved < limit:
            if (self.n_recs == self.chunk_records
                    or len(self.cur_ids) - self.n_ids < MAX_BATCH):
                self._close_chunk()
            recs = self.cur_recs[self.n_recs:]
            n, k = self.reader.drain_into(recs, self.cur_ids[self.n_ids:])
            if n == 0:
                break
            seq = recs["seq"]
            if self.expected_seq is None:
                self.expected_seq = self.emitted_next_seq = int(seq[0])
            # Seqs skipped are ring drops (see the module doc).
            self.ring_drops += int(seq[n - 1]) + 1 - self.expected_seq - n
            self.expected_seq = int(seq[n - 1]) + 1
            if self.cur_since is None:
                self.cur_since = time.monotonic()
            self.n_recs += n
            self.n_ids += k
            self.records_drained += n
            self.ids_drained += k
            moved += n
        return moved

    def producer_gone(self):
        """The producer closed the ring or its process is gone."""
        return self.reader.state()["state"] == "closed" or not _pid_alive(self.pid)

    def cut(self, clock, now, flush_s, final=False):
        """Chunks due now: the full ones, an old or last partial one, and the
        final (empty) one when `final`."""
        if self.n_recs and (final or now - self.cur_since >= flush_s):
            self._close_chunk()
        chunks = [self._encode(recs, ids, clock) for recs, ids in self.full]
        self.full = []
        if final and not self.finished:
            chunks.append(self._final_chunk())
            self.finished = True
        return chunks

    def _encode(self, recs, ids, clock):
        seq = recs["seq"]
        first, next_seq = int(seq[0]), int(seq[-1]) + 1
        # Seqs skipped since the previous chunk, and inside this one, are
        # exactly the ring's drops below next_seq.
        self.emitted_drops += next_seq - self.emitted_next_seq - len(recs)
        self.emitted_next_seq = next_seq
        cap = ring_records_to_capture(recs, clock)
        frame = encode_frame(cap, ids, stream=self.stream, chunk_seq=self.chunk_seq,
                             first_seq=first, next_seq=next_seq,
                             drop_records=self.emitted_drops,
                             drop_packets=self._drop_packets(),
                             codec=self.codec, level=self.level)
        self.chunk_seq += 1
        return Chunk(self.stream, frame, len(recs), len(ids), False, cap.nbytes + ids.nbytes,
                     int(cap["time_ns"][0]))

    def _drop_packets(self):
        return max(0, self.reader.state()["drop_packets"] - self.drop_packets_base)

    def _final_chunk(self):
        """An empty frame at the ring's final seq: it carries the drops after
        the last record (records the producer lost at the very end)."""
        end_seq = self.reader.state()["next_seq"]
        if self.emitted_next_seq is None:
            self.emitted_next_seq = self.expected_seq = end_seq
        trailing = max(0, end_seq - self.emitted_next_seq)
        self.ring_drops += trailing
        self.emitted_drops += trailing
        self.emitted_next_seq = self.expected_seq = max(end_seq, self.emitted_next_seq)
        return self._empty_chunk(final=True)

    def mark_chunk(self):
        """An empty frame after the last chunk cut (None if none was): the
        message a shipper sends ``recorded_until_ns`` in when the stream
        has nothing left to send at shutdown."""
        if self.emitted_next_seq is None or self.finished:
            return None
        return self._empty_chunk(final=False)

    def _empty_chunk(self, final):
        """A frame of no records at the last chunk's next_seq, with the
        drop counters so far."""
        frame = encode_frame(np.empty(0, CAPTURE_RECORD_DTYPE), np.empty(0, np.uint64),
                             stream=self.stream, chunk_seq=self.chunk_seq,
                             first_seq=self.emitted_next_seq, next_seq=self.emitted_next_seq,
                             drop_records=self.emitted_drops,
                             drop_packets=self._drop_packets(), final=final,
                             codec=self.codec, level=self.level)
        self.chunk_seq += 1
        return Chunk(self.stream, frame, 0, 0, final, 0)

    def describe(self):
        """The stream's identity, for manifests and wire meta."""
        return {"nf_id": self.nf_id, "nf_name": self.nf_name, "lcore": self.lcore,
                "pid": self.pid, "ring": self.path, "idle_ns": self.idle_ns}
