"""The capture format: constants, dtypes, the frame header and its codecs.

This module is the one definition of the on-disk capture layout
(docs/capture-format.md mirrors it field by field).  The writer, the reader,
the collector and the simulator take every constant from here.

A capture is a directory holding ``manifest.json`` and append-only segment
files ``chunks-NNNNNN.msc``.  A segment is a sequence of frames; a frame is
an 80-byte little-endian header followed by ``payload_len`` stored bytes.
The raw (decompressed) payload is ``n_records`` records of
:data:`CAPTURE_RECORD_DTYPE` followed by ``n_ids`` little-endian uint64
packet ids, the ids of record i right after those of record i - 1: ``count``
ids per record, none for a batch-only record (:data:`CAPTURE_F_NOIDS`), so
``n_ids`` is the sum of :func:`id_counts`.

numpy and the standard library only; zstandard and lz4 are imported on
first use, so a capture written with one codec reads without the other.
The checks of decoded records run in one compiled pass where
``mscope.capture._checks`` is built, in numpy otherwise (the same checks).
"""
import re
import struct
import threading
import zlib
from typing import NamedTuple

import numpy as np

from mscope.errors import CaptureFormatError

try:
    from mscope.capture import _checks
except ImportError:             # not built: the numpy checks
    _checks = None

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "RECORD_VERSION", "MANIFEST_NAME",
    "SEGMENT_TEMPLATE", "SEGMENT_RE", "SEGMENT_BYTES_DEFAULT",
    "FRAME_MAGIC", "FRAME_VERSION", "FRAME_HEADER_SIZE", "FRAME_F_FINAL",
    "FRAME_HEADER_DTYPE",
    "CODEC_NONE", "CODEC_ZSTD", "CODEC_LZ4", "CODEC_NAMES", "CODEC_IDS",
    "CAPTURE_RECORD_DTYPE", "CAPTURE_RECORD_SIZE", "PACKET_ID_DTYPE",
    "CAPTURE_F_TX", "CAPTURE_F_ADDR", "CAPTURE_F_NOIDS", "CAPTURE_F_REFUSED",
    "CAPTURE_OCC_UNKNOWN", "TIME_BACK_NS",
    "MAX_CHUNK_RAW_BYTES", "MAX_MANIFEST_BYTES", "LOSS_KINDS",
    "FrameHeader", "pack_frame_header", "unpack_frame_header", "id_counts",
    "records_problem",
    "check_frame_header", "seq_problem", "max_payload_len", "segment_name",
    "compress_payload", "decompress_payload", "first_record_time", "decode_payload_into",
    "decode_payload_counted",
    "encode_frame", "decode_payload", "decode_frame",
]

# --- directory ------------------------------------------------------------

FORMAT_NAME = "mscope-capture"
#: manifest "version"; a reader refuses a larger one.
FORMAT_VERSION = 1
#: manifest "record_version": layout of CAPTURE_RECORD_DTYPE.
RECORD_VERSION = 1
MANIFEST_NAME = "manifest.json"
SEGMENT_TEMPLATE = "chunks-{:06d}.msc"
#: Segment file names; the number has at least 6 digits (more past 999999).
SEGMENT_RE = re.compile(r"^chunks-(\d{6,})\.msc$")
SEGMENT_BYTES_DEFAULT = 64 << 20

# --- frame ----------------------------------------------------------------

FRAME_MAGIC = b"MSCK"
FRAME_VERSION = 1
FRAME_HEADER_SIZE = 80
#: flags bit 0: last chunk of the stream (ring closed and drained).
FRAME_F_FINAL = 0x1

CODEC_NONE = 0
CODEC_ZSTD = 1
CODEC_LZ4 = 2          # lz4.frame
CODEC_NAMES = {CODEC_NONE: "none", CODEC_ZSTD: "zstd", CODEC_LZ4: "lz4"}
CODEC_IDS = {name: cid for cid, name in CODEC_NAMES.items()}

