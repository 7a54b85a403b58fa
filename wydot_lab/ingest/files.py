"""Entry points over files and folders: `ingest_file`, `ingest_paths`, `ingest_to_parquet`, `iter_files`.

A file goes to its reader by what it holds: a `.csv` to the DTG CSV reader, a big regular
NDJSON file to the parallel path, anything else (gzip, pretty JSON, a pipe) read whole by
the ODE reader.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pyarrow.parquet as pq

from wydot_lab.ingest import dtg_csv, parallel, stream
from wydot_lab.ingest.ode import _stream_parts, _streamable
from wydot_lab.ingest.results import IngestResult
from wydot_lab.schema import BSM_SCHEMA, NON_BSM_SCHEMA, QUARANTINE_SCHEMA

NOTE_SUFFIXES = {".md", ".rst"}  # provenance notes beside data (SOURCES.md) are not records


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
        yield dtg_csv.ingest_csv(path)
        return
    with open(path, "rb") as f:
        head = f.read(stream.STREAM_CHUNK)  # the module's: tests shrink it
        st = os.fstat(f.fileno())
        regular = stat.S_ISREG(st.st_mode)  # a pipe cannot be re-read in spans
        if len(head) < stream.STREAM_CHUNK or not regular or not _streamable(head):
            yield from _stream_parts(itertools.chain([head], stream._raw_chunks(f)), str(path), unknown_version, None)
            return
    yield from parallel.spans(path, st.st_size, unknown_version, workers)


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
