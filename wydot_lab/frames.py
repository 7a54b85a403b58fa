"""Pandas frames of the canonical schema, and their path-history crumbs as flat numpy arrays.

Attacks and features work on pandas frames; the crumb list column stays Arrow-backed
(`pd.ArrowDtype`) so it round-trips to `BSM_SCHEMA` unchanged and is read with Arrow
compute, never row by row in Python.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from wydot_lab.schema import BSM_SCHEMA, CRUMB, conform

CRUMBS = "partII_pathHistory_crumbData"
CRUMB_LIST = pa.list_(CRUMB)
ID, TIME = "coreData_id", "metadata_generatedAt"
LAT, LON = "coreData_position_lat", "coreData_position_long"
# Crumb offsets as ODE publishes WYDOT path history: crumb position = reported position
# + CRUMB_SIGN * offset. Real records (test_data/real_wydot) trail behind the vehicle only
# with -1 (tests/test_features.py checks it), i.e. offset = reported - crumb.
CRUMB_SIGN = -1.0


def to_frame(table: pa.Table) -> pd.DataFrame:
    """Canonical Arrow table -> pandas (crumbs kept as an Arrow-backed list column)."""
    table = conform(table)
    return table.to_pandas(types_mapper={CRUMB_LIST: pd.ArrowDtype(CRUMB_LIST)}.get)


def to_table(frame: pd.DataFrame) -> pa.Table:
    """Pandas frame (canonical columns, extra columns dropped) -> `BSM_SCHEMA` table."""
    cols = [c for c in BSM_SCHEMA.names if c in frame.columns]
    return conform(pa.Table.from_pandas(frame[cols], preserve_index=False))


def time_ns(series: pd.Series) -> np.ndarray:
    """Timestamps as int64 nanoseconds since the epoch (UTC)."""
    return pd.to_datetime(series, utc=True).dt.as_unit("ns").astype("int64").to_numpy()


MINUTE_NS = 60_000_000_000
SEC_MARK = "coreData_secMark"
PRIVACY_MPS = (2.235, 35.763)  # jpo-cvdp speed window (5..80 mph): published records lie inside it


def sent_ns(frame: pd.DataFrame) -> np.ndarray:
    """When each BSM was sent, int64 ns: its `secMark` (ms within the minute, on the sender's
    clock) placed in the minute nearest the logger's `generatedAt`.

    Why: a receiver's rxMsg log stamps generatedAt when it writes, in batches (the real
    samples hold two messages of one vehicle, secMark 100 ms apart, with one stamp), so
    per-vehicle time steps taken from it read 0 s. Where secMark is missing (65535) or out
    of range the logger's time stays, and for schemaVersion 1, whose generatedAt is ODE's
    processing time (minutes to days after sending, so no anchor for the minute). A stamp
    30 s or more after sending puts the message a minute off.
    """
    t = time_ns(frame[TIME])
    if SEC_MARK not in frame or not len(t):
        return t
    sm = frame[SEC_MARK].to_numpy(dtype=float, na_value=np.nan)
    ok = np.isfinite(sm) & (sm >= 0) & (sm <= 60999) & (t != np.iinfo(np.int64).min)
    if "metadata_schemaVersion" in frame:
        ok &= frame["metadata_schemaVersion"].to_numpy(dtype=float, na_value=np.nan) != 1
    sent = t - t % MINUTE_NS + np.where(ok, sm, 0).astype(np.int64) * 1_000_000
    sent += np.clip(np.round((t - sent) / MINUTE_NS), -1, 1).astype(np.int64) * MINUTE_NS
    return np.where(ok, sent, t)


def received(frame: pd.DataFrame) -> np.ndarray:
    """Rows a receiver logged (bsmSource RV or recordType rxMsg), not the sender itself."""
    out = np.zeros(len(frame), bool)
    for col, value in (("metadata_bsmSource", "RV"), ("metadata_recordType", "rxMsg")):
        if col in frame:
            out |= frame[col].eq(value).fillna(False).to_numpy(bool)
    return out


def floats(frame: pd.DataFrame, col: str) -> np.ndarray:
    """A column as float64, NaN where null."""
    return frame[col].to_numpy(dtype=float, na_value=np.nan)


@dataclass(frozen=True)
class VehicleOrder:
    """Rows sorted by (coreData_id, time): what per-vehicle shifts, windows and draws need."""

    order: np.ndarray  # row positions in (id, time) order
    veh: np.ndarray  # vehicle code per row (index into the sorted unique ids)
    n_veh: int
    t_ns: np.ndarray  # time sent per row (`sent_ns`), int64 ns
    first: np.ndarray  # in sorted order: the row starts a vehicle

    @functools.cached_property
    def dt_s(self) -> np.ndarray:
        """In sorted order: seconds since the vehicle's previous message (NaN at its first)."""
        t = self.t_ns[self.order]
        dt = (t - np.r_[t[:1], t[:-1]]) / 1e9
        dt[self.first] = np.nan
        return dt

    @functools.cached_property
    def start(self) -> np.ndarray:
        """In sorted order: the position where the row's vehicle starts."""
        return segment_start(self.first)


RUN_GAP_S = 30.0  # a longer silence ends a vehicle's run of messages (features' windows, replayed tracks)