# magic, version, codec, stream, flags, chunk_seq, first_seq, next_seq,
# n_records, n_ids, drop_records, drop_packets, payload_len, raw_len,
# payload_crc32, header_crc32.  "<": no padding, offsets as in the doc page.
_HEADER = struct.Struct("<4sHHIIQQQIIQQIIII")
assert _HEADER.size == FRAME_HEADER_SIZE
_HEADER_CRC_OFF = 76

#: The same header as a numpy dtype, for readers that scan many headers (or
#: have no mscope: docs/capture-format.md reads a capture with it).
FRAME_HEADER_DTYPE = np.dtype([
    ("magic", "S4"), ("version", "<u2"), ("codec", "<u2"),
    ("stream", "<u4"), ("flags", "<u4"), ("chunk_seq", "<u8"),
    ("first_seq", "<u8"), ("next_seq", "<u8"), ("n_records", "<u4"),
    ("n_ids", "<u4"), ("drop_records", "<u8"), ("drop_packets", "<u8"),
    ("payload_len", "<u4"), ("raw_len", "<u4"), ("payload_crc32", "<u4"),
    ("header_crc32", "<u4"),
])
assert FRAME_HEADER_DTYPE.itemsize == FRAME_HEADER_SIZE

# --- records --------------------------------------------------------------

#: Within one stream (one lcore's clock, read once per batch) a record's
#: time never trails the one before it by this much: the analyzer refuses
#: a larger step as corrupt, and a reader cutting a window of time relies
#: on it (a frame's records lie before the next frame's first plus this).
TIME_BACK_NS = 1_000_000_000

#: One capture record (32 bytes, little-endian).  Unlike the ring record it
#: carries time in ns (TSC already converted by the collector) and a 32-bit
#: count; the ring's magic/version are dropped.
CAPTURE_RECORD_DTYPE = np.dtype([
    ("time_ns", "<i8"),
    ("seq", "<u8"),
    ("nf_id", "<u2"),
    ("port", "<u2"),
    ("queue", "<u2"),
    ("flags", "u1"),       # bit 0 tx, 1 addresses, 2 batch-only, 3 refused (MSCOPE_REC_F_*)
    ("reserved", "u1"),
    ("count", "<u4"),      # packets; ids of this record in the id block unless batch-only
    ("occupancy", "<u4"),  # CAPTURE_OCC_UNKNOWN where the queue cannot say
])
CAPTURE_RECORD_SIZE = 32
assert CAPTURE_RECORD_DTYPE.itemsize == CAPTURE_RECORD_SIZE
PACKET_ID_DTYPE = np.dtype("<u8")
CAPTURE_F_TX = 0x01
#: An address record: its ids are ``src_ipv4 << 32 | dst_ipv4`` of the packets
#: of the rx record just before it in the stream (seq - 1), 0 where not IPv4.
CAPTURE_F_ADDR = 0x02
#: A batch-only record (the ring's MSCOPE_REC_F_NOIDS): ``count`` packets
#: passed in the batch, and no ids of them in the id block.  Never together
#: with CAPTURE_F_ADDR.
CAPTURE_F_NOIDS = 0x04
#: A refused record (the ring's MSCOPE_REC_F_REFUSED): its 2 words in the
#: id block are the packets its ``port`` refused at its input since the
#: previous reading (the NIC's imissed) and the ns since that reading; not
#: packet ids.  Never together with another bit.
CAPTURE_F_REFUSED = 0x08
CAPTURE_OCC_UNKNOWN = 0xFFFFFFFF

# --- limits ---------------------------------------------------------------

#: Largest raw payload a frame may declare.  A collector chunk is one drain
#: of one ring (a few MiB at most); the cap is what a reader allocates for a
#: frame whose header checksum is good but whose writer was hostile or buggy.
MAX_CHUNK_RAW_BYTES = 256 << 20
#: manifest.json is a few KiB per hundred streams; refuse anything absurd.
MAX_MANIFEST_BYTES = 16 << 20

