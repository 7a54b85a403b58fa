"""The fleet and the road: per-vehicle constants, lanes, speed and odometer in closed form, and
where an odometer reading puts a vehicle on the real I-80 lines (position, heading, elevation).

Shared by every other synth module, so the corpus-wide constants live here too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from wydot_lab import geo
from wydot_lab.errors import SynthParamsError

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
_ELEV_LON = np.array(
    [-111.06, -110.55, -109.47, -109.21, -108.05, -107.24, -106.45, -105.59, -105.39, -104.82, -104.04]
)
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
    fleet.update(
        lane_period=rng.uniform(600, 2400, vehicles),
        lane_phase=rng.uniform(0, 2 * np.pi, vehicles),
        lane_keep=np.cos(np.pi * left_share),
    )
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
        raise SynthParamsError(f"rate {rate_hz} Hz is above 1000 Hz")
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


@functools.cache
def _lines() -> _Lines:
    e, w = geo.load_centreline("eastbound"), geo.load_centreline("westbound")
    off = len(e.x) + 1
    cat = lambda a, b, pad: np.r_[a, pad, b, pad]  # noqa: E731
    ux, uy = cat(e.ux, w.ux, [0.0, 0.0]), cat(e.uy, w.uy, [0.0, 0.0])
    buckets = [
        np.searchsorted(c.chainage, np.arange(int(c.length // BUCKET_M) + 2) * BUCKET_M, side="right") - 1 + o
        for c, o in ((e, 0), (w, off))
    ]
    return _Lines(
        off,
        (len(e.x) - 2, off + len(w.x) - 2),
        (e.length, w.length),
        len(buckets[0]),
        cat(e.chainage, w.chainage, np.inf),
        np.concatenate(buckets),
        cat(e.lat, w.lat, np.nan),
        cat(e.lon, w.lon, np.nan),
        cat(e.x, w.x, np.nan),
        cat(e.y, w.y, np.nan),
        ux,
        uy,
        geo.bearing_deg(ux, uy),
    )


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
