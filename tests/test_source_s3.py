"""Source + fetch + cache against a real S3 endpoint: moto's server on 127.0.0.1.

Credentials live only in temporary AWS config files and monkeypatched env vars.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import pytest

from wydot_lab import cache as cache_mod
from wydot_lab import cli, config, fetch
from wydot_lab.source import Source, SourceError, SourceSpec

import s3_server as S

pytestmark = pytest.mark.s3
ROOT = Path(__file__).resolve().parent.parent
UTC = dt.timezone.utc
DAY = "2021-04-01"
H0 = dt.datetime(2021, 4, 1, tzinfo=UTC)
HOUR = dt.timedelta(hours=1)
PER_HOUR = 20
# folder index 0 is 2021-03-31T23: its 3 spilled records belong to 2021-04-01T00 (in range);
# folder 5 (T04) holds 4 records of T05; folder 24 (T23) holds 2 of the next day (out of range)
SPILL = {0: 3, 5: 4, 24: 2}
EXPECT_VALID = 24 * PER_HOUR + 3 + 4
EXPECT_EXTRAS = 24 * 2  # per in-range folder: 2 objects x (1 blank, 1 broken, 1 TIM)


def day_objects() -> dict[str, bytes]:
    return S.corpus(H0 - HOUR, 26, per_hour=PER_HOUR, seed=3, spill=SPILL)


@pytest.fixture(scope="module")
def moto():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = S.MotoS3().start()
    yield server
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """No real AWS settings leak in: empty config files, no keys, no instance metadata."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws_config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws_credentials"))
    return tmp_path