#: Loss kinds a reader reports (see docs/capture-format.md, "Losses").
LOSS_KINDS = ("ring_drop", "gap", "truncated", "corrupt")


class FrameHeader(NamedTuple):
    """The fields of one frame header (``header_crc32`` is computed)."""
    version: int
    codec: int
    stream: int
    flags: int
    chunk_seq: int
    first_seq: int
    next_seq: int
    n_records: int
    n_ids: int
    drop_records: int
    drop_packets: int
    payload_len: int
    raw_len: int
    payload_crc32: int

    @property
    def final(self) -> bool:
        return bool(self.flags & FRAME_F_FINAL)


def id_counts(records) -> np.ndarray:
    """Ids each capture record has in the id block: ``count``, 0 if batch-only.

    Parameters
    ----------
    records : ndarray of CAPTURE_RECORD_DTYPE

    Returns
    -------
    ndarray of int64
        ``records["count"]`` with 0 where ``flags & CAPTURE_F_NOIDS``; its
        sum is a frame's ``n_ids`` and its cumulative sum locates each
        record's ids.

    Examples
    --------
    >>> r = np.zeros(3, CAPTURE_RECORD_DTYPE)
    >>> r["count"], r["flags"] = [3, 32, 2], [0, CAPTURE_F_NOIDS, CAPTURE_F_TX]
    >>> id_counts(r).tolist()
    [3, 0, 2]
    """
    counts = records["count"].astype(np.int64)
    counts[(records["flags"] & CAPTURE_F_NOIDS) != 0] = 0
    return counts


def records_problem(records, n_ids: int) -> "str | None":
    """What is wrong with a chunk's records against its id count (None if fine).

    Parameters
    ----------
    records : ndarray of CAPTURE_RECORD_DTYPE
    n_ids : int
        Ids the chunk holds (a frame's ``n_ids``).

    Returns
    -------
    str or None
        A one-line reason: a record both batch-only and an address record,
        or id counts (:func:`id_counts`) that do not sum to `n_ids`.

    Examples
    --------
    >>> r = np.zeros(2, CAPTURE_RECORD_DTYPE)
    >>> r["count"], r["flags"] = [3, 5], [0, CAPTURE_F_NOIDS]
    >>> records_problem(r, 3) is None
    True
    >>> records_problem(r, 8)
    'record ids sum to 3 (8 packets, 5 of them in batch-only records), the chunk holds 8 ids'
    """
    return _records_check(records, n_ids)[0]


def _records_check(records, n_ids: int, facts=None):
    """:func:`records_problem`, and ``(batch-only records, their packets,
    refused records)`` ((0, 0, 0) when there are none), which the capture
    reader reports: found here, in the pass the checks make anyway.
    `facts`: :func:`_record_facts` of `records`, made already."""
    packets, n_noids, batch, n_refused, bad_refused, bad_noids, _ = (
        facts or _record_facts(records))
    batch_only = (n_noids, batch, n_refused)         # batch is 0 without them
    if bad_refused >= 0:
        r = records[bad_refused]
        return (f"record {bad_refused} (seq {int(r['seq'])}) is a refused record with flags "
                f"{int(r['flags']):#x} and {int(r['count'])} words (2 and no other flag)"), \
            (0, 0, n_refused)
    if not n_noids:                     # every record's count is its ids
        if packets != n_ids:
            return f"record counts sum to {packets}, the chunk holds {n_ids} ids", batch_only
        return None, batch_only
    if bad_noids >= 0:
        return (f"record {bad_noids} (seq {int(records['seq'][bad_noids])}) is both "
                f"batch-only and an address record"), batch_only
    if packets - batch != n_ids:
        return (f"record ids sum to {packets - batch} ({packets} packets, {batch} "
                f"of them in batch-only records), the chunk holds {n_ids} ids"), batch_only
    return None, batch_only


