"""`wydot-lab cache ls | verify | clear`: look at, check and remove what a cache root holds."""

from __future__ import annotations

import datetime as dt
import time

import filelock

from wydot_lab import layout
from wydot_lab.cache.days import day_bounds, day_usable
from wydot_lab.cache.files import CORRUPT, FRESH, INCOMPLETE, MISSING, Partition, utc_now
from wydot_lab.cache.partitions import Cache


def ls(
    root: str,
    start=None,
    end=None,
    pilot: str = layout.DEFAULT_PILOT,
    message_type: str = layout.DEFAULT_TYPE,
    storage_options: dict | None = None,
    ttl_days: float | None = None,
) -> list[dict]:
    """One row per partition: hour, status, counts, bytes, created, age, and whether a usable
    day copy holds it (`day_copy`; its bytes are not in `bytes`)."""
    t0, t1 = layout.hour_range(start, end) if start and end else (None, None)
    cache = Cache(root, pilot, message_type, storage_options)
    rows = []
    now = utc_now()
    parts = cache.partitions(t0, t1)
    status = {p.hour: cache.status(p, ttl_days=ttl_days, now=now) for p in parts}
    in_copy = set()
    for day in cache.day_copies(t0, t1):  # a copy `load` would read: usable, every hour servable
        ps = [p for p in parts if p.hour.date() == day]
        if len(ps) < 24:  # the range cuts this date: its other hours decide too
            ps = cache.partitions(*day_bounds(day))
        if day_usable(cache.day_manifest(day) or {}, ps) and all(
            (status.get(p.hour) or cache.status(p, ttl_days=ttl_days, now=now))[0] in (FRESH, INCOMPLETE) for p in ps
        ):
            in_copy |= {p.hour for p in ps}
    for p in parts:
        m = p.manifest or {}
        st, why = status[p.hour]
        created = m.get("created")
        rows.append(
            {
                "hour": p.label,
                "status": st,
                "reason": why,
                **p.counts(),
                "bytes": sum(f["size"] for f in m.get("files", {}).values()),
                "objects": len(m.get("source_objects", [])),
                "created": created,
                "age_h": round((now - dt.datetime.fromisoformat(created)).total_seconds() / 3600, 2)
                if created
                else None,
                "day_copy": p.hour in in_copy,
            }
        )
    return rows


def verify(
    root: str,
    start=None,
    end=None,
    pilot: str = layout.DEFAULT_PILOT,
    message_type: str = layout.DEFAULT_TYPE,
    storage_options: dict | None = None,
    mark: bool = True,
) -> dict:
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
    return {
        "checked": ok + len(bad),
        "ok": ok,
        "corrupt": bad,
        "day_copies": {"checked": len(days), "ok": len(days) - len(days_bad), "corrupt": days_bad},
    }


def _partition_problem(cache: Cache, p: Partition) -> str | None:
    """What is wrong with a partition (full SHA-256 check), None if sound or recorded as missing."""
    m = p.manifest
    if m is None:
        return "no manifest.json: a damaged partition (the next ingest refetches it)"
    if m.get("status") == CORRUPT:
        return m.get("problem", "corrupt")
    if m.get("status") == MISSING:
        return None
    return cache.check_files(p, deep=True)


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


def clear(
    root: str,
    start=None,
    end=None,
    pilot: str = layout.DEFAULT_PILOT,
    message_type: str = layout.DEFAULT_TYPE,
    storage_options: dict | None = None,
) -> dict:
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
        copies += cache.remove_day(day)
        if not cache.fs.ls(cache.date_path(day), detail=False):
            cache.fs.rm(cache.date_path(day), recursive=True)
    return {"removed": removed, "day_copies_removed": copies}
