"""ODE schema versions 7, 8 and 9 read into the one canonical schema (issue 21).

v7/v8 keep v6's shape and units; v9 is the J2735 message frame in raw integer units.
The samples are the real ODE / jpo-cvdp test records in test_data/real_wydot (SOURCES.md).
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from wydot_lab import ingest, validate
from wydot_lab.schema import BSM_SCHEMA

from conftest import REAL_DIR

V6 = REAL_DIR / "01_sandbox_sample_bsm_schemaVersion6.ndjson"
V7 = REAL_DIR / "10_jpo-ode_expected-bsm_schemaVersion7.ndjson"
V8 = REAL_DIR / "11_jpo-ode_expected-bsm_schemaVersion8.ndjson"
V9 = REAL_DIR / "12_jpo-cvdp_test-case.all.good_schemaVersion9.ndjson"
V9_CO = REAL_DIR / "13_jpo-cvdp_CO-Motorways_test_subset_schemaVersion9.ndjson"


def _v9() -> dict:
    return json.loads(V9.read_text().splitlines()[0])


def _core(rec: dict) -> dict:
    return rec["payload"]["data"]["value"]["BasicSafetyMessage"]["coreData"]


def _ingest(*recs: dict | bytes, **kw) -> ingest.IngestResult:
    lines = [r.strip() if isinstance(r, bytes) else json.dumps(r).encode() for r in recs]
    r = ingest.ingest_bytes(b"\n".join(lines) + b"\n", "x.ndjson", **kw)
    c = r.counts()
    assert c["records"] == c["valid"] + c["quarantined"] + c["non_bsm"] + c["blank"] == len(lines)
    return r


def _one(*recs, **kw) -> dict:
    r = _ingest(*recs, **kw)
    assert r.valid.num_rows == 1, r.quarantine_reasons()
    return r.valid.to_pylist()[0]


def test_v9_sample_reads_the_numbers_a_user_checks():
    """jpo-cvdp's sample: lat 359491100, speed 870, heading 17950 in J2735 units."""
    row = _one(V9.read_text().splitlines()[0].encode())
    assert row["metadata_schemaVersion"] == 9
    assert (row["coreData_position_lat"], row["coreData_position_long"]) == (35.94911, -83.928343)
    assert (row["coreData_speed"], row["coreData_heading"], row["coreData_elevation"]) == (17.4, 224.375, 1588.3)
    assert (row["coreData_accelset_accelLong"], row["coreData_accelset_accelLat"]) == (-6.13, 2.05)
    assert (row["coreData_accelset_accelVert"], row["coreData_accelset_accelYaw"]) == (1.14, 120.3)  # 57 * 0.02 g
    assert (row["coreData_accuracy_semiMajor"], row["coreData_accuracy_semiMinor"]) == (0.15, 10.2)
    assert row["coreData_accuracy_orientation"] == pytest.approx(61004 * 360 / 65535, abs=1e-5)
    assert (row["coreData_msgCnt"], row["coreData_id"], row["coreData_secMark"]) == (126, "4F435445", 48034)
    assert row["coreData_transmission"] == "REVERSEGEARS"  # ODE v6's spelling of J2735 reverseGears
    # wheelBrakes "20": JER hex of the 5-bit BrakeAppliedStatus, bit 2 = leftRear
    wheels = {k.rsplit("_", 1)[1]: v for k, v in row.items() if "wheelBrakes" in k}
    assert wheels == {
        "leftFront": False,
        "rightFront": False,
        "leftRear": True,
        "rightRear": False,
        "unavailable": False,
    }
    assert (row["coreData_brakes_traction"], row["coreData_brakes_brakeBoost"]) == ("off", "off")
    assert row["metadata_bsmSource"] == "EV" and row["metadata_payloadType"].endswith("OdeMessageFramePayload")
    crumbs = row["partII_pathHistory_crumbData"]
    assert crumbs[0] == {"latOffset": -0.012807, "lonOffset": 0.0012146, "elevationOffset": 187.1, "timeOffset": 299.72}
    assert (row["partII_pathPrediction_radiusOfCurve"], row["partII_pathPrediction_confidence"]) == (1367.1, 87.5)
    # recordGeneratedAt is "": the record time is odeReceivedAt, and the row says so
    assert row["metadata_generatedAt"] == row["metadata_receivedAt"]
    assert str(row["metadata_generatedAt"]) == "2025-08-13 08:56:24.285000+00:00"
    assert row["metadata_generatedAt_source"] == "odeReceivedAt"


