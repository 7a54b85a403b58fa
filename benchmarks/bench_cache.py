"""Cache payoff: loading a cached day vs fetching + ingesting it cold from a local S3 server.

The day is uploaded to moto's S3 server on 127.0.0.1 in the real bucket layout
(hour folders, a few objects per hour, records built from a real ODE v6 record).
Cold = `fetch.fetch` into an empty cache (list, download, parse, validate, split by
hour, write Parquet + manifests, then the day copy). Cached = `cache.load(day).compute()`:
the whole day as a pandas frame, including the SHA-256 check of every file read; it reads
the day copy, and is printed beside the same load from the 24 hour files (`day_copies=False`).
Usage: python benchmarks/bench_cache.py [records_per_hour]
"""
from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from wydot_lab import cache, fetch  # noqa: E402
from wydot_lab.source import Source, SourceSpec  # noqa: E402

import s3_server as S  # noqa: E402  (test helper: moto server + corpus in the bucket layout)
from verdict import verdict  # noqa: E402  (benchmarks/, the script's folder)

TARGET = 50.0
PEER = 19.7  # an earlier pipeline's cached/cold ratio
DAY = "2021-04-01"


def main(per_hour: int = 3000) -> float:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[k]
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true",
                      AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    h0 = dt.datetime(2021, 4, 1, tzinfo=dt.timezone.utc)
    objects = S.corpus(h0 - dt.timedelta(hours=1), 26, per_hour=per_hour, seed=11, objects=5, extras=False)
    mb = sum(len(v) for v in objects.values()) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        server = S.MotoS3().start()
        try:
            S.upload(server.client(), "bench", objects)
            spec = SourceSpec(url="s3://bench", endpoint_url=server.url)
            colds = []
            for i in range(2):
                root = f"{tmp}/cold{i}"
                t = time.perf_counter()
                summary = fetch.fetch(Source(spec), cache.Cache(root), DAY, DAY)
                colds.append(time.perf_counter() - t)
        finally:
            server.stop()  # the cached load below is offline, as in a fresh notebook
        del objects, server
        gc.collect()
        n = summary["valid"]
        assert summary["days_compacted"] == 1, summary
        warms, hours = [], []
        for _ in range(15):  # min of many, interleaved: other processes share the cores
            t = time.perf_counter()
            df = cache.load(DAY, DAY, root).compute()
            warms.append(time.perf_counter() - t)
            t = time.perf_counter()
            by_hour = cache.load(DAY, DAY, root, day_copies=False).compute()
            hours.append(time.perf_counter() - t)
        assert len(df) == n == 24 * per_hour, (len(df), n)
        assert df.equals(by_hour)
        arrows = []
        for _ in range(9):
            t = time.perf_counter()
            table = cache.load_table(DAY, DAY, root)
            arrows.append(time.perf_counter() - t)
        assert table.num_rows == n
    arrow, cold, warm, hour = min(arrows), min(colds), min(warms), min(hours)
    ratio = cold / warm
    med = statistics.median
    print(f"cache: cached day {n:,} rec via load().compute() -> pandas: min {warm * 1000:.0f} ms, median "
          f"{med(warms) * 1000:.0f} ms ({n / warm:,.0f} rec/s); via load_table -> Arrow: min {arrow * 1000:.0f} ms, "
          f"median {med(arrows) * 1000:.0f} ms; cold fetch+ingest {cold:.2f} s ({mb:.0f} MB from local S3)")
    print(f"cache: the same load from the 24 hour files (day_copies=False): min {hour * 1000:.0f} ms, median "
          f"{med(hours) * 1000:.0f} ms ({cold / hour:.1f}x; median {med(colds) / med(hours):.1f}x)")
    print(f"cache: cached/cold speed-up {ratio:.1f}x (median {med(colds) / med(warms):.1f}x; Arrow {cold / arrow:.1f}x)"
          f"  (target >= {TARGET:.0f}x: {verdict(ratio, TARGET)}; earlier pipeline {PEER}x)")
    return ratio


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
