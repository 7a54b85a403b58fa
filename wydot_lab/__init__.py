"""wydot_lab: misbehaviour detection on WYDOT connected-vehicle BSMs, from S3 to results.

The front door: one documented entry per stage, imported on first use so that
`import wydot_lab as wl` stays fast.

>>> import wydot_lab as wl
>>> params = wl.load_params("params/default.yaml")
>>> wl.fetch_range(params)                    # S3 or a folder -> the Parquet cache
>>> records = wl.load_range(params)           # the cached range, a Dask DataFrame
>>> results = wl.run_experiment(params, "outputs/exp")

Stages: `load_params` (a typed `Params`); `write_synthetic` (a synthetic corpus in the bucket
layout); `fetch_range`, `plan_range` (S3 or a folder into the cache); `load_range` (the one way to
read a cached range); `ingest_file`, `ingest_paths`, `validate_records` (records -> valid |
quarantine | non-BSM); `records_frame` (one row per transmission), `featurize`; `apply_attack`,
`draw_attackers`; `run_experiment`; `trajectory_map`, `attack_map`, `interactive_map`,
`DateRangePicker`. Modules stay importable as before
(`wydot_lab.cache`, `wydot_lab.features`, ...).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute); never a submodule's name (importing it would shadow the entry)
_ENTRIES: dict[str, tuple[str, str]] = {
    "load_params": ("config", "load"),
    "Params": ("config", "Params"),
    "write_synthetic": ("synth", "write_corpus"),
    "plan_range": ("fetch", "plan_range"),
    "fetch_range": ("fetch", "fetch_range"),
    "load_range": ("fetch", "load_range"),
    "ingest_file": ("ingest", "ingest_file"),
    "ingest_paths": ("ingest", "ingest_paths"),
    "validate_records": ("validate", "check"),
    "records_frame": ("experiment", "records_frame"),
    "featurize": ("experiment", "featurize"),
    "apply_attack": ("attacks", "apply"),
    "draw_attackers": ("experiment", "draw_attackers"),
    "run_experiment": ("experiment", "run"),
    "trajectory_map": ("maps", "trajectory_map"),
    "attack_map": ("maps", "attack_map"),
    "interactive_map": ("maps", "interactive"),
    "DateRangePicker": ("widgets", "DateRangePicker"),
}
_MODULES = {"attacks", "cache", "cli", "config", "dedup", "dtg_csv", "errors", "evaluation", "experiment", "features",
            "fetch", "frames", "geo", "ingest", "layout", "maps", "models", "parse", "pipeline",
            "plots", "report", "schema", "source", "synth", "validate", "widgets"}

__all__ = sorted(_ENTRIES)


def __getattr__(name: str) -> Any:
    if name in _ENTRIES:
        module, attr = _ENTRIES[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        globals()[name] = value  # next lookups skip this hook
        return value
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ENTRIES) | _MODULES)
