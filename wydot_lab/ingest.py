"""Bytes of ODE output (NDJSON, pretty single objects, .gz) -> canonical table + quarantine.

Counts always add up: records (lines read) = valid + quarantined + non_bsm + blank.
Nothing is dropped: a line that fails anywhere lands in quarantine with its text
and every reason, and non-BSM records (TIM, ...) are kept aside by type.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import itertools
import multiprocessing
import os
import shutil
import stat
import tempfile
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import NamedTuple

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wydot_lab import parse, validate
from wydot_lab.errors import WydotLabError
from wydot_lab.schema import (
    BSM_SCHEMA,
    CRUMB,
    NON_BSM_SCHEMA,
    QUARANTINE_SCHEMA,
    RECEIVED_FALLBACK_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
)

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
NOTE_SUFFIXES = {".md", ".rst"}  # provenance notes beside data (SOURCES.md) are not records
BATCH = 1024  # records flattened at a time: small enough to stay in cache
STREAM_CHUNK = 4 << 20  # bytes read at a time from a big NDJSON file
PARALLEL_MIN = 64 << 20  # from this size an NDJSON file is split across processes (below, start-up costs more)
SPANS_PER_WORKER = 4  # several spans per process: results of early spans travel back while later ones parse


class IngestError(WydotLabError, ValueError):
    """A whole file cannot be ingested (the message names it)."""


class SchemaVersionError(IngestError):
    """A record declares an ODE schemaVersion this toolkit does not know."""

    def __init__(self, source_object: str, lineno: int, version):
        super().__init__(f"{source_object}:{lineno}: unknown ODE schemaVersion {version} ({supported_versions()})")
        self.source_object, self.lineno, self.version = source_object, lineno, version

    def __reduce__(self):  # crosses process boundaries with its fields
        return type(self), (self.source_object, self.lineno, self.version)


def supported_versions() -> str:
    """ "supported: 1..9": what an unknown schemaVersion's error and quarantine reason say."""
    lo, hi = min(SUPPORTED_SCHEMA_VERSIONS), max(SUPPORTED_SCHEMA_VERSIONS)
    assert SUPPORTED_SCHEMA_VERSIONS == frozenset(range(lo, hi + 1))
    return f"supported: {lo}..{hi}"


@dataclasses.dataclass
class IngestResult:
    valid: pa.Table
    quarantine: pa.Table
    non_bsm: pa.Table
    blank: int = 0
    records: int = 0
    files: int = 0
    rule_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    file_issues: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def counts(self, valid: int | None = None) -> dict:
        """`valid`: the valid row count when the rows went elsewhere (`ingest_to_parquet`)."""
        out = {
            "records": self.records,
            "valid": self.valid.num_rows if valid is None else valid,
            "quarantined": self.quarantine.num_rows,
            "non_bsm": self.non_bsm.num_rows,
            "blank": self.blank,
            "files": self.files,
        }
        assert out["records"] == out["valid"] + out["quarantined"] + out["non_bsm"] + out["blank"], out
        return out

    def non_bsm_types(self) -> dict[str, int]:
        return dict(Counter(self.non_bsm.column("record_type").to_pylist()))

    def quarantine_reasons(self) -> dict[str, int]:
        """Records per rule (a record with two reasons counts under both)."""
        return validate.reason_counts(self.quarantine)

    def write_quarantine(self, path: str | Path) -> None:
        pq.write_table(self.quarantine, str(path))

    @staticmethod
    def concat(results: Iterable[IngestResult]) -> IngestResult:
        results = list(results)
        if not results:
            return empty_result()
        rules: Counter = Counter()
        for r in results:
            rules.update(r.rule_counts)
        return IngestResult(
            valid=pa.concat_tables([r.valid for r in results]),
            quarantine=pa.concat_tables([r.quarantine for r in results]),
            non_bsm=pa.concat_tables([r.non_bsm for r in results]),
            blank=sum(r.blank for r in results),
            records=sum(r.records for r in results),
            files=sum(r.files for r in results),
            rule_counts=dict(rules),
            file_issues=[i for r in results for i in r.file_issues],
        )


def quarantine_table(source_object: str, lines: list[int], texts: list[str], reasons: list[list[str]]) -> pa.Table:
    return pa.table(
        {
            "source_object": pa.array([source_object] * len(lines), pa.string()),
            "source_line": pa.array(lines, pa.int64()),
            "line": pa.array(texts, pa.string()),
            "reasons": pa.array(reasons, pa.list_(pa.string())),
        },
        schema=QUARANTINE_SCHEMA,
    )


def empty_result() -> IngestResult:
    return IngestResult(BSM_SCHEMA.empty_table(), QUARANTINE_SCHEMA.empty_table(), NON_BSM_SCHEMA.empty_table())


# ---------------------------------------------------------------- bytes -> lines (streaming)
#
# Every object streams through fixed-size buffers whatever it holds: raw bytes are read
# `RAW_CHUNK` at a time, gzip members inflate `RAW_CHUNK` of output at a time (a gzip bomb
# never lands in memory), lines are cut into pieces of about `STREAM_CHUNK` bytes, a line
# longer than `MAX_LINE` is quarantined as `line_too_long` with its first `LINE_HEAD` bytes
# (never held whole), empty lines are counted in bulk (numpy) instead of one object each,
# and an object inflating past `max_bytes` stops there and is quarantined whole as
# `object_too_large`.

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


def _feed_piece(lines_in: _Lines, data: bytes, first: int, strip_bom: bool) -> int:
    """Feed `data`'s lines numbered from `first` into `lines_in`; empty lines are counted blank
    without a decode. Returns the number of lines."""
    lines, n, empty = _numbered(data, first, strip_bom)
    lines_in.feed(lines)
    lines_in.blank += empty
    lines_in.records += empty
    return n


def _line_too_long(lines_in: _Lines, lineno: int, long: _Long) -> None:
    lines_in.set_aside(
        lineno, long.head, [f"line_too_long ({long.size:,} bytes > {MAX_LINE:,}; first {len(long.head):,} kept)"]
    )


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


