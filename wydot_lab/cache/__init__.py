"""Parquet cache of ingested hours: `source=<pilot>/type=<T>/date=YYYY-MM-DD/hour=HH/`.

Each partition folder holds `valid.parquet`, `quarantine.parquet`, `non_bsm.parquet`
and `manifest.json` (source objects with ETag and size, counts, SHA-256 and size
of every file, created time, code and schema version). A partition is visible
only through its manifest, which is written last, inside a temporary folder that
is renamed into place under a per-partition file lock: a killed writer leaves a
hidden `.tmp-*` folder, never a half partition.

Integrity: loading reads each file's bytes once, checks size and SHA-256 against
the manifest and parses Parquet from the same buffer, so verification costs one
hash pass, not a second read. Measured on a 72,000-record day: 2.6 MB of Parquet
hash in ~3 ms while decoding it takes ~70 ms of CPU, so the full check on every
load is affordable and no size+mtime shortcut is needed. A mismatch raises
`CorruptPartition` (the partition is never returned) and hides the partition so
the next fetch refetches it; `fetch` checks SHA-256 of cached hours before
serving them, and `verify()` does the same for `wydot-lab cache verify`.
Files are snappy-compressed: zstd made each of the 24 hourly files ~2 ms slower
to open for a 20% size saving.

Day copies: once all 24 hours of a date are cached, `fetch` also writes `date=.../_day/`
(`valid.parquet` = the 24 valid files concatenated in hour order, and `day_manifest.json` with
its SHA-256 and the SHA-256 of each hour file it was built from). The hours stay the truth
(pruning, TTL, refetch work per hour); a load that covers a whole date reads the day copy only
while every hour it was built from is servable and unchanged, else the hours. One file instead
of 24 halves a day's Parquet decode (the per-file set-up was ~40% of it), takes a third off the
whole load, and cuts a day's reads from a remote cache root from 24 GETs to one, for a second
copy of the valid records on disk. A day copy failing its check is dropped (the hours serve,
nothing is refetched) and rebuilt by the next ingest; the `_` prefix keeps hive readers out of
it.

The root is a local path or any fsspec URL. Renames are atomic on local disks;
on object stores the manifest-last rule keeps readers safe. Locks are `filelock`
files under the root for local roots and under the temp dir for remote roots
(then they serialise writers on one machine only).

Modules: `files` (names on disk, statuses, `Partition`, Parquet bytes), `partitions` (`Cache`:
hour partitions, manifests, locks, status, writes, verified reads), `days` (the day-copy life
cycle, a part of `Cache`), `read` (`load`, `load_table`: the Dask read path), `admin` (`ls`,
`verify`, `clear`). Every public name is re-exported here: `from wydot_lab import cache;
cache.load(...)`.
"""

from wydot_lab.cache.admin import clear, ls, verify
from wydot_lab.cache.days import DAY_COPY_MAX_ROWS, Compaction, DayCopies, day_bounds, day_usable
from wydot_lab.cache.files import (
    ABSENT,
    CORRUPT,
    CORRUPT_MARK,
    COUNT_KEYS,
    DAY_DIR,
    DAY_MANIFEST,
    EXPIRED,
    FILES,
    FRESH,
    INCOMPLETE,
    MANIFEST,
    MISSING,
    STALE,
    Partition,
    code_version,
)
from wydot_lab.cache.partitions import Cache, check_source, manifest_source
from wydot_lab.cache.read import available, load, load_table
from wydot_lab.errors import CacheWarning, CorruptPartition, RangeNotCached, SourceConflict

__all__ = [
    "Cache",
    "Compaction",
    "Partition",
    "CorruptPartition",
    "CacheWarning",
    "SourceConflict",
    "RangeNotCached",
    "DayCopies",
    "load",
    "load_table",
    "ls",
    "verify",
    "clear",
    "available",
    "code_version",
    "check_source",
    "manifest_source",
    "day_bounds",
    "day_usable",
    "MANIFEST",
    "CORRUPT_MARK",
    "FILES",
    "COUNT_KEYS",
    "DAY_DIR",
    "DAY_MANIFEST",
    "DAY_COPY_MAX_ROWS",
    "FRESH",
    "ABSENT",
    "EXPIRED",
    "STALE",
    "CORRUPT",
    "MISSING",
    "INCOMPLETE",
]
