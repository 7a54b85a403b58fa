"""The one canonical flat BSM schema, named like the data.transportation.gov export.

Every module reads and writes frames of this schema; nothing else defines columns.
Units are those ODE v1..v8 emit (docs/DOMAIN.md section 2): deg, m, m/s, m/s^2, g, deg/s;
v9's raw J2735 integers are converted to them. Sentinels ("unavailable") are already nulls.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2  # bump when the columns below change (stored in cache manifests)

TS = pa.timestamp("ms", tz="UTC")

CRUMB = pa.struct(
    [
        ("latOffset", pa.float64()),
        ("lonOffset", pa.float64()),
        ("elevationOffset", pa.float64()),
        ("timeOffset", pa.float64()),
    ]
)

BSM_SCHEMA = pa.schema(
    [
        ("metadata_generatedAt", TS),  # recordGeneratedAt (v3+) or generatedAt (v1)
        ("metadata_receivedAt", TS),  # odeReceivedAt (v3+) or receivedAt (v1)
        # the key metadata_generatedAt was read from: recordGeneratedAt, generatedAt (v1) or,
        # where v7+ leaves recordGeneratedAt empty, odeReceivedAt; null from a CSV export
        ("metadata_generatedAt_source", pa.string()),
        ("metadata_recordType", pa.string()),
        ("metadata_schemaVersion", pa.int8()),
        ("metadata_bsmSource", pa.string()),
        ("metadata_sanitized", pa.bool_()),
        ("metadata_logFileName", pa.string()),
        ("metadata_securityResultCode", pa.string()),
        ("metadata_recordGeneratedBy", pa.string()),
        ("metadata_validSignature", pa.bool_()),
        ("metadata_payloadType", pa.string()),
        ("metadata_serialId_streamId", pa.string()),
        ("metadata_serialId_bundleSize", pa.int64()),
        ("metadata_serialId_bundleId", pa.int64()),
        ("metadata_serialId_recordId", pa.int64()),
        ("metadata_serialId_serialNumber", pa.int64()),
        ("metadata_rmd_latitude", pa.float64()),
        ("metadata_rmd_longitude", pa.float64()),
        ("metadata_rmd_elevation", pa.float64()),
        ("metadata_rmd_speed", pa.float64()),
        ("metadata_rmd_heading", pa.float64()),
        ("metadata_rmd_rxSource", pa.string()),
        ("coreData_msgCnt", pa.int16()),
        ("coreData_id", pa.string()),
        ("coreData_secMark", pa.int32()),  # 65535 -> null
        ("coreData_position_lat", pa.float64()),
        ("coreData_position_long", pa.float64()),
        ("coreData_elevation", pa.float64()),
        ("coreData_speed", pa.float64()),
        ("coreData_heading", pa.float64()),
        ("coreData_accelset_accelLong", pa.float64()),  # 2001 -> null
        ("coreData_accelset_accelLat", pa.float64()),  # 2001 -> null
        ("coreData_accelset_accelVert", pa.float64()),  # -127 -> null
        ("coreData_accelset_accelYaw", pa.float64()),
        ("coreData_accuracy_semiMajor", pa.float64()),
        ("coreData_accuracy_semiMinor", pa.float64()),
        ("coreData_accuracy_orientation", pa.float64()),
        ("coreData_transmission", pa.string()),
        ("coreData_brakes_wheelBrakes_leftFront", pa.bool_()),
        ("coreData_brakes_wheelBrakes_rightFront", pa.bool_()),
        ("coreData_brakes_wheelBrakes_leftRear", pa.bool_()),
        ("coreData_brakes_wheelBrakes_rightRear", pa.bool_()),
        ("coreData_brakes_wheelBrakes_unavailable", pa.bool_()),
        ("coreData_brakes_traction", pa.string()),
        ("coreData_brakes_abs", pa.string()),
        ("coreData_brakes_scs", pa.string()),
        ("coreData_brakes_brakeBoost", pa.string()),
        ("coreData_brakes_auxBrakes", pa.string()),
        ("coreData_size_width", pa.int32()),
        ("coreData_size_length", pa.int32()),
        ("partII_pathHistory_crumbData", pa.list_(CRUMB)),
        ("partII_pathPrediction_radiusOfCurve", pa.float64()),
        ("partII_pathPrediction_confidence", pa.float64()),
        ("partII_other", pa.string()),  # other partII elements, kept as their JSON text
        ("source_object", pa.string()),
        ("source_line", pa.int64()),  # 1-based line number within source_object
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("source_object", pa.string()),
        ("source_line", pa.int64()),
        ("line", pa.string()),  # the original text, so nothing is ever lost
        ("reasons", pa.list_(pa.string())),  # every failed rule or parse reason
    ]
)

NON_BSM_SCHEMA = pa.schema(
    [
        ("source_object", pa.string()),
        ("source_line", pa.int64()),
        ("record_type", pa.string()),  # payload dataType or metadata.recordType
        ("line", pa.string()),
    ]
)

SUPPORTED_SCHEMA_VERSIONS = frozenset(range(1, 10))  # 1..9
FRAME_SCHEMA_VERSION = 9  # from here ODE writes the J2735 message frame in raw integer units
RECEIVED_FALLBACK_VERSION = 7  # from here an empty recordGeneratedAt means "use odeReceivedAt"


def conform(table: pa.Table, schema: pa.Schema = BSM_SCHEMA) -> pa.Table:
    """Cast/reorder to `schema`, adding missing columns as nulls (so every writer agrees)."""
    cols = []
    for field in schema:
        if field.name in table.column_names:
            cols.append(table.column(field.name).cast(field.type))
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(cols, schema=schema)
