"""A block as the canonical BSM_SCHEMA table: exactly what ingest makes of its written NDJSON,
so `generate` needs no disk and no parse.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from wydot_lab.schema import CRUMB, conform
from wydot_lab.synth.block import Block
from wydot_lab.synth.defects import _NO_DEFECTS, Defects
from wydot_lab.synth.fleet import CRUMBS, SUPPLEMENTAL


def to_table(b: Block, bad: Defects = _NO_DEFECTS, version: int = 6) -> pa.Table:
    """The block in the canonical BSM_SCHEMA, exactly what ingest makes of its NDJSON written as
    `version`: the valid records, numbered by their line in an object that also holds the
    defect lines `bad`."""
    c, m = b.cols, b.meta
    n = len(m["t_ms"])
    ts = pa.array(m["t_ms"], pa.timestamp("ms", tz="UTC"))
    src = np.empty(n, dtype=object)
    line = np.empty(n, dtype=np.int64)
    for key, a, z in b.objects:
        src[a:z] = key
        line[a:z] = np.arange(1, z - a + 1)
        if len(bad.row):  # + the object's defect lines written after an earlier row
            line[a:z] += np.searchsorted(bad.row, np.arange(a, z)) - np.searchsorted(bad.row, a)
    cr = b.crumbs
    flat = pa.StructArray.from_arrays(
        [
            pa.array(cr["lat"].ravel()),
            pa.array(cr["lon"].ravel()),
            pa.array(cr["elev"].ravel()),
            pa.array(cr["time"].ravel()),
        ],
        fields=list(CRUMB),
    )
    crumbs = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * CRUMBS), flat)
    data = {
        "metadata_generatedAt": ts,
        "metadata_receivedAt": pa.array(m["received_ms"], pa.timestamp("ms", tz="UTC")),
        "metadata_generatedAt_source": pa.array(np.full(n, "recordGeneratedAt")),
        "metadata_recordType": pa.array(m["recordType"].astype(str)),
        "metadata_schemaVersion": pa.array(np.full(n, version, dtype=np.int8)),
        "metadata_bsmSource": pa.array(m["bsmSource"].astype(str)),
        "metadata_sanitized": pa.array(np.zeros(n, dtype=bool)),
        "metadata_logFileName": pa.array(m["logFileName"].astype(str)),
        "metadata_securityResultCode": pa.array(np.full(n, "success")),
        "metadata_recordGeneratedBy": pa.array(np.full(n, "OBU")),
        "metadata_payloadType": pa.array(
            np.full(n, "us.dot.its.jpo.ode.model." + ("OdeMessageFramePayload" if version == 9 else "OdeBsmPayload"))
        ),
        "metadata_serialId_streamId": pa.array(m["streamId"].astype(str)),
        "metadata_serialId_bundleSize": m["bundleSize"],
        "metadata_serialId_bundleId": m["bundleId"],
        "metadata_serialId_recordId": m["recordId"],
        "metadata_serialId_serialNumber": m["serialNumber"],
        "metadata_rmd_latitude": m["rmd_lat"],
        "metadata_rmd_longitude": m["rmd_lon"],
        "metadata_rmd_elevation": m["rmd_elev"],
        "metadata_rmd_speed": m["rmd_speed"],
        "metadata_rmd_heading": m["rmd_heading"],
        "metadata_rmd_rxSource": pa.array(m["rxSource"].astype(str)),
        **{k: (pa.array(v.astype(str)) if k == "coreData_id" else pa.array(v, from_pandas=True)) for k, v in c.items()},
        "coreData_transmission": pa.array(np.full(n, "NEUTRAL")),
        "coreData_brakes_wheelBrakes_leftFront": np.zeros(n, dtype=bool),
        "coreData_brakes_wheelBrakes_rightFront": np.zeros(n, dtype=bool),
        "coreData_brakes_wheelBrakes_leftRear": np.zeros(n, dtype=bool),
        "coreData_brakes_wheelBrakes_rightRear": np.zeros(n, dtype=bool),
        "coreData_brakes_wheelBrakes_unavailable": np.ones(n, dtype=bool),
        **{
            f"coreData_brakes_{k}": pa.array(np.full(n, "unavailable"))
            for k in ("traction", "abs", "scs", "brakeBoost", "auxBrakes")
        },
        "partII_pathHistory_crumbData": crumbs,
        "partII_other": pa.array(np.full(n, SUPPLEMENTAL)),
        "source_object": pa.array(src, pa.string()),
        "source_line": line,
    }
    return conform(
        pa.table({k: (v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v)) for k, v in data.items()})
    )