def _text(line: bytes | memoryview) -> str:
    return str(line, "utf-8", errors="backslashreplace")


# ---------------------------------------------------------------- flatten


def _meta(md: parse.Metadata) -> tuple:
    """The metadata columns of `_row` (times still as text); v9 names bsmSource `source`."""
    sid = md.serialId
    rmd = md.receivedMessageDetails
    loc = rmd.locationData if rmd is not None and rmd.locationData is not None else _EMPTY_LOC
    return (
        md.recordGeneratedAt or md.generatedAt,
        md.odeReceivedAt or md.receivedAt,
        md.recordType,
        md.schemaVersion,
        md.bsmSource if md.bsmSource is not None else md.source,
        md.sanitized,
        md.logFileName,
        md.securityResultCode,
        md.recordGeneratedBy,
        md.validSignature,
        md.payloadType,
        sid.streamId,
        sid.bundleSize,
        sid.bundleId,
        sid.recordId,
        sid.serialNumber,
        loc.latitude,
        loc.longitude,
        loc.elevation,
        loc.speed,
        loc.heading,
        rmd.rxSource if rmd is not None else None,
    )


def _row(rec: parse.Record):
    cd = rec.payload.data.coreData
    pos, acc, accu, br, size = cd.position, cd.accelSet, cd.accuracy, cd.brakes, cd.size
    wb = br.wheelBrakes
    return _meta(rec.metadata or _EMPTY_MD) + (
        cd.msgCnt,
        cd.id,
        cd.secMark,
        pos.latitude,
        pos.longitude,
        pos.elevation,
        cd.speed,
        cd.heading,
        acc.accelLong,
        acc.accelLat,
        acc.accelVert,
        acc.accelYaw,
        accu.semiMajor,
        accu.semiMinor,
        accu.orientation,
        cd.transmission,
        wb.leftFront,
        wb.rightFront,
        wb.leftRear,
        wb.rightRear,
        wb.unavailable,
        br.traction,
        br.abs,
        br.scs,
        br.brakeBoost,
        br.auxBrakes,
        size.width,
        size.length,
    )


def _row_frame(rec: parse.Record):
    """`_row` of a v9 record (the J2735 frame): the same columns, numbers still in J2735
    units and the wheel brakes still one hex text (`_frame_units` converts both)."""
    cd = rec.payload.data.value.BasicSafetyMessage.coreData
    acc, accu, br, size = cd.accelSet, cd.accuracy, cd.brakes, cd.size
    return _meta(rec.metadata or _EMPTY_MD) + (
        cd.msgCnt,
        cd.id,
        cd.secMark,
        cd.lat,
        cd.long,
        cd.elev,
        cd.speed,
        cd.heading,
        acc.long,
        acc.lat,
        acc.vert,
        acc.yaw,
        accu.semiMajor,
        accu.semiMinor,
        accu.orientation,
        cd.transmission,
        None,
        None,
        None,
        None,
        None,
        br.traction,
        br.abs,
        br.scs,
        br.brakeBoost,
        br.auxBrakes,
        size.width,
        size.length,
    )


_EMPTY_MD = parse.Metadata()
_EMPTY_LOC = parse.LocationData()
TIME_SOURCE = "metadata_generatedAt_source"
_FROM_RECORD, _FROM_RECEIVED = pa.scalar("recordGeneratedAt"), pa.scalar("odeReceivedAt")
_NO_SOURCE = pa.scalar(None, pa.string())
# `_row` yields the leading BSM_SCHEMA columns in schema order (the two times still as text)
_ROW_COLS = [name for name in BSM_SCHEMA.names[:51] if name != TIME_SOURCE]
assert _ROW_COLS[-1] == "coreData_size_length" and _ROW_COLS[:2] == ["metadata_generatedAt", "metadata_receivedAt"]
_TIME_COLS = frozenset(_ROW_COLS[:2])
_RMD_COLS = {
    "metadata_rmd_latitude",
    "metadata_rmd_longitude",
    "metadata_rmd_elevation",
    "metadata_rmd_speed",
    "metadata_rmd_heading",
}
# the `_row` tuple as one Arrow struct: times and receiver position still text, as ODE writes them
_ROW_TYPE = pa.struct(
    [
        (name, pa.string() if name in _TIME_COLS or name in _RMD_COLS else BSM_SCHEMA.field(name).type)
        for name in _ROW_COLS
    ]
)
_ROW_FIELD_TYPES = [f.type for f in _ROW_TYPE]
# ODE sentinels that must never reach analysis as numbers
SENTINELS = {
    "coreData_secMark": 65535,
    "coreData_accelset_accelLong": 2001,
    "coreData_accelset_accelLat": 2001,
    "coreData_accelset_accelVert": -127,
    "coreData_heading": 360.0,
    "coreData_speed": 163.82,
    "coreData_elevation": -409.6,
}
# v9 (J2735 integer units) -> the units of v1..v8: column: (times, divided by, "unavailable" code).
# value * times / divided_by, both exact integers, so the float is the correctly rounded
# decimal ODE v6 wrote for the same J2735 value (870 -> 17.4, not 17.400000000000002).
J2735_UNITS: dict[str, tuple[int, int, int | None]] = {
    "coreData_position_lat": (1, 10**7, 900000001),  # 1e-7 deg
    "coreData_position_long": (1, 10**7, 1800000001),
    "coreData_elevation": (1, 10, -4096),  # 0.1 m
    "coreData_speed": (2, 100, 8191),  # 0.02 m/s
    "coreData_heading": (125, 10**4, 28800),  # 0.0125 deg
    "coreData_accelset_accelLong": (1, 100, 2001),  # 0.01 m/s^2
    "coreData_accelset_accelLat": (1, 100, 2001),
    "coreData_accelset_accelVert": (2, 100, -127),  # 0.02 g
    "coreData_accelset_accelYaw": (1, 100, None),  # 0.01 deg/s; J2735 YawRate has no "unavailable"
    "coreData_accuracy_semiMajor": (5, 100, 255),  # 0.05 m
    "coreData_accuracy_semiMinor": (5, 100, 255),
    # 360/65535 deg, as ODE v6 computed it: 0.0054932479 deg per step (ODE rounds to 10 decimals)
    "coreData_accuracy_orientation": (54932479, 10**10, 65535),
}
# path-history crumbs: field: (times, divided by, "unavailable" code)
J2735_CRUMB_UNITS: dict[str, tuple[int, int, int | None]] = {
    "latOffset": (1, 10**7, -131072),  # 1e-7 deg
    "lonOffset": (1, 10**7, -131072),
    "elevationOffset": (1, 10, -2048),  # 0.1 m
    "timeOffset": (1, 100, 65535),  # 10 ms
}
RADIUS_STRAIGHT = 32767  # J2735 RadiusOfCurvature "straight": ODE v6 writes it as 0.0
_WHEEL_BITS = (
    ("coreData_brakes_wheelBrakes_unavailable", 0x80),
    ("coreData_brakes_wheelBrakes_leftFront", 0x40),
    ("coreData_brakes_wheelBrakes_leftRear", 0x20),
    ("coreData_brakes_wheelBrakes_rightFront", 0x10),
    ("coreData_brakes_wheelBrakes_rightRear", 0x08),
)


