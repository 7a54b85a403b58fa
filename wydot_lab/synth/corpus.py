"""The drivers: `generate` (in memory), `write_corpus` (hours over a process pool, bytes
independent of the workers) and `write_from_params` (`make synth-data`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from wydot_lab import layout
from wydot_lab.config import RealismParams, SynthParams
from wydot_lab.schema import BSM_SCHEMA
from wydot_lab.synth.block import simulate_block
from wydot_lab.synth.defects import DEFECTS, KINDS, NOT_QUARANTINED, _with_defects, plan_defects
from wydot_lab.synth.fleet import BLOCK_ROWS, HOUR_MS, Fleet, make_fleet
from wydot_lab.synth.realism import make_messy
from wydot_lab.synth.table import to_table
from wydot_lab.synth.writer import format_chunks


def _hours(start, days: int) -> list[int]:
    t0 = layout.to_utc(start).replace(hour=0, minute=0, second=0, microsecond=0)
    first = int(t0.timestamp() * 1000)
    return [first + h * HOUR_MS for h in range(24 * days)]


def _units(vehicles: int, rate_hz: float, records_per_hour: int | None, hours: list[int]) -> list[tuple[int, int, int]]:
    """(hour_ms, block, blocks): continuous mode splits the fleet so a block stays <= BLOCK_ROWS."""
    per_hour = vehicles * 3600 * rate_hz if records_per_hour is None else records_per_hour
    blocks = max(1, min(vehicles, int(np.ceil(per_hour / BLOCK_ROWS)))) if records_per_hour is None else 1
    return [(h, b, blocks) for h in hours for b in range(blocks)]


def _simulate_units(start, days, vehicles, rate_hz, seed, records_per_hour, defect_share, grid=False, realism=None):
    fleet = make_fleet(vehicles, rate_hz, seed)
    messy = make_messy(vehicles, seed, realism or RealismParams())
    for h, b, nb in _units(vehicles, rate_hz, records_per_hour, _hours(start, days)):
        blk = simulate_block(fleet, rate_hz, seed, h, records_per_hour, b, nb, grid, messy)
        yield blk, plan_defects(seed, h, b, blk.objects, defect_share)


def generate(
    start,
    days: int = 1,
    vehicles: int = 100,
    rate_hz: float = 0.1,
    seed: int = 7,
    records_per_hour: int | None = None,
    truth: bool = False,
    defect_share: float = 0.0,
    schema_version: int = 6,
    j2735_grid: bool | None = None,
    realism: RealismParams | dict | None = None,
):
    """The corpus in memory as one BSM_SCHEMA table of its valid records (rows as written,
    `source_object` = the relative key); with truth=True also a DataFrame of the true
    positions, row-aligned. `defect_share` adds no rows: it only moves `source_line` past the
    defect lines `write_corpus` writes in between."""
    sp = SynthParams(
        records_per_hour=records_per_hour,
        defect_share=defect_share,  # the params' bounds, one copy
        schema_version=schema_version,
        j2735_grid=j2735_grid,
        realism=realism or {},
    )
    units = list(
        _simulate_units(start, days, vehicles, rate_hz, seed, records_per_hour, defect_share, sp.grid, sp.realism)
    )
    blocks = [b for b, _ in units]
    table = (
        pa.concat_tables([to_table(b, bad, schema_version) for b, bad in units]) if blocks else BSM_SCHEMA.empty_table()
    )
    if not truth:
        return table
    return table, pd.DataFrame({k: np.concatenate([b.truth[k] for b in blocks]) for k in blocks[0].truth})


def _write_unit(
    out: str,
    vehicles: int,
    rate_hz: float,
    seed: int,
    records_per_hour,
    defect_share: float,
    version: int,
    grid: bool,
    realism: RealismParams,
    unit,
) -> tuple[int, int, dict[str, int]]:
    """Simulate one (hour, block) and stream its objects, defect lines included, to disk chunk
    by chunk; returns (valid records, objects, defect lines by kind)."""
    h, b, nb = unit
    blk = simulate_block(
        _fleet(vehicles, rate_hz, seed),
        rate_hz,
        seed,
        h,
        records_per_hour,
        b,
        nb,
        grid,
        make_messy(vehicles, seed, realism),
    )
    bad = plan_defects(seed, h, b, blk.objects, defect_share)
    ranges = [(a, z) for _, a, z in blk.objects]
    for (key, a, z), chunks in zip(blk.objects, format_chunks(blk, ranges, version, grid)):
        path = Path(out) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        mine = bad.between(a, z)
        if len(mine.row):
            chunks = _with_defects(chunks, a, mine)
        with open(path, "wb") as f:
            for blob in chunks:
                f.write(blob)
    return len(blk.meta["t_ms"]), len(blk.objects), bad.counts()


@functools.lru_cache(maxsize=4)
def _fleet(vehicles: int, rate_hz: float, seed: int) -> Fleet:
    return make_fleet(vehicles, rate_hz, seed)


def write_corpus(
    out,
    start,
    days: int = 1,
    vehicles: int = 100,
    rate_hz: float = 0.1,
    seed: int = 7,
    records_per_hour: int | None = None,
    progress: Callable[[str], None] | None = None,
    workers: int | None = None,
    defect_share: float = 0.0,
    schema_version: int = 6,
    j2735_grid: bool | None = None,
    realism: RealismParams | dict | None = None,
) -> dict:
    """Write the corpus under `out` (bucket layout) as ODE `schema_version` (6..9) and return the
    CLI summary: its counts are what ingest finds in it, `defects` the defect lines by kind
    (DEFECTS). The bytes do not depend on `workers` (default: all CPUs when there are more than
    ~100k records). `j2735_grid` (default: on for 9 only): see the module doc."""
    t0 = time.perf_counter()
    sp = SynthParams(
        records_per_hour=records_per_hour,
        defect_share=defect_share,  # the params' bounds, one copy
        schema_version=schema_version,
        j2735_grid=j2735_grid,
        realism=realism or {},
    )
    hours = _hours(start, days)
    units = _units(vehicles, rate_hz, records_per_hour, hours)
    per_hour = vehicles * 3600 * rate_hz if records_per_hour is None else records_per_hour
    if workers is None:
        workers = (os.cpu_count() or 1) if per_hour * len(hours) > 100_000 else 1
    out = str(out)
    fn = functools.partial(
        _write_unit, out, vehicles, rate_hz, seed, records_per_hour, defect_share, schema_version, sp.grid, sp.realism
    )
    valid = files = 0
    defects: Counter = Counter()
    parallel = workers > 1 and len(units) > 1
    with ProcessPoolExecutor(workers) if parallel else contextlib.nullcontext() as pool:
        results = pool.map(fn, units, chunksize=max(1, len(units) // (8 * workers))) if parallel else map(fn, units)
        for i, (r, f, d) in enumerate(results, 1):
            valid, files = valid + r, files + f
            defects.update(d)
            if progress and i % 24 == 0:
                progress(f"synth: {i}/{len(units)} hour blocks, {valid + defects.total():,} records")
    secs = time.perf_counter() - t0
    records = valid + defects.total()
    by_place = Counter()
    for kind, n in defects.items():
        by_place[DEFECTS[kind].outcome if DEFECTS[kind].outcome in NOT_QUARANTINED else "quarantined"] += n
    return {
        "records": records,
        "valid": valid,
        "quarantined": by_place["quarantined"],
        "non_bsm": by_place["non_bsm"],
        "blank": by_place["blank"],
        "defects": {k: defects[k] for k in KINDS if defects[k]},
        "files": files,
        "seconds": round(secs, 3),
        "vehicles": vehicles,
        "hours": len(hours),
        "records_per_s": round(records / secs) if secs > 0 else None,
    }


def write_from_params(params_path, out, workers: int | None = None) -> dict:
    """`make synth-data`: the params file's whole `synth` section, realism included (the CLI's
    flags do not carry the realism block yet)."""
    from wydot_lab import config

    sp = config.load(params_path).synth
    return write_corpus(out, **{**sp.model_dump(), "start": str(sp.start)}, workers=workers)
