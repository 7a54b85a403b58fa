"""Scale: synthesise 1 M, 3 M and 10 M records (one day at 1 Hz, more vehicles), ingest them into
the cache and run the experiment (3 attacks x rules/random_forest x one share) on each.

Per size: seconds per stage (and the experiment's own stages, from its progress lines),
records/s, peak RSS of the whole process tree (the CLI and every worker process it starts,
sampled with psutil), and the ratio to the smallest size. Targets (issue 16): 10 M end to end
(ingest + experiment) <= 15 min and <= 4 GiB, and the 10 M run <= 11x the 1 M run.
Free disk is checked before each size (about 2.3 KB a record: NDJSON, cache, buckets); its
files are removed after it.
Usage: python benchmarks/bench_scale.py [SIZES]   SIZES (or env SIZES): millions, e.g. 1,3,10;
`make bench-scale` runs 1,3,10 (SIZES=1 for 1 M only); bare (as `make bench` runs it): 1 M only.
BENCH_MEMORY_LIMIT: each worker's memory limit (default 1.5GiB); BENCH_DIR: where the files go.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

from verdict import verdict  # noqa: E402  (benchmarks/, the script's folder)

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("wydot-lab"))
DAY = "2021-04-01"
SECONDS_A_DAY = 86_400
BYTES_A_RECORD = 2_300  # NDJSON ~2 KB + cache + buckets, measured at 1 M
TARGET_S, TARGET_GIB, TARGET_RATIO = 15 * 60, 4.0, 11.0
KINDS = [{"name": "const_offset", "min_m": 100, "max_m": 200}, {"name": "random_position"}, {"name": "data_replay"}]


class PeakRSS:
    """Peak summed RSS of a process and all its descendants, sampled every `every` s."""

    def __init__(self, pid: int, every: float = 0.2):
        self.pid, self.every, self.peak, self._stop = pid, every, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak


def run(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS bytes of the process tree, stderr) of one command; raises on failure."""
    t = time.perf_counter()
    with open(cwd / "stderr.log", "w+") as err:
        p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        rss = PeakRSS(p.pid)
        rc = p.wait()
        peak = rss.stop()
        err.seek(0)
        text = err.read()
    if rc:
        raise SystemExit(f"{' '.join(cmd[:3])} failed ({rc}):\n{text[-3000:]}")
    return time.perf_counter() - t, peak, text


def params_file(work: Path, source: Path, cache: Path) -> Path:
    p = yaml.safe_load((ROOT / "params" / "default.yaml").read_text())
    p["source"]["url"] = str(source)
    p["cache"]["root"] = str(cache)
    p["dates"] = {"start": DAY, "end": DAY}
    p["dask"] = {"scheduler": "local-cluster", "n_workers": 2, "threads_per_worker": 1,
                 "memory_limit": os.environ.get("BENCH_MEMORY_LIMIT", "1.5GiB")}
    p["attacks"].update(kinds=KINDS, extra_shares=[])
    p["model"].update(detectors=["rules", "random_forest"], n_estimators=20, train_sample_rows=200_000)
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def one_size(millions: float, base: Path) -> dict:
    vehicles = max(1, round(millions * 1e6 / SECONDS_A_DAY))
    need = vehicles * SECONDS_A_DAY * BYTES_A_RECORD
    free = shutil.disk_usage(base).free
    if free < need * 1.1:
        raise SystemExit(f"bench-scale: {millions:g} M records need ~{need / 1e9:.0f} GB free in {base}, "
                         f"{free / 1e9:.0f} GB are: set BENCH_DIR or SIZES")
    work = Path(tempfile.mkdtemp(prefix=f"bench-scale-{millions:g}M-", dir=base))
    try:
        src, cache, out = work / "ndjson", work / "cache", work / "out"
        synth_s, synth_rss, _ = run([CLI, "synth", "--out", str(src), "--vehicles", str(vehicles), "--rate", "1",
                                     "--days", "1", "--start", DAY], work)
        ingest_s, ingest_rss, _ = run([CLI, "ingest", str(src), "--start", DAY, "--end", DAY, "--cache", str(cache)],
                                      work)
        exp_s, exp_rss, log = run([CLI, "experiment", str(params_file(work, src, cache)), "--out", str(out)], work)
        records = int(re.search(r"experiment: (\d+) records", log).group(1))
        stages: dict[str, float] = {}
        for what, secs in re.findall(r"^\s+(.+?): [\d,]+ (?:records|tasks) in ([\d.]+) s", log, re.M):
            stage = what.split(" ")[0] if what.startswith(("attack", "score")) else what
            stages[stage] = stages.get(stage, 0.0) + float(secs)
        return {"millions": millions, "vehicles": vehicles, "records": records, "synth_s": synth_s,
                "ingest_s": ingest_s, "experiment_s": exp_s, "e2e_s": ingest_s + exp_s,
                "peak_gib": max(ingest_rss, exp_rss) / 2 ** 30, "ingest_gib": ingest_rss / 2 ** 30,
                "experiment_gib": exp_rss / 2 ** 30, "synth_gib": synth_rss / 2 ** 30, "stages": stages}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> None:
    sizes = [float(s) for s in (argv[1] if len(argv) > 1 else os.environ.get("SIZES", "1")).split(",") if s]
    base = Path(os.environ.get("BENCH_DIR", tempfile.gettempdir()))
    print(f"bench-scale: {', '.join(f'{s:g} M' for s in sizes)} records (one day at 1 Hz), ingest + experiment "
          f"(3 attacks x rules/random_forest x one share, local-cluster of 2 worker processes x "
          f"{os.environ.get('BENCH_MEMORY_LIMIT', '1.5GiB')}), in {base}")
    first = None
    for m in sizes:
        r = one_size(m, base)
        first = first or r
        ratio = r["e2e_s"] / first["e2e_s"]
        print(f"\n{r['records']:,} records ({r['vehicles']} vehicles): synth {r['synth_s']:.0f} s "
              f"(not counted), ingest {r['ingest_s']:.0f} s ({r['records'] / r['ingest_s']:,.0f} records/s, "
              f"{r['ingest_gib']:.2f} GiB), experiment {r['experiment_s']:.0f} s "
              f"({r['records'] / r['experiment_s']:,.0f} records/s, {r['experiment_gib']:.2f} GiB)")
        print("  experiment stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in r["stages"].items()))
        print(f"  end to end {r['e2e_s']:.0f} s ({r['records'] / r['e2e_s']:,.0f} records/s), peak RSS of the "
              f"process tree {r['peak_gib']:.2f} GiB, {ratio:.2f}x the {first['records']:,}-record run "
              f"({r['records'] / first['records']:.2f}x the records)")
        if m >= 10:
            vs_1m = (f"; <= {TARGET_RATIO:g}x the 1 M run: {verdict(TARGET_RATIO, ratio)}" if first["millions"] == 1
                     else " (run SIZES=1,10 for the ratio to the 1 M run)")
            print(f"  10 M end to end <= 15 min: {verdict(TARGET_S, r['e2e_s'])}; "
                  f"<= {TARGET_GIB:g} GiB: {verdict(TARGET_GIB, r['peak_gib'])}{vs_1m}")


if __name__ == "__main__":
    main(sys.argv)
