"""Bytes of ODE output (NDJSON, pretty single objects, .gz) -> canonical table + quarantine.

Counts always add up: records (lines read) = valid + quarantined + non_bsm + blank.
Nothing is dropped: a line that fails anywhere lands in quarantine with its text
and every reason, and non-BSM records (TIM, ...) are kept aside by type.
"""
from __future__ import annotations

import dataclasses
import gc
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wydot_lab import parse, validate
from wydot_lab.schema import BSM_SCHEMA, CRUMB, NON_BSM_SCHEMA, QUARANTINE_SCHEMA, SUPPORTED_SCHEMA_VERSIONS

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
NOTE_SUFFIXES = {".md", ".rst"}  # provenance notes beside data (SOURCES.md) are not records


class IngestError(ValueError):
    """A whole file cannot be ingested (the message names it)."""


class SchemaVersionError(IngestError):
    """A record declares an ODE schemaVersion this toolkit does not know."""


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

    def counts(self) -> dict:
        out = {
            "records": self.records,
            "valid": self.valid.num_rows,
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
        """Records per reason (a record with two reasons counts under both)."""
        flat = pc.list_flatten(self.quarantine.column("reasons")).to_pylist()
        return dict(Counter(map(validate.rule_name, flat)))

    def write_quarantine(self, path: str | Path) -> None:
        pq.write_table(self.quarantine, str(path))

    @staticmethod
    def concat(results: Iterable["IngestResult"]) -> "IngestResult":
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


# ---------------------------------------------------------------- bytes -> lines


def _gunzip(data: bytes) -> tuple[bytes, str | None]:
    """Decompress every gzip member; on corruption keep what decoded and say so."""
    out = []
    while data:
        d = zlib.decompressobj(wbits=31)
        try:
            out.append(d.decompress(data))
            out.append(d.flush())
        except zlib.error as err:
            return b"".join(out), f"corrupt_gzip ({err})"
        if not d.eof:
            return b"".join(out), "corrupt_gzip (truncated stream)"
        data = d.unused_data
        if data and not data.startswith(GZIP_MAGIC):
            return b"".join(out), "corrupt_gzip (trailing garbage)"
    return b"".join(out), None


def split_lines(data: bytes) -> list[bytes]:
    """NDJSON lines with BOM and CR removed (CRLF files, no trailing newline: all fine)."""
    if data.startswith(BOM):
        data = data[len(BOM):]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if b"\r" not in data:
        return lines
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def _text(line: bytes) -> str:
    return line.decode("utf-8", errors="backslashreplace")


# ---------------------------------------------------------------- flatten

def _row(rec: parse.Record):
    md = rec.metadata or _EMPTY_MD
    cd = rec.payload.data.coreData
    sid = md.serialId
    rmd = md.receivedMessageDetails
    loc = rmd.locationData if rmd is not None and rmd.locationData is not None else _EMPTY_LOC
    pos, acc, accu, br, size = cd.position, cd.accelSet, cd.accuracy, cd.brakes, cd.size
    wb = br.wheelBrakes
    return (
        md.recordGeneratedAt or md.generatedAt,
        md.odeReceivedAt or md.receivedAt,
        md.recordType, md.schemaVersion, md.bsmSource, md.sanitized, md.logFileName,
        md.securityResultCode, md.recordGeneratedBy, md.validSignature, md.payloadType,
        sid.streamId, sid.bundleSize, sid.bundleId, sid.recordId, sid.serialNumber,
        loc.latitude, loc.longitude, loc.elevation, loc.speed, loc.heading,
        rmd.rxSource if rmd is not None else None,
        cd.msgCnt, cd.id, cd.secMark, pos.latitude, pos.longitude, pos.elevation, cd.speed, cd.heading,
        acc.accelLong, acc.accelLat, acc.accelVert, acc.accelYaw,
        accu.semiMajor, accu.semiMinor, accu.orientation, cd.transmission,
        wb.leftFront, wb.rightFront, wb.leftRear, wb.rightRear, wb.unavailable,
        br.traction, br.abs, br.scs, br.brakeBoost, br.auxBrakes, size.width, size.length,
    )


_EMPTY_MD = parse.Metadata()
_EMPTY_LOC = parse.LocationData()
# `_row` yields the leading BSM_SCHEMA columns in schema order (the two times still as text)
_ROW_COLS = BSM_SCHEMA.names[:50]
assert _ROW_COLS[-1] == "coreData_size_length" and _ROW_COLS[:2] == ["metadata_generatedAt", "metadata_receivedAt"]
_TIME_COLS = frozenset(_ROW_COLS[:2])
_RMD_COLS = {"metadata_rmd_latitude", "metadata_rmd_longitude", "metadata_rmd_elevation",
             "metadata_rmd_speed", "metadata_rmd_heading"}
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


def _part2(elements: list[parse.PartIIElement] | None):
    """(crumbs or None, radiusOfCurve, confidence, other elements as JSON text or None)."""
    if not elements:
        return None, None, None, None
    crumbs = roc = conf = None
    other = None
    for el in elements:
        v = el.value
        if el.id in parse.VSE_IDS:
            if v.pathHistory is not None:
                crumbs = v.pathHistory.crumbData
            if v.pathPrediction is not None:
                roc, conf = v.pathPrediction.radiusOfCurve, v.pathPrediction.confidence
        else:
            if other is None:
                other = []
            other.append({"id": el.id, "value": v})  # encodes only the members present
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


def _parse_times(raw: list) -> pa.Array:
    """ISO-8601 texts (`Z`, `Z[UTC]`, 0-9 fraction digits) -> timestamp[ms, UTC]; unparseable -> null.

    Arrow's C++ cast handles the well-formed batch; only a batch holding a bad
    text takes the slower pandas path, which nulls just the bad ones.
    """
    arr = pc.replace_substring(pa.array(raw, type=pa.string()), "[UTC]", "")
    try:
        ns = pc.cast(arr, pa.timestamp("ns", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        t = pd.to_datetime(pd.Series(arr.to_pylist(), dtype="object"), utc=True, format="ISO8601", errors="coerce")
        return pa.array(t.astype("datetime64[ms, UTC]"), type=pa.timestamp("ms", tz="UTC"))
    return pc.cast(ns, pa.timestamp("ms", tz="UTC"), safe=False)


def _to_float(values: list) -> pa.Array:
    """Receiver-side strings ("0", "unavailable") -> float or null."""
    try:
        return pc.cast(pa.array(values, type=pa.string()), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(pd.to_numeric(pd.Series(values, dtype="object"), errors="coerce"), type=pa.float64())


def flatten(recs: list[parse.Record], source_object: str, lines: list[int], parts: list) -> tuple[pa.Table, np.ndarray]:
    """Decoded BSM records and their `_part2` -> canonical table (+ mask of rows whose
    generatedAt text was present)."""
    n = len(recs)
    if n == 0:
        return BSM_SCHEMA.empty_table(), np.zeros(0, bool)
    cols = list(zip(*[_row(r) for r in recs]))
    data: dict[str, pa.Array] = {}
    for name, values in zip(_ROW_COLS, cols):
        if name in _TIME_COLS:
            data[name] = _parse_times(list(values))
        elif name in _RMD_COLS:
            data[name] = _to_float(list(values))
        else:
            data[name] = _safe_array(values, BSM_SCHEMA.field(name).type)
    raw_present = np.array([v is not None for v in cols[0]], dtype=bool)
    for name, sentinel in SENTINELS.items():
        arr = data[name]
        data[name] = pc.if_else(pc.equal(arr, pa.scalar(sentinel, arr.type)), pa.scalar(None, arr.type), arr)
    p_crumbs, p_roc, p_conf, p_other = zip(*parts)
    data["partII_pathHistory_crumbData"] = _crumb_array(list(p_crumbs))
    data["partII_pathPrediction_radiusOfCurve"] = pa.array(p_roc, type=pa.float64())
    data["partII_pathPrediction_confidence"] = pa.array(p_conf, type=pa.float64())
    data["partII_other"] = pa.array(p_other, type=pa.string())
    data["source_object"] = pa.array([source_object] * n, type=pa.string())
    data["source_line"] = pa.array(lines, type=pa.int64())
    table = pa.Table.from_arrays([data[f.name] for f in BSM_SCHEMA], schema=BSM_SCHEMA)
    return table, raw_present


def _safe_array(values, typ: pa.DataType) -> pa.Array:
    """Integers beyond the column type (e.g. msgCnt 99999) are clipped to its limits, which
    the range rules still reject, instead of crashing the batch."""
    try:
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, OverflowError):
        lim = np.iinfo(typ.to_pandas_dtype())
        clipped = [None if v is None else int(min(max(v, lim.min), lim.max)) for v in values]
        return pa.array(clipped, type=typ)


# ---------------------------------------------------------------- main entry


def ingest_bytes(data: bytes, source_object: str, unknown_version: str = "raise") -> IngestResult:
    """Parse, flatten and validate one object's bytes.

    unknown_version: "raise" (SchemaVersionError naming file and line) or "quarantine".
    The cyclic GC is paused meanwhile: decoded records hold no cycles, and GC passes
    over tens of thousands of fresh objects otherwise cost more than the parse.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _ingest_bytes(data, source_object, unknown_version)
    finally:
        if was_enabled:
            gc.enable()


def _ingest_bytes(data: bytes, source_object: str, unknown_version: str) -> IngestResult:
    issues: list[tuple[str, str]] = []
    gz_issue = None
    if data.startswith(GZIP_MAGIC):
        data, gz_issue = _gunzip(data)
    lines = split_lines(data)
    tail_line = None
    if gz_issue:
        issues.append((source_object, gz_issue))
        if lines and not data.endswith(b"\n"):
            tail_line = lines.pop()  # the incomplete last line of a broken stream
    if not lines and tail_line is None:
        issues.append((source_object, "empty_file"))
    whole = _whole_file_records(data, lines)
    numbered = whole if whole is not None else list(enumerate(lines, start=1))
    extra_q = []
    if tail_line is not None:
        extra_q.append((len(lines) + 1, tail_line, [validate.rule_name(gz_issue)]))
    result = _ingest_numbered(numbered, source_object, unknown_version, extra_q)
    result.files = 1
    result.file_issues = issues
    return result


def _ingest_numbered(numbered: list[tuple[int, bytes]], source_object: str, unknown_version: str,
                     extra_q: list | None = None) -> IngestResult:
    """The per-line core: decode, classify, flatten, validate."""
    recs: list[parse.Record] = []
    rec_lines: list[int] = []
    rec_text: list[bytes] = []
    parts: list = []
    q_rows: list[tuple[int, bytes, list[str]]] = []
    nb_rows: list[tuple[int, str, bytes]] = []
    blank = 0
    decode = parse.record_decoder.decode
    tables: list[pa.Table] = []
    presents: list[np.ndarray] = []

    def flush() -> None:
        # small batches keep the decoded objects cache-resident (~1.5x faster than one big batch)
        t, p = flatten(recs, source_object, rec_lines[len(rec_lines) - len(recs):], parts)
        tables.append(t)
        presents.append(p)
        recs.clear()
        parts.clear()

    for lineno, line in numbered:
        if not line.strip():
            blank += 1
            continue
        try:
            rec = decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as err:
            reason, kind = parse.classify_failure(line, err)
            if kind is not None:
                nb_rows.append((lineno, kind, line))
            else:
                q_rows.append((lineno, line, [reason]))
            continue
        kind = parse.record_kind(rec)
        if kind is not None:
            nb_rows.append((lineno, kind, line))
            continue
        md = rec.metadata
        version = md.schemaVersion if md is not None else None
        if version is not None and version not in SUPPORTED_SCHEMA_VERSIONS:
            if unknown_version == "raise":
                raise SchemaVersionError(
                    f"{source_object}:{lineno}: unknown ODE schemaVersion {version} "
                    f"(supported: {min(SUPPORTED_SCHEMA_VERSIONS)}..{max(SUPPORTED_SCHEMA_VERSIONS)})"
                )
            q_rows.append((lineno, line, [f"unknown_schema_version {version}"]))
            continue
        if rec.payload is None or rec.payload.data is None or rec.payload.data.coreData is None:
            q_rows.append((lineno, line, ["missing_coreData"]))
            continue
        parts.append(_part2(rec.payload.data.partII))
        recs.append(rec)
        rec_lines.append(lineno)
        rec_text.append(line)
        if len(recs) == BATCH:
            flush()
    flush()
    q_rows.extend(extra_q or [])

    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    raw_present = np.concatenate(presents)
    errors, warnings = validate.check(table, raw_present)
    bad, reasons = validate.reasons_per_row(errors)
    rule_counts = {k: int(v.sum()) for k, v in {**errors, **warnings}.items()}
    for _, _, rs in q_rows:
        for r in rs:
            key = validate.rule_name(r)
            rule_counts[key] = rule_counts.get(key, 0) + 1
    bad_idx = np.flatnonzero(bad)
    for i, rs in zip(bad_idx, reasons):
        q_rows.append((rec_lines[i], rec_text[i], rs))
    valid = table.filter(pa.array(~bad)) if bad.any() else table
    q_rows.sort(key=lambda r: r[0])
    quarantine = quarantine_table(source_object, [r[0] for r in q_rows], [_text(r[1]) for r in q_rows],
                                  [r[2] for r in q_rows])
    non_bsm = pa.table(
        {
            "source_object": pa.array([source_object] * len(nb_rows), pa.string()),
            "source_line": pa.array([r[0] for r in nb_rows], pa.int64()),
            "record_type": pa.array([r[1] for r in nb_rows], pa.string()),
            "line": pa.array([_text(r[2]) for r in nb_rows], pa.string()),
        },
        schema=NON_BSM_SCHEMA,
    )
    records = len(numbered) + len(extra_q or [])
    return IngestResult(valid, quarantine, non_bsm, blank, records, 0, rule_counts, [])


BATCH = 1024
def _whole_file_records(data: bytes, lines: list[bytes]):
    """Pre-2018 objects hold one pretty-printed JSON message (or an array): numbered records, else None."""
    nonblank = [ln for ln in lines if ln.strip()]
    if len(nonblank) < 2:
        return None
    try:
        parse.any_decoder.decode(nonblank[0])
        return None  # first line stands alone: NDJSON
    except (msgspec.DecodeError, RecursionError):
        pass
    body = data[len(BOM):] if data.startswith(BOM) else data
    try:
        obj = parse.any_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    items = obj if isinstance(obj, list) else [obj]
    return [(i, msgspec.json.encode(o)) for i, o in enumerate(items, start=1)]


def iter_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, plus every file under folders named (sorted, hidden files skipped)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                              and f.suffix.lower() not in NOTE_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def ingest_file(path: str | Path, unknown_version: str = "raise") -> IngestResult:
    """One file: a data.transportation.gov CSV export, or ODE output (NDJSON, pretty JSON, .gz)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        from wydot_lab import dtg_csv

        return dtg_csv.ingest_csv(path)
    return ingest_bytes(path.read_bytes(), str(path), unknown_version=unknown_version)


def ingest_paths(
    paths: Iterable[str | Path],
    progress: Callable[[str], None] | None = None,
    unknown_version: str = "raise",
) -> IngestResult:
    files = iter_files([paths] if isinstance(paths, (str, Path)) else paths)
    results = []
    for k, f in enumerate(files, start=1):
        r = ingest_file(f, unknown_version=unknown_version)
        results.append(r)
        if progress:
            c = r.counts()
            progress(f"[{k}/{len(files)}] {f}: {c['valid']} valid, {c['quarantined']} quarantined, "
                     f"{c['non_bsm']} non-BSM, {c['blank']} blank")
    return IngestResult.concat(results)