def test_v9_unavailable_codes_in_real_records_are_nulls():
    """CO-Motorways sample: accelSet lat 2001, vert -127; crumbs' timeOffset 65535; a straight
    path (radiusOfCurve 32767) as ODE v6 wrote it (0.0); a SupplementalVehicleExtensions kept."""
    r = _ingest(*V9_CO.read_bytes().splitlines())
    first, second = r.valid.to_pylist()
    for row in (first, second):
        assert row["coreData_accelset_accelLat"] is None and row["coreData_accelset_accelVert"] is None
        assert row["coreData_brakes_wheelBrakes_unavailable"] is True  # "80"
    assert (first["coreData_position_lat"], first["coreData_speed"], first["coreData_heading"]) == (
        39.1874242,
        9.76,
        8.6,
    )
    assert [c["timeOffset"] for c in second["partII_pathHistory_crumbData"]] == [None] * 5
    assert second["partII_pathHistory_crumbData"][0]["latOffset"] == 0.0000385
    assert (second["partII_pathPrediction_radiusOfCurve"], second["partII_pathPrediction_confidence"]) == (0.0, 100.0)
    assert json.loads(second["partII_other"]) == [
        {
            "id": "SupplementalVehicleExtensions",
            "value": {"classification": 65, "classDetails": {"keyType": 65, "role": "ambulance"}},
        }
    ]


def test_every_j2735_unavailable_code_is_null_never_a_number():
    rec = _v9()
    core = _core(rec)
    core.update(
        elev=-4096,
        speed=8191,
        heading=28800,
        accuracy={"semiMajor": 255, "semiMinor": 255, "orientation": 65535},
        accelSet={"long": 2001, "lat": 2001, "vert": -127, "yaw": 0},
        secMark=65535,
    )
    vse = rec["payload"]["data"]["value"]["BasicSafetyMessage"]["partII"][0]["partII-Value"]["VehicleSafetyExtensions"]
    vse["pathHistory"]["crumbData"][0].update(
        latOffset=-131072, lonOffset=-131072, elevationOffset=-2048, timeOffset=65535
    )
    row = _one(rec)
    for col in (
        "coreData_elevation",
        "coreData_speed",
        "coreData_heading",
        "coreData_accuracy_semiMajor",
        "coreData_accuracy_semiMinor",
        "coreData_accuracy_orientation",
        "coreData_accelset_accelLong",
        "coreData_accelset_accelLat",
        "coreData_accelset_accelVert",
        "coreData_secMark",
    ):
        assert row[col] is None, col
    assert row["coreData_accelset_accelYaw"] == 0.0
    assert set(row["partII_pathHistory_crumbData"][0].values()) == {None}
    # an unavailable position is a missing position (its named reason), not an out-of-range number
    for lat, lon in ((900000001, -839283430), (359491100, 1800000001)):
        pos = _v9()
        _core(pos).update(lat=lat, long=lon)
        r = _ingest(pos)
        assert r.quarantine.column("reasons").to_pylist() == [["missing_position"]]


def test_v7_v8_pair_flattens_identically_apart_from_version_and_record_type():
    """The ODE's expected-bsm.json before and after its v7 -> v8 change: the same BSM."""
    a, b = _one(V7.read_bytes()), _one(V8.read_bytes())
    assert (a.pop("metadata_schemaVersion"), b.pop("metadata_schemaVersion")) == (7, 8)
    assert (a.pop("metadata_recordType"), b.pop("metadata_recordType")) == ("bsmLogDuringEvent", "bsmTx")
    ca, cb = a.pop("partII_pathHistory_crumbData"), b.pop("partII_pathHistory_crumbData")
    assert (
        ca is None
        and len(cb) == 15
        and cb[0] == {"latOffset": -0.0000113, "lonOffset": 0.0000181, "elevationOffset": -0.6, "timeOffset": 1.9}
    )
    for k in (
        "source_object",
        "partII_pathPrediction_radiusOfCurve",
        "partII_pathPrediction_confidence",
        "partII_other",
    ):
        a.pop(k), b.pop(k)
    assert a == b
    assert (a["coreData_position_lat"], a["coreData_speed"], a["coreData_heading"]) == (40.5659938, 0.28, 313.25)
    assert a["metadata_generatedAt_source"] == "odeReceivedAt"  # recordGeneratedAt "" in both


