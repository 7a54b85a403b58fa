"""Day copies: a whole date's valid records in one file, `date=.../_day/`, built from its 24 hours.

The hours stay the truth; a copy serves a load only while every hour it was built from is
servable and unchanged (`day_usable`), and a copy failing its check is dropped, never
refetched: its hours serve. `DayCopies` is the part of `Cache` that writes, checks and drops
them; it relies on the hour-partition methods of `partitions.Cache`.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
import warnings
from typing import NamedTuple

import filelock
import pyarrow as pa

from wydot_lab import layout
from wydot_lab.cache.files import (
    CORRUPT,
    DAY_DIR,
    DAY_MANIFEST,
    FILES,
    FRESH,
    INCOMPLETE,
    Partition,
    parquet_bytes,
    parse,
    sha256,
    utc_now,
)
from wydot_lab.errors import CacheWarning, CorruptPartition
from wydot_lab.schema import BSM_SCHEMA, SCHEMA_VERSION

DAY_COPY_MAX_ROWS = 2_000_000  # bigger days keep their hours only (= load's default rows_per_partition)


class Compaction(NamedTuple):
    """What `Cache.compact_day` did: wrote the copy, or why not (`refetch`: the hour to refetch)."""

    written: bool
    problem: str | None = None
    refetch: str | None = None


class DayCopies:
    """The day-copy life cycle of a `Cache`: build (`compact_day`), check, read, drop, remove."""

    def day_path(self, day: dt.date) -> str:
        return f"{self.date_path(day)}/{DAY_DIR}"

    def day_copies(self, start: dt.datetime | None = None, end: dt.datetime | None = None) -> list[dt.date]:
        """Dates with a day copy folder among those [start, end) touches (all if no bounds)."""
        return [d for d in self.dates(start, end) if self.fs.exists(self.day_path(d))]

    def day_manifest(self, day: dt.date) -> dict | None:
        """The day copy's manifest; None if absent, unreadable or malformed (then the hours serve)."""
        try:
            with self.fs.open(f"{self.day_path(day)}/{DAY_MANIFEST}", "rb") as f:
                m = json.loads(f.read())
            meta = m["files"][FILES["valid"][0]]
            ok = isinstance(m["hours"], dict) and all(
                isinstance(meta[k], t) for k, t in (("sha256", str), ("size", int), ("rows", int))
            )
        except (FileNotFoundError, ValueError, OSError, KeyError, TypeError):
            return None
        return m if ok else None

    def compact_day(self, day: dt.date, ttl_days: float | None = None, now: dt.datetime | None = None) -> Compaction:
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
        return (
            current is not None
            and day_usable(current, [self.partition(h) for h in layout.hours_between(*day_bounds(day))])
            and self.check_day(day, current, deep=False, read=False)[1] is None
        )

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
                    return Compaction(False, f"hour {p.label} changed while being read (a concurrent clear or refetch)")
            self.fs.makedirs(tmp, exist_ok=True)
            data = parquet_bytes(pa.concat_tables(tables), BSM_SCHEMA)
            self.fs.pipe_file(f"{tmp}/{FILES['valid'][0]}", data)
            manifest = {
                "date": f"{day:%Y-%m-%d}",
                "hours": day_sources(parts),
                "files": {
                    FILES["valid"][0]: {
                        "sha256": sha256(data),
                        "size": len(data),
                        "rows": sum(t.num_rows for t in tables),
                    }
                },
                "created": utc_now().isoformat(),
                "code_version": self.code_version,
                "schema_version": SCHEMA_VERSION,
            }
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

    def check_day(
        self, day: dt.date, manifest: dict, deep: bool = True, read: bool = True
    ) -> tuple[bytes | None, str | None]:
        """`_check_file` of the day copy (`read=False`, not `deep`: size only, no download)."""
        name = FILES["valid"][0]
        return self._check_file(f"{self.day_path(day)}/{name}", f"day copy {name}", manifest["files"][name], deep, read)

    def read_day(self, day: dt.date, manifest: dict, parts: list[Partition], verify: bool = True) -> pa.Table:
        """A date's valid records from its day copy; a copy failing its check is dropped (with a
        `CacheWarning`) and the hours `parts` serve instead: never corrupt data, nothing refetched."""
        data, problem = self.check_day(day, manifest, deep=verify)
        if problem is None:
            try:
                return parse(data, BSM_SCHEMA, threads=True)
            except (pa.ArrowException, OSError) as err:
                problem = f"day copy unreadable ({err})"
        what = self.drop_day(day, manifest) + "; read the 24 hours instead (the next ingest rebuilds it)"
        warnings.warn(f"cache {self.root_url}: {day:%Y-%m-%d} {problem}: {what}", CacheWarning, stacklevel=2)
        return self.read_hours(parts, "valid", verify)

    def remove_day(self, day: dt.date) -> bool:
        """Remove a date's day copy and killed writers' leftovers under its lock (a copy without
        all its hours is of no use); True if there was a copy."""
        with self.lock(day):
            self._sweep_day(day)
            return self._rm_day(day)


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    t0 = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    return t0, t0 + dt.timedelta(days=1)


def day_sources(parts: list[Partition]) -> dict[str, str]:
    """{hour: SHA-256 of its valid file}: what a day copy was built from."""
    return {p.label: p.manifest["files"][FILES["valid"][0]]["sha256"] for p in parts}


def day_usable(manifest: dict, parts: list[Partition]) -> bool:
    """A day copy serves only the exact hour files it was built from (all 24 of them)."""
    try:
        return (
            manifest.get("schema_version") == SCHEMA_VERSION
            and len(parts) == 24
            and manifest["hours"] == day_sources(parts)
        )
    except (KeyError, TypeError, AttributeError):
        return False
