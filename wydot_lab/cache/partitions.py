"""Hour partitions: `source=<pilot>/type=<T>/date=YYYY-MM-DD/hour=HH/`, their manifests, locks,
status, atomic writes and verified reads (`Cache`), and which source a partition came from."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import filelock
import fsspec
import pyarrow as pa

from wydot_lab import layout
from wydot_lab.cache.days import DayCopies
from wydot_lab.cache.files import (
    ABSENT,
    CORRUPT,
    CORRUPT_MARK,
    EXPIRED,
    FILES,
    FRESH,
    INCOMPLETE,
    MANIFEST,
    MISSING,
    STALE,
    Partition,
    code_version,
    iso_date,
    object_set,
    parquet_bytes,
    parse,
    protocols,
    sha256,
    utc_now,
)
from wydot_lab.errors import CorruptPartition, SourceConflict, UsageError
from wydot_lab.schema import SCHEMA_VERSION


class Cache(DayCopies):
    """A cache root (local path or fsspec URL) for one pilot and message type."""

    def __init__(
        self,
        root: str,
        pilot: str = layout.DEFAULT_PILOT,
        message_type: str = layout.DEFAULT_TYPE,
        storage_options: dict | None = None,
        lock_timeout_s: float = 3600.0,
    ):
        self.root_url = root
        self.fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
        self.root = path.rstrip("/")
        self.pilot = pilot
        self.message_type = message_type
        self.storage_options = storage_options or {}
        self.lock_timeout_s = lock_timeout_s
        self.local = "file" in protocols(self.fs)
        self.code_version = code_version()

    def require_root(self) -> None:
        """A local root must exist before it is listed, verified or cleared: a typo would read as
        an empty cache (a remote root may legitimately be empty: not checked)."""
        if self.local and not self.fs.isdir(self.root):
            raise UsageError(
                f"--cache {self.root_url} is a file, not a cache folder"
                if self.fs.exists(self.root)
                else f"no cache at {self.root_url} (nothing was ever ingested there; check --cache)"
            )

    # ------------------------------------------------------------ paths

    def date_path(self, day: dt.date) -> str:
        return f"{self.root}/source={self.pilot}/type={self.message_type}/date={day:%Y-%m-%d}"

    def partition_path(self, hour: dt.datetime) -> str:
        return f"{self.date_path(hour.date())}/hour={hour:%H}"

    def _lock_path(self, hour: dt.datetime | dt.date) -> str:
        label = layout.hour_label(hour) if isinstance(hour, dt.datetime) else f"{hour:%Y-%m-%d}-day"
        name = f"{self.pilot}-{self.message_type}-{label}.lock"
        if self.local:
            d = f"{self.root}/.locks"
        else:
            d = os.path.join(
                tempfile.gettempdir(), "wydot-lab-locks", hashlib.sha256(self.root_url.encode()).hexdigest()[:16]
            )
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

    def hour_folders(
        self, start: dt.datetime | None = None, end: dt.datetime | None = None, leftovers: bool = False
    ) -> list[tuple[dt.datetime, str]]:
        """(hour, path) of the `hour=` folders in [start, end) (all if no bounds), listing only date folders
        in range; `leftovers`: also the `.tmp-`/`.old-` folders of killed writers."""
        out = []
        for day in self.dates(start, end):
            for p in sorted(self.fs.ls(self.date_path(day), detail=False)):
                leaf = p.rstrip("/").rsplit("/", 1)[-1]
                if not (leaf.startswith("hour=") or leftovers and leaf.startswith((".tmp-hour=", ".old-hour="))):
                    continue
                hour = dt.datetime(
                    day.year, day.month, day.day, int(leaf.split("hour=", 1)[1][:2]), tzinfo=dt.timezone.utc
                )
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
        days = sorted(d for n in names if n.startswith("date=") and (d := iso_date(n[5:])) is not None)
        return [
            d
            for d in days
            if (start is None or d >= start.date())
            and (end is None or dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc) < end)
        ]

    def partitions(self, start: dt.datetime | None = None, end: dt.datetime | None = None) -> list[Partition]:
        """Partitions of the hour folders in [start, end) (all if no bounds)."""
        return [self.partition(hour) for hour, _ in self.hour_folders(start, end)]

    def status(
        self,
        part: Partition,
        ttl_days: float | None = None,
        source_objects: list[dict] | None = None,
        now: dt.datetime | None = None,
        deep: bool = False,
    ) -> tuple[str, str]:
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
            age = ((now or utc_now()) - dt.datetime.fromisoformat(m["created"])).total_seconds()
            if age > ttl_days * 86400:
                return EXPIRED, f"older than {ttl_days} days"
        if m.get("status") == MISSING:
            return MISSING, m.get("error", "source hour failed")
        if source_objects is not None and object_set(source_objects) != object_set(m.get("source_objects", [])):
            return STALE, "source objects changed (ETag/size/added/removed)"
        problem = self.check_files(part, deep)
        if problem:
            return CORRUPT, problem
        if m.get("status") == INCOMPLETE:
            return INCOMPLETE, "built while source folders were missing: " + ", ".join(m.get("missing_sources", []))
        return FRESH, "cached"

    def check_files(self, part: Partition, deep: bool) -> str | None:
        for name, meta in part.manifest.get("files", {}).items():
            problem = self._check_file(f"{part.path}/{name}", name, meta, deep, read=False)[1]
            if problem:
                return problem
        return None

    def _check_file(
        self, path: str, name: str, meta: dict, deep: bool, read: bool = True
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
        if deep and sha256(data) != meta["sha256"]:
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

    def write(
        self,
        hour: dt.datetime,
        valid: pa.Table,
        quarantine: pa.Table,
        non_bsm: pa.Table,
        blank: int,
        source_objects: Iterable[dict],
        extra: dict | None = None,
        status: str = "complete",
        locked: bool = False,
    ) -> dict:
        """Write one partition atomically (caller may already hold its lock: `locked=True`)."""
        if not locked:
            with self.lock(hour):
                return self.write(hour, valid, quarantine, non_bsm, blank, source_objects, extra, status, True)
        final = self.partition_path(hour)
        parent = final.rsplit("/", 1)[0]
        self._sweep(hour)
        tmp = f"{parent}/.tmp-hour={hour:%H}-{uuid.uuid4().hex[:12]}"
        try:
            return self._write_tmp(tmp, final, hour, valid, quarantine, non_bsm, blank, source_objects, extra, status)
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

    def _write_tmp(
        self,
        tmp: str,
        final: str,
        hour: dt.datetime,
        valid,
        quarantine,
        non_bsm,
        blank: int,
        source_objects: Iterable[dict],
        extra: dict | None,
        status: str,
    ) -> dict:
        self.fs.makedirs(tmp, exist_ok=True)
        tables = {"valid": valid, "quarantine": quarantine, "non_bsm": non_bsm}
        tables = {k: FILES[k][1].empty_table() if t is None else t for k, t in tables.items()}  # None: empty
        files = {}
        if status != MISSING:
            for key, (name, schema) in FILES.items():
                data = parquet_bytes(tables[key], schema)
                self.fs.pipe_file(f"{tmp}/{name}", data)
                files[name] = {"sha256": sha256(data), "size": len(data), "rows": tables[key].num_rows}
        counts = {
            "valid": tables["valid"].num_rows,
            "quarantined": tables["quarantine"].num_rows,
            "non_bsm": tables["non_bsm"].num_rows,
            "blank": int(blank),
        }
        counts["records"] = counts["valid"] + counts["quarantined"] + counts["non_bsm"] + counts["blank"]
        manifest = {
            "partition": final[len(self.root) + 1 :],
            "source": self.pilot,
            "type": self.message_type,
            "hour": f"{hour:%Y-%m-%dT%H:00:00Z}",
            "status": status,
            "counts": counts,
            "files": files,
            "source_objects": sorted((dict(o) for o in source_objects), key=lambda o: o["key"]),
            "created": utc_now().isoformat(),
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
                return parse(data, schema, threads=False)  # threads: across files
            except (pa.ArrowException, OSError) as err:
                problem = f"{name} unreadable ({err})"
        self.mark_corrupt(part, problem)
        raise CorruptPartition(
            f"cache partition {part.path} is corrupt ({problem}); it was hidden: run `wydot-lab ingest` "
            "for this range to refetch it"
        )

    def read_hours(self, parts: list[Partition], kind: str = "valid", verify: bool = True) -> pa.Table:
        """`read_files` of several hours, concatenated in order, on a few threads (Parquet decoding
        and hashing release the GIL)."""
        if not parts:
            return FILES[kind][1].empty_table()
        with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 2, len(parts))) as ex:
            return pa.concat_tables(list(ex.map(lambda p: self.read_files(p, kind, verify), parts)))


def manifest_source(manifest: dict | None) -> str | None:
    """The source identity a partition was built from (`source_url` for manifests that predate
    `source_id`)."""
    if not manifest:
        return None
    if manifest.get("source_id"):
        return manifest["source_id"]
    return layout.source_identity(manifest["source_url"]) if manifest.get("source_url") else None


def check_source(
    cache: Cache, source_id: str, manifests: dict[dt.datetime, dict | None], t0: dt.datetime, t1: dt.datetime
) -> None:
    """Raise `SourceConflict` if any of these partitions came from another source."""
    foreign = {h: s for h, m in manifests.items() if (s := manifest_source(m)) not in (None, source_id)}
    if foreign:
        first = min(foreign)
        raise SourceConflict(
            f"cache {cache.root_url} holds {len(foreign)} hours of this range from {foreign[first]} (first "
            f"{layout.hour_label(first)}); this run reads {source_id}. Use one cache root per source "
            f"(--cache / params cache.root), or remove those hours: wydot-lab cache clear --cache {cache.root_url} "
            f"--pilot {cache.pilot} --type {cache.message_type} --start {layout.hour_label(t0)}:00 "
            f"--end {layout.hour_label(t1)}:00"
        )