def test_v9_equals_the_same_bsm_written_as_v6():
    """One BSM, hand-written as v8 (v6's shape and units) and read from v9: every canonical column
    agrees (ODE v6 wrote J2735's values scaled to decimals, so the conversion must land on the
    same floats)."""
    v9 = _v9()
    v6 = json.loads(V6.read_text())
    v6["metadata"].update(schemaVersion=8, recordGeneratedAt="", odeReceivedAt=v9["metadata"]["odeReceivedAt"])
    v6["payload"]["data"]["coreData"] = {
        "msgCnt": 126,
        "id": "4F435445",
        "secMark": 48034,
        "position": {"latitude": 35.9491100, "longitude": -83.9283430, "elevation": 1588.3},
        "accelSet": {"accelLat": 2.05, "accelLong": -6.13, "accelVert": 1.14, "accelYaw": 120.30},
        "accuracy": {"semiMajor": 0.15, "semiMinor": 10.20, "orientation": 335.1100948916},
        "transmission": "REVERSEGEARS",
        "speed": 17.40,
        "heading": 224.3750,
        "brakes": {
            "wheelBrakes": {
                "leftFront": False,
                "rightFront": False,
                "unavailable": False,
                "leftRear": True,
                "rightRear": False,
            },
            "traction": "off",
            "abs": "unavailable",
            "scs": "unavailable",
            "brakeBoost": "off",
            "auxBrakes": "unavailable",
        },
        "size": {"width": 0, "length": 0},
    }
    v6["payload"]["data"]["partII"] = [
        {
            "id": "VehicleSafetyExtensions",
            "value": {
                "pathHistory": {
                    "crumbData": [
                        {
                            "elevationOffset": 187.1,
                            "latOffset": -0.0128070,
                            "lonOffset": 0.0012146,
                            "timeOffset": 299.72,
                        },
                        {
                            "elevationOffset": -83.6,
                            "latOffset": -0.0059950,
                            "lonOffset": -0.0128457,
                            "timeOffset": 574.19,
                        },
                        {
                            "elevationOffset": 81.7,
                            "latOffset": -0.0005906,
                            "lonOffset": -0.0065558,
                            "timeOffset": 115.18,
                        },
                    ]
                },
                "pathPrediction": {"confidence": 87.5, "radiusOfCurve": 1367.1},
            },
        }
    ]
    a, b = _one(v6), _one(v9)
    skip = {
        "metadata_payloadType",
        "metadata_serialId_streamId",
        "metadata_logFileName",
        "metadata_rmd_latitude",
        "metadata_rmd_longitude",
        "metadata_rmd_elevation",
        "metadata_rmd_speed",
        "metadata_rmd_heading",
        "metadata_rmd_rxSource",
        "metadata_sanitized",
        "metadata_securityResultCode",
        "metadata_bsmSource",
        "metadata_serialId_bundleSize",
        "metadata_serialId_bundleId",
        "metadata_serialId_recordId",
        "metadata_serialId_serialNumber",
        "metadata_recordType",
        "metadata_recordGeneratedBy",
        "metadata_schemaVersion",
    }
    differ = {k for k in BSM_SCHEMA.names if k not in skip and a[k] != b[k]}
    assert differ == set()


@pytest.mark.parametrize("raw, speed, kept", [(8190, 163.8, True), (8192, 163.84, False), (9000, 180.0, False)])
def test_speed_range_in_si_for_v9_exactly_as_for_v6(raw, speed, kept):
    """J2735 8190 is "163.8 m/s or more", the top of speed_range (0..163.8) in every version;
    above it fails speed_range, with the value in m/s, in v9 as in v6."""
    v9 = _v9()
    _core(v9)["speed"] = raw
    v6 = json.loads(V6.read_text())
    v6["payload"]["data"]["coreData"]["speed"] = speed
    got = [_ingest(rec) for rec in (v9, v6)]
    for r in got:
        assert (r.valid.num_rows == 1) is kept
        assert r.rule_counts["speed_range"] == (0 if kept else 1)
    if not kept:
        reasons = [r.quarantine.column("reasons").to_pylist() for r in got]
        assert reasons[0] == reasons[1] == [[f"speed_range {validate._num(speed)} (allowed 0..163.8)"]]


def test_v9_outside_wyoming_is_a_warning_like_any_other():
    r = _ingest(*V9.read_bytes().splitlines())  # Knoxville, TN: valid, counted under the warning
    assert (r.valid.num_rows, r.rule_counts["outside_wyoming"]) == (3, 3)
    inside = _v9()
    _core(inside).update(lat=412827318, long=-1055912184)  # I-80 near Laramie
    assert _ingest(inside).rule_counts["outside_wyoming"] == 0


def test_v9_time_source_and_bad_times():
    present = _v9()
    present["metadata"]["recordGeneratedAt"] = "2025-08-13T08:56:23.100Z"
    row = _one(present)
    assert row["metadata_generatedAt_source"] == "recordGeneratedAt"
    assert str(row["metadata_generatedAt"]) == "2025-08-13 08:56:23.100000+00:00"
    bad = _v9()
    bad["metadata"]["recordGeneratedAt"] = "08/13/2025 08:56:23 AM"  # present but unreadable: no fallback
    assert _ingest(bad).quarantine.column("reasons").to_pylist() == [
        ["bad_timestamp '08/13/2025 08:56:23 AM' at metadata_recordGeneratedAt"]
    ]
    neither = _v9()
    neither["metadata"]["odeReceivedAt"] = ""
    assert _ingest(neither).quarantine.column("reasons").to_pylist() == [["missing_generatedAt"]]
    late = _v9()
    late["metadata"]["odeReceivedAt"] = "13 Aug 2025"
    assert _ingest(late).quarantine.column("reasons").to_pylist() == [
        ["bad_timestamp '13 Aug 2025' at metadata_odeReceivedAt"]
    ]


