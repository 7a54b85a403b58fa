"""Typed msgspec decoding of ODE output lines (schema versions 1..6).

Why msgspec and not pyarrow's JSON reader: the typed decoder was ~2x faster per
core on these records, and pyarrow 26's reader can kill the process on hostile
null-heavy input (apache/arrow#47409, #51305). A msgspec decode of one line can
only raise, so every line is isolated: it parses, or it gets a named reason.
Structs are gc=False (no cycles), which keeps the GC out of big batches.
Every field is optional and nested structs default to empty, so attribute chains
never fail on `{}` or missing objects (v1/v3 `size: {}`, `accuracy: {}`).
"""
from __future__ import annotations

import msgspec
from msgspec import Raw, Struct, field

# ---------------------------------------------------------------- record model


class LocationData(Struct, omit_defaults=True, gc=False):
    latitude: str | float | None = None  # receiver position, strings in ODE ("0", "unavailable")
    longitude: str | float | None = None
    elevation: str | float | None = None
    speed: str | float | None = None
    heading: str | float | None = None


class ReceivedMessageDetails(Struct, gc=False):
    locationData: LocationData | None = None
    rxSource: str | None = None


class SerialId(Struct, gc=False):
    streamId: str | None = None
    bundleSize: int | None = None
    bundleId: int | None = None
    recordId: int | None = None
    serialNumber: int | None = None


class Metadata(Struct, gc=False):
    schemaVersion: int | None = None
    recordGeneratedAt: str | None = None  # v3+
    odeReceivedAt: str | None = None  # v3+
    generatedAt: str | None = None  # v1
    receivedAt: str | None = None  # v1
    recordType: str | None = None
    bsmSource: str | None = None
    sanitized: bool | None = None
    logFileName: str | None = None
    securityResultCode: str | None = None
    recordGeneratedBy: str | None = None
    validSignature: bool | None = None
    payloadType: str | None = None
    serialId: SerialId = field(default_factory=SerialId)
    receivedMessageDetails: ReceivedMessageDetails | None = None


class Position(Struct, gc=False):
    latitude: float | None = None
    longitude: float | None = None
    elevation: float | None = None


class AccelSet(Struct, gc=False):
    accelLong: float | None = None
    accelLat: float | None = None
    accelVert: float | None = None
    accelYaw: float | None = None


class Accuracy(Struct, gc=False):
    semiMajor: float | None = None
    semiMinor: float | None = None
    orientation: float | None = None


class WheelBrakes(Struct, gc=False):
    leftFront: bool | None = None
    rightFront: bool | None = None
    leftRear: bool | None = None
    rightRear: bool | None = None
    unavailable: bool | None = None


class Brakes(Struct, gc=False):
    wheelBrakes: WheelBrakes = field(default_factory=WheelBrakes)
    traction: str | None = None
    abs: str | None = None
    scs: str | None = None
    brakeBoost: str | None = None
    auxBrakes: str | None = None


class Size(Struct, gc=False):
    width: int | None = None
    length: int | None = None


class CoreData(Struct, gc=False):
    msgCnt: int | None = None
    id: str | None = None
    secMark: int | None = None
    position: Position = field(default_factory=Position)
    accelSet: AccelSet = field(default_factory=AccelSet)
    accuracy: Accuracy = field(default_factory=Accuracy)
    transmission: str | None = None
    speed: float | None = None
    heading: float | None = None
    brakes: Brakes = field(default_factory=Brakes)
    size: Size = field(default_factory=Size)


class Crumb(Struct, gc=False):
    latOffset: float | None = None
    lonOffset: float | None = None
    elevationOffset: float | None = None
    timeOffset: float | None = None


class PathHistory(Struct, gc=False):
    crumbData: list[Crumb] | None = None


class PathPrediction(Struct, gc=False):
    radiusOfCurve: float | None = None
    confidence: float | None = None


_ABSENT = Raw(b"")  # msgspec.Raw cannot sit in a union; empty means "key not present"