def _record_facts(records):
    """``(packets, batch-only records, their packets, refused records,
    first bad refused record, first batch-only address record, seqs rise
    strictly)`` of `records` (-1: no such record): one compiled pass
    (``_checks.frame_facts``) where it is built and takes them, else numpy."""
    if (_checks is not None and records.dtype == CAPTURE_RECORD_DTYPE
            and records.flags.c_contiguous):
        return _checks.frame_facts(records)
    flags, count = records["flags"], records["count"]
    packets = int(count.sum(dtype=np.uint64))
    seq = records["seq"]
    rises = bool(np.all(seq[1:] > seq[:-1]))
    special = np.bitwise_and(flags, CAPTURE_F_NOIDS | CAPTURE_F_REFUSED)
    if not special.any():          # the usual case: neither kind
        return packets, 0, 0, 0, -1, -1, rises
    refused = (special & CAPTURE_F_REFUSED) != 0
    bad = np.flatnonzero(refused & ((flags != CAPTURE_F_REFUSED) | (count != 2)))
    noids = (special & CAPTURE_F_NOIDS) != 0
    bad_noids = np.flatnonzero(noids & ((flags & CAPTURE_F_ADDR) != 0))
    return (packets, int(np.count_nonzero(noids)), int(count[noids].sum(dtype=np.uint64)),
            int(np.count_nonzero(refused)), int(bad[0]) if bad.size else -1,
            int(bad_noids[0]) if bad_noids.size else -1, rises)


def segment_name(number: int) -> str:
    """File name of segment `number` (``chunks-000000.msc`` for 0)."""
    return SEGMENT_TEMPLATE.format(number)


def pack_frame_header(h: FrameHeader) -> bytes:
    """Pack `h` into the 80-byte frame header, header crc32 included.

    Parameters
    ----------
    h : FrameHeader
        Every field must fit its width (u16 version/codec, u32 stream, flags,
        counts and lengths, u64 sequences and counters).

    Returns
    -------
    bytes
        ``FRAME_HEADER_SIZE`` bytes.

    Raises
    ------
    ValueError
        A field does not fit its width.

    Examples
    --------
    >>> h = FrameHeader(1, CODEC_NONE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    >>> len(pack_frame_header(h)), unpack_frame_header(pack_frame_header(h)) == h
    (80, True)
    """
    try:
        head = _HEADER.pack(FRAME_MAGIC, *h, 0)
    except struct.error as exc:
        raise ValueError(f"frame header field out of range: {exc}") from None
    crc = zlib.crc32(memoryview(head)[:_HEADER_CRC_OFF])
    return head[:_HEADER_CRC_OFF] + crc.to_bytes(4, "little")


def unpack_frame_header(buf) -> FrameHeader:
    """Check the magic and header crc32 of an 80-byte header, then unpack it.

    Only the framing is checked here; :func:`check_frame_header` checks what
    the fields say.

    Parameters
    ----------
    buf : bytes-like
        At least ``FRAME_HEADER_SIZE`` bytes; the header is the first 80.

    Returns
    -------
    FrameHeader

    Raises
    ------
    CaptureFormatError
        Too short, wrong magic, or header crc32 mismatch.
    """
    mv = memoryview(buf)
    if len(mv) < FRAME_HEADER_SIZE:
        raise CaptureFormatError(
            f"frame header is {len(mv)} bytes, needs {FRAME_HEADER_SIZE}")
    mv = mv[:FRAME_HEADER_SIZE]
    fields = _HEADER.unpack(mv)
    if fields[0] != FRAME_MAGIC:
        raise CaptureFormatError(f"bad frame magic {bytes(fields[0])!r}")
    if zlib.crc32(mv[:_HEADER_CRC_OFF]) != fields[-1]:
        raise CaptureFormatError("frame header crc32 mismatch")
    return FrameHeader(*fields[1:-1])


