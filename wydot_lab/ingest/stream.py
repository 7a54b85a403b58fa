"""Bytes of one object -> pieces of whole lines, in bounded memory whatever it holds.

Every object streams through fixed-size buffers: raw bytes are read `RAW_CHUNK` at a time,
gzip members inflate `RAW_CHUNK` of output at a time (a gzip bomb never lands in memory),
lines are cut into pieces of about `STREAM_CHUNK` bytes, a line longer than `MAX_LINE` is
quarantined as `line_too_long` with its first `LINE_HEAD` bytes (never held whole), empty
lines are counted in bulk (numpy) instead of one object each, and an object inflating past
`max_bytes` stops there and is quarantined whole as `object_too_large`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

from wydot_lab.ingest.results import IngestError

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
STREAM_CHUNK = 4 << 20  # bytes read at a time from a big NDJSON file
RAW_CHUNK = 1 << 20  # bytes read, or inflated, at a time
MAX_LINE = 16 << 20  # a BSM line is ~1-3 KB; a longer line is quarantined, never held whole
LINE_HEAD = 4096  # bytes of a too-long line (or too-large object) kept as its quarantine text


class ObjectTooLarge(IngestError):
    """An object inflated past its limit (`source.max_object_mb`); it is quarantined whole."""

    def __init__(self, source_object: str, limit: int, seen: int):
        super().__init__(
            f"{source_object}: more than {limit:,} bytes inflated (read {seen:,}); "
            "raise source.max_object_mb / --max-object-mb to ingest it"
        )
        self.source_object, self.limit, self.seen = source_object, limit, seen


class _Long(NamedTuple):
    """A line longer than `MAX_LINE`: its first bytes and its size."""

    head: bytes
    size: int


def _raw_chunks(f, size: int | None = None) -> Iterator[bytes]:
    """A binary file's bytes `RAW_CHUNK` at a time (at most `size` bytes when given)."""
    left = size
    while left is None or left > 0:
        chunk = f.read(RAW_CHUNK if left is None else min(RAW_CHUNK, left))
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
        yield chunk


def _inflate(chunks: Iterator[bytes], issues: list[str]) -> Iterator[bytes]:
    """Raw chunks -> content chunks: every gzip member inflated `RAW_CHUNK` at a time when the
    stream starts with the gzip magic, else passed through. A corrupt, truncated or trailing
    part ends the stream with `corrupt_gzip (...)` in `issues`; what decoded before is kept."""
    first = b""
    for chunk in chunks:
        first += chunk
        if len(first) >= len(GZIP_MAGIC):
            break
    if not first.startswith(GZIP_MAGIC):
        if first:
            yield first
        yield from chunks
        return
    d, pending = zlib.decompressobj(wbits=31), first
    while True:
        try:
            out = d.decompress(pending, RAW_CHUNK)
        except zlib.error as err:
            issues.append(f"corrupt_gzip ({err})")
            return
        pending = d.unconsumed_tail
        if out:
            yield out
        if d.eof:  # a member ended: another follows, or the stream ends, or garbage
            rest = d.unused_data + pending
            while len(rest) < len(GZIP_MAGIC):
                more = next(chunks, None)
                if more is None:
                    break
                rest += more
            if not rest:
                return
            if not rest.startswith(GZIP_MAGIC):
                issues.append("corrupt_gzip (trailing garbage)")
                return
            d, pending = zlib.decompressobj(wbits=31), rest
        elif not out and not pending:
            more = next(chunks, None)
            if more is None:
                issues.append("corrupt_gzip (truncated stream)")
                return
            pending = more


def _limited(chunks: Iterator[bytes], source_object: str, max_bytes: int | None) -> Iterator[bytes]:
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if max_bytes is not None and seen > max_bytes:
            raise ObjectTooLarge(source_object, max_bytes, seen)
        yield chunk


