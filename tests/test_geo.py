"""The corridor frame is metric and signed, and centre-line distances are exact."""
import numpy as np
import pytest
from pyproj import Geod

from wydot_lab import geo

GEOD = Geod(ellps="WGS84")


@pytest.mark.parametrize("lat,lon", [(41.25, -110.9), (41.6, -109.2), (41.79, -107.3), (41.15, -105.5), (41.1, -104.2)])
@pytest.mark.parametrize("azimuth", [0.0, 45.0, 90.0, 135.0, 210.0, 300.0])
def test_frame_distances_match_geodesics_over_10_km(lat, lon, azimuth):
    lon2, lat2, _ = GEOD.fwd(lon, lat, azimuth, 10_000.0)
    x, y = geo.to_local([lat, lat2], [lon, lon2])
    local = np.hypot(np.diff(x), np.diff(y))[0]
    assert abs(local - 10_000.0) / 10_000.0 < 1e-3
    # the true bearing of the local displacement is the geodesic azimuth (the frame is conformal)
    mid_lon = (lon + lon2) / 2
    chord = geo.true_bearing_deg(np.diff(x)[0], np.diff(y)[0], mid_lon)
    assert geo.angle_diff_deg(chord, azimuth) < 0.1  # chord vs initial azimuth: <0.05
    if abs(lon - geo.ORIGIN_LON) > 1.5:  # grid north is not true north off the origin meridian
        assert geo.angle_diff_deg(geo.bearing_deg(np.diff(x)[0], np.diff(y)[0]), azimuth) > 0.5


def test_frame_signs_and_origin():
    x0, y0 = geo.to_local(geo.ORIGIN_LAT, geo.ORIGIN_LON)
    assert abs(x0) < 1e-6 and abs(y0) < 1e-6
    x, y = geo.to_local([geo.ORIGIN_LAT + 0.1, geo.ORIGIN_LAT], [geo.ORIGIN_LON, geo.ORIGIN_LON + 0.1])
    assert y[0] > 10_000 and abs(x[0]) < 1
    assert x[1] > 8_000 and abs(y[1]) < 100


def test_round_trip_below_a_millimetre_and_nan_passthrough():
    rng = np.random.default_rng(1)
    lat = rng.uniform(40.9, 41.9, 10_000)
    lon = rng.uniform(-111.1, -104.0, 10_000)
    x, y = geo.to_local(lat, lon)
    lat2, lon2 = geo.from_local(x, y)
    x2, y2 = geo.to_local(lat2, lon2)
    assert np.hypot(x2 - x, y2 - y).max() < 1e-3
    assert np.abs(lat2 - lat).max() < 1e-8
    xn, yn = geo.to_local([np.nan, 41.3], [-107.0, np.nan])
    assert np.isnan(xn).all() and np.isnan(yn).all()
    assert np.isnan(geo.distance_to_centreline([np.nan], [-107.0])).all()


@pytest.mark.parametrize("direction", geo.DIRECTIONS)
def test_centreline_runs_in_the_direction_of_travel(direction):
    c = geo.load_centreline(direction)
    assert 600_000 < c.length < 700_000  # Evanston to the Nebraska line is ~650 km
    east = c.lon[-1] > c.lon[0]
    assert east == (direction == "eastbound")
    # bearings along the line point mostly east (eastbound) / west (westbound)
    _, _, b = c.position_at(np.linspace(0, c.length, 2000))
    east_share = np.mean(np.sin(np.radians(b)) > 0)
    assert east_share > 0.8 if direction == "eastbound" else east_share < 0.2
    assert np.all(np.diff(c.chainage) > 0)


def test_position_at_lies_on_the_line_with_its_bearing():
    c = geo.load_centreline("eastbound")
    s = np.linspace(0, c.length, 5001)
    x, y, b = c.position_at(s)
    assert c.distance(x, y).max() < 1e-6
    x2, y2, _ = c.position_at(s + 1.0)
    step = np.hypot(x2 - x, y2 - y)
    ok = step > 0.999  # away from sharp vertices a 1 m step moves 1 m along the bearing
    assert np.median(geo.angle_diff_deg(geo.bearing_deg(x2 - x, y2 - y)[ok], b[ok])) < 0.01


@pytest.mark.parametrize("direction", geo.DIRECTIONS)
def test_distance_equals_brute_force_near_and_far(direction):
    c = geo.load_centreline(direction)
    rng = np.random.default_rng(3)
    x, y, _ = c.position_at(rng.uniform(0, c.length, 1500))
    scale = np.r_[np.full(1000, 15.0), np.full(400, 300.0), np.full(100, 20_000.0)]
    x = x + rng.normal(0, 1, 1500) * scale
    y = y + rng.normal(0, 1, 1500) * scale
    np.testing.assert_allclose(c.distance(x, y), c.brute_distance(x, y), rtol=0, atol=1e-6)
    d, seg = c.nearest(x, y)  # the segment it names is one at that distance (ties: either)
    np.testing.assert_allclose(c._segment_distance(x, y, seg), d, rtol=0, atol=1e-6)


