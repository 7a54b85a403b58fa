"""The column-wise JSON record writer for ODE v6..v9: a fixed-width template per record and
every field formatted once for a whole block, so writing stays fast in pure numpy.
"""

from __future__ import annotations

import functools

import numpy as np

from wydot_lab import ingest
from wydot_lab.synth.block import Block
from wydot_lab.synth.fleet import CRUMBS, EPOCH, SUPPLEMENTAL

# A record is a fixed-width template row (the constant JSON text) with a slot per field. Each
# field is formatted once for the whole block, column-wise, from a 4-digit lookup table; NUL
# bytes pad a number on its left only where it is shorter than the widest value of the block,
# so few NULs remain, and one bytes.replace per chunk (cost ~ number of NULs) drops them.
# Chunks of rows keep the template matrix in cache.
CHUNK_ROWS = 1024
_MINUS, _DOT = ord("-"), ord(".")


@functools.cache
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
    return quads.view(np.uint8)[:, 4 * nch - width :]


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
    parts = (
        [] if neg is None else [np.where(neg, _MINUS, 0).astype(np.uint8)[:, None]]
    )  # NULs between "-" and digits go
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
    block = np.concatenate(
        [
            p if isinstance(p, np.ndarray) else np.broadcast_to(np.frombuffer(p, np.uint8), (len(v), len(p)))
            for p in parts
        ],
        axis=1,
    )
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
    return [
        ymd[:, :4],
        b"-",
        ymd[:, 4:6],
        b"-",
        ymd[:, 6:],
        b"T",
        hms[:, :2],
        b":",
        hms[:, 2:4],
        b":",
        hms[:, 4:6],
        b".",
        hms[:, 6:],
        b"Z",
    ]


_BRAKES = (
    b'"brakes":{"wheelBrakes":{"leftFront":false,"rightFront":false,"unavailable":true,'
    b'"leftRear":false,"rightRear":false},"traction":"unavailable","abs":"unavailable",'
    b'"scs":"unavailable","brakeBoost":"unavailable","auxBrakes":"unavailable"}'
)


def _decimals(c: dict) -> tuple:
    """Position, speed and heading as ODE's decimals (coreData of v6..v8, the receiver's in all)."""
    return (
        _num(c["coreData_position_lat"], 2, 7),
        _num(c["coreData_position_long"], 3, 7),
        _num(c["coreData_elevation"], 4, 1),
        _num(c["coreData_speed"], 2, 2, signed=False),
        _num(c["coreData_heading"], 3, 4, signed=False),
    )


def _metadata_head(m: dict, payload_type: str) -> list:
    """The metadata every version writes alike, from logFileName to the odeReceivedAt text; the
    logger's "received" location block (the sender's own values in its bsmTx log, the receiver's
    in an rxMsg copy)."""
    lat, lon, elev, speed, heading = (
        _num(m["rmd_lat"], 2, 7),
        _num(m["rmd_lon"], 3, 7),
        _num(m["rmd_elev"], 4, 1),
        _num(m["rmd_speed"], 2, 2, signed=False),
        _num(m["rmd_heading"], 3, 4, signed=False),
    )
    return [
        b'"logFileName":"',
        _text(m["logFileName"]),
        b'","recordType":"',
        _text(m["recordType"]),
        b'","securityResultCode":"success","receivedMessageDetails":{"locationData":{"latitude":"',
        lat,
        b'","longitude":"',
        lon,
        b'","elevation":"',
        elev,
        b'","speed":"',
        speed,
        b'","heading":"',
        heading,
        b'"},"rxSource":"',
        _text(m["rxSource"]),
        b'"},"payloadType":"us.dot.its.jpo.ode.model.%s","serialId":{"streamId":"' % payload_type.encode(),
        _text(m["streamId"]),
        b'","bundleSize":',
        _num(m["bundleSize"], 5, signed=False),
        b',"bundleId":',
        _num(m["bundleId"], 4, signed=False),
        b',"recordId":',
        _num(m["recordId"], 5, signed=False),
        b',"serialNumber":',
        _num(m["serialNumber"], 9, signed=False),
        b'},"odeReceivedAt":"',
        *_iso(m["received_ms"]),
    ]


