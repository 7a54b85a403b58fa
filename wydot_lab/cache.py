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
"""
from __future__ import annotations

import dataclasses
import functools
import datetime as dt
import hashlib
import io
import json
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import filelock
import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from wydot_lab import layout
from wydot_lab.schema import BSM_SCHEMA, NON_BSM_SCHEMA, QUARANTINE_SCHEMA, SCHEMA_VERSION, conform

MANIFEST = "manifest.json"
CORRUPT_MARK = "manifest.corrupt.json"
FILES = {"valid": ("valid.parquet", BSM_SCHEMA), "quarantine": ("quarantine.parquet", QUARANTINE_SCHEMA),
         "non_bsm": ("non_bsm.parquet", NON_BSM_SCHEMA)}
COUNT_KEYS = ("records", "valid", "quarantined", "non_bsm", "blank")
DAY_DIR = "_day"  # a date's compacted copy of its valid files ('_': hive readers skip it)
DAY_MANIFEST = "day_manifest.json"
DAY_COPY_MAX_ROWS = 2_000_000  # bigger days keep their hours only (= load's default rows_per_partition)

# statuses of a partition as seen by `Cache.status`
FRESH, ABSENT, EXPIRED, STALE, CORRUPT, MISSING, INCOMPLETE = (
    "fresh", "absent", "expired", "stale", "corrupt", "missing", "incomplete")


class CorruptPartition(RuntimeError):
    """A cached file does not match its manifest; it is never returned."""


class SourceConflict(ValueError):
    """A cache root holds hours of the range from another source: never served or fetched over."""


class CacheWarning(UserWarning):
    """Hours of a requested range that the cache cannot serve completely."""


@functools.cache
def code_version() -> str:
    """Read once per process (~0.5 ms per package-metadata lookup, paid by every Cache)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wydot_lab")
    except PackageNotFoundError:
        return "unknown"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Compaction(NamedTuple):
    """What `Cache.compact_day` did: wrote the copy, or why not (`refetch`: the hour to refetch)."""

    written: bool
    problem: str | None = None
    refetch: str | None = None


@dataclasses.dataclass(frozen=True)
class Partition:
    """One cached hour: where it lives and what its manifest says (None if absent)."""

    hour: dt.datetime
    path: str
    manifest: dict | None

    @property
    def label(self) -> str:
        return layout.hour_label(self.hour)

    def counts(self) -> dict:
        m = self.manifest or {}
        return {k: int(m.get("counts", {}).get(k, 0)) for k in COUNT_KEYS}


