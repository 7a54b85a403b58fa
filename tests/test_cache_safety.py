"""Issue 15: nothing cached is ever lost, nothing short is accepted, no input takes memory
without bound. Local sources are folders; S3 is moto's server on 127.0.0.1 behind the
fault-injecting proxy of s3_server.py; full and read-only disks are small tmpfs mounts."""
from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from test_source_s3 import aws_env, env_creds, moto, spec  # noqa: F401 - shared fixtures

from wydot_lab import cache as cache_mod
from wydot_lab import fetch, ingest
from wydot_lab.source import Source, SourceError, SourceLayoutError, SourceSpec, with_retries

import s3_server as S

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.timezone.utc
HOUR = dt.timedelta(hours=1)
H0 = dt.datetime(2021, 4, 1, tzinfo=UTC)
DAY = "2021-04-01"
PER_HOUR = 10
GIB = 1 << 30


def day_objects() -> dict[str, bytes]:
    return S.corpus(H0 - HOUR, 26, per_hour=PER_HOUR, seed=9, objects=2)


@pytest.fixture
def src(tmp_path) -> Path:
    return S.write_folder(tmp_path / "src", day_objects())


def local(src: Path, root, start=DAY, end=DAY, **kw) -> dict:
    return fetch.fetch(Source(SourceSpec(url=str(src))), cache_mod.Cache(str(root)), start, end, **kw)


def valid_cached(root) -> int:
    return sum(r["valid"] for r in cache_mod.ls(str(root)))


def run_cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wydot_lab.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=300)