def max_payload_len(codec: int, raw_len: int) -> int:
    """Largest stored payload a frame of `raw_len` raw bytes may declare.

    zstd's compress bound is raw + raw/256 + 64 bytes and lz4.frame's is
    about raw + raw/255 + 32 per block set; raw/128 + 4096 covers both with
    room for frame headers and checksums.
    """
    if codec == CODEC_NONE:
        return raw_len
    return raw_len + raw_len // 128 + 4096


def check_frame_header(h: FrameHeader) -> "str | None":
    """What is wrong with the fields of a header whose crc32 was good.

    Parameters
    ----------
    h : FrameHeader

    Returns
    -------
    str or None
        A one-line reason, or None when the header is usable.

    Examples
    --------
    >>> check_frame_header(FrameHeader(1, 0, 0, 0, 0, 5, 5, 0, 0, 0, 0, 0, 0, 0))
    >>> check_frame_header(FrameHeader(2, 0, 0, 0, 0, 5, 5, 0, 0, 0, 0, 0, 0, 0))
    'frame version 2 (this reader knows 1)'
    """
    if h.version != FRAME_VERSION:
        return f"frame version {h.version} (this reader knows {FRAME_VERSION})"
    if h.codec not in CODEC_NAMES:
        return f"unknown codec {h.codec}"
    expect = h.n_records * CAPTURE_RECORD_SIZE + h.n_ids * 8
    if h.raw_len != expect:
        return (f"raw_len {h.raw_len} != n_records*32 + n_ids*8 = {expect}")
    if h.raw_len > MAX_CHUNK_RAW_BYTES:
        return f"raw_len {h.raw_len} exceeds the {MAX_CHUNK_RAW_BYTES}-byte cap"
    if h.payload_len > max_payload_len(h.codec, h.raw_len):
        return (f"payload_len {h.payload_len} impossible for raw_len "
                f"{h.raw_len} with codec {CODEC_NAMES[h.codec]}")
    return seq_problem(h)


def seq_problem(h: FrameHeader) -> "str | None":
    """What is wrong with the sequence fields alone (None if coherent).

    A header with coherent sequence fields still tells exactly which ring
    seqs a damaged frame held, so the reader can report its loss exactly.
    """
    if h.next_seq < h.first_seq:
        return f"next_seq {h.next_seq} < first_seq {h.first_seq}"
    if h.n_records > h.next_seq - h.first_seq:
        return (f"{h.n_records} records cannot fit seqs "
                f"{h.first_seq}..{h.next_seq - 1}")
    if h.n_records == 0 and h.next_seq != h.first_seq:
        return f"empty chunk with next_seq {h.next_seq} != first_seq {h.first_seq}"
    return None


# --- codecs ---------------------------------------------------------------

def _zstd():
    try:
        import zstandard
    except ImportError:  # pragma: no cover - zstandard is a dependency
        raise CaptureFormatError(
            "codec zstd needs the zstandard package (pip install zstandard)") from None
    return zstandard


def _lz4frame():
    try:
        import lz4.frame
    except ImportError:  # pragma: no cover - depends on the environment
        raise CaptureFormatError(
            "codec lz4 needs the lz4 package (pip install lz4)") from None
    return lz4.frame


def compress_payload(raw, codec: int, level: int) -> bytes:
    """Compress a raw payload with `codec` at `level`.

    Parameters
    ----------
    raw : bytes-like
        The raw payload (records then ids).
    codec : int
        ``CODEC_NONE``, ``CODEC_ZSTD`` or ``CODEC_LZ4``.
    level : int
        zstd level (1..22) or lz4.frame compression_level (0..16; 3 and up
        switch lz4 to its slow high-compression mode).

    Returns
    -------
    bytes
        The stored payload.

    Raises
    ------
    ValueError
        Unknown codec.
    CaptureFormatError
        The codec's package is not installed.
    """
    if codec == CODEC_NONE:
        return bytes(raw)
    if codec == CODEC_ZSTD:
        # write_content_size (the default) lets the reader check the size
        # before it allocates.
        return _zstd().ZstdCompressor(level=level).compress(raw)
    if codec == CODEC_LZ4:
        return _lz4frame().compress(raw, compression_level=level,
                                    store_size=True)
    raise ValueError(f"codec: unknown codec id {codec}")