@pytest.fixture
def env_creds(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return aws_env


@pytest.fixture
def bucket(moto):
    name = f"wydot-{uuid.uuid4().hex[:10]}"
    S.upload(moto.client(), name, day_objects())
    return name


def spec(url: str, endpoint: str, **kw) -> SourceSpec:
    fast = dict(attempts=3, backoff_s=0.01, sdk_attempts=1, connect_timeout_s=2, read_timeout_s=10)
    return SourceSpec(url=url, endpoint_url=endpoint, **{**fast, **kw})


def run_fetch(sp: SourceSpec, root, **kw) -> dict:
    return fetch.fetch(Source(sp), cache_mod.Cache(str(root)), DAY, DAY, **kw)


def cache_rows(root) -> dict[str, dict]:
    return {r["hour"]: r for r in cache_mod.ls(str(root))}


# ---------------------------------------------------------------- fetch, cache, offline


def test_day_fetched_cached_then_loaded_with_bucket_gone(moto, bucket, env_creds, tmp_path):
    root = tmp_path / "cache"
    first = run_fetch(spec(f"s3://{bucket}", moto.url), root)
    assert (first["fetched"], first["cached"], first["missing"]) == (24, 0, [])
    assert first["valid"] == EXPECT_VALID
    assert (first["quarantined"], first["non_bsm"], first["blank"]) == (EXPECT_EXTRAS,) * 3
    assert first["records"] == first["valid"] + first["quarantined"] + first["non_bsm"] + first["blank"]
    # every line read is accounted for: 2 padding folders of 20 own + 6 extra lines, plus 2 spilled to 04-02
    assert first["out_of_range"] == 2 * (PER_HOUR + 6) + 2
    assert first["lines_read"] == first["records"] + first["out_of_range"] + first["skipped_cached"]
    assert first["files"] == 48 and first["objects_downloaded"] == 52

    again = run_fetch(spec(f"s3://{bucket}", moto.url), root)
    assert (again["fetched"], again["cached"], again["objects_downloaded"]) == (0, 24, 0)
    for k in ("records", "valid", "quarantined", "non_bsm", "blank", "files"):
        assert again[k] == first[k], k  # counts come from the manifests when served from cache

    before = cache_mod.load(DAY, DAY, str(root)).compute()
    S.delete_bucket(moto.client(), bucket)
    after = cache_mod.load(DAY, DAY, str(root)).compute()
    assert len(after) == EXPECT_VALID
    assert after.equals(before)
    assert after["metadata_generatedAt"].min() >= H0 and after["metadata_generatedAt"].max() < H0 + 24 * HOUR

    with pytest.raises(SourceError) as err:  # the source really is gone ...
        run_fetch(spec(f"s3://{bucket}", moto.url), root)
    assert err.value.kind == "no_such_bucket"
    params = config.from_dict({"source": {"url": f"s3://{bucket}", "endpoint_url": moto.url},
                               "dates": {"start": DAY, "end": DAY}, "cache": {"root": str(root)}})
    with pytest.warns(cache_mod.CacheWarning, match="source unavailable"):
        df = fetch.load_range(params, progress=False)  # ... and the notebook facade still loads offline
    assert len(df.compute()) == EXPECT_VALID


def test_records_one_folder_away_land_in_their_hour(moto, bucket, env_creds, tmp_path):
    root = tmp_path / "cache"
    run_fetch(spec(f"s3://{bucket}", moto.url), root)
    rows = cache_rows(root)
    assert rows["2021-04-01T00"]["valid"] == PER_HOUR + 3  # 3 came from the 2021-03-31T23 folder
    assert rows["2021-04-01T04"]["valid"] == PER_HOUR
    assert rows["2021-04-01T05"]["valid"] == PER_HOUR + 4  # 4 came from the T04 folder
    assert rows["2021-04-01T23"]["valid"] == PER_HOUR  # its 2 next-day records were dropped (counted)
    t05 = cache_mod.load("2021-04-01T05:00", "2021-04-01T06:00", str(root)).compute()
    assert len(t05) == PER_HOUR + 4
    assert (t05["source_object"].str.contains("/2021/04/01/04/")).sum() == 4
    assert t05["metadata_generatedAt"].dt.hour.eq(5).all()
    assert t05["metadata_generatedAt"].is_monotonic_increasing
    m = cache_mod.Cache(str(root)).partition(H0 + 5 * HOUR).manifest
    assert {o["key"].split("/")[5] for o in m["source_objects"]} == {"04", "05", "06"}


def test_etag_change_refetches_dependent_hours_only(moto, bucket, env_creds, tmp_path):
    root = tmp_path / "cache"
    run_fetch(spec(f"s3://{bucket}", moto.url), root)
    client = moto.client()
    key = next(k for k in day_objects() if "/2021/04/01/10/" in k)
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    lines = body.decode().splitlines()
    client.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines[:5]) + "\n").encode())  # new ETag, fewer lines
    res = run_fetch(spec(f"s3://{bucket}", moto.url), root)
    assert res["fetched"] == 3 and res["cached"] == 21  # T09, T10, T11 read the T10 folder
    assert res["refetched"] == {"stale": 3}
    assert cache_rows(root)["2021-04-01T10"]["valid"] == PER_HOUR - (PER_HOUR // 2 - 5)


def test_ttl_expiry_refetches(moto, bucket, env_creds, tmp_path):
    root = tmp_path / "cache"
    sp = spec(f"s3://{bucket}", moto.url)
    run_fetch(sp, root, ttl_days=1)
    assert run_fetch(sp, root, ttl_days=1)["cached"] == 24
    later = dt.datetime.now(UTC) + dt.timedelta(days=2)
    res = run_fetch(sp, root, ttl_days=1, now=later)
    assert (res["fetched"], res["refetched"]) == (24, {"expired": 24})
    time.sleep(0.3)  # and with the real clock: a 0.1 s TTL has run out
    assert run_fetch(sp, root, ttl_days=0.1 / 86400)["fetched"] == 24
    assert run_fetch(sp, root, ttl_days=None)["cached"] == 24  # none = never expires


def _flip(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))


def test_flipped_byte_is_detected_never_returned_and_refetched(moto, bucket, env_creds, tmp_path):
    root = tmp_path / "cache"
    sp = spec(f"s3://{bucket}", moto.url)
    assert run_fetch(sp, root)["days_compacted"] == 1
    good = cache_mod.load(DAY, DAY, str(root)).compute()
    assert good.equals(cache_mod.load(DAY, DAY, str(root), day_copies=False).compute())
    _flip(root / "source=wydot/type=BSM/date=2021-04-01/hour=03/valid.parquet")
    # the whole day reads its (intact) day copy; anything reading hour 03 itself refuses it
    assert cache_mod.load(DAY, DAY, str(root)).compute().equals(good)
    with pytest.raises(cache_mod.CorruptPartition, match="hour=03.*SHA-256"):
        cache_mod.load(f"{DAY}T02:00", f"{DAY}T05:00", str(root)).compute()
    assert cache_rows(root)["2021-04-01T03"]["status"] == "corrupt"  # hidden until refetched
    with pytest.raises(cache_mod.CorruptPartition, match="hour=03"):  # the day too, until refetched
        cache_mod.load(DAY, DAY, str(root))
    res = run_fetch(sp, root)
    # the refetched hour has the same bytes, so the copy is still good
    assert (res["fetched"], res["refetched"], res["days_compacted"]) == (1, {"corrupt": 1}, 0)
    assert cache_mod.load(DAY, DAY, str(root)).compute().equals(good)
    assert cache_mod.verify(str(root))["corrupt"] == {}