def _line_pieces(
    chunks: Iterable[bytes], piece: int | None = None, max_line: int | None = None
) -> Iterator[bytes | _Long]:
    """Content chunks -> pieces of whole lines (about `piece` bytes; only the last may lack its
    newline) and `_Long` markers for lines over `max_line`, in stream order."""
    piece = piece or STREAM_CHUNK
    max_line = max_line or MAX_LINE
    done: list = []  # complete lines not yet yielded
    done_len = 0
    part: list = []  # the current incomplete line
    part_len = 0
    long: _Long | None = None
    for chunk in chunks:
        view, pos = memoryview(chunk), 0
        if long is not None:
            nl = chunk.find(b"\n")
            if nl < 0:
                long = long._replace(size=long.size + len(chunk))
                continue
            yield long._replace(size=long.size + nl)
            long, pos = None, nl + 1
        cut = chunk.rfind(b"\n", pos) + 1
        while cut > pos:  # whole lines up to `cut`; a piece ends at its last newline within its size
            target = pos + piece - done_len - part_len
            end = (
                cut if target >= cut else (chunk.rfind(b"\n", pos, max(target, pos)) + 1 or chunk.find(b"\n", pos) + 1)
            )
            part.append(view[pos:end])
            done.extend(part)
            done_len += part_len + end - pos
            part, part_len, pos = [], 0, end
            if done_len >= piece or end < cut:
                yield b"".join(done)
                done, done_len = [], 0
        if pos < len(chunk):
            part.append(view[pos:])
            part_len += len(chunk) - pos
        if part_len > max_line:
            if done:
                yield b"".join(done)
                done, done_len = [], 0
            head = bytes(b"".join(part)[:LINE_HEAD])
            long, part, part_len = _Long(head, part_len), [], 0
    if long is not None:
        yield long
    if done or part_len:
        yield b"".join(done + part)


def _numbered(data: bytes, first: int, strip_bom: bool) -> tuple[Iterator[tuple[int, memoryview]], int, int]:
    """(numbered non-empty lines of `data` as views, lines in all, empty lines): newlines are
    found with numpy, so a piece of blank lines costs no object per line. CR before LF and a
    leading BOM (`strip_bom`) are dropped; a last line without newline counts."""
    start0 = len(BOM) if strip_bom and data.startswith(BOM) else 0
    if start0 >= len(data):
        return iter(()), 0, 0
    buf = np.frombuffer(data, np.uint8)
    nl = np.flatnonzero(buf[start0:] == 10) + start0
    ends = nl if nl.size and nl[-1] == len(data) - 1 else np.append(nl, len(data))
    starts = np.concatenate(([start0], nl[: ends.size - 1] + 1))
    stops = ends.copy()
    cr = (stops > starts) & (buf[np.maximum(stops - 1, 0)] == 13)
    stops[cr] -= 1
    keep = np.flatnonzero(stops > starts)
    view = memoryview(data)
    numbers = (keep + first).tolist()
    lines = ((n, view[a:b]) for n, a, b in zip(numbers, starts[keep].tolist(), stops[keep].tolist()))
    return lines, int(ends.size), int(ends.size - keep.size)


def split_lines(data: bytes, strip_bom: bool = True) -> list[memoryview]:
    """NDJSON lines as zero-copy views of `data`, BOM and CR removed (CRLF files, no trailing
    newline: all fine). Views, not copies: cutting 200 MB into bytes objects cost ~3x the
    newline search, and the decoder reads a view as fast as bytes. (A list of every line: for
    bounded data only; the ingest streams through `_numbered`.)"""
    view = memoryview(data)
    find = data.find
    start = len(BOM) if strip_bom and data.startswith(BOM) else 0
    size = len(data)
    has_cr = b"\r" in data
    lines: list[memoryview] = []
    append = lines.append
    while start < size:
        end = find(b"\n", start)
        if end < 0:
            end = size
        stop = end - 1 if has_cr and end > start and data[end - 1] == 13 else end
        append(view[start:stop])
        start = end + 1
    return lines
