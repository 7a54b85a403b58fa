"""data.transportation.gov CSV exports of the WYDOT BSM dataset (id 9k4m-a3jc) -> canonical schema.

Two flavours exist: the "Export > CSV" download (canonical mixed-case names,
times like `12/05/2018 02:04:58 PM`) and the SODA API CSV (lower-case names,
ISO-8601 times). Column names map case-insensitively onto `BSM_SCHEMA`;
`coreData_position` WKT `POINT (lon lat)` gives lat/long where those columns are
absent, and, row by row, where their cells are empty (a cell that holds text which
is not a number stays a `wrong_type`). One reason per fault: an unparseable
generatedAt is a `bad_timestamp` quoting its text, and an unreadable lat/long a
`wrong_type`, neither also a `wrong_type` or `missing_position`.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from wydot_lab import validate
from wydot_lab.ingest.results import IngestError, IngestResult, quarantine_table
from wydot_lab.schema import BSM_SCHEMA, NON_BSM_SCHEMA, QUARANTINE_SCHEMA, TS, conform

DOWNLOAD_TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
_BY_LOWER = {name.lower(): name for name in BSM_SCHEMA.names}
_WKT = re.compile(r"POINT\s*\(\s*(-?[\d.]+(?:[eE][-+]?\d+)?)\s+(-?[\d.]+(?:[eE][-+]?\d+)?)\s*\)")
_TRUE = {"true", "t", "1", "yes"}
_FALSE = {"false", "f", "0", "no"}


def _times(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parse either export's time text; returns (UTC times, mask of present-but-unparseable)."""
    s = values.str.replace("[UTC]", "", regex=False).str.strip()
    ms = "datetime64[ms, UTC]"
    t = pd.to_datetime(s, format=DOWNLOAD_TIME_FORMAT, utc=True, errors="coerce").astype(ms)
    iso = t.isna() & s.notna() & (s != "")
    if iso.any():
        t = t.where(~iso, pd.to_datetime(s.where(iso), format="ISO8601", utc=True, errors="coerce").astype(ms))
    present = s.notna() & (s != "")
    return t, (present & t.isna()).to_numpy()


