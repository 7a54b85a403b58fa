"""Decoded ODE records (`parse.Record`, v1..v9) -> the canonical Arrow table (`BSM_SCHEMA`).

One C++ pass over row tuples builds the columns; then the record time is chosen and parsed
(v7+ falls back to odeReceivedAt), ODE sentinels become nulls, and v9's J2735 integer
units become the units ODE v1..v8 wrote, so every version lands in the same columns.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from wydot_lab import parse
from wydot_lab.schema import BSM_SCHEMA, CRUMB, RECEIVED_FALLBACK_VERSION


def _meta(md: parse.Metadata) -> tuple:
    """The metadata columns of `_row` (times still as text); v9 names bsmSource `source`."""
    sid = md.serialId
    rmd = md.receivedMessageDetails
    loc = rmd.locationData if rmd is not None and rmd.locationData is not None else _EMPTY_LOC
    return (
        md.recordGeneratedAt or md.generatedAt,
        md.odeReceivedAt or md.receivedAt,
        md.recordType,
        md.schemaVersion,
        md.bsmSource if md.bsmSource is not None else md.source,
        md.sanitized,
        md.logFileName,
        md.securityResultCode,
        md.recordGeneratedBy,
        md.validSignature,
        md.payloadType,
        sid.streamId,
        sid.bundleSize,
        sid.bundleId,
        sid.recordId,
        sid.serialNumber,
        loc.latitude,
        loc.longitude,
        loc.elevation,
        loc.speed,
        loc.heading,
        rmd.rxSource if rmd is not None else None,
    )


def _row(rec: parse.Record):
    cd = rec.payload.data.coreData
    pos, acc, accu, br, size = cd.position, cd.accelSet, cd.accuracy, cd.brakes, cd.size
    wb = br.wheelBrakes
    return _meta(rec.metadata or _EMPTY_MD) + (
        cd.msgCnt,
        cd.id,
        cd.secMark,
        pos.latitude,
        pos.longitude,
        pos.elevation,
        cd.speed,
        cd.heading,
        acc.accelLong,
        acc.accelLat,
        acc.accelVert,
        acc.accelYaw,
        accu.semiMajor,
        accu.semiMinor,
        accu.orientation,
        cd.transmission,
        wb.leftFront,
        wb.rightFront,
        wb.leftRear,
        wb.rightRear,
        wb.unavailable,
        br.traction,
        br.abs,
        br.scs,
        br.brakeBoost,
        br.auxBrakes,
        size.width,
        size.length,
    )


def _row_frame(rec: parse.Record):
    """`_row` of a v9 record (the J2735 frame): the same columns, numbers still in J2735
    units and the wheel brakes still one hex text (`_frame_units` converts both)."""
    cd = rec.payload.data.value.BasicSafetyMessage.coreData
    acc, accu, br, size = cd.accelSet, cd.accuracy, cd.brakes, cd.size
    return _meta(rec.metadata or _EMPTY_MD) + (
        cd.msgCnt,
        cd.id,
        cd.secMark,
        cd.lat,
        cd.long,
        cd.elev,
        cd.speed,
        cd.heading,
        acc.long,
        acc.lat,
        acc.vert,
        acc.yaw,
        accu.semiMajor,
        accu.semiMinor,
        accu.orientation,
        cd.transmission,
        None,
        None,
        None,
        None,
        None,
        br.traction,
        br.abs,
        br.scs,
        br.brakeBoost,
        br.auxBrakes,
        size.width,
        size.length,
    )


_EMPTY_MD = parse.Metadata()
_EMPTY_LOC = parse.LocationData()
TIME_SOURCE = "metadata_generatedAt_source"
_FROM_RECORD, _FROM_RECEIVED = pa.scalar("recordGeneratedAt"), pa.scalar("odeReceivedAt")
_NO_SOURCE = pa.scalar(None, pa.string())
# `_row` yields the leading BSM_SCHEMA columns in schema order (the two times still as text)
_ROW_COLS = [name for name in BSM_SCHEMA.names[:51] if name != TIME_SOURCE]
assert _ROW_COLS[-1] == "coreData_size_length" and _ROW_COLS[:2] == ["metadata_generatedAt", "metadata_receivedAt"]
_TIME_COLS = frozenset(_ROW_COLS[:2])
_RMD_COLS = {
    "metadata_rmd_latitude",
    "metadata_rmd_longitude",
    "metadata_rmd_elevation",
    "metadata_rmd_speed",
    "metadata_rmd_heading",
}
# the `_row` tuple as one Arrow struct: times and receiver position still text, as ODE writes them
_ROW_TYPE = pa.struct(
    [
        (name, pa.string() if name in _TIME_COLS or name in _RMD_COLS else BSM_SCHEMA.field(name).type)
        for name in _ROW_COLS
    ]
)
_ROW_FIELD_TYPES = [f.type for f in _ROW_TYPE]
# ODE sentinels that must never reach analysis as numbers
SENTINELS = {
    "coreData_secMark": 65535,
    "coreData_accelset_accelLong": 2001,
    "coreData_accelset_accelLat": 2001,
    "coreData_accelset_accelVert": -127,
    "coreData_heading": 360.0,
    "coreData_speed": 163.82,
    "coreData_elevation": -409.6,
}
# v9 (J2735 integer units) -> the units of v1..v8: column: (times, divided by, "unavailable" code).
# value * times / divided_by, both exact integers, so the float is the correctly rounded
# decimal ODE v6 wrote for the same J2735 value (870 -> 17.4, not 17.400000000000002).
J2735_UNITS: dict[str, tuple[int, int, int | None]] = {
    "coreData_position_lat": (1, 10**7, 900000001),  # 1e-7 deg
    "coreData_position_long": (1, 10**7, 1800000001),
    "coreData_elevation": (1, 10, -4096),  # 0.1 m
    "coreData_speed": (2, 100, 8191),  # 0.02 m/s
    "coreData_heading": (125, 10**4, 28800),  # 0.0125 deg
    "coreData_accelset_accelLong": (1, 100, 2001),  # 0.01 m/s^2
    "coreData_accelset_accelLat": (1, 100, 2001),
    "coreData_accelset_accelVert": (2, 100, -127),  # 0.02 g
    "coreData_accelset_accelYaw": (1, 100, None),  # 0.01 deg/s; J2735 YawRate has no "unavailable"
    "coreData_accuracy_semiMajor": (5, 100, 255),  # 0.05 m
    "coreData_accuracy_semiMinor": (5, 100, 255),
    # 360/65535 deg, as ODE v6 computed it: 0.0054932479 deg per step (ODE rounds to 10 decimals)
    "coreData_accuracy_orientation": (54932479, 10**10, 65535),
}
# path-history crumbs: field: (times, divided by, "unavailable" code)
J2735_CRUMB_UNITS: dict[str, tuple[int, int, int | None]] = {
    "latOffset": (1, 10**7, -131072),  # 1e-7 deg
    "lonOffset": (1, 10**7, -131072),
    "elevationOffset": (1, 10, -2048),  # 0.1 m
    "timeOffset": (1, 100, 65535),  # 10 ms
}
RADIUS_STRAIGHT = 32767  # J2735 RadiusOfCurvature "straight": ODE v6 writes it as 0.0
_WHEEL_BITS = (
    ("coreData_brakes_wheelBrakes_unavailable", 0x80),
    ("coreData_brakes_wheelBrakes_leftFront", 0x40),
    ("coreData_brakes_wheelBrakes_leftRear", 0x20),
    ("coreData_brakes_wheelBrakes_rightFront", 0x10),
    ("coreData_brakes_wheelBrakes_rightRear", 0x08),
)


def _split(el: parse.PartIIElement):
    """A v1..v8 partII element: (its VehicleSafetyExtensions or None, else itself as kept)."""
    if el.id in parse.VSE_IDS:
        return el.value, None
    return None, {"id": el.id, "value": el.value}  # encodes only the members present


def _split_frame(el: parse.PartIIElement9):
    """`_split` of a v9 element ({partII-Id, partII-Value: {<extension name>: ...}}); another
    extension is kept as `{"id": name, "value": ...}` like v1..v8's (numbers as written)."""
    v = el.value
    if v.VehicleSafetyExtensions is not None:
        return v.VehicleSafetyExtensions, None
    for name in ("SpecialVehicleExtensions", "SupplementalVehicleExtensions"):
        if getattr(v, name):
            return None, {"id": name, "value": getattr(v, name)}
    return None, {"id": el.id, "value": {}}  # an extension this reader does not name: kept by its id