class Cache:
    """A cache root (local path or fsspec URL) for one pilot and message type."""

    def __init__(self, root: str, pilot: str = layout.DEFAULT_PILOT, message_type: str = layout.DEFAULT_TYPE,
                 storage_options: dict | None = None, lock_timeout_s: float = 3600.0):
        self.root_url = root
        self.fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
        self.root = path.rstrip("/")
        self.pilot = pilot
        self.message_type = message_type
        self.storage_options = storage_options or {}
        self.lock_timeout_s = lock_timeout_s
        self.local = "file" in _protocols(self.fs)
        self.code_version = code_version()

    def require_root(self) -> None:
        """A local root must exist before it is listed, verified or cleared: a typo would read as
        an empty cache (a remote root may legitimately be empty: not checked)."""
        if self.local and not self.fs.isdir(self.root):
            raise ValueError(f"--cache {self.root_url} is a file, not a cache folder" if self.fs.exists(self.root)
                             else f"no cache at {self.root_url} (nothing was ever ingested there; check --cache)")

    # ------------------------------------------------------------ paths

    def date_path(self, day: dt.date) -> str:
        return f"{self.root}/source={self.pilot}/type={self.message_type}/date={day:%Y-%m-%d}"

    def partition_path(self, hour: dt.datetime) -> str:
        return f"{self.date_path(hour.date())}/hour={hour:%H}"

    def day_path(self, day: dt.date) -> str:
        return f"{self.date_path(day)}/{DAY_DIR}"

    def _lock_path(self, hour: dt.datetime | dt.date) -> str:
        label = layout.hour_label(hour) if isinstance(hour, dt.datetime) else f"{hour:%Y-%m-%d}-day"
        name = f"{self.pilot}-{self.message_type}-{label}.lock"
        if self.local:
            d = f"{self.root}/.locks"
        else:
            d = os.path.join(tempfile.gettempdir(), "wydot-lab-locks",
                             hashlib.sha256(self.root_url.encode()).hexdigest()[:16])
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, name)

    def lock(self, hour: dt.datetime | dt.date, timeout: float | None = None) -> filelock.BaseFileLock:
        """The per-partition lock (a date: its day copy's lock; OS-level: a killed holder releases it)."""
        return filelock.FileLock(self._lock_path(hour), timeout=self.lock_timeout_s if timeout is None else timeout)

    # ------------------------------------------------------------ manifests

    def partition(self, hour: dt.datetime) -> Partition:
        path = self.partition_path(hour)
        try:
            with self.fs.open(f"{path}/{MANIFEST}", "rb") as f:
                manifest = json.loads(f.read())
        except FileNotFoundError:
            manifest = None
            if self.fs.exists(f"{path}/{CORRUPT_MARK}"):
                manifest = {"status": CORRUPT, "problem": "marked corrupt"}
        except (ValueError, OSError):
            manifest = {"status": CORRUPT, "problem": "unreadable manifest"}
        return Partition(hour, path, manifest)

    def hour_folders(self, start: dt.datetime | None = None, end: dt.datetime | None = None,
                     leftovers: bool = False) -> list[tuple[dt.datetime, str]]:
        """(hour, path) of the `hour=` folders in [start, end) (all if no bounds), listing only date folders
        in range; `leftovers`: also the `.tmp-`/`.old-` folders of killed writers."""
        out = []
        for day in self.dates(start, end):
            for p in sorted(self.fs.ls(self.date_path(day), detail=False)):
                leaf = p.rstrip("/").rsplit("/", 1)[-1]
                if not (leaf.startswith("hour=") or leftovers and leaf.startswith((".tmp-hour=", ".old-hour="))):
                    continue
                hour = dt.datetime(day.year, day.month, day.day, int(leaf.split("hour=", 1)[1][:2]),
                                   tzinfo=dt.timezone.utc)
                if (start is None or hour >= start) and (end is None or hour < end):
                    out.append((hour, p))
        return out

    def dates(self, start: dt.datetime | None = None, end: dt.datetime | None = None) -> list[dt.date]:
        """The `date=` folders [start, end) touches (all if no bounds)."""
        base = f"{self.root}/source={self.pilot}/type={self.message_type}"
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False)]
        except FileNotFoundError:
            return []
        days = sorted(d for n in names if n.startswith("date=") and (d := _iso_date(n[5:])) is not None)
        return [d for d in days if (start is None or d >= start.date())
                and (end is None or dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc) < end)]

    def day_copies(self, start: dt.datetime | None = None, end: dt.datetime | None = None) -> list[dt.date]:
        """Dates with a day copy folder among those [start, end) touches (all if no bounds)."""
        return [d for d in self.dates(start, end) if self.fs.exists(self.day_path(d))]

    def partitions(self, start: dt.datetime | None = None, end: dt.datetime | None = None) -> list[Partition]:
        """Partitions of the hour folders in [start, end) (all if no bounds)."""
        return [self.partition(hour) for hour, _ in self.hour_folders(start, end)]

    def status(self, part: Partition, ttl_days: float | None = None, source_objects: list[dict] | None = None,
               now: dt.datetime | None = None, deep: bool = False) -> tuple[str, str]:
        """(status, reason) of a partition: fresh, or why it must be (re)fetched.

        source_objects: the current listing of the folders the partition was built
        from (its hour +-1); any added, removed or changed object (ETag) makes it stale.
        deep: also check SHA-256 of every file (else sizes only).
        """
        m = part.manifest
        if m is None:
            return ABSENT, "not cached"
        if m.get("status") == CORRUPT:
            return CORRUPT, m.get("problem", "corrupt")
        if m.get("schema_version") != SCHEMA_VERSION:
            return STALE, f"schema version {m.get('schema_version')} != {SCHEMA_VERSION}"
        if ttl_days is not None:
            age = ((now or _utc_now()) - dt.datetime.fromisoformat(m["created"])).total_seconds()
            if age > ttl_days * 86400:
                return EXPIRED, f"older than {ttl_days} days"
        if m.get("status") == MISSING:
            return MISSING, m.get("error", "source hour failed")
        if source_objects is not None and _object_set(source_objects) != _object_set(m.get("source_objects", [])):
            return STALE, "source objects changed (ETag/size/added/removed)"
        problem = self._check_files(part, deep)
        if problem:
            return CORRUPT, problem
        if m.get("status") == INCOMPLETE:
            return INCOMPLETE, "built while source folders were missing: " + ", ".join(m.get("missing_sources", []))
        return FRESH, "cached"

    def _check_files(self, part: Partition, deep: bool) -> str | None:
        for name, meta in part.manifest.get("files", {}).items():
            problem = self._check_file(f"{part.path}/{name}", name, meta, deep, read=False)[1]
            if problem:
                return problem
        return None

    def _check_file(self, path: str, name: str, meta: dict, deep: bool, read: bool = True
                    ) -> tuple[bytes | None, str | None]:
        """(its bytes, or None without `read`/`deep`; None) if a file matches its manifest entry
        (size, and SHA-256 with `deep`), else (None, problem). Size alone comes from the listing."""
        try:
            if read or deep:
                data = self.fs.cat_file(path)
                size = len(data)
            else:
                data, size = None, self.fs.size(path)
        except FileNotFoundError:
            return None, f"{name} is missing"
        if size != meta["size"]:
            return None, f"{name} has {size} bytes, manifest says {meta['size']}"
        if deep and _sha256(data) != meta["sha256"]:
            return None, f"{name} SHA-256 mismatch"
        return data, None

    def mark_corrupt(self, part: Partition, problem: str) -> None:
        """Hide a corrupt partition (manifest renamed) so the next fetch refetches it; a partition
        rewritten since `part` was read is left alone (its new files were never checked)."""
        try:
            with self.lock(part.hour, timeout=5):
                current = self.partition(part.hour).manifest or {}
                if any(current.get(k) != (part.manifest or {}).get(k) for k in ("files", "created")):
                    return
                data = dict(current, status=CORRUPT, problem=problem)
                self.fs.pipe_file(f"{part.path}/{CORRUPT_MARK}", json.dumps(data).encode())
                self.fs.rm_file(f"{part.path}/{MANIFEST}")
        except (filelock.Timeout, FileNotFoundError, OSError):
            pass  # someone is rewriting it right now: nothing to hide

    # ------------------------------------------------------------ writing

    def write(self, hour: dt.datetime, valid: pa.Table, quarantine: pa.Table, non_bsm: pa.Table, blank: int,
              source_objects: Iterable[dict], extra: dict | None = None, status: str = "complete",
              locked: bool = False) -> dict:
        """Write one partition atomically (caller may already hold its lock: `locked=True`)."""
        if not locked:
            with self.lock(hour):
                return self.write(hour, valid, quarantine, non_bsm, blank, source_objects, extra, status, True)
        final = self.partition_path(hour)
        parent = final.rsplit("/", 1)[0]
        self._sweep(hour)
        tmp = f"{parent}/.tmp-hour={hour:%H}-{uuid.uuid4().hex[:12]}"
        try:
            return self._write_tmp(tmp, final, hour, valid, quarantine, non_bsm, blank, source_objects, extra,
                                   status)
        except OSError as err:  # a full disk, a read-only root: no half partition, no temp folder
            self._rm_quietly(tmp)
            if err.filename is None:  # name the partition (a write of a file object names nothing)
                raise OSError(err.errno, err.strerror, final) from None
            raise
        except BaseException:  # Ctrl-C
            self._rm_quietly(tmp)
            raise

    def _rm_quietly(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except OSError:
            pass  # a leftover `.tmp-` folder is invisible and swept by the next writer

    def _write_tmp(self, tmp: str, final: str, hour: dt.datetime, valid, quarantine, non_bsm, blank: int,
                   source_objects: Iterable[dict], extra: dict | None, status: str) -> dict:
        self.fs.makedirs(tmp, exist_ok=True)
        tables = {"valid": valid, "quarantine": quarantine, "non_bsm": non_bsm}
        tables = {k: FILES[k][1].empty_table() if t is None else t for k, t in tables.items()}  # None: empty
        files = {}
        if status != MISSING:
            for key, (name, schema) in FILES.items():
                data = _parquet_bytes(tables[key], schema)
                self.fs.pipe_file(f"{tmp}/{name}", data)
                files[name] = {"sha256": _sha256(data), "size": len(data), "rows": tables[key].num_rows}
        counts = {"valid": tables["valid"].num_rows, "quarantined": tables["quarantine"].num_rows,
                  "non_bsm": tables["non_bsm"].num_rows, "blank": int(blank)}
        counts["records"] = counts["valid"] + counts["quarantined"] + counts["non_bsm"] + counts["blank"]
        manifest = {
            "partition": final[len(self.root) + 1:],
            "source": self.pilot,
            "type": self.message_type,
            "hour": f"{hour:%Y-%m-%dT%H:00:00Z}",
            "status": status,
            "counts": counts,
            "files": files,
            "source_objects": sorted((dict(o) for o in source_objects), key=lambda o: o["key"]),
            "created": _utc_now().isoformat(),
            "code_version": self.code_version,
            "schema_version": SCHEMA_VERSION,
            **(extra or {}),
        }
        self.fs.pipe_file(f"{tmp}/{MANIFEST}", json.dumps(manifest, indent=1, sort_keys=True).encode())
        self._swap(tmp, final)
        return manifest

    def _swap(self, tmp: str, final: str) -> None:
        """Move the finished temp folder into place; the old copy (if any) leaves first."""
        old = None
        if self.fs.exists(final):
            old = final.rsplit("/", 1)[0] + f"/.old-{final.rsplit('/', 1)[1]}-{uuid.uuid4().hex[:12]}"
            self._rename(final, old)
        self._rename(tmp, final)
        if old:
            self.fs.rm(old, recursive=True)

    def _rename(self, src: str, dst: str) -> None:
        if self.local:
            os.rename(src, dst)  # atomic on one filesystem
        else:
            self.fs.mv(src, dst, recursive=True)

    def _sweep(self, hour: dt.datetime) -> int:
        """Remove leftovers of killed writers of this hour (safe: we hold its lock)."""
        parent = self.date_path(hour.date())
        n = 0
        try:
            entries = self.fs.ls(parent, detail=False)
        except FileNotFoundError:
            return 0
        for p in entries:
            leaf = p.rstrip("/").rsplit("/", 1)[-1]
            if leaf.startswith((f".tmp-hour={hour:%H}-", f".old-hour={hour:%H}-")):
                self.fs.rm(p, recursive=True)
                n += 1
        return n

    # ------------------------------------------------------------ reading

    def read_files(self, part: Partition, kind: str = "valid", verify: bool = True) -> pa.Table:
        """One partition's table of `kind`, checked against the manifest (never returns corrupt data)."""
        name, schema = FILES[kind]
        meta = (part.manifest or {}).get("files", {}).get(name)
        if meta is None:
            return schema.empty_table()
        data, problem = self._check_file(f"{part.path}/{name}", name, meta, deep=verify)
        if problem is None:
            try:
                return _parse(data, schema, threads=False)  # threads: across files
            except (pa.ArrowException, OSError) as err:
                problem = f"{name} unreadable ({err})"
        self.mark_corrupt(part, problem)
        raise CorruptPartition(
            f"cache partition {part.path} is corrupt ({problem}); it was hidden: run `wydot-lab ingest` "
            "for this range to refetch it")

    # ------------------------------------------------------------ day copies

    def day_manifest(self, day: dt.date) -> dict | None:
        """The day copy's manifest; None if absent, unreadable or malformed (then the hours serve)."""
        try:
            with self.fs.open(f"{self.day_path(day)}/{DAY_MANIFEST}", "rb") as f:
                m = json.loads(f.read())
            meta = m["files"][FILES["valid"][0]]
            ok = isinstance(m["hours"], dict) and all(isinstance(meta[k], t) for k, t in
                                                      (("sha256", str), ("size", int), ("rows", int)))
        except (FileNotFoundError, ValueError, OSError, KeyError, TypeError):
            return None
        return m if ok else None

    def compact_day(self, day: dt.date, ttl_days: float | None = None, now: dt.datetime | None = None
                    ) -> Compaction:
        """Write the date's day copy if all 24 hours are servable and the copy is absent or stale.

        `Compaction.problem` says why a date that should get a copy has none: an hour hidden as
        corrupt (found now by `read_files`, or earlier: `refetch` names it), an hour changed while
        being read (a concurrent clear or refetch), the day lock held by another writer, or a
        failed write (e.g. a full disk; its temp folder is removed). It never raises on these: the
        hours are cached whatever happens to the copy. A stale copy the date cannot replace (an
        hour not servable, or the day too big) is removed, as are leftovers of killed writers."""
        if self._day_current(day):  # no lock needed to see that (a read-only root serves it too)
            return Compaction(False)
        try:
            with self.lock(day):
                return self._compact_locked(day, ttl_days, now)
        except filelock.Timeout:
            return Compaction(False, "its day lock is held by another writer")
        except OSError as err:  # the lock cannot even be taken: a read-only or full root
            return Compaction(False, f"the day copy could not be written ({err})")

    def _day_current(self, day: dt.date) -> bool:
        """The date has a day copy built from its current 24 hours (size checked; loads verify SHA-256)."""
        current = self.day_manifest(day)
        return current is not None and _day_usable(current, [self.partition(h) for h in layout.hours_between(
            *day_bounds(day))]) and self.check_day(day, current, deep=False, read=False)[1] is None

    def _compact_locked(self, day: dt.date, ttl_days: float | None, now: dt.datetime | None) -> Compaction:
        parts = [self.partition(h) for h in layout.hours_between(*day_bounds(day))]
        if self._day_current(day):
            return Compaction(False)  # written meanwhile by another run
        tmp = f"{self.date_path(day)}/.tmp-day-{uuid.uuid4().hex[:12]}"
        try:
            self._sweep_day(day)
            self._rm_day(day)
            status = {p.label: self.status(p, ttl_days=ttl_days, now=now)[0] for p in parts}
            hidden = [h for h, st in status.items() if st == CORRUPT]
            if hidden:
                return Compaction(False, f"hour {hidden[0]} is hidden as corrupt", hidden[0])
            if any(st not in (FRESH, INCOMPLETE) for st in status.values()):
                return Compaction(False)  # absent or expired hours: nothing to say
            if sum(p.counts()["valid"] for p in parts) > DAY_COPY_MAX_ROWS:
                return Compaction(False)  # `load` would read it by hours anyway (bounded dask partitions)
            tables = []
            for p in parts:
                try:
                    tables.append(self.read_files(p, "valid"))
                except CorruptPartition:
                    if self.status(self.partition(p.hour))[0] == CORRUPT:  # hidden by read_files
                        return Compaction(False, f"hour {p.label} was found corrupt and is now hidden", p.label)
                    return Compaction(False, f"hour {p.label} changed while being read (a concurrent clear "
                                             "or refetch)")
            self.fs.makedirs(tmp, exist_ok=True)
            data = _parquet_bytes(pa.concat_tables(tables), BSM_SCHEMA)
            self.fs.pipe_file(f"{tmp}/{FILES['valid'][0]}", data)
            manifest = {"date": f"{day:%Y-%m-%d}", "hours": _day_sources(parts),
                        "files": {FILES["valid"][0]: {"sha256": _sha256(data), "size": len(data),
                                                      "rows": sum(t.num_rows for t in tables)}},
                        "created": _utc_now().isoformat(), "code_version": self.code_version,
                        "schema_version": SCHEMA_VERSION}
            self.fs.pipe_file(f"{tmp}/{DAY_MANIFEST}", json.dumps(manifest, indent=1, sort_keys=True).encode())
            self._swap(tmp, self.day_path(day))
            return Compaction(True)
        except OSError as err:
            self._rm_quietly(tmp)
            return Compaction(False, f"the day copy could not be written ({err})")

    def _rm_day(self, day: dt.date) -> bool:
        """Remove the date's day copy folder (caller holds the date's lock); True if there was one."""
        if not self.fs.exists(self.day_path(day)):
            return False
        self.fs.rm(self.day_path(day), recursive=True)
        return True

    def _sweep_day(self, day: dt.date) -> None:
        """Remove leftovers of killed day-copy writers (safe: we hold the date's lock)."""
        try:
            entries = self.fs.ls(self.date_path(day), detail=False)
        except FileNotFoundError:
            return
        for p in entries:
            if p.rstrip("/").rsplit("/", 1)[-1].startswith((".tmp-day-", f".old-{DAY_DIR}-")):
                self.fs.rm(p, recursive=True)

    def drop_day(self, day: dt.date, manifest: dict) -> str:
        """Remove a date's day copy if it is still the one `manifest` describes: 'dropped', or why not."""
        try:
            with self.lock(day, timeout=5):
                if self.day_manifest(day) != manifest or not self._rm_day(day):
                    return "it was rewritten meanwhile"
                return "dropped it"
        except filelock.Timeout:
            return "it is locked by a writer"
        except (FileNotFoundError, OSError) as err:
            return f"could not drop it ({err})"

    def verify_day(self, day: dt.date, mark: bool = True) -> str | None:
        """Full check of a date's day copy under its lock (no writer mid-swap): None if sound or
        absent, else the problem; a failing copy is removed with `mark` (its hours serve)."""
        try:
            with self.lock(day):
                return self._verify_day(day, mark)
        except (filelock.Timeout, OSError):  # a read-only root, or a writer holding the date
            return self._verify_day(day, mark=False)

    def _verify_day(self, day: dt.date, mark: bool) -> str | None:
        if not self.fs.exists(self.day_path(day)):
            return None
        m = self.day_manifest(day)
        problem = "unreadable day manifest" if m is None else self.check_day(day, m)[1]
        if problem and mark:
            try:
                self._rm_day(day)
            except OSError as err:
                problem += f" (not dropped: {err})"
        return problem

    def check_day(self, day: dt.date, manifest: dict, deep: bool = True, read: bool = True
                  ) -> tuple[bytes | None, str | None]:
        """`_check_file` of the day copy (`read=False`, not `deep`: size only, no download)."""
        name = FILES["valid"][0]
        return self._check_file(f"{self.day_path(day)}/{name}", f"day copy {name}", manifest["files"][name],
                                deep, read)

    def read_day(self, day: dt.date, manifest: dict, parts: list[Partition], verify: bool = True) -> pa.Table:
        """A date's valid records from its day copy; a copy failing its check is dropped (with a
        `CacheWarning`) and the hours `parts` serve instead: never corrupt data, nothing refetched."""
        data, problem = self.check_day(day, manifest, deep=verify)
        if problem is None:
            try:
                return _parse(data, BSM_SCHEMA, threads=True)
            except (pa.ArrowException, OSError) as err:
                problem = f"day copy unreadable ({err})"
        what = self.drop_day(day, manifest) + "; read the 24 hours instead (the next ingest rebuilds it)"
        warnings.warn(f"cache {self.root_url}: {day:%Y-%m-%d} {problem}: {what}", CacheWarning, stacklevel=2)
        return _read_parts(self, parts, "valid", verify)


def _parse(data: bytes, schema: pa.Schema, threads: bool) -> pa.Table:
    table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=threads)
    return table if table.schema == schema else conform(table, schema)


