"""Progress of long per-partition work: records done, rate and ETA, on any Dask scheduler.

A live tqdm bar (terminal or notebook, `tqdm.auto`) advances by each finished task's records;
when stderr is a file or pipe there is no bar (carriage-return redraws would fill logs) and the
caller's progress callback gets one line per stage: records, seconds, records/s.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Sequence


def _live() -> bool:
    from tqdm.auto import tqdm

    return "notebook" in tqdm.__module__ or sys.stderr.isatty()


def compute(tasks: Sequence[Any], scheduler: Any, what: str, say: Callable[[str], None] | None = None,
            records: Sequence[int] | None = None) -> list:
    """`dask.compute(*tasks)` on `scheduler` (a name or a distributed Client), with progress when
    `say` is given: a bar of records (`records[i]`: task i's records; else tasks) and a closing line."""
    import dask

    if say is None or not tasks:
        return list(dask.compute(*tasks, scheduler=scheduler))
    from tqdm.auto import tqdm

    weights = list(records) if records is not None else [1] * len(tasks)
    unit = "rec" if records is not None else "task"
    t0 = time.perf_counter()
    with tqdm(total=sum(weights), desc=what, unit=unit, unit_scale=True, file=sys.stderr, leave=False,
              disable=not _live()) as bar:
        if hasattr(scheduler, "compute") and hasattr(scheduler, "gather"):  # a distributed Client
            from distributed import as_completed

            futures = scheduler.compute(list(tasks))
            where = {f.key: w for f, w in zip(futures, weights)}
            for f in as_completed(futures):
                bar.update(where[f.key])
            out = scheduler.gather(futures)
        else:
            from dask.callbacks import Callback

            where = {t.key: w for t, w in zip(tasks, weights)}

            class _Bar(Callback):
                def _posttask(self, key, result, dsk, state, worker_id):  # noqa: ANN001
                    if key in where:
                        bar.update(where[key])

            with _Bar():
                out = list(dask.compute(*tasks, scheduler=scheduler))
    s = time.perf_counter() - t0
    n = sum(weights)
    rate = f", {n / s:,.0f} records/s" if records is not None and s > 0 else ""
    say(f"  {what}: {n:,} {'records' if records is not None else 'tasks'} in {s:.1f} s{rate}")
    return list(out)
