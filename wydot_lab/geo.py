"""One signed local metric frame for the Wyoming I-80 corridor, and distances to its centre line.

Frame: Lambert Conformal Conic, standard parallels 41.0 and 41.8 N (the corridor's
latitude span), origin ORIGIN_LAT/ORIGIN_LON (41.3 N, 107.5 W, mid-corridor near
Rawlins), x east and y north in metres, false easting/northing 0, WGS84 ellipsoid.
Conformal with a scale error below 1e-4 anywhere on I-80 in Wyoming, so local
distances are true to better than 0.01% (tests check 0.1% over 10 km against
pyproj.Geod geodesics). Signed: north of the origin y > 0, east x > 0. Grid north
is true north only on the origin meridian; `true_bearing_deg` adds the meridian
convergence (<= 2.3 degrees here) to compare with BSM headings.

Distances to the centre line are exact (not sampled): see `Centreline.distance`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd
from pyproj import CRS, Transformer
from scipy.spatial import cKDTree

ORIGIN_LAT = 41.3
ORIGIN_LON = -107.5
STANDARD_PARALLELS = (41.0, 41.8)
DIRECTIONS = ("eastbound", "westbound")

LOCAL_CRS = CRS.from_proj4(
    f"+proj=lcc +lat_1={STANDARD_PARALLELS[0]} +lat_2={STANDARD_PARALLELS[1]} +lat_0={ORIGIN_LAT} "
    f"+lon_0={ORIGIN_LON} +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
)


@functools.lru_cache(maxsize=None)
def _transformer(inverse: bool) -> Transformer:
    src, dst = ("EPSG:4326", LOCAL_CRS) if not inverse else (LOCAL_CRS, "EPSG:4326")
    return Transformer.from_crs(src, dst, always_xy=True)


def to_local(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """Degrees -> (x east, y north) metres in the corridor frame; NaN in, NaN out."""
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    x, y = _transformer(False).transform(lon, lat)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def from_local(x, y) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) metres -> (lat, lon) degrees."""
    lon, lat = _transformer(True).transform(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)


def bearing_deg(dx, dy) -> np.ndarray:
    """Compass bearing (0 = north, clockwise, [0, 360)) of a local displacement."""
    return np.mod(np.degrees(np.arctan2(np.asarray(dx, float), np.asarray(dy, float))), 360.0)


@functools.lru_cache(maxsize=None)
def _cone_constant() -> float:
    """n of the conic: grid north turns by n * (lon - ORIGIN_LON) degrees against true north."""
    from pyproj import Proj

    return float(Proj(LOCAL_CRS).get_factors(ORIGIN_LON + 1.0, ORIGIN_LAT).meridian_convergence)


def convergence_deg(lon) -> np.ndarray:
    """Meridian convergence at longitude lon: true bearing = grid bearing + this (up to
    about 2.3 degrees at the corridor ends, so BSM headings need it)."""
    return _cone_constant() * (np.asarray(lon, dtype=float) - ORIGIN_LON)


def true_bearing_deg(dx, dy, lon) -> np.ndarray:
    """Compass bearing from true north (as a BSM heading) of a local displacement at longitude lon."""
    return np.mod(bearing_deg(dx, dy) + convergence_deg(lon), 360.0)


def angle_diff_deg(a, b) -> np.ndarray:
    """Smallest absolute difference between two bearings, in [0, 180]."""
    d = np.mod(np.asarray(a, float) - np.asarray(b, float), 360.0)
    return np.minimum(d, 360.0 - d)


SAMPLE_SPACING_M = 40.0  # spacing of the index samples along each segment (see Centreline.distance)


