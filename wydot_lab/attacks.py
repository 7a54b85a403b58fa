"""Registry of misbehaviour attacks (docs/DOMAIN.md section 3): pure `(frame, rng, params) -> frame`.

Attackers are whole vehicles, drawn once (`choose_attackers`) before any split; an attack
function reads the `is_attacker` column, falsifies only those vehicles' messages and adds
the labels `is_attack` (raw), `is_attack_cond` (falsification above a tolerance, VeReMi
NextGen style) and `attack_type` ("genuine" for untouched rows). Dtypes, row count, row
order and null pattern are kept; genuine rows keep their bits; falsified values are
rounded to the J2735 resolution so precision is no side channel.

Parameters (all optional, defaults in `ATTACKS[name].defaults`):
  min_m / max_m      offset distance range, metres (const_offset, random_offset)
  radius_m           scatter around a random centre-line vertex (const_position, random_position)
  min_mps / max_mps  speed value or offset range, m/s (const_speed, random_speed, speed_offset)
  p                  per-message trigger probability (eventual_stop)
  delay_s            a replayed message was sent at least this long before (data_replay)
  careful            position attacks: also re-anchor the path-history crumbs so the nearest
                     crumb agrees with the previously reported (fake) position; speed and
                     heading attacks: kept for old params files, the same as the default now
                     that every form mirrors
  mirror             (default true, every attack) write the fake value into the own log's
                     receiver-side copy of it (metadata_rmd_latitude/longitude/elevation/speed/
                     heading: a sender's own bsmTx log records its own position, speed and
                     heading there, equal to coreData in the real records; received copies hold
                     the receiver's values and all-zero blocks mean unavailable: both left
                     alone). False leaves the copy true: a perfect label in the exported table
                     that no deployed detector could read (issue 18 item 6), kept for ablations
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np
import pandas as pd

from wydot_lab import geo
from wydot_lab.frames import (CRUMB_SIGN, CRUMBS, ID, LAT, LON, PRIVACY_MPS, VehicleOrder, by_vehicle, floats,
                              received, runs_start, shift_crumbs)

SPEED, HEADING, ELEV = "coreData_speed", "coreData_heading", "coreData_elevation"
SEMI_MAJOR = "coreData_accuracy_semiMajor"
RMD_LAT, RMD_LON = "metadata_rmd_latitude", "metadata_rmd_longitude"
RMD_SPEED, RMD_HEADING = "metadata_rmd_speed", "metadata_rmd_heading"
RMD_ELEV = "metadata_rmd_elevation"
LABELS = ("is_attacker", "is_attack", "is_attack_cond", "attack_type")
GENUINE = "genuine"

# J2735 resolutions: falsified values are rounded to these (no precision side channel)
POS_DECIMALS = 7  # 1e-7 degree
SPEED_STEP = 0.02  # m/s
HEADING_STEP = 0.0125  # degree
SPEED_MAX = 163.8  # m/s, J2735 ceiling

# Tolerances of the conditional label
POS_TOL_M = 3.0  # used where semiMajor is unknown
SPEED_TOL_MPS = 1.0  # speed falsification below this is within sensor noise
MOVING_MPS = 1.0  # "truly moving" for eventual_stop / heading_reversal

# Columns a replaying attacker copies from the replayed message (its own id, counters,
# timing, metadata and vehicle size stay its own).
REPLAY_COLUMNS = (
    LAT, LON, ELEV, SPEED, HEADING,
    "coreData_accelset_accelLong", "coreData_accelset_accelLat",
    "coreData_accelset_accelVert", "coreData_accelset_accelYaw",
    SEMI_MAJOR, "coreData_accuracy_semiMinor", "coreData_accuracy_orientation",
    CRUMBS, "partII_pathPrediction_radiusOfCurve", "partII_pathPrediction_confidence",
)

AttackFn = Callable[[pd.DataFrame, np.random.Generator, dict], pd.DataFrame]


@dataclass(frozen=True)
class Attack:
    fn: AttackFn
    doc: str  # one line: what the attacker reports
    defaults: dict[str, Any] = field(default_factory=dict)
    magnitude: tuple[str, ...] = ()  # parameters that name the magnitude in labels
    position: bool = False  # falsifies position (so its careful form also re-anchors the crumbs)

    @property
    def careful(self) -> bool:
        """A careful form exists (the `careful` parameter)."""
        return "careful" in self.defaults


ATTACKS: dict[str, Attack] = {}


def _register(name: str, doc: str, defaults: dict | None = None, magnitude: tuple[str, ...] = (),
              position: bool = False, careful: bool = False) -> Callable[[AttackFn], AttackFn]:
    def deco(fn: AttackFn) -> AttackFn:
        d = dict(defaults or {})
        if position or careful:
            d["careful"] = False
        d["mirror"] = True
        ATTACKS[name] = Attack(fn=fn, doc=doc, defaults=d, magnitude=magnitude, position=position)
        return fn

    return deco


# ---------------------------------------------------------------- specs


def check_spec(spec: dict) -> None:
    """Raise ValueError (one line, naming the bad key/value) unless `spec` is a valid attack."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"attack spec needs a 'name' (one of {', '.join(sorted(ATTACKS))})")
    name = spec["name"]
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r} (known: {', '.join(sorted(ATTACKS))})")
    defaults = ATTACKS[name].defaults
    for key, value in spec.items():
        if key == "name":
            continue
        if key not in defaults:
            allowed = ", ".join(sorted(defaults)) or "none"
            raise ValueError(f"attack {name}: unknown parameter {key!r} (allowed: {allowed})")
        if isinstance(defaults[key], bool):
            if not isinstance(value, bool):
                raise ValueError(f"attack {name}: {key} must be true or false, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"attack {name}: {key} must be a finite number, got {value!r}")
        if value < 0:
            raise ValueError(f"attack {name}: {key} must be >= 0, got {value!r}")
    p = resolve(spec)
    for lo, hi in (("min_m", "max_m"), ("min_mps", "max_mps")):
        if lo in p and p[lo] > p[hi]:
            raise ValueError(f"attack {name}: {lo}={p[lo]} is above {hi}={p[hi]}")
    if "p" in p and not 0 < p["p"] <= 1:
        raise ValueError(f"attack {name}: p must be in (0, 1], got {p['p']!r}")


def resolve(spec: dict) -> dict:
    """The spec with every parameter filled from the attack's defaults."""
    return {"name": spec["name"], **ATTACKS[spec["name"]].defaults,
            **{k: v for k, v in spec.items() if k != "name"}}


def _fmt(v: Any) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def label(spec: dict) -> str:
    """Attack name carrying its magnitude, e.g. `const_offset_100_200`, `eventual_stop_p0.2`."""
    att = ATTACKS[spec["name"]]
    p = resolve(spec)
    parts = [spec["name"], *(_fmt(p[k]) for k in att.magnitude)]
    for k, default in att.defaults.items():
        if k in att.magnitude or p[k] == default:
            continue
        parts.append((k if p[k] else f"no_{k}") if isinstance(default, bool) else f"{k}{_fmt(p[k])}")
    return "_".join(parts)


def choose_attackers(ids: Any, share: float, rng: np.random.Generator) -> np.ndarray:
    """Attacker vehicle ids: `round(share * n)` (at least one) of the sorted unique ids."""
    uniq = np.sort(pd.Series(ids).dropna().astype(str).unique().astype(object))
    if len(uniq) == 0:
        return uniq
    k = min(len(uniq), max(1, int(round(share * len(uniq)))))
    return np.sort(rng.choice(uniq, size=k, replace=False))


def apply(frame: pd.DataFrame, spec: dict, attackers: Any, rng: np.random.Generator) -> pd.DataFrame:
    """Mark `attackers` (vehicle ids) and run the attack named in `spec` on them."""
    check_spec(spec)
    f = frame.assign(is_attacker=frame[ID].isin(set(np.asarray(attackers).tolist())).to_numpy(bool))
    return ATTACKS[spec["name"]].fn(f, rng, resolve(spec))


def apply_mixed(frame: pd.DataFrame, specs: list[dict], attackers: Any, rng: np.random.Generator
                ) -> tuple[pd.DataFrame, dict[str, str]]:
    """Every attacker runs one attack of `specs`, drawn uniformly: the setting of a detector that
    must catch whichever attack it meets, not one trained per attack. Returns the attacked
    frame (row order kept) and {attacker id: its attack's label}."""
    mine = np.sort(np.asarray(list(attackers), dtype=object))
    which = rng.integers(0, len(specs), size=len(mine))
    children = rng.spawn(len(specs))
    pieces, where, taken, assigned, first = [], [], np.zeros(len(frame), bool), {}, None
    for k, spec in enumerate(specs):
        these = mine[which == k]
        attacked = apply(frame, spec, these, children[k])
        first = attacked if first is None else first
        rows = frame[ID].isin(set(these.tolist())).to_numpy(bool)
        pieces.append(attacked[rows])
        where.append(np.flatnonzero(rows))
        taken |= rows
        assigned.update(dict.fromkeys(these.tolist(), label(spec)))
    pieces.append(first[~taken])  # the genuine vehicles, labelled genuine by any of the runs
    where.append(np.flatnonzero(~taken))
    back = np.argsort(np.concatenate(where), kind="stable")  # by position: the index may repeat
    return pd.concat(pieces).iloc[back], assigned


def privacy_filtered(frame: pd.DataFrame) -> pd.DataFrame:
    """The attacked frame as it would be published: the privacy filter (jpo-cvdp) drops every
    record outside its speed window, so an attacked message reporting such a speed never
    reaches the data (eventual_stop's stopped vehicle falls silent). Only attacked rows can be
    outside it (published genuine records passed the filter); the I-80 geofence is not applied."""
    speed = floats(frame, SPEED)
    outside = ~((speed >= PRIVACY_MPS[0]) & (speed <= PRIVACY_MPS[1])) & np.isfinite(speed)
    return frame[~(outside & frame["is_attack"].to_numpy(bool))]


# ---------------------------------------------------------------- shared helpers


@dataclass(frozen=True)
class _Ctx(VehicleOrder):
    """Row bookkeeping every attack needs: the (id, time) order plus the attacker mask."""

    attacker: np.ndarray

    @property
    def n(self) -> int:
        return len(self.order)


def _ctx(frame: pd.DataFrame) -> _Ctx:
    vo = by_vehicle(frame)
    return _Ctx(**{f.name: getattr(vo, f.name) for f in fields(vo)}, attacker=frame["is_attacker"].to_numpy(bool))


def _per_message(ctx: _Ctx, draws: np.ndarray) -> np.ndarray:
    """Per-message draws made in (id, time) order, put back in row order."""
    out = np.empty_like(draws)
    out[ctx.order] = draws
    return out


def _put(out: pd.DataFrame, col: str, rows: np.ndarray, values: np.ndarray) -> None:
    """Write `values` (full length) into `col` at `rows` only, keeping the column dtype.

    The column is replaced, never written in place, so attacks work on shallow copies
    (`frame.copy(deep=False)`) and the caller's frame keeps its bits."""
    if not rows.any():
        return
    arr = out[col].to_numpy(copy=True)
    arr[rows] = values[rows].astype(arr.dtype)
    out[col] = pd.Series(arr, index=out.index, dtype=out[col].dtype)


def _labelled(out: pd.DataFrame, attacked: np.ndarray, cond: np.ndarray, params: dict) -> pd.DataFrame:
    out["is_attack"] = attacked
    out["is_attack_cond"] = attacked & cond
    out["attack_type"] = np.where(attacked, label(params), GENUINE)
    return out


def _tolerance(frame: pd.DataFrame) -> np.ndarray:
    sm = floats(frame, SEMI_MAJOR)
    return np.where(np.isfinite(sm), sm, POS_TOL_M)


def _quantize(v: np.ndarray, step: float) -> np.ndarray:
    return np.round(np.round(v / step) * step, 6)


def _corridor() -> tuple[np.ndarray, np.ndarray]:
    """Local (x, y) of every I-80 centre-line vertex, both directions."""
    lines = [geo.load_centreline(d) for d in geo.DIRECTIONS]
    return np.concatenate([c.x for c in lines]), np.concatenate([c.y for c in lines])


def _corridor_points(rng: np.random.Generator, size: int, radius_m: float) -> tuple[np.ndarray, np.ndarray]:
    """`size` points: a random centre-line vertex plus a uniform scatter within `radius_m`."""
    cx, cy = _corridor()
    i = rng.integers(0, len(cx), size=size)
    r = radius_m * np.sqrt(rng.uniform(size=size))
    a = rng.uniform(0, 2 * np.pi, size=size)
    return cx[i] + r * np.cos(a), cy[i] + r * np.sin(a)


def _ring(rng: np.random.Generator, size: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """`size` offset vectors with length uniform in [lo, hi] and a uniform direction."""
    d = rng.uniform(lo, hi, size=size)
    a = rng.uniform(0, 2 * np.pi, size=size)
    return d * np.cos(a), d * np.sin(a)


def _move(frame: pd.DataFrame, ctx: _Ctx, rows: np.ndarray, fx: np.ndarray, fy: np.ndarray,
          params: dict, true_xy: tuple[np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
    """Report local positions (fx, fy) on `rows`; label by displacement from the true local
    positions `true_xy` (`_local(frame)`; pass it when the caller projected already) vs the GPS tolerance."""
    if true_xy is None:
        true_xy = _local(frame)
    out = frame.copy(deep=False)
    lat, lon = floats(frame, LAT), floats(frame, LON)
    rows = rows & np.isfinite(lat) & np.isfinite(lon)
    flat, flon = lat.copy(), lon.copy()
    if rows.any():
        nlat, nlon = geo.from_local(fx[rows], fy[rows])
        flat[rows] = np.round(np.asarray(nlat, float), POS_DECIMALS)
        flon[rows] = np.round(np.asarray(nlon, float), POS_DECIMALS)
    _put(out, LAT, rows, flat)
    _put(out, LON, rows, flon)
    if params.get("careful"):
        out[CRUMBS] = _careful_crumbs(frame[CRUMBS], ctx, rows, flat - lat, flon - lon)
    if params.get("mirror"):
        _mirror(out, frame, rows, RMD_LAT, LAT, flat)
        _mirror(out, frame, rows, RMD_LON, LON, flon)
    x, y = true_xy
    nx, ny = x.copy(), y.copy()
    if rows.any():
        nx[rows], ny[rows] = geo.to_local(flat[rows], flon[rows])
    moved = np.hypot(nx - x, ny - y)
    return _labelled(out, rows, moved > _tolerance(frame), params)


def _local(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    x, y = geo.to_local(floats(frame, LAT), floats(frame, LON))
    return np.asarray(x, float), np.asarray(y, float)


def _careful_crumbs(crumbs: pd.Series, ctx: _Ctx, rows: np.ndarray, dlat: np.ndarray,
                    dlon: np.ndarray) -> pd.Series:
    """Shift each falsified message's crumbs by (previous displacement - own displacement) x
    age / (time since the previous message): the fake path is one straight line, by age,
    through the position reported now and the one reported then, so the path history sampled
    at the previous message's age (between two crumbs, as a verifier reads it) points at that
    report, as a genuine vehicle's does (clipping the shift at the previous displacement left
    a kink there: km off for a teleporting attacker). A vehicle's first message has no
    earlier report: its crumbs stay as they are."""
    dlat = np.where(rows, dlat, 0.0)
    dlon = np.where(rows, dlon, 0.0)
    prev_lat, prev_lon = np.zeros(ctx.n), np.zeros(ctx.n)
    s_lat, s_lon = dlat[ctx.order], dlon[ctx.order]
    p_lat, p_lon = np.r_[0.0, s_lat[:-1]], np.r_[0.0, s_lon[:-1]]
    p_lat[ctx.first], p_lon[ctx.first] = s_lat[ctx.first], s_lon[ctx.first]  # nothing to agree with yet
    prev_lat[ctx.order], prev_lon[ctx.order] = p_lat, p_lon
    slat, slon = CRUMB_SIGN * (prev_lat - dlat), CRUMB_SIGN * (prev_lon - dlon)
    return shift_crumbs(crumbs, slat, slon, rows & ((slat != 0) | (slon != 0)),
                        full_age_s=_per_message(ctx, ctx.dt_s), extrapolate=True)


def _mirror(out: pd.DataFrame, frame: pd.DataFrame, rows: np.ndarray, col: str, true_col: str,
            fake: np.ndarray) -> None:
    """Careful form: where a row's own log recorded the sender's true value of `true_col` in `col`
    (its receiver-side copy), record the fake there too; received copies and unavailable
    (e.g. all-zero) blocks differ from the true value and are left alone."""
    if col in frame:
        _put(out, col, rows & ~received(frame) & (floats(frame, col) == floats(frame, true_col)), fake)


def _speed_write(frame: pd.DataFrame, rows: np.ndarray, fake: np.ndarray, params: dict) -> pd.DataFrame:
    out = frame.copy(deep=False)
    true = floats(frame, SPEED)
    rows = rows & np.isfinite(true)
    fake = np.clip(_quantize(fake, SPEED_STEP), 0.0, SPEED_MAX)
    _put(out, SPEED, rows, fake)
    if params.get("mirror"):
        _mirror(out, frame, rows, RMD_SPEED, SPEED, fake)
    return _labelled(out, rows, np.abs(fake - true) > SPEED_TOL_MPS, params)


# ---------------------------------------------------------------- position attacks


@_register("const_position", "one fixed position near the corridor for all its messages",
           {"radius_m": 50.0}, position=True)
def const_position(frame: pd.DataFrame, rng: np.random.Generator, params: dict) -> pd.DataFrame:
    ctx = _ctx(frame)
    px, py = _corridor_points(rng, ctx.n_veh, params["radius_m"])
    return _move(frame, ctx, ctx.attacker, px[ctx.veh], py[ctx.veh], params)


def _offset(frame: pd.DataFrame, rng: np.random.Generator, params: dict, per_message: bool) -> pd.DataFrame:
    """True position + a ring offset drawn per vehicle (constant) or per message (fresh)."""
    ctx = _ctx(frame)
    dx, dy = _ring(rng, ctx.n if per_message else ctx.n_veh, params["min_m"], params["max_m"])
    dx, dy = (_per_message(ctx, dx), _per_message(ctx, dy)) if per_message else (dx[ctx.veh], dy[ctx.veh])
    x, y = _local(frame)
    return _move(frame, ctx, ctx.attacker, x + dx, y + dy, params, (x, y))


@_register("const_offset", "true position + one fixed (dx, dy) per vehicle, random direction",
           {"min_m": 100.0, "max_m": 200.0}, magnitude=("min_m", "max_m"), position=True)
def const_offset(frame: pd.DataFrame, rng: np.random.Generator, params: dict) -> pd.DataFrame:
    return _offset(frame, rng, params, per_message=False)


@_register("random_offset", "true position + a fresh random offset per message",
           {"min_m": 50.0, "max_m": 100.0}, magnitude=("min_m", "max_m"), position=True)
def random_offset(frame: pd.DataFrame, rng: np.random.Generator, params: dict) -> pd.DataFrame:
    return _offset(frame, rng, params, per_message=True)


@_register("random_position", "a fresh random position along the corridor per message",
           {"radius_m": 50.0}, position=True)
def random_position(frame: pd.DataFrame, rng: np.random.Generator, params: dict) -> pd.DataFrame:
    ctx = _ctx(frame)
    px, py = _corridor_points(rng, ctx.n, params["radius_m"])
    return _move(frame, ctx, ctx.attacker, _per_message(ctx, px), _per_message(ctx, py), params)


@_register("position_swap", "the position of another random message of the corpus", position=True)
def position_swap(frame: pd.DataFrame, rng: np.random.Generator, params: dict) -> pd.DataFrame:
    ctx = _ctx(frame)
    x, y = _local(frame)
    valid = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if len(valid) < 2:
        return _labelled(frame.copy(deep=False), np.zeros(ctx.n, bool), np.zeros(ctx.n, bool), params)
    pick = valid[_per_message(ctx, rng.integers(0, len(valid), size=ctx.n))]
    return swap_to(frame, ctx, x[pick], y[pick], params, (x, y))


def swap_to(frame: pd.DataFrame, ctx: _Ctx, donor_x: np.ndarray, donor_y: np.ndarray, params: dict,
            true_xy: tuple[np.ndarray, np.ndarray]) -> pd.DataFrame:
    """position_swap once each row's donor position (local x, y) is known; the partitioned path
    (`wydot_lab.partitions`) looks donors up in a table of every valid position instead."""
    return _move(frame, ctx, ctx.attacker, donor_x, donor_y, params, true_xy)


@_register("eventual_stop", "after a random moment, its frozen position with speed 0",
           {"p": 0.05}, position=True)
def eventual_stop(frame: pd.DataFrame, rng: np.random.Generator, params: dict) -> pd.DataFrame:
    ctx = _ctx(frame)
    att_s = ctx.attacker[ctx.order]
    trig = att_s & (rng.uniform(size=ctx.n) < params["p"])
    # per vehicle: stopped from its first trigger on (cumulative count reset at each vehicle)
    cum = np.cumsum(trig)
    before = np.r_[0, cum][ctx.start]
    stopped_s = (cum - before) > 0
    first_trig = trig & ((cum - before) == 1)
    src_s = np.maximum.accumulate(np.where(first_trig, np.arange(ctx.n), 0))
    stopped = np.zeros(ctx.n, bool)
    stopped[ctx.order] = stopped_s
    src = np.zeros(ctx.n, int)
    src[ctx.order] = ctx.order[src_s]
    x, y = _local(frame)
    out = _move(frame, ctx, stopped, x[src], y[src], params, (x, y))
    speed = floats(frame, SPEED)
    has_speed = stopped & np.isfinite(speed)
    _put(out, SPEED, has_speed, np.zeros(ctx.n))
    if params.get("mirror"):
        _mirror(out, frame, has_speed, RMD_SPEED, SPEED, np.zeros(ctx.n))
    moving = np.where(np.isfinite(speed), speed > MOVING_MPS, out["is_attack_cond"].to_numpy(bool))
    return _labelled(out, stopped, moving, params)


# ---------------------------------------------------------------- kinematic attacks


@_register("const_speed", "one fixed speed per vehicle", {"min_mps": 2.235, "max_mps": 35.763}, careful=True)
def const_speed(frame: pd.DataFrame, rng: np.random.Generator, params: dict) -> pd.DataFrame:
    ctx = _ctx(frame)
    v = rng.uniform(params["min_mps"], params["max_mps"], size=ctx.n_veh)
    return _speed_write(frame, ctx.attacker, v[ctx.veh], params)


@_register("speed_offset", "true speed + one fixed offset per vehicle (random sign)",
           {"min_mps": 3.0, "max_mps": 11.0}, magnitude=("min_mps", "max_mps"), careful=True)
def speed_offset(frame: pd.DataFrame, rng: np.random.Generator, params: dict) -> pd.DataFrame:
    ctx = _ctx(frame)
    off = rng.uniform(params["min_mps"], params["max_mps"], size=ctx.n_veh)
    off *= rng.choice(np.array([-1.0, 1.0]), size=ctx.n_veh)
    return _speed_write(frame, ctx.attacker, floats(frame, SPEED) + off[ctx.veh], params)


@_register("random_speed", "a fresh random speed per message", {"min_mps": 2.235, "max_mps": 35.763},
           careful=True)
def random_speed(frame: pd.DataFrame, rng: np.random.Generator, params: dict) -> pd.DataFrame:
    ctx = _ctx(frame)
    v = rng.uniform(params["min_mps"], params["max_mps"], size=ctx.n)
    return _speed_write(frame, ctx.attacker, _per_message(ctx, v), params)


@_register("heading_reversal", "heading + 180 degrees", careful=True)
def heading_reversal(frame: pd.DataFrame, rng: np.random.Generator, params: dict) -> pd.DataFrame:
    out = frame.copy(deep=False)
    h = floats(frame, HEADING)
    rows = frame["is_attacker"].to_numpy(bool) & np.isfinite(h)
    fake = _quantize((h + 180.0) % 360.0, HEADING_STEP) % 360.0
    _put(out, HEADING, rows, fake)
    if params.get("mirror"):
        _mirror(out, frame, rows, RMD_HEADING, HEADING, fake)
    speed = floats(frame, SPEED)
    return _labelled(out, rows, ~(speed <= MOVING_MPS), params)


@_register("data_replay", "from a random message of each run on, another vehicle's recorded run, in step",
           {"delay_s": 0.0})
def data_replay(frame: pd.DataFrame, rng: np.random.Generator, params: dict) -> pd.DataFrame:
    """Each attacker run is genuine until a message drawn uniformly within it; from there it
    re-sends, under its own id, one recorded message per message it sends: its victim's (one
    other vehicle, drawn per attacker) messages in order, from the start of the victim's latest
    run that began at least `delay_s` before the switch, never a message sent less than `delay_s`
    before (the attacker cannot have heard it yet) nor past that run's end (then it holds the
    latest it may send). So the fake track moves as the victim really moved, and the switch is where it
    shows (a replay of the victim's latest message froze in place when victims last sent hours
    before, which any stationarity check caught). No earlier victim run: the run stays genuine."""
    ctx = _ctx(frame)
    if ctx.n_veh < 2:
        return _labelled(frame.copy(deep=False), np.zeros(ctx.n, bool), np.zeros(ctx.n, bool), params)
    victim = rng.integers(0, ctx.n_veh - 1, size=ctx.n_veh)
    victim = victim + (victim >= np.arange(ctx.n_veh))  # never itself
    return replay(frame, ctx, victim, lambda n_runs: rng.random(n_runs), params)


def replay(frame: pd.DataFrame, ctx: _Ctx, victim: np.ndarray, switch_draw: Callable[[int], np.ndarray],
           params: dict) -> pd.DataFrame:
    """data_replay once each vehicle's victim (a vehicle code of `frame`, -1: none) is drawn;
    `switch_draw(n_runs)` gives each run's uniform draw of where it switches, in (vehicle, time)
    order. The partitioned path passes the whole-corpus draws of the frame's vehicles and runs."""
    out = frame.copy(deep=False)
    t = ctx.t_ns[ctx.order]  # everything below in (vehicle, time) order
    veh = ctx.veh[ctx.order]
    sorted_t = np.sort(t)  # time ranks (ties share the left one); np.unique here cost ~0.4 s per 400k rows
    span = len(sorted_t) + 1

    def last_at_or_before(keys: np.ndarray, owner: np.ndarray, v: np.ndarray, when: np.ndarray) -> np.ndarray:
        """Index into `keys` (sorted (vehicle, time rank) keys) of v's last entry at or before
        `when`, or -1."""
        rank = np.searchsorted(sorted_t, when, side="right") - 1
        i = np.searchsorted(keys, v * span + rank, side="right") - 1
        return np.where((i >= 0) & (owner[np.maximum(i, 0)] == v), i, -1)

    keys = veh * span + np.searchsorted(sorted_t, t)
    new_run = runs_start(ctx.dt_s)
    run_first = np.flatnonzero(new_run)
    run_len = np.diff(np.r_[run_first, ctx.n])
    switch = run_first + (switch_draw(len(run_first)) * run_len).astype(np.int64)  # first replayed message
    of_run = np.cumsum(new_run) - 1  # each message's run
    t_switch = t[switch][of_run]
    v = victim[veh]  # -1 (no victim known): never found below, the run stays genuine
    delay = int(params["delay_s"] * 1e9)
    starts = last_at_or_before(keys[run_first], veh[run_first], v, t_switch - delay)
    run_end = np.r_[run_first[1:], ctx.n] - 1  # each run's last sorted position
    sent = last_at_or_before(keys, veh, v, t - delay)  # the victim's latest message the attacker can have heard
    steps = np.arange(ctx.n) - switch[of_run]  # messages since the switch
    chosen = np.maximum(starts, 0)
    # one recorded message per message sent, never past the recorded run nor a message not yet sent
    pos = np.minimum(np.minimum(run_first[chosen] + np.maximum(steps, 0), run_end[chosen]), sent)
    replayed_sorted = ctx.attacker[ctx.order] & (steps >= 0) & (starts >= 0)
    replayed = _per_message(ctx, replayed_sorted)
    src = np.arange(ctx.n)
    src[ctx.order[replayed_sorted]] = ctx.order[pos[replayed_sorted]]
    for col in REPLAY_COLUMNS:
        out[col] = pd.Series(frame[col].array.take(src), index=frame.index)
    if params.get("mirror"):  # the own log records what was sent: the victim's values
        for rmd, col in ((RMD_LAT, LAT), (RMD_LON, LON), (RMD_ELEV, ELEV), (RMD_SPEED, SPEED), (RMD_HEADING, HEADING)):
            _mirror(out, frame, replayed, rmd, col, floats(frame, col)[src])
    x, y = _local(frame)
    moved = np.hypot(x[src] - x, y[src] - y)
    speed = floats(frame, SPEED)
    dv = np.abs(speed[src] - speed)
    cond = (moved > _tolerance(frame)) | (dv > SPEED_TOL_MPS)
    return _labelled(out, replayed, cond, params)


def default_matrix() -> list[dict]:
    """Every registered attack with the magnitudes of docs/DOMAIN.md section 3 (naive form)."""
    out: list[dict] = []
    for name, att in ATTACKS.items():
        if att.magnitude == ("min_m", "max_m"):
            out += [{"name": name, "min_m": lo, "max_m": hi} for lo, hi in ((10, 20), (50, 100), (100, 200))]
        else:
            out.append({"name": name})
    return out
