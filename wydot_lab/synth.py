"""Synthetic WYDOT BSMs: a seeded fleet driving the real I-80 centre lines, written as ODE
`bsmTx` NDJSON (schemaVersion 6 by default; 7, 8 or 9 on request) in the bucket layout
`<out>/wydot/BSM/YYYY/MM/DD/HH/<object>`.

Why synthetic: the public bucket needs credentials and money, and genuine data carries no
attack labels. Every field a real v6 record has is present (see test_data/real_wydot/06_*).

Semantics
- Fleet: `vehicles` persistent 8-hex ids, 30% trucks (slower, longer). Each vehicle drives
  non-stop laps of the corridor, eastbound then westbound (a U-turn at each state line), at a
  smooth speed v(t) = mean + three sinusoids: two quick ones (minutes, <= 1.5 m/s: driver and
  grade) and a slow one of 20-90 min and up to 7 m/s (weather, variable speed limits, traffic).
  Cars' means 28-32.5 m/s, trucks' 23-28; speeds stay within 14.5-35.5 m/s, inside the
  privacy window 2.235..35.763 m/s (a speed attack cannot be told from its value alone).
  Its odometer is the exact integral of v, so where a vehicle is at any instant is one
  closed-form function: windows hours apart agree.
- Lanes: the I-80 lines are one per carriageway; a vehicle drives the centre of the right lane
  (LANE_M right of its line) and, for a share of the time (cars 10-40%, trucks 2-15%), of the
  left lane, switching on a slow per-vehicle cycle (10-40 min), also a closed-form function.
- Messages sit on the vehicle's transmit grid t = phase + k / rate_hz; msgCnt = (k + c) % 128,
  secMark = ms within the minute of recordGeneratedAt.
- `records_per_hour=None`: every vehicle transmits all the time. `records_per_hour=R`: each
  hour observes R messages as runs of `window` (20) consecutive messages of distinct vehicles,
  the way an RSU hears a passing car; with 3 days x 24 h x 100 and 100 vehicles every vehicle
  is seen in several runs on different days (enough for vehicle-disjoint splits).
- Reported position = true position + Gaussian GPS noise of scale semiMajor/semiMinor along
  `orientation`, clipped at 13 m, so every point stays within 15 m of its carriageway's line.
  Heading = true bearing of the centre line (meridian convergence applied), 0.0125 deg steps.
  Path history: CRUMBS crumbs of the vehicle's *true* past positions, as offsets from the
  reported current position in the sign convention real WYDOT records show
  (frames.CRUMB_SIGN: past = reported - offset), spanning ~2.5 message periods.
- `defect_share` > 0: real objects are not clean, so that share of the lines written are
  defect lines (kinds in DEFECTS: truncated, TIM, wrong type, missing coreData, unknown
  schemaVersion, out of range, unparseable time, blank), each right after the valid record
  it was made from. They come on top of the valid records, which stay exactly as with 0.
- Versions: 7 and 8 are v6's record with their metadata additions; 9 is the J2735 message
  frame in integer units (`payload.data.value.BasicSafetyMessage`, partII as
  `{partII-Id, partII-Value}`), so every value must sit on J2735's grid. All of them already
  do but the accuracy ellipse (semi-axes 0.01 m, orientation 0.0001 deg in the v6 corpus):
  `j2735_grid` (on for v9 unless set) puts it on J2735's 0.05 m and 360/65535 deg steps, and
  then any version writes the same numbers, so v6 and v9 corpora of one seed ingest alike.
- `realism` (config.RealismParams, off unless asked; on in params/default.yaml; numbers and
  sources in docs/SYNTHETIC.md): a drifting GNSS bias (closed-form Gauss-Markov per vehicle)
  that the crumbs share, semiMajor from the vehicle's error (12.7 cap, unavailable), heading
  and yaw noise, slowdowns and stops by a time-warped clock (records under the privacy floor
  dropped), ramps / rest areas off the line, runs of irregular length with lost messages and
  jittered timestamps, rxMsg copies logged by a receiver in range, optional id rotation. Its
  draws come from its own generators ((seed, 4) per vehicle, (seed, 3, hour, block)), so
  with it off the bytes are the clean corpus's.
- Bytes are a pure function of the parameters: all randomness comes from
  numpy Generators seeded by (seed, hour, block); no clock, no uuid4, no hash order.

Speed: records are formatted column-wise into a fixed-width uint8 matrix (NUL = padding)
that one `bytes.replace` per chunk compacts, and hours are spread over worker processes.
"""
from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import functools
import os
import re
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from wydot_lab import geo, ingest, layout
from wydot_lab.config import RealismParams, SynthParams
from wydot_lab.frames import CRUMB_SIGN, PRIVACY_MPS
from wydot_lab.schema import BSM_SCHEMA, CRUMB, conform

HOUR_MS = 3_600_000
WINDOW = 20  # consecutive messages per observed run (records_per_hour mode)
CRUMBS = 5  # path-history points per message (keeps the committed corpus < 15 MB)
TRUCK_SHARE = 0.3
MAX_NOISE_M = 13.0
LANE_M = 1.8  # a lane centre's distance from the carriageway line (two 3.6 m lanes)
V_TOP = 35.5  # m/s, fastest synthetic speed: under the privacy filter's 35.763 cap
BLOCK_ROWS = 40_000  # rows formatted at once (continuous mode splits vehicles into blocks)
OBJECTS_PER_HOUR = 3
EPOCH = np.datetime64("1970-01-01T00:00:00", "ms")
SCHEMA_VERSIONS = (6, 7, 8, 9)  # what write_corpus can write
ORIENT_TIMES, ORIENT_DIVIDED = 54932479, 10**10  # J2735 orientation step 360/65535 deg, as ODE v6 wrote it
ORIENT_STEP = ORIENT_TIMES / ORIENT_DIVIDED

# I-80 elevation (m) by longitude: Evanston, Bear River divide, Green River, Rock Springs,
# Continental Divide, Rawlins, Elk Mountain, Laramie, Sherman Summit, Cheyenne, Pine Bluffs.
_ELEV_LON = np.array([-111.06, -110.55, -109.47, -109.21, -108.05, -107.24, -106.45, -105.59, -105.39, -104.82, -104.04])
_ELEV_M = np.array([2060.0, 2210.0, 1860.0, 1950.0, 2150.0, 2040.0, 2200.0, 2180.0, 2620.0, 1850.0, 1620.0])
SUPPLEMENTAL = '[{"id":"SupplementalVehicleExtensions","value":{}}]'  # partII_other as ingest stores it


# --------------------------------------------------------------------------- fleet and physics
@dataclass(frozen=True)
class Fleet:
    """Per-vehicle constants, drawn once from (seed,)."""

    ids: np.ndarray  # S8 upper-case hex
    truck: np.ndarray
    width: np.ndarray  # cm
    length: np.ndarray  # cm
    v_mean: np.ndarray
    amp: np.ndarray  # (V, 3) m/s
    period: np.ndarray  # (V, 3) s
    phase: np.ndarray  # (V, 3) rad
    u0: np.ndarray  # odometer at t = 0 (m)
    tx_phase_ms: np.ndarray  # transmit grid offset
    cnt0: np.ndarray  # msgCnt offset
    tag: np.ndarray  # S4 hex, part of the OBU's log file name
    lane_period: np.ndarray  # s, one right-left-right cycle
    lane_phase: np.ndarray  # rad
    lane_keep: np.ndarray  # in the left lane while sin(cycle) > lane_keep


def make_fleet(vehicles: int, rate_hz: float, seed: int) -> Fleet:
    rng = np.random.default_rng([seed, 0])
    ids = rng.choice(2**32, size=vehicles, replace=False)
    truck = rng.random(vehicles) < TRUCK_SHARE
    v_mean = np.where(truck, rng.uniform(23.0, 28.0, vehicles), rng.uniform(28.0, 32.5, vehicles))
    quick = np.column_stack([rng.uniform(0.3, 1.0, vehicles), rng.uniform(0.1, 0.5, vehicles)])
    lap = sum(_lines().length)
    period_ms = _period_ms(rate_hz)
    fleet = dict(
        ids=np.array([f"{i:08X}" for i in ids], dtype="S8"),
        truck=truck,
        width=np.where(truck, rng.integers(244, 260, vehicles), rng.integers(170, 205, vehicles)),
        length=np.where(truck, rng.integers(700, 2300, vehicles), rng.integers(420, 560, vehicles)),
        v_mean=v_mean,
        period=np.column_stack([rng.uniform(120, 600, vehicles), rng.uniform(25, 90, vehicles)]),
        phase=rng.uniform(0, 2 * np.pi, (vehicles, 2)),
        u0=rng.uniform(0, lap, vehicles),
        tx_phase_ms=rng.integers(0, period_ms, vehicles),
        cnt0=rng.integers(0, 128, vehicles),
        tag=np.array([f"{t:04x}" for t in rng.integers(0, 2**16, vehicles)], dtype="S4"),
    )
    # the slow swing, drawn last; capped so the top speed stays under the privacy cap
    slow = np.minimum(rng.uniform(1.5, 7.0, vehicles), V_TOP - v_mean - quick.sum(1))
    fleet["amp"] = np.column_stack([quick, slow])
    fleet["period"] = np.column_stack([fleet["period"], rng.uniform(1200, 5400, vehicles)])
    fleet["phase"] = np.column_stack([fleet["phase"], rng.uniform(0, 2 * np.pi, vehicles)])
    left_share = np.where(truck, rng.uniform(0.02, 0.15, vehicles), rng.uniform(0.1, 0.4, vehicles))
    fleet.update(lane_period=rng.uniform(600, 2400, vehicles), lane_phase=rng.uniform(0, 2 * np.pi, vehicles),
                 lane_keep=np.cos(np.pi * left_share))
    return Fleet(**fleet)


