"""The Dask read path: a range's servable hours (and usable day copies) as a dask DataFrame whose
tasks read and verify the files themselves, or as one Arrow table."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import warnings

import pandas as pd
import pyarrow as pa

from wydot_lab import layout
from wydot_lab.cache.days import DAY_COPY_MAX_ROWS, day_usable
from wydot_lab.cache.files import ABSENT, CORRUPT, FILES, FRESH, INCOMPLETE, Partition
from wydot_lab.cache.partitions import Cache, check_source
from wydot_lab.errors import CacheWarning, CorruptPartition, RangeNotCached
from wydot_lab.schema import BSM_SCHEMA


@functools.cache
def _pandas_meta() -> pd.DataFrame:
    """Built once per process (~10 ms); dask deep-copies the meta it is given, so sharing is safe."""
    return _to_pandas(BSM_SCHEMA.empty_table())


_NULLABLE = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


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


def _read_group(
    group: str, root: str, pilot: str, message_type: str, storage_options: dict, verify: bool, columns: list | None
) -> pd.DataFrame:
    """Dask task: read, verify and concatenate the valid records of some hours and day copies."""
    cache = Cache(root, pilot, message_type, storage_options)
    table = _read_units(cache, _decode_units(json.loads(group)), "valid", verify)
    if columns is not None:
        table = table.select(columns)
    return _to_pandas(table)


@dataclasses.dataclass(frozen=True)
class _Day:
    """A whole date served from its day copy (`parts`: its 24 hours, the fallback)."""

    day: dt.date
    manifest: dict
    parts: list

    def counts(self) -> dict:
        return {"valid": int(self.manifest["files"][FILES["valid"][0]]["rows"])}


def _units(cache: Cache, parts: list[Partition], kind: str, rows_per_partition: int, day_copies: bool) -> list:
    """The partitions in hour order, each whole date that fits a dask partition as one unit: its
    day copy where usable, else the list of its 24 hours."""
    by_day: dict[dt.date, list[Partition]] = {}
    for p in parts:
        by_day.setdefault(p.hour.date(), []).append(p)
    out = []
    for day, ps in by_day.items():
        whole = len(ps) == 24 and sum(p.counts()["valid"] for p in ps) <= rows_per_partition
        m = cache.day_manifest(day) if whole and kind == "valid" and day_copies else None
        if m is not None and day_usable(m, ps):
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
            tables.append(cache.read_hours(hours, kind, verify))
            hours = []
        if u is not None:
            tables.append(cache.read_day(u.day, u.manifest, u.parts, verify))
    return pa.concat_tables(tables) if tables else FILES[kind][1].empty_table()


def _encode_unit(u) -> list:
    if isinstance(u, _Day):
        return ["day", u.day.isoformat(), u.manifest, [_encode_unit(p) for p in u.parts]]
    return [
        "hour",
        u.hour.isoformat(),
        u.path,
        {"files": u.manifest.get("files", {}), "created": u.manifest.get("created")},
    ]


def _decode_units(entries: list) -> list:
    return [
        _Day(dt.date.fromisoformat(e[1]), e[2], _decode_units(e[3]))
        if e[0] == "day"
        else Partition(dt.datetime.fromisoformat(e[1]), e[2], e[3])
        for e in entries
    ]


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


def available(
    cache: Cache, t0: dt.datetime, t1: dt.datetime, ttl_days: float | None = None, now: dt.datetime | None = None
) -> tuple[list[Partition], dict[str, str]]:
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
            raise CorruptPartition(
                f"cache partition {p.path} is corrupt ({why}); it is hidden until refetched: "
                "run `wydot-lab ingest` for this range"
            )
        if st in (FRESH, INCOMPLETE):
            ok.append(p)
            if st == INCOMPLETE:
                problems[layout.hour_label(h)] = f"{INCOMPLETE}: {why}"
        else:
            problems[layout.hour_label(h)] = f"{st}: {why}"
    return ok, problems


def _servable(
    start,
    end,
    root: str,
    pilot: str,
    message_type: str,
    storage_options: dict | None,
    ttl_days: float | None,
    strict: bool,
    source_id: str | None = None,
) -> tuple[Cache, list[Partition]]:
    """The cache and its servable partitions of a range; hours it cannot serve raise (`strict`) or warn;
    with `source_id`, hours of another source raise `SourceConflict`."""
    t0, t1 = layout.hour_range(start, end)
    cache = Cache(root, pilot, message_type, storage_options)
    parts, problems = available(cache, t0, t1, ttl_days=ttl_days)
    if source_id is not None:
        check_source(cache, source_id, {p.hour: p.manifest for p in parts}, t0, t1)
    if problems:
        msg = (
            f"cache {root}: {len(problems)} of {len(layout.hours_between(t0, t1))} hours not complete: "
            + ", ".join(f"{h} ({why})" for h, why in list(problems.items())[:6])
            + (" ..." if len(problems) > 6 else "")
            + "; run `wydot-lab ingest` for this range"
        )
        if strict:
            raise RangeNotCached(msg)
        warnings.warn(msg, CacheWarning, stacklevel=3)
    return cache, parts


def load(
    start,
    end,
    root: str,
    pilot: str = layout.DEFAULT_PILOT,
    message_type: str = layout.DEFAULT_TYPE,
    storage_options: dict | None = None,
    verify: bool = True,
    columns: list[str] | None = None,
    rows_per_partition: int = DAY_COPY_MAX_ROWS,
    ttl_days: float | None = None,
    strict: bool = False,
    source_id: str | None = None,
    day_copies: bool = True,
):
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
        return dd.from_map(
            _read_group,
            groups,
            root=cache.root_url,
            pilot=pilot,
            message_type=message_type,
            storage_options=storage_options or {},
            verify=verify,
            columns=columns,
            meta=meta,
            enforce_metadata=False,
            label="wydot-cache",
        )


def load_table(
    start,
    end,
    root: str,
    kind: str = "valid",
    pilot: str = layout.DEFAULT_PILOT,
    message_type: str = layout.DEFAULT_TYPE,
    storage_options: dict | None = None,
    verify: bool = True,
    ttl_days: float | None = None,
    strict: bool = False,
    source_id: str | None = None,
    day_copies: bool = True,
) -> pa.Table:
    """Same hours as `load`, as one Arrow table (`kind`: valid | quarantine | non_bsm)."""
    cache, parts = _servable(start, end, root, pilot, message_type, storage_options, ttl_days, strict, source_id)
    return _read_units(cache, _units(cache, parts, kind, 1 << 62, day_copies), kind, verify)