def _split(el: parse.PartIIElement):
    """A v1..v8 partII element: (its VehicleSafetyExtensions or None, else itself as kept)."""
    if el.id in parse.VSE_IDS:
        return el.value, None
    return None, {"id": el.id, "value": el.value}  # encodes only the members present


def _split_frame(el: parse.PartIIElement9):
    """`_split` of a v9 element ({partII-Id, partII-Value: {<extension name>: ...}}); another
    extension is kept as `{"id": name, "value": ...}` like v1..v8's (numbers as written)."""
    v = el.value
    if v.VehicleSafetyExtensions is not None:
        return v.VehicleSafetyExtensions, None
    for name in ("SpecialVehicleExtensions", "SupplementalVehicleExtensions"):
        if getattr(v, name):
            return None, {"id": name, "value": getattr(v, name)}
    return None, {"id": el.id, "value": {}}  # an extension this reader does not name: kept by its id


def _part2(elements: list | None, split=_split):
    """(crumbs or None, radiusOfCurve, confidence, other elements as JSON text or None); v9's
    (`split=_split_frame`) still in J2735 units."""
    if not elements:
        return None, None, None, None
    crumbs = roc = conf = None
    other = []
    for el in elements:
        vse, kept = split(el)
        if vse is None:
            other.append(kept)
            continue
        if vse.pathHistory is not None:
            crumbs = vse.pathHistory.crumbData
        if vse.pathPrediction is not None:
            roc, conf = vse.pathPrediction.radiusOfCurve, vse.pathPrediction.confidence
    return crumbs, roc, conf, (msgspec.json.encode(other).decode() if other else None)


def _crumb_array(crumb_lists: list) -> pa.Array:
    offsets = np.zeros(len(crumb_lists) + 1, dtype=np.int32)
    flat: list[parse.Crumb] = []
    valid = np.ones(len(crumb_lists), dtype=bool)
    for i, cl in enumerate(crumb_lists):
        if cl is None:
            valid[i] = False
        else:
            flat.extend(cl)
        offsets[i + 1] = len(flat)
    f64 = pa.float64()
    fields = [
        pa.array([c.latOffset for c in flat], type=f64),
        pa.array([c.lonOffset for c in flat], type=f64),
        pa.array([c.elevationOffset for c in flat], type=f64),
        pa.array([c.timeOffset for c in flat], type=f64),
    ]
    values = pa.StructArray.from_arrays(fields, fields=list(CRUMB))
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~valid))


def _j2735(arr: pa.Array, times: int, divided_by: int, unavailable: int | None) -> pa.Array:
    """J2735 integer units -> float in ODE v1..v8 units; the "unavailable" code -> null."""
    arr = arr.cast(pa.float64())
    if unavailable is not None:
        arr = pc.if_else(pc.equal(arr, float(unavailable)), pa.scalar(None, pa.float64()), arr)
    if times != 1:
        arr = pc.multiply(arr, float(times))
    return pc.divide(arr, float(divided_by))


def _wheel_brakes(texts: list) -> dict[str, pa.Array]:
    """JER hex texts of BrakeAppliedStatus ("80": unavailable) -> the five bool columns; each
    distinct text is read once (there are at most 32), a text that is no hex byte -> nulls."""
    codes = pa.array(texts, pa.string()).dictionary_encode()
    bits = {name: [] for name, _ in _WHEEL_BITS}
    for text in codes.dictionary.to_pylist():
        try:
            byte = int(text[:2], 16) if text and len(text) >= 2 else None
        except ValueError:
            byte = None
        for name, mask in _WHEEL_BITS:
            bits[name].append(None if byte is None else bool(byte & mask))
    return {name: pa.array(v, pa.bool_()).take(codes.indices) for name, v in bits.items()}


def _frame_units(data: dict[str, pa.Array], recs: list[parse.Record], parts: list) -> list:
    """v9 columns, in place: J2735 units -> the units of v1..v8, wheel brakes from their hex
    text, transmission in ODE's upper case; returns `parts` with crumbs and path prediction
    converted likewise."""
    for name, unit in J2735_UNITS.items():
        data[name] = _j2735(data[name], *unit)
    data.update(_wheel_brakes([r.payload.data.value.BasicSafetyMessage.coreData.brakes.wheelBrakes for r in recs]))
    data["coreData_transmission"] = pc.utf8_upper(data["coreData_transmission"])
    crumbs, roc, conf, other = (list(c) for c in zip(*parts))
    roc = pa.array(roc, pa.float64())
    roc = pc.if_else(pc.equal(roc, float(RADIUS_STRAIGHT)), 0.0, _j2735(roc, 1, 10, None))
    return [crumbs, roc, _j2735(pa.array(conf, pa.float64()), 5, 10, None), other]


