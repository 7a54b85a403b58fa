"""The Parquet cache on its own and fed from a local folder source (no S3 needed)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from wydot_lab import cache as cache_mod
from wydot_lab import fetch, ingest
from wydot_lab.schema import BSM_SCHEMA, SCHEMA_VERSION
from wydot_lab.source import Source, SourceError, SourceSpec

import s3_server as S

UTC = dt.timezone.utc
HOUR = dt.timedelta(hours=1)
H0 = dt.datetime(2021, 4, 1, tzinfo=UTC)
PER_HOUR = 10


@pytest.fixture(scope="module")
def three_days(tmp_path_factory) -> Path:
    """A local folder source: 2021-03-31T23 .. 2021-04-04T00 (3 days + padding hours)."""
    root = tmp_path_factory.mktemp("src")
    return S.write_folder(root, S.corpus(H0 - HOUR, 74, per_hour=PER_HOUR, seed=5, objects=1))


def local_fetch(src: Path, root, start="2021-04-01", end="2021-04-01", **kw) -> dict:
    return fetch.fetch(Source(SourceSpec(url=str(src))), cache_mod.Cache(str(root)), start, end, **kw)


def test_manifest_has_what_the_issue_asks_and_bytes_are_deterministic(three_days, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    local_fetch(three_days, a, "2021-04-01T00:00", "2021-04-01T03:00")
    local_fetch(three_days, b, "2021-04-01T00:00", "2021-04-01T03:00")
    part = "source=wydot/type=BSM/date=2021-04-01/hour=01"
    m = json.loads((a / part / "manifest.json").read_text())
    assert m["code_version"] == version("wydot_lab") and m["schema_version"] == SCHEMA_VERSION
    assert dt.datetime.fromisoformat(m["created"]).tzinfo is not None
    assert m["counts"]["records"] == sum(m["counts"][k] for k in ("valid", "quarantined", "non_bsm", "blank"))
    assert m["counts"]["valid"] == PER_HOUR and m["counts"]["quarantined"] == m["counts"]["non_bsm"] == 1
    assert [o["key"].split("/")[5] for o in m["source_objects"]] == ["00", "01", "02"]
    assert all(set(o) == {"key", "etag", "size"} for o in m["source_objects"])
    for name in ("valid.parquet", "quarantine.parquet", "non_bsm.parquet"):
        data = (a / part / name).read_bytes()
        assert m["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert m["files"][name]["size"] == len(data)
        assert data == (b / part / name).read_bytes()  # same input -> same bytes


def test_load_is_canonical_and_prunes_by_date_folder(three_days, tmp_path):
    root = tmp_path / "cache"
    local_fetch(three_days, root, "2021-04-01", "2021-04-03")
    # break every file of 2021-04-03: loading 04-01 must not even open them
    for f in (root / "source=wydot/type=BSM/date=2021-04-03").rglob("*.parquet"):
        f.write_bytes(b"garbage")
    ddf = cache_mod.load("2021-04-01", "2021-04-01", str(root))
    assert list(ddf.columns) == BSM_SCHEMA.names
    df = ddf.compute()
    assert len(df) == 24 * PER_HOUR + 0  # no spill in this corpus
    assert str(df["metadata_generatedAt"].dtype) == "datetime64[ms, UTC]"
    assert isinstance(df["partII_pathHistory_crumbData"].dtype, pd.ArrowDtype)
    assert df["metadata_generatedAt"].dt.date.astype(str).eq("2021-04-01").all()
    table = cache_mod.load_table("2021-04-02", "2021-04-02", str(root))
    assert table.schema == BSM_SCHEMA and table.num_rows == 24 * PER_HOUR
    with pytest.raises(cache_mod.CorruptPartition, match="date=2021-04-03/hour=00"):
        cache_mod.load("2021-04-03", "2021-04-03", str(root))
    with pytest.raises(cache_mod.CorruptPartition):  # still refused until refetched
        cache_mod.load("2021-04-03", "2021-04-03", str(root))
    assert local_fetch(three_days, root, "2021-04-03", "2021-04-03")["refetched"] == {"corrupt": 24}
    assert len(cache_mod.load("2021-04-03", "2021-04-03", str(root)).compute()) == 24 * PER_HOUR
    q = cache_mod.load_table("2021-04-01", "2021-04-01", str(root), kind="quarantine")
    assert q.num_rows == 24 and q.column("reasons").to_pylist()[0]


def test_uncached_hours_warn_or_raise_never_silently_skipped(three_days, tmp_path):
    root = tmp_path / "cache"
    local_fetch(three_days, root, "2021-04-01T00:00", "2021-04-01T12:00")
    with pytest.warns(cache_mod.CacheWarning, match="12 of 24 hours"):
        df = cache_mod.load("2021-04-01", "2021-04-01", str(root)).compute()
    assert len(df) == 12 * PER_HOUR
    with pytest.raises(LookupError, match="2021-04-01T12"):
        cache_mod.load("2021-04-01", "2021-04-01", str(root), strict=True)
    with pytest.warns(cache_mod.CacheWarning):
        empty = cache_mod.load("2022-01-01", "2022-01-01", str(root))
    assert list(empty.columns) == BSM_SCHEMA.names and len(empty.compute()) == 0


def test_empty_hours_are_cached_as_empty_not_missing(tmp_path):
    src = S.write_folder(tmp_path / "src", S.corpus(H0, 2, per_hour=5, seed=2, objects=1))  # only T00, T01
    res = local_fetch(src, tmp_path / "cache")
    assert res["fetched"] == 24 and res["valid"] == 10 and res["missing"] == []
    rows = {r["hour"]: r for r in cache_mod.ls(str(tmp_path / "cache"))}
    assert rows["2021-04-01T05"]["status"] == "fresh" and rows["2021-04-01T05"]["records"] == 0
    assert local_fetch(src, tmp_path / "cache")["cached"] == 24


def test_counts_add_up_between_cold_and_partly_cached_runs(three_days, tmp_path):
    root = tmp_path / "cache"
    half = local_fetch(three_days, root, "2021-04-01T06:00", "2021-04-01T18:00")
    full = local_fetch(three_days, root, "2021-04-01", "2021-04-01")
    assert (full["cached"], full["fetched"]) == (12, 12)
    cold = local_fetch(three_days, tmp_path / "cold")
    for k in ("records", "valid", "quarantined", "non_bsm", "blank", "files"):
        assert full[k] == cold[k], k
    for r in (half, full, cold):
        assert r["lines_read"] == (r["records"] if r is not full else full["records"] - half["records"]) \
            + r["out_of_range"] + r["skipped_cached"] + r["far_from_folder"]
    assert full["skipped_cached"] > 0  # T05 and T18 folders were read again for their neighbours


def test_local_source_change_makes_dependent_hours_stale(tmp_path):
    src = S.write_folder(tmp_path / "src", S.corpus(H0 - HOUR, 26, per_hour=5, seed=4, objects=1))
    local_fetch(src, tmp_path / "cache")
    f = next((src / "wydot/BSM/2021/04/01/12").iterdir())
    f.write_bytes(f.read_bytes() + S.bsm_line(H0 + 12.5 * HOUR, "ABCDEF01", 41.3, -105.6).encode() + b"\n")
    old_copy = tmp_path / "old_day"
    shutil.copytree(tmp_path / "cache/source=wydot/type=BSM/date=2021-04-01/_day", old_copy)
    res = local_fetch(src, tmp_path / "cache")
    assert (res["fetched"], res["refetched"]) == (3, {"stale": 3}) and res["valid"] == 24 * 5 + 1
    assert res["days_compacted"] == 1  # the day copy follows its hours
    # a day copy built from older hour files (say its rebuild was killed) is never served
    shutil.rmtree(tmp_path / "cache/source=wydot/type=BSM/date=2021-04-01/_day")
    shutil.copytree(old_copy, tmp_path / "cache/source=wydot/type=BSM/date=2021-04-01/_day")
    assert not any(r["day_copy"] for r in cache_mod.ls(str(tmp_path / "cache")))
    df = cache_mod.load("2021-04-01", "2021-04-01", str(tmp_path / "cache")).compute()
    assert len(df) == 24 * 5 + 1 and (df["coreData_id"] == "ABCDEF01").sum() == 1


def test_a_whole_day_loads_from_its_day_copy(three_days, tmp_path):
    root = tmp_path / "cache"
    res = local_fetch(three_days, root, "2021-04-01T12:00", "2021-04-02")  # 04-01 half, 04-02 whole
    assert res["days_compacted"] == 1
    day = root / "source=wydot/type=BSM/date=2021-04-02"
    m = json.loads((day / "_day/day_manifest.json").read_text())
    assert m["date"] == "2021-04-02" and m["schema_version"] == SCHEMA_VERSION and len(m["hours"]) == 24
    for h in range(24):
        hm = json.loads((day / f"hour={h:02d}/manifest.json").read_text())
        assert m["hours"][f"2021-04-02T{h:02d}"] == hm["files"]["valid.parquet"]["sha256"]
    data = (day / "_day/valid.parquet").read_bytes()
    assert m["files"]["valid.parquet"] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                           "rows": 24 * PER_HOUR}
    assert not (root / "source=wydot/type=BSM/date=2021-04-01/_day").exists()  # not whole in the cache
    by_hour = cache_mod.load("2021-04-02", "2021-04-02", str(root), day_copies=False).compute()
    assert cache_mod.load("2021-04-02", "2021-04-02", str(root)).compute().equals(by_hour)
    assert cache_mod.load_table("2021-04-02", "2021-04-02", str(root)).equals(
        cache_mod.load_table("2021-04-02", "2021-04-02", str(root), day_copies=False))
    # proof that the copy is what is read: spoil every hour file, keeping its size
    for f in day.glob("hour=*/valid.parquet"):
        f.write_bytes(bytes(len(f.read_bytes())))
    assert cache_mod.load("2021-04-02", "2021-04-02", str(root)).compute().equals(by_hour)
    with pytest.raises(cache_mod.CorruptPartition, match="SHA-256"):  # the hours themselves are refused
        cache_mod.load("2021-04-02", "2021-04-02", str(root), day_copies=False).compute()
    # a day bigger than a dask partition is read by hours, so partitions stay bounded
    with pytest.raises(cache_mod.CorruptPartition):
        cache_mod.load("2021-04-02", "2021-04-02", str(root), rows_per_partition=100).compute()
    # hive readers of the cache root never see the copy (no double counting)
    import pyarrow.dataset as ds
    files = ds.dataset(str(root), format="parquet", partitioning="hive", exclude_invalid_files=True).files
    assert files and not [f for f in files if f"/{cache_mod.DAY_DIR}/" in f]
    assert (day / cache_mod.DAY_DIR / "valid.parquet").exists()


def test_clear_and_ls_know_the_day_copies(three_days, tmp_path):
    root = tmp_path / "cache"
    local_fetch(three_days, root, "2021-04-01", "2021-04-02")
    rows = cache_mod.ls(str(root))
    assert len(rows) == 48 and all(r["day_copy"] for r in rows)
    leftover = root / "source=wydot/type=BSM/date=2021-04-02/.tmp-day-0123456789ab"
    leftover.mkdir()
    res = cache_mod.clear(str(root), "2021-04-01T05:00", "2021-04-01T06:00")
    assert res == {"removed": 1, "day_copies_removed": 1}  # a copy missing an hour is of no use
    assert not (root / "source=wydot/type=BSM/date=2021-04-01/_day").exists()
    assert cache_mod.clear(str(root), "2021-04-02", "2021-04-02") == {"removed": 24, "day_copies_removed": 1}
    assert not (root / "source=wydot/type=BSM/date=2021-04-02").exists()  # leftover swept, folder gone
    assert local_fetch(three_days, root, "2021-04-01", "2021-04-02")["days_compacted"] == 2


def test_the_day_copy_follows_ttl_and_never_outlives_its_hours(three_days, tmp_path):
    root = tmp_path / "cache"
    local_fetch(three_days, root)
    good = cache_mod.load("2021-04-01", "2021-04-01", str(root), day_copies=False).compute()
    m = root / "source=wydot/type=BSM/date=2021-04-01/hour=05/manifest.json"
    old = json.loads(m.read_text())
    m.write_text(json.dumps({**old, "created": "2021-01-01T00:00:00+00:00"}))  # hour 05 expires first
    rows = cache_mod.ls(str(root), ttl_days=30)
    assert [r["hour"] for r in rows if r["status"] == "expired"] == ["2021-04-01T05"]
    assert not any(r["day_copy"] for r in rows)  # `load` would not read the copy: ls does not claim it
    with pytest.warns(cache_mod.CacheWarning, match="2021-04-01T05 .expired"):
        df = cache_mod.load("2021-04-01", "2021-04-01", str(root), ttl_days=30).compute()
    assert len(df) == len(good) - PER_HOUR and 5 not in set(df["metadata_generatedAt"].dt.hour)
    m.write_text(json.dumps(old))
    # a copy whose date lost its hours (say a clear killed half way) is still found and removed
    for h in (root / "source=wydot/type=BSM/date=2021-04-01").glob("hour=*"):
        shutil.rmtree(h)
    assert cache_mod.verify(str(root))["day_copies"] == {"checked": 1, "ok": 1, "corrupt": {}}
    assert cache_mod.clear(str(root)) == {"removed": 0, "day_copies_removed": 1}
    assert not (root / "source=wydot/type=BSM/date=2021-04-01").exists()


def test_a_malformed_day_manifest_is_never_trusted(three_days, tmp_path):
    root = tmp_path / "cache"
    local_fetch(three_days, root)
    good = cache_mod.load("2021-04-01", "2021-04-01", str(root), day_copies=False).compute()
    dm = root / "source=wydot/type=BSM/date=2021-04-01/_day/day_manifest.json"
    dm.write_text('["not", "a", "manifest"]')
    assert cache_mod.load("2021-04-01", "2021-04-01", str(root)).compute().equals(good)
    assert cache_mod.verify(str(root))["day_copies"]["corrupt"] == {"2021-04-01": "unreadable day manifest"}
    assert not dm.parent.exists()
    assert local_fetch(three_days, root)["days_compacted"] == 1


def test_compaction_racing_a_clear_or_finding_corruption_says_so(three_days, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    local_fetch(three_days, root)
    cache = cache_mod.Cache(str(root))
    day = dt.date(2021, 4, 1)
    shutil.rmtree(root / "source=wydot/type=BSM/date=2021-04-01/_day")
    read = cache_mod.Cache.read_files

    def clear_during_read(self, part, kind="valid", verify=True):
        if part.hour.hour == 9:
            shutil.rmtree(part.path)  # a concurrent `cache clear` got there first
        return read(self, part, kind, verify)

    monkeypatch.setattr(cache_mod.Cache, "read_files", clear_during_read)
    c = cache.compact_day(day)
    assert not c.written and "hour 2021-04-01T09 changed while being read" in c.problem and not cache.day_copies()
    assert c.refetch is None  # nothing hidden: the next ingest of the date fetches it anyway
    monkeypatch.undo()
    local_fetch(three_days, root)  # hour 09 back, copy rebuilt
    # an hour outside the fetched range is read (and checked) only by the compaction: a corrupt
    # one is hidden for refetch and the summary says so
    shutil.rmtree(root / "source=wydot/type=BSM/date=2021-04-01/_day")
    f = root / "source=wydot/type=BSM/date=2021-04-01/hour=20/valid.parquet"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 1
    f.write_bytes(bytes(data))
    res = local_fetch(three_days, root, "2021-04-01T00:00", "2021-04-01T06:00")
    assert res["days_compacted"] == 0
    assert "hour 2021-04-01T20 was found corrupt" in res["warning"]
    assert "wydot-lab ingest --start 2021-04-01 --end 2021-04-01" in res["warning"]
    assert {r["hour"]: r["status"] for r in cache_mod.ls(str(root))}["2021-04-01T20"] == "corrupt"
    again = local_fetch(three_days, root, "2021-04-01T00:00", "2021-04-01T06:00")  # not its range:
    assert "hour 2021-04-01T20 is hidden as corrupt" in again["warning"]  # still said, every run
    res = local_fetch(three_days, root)  # the advice works
    assert res["refetched"] == {"corrupt": 1} and res["days_compacted"] == 1 and "warning" not in res
    # a write that fails (say a full disk) leaves the hours cached, no temp folder, and says so
    shutil.rmtree(root / "source=wydot/type=BSM/date=2021-04-01/_day")
    fs_pipe = cache.fs.pipe_file

    def full_disk(path, *a, **kw):
        if ".tmp-day-" in path:
            raise OSError(28, "No space left on device")
        return fs_pipe(path, *a, **kw)

    monkeypatch.setattr(cache.fs, "pipe_file", full_disk)
    c = cache.compact_day(day)
    assert not c.written and "No space left on device" in c.problem
    assert not list(root.rglob(".tmp-day-*")) and not cache.day_copies()
    monkeypatch.undo()


def test_junk_date_folders_are_ignored_not_fatal(three_days, tmp_path):
    root = tmp_path / "cache"
    local_fetch(three_days, root)
    for junk in ("date=bad", "date=20210402"):
        (root / "source=wydot/type=BSM" / junk).mkdir()
    assert cache_mod.Cache(str(root)).dates() == [dt.date(2021, 4, 1)]
    with pytest.warns(cache_mod.CacheWarning, match="24 of 48 hours"):  # 04-02 is not cached: said, not fatal
        assert len(cache_mod.load("2021-04-01", "2021-04-02", str(root)).compute()) == 24 * PER_HOUR


def test_a_reader_never_hides_a_partition_rewritten_since_it_read_it(three_days, tmp_path):
    root = tmp_path / "cache"
    local_fetch(three_days, root, "2021-04-01T00:00", "2021-04-01T02:00")
    cache = cache_mod.Cache(str(root))
    hour = H0 + HOUR
    seen = cache.partition(hour)  # what a slow reader had in hand
    local_fetch(three_days, root, "2021-04-01T00:00", "2021-04-01T02:00", ttl_days=0)  # refetched: same bytes
    assert cache.partition(hour).manifest["files"] == seen.manifest["files"]
    cache.mark_corrupt(seen, "SHA-256 mismatch")  # the reader's late verdict on the old copy
    assert cache.status(cache.partition(hour))[0] == cache_mod.FRESH
    cache.mark_corrupt(cache.partition(hour), "SHA-256 mismatch")  # on the current copy it does hide it
    assert cache.status(cache.partition(hour))[0] == cache_mod.CORRUPT


def test_a_day_too_big_for_one_dask_partition_gets_no_day_copy(three_days, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod.days, "DAY_COPY_MAX_ROWS", 24 * PER_HOUR - 1)
    assert local_fetch(three_days, tmp_path / "cache")["days_compacted"] == 0
    monkeypatch.setattr(cache_mod.days, "DAY_COPY_MAX_ROWS", 24 * PER_HOUR)
    assert local_fetch(three_days, tmp_path / "cache")["days_compacted"] == 1


def test_truncated_file_is_caught_by_size_and_by_deep_check(three_days, tmp_path):
    root = tmp_path / "cache"
    local_fetch(three_days, root)
    f = root / "source=wydot/type=BSM/date=2021-04-01/hour=07/non_bsm.parquet"
    f.write_bytes(f.read_bytes()[:-10])
    res = local_fetch(three_days, root, deep=False)
    assert res["refetched"] == {"corrupt": 1}


def test_fsspec_memory_root(three_days):
    root = f"memory://wydot-cache-{id(three_days)}"
    res = fetch.fetch(Source(SourceSpec(url=str(three_days))), cache_mod.Cache(root), "2021-04-02", "2021-04-02")
    assert res["fetched"] == 24 and res["days_compacted"] == 1
    assert len(cache_mod.load("2021-04-02", "2021-04-02", root).compute()) == 24 * PER_HOUR
    assert all(r["day_copy"] for r in cache_mod.ls(root))
    assert fetch.fetch(Source(SourceSpec(url=str(three_days))), cache_mod.Cache(root), "2021-04-02",
                       "2021-04-02")["cached"] == 24
    assert cache_mod.clear(root) == {"removed": 24, "day_copies_removed": 1} and cache_mod.ls(root) == []


def test_offline_mode_serves_only_from_cache(three_days, tmp_path):
    root = tmp_path / "cache"
    gone = tmp_path / "source"
    shutil.copytree(three_days, gone)
    local_fetch(gone, root)
    shutil.rmtree(gone)
    res = local_fetch(gone, root, offline=True)
    assert res["cached"] == 24 and res["valid"] == 24 * PER_HOUR
    with pytest.raises(SourceError, match="offline"):
        local_fetch(gone, root, "2021-04-02", "2021-04-02", offline=True)
    with pytest.raises(SourceError, match="does not exist"):
        local_fetch(gone, root)


def test_local_cluster_loads_the_cache(three_days, tmp_path):
    """The dask graph of `load` is plain data: it runs on real worker processes."""
    from dask.distributed import Client, LocalCluster

    root = tmp_path / "cache"
    local_fetch(three_days, root, "2021-04-01", "2021-04-02")
    ddf = cache_mod.load("2021-04-01", "2021-04-02", str(root), rows_per_partition=20)
    assert ddf.npartitions == 24
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        per_hour = ddf.groupby(ddf["metadata_generatedAt"].dt.hour).size().compute()
        n = client.compute(ddf.shape[0]).result()
        hours = cache_mod.load("2021-04-01", "2021-04-02", str(root), rows_per_partition=24 * PER_HOUR,
                               day_copies=False)
        assert hours.npartitions == 2  # a whole date stays in one partition, copy or not
        hours = client.compute(hours).result()
        for f in root.rglob("hour=*/valid.parquet"):  # from here on only the day copies can serve
            f.write_bytes(bytes(len(f.read_bytes())))
        copies = cache_mod.load("2021-04-01", "2021-04-02", str(root), rows_per_partition=24 * PER_HOUR)
        assert copies.npartitions == 2
        both = client.compute(copies).result()
    assert n == 48 * PER_HOUR and (per_hour == 2 * PER_HOUR).all() and len(per_hour) == 24
    assert both.equals(hours)  # same rows, same order, same index


def test_split_by_hour_uses_record_time():
    data = b"\n".join(S.bsm_line(t, "0A0B0C0D", 41.3, -105.6).encode() for t in
                      [H0 + dt.timedelta(minutes=10), H0 + dt.timedelta(minutes=70), H0 + dt.timedelta(minutes=59)])
    valid = ingest.ingest_bytes(data, "x").valid
    parts = fetch._split_by_hour(valid, H0)
    assert {h: t.num_rows for h, t in parts.items()} == {H0: 2, H0 + HOUR: 1}
    assert sum(t.num_rows for t in parts.values()) == valid.num_rows
    assert fetch._split_by_hour(pa.Table.from_pylist([], schema=BSM_SCHEMA), H0) == {}


def test_every_dask_partition_has_the_meta_dtypes_whatever_the_nulls(tmp_path):
    objs = S.corpus(H0, 2, per_hour=4, seed=8, objects=1, extras=False)
    k0 = next(k for k in objs if "/2021/04/01/00/" in k)
    lines = []
    for ln in objs[k0].decode().splitlines():  # hour 00: no size, no wheel brakes -> null ints and bools
        rec = json.loads(ln)
        del rec["payload"]["data"]["coreData"]["size"], rec["payload"]["data"]["coreData"]["brakes"]["wheelBrakes"]
        lines.append(json.dumps(rec))
    objs[k0] = ("\n".join(lines) + "\n").encode()
    src = S.write_folder(tmp_path / "src", objs)
    local_fetch(src, tmp_path / "cache", "2021-04-01T00:00", "2021-04-01T02:00")
    ddf = cache_mod.load("2021-04-01T00:00", "2021-04-01T02:00", str(tmp_path / "cache"), rows_per_partition=4)
    assert ddf.npartitions == 2
    meta = ddf._meta.dtypes
    parts = [ddf.get_partition(i).compute() for i in range(2)]
    assert parts[0]["coreData_size_width"].isna().all() and parts[1]["coreData_size_width"].notna().all()
    for part in parts:
        assert part.dtypes.equals(meta)
    assert str(meta["coreData_size_width"]) == "Int32" and str(meta["coreData_brakes_abs"]) == "string"
    assert str(meta["coreData_brakes_wheelBrakes_leftFront"]) == "boolean"



def _two_sources(tmp_path, pilot="wydot") -> tuple[Path, Path]:
    out = []
    for name, seed in (("a", 2), ("b", 3)):
        src = S.write_folder(tmp_path / name, S.corpus(H0, 3, per_hour=5, seed=seed, objects=1))
        if pilot != "wydot":
            shutil.move(src / "wydot", src / pilot)
        out.append(src)
    return out[0], out[1]


def _fetch_as(src: Path, root: Path, pilot: str = "wydot", **kw) -> dict:
    spec = SourceSpec(url=str(src), pilot=pilot)
    return fetch.fetch(Source(spec), cache_mod.Cache(str(root), pilot), "2021-04-01", "2021-04-01", **kw)


@pytest.mark.parametrize("pilot", ["wydot", "thea"])
def test_one_cache_root_never_mixes_two_sources(tmp_path, monkeypatch, pilot):
    a, b = _two_sources(tmp_path, pilot)
    root = tmp_path / "cache"
    assert _fetch_as(a, root, pilot)["fetched"] == 24
    before = {p: p.read_bytes() for p in root.rglob("*.parquet")}
    with pytest.raises(cache_mod.SourceConflict,
                       match=r"holds 24 hours of this range from .*/a \(first "
                             r"2021-04-01T00\); this run reads .*/b\. Use one cache root") as err:
        _fetch_as(b, root, pilot)
    assert {p: p.read_bytes() for p in root.rglob("*.parquet")} == before  # nothing replaced
    with pytest.raises(cache_mod.SourceConflict):  # nor served as the other source's data
        cache_mod.load_table("2021-04-01", "2021-04-01", str(root), pilot=pilot, source_id=str(b.resolve()))
    assert cache_mod.load_table("2021-04-01", "2021-04-01", str(root), pilot=pilot,
                                source_id=str(a.resolve())).num_rows == 3 * 5
    monkeypatch.chdir(tmp_path)
    assert _fetch_as(Path("a"), root, pilot)["cached"] == 24  # the same folder, spelled relative
    cmd = str(err.value).split("remove those hours: ", 1)[1]
    assert cmd.startswith("wydot-lab cache clear --cache ") and f"--pilot {pilot} " in cmd
    from wydot_lab import cli
    assert cli.main(cmd.split()[1:]) == 0
    assert _fetch_as(b, root, pilot)["fetched"] == 24


def test_manifests_from_before_source_ids_still_name_their_source(tmp_path):
    a, b = _two_sources(tmp_path)
    root = tmp_path / "cache"
    _fetch_as(a, root)
    for m in root.rglob("manifest.json"):
        d = json.loads(m.read_text())
        del d["source_id"]
        m.write_text(json.dumps(d))
    with pytest.raises(cache_mod.SourceConflict, match="from .*/a "):
        _fetch_as(b, root)


def test_a_concurrent_run_from_another_source_is_not_written_over(tmp_path, monkeypatch):
    """Run B plans on an empty cache; run A (another source) writes the hours before B takes
    the locks: B stops instead of replacing them."""
    a, b = _two_sources(tmp_path)
    root = tmp_path / "cache"
    real_plan = fetch.plan

    def plan_then_a_writes(*args, **kw):
        p = real_plan(*args, **kw)
        monkeypatch.setattr(fetch, "plan", real_plan)
        _fetch_as(a, root)
        return p

    monkeypatch.setattr(fetch, "plan", plan_then_a_writes)
    with pytest.raises(cache_mod.SourceConflict):
        _fetch_as(b, root)
    assert {json.loads(m.read_text())["source_id"] for m in root.rglob("manifest.json")} == {str(a.resolve())}


def test_a_range_without_source_objects_says_so(three_days, tmp_path):
    from wydot_lab import config

    assert "warning" not in local_fetch(three_days, tmp_path / "cache")
    with pytest.raises(fetch.EmptyRange, match=r"has no objects in .* check the dates; nothing was cached"):
        local_fetch(three_days, tmp_path / "cache", "2021-05-01", "2021-05-01")
    assert cache_mod.ls(str(tmp_path / "cache"), "2021-05-01", "2021-05-01") == []  # nothing blocks a re-run
    res = local_fetch(three_days, tmp_path / "cache", "2021-05-01", "2021-05-01", allow_empty=True)
    assert res["records"] == 0 and res["warning"].endswith("has no objects in [2021-05-01T00:00:00+00:00 .. "
                                                           "2021-05-02T00:00:00+00:00) nor an hour either side: "
                                                           "check the dates")
    spill = local_fetch(three_days, tmp_path / "c3", "2021-04-04T00:00", "2021-04-04T01:00")
    assert "warning" not in spill  # the folder before the range has objects: records may sit there
    params = config.Params.model_validate({"source": {"url": str(three_days)}, "cache": {"root": str(tmp_path / "c2")},
                                           "dates": {"start": "2021-05-01", "end": "2021-05-01"}})
    with pytest.raises(ValueError, match=r"no valid BSMs for dates 2021-05-01 \.\. 2021-05-01: .* has no objects"):
        fetch.fetch_range(params, progress=False, require_records=True, allow_empty=True)
    assert fetch.fetch_range(params, progress=False, allow_empty=True)["valid"] == 0  # asked: an empty answer


# ---------------------------------------------------------------- range bounds and the CLI


def test_the_end_bounds_own_form_decides_whether_its_day_is_included():
    from wydot_lab import layout

    def hours(start, end):
        t0, t1 = layout.hour_range(start, end)
        return t0, (t1 - t0) // HOUR

    assert hours("2021-04-01", "2021-04-01") == (H0, 24)  # day .. day: both included
    assert hours(dt.date(2021, 4, 1), dt.date(2021, 4, 2)) == (H0, 48)
    assert hours("2021-04-01T05:00", "2021-04-01T07:00") == (H0 + 5 * HOUR, 2)  # hour .. hour: end excluded
    assert hours("2021-04-01T05:30", "2021-04-01T07:10") == (H0 + 5 * HOUR, 3)  # partial hours widen
    assert hours(H0 + 5 * HOUR, H0 + 7 * HOUR) == (H0 + 5 * HOUR, 2)
    assert hours("2021-04-01T05:00", "2021-04-01") == (H0 + 5 * HOUR, 19)  # a day end: through its end
    assert hours("2021-04-01T05:00", "2021-04-02") == (H0 + 5 * HOUR, 43)
    assert hours(H0 + 5 * HOUR, dt.date(2021, 4, 1)) == (H0 + 5 * HOUR, 19)
    assert hours("2021-04-01", "2021-04-01T05:00") == (H0, 5)  # an hour end: excluded, whatever the start
    assert hours("2021-04-01T05", "2021-04-01T06Z") == (H0 + 5 * HOUR, 1)
    with pytest.raises(ValueError, match="end date 2021-03-31 is before start date 2021-04-01"):
        layout.hour_range("2021-04-01", "2021-03-31")
    with pytest.raises(ValueError, match="end 2021-03-31 is before start 2021-04-01T05:00"):
        layout.hour_range("2021-04-01T05:00", "2021-03-31")
    with pytest.raises(ValueError, match="end 2021-04-01T05:00 is not after start 2021-04-01T05:00"):
        layout.hour_range("2021-04-01T05:00", "2021-04-01T05:00")
    with pytest.raises(ValueError, match="month must be in 1..12"):
        layout.hour_range("2021-13-03", "2021-04-01")


def test_cli_ingest_a_day_end_after_an_hour_start_is_included(three_days, tmp_path, capsys):
    from wydot_lab import cli

    root = str(tmp_path / "new" / "cache")  # ingest creates a new root
    args = ["ingest", str(three_days), "--start", "2021-04-01T05:00", "--cache", root]
    assert cli.main(args + ["--end", "2021-04-02", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["plan"]
    assert (plan["hours"], plan["end"]) == (43, "2021-04-03T00:00:00+00:00")
    assert cli.main(args + ["--end", "2021-04-01"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["fetched"] == 19 and out["valid"] == 19 * PER_HOUR
    assert [r["hour"] for r in cache_mod.ls(root)] == [f"2021-04-01T{h:02d}" for h in range(5, 24)]
    assert cli.main(args + ["--end", "2021-04-01T07:00"]) == 0  # an hour end stays excluded
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cached"] == 2


@pytest.mark.parametrize("cmd, flag, want", [
    ("ingest SRC --start 2021-13-03 --end 2021-04-01", "--start",
     "2021-13-03: month must be in 1..12 (use YYYY-MM-DD or YYYY-MM-DDTHH)"),
    ("ingest SRC --start 2021-04-01 --end 2021-04-01T25", "--end",
     "2021-04-01T25: hour must be in 0..23 (use YYYY-MM-DD or YYYY-MM-DDTHH)"),
    ("cache ls --start 2021-04-31 --end 2021-05-01", "--start",
     "2021-04-31: day is out of range for month (use YYYY-MM-DD or YYYY-MM-DDTHH)"),
    ("ingest SRC --start 2021-04-01 --end 2021-04-01 --workers 0", "--workers", "0: must be >= 1"),
    ("ingest SRC --start 2021-04-01 --end 2021-04-01 --workers two", "--workers", "two: not an integer"),
    ("ingest SRC --start 2021-04-01 --end 2021-04-01 --dry-run --price-per-gb -1", "--price-per-gb",
     "-1: must be >= 0"),
    ("ingest SRC --start 2021-04-01 --end 2021-04-01 --dry-run --price-per-gb nan", "--price-per-gb",
     "nan: not a finite number"),
    ("ingest SRC --start 2021-04-01 --end 2021-04-01 --ttl-days -1", "--ttl-days", "-1: must be >= 0"),
])
def test_cli_a_bad_value_names_its_option_and_value(three_days, tmp_path, capsys, cmd, flag, want):
    from wydot_lab import cli

    root = tmp_path / "cache"
    root.mkdir()
    argv = [str(three_days) if a == "SRC" else a for a in cmd.split()] + ["--cache", str(root)]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"wydot-lab {argv[0]}: error: argument {flag}: {want}"
    assert not any(root.iterdir())  # nothing ran


@pytest.mark.parametrize("action", ["ls", "verify", "clear"])
def test_cli_cache_on_a_local_root_that_does_not_exist_is_an_error(tmp_path, capsys, action):
    from wydot_lab import cli

    missing = tmp_path / "cahce"
    for root in (str(missing), f"file://{missing}"):
        assert cli.main(["cache", action, "--cache", root]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == f"wydot-lab cache: error: no cache at {root} (nothing was ever ingested there; " \
                               "check --cache)\n"
    assert not missing.exists()
    (tmp_path / "a-file").write_text("x")
    assert cli.main(["cache", action, "--cache", str(tmp_path / "a-file")]) == 2
    assert "is a file, not a cache folder" in capsys.readouterr().err
    missing.mkdir()  # an existing, empty root: nothing cached, not an error
    assert cli.main(["cache", action, "--cache", str(missing)]) == 0
    capsys.readouterr()
    assert cli.main(["cache", action, "--cache", "memory://wydot-lab-empty-cache"]) == 0  # remote: may be empty