def _iso_date(text: str) -> dt.date | None:
    """A `date=` folder's date; None for names this cache never writes (e.g. `date=bad`, `date=20240102`)."""
    try:
        d = dt.date.fromisoformat(text)
    except ValueError:
        return None
    return d if d.isoformat() == text else None


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    t0 = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    return t0, t0 + dt.timedelta(days=1)


def _day_sources(parts: list[Partition]) -> dict[str, str]:
    """{hour: SHA-256 of its valid file}: what a day copy was built from."""
    return {p.label: p.manifest["files"][FILES["valid"][0]]["sha256"] for p in parts}


def _day_usable(manifest: dict, parts: list[Partition]) -> bool:
    """A day copy serves only the exact hour files it was built from (all 24 of them)."""
    try:
        return (manifest.get("schema_version") == SCHEMA_VERSION and len(parts) == 24
                and manifest["hours"] == _day_sources(parts))
    except (KeyError, TypeError, AttributeError):
        return False


def manifest_source(manifest: dict | None) -> str | None:
    """The source identity a partition was built from (`source_url` for manifests that predate
    `source_id`)."""
    if not manifest:
        return None
    if manifest.get("source_id"):
        return manifest["source_id"]
    return layout.source_identity(manifest["source_url"]) if manifest.get("source_url") else None