_TS_NS, _TS_MS = pa.timestamp("ns", tz="UTC"), pa.timestamp("ms", tz="UTC")


def _parse_times(raw: pa.Array | list) -> pa.Array:
    """ISO-8601 texts (`Z`, `Z[UTC]`, offsets, 0-9 fraction digits) -> timestamp[ms, UTC], floored
    to the millisecond; unparseable -> null.

    Arrow's C++ cast takes a well-formed batch at once. In a batch holding a text it refuses,
    pandas finds the parseable ones and Arrow still parses them when it can, so a text gets
    the same answer whatever batch it lands in; only texts pandas refuses (the bad ones, few)
    are tried one by one.
    """
    arr = raw if isinstance(raw, pa.Array) else pa.array(raw, type=pa.string())
    arr = pc.replace_substring(arr, "[UTC]", "")
    try:
        return _floor_ms(pc.cast(arr, _TS_NS))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    texts = arr.to_pylist()
    by_pandas = pd.to_datetime(pd.Series(texts, dtype="object"), utc=True, format="ISO8601", errors="coerce")
    ok = by_pandas.notna().to_numpy()
    try:  # Arrow's answer for every text pandas could read
        out = _floor_ms(pc.cast(pc.if_else(pa.array(ok), arr, pa.scalar(None, pa.string())), _TS_NS))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # texts only pandas reads (they agree where both do)
        out = pa.array(by_pandas.dt.floor("ms").astype("datetime64[ms, UTC]"), type=_TS_MS)
    found = {}
    for i in np.flatnonzero(~ok):  # Arrow may read what pandas refused
        if texts[i] is not None:
            try:
                found[i] = _floor_ms(pc.cast(pa.array([texts[i]], pa.string()), _TS_NS))[0]
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
    if not found:
        return out
    mask = np.zeros(len(out), bool)
    mask[list(found)] = True
    return pc.replace_with_mask(out, pa.array(mask), pa.array(list(found.values()), type=_TS_MS))


def _floor_ms(ns: pa.Array) -> pa.Array:
    return pc.cast(pc.floor_temporal(ns, unit="millisecond"), _TS_MS)


_NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"


