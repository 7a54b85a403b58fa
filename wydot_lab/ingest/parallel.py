"""The parallel path: a big NDJSON file cut at line starts into spans parsed by several processes.

Spans run `ode` on their bytes in worker processes and hand their valid rows back as Arrow
IPC files; the parent maps them without a copy and renumbers lines, so the result is the
same as from one process. Workers get plain functions and picklable errors
(`SchemaVersionError.__reduce__`), never a closure.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from wydot_lab.ingest.ode import _stream_parts
from wydot_lab.ingest.results import IngestError, IngestResult, SchemaVersionError
from wydot_lab.ingest.stream import _raw_chunks

PARALLEL_MIN = 64 << 20  # from this size an NDJSON file is split across processes (below, start-up costs more)
SPANS_PER_WORKER = 4  # several spans per process: results of early spans travel back while later ones parse


def _cpus() -> int:
    """CPUs this process may run on (affinity and container limits), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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


def spans(path: Path, size: int, unknown_version: str, workers: int | None) -> Iterator[IngestResult]:
    """A regular NDJSON file of `size` bytes, in file order with the file's line numbers: in
    pieces on this process, or in spans over `workers` processes (default: the CPUs this
    process may use from `PARALLEL_MIN` bytes; always 1 inside a daemonic process)."""
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