def check_source(cache: "Cache", source_id: str, manifests: dict[dt.datetime, dict | None],
                 t0: dt.datetime, t1: dt.datetime) -> None:
    """Raise `SourceConflict` if any of these partitions came from another source."""
    foreign = {h: s for h, m in manifests.items() if (s := manifest_source(m)) not in (None, source_id)}
    if foreign:
        first = min(foreign)
        raise SourceConflict(
            f"cache {cache.root_url} holds {len(foreign)} hours of this range from {foreign[first]} (first "
            f"{layout.hour_label(first)}); this run reads {source_id}. Use one cache root per source "
            f"(--cache / params cache.root), or remove those hours: wydot-lab cache clear --cache {cache.root_url} "
            f"--pilot {cache.pilot} --type {cache.message_type} --start {layout.hour_label(t0)}:00 "
            f"--end {layout.hour_label(t1)}:00")


def _protocols(fs) -> set:
    p = fs.protocol
    return set(p) if isinstance(p, (tuple, list)) else {p}


def _object_set(objs: Iterable[dict]) -> set:
    return {(o["key"], o["etag"], int(o["size"])) for o in objs}


def _parquet_bytes(table: pa.Table, schema: pa.Schema) -> bytes:
    """Deterministic Parquet bytes (same table -> same bytes, hence the same SHA-256)."""
    if table.schema != schema:
        table = conform(table, schema)
    sink = io.BytesIO()
    # snappy: zstd's per-column-chunk set-up costs more than its smaller files save on
    # 58 columns x 24 hourly files (measured: ~5.5 vs ~3 ms per file to read)
    pq.write_table(table, sink, compression="snappy", write_statistics=True, row_group_size=1 << 20,
                   store_schema=True)
    return sink.getvalue()


