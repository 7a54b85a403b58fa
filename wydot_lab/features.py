"""Per-vehicle history features and F2MD plausibility flags (docs/DOMAIN.md section 4).

Rows are grouped by `coreData_id` and ordered by time; every feature is computed with
whole-array numpy over all vehicles at once (group boundaries masked, rolling windows
from a few lagged copies), never a Python loop per row or per vehicle, so a vehicle's
features do not depend on which other vehicles share its partition. The Dask
entry point shuffles on `coreData_id` so each vehicle sits in one partition, then runs
the same pandas function per partition.

Ids, msgCnt, raw timestamps and raw x/y are never features; `REFERENCE` (x, y,
elevation) exists only for the `position_only` reference detector.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from wydot_lab import geo
from wydot_lab.frames import (
    CRUMB_SIGN,
    CRUMBS,
    ID,
    LAT,
    LON,
    PRIVACY_MPS,
    RUN_GAP_S,
    TIME,
    by_vehicle,
    first_crumbs,
    floats,
    received,
    runs_start,
    segment_start,
)

# F2MD legacy thresholds, units adapted (docs/DOMAIN.md section 4)
SPEED_FLOOR_MPS, SPEED_CAP_MPS = PRIVACY_MPS  # the privacy filter's window (5..80 mph): published data lies inside
V_MAX_MPS = 40.0  # position consistency: no jump above v_max * dt
A_MAX_MPS2 = 3.0  # speed consistency, acceleration
D_MAX_MPS2 = 4.5  # speed consistency, deceleration
SPEED_NOISE_MPS = 1.0  # reported-speed noise allowed by the kinematic checks
POS_SPEED_TOL_MPS = 5.0  # position-speed consistency, on top of the GPS noise / dt
HEADING_MAX_DEG = 90.0  # heading vs direction of travel
MOVED_MIN_M, MOVING_MIN_MPS = 1.0, 1.0  # heading check only when really moving
MIN_BEACON_S = 0.09  # J2735 sends at most 10 Hz
SUDDEN_APPEARANCE_M = 210.0  # first message of a run this close to its receiver
ROAD_TOL_M = 8.0  # distance from the centre line allowed beyond semiMajor
DEFAULT_SEMI_MAJOR_M = 3.0  # GPS noise assumed where semiMajor is unknown
CRUMB_K = 10  # most recent path-history crumbs used

FEATURES: dict[str, str] = {
    "dt_s": "seconds since the vehicle's previous message",
    "dist_m": "metres moved since the previous message (local metric frame)",
    "implied_speed_mps": "dist_m / dt_s",
    "speed_mps": "reported coreData speed",
    "speed_residual_mps": "mean reported speed of the two messages minus implied_speed_mps",
    "heading_bearing_diff_deg": "|reported heading - bearing of travel from the previous position| (moved > 1 m)",
    "delta_speed_mps": "reported speed minus the previous reported speed",
    "delta_heading_deg": "|reported heading - previous reported heading|",
    "accel_implied_mps2": "delta_speed_mps / dt_s",
    "delta_accel_mps2": "accel_implied_mps2 minus its previous value",
    "accel_residual_mps2": "reported accelLong minus accel_implied_mps2",
    "yaw_residual_dps": "signed heading change / dt_s minus reported accelYaw",
    "speed_residual_mean_w": "rolling mean of speed_residual_mps over the last `window` messages of the run",
    "speed_residual_std_w": "rolling std of speed_residual_mps over the last `window` messages of the run "
    "(NaN below two values)",
    "heading_bearing_diff_mean_w": "rolling mean of heading_bearing_diff_deg over the last `window` messages "
    "of the run",
    "speed_std_w": "rolling std of the reported speed over the last `window` messages of the run "
    "(NaN below two values)",
    "dist_centreline_m": "distance to the nearer I-80 centre line (either direction)",
    "dist_centreline_mean_w": "rolling mean of dist_centreline_m over the last `window` messages of the run",
    "heading_road_diff_deg": "|reported heading - direction of travel of the nearest carriageway at the reported "
    "position| (either direction: ~180 on the other carriageway; moving > 1 m/s)",
    "semi_major_m": "reported GPS accuracy, semi-major axis",
    "semi_minor_m": "reported GPS accuracy, semi-minor axis",
    "crumb_prev_err_m": "distance between the own path history (crumbs) at the previous message's age "
    "and the position the vehicle reported then",
    "crumb_speed_residual_mps": "reported speed minus the speed implied by the most recent crumb",
    "crumb_heading_diff_deg": "|reported heading - bearing from the most recent crumb to the reported position|",
    "flag_speed": f"F2MD speed plausibility: speed outside the {SPEED_FLOOR_MPS:g}..{SPEED_CAP_MPS:g} m/s "
    "(5..80 mph) that the privacy filter leaves in published data",
    "flag_position_jump": "F2MD position consistency: moved more than v_max * dt + GPS noise",
    "flag_speed_change": "F2MD speed consistency: |delta speed| beyond a_max/d_max * dt + noise",
    "flag_position_speed": "F2MD position-speed consistency: |speed_residual| above 5 m/s + GPS noise / dt",
    "flag_heading": "F2MD heading consistency: heading off the direction of travel by > 90 deg while moving",
    "flag_beacon": "F2MD beacon frequency: less than 0.09 s after the previous message",
    "flag_sudden_appearance": "F2MD sudden appearance: first message of a run of a received BSM (rxMsg) "
    "within 210 m of its receiver",
    "flag_offroad": "distance to the centre line above 8 m + semiMajor",
    "flag_count": "number of failed F2MD checks (the rule detector flags a message when > 0)",
}
FLAGS = [f for f in FEATURES if f.startswith("flag_") and f != "flag_count"]
# compare a message with the vehicle's previous one: across a silence longer than RUN_GAP_S
# they would describe the gap (hours between trips), not the motion, so at a run's first
# message they are NaN, but for dt_s (the silence itself)
SINCE_PREVIOUS = (
    "dt_s",
    "dist_m",
    "implied_speed_mps",
    "speed_residual_mps",
    "heading_bearing_diff_deg",
    "delta_speed_mps",
    "delta_heading_deg",
    "accel_implied_mps2",
    "delta_accel_mps2",
    "accel_residual_mps2",
    "yaw_residual_dps",
)

REFERENCE = ["x_m", "y_m", "elevation_m"]  # position_only reference detector only
LABEL_COLUMNS = ("is_attacker", "is_attack", "is_attack_cond", "attack_type")


def within_run(feats: pd.DataFrame) -> np.ndarray:
    """Messages whose previous message came at most RUN_GAP_S before (where SINCE_PREVIOUS
    features describe motion)."""
    return ~runs_start(feats["dt_s"].to_numpy(float))


def first_run(frame: pd.DataFrame, vehicle: str, limit: int | None = None) -> pd.DataFrame:
    """A vehicle's rows of its first run, in time order, at most `limit`: one trip for a
    zoomed map, not pieces of trips hours and kilometres apart."""
    one = frame[frame[ID] == vehicle]
    vo = by_vehicle(one)
    run = np.cumsum(runs_start(vo.dt_s))
    return one.iloc[vo.order[run == 1]].head(limit)


class _Groups:
    """Sorted rows' vehicle boundaries (shifts never cross vehicles) and run boundaries
    (rolling windows never cross a silence longer than RUN_GAP_S)."""

    def __init__(self, first: np.ndarray, dt: np.ndarray):
        """Runs start at a vehicle's first message (`first`, where `dt` is NaN) and after
        every silence > RUN_GAP_S."""
        self.first = first
        self.new_run = runs_start(dt)
        self.run_start = segment_start(self.new_run)

    def prev(self, v: np.ndarray) -> np.ndarray:
        out = np.r_[np.nan, v[:-1]] if len(v) else v.astype(float)
        out[self.first] = np.nan
        return out

    def since_previous(self, v: np.ndarray) -> np.ndarray:
        """v without the runs' first values, which compare with the previous trip, not motion."""
        return np.where(self.new_run, np.nan, v)

    def rolling(self, v: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
        """(mean, population std) over the last w values of the same run, NaNs skipped; the std
        of fewer than two values is NaN (unknown spread, not a steady 0).

        Built from w lagged copies (w is small), so each value depends only on its own
        vehicle's rows: the same bits whatever else shares the partition."""
        n = len(v)
        lags = np.full((n, w), np.nan)
        i = np.arange(n)
        for k in range(min(w, n)):
            lags[k:, k] = v[: n - k]
            lags[i - k < self.run_start, k] = np.nan
        ok = np.isfinite(lags)
        cnt = ok.sum(axis=1)
        z = np.where(ok, lags, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(cnt > 0, z.sum(axis=1) / cnt, np.nan)
            var = np.where(cnt > 1, (np.where(ok, lags - mean[:, None], 0.0) ** 2).sum(axis=1) / cnt, np.nan)
        return mean, np.sqrt(var)


def _crumb_features(
    frame: pd.DataFrame,
    x: np.ndarray,
    y: np.ndarray,
    dt: np.ndarray,
    px: np.ndarray,
    py: np.ndarray,
    heading: np.ndarray,
    speed: np.ndarray,
) -> dict:
    """Path-history consistency: crumbs are the sender's own recent positions, so they must
    agree with what it reported before (a naive position falsifier contradicts itself)."""
    n = len(frame)
    c = first_crumbs(frame[CRUMBS], CRUMB_K) if CRUMBS in frame and n else None
    if c is None:
        nan = np.full(n, np.nan)
        return {"crumb_prev_err_m": nan, "crumb_speed_residual_mps": nan, "crumb_heading_diff_deg": nan}
    lat, lon = floats(frame, LAT)[:, None], floats(frame, LON)[:, None]
    cx, cy = geo.to_local(lat + CRUMB_SIGN * c["lat"], lon + CRUMB_SIGN * c["lon"])
    dx, dy = np.asarray(cx, float) - x[:, None], np.asarray(cy, float) - y[:, None]
    # path through (age 0, offset 0) and the crumbs, sampled at the previous message's age
    tt = np.c_[np.zeros(n), np.where(np.isfinite(c["time"]), c["time"], np.inf)]
    px_, py_ = np.c_[np.zeros(n), dx], np.c_[np.zeros(n), dy]
    k = np.clip((tt < dt[:, None]).sum(axis=1), 1, CRUMB_K)
    r = np.arange(n)
    t0, t1 = tt[r, k - 1], tt[r, k]
    ok = np.isfinite(dt) & (dt > 0) & np.isfinite(t1) & (dt <= t1)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(ok, (dt - t0) / (t1 - t0), np.nan)
        ix = px_[r, k - 1] + w * (px_[r, k] - px_[r, k - 1])
        iy = py_[r, k - 1] + w * (py_[r, k] - py_[r, k - 1])
        err = np.hypot(x + ix - px, y + iy - py)
        d0 = np.hypot(dx[:, 0], dy[:, 0])
        crumb_speed = d0 / c["time"][:, 0]
    bearing = np.asarray(geo.true_bearing_deg(-dx[:, 0], -dy[:, 0], lon[:, 0]), float)
    hdiff = np.asarray(geo.angle_diff_deg(heading, bearing), float)
    hdiff = np.where(d0 > MOVED_MIN_M, hdiff, np.nan)
    return {
        "crumb_prev_err_m": np.where(ok, err, np.nan),
        "crumb_speed_residual_mps": speed - crumb_speed,
        "crumb_heading_diff_deg": hdiff,
    }


def featurize_frame(frame: pd.DataFrame, window: int = 5) -> pd.DataFrame:
    """Pandas entry point: canonical frame (labels optional) -> one feature row per message.

    Output is sorted by (coreData_id, time) and keeps the input index, so it aligns with
    the input; columns are id, time, any label columns, `REFERENCE` and `FEATURES`;
    `window` is the rolling window in messages (`params.features.window`).
    """
    vo = by_vehicle(frame)
    f = frame.iloc[vo.order]
    dt, n = vo.dt_s, len(f)
    g = _Groups(vo.first, dt)

    lat, lon = floats(f, LAT), floats(f, LON)
    x, y = (np.asarray(a, float) for a in geo.to_local(lat, lon)) if n else (np.zeros(0), np.zeros(0))
    speed, heading = floats(f, "coreData_speed"), floats(f, "coreData_heading")
    sm = floats(f, "coreData_accuracy_semiMajor")
    sm_ = np.where(np.isfinite(sm), sm, DEFAULT_SEMI_MAJOR_M)
    px, py = g.prev(x), g.prev(y)
    dx, dy = x - px, y - py
    dist = np.hypot(dx, dy)
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        implied = np.where(dt > 0, dist / dt, np.nan)
        speed_prev, heading_prev = g.prev(speed), g.prev(heading)
        resid = (speed + speed_prev) / 2 - implied
        bearing = np.asarray(geo.true_bearing_deg(dx, dy, lon), float)  # headings are from true north
        hb = np.asarray(geo.angle_diff_deg(heading, bearing), float)
        hb = np.where(dist > MOVED_MIN_M, hb, np.nan)
        dv = speed - speed_prev
        dh_signed = np.mod(heading - heading_prev + 180.0, 360.0) - 180.0  # turn, degrees, + = right
        acc = np.where(dt > 0, dv / dt, np.nan)
        out.update(
            dt_s=dt,
            dist_m=dist,
            implied_speed_mps=implied,
            speed_mps=speed,
            speed_residual_mps=resid,
            heading_bearing_diff_deg=hb,
            delta_speed_mps=dv,
            delta_heading_deg=np.abs(dh_signed),
            accel_implied_mps2=acc,
            delta_accel_mps2=acc - g.prev(g.since_previous(acc)),
            accel_residual_mps2=floats(f, "coreData_accelset_accelLong") - acc,
            yaw_residual_dps=np.where(dt > 0, dh_signed / dt, np.nan) - floats(f, "coreData_accelset_accelYaw"),
        )
    for name in SINCE_PREVIOUS:
        if name != "dt_s":  # the silence itself stays
            out[name] = g.since_previous(out[name])
    out["speed_residual_mean_w"], out["speed_residual_std_w"] = g.rolling(out["speed_residual_mps"], window)
    out["heading_bearing_diff_mean_w"] = g.rolling(out["heading_bearing_diff_deg"], window)[0]
    out["speed_std_w"] = g.rolling(speed, window)[1]
    dcl, road = geo.nearest_road(x, y, lon) if n else (np.zeros(0), np.zeros(0))
    out["dist_centreline_m"] = dcl
    out["dist_centreline_mean_w"] = g.rolling(dcl, window)[0]
    road_diff = np.asarray(geo.angle_diff_deg(heading, road), float)
    out["heading_road_diff_deg"] = np.where(speed > MOVING_MIN_MPS, road_diff, np.nan)  # a parked heading is any
    out["semi_major_m"] = sm
    out["semi_minor_m"] = floats(f, "coreData_accuracy_semiMinor")
    out.update(_crumb_features(f, x, y, dt, px, py, heading, speed))

    noise = sm_ + g.prev(sm_)
    # pair checks read the since-previous values, NaN (never flagged) at a run's first message;
    # but no silence makes a move farther than v_max * dt plausible, so position_jump spans them
    dv, resid, hb = (out[k] for k in ("delta_speed_mps", "speed_residual_mps", "heading_bearing_diff_deg"))
    with np.errstate(invalid="ignore", divide="ignore"):
        flags = {
            "flag_speed": (speed > SPEED_CAP_MPS) | (speed < SPEED_FLOOR_MPS),
            "flag_position_jump": dist > V_MAX_MPS * dt + noise,
            "flag_speed_change": (dv > A_MAX_MPS2 * dt + SPEED_NOISE_MPS) | (dv < -D_MAX_MPS2 * dt - SPEED_NOISE_MPS),
            "flag_position_speed": np.abs(resid) > POS_SPEED_TOL_MPS + noise / dt,
            "flag_heading": (hb > HEADING_MAX_DEG) & (speed > MOVING_MIN_MPS),
            "flag_beacon": dt < MIN_BEACON_S,
            "flag_sudden_appearance": _sudden(f, x, y, g.new_run),
            "flag_offroad": dcl > ROAD_TOL_M + sm_,
        }
    for k, v in flags.items():
        out[k] = v.astype(float)
    out["flag_count"] = np.sum([out[k] for k in FLAGS], axis=0) if n else np.zeros(0)

    res = pd.DataFrame(index=f.index)
    res[ID] = f[ID].to_numpy()
    res[TIME] = f[TIME].to_numpy()
    for c in LABEL_COLUMNS:
        if c in f:
            res[c] = f[c].to_numpy()
    res["x_m"], res["y_m"], res["elevation_m"] = x, y, floats(f, "coreData_elevation")
    for name in FEATURES:
        res[name] = np.asarray(out[name], dtype=float)
    return res


def _sudden(f: pd.DataFrame, x: np.ndarray, y: np.ndarray, new_run: np.ndarray) -> np.ndarray:
    """First message of a run of a received BSM (rxMsg), reported within SUDDEN_APPEARANCE_M of
    its known receiver. A vehicle's own log (bsmTx, bsmLogDuringEvent) records its own position
    as the "receiver", so there every run start would be sudden, and an attack that falsifies
    the position would give itself away against that field."""
    if not len(f):
        return np.zeros(0, bool)
    received_ = received(f)
    rlat, rlon = floats(f, "metadata_rmd_latitude"), floats(f, "metadata_rmd_longitude")
    known = received_ & np.isfinite(rlat) & np.isfinite(rlon) & ((rlat != 0) | (rlon != 0))
    if not known.any():
        return np.zeros(len(f), bool)
    rx, ry = np.full(len(f), np.nan), np.full(len(f), np.nan)
    a, b = geo.to_local(rlat[known], rlon[known])
    rx[known], ry[known] = a, b
    return known & new_run & (np.hypot(x - rx, y - ry) < SUDDEN_APPEARANCE_M)


def featurize(ddf: Any, window: int = 5) -> Any:
    """Dask entry point: shuffle on coreData_id (each vehicle in one partition; nothing to
    move when there is one partition), then `featurize_frame` per partition. Lazy."""
    meta = featurize_frame(ddf._meta, window)
    if ddf.npartitions > 1:
        ddf = ddf.shuffle(on=ID, shuffle_method="tasks")  # p2p cannot carry the Arrow list column
    return ddf.map_partitions(featurize_frame, window, meta=meta)


def markdown() -> str:
    """docs/FEATURES.md text: one line per feature, the definitions above."""
    lines = [
        "# Features",
        "",
        "Generated from `wydot_lab.features.FEATURES` (one row per message, per vehicle in time order).",
        "Ids, msgCnt, raw timestamps and raw x/y are never features; x_m, y_m, elevation_m feed only",
        "the `position_only` reference detector.",
        "",
        f"A run is a vehicle's messages with no silence longer than {RUN_GAP_S:g} s between them. Features",
        "that compare a message with the previous one ("
        + ", ".join(f"`{k}`" for k in SINCE_PREVIOUS[1:4])
        + ", ...) are NaN at a run's first message, `dt_s` aside; rolling windows restart with",
        "every run, and the pairwise F2MD checks compare messages of one run only, but for position",
        "consistency (`flag_position_jump`): no silence makes a move farther than v_max * dt plausible.",
        "",
        "Features read one row per transmission: copies of a BSM that several loggers recorded",
        "(the sender's bsmTx, bsmLogDuringEvent, receivers' rxMsg) are collapsed first",
        "(`wydot_lab.dedup`, called by `experiment.records_frame`), or they would read as messages",
        "milliseconds apart. Time steps are taken on the sender's clock: each message's secMark",
        "placed in the minute of its generatedAt (`frames.sent_ns`), since a receiver stamps",
        "generatedAt when it writes its log, in batches.",
        "",
    ]
    lines += [f"- `{k}`: {v}" for k, v in FEATURES.items()]
    return "\n".join(lines) + "\n"