def test_a_corrupt_day_copy_is_dropped_and_the_hours_serve(moto, bucket, env_creds, tmp_path):
    root = tmp_path / "cache"
    sp = spec(f"s3://{bucket}", moto.url)
    run_fetch(sp, root)
    good = cache_mod.load(DAY, DAY, str(root), day_copies=False).compute()
    copy = root / "source=wydot/type=BSM/date=2021-04-01/_day"
    _flip(copy / "valid.parquet")
    with pytest.warns(cache_mod.CacheWarning, match="2021-04-01 day copy valid.parquet SHA-256 mismatch: dropped it"):
        assert cache_mod.load(DAY, DAY, str(root)).compute().equals(good)  # never the corrupt copy
    assert not copy.exists() and not [r for r in cache_mod.ls(str(root)) if r["day_copy"]]
    res = run_fetch(sp, root)  # rebuilt from the cached hours: nothing downloaded
    assert (res["cached"], res["fetched"], res["objects_downloaded"], res["days_compacted"]) == (24, 0, 0, 1)
    assert all(r["day_copy"] for r in cache_mod.ls(str(root)))
    _flip(copy / "valid.parquet")
    v = cache_mod.verify(str(root))
    assert v["corrupt"] == {} and v["day_copies"] == {"checked": 1, "ok": 0,
                                                     "corrupt": {DAY: "day copy valid.parquet SHA-256 mismatch"}}
    assert not copy.exists() and cache_mod.load(DAY, DAY, str(root)).compute().equals(good)


# ---------------------------------------------------------------- credential modes


def _iam_user(moto, name: str, allow: bool) -> tuple[str, str]:
    iam = moto.client("iam")
    iam.create_user(UserName=name)
    if allow:
        doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(doc))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture
def iam_enforced(moto):
    """moto checks signatures and IAM policies (a real denied identity, not a fake error)."""
    users = {n: _iam_user(moto, f"{n}-{uuid.uuid4().hex[:6]}", allow) for n, allow in
             [("reader", True), ("nobody", False)]}
    moto.set_auth(0)
    yield users
    moto.set_auth(None)


def _write_profiles(aws_env: Path, users: dict) -> None:
    (aws_env / "aws_credentials").write_text("".join(
        f"[{n}]\naws_access_key_id = {k}\naws_secret_access_key = {s}\n\n" for n, (k, s) in users.items()))
    (aws_env / "aws_config").write_text("".join(f"[profile {n}]\nregion = us-east-1\n\n" for n in users))


def test_profile_mode_uses_that_profile_and_denied_identity_is_explained(moto, bucket, aws_env, iam_enforced):
    _write_profiles(aws_env, iam_enforced)
    assert not Source(spec(f"s3://{bucket}", moto.url, profile="reader")).list_hour(H0) == []
    with pytest.raises(SourceError) as err:
        Source(spec(f"s3://{bucket}", moto.url, profile="nobody")).list_hour(H0)
    e = err.value
    assert e.kind == "access_denied"
    assert f"s3://{bucket}" in str(e) and "AWS profile 'nobody'" in str(e)
    assert "--profile" in str(e) and "requires credentials" in str(e) and "\n" not in str(e)


def test_unknown_profile_message(moto, bucket, aws_env):
    with pytest.raises(SourceError) as err:
        Source(spec(f"s3://{bucket}", moto.url, profile="nope")).list_hour(H0)
    assert err.value.kind == "profile_not_found"
    assert "aws configure --profile nope" in str(err.value) and bucket in str(err.value)