# ---------------------------------------------------------------- range helpers


# ---------------------------------------------------------------- load


@functools.cache
def _pandas_meta() -> pd.DataFrame:
    """Built once per process (~10 ms); dask deep-copies the meta it is given, so sharing is safe."""
    return _to_pandas(BSM_SCHEMA.empty_table())


_NULLABLE = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
             pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


def _types_mapper(t: pa.DataType):
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pd.StringDtype("pyarrow")
    if pa.types.is_list(t) or pa.types.is_struct(t):
        return pd.ArrowDtype(t)
    return _NULLABLE.get(t)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """One dtype per column whatever the nulls (so every dask partition matches the meta):
    ints and bools as pandas nullable types, strings as string[pyarrow], crumbs as
    ArrowDtype (no Python objects), floats as float64 and times as datetime64[ms, UTC]."""
    return table.to_pandas(types_mapper=_types_mapper, split_blocks=True)


def _read_group(group: str, root: str, pilot: str, message_type: str, storage_options: dict,
                verify: bool, columns: list | None) -> pd.DataFrame:
    """Dask task: read, verify and concatenate the valid records of some hours and day copies."""
    cache = Cache(root, pilot, message_type, storage_options)
    table = _read_units(cache, _decode_units(json.loads(group)), "valid", verify)
    if columns is not None:
        table = table.select(columns)
    return _to_pandas(table)


