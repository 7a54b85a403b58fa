"""Bytes of ODE output (NDJSON, pretty single objects, .gz) or DTG CSV -> canonical table + quarantine.

Counts always add up: records (lines read) = valid + quarantined + non_bsm + blank.
Nothing is dropped: a line that fails anywhere lands in quarantine with its text
and every reason, and non-BSM records (TIM, ...) are kept aside by type.

Modules: `results` (`IngestResult`, the quarantine table, the ingest errors), `stream` (bytes
-> bounded pieces of lines: gzip, splitting, size limits), `canonical` (decoded ODE records ->
the canonical Arrow table: units, times, sentinels), `ode` (the ODE reader: one object's lines
decoded, version-checked, flattened and validated), `dtg_csv` (the data.transportation.gov CSV
reader), `parallel` (a big NDJSON file in spans over processes), `files` (`ingest_file`,
`ingest_paths`, `ingest_to_parquet`, `iter_files`). Typed decoders stay in `wydot_lab.parse`
and the rules in `wydot_lab.validate`. Both readers depend on `results`, never on each other.

Every public name is re-exported here (`from wydot_lab import ingest; ingest.ingest_file(...)`).
Tunables live in their module: set `ingest.stream.STREAM_CHUNK`, `ingest.ode.BATCH` or
`ingest.parallel.PARALLEL_MIN` there, not on this package.
"""

from wydot_lab.ingest.canonical import (
    J2735_CRUMB_UNITS,
    J2735_UNITS,
    RADIUS_STRAIGHT,
    SENTINELS,
    TIME_SOURCE,
    flatten,
)
from wydot_lab.ingest.files import NOTE_SUFFIXES, ingest_file, ingest_paths, ingest_to_parquet, iter_files
from wydot_lab.ingest.ode import BATCH, ingest_bytes, ingest_stream
from wydot_lab.ingest.ode import _Lines as _Lines  # tests reach it here
from wydot_lab.ingest.parallel import PARALLEL_MIN, SPANS_PER_WORKER
from wydot_lab.ingest.parallel import _piece_parts as _piece_parts
from wydot_lab.ingest.parallel import _span_bounds as _span_bounds
from wydot_lab.ingest.results import (
    IngestError,
    IngestResult,
    SchemaVersionError,
    empty_result,
    quarantine_table,
    supported_versions,
)
from wydot_lab.ingest.stream import (
    BOM,
    GZIP_MAGIC,
    LINE_HEAD,
    MAX_LINE,
    RAW_CHUNK,
    STREAM_CHUNK,
    ObjectTooLarge,
    split_lines,
)

__all__ = [
    "IngestResult",
    "IngestError",
    "SchemaVersionError",
    "ObjectTooLarge",
    "ingest_bytes",
    "ingest_stream",
    "ingest_file",
    "ingest_paths",
    "ingest_to_parquet",
    "iter_files",
    "quarantine_table",
    "empty_result",
    "supported_versions",
    "split_lines",
    "flatten",
    "BOM",
    "GZIP_MAGIC",
    "RAW_CHUNK",
    "STREAM_CHUNK",
    "MAX_LINE",
    "LINE_HEAD",
    "BATCH",
    "PARALLEL_MIN",
    "SPANS_PER_WORKER",
    "NOTE_SUFFIXES",
    "TIME_SOURCE",
    "SENTINELS",
    "J2735_UNITS",
    "J2735_CRUMB_UNITS",
    "RADIUS_STRAIGHT",
]
