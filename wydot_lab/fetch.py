"""Fill the cache for a UTC range: plan, (dry-run), download, ingest, split by hour, write.

A partition of hour H holds the records whose `metadata_generatedAt` falls in H,
read from the hour folders H-1, H and H+1 (records can sit one folder away), so
its manifest lists the objects of those three folders: any change there (ETag,
size, added, removed) makes it stale. Lines without a usable time (quarantined,
non-BSM, blank) belong to the hour of their folder. Every line read is counted
exactly once: written into a partition of this run, `skipped_cached` (its hour
is in range but served from cache), `out_of_range`, `far_from_folder` (a
timestamp more than one hour from its folder: no partition reads it there) or
`dropped_missing` (its hour's own folder failed in an `--allow-partial` run). So
`lines_read == written records + skipped_cached + out_of_range + far_from_folder + dropped_missing`.

Summary counts (records/valid/quarantined/non_bsm/blank) are those of the
requested partitions, from the manifests for partitions served from cache, so
a re-run reports the same numbers whether it downloads or not.

Nothing cached is replaced by fewer records unasked: a cached hour whose source objects are
gone from the listing stops the run (`VanishedObjects`, nothing written) unless
`mirror_deletions`; a range without a single object stops it too (`EmptyRange`, nothing
cached) unless `allow_empty`. docs/CACHE.md lists every guarantee and exit code.

Last, every date the range touches whose 24 hours are all cached gets its day copy
(`cache` module doc) written or refreshed; `days_compacted` counts those written.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wydot_lab import cache as cache_mod
from wydot_lab import ingest, layout
from wydot_lab.errors import EmptyRange, NoRecords, SourceError, UsageError, VanishedObjects  # some re-exported here
from wydot_lab.source import ObjectInfo, Source, SourceSpec

HOUR = dt.timedelta(hours=1)
GIB = 1024 ** 3  # AWS bills egress per GB = 2**30 bytes
FATAL_KINDS = frozenset({"missing_credentials", "profile_not_found", "bad_credentials", "access_denied",
                         "no_such_bucket", "unreachable", "no_such_folder"})

Progress = bool | Callable[[str], None]
# exit codes the CLI maps a fetch to (docs/CACHE.md)
EXIT_PARTIAL = 3  # `ingest --allow-partial` left hours missing or incomplete (result status: partial)
EXIT_VANISHED = 4  # cached hours' source objects are gone: nothing rewritten (see --mirror-deletions)


def _say(progress: Progress, msg: str) -> None:
    if callable(progress):
        progress(msg)
    elif progress:
        print(msg, file=sys.stderr, flush=True)


def _bar(progress: Progress, **kw):
    """A live bar in a terminal or a notebook; none when stderr goes to a file or pipe (logs
    would fill with carriage-return redraws: the progress lines say it all there)."""
    from tqdm.auto import tqdm

    live = "notebook" in tqdm.__module__ or sys.stderr.isatty()
    return tqdm(disable=not (progress and live), file=sys.stderr, leave=False, **kw)


def _ranges(hours: list[dt.datetime]) -> list[str]:
    """Compact hour runs: ['2021-04-01T00..2021-04-01T23', ...]."""
    out, run = [], []
    for h in sorted(hours):
        if run and h - run[-1] != HOUR:
            out.append(run)
            run = []
        run.append(h)
    if run:
        out.append(run)
    return [layout.hour_label(r[0]) if len(r) == 1 else f"{layout.hour_label(r[0])}..{layout.hour_label(r[-1])}"
            for r in out]


# ---------------------------------------------------------------- plan


@dataclasses.dataclass(repr=False)
class Plan:
    """What a fetch would do; `summary()` is the dry-run report."""

    source: str
    mode: str
    cache_root: str
    t0: dt.datetime
    t1: dt.datetime
    hours: list[dt.datetime]
    status: dict[dt.datetime, tuple[str, str]]
    listings: dict[dt.datetime, list[ObjectInfo]]
    failed_folders: dict[dt.datetime, SourceError]
    manifests: dict[dt.datetime, dict | None]  # as read while planning: a fetch does not read them again
    price_per_gb: float
    offline: bool = False
    source_id: str = ""  # SourceSpec.identity(), kept in every manifest

    @property
    def to_fetch(self) -> list[dt.datetime]:
        return [h for h in self.hours if self.status[h][0] != cache_mod.FRESH]

    @property
    def cached(self) -> list[dt.datetime]:
        return [h for h in self.hours if self.status[h][0] == cache_mod.FRESH]

    @property
    def folders(self) -> list[dt.datetime]:
        """Hour folders to download for the hours to fetch (each hour +-1)."""
        need = {h + d * HOUR for h in self.to_fetch for d in (-1, 0, 1)}
        return sorted(need)

    def objects(self) -> list[ObjectInfo]:
        return [o for f in self.folders for o in self.listings.get(f, [])]

    def summary(self) -> dict:
        objs = self.objects()
        nbytes = sum(o.size for o in objs)
        reasons = dict(Counter(self.status[h][0] for h in self.hours))
        return {
            "source": self.source, "mode": self.mode, "cache": self.cache_root,
            "start": self.t0.isoformat(), "end": self.t1.isoformat(),
            "hours": len(self.hours), "already_cached": len(self.cached), "to_fetch": len(self.to_fetch),
            "to_fetch_hours": _ranges(self.to_fetch), "status_counts": reasons,
            "folders": len(self.folders), "objects": len(objs), "bytes": nbytes,
            "gb": round(nbytes / GIB, 6), "price_per_gb_usd": self.price_per_gb,
            "estimated_cost_usd": round(nbytes / GIB * self.price_per_gb, 6),
            "unlisted_folders": _ranges(list(self.failed_folders)),
        }

    def __repr__(self) -> str:  # what a notebook cell shows
        return str(self)

    def __str__(self) -> str:
        s = self.summary()
        return (f"plan {s['source']} [{s['start']} .. {s['end']}) -> {s['cache']}: {s['hours']} hours, "
                f"{s['already_cached']} cached, {s['to_fetch']} to fetch from {s['folders']} folders: "
                f"{s['objects']} objects, {s['bytes']:,} bytes ({s['gb']:.4f} GB), estimated egress "
                f"${s['estimated_cost_usd']:.4f} at ${s['price_per_gb_usd']}/GB")


def _neighbour_objects(listings: dict, h: dt.datetime) -> list[dict] | None:
    if any(h + d * HOUR not in listings for d in (-1, 0, 1)):
        return None
    return [o.as_dict() for d in (-1, 0, 1) for o in listings[h + d * HOUR]]


def _list_folders(source: Source, folders: list[dt.datetime], workers: int, progress: Progress,
                  allow_partial: bool) -> tuple[dict, dict]:
    listings: dict[dt.datetime, list[ObjectInfo]] = {}
    failed: dict[dt.datetime, SourceError] = {}
    source.check()
    with ThreadPoolExecutor(max_workers=workers) as ex, _bar(progress, total=len(folders), desc="listing",
                                                             unit="hour") as bar:
        futs = {f: ex.submit(source.list_hour, f) for f in folders}
        for f in folders:
            try:
                listings[f] = futs[f].result()
            except SourceError as err:
                if err.kind in FATAL_KINDS or not allow_partial:
                    for other in futs.values():
                        other.cancel()
                    raise
                failed[f] = err
            bar.update(1)
    return listings, failed


def plan(source: Source, cache: cache_mod.Cache, start, end, ttl_days: float | None = None,
         price_per_gb: float = 0.09, allow_partial: bool = False, offline: bool = False, deep: bool = True,
         now: dt.datetime | None = None, workers: int = 8, progress: Progress = False) -> Plan:
    """List the hour folders of the range +-1 hour and decide, per hour, cache or fetch.

    deep: verify SHA-256 of cached files (cheap next to any download), else sizes only.
    offline: no listing; cached hours are trusted without an ETag check.
    """
    t0, t1 = layout.hour_range(start, end)
    hours = layout.hours_between(t0, t1)
    listings, failed = ({}, {}) if offline else _list_folders(
        source, layout.hours_between(t0, t1, pad=1), workers, progress, allow_partial)
    status, manifests = {}, {}
    for h in hours:
        part = cache.partition(h)
        manifests[h] = part.manifest
        objs = None if offline else _neighbour_objects(listings, h)
        st = cache.status(part, ttl_days=ttl_days, source_objects=objs, now=now, deep=deep)
        if st[0] == cache_mod.FRESH and not offline and objs is None:
            st = (cache_mod.STALE, "a neighbouring folder could not be listed")
        if st[0] == cache_mod.CORRUPT and part.manifest and part.manifest.get("status") != cache_mod.CORRUPT:
            cache.mark_corrupt(part, st[1])
        status[h] = st
    source_id = source.spec.identity()
    cache_mod.check_source(cache, source_id, manifests, t0, t1)
    return Plan(source.spec.display(), source.spec.mode(), cache.root_url, t0, t1, hours, status, listings, failed,
                manifests, price_per_gb, offline, source_id)


# ---------------------------------------------------------------- download + ingest


@dataclasses.dataclass
class Folder:
    """One ingested hour folder, valid records already split by their own hour."""

    hour: dt.datetime
    valid_by_hour: dict[dt.datetime, pa.Table]
    quarantine: pa.Table
    non_bsm: pa.Table
    blank: int
    lines: int
    objects: int
    error: SourceError | None = None

    def other_lines(self) -> int:
        return self.quarantine.num_rows + self.non_bsm.num_rows + self.blank


def _split_by_hour(valid: pa.Table, folder_hour: dt.datetime) -> dict[dt.datetime, pa.Table]:
    """Vectorized: rows grouped by the UTC hour of `metadata_generatedAt` (nulls: the folder's hour)."""
    if valid.num_rows == 0:
        return {}
    ms = valid.column("metadata_generatedAt").cast(pa.int64())
    fallback = int(folder_hour.timestamp() * 1000)
    hour_idx = np.floor_divide(pc.fill_null(ms, fallback).to_numpy(), 3_600_000)
    out = {}
    for hi in np.unique(hour_idx):
        h = dt.datetime.fromtimestamp(int(hi) * 3600, tz=dt.timezone.utc)
        out[h] = valid.filter(pa.array(hour_idx == hi))
    return out


class _Downloader:
    """Downloads folders ahead of use on a thread pool; ingests them in order in the caller."""

    def __init__(self, source: Source, plan_: Plan, workers: int, progress: Progress, allow_partial: bool,
                 max_bytes: int | None = None):
        self.source, self.plan = source, plan_
        self.allow_partial = allow_partial
        self.max_bytes = max_bytes
        self.order = plan_.folders
        self.pos = 0
        self.futures: dict[dt.datetime, list[tuple[ObjectInfo, Future]]] = {}
        self.done: dict[dt.datetime, Folder] = {}
        self.ex = ThreadPoolExecutor(max_workers=workers)
        total = sum(o.size for o in plan_.objects())
        self.bar = _bar(progress, total=total, desc="downloading", unit="B", unit_scale=True)
        self.bytes = 0
        self.objects = 0

    def close(self) -> None:
        for futs in self.futures.values():
            for _, f in futs:
                f.cancel()
        self.ex.shutdown(wait=True, cancel_futures=True)
        for futs in self.futures.values():  # downloaded, never ingested: free memory / temp files
            for _, f in futs:
                if f.done() and not f.cancelled() and f.exception() is None:
                    f.result().close()
        self.bar.close()

    def _read(self, obj: ObjectInfo):
        f = self.source.download(obj)
        self.bar.update(obj.size)
        return f

    def _submit_until(self, folder: dt.datetime, ahead: int = 3) -> None:
        while self.pos < len(self.order) and self.order[self.pos] <= folder + ahead * HOUR:
            f = self.order[self.pos]
            self.futures[f] = [(o, self.ex.submit(self._read, o)) for o in self.plan.listings.get(f, [])]
            self.pos += 1

    def folder(self, f: dt.datetime) -> Folder:
        if f in self.done:
            return self.done[f]
        self._submit_until(f)
        err = self.plan.failed_folders.get(f)
        results = []
        for obj, fut in self.futures.pop(f, []):
            if err is not None:
                fut.cancel()
                continue
            try:
                data = fut.result()
            except SourceError as e:
                if e.kind in FATAL_KINDS or not self.allow_partial:
                    raise
                err = e
                continue
            with data:
                self.bytes += obj.size
                self.objects += 1
                results.append(ingest.ingest_stream(data, obj.key, "quarantine", self.max_bytes))
        if err is not None:
            results = []
        r = ingest.IngestResult.concat(results)
        self.done[f] = Folder(f, _split_by_hour(r.valid, f), r.quarantine, r.non_bsm, r.blank, r.records,
                              len(results), err)
        return self.done[f]

    def forget_before(self, f: dt.datetime) -> list[Folder]:
        gone = [self.done.pop(k) for k in sorted(self.done) if k < f]
        return gone


# ---------------------------------------------------------------- fetch


@dataclasses.dataclass(frozen=True, kw_only=True)
class FetchResult:
    """What `fetch` made of a range: its counts (from the manifests, so a re-run reports the same
    numbers whether it downloads or not) and what this run did. `as_dict()` is the CLI's JSON line;
    fields that are None (a dry run or offline serve has no download counts; no warning) are left out
    of it. Failure is an exception, never a field: `status` is `complete` or `partial` (hours missing
    or incomplete). `result["valid"]` and `"warning" in result` read like the dict it used to be."""

    records: int
    valid: int
    quarantined: int
    non_bsm: int
    blank: int
    files: int
    status: str
    cached: int
    fetched: int
    missing: list[str]
    incomplete: list[str]
    # what a run that downloaded read: every line is counted once (module doc)
    lines_read: int | None = None
    out_of_range: int | None = None
    skipped_cached: int | None = None
    far_from_folder: int | None = None
    dropped_missing: int | None = None
    objects_downloaded: int | None = None
    bytes_downloaded: int | None = None
    vanished_objects: list[str] | None = None
    refused_objects: dict[str, str] | None = None
    refetched: dict[str, int] | None = None
    cached_by_concurrent_run: int | None = None
    days_compacted: int = 0
    source: str | None = None
    mode: str | None = None
    cache_root: str | None = None
    start: str | None = None
    end: str | None = None
    dry_run: bool | None = None
    plan: dict | None = None
    warning: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def __getitem__(self, key: str):
        value = getattr(self, key, None) if key in _RESULT_FIELDS else None
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return key in _RESULT_FIELDS and getattr(self, key) is not None

    def get(self, key: str, default=None):
        return self[key] if key in self else default


_RESULT_FIELDS = frozenset(f.name for f in dataclasses.fields(FetchResult))


def _sum_counts(manifests: list[dict]) -> dict:
    return {k: sum(int(m.get("counts", {}).get(k, 0)) for m in manifests) for k in cache_mod.COUNT_KEYS}


def _vanished(p: Plan) -> dict[str, str]:
    """{key: hour it is cached in} of objects in the manifests of hours to refetch that the
    current listing of their (listed) folders no longer holds."""
    out: dict[str, str] = {}
    for h in p.to_fetch:
        m = p.manifests.get(h) or {}
        if m.get("status") not in ("complete", cache_mod.INCOMPLETE) or not m.get("counts", {}).get("records"):
            continue
        listed = {o.key for d in (-1, 0, 1) for o in p.listings.get(h + d * HOUR, [])}
        folders = {h + d * HOUR for d in (-1, 0, 1) if h + d * HOUR in p.listings}
        for o in m.get("source_objects", []):
            if o["key"] not in listed and layout.hour_of_key(o["key"]) in folders:
                out.setdefault(o["key"], layout.hour_label(h))
    return out


def _offline_advice(err: SourceError, source: Source, cache: cache_mod.Cache, start, end,
                    ttl_days: float | None, now: dt.datetime | None) -> SourceError:
    """`err`, plus "add --offline" when every hour of the range is servable from the cache."""
    if err.kind not in ("unreachable", "transient", "no_such_folder", "no_such_bucket"):
        return err
    try:
        if plan(source, cache, start, end, ttl_days=ttl_days, offline=True, deep=False, now=now).to_fetch:
            return err
    except (SourceError, ValueError, OSError):
        return err
    return SourceError(f"{err}; every hour of this range is cached: add --offline to serve it without the source",
                       err.kind, err.hour)


def _empty_range(source: Source, p: Plan) -> str:
    msg = (f"{p.source} has no objects in [{p.t0.isoformat()} .. {p.t1.isoformat()}) nor an hour either side: "
           "check the dates")
    pilots = source.pilots()
    if pilots and source.spec.pilot not in pilots:
        msg += (f", and the pilot: the source root holds {', '.join(pilots[:8])}, no '{source.spec.pilot}' "
                "(--pilot NAME)")
    return msg


def fetch(source: Source, cache: cache_mod.Cache, start, end, *, ttl_days: float | None = None,
          allow_partial: bool = False, dry_run: bool = False, price_per_gb: float = 0.09, offline: bool = False,
          deep: bool = True, now: dt.datetime | None = None, workers: int = 8, progress: Progress = False,
          mirror_deletions: bool = False, allow_empty: bool = False,
          max_object_mb: float | None = layout.MAX_OBJECT_MB) -> FetchResult:
    """Make every hour of the range servable from `cache`; returns what it did (see module doc).

    Refuses (`VanishedObjects`, nothing written) to rewrite a cached hour whose source objects are
    gone unless `mirror_deletions`; a range without a single object raises `EmptyRange` (nothing
    written) unless `allow_empty`. `max_object_mb`: inflated size past which an object is
    quarantined whole. The result's `status` is `partial` when hours are missing or incomplete.
    """
    t_start = time.perf_counter()
    try:
        p = plan(source, cache, start, end, ttl_days=ttl_days, price_per_gb=price_per_gb,
                 allow_partial=allow_partial, offline=offline, deep=deep, now=now, workers=workers,
                 progress=progress)
    except SourceError as err:
        raise _offline_advice(err, source, cache, start, end, ttl_days, now) from None
    _say(progress, str(p))
    vanished = {} if offline else _vanished(p)
    if vanished and not mirror_deletions and not dry_run:
        first = sorted(vanished)[0]
        raise VanishedObjects(
            f"{len(vanished)} objects cached in {len(set(vanished.values()))} hours are gone from {p.source} "
            f"(first {first}, cached in {vanished[first]}); the cached hours are kept: check the source URL/"
            "endpoint, or pass --mirror-deletions to drop their records", vanished)
    empty = None if offline or p.failed_folders or any(p.listings.values()) else _empty_range(source, p)
    if empty and not allow_empty and not dry_run:
        raise EmptyRange(f"{empty}; nothing was cached (--allow-empty caches the empty hours)")
    if empty:
        _say(progress, f"warning: {empty}")
    if dry_run or offline:
        if offline and p.to_fetch:
            raise SourceError(f"offline: {len(p.to_fetch)} hours not servable from cache {cache.root_url}: "
                              + ", ".join(f"{layout.hour_label(h)} ({p.status[h][0]})" for h in p.to_fetch[:5]),
                              "offline")
        manifests = [p.manifests[h] for h in p.cached]
        return FetchResult(**_sum_counts(manifests), files=_files_in_range(manifests, p), cached=len(p.cached),
                           fetched=0, missing=[], incomplete=[], days_compacted=0, status="complete",
                           dry_run=True if dry_run else None, plan=p.summary() if dry_run else None,
                           vanished_objects=sorted(vanished) if dry_run and vanished else None,
                           warning=empty or None, seconds=round(time.perf_counter() - t_start, 3))

    acc = {"lines_read": 0, "out_of_range": 0, "skipped_cached": 0, "far_from_folder": 0, "dropped_missing": 0}
    missing_hours: set = set()
    written: dict[dt.datetime, dict] = {}
    cached_by_other: list[dt.datetime] = []
    with ExitStack() as stack:
        wanted = p.to_fetch
        for h in wanted:  # sorted order: no deadlock between concurrent runs
            stack.enter_context(cache.lock(h))
        for h in wanted:  # another process may have written it while we waited
            objs = _neighbour_objects(p.listings, h)
            part = cache.partition(h)
            cache_mod.check_source(cache, p.source_id, {h: part.manifest}, p.t0, p.t1)
            if objs is not None and cache.status(part, ttl_days, objs, now=now, deep=deep)[0] == cache_mod.FRESH:
                p.status[h] = (cache_mod.FRESH, "written by a concurrent run")
                p.manifests[h] = part.manifest
                cached_by_other.append(h)
        todo = set(p.to_fetch)
        dl = _Downloader(source, p, workers, progress, allow_partial,
                         None if max_object_mb is None else int(max_object_mb * (1 << 20)))
        stack.callback(dl.close)
        in_range = set(p.hours)
        for h in sorted(todo):
            folders = [dl.folder(h + d * HOUR) for d in (-1, 0, 1)]
            written[h] = _write_hour(cache, h, folders, p)
            if written[h]["status"] == cache_mod.MISSING:
                missing_hours.add(h)
            for f in dl.forget_before(h - HOUR):
                _account(f, todo, in_range, acc, missing_hours)
        for f in dl.forget_before(p.t1 + 2 * HOUR):
            _account(f, todo, in_range, acc, missing_hours)
        acc["objects_downloaded"], acc["bytes_downloaded"] = dl.objects, dl.bytes
    compacted, copy_problems = _compact(cache, p, written, ttl_days, now, deep, progress)
    manifests = [written.get(h) or p.manifests[h] for h in p.hours]
    manifests = [m for m in manifests if m]
    missing = [layout.hour_label(h) for h, m in written.items() if m["status"] == cache_mod.MISSING]
    incomplete = [layout.hour_label(h) for h, m in written.items() if m["status"] == cache_mod.INCOMPLETE]
    if missing or incomplete:
        _say(progress, f"partial run: missing hours {missing or '-'}; incomplete hours {incomplete or '-'}")
    refused = dict(sorted(source.refused.items()))
    if refused:
        _say(progress, f"warning: {len(refused)} objects refused, not read: "
                       + "; ".join(f"{k}: {why}" for k, why in list(refused.items())[:5]))
    warning = "; ".join(w for w in (empty, copy_problems, refused and f"{len(refused)} objects refused "
                                    "(see refused_objects)") if w)
    return FetchResult(**_sum_counts(manifests), files=_files_in_range(manifests, p),
                       status="partial" if missing or incomplete else "complete",
                       cached=len(p.hours) - len(written), fetched=len(written) - len(missing),
                       missing=missing, incomplete=incomplete, **acc,
                       vanished_objects=sorted(vanished) if vanished else None, refused_objects=refused or None,
                       refetched=dict(Counter(p.status[h][0] for h in written)),
                       cached_by_concurrent_run=len(cached_by_other), days_compacted=compacted,
                       source=p.source, mode=p.mode, cache_root=p.cache_root,
                       start=p.t0.isoformat(), end=p.t1.isoformat(), warning=warning or None,
                       seconds=round(time.perf_counter() - t_start, 3))


def _compact(cache: cache_mod.Cache, p: Plan, written: dict, ttl_days: float | None, now: dt.datetime | None,
             deep: bool, progress: Progress) -> tuple[int, str | None]:
    """Day copies for the dates the range touches (after every hour lock is released): (written,
    warning). Without `deep` only dates whose hours this run wrote, or `compact_day` would be the
    first to hash cached hours and could hide one just reported as cached. Every date left
    without a copy for a reason other than absent/expired hours is named in the warning with
    what to do, on every run until mended: never skipped silently."""
    days = sorted({h.date() for h in p.hours})
    if not deep:
        days = [d for d in days if all(h in written for h in layout.hours_between(*cache_mod.day_bounds(d)))]
    n, problems = 0, []
    for d in days:
        c = cache.compact_day(d, ttl_days=ttl_days, now=now)
        n += c.written
        if c.problem:
            todo = (f"refetch it: wydot-lab ingest --start {d} --end {d} (the hours of this range are cached)"
                    if c.refetch else "the hours are cached; the next ingest of this date writes the copy")
            problems.append(f"{d}: {c.problem}; {todo}")
    if not problems:
        return n, None
    msg = "no day copy for " + " | ".join(problems)
    _say(progress, f"warning: {msg}")
    return n, msg


def _files_in_range(manifests: list[dict], p: Plan) -> int:
    """Distinct source objects whose hour folder lies in the requested range."""
    keys = set()
    for m in manifests:
        for o in m.get("source_objects", []):
            h = layout.hour_of_key(o["key"])
            if h is not None and p.t0 <= h < p.t1:
                keys.add(o["key"])
    return len(keys)


def _account(f: Folder, todo: set, in_range: set, acc: dict, missing: set) -> None:
    """Count the lines of a finished folder that went into no partition of this run."""
    acc["lines_read"] += f.lines
    for h, t in f.valid_by_hour.items():
        if abs(h - f.hour) > HOUR:
            acc["far_from_folder"] += t.num_rows
        elif h in missing:
            acc["dropped_missing"] += t.num_rows  # its own folder failed: the hour is not written
        elif h not in todo:
            acc["skipped_cached" if h in in_range else "out_of_range"] += t.num_rows
    if f.hour not in todo:
        acc["skipped_cached" if f.hour in in_range else "out_of_range"] += f.other_lines()


def _write_hour(cache: cache_mod.Cache, h: dt.datetime, folders: list[Folder], p: Plan) -> dict:
    prev, own, nxt = folders
    objs = [o.as_dict() for f in folders for o in p.listings.get(f.hour, [])]
    extra = {"source_url": p.source, "source_id": p.source_id, "mode": p.mode,
             "source_folders": [layout.hour_prefix(cache.pilot, cache.message_type, f.hour) for f in folders]}
    if own.error is not None:
        return cache.write(h, None, None, None, 0, objs, {**extra, "error": str(own.error)},
                           status=cache_mod.MISSING, locked=True)
    parts = [f.valid_by_hour[h] for f in folders if h in f.valid_by_hour]
    valid = pa.concat_tables(parts) if parts else None
    if valid is not None and valid.num_rows:
        valid = valid.take(pc.sort_indices(valid, [("metadata_generatedAt", "ascending")]))
    gaps = [f for f in (prev, nxt) if f.error is not None]
    status = "complete"
    if gaps:
        status = cache_mod.INCOMPLETE
        extra["missing_sources"] = [layout.hour_prefix(cache.pilot, cache.message_type, f.hour) for f in gaps]
    return cache.write(h, valid, own.quarantine, own.non_bsm, own.blank, objs, extra, status=status, locked=True)


# ---------------------------------------------------------------- notebook facade


def _from_params(params):
    from wydot_lab.config import resolve_path

    spec = SourceSpec.from_params(params.source)
    cache = cache_mod.Cache(resolve_path(params.cache.root), params.source.pilot, params.source.message_type)
    return Source(spec), cache


def plan_range(params, progress: Progress = True) -> Plan:
    """The dry-run plan for a params object (print it before a large fetch)."""
    source, cache = _from_params(params)
    return plan(source, cache, params.dates.start, params.dates.end, ttl_days=params.cache.ttl_days,
                price_per_gb=params.source.egress_usd_per_gb, allow_partial=params.source.allow_partial,
                progress=progress)


def fetch_range(params, progress: Progress = True, dry_run: bool = False, offline: bool = False,
                now: dt.datetime | None = None, require_records: bool = False, allow_empty: bool = False,
                mirror_deletions: bool = False) -> FetchResult:
    """Fill the cache for `params.dates` from `params.source` (typed `config.Params`).

    require_records: a range without one valid BSM raises (a notebook would fail later, on
    an empty map, far from the cause)."""
    source, cache = _from_params(params)
    out = fetch(source, cache, params.dates.start, params.dates.end, ttl_days=params.cache.ttl_days,
                allow_partial=params.source.allow_partial, dry_run=dry_run,
                price_per_gb=params.source.egress_usd_per_gb, offline=offline, now=now, progress=progress,
                allow_empty=allow_empty, mirror_deletions=mirror_deletions,
                max_object_mb=params.source.max_object_mb)
    if require_records and not dry_run and out.valid == 0:
        why = out.warning or (f"hours missing (source failures): {', '.join(out.missing[:5])}"
                              if out.missing else f"{out.records} records, none valid"
                              if out.records else "its objects hold no records in range")
        raise NoRecords(f"no valid BSMs for dates {params.dates.start} .. {params.dates.end}: {why}")
    return out


def load_range(params, progress: Progress = True, refresh: bool = True):
    """Fetch what is missing (unless `refresh=False`), then the cached range as a dask DataFrame.

    If the source is unreachable but every hour is cached, warns and loads offline.
    """
    import warnings

    from wydot_lab.config import resolve_path

    if refresh:
        try:
            fetch_range(params, progress=progress)
        except SourceError as err:
            try:
                fetch_range(params, progress=progress, offline=True)
            except SourceError:
                raise err from None
            warnings.warn(f"source unavailable ({err}); loading the cached copy without an ETag check",
                          cache_mod.CacheWarning, stacklevel=2)
    return cache_mod.load(params.dates.start, params.dates.end, resolve_path(params.cache.root),
                          pilot=params.source.pilot, message_type=params.source.message_type,
                          ttl_days=params.cache.ttl_days,
                          source_id=layout.source_identity(resolve_path(params.source.url)))


# ---------------------------------------------------------------- CLI glue


def run_ingest_cli(args, progress: Progress) -> FetchResult:
    """`wydot-lab ingest`: args from the `ingest` subparser of cli.py (which maps the result's
    status and a `VanishedObjects` refusal to exit codes)."""
    spec = SourceSpec(url=args.source if "://" in args.source else os.path.abspath(args.source), pilot=args.pilot,
                      message_type=args.message_type, region=args.region, profile=args.profile,
                      anonymous=args.anonymous, requester_pays=args.requester_pays, endpoint_url=args.endpoint_url)
    if args.anonymous and args.profile:
        raise UsageError("--anonymous and --profile exclude each other")
    cache = cache_mod.Cache(args.cache, args.pilot, args.message_type)
    source = Source(spec)
    mb = getattr(args, "max_object_mb", None)
    return fetch(source, cache, args.start, args.end, ttl_days=args.ttl_days,
                 allow_partial=args.allow_partial, dry_run=args.dry_run, price_per_gb=args.price_per_gb,
                 offline=getattr(args, "offline", False), workers=getattr(args, "workers", 8),
                 progress=progress, mirror_deletions=getattr(args, "mirror_deletions", False),
                 allow_empty=getattr(args, "allow_empty", False),
                 max_object_mb=layout.MAX_OBJECT_MB if mb is None else mb)


def run_cache_cli(args, progress: Progress) -> dict:
    """`wydot-lab cache ls|verify|clear`."""
    kw = dict(pilot=getattr(args, "pilot", layout.DEFAULT_PILOT),
              message_type=getattr(args, "message_type", layout.DEFAULT_TYPE))
    if bool(args.start) != bool(args.end):
        raise UsageError("give both --start and --end, or neither")
    cache_mod.Cache(args.cache, **kw).require_root()
    if args.action == "ls":
        rows = cache_mod.ls(args.cache, args.start, args.end, ttl_days=getattr(args, "ttl_days", None), **kw)
        for r in rows:
            _say(progress, f"{r['hour']}  {r['status']:<10} valid={r['valid']:<7} quarantined={r['quarantined']:<5} "
                           f"bytes={r['bytes']:<9} created={r['created']}{'  (in day copy)' if r['day_copy'] else ''}")
        return {"action": "ls", "partitions": len(rows), "bytes": sum(r["bytes"] for r in rows),
                "status_counts": dict(Counter(r["status"] for r in rows)), "valid": sum(r["valid"] for r in rows),
                "day_copies": len({r["hour"][:10] for r in rows if r["day_copy"]}), "rows": rows}
    if args.action == "verify":
        res = cache_mod.verify(args.cache, args.start, args.end, **kw)
        for h, why in res["corrupt"].items():
            _say(progress, f"corrupt {h}: {why} (hidden; the next ingest refetches it)")
        for d, why in res["day_copies"]["corrupt"].items():
            _say(progress, f"corrupt day copy {d}: {why} (dropped; its hours serve, the next ingest rebuilds it)")
        return {"action": "verify", **res}  # the CLI exits 1 if anything is corrupt
    res = cache_mod.clear(args.cache, args.start, args.end, **kw)
    return {"action": "clear", **res}