def _part2(elements: list | None, split=_split):
    """(crumbs or None, radiusOfCurve, confidence, other elements as JSON text or None); v9's
    (`split=_split_frame`) still in J2735 units."""
    if not elements:
        return None, None, None, None
    crumbs = roc = conf = None
    other = []
    for el in elements:
        vse, kept = split(el)
        if vse is None:
            other.append(kept)
            continue
        if vse.pathHistory is not None:
            crumbs = vse.pathHistory.crumbData
        if vse.pathPrediction is not None:
            roc, conf = vse.pathPrediction.radiusOfCurve, vse.pathPrediction.confidence
    return crumbs, roc, conf, (msgspec.json.encode(other).decode() if other else None)


def _crumb_array(crumb_lists: list) -> pa.Array:
    offsets = np.zeros(len(crumb_lists) + 1, dtype=np.int32)
    flat: list[parse.Crumb] = []
    valid = np.ones(len(crumb_lists), dtype=bool)
    for i, cl in enumerate(crumb_lists):
        if cl is None:
            valid[i] = False
        else:
            flat.extend(cl)
        offsets[i + 1] = len(flat)
    f64 = pa.float64()
    fields = [
        pa.array([c.latOffset for c in flat], type=f64),
        pa.array([c.lonOffset for c in flat], type=f64),
        pa.array([c.elevationOffset for c in flat], type=f64),
        pa.array([c.timeOffset for c in flat], type=f64),
    ]
    values = pa.StructArray.from_arrays(fields, fields=list(CRUMB))
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~valid))