def _to_float(values: pa.Array | list) -> pa.Array:
    """Receiver-side strings ("0", "41.1", "unavailable") -> float, null where not a finite
    number; the same answer for a text whatever batch it lands in."""
    if not isinstance(values, pa.Array):  # a batch where some receiver fields are JSON numbers
        values = pa.array([v if v is None or isinstance(v, str) else repr(float(v)) for v in values], pa.string())
    try:
        out = pc.cast(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        text = pc.utf8_trim_whitespace(values)
        out = pc.cast(
            pc.if_else(pc.match_substring_regex(text, _NUMBER), text, pa.scalar(None, pa.string())), pa.float64()
        )
    if out.null_count < len(out) and not pc.all(pc.is_finite(out)).as_py():
        out = pc.if_else(pc.is_finite(out), out, pa.scalar(None, pa.float64()))
    return out


def flatten(
    recs: list[parse.Record], source_object: str, lines: list[int], parts: list, frame: bool = False
) -> tuple[pa.Table, pa.Array, np.ndarray]:
    """Decoded BSM records of one shape and their `_part2` -> (canonical table, each row's
    record-time text as read (null where absent), the column name of the key it was read
    from). `frame`: v9 records (the J2735 frame, `_split_frame` parts, J2735 units)."""
    n = len(recs)
    if n == 0:
        return BSM_SCHEMA.empty_table(), pa.array([], pa.string()), np.zeros(0, object)
    rows = [_row_frame(r) for r in recs] if frame else [_row(r) for r in recs]
    try:  # one C++ pass over the row tuples
        columns = pa.array(rows, type=_ROW_TYPE).flatten()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # an odd value: column by column
        columns = [_safe_array(values, typ) for values, typ in zip(zip(*rows), _ROW_FIELD_TYPES)]
    data: dict[str, pa.Array] = {}
    for name, values in zip(_ROW_COLS[2:], columns[2:]):
        data[name] = _to_float(values) if name in _RMD_COLS else values
    raw_generated, raw_received = (c if isinstance(c, pa.Array) else pa.array(c, pa.string()) for c in columns[:2])
    # v7+ leaves recordGeneratedAt empty where the generation time is unknown: odeReceivedAt stands in
    version = data["metadata_schemaVersion"]
    fallback = pc.and_(
        raw_generated.is_null(),
        pc.fill_null(pc.greater_equal(version, pa.scalar(RECEIVED_FALLBACK_VERSION, version.type)), False),
    )
    has_fallback = pc.any(fallback).as_py()
    record_time = pc.if_else(fallback, raw_received, raw_generated) if has_fallback else raw_generated
    data["metadata_generatedAt"] = _parse_times(record_time)
    data["metadata_receivedAt"] = _parse_times(raw_received)
    fields = np.full(n, "metadata_recordGeneratedAt", dtype=object)  # v3+; v1 writes generatedAt
    source = pc.if_else(raw_generated.is_valid(), _FROM_RECORD, _NO_SOURCE)
    if has_fallback:
        fields[fallback.to_numpy(zero_copy_only=False)] = "metadata_odeReceivedAt"
        source = pc.if_else(pc.and_(fallback, raw_received.is_valid()), _FROM_RECEIVED, source)
    # only v1/v2 write generatedAt (v3 renamed it), so only they are looked at one by one
    old = pc.and_(raw_generated.is_valid(), pc.fill_null(pc.less(version, pa.scalar(3, version.type)), True))
    if pc.any(old).as_py():
        source = source.to_numpy(zero_copy_only=False).astype(object)
        for i in np.flatnonzero(old.to_numpy(zero_copy_only=False)):
            if not recs[i].metadata.recordGeneratedAt:
                fields[i], source[i] = "metadata_generatedAt", "generatedAt"
        source = pa.array(source, pa.string())
    data[TIME_SOURCE] = source
    if frame:
        parts = list(zip(*_frame_units(data, recs, parts)))
    for name, sentinel in SENTINELS.items():
        arr = data[name]
        data[name] = pc.if_else(pc.equal(arr, pa.scalar(sentinel, arr.type)), pa.scalar(None, arr.type), arr)
    p_crumbs, p_roc, p_conf, p_other = zip(*parts)
    crumbs = _crumb_array(list(p_crumbs))
    if frame:
        crumbs = _frame_crumbs(crumbs)
    data["partII_pathHistory_crumbData"] = crumbs
    data["partII_pathPrediction_radiusOfCurve"] = pa.array(p_roc, type=pa.float64())
    data["partII_pathPrediction_confidence"] = pa.array(p_conf, type=pa.float64())
    data["partII_other"] = pa.array(p_other, type=pa.string())
    data["source_object"] = pa.array([source_object] * n, type=pa.string())
    data["source_line"] = pa.array(lines, type=pa.int64())
    table = pa.Table.from_arrays([data[f.name] for f in BSM_SCHEMA], schema=BSM_SCHEMA)
    return table, record_time, fields


def _frame_crumbs(crumbs: pa.ListArray) -> pa.ListArray:
    """v9 crumbs: every offset from J2735 units, vectorized over the flat crumb values."""
    values = crumbs.values
    converted = [_j2735(values.field(f.name), *J2735_CRUMB_UNITS[f.name]) for f in CRUMB]
    flat = pa.StructArray.from_arrays(converted, fields=list(CRUMB))
    return pa.ListArray.from_arrays(crumbs.offsets, flat, mask=crumbs.is_null())


def _safe_array(values, typ: pa.DataType) -> pa.Array:
    """Integers beyond the column type (e.g. msgCnt 99999) are clipped to its limits, which
    the range rules still reject, instead of crashing the batch. Text columns that hold a
    number (receiver position as 41.1 instead of "41.1") stay as objects for `_to_float`."""
    if pa.types.is_string(typ):
        try:
            return pa.array(values, type=typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return list(values)
    try:
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, OverflowError):
        lim = np.iinfo(typ.to_pandas_dtype())
        clipped = [None if v is None else int(min(max(v, lim.min), lim.max)) for v in values]
        return pa.array(clipped, type=typ)


# ---------------------------------------------------------------- main entry


def ingest_bytes(
    data: bytes, source_object: str, unknown_version: str = "raise", max_bytes: int | None = None
) -> IngestResult:
    """Parse, flatten and validate one object's bytes (see `ingest_stream`)."""
    return ingest_stream(io.BytesIO(data), source_object, unknown_version, max_bytes)


def ingest_stream(
    f, source_object: str, unknown_version: str = "raise", max_bytes: int | None = None, size: int | None = None
) -> IngestResult:
    """Parse, flatten and validate one object read from the binary file `f` (at most `size`
    bytes), in bounded memory whatever it holds (module section "bytes -> lines").

    unknown_version: "raise" (SchemaVersionError naming file and line) or "quarantine".
    max_bytes: inflated bytes past which the whole object is quarantined as `object_too_large`.
    The cyclic GC is paused meanwhile: decoded records hold no cycles, and GC passes
    over tens of thousands of fresh objects otherwise cost more than the parse.
    """
    try:
        result = IngestResult.concat(_stream_parts(_raw_chunks(f, size), source_object, unknown_version, max_bytes))
    except ObjectTooLarge as err:
        lines_in = _Lines(source_object, unknown_version)
        lines_in.set_aside(
            1,
            b"",
            [
                f"object_too_large (more than {err.limit:,} bytes inflated; raise "
                "source.max_object_mb / --max-object-mb)"
            ],
        )
        result = lines_in.result([(source_object, "object_too_large")])
    result.files = 1
    return result


@contextlib.contextmanager
def _gc_paused():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _stream_parts(
    raw: Iterator[bytes], source_object: str, unknown_version: str, max_bytes: int | None, strip_bom: bool = True
) -> Iterator[IngestResult]:
    """An object's results a piece at a time, lines numbered from 1. An object whose content
    fits one piece is also tried as one pretty-printed JSON message or array (pre-2018)."""
    issues: list[str] = []
    pieces = _line_pieces(_limited(_inflate(raw, issues), source_object, max_bytes))
    first = next(pieces, None)
    second = next(pieces, None) if first is not None else None
    if first is None or (second is None and not isinstance(first, _Long)):
        with _gc_paused():
            yield _small_object(first or b"", source_object, unknown_version, issues)
        return
    lineno = 0
    for k, piece in enumerate(itertools.chain([first, second], pieces)):
        if piece is None:
            continue
        lines_in = _Lines(source_object, unknown_version)
        if isinstance(piece, _Long):
            lineno += 1
            _line_too_long(lines_in, lineno, piece)
        else:
            tail = None
            if issues and not piece.endswith(b"\n"):  # the incomplete last line of a broken stream
                cut = piece.rfind(b"\n") + 1
                piece, tail = piece[:cut], piece[cut:]
            with _gc_paused():
                lineno += _feed_piece(lines_in, piece, lineno + 1, strip_bom and k == 0)
            if tail:
                lineno += 1
                lines_in.set_aside(lineno, tail, [validate.rule_name(issues[0])])
        del piece
        yield lines_in.result([])
    if issues:  # known once the stream has ended
        yield _Lines(source_object, unknown_version).result([(source_object, i) for i in issues])


def _small_object(data: bytes, source_object: str, unknown_version: str, issues: list[str]) -> IngestResult:
    """An object whose content fits one piece: NDJSON, or one pretty JSON message/array."""
    file_issues = [(source_object, i) for i in issues]
    tail = None
    if issues and data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        data, tail = data[:cut], data[cut:]  # the incomplete last line of a broken stream
    lines, n, _ = _numbered(data, 1, True)
    if n == 0 and tail is None:
        file_issues.append((source_object, "empty_file"))
    lines_in = _Lines(source_object, unknown_version)
    whole = _whole_file_records(data, (ln for _, ln in _numbered(data, 1, True)[0])) if n > 1 else None
    if whole is not None:
        lines_in.feed(whole)
    else:
        _feed_piece(lines_in, data, 1, True)
    if tail is not None:
        lines_in.set_aside(n + 1, tail, [validate.rule_name(issues[0])])
    return lines_in.result(file_issues)


class _Shape:
    """The records of one shape in one `_Lines.feed`, flattened a batch at a time: small batches
    keep the decoded objects cache-resident (~1.5x faster than one big batch), and each batch is
    of one shape, so a file mixing v9 and older records pays no per-batch split."""

    def __init__(self, source_object: str, frame: bool):
        self.source_object, self.frame = source_object, frame
        self.recs: list[parse.Record] = []
        self.parts: list = []
        self.lines: list[int] = []  # every row's line (the feed's), and its text
        self.texts: list[bytes | memoryview] = []
        self.tables: list[pa.Table] = []
        self.gen_texts: list[pa.Array] = []
        self.gen_fields: list[np.ndarray] = []

    def add(self, rec: parse.Record, part, lineno: int, line: bytes | memoryview) -> None:
        self.recs.append(rec)
        self.parts.append(part)
        self.lines.append(lineno)
        self.texts.append(line)
        if len(self.recs) == BATCH:
            self.flush()

    def flush(self) -> None:
        if self.recs:
            t, text, field = flatten(
                self.recs, self.source_object, self.lines[len(self.lines) - len(self.recs) :], self.parts, self.frame
            )
            self.tables.append(t)
            self.gen_texts.append(text)
            self.gen_fields.append(field)
        self.recs.clear()
        self.parts.clear()

    @staticmethod
    def merged(*shapes: _Shape) -> tuple[pa.Table, pa.Array, np.ndarray, list[int], list]:
        """(table, record-time texts, their fields, lines, texts) of all shapes, in line order."""
        used = [s for s in shapes if s.tables]
        if not used:  # still validated, so every rule reports its count (0)
            return BSM_SCHEMA.empty_table(), pa.array([], pa.string()), np.zeros(0, object), [], []
        tables = [t for s in used for t in s.tables]
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        text = pa.concat_arrays([t for s in used for t in s.gen_texts])
        fields = np.concatenate([f for s in used for f in s.gen_fields])
        if len(used) == 1:
            return table, text, fields, used[0].lines, used[0].texts
        lines = [n for s in used for n in s.lines]
        texts = [t for s in used for t in s.texts]
        order = np.argsort(np.asarray(lines), kind="stable")  # both shapes in one feed: back to line order
        take = pa.array(order)
        return (table.take(take), text.take(take), fields[order], [lines[i] for i in order], [texts[i] for i in order])


class _Lines:
    """The per-line core: decode, classify, flatten, validate the lines of one `feed`. Only
    the text of lines set aside is kept, so the fed buffer can go as soon as `feed` returns
    (what lets `ingest_file` stream a big file through one small buffer)."""

    def __init__(self, source_object: str, unknown_version: str):
        self.source_object = source_object
        self.unknown_version = unknown_version
        self.records = self.blank = 0
        self.q_rows: list[tuple[int, str, list[str]]] = []
        self.nb_rows: list[tuple[int, str, str]] = []
        self.valid = BSM_SCHEMA.empty_table()
        self.rule_counts: Counter = Counter()

    def set_aside(self, lineno: int, line: bytes | memoryview, reasons: list[str]) -> None:
        self.records += 1
        self._quarantine(lineno, line, reasons)

    def _quarantine(self, lineno: int, line: bytes | memoryview, reasons: list[str]) -> None:
        self.q_rows.append((lineno, _text(line), reasons))
        self.rule_counts.update(validate.rule_name(r) for r in reasons)

    def feed(self, numbered: Iterable[tuple[int, bytes | memoryview]]) -> None:
        source_object, unknown_version = self.source_object, self.unknown_version
        ode, frames = _Shape(source_object, False), _Shape(source_object, True)  # v1..v8 / v9 records
        recs, parts, rec_lines, rec_text = ode.recs, ode.parts, ode.lines, ode.texts  # the hot path's, bound once
        decode = parse.record_decoder.decode
        lines_read = 0

        for lineno, line in numbered:
            lines_read += 1
            try:
                rec = decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as err:
                if not bytes(line).strip():
                    self.blank += 1
                    continue
                reason, kind = parse.classify_failure(line, err)
                if kind is not None:
                    self.nb_rows.append((lineno, kind, _text(line)))
                else:
                    self._quarantine(lineno, line, [reason])
                continue
            md, pl = rec.metadata, rec.payload
            # fast path, the well-formed BSM; anything else takes the checks below in order
            if not (
                pl is not None
                and pl.dataType == parse.BSM_DATA_TYPE
                and md is not None
                and md.schemaVersion in SUPPORTED_SCHEMA_VERSIONS
                and pl.data is not None
                and pl.data.coreData is not None
            ):
                kind = parse.record_kind(rec)
                if kind is not None:
                    self.nb_rows.append((lineno, kind, _text(line)))
                    continue
                version = md.schemaVersion if md is not None else None
                if version is not None and version not in SUPPORTED_SCHEMA_VERSIONS:
                    if unknown_version == "raise":
                        raise SchemaVersionError(source_object, lineno, version)
                    self._quarantine(lineno, line, [f"unknown_schema_version {version} ({supported_versions()})"])
                    continue
                if pl is None or pl.data is None or pl.data.coreData is None:
                    bsm = (
                        pl.data.value.BasicSafetyMessage
                        if pl is not None and pl.data is not None and pl.data.value is not None
                        else None
                    )
                    if bsm is None or bsm.coreData is None:
                        self._quarantine(lineno, line, ["missing_coreData"])
                        continue
                    frames.add(rec, _part2(bsm.partII, _split_frame), lineno, line)  # v9, in its own units
                    continue
            parts.append(_part2(pl.data.partII))
            recs.append(rec)
            rec_lines.append(lineno)
            rec_text.append(line)
            if len(recs) == BATCH:
                ode.flush()
        ode.flush()
        frames.flush()
        self.records += lines_read
        table, gen_text, fields, rec_lines, rec_text = _Shape.merged(ode, frames)
        errors, warnings = validate.check(table, gen_text.is_valid().to_numpy(zero_copy_only=False))
        bad, reasons = validate.reasons_per_row(errors, table, gen_text, fields)
        self.rule_counts.update({k: int(v.sum()) for k, v in {**errors, **warnings}.items()})
        for i, rs in zip(np.flatnonzero(bad), reasons):
            self.q_rows.append((rec_lines[i], _text(rec_text[i]), rs))
        self.valid = table.filter(pa.array(~bad)) if bad.any() else table

    def result(self, file_issues: list[tuple[str, str]]) -> IngestResult:
        q_rows = sorted(self.q_rows, key=lambda r: r[0])
        src = self.source_object
        quarantine = quarantine_table(src, [r[0] for r in q_rows], [r[1] for r in q_rows], [r[2] for r in q_rows])
        non_bsm = pa.table(
            {
                "source_object": pa.array([src] * len(self.nb_rows), pa.string()),
                "source_line": pa.array([r[0] for r in self.nb_rows], pa.int64()),
                "record_type": pa.array([r[1] for r in self.nb_rows], pa.string()),
                "line": pa.array([r[2] for r in self.nb_rows], pa.string()),
            },
            schema=NON_BSM_SCHEMA,
        )
        return IngestResult(
            self.valid, quarantine, non_bsm, self.blank, self.records, 1, dict(self.rule_counts), file_issues
        )


def _whole_file_records(data: bytes, lines: list[memoryview]):
    """Pre-2018 objects hold one pretty-printed JSON message (or an array): numbered records, else None."""
    nonblank = _nonblank(lines)
    first, second = next(nonblank, None), next(nonblank, None)
    if second is None or _json_alone(first):
        return None  # one line, or a first line that stands alone: NDJSON
    body = data[len(BOM) :] if data.startswith(BOM) else data
    try:
        obj = parse.any_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    items = obj if isinstance(obj, list) else [obj]
    return [(i, msgspec.json.encode(o)) for i, o in enumerate(items, start=1)]


def iter_files(paths: Iterable[str | Path], refused: dict[str, str] | None = None) -> list[Path]:
    """Files named, plus every file under folders named (sorted, hidden files skipped). Under a
    folder, links to files inside it are followed; links leading outside it or nowhere are not
    read and land in `refused` {path: reason} (`layout.link_problem`, as the ingest's source)."""
    from wydot_lab import layout

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            real_root, seen = os.path.realpath(p), set()
            for folder, dirs, names in os.walk(p, followlinks=True):
                real = os.path.realpath(folder)
                if real in seen:  # a link loop
                    dirs[:] = []
                    continue
                seen.add(real)
                dirs.sort()
                for n in names:
                    f = Path(folder) / n
                    if n.startswith(".") or f.suffix.lower() in NOTE_SUFFIXES:
                        continue
                    why = layout.link_problem(str(f), real_root)
                    if why is None:
                        out.append(f)
                    elif refused is not None:
                        refused[str(f)] = why
            out.sort()
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def ingest_file(path: str | Path, unknown_version: str = "raise", workers: int | None = None) -> IngestResult:
    """One file: a data.transportation.gov CSV export, or ODE output (NDJSON, pretty JSON, .gz).

    A big NDJSON file streams through in `STREAM_CHUNK` pieces: reading it costs a quarter
    of reading it whole (no fresh pages for a whole-file buffer; ~10% of the ingest) and
    memory stays flat. From `PARALLEL_MIN` bytes it is cut at line starts into spans over
    `workers` processes (default: the CPUs this process may use; always 1 inside a daemonic
    process); the result is the same as from one process. Anything else (gzip, pretty
    JSON, a first line that is not JSON, a pipe) is read whole.
    """
    if Path(path).is_dir():
        raise IsADirectoryError(f"{path} is a folder: ingest_paths([{str(path)!r}]) reads every file under it")
    return _one_file(_file_parts(Path(path), unknown_version, workers))


def _one_file(parts: Iterable[IngestResult]) -> IngestResult:
    result = IngestResult.concat(parts)
    result.files = 1
    return result


def ingest_to_parquet(
    path: str | Path, out_dir: str | Path, unknown_version: str = "raise", workers: int | None = None
) -> dict:
    """One file -> `out_dir`/valid.parquet, quarantine.parquet and non_bsm.parquet (canonical
    schemas), valid rows written part by part while later parts still parse, so a file of
    any size converts in flat memory. Each file appears complete or not at all. Returns the
    counts of `IngestResult.counts` plus the per-rule counts under `rules`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = {kind: out / f"{kind}.parquet" for kind in ("valid", "quarantine", "non_bsm")}
    tmp = {kind: p.with_name(f".{p.name}.{uuid.uuid4().hex}.tmp") for kind, p in final.items()}
    kept: list[IngestResult] = []
    valid = 0
    try:
        with pq.ParquetWriter(tmp["valid"], BSM_SCHEMA, compression="snappy") as writer:
            for part in _file_parts(Path(path), unknown_version, workers):
                writer.write_table(part.valid)
                valid += part.valid.num_rows
                kept.append(dataclasses.replace(part, valid=BSM_SCHEMA.empty_table()))
        rest = _one_file(kept)
        pq.write_table(rest.quarantine, tmp["quarantine"])
        pq.write_table(rest.non_bsm, tmp["non_bsm"])
        for kind in final:
            os.replace(tmp[kind], final[kind])
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
    return {**rest.counts(valid=valid), "rules": rest.rule_counts}


def _file_parts(path: Path, unknown_version: str, workers: int | None) -> Iterator[IngestResult]:
    """A file's results in file order, a part at a time (pieces on one process, spans on
    several), with the file's line numbers."""
    if path.suffix.lower() == ".csv":
        from wydot_lab import dtg_csv

        yield dtg_csv.ingest_csv(path)
        return
    with open(path, "rb") as f:
        head = f.read(STREAM_CHUNK)
        st = os.fstat(f.fileno())
        regular = stat.S_ISREG(st.st_mode)  # a pipe cannot be re-read in spans
        if len(head) < STREAM_CHUNK or not regular or not _streamable(head):
            yield from _stream_parts(itertools.chain([head], _raw_chunks(f)), str(path), unknown_version, None)
            return
    size = st.st_size
    if multiprocessing.current_process().daemon:
        workers = 1  # daemonic processes (multiprocessing pools, dask workers) may not have children
    elif workers is None:
        workers = _cpus() if size >= PARALLEL_MIN else 1
    bounds = _span_bounds(path, size, workers * SPANS_PER_WORKER if workers > 1 else 1)
    if len(bounds) == 2:
        yield from _piece_parts(str(path), 0, size, unknown_version)
        return
    offset = 0
    scratch = tempfile.mkdtemp(prefix="wydot-ingest-")
    try:
        with ProcessPoolExecutor(min(workers, len(bounds) - 1)) as pool:
            try:
                spans = [
                    pool.submit(_span_to_arrow, str(path), a, b, unknown_version, scratch)
                    for a, b in zip(bounds, bounds[1:])
                ]
                for span in spans:
                    try:
                        result, file = span.result()
                    except SchemaVersionError as err:  # its line number counts from the span start
                        raise SchemaVersionError(err.source_object, offset + err.lineno, err.version) from None
                    except BrokenProcessPool as err:
                        raise IngestError(
                            f"{path}: a parsing process died ({err}); out of memory? workers=1 parses in this process"
                        ) from None
                    except OSError as err:
                        raise IngestError(
                            f"{path}: a parsing process could not hand its rows back through "
                            f"{scratch} ({err}); workers=1 parses in this process"
                        ) from None
                    valid = pa.ipc.open_file(pa.memory_map(file)).read_all()  # no copy
                    yield _shift_lines(dataclasses.replace(result, valid=valid), offset)
                    offset += result.records
            except BaseException:  # an error, Ctrl-C or a consumer that stopped: drop queued spans
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # mapped files stay readable once unlinked


