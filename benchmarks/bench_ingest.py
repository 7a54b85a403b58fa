"""Ingest speed: NDJSON -> validated canonical Parquet, beside json.loads + pandas.json_normalize.

Same file, same run. The file is the 57 real ODE records of test_data/real_wydot
(v1..v9, real formatting) repeated to N lines, so both paths see real-world shapes.
Ours = `ingest.ingest_to_parquet` (valid, quarantine and non-BSM Parquet; a file this big
is split across all CPUs, one process is printed too); the peer is single-process pandas.
Usage: python benchmarks/bench_ingest.py [N]
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from wydot_lab import ingest

from verdict import verdict  # noqa: E402  (benchmarks/, the script's folder)

ROOT = Path(__file__).resolve().parent.parent
TARGET = 10.0
ROUNDS = 3


def make_file(path: Path, n: int) -> int:
    lines = [ln for f in sorted((ROOT / "test_data" / "real_wydot").glob("*.ndjson"))
             for ln in f.read_bytes().splitlines() if ln.strip()]
    reps = -(-n // len(lines))
    path.write_bytes(b"\n".join((lines * reps)[:n]) + b"\n")
    return n


def ours(path: Path, out: Path, workers: int) -> float:
    t = time.perf_counter()
    counts = ingest.ingest_to_parquet(path, out / "ours", workers=workers)
    assert counts["valid"] > 0
    return time.perf_counter() - t


def baseline(path: Path, out: Path) -> float:
    t = time.perf_counter()
    with open(path, "rb") as f:
        records = [json.loads(line) for line in f if line.strip()]
    df = pd.json_normalize(records)
    # nested partII lists have no stable Arrow type: the common path stringifies them
    for col in df.columns[df.dtypes == object]:  # noqa: E721 (pandas: an elementwise dtype test)
        if df[col].map(lambda v: isinstance(v, (list, dict))).any():
            df[col] = df[col].map(json.dumps)
    df.to_parquet(out / "baseline.parquet")
    return time.perf_counter() - t


def parser_choice(path: Path) -> str:
    """Why msgspec: parse-only throughput of both candidate parsers on the same bytes."""
    import pyarrow.json as pj

    from wydot_lab import parse

    data = path.read_bytes()
    lines = ingest.split_lines(data)
    t = time.perf_counter()
    for line in lines:
        parse.record_decoder.decode(line)
    t_msgspec = time.perf_counter() - t
    t = time.perf_counter()
    pj.read_json(path, read_options=pj.ReadOptions(block_size=1 << 24))
    t_arrow = time.perf_counter() - t
    n = len(lines)
    return (f"parse only: msgspec typed decoder {n / t_msgspec:,.0f} rec/s on 1 core  |  "
            f"pyarrow.json.read_json {n / t_arrow:,.0f} rec/s on {os.cpu_count()} threads "
            f"(and crashes on hostile input, apache/arrow#51305)")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "bsm.ndjson"
        make_file(path, n)
        size_mb = path.stat().st_size / 1e6
        # Rounds alternate the paths, so all see the same machine load and warm-up. Ours runs
        # as users get it for a file this size (spans over all CPUs) and on one process.
        cpus = os.cpu_count() or 1
        t_all, t_one, t_base = [], [], []
        for _ in range(ROUNDS):
            t_all.append(ours(path, tmp, cpus))
            t_one.append(ours(path, tmp, 1))
            t_base.append(baseline(path, tmp))
        choice = parser_choice(path)
    a, a1, b = n / min(t_all), n / min(t_one), n / min(t_base)
    per_round = sorted(tb / to for to, tb in zip(t_all, t_base))
    print(f"ingest NDJSON -> validated canonical Parquet: {a:,.0f} rec/s ({cpus} processes; {a1:,.0f} on 1)  |  "
          f"json.loads + json_normalize + to_parquet: {b:,.0f} rec/s  |  {a / b:.1f}x best vs best "
          f"({a1 / b:.1f}x on 1 process), per round {' '.join(f'{r:.1f}x' for r in per_round)} "
          f"(target >= {TARGET:.0f}x: {verdict(a / b, TARGET)})  [{n:,} records, {size_mb:.0f} MB, {ROUNDS} rounds]")
    print(choice)


if __name__ == "__main__":
    main()