def runs_start(dt_s: np.ndarray) -> np.ndarray:
    """In sorted order: the row starts a run (a vehicle's first message, or one after a silence
    longer than RUN_GAP_S); `dt_s` as `VehicleOrder.dt_s`."""
    return ~(dt_s <= RUN_GAP_S)  # NaN (a vehicle's first message) starts one


def segment_start(first: np.ndarray) -> np.ndarray:
    """For each position, the last position at or before it where `first` is True (0 if none)."""
    return np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))


def vehicle_codes(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(code per row, sorted unique ids): hashing, then sorting only the unique ids (sorting
    every row's id string as a Python object took ~0.5 s per 400k rows). A missing id is a
    vehicle of its own, never code -1."""
    return pd.factorize(frame[ID].astype(str), sort=True, use_na_sentinel=False)


def by_vehicle(frame: pd.DataFrame) -> VehicleOrder:
    """The (coreData_id, time sent) order of a frame, rows of equal key kept in input order."""
    veh, uniq = vehicle_codes(frame)
    t = sent_ns(frame)
    order = np.lexsort((t, veh))
    vs = veh[order]
    first = np.ones(len(vs), bool)
    first[1:] = vs[1:] != vs[:-1]
    return VehicleOrder(order, veh, len(uniq), t, first)


def crumb_array(series: pd.Series) -> pa.ListArray:
    """The crumb column as one Arrow list array (zero copy when Arrow-backed)."""
    arr = pa.chunked_array([pa.array(series.array, type=CRUMB_LIST)]) if not isinstance(
        series.dtype, pd.ArrowDtype) else pa.chunked_array(series.array.__arrow_array__())
    return arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)


def flat_crumbs(series: pd.Series) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(parent row index of every crumb, {field: float64 values with NaN for null})."""
    arr = crumb_array(series)
    parents = pc.list_parent_indices(arr).to_numpy()
    values = pc.list_flatten(arr)
    fields = {f.name: pc.struct_field(values, f.name).to_numpy(zero_copy_only=False).astype(float)
              for f in CRUMB}
    return parents, fields


def first_crumbs(series: pd.Series, k: int) -> dict[str, np.ndarray]:
    """The k most recent crumbs of each row by `timeOffset`, as (n, k) arrays, NaN-padded.

    Crumbs with a null or non-positive time offset are dropped (they cannot be placed in time).
    """
    n = len(series)
    parents, f = flat_crumbs(series)
    t = f["timeOffset"]
    keep = np.isfinite(t) & (t > 0)
    parents, t = parents[keep], t[keep]
    lat, lon, elev = f["latOffset"][keep], f["lonOffset"][keep], f["elevationOffset"][keep]
    order = np.lexsort((t, parents))
    parents, t, lat, lon, elev = parents[order], t[order], lat[order], lon[order], elev[order]
    starts = np.searchsorted(parents, np.arange(n))
    rank = np.arange(len(parents)) - starts[parents]
    sel = rank < k
    out = {}
    for name, v in (("time", t), ("lat", lat), ("lon", lon), ("elev", elev)):
        m = np.full((n, k), np.nan)
        m[parents[sel], rank[sel]] = v[sel]
        out[name] = m
    return out


def shift_crumbs(series: pd.Series, dlat: np.ndarray, dlon: np.ndarray, rows: np.ndarray,
                 decimals: int = 7, full_age_s: np.ndarray | None = None, extrapolate: bool = False) -> pd.Series:
    """Add (dlat, dlon) degrees to every crumb offset of the rows where `rows` is True.

    full_age_s (per row): a crumb younger than that gets the share age / full_age_s of the
    shift (a path interpolated from the current position), older ones all of it, or with
    `extrapolate` the same share beyond 1 (one straight line through both ends, so a path
    sampled at full_age_s between two crumbs lands on the shifted point).
    Other rows keep their bits; nulls stay null; shifted offsets are rounded to the
    1e-7 degree resolution of real crumbs so they carry no precision side channel.
    """
    arr = crumb_array(series)
    offsets = arr.offsets.to_numpy()
    values = arr.values.slice(offsets[0], offsets[-1] - offsets[0])
    parents = np.repeat(np.arange(len(arr)), np.diff(offsets))
    hit = rows[parents]
    share = np.ones(len(parents))
    if full_age_s is not None:
        age = pc.struct_field(values, "timeOffset").to_numpy(zero_copy_only=False).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.clip(age / full_age_s[parents], 0.0, np.inf if extrapolate else 1.0)
        share[np.isnan(share)] = 1.0
    children = []
    for f in CRUMB:
        col = pc.struct_field(values, f.name)
        if f.name in ("latOffset", "lonOffset"):
            d = (dlat if f.name == "latOffset" else dlon)[parents] * share
            old = col.to_numpy(zero_copy_only=False).astype(float)
            new = np.where(hit, np.round(old + d, decimals), old)
            col = pa.array(new, type=pa.float64(), mask=col.is_null().to_numpy(zero_copy_only=False))
        children.append(col)
    struct = pa.StructArray.from_arrays(children, fields=list(CRUMB), mask=values.is_null())
    out = pa.ListArray.from_arrays(pa.array(offsets - offsets[0], pa.int32()), struct,
                                   type=CRUMB_LIST, mask=arr.is_null())
    return pd.Series(pd.arrays.ArrowExtensionArray(out), index=series.index, name=series.name)