def _record_parts(c: dict, m: dict, cr: dict, version: int = 6, grid: bool = False) -> list:
    """One bsmTx record of `version`, key order as ODE writes it, as constant bytes and (n, w)
    field blocks; `grid`: orientation on J2735's steps, written with ODE's 10 decimals."""
    if version == 9:
        return _record_parts_v9(c, m, cr)
    lat, lon, elev, speed, heading = _decimals(c)
    parts = [
        b'{"metadata":{"bsmSource":"',
        _text(m["bsmSource"]),
        b'",',
        *_metadata_head(m, "OdeBsmPayload"),
        b'","schemaVersion":%d,' % version,
        b'"maxDurationTime":0,' if version >= 7 else b"",
        b'"recordGeneratedAt":"',
        *_iso(m["t_ms"]),
        b'","recordGeneratedBy":"OBU","sanitized":false',
        b',"odePacketID":"","odeTimStartDateTime":""' if version >= 7 else b"",
        b'},"payload":{"dataType":"us.dot.its.jpo.ode.plugin.j2735.J2735Bsm","data":{"coreData":{"msgCnt":',
        _num(c["coreData_msgCnt"], 3, signed=False),
        b',"id":"',
        _text(c["coreData_id"]),
        b'","secMark":',
        _num(c["coreData_secMark"], 5, signed=False),
        b',"position":{"latitude":',
        lat,
        b',"longitude":',
        lon,
        b',"elevation":',
        elev,
        b'},"accelSet":{"accelLat":',
        _num(c["coreData_accelset_accelLat"], 2, 2),
        b',"accelLong":',
        _num(c["coreData_accelset_accelLong"], 2, 2),
        b',"accelVert":',
        _num(c["coreData_accelset_accelVert"], 1, 2),
        b',"accelYaw":',
        _num(c["coreData_accelset_accelYaw"], 3, 2),
        b'},"accuracy":{"semiMajor":',
        _num_or_null(c["coreData_accuracy_semiMajor"], 2, 2),
        b',"semiMinor":',
        _num_or_null(c["coreData_accuracy_semiMinor"], 2, 2),
        b',"orientation":',
        _num(c["coreData_accuracy_orientation"], 3, 10 if grid else 4, signed=False),
        b'},"transmission":"NEUTRAL","speed":',
        speed,
        b',"heading":',
        heading,
        b",",
        _BRAKES,
        b',"size":{"width":',
        _num(c["coreData_size_width"], 4, signed=False),
        b',"length":',
        _num(c["coreData_size_length"], 4, signed=False),
        b'}},"partII":[{"id":"VehicleSafetyExtensions","value":{"pathHistory":{"crumbData":[',
    ]
    for j in range(CRUMBS):  # column by column: each crumb's own widest value sets its width
        parts += [
            b'{"elevationOffset":' if j == 0 else b',{"elevationOffset":',
            _num(cr["elev"][:, j], 3, 1),
            b',"latOffset":',
            _num(cr["lat"][:, j], 1, 7),
            b',"lonOffset":',
            _num(cr["lon"][:, j], 1, 7),
            b',"timeOffset":',
            _num(cr["time"][:, j], 3, 2, signed=False),
            b"}",
        ]
    parts += [
        b']},"pathPrediction":{"confidence":',
        _num(c["partII_pathPrediction_confidence"], 3, 1, signed=False),
        b',"radiusOfCurve":',
        _num(c["partII_pathPrediction_radiusOfCurve"], 4, 1),
        b"}}},",
        SUPPLEMENTAL[1:-1].encode(),
        b"]}}}\n",
    ]
    return parts


# J2735 integer ranges the v9 writer checks (a value outside cannot be written as v9)
_J2735_RANGE = {
    "coreData_position_lat": (-900000000, 900000000),
    "coreData_position_long": (-1799999999, 1800000000),
    "coreData_elevation": (-4095, 61439),
    "coreData_speed": (0, 8190),
    "coreData_heading": (0, 28799),
    "coreData_accelset_accelLong": (-2000, 2000),
    "coreData_accelset_accelLat": (-2000, 2000),
    "coreData_accelset_accelVert": (-126, 127),
    "coreData_accelset_accelYaw": (-32767, 32767),
    "coreData_accuracy_semiMajor": (0, 254),
    "coreData_accuracy_semiMinor": (0, 254),
    "coreData_accuracy_orientation": (0, 65534),
    "latOffset": (-131071, 131071),
    "lonOffset": (-131071, 131071),
    "elevationOffset": (-2047, 2047),
    "timeOffset": (1, 65534),
}


