"""Feature extraction throughput (pandas entry and Dask path) on synthetic I-80 messages,
printed beside its peer: a per-vehicle groupby-apply of the same kind of features."""
from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd

from wydot_lab import config, features, synth
from wydot_lab.frames import ID, TIME, to_frame

from verdict import verdict  # noqa: E402  (benchmarks/, the script's folder)

TARGET = 50_000  # rec/s, pandas entry; no published figure exists, this is our own floor


def _peer(frame: pd.DataFrame) -> float:
    """Row-order groupby-apply (how an earlier pipeline computed history): 4 features only."""
    t0 = time.perf_counter()

    def per_vehicle(g: pd.DataFrame) -> pd.DataFrame:
        g = g.sort_values(TIME)
        dt_s = g[TIME].diff().dt.total_seconds()
        dv = g["coreData_speed"].diff()
        return pd.DataFrame({"dt": dt_s, "dv": dv, "acc": dv / dt_s,
                             "roll": g["coreData_speed"].rolling(5, min_periods=1).std()})

    frame.groupby(ID, group_keys=False)[[TIME, "coreData_speed"]].apply(per_vehicle)
    return len(frame) / (time.perf_counter() - t0)


def main() -> None:
    table = synth.generate(dt.date(2021, 4, 1), days=1, vehicles=50, rate_hz=0.1, seed=3)  # 432,000 records
    frame = to_frame(table)
    n = len(frame)
    features.featurize_frame(frame.iloc[:1000])  # warm-up (geometry index, imports)
    t0 = time.perf_counter()
    features.featurize_frame(frame)
    pandas_rate = n / (time.perf_counter() - t0)

    import dask.dataframe as dd

    params = config.Params()
    ddf = dd.from_pandas(frame, npartitions=4)
    t0 = time.perf_counter()
    features.featurize(ddf, params.features.window).compute(scheduler="threads")
    dask_rate = n / (time.perf_counter() - t0)
    peer = _peer(frame)
    print(f"features (pandas, {len(features.FEATURES)} features): {pandas_rate:,.0f} rec/s  "
          f"(target >= {TARGET:,}: {verdict(pandas_rate, TARGET)}; "
          f"per-vehicle groupby-apply of 4 features {peer:,.0f} rec/s)")
    print(f"features (dask threads, 4 partitions + shuffle): {dask_rate:,.0f} rec/s  on {n:,} records, "
          f"{frame[ID].nunique()} vehicles, {np.round(n / max(frame[ID].nunique(), 1)):.0f} msgs/vehicle")


if __name__ == "__main__":
    main()
