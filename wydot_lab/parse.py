"""Typed msgspec decoding of ODE output lines (schema versions 1..9).

Two record shapes: v1..v8 put the BSM at `payload.data.{coreData, partII}` in the units
ODE converted it to (deg, m, m/s); v9 (`OdeMessageFramePayload`) puts the J2735 message
frame at `payload.data.value.BasicSafetyMessage`, in raw J2735 integer units, with partII
as `{partII-Id, partII-Value}`. Both decode in the one typed pass (`Data.value` is absent
from v1..v8 records, so their decode does not change); ingest converts the units.

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
    source: str | None = None  # v9: EV / RV (v4..v8 write it as bsmSource)
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


class VehicleSafetyExtensions(Struct, gc=False):
    pathHistory: PathHistory | None = None
    pathPrediction: PathPrediction | None = None


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


# ------------------------------------------------ v9: J2735 message frame in raw integer units


class AccelSet9(Struct, gc=False):
    long: float | None = None  # 0.01 m/s^2, 2001 = unavailable
    lat: float | None = None
    vert: float | None = None  # 0.02 g, -127 = unavailable
    yaw: float | None = None  # 0.01 deg/s


class Brakes9(Struct, gc=False):
    wheelBrakes: str | None = None  # BrakeAppliedStatus as JER hex: bits unavailable, LF, LR, RF, RR
    traction: str | None = None
    abs: str | None = None
    scs: str | None = None
    brakeBoost: str | None = None
    auxBrakes: str | None = None


class CoreData9(Struct, gc=False):
    msgCnt: int | None = None
    id: str | None = None
    secMark: int | None = None
    lat: float | None = None  # 1e-7 deg, 900000001 = unavailable
    long: float | None = None  # 1e-7 deg, 1800000001 = unavailable
    elev: float | None = None  # 0.1 m, -4096 = unavailable
    accuracy: Accuracy = field(default_factory=Accuracy)  # semi-axes 0.05 m (255), orientation 360/65535 deg (65535)
    transmission: str | None = None  # J2735 names: neutral, forwardGears, ...
    speed: float | None = None  # 0.02 m/s, 8191 = unavailable
    heading: float | None = None  # 0.0125 deg, 28800 = unavailable
    accelSet: AccelSet9 = field(default_factory=AccelSet9)
    brakes: Brakes9 = field(default_factory=Brakes9)
    size: Size = field(default_factory=Size)


class PartIIValue9(Struct, gc=False):
    """A v9 partII element's value: one key naming the extension. VehicleSafetyExtensions is
    typed (its crumbs and prediction in J2735 units); the other two are kept verbatim."""

    VehicleSafetyExtensions: VehicleSafetyExtensions | None = None
    SpecialVehicleExtensions: Raw = _ABSENT
    SupplementalVehicleExtensions: Raw = _ABSENT


class PartIIElement9(Struct, gc=False):
    id: int | None = field(default=None, name="partII-Id")  # 0 VSE, 1 special, 2 supplemental
    value: PartIIValue9 = field(default_factory=PartIIValue9, name="partII-Value")


class BasicSafetyMessage(Struct, gc=False):
    coreData: CoreData9 | None = None
    partII: list[PartIIElement9] | None = None


class FrameValue(Struct, gc=False):
    BasicSafetyMessage: BasicSafetyMessage | None = None  # other message frames: no key here


class Data(Struct, gc=False):
    coreData: CoreData | None = None
    partII: list[PartIIElement] | None = None
    value: FrameValue | None = None  # v9: {messageId, value: {BasicSafetyMessage: ...}}


class Payload(Struct, gc=False):
    dataType: str | None = None
    data: Data | None = None


class Record(Struct, gc=False):
    metadata: Metadata | None = None
    payload: Payload | None = None


VSE_IDS = frozenset({"VehicleSafetyExtensions", "VEHICLESAFETYEXT"})

record_decoder = msgspec.json.Decoder(Record)
any_decoder = msgspec.json.Decoder()

BSM_DATATYPE_SUFFIX = "J2735Bsm"
BSM_DATA_TYPE = "us.dot.its.jpo.ode.plugin.j2735.J2735Bsm"  # what ODE writes in v1..v6
BSM_PAYLOADTYPE_SUFFIX = "OdeBsmPayload"
FRAME_BSM_SUFFIX = "BasicSafetyMessageMessageFrame"  # v9 dataType: us.dot.its.jpo.asn.j2735.r2024...
FRAME_PAYLOADTYPE_SUFFIX = "OdeMessageFramePayload"  # v9: every message frame (BSM, TIM, MAP, ...)
VSE_PART2_ID = 0  # v9 partII-Id of VehicleSafetyExtensions


def _is_bsm_type(data_type: str | None, payload_type: str | None) -> bool | None:
    """True/False where the labels tell, None where nothing is labelled."""
    if data_type:
        return data_type.endswith(BSM_DATATYPE_SUFFIX) or data_type.endswith(FRAME_BSM_SUFFIX)
    if payload_type:
        return payload_type.endswith(BSM_PAYLOADTYPE_SUFFIX)  # an unlabelled message frame could be anything
    return None


def record_kind(rec: Record) -> str | None:
    """None for a BSM, else the short name of what the record is (TIM, ...)."""
    md, pl = rec.metadata, rec.payload
    data_type = pl.dataType if pl is not None else None
    payload_type = md.payloadType if md is not None else None
    if _is_bsm_type(data_type, payload_type) is not False:
        return None  # a BSM, or unlabelled: treated as a BSM and judged by validation
    if (
        not data_type
        and pl is not None
        and pl.data is not None
        and pl.data.value is not None
        and pl.data.value.BasicSafetyMessage is not None
    ):
        return None  # an unlabelled message frame that holds a BSM
    return (data_type or payload_type).rsplit(".", 1)[-1]


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
    if _is_bsm_type(data_type, payload_type) is False:
        return "non_bsm", name.rsplit(".", 1)[-1]
    msg = str(err)
    where = msg.rsplit(" - at ", 1)[-1] if " - at " in msg else ""
    return ("wrong_type" + (f" at {where}" if where else "")), None