def _column(values: pd.Series, typ: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Text -> typed Arrow column; returns the mask of present-but-unconvertible cells."""
    present = (values.notna() & (values.str.strip() != "")).to_numpy()
    if pa.types.is_string(typ):
        return pa.array(values.where(present, None), type=typ), np.zeros(len(values), bool)
    if pa.types.is_boolean(typ):
        low = values.str.strip().str.lower()
        out = pd.Series(pd.NA, index=values.index, dtype="boolean")
        out[low.isin(_TRUE)] = True
        out[low.isin(_FALSE)] = False
        return pa.array(out, type=typ), present & out.isna().to_numpy()
    num = pd.to_numeric(values.where(present, None), errors="coerce")
    bad = present & num.isna().to_numpy()
    if pa.types.is_integer(typ):
        frac = num.notna() & (num != np.floor(num.fillna(0)))
        bad |= frac.to_numpy()
        num = num.where(~frac)
        info = np.iinfo(typ.to_pandas_dtype())
        num = num.clip(info.min, info.max)
        return pa.array(num.astype("Int64"), type=pa.int64()).cast(typ), bad
    return pa.array(num, type=typ), bad


def ingest_csv(path: str | Path) -> IngestResult:
    """One CSV export -> IngestResult (records = data rows; blank rows are skipped by the CSV reader)."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.strip():
        return IngestResult(
            BSM_SCHEMA.empty_table(),
            QUARANTINE_SCHEMA.empty_table(),
            NON_BSM_SCHEMA.empty_table(),
            0,
            0,
            1,
            {},
            [(str(path), "empty_file")],
        )
    try:
        df = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise IngestError(f"{path}: not a readable CSV export ({str(err).splitlines()[0]})") from None
    header = list(df.columns)
    mapped = {c: _BY_LOWER[c.strip().lower()] for c in header if c.strip().lower() in _BY_LOWER}
    if "coreData_id" not in mapped.values():
        raise IngestError(
            f"{path}: no coreData_id column; is this a WYDOT BSM export? (columns: {', '.join(header[:6])}...)"
        )
    n = len(df)
    cols: dict[str, pa.Array] = {}
    wrong: dict[str, np.ndarray] = {}
    unreadable: dict[str, np.ndarray] = {}  # by canonical name: cells with text that is no value
    gen_present = np.zeros(n, bool)
    gen_text, gen_field = pa.nulls(n, pa.string()), "metadata_generatedAt"
    for src, name in mapped.items():
        typ = BSM_SCHEMA.field(name).type
        if typ == TS:
            t, bad = _times(df[src].astype("string"))
            cols[name] = pa.array(t.astype("datetime64[ms, UTC]"), type=TS)
            if name == "metadata_generatedAt":  # unparseable: bad_timestamp's, quoting the text
                gen_present = (df[src].notna() & (df[src].str.strip() != "")).to_numpy()
                gen_text, gen_field = pa.array(df[src], pa.string()), src
            elif bad.any():
                wrong[src] = bad
            continue
        if pa.types.is_list(typ):
            continue
        arr, bad = _column(df[src].astype("string"), typ)
        cols[name], unreadable[name] = arr, bad
        if bad.any():
            wrong[src] = bad
    wkt_col = next((c for c in header if c.strip().lower() == "coredata_position"), None)
    if wkt_col:
        xy = df[wkt_col].astype("string").str.extract(_WKT)
        for name, k in (("coreData_position_long", 0), ("coreData_position_lat", 1)):
            point = pa.array(pd.to_numeric(xy[k], errors="coerce"), pa.float64())
            if name not in cols:
                cols[name] = point
                continue
            empty = pc.and_(cols[name].is_null(), pa.array(~unreadable[name]))
            cols[name] = pc.if_else(empty, point, cols[name])
    cols["source_object"] = pa.array([str(path)] * n, pa.string())
    cols["source_line"] = pa.array(np.arange(2, n + 2), pa.int64())  # line 1 is the header
    canon = conform(pa.table(cols))
    errors, warnings = validate.check(canon, gen_present, unreadable)
    for src, mask in wrong.items():
        errors[f"wrong_type at {src}"] = mask
    bad, reasons = validate.reasons_per_row(errors, canon, gen_text, gen_field)
    buf_rows = []
    for i in np.flatnonzero(bad):
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(["" if v is None else v for v in df.iloc[i].tolist()])
        buf_rows.append(out.getvalue())
    quarantine = quarantine_table(str(path), (np.flatnonzero(bad) + 2).tolist(), buf_rows, reasons)
    rule_counts: dict[str, int] = {}
    for k, v in {**errors, **warnings}.items():
        key = validate.rule_name(k)
        rule_counts[key] = rule_counts.get(key, 0) + int(v.sum())
    valid = canon.filter(pa.array(~bad))
    return IngestResult(valid, quarantine, NON_BSM_SCHEMA.empty_table(), 0, n, 1, rule_counts, [])


def to_download_csv(table: pa.Table, path: str | Path, lower_case: bool = False) -> None:
    """Write canonical rows the way data.transportation.gov exports them (for tests and round trips)."""
    df = table.drop_columns(["partII_pathHistory_crumbData"]).to_pandas()
    for name in ("metadata_generatedAt", "metadata_receivedAt"):
        t = df[name]
        df[name] = (
            (t.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z")
            if lower_case
            else t.dt.strftime(DOWNLOAD_TIME_FORMAT)
        )
    df["coreData_position"] = (
        "POINT (" + df.coreData_position_long.astype(str) + " " + df.coreData_position_lat.astype(str) + ")"
    )
    if lower_case:
        df.columns = [c.lower() for c in df.columns]
    df.to_csv(path, index=False)
