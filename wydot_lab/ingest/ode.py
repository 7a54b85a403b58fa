"""The ODE reader: one object's bytes (NDJSON, pretty single objects, .gz) -> `IngestResult`.

Counts always add up: records (lines read) = valid + quarantined + non_bsm + blank.
Nothing is dropped: a line that fails anywhere lands in quarantine with its text
and every reason, and non-BSM records (TIM, ...) are kept aside by type. Each line is
decoded (`parse`), classified, version-checked, flattened a batch at a time (`flatten`)
and validated (`validate`); `stream` hands it the lines in bounded pieces.
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator

import msgspec
import numpy as np
import pyarrow as pa

from wydot_lab import parse, validate
from wydot_lab.ingest.canonical import _part2, _split_frame, flatten
from wydot_lab.ingest.results import IngestResult, SchemaVersionError, quarantine_table, supported_versions
from wydot_lab.ingest.stream import (
    BOM,
    GZIP_MAGIC,
    MAX_LINE,
    ObjectTooLarge,
    _inflate,
    _limited,
    _line_pieces,
    _Long,
    _numbered,
    _raw_chunks,
)
from wydot_lab.schema import BSM_SCHEMA, NON_BSM_SCHEMA, SUPPORTED_SCHEMA_VERSIONS

BATCH = 1024  # records flattened at a time: small enough to stay in cache


def ingest_bytes(
    data: bytes, source_object: str, unknown_version: str = "raise", max_bytes: int | None = None
) -> IngestResult:
    """Parse, flatten and validate one object's bytes (see `ingest_stream`)."""
    return ingest_stream(io.BytesIO(data), source_object, unknown_version, max_bytes)


def ingest_stream(
    f, source_object: str, unknown_version: str = "raise", max_bytes: int | None = None, size: int | None = None
) -> IngestResult:
    """Parse, flatten and validate one object read from the binary file `f` (at most `size`
    bytes), in bounded memory whatever it holds (`ingest.stream`).

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


def _text(line: bytes | memoryview) -> str:
    return str(line, "utf-8", errors="backslashreplace")


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
