"""Synthetic corpus speed: records/s written as ODE v6 NDJSON files, beside the earlier
pipeline's 15,600 rec/s.

Continuous mode (every vehicle transmits all day), written to a temporary folder with all
CPUs, then the same hours with one process. Usage: python benchmarks/bench_synth.py [vehicles]
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from wydot_lab import synth

from verdict import verdict  # noqa: E402  (benchmarks/, the script's folder)

TARGET = 150_000
EARLIER = 15_600


def main(vehicles: int = 8) -> None:
    synth.make_fleet(1, 1.0, 0)  # load the centre lines outside the timing
    tmp = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    try:
        runs = {}
        for workers in (None, 1):
            out = tmp / f"w{workers}"
            s = synth.write_corpus(out, "2021-04-01", days=1, vehicles=vehicles, rate_hz=0.5, seed=1, workers=workers)
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            runs[workers] = (s, size)
            shutil.rmtree(out)
        (s, size), (s1, _) = runs[None], runs[1]
        print(f"synth: {s['records_per_s']:,} rec/s written, all CPUs ({s['records']:,} records, "
              f"{size / 1e6:,.0f} MB, {s['seconds']:.1f} s)  (target >= {TARGET:,}: "
              f"{verdict(s['records_per_s'], TARGET)}; earlier pipeline {EARLIER:,})")
        print(f"synth: {s1['records_per_s']:,} rec/s written, one process")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