def _j2735(arr: pa.Array, times: int, divided_by: int, unavailable: int | None) -> pa.Array:
    """J2735 integer units -> float in ODE v1..v8 units; the "unavailable" code -> null."""
    arr = arr.cast(pa.float64())
    if unavailable is not None:
        arr = pc.if_else(pc.equal(arr, float(unavailable)), pa.scalar(None, pa.float64()), arr)
    if times != 1:
        arr = pc.multiply(arr, float(times))
    return pc.divide(arr, float(divided_by))


def _wheel_brakes(texts: list) -> dict[str, pa.Array]:
    """JER hex texts of BrakeAppliedStatus ("80": unavailable) -> the five bool columns; each
    distinct text is read once (there are at most 32), a text that is no hex byte -> nulls."""
    codes = pa.array(texts, pa.string()).dictionary_encode()
    bits = {name: [] for name, _ in _WHEEL_BITS}
    for text in codes.dictionary.to_pylist():
        try:
            byte = int(text[:2], 16) if text and len(text) >= 2 else None
        except ValueError:
            byte = None
        for name, mask in _WHEEL_BITS:
            bits[name].append(None if byte is None else bool(byte & mask))
    return {name: pa.array(v, pa.bool_()).take(codes.indices) for name, v in bits.items()}


def _frame_units(data: dict[str, pa.Array], recs: list[parse.Record], parts: list) -> list:
    """v9 columns, in place: J2735 units -> the units of v1..v8, wheel brakes from their hex
    text, transmission in ODE's upper case; returns `parts` with crumbs and path prediction
    converted likewise."""
    for name, unit in J2735_UNITS.items():
        data[name] = _j2735(data[name], *unit)
    data.update(_wheel_brakes([r.payload.data.value.BasicSafetyMessage.coreData.brakes.wheelBrakes for r in recs]))
    data["coreData_transmission"] = pc.utf8_upper(data["coreData_transmission"])
    crumbs, roc, conf, other = (list(c) for c in zip(*parts))
    roc = pa.array(roc, pa.float64())
    roc = pc.if_else(pc.equal(roc, float(RADIUS_STRAIGHT)), 0.0, _j2735(roc, 1, 10, None))
    return [crumbs, roc, _j2735(pa.array(conf, pa.float64()), 5, 10, None), other]