def _read_parts(cache: Cache, parts: list[Partition], kind: str, verify: bool) -> pa.Table:
    """Read + verify files on a few threads (Parquet decoding and hashing release the GIL)."""
    if not parts:
        return FILES[kind][1].empty_table()
    with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 2, len(parts))) as ex:
        return pa.concat_tables(list(ex.map(lambda p: cache.read_files(p, kind, verify), parts)))


@dataclasses.dataclass(frozen=True)
class _Day:
    """A whole date served from its day copy (`parts`: its 24 hours, the fallback)."""

    day: dt.date
    manifest: dict
    parts: list

    def counts(self) -> dict:
        return {"valid": int(self.manifest["files"][FILES["valid"][0]]["rows"])}


def _units(cache: Cache, parts: list[Partition], kind: str, rows_per_partition: int,
           day_copies: bool) -> list:
    """The partitions in hour order, each whole date that fits a dask partition as one unit: its
    day copy where usable, else the list of its 24 hours."""
    by_day: dict[dt.date, list[Partition]] = {}
    for p in parts:
        by_day.setdefault(p.hour.date(), []).append(p)
    out = []
    for day, ps in by_day.items():
        whole = len(ps) == 24 and sum(p.counts()["valid"] for p in ps) <= rows_per_partition
        m = cache.day_manifest(day) if whole and kind == "valid" and day_copies else None
        if m is not None and _day_usable(m, ps):
            out.append(_Day(day, m, ps))
        elif whole:
            out.append(ps)  # packed whole, as its copy would be: the same dask partitions either way
        else:
            out.extend(ps)
    return out


def _read_units(cache: Cache, units: list, kind: str, verify: bool) -> pa.Table:
    tables, hours = [], []
    for u in units + [None]:
        if isinstance(u, (Partition, list)):
            hours.extend(u if isinstance(u, list) else [u])
            continue
        if hours:
            tables.append(_read_parts(cache, hours, kind, verify))
            hours = []
        if u is not None:
            tables.append(cache.read_day(u.day, u.manifest, u.parts, verify))
    return pa.concat_tables(tables) if tables else FILES[kind][1].empty_table()


def _encode_unit(u) -> list:
    if isinstance(u, _Day):
        return ["day", u.day.isoformat(), u.manifest, [_encode_unit(p) for p in u.parts]]
    return ["hour", u.hour.isoformat(), u.path,
            {"files": u.manifest.get("files", {}), "created": u.manifest.get("created")}]


def _decode_units(entries: list) -> list:
    return [_Day(dt.date.fromisoformat(e[1]), e[2], _decode_units(e[3])) if e[0] == "day"
            else Partition(dt.datetime.fromisoformat(e[1]), e[2], e[3]) for e in entries]


def _groups(units: list, rows_per_partition: int) -> list[str]:
    """Consecutive hours (and day copies) packed into dask partitions of about `rows_per_partition` rows.

    Each group is one JSON text: dask tokenizes a string in microseconds, where nested
    tuples of dicts cost ~1 ms per hour."""
    groups, cur, rows = [], [], 0
    for u in units:
        block = u if isinstance(u, list) else [u]  # a whole date's hours stay together
        n = sum(b.counts()["valid"] for b in block)
        if cur and rows + n > rows_per_partition:
            groups.append(json.dumps(cur))
            cur, rows = [], 0
        cur.extend(_encode_unit(b) for b in block)
        rows += n
    if cur:
        groups.append(json.dumps(cur))
    return groups


