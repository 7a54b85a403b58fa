"""`make stress`: faults, kills, concurrency, full and read-only disks, hostile files, on loopback only.

A moto S3 server on 127.0.0.1 holds one day (26 hour folders, 2 objects each); a clean ingest
of it is the reference. Every case then runs `wydot-lab ingest` (or the library) against it,
through the fault-injecting proxy of tests/s3_server.py where it applies, and compares the
cache with the reference: `records lost` counts valid records of hours the cache serves as
complete that differ from the reference, plus records of hours cached before the case that it
no longer serves. Hours a run declares missing (`--allow-partial`) are listed, not lost. Prints
a table (case, outcome, records lost, seconds) and exits 1 on any loss or unexpected outcome.

Full and read-only disks use small tmpfs mounts (root only; said in the table otherwise).
Everything is bounded in time: each subprocess has a timeout, the whole run takes a few minutes.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from wydot_lab import cache as cache_mod  # noqa: E402
from wydot_lab import fetch  # noqa: E402
from wydot_lab.source import Source, SourceSpec  # noqa: E402

import s3_server as S  # noqa: E402

UTC = dt.timezone.utc
H0 = dt.datetime(2021, 4, 1, tzinfo=UTC)
HOUR = dt.timedelta(hours=1)
DAY = "2021-04-01"
GIB = 1 << 30
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, "PYTHONPATH": str(ROOT),
       "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
       "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
ROWS: list[tuple[str, str, int, float, bool]] = []


def ingest_cmd(bucket: str, endpoint: str, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "wydot_lab.cli", "ingest", f"s3://{bucket}", "--endpoint-url", endpoint,
            "--start", DAY, "--end", DAY, "--cache", str(root), *extra]


def cli(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wydot_lab.cli", *argv], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def served(root: Path) -> dict[str, int]:
    """{hour: valid} of the hours the cache serves as complete (fresh)."""
    if not root.exists():
        return {}
    return {r["hour"]: r["valid"] for r in cache_mod.ls(str(root)) if r["status"] == "fresh"}


def lost(root: Path, ref: dict[str, int], before: dict[str, int] | None = None) -> int:
    now = served(root)
    wrong = sum(abs(ref[h] - v) for h, v in now.items() if h in ref)
    gone = sum(v for h, v in (before or {}).items() if h not in now)
    return wrong + gone


def sound(root: Path) -> bool:
    """No corrupt partition and no half-written (visible) one."""
    if not root.exists():
        return True
    res = cache_mod.verify(str(root), mark=False)
    return not res["corrupt"] and not res["day_copies"]["corrupt"]


def case(name: str):
    def wrap(fn):
        def go(*a):
            t = time.perf_counter()
            try:
                outcome, n, ok = fn(*a)
            except Exception as err:  # noqa: BLE001 - a crashed case is a failed case, in the table
                outcome, n, ok = f"CRASH {type(err).__name__}: {str(err).splitlines()[0][:90]}", 0, False
            ROWS.append((name, outcome, n, time.perf_counter() - t, ok))
            print(f"  {name}: {outcome} (lost {n})", file=sys.stderr, flush=True)
        return go
    return wrap


def spec(bucket: str, endpoint: str, **kw) -> SourceSpec:
    fast = dict(attempts=4, backoff_s=0.05, sdk_attempts=1, connect_timeout_s=2, read_timeout_s=2)
    return SourceSpec(url=f"s3://{bucket}", endpoint_url=endpoint, **{**fast, **kw})


def lib_fetch(bucket: str, endpoint: str, root: Path, **kw) -> dict:
    return fetch.fetch(Source(spec(bucket, endpoint)), cache_mod.Cache(str(root)), DAY, DAY, **kw)


# ---------------------------------------------------------------- cases


@case("proxy: 503/500 bursts, resets, stalls, short and spoiled bodies")
def proxy_faults(moto, bucket, ref, work):
    faults = {"fail": {"/2021/04/01/03/": 2, "/2021/04/01/09/": 1}, "reset": {"/2021/04/01/05/": 2},
              "slow": {"/2021/04/01/11/": 1}, "short": {"/2021/04/01/14/": 2, "/2021/04/01/15/": 1},
              "corrupt": {"/2021/04/01/18/": 2}}
    outs = []
    for status in (503, 500):
        root = work / f"proxy-{status}"
        with S.FlakyProxy(moto.port, status=status, delay_s=2.5, **faults) as proxy:
            res = lib_fetch(bucket, proxy.url, root)
        outs.append(f"{status}: {res['status']}, {sum(proxy.failed.values())} faults")
        n = lost(root, ref)
        if res["status"] != "complete" or n or served(root) != ref or not sound(root):
            return "; ".join(outs) + " -> differs from the clean run", n or 1, False
    return "complete, equal to the clean run (" + "; ".join(outs) + ")", 0, True


@case("proxy: short bodies every time, --allow-partial")
def short_forever(moto, bucket, ref, work):
    root = work / "short-forever"
    with S.FlakyProxy(moto.port, short={"/2021/04/01/07/": -1}) as proxy:
        proc = run(ingest_cmd(bucket, proxy.url, root, "--allow-partial"))
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    n = lost(root, ref)
    ok = proc.returncode == 3 and out["status"] == "partial" and out["missing"] == ["2021-04-01T07"] and sound(root)
    healed = run(ingest_cmd(bucket, moto.url, root))
    ok = ok and healed.returncode == 0 and served(root) == ref
    return (f"exit {proc.returncode}, status {out['status']}, missing {out['missing']}; "
            f"healed by a clean re-run (exit {healed.returncode})"), n, ok and n == 0


@case("SIGKILL of an ingest at 1.5/2.5/3.5/5 s, then re-run")
def kills(moto, bucket, ref, work):
    notes, total = [], 0
    for at in (1.5, 2.5, 3.5, 5.0):
        root = work / f"kill-{at}"
        with S.FlakyProxy(moto.port, slow={"/wydot/BSM/": 10_000}, delay_s=0.4) as proxy:
            p = subprocess.Popen(ingest_cmd(bucket, proxy.url, root), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=ENV)
            time.sleep(at)
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        before = served(root)
        n = lost(root, ref)
        ok = sound(root)
        again = run(ingest_cmd(bucket, moto.url, root))
        n += lost(root, ref, before)
        total += n
        notes.append(f"{at}s: {len(before)} h kept")
        if not ok or again.returncode or served(root) != ref:
            return "; ".join(notes) + " -> not healed", total or 1, False
    return "sound after each kill, equal after re-run (" + "; ".join(notes) + ")", total, total == 0


@case("4 concurrent ingests + verify/ls loops, one cache")
def concurrent(moto, bucket, ref, work):
    root = work / "concurrent"
    root.mkdir()
    stop = threading.Event()
    verify_bad, checks = [], [0]

    def checker():
        while not stop.is_set():
            v = cli("cache", "verify", "--cache", str(root))
            ls = cli("cache", "ls", "--cache", str(root))
            checks[0] += 1
            if v.returncode not in (0,) or ls.returncode:
                verify_bad.append((v.returncode, v.stderr.strip()[-200:], ls.returncode))

    with S.FlakyProxy(moto.port, slow={"/wydot/BSM/": 10_000}, delay_s=0.05) as proxy:
        t = threading.Thread(target=checker)
        t.start()
        procs = [subprocess.Popen(ingest_cmd(bucket, proxy.url, root), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(4)]
        codes = [p.wait(timeout=300) for p in procs]
        stop.set()
        t.join(timeout=120)
    n = lost(root, ref)
    ok = codes == [0, 0, 0, 0] and not verify_bad and served(root) == ref and sound(root)
    return (f"exits {codes}, {checks[0]} verify+ls rounds, {len(verify_bad)} reported a problem"
            + (f" ({verify_bad[0]})" if verify_bad else "")), n, ok and n == 0


@case("cache verify while cache clear + ingest rewrite, 6 rounds")
def verify_vs_clear(moto, bucket, ref, work):
    root = work / "verify-clear"
    run(ingest_cmd(bucket, moto.url, root))
    bad = 0
    for _ in range(6):
        clear = subprocess.Popen([sys.executable, "-m", "wydot_lab.cli", "cache", "clear", "--cache", str(root)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        v = cli("cache", "verify", "--cache", str(root))
        clear.wait(timeout=60)
        bad += v.returncode != 0
        run(ingest_cmd(bucket, moto.url, root))
    n = lost(root, ref)
    return f"{bad} of 6 verify runs reported a partition corrupt", n, bad == 0 and n == 0


def _mount(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@case("full disk (400 KB tmpfs cache root)")
def full_disk(moto, bucket, ref, work):
    mnt = work / "full"
    if not _mount(mnt, "400k"):
        return "not run: this machine does not allow a tmpfs mount (needs root)", 0, True
    try:
        proc = run(ingest_cmd(bucket, moto.url, mnt / "c"))
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        tmp_left = list(mnt.rglob(".tmp-*"))
        n = lost(mnt / "c", ref)
        ok = (proc.returncode == 2 and "no space left" in last and "Traceback" not in proc.stderr and not tmp_left
              and sound(mnt / "c"))
        return f"exit {proc.returncode}: {last[:110]}; {len(served(mnt / 'c'))} h whole, no temp left", n, ok
    finally:
        _umount(mnt)


@case("read-only cache root: cached range, load, clear")
def read_only(moto, bucket, ref, work):
    mnt = work / "ro"
    if not _mount(mnt, "32m"):
        return "not run: this machine does not allow a tmpfs mount (needs root)", 0, True
    try:
        run(ingest_cmd(bucket, moto.url, mnt / "c"))
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        again = run(ingest_cmd(bucket, moto.url, mnt / "c"))
        loaded = len(cache_mod.load(DAY, DAY, str(mnt / "c")).compute())
        clear = cli("cache", "clear", "--cache", str(mnt / "c"))
        n = lost(mnt / "c", ref)
        ok = (again.returncode == 0 and loaded == sum(ref.values()) and clear.returncode == 2
              and len(clear.stderr.strip().splitlines()) == 1 and "read-only" in clear.stderr)
        return f"ingest exit {again.returncode}, load {loaded} rows, clear: {clear.stderr.strip()[:70]}", n, ok
    finally:
        _umount(mnt)


@case("source emptied (the bucket lists nothing), then one object deleted")
def vanished(moto, bucket, ref, work):
    b, root = f"vanish-{uuid.uuid4().hex[:8]}", work / "vanished"
    objects = S.corpus(H0 - HOUR, 26, per_hour=150, seed=11, spill={0: 3, 5: 4})
    S.upload(moto.client(), b, objects)
    run(ingest_cmd(b, moto.url, root))
    one = sorted(objects)[10]
    moto.client().delete_object(Bucket=b, Key=one)
    deleted = run(ingest_cmd(b, moto.url, root))
    for key in objects:
        moto.client().delete_object(Bucket=b, Key=key)
    emptied = run(ingest_cmd(b, moto.url, root))
    out = [json.loads(p.stdout.strip().splitlines()[-1]) for p in (deleted, emptied)]
    n = lost(root, ref, ref)
    ok = (deleted.returncode == emptied.returncode == 4 and out[0]["vanished_objects"] == [one]
          and len(out[1]["vanished_objects"]) == len(objects) and served(root) == ref)
    return (f"exit {deleted.returncode} naming the deleted object, exit {emptied.returncode} naming all "
            f"{len(out[1]['vanished_objects'])}; cache kept"), n, ok and n == 0


@case("source URL with pilot/type (s3://bucket/wydot/BSM)")
def pilot_in_url(moto, bucket, ref, work):
    root = work / "pilot"
    proc = run(ingest_cmd(f"{bucket}/wydot/BSM", moto.url, root))
    ok = proc.returncode == 2 and f"use s3://{bucket} " in proc.stderr and not list(root.rglob("manifest.json"))
    return f"exit {proc.returncode}, one line naming s3://{bucket}, nothing cached", 0, ok


# runs argv[1:] as its only child and reports that child's peak RSS (bytes) on stderr
PEAK_OF_CHILD = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
                 "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, file=sys.stderr); "
                 "sys.exit(r.returncode)")


def hostile(moto, work) -> None:
    """Each hostile object alone in an hour folder of a bucket, ingested from S3 by `wydot-lab
    ingest` in a fresh process; its peak RSS from getrusage(RUSAGE_CHILDREN) of a wrapper process
    whose only child it is."""
    for label, path in S.write_hostile(work / "hostile").items():
        @case(f"hostile: {label} (S3 ingest)")
        def one(moto=moto, path=path):
            b = f"hostile-{uuid.uuid4().hex[:8]}"
            moto.client().create_bucket(Bucket=b)
            with open(path, "rb") as f:
                moto.client().put_object(Bucket=b, Key=f"wydot/BSM/2021/04/01/00/{path.name}", Body=f)
            proc = run([sys.executable, "-c", PEAK_OF_CHILD, sys.executable, "-m", "wydot_lab.cli", "ingest",
                        f"s3://{b}", "--endpoint-url", moto.url, "--start", "2021-04-01T00:00", "--end",
                        "2021-04-01T01:00", "--cache", str(work / b)], timeout=300)
            peak = int(proc.stderr.rsplit("PEAK ", 1)[1])
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            adds = out["records"] == out["valid"] + out["quarantined"] + out["non_bsm"] + out["blank"]
            ok = proc.returncode == 0 and adds and peak < GIB
            return (f"exit {proc.returncode}, peak RSS {peak / (1 << 20):.0f} MiB < 1024 MiB, "
                    f"{out['records']:,} records ({out['quarantined']} quarantined, {out['blank']:,} blank)"), 0, ok

        one()


def main() -> int:
    t0 = time.perf_counter()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    for k, v in ENV.items():
        if k.startswith("AWS_"):
            os.environ[k] = v
    work = Path(tempfile.mkdtemp(prefix="wydot-stress-"))
    moto = S.MotoS3().start()
    try:
        bucket = f"stress-{uuid.uuid4().hex[:8]}"
        S.upload(moto.client(), bucket, S.corpus(H0 - HOUR, 26, per_hour=150, seed=11, spill={0: 3, 5: 4}))
        ref_root = work / "reference"
        res = lib_fetch(bucket, moto.url, ref_root)
        ref = served(ref_root)
        print(f"reference: {res['valid']:,} valid records in {len(ref)} hours", file=sys.stderr)
        for c in (proxy_faults, short_forever, kills, concurrent, verify_vs_clear, full_disk, read_only, vanished,
                  pilot_in_url):
            c(moto, bucket, ref, work)
        hostile(moto, work)
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - t0
    w = max(len(r[0]) for r in ROWS)
    print(f"\n| {'case':<{w}} | outcome | records lost | s |")
    print(f"|{'-' * (w + 2)}|---------|-------------:|--:|")
    for name, outcome, n, secs, ok in ROWS:
        print(f"| {name:<{w}} | {'' if ok else 'FAIL: '}{outcome} | {n} | {secs:.1f} |")
    total_lost = sum(r[2] for r in ROWS)
    failed = [r[0] for r in ROWS if not r[4]]
    print(f"\nmake stress: {len(ROWS)} cases, {total_lost} records lost, {len(failed)} failed, {wall:.0f} s "
          f"(limit 600 s)")
    return 1 if total_lost or failed or wall > 600 else 0


if __name__ == "__main__":
    sys.exit(main())
