"""The sample tables of an MP4 / MOV file's H.264 video track, read from its ``moov`` box without demuxing.

:func:`read_sample_table` walks the boxes (ISO/IEC 14496-12) down to the one video track's ``stbl`` and returns,
per sample in decoding order, its byte range in the file, its presentation time and whether it is a sync sample,
plus what a decoder needs (the ``avcC`` record, the frame size and the ``colr`` tags). A clip's packets can then be
read straight from their byte ranges, with no pass over the file. It returns ``None`` for anything it does not
handle exactly as FFmpeg's mov demuxer would number the frames (fragmented files, several video tracks or sample
descriptions, another codec, edit lists other than one plain segment covering every sample, inconsistent tables),
and the caller then demuxes the file the usual way.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

import numpy as np

# boxes on the way from the file to the sample tables
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}


@dataclass
class SampleTable:
    """One video track, every array indexed by sample number (decoding order)."""
    codec: str  # FFmpeg decoder name
    extradata: bytes  # the decoder configuration record (avcC payload)
    width: int
    height: int
    offsets: np.ndarray  # int64 byte offset in the file
    sizes: np.ndarray  # int64 byte size
    dts: np.ndarray  # int64, media timescale
    pts: np.ndarray  # int64, media timescale (dts + composition offset)
    keyframes: np.ndarray  # bool: sync samples
    # (primaries, transfer, matrix, full range or None) of a colr box, as FFmpeg's mov demuxer passes them on
    colour: Optional[tuple[int, int, int, Optional[bool]]] = None


class _Unsupported(Exception):
    """Something this reader leaves to the demuxer."""


def _boxes(data: bytes, start: int = 0, end: Optional[int] = None) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, box end)`` of the boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, position)
        header = 8
        if size == 1:
            if position + 16 > end:
                raise _Unsupported("truncated box header")
            size, header = struct.unpack_from(">Q", data, position + 8)[0], 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            raise _Unsupported(f"box {kind!r} overruns its parent")
        yield kind, position + header, position + size
        position += size


def _read_moov(file: BinaryIO) -> bytes:
    """The payload of the top-level ``moov`` box (the file's other top-level boxes are only stepped over)."""
    file.seek(0, 2)
    length = file.tell()
    position, moov = 0, None
    while position + 8 <= length:
        file.seek(position)
        header = file.read(16)
        size, kind = struct.unpack_from(">I4s", header)
        skip = 8
        if size == 1:
            size, skip = struct.unpack_from(">Q", header, 8)[0], 16
        elif size == 0:
            size = length - position
        if size < skip or position + size > length:
            raise _Unsupported(f"top-level box {kind!r} overruns the file")
        if kind in (b"moof", b"mfra"):
            raise _Unsupported("fragmented file")
        if kind == b"moov":
            if moov is not None:
                raise _Unsupported("several moov boxes")
            file.seek(position + skip)
            moov = file.read(size - skip)
        position += size
    if moov is None:
        raise _Unsupported("no moov box")
    return moov


def _children(data: bytes, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    found: dict[bytes, list[tuple[int, int]]] = {}
    for kind, payload, box_end in _boxes(data, start, end):
        found.setdefault(kind, []).append((payload, box_end))
    return found


def _one(children: dict[bytes, list[tuple[int, int]]], kind: bytes) -> tuple[int, int]:
    boxes = children.get(kind, [])
    if len(boxes) != 1:
        raise _Unsupported(f"{len(boxes)} {kind.decode()} boxes")
    return boxes[0]


def _table(data: bytes, start: int, end: int, columns: int, signed: bool = False) -> np.ndarray:
    """A full box's ``(entry_count, columns)`` table of big-endian 32-bit integers (after version, flags, count)."""
    (count,) = struct.unpack_from(">I", data, start + 4)
    if start + 8 + 4 * columns * count > end:
        raise _Unsupported("table overruns its box")
    return np.frombuffer(data, ">i4" if signed else ">u4", count * columns, start + 8).astype(np.int64).reshape(
        count, columns)


def _video_track(moov: bytes) -> tuple[int, int]:
    top = _children(moov, 0, len(moov))
    if b"mvex" in top:
        raise _Unsupported("fragmented file")
    tracks = []
    for start, end in top.get(b"trak", []):
        mdia = _children(moov, *_one(_children(moov, start, end), b"mdia"))
        hdlr_start, _ = _one(mdia, b"hdlr")
        if moov[hdlr_start + 8:hdlr_start + 12] == b"vide":
            tracks.append((start, end))
    if len(tracks) != 1:
        raise _Unsupported(f"{len(tracks)} video tracks")
    return tracks[0]


# values FFmpeg has names for (others it reads as unspecified; those files are left to it)
_PRIMARIES = {1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 22}
_TRANSFERS = set(range(1, 19)) - {3}
_MATRICES = set(range(0, 15)) - {3}


def _colour(data: bytes, start: int, end: int) -> tuple[int, int, int, Optional[bool]]:
    """A ``colr`` box's ``(primaries, transfer, matrix, full range or None)``: what FFmpeg's mov demuxer sets on the
    stream (and so on the decoder, which keeps them unless the bitstream says otherwise)."""
    kind = data[start:start + 4]
    if kind not in (b"nclx", b"nclc") or end - start < (11 if kind == b"nclx" else 10):
        raise _Unsupported(f"colr box of type {kind!r}")
    primaries, transfer, matrix = struct.unpack_from(">HHH", data, start + 4)
    if primaries not in _PRIMARIES or transfer not in _TRANSFERS or matrix not in _MATRICES:
        raise _Unsupported("unusual colr values")
    return primaries, transfer, matrix, bool(data[start + 10] & 0x80) if kind == b"nclx" else None


def _sample_entry(moov: bytes, start: int, end: int) -> tuple[str, bytes, int, int, Optional[tuple]]:
    (count,) = struct.unpack_from(">I", moov, start + 4)
    entries = list(_boxes(moov, start + 8, end))
    if count != 1 or len(entries) != 1:
        raise _Unsupported(f"{count} sample descriptions")
    kind, payload, entry_end = entries[0]
    if kind not in (b"avc1", b"avc3"):
        raise _Unsupported(f"codec {kind!r}")
    width, height = struct.unpack_from(">HH", moov, payload + 24)
    extradata, colour = None, None
    for child, child_start, child_end in _boxes(moov, payload + 78, entry_end):
        if child == b"avcC":
            extradata = moov[child_start:child_end]
        elif child == b"colr":
            colour = _colour(moov, child_start, child_end)
    if extradata is None:
        raise _Unsupported("no avcC box")
    return "h264", extradata, width, height, colour


def _parse(file: BinaryIO) -> SampleTable:
    moov = _read_moov(file)
    top = _children(moov, 0, len(moov))
    mvhd_start, _ = _one(top, b"mvhd")
    movie_timescale = struct.unpack_from(">I", moov, mvhd_start + (20 if moov[mvhd_start] == 1 else 12))[0]
    trak = _children(moov, *_video_track(moov))
    mdia = _children(moov, *_one(trak, b"mdia"))
    mdhd_start, _ = _one(mdia, b"mdhd")
    media_timescale = struct.unpack_from(">I", moov, mdhd_start + (20 if moov[mdhd_start] == 1 else 12))[0]
    stbl = _children(moov, *_one(_children(moov, *_one(mdia, b"minf")), b"stbl"))
    codec, extradata, width, height, colour = _sample_entry(moov, *_one(stbl, b"stsd"))

    # sizes (stsz), decoding times (stts), composition offsets (ctts, always signed: FFmpeg reads version 0 so too)
    stsz_start, stsz_end = _one(stbl, b"stsz")
    constant_size, count = struct.unpack_from(">II", moov, stsz_start + 4)
    if count == 0:
        raise _Unsupported("no samples")
    if constant_size:
        sizes = np.full(count, constant_size, dtype=np.int64)
    else:
        if stsz_start + 12 + 4 * count > stsz_end:
            raise _Unsupported("stsz overruns its box")
        sizes = np.frombuffer(moov, ">u4", count, stsz_start + 12).astype(np.int64)
    stts = _table(moov, *_one(stbl, b"stts"), 2)
    if stts[:, 0].sum() != count:
        raise _Unsupported("stts does not cover the samples")
    dts = np.concatenate([[0], np.cumsum(np.repeat(stts[:, 1], stts[:, 0]))[:-1]])
    if b"ctts" in stbl:
        ctts = _table(moov, *_one(stbl, b"ctts"), 2, signed=True)
        if ctts[:, 0].sum() != count or (ctts[:, 0] < 0).any():
            raise _Unsupported("ctts does not cover the samples")
        pts = dts + np.repeat(ctts[:, 1], ctts[:, 0])
    else:
        pts = dts.copy()
    if len(np.unique(pts)) != count:
        raise _Unsupported("repeated presentation times")
    if b"stss" in stbl:
        sync = _table(moov, *_one(stbl, b"stss"), 1)[:, 0] - 1
        if len(sync) == 0 or sync.min() < 0 or sync.max() >= count:
            raise _Unsupported("stss out of range")
        keyframes = np.zeros(count, dtype=bool)
        keyframes[sync] = True
    else:
        keyframes = np.ones(count, dtype=bool)

    # byte offsets: chunks (stco / co64) of stsc's samples-per-chunk runs
    if b"stco" in stbl:
        chunk_offsets = _table(moov, *_one(stbl, b"stco"), 1)[:, 0]
    else:
        co64_start, co64_end = _one(stbl, b"co64")
        (chunks,) = struct.unpack_from(">I", moov, co64_start + 4)
        if co64_start + 8 + 8 * chunks > co64_end:
            raise _Unsupported("co64 overruns its box")
        chunk_offsets = np.frombuffer(moov, ">u8", chunks, co64_start + 8).astype(np.int64)
    stsc = _table(moov, *_one(stbl, b"stsc"), 3)
    first_chunks = stsc[:, 0] - 1
    if len(stsc) == 0 or first_chunks[0] != 0 or (np.diff(first_chunks) <= 0).any() or (stsc[:, 2] != 1).any():
        raise _Unsupported("stsc")
    run_lengths = np.diff(np.append(first_chunks, len(chunk_offsets)))
    if (run_lengths <= 0).any():
        raise _Unsupported("stsc names chunks past stco")
    per_chunk = np.repeat(stsc[:, 1], run_lengths)
    if per_chunk.sum() != count:
        raise _Unsupported("chunks do not hold the samples")
    chunk_of_sample = np.repeat(np.arange(len(chunk_offsets)), per_chunk)
    ends = np.cumsum(sizes)
    chunk_first = np.concatenate([[0], np.cumsum(per_chunk)[:-1]])  # first sample of each chunk
    within = ends - sizes - (ends - sizes)[chunk_first][chunk_of_sample]
    offsets = chunk_offsets[chunk_of_sample] + within

    # the edit list: FFmpeg keeps every sample (and only shifts times) when one segment at rate 1 covers them all
    edts = trak.get(b"edts", [])
    if edts:
        elst = _children(moov, *_one(trak, b"edts")).get(b"elst", [])
        if len(elst) != 1:
            raise _Unsupported("edts without one elst")
        start, end = elst[0]
        version = moov[start]
        (entries,) = struct.unpack_from(">I", moov, start + 4)
        if entries != 1 or start + 8 + (20 if version == 1 else 12) > end:
            raise _Unsupported(f"edit list of {entries} entries")
        if version == 1:
            duration, media_time, rate = struct.unpack_from(">QqI", moov, start + 8)
        else:
            duration, media_time, rate = struct.unpack_from(">IiI", moov, start + 8)
        if rate != 0x10000 or media_time < 0 or duration == 0 or movie_timescale == 0:
            raise _Unsupported("edit list with an empty edit, no duration or another rate")
        # the segment's end in media time, rounded as FFmpeg's av_rescale does
        span_end = media_time + (duration * media_timescale + movie_timescale // 2) // movie_timescale
        if pts.min() < media_time or pts.max() >= span_end:
            raise _Unsupported("the edit list leaves samples out")
    return SampleTable(codec, extradata, width, height, offsets, sizes, dts, pts, keyframes, colour)


def read_sample_table(path: Path) -> Optional[SampleTable]:
    """The video track's samples, or ``None`` where the file is better demuxed (see the module's docstring)."""
    try:
        with open(path, "rb") as file:
            table = _parse(file)
        if (table.offsets < 0).any() or (table.offsets + table.sizes > path.stat().st_size).any():
            raise _Unsupported("samples outside the file")
        return table
    except (_Unsupported, struct.error, ValueError, IndexError, OSError):
        return None
