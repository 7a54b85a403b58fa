"""Small hand-made canonical BSM tables for the detection-science tests (features, attacks,
models, experiment): vehicles driving along a straight line or along the I-80 centre line
at 1 Hz, with consistent path-history crumbs, so the right answers are known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from wydot_lab import geo
from wydot_lab.frames import CRUMB_SIGN, to_frame
from wydot_lab.schema import BSM_SCHEMA, conform

T0 = np.datetime64("2021-04-01T00:00:00", "ms")
CRUMB_AGES = (1.0, 2.5, 4.0, 6.0, 9.0, 13.0)


def _crumbs(lat: np.ndarray, lon: np.ndarray, lat_at, lon_at, t: np.ndarray) -> list:
    """Crumbs: where the vehicle was `age` s ago, as offsets (degrees) in the convention of
    real WYDOT records (`frames.CRUMB_SIGN`: crumb = reported + sign * offset)."""
    out = []
    for i in range(len(t)):
        out.append([{"latOffset": float(CRUMB_SIGN * (lat_at(t[i] - a) - lat[i])),
                     "lonOffset": float(CRUMB_SIGN * (lon_at(t[i] - a) - lon[i])),
                     "elevationOffset": 0.0, "timeOffset": a} for a in CRUMB_AGES])
    return out


def _table(cols: dict) -> pa.Table:
    n = len(cols["coreData_id"])
    base = {
        "metadata_recordType": ["bsmTx"] * n, "metadata_schemaVersion": [6] * n,
        "coreData_msgCnt": [i % 128 for i in range(n)], "coreData_elevation": [2000.0] * n,
        "coreData_accuracy_semiMajor": [2.0] * n, "coreData_accuracy_semiMinor": [1.5] * n,
        "source_object": ["handmade"] * n, "source_line": list(range(1, n + 1)),
    }
    base.update(cols)
    if "coreData_secMark" not in base and "metadata_generatedAt" in base:  # ms within the minute, as sent
        base["coreData_secMark"] = _sec_mark(base["metadata_generatedAt"])
    arrays = {k: pa.array(v, type=BSM_SCHEMA.field(k).type) for k, v in base.items()}
    return conform(pa.table(arrays))


def _sec_mark(t) -> np.ndarray:
    """ms within the minute, as a sender stamps its BSM."""
    return np.asarray(t, "datetime64[ms]").astype(np.int64) % 60_000


def replaced(table: pa.Table, **columns) -> pa.Table:
    """`table` with the named columns set to the given values (typed as the schema says)."""
    for name, values in columns.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pa.array(values, table.schema.field(i).type))
    return table


def later(table: pa.Table, seconds: float, from_row: int = 0) -> pa.Table:
    """`table` with every message from `from_row` on sent `seconds` later (a silence): its
    time and secMark move together."""
    t = table.column("metadata_generatedAt").to_numpy().copy()
    t[from_row:] += np.timedelta64(int(seconds * 1000), "ms")
    return replaced(table, metadata_generatedAt=t, coreData_secMark=_sec_mark(t))


def straight_line(speed: float = 25.0, n: int = 30, dt: float = 1.0, heading: float = 90.0,
                  vid: str = "0000000A", x0: float = 0.0, y0: float = 0.0) -> pa.Table:
    """One vehicle at constant speed on a straight line in the local frame (near its origin,
    where grid and true north agree)."""
    t = np.arange(n) * dt
    h = np.radians(heading)

    def pos(tt):
        return geo.from_local(x0 + speed * np.sin(h) * np.asarray(tt), y0 + speed * np.cos(h) * np.asarray(tt))

    lat, lon = (np.round(np.asarray(a, float), 7) for a in pos(t))
    return _table({
        "metadata_generatedAt": T0 + (t * 1000).astype("timedelta64[ms]"),
        "coreData_id": [vid] * n, "coreData_position_lat": lat, "coreData_position_long": lon,
        "coreData_speed": [speed] * n, "coreData_heading": [heading] * n,
        "coreData_accelset_accelLong": [0.0] * n, "coreData_accelset_accelYaw": [0.0] * n,
        "partII_pathHistory_crumbData": _crumbs(lat, lon, lambda a: pos(a)[0], lambda a: pos(a)[1], t),
    })


def corridor(vehicles: int = 12, msgs: int = 40, seed: int = 0, noise_m: float = 1.0,
             gap_every: int = 0) -> pa.Table:
    """`vehicles` vehicles driving the I-80 centre line (both directions) at 1 Hz, 20-33 m/s,
    with GPS noise; with `gap_every`, a 10-minute silence after every that many messages."""
    rng = np.random.default_rng(seed)
    tables = []
    for v in range(vehicles):
        line = geo.load_centreline(geo.DIRECTIONS[v % 2])
        speed = rng.uniform(20, 33)
        t = np.arange(msgs, dtype=float)
        if gap_every:
            t = t + 600.0 * (np.arange(msgs) // gap_every)
        s0 = rng.uniform(2000, line.length - 2000 - speed * (t[-1] + 20))
        t_start = rng.uniform(0, 3600 * 20)

        def at(tt, s0=s0, speed=speed, line=line):
            return line.position_at(s0 + speed * (np.asarray(tt) + 20))[:2]

        px, py, grid_heading = line.position_at(s0 + speed * (t + 20))
        nx, ny = px + rng.normal(0, noise_m, msgs), py + rng.normal(0, noise_m, msgs)
        lat, lon = (np.round(np.asarray(a, float), 7) for a in geo.from_local(nx, ny))
        heading = np.mod(grid_heading + geo.convergence_deg(lon), 360.0)  # BSM headings: true north

        def lat_at(tt, at=at):
            return np.asarray(geo.from_local(*at(tt))[0], float)

        def lon_at(tt, at=at):
            return np.asarray(geo.from_local(*at(tt))[1], float)

        tables.append(_table({
            "metadata_generatedAt": T0 + ((t_start + t) * 1000).astype("timedelta64[ms]"),
            "coreData_id": [f"{0xA0000000 + v:08X}"] * msgs,
            "coreData_position_lat": lat, "coreData_position_long": lon,
            "coreData_speed": np.round(speed + rng.normal(0, 0.1, msgs), 2),
            "coreData_heading": np.round(heading / 0.0125) * 0.0125 % 360,
            "coreData_accelset_accelLong": np.zeros(msgs), "coreData_accelset_accelYaw": np.zeros(msgs),
            "partII_pathHistory_crumbData": _crumbs(lat, lon, lat_at, lon_at, t),
        }))
    return pa.concat_tables(tables)


def frame(table: pa.Table) -> pd.DataFrame:
    return to_frame(table)
