"""Distance to the I-80 centre line: points/s of geo.distance_to_centreline beside brute force.

Points are positions along the real eastbound line with 20 m Gaussian noise (what BSMs
look like), plus 1% far off the road (what a position attack looks like). Brute force is
exact point-to-segment over all ~10,000 segments (numpy, on a subset; shapely is not a
dependency). Usage: python benchmarks/bench_geo.py [N]
"""
from __future__ import annotations

import sys
import time

import numpy as np

from wydot_lab import geo

from verdict import verdict  # noqa: E402  (benchmarks/, the script's folder)

TARGET = 1_000_000


def points(n: int, rng: np.random.Generator):
    c = geo.load_centreline("eastbound")
    x, y, _ = c.position_at(rng.uniform(0, c.length, n))
    scale = np.where(rng.random(n) < 0.01, 2_000.0, 20.0)
    return c, x + rng.normal(0, 1, n) * scale, y + rng.normal(0, 1, n) * scale


def main(n: int = 1_000_000) -> None:
    rng = np.random.default_rng(0)
    c, x, y = points(n, rng)
    lat, lon = geo.from_local(x, y)
    geo.distance_to_centreline(lat[:10], lon[:10])  # build the indexes outside the timing
    geo.distance_to_centreline(lat[:10], lon[:10], "eastbound")

    t = time.perf_counter()
    d_local = c.distance(x, y)
    t_local = time.perf_counter() - t
    t = time.perf_counter()
    d_one = geo.distance_to_centreline(lat, lon, "eastbound")
    t_one = time.perf_counter() - t
    t = time.perf_counter()
    geo.distance_to_centreline(lat, lon)
    t_both = time.perf_counter() - t

    m = 2_000
    t = time.perf_counter()
    ref = c.brute_distance(x[:m], y[:m])
    t_brute = time.perf_counter() - t
    assert np.abs(ref - d_local[:m]).max() < 1e-6 and np.abs(d_one - d_local).max() < 1e-4

    print(f"geo: Centreline.distance (local x/y, one direction) {n / t_local:,.0f} points/s "
          f"(target >= {TARGET:,}: {verdict(n / t_local, TARGET)})")
    print(f"geo: distance_to_centreline(lat, lon, 'eastbound') incl. projection {n / t_one:,.0f} points/s")
    print(f"geo: distance_to_centreline(lat, lon) nearest of both directions {n / t_both:,.0f} points/s")
    print(f"geo: brute force over all {len(c.x) - 1:,} segments {m / t_brute:,.0f} points/s (same answers)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