def lane_offset_m(fleet: Fleet, v: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """Lateral offset (m, + = right of travel) of vehicles v at seconds t_s: the right lane's
    centre, or the left one's while the vehicle's lane cycle says so."""
    left = np.sin(2 * np.pi * t_s / fleet.lane_period[v] + fleet.lane_phase[v]) > fleet.lane_keep[v]
    return np.where(left, -LANE_M, LANE_M)


def _m_per_deg(lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metres per degree of latitude and of longitude at `lat` (WGS84 series)."""
    return 111_132.954 - 559.822 * np.cos(2 * np.radians(lat)), 111_412.84 * np.cos(np.radians(lat))


def _to_the_right(i: np.ndarray, lat: np.ndarray, lon: np.ndarray, off: np.ndarray):
    """(lat, lon, grid x m, grid y m) of points moved `off` metres right of segment i's direction
    (the local grid's north is turned from true north by the meridian convergence)."""
    ln = _lines()
    length = np.hypot(ln.ux[i], ln.uy[i])
    length = np.where(length > 0, length, 1.0)
    dx, dy = off * ln.uy[i] / length, -off * ln.ux[i] / length
    c = np.radians(geo.convergence_deg(lon))
    de, dn = dx * np.cos(c) + dy * np.sin(c), dy * np.cos(c) - dx * np.sin(c)
    m_lat, m_lon = _m_per_deg(lat)
    return lat + dn / m_lat, lon + de / m_lon, dx, dy


def _period_ms(rate_hz: float) -> int:
    p = int(round(1000.0 / rate_hz))
    if p < 1:
        raise ValueError(f"rate {rate_hz} Hz is above 1000 Hz")
    return p


def kinematics(fleet: Fleet, v: np.ndarray, t_s: np.ndarray):
    """(odometer m, speed m/s, acceleration m/s^2) of vehicles v at seconds t_s since the epoch:
    the speed's sinusoids integrate in closed form."""
    w, arg, c = _phase(fleet, v, t_s)
    a = fleet.amp[v]
    s = a * np.sin(arg)
    speed = fleet.v_mean[v] + s.sum(-1)
    acc = a * w * c
    return _odometer(fleet, v, t_s, w, c), speed, acc.sum(-1)


def _phase(fleet: Fleet, v: np.ndarray, t_s: np.ndarray):
    """(angular frequency, phase angle, its cosine), each t_s.shape + (3,); v indexes t_s's
    first axis. cos is computed once and shared."""
    extra = (None,) * (t_s.ndim - 1)
    w = (2 * np.pi / fleet.period)[v][(slice(None), *extra)]
    arg = w * t_s[..., None] + fleet.phase[v][(slice(None), *extra)]
    return w, arg, np.cos(arg)


def _odometer(fleet: Fleet, v: np.ndarray, t_s: np.ndarray, w=None, c=None) -> np.ndarray:
    """Odometer only (path-history crumbs need no speed or acceleration), same arithmetic as
    kinematics; per-vehicle constants are computed per vehicle, then gathered."""
    if w is None:
        w, _, c = _phase(fleet, v, t_s)
    extra = (slice(None), *(None,) * (t_s.ndim - 1))
    per_v = (fleet.amp / (2 * np.pi / fleet.period))[v][extra]
    d = per_v * (np.cos(fleet.phase)[v][extra] - c)
    return fleet.u0[v][extra] + fleet.v_mean[v][extra] * t_s + d.sum(-1)


def place(odo: np.ndarray):
    """Odometer -> (eastbound?, chainage) on a lap of eastbound then westbound."""
    le, lw = _lines().length
    p = np.mod(odo, le + lw)
    east = p < le
    return east, np.where(east, p, p - le)


@dataclass(frozen=True)
class _Lines:
    """Both carriageways' vertex arrays end to end (eastbound, a pad vertex, westbound, a pad
    vertex), so one gather serves rows of either direction; per-segment arrays are indexed by
    their first vertex. `bucket` maps chainage // BUCKET_M (westbound: + `wbucket`) to the last
    vertex at or before the bucket's start: a search that costs a gather, not a binary search."""

    offset: int  # index of the first westbound vertex
    last: tuple  # index of the last segment of each direction
    length: tuple  # metres, eastbound and westbound
    wbucket: int
    chainage: np.ndarray  # +inf at the pad vertices stops the forward search
    bucket: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    x: np.ndarray
    y: np.ndarray
    ux: np.ndarray
    uy: np.ndarray
    bearing: np.ndarray


BUCKET_M = 25.0


@functools.lru_cache(maxsize=None)
def _lines() -> _Lines:
    e, w = geo.load_centreline("eastbound"), geo.load_centreline("westbound")
    off = len(e.x) + 1
    cat = lambda a, b, pad: np.r_[a, pad, b, pad]  # noqa: E731
    ux, uy = cat(e.ux, w.ux, [0.0, 0.0]), cat(e.uy, w.uy, [0.0, 0.0])
    buckets = [np.searchsorted(c.chainage, np.arange(int(c.length // BUCKET_M) + 2) * BUCKET_M, side="right") - 1 + o
               for c, o in ((e, 0), (w, off))]
    return _Lines(off, (len(e.x) - 2, off + len(w.x) - 2), (e.length, w.length), len(buckets[0]),
                  cat(e.chainage, w.chainage, np.inf), np.concatenate(buckets),
                  cat(e.lat, w.lat, np.nan), cat(e.lon, w.lon, np.nan), cat(e.x, w.x, np.nan), cat(e.y, w.y, np.nan),
                  ux, uy, geo.bearing_deg(ux, uy))


def _locate(east: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertex index into _lines(), fraction along its segment) of chainage s on each row's own
    carriageway: the answer of Centreline._locate (binary search), bit for bit, found by a
    bucket lookup plus a short vectorized forward walk."""
    ln = _lines()
    ch = ln.chainage
    s = np.clip(s, 0.0, np.where(east, *ln.length))
    b = (s * (1.0 / BUCKET_M)).astype(np.int64) - 1  # one bucket back: rounding can never overshoot
    np.maximum(b, 0, out=b)
    b[~east] += ln.wbucket
    i = ln.bucket[b]
    rows = np.arange(len(s))
    while len(rows):  # advance while the next vertex is still at or before s
        step = ch[i[rows] + 1] <= s[rows]
        rows = rows[step]
        i[rows] += 1
    np.minimum(i, np.where(east, *ln.last), out=i)
    seg = ch[i + 1] - ch[i]
    return i, np.where(seg > 0, (s - ch[i]) / np.where(seg > 0, seg, 1.0), 0.0)


def _latlon(i: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) interpolated between the vertex coordinates at _locate's answer: no
    projection call, and within 10 cm of the projected position (segments <= 3 km)."""
    ln = _lines()
    return ln.lat[i] + t * (ln.lat[i + 1] - ln.lat[i]), ln.lon[i] + t * (ln.lon[i + 1] - ln.lon[i])


def elevation_m(lon: np.ndarray, odo: np.ndarray) -> np.ndarray:
    """A smooth, plausible I-80 elevation profile (m) plus gentle rolling terrain."""
    return np.interp(lon, _ELEV_LON, _ELEV_M) + 12.0 * np.sin(odo / 2500.0) + 5.0 * np.sin(odo / 700.0)


def _heading_true(east, s, convergence) -> np.ndarray:
    """True bearing of travel (the carriageway's segment bearing + meridian convergence)."""
    i, _ = _locate(east, s)
    return np.mod(_lines().bearing[i] + convergence, 360.0)


# --------------------------------------------------------------------------- realism (docs/SYNTHETIC.md)
GM_TERMS = 8  # random Fourier terms per axis of the GNSS bias


@dataclass(frozen=True)
class Messy:
    """Per-vehicle realism constants, drawn once from (seed, 4); `p` the params they follow."""

    p: RealismParams
    sd: np.ndarray  # m, GNSS bias sd per axis
    gm_w: np.ndarray  # (V, 2, GM_TERMS) rad/s
    gm_phase: np.ndarray  # (V, 2, GM_TERMS)
    dip_period: np.ndarray  # s, one slowdown per period
    dip_phase: np.ndarray  # s
    dip_depth: np.ndarray  # share of the speed lost at the bottom (1 = a full stop)
    dip_ramp: np.ndarray  # s, braking (and accelerating) time
    dip_hold: np.ndarray  # s at the bottom
    id_phase_ms: np.ndarray  # temporary-id rotation offset


@functools.lru_cache(maxsize=4)
def make_messy(vehicles: int, seed: int, p: RealismParams) -> Messy | None:
    """None when realism is off. A separate generator: the clean corpus's draws never move."""
    if not p.enabled:
        return None
    rng = np.random.default_rng([seed, 4])
    poor = rng.random(vehicles) < p.poor_fix_share
    sd = np.where(poor, rng.uniform(8.0, 14.0, vehicles), rng.uniform(*p.gnss_sd_m, vehicles))
    tau = rng.uniform(*p.gnss_tau_s, vehicles)
    # Cauchy frequencies / tau: the terms' mean autocorrelation is exp(-|dt| / tau), a
    # Gauss-Markov (AR(1)) process in closed form, so crumbs seconds apart share it
    w = np.minimum(np.abs(rng.standard_cauchy((vehicles, 2, GM_TERMS))) / tau[:, None, None], np.pi / 2)
    phase = rng.uniform(0, 2 * np.pi, (vehicles, 2, GM_TERMS))
    stop = rng.random(vehicles) < p.stop_share
    return Messy(p, sd, w, phase, rng.uniform(*p.slowdown_every_s, vehicles), rng.uniform(0, 1e5, vehicles),
                 np.where(stop, 1.0, rng.uniform(0.3, 0.85, vehicles)), rng.uniform(40.0, 200.0, vehicles),
                 rng.uniform(20.0, 240.0, vehicles), rng.integers(0, 10**9, vehicles))


def gnss_bias(m: Messy, v: np.ndarray, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(east, north) m of the drifting GNSS error of vehicles v at seconds t_s (any shape whose
    first axis v indexes): a closed-form function of time, so crumbs and messages share it."""
    extra = (slice(None), *(None,) * (t_s.ndim - 1))
    amp = (m.sd * np.sqrt(2.0 / GM_TERMS))[v][extra]
    out = []
    for axis in (0, 1):
        arg = m.gm_w[v, axis][extra] * (t_s[..., None] - 1.6e9) + m.gm_phase[v, axis][extra]
        out.append(amp * np.cos(arg).sum(-1))
    return out[0], out[1]


def _ramp_q(u):
    return np.where(u < 0, 0.0, np.where(u < 1, 0.5 * u * u, u - 0.5))


def warp_clock(m: Messy, v: np.ndarray, t_s: np.ndarray):
    """(progress clock tau, slowdown D in [0, 1], dD/dt) of vehicles v at t_s: the vehicle
    advances at (1 - D) of its free-flow speed, D a trapezoid (brake, hold, accelerate) once per
    period; tau = t - integral of D is closed form, so odometer(tau) stays exact."""
    extra = (slice(None), *(None,) * (t_s.ndim - 1))
    per, a, r, h = (x[v][extra] for x in (m.dip_period, m.dip_depth, m.dip_ramp, m.dip_hold))
    k = np.floor((t_s - m.dip_phase[v][extra]) / per)
    x = t_s - m.dip_phase[v][extra] - k * per
    d = a * (np.clip(x / r, 0, 1) - np.clip((x - r - h) / r, 0, 1))
    lost = k * a * (r + h) + a * r * (_ramp_q(x / r) - _ramp_q((x - r - h) / r))
    dd = a / r * (((x >= 0) & (x < r)).astype(float) - ((x >= r + h) & (x < 2 * r + h)))
    return t_s - lost, d, dd


def _hex8(ids: np.ndarray) -> np.ndarray:
    """uint32 -> S8 upper-case hex, vectorised."""
    hexd = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
    nib = (ids.astype(np.uint64)[:, None] >> np.arange(28, -1, -4, dtype=np.uint64)) & 15
    return np.ascontiguousarray(hexd[nib.astype(np.int64)]).view("S8").ravel()


def rotated_ids(fleet: Fleet, m: Messy, v: np.ndarray, t_ms: np.ndarray) -> np.ndarray:
    """Temporary ids: each vehicle's id changes every `id_rotation_s` (J2735 allows it for privacy)."""
    base = np.array([int(x, 16) for x in fleet.ids], dtype=np.uint64)[v]
    epoch = ((t_ms + m.id_phase_ms[v]) // int(m.p.id_rotation_s * 1000)).astype(np.uint64)
    mixed = (base ^ (epoch * np.uint64(2654435761))) & np.uint64(0xFFFFFFFF)
    return _hex8(mixed)


def _ramp_runs(rng, m: Messy, nwin: int, sizes: np.ndarray):
    """Per run: on a ramp? joining (else leaving), lateral offset O, length L, message at the gore."""
    p = m.p
    ramp = rng.random(nwin) < p.ramp_share
    join = rng.random(nwin) < 0.5
    off = rng.uniform(*p.ramp_offset_m, nwin)
    length = rng.uniform(*p.ramp_length_m, nwin)
    gore = np.minimum((rng.random(nwin) * np.minimum(sizes, 4)).astype(np.int64), sizes - 1)
    gore = np.where(join, gore, sizes - 1 - gore)
    return ramp, join, np.where(ramp, off, 0.0), length, gore


def ramp_offset(ramp, join, off, length, gore_odo, w: np.ndarray, odo: np.ndarray):
    """(metres right of the lane, slope d offset / d odometer, its derivative) of a run on a ramp:
    O * z^2, z the distance before the gore (joining) or after it (leaving) over L, capped at
    1 (a rest area or frontage road parallel to I-80)."""
    extra = (slice(None), *(None,) * (odo.ndim - 1))
    j, o, ln, g = (x[w][extra] for x in (join, off, length, gore_odo))
    d = np.where(j, g - odo, odo - g)
    z = np.clip(d / ln, 0, 1)
    inside = (d > 0) & (d < ln)
    slope = np.where(inside, np.where(j, -1, 1) * 2 * o * z / ln, 0.0)
    return o * z * z, slope, np.where(inside, 2 * o / ln**2, 0.0)


# --------------------------------------------------------------------------- one block of messages
@dataclass
class Block:
    """Columns of one (hour, block) batch of messages, object by object, time-ordered within."""

    cols: dict  # canonical-name -> numpy array (reported values, already quantised)
    crumbs: dict  # lat/lon/elev/time -> (n, CRUMBS)
    meta: dict  # text/int columns only the NDJSON needs (timestamps ms, log file names ...)
    truth: dict  # true_lat, true_long, true_x, true_y, eastbound, chainage, true_speed
    objects: list  # (relative key, row start, row stop)


def _windows(hour_ms: int, fleet: Fleet, period: int, records_per_hour: int | None, rng, block: int, blocks: int,
             messy: Messy | None = None):
    """(vehicle, first grid index k0, size) of the runs observed in this hour/block; with
    `messy`, runs of irregular length (uniform in realism.run_length) adding up to the hour's
    records."""
    nveh = len(fleet.ids)
    if records_per_hour is None:
        veh = np.array_split(np.arange(nveh), blocks)[block]
        first = -(-(hour_ms - fleet.tx_phase_ms[veh]) // period)
        last = -(-(hour_ms + HOUR_MS - fleet.tx_phase_ms[veh]) // period)
        return veh, first, last - first
    fit = max(1, (HOUR_MS - period) // period)  # messages that fit in one hour with slack
    size = min(WINDOW, fit)
    nwin = -(-records_per_hour // size)
    sizes = np.full(nwin, size)
    sizes[-1] = records_per_hour - size * (nwin - 1)
    if messy is not None:
        lo, hi = messy.p.run_length
        lo, hi = min(lo, fit), min(hi, fit)
        sizes = rng.integers(lo, hi + 1, -(-records_per_hour // lo) + 1)  # enough to add up to the hour's records
        nwin = int(np.searchsorted(np.cumsum(sizes), records_per_hour)) + 1
        sizes = sizes[:nwin]
        sizes[-1] -= int(sizes.sum()) - records_per_hour
        if nwin > nveh:
            raise ValueError(f"{records_per_hour} records/hour needs {nwin} runs but only {nveh} vehicles")
    if nwin > nveh:
        raise ValueError(f"{records_per_hour} records/hour needs {nwin} runs of {size} but only {nveh} vehicles")
    veh = rng.choice(nveh, nwin, replace=False)
    span = (sizes - 1) * period
    start = hour_ms + rng.uniform(0, 1, nwin) * (HOUR_MS - span - period)
    k0 = np.ceil((start - fleet.tx_phase_ms[veh]) / period).astype(np.int64)
    return veh, k0, sizes


def simulate_block(fleet: Fleet, rate_hz: float, seed: int, hour_ms: int, records_per_hour: int | None,
                   block: int = 0, blocks: int = 1, j2735_grid: bool = False, messy: Messy | None = None) -> Block:
    period = _period_ms(rate_hz)
    rng = np.random.default_rng([seed, 1, hour_ms // HOUR_MS, block])
    veh, k0, sizes = _windows(hour_ms, fleet, period, records_per_hour, rng, block, blocks, messy)
    keep = sizes > 0
    veh, k0, sizes = veh[keep], k0[keep], sizes[keep]
    nwin = len(veh)
    win = np.repeat(np.arange(nwin), sizes)
    rec = np.arange(len(win)) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # index within the run
    v = veh[win]
    k = k0[win] + rec
    t_ms = fleet.tx_phase_ms[v] + k * period
    if messy is not None:  # the realism draws come from their own generator
        mrng = np.random.default_rng([seed, 3, hour_ms // HOUR_MS, block])
        jit = messy.p.jitter_ms
        t_ms = t_ms + np.clip(np.rint(mrng.normal(0, 1, len(t_ms)) * jit), -3 * jit, 3 * jit).astype(np.int64)
    # objects: runs (or vehicle blocks) split into up to OBJECTS_PER_HOUR files by start time
    order_w = np.argsort(t_ms[np.cumsum(sizes) - sizes], kind="stable")
    nobj = max(1, min(OBJECTS_PER_HOUR if records_per_hour else 1, nwin))
    obj_of_win = np.empty(nwin, dtype=np.int64)
    for o, ws in enumerate(np.array_split(order_w, nobj)):
        obj_of_win[ws] = o
    order = np.lexsort((v, t_ms, obj_of_win[win]))
    win, rec, v, k, t_ms = win[order], rec[order], v[order], k[order], t_ms[order]
    n = len(t_ms)

    t_s = t_ms / 1000.0
    if messy is None:
        odo, speed, accel = kinematics(fleet, v, t_s)
        extra_off = 0.0
    else:
        tau, dip, ddip = warp_clock(messy, v, t_s)
        odo, free, free_acc = kinematics(fleet, v, tau)
        speed = free * (1 - dip)
        accel = free_acc * (1 - dip) ** 2 - free * ddip
        ramp, join, r_off, r_len, gore = _ramp_runs(mrng, messy, nwin, sizes)
        at_gore = rec == gore[win]
        gore_odo = np.zeros(nwin)
        gore_odo[win[at_gore]] = odo[at_gore]
        extra_off, slope, dslope = ramp_offset(ramp, join, r_off, r_len, gore_odo, win, odo)
        along = np.sqrt(1 + slope**2)
        speed, accel = speed * along, accel * along  # what the vehicle's own sensors read on the ramp
        # messages lost on the air, and those the publisher's privacy filter drops
        rep_speed = np.round(speed / 0.02) * 0.02
        kept = ((mrng.random(len(t_ms)) >= messy.p.drop_share)
                & (rep_speed >= PRIVACY_MPS[0]) & (rep_speed <= PRIVACY_MPS[1]))
        win, v, k, t_ms, t_s, tau, odo, speed, accel, extra_off, slope, dslope = (
            x[kept] for x in (win, v, k, t_ms, t_s, tau, odo, speed, accel, extra_off, slope, dslope))
        sizes = np.bincount(win, minlength=nwin)
        by_win = np.argsort(win, kind="stable")  # rows of a run are in time order already
        rec = np.empty(len(win), np.int64)
        rec[by_win] = np.arange(len(win)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        n = len(t_ms)
    east, s = place(odo)
    i, frac = _locate(east, s)
    tlat, tlon, lane_e, lane_n = _to_the_right(i, *_latlon(i, frac), lane_offset_m(fleet, v, t_s) + extra_off)
    ln = _lines()
    tx, ty = ln.x[i] + frac * ln.ux[i] + lane_e, ln.y[i] + frac * ln.uy[i] + lane_n
    conv = geo.convergence_deg(tlon)
    heading = np.mod(ln.bearing[i] + conv, 360.0)
    if messy is not None:  # the ramp's own direction, then GNSS heading noise that grows as the speed falls
        h_sd = np.minimum(messy.p.heading_sd_deg + 15.0 / np.maximum(speed, 0.5), 30.0)
        heading = np.mod(heading + np.degrees(np.arctan(slope)) + mrng.normal(0, 1, n) * h_sd, 360.0)
    # curvature from the heading change over +-15 m -> yaw rate, lateral acceleration, radius
    ahead = _heading_true(east, np.minimum(s + 15.0, np.where(east, *ln.length)), conv)
    behind = _heading_true(east, np.maximum(s - 15.0, 0.0), conv)
    kappa = np.radians(np.mod(ahead - behind + 180.0, 360.0) - 180.0) / 30.0  # 1/m, + = right turn
    yaw = np.degrees(kappa * speed)
    if messy is not None:  # the ramp's curve, plus the gyro's noise
        yaw = yaw + np.degrees(dslope / (1 + slope**2)) * speed + mrng.normal(0, 0.3, n)
    accel_lat = speed**2 * kappa
    radius = np.where(np.abs(kappa) > 1 / 2000.0, 1.0 / np.where(kappa == 0, 1.0, kappa), 0.0)
    elev = elevation_m(tlon, odo)

    if messy is None:  # GPS noise along the error ellipse, clipped so the point stays within 15 m of the line
        semi_major = np.round(rng.uniform(1.5, 4.0, n), 2)
        semi_minor = np.round(semi_major * rng.uniform(0.55, 1.0, n), 2)
        orient = np.round(rng.uniform(0, 360.0, n), 4)
    else:  # the run's receiver reports its accuracy from its own sd: 12.7 caps it, some say unavailable
        wr = lambda a: a[win]  # noqa: E731  per run -> per message
        sm = np.minimum(np.rint(messy.sd[veh] * mrng.uniform(0.8, 1.5, nwin) * 20) / 20, 12.7)
        na = mrng.random(nwin) < messy.p.accuracy_unavailable_share
        semi_major = wr(np.where(na, np.nan, sm))
        semi_minor = wr(np.where(na, np.nan, np.rint(sm * mrng.uniform(0.6, 1.0, nwin) * 20) / 20))
        orient = wr(np.round(mrng.uniform(0, 360.0, nwin), 4))
    if j2735_grid:  # the steps J2735 can carry, as ingest reads them back (value * times / divided_by)
        semi_major, semi_minor = (np.rint(x * 20) * 5 / 100 for x in (semi_major, semi_minor))
        orient = np.minimum(np.rint(orient / ORIENT_STEP), 65534) * ORIENT_TIMES / ORIENT_DIVIDED
    if messy is None:
        a_, b_ = rng.normal(0, 1, n) * semi_major, rng.normal(0, 1, n) * semi_minor
        th = np.radians(orient)
        de, dn = a_ * np.sin(th) + b_ * np.cos(th), a_ * np.cos(th) - b_ * np.sin(th)
        mag = np.hypot(de, dn)
        shrink = np.minimum(1.0, MAX_NOISE_M / np.where(mag > 0, mag, 1.0))
        de, dn = de * shrink, dn * shrink
    else:  # the drifting bias (shared with the crumbs) plus white jitter
        de, dn = gnss_bias(messy, v, t_s)
        de = de + mrng.normal(0, messy.p.gnss_white_m, n)
        dn = dn + mrng.normal(0, messy.p.gnss_white_m, n)
    m_per_deg_lat, m_per_deg_lon = _m_per_deg(tlat)
    lat = np.round(tlat + dn / m_per_deg_lat, 7)
    lon = np.round(tlon + de / m_per_deg_lon, 7)

    # path history: true past positions relative to the reported position
    span = np.clip(2.5 * period / 1000.0, 10.0, 60.0)
    gaps = rng.uniform(0.5, 1.5, (n, CRUMBS))
    c_time = np.round(np.cumsum(gaps, 1) / gaps.sum(1, keepdims=True) * span * rng.uniform(0.9, 1.0, (n, 1)), 2)
    c_time = np.maximum(c_time, 0.01 * np.arange(1, CRUMBS + 1))
    p_t = t_s[:, None] - c_time
    if messy is None:
        p_odo = _odometer(fleet, v, p_t).ravel()
        p_extra = 0.0
    else:
        p_odo2 = _odometer(fleet, v, warp_clock(messy, v, p_t)[0])
        p_extra = ramp_offset(ramp, join, r_off, r_len, gore_odo, win, p_odo2)[0].ravel()
        p_odo = p_odo2.ravel()
    p_i, p_frac = _locate(*place(p_odo))
    p_lat, p_lon, _, _ = _to_the_right(p_i, *_latlon(p_i, p_frac),
                                       lane_offset_m(fleet, np.repeat(v, CRUMBS), p_t.ravel()) + p_extra)
    if messy is not None:  # the receiver's error of those instants: the crumbs drift with the messages
        b_e, b_n = gnss_bias(messy, v, p_t)
        p_mlat, p_mlon = _m_per_deg(p_lat)
        p_lat, p_lon = p_lat + b_n.ravel() / p_mlat, p_lon + b_e.ravel() / p_mlon
    p_elev = elevation_m(p_lon, p_odo)
    elev_r = np.round(elev, 1)
    crumbs = {  # past = reported + CRUMB_SIGN * offset, the convention of real WYDOT records
        "lat": np.round(CRUMB_SIGN * (p_lat.reshape(n, CRUMBS) - lat[:, None]), 7),
        "lon": np.round(CRUMB_SIGN * (p_lon.reshape(n, CRUMBS) - lon[:, None]), 7),
        "elev": np.round(CRUMB_SIGN * (p_elev.reshape(n, CRUMBS) - elev_r[:, None]), 1),
        "time": c_time,
    }

    cols = {
        "coreData_msgCnt": (k + fleet.cnt0[v]) % 128,
        "coreData_id": (fleet.ids[v] if messy is None or messy.p.id_rotation_s is None
                        else rotated_ids(fleet, messy, v, t_ms)),
        "coreData_secMark": t_ms % 60_000,
        "coreData_position_lat": lat,
        "coreData_position_long": lon,
        "coreData_elevation": elev_r,
        "coreData_speed": np.round(np.round(speed / 0.02) * 0.02, 2),
        "coreData_heading": np.round(np.mod(np.round(heading / 0.0125) * 0.0125, 360.0), 4),
        "coreData_accelset_accelLong": np.round(accel, 2),
        "coreData_accelset_accelLat": np.round(accel_lat, 2),
        "coreData_accelset_accelVert": np.zeros(n),
        "coreData_accelset_accelYaw": np.round(yaw, 2),
        "coreData_accuracy_semiMajor": semi_major,
        "coreData_accuracy_semiMinor": semi_minor,
        "coreData_accuracy_orientation": orient,
        "coreData_size_width": fleet.width[v],
        "coreData_size_length": fleet.length[v],
        "partII_pathPrediction_radiusOfCurve": np.round(radius, 1),
        "partII_pathPrediction_confidence": np.where(radius == 0, 100.0, 90.0),
    }
    # bundle (log file) metadata, one stream per observed run
    stream = rng.integers(0, 256, (nwin, 16), dtype=np.uint8)
    bundle_id = rng.integers(1, 400, nwin)
    delay_ms = rng.integers(2_000, 900_000, nwin)
    run_start = fleet.tx_phase_ms[veh] + k0 * period
    run_end = run_start + (sizes - 1) * period
    if messy is not None:  # the run's first and last message kept
        run_start, run_end = np.full(nwin, np.iinfo(np.int64).max), np.zeros(nwin, np.int64)
        np.minimum.at(run_start, win, t_ms)
        np.maximum.at(run_end, win, t_ms)
    lfn = np.char.add(np.char.add(np.char.add(b"bsmTx_", (run_start // 1000).astype("S10")),
                                  b"_fe80%3A%3A226%3Aadff%3Afe05%3A"), fleet.tag[veh])
    meta = {
        "t_ms": t_ms,
        "received_ms": run_end[win] + delay_ms[win] + rec,
        "logFileName": np.char.add(lfn, b".csv")[win],
        "streamId": _uuid_text(stream)[win],
        "bundleSize": sizes[win],
        "bundleId": bundle_id[win],
        "recordId": rec,
        "serialNumber": bundle_id[win] * sizes[win] + rec,
        # the logger's side: its own messages (bsmTx, EV) log the sender's values as "received"
        "recordType": np.full(n, b"bsmTx"), "bsmSource": np.full(n, b"EV"), "rxSource": np.full(n, b"NA"),
        "rmd_lat": cols["coreData_position_lat"], "rmd_lon": cols["coreData_position_long"],
        "rmd_elev": cols["coreData_elevation"], "rmd_speed": cols["coreData_speed"],
        "rmd_heading": cols["coreData_heading"],
    }
    truth = {"true_lat": tlat, "true_long": tlon, "true_x": tx, "true_y": ty, "eastbound": east,
             "chainage": s, "true_speed": speed}
    obj = obj_of_win[win]
    if messy is not None and messy.p.rx_share > 0:
        cols, crumbs, meta, truth, obj, v = _received_copies(fleet, messy, mrng, cols, crumbs, meta, truth, obj, v,
                                                             win, rec, veh, sizes, tlat)
        t_ms = meta["t_ms"]
    # object keys: hour folder + real-style name with the UTC time of its first record
    bounds = np.flatnonzero(np.r_[True, obj[1:] != obj[:-1], True])
    names = rng.integers(0, 256, (len(bounds) - 1, 16), dtype=np.uint8)
    uuids = _uuid_text(names)
    objects = []
    hour = dt.datetime.fromtimestamp(hour_ms / 1000, dt.timezone.utc)
    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        first = dt.datetime.fromtimestamp(int(t_ms[a]) // 1000, dt.timezone.utc)
        key = (f"{layout.hour_prefix('wydot', 'BSM', hour)}/usdot-its-cvpilot-bsm-public-{block + 1}-"
               f"{first:%Y-%m-%d-%H-%M-%S}-{uuids[j].decode()}")
        objects.append((key, int(a), int(b)))
    return Block(cols, crumbs, meta, truth, objects)


def _received_copies(fleet, messy, rng, cols, crumbs, meta, truth, obj, v, win, rec, veh, sizes, tlat):
    """Copies of some runs as another connected vehicle in radio range logged them (rxMsg,
    bsmSource RV): a stretch of the run, the same payload, the receiver's own log time (0.15-0.5 s
    later), log file, stream and position (up to 300 m along the road, or across the median) in
    metadata_rmd_*. Rows come back in (object, time, vehicle) order."""
    nwin = len(sizes)
    heard = rng.random(nwin) < messy.p.rx_share
    recv = rng.integers(0, len(fleet.ids) - 1, nwin)
    recv = recv + (recv >= veh)  # never the sender itself
    a = (rng.random(nwin) * sizes).astype(np.int64)
    b = a + 1 + (rng.random(nwin) * (sizes - a)).astype(np.int64)
    along, opposite = rng.uniform(-300.0, 300.0, nwin), rng.random(nwin) < 0.3
    r_speed = rng.uniform(20.0, 33.0, nwin)
    stream, bundle = rng.integers(0, 256, (nwin, 16), dtype=np.uint8), rng.integers(1, 400, nwin)
    src = np.flatnonzero(heard[win] & (rec >= a[win]) & (rec < b[win]))
    w = win[src]
    lag = rng.integers(150, 501, len(src))
    h = np.radians(cols["coreData_heading"][src])
    lateral = np.where(opposite[w], -25.0, 0.0)  # the other carriageway, left across the median
    de = along[w] * np.sin(h) + lateral * np.cos(h)
    dn = along[w] * np.cos(h) - lateral * np.sin(h)
    m_lat, m_lon = _m_per_deg(tlat[src])
    t_rx = meta["t_ms"][src] + lag
    first = np.full(nwin, np.iinfo(np.int64).max)
    np.minimum.at(first, w, t_rx)
    lfn = np.char.add(np.char.add(np.char.add(b"rxMsg_", (np.where(heard, first, 0) // 1000).astype("S10")),
                                  b"_fe80%3A%3A226%3Aadff%3Afe05%3A"), fleet.tag[recv])
    size = (b - a)[w]
    copy = {
        "t_ms": t_rx, "received_ms": meta["received_ms"][src] + lag, "logFileName": np.char.add(lfn, b".csv")[w],
        "streamId": _uuid_text(stream)[w], "bundleSize": size, "bundleId": bundle[w], "recordId": rec[src] - a[w],
        "serialNumber": bundle[w] * size + rec[src] - a[w],
        "recordType": np.full(len(src), b"rxMsg"), "bsmSource": np.full(len(src), b"RV"),
        "rxSource": np.full(len(src), b"RV"),
        "rmd_lat": np.round(tlat[src] + dn / m_lat, 7), "rmd_lon": np.round(truth["true_long"][src] + de / m_lon, 7),
        "rmd_elev": meta["rmd_elev"][src], "rmd_speed": np.round(np.round(r_speed[w] / 0.02) * 0.02, 2),
        "rmd_heading": np.round(np.mod(np.round((cols["coreData_heading"][src] + 180.0 * opposite[w]) / 0.0125)
                                       * 0.0125, 360.0), 4),
    }
    order = np.lexsort((np.r_[v, v[src]], np.r_[meta["t_ms"], t_rx], np.r_[obj, obj[src]]))
    both = lambda x, y: np.concatenate([x, y])[order]  # noqa: E731
    idx = np.r_[np.arange(len(v)), src][order]
    return ({k: x[idx] for k, x in cols.items()}, {k: x[idx] for k, x in crumbs.items()},
            {k: both(meta[k], copy[k]) for k in meta}, {k: x[idx] for k, x in truth.items()},
            both(obj, obj[src]), both(v, v[src]))


def _uuid_text(raw: np.ndarray) -> np.ndarray:
    """(n, 16) random bytes -> S36 version-4 UUID texts."""
    raw = raw.copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexd = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    h = np.empty((len(raw), 32), dtype=np.uint8)
    h[:, 0::2], h[:, 1::2] = hexd[raw >> 4], hexd[raw & 15]
    dash = np.full((len(raw), 1), ord("-"), dtype=np.uint8)
    out = np.concatenate([h[:, :8], dash, h[:, 8:12], dash, h[:, 12:16], dash, h[:, 16:20], dash, h[:, 20:]], axis=1)
    return np.ascontiguousarray(out).view("S36").ravel()


# --------------------------------------------------------------------------- column-wise NDJSON
# A record is a fixed-width template row (the constant JSON text) with a slot per field. Each
# field is formatted once for the whole block, column-wise, from a 4-digit lookup table; NUL
# bytes pad a number on its left only where it is shorter than the widest value of the block,
# so few NULs remain, and one bytes.replace per chunk (cost ~ number of NULs) drops them.
# Chunks of rows keep the template matrix in cache.
CHUNK_ROWS = 1024
_MINUS, _DOT = ord("-"), ord(".")


@functools.lru_cache(maxsize=None)
def _digit_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """4-character lookup tables as uint32 (one gather fetches four characters), index i:
    DIG "0000".."9999"; LEAD the same with leading zeros as NUL (last digit kept); LEAD0 also
    0 -> all NUL; SIGNED = LEAD for i < 10,000 and "-" + LEAD digits of i - 10,000 below 1,000
    for i >= 10,000; WIDTH = characters (non-NUL) of each SIGNED entry."""
    i = np.arange(20_000)
    dig = np.array([f"{x:04d}" for x in range(10_000)], dtype="S4").view(np.uint8).reshape(-1, 4)
    signed = np.array([f"{x:>4d}" if x < 10_000 else f"-{x - 10_000}"[:4].rjust(4) for x in i], dtype="S4")
    signed = np.where(signed.view(np.uint8) == ord(" "), 0, signed.view(np.uint8)).astype(np.uint8).reshape(-1, 4)
    lead0 = signed[:10_000].copy()
    lead0[0, 3] = 0
    width = np.count_nonzero(signed, axis=1).astype(np.uint8)
    u32 = lambda a: np.ascontiguousarray(a).view(np.uint32).ravel()  # noqa: E731
    return u32(dig), u32(signed[:10_000]), u32(lead0), u32(signed), width


def _chars(quads: np.ndarray, start: int = 0) -> np.ndarray:
    """(n,) uint32 from a table -> (n, 4 - start) uint8 characters."""
    return quads.view(np.uint8).reshape(-1, 4)[:, start:]


def _digits(k: np.ndarray, width: int) -> np.ndarray:
    """Non-negative ints below 10**width -> (n, width) zero-padded ASCII digits."""
    dig = _digit_tables()[0]
    nch = -(-width // 4)
    quads = np.empty((len(k), nch), dtype=np.uint32)
    for c in range(nch):  # c = 0: the lowest four digits
        q = k // 10 ** (4 * c) if c else k
        quads[:, nch - 1 - c] = dig[q % 10_000 if c < nch - 1 else q]
    return quads.view(np.uint8)[:, 4 * nch - width:]


def _int_part(ip: np.ndarray, neg, int_digits: int, v: np.ndarray) -> list:
    """Integer parts (>= 0) with a "-" where neg, no leading zeros, as field blocks no wider than
    this batch needs (NUL pads the left)."""
    dig, lead, lead0, signed, width = _digit_tables()
    top = int(ip.max()) if len(ip) else 0
    if top >= 10**int_digits:
        raise ValueError(f"value {v[np.argmax(ip)]} does not fit {int_digits} integer digits")
    if neg is not None and not neg.any():
        neg = None
    if top < 1_000 or (neg is None and top < 10_000):  # one gather does it all (the usual case)
        idx = ip if neg is None else ip + neg * 10_000
        return [_chars(signed[idx], 4 - int(width[idx].max()) if len(idx) else 3)]
    parts = [] if neg is None else [np.where(neg, _MINUS, 0).astype(np.uint8)[:, None]]  # NULs between "-" and digits go
    nd = len(str(top))
    nq = -(-nd // 4)
    higher = None
    for c in range(nq - 1, -1, -1):  # most significant quad first
        q = ip // 10 ** (4 * c) if c else ip
        q = q % 10_000 if c < nq - 1 else q
        if c == nq - 1:
            quads = (lead0 if c else lead)[q]
        else:
            quads = np.where(higher, dig[q], (lead0 if c else lead)[q])
        higher = q > 0 if higher is None else higher | (q > 0)
        parts.append(_chars(quads, 4 - (nd - 4 * (nq - 1)) if c == nq - 1 else 0))
    return parts


def _num(v: np.ndarray, int_digits: int, dec: int = 0, signed: bool = True) -> list:
    """Numbers as record parts with fixed `dec` decimals like ODE's ("2202.0", "-0.0004572",
    "30.88"), no leading zeros: integer part blocks, b".", fraction blocks. `int_digits` is
    the most the field may need (a guard)."""
    v = np.asarray(v)
    if dec or v.dtype.kind == "f":
        k = np.rint(v.astype(np.float64, copy=False) * 10**dec).astype(np.int64)  # = rint(|v| * 10**dec) with v's sign
    else:
        k = v.astype(np.int64)
    neg = k < 0 if signed else None
    np.abs(k, out=k)
    if not dec:
        return _int_part(k, neg, int_digits, v)
    ip = k // 10**dec
    fp = k - ip * 10**dec
    dig = _digit_tables()[0]
    if dec <= 4:
        frac = [_chars(dig[fp], 4 - dec)]
    elif dec <= 8:
        hi = fp // 10_000
        frac = [_chars(dig[hi], 8 - dec), _chars(dig[fp - hi * 10_000])]
    else:  # up to 12 decimals (orientation on J2735's grid: 10)
        top = fp // 10**8
        rest = fp - top * 10**8
        hi = rest // 10_000
        frac = [_chars(dig[top], 12 - dec), _chars(dig[hi]), _chars(dig[rest - hi * 10_000])]
    return [*_int_part(ip, neg, int_digits, v), b".", *frac]


def _num_or_null(v: np.ndarray, int_digits: int, dec: int) -> list:
    """`_num` (unsigned) with NaN written as null (an unavailable value in ODE v6..v8)."""
    v = np.asarray(v, dtype=np.float64)
    nan = np.isnan(v)
    parts = _num(np.where(nan, 0.0, v), int_digits, dec, signed=False)
    if not nan.any():
        return parts
    block = np.concatenate([p if isinstance(p, np.ndarray)
                            else np.broadcast_to(np.frombuffer(p, np.uint8), (len(v), len(p))) for p in parts], axis=1)
    if block.shape[1] < 4:
        block = np.concatenate([np.zeros((len(v), 4 - block.shape[1]), np.uint8), block], axis=1)
    block[nan] = 0
    block[nan, :4] = np.frombuffer(b"null", np.uint8)
    return [block]


def _text(a: np.ndarray) -> np.ndarray:
    """Fixed-width bytes (numpy S, NUL-padded) -> (n, w) uint8."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint8).reshape(len(a), a.dtype.itemsize)


def _iso(t_ms: np.ndarray) -> list:
    """Epoch ms -> record parts spelling 'YYYY-MM-DDTHH:MM:SS.mmmZ'."""
    t = EPOCH + t_ms.astype("timedelta64[ms]")
    days = t.astype("M8[D]")
    months = days.astype("M8[M]")
    m = months.astype(np.int64)
    ymd = _digits((m // 12 + 1970) * 10_000 + (m % 12 + 1) * 100 + (days - months).astype(np.int64) + 1, 8)
    ms_day = (t - days).astype(np.int64)
    hms = _digits(ms_day // 3_600_000 * 10_000_000 + ms_day // 60_000 % 60 * 100_000 + ms_day % 60_000, 9)
    return [ymd[:, :4], b"-", ymd[:, 4:6], b"-", ymd[:, 6:], b"T", hms[:, :2], b":", hms[:, 2:4], b":",
            hms[:, 4:6], b".", hms[:, 6:], b"Z"]


_BRAKES = (b'"brakes":{"wheelBrakes":{"leftFront":false,"rightFront":false,"unavailable":true,'
           b'"leftRear":false,"rightRear":false},"traction":"unavailable","abs":"unavailable",'
           b'"scs":"unavailable","brakeBoost":"unavailable","auxBrakes":"unavailable"}')


def _decimals(c: dict) -> tuple:
    """Position, speed and heading as ODE's decimals (coreData of v6..v8, the receiver's in all)."""
    return (_num(c["coreData_position_lat"], 2, 7), _num(c["coreData_position_long"], 3, 7),
            _num(c["coreData_elevation"], 4, 1), _num(c["coreData_speed"], 2, 2, signed=False),
            _num(c["coreData_heading"], 3, 4, signed=False))


def _metadata_head(m: dict, payload_type: str) -> list:
    """The metadata every version writes alike, from logFileName to the odeReceivedAt text; the
    logger's "received" location block (the sender's own values in its bsmTx log, the receiver's
    in an rxMsg copy)."""
    lat, lon, elev, speed, heading = (_num(m["rmd_lat"], 2, 7), _num(m["rmd_lon"], 3, 7), _num(m["rmd_elev"], 4, 1),
                                      _num(m["rmd_speed"], 2, 2, signed=False), _num(m["rmd_heading"], 3, 4, signed=False))
    return [
        b'"logFileName":"', _text(m["logFileName"]),
        b'","recordType":"', _text(m["recordType"]),
        b'","securityResultCode":"success","receivedMessageDetails":{"locationData":{"latitude":"',
        lat, b'","longitude":"', lon, b'","elevation":"', elev, b'","speed":"', speed, b'","heading":"', heading,
        b'"},"rxSource":"', _text(m["rxSource"]),
        b'"},"payloadType":"us.dot.its.jpo.ode.model.%s","serialId":{"streamId":"' % payload_type.encode(),
        _text(m["streamId"]), b'","bundleSize":', _num(m["bundleSize"], 5, signed=False),
        b',"bundleId":', _num(m["bundleId"], 4, signed=False),
        b',"recordId":', _num(m["recordId"], 5, signed=False), b',"serialNumber":', _num(m["serialNumber"], 9, signed=False),
        b'},"odeReceivedAt":"', *_iso(m["received_ms"]),
    ]


def _record_parts(c: dict, m: dict, cr: dict, version: int = 6, grid: bool = False) -> list:
    """One bsmTx record of `version`, key order as ODE writes it, as constant bytes and (n, w)
    field blocks; `grid`: orientation on J2735's steps, written with ODE's 10 decimals."""
    if version == 9:
        return _record_parts_v9(c, m, cr)
    lat, lon, elev, speed, heading = _decimals(c)
    parts = [
        b'{"metadata":{"bsmSource":"', _text(m["bsmSource"]), b'",', *_metadata_head(m, "OdeBsmPayload"),
        b'","schemaVersion":%d,' % version,
        b'"maxDurationTime":0,' if version >= 7 else b"", b'"recordGeneratedAt":"', *_iso(m["t_ms"]),
        b'","recordGeneratedBy":"OBU","sanitized":false', b',"odePacketID":"","odeTimStartDateTime":""' if version >= 7 else b"",
        b'},"payload":{"dataType":"us.dot.its.jpo.ode.plugin.j2735.J2735Bsm",'
        b'"data":{"coreData":{"msgCnt":', _num(c["coreData_msgCnt"], 3, signed=False), b',"id":"', _text(c["coreData_id"]),
        b'","secMark":', _num(c["coreData_secMark"], 5, signed=False), b',"position":{"latitude":', lat,
        b',"longitude":', lon, b',"elevation":', elev,
        b'},"accelSet":{"accelLat":', _num(c["coreData_accelset_accelLat"], 2, 2),
        b',"accelLong":', _num(c["coreData_accelset_accelLong"], 2, 2),
        b',"accelVert":', _num(c["coreData_accelset_accelVert"], 1, 2),
        b',"accelYaw":', _num(c["coreData_accelset_accelYaw"], 3, 2),
        b'},"accuracy":{"semiMajor":', _num_or_null(c["coreData_accuracy_semiMajor"], 2, 2),
        b',"semiMinor":', _num_or_null(c["coreData_accuracy_semiMinor"], 2, 2),
        b',"orientation":', _num(c["coreData_accuracy_orientation"], 3, 10 if grid else 4, signed=False),
        b'},"transmission":"NEUTRAL","speed":', speed, b',"heading":', heading, b",", _BRAKES,
        b',"size":{"width":', _num(c["coreData_size_width"], 4, signed=False),
        b',"length":', _num(c["coreData_size_length"], 4, signed=False),
        b'}},"partII":[{"id":"VehicleSafetyExtensions","value":{"pathHistory":{"crumbData":[',
    ]
    for j in range(CRUMBS):  # column by column: each crumb's own widest value sets its width
        parts += [b'{"elevationOffset":' if j == 0 else b',{"elevationOffset":', _num(cr["elev"][:, j], 3, 1),
                  b',"latOffset":', _num(cr["lat"][:, j], 1, 7), b',"lonOffset":', _num(cr["lon"][:, j], 1, 7),
                  b',"timeOffset":', _num(cr["time"][:, j], 3, 2, signed=False), b"}"]
    parts += [b']},"pathPrediction":{"confidence":', _num(c["partII_pathPrediction_confidence"], 3, 1, signed=False),
              b',"radiusOfCurve":', _num(c["partII_pathPrediction_radiusOfCurve"], 4, 1),
              b"}}},", SUPPLEMENTAL[1:-1].encode(), b"]}}}\n"]
    return parts


# J2735 integer ranges the v9 writer checks (a value outside cannot be written as v9)
_J2735_RANGE = {
    "coreData_position_lat": (-900000000, 900000000), "coreData_position_long": (-1799999999, 1800000000),
    "coreData_elevation": (-4095, 61439), "coreData_speed": (0, 8190), "coreData_heading": (0, 28799),
    "coreData_accelset_accelLong": (-2000, 2000), "coreData_accelset_accelLat": (-2000, 2000),
    "coreData_accelset_accelVert": (-126, 127), "coreData_accelset_accelYaw": (-32767, 32767),
    "coreData_accuracy_semiMajor": (0, 254), "coreData_accuracy_semiMinor": (0, 254),
    "coreData_accuracy_orientation": (0, 65534),
    "latOffset": (-131071, 131071), "lonOffset": (-131071, 131071), "elevationOffset": (-2047, 2047),
    "timeOffset": (1, 65534),
}


def _j2735_int(values: np.ndarray, name: str, unit: tuple[int, int, int | None]) -> np.ndarray:
    """Values in ODE v6 units -> J2735 integers (the inverse of ingest's reading)."""
    times, divided_by, _ = unit
    raw = np.rint(np.asarray(values, dtype=np.float64) * divided_by / times).astype(np.int64)
    lo, hi = _J2735_RANGE[name]
    if len(raw) and (raw.min() < lo or raw.max() > hi):
        bad = raw[(raw < lo) | (raw > hi)][0]
        raise ValueError(f"{name} {bad * times / divided_by} is outside J2735's range ({lo}..{hi} x {times}/{divided_by}):"
                         " schemaVersion 9 cannot carry it (path history: a higher rate_hz shortens it)")
    return raw


def _record_parts_v9(c: dict, m: dict, cr: dict) -> list:
    """One v9 bsmTx record (J2735 message frame, integer units), key order as ODE writes it."""
    units, crumb_units = ingest.J2735_UNITS, ingest.J2735_CRUMB_UNITS
    raw = {k: _j2735_int(np.nan_to_num(c[k]), k, u) for k, u in units.items()}
    for k in ("coreData_accuracy_semiMajor", "coreData_accuracy_semiMinor"):  # unavailable: J2735's 255
        raw[k] = np.where(np.isnan(c[k]), units[k][2], raw[k])
    num = {k: _num(v, 10) for k, v in raw.items()}
    radius = c["partII_pathPrediction_radiusOfCurve"]
    radius = np.where(radius == 0, ingest.RADIUS_STRAIGHT, np.rint(radius * 10)).astype(np.int64)
    parts = [
        b'{"metadata":{', *_metadata_head(m, "OdeMessageFramePayload"),
        b'","schemaVersion":9,"maxDurationTime":0,"recordGeneratedAt":"',
        *_iso(m["t_ms"]), b'","recordGeneratedBy":"OBU","sanitized":false,"odePacketID":"","odeTimStartDateTime":"",'
        b'"source":"', _text(m["bsmSource"]), b'"},"payload":{"data":{"messageId":20,"value":{"BasicSafetyMessage":{"coreData":{"msgCnt":',
        _num(c["coreData_msgCnt"], 3, signed=False), b',"id":"', _text(c["coreData_id"]),
        b'","secMark":', _num(c["coreData_secMark"], 5, signed=False), b',"lat":', num["coreData_position_lat"],
        b',"long":', num["coreData_position_long"], b',"elev":', num["coreData_elevation"],
        b',"accuracy":{"semiMajor":', num["coreData_accuracy_semiMajor"], b',"semiMinor":', num["coreData_accuracy_semiMinor"],
        b',"orientation":', num["coreData_accuracy_orientation"],
        b'},"transmission":"neutral","speed":', num["coreData_speed"], b',"heading":', num["coreData_heading"],
        b',"accelSet":{"long":', num["coreData_accelset_accelLong"], b',"lat":', num["coreData_accelset_accelLat"],
        b',"vert":', num["coreData_accelset_accelVert"], b',"yaw":', num["coreData_accelset_accelYaw"],
        b'},"brakes":{"wheelBrakes":"80","traction":"unavailable","abs":"unavailable","scs":"unavailable",'
        b'"brakeBoost":"unavailable","auxBrakes":"unavailable"},"size":{"width":', _num(c["coreData_size_width"], 4, signed=False),
        b',"length":', _num(c["coreData_size_length"], 4, signed=False),
        b'}},"partII":[{"partII-Id":0,"partII-Value":{"VehicleSafetyExtensions":{"pathHistory":{"crumbData":[',
    ]
    crumbs = {name: _j2735_int(cr[key], name, crumb_units[name])
              for key, name in (("lat", "latOffset"), ("lon", "lonOffset"), ("elev", "elevationOffset"), ("time", "timeOffset"))}
    for j in range(CRUMBS):
        parts += [b'{"latOffset":' if j == 0 else b',{"latOffset":', _num(crumbs["latOffset"][:, j], 6),
                  b',"lonOffset":', _num(crumbs["lonOffset"][:, j], 6),
                  b',"elevationOffset":', _num(crumbs["elevationOffset"][:, j], 4),
                  b',"timeOffset":', _num(crumbs["timeOffset"][:, j], 5, signed=False), b"}"]
    parts += [b']},"pathPrediction":{"radiusOfCurve":', _num(radius, 5),
              b',"confidence":', _num(np.rint(c["partII_pathPrediction_confidence"] * 2).astype(np.int64), 3, signed=False),
              b'}}}},{"partII-Id":2,"partII-Value":{"SupplementalVehicleExtensions":{}}}]}}},'
              b'"dataType":"us.dot.its.jpo.asn.j2735.r2024.BasicSafetyMessage.BasicSafetyMessageMessageFrame"}}\n']
    return parts


def _flat(parts: list):
    for p in parts:
        if isinstance(p, list):
            yield from p
        else:
            yield p


def _template(parts: list) -> tuple[np.ndarray, list]:
    """(constant template row with NUL slots, [(slot offset, field block)]); adjacent constants merge."""
    row, slots, off = [], [], 0
    for p in _flat(parts):
        if isinstance(p, bytes):
            row.append(np.frombuffer(p, dtype=np.uint8))
        else:
            slots.append((off, p))
            row.append(np.zeros(p.shape[1], dtype=np.uint8))
        off += len(row[-1])
    return np.concatenate(row), slots


def format_chunks(b: Block, ranges=None, version: int = 6, grid: bool = False):
    """For each (start, stop) row range (default: the whole block) yield a generator of the
    NDJSON bytes of those rows as schemaVersion `version`, a chunk of rows at a time; fields
    are formatted once."""
    n = len(b.meta["t_ms"])
    row, slots = _template(_record_parts(b.cols, b.meta, b.crumbs, version, grid))
    buf = bytearray(min(CHUNK_ROWS, n) * len(row))  # the chunk matrix lives in a bytearray: no copy before replace
    mat = np.frombuffer(buf, dtype=np.uint8).reshape(-1, len(row))
    # each slot copied as one fixed-size item per row (void dtype): far cheaper than (rows, w) uint8
    pairs = [(mat[:, off:off + f.shape[1]].view(f"V{f.shape[1]}")[:, 0], f.view(f"V{f.shape[1]}")[:, 0])
             for off, f in slots]

    def rows(start, stop):
        for a in range(start, stop, CHUNK_ROWS):
            z = min(stop, a + CHUNK_ROWS)
            mat[:z - a] = row
            for dst, src in pairs:
                dst[:z - a] = src[a:z]
            yield (buf if z - a == len(mat) else buf[:(z - a) * len(row)]).replace(b"\x00", b"")

    for start, stop in ranges if ranges is not None else [(0, n)]:
        yield rows(start, stop)


# --------------------------------------------------------------------------- defect lines
# Real objects are not clean. With defect_share > 0 an object also holds defect lines, each
# written right after a valid record and made from that record's own text (a garbled
# retransmission of it), so it carries that record's ids and times. The plan (how many,
# after which rows, which kind) comes from its own generator, seeded (seed, 2, hour, block):
# the valid records, their generator and the bytes of a defect_share 0 corpus do not change.
# Defects are few, so each line is built in Python.
NOT_QUARANTINED = ("non_bsm", "blank")


@dataclass(frozen=True)
class Defects:
    """The defect lines of one block, ascending by `row`: each is written right after valid
    row `row` (block row index) and made from that row's text."""

    row: np.ndarray
    kind: np.ndarray  # index into KINDS
    u: np.ndarray  # uniform in [0, 1): where a truncated line is cut, a TIM's packet id

    def counts(self) -> dict[str, int]:
        return {KINDS[k]: int(n) for k, n in zip(*np.unique(self.kind, return_counts=True))}

    def between(self, a: int, z: int) -> "Defects":
        """The defect lines after rows a..z-1 (one object's)."""
        i, j = np.searchsorted(self.row, [a, z])
        return Defects(self.row[i:j], self.kind[i:j], self.u[i:j])


_NO_DEFECTS = Defects(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


def plan_defects(seed: int, hour_ms: int, block: int, objects: list, share: float) -> Defects:
    """Per object, n * share / (1 - share) defect lines for its n valid records (rounded up or
    down at random, so `share` of all lines written are defects on average), after uniformly
    drawn rows, of uniformly drawn kinds."""
    if share <= 0:
        return _NO_DEFECTS
    rng = np.random.default_rng([seed, 2, hour_ms // HOUR_MS, block])
    rows, kinds, us = [], [], []
    for _, a, z in objects:
        mean = (z - a) * share / (1.0 - share)
        n = int(mean) + int(rng.random() < mean - int(mean))
        rows.append(np.sort(rng.integers(a, z, n)))
        kinds.append(rng.integers(0, len(KINDS), n))
        us.append(rng.random(n))
    return Defects(np.concatenate(rows), np.concatenate(kinds), np.concatenate(us))


def _sub1(pattern: bytes, repl: bytes, rec: bytes) -> bytes:
    out, n = re.subn(pattern, repl, rec, count=1)
    if n != 1:
        raise AssertionError(f"defect: {pattern!r} not in the record")
    return out


def _generated_at(rec: bytes):
    """(match of the recordGeneratedAt text, that time)"""
    m = re.search(rb'"recordGeneratedAt":"([^"]+)"', rec)
    return m, dt.datetime.strptime(m.group(1).decode(), "%Y-%m-%dT%H:%M:%S.%fZ")


def _tim(rec: bytes, u: float) -> bytes:
    """A TIM-shaped record (dnMsg, OdeTimPayload, a J2735 TravelerInformation advisory) with the
    metadata of `rec`: ingest files it under non-BSM type `TravelerInformation`."""
    md = rec[:rec.index(b',"payload":')]
    v9 = _is_v9(rec)  # v9 has no bsmSource (its `source` stays) and one payloadType for every frame
    for old, new in ((rb'"bsmSource":"[ER]V",', b""), (rb'"logFileName":"(?:bsmTx|rxMsg)_', b'"logFileName":"dnMsg_'),
                     (rb'"recordType":"(?:bsmTx|rxMsg)"', b'"recordType":"dnMsg"'), (rb"OdeBsmPayload", b"OdeTimPayload")):
        if not (v9 and old in (rb'"bsmSource":"[ER]V",', rb"OdeBsmPayload")):
            md = _sub1(old, new, md)
    _, t = _generated_at(rec)
    minute = int((t - dt.datetime(t.year, 1, 1)).total_seconds() // 60)  # J2735 MinuteOfTheYear
    frame = (f'{{"frameType":"advisory",'
             f'"msgId":{{"roadSignID":{{"viewAngle":"1111111111111111","mutcdCode":"warning"}}}},'
             f'"startYear":{t.year},"startTime":{minute},"durationTime":120,"priority":5,'
             f'"content":{{"advisory":{{"SEQUENCE":[{{"item":{{"itis":5378}}}}]}}}}}}')
    cnt = int(re.search(rb'"msgCnt":(\d+)', rec).group(1))
    tim = (f'{{"msgCnt":{cnt},"timeStamp":{minute},"packetID":"{int(u * 2**72):018X}","urlB":"null",'
           f'"dataFrames":{{"TravelerDataFrame":{frame}}}}}')
    return md + (f',"payload":{{"dataType":"TravelerInformation","data":{{"MessageFrame":{{"messageId":31,'
                 f'"value":{{"TravelerInformation":{tim}}}}}}}}}}}').encode()


def _bad_time(rec: bytes) -> bytes:
    m, t = _generated_at(rec)
    text = t.strftime("%m/%d/%Y %I:%M:%S") + (" AM" if t.hour < 12 else " PM")  # %p follows the locale
    return rec[:m.start(1)] + text.encode() + rec[m.end(1):]


def _is_v9(rec: bytes) -> bool:
    return b'"schemaVersion":9,' in rec


class DefectKind(NamedTuple):
    outcome: str  # what ingest makes of it: its quarantine reason (validate.rule_name), non_bsm or blank
    make: Callable[[bytes, float], bytes]  # (valid record as written, u) -> the defect line's text


DEFECTS = {
    "truncated": DefectKind("not_json", lambda rec, u: rec[:int(len(rec) * (0.1 + 0.8 * u))]),  # cut mid-record
    "tim": DefectKind("non_bsm", _tim),  # a TIM (dnMsg, OdeTimPayload) among the BSMs
    "wrong_type": DefectKind("wrong_type", lambda rec, u: _sub1(  # coreData.speed "unavailable" (a string)
        rb'("transmission":"(?:NEUTRAL|neutral)","speed":)[0-9.]+', rb'\1"unavailable"', rec)),
    "missing_coreData": DefectKind("missing_coreData", lambda rec, u: rec[:rec.index(b'"coreData":')]
                                   + rec[rec.index(b'"partII":'):]),
    "unknown_schema_version": DefectKind("unknown_schema_version", lambda rec, u: _sub1(  # the first unknown: 10
        rb'"schemaVersion":[6-9],', b'"schemaVersion":10,', rec)),
    "out_of_range": DefectKind("heading_range", lambda rec, u: _sub1(  # coreData.heading 400 deg
        rb'("heading":)[0-9]+(,"accelSet")', rb"\g<1>32000\2", rec) if _is_v9(rec) else _sub1(
        rb'("heading":)[0-9.]+(,"brakes")', rb"\g<1>400.0000\2", rec)),
    "bad_timestamp": DefectKind("bad_timestamp", lambda rec, u: _bad_time(rec)),  # CSV export's "%m/%d/%Y %I:%M:%S %p"
    "blank": DefectKind("blank", lambda rec, u: b""),
}
KINDS = tuple(DEFECTS)


def defect_line(kind: str, rec: bytes, u: float = 0.5) -> bytes:
    """One defect line (with its newline) made from `rec`, a valid record as written (no newline)."""
    return DEFECTS[kind].make(rec, u) + b"\n"


def _with_defects(chunks, start: int, bad: Defects):
    """An object's chunks (whole lines, rows from block row `start`) with the defect lines of
    `bad` (this object's) each after its row. Only chunks holding one are cut (their line ends
    found in one vectorised pass); the others are only counted."""
    rows, kinds, us = bad.row.tolist(), bad.kind.tolist(), bad.u.tolist()
    i, first = 0, start
    for blob in chunks:
        n = blob.count(b"\n")
        k = bisect.bisect_left(rows, first + n, i)
        if k == i:
            yield blob
            first += n
            continue
        view = memoryview(blob)
        ends = np.flatnonzero(np.frombuffer(blob, np.uint8) == 10)  # line ends, one vectorised pass
        done = 0  # bytes before `done` are out
        for d in range(i, k):
            r = rows[d] - first
            pos, end = (int(ends[r - 1]) + 1 if r else 0), int(ends[r])
            yield view[done:end + 1]
            yield defect_line(KINDS[kinds[d]], bytes(view[pos:end]), us[d])
            done = end + 1
        yield view[done:]
        i, first = k, first + n


# --------------------------------------------------------------------------- tables
def to_table(b: Block, bad: Defects = _NO_DEFECTS, version: int = 6) -> pa.Table:
    """The block in the canonical BSM_SCHEMA, exactly what ingest makes of its NDJSON written as
    `version`: the valid records, numbered by their line in an object that also holds the
    defect lines `bad`."""
    c, m = b.cols, b.meta
    n = len(m["t_ms"])
    ts = pa.array(m["t_ms"], pa.timestamp("ms", tz="UTC"))
    src = np.empty(n, dtype=object)
    line = np.empty(n, dtype=np.int64)
    for key, a, z in b.objects:
        src[a:z] = key
        line[a:z] = np.arange(1, z - a + 1)
        if len(bad.row):  # + the object's defect lines written after an earlier row
            line[a:z] += np.searchsorted(bad.row, np.arange(a, z)) - np.searchsorted(bad.row, a)
    cr = b.crumbs
    flat = pa.StructArray.from_arrays(
        [pa.array(cr["lat"].ravel()), pa.array(cr["lon"].ravel()), pa.array(cr["elev"].ravel()),
         pa.array(cr["time"].ravel())], fields=list(CRUMB))
    crumbs = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * CRUMBS), flat)
    data = {
        "metadata_generatedAt": ts,
        "metadata_receivedAt": pa.array(m["received_ms"], pa.timestamp("ms", tz="UTC")),
        "metadata_generatedAt_source": pa.array(np.full(n, "recordGeneratedAt")),
        "metadata_recordType": pa.array(m["recordType"].astype(str)),
        "metadata_schemaVersion": pa.array(np.full(n, version, dtype=np.int8)),
        "metadata_bsmSource": pa.array(m["bsmSource"].astype(str)),
        "metadata_sanitized": pa.array(np.zeros(n, dtype=bool)),
        "metadata_logFileName": pa.array(m["logFileName"].astype(str)),
        "metadata_securityResultCode": pa.array(np.full(n, "success")),
        "metadata_recordGeneratedBy": pa.array(np.full(n, "OBU")),
        "metadata_payloadType": pa.array(np.full(n, "us.dot.its.jpo.ode.model."
                                                 + ("OdeMessageFramePayload" if version == 9 else "OdeBsmPayload"))),
        "metadata_serialId_streamId": pa.array(m["streamId"].astype(str)),
        "metadata_serialId_bundleSize": m["bundleSize"],
        "metadata_serialId_bundleId": m["bundleId"],
        "metadata_serialId_recordId": m["recordId"],
        "metadata_serialId_serialNumber": m["serialNumber"],
        "metadata_rmd_latitude": m["rmd_lat"],
        "metadata_rmd_longitude": m["rmd_lon"],
        "metadata_rmd_elevation": m["rmd_elev"],
        "metadata_rmd_speed": m["rmd_speed"],
        "metadata_rmd_heading": m["rmd_heading"],
        "metadata_rmd_rxSource": pa.array(m["rxSource"].astype(str)),
        **{k: (pa.array(v.astype(str)) if k == "coreData_id" else pa.array(v, from_pandas=True)) for k, v in c.items()},
        "coreData_transmission": pa.array(np.full(n, "NEUTRAL")),
        "coreData_brakes_wheelBrakes_leftFront": np.zeros(n, dtype=bool),
        "coreData_brakes_wheelBrakes_rightFront": np.zeros(n, dtype=bool),
        "coreData_brakes_wheelBrakes_leftRear": np.zeros(n, dtype=bool),
        "coreData_brakes_wheelBrakes_rightRear": np.zeros(n, dtype=bool),
        "coreData_brakes_wheelBrakes_unavailable": np.ones(n, dtype=bool),
        **{f"coreData_brakes_{k}": pa.array(np.full(n, "unavailable")) for k in ("traction", "abs", "scs", "brakeBoost", "auxBrakes")},
        "partII_pathHistory_crumbData": crumbs,
        "partII_other": pa.array(np.full(n, SUPPLEMENTAL)),
        "source_object": pa.array(src, pa.string()),
        "source_line": line,
    }
    return conform(pa.table({k: (v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v)) for k, v in data.items()}))


# --------------------------------------------------------------------------- drivers
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


def generate(start, days: int = 1, vehicles: int = 100, rate_hz: float = 0.1, seed: int = 7,
             records_per_hour: int | None = None, truth: bool = False, defect_share: float = 0.0,
             schema_version: int = 6, j2735_grid: bool | None = None, realism: RealismParams | dict | None = None):
    """The corpus in memory as one BSM_SCHEMA table of its valid records (rows as written,
    `source_object` = the relative key); with truth=True also a DataFrame of the true
    positions, row-aligned. `defect_share` adds no rows: it only moves `source_line` past the
    defect lines `write_corpus` writes in between."""
    sp = SynthParams(records_per_hour=records_per_hour, defect_share=defect_share,  # the params' bounds, one copy
                     schema_version=schema_version, j2735_grid=j2735_grid, realism=realism or {})
    units = list(_simulate_units(start, days, vehicles, rate_hz, seed, records_per_hour, defect_share, sp.grid,
                                 sp.realism))
    blocks = [b for b, _ in units]
    table = (pa.concat_tables([to_table(b, bad, schema_version) for b, bad in units]) if blocks
             else BSM_SCHEMA.empty_table())
    if not truth:
        return table
    return table, pd.DataFrame({k: np.concatenate([b.truth[k] for b in blocks]) for k in blocks[0].truth})


def _write_unit(out: str, vehicles: int, rate_hz: float, seed: int, records_per_hour, defect_share: float,
                version: int, grid: bool, realism: RealismParams, unit) -> tuple[int, int, dict[str, int]]:
    """Simulate one (hour, block) and stream its objects, defect lines included, to disk chunk
    by chunk; returns (valid records, objects, defect lines by kind)."""
    h, b, nb = unit
    blk = simulate_block(_fleet(vehicles, rate_hz, seed), rate_hz, seed, h, records_per_hour, b, nb, grid,
                         make_messy(vehicles, seed, realism))
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


def write_corpus(out, start, days: int = 1, vehicles: int = 100, rate_hz: float = 0.1, seed: int = 7,
                 records_per_hour: int | None = None, progress: Callable[[str], None] | None = None,
                 workers: int | None = None, defect_share: float = 0.0, schema_version: int = 6,
                 j2735_grid: bool | None = None, realism: RealismParams | dict | None = None) -> dict:
    """Write the corpus under `out` (bucket layout) as ODE `schema_version` (6..9) and return the
    CLI summary: its counts are what ingest finds in it, `defects` the defect lines by kind
    (DEFECTS). The bytes do not depend on `workers` (default: all CPUs when there are more than
    ~100k records). `j2735_grid` (default: on for 9 only): see the module doc."""
    t0 = time.perf_counter()
    sp = SynthParams(records_per_hour=records_per_hour, defect_share=defect_share,  # the params' bounds, one copy
                     schema_version=schema_version, j2735_grid=j2735_grid, realism=realism or {})
    hours = _hours(start, days)
    units = _units(vehicles, rate_hz, records_per_hour, hours)
    per_hour = vehicles * 3600 * rate_hz if records_per_hour is None else records_per_hour
    if workers is None:
        workers = (os.cpu_count() or 1) if per_hour * len(hours) > 100_000 else 1
    out = str(out)
    fn = functools.partial(_write_unit, out, vehicles, rate_hz, seed, records_per_hour, defect_share,
                           schema_version, sp.grid, sp.realism)
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
    return {"records": records, "valid": valid, "quarantined": by_place["quarantined"], "non_bsm": by_place["non_bsm"],
            "blank": by_place["blank"], "defects": {k: defects[k] for k in KINDS if defects[k]},
            "files": files, "seconds": round(secs, 3), "vehicles": vehicles, "hours": len(hours),
            "records_per_s": round(records / secs) if secs > 0 else None}


def write_from_params(params_path, out, workers: int | None = None) -> dict:
    """`make synth-data`: the params file's whole `synth` section, realism included (the CLI's
    flags do not carry the realism block yet)."""
    from wydot_lab import config

    sp = config.load(params_path).synth
    return write_corpus(out, **{**sp.model_dump(), "start": str(sp.start)}, workers=workers)


if __name__ == "__main__":  # python -m wydot_lab.synth PARAMS OUT
    import json
    import sys

    print(json.dumps(write_from_params(sys.argv[1], sys.argv[2])))