def first_record_time(payload, codec: int):
    """The time of the first record of a stored payload, decoding only
    its first 8 bytes (records come first, time_ns first in each); None
    where the payload cannot give them.  Its crc32 is not checked: for a
    reader that skips frames far from a window of time, not for reading
    records."""
    try:
        if codec == CODEC_NONE:
            head = bytes(payload[:8])
        elif codec == CODEC_ZSTD:
            head = _zstd().ZstdDecompressor().stream_reader(payload).read(8)
        elif codec == CODEC_LZ4:
            head = _lz4frame().LZ4FrameDecompressor().decompress(bytes(payload), max_length=8)
        else:
            return None
    except Exception:           # each codec raises its own kinds: the frame decides
        return None
    return int.from_bytes(head, "little", signed=True) if len(head) == 8 else None


def decompress_payload(payload, codec: int, raw_len: int) -> bytes:
    """Decompress a stored payload, never producing more than `raw_len` bytes.

    Parameters
    ----------
    payload : bytes-like
        The stored payload (its crc32 already checked).
    codec : int
        The frame's codec.
    raw_len : int
        Size the header promises (already capped by check_frame_header).

    Returns
    -------
    bytes
        Exactly `raw_len` bytes.

    Raises
    ------
    CaptureFormatError
        Undecodable data, or a size other than `raw_len`.
    """
    if codec == CODEC_NONE:
        raw = bytes(payload)
    elif codec == CODEC_ZSTD:
        zstandard = _zstd()
        try:
            # A zstd frame states its own content size and decompress()
            # allocates that much whatever max_output_size says: check it
            # against raw_len first.
            size = zstandard.frame_content_size(payload)
            if size not in (-1, raw_len):
                raise CaptureFormatError(
                    f"zstd frame holds {size} bytes, header says {raw_len}")
            raw = zstandard.ZstdDecompressor().decompress(
                payload, max_output_size=raw_len)
        except zstandard.ZstdError as exc:
            raise CaptureFormatError(f"zstd: {exc}") from None
    elif codec == CODEC_LZ4:
        lz4frame = _lz4frame()
        try:
            dec = lz4frame.LZ4FrameDecompressor()
            raw = dec.decompress(payload, max_length=raw_len)
            # max_length stops the output at raw_len; eof then tells a frame
            # of exactly raw_len bytes from a longer (or cut) one.
            if not dec.eof:
                raise CaptureFormatError(
                    f"lz4 frame does not end after the {raw_len} bytes the header says")
        except (RuntimeError, ValueError) as exc:  # lz4 raises RuntimeError
            if isinstance(exc, CaptureFormatError):
                raise
            raise CaptureFormatError(f"lz4: {exc}") from None
    else:
        raise CaptureFormatError(f"unknown codec {codec}")
    if len(raw) != raw_len:
        raise CaptureFormatError(
            f"payload decompresses to {len(raw)} bytes, header says {raw_len}")
    return raw


# --- whole frames -----------------------------------------------------------