_TS_NS, _TS_MS = pa.timestamp("ns", tz="UTC"), pa.timestamp("ms", tz="UTC")


def _parse_times(raw: pa.Array | list) -> pa.Array:
    """ISO-8601 texts (`Z`, `Z[UTC]`, offsets, 0-9 fraction digits) -> timestamp[ms, UTC], floored
    to the millisecond; unparseable -> null.

    Arrow's C++ cast takes a well-formed batch at once. In a batch holding a text it refuses,
    pandas finds the parseable ones and Arrow still parses them when it can, so a text gets
    the same answer whatever batch it lands in; only texts pandas refuses (the bad ones, few)
    are tried one by one.
    """
    arr = raw if isinstance(raw, pa.Array) else pa.array(raw, type=pa.string())
    arr = pc.replace_substring(arr, "[UTC]", "")
    try:
        return _floor_ms(pc.cast(arr, _TS_NS))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    texts = arr.to_pylist()
    by_pandas = pd.to_datetime(pd.Series(texts, dtype="object"), utc=True, format="ISO8601", errors="coerce")
    ok = by_pandas.notna().to_numpy()
    try:  # Arrow's answer for every text pandas could read
        out = _floor_ms(pc.cast(pc.if_else(pa.array(ok), arr, pa.scalar(None, pa.string())), _TS_NS))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # texts only pandas reads (they agree where both do)
        out = pa.array(by_pandas.dt.floor("ms").astype("datetime64[ms, UTC]"), type=_TS_MS)
    found = {}
    for i in np.flatnonzero(~ok):  # Arrow may read what pandas refused
        if texts[i] is not None:
            try:
                found[i] = _floor_ms(pc.cast(pa.array([texts[i]], pa.string()), _TS_NS))[0]
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
    if not found:
        return out
    mask = np.zeros(len(out), bool)
    mask[list(found)] = True
    return pc.replace_with_mask(out, pa.array(mask), pa.array(list(found.values()), type=_TS_MS))


def _floor_ms(ns: pa.Array) -> pa.Array:
    return pc.cast(pc.floor_temporal(ns, unit="millisecond"), _TS_MS)


_NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"