def summary(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- 1. never replace records with fewer


def test_an_empty_or_moved_source_never_wipes_the_cache(src, tmp_path):
    root = tmp_path / "cache"
    full = local(src, root)
    assert full["valid"] == valid_cached(root) > 0
    moved = src.rename(tmp_path / "moved")
    (tmp_path / "src").mkdir()  # the folder is there, empty (a bucket listing empty)
    with pytest.raises(fetch.VanishedObjects, match=r"objects cached in 24 hours are gone .* --mirror-deletions") as e:
        local(tmp_path / "src", root)
    assert len(e.value.vanished) == 26 * 2  # every object of the 24 hours and the folders either side
    assert valid_cached(root) == full["valid"]  # nothing rewritten
    proc = run_cli("ingest", str(tmp_path / "src"), "--start", DAY, "--end", DAY, "--cache", str(root))
    out = summary(proc)
    assert proc.returncode == fetch.EXIT_VANISHED == 4 and out["status"] == "refused"
    assert sorted(out["vanished_objects"]) == sorted(e.value.vanished)  # every one named
    assert valid_cached(root) == full["valid"]
    shutil.rmtree(tmp_path / "src")
    moved.rename(tmp_path / "src")
    assert local(src, root)["fetched"] == 0  # back: all served from cache


def test_a_deleted_object_stops_the_run_unless_deletions_are_mirrored(src, tmp_path):
    root = tmp_path / "cache"
    full = local(src, root)
    gone = next((src / "wydot/BSM/2021/04/01/05").iterdir())
    gone.unlink()
    key = str(gone.relative_to(src))
    with pytest.raises(fetch.VanishedObjects, match=key) as e:
        local(src, root)
    assert e.value.vanished == {key: "2021-04-01T04"}  # the first of the hours built from it
    assert valid_cached(root) == full["valid"]
    mirrored = local(src, root, mirror_deletions=True)
    assert mirrored["vanished_objects"] == [key] and mirrored["fetched"] == 3
    assert valid_cached(root) < full["valid"]


# ---------------------------------------------------------------- 2. every download verified


@pytest.fixture
def bucket(moto):
    name = f"wydot-{uuid.uuid4().hex[:10]}"
    S.upload(moto.client(), name, day_objects())
    return name


def s3(bucket: str, endpoint: str, root, **kw) -> dict:
    return fetch.fetch(Source(spec(f"s3://{bucket}", endpoint)), cache_mod.Cache(str(root)), DAY, DAY, **kw)


@pytest.mark.parametrize("fault", ["short", "corrupt", "reset"])
def test_a_short_or_spoiled_body_is_retried_and_never_accepted(moto, bucket, env_creds, tmp_path, fault):
    clean = s3(bucket, moto.url, tmp_path / "clean")
    with S.FlakyProxy(moto.port, **{fault: {"/2021/04/01/07/": 1, "/2021/04/01/12/": 1}}) as proxy:
        res = s3(bucket, proxy.url, tmp_path / "cache")
    assert proxy.failed[f"{fault}:/2021/04/01/07/"] == 1 and proxy.failed[f"{fault}:/2021/04/01/12/"] == 1
    assert res["valid"] == clean["valid"] and res["quarantined"] == clean["quarantined"]
    assert res["status"] == "complete" and res["missing"] == []


@pytest.mark.parametrize("fault", ["short", "corrupt"])
def test_a_body_spoiled_every_time_fails_its_hour(moto, bucket, env_creds, tmp_path, fault):
    with S.FlakyProxy(moto.port, **{fault: {"/2021/04/01/07/": -1}}) as proxy:
        with pytest.raises(SourceError, match=r"2021-04-01T07 .*(incomplete download|still failing) after 3 attempts "
                                              r".*(bytes|MD5|FlexibleChecksumError)") as e:
            s3(bucket, proxy.url, tmp_path / "strict")
        assert e.value.kind == "transient"
        res = s3(bucket, proxy.url, tmp_path / "partial", allow_partial=True)
    assert res["status"] == "partial" and res["missing"] == ["2021-04-01T07"]
    assert cache_mod.Cache(str(tmp_path / "partial")).partition(H0 + 7 * HOUR).manifest["status"] == "missing"
    assert "2021-04-01T07" not in {r["hour"] for r in cache_mod.ls(str(tmp_path / "strict"))}


def test_a_botocore_checksum_error_is_retried_like_a_transient_fault():
    from botocore.exceptions import FlexibleChecksumError

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise FlexibleChecksumError(error_msg="Expected checksum x did not match calculated checksum y")
        return "ok"

    sp = SourceSpec(url="s3://b", attempts=4, backoff_s=0)
    assert with_retries(flaky, sp, "obj", sleep=lambda s: None) == "ok" and len(calls) == 3
    def always():
        raise FlexibleChecksumError(error_msg="mismatch")

    with pytest.raises(SourceError, match="still failing after 2 attempts .*FlexibleChecksumError") as e:
        with_retries(always, SourceSpec(url="s3://b", attempts=2, backoff_s=0), "obj", sleep=lambda s: None)
    assert e.value.kind == "transient"


# ---------------------------------------------------------------- 3. partial runs say so


def test_allow_partial_with_hours_missing_exits_3(moto, bucket, env_creds, tmp_path):
    with S.FlakyProxy(moto.port, fail={"/2021/04/01/07/": -1}) as proxy:
        proc = run_cli("ingest", f"s3://{bucket}", "--endpoint-url", proxy.url, "--start", DAY, "--end", DAY,
                       "--cache", str(tmp_path / "c"), "--allow-partial")
    out = summary(proc)
    assert proc.returncode == fetch.EXIT_PARTIAL == 3
    assert out["status"] == "partial" and out["missing"] == ["2021-04-01T07"]


# ---------------------------------------------------------------- 4. symlinks


def test_ingest_and_validate_agree_on_symlinks(src, tmp_path):
    hour = src / "wydot/BSM/2021/04/01/03"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    body = next(hour.iterdir()).read_bytes()
    (outside / "secret").write_bytes(body)
    inside = src / "wydot/BSM/stash"
    inside.mkdir()
    (inside / "kept").write_bytes(body.replace(b"\n", b"\n", 1))
    (hour / "linked-inside").symlink_to(inside / "kept")
    (hour / "linked-outside").symlink_to(outside / "secret")
    (hour / "dangling").symlink_to(tmp_path / "nowhere")
    moved = src / "wydot/BSM/2021/04/01/04"  # a whole hour folder linked to outside the root
    shutil.move(str(moved), str(outside / "04"))
    moved.symlink_to(outside / "04")

    res = local(src, tmp_path / "cache", allow_partial=True)
    refused = res["refused_objects"]
    assert set(refused) == {"wydot/BSM/2021/04/01/03/linked-outside", "wydot/BSM/2021/04/01/03/dangling",
                            *(f"wydot/BSM/2021/04/01/04/{p.name}" for p in (outside / "04").iterdir())}
    assert refused["wydot/BSM/2021/04/01/03/linked-outside"].startswith("symlink_outside_source")
    assert refused["wydot/BSM/2021/04/01/03/dangling"].startswith("symlink_dangling")
    m3 = cache_mod.Cache(str(tmp_path / "cache")).partition(H0 + 3 * HOUR).manifest
    assert "wydot/BSM/2021/04/01/03/linked-inside" in {o["key"] for o in m3["source_objects"]}

    proc = run_cli("validate", str(src))
    out = summary(proc)
    assert proc.returncode == 0
    assert set(out["refused_files"]) == {str(src / k) for k in refused}
    assert set(out["refused_files"].values()) == set(refused.values())
    assert ingest.iter_files([src]).count(hour / "linked-inside") == 1


# ---------------------------------------------------------------- 5. bounded memory


PEAK = "import resource, sys; print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file=sys.stderr)"


def test_hostile_objects_stay_under_a_gibibyte_in_ingest_and_validate(tmp_path):
    """Each object alone in a source hour folder (ingest) and given to validate, each in a fresh
    process that reports its own peak RSS."""
    for k, (name, path) in enumerate(S.write_hostile(tmp_path / "hostile").items()):
        src = tmp_path / f"src{k}"
        folder = src / "wydot/BSM/2021/04/01/00"
        folder.mkdir(parents=True)
        os.link(path, folder / path.name)
        runs = {
            "ingest": ("from wydot_lab import cli; cli.main(['ingest', sys.argv[1], '--start', '2021-04-01T00:00',"
                       " '--end', '2021-04-01T01:00', '--cache', sys.argv[2]])", str(src),
                       str(tmp_path / f"cache{k}")),
            "validate": ("from wydot_lab import cli; cli.main(['validate', sys.argv[1]])", str(path), ""),
        }
        for what, (code, a, b) in runs.items():
            proc = subprocess.run([sys.executable, "-c", f"import sys\n{code}\n{PEAK}", a, b], capture_output=True,
                                  text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
            peak = int(proc.stderr.rsplit("PEAK ", 1)[1])
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            assert peak < GIB, (name, what, peak)
            assert out["records"] == out["valid"] + out["quarantined"] + out["non_bsm"] + out["blank"], out
            assert out["records"] == (50 << 20 if "blank" in name else 1), (name, what, out)


def test_an_object_past_max_object_mb_is_quarantined_whole(tmp_path):
    line = S.bsm_line(H0, "ABCD0001", 41.3, -105.6).encode() + b"\n"
    r = ingest.ingest_bytes(gzip.compress(line * 1000), "big.gz", max_bytes=100_000)
    assert r.counts()["quarantined"] == r.counts()["records"] == 1 and r.valid.num_rows == 0
    assert r.quarantine.column("reasons").to_pylist()[0][0].startswith("object_too_large (more than 100,000 bytes")
    assert ingest.ingest_bytes(gzip.compress(line * 1000), "big.gz", max_bytes=10 << 20).valid.num_rows == 1000
    folder = tmp_path / "src/wydot/BSM/2021/04/01/00"
    folder.mkdir(parents=True)
    (folder / "obj").write_bytes(line * 1000)
    proc = run_cli("ingest", str(tmp_path / "src"), "--start", "2021-04-01T00:00", "--end", "2021-04-01T01:00",
                   "--cache", str(tmp_path / "c"), "--max-object-mb", "0.05")
    assert proc.returncode == 0 and summary(proc)["quarantined"] == 1 and summary(proc)["valid"] == 0


# ---------------------------------------------------------------- 6. full disk, read-only root


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs of that size (root only; `make stress` does the same)."""
    mounted = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"mnt{len(mounted)}"
        mnt.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                          capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (needs root); `make stress` reports the same case")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, tmpfs):
    small_mount = tmpfs("400k")
    src = S.write_folder(tmp_path / "src", S.corpus(H0 - HOUR, 26, per_hour=400, seed=2, objects=1))
    proc = run_cli("ingest", str(src), "--start", DAY, "--end", DAY, "--cache", str(small_mount / "c"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("wydot-lab ingest: error: ")
    assert "no space left on the device" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(small_mount.rglob(".tmp-*"))  # no half partition, no temp folder
    res = cache_mod.verify(str(small_mount / "c"))
    assert res["corrupt"] == {} and res["ok"] == res["checked"] > 0  # the hours written are whole


def test_a_read_only_root_serves_a_cached_range_and_clear_says_one_line(src, tmpfs):
    small_mount = tmpfs("16m")
    root = small_mount / "c"
    full = local(src, root)
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    proc = run_cli("ingest", str(src), "--start", DAY, "--end", DAY, "--cache", str(root))
    assert proc.returncode == 0, proc.stderr
    assert summary(proc)["valid"] == full["valid"] and summary(proc)["cached"] == 24
    assert len(cache_mod.load(DAY, DAY, str(root)).compute()) == full["valid"]
    proc = run_cli("cache", "clear", "--cache", str(root))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "read-only filesystem" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- 7. verify vs a clear in flight


def test_verify_reports_a_missing_manifest_as_damage(src, tmp_path):
    root = tmp_path / "cache"
    local(src, root)
    part = cache_mod.Cache(str(root)).partition_path(H0 + 5 * HOUR)
    os.remove(f"{part}/manifest.json")
    res = cache_mod.verify(str(root))
    assert res["corrupt"] == {"2021-04-01T05": "no manifest.json: a damaged partition (the next ingest refetches it)"}


def test_verify_never_calls_a_partition_being_cleared_corrupt(src, tmp_path):
    root = tmp_path / "cache"
    local(src, root, "2021-04-01T00:00", "2021-04-01T03:00")
    cache = cache_mod.Cache(str(root))
    hour = H0 + HOUR
    path = Path(cache.partition_path(hour))
    results = {}
    with cache.lock(hour):  # a clear in flight: files going, the folder next
        (path / "valid.parquet").unlink()
        t = threading.Thread(target=lambda: results.update(cache_mod.verify(str(root), mark=True)))
        t.start()
        time.sleep(1.0)  # verify meets the half-removed partition and waits for its lock
        shutil.rmtree(path)
    t.join(timeout=120)
    assert results["corrupt"] == {} and results["checked"] == 2


# ---------------------------------------------------------------- 8. mistakes get the fix


def test_a_source_url_with_pilot_and_type_names_the_url_to_use(src, tmp_path):
    with pytest.raises(SourceLayoutError, match=rf"includes the pilot/type folders .*use {src}\b"):
        local(src / "wydot" / "BSM", tmp_path / "cache")
    proc = run_cli("ingest", str(src / "wydot"), "--start", DAY, "--end", DAY, "--cache", str(tmp_path / "c"))
    assert proc.returncode == 2 and f"use {src} " in proc.stderr
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").rglob("manifest.json"))
    assert local(src, tmp_path / "c")["fetched"] == 24  # nothing blocks the corrected run


def test_s3_url_with_pilot_and_type_and_a_mistyped_pilot(moto, bucket, env_creds, tmp_path):
    sp = SourceSpec(url=f"s3://{bucket}/wydot/BSM", endpoint_url=moto.url, attempts=2, backoff_s=0.01)
    with pytest.raises(SourceLayoutError, match=rf"use s3://{bucket} "):
        fetch.fetch(Source(sp), cache_mod.Cache(str(tmp_path / "c")), DAY, DAY)
    proc = run_cli("ingest", f"s3://{bucket}", "--endpoint-url", moto.url, "--pilot", "wydott", "--start", DAY,
                   "--end", DAY, "--cache", str(tmp_path / "c"))
    assert proc.returncode == 2 and "holds wydot, no 'wydott'" in proc.stderr
    assert not list((tmp_path / "c").rglob("manifest.json"))


def test_an_unreachable_source_with_a_cached_range_says_add_offline(moto, bucket, env_creds, tmp_path):
    root = tmp_path / "c"
    s3(bucket, moto.url, root)
    with pytest.raises(SourceError, match="every hour of this range is cached: add --offline"):
        s3(bucket, f"http://127.0.0.1:{S.closed_port()}", root)
    assert s3(bucket, f"http://127.0.0.1:{S.closed_port()}", root, offline=True)["cached"] == 24