def _j2735_int(values: np.ndarray, name: str, unit: tuple[int, int, int | None]) -> np.ndarray:
    """Values in ODE v6 units -> J2735 integers (the inverse of ingest's reading)."""
    times, divided_by, _ = unit
    raw = np.rint(np.asarray(values, dtype=np.float64) * divided_by / times).astype(np.int64)
    lo, hi = _J2735_RANGE[name]
    if len(raw) and (raw.min() < lo or raw.max() > hi):
        bad = raw[(raw < lo) | (raw > hi)][0]
        raise ValueError(
            f"{name} {bad * times / divided_by} is outside J2735's range ({lo}..{hi} x {times}/{divided_by}):"
            " schemaVersion 9 cannot carry it (path history: a higher rate_hz shortens it)"
        )
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
        b'{"metadata":{',
        *_metadata_head(m, "OdeMessageFramePayload"),
        b'","schemaVersion":9,"maxDurationTime":0,"recordGeneratedAt":"',
        *_iso(m["t_ms"]),
        b'","recordGeneratedBy":"OBU","sanitized":false,"odePacketID":"","odeTimStartDateTime":"","source":"',
        _text(m["bsmSource"]),
        b'"},"payload":{"data":{"messageId":20,"value":{"BasicSafetyMessage":{"coreData":{"msgCnt":',
        _num(c["coreData_msgCnt"], 3, signed=False),
        b',"id":"',
        _text(c["coreData_id"]),
        b'","secMark":',
        _num(c["coreData_secMark"], 5, signed=False),
        b',"lat":',
        num["coreData_position_lat"],
        b',"long":',
        num["coreData_position_long"],
        b',"elev":',
        num["coreData_elevation"],
        b',"accuracy":{"semiMajor":',
        num["coreData_accuracy_semiMajor"],
        b',"semiMinor":',
        num["coreData_accuracy_semiMinor"],
        b',"orientation":',
        num["coreData_accuracy_orientation"],
        b'},"transmission":"neutral","speed":',
        num["coreData_speed"],
        b',"heading":',
        num["coreData_heading"],
        b',"accelSet":{"long":',
        num["coreData_accelset_accelLong"],
        b',"lat":',
        num["coreData_accelset_accelLat"],
        b',"vert":',
        num["coreData_accelset_accelVert"],
        b',"yaw":',
        num["coreData_accelset_accelYaw"],
        b'},"brakes":{"wheelBrakes":"80","traction":"unavailable","abs":"unavailable","scs":"unavailable",'
        b'"brakeBoost":"unavailable","auxBrakes":"unavailable"},"size":{"width":',
        _num(c["coreData_size_width"], 4, signed=False),
        b',"length":',
        _num(c["coreData_size_length"], 4, signed=False),
        b'}},"partII":[{"partII-Id":0,"partII-Value":{"VehicleSafetyExtensions":{"pathHistory":{"crumbData":[',
    ]
    crumbs = {
        name: _j2735_int(cr[key], name, crumb_units[name])
        for key, name in (
            ("lat", "latOffset"),
            ("lon", "lonOffset"),
            ("elev", "elevationOffset"),
            ("time", "timeOffset"),
        )
    }
    for j in range(CRUMBS):
        parts += [
            b'{"latOffset":' if j == 0 else b',{"latOffset":',
            _num(crumbs["latOffset"][:, j], 6),
            b',"lonOffset":',
            _num(crumbs["lonOffset"][:, j], 6),
            b',"elevationOffset":',
            _num(crumbs["elevationOffset"][:, j], 4),
            b',"timeOffset":',
            _num(crumbs["timeOffset"][:, j], 5, signed=False),
            b"}",
        ]
    parts += [
        b']},"pathPrediction":{"radiusOfCurve":',
        _num(radius, 5),
        b',"confidence":',
        _num(np.rint(c["partII_pathPrediction_confidence"] * 2).astype(np.int64), 3, signed=False),
        b'}}}},{"partII-Id":2,"partII-Value":{"SupplementalVehicleExtensions":{}}}]}}},'
        b'"dataType":"us.dot.its.jpo.asn.j2735.r2024.BasicSafetyMessage.BasicSafetyMessageMessageFrame"}}\n',
    ]
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
    pairs = [
        (mat[:, off : off + f.shape[1]].view(f"V{f.shape[1]}")[:, 0], f.view(f"V{f.shape[1]}")[:, 0])
        for off, f in slots
    ]

    def rows(start, stop):
        for a in range(start, stop, CHUNK_ROWS):
            z = min(stop, a + CHUNK_ROWS)
            mat[: z - a] = row
            for dst, src in pairs:
                dst[: z - a] = src[a:z]
            yield (buf if z - a == len(mat) else buf[: (z - a) * len(row)]).replace(b"\x00", b"")

    for start, stop in ranges if ranges is not None else [(0, n)]:
        yield rows(start, stop)