def available(cache: Cache, t0: dt.datetime, t1: dt.datetime, ttl_days: float | None = None,
              now: dt.datetime | None = None) -> tuple[list[Partition], dict[str, str]]:
    """Servable partitions of [t0, t1) and {hour: why not} for the others (size check only).

    A corrupt partition raises `CorruptPartition` (and is hidden for refetch): never returned, never skipped.
    """
    found = {p.hour: p for p in cache.partitions(t0, t1)}
    ok, problems = [], {}
    for h in layout.hours_between(t0, t1):
        p = found.get(h)
        if p is None:
            problems[layout.hour_label(h)] = ABSENT
            continue
        st, why = cache.status(p, ttl_days=ttl_days, now=now)
        if st == CORRUPT:
            if (p.manifest or {}).get("status") != CORRUPT:
                cache.mark_corrupt(p, why)
            raise CorruptPartition(f"cache partition {p.path} is corrupt ({why}); it is hidden until refetched: "
                                   "run `wydot-lab ingest` for this range")
        if st in (FRESH, INCOMPLETE):
            ok.append(p)
            if st == INCOMPLETE:
                problems[layout.hour_label(h)] = f"{INCOMPLETE}: {why}"
        else:
            problems[layout.hour_label(h)] = f"{st}: {why}"
    return ok, problems


def _servable(start, end, root: str, pilot: str, message_type: str, storage_options: dict | None,
              ttl_days: float | None, strict: bool, source_id: str | None = None) -> tuple[Cache, list[Partition]]:
    """The cache and its servable partitions of a range; hours it cannot serve raise (`strict`) or warn;
    with `source_id`, hours of another source raise `SourceConflict`."""
    t0, t1 = layout.hour_range(start, end)
    cache = Cache(root, pilot, message_type, storage_options)
    parts, problems = available(cache, t0, t1, ttl_days=ttl_days)
    if source_id is not None:
        check_source(cache, source_id, {p.hour: p.manifest for p in parts}, t0, t1)
    if problems:
        msg = (f"cache {root}: {len(problems)} of {len(layout.hours_between(t0, t1))} hours not complete: "
               + ", ".join(f"{h} ({why})" for h, why in list(problems.items())[:6])
               + (" ..." if len(problems) > 6 else "") + "; run `wydot-lab ingest` for this range")
        if strict:
            raise LookupError(msg)
        warnings.warn(msg, CacheWarning, stacklevel=3)
    return cache, parts


def load(start, end, root: str, pilot: str = layout.DEFAULT_PILOT, message_type: str = layout.DEFAULT_TYPE,
         storage_options: dict | None = None, verify: bool = True, columns: list[str] | None = None,
         rows_per_partition: int = DAY_COPY_MAX_ROWS, ttl_days: float | None = None, strict: bool = False,
         source_id: str | None = None, day_copies: bool = True):
    """Cached valid records of a range as a dask DataFrame of the canonical schema.

    Pruning: only the `date=` folders of the range are listed and only the hours
    in range are read (hive layout, no scan of the whole cache). Works offline.
    Hours not servable (absent, expired, corrupt, missing) raise with `strict`,
    else are reported in one `CacheWarning`, never skipped silently.
    Each dask partition verifies size + SHA-256 of its files before parsing. With `source_id`
    (`layout.source_identity` of the source meant), hours cached from another source raise.
    A whole date reads its day copy where one is usable (`day_copies=False`: always the hours).
    """
    import dask
    import dask.dataframe as dd

    cache, parts = _servable(start, end, root, pilot, message_type, storage_options, ttl_days, strict, source_id)
    meta = _pandas_meta()
    if columns is not None:
        meta = meta[columns]
    groups = _groups(_units(cache, parts, "valid", rows_per_partition, day_copies), rows_per_partition)
    if not groups:
        return dd.from_pandas(meta, npartitions=1)
    with dask.config.set({"dataframe.convert-string": False}):  # already string[pyarrow]: skip a no-op layer
        return dd.from_map(_read_group, groups, root=cache.root_url, pilot=pilot, message_type=message_type,
                           storage_options=storage_options or {}, verify=verify, columns=columns, meta=meta,
                           enforce_metadata=False, label="wydot-cache")


def load_table(start, end, root: str, kind: str = "valid", pilot: str = layout.DEFAULT_PILOT,
               message_type: str = layout.DEFAULT_TYPE, storage_options: dict | None = None, verify: bool = True,
               ttl_days: float | None = None, strict: bool = False, source_id: str | None = None,
               day_copies: bool = True) -> pa.Table:
    """Same hours as `load`, as one Arrow table (`kind`: valid | quarantine | non_bsm)."""
    cache, parts = _servable(start, end, root, pilot, message_type, storage_options, ttl_days, strict, source_id)
    return _read_units(cache, _units(cache, parts, kind, 1 << 62, day_copies), kind, verify)


# ---------------------------------------------------------------- ls / verify / clear