def encode_frame(records, ids, *, stream: int, chunk_seq: int, first_seq: int,
                 next_seq: int, drop_records: int = 0, drop_packets: int = 0,
                 final: bool = False, codec: int = CODEC_ZSTD, level: int = 3) -> bytes:
    """Build one frame (header and payload), as written to a segment or a socket.

    Only field widths are checked here; :meth:`CaptureWriter.write_chunk`
    checks the rules between fields (seqs, counts, counters).

    Parameters
    ----------
    records : ndarray of CAPTURE_RECORD_DTYPE
    ids : ndarray of uint64
        ``id_counts(records).sum()`` packet ids: ``count`` per record, none
        for a batch-only record (CAPTURE_F_NOIDS).
    stream, chunk_seq, first_seq, next_seq, drop_records, drop_packets, final
        The header fields (see docs/capture-format.md).
    codec : int
        ``CODEC_NONE``, ``CODEC_ZSTD`` or ``CODEC_LZ4``.
    level : int
        Compression level for `codec`.

    Returns
    -------
    bytes
        ``FRAME_HEADER_SIZE + payload_len`` bytes.

    Raises
    ------
    ValueError
        A field does not fit its width, or an unknown codec.

    Examples
    --------
    >>> r = np.zeros(1, CAPTURE_RECORD_DTYPE); r["seq"], r["count"] = 7, 1
    >>> buf = encode_frame(r, np.array([42], np.uint64), stream=0, chunk_seq=0,
    ...                    first_seq=7, next_seq=8, codec=CODEC_NONE)
    >>> h, recs, ids = decode_frame(buf)
    >>> len(buf), h.raw_len, recs["seq"].tolist(), ids.tolist()
    (120, 40, [7], [42])
    """
    records = np.ascontiguousarray(records, CAPTURE_RECORD_DTYPE)
    ids = np.ascontiguousarray(ids, PACKET_ID_DTYPE)
    raw = b"".join((records.view(np.uint8).data, ids.view(np.uint8).data))
    payload = compress_payload(raw, codec, level)
    header = pack_frame_header(FrameHeader(
        FRAME_VERSION, codec, stream, FRAME_F_FINAL if final else 0, chunk_seq,
        first_seq, next_seq, len(records), len(ids), drop_records, drop_packets,
        len(payload), len(raw), zlib.crc32(payload)))
    return b"".join((header, payload))


def decode_payload(h: FrameHeader, payload):
    """Check a frame's stored payload against its header and decode it.

    Parameters
    ----------
    h : FrameHeader
        A header that passed :func:`check_frame_header`.
    payload : bytes-like
        The ``payload_len`` bytes after the header.

    Returns
    -------
    records : ndarray of CAPTURE_RECORD_DTYPE
    ids : ndarray of uint64 (little-endian)
        Read-only views of one decompressed buffer.

    Raises
    ------
    CaptureFormatError
        crc32 mismatch, undecodable payload, id counts (:func:`id_counts`:
        ``count``, 0 for batch-only records) that do not sum to ``n_ids``,
        a record both batch-only and an address record, or record seqs
        that do not run strictly upward from ``first_seq`` to
        ``next_seq - 1``.
    """
    records, ids, _ = decode_payload_counted(h, payload)
    return records, ids


def decode_payload_counted(h: FrameHeader, payload):
    """:func:`decode_payload`, and ``(records, packets, refused)``: its
    batch-only records and their packets, and its refused records, counted
    by the checks on the way ((0, 0, 0) if none)."""
    if zlib.crc32(payload) != h.payload_crc32:
        raise CaptureFormatError("payload crc32 mismatch")
    raw = decompress_payload(payload, h.codec, h.raw_len)
    records = np.frombuffer(raw, CAPTURE_RECORD_DTYPE, count=h.n_records)
    ids = np.frombuffer(raw, PACKET_ID_DTYPE, count=h.n_ids,
                        offset=h.n_records * CAPTURE_RECORD_SIZE)
    return records, ids, _check_decoded(h, records)


def _check_decoded(h: FrameHeader, records):
    """The checks of decoded records against their header (decode_payload);
    return the batch-only records, their packets and the refused records,
    (0, 0, 0) if none."""
    facts = _record_facts(records)
    problem, batch_only = _records_check(records, h.n_ids, facts)
    if problem is not None:
        raise CaptureFormatError(problem)
    if h.n_records:
        first, last = int(records[0]["seq"]), int(records[-1]["seq"])
        if first != h.first_seq or last + 1 != h.next_seq:
            raise CaptureFormatError(
                f"records hold seqs {first}..{last}, header says "
                f"{h.first_seq}..{h.next_seq - 1}")
        if not facts[6]:
            raise CaptureFormatError("record seqs are not strictly increasing")
    return batch_only