class PartIIValue(Struct, gc=False, omit_defaults=True):
    """Union of the J2735 partII extensions: VehicleSafetyExtensions is typed (that is what
    analysis uses); the members of the Special/Supplemental extensions are kept verbatim
    as raw JSON, so one decode covers the whole record and nothing is dropped."""

    pathHistory: PathHistory | None = None
    pathPrediction: PathPrediction | None = None
    events: Raw = _ABSENT
    lights: Raw = _ABSENT
    vehicleAlerts: Raw = _ABSENT
    description: Raw = _ABSENT
    trailers: Raw = _ABSENT
    classification: Raw = _ABSENT
    classDetails: Raw = _ABSENT
    vehicleData: Raw = _ABSENT
    weatherReport: Raw = _ABSENT
    weatherProbe: Raw = _ABSENT
    obstacle: Raw = _ABSENT
    status: Raw = _ABSENT
    speedProfile: Raw = _ABSENT
    theRTCM: Raw = _ABSENT
    regional: Raw = _ABSENT


class PartIIElement(Struct, gc=False):
    id: str | None = None
    value: PartIIValue = field(default_factory=PartIIValue)


class Data(Struct, gc=False):
    coreData: CoreData | None = None
    partII: list[PartIIElement] | None = None


class Payload(Struct, gc=False):
    dataType: str | None = None
    data: Data | None = None


class Record(Struct, gc=False):
    metadata: Metadata | None = None
    payload: Payload | None = None


class VehicleSafetyExtensions(Struct, gc=False):
    pathHistory: PathHistory | None = None
    pathPrediction: PathPrediction | None = None


VSE_IDS = frozenset({"VehicleSafetyExtensions", "VEHICLESAFETYEXT"})

record_decoder = msgspec.json.Decoder(Record)
any_decoder = msgspec.json.Decoder()

BSM_DATATYPE_SUFFIX = "J2735Bsm"
BSM_DATA_TYPE = "us.dot.its.jpo.ode.plugin.j2735.J2735Bsm"  # what ODE writes in v1..v6
BSM_PAYLOADTYPE_SUFFIX = "OdeBsmPayload"


def record_kind(rec: Record) -> str | None:
    """None for a BSM, else the short name of what the record is (TIM, ...)."""
    md, pl = rec.metadata, rec.payload
    data_type = pl.dataType if pl is not None else None
    payload_type = md.payloadType if md is not None else None
    if data_type and data_type.endswith(BSM_DATATYPE_SUFFIX):
        return None
    if data_type is None and payload_type and payload_type.endswith(BSM_PAYLOADTYPE_SUFFIX):
        return None
    if data_type is None and payload_type is None:
        return None  # unlabelled: treated as a BSM and judged by validation
    name = data_type or payload_type
    return name.rsplit(".", 1)[-1]


def classify_failure(line: bytes, err: Exception) -> tuple[str, str | None]:
    """Why a line failed the typed decode: (reason, non-BSM type or None).

    Runs only on failing lines, so the generic decode here is off the hot path.
    """
    try:
        obj = any_decoder.decode(line)
    except msgspec.DecodeError as e:
        return f"not_json ({e})", None
    except RecursionError:
        return "not_json (nested too deep)", None
    if not isinstance(obj, dict):
        return "not_object", None
    md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    pl = obj.get("payload") if isinstance(obj.get("payload"), dict) else {}
    data_type = pl.get("dataType") if isinstance(pl.get("dataType"), str) else None
    payload_type = md.get("payloadType") if isinstance(md.get("payloadType"), str) else None
    name = data_type or payload_type
    if name and not (name.endswith(BSM_DATATYPE_SUFFIX) or name.endswith(BSM_PAYLOADTYPE_SUFFIX)):
        return "non_bsm", name.rsplit(".", 1)[-1]
    msg = str(err)
    where = msg.rsplit(" - at ", 1)[-1] if " - at " in msg else ""
    return ("wrong_type" + (f" at {where}" if where else "")), None