@dataclass(frozen=True, eq=False)
class Centreline:
    """One direction of I-80 as a polyline in the local frame, in the direction of travel."""

    direction: str
    lat: np.ndarray
    lon: np.ndarray
    x: np.ndarray
    y: np.ndarray
    chainage: np.ndarray  # metres along the line from its first vertex
    tree: cKDTree  # over sample points placed every <= SAMPLE_SPACING_M along every segment
    sample_seg: np.ndarray  # segment index of each tree sample
    sample_seg2: np.ndarray  # the other segment at a vertex sample (same as sample_seg inside a segment)
    gaps: tuple = ()  # "segments" joining separate parts (union of both directions): not road

    @functools.cached_property
    def ux(self) -> np.ndarray:
        return np.diff(self.x)

    @functools.cached_property
    def uy(self) -> np.ndarray:
        return np.diff(self.y)

    @functools.cached_property
    def inv_len2(self) -> np.ndarray:
        l2 = self.ux**2 + self.uy**2
        return np.where(l2 > 0, 1.0 / np.where(l2 > 0, l2, 1.0), 0.0)

    @property
    def length(self) -> float:
        return float(self.chainage[-1])

    def _locate(self, s) -> tuple[np.ndarray, np.ndarray]:
        """Segment index and fraction along it at chainage s (clipped to the line)."""
        s = np.clip(np.asarray(s, dtype=float), 0.0, self.length)
        i = np.clip(np.searchsorted(self.chainage, s, side="right") - 1, 0, len(self.x) - 2)
        seg = self.chainage[i + 1] - self.chainage[i]
        return i, np.where(seg > 0, (s - self.chainage[i]) / np.where(seg > 0, seg, 1.0), 0.0)

    def position_at(self, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, grid bearing of travel) at chainage s (metres, clipped to the line), vectorized."""
        i, t = self._locate(s)
        dx, dy = self.ux[i], self.uy[i]
        return self.x[i] + t * dx, self.y[i] + t * dy, bearing_deg(dx, dy)

    def latlon_at(self, s) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) at chainage s, interpolated between the vertex coordinates: no projection
        call, and within 10 cm of from_local(position_at(s)) on the shipped lines (segments <= 3 km)."""
        i, t = self._locate(s)
        return self.lat[i] + t * (self.lat[i + 1] - self.lat[i]), self.lon[i] + t * (self.lon[i + 1] - self.lon[i])

    def _segment_distance(self, px, py, seg) -> np.ndarray:
        """Exact distance of points to segment seg[i] (broadcasts)."""
        ax, ay, ux, uy = self.x[seg], self.y[seg], self.ux[seg], self.uy[seg]
        rx, ry = px - ax, py - ay
        t = np.clip((rx * ux + ry * uy) * self.inv_len2[seg], 0.0, 1.0)
        return np.hypot(rx - t * ux, ry - t * uy)

    def _candidates(self, px, py, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best exact distance over the segments of the k nearest samples, and whether it is
        provably the minimum: every polyline point has a sample labelled with its segment
        within h/2, so if the k-th sample is farther than best + h/2 no unseen segment is nearer."""
        dk, idx = self.tree.query(np.column_stack([px, py]), k=k, workers=-1)
        dk, idx = dk.reshape(len(px), k), idx.reshape(len(px), k)
        best = np.full(px.shape, np.inf)
        for j in range(k):
            for seg in (self.sample_seg[idx[:, j]], self.sample_seg2[idx[:, j]]):
                np.minimum(best, self._segment_distance(px, py, seg), out=best)
        return best, dk[:, -1] > best + SAMPLE_SPACING_M / 2

    def distance(self, x, y, k: int = 5) -> np.ndarray:
        """Exact distance (m) of local points to the polyline, vectorized: k-nearest index
        samples with a proof check; points failing it (far from the road) retry with more
        candidates, then brute force over all segments."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        out = np.full(x.shape, np.nan)
        ok = np.isfinite(x) & np.isfinite(y)
        rows = np.flatnonzero(ok)
        px, py = x.ravel()[rows], y.ravel()[rows]
        res = np.empty(px.shape)
        todo = np.arange(len(px))
        for kk in (k, 3 * k, 64):
            if not len(todo):
                break
            best, proven = self._candidates(px[todo], py[todo], min(kk, len(self.sample_seg)))
            res[todo[proven]] = best[proven]
            todo = todo[~proven]
        segs = np.setdiff1d(np.arange(len(self.x) - 1), np.asarray(self.gaps, dtype=int))
        for c in range(0, len(todo), 256):  # rare: points tens of km from the road
            t = todo[c:c + 256]
            res[t] = self._segment_distance(px[t, None], py[t, None], segs[None, :]).min(axis=1)
        out.ravel()[rows] = res
        return out


def _index_samples(x: np.ndarray, y: np.ndarray):
    """Points every <= SAMPLE_SPACING_M along each segment, each vertex once, labelled with the
    one or two segments they lie on."""
    seglen = np.hypot(np.diff(x), np.diff(y))
    n = np.ceil(seglen / SAMPLE_SPACING_M).astype(int)  # samples per segment incl. start, excl. end
    seg = np.repeat(np.arange(len(seglen)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    t = (np.arange(len(seg)) - first) / n[seg]
    sx = np.r_[x[seg] + t * (x[seg + 1] - x[seg]), x[-1]]
    sy = np.r_[y[seg] + t * (y[seg + 1] - y[seg]), y[-1]]
    seg = np.r_[seg, len(seglen) - 1]
    seg2 = np.where(t == 0, np.maximum(seg[:-1] - 1, 0), seg[:-1])  # a vertex also ends the previous segment
    seg2 = np.r_[seg2, len(seglen) - 1]
    return sx, sy, seg, seg2


@functools.lru_cache(maxsize=None)
def load_centreline(direction: str) -> Centreline:
    """The shipped I-80 centre line of one direction (see wydot_lab/data/SOURCE.md).

    Vertices are ordered in the direction of travel (eastbound: west to east)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    name = f"I_80_{direction.capitalize()}_Vertices.csv"
    with resources.files("wydot_lab.data").joinpath(name).open("rb") as f:
        # ~1% of rows carry a fifth, unnamed field (a vertex number): read five, use two
        df = pd.read_csv(f, header=None, skiprows=1, names=["ROUTE", "DIRECTION", "LATITUDE", "LONGITUDE", "EXTRA"])
    lat = df["LATITUDE"].to_numpy(float)
    lon = df["LONGITUDE"].to_numpy(float)
    keep = np.r_[True, (np.diff(lat) != 0) | (np.diff(lon) != 0)]  # drop repeated vertices
    lat, lon = lat[keep], lon[keep]
    eastward = lon[-1] > lon[0]
    if eastward != (direction == "eastbound"):
        lat, lon = lat[::-1].copy(), lon[::-1].copy()
    x, y = to_local(lat, lon)
    chainage = np.r_[0.0, np.cumsum(np.hypot(np.diff(x), np.diff(y)))]
    sx, sy, seg, seg2 = _index_samples(x, y)
    return Centreline(direction, lat, lon, x, y, chainage, cKDTree(np.column_stack([sx, sy])), seg, seg2)


@functools.lru_cache(maxsize=None)
def _both_directions() -> Centreline:
    """Both carriageways as one index, so "distance to the nearer one" is one query."""
    e, w = load_centreline("eastbound"), load_centreline("westbound")
    n = len(e.x)
    cat = lambda a, b: np.r_[a, b]  # noqa: E731
    return Centreline(
        "both", cat(e.lat, w.lat), cat(e.lon, w.lon), cat(e.x, w.x), cat(e.y, w.y),
        cat(e.chainage, w.chainage), cKDTree(np.r_[e.tree.data, w.tree.data]),
        cat(e.sample_seg, w.sample_seg + n), cat(e.sample_seg2, w.sample_seg2 + n), gaps=(n - 1,),
    )


def distance_to_centreline(lat, lon, direction=None) -> np.ndarray:
    """Metres from each point to the I-80 centre line: of its direction (a name, or an array
    of names per point), or of the nearer one when direction is None."""
    x, y = to_local(lat, lon)
    if direction is None:
        return _both_directions().distance(x, y)
    if isinstance(direction, str):
        return load_centreline(direction).distance(x, y)
    direction = np.asarray(direction)
    out = np.full(x.shape, np.nan)
    for d in DIRECTIONS:
        m = direction == d
        if m.any():
            out[m] = load_centreline(d).distance(x[m], y[m])
    return out
