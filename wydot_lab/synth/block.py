"""One (hour, block) batch of messages: which runs are observed, the vehicles' reported and true
state, received copies, and the object each row is written to.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from wydot_lab import geo, layout
from wydot_lab.errors import SynthParamsError
from wydot_lab.frames import CRUMB_SIGN, PRIVACY_MPS
from wydot_lab.synth.fleet import (
    CRUMBS,
    HOUR_MS,
    MAX_NOISE_M,
    OBJECTS_PER_HOUR,
    ORIENT_DIVIDED,
    ORIENT_STEP,
    ORIENT_TIMES,
    WINDOW,
    Fleet,
    _heading_true,
    _latlon,
    _lines,
    _locate,
    _m_per_deg,
    _odometer,
    _period_ms,
    _to_the_right,
    elevation_m,
    kinematics,
    lane_offset_m,
    place,
)
from wydot_lab.synth.realism import Messy, _ramp_runs, gnss_bias, ramp_offset, rotated_ids, warp_clock


@dataclass
class Block:
    """Columns of one (hour, block) batch of messages, object by object, time-ordered within."""

    cols: dict  # canonical-name -> numpy array (reported values, already quantised)
    crumbs: dict  # lat/lon/elev/time -> (n, CRUMBS)
    meta: dict  # text/int columns only the NDJSON needs (timestamps ms, log file names ...)
    truth: dict  # true_lat, true_long, true_x, true_y, eastbound, chainage, true_speed
    objects: list  # (relative key, row start, row stop)


def _windows(
    hour_ms: int,
    fleet: Fleet,
    period: int,
    records_per_hour: int | None,
    rng,
    block: int,
    blocks: int,
    messy: Messy | None = None,
):
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
            raise SynthParamsError(f"{records_per_hour} records/hour needs {nwin} runs but only {nveh} vehicles")
    if nwin > nveh:
        raise SynthParamsError(f"{records_per_hour} records/hour needs {nwin} runs of {size} but only {nveh} vehicles")
    veh = rng.choice(nveh, nwin, replace=False)
    span = (sizes - 1) * period
    start = hour_ms + rng.uniform(0, 1, nwin) * (HOUR_MS - span - period)
    k0 = np.ceil((start - fleet.tx_phase_ms[veh]) / period).astype(np.int64)
    return veh, k0, sizes


def simulate_block(
    fleet: Fleet,
    rate_hz: float,
    seed: int,
    hour_ms: int,
    records_per_hour: int | None,
    block: int = 0,
    blocks: int = 1,
    j2735_grid: bool = False,
    messy: Messy | None = None,
) -> Block:
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
        kept = (
            (mrng.random(len(t_ms)) >= messy.p.drop_share)
            & (rep_speed >= PRIVACY_MPS[0])
            & (rep_speed <= PRIVACY_MPS[1])
        )
        win, v, k, t_ms, t_s, tau, odo, speed, accel, extra_off, slope, dslope = (
            x[kept] for x in (win, v, k, t_ms, t_s, tau, odo, speed, accel, extra_off, slope, dslope)
        )
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
    p_lat, p_lon, _, _ = _to_the_right(
        p_i, *_latlon(p_i, p_frac), lane_offset_m(fleet, np.repeat(v, CRUMBS), p_t.ravel()) + p_extra
    )
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
        "coreData_id": (
            fleet.ids[v] if messy is None or messy.p.id_rotation_s is None else rotated_ids(fleet, messy, v, t_ms)
        ),
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
    lfn = np.char.add(
        np.char.add(np.char.add(b"bsmTx_", (run_start // 1000).astype("S10")), b"_fe80%3A%3A226%3Aadff%3Afe05%3A"),
        fleet.tag[veh],
    )
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
        "recordType": np.full(n, b"bsmTx"),
        "bsmSource": np.full(n, b"EV"),
        "rxSource": np.full(n, b"NA"),
        "rmd_lat": cols["coreData_position_lat"],
        "rmd_lon": cols["coreData_position_long"],
        "rmd_elev": cols["coreData_elevation"],
        "rmd_speed": cols["coreData_speed"],
        "rmd_heading": cols["coreData_heading"],
    }
    truth = {
        "true_lat": tlat,
        "true_long": tlon,
        "true_x": tx,
        "true_y": ty,
        "eastbound": east,
        "chainage": s,
        "true_speed": speed,
    }
    obj = obj_of_win[win]
    if messy is not None and messy.p.rx_share > 0:
        cols, crumbs, meta, truth, obj, v = _received_copies(
            fleet, messy, mrng, cols, crumbs, meta, truth, obj, v, win, rec, veh, sizes, tlat
        )
        t_ms = meta["t_ms"]
    # object keys: hour folder + real-style name with the UTC time of its first record
    bounds = np.flatnonzero(np.r_[True, obj[1:] != obj[:-1], True])
    names = rng.integers(0, 256, (len(bounds) - 1, 16), dtype=np.uint8)
    uuids = _uuid_text(names)
    objects = []
    hour = dt.datetime.fromtimestamp(hour_ms / 1000, dt.timezone.utc)
    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        first = dt.datetime.fromtimestamp(int(t_ms[a]) // 1000, dt.timezone.utc)
        key = (
            f"{layout.hour_prefix('wydot', 'BSM', hour)}/usdot-its-cvpilot-bsm-public-{block + 1}-"
            f"{first:%Y-%m-%d-%H-%M-%S}-{uuids[j].decode()}"
        )
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
    lfn = np.char.add(
        np.char.add(
            np.char.add(b"rxMsg_", (np.where(heard, first, 0) // 1000).astype("S10")),
            b"_fe80%3A%3A226%3Aadff%3Afe05%3A",
        ),
        fleet.tag[recv],
    )
    size = (b - a)[w]
    copy = {
        "t_ms": t_rx,
        "received_ms": meta["received_ms"][src] + lag,
        "logFileName": np.char.add(lfn, b".csv")[w],
        "streamId": _uuid_text(stream)[w],
        "bundleSize": size,
        "bundleId": bundle[w],
        "recordId": rec[src] - a[w],
        "serialNumber": bundle[w] * size + rec[src] - a[w],
        "recordType": np.full(len(src), b"rxMsg"),
        "bsmSource": np.full(len(src), b"RV"),
        "rxSource": np.full(len(src), b"RV"),
        "rmd_lat": np.round(tlat[src] + dn / m_lat, 7),
        "rmd_lon": np.round(truth["true_long"][src] + de / m_lon, 7),
        "rmd_elev": meta["rmd_elev"][src],
        "rmd_speed": np.round(np.round(r_speed[w] / 0.02) * 0.02, 2),
        "rmd_heading": np.round(
            np.mod(np.round((cols["coreData_heading"][src] + 180.0 * opposite[w]) / 0.0125) * 0.0125, 360.0), 4
        ),
    }
    order = np.lexsort((np.r_[v, v[src]], np.r_[meta["t_ms"], t_rx], np.r_[obj, obj[src]]))
    both = lambda x, y: np.concatenate([x, y])[order]  # noqa: E731
    idx = np.r_[np.arange(len(v)), src][order]
    return (
        {k: x[idx] for k, x in cols.items()},
        {k: x[idx] for k, x in crumbs.items()},
        {k: both(meta[k], copy[k]) for k in meta},
        {k: x[idx] for k, x in truth.items()},
        both(obj, obj[src]),
        both(v, v[src]),
    )


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