def _to_float(values: pa.Array | list) -> pa.Array:
    """Receiver-side strings ("0", "41.1", "unavailable") -> float, null where not a finite
    number; the same answer for a text whatever batch it lands in."""
    if not isinstance(values, pa.Array):  # a batch where some receiver fields are JSON numbers
        values = pa.array([v if v is None or isinstance(v, str) else repr(float(v)) for v in values], pa.string())
    try:
        out = pc.cast(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        text = pc.utf8_trim_whitespace(values)
        out = pc.cast(
            pc.if_else(pc.match_substring_regex(text, _NUMBER), text, pa.scalar(None, pa.string())), pa.float64()
        )
    if out.null_count < len(out) and not pc.all(pc.is_finite(out)).as_py():
        out = pc.if_else(pc.is_finite(out), out, pa.scalar(None, pa.float64()))
    return out


def flatten(
    recs: list[parse.Record], source_object: str, lines: list[int], parts: list, frame: bool = False
) -> tuple[pa.Table, pa.Array, np.ndarray]:
    """Decoded BSM records of one shape and their `_part2` -> (canonical table, each row's
    record-time text as read (null where absent), the column name of the key it was read
    from). `frame`: v9 records (the J2735 frame, `_split_frame` parts, J2735 units)."""
    n = len(recs)
    if n == 0:
        return BSM_SCHEMA.empty_table(), pa.array([], pa.string()), np.zeros(0, object)
    rows = [_row_frame(r) for r in recs] if frame else [_row(r) for r in recs]
    try:  # one C++ pass over the row tuples
        columns = pa.array(rows, type=_ROW_TYPE).flatten()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # an odd value: column by column
        columns = [_safe_array(values, typ) for values, typ in zip(zip(*rows), _ROW_FIELD_TYPES)]
    data: dict[str, pa.Array] = {}
    for name, values in zip(_ROW_COLS[2:], columns[2:]):
        data[name] = _to_float(values) if name in _RMD_COLS else values
    raw_generated, raw_received = (c if isinstance(c, pa.Array) else pa.array(c, pa.string()) for c in columns[:2])
    # v7+ leaves recordGeneratedAt empty where the generation time is unknown: odeReceivedAt stands in
    version = data["metadata_schemaVersion"]
    fallback = pc.and_(
        raw_generated.is_null(),
        pc.fill_null(pc.greater_equal(version, pa.scalar(RECEIVED_FALLBACK_VERSION, version.type)), False),
    )
    has_fallback = pc.any(fallback).as_py()
    record_time = pc.if_else(fallback, raw_received, raw_generated) if has_fallback else raw_generated
    data["metadata_generatedAt"] = _parse_times(record_time)
    data["metadata_receivedAt"] = _parse_times(raw_received)
    fields = np.full(n, "metadata_recordGeneratedAt", dtype=object)  # v3+; v1 writes generatedAt
    source = pc.if_else(raw_generated.is_valid(), _FROM_RECORD, _NO_SOURCE)
    if has_fallback:
        fields[fallback.to_numpy(zero_copy_only=False)] = "metadata_odeReceivedAt"
        source = pc.if_else(pc.and_(fallback, raw_received.is_valid()), _FROM_RECEIVED, source)
    # only v1/v2 write generatedAt (v3 renamed it), so only they are looked at one by one
    old = pc.and_(raw_generated.is_valid(), pc.fill_null(pc.less(version, pa.scalar(3, version.type)), True))
    if pc.any(old).as_py():
        source = source.to_numpy(zero_copy_only=False).astype(object)
        for i in np.flatnonzero(old.to_numpy(zero_copy_only=False)):
            if not recs[i].metadata.recordGeneratedAt:
                fields[i], source[i] = "metadata_generatedAt", "generatedAt"
        source = pa.array(source, pa.string())
    data[TIME_SOURCE] = source
    if frame:
        parts = list(zip(*_frame_units(data, recs, parts)))
    for name, sentinel in SENTINELS.items():
        arr = data[name]
        data[name] = pc.if_else(pc.equal(arr, pa.scalar(sentinel, arr.type)), pa.scalar(None, arr.type), arr)
    p_crumbs, p_roc, p_conf, p_other = zip(*parts)
    crumbs = _crumb_array(list(p_crumbs))
    if frame:
        crumbs = _frame_crumbs(crumbs)
    data["partII_pathHistory_crumbData"] = crumbs
    data["partII_pathPrediction_radiusOfCurve"] = pa.array(p_roc, type=pa.float64())
    data["partII_pathPrediction_confidence"] = pa.array(p_conf, type=pa.float64())
    data["partII_other"] = pa.array(p_other, type=pa.string())
    data["source_object"] = pa.array([source_object] * n, type=pa.string())
    data["source_line"] = pa.array(lines, type=pa.int64())
    table = pa.Table.from_arrays([data[f.name] for f in BSM_SCHEMA], schema=BSM_SCHEMA)
    return table, record_time, fields


def _frame_crumbs(crumbs: pa.ListArray) -> pa.ListArray:
    """v9 crumbs: every offset from J2735 units, vectorized over the flat crumb values."""
    values = crumbs.values
    converted = [_j2735(values.field(f.name), *J2735_CRUMB_UNITS[f.name]) for f in CRUMB]
    flat = pa.StructArray.from_arrays(converted, fields=list(CRUMB))
    return pa.ListArray.from_arrays(crumbs.offsets, flat, mask=crumbs.is_null())


def _safe_array(values, typ: pa.DataType) -> pa.Array:
    """Integers beyond the column type (e.g. msgCnt 99999) are clipped to its limits, which
    the range rules still reject, instead of crashing the batch. Text columns that hold a
    number (receiver position as 41.1 instead of "41.1") stay as objects for `_to_float`."""
    if pa.types.is_string(typ):
        try:
            return pa.array(values, type=typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return list(values)
    try:
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, OverflowError):
        lim = np.iinfo(typ.to_pandas_dtype())
        clipped = [None if v is None else int(min(max(v, lim.min), lim.max)) for v in values]
        return pa.array(clipped, type=typ)