def test_default_chain_reads_environment_and_rejects_unknown_keys(moto, bucket, aws_env, iam_enforced, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_enforced["reader"][0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", iam_enforced["reader"][1])
    assert len(Source(spec(f"s3://{bucket}", moto.url)).list_hour(H0)) == 2
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000")
    with pytest.raises(SourceError) as err:
        Source(spec(f"s3://{bucket}", moto.url)).list_hour(H0)
    assert err.value.kind == "bad_credentials" and "aws configure" in str(err.value)
    assert "AKIANOTAREALKEY" not in str(err.value)  # never echo key material


def test_missing_credentials_message(moto, bucket, aws_env):
    with pytest.raises(SourceError) as err:
        run_fetch(spec(f"s3://{bucket}", moto.url), aws_env / "cache")
    msg = str(err.value)
    assert err.value.kind == "missing_credentials"
    for part in (f"s3://{bucket}", "default credential chain", "aws configure", "--profile", "--endpoint-url",
                 "requires credentials"):
        assert part in msg, part
    assert not (aws_env / "cache").exists() or not any((aws_env / "cache").rglob("*.parquet"))


def test_anonymous_only_when_explicit(moto, bucket, aws_env):
    with S.FlakyProxy(moto.port) as proxy:
        assert len(Source(spec(f"s3://{bucket}", proxy.url, anonymous=True)).list_hour(H0)) == 2
        assert proxy.requests and all("Authorization" not in h for _, _, h in proxy.requests)
        with pytest.raises(SourceError) as err:  # not anonymous by default: no silent fallback
            Source(spec(f"s3://{bucket}", proxy.url)).list_hour(H0)
        assert err.value.kind == "missing_credentials"
    with S.FlakyProxy(moto.port, deny_unsigned=True) as proxy:  # the real bucket's behaviour today
        with pytest.raises(SourceError) as err:
            Source(spec(f"s3://{bucket}", proxy.url, anonymous=True)).list_hour(H0)
        assert err.value.kind == "access_denied"
        assert "drop --anonymous" in str(err.value) and "anonymous" in str(err.value)


def test_requester_pays_sends_the_header(moto, bucket, env_creds, tmp_path):
    for rp in (True, False):
        with S.FlakyProxy(moto.port) as proxy:
            res = run_fetch(spec(f"s3://{bucket}", proxy.url, requester_pays=rp), tmp_path / f"c{rp}")
            assert res["fetched"] == 24
            reads = [h for m, _, h in proxy.requests if m == "GET"]
            assert reads
            payer = [h.get("x-amz-request-payer") for h in reads]
            assert payer == (["requester"] * len(reads) if rp else [None] * len(reads))


def test_no_such_bucket_message(moto, env_creds):
    with pytest.raises(SourceError) as err:
        Source(spec("s3://usdot-its-cvpilot-public-data", moto.url)).list_hour(H0)
    msg = str(err.value)
    assert err.value.kind == "no_such_bucket"
    assert "s3://usdot-its-cvpilot-public-data" in msg and "usdot-its-cvpilot-publicdata" in msg
    assert "--endpoint-url" in msg


def test_unreachable_endpoint_message_is_quick(env_creds):
    t = time.perf_counter()
    endpoint = f"http://127.0.0.1:{S.closed_port()}"
    with pytest.raises(SourceError) as err:
        Source(spec("s3://some-bucket", endpoint, connect_timeout_s=1)).list_hour(H0)
    assert time.perf_counter() - t < 15
    assert err.value.kind == "unreachable"
    assert endpoint in str(err.value) and "--endpoint-url" in str(err.value) and "s3://some-bucket" in str(err.value)


# ---------------------------------------------------------------- retries, partial runs


def test_transient_503_is_retried(moto, bucket, env_creds, tmp_path):
    with S.FlakyProxy(moto.port, fail={"/2021/04/01/05/": 2, "prefix=wydot%2FBSM%2F2021%2F04%2F01%2F07": 1}) as proxy:
        res = run_fetch(spec(f"s3://{bucket}", proxy.url), tmp_path / "cache")
    assert sum(proxy.failed.values()) == 3  # listing and object reads both failed once or twice ...
    assert res["fetched"] == 24 and res["missing"] == [] and res["valid"] == EXPECT_VALID  # ... and recovered


def test_read_timeout_is_retried(moto, bucket, env_creds, tmp_path):
    with S.FlakyProxy(moto.port, slow={"/2021/04/01/09/": 1}, delay_s=2.5) as proxy:
        res = run_fetch(spec(f"s3://{bucket}", proxy.url, read_timeout_s=1), tmp_path / "cache")
    assert proxy.failed["slow:/2021/04/01/09/"] == 1
    assert res["fetched"] == 24 and res["valid"] == EXPECT_VALID


def test_failing_hour_fails_the_run_or_is_recorded_with_allow_partial(moto, bucket, env_creds, tmp_path):
    root = tmp_path / "cache"
    with S.FlakyProxy(moto.port, fail={"/2021/04/01/07/": -1}) as proxy:
        with pytest.raises(SourceError) as err:
            run_fetch(spec(f"s3://{bucket}", proxy.url), tmp_path / "strict")
        assert "2021-04-01T07" in str(err.value) and err.value.kind == "transient"
        assert sorted(cache_rows(tmp_path / "strict")) == [f"2021-04-01T{h:02d}" for h in range(6)]  # whole hours
        res = run_fetch(spec(f"s3://{bucket}", proxy.url), root, allow_partial=True)
    assert res["missing"] == ["2021-04-01T07"] and res["incomplete"] == ["2021-04-01T06", "2021-04-01T08"]
    assert res["lines_read"] == res["records"] + res["out_of_range"] + res["dropped_missing"]
    rows = cache_rows(root)
    assert rows["2021-04-01T07"]["status"] == "missing" and rows["2021-04-01T06"]["status"] == "incomplete"
    m7 = cache_mod.Cache(str(root)).partition(H0 + 7 * HOUR).manifest
    assert m7["status"] == "missing" and "2021-04-01T07" in m7["error"]
    with pytest.warns(cache_mod.CacheWarning, match="2021-04-01T07"):
        partial = cache_mod.load(DAY, DAY, str(root)).compute()
    assert len(partial) < EXPECT_VALID
    healed = run_fetch(spec(f"s3://{bucket}", moto.url), root)
    assert healed["fetched"] == 3 and healed["missing"] == [] and healed["valid"] == EXPECT_VALID


# ---------------------------------------------------------------- CLI


def _cli_env(aws_env: Path, creds: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(aws_env / "aws_config"),
               AWS_SHARED_CREDENTIALS_FILE=str(aws_env / "aws_credentials"), PYTHONPATH=str(ROOT))
    if creds:
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return env


def test_cli_missing_credentials_one_line_exit_2(moto, bucket, aws_env):
    proc = subprocess.run(
        [sys.executable, "-m", "wydot_lab.cli", "ingest", f"s3://{bucket}", "--endpoint-url", moto.url,
         "--start", DAY, "--end", DAY, "--cache", str(aws_env / "cache")],
        capture_output=True, text=True, env=_cli_env(aws_env, creds=False), timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err_lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(err_lines) == 1 and "no AWS credentials" in err_lines[0] and "aws configure" in err_lines[0]
    assert proc.stdout.strip() == ""


def test_cli_dry_run_prints_plan_and_cost_and_downloads_nothing(moto, bucket, env_creds, tmp_path, capsys):
    root = tmp_path / "cache"
    run_fetch(spec(f"s3://{bucket}", moto.url), root)
    cache_mod.clear(str(root), "2021-04-01T10:00", "2021-04-01T12:00")  # 2 hours to fetch again
    with S.FlakyProxy(moto.port) as proxy:
        code = cli.main(["ingest", f"s3://{bucket}", "--endpoint-url", proxy.url, "--start", DAY, "--end", DAY,
                         "--cache", str(root), "--dry-run", "--price-per-gb", "100"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    plan = summary["plan"]
    assert proxy.counts["GET"] == 0 and proxy.counts["LIST"] >= 26  # listed, nothing downloaded
    assert plan["already_cached"] == 22 and plan["to_fetch"] == 2
    assert plan["to_fetch_hours"] == ["2021-04-01T10..2021-04-01T11"] and plan["folders"] == 4  # T09..T12
    sizes = {k: len(v) for k, v in day_objects().items()}
    want = sum(v for k, v in sizes.items() if k.split("/")[5] in {"09", "10", "11", "12"} and "/04/01/" in k)
    assert plan["bytes"] == want and plan["objects"] == 8
    assert plan["estimated_cost_usd"] == pytest.approx(want / 2**30 * 100, rel=1e-4)
    assert summary["fetched"] == 0 and summary["cached"] == 22
    for k in ("records", "valid", "quarantined", "non_bsm", "blank", "files", "missing", "seconds"):
        assert k in summary
    assert len(cache_mod.ls(str(root))) == 22


def test_cli_ingest_then_cache_ls_verify_clear(moto, bucket, env_creds, tmp_path, capsys):
    root = str(tmp_path / "cache")
    args = ["ingest", f"s3://{bucket}", "--endpoint-url", moto.url, "--start", DAY, "--end", DAY, "--cache", root]
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["fetched"] == 24 and out["records"] == out["valid"] + out["quarantined"] + out["non_bsm"] + out["blank"]
    assert cli.main(["cache", "ls", "--cache", root]) == 0
    ls = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ls["partitions"] == 24 and ls["valid"] == EXPECT_VALID and ls["day_copies"] == 1
    f = next(Path(root).rglob("hour=12/quarantine.parquet"))
    f.write_bytes(f.read_bytes()[:-3] + b"abc")
    assert cli.main(["cache", "verify", "--cache", root]) == 1
    v = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(v["corrupt"]) == ["2021-04-01T12"] and v["ok"] == 23
    f = next(Path(root).rglob("_day/valid.parquet"))
    f.write_bytes(f.read_bytes()[:-3] + b"abc")
    assert cli.main(["cache", "verify", "--cache", root]) == 1  # a corrupt day copy alone fails verify too
    out = capsys.readouterr()
    v = json.loads(out.out.strip().splitlines()[-1])
    assert list(v["corrupt"]) == ["2021-04-01T12"] and list(v["day_copies"]["corrupt"]) == [DAY]
    assert "corrupt day copy" in out.err + out.out
    assert cli.main(["cache", "clear", "--cache", root, "--start", "2021-04-01T00:00",
                     "--end", "2021-04-01T06:00"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["removed"] == 6
    assert len(cache_mod.ls(root)) == 18


# ---------------------------------------------------------------- concurrency and crashes

CHILD = """
import json, sys, time, os
sys.path.insert(0, {root!r})
from wydot_lab import cache, fetch
from wydot_lab.source import Source, SourceSpec
{patch}
open(sys.argv[1] + ".ready", "w").close()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
sp = SourceSpec(url={url!r}, endpoint_url={endpoint!r}, attempts=2, backoff_s=0.01)
res = fetch.fetch(Source(sp), cache.Cache({cache!r}, lock_timeout_s=120), "2021-04-01", "2021-04-01")
print(json.dumps(res.as_dict()))
"""


def _spawn(code: str, tag: Path, go: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, str(tag), str(go)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path: Path, timeout: float = 90) -> None:
    t = time.monotonic()
    while not path.exists():
        assert time.monotonic() - t < timeout, f"timed out waiting for {path}"
        time.sleep(0.02)


def test_two_processes_ingesting_the_same_day_leave_one_copy(moto, bucket, env_creds, tmp_path):
    root = tmp_path / "cache"
    code = CHILD.format(root=str(ROOT), patch="", url=f"s3://{bucket}", endpoint=moto.url, cache=str(root))
    go = tmp_path / "go"
    procs = [_spawn(code, tmp_path / f"p{i}", go, _cli_env(env_creds, True)) for i in range(2)]
    for i in range(2):
        _wait_for(tmp_path / f"p{i}.ready")
    go.touch()  # both start together
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=240)
        assert p.returncode == 0, stderr[-2000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert sorted(o["fetched"] for o in outs) == [0, 24]  # each hour written exactly once
    assert sorted(o["days_compacted"] for o in outs) == [0, 1]  # and the day copy once
    assert all(o["fetched"] + o["cached"] == 24 and o["valid"] == EXPECT_VALID for o in outs)
    v = cache_mod.verify(str(root))
    assert v["ok"] == 24 and v["day_copies"] == {"checked": 1, "ok": 1, "corrupt": {}}
    assert not list(root.rglob(".tmp-*")) and not list(root.rglob(".old-*"))
    df = cache_mod.load(DAY, DAY, str(root)).compute()
    assert len(df) == EXPECT_VALID and not df.duplicated(["source_object", "source_line"]).any()
    assert df.equals(cache_mod.load(DAY, DAY, str(root), day_copies=False).compute())


KILL_PATCH = """
orig = cache.Cache._swap
def _swap(self, tmp, final):
    if final.endswith("hour=03"):
        open(sys.argv[1] + ".paused", "w").close()
        time.sleep(600)
    return orig(self, tmp, final)
cache.Cache._swap = _swap
"""


def test_killed_ingest_leaves_no_visible_partial_partition(moto, bucket, env_creds, tmp_path):
    root = tmp_path / "cache"
    code = CHILD.format(root=str(ROOT), patch=KILL_PATCH, url=f"s3://{bucket}", endpoint=moto.url, cache=str(root))
    go = tmp_path / "go"
    go.touch()
    proc = _spawn(code, tmp_path / "k", go, _cli_env(env_creds, True))
    try:
        _wait_for(tmp_path / "k.paused")  # T03's files are written in its temp folder, not yet renamed
        os.kill(proc.pid, signal.SIGKILL)  # while holding all 24 locks
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(root.rglob(".tmp-hour=03-*/valid.parquet"))  # it died mid-write ...
    rows = cache_rows(root)
    assert sorted(rows) == ["2021-04-01T00", "2021-04-01T01", "2021-04-01T02"]  # ... and only whole hours show
    assert all(r["status"] == "fresh" for r in rows.values())
    with pytest.warns(cache_mod.CacheWarning):
        assert len(cache_mod.load(DAY, DAY, str(root)).compute()) == 3 * PER_HOUR + 3
    t = time.perf_counter()
    res = fetch.fetch(Source(spec(f"s3://{bucket}", moto.url)), cache_mod.Cache(str(root), lock_timeout_s=20),
                      DAY, DAY)
    assert time.perf_counter() - t < 20  # the dead process's locks were released by the OS
    assert (res["fetched"], res["cached"]) == (21, 3)
    assert not list(root.rglob(".tmp-*"))  # leftovers swept under the lock
    assert cache_mod.verify(str(root))["ok"] == 24


def test_killed_day_copy_writer_leaves_the_hours_serving(moto, bucket, env_creds, tmp_path):
    root = tmp_path / "cache"
    patch = KILL_PATCH.replace('final.endswith("hour=03")', 'final.endswith("/_day")')
    code = CHILD.format(root=str(ROOT), patch=patch, url=f"s3://{bucket}", endpoint=moto.url, cache=str(root))
    go = tmp_path / "go"
    go.touch()
    proc = _spawn(code, tmp_path / "k", go, _cli_env(env_creds, True))
    try:
        _wait_for(tmp_path / "k.paused")  # every hour written, the day copy in its temp folder
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(root.rglob(".tmp-day-*/valid.parquet")) and not list(root.rglob("_day"))
    rows = cache_mod.ls(str(root))
    assert len(rows) == 24 and all(r["status"] == "fresh" and not r["day_copy"] for r in rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache_mod.CacheWarning)  # every hour is there: nothing to warn about
        by_hour = cache_mod.load(DAY, DAY, str(root)).compute()
    assert len(by_hour) == EXPECT_VALID
    res = fetch.fetch(Source(spec(f"s3://{bucket}", moto.url)), cache_mod.Cache(str(root), lock_timeout_s=20), DAY, DAY)
    assert (res["cached"], res["fetched"], res["days_compacted"]) == (24, 0, 1)
    assert not list(root.rglob(".tmp-*")) and all(r["day_copy"] for r in cache_mod.ls(str(root)))
    assert cache_mod.load(DAY, DAY, str(root)).compute().equals(by_hour)


def test_cli_ingest_help_says_what_dry_run_does(capsys):
    with pytest.raises(SystemExit):
        cli.main(["ingest", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    dry = text.split("--dry-run ", 1)[1].split("--price-per-gb PRICE_PER_GB egress")[0]  # its entry in the options list
    for word in ("objects", "bytes", "cached", "egress cost", "downloads nothing"):
        assert word in dry, (word, dry)
