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
import os
from concurrent.futures import ThreadPoolExecutor
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


@functools.cache
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


@functools.cache
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


PIECE_M = 40.0  # the index cuts every segment into pieces at most this long (see Centreline.distance)
CHUNK = 8_192  # points per batch of candidate-segment arithmetic (keeps the gathers in cache)
BATCH = 65_536  # points per thread task (tree query + arithmetic)


@dataclass(frozen=True, eq=False)
class Centreline:
    """One direction of I-80 as a polyline in the local frame, in the direction of travel."""

    direction: str
    lat: np.ndarray
    lon: np.ndarray
    x: np.ndarray
    y: np.ndarray
    chainage: np.ndarray  # metres along the line from its first vertex
    tree: cKDTree  # over the midpoints of pieces <= PIECE_M long that tile every segment
    piece_seg: np.ndarray  # segment index of each piece
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

    def _segment_distance(self, px, py, seg) -> np.ndarray:
        """Exact distance of points to segment seg[i] (broadcasts)."""
        ax, ay, ux, uy = self.x[seg], self.y[seg], self.ux[seg], self.uy[seg]
        rx, ry = px - ax, py - ay
        t = np.clip((rx * ux + ry * uy) * self.inv_len2[seg], 0.0, 1.0)
        return np.hypot(rx - t * ux, ry - t * uy)

    def brute_distance(self, px, py) -> np.ndarray:
        """Exact distance of 1-d points to the polyline by checking every road segment (no index):
        the fallback for points far from the road, and the reference the index is tested against."""
        return self._brute_nearest(px, py)[0]

    def _brute_nearest(self, px, py) -> tuple[np.ndarray, np.ndarray]:
        """(exact distance, nearest segment) of 1-d points, checking every road segment."""
        segs = np.setdiff1d(np.arange(len(self.x) - 1), np.asarray(self.gaps, dtype=int))
        px, py = np.asarray(px, dtype=float), np.asarray(py, dtype=float)
        dist, seg = np.empty(px.shape), np.empty(px.shape, np.int64)
        for c in range(0, len(px), 256):  # 256 points x ~10,000 segments per step
            d = self._segment_distance(px[c:c + 256, None], py[c:c + 256, None], segs[None, :])
            j = d.argmin(axis=1)
            dist[c:c + 256], seg[c:c + 256] = d[np.arange(len(j)), j], segs[j]
        return dist, seg

    @functools.cached_property
    def _packed(self) -> np.ndarray:
        """(segments, 5): start x, start y, ux, uy, 1/length^2, so one gather fetches a candidate."""
        return np.column_stack([self.x[:-1], self.y[:-1], self.ux, self.uy, self.inv_len2])

    def _nearest_of(self, px, py, seg) -> tuple[np.ndarray, np.ndarray]:
        """(exact distance, segment) of each point to the nearest of its candidate segments seg (n, k)."""
        out, best = np.empty(len(px)), np.empty(len(px), np.int64)
        for a in range(0, len(px), CHUNK):
            z = min(len(px), a + CHUNK)
            g = self._packed[seg[a:z]]  # (c, k, 5)
            rx = px[a:z, None] - g[..., 0]
            ry = py[a:z, None] - g[..., 1]
            ux, uy = g[..., 2], g[..., 3]
            t = rx * ux
            t += ry * uy
            t *= g[..., 4]
            np.clip(t, 0.0, 1.0, out=t)
            rx -= t * ux
            ry -= t * uy
            rx *= rx
            ry *= ry
            rx += ry
            j = rx.argmin(axis=1)
            rows = np.arange(z - a)
            np.sqrt(rx[rows, j], out=out[a:z])
            best[a:z] = seg[a:z][rows, j]
        return out, best

    def _candidates(self, px, py, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best exact distance (and its segment) over the segments of the k nearest piece midpoints,
        and whether it is provably the minimum: every polyline point is within PIECE_M / 2 of the
        midpoint of its piece, so if the k-th midpoint is farther than best + PIECE_M / 2, no unseen
        segment is nearer. Batches run on all CPUs (the tree query and numpy release the GIL)."""
        best = np.empty(len(px))
        best_seg = np.empty(len(px), np.int64)
        proven = np.empty(len(px), dtype=bool)

        def batch(a: int) -> None:
            z = min(len(px), a + BATCH)
            dk, idx = self.tree.query(np.column_stack([px[a:z], py[a:z]]), k=k)
            dk, idx = dk.reshape(z - a, k), idx.reshape(z - a, k)
            best[a:z], best_seg[a:z] = self._nearest_of(px[a:z], py[a:z], self.piece_seg[idx])
            np.greater(dk[:, -1], best[a:z] + PIECE_M / 2, out=proven[a:z])

        starts = range(0, len(px), BATCH)
        if len(starts) > 1:
            with ThreadPoolExecutor(min(len(starts), os.cpu_count() or 1)) as pool:
                list(pool.map(batch, starts))
        else:
            for a in starts:
                batch(a)
        return best, best_seg, proven

    def distance(self, x, y, k: int = 5) -> np.ndarray:
        """Exact distance (m) of local points to the polyline, vectorized (see `nearest`)."""
        return self.nearest(x, y, k)[0]

    def nearest(self, x, y, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(exact distance m, nearest segment; NaN and -1 for NaN points) of local points, vectorized:
        k-nearest index pieces with a proof check; points failing it (far from the road) retry
        with more candidates, then brute force over all segments."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        out = np.full(x.shape, np.nan)
        out_seg = np.full(x.shape, -1, np.int64)
        ok = np.isfinite(x) & np.isfinite(y)
        rows = np.flatnonzero(ok)
        px, py = x.ravel()[rows], y.ravel()[rows]
        res, res_seg = np.empty(px.shape), np.empty(px.shape, np.int64)
        todo = np.arange(len(px))
        for kk in (k, 3 * k, 64):
            if not len(todo):
                break
            best, best_seg, proven = self._candidates(px[todo], py[todo], min(kk, len(self.piece_seg)))
            res[todo[proven]], res_seg[todo[proven]] = best[proven], best_seg[proven]
            todo = todo[~proven]
        res[todo], res_seg[todo] = self._brute_nearest(px[todo], py[todo])  # rare: tens of km from the road
        out.ravel()[rows], out_seg.ravel()[rows] = res, res_seg
        return out, out_seg


def _index_pieces(x: np.ndarray, y: np.ndarray, first_seg: int = 0):
    """Midpoints of pieces <= PIECE_M long tiling every segment, and each piece's segment."""
    seglen = np.hypot(np.diff(x), np.diff(y))
    n = np.maximum(np.ceil(seglen / PIECE_M).astype(int), 1)  # pieces per segment
    seg = np.repeat(np.arange(len(seglen)), n)
    t = (np.arange(len(seg)) - np.repeat(np.cumsum(n) - n, n) + 0.5) / n[seg]
    return x[seg] + t * (x[seg + 1] - x[seg]), y[seg] + t * (y[seg + 1] - y[seg]), seg + first_seg


@functools.cache
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
    mx, my, seg = _index_pieces(x, y)
    return Centreline(direction, lat, lon, x, y, chainage, cKDTree(np.column_stack([mx, my])), seg)


@functools.cache
def _both_directions() -> Centreline:
    """Both carriageways as one index, so "distance to the nearer one" is one query."""
    e, w = load_centreline("eastbound"), load_centreline("westbound")
    n = len(e.x)
    cat = lambda a, b: np.r_[a, b]  # noqa: E731
    return Centreline(
        "both", cat(e.lat, w.lat), cat(e.lon, w.lon), cat(e.x, w.x), cat(e.y, w.y),
        cat(e.chainage, w.chainage), cKDTree(np.r_[e.tree.data, w.tree.data]),
        cat(e.piece_seg, w.piece_seg + n), gaps=(n - 1,),
    )


def nearest_road(x, y, lon) -> tuple[np.ndarray, np.ndarray]:
    """(metres to the nearer carriageway line, compass bearing (as a BSM heading) of travel along
    it there) of local points x, y at longitudes lon: one index search for both. The eastbound
    line runs east, the westbound one west, so a heading far from the bearing says the vehicle
    is not where it reports (or drives the wrong way)."""
    both = _both_directions()
    dist, seg = both.nearest(x, y, k=6)  # the other carriageway adds close pieces
    bearing = np.full(dist.shape, np.nan)
    ok = seg >= 0
    bearing[ok] = np.mod(bearing_deg(both.ux[seg[ok]], both.uy[seg[ok]])
                         + convergence_deg(np.asarray(lon, float)[ok]), 360.0)
    return dist, bearing


def road_bearing_deg(lat, lon) -> np.ndarray:
    """`nearest_road`'s bearing of points in degrees."""
    return nearest_road(*to_local(lat, lon), lon)[1]


def distance_to_centreline(lat, lon, direction=None) -> np.ndarray:
    """Metres from each point to the I-80 centre line: of its direction (a name, or an array
    of names per point), or of the nearer one when direction is None."""
    x, y = to_local(lat, lon)
    if direction is None:
        return _both_directions().distance(x, y, k=6)  # the other carriageway adds close pieces
    if isinstance(direction, str):
        return load_centreline(direction).distance(x, y)
    direction = np.asarray(direction)
    out = np.full(x.shape, np.nan)
    for d in DIRECTIONS:
        m = direction == d
        if m.any():
            out[m] = load_centreline(d).distance(x[m], y[m])
    return out