def test_distance_to_centreline_by_direction_and_nearest():
    rng = np.random.default_rng(4)
    e, w = geo.load_centreline("eastbound"), geo.load_centreline("westbound")
    x, y, _ = w.position_at(rng.uniform(0, w.length, 800))
    x, y = x + rng.normal(0, 50, 800), y + rng.normal(0, 50, 800)
    lat, lon = geo.from_local(x, y)
    de, dw = e.brute_distance(x, y), w.brute_distance(x, y)
    np.testing.assert_allclose(geo.distance_to_centreline(lat, lon), np.fmin(de, dw), atol=1e-5)
    dirs = np.where(np.arange(800) % 2 == 0, "eastbound", "westbound")
    np.testing.assert_allclose(geo.distance_to_centreline(lat, lon, dirs), np.where(dirs == "eastbound", de, dw),
                               atol=1e-5)
    np.testing.assert_allclose(geo.distance_to_centreline(lat, lon, "eastbound"), de, atol=1e-5)


@pytest.mark.parametrize("direction", geo.DIRECTIONS)
def test_vertices_have_zero_distance(direction):
    c = geo.load_centreline(direction)
    assert geo.distance_to_centreline(c.lat, c.lon, direction).max() < 1e-3
    with pytest.raises(ValueError):
        geo.load_centreline("northbound")


def test_bearings_and_angle_differences():
    np.testing.assert_allclose(geo.bearing_deg([0, 1, 0, -1, 1], [1, 0, -1, 0, 1]), [0, 90, 180, 270, 45])
    np.testing.assert_allclose(geo.angle_diff_deg([350, 10, 90, 0], [10, 350, 270, 180]), [20, 20, 180, 180])


def test_distance_in_parallel_batches_equals_brute_force_across_batches():
    """More points than one thread batch: every batch lands on its own rows (checked on a
    sample spread over all batches), NaNs stay NaN."""
    c = geo.load_centreline("eastbound")
    rng = np.random.default_rng(5)
    n = 2 * geo.BATCH + 1234
    x, y, _ = c.position_at(rng.uniform(0, c.length, n))
    scale = np.where(rng.random(n) < 0.05, 3_000.0, 20.0)
    x, y = x + rng.normal(0, 1, n) * scale, y + rng.normal(0, 1, n) * scale
    x[7] = np.nan
    d = c.distance(x, y)
    pick = np.r_[np.arange(3, n, n // 300), n - 1]
    np.testing.assert_allclose(d[pick], c.brute_distance(x[pick], y[pick]), rtol=0, atol=1e-6)
    assert np.isnan(d[7]) and np.isfinite(np.delete(d, 7)).all()


def test_road_bearing_is_the_nearest_carriageways_direction_of_travel():
    """Midpoints of each line's segments (nudged 2 m right, a lane): the road bearing is that
    segment's compass bearing, the other carriageway's differs by ~180 deg; NaN passes through."""
    rng = np.random.default_rng(3)
    for direction in ("eastbound", "westbound"):
        line = geo.load_centreline(direction)
        seg = rng.choice(len(line.x) - 1, 400, replace=False)
        seg = seg[np.hypot(line.ux[seg], line.uy[seg]) > 20]  # long enough that "nearest" is unambiguous
        mx, my = line.x[seg] + line.ux[seg] / 2, line.y[seg] + line.uy[seg] / 2
        length = np.hypot(line.ux[seg], line.uy[seg])
        px, py = mx + 2 * line.uy[seg] / length, my - 2 * line.ux[seg] / length
        lat, lon = geo.from_local(px, py)
        want = geo.true_bearing_deg(line.ux[seg], line.uy[seg], lon)
        assert np.quantile(geo.angle_diff_deg(geo.road_bearing_deg(lat, lon), want), 0.99) < 0.5
    east = geo.load_centreline("eastbound")
    west_lat, west_lon = geo.load_centreline("westbound").lat[100], geo.load_centreline("westbound").lon[100]
    wx, wy = geo.to_local(west_lat, west_lon)
    near = min(int(np.argmin(np.hypot(east.x - wx, east.y - wy))), len(east.x) - 2)
    heading_east = geo.true_bearing_deg(east.ux[near], east.uy[near], east.lon[near])
    assert geo.angle_diff_deg(geo.road_bearing_deg(west_lat, west_lon), heading_east) > 150
    assert np.isnan(geo.road_bearing_deg(np.array([np.nan]), np.array([np.nan]))).all()