def ls(root: str, start=None, end=None, pilot: str = layout.DEFAULT_PILOT, message_type: str = layout.DEFAULT_TYPE,
       storage_options: dict | None = None, ttl_days: float | None = None) -> list[dict]:
    """One row per partition: hour, status, counts, bytes, created, age, and whether a usable
    day copy holds it (`day_copy`; its bytes are not in `bytes`)."""
    t0, t1 = layout.hour_range(start, end) if start and end else (None, None)
    cache = Cache(root, pilot, message_type, storage_options)
    rows = []
    now = _utc_now()
    parts = cache.partitions(t0, t1)
    status = {p.hour: cache.status(p, ttl_days=ttl_days, now=now) for p in parts}
    in_copy = set()
    for day in cache.day_copies(t0, t1):  # a copy `load` would read: usable, every hour servable
        ps = [p for p in parts if p.hour.date() == day]
        if len(ps) < 24:  # the range cuts this date: its other hours decide too
            ps = cache.partitions(*day_bounds(day))
        if _day_usable(cache.day_manifest(day) or {}, ps) and all(
                (status.get(p.hour) or cache.status(p, ttl_days=ttl_days, now=now))[0] in (FRESH, INCOMPLETE)
                for p in ps):
            in_copy |= {p.hour for p in ps}
    for p in parts:
        m = p.manifest or {}
        st, why = status[p.hour]
        created = m.get("created")
        rows.append({
            "hour": p.label, "status": st, "reason": why, **p.counts(),
            "bytes": sum(f["size"] for f in m.get("files", {}).values()),
            "objects": len(m.get("source_objects", [])), "created": created,
            "age_h": round((now - dt.datetime.fromisoformat(created)).total_seconds() / 3600, 2) if created else None,
            "day_copy": p.hour in in_copy,
        })
    return rows


def verify(root: str, start=None, end=None, pilot: str = layout.DEFAULT_PILOT,
           message_type: str = layout.DEFAULT_TYPE, storage_options: dict | None = None, mark: bool = True) -> dict:
    """Full SHA-256 check of every partition and day copy; corrupt partitions are hidden for
    refetch, corrupt day copies dropped (their hours serve) (`mark`)."""
    t0, t1 = layout.hour_range(start, end) if start and end else (None, None)
    cache = Cache(root, pilot, message_type, storage_options)
    ok, bad = 0, {}
    for p in cache.partitions(t0, t1):
        if (p.manifest or {}).get("status") == MISSING:
            continue
        problem = _partition_problem(cache, p)
        if problem and (p.manifest or {}).get("status") != CORRUPT:
            p, problem = _recheck(cache, p)  # a clear or rewrite in flight is not damage
            if p is None:
                continue  # removed meanwhile
        if problem:
            bad[p.label] = problem
            if mark and p.manifest is not None and p.manifest.get("status") != CORRUPT:
                cache.mark_corrupt(p, problem)
        else:
            ok += 1
    days_bad = {}
    days = cache.day_copies(t0, t1)
    for day in days:
        problem = cache.verify_day(day, mark)
        if problem:
            days_bad[f"{day:%Y-%m-%d}"] = problem
    return {"checked": ok + len(bad), "ok": ok, "corrupt": bad,
            "day_copies": {"checked": len(days), "ok": len(days) - len(days_bad), "corrupt": days_bad}}


def _partition_problem(cache: Cache, p: Partition) -> str | None:
    """What is wrong with a partition (full SHA-256 check), None if sound or recorded as missing."""
    m = p.manifest
    if m is None:
        return "no manifest.json: a damaged partition (the next ingest refetches it)"
    if m.get("status") == CORRUPT:
        return m.get("problem", "corrupt")
    if m.get("status") == MISSING:
        return None
    return cache._check_files(p, deep=True)


def _recheck(cache: Cache, p: Partition, tries: int = 3) -> tuple[Partition | None, str | None]:
    """Look at a partition again under its lock (no clear or rewrite in flight): (it, its problem),
    or (None, None) if it is gone. Where the lock cannot be taken (a read-only root, a writer
    holding it for long) it is re-read until two reads agree."""
    try:
        with cache.lock(p.hour, timeout=120):
            if not cache.fs.exists(p.path):
                return None, None
            now = cache.partition(p.hour)
            return now, _partition_problem(cache, now)
    except (filelock.Timeout, OSError):
        pass
    for _ in range(tries):
        time.sleep(0.2)
        if not cache.fs.exists(p.path):
            return None, None
        now = cache.partition(p.hour)
        problem = _partition_problem(cache, now)
        if now.manifest == p.manifest:
            return now, problem
        p = now
    return p, problem


def clear(root: str, start=None, end=None, pilot: str = layout.DEFAULT_PILOT, message_type: str = layout.DEFAULT_TYPE,
          storage_options: dict | None = None) -> dict:
    """Remove partitions in range (all if no range), each under its lock, plus writer leftovers
    and the day copies of the dates they belong to."""
    t0, t1 = layout.hour_range(start, end) if start and end else (None, None)
    cache = Cache(root, pilot, message_type, storage_options)
    removed = 0
    for hour, path in cache.hour_folders(t0, t1, leftovers=True):
        with cache.lock(hour):
            if cache.fs.exists(path):
                cache.fs.rm(path, recursive=True)
                removed += path.rsplit("/", 1)[-1].startswith("hour=")
    copies = 0
    for day in cache.dates(t0, t1):  # every date the range touches, even one left with no hours
        with cache.lock(day):  # a day copy without all its hours is of no use
            cache._sweep_day(day)
            copies += cache._rm_day(day)
        if not cache.fs.ls(cache.date_path(day), detail=False):
            cache.fs.rm(cache.date_path(day), recursive=True)
    return {"removed": removed, "day_copies_removed": copies}


__all__ = ["Cache", "Compaction", "Partition", "CorruptPartition", "CacheWarning", "load", "load_table", "ls",
           "verify", "clear", "available", "code_version"]
