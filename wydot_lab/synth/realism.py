"""Realism controls (docs/SYNTHETIC.md): drifting GNSS bias, slowdowns by a warped clock, id
rotation and ramps, drawn from their own generators so the clean corpus's draws never move.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from wydot_lab.config import RealismParams
from wydot_lab.synth.fleet import Fleet

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
    return Messy(
        p,
        sd,
        w,
        phase,
        rng.uniform(*p.slowdown_every_s, vehicles),
        rng.uniform(0, 1e5, vehicles),
        np.where(stop, 1.0, rng.uniform(0.3, 0.85, vehicles)),
        rng.uniform(40.0, 200.0, vehicles),
        rng.uniform(20.0, 240.0, vehicles),
        rng.integers(0, 10**9, vehicles),
    )


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