def _cpus() -> int:
    """CPUs this process may run on (affinity and container limits), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _streamable(head: bytes) -> bool:
    """NDJSON for sure: the first non-blank line, complete within `head`, is JSON on its own."""
    if head.startswith(GZIP_MAGIC):
        return False
    first = next(_nonblank(ln for _, ln in _numbered(head[: head.rfind(b"\n") + 1], 1, True)[0]), None)
    return first is not None and _json_alone(first)


def _nonblank(lines: Iterable[memoryview]) -> Iterator[memoryview]:
    return (ln for ln in lines if bytes(ln).strip())


def _json_alone(line: memoryview) -> bool:
    try:
        parse.any_decoder.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


def _span_bounds(path: Path, size: int, workers: int) -> list[int]:
    """[0, ..., size]: about equal spans, each starting just after a newline."""
    bounds = [0]
    with open(path, "rb") as f:
        for k in range(1, max(workers, 1)):
            f.seek(max(size * k // workers, bounds[-1]))
            f.readline()  # to the next line start
            if f.tell() >= size:
                break
            if f.tell() > bounds[-1]:
                bounds.append(f.tell())
    return bounds + [size]


def _piece_parts(path: str, start: int, stop: int, unknown_version: str) -> Iterator[IngestResult]:
    """Bytes [start, stop) of an NDJSON file (start at a line start), a result per piece,
    lines numbered from 1 at `start` (a result's `records` is its number of lines)."""
    with open(path, "rb") as f:
        f.seek(start)
        yield from _stream_parts(_raw_chunks(f, stop - start), path, unknown_version, None, strip_bom=start == 0)


def _span_to_arrow(path: str, start: int, stop: int, unknown_version: str, scratch: str) -> tuple[IngestResult, str]:
    """A worker's span; its valid rows go back as an Arrow IPC file that the parent maps
    without a copy (pickling them through the pool's pipe cost ~10% of the ingest)."""
    result = IngestResult.concat(_piece_parts(path, start, stop, unknown_version))
    file = os.path.join(scratch, f"{start}.arrow")
    with pa.OSFile(file, "wb") as sink, pa.ipc.new_file(sink, result.valid.schema) as writer:
        writer.write_table(result.valid)
    return dataclasses.replace(result, valid=None), file


def _shift_lines(r: IngestResult, offset: int) -> IngestResult:
    """Line numbers of a span made line numbers of the file."""
    if offset == 0:
        return r

    def shift(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index("source_line")
        return t.set_column(i, t.schema.field(i), pc.add(t.column(i), pa.scalar(offset, pa.int64())))

    return dataclasses.replace(r, valid=shift(r.valid), quarantine=shift(r.quarantine), non_bsm=shift(r.non_bsm))


def ingest_paths(
    paths: Iterable[str | Path],
    progress: Callable[[str], None] | None = None,
    unknown_version: str = "raise",
) -> IngestResult:
    refused: dict[str, str] = {}
    files = iter_files([paths] if isinstance(paths, (str, Path)) else paths, refused)
    if refused and progress:
        progress(
            f"{len(refused)} files refused, not read: "
            + "; ".join(f"{k}: {why}" for k, why in list(refused.items())[:5])
        )
    results = (
        [
            IngestResult(
                *[s.empty_table() for s in (BSM_SCHEMA, QUARANTINE_SCHEMA, NON_BSM_SCHEMA)],
                file_issues=[(k, why) for k, why in refused.items()],
            )
        ]
        if refused
        else []
    )
    for k, f in enumerate(files, start=1):
        r = ingest_file(f, unknown_version=unknown_version)
        results.append(r)
        if progress:
            c = r.counts()
            progress(
                f"[{k}/{len(files)}] {f}: {c['valid']} valid, {c['quarantined']} quarantined, "
                f"{c['non_bsm']} non-BSM, {c['blank']} blank"
            )
    return IngestResult.concat(results)