#: A ZstdDecompressor per thread (one must not be used by two threads at
#: once), kept across frames: a new one per frame cost ~0.02 s of the
#: ~0.34 s of zstd on bench/analyze.py's 2 s capture (135 frames).
_dctx = threading.local()


def _zstd_into(payload, parts):
    """Decompress the zstd frame `payload` straight into the uint8 arrays
    `parts`, filling each; False unless it holds exactly that much."""
    zstandard = _zstd()
    dctx = getattr(_dctx, "d", None)
    if dctx is None:
        dctx = _dctx.d = zstandard.ZstdDecompressor()
    with dctx.stream_reader(payload) as reader:
        for part in parts:
            view, got = memoryview(part), 0
            while got < len(part):
                n = reader.readinto(view[got:])
                if not n:
                    return False
                got += n
        return not reader.read(1)


def decode_payload_into(h: FrameHeader, payload, records, ids):
    """:func:`decode_payload` into arrays of the caller's: the records into
    `records`, the ids into `ids`.

    The capture reader decodes every frame of a capture into one records
    array and one ids array this way: a zstd payload is decompressed
    straight into them, so the capture is held once, never as per-frame
    buffers and then their concatenation (2x, and a copy).

    Parameters
    ----------
    h : FrameHeader
        A header that passed :func:`check_frame_header`.
    payload : bytes-like
    records : ndarray of CAPTURE_RECORD_DTYPE
        Writable, contiguous, ``h.n_records`` long.
    ids : ndarray of PACKET_ID_DTYPE
        Writable, contiguous, ``h.n_ids`` long.

    Returns
    -------
    (int, int, int)
        Batch-only records (``CAPTURE_F_NOIDS``), their packets and refused
        records (``CAPTURE_F_REFUSED``), (0, 0, 0) when there are none:
        found by the checks, so the reader need not
        look again.

    Raises
    ------
    CaptureFormatError
        As :func:`decode_payload`, with the same messages; `records` and
        `ids` then hold garbage.
    """
    if zlib.crc32(payload) != h.payload_crc32:
        raise CaptureFormatError("payload crc32 mismatch")
    parts = (records.view(np.uint8), ids.view(np.uint8))
    done = False
    if h.codec == CODEC_ZSTD:
        zstandard = _zstd()
        try:
            done = (zstandard.frame_content_size(payload) in (-1, h.raw_len)
                    and _zstd_into(payload, parts))
        except zstandard.ZstdError:
            done = False
    if not done:
        # other codecs, and any problem: the one-shot path, whose errors
        # are the messages decode_payload gives
        raw = decompress_payload(payload, h.codec, h.raw_len)
        raw = np.frombuffer(raw, np.uint8)
        n = len(parts[0])
        parts[0][:] = raw[:n]
        parts[1][:] = raw[n:]
    return _check_decoded(h, records)


def decode_frame(buf):
    """Decode one whole frame (e.g. a message from the collector's socket).

    Parameters
    ----------
    buf : bytes-like
        Exactly one frame: header and payload.

    Returns
    -------
    header : FrameHeader
    records : ndarray of CAPTURE_RECORD_DTYPE
    ids : ndarray of uint64

    Raises
    ------
    CaptureFormatError
        Any check of :func:`unpack_frame_header`, :func:`check_frame_header`
        or :func:`decode_payload` fails, or `buf` is not one frame long.
    """
    h = unpack_frame_header(buf)
    problem = check_frame_header(h)
    if problem is not None:
        raise CaptureFormatError(problem)
    mv = memoryview(buf)
    if len(mv) != FRAME_HEADER_SIZE + h.payload_len:
        raise CaptureFormatError(
            f"frame is {len(mv)} bytes, header says {FRAME_HEADER_SIZE + h.payload_len}")
    records, ids = decode_payload(h, mv[FRAME_HEADER_SIZE:])
    return h, records, ids