def test_empty_record_time_falls_back_from_v7_only():
    """v1..v6 always wrote recordGeneratedAt, so an empty one stays missing there."""
    v6 = json.loads(V6.read_text())
    v6["metadata"]["recordGeneratedAt"] = ""
    assert _ingest(v6).quarantine_reasons() == {"missing_generatedAt": 1}
    v6["metadata"]["schemaVersion"] = 7
    assert _one(v6)["metadata_generatedAt_source"] == "odeReceivedAt"
    v6["metadata"]["schemaVersion"] = 6
    v6["metadata"]["recordGeneratedAt"] = "2018-05-06T20:26:28.690Z"
    assert _one(v6)["metadata_generatedAt_source"] == "recordGeneratedAt"


def test_v1_time_source_is_generated_at():
    row = _one((REAL_DIR / "00_sandbox_sample_wydot-filtered-bsm-1502840971677_schemaVersion1.ndjson").read_bytes())
    assert row["metadata_generatedAt_source"] == "generatedAt"


def test_mixed_versions_in_one_file_keep_line_order():
    lines = [
        V6.read_bytes().strip(),
        V9.read_bytes().splitlines()[0],
        V8.read_bytes().strip(),
        V9_CO.read_bytes().splitlines()[1],
        V6.read_bytes().strip(),
    ]
    r = _ingest(*lines)
    assert r.valid.column("source_line").to_pylist() == [1, 2, 3, 4, 5]
    assert r.valid.column("metadata_schemaVersion").to_pylist() == [6, 9, 8, 9, 6]
    alone = pa.concat_tables([_ingest(ln).valid for ln in lines])
    drop = ["source_line"]
    assert r.valid.drop(drop).equals(alone.drop(drop))
    # a bad record of either shape is set aside with its own line and text
    fast = _v9()
    _core(fast)["speed"] = 9000
    slow = json.loads(V6.read_text())
    slow["payload"]["data"]["coreData"]["speed"] = 180.0
    r = _ingest(lines[0], fast, lines[1], slow, lines[3])
    q = r.quarantine.to_pylist()
    assert [(x["source_line"], x["reasons"]) for x in q] == [
        (2, ["speed_range 180 (allowed 0..163.8)"]),
        (4, ["speed_range 180 (allowed 0..163.8)"]),
    ]
    assert [json.loads(x["line"]) for x in q] == [fast, slow]
    assert r.valid.column("source_line").to_pylist() == [1, 3, 5]


def test_unknown_newer_version_is_a_named_quarantine_reason_listing_the_supported():
    v10 = _v9()
    v10["metadata"]["schemaVersion"] = 10
    with pytest.raises(
        ingest.SchemaVersionError, match=r"x\.ndjson:1: unknown ODE schemaVersion 10 \(supported: 1\.\.9\)"
    ):
        _ingest(v10)
    r = _ingest(v10, _v9(), unknown_version="quarantine")
    assert r.quarantine.column("reasons").to_pylist() == [["unknown_schema_version 10 (supported: 1..9)"]]
    assert r.quarantine_reasons() == {"unknown_schema_version": 1} and r.valid.num_rows == 1


def test_other_v9_message_frames_are_non_bsm_by_type():
    rec = _v9()
    rec["payload"] = {
        "data": {"messageId": 18, "value": {"MapData": {"msgIssueRevision": 1}}},
        "dataType": "us.dot.its.jpo.asn.j2735.r2024.MapData.MapDataMessageFrame",
    }
    bsm_missing = _v9()
    del bsm_missing["payload"]["data"]["value"]["BasicSafetyMessage"]["coreData"]
    r = _ingest(rec, bsm_missing)
    assert r.non_bsm_types() == {"MapDataMessageFrame": 1}
    assert r.quarantine_reasons() == {"missing_coreData": 1}


def test_v9_wrong_types_are_named_not_crashes():
    rec = _v9()
    _core(rec)["speed"] = "unavailable"
    broken = _v9()
    _core(broken)["brakes"]["wheelBrakes"] = "zz"  # no hex: the five wheel columns are unknown, not False
    r = _ingest(rec, broken)
    assert r.quarantine_reasons() == {"wrong_type": 1}
    row = r.valid.to_pylist()[0]
    assert {row[k] for k in row if "wheelBrakes" in k} == {None}
