"""Named, vectorized validation rules over canonical columns (docs/DOMAIN.md section 2).

A record failing any *error* rule goes to quarantine with every rule it failed;
*warning* rules (outside Wyoming) are counted but keep the record valid, since
real test-drive data from Colorado is genuine. Like every rule, a warning is
counted over all records checked, and only for what it is about: a position out
of range counts under lat_range/long_range, not also as outside Wyoming.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# (column, low, high) inclusive; nulls pass (they are "unavailable", not wrong)
RANGES: dict[str, tuple[str, float, float]] = {
    "msgCnt_range": ("coreData_msgCnt", 0, 127),
    "secMark_range": ("coreData_secMark", 0, 60999),
    "lat_range": ("coreData_position_lat", -90.0, 90.0),
    "long_range": ("coreData_position_long", -180.0, 180.0),
    "elevation_range": ("coreData_elevation", -409.5, 6143.9),
    "speed_range": ("coreData_speed", 0.0, 163.8),
    "heading_range": ("coreData_heading", 0.0, 359.9875),
    "accelLong_range": ("coreData_accelset_accelLong", -20.0, 20.0),
    "accelLat_range": ("coreData_accelset_accelLat", -20.0, 20.0),
    "accelYaw_range": ("coreData_accelset_accelYaw", -327.67, 327.67),
    "semiMajor_range": ("coreData_accuracy_semiMajor", 0.0, 12.75),
    "semiMinor_range": ("coreData_accuracy_semiMinor", 0.0, 12.75),
    "orientation_range": ("coreData_accuracy_orientation", 0.0, 360.0),
    "width_range": ("coreData_size_width", 0, 1023),
    "length_range": ("coreData_size_length", 0, 4095),
}


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


# the one column each value rule checks, and what it allows (quarantine reasons quote both)
VALUE_RULES: dict[str, tuple[str, str]] = {
    **{rule: (col, f"(allowed {_num(lo)}..{_num(hi)})") for rule, (col, lo, hi) in RANGES.items()},
    "id_format": ("coreData_id", "(8 hex digits)"),
}

# Wyoming's bounding box; I-80 runs through its south (a warning only)
WYOMING = {"lat": (40.99, 45.01), "long": (-111.06, -104.05)}
QUOTE_MAX = 40  # characters of a text value a reason quotes


def _quote(text: str) -> str:
    return repr(text if len(text) <= QUOTE_MAX else text[:QUOTE_MAX] + "...")


def _np(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(arr.to_numpy(zero_copy_only=False))


def _true(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Arrow boolean with nulls -> numpy bool, null counting as False."""
    return _np(pc.fill_null(mask, False)).astype(bool)


def check(
    table: pa.Table, generated_raw_present: np.ndarray | None = None, unreadable: dict[str, np.ndarray] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Evaluate every rule; returns (error masks, warning masks), True = rule failed.

    generated_raw_present: rows whose generatedAt *text* existed, which tells a missing
    timestamp from an unparseable one (None: all present, e.g. for already-typed tables).
    unreadable: {column: cells whose text was no value of its type} (a CSV's wrong_type,
    reported by the reader): null there is that fault, not also a missing value.
    Parse-level reasons (not_json, missing_coreData, ...) are the parser's, not rules here."""
    n = table.num_rows
    if generated_raw_present is None:
        generated_raw_present = np.ones(n, bool)
    unreadable = unreadable or {}

    def missing(col: str) -> np.ndarray:
        return _true(pc.is_null(table.column(col))) & ~unreadable.get(col, np.zeros(n, bool))

    errors: dict[str, np.ndarray] = {}
    cid = table.column("coreData_id")
    errors["missing_id"] = missing("coreData_id")
    errors["id_format"] = _true(pc.invert(pc.match_substring_regex(cid, r"^[0-9A-Fa-f]{8}$")))
    lat, lon = table.column("coreData_position_lat"), table.column("coreData_position_long")
    errors["missing_position"] = missing("coreData_position_lat") | missing("coreData_position_long")
    gen_null = _true(pc.is_null(table.column("metadata_generatedAt")))
    errors["missing_generatedAt"] = ~generated_raw_present
    errors["bad_timestamp"] = generated_raw_present & gen_null
    for rule, (col, lo, hi) in RANGES.items():
        c = table.column(col)
        errors[rule] = _true(pc.or_(pc.less(c, lo), pc.greater(c, hi)))
    # a position: a place outside Wyoming; a position out of range counts under its range rule only
    outside = _true(
        pc.or_(
            pc.or_(pc.less(lat, WYOMING["lat"][0]), pc.greater(lat, WYOMING["lat"][1])),
            pc.or_(pc.less(lon, WYOMING["long"][0]), pc.greater(lon, WYOMING["long"][1])),
        )
    )
    warnings = {"outside_wyoming": outside & ~errors["lat_range"] & ~errors["long_range"]}
    for m in (*errors.values(), *warnings.values()):
        assert m.shape == (n,)
    return errors, warnings


RULE_END = " "  # a reason is its rule name, then (after this) what the rule saw


def rule_name(reason: str) -> str:
    """The rule a quarantine reason names: "wrong_type at `$.x`" and "unknown_schema_version 9"
    count under "wrong_type" and "unknown_schema_version"."""
    return reason.split(RULE_END, 1)[0]


def _rules(reasons: pa.Array) -> pa.Array:
    """`rule_name` of every reason, in Arrow (reasons carry values, so nearly every one is distinct)."""
    return pc.list_element(pc.split_pattern(reasons, RULE_END, max_splits=1), 0)


def reason_rules(quarantine: pa.Table) -> pd.DataFrame:
    """One row per (quarantined record, reason): `row` (record index), `reason`, `rule`."""
    reasons = quarantine.column("reasons")
    flat = pc.list_flatten(reasons)
    return pd.DataFrame(
        {
            "row": pc.list_parent_indices(reasons).to_numpy(),
            "reason": flat.to_numpy(zero_copy_only=False),
            "rule": _rules(flat).to_numpy(zero_copy_only=False),
        }
    )


def reason_counts(quarantine: pa.Table) -> dict[str, int]:
    """Records per rule (a record failing two rules counts under both)."""
    counts = pc.value_counts(_rules(pc.list_flatten(quarantine.column("reasons"))))
    return {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}


def examples(quarantine: pa.Table, per_rule: int = 1, width: int = 100) -> pd.DataFrame:
    """The first `per_rule` quarantined lines of every rule (the full reason, file name, line
    number, and `width` characters of the text where the rule looked: around the field it
    names, the end of a cut line): what each rule caught, at a glance; a line failing
    several rules shows under each."""
    hits = reason_rules(quarantine)
    hits = hits.groupby("rule", sort=True).head(per_rule).sort_values("rule", kind="stable")
    rows = pa.array(hits["row"].to_numpy())
    texts = quarantine.column("line").take(rows).to_pylist()
    excerpt = [
        _excerpt(t or "", _focus(rule, reason), width) for t, rule, reason in zip(texts, hits["rule"], hits["reason"])
    ]
    files = quarantine.column("source_object").take(rows).to_numpy(zero_copy_only=False)
    return pd.DataFrame(
        {
            "rule": hits["rule"].to_numpy(),
            "reason": hits["reason"].to_numpy(),
            "file": [str(f).rsplit("/", 1)[-1] for f in files],
            "line": quarantine.column("source_line").take(rows).to_numpy(),
            "text": excerpt,
        }
    )


# the JSON path a rule is about, where it checks no single column
_PATHS = {
    "missing_id": "coreData",
    "missing_position": "coreData",
    "bad_timestamp": "metadata_recordGeneratedAt",
    "missing_generatedAt": "metadata",
    "unknown_schema_version": "metadata_schemaVersion",
    "missing_coreData": "payload_data",
}


def _focus(rule: str, reason: str) -> list[str] | str | None:
    """Where a rule looked in a line: its JSON path (keys in order), "$" for the end of a cut
    line, None for the start."""
    if rule == "not_json":
        return "$" if "truncated" in reason else None
    if rule == "wrong_type" and "`" in reason:
        return reason.split("`")[1].lstrip("$.").split(".")
    if rule == "bad_timestamp" and " at " in reason:  # the field it names: the one it was read from
        return reason.rsplit(" at ", 1)[1].split("_")
    path = _PATHS.get(rule) or VALUE_RULES.get(rule, (None,))[0]
    return path.split("_") if path else None


def _excerpt(text: str, focus: list[str] | str | None, width: int) -> str:
    """`width` characters of `text` from a little before `focus`, with "..." where cut. Keys are
    found in path order, case-insensitively, whole or else by prefix (column `lat` is key `latitude`),
    so coreData's heading is not mistaken for the receiver's."""
    at = 0
    if focus == "$":
        at = len(text)
    elif focus:
        low = text.lower()
        for key in focus:
            found = low.find(f'"{key.lower()}"', at)
            found = found if found >= 0 else low.find('"' + key.lower(), at)
            if found < 0:
                break
            at = found
    start = max(0, min(at - width // 4, len(text) - width))
    out = text[start : start + width]
    return ("..." if start else "") + out + ("..." if start + width < len(text) else "")


def reasons_per_row(
    errors: dict[str, np.ndarray],
    table: pa.Table,
    generated_text: pa.Array | None = None,
    generated_field: str | np.ndarray = "metadata_generatedAt",
) -> tuple[np.ndarray, list[list[str]]]:
    """(bad mask, the failed rules of each bad row, in row order), from the masks of `check` on
    `table`; a range or id rule says what it saw: "speed_range 900 (allowed 0..163.8)" (`rule_name`
    still reads "speed_range"), so a quarantined record explains itself. The table holds no
    text of an unparseable time: given `generated_text` (each row's generatedAt text as read)
    and `generated_field` (where it was read: one name, or one per row), bad_timestamp says
    "bad_timestamp '04/01/2021 10:00:00 AM' at metadata_recordGeneratedAt"."""
    names = list(errors)
    stacked = np.column_stack([errors[k] for k in names]) if names else np.zeros((0, 0), bool)
    bad = stacked.any(axis=1) if names else np.zeros(0, bool)
    detail = _details(errors, table)
    if generated_text is not None:
        detail.update(_timestamp_details(errors, generated_text, generated_field))
    rows = np.flatnonzero(bad)
    reasons = [[detail.get((names[j], i), names[j]) for j in np.flatnonzero(row)] for i, row in zip(rows, stacked[bad])]
    return bad, reasons


def _details(errors: dict[str, np.ndarray], table: pa.Table) -> dict[tuple[str, int], str]:
    """{(rule, row): reason with the value} for the failing rows of the range and id rules."""
    out: dict[tuple[str, int], str] = {}
    for rule, (col, allowed) in VALUE_RULES.items():
        rows = np.flatnonzero(errors.get(rule, np.zeros(0, bool)))
        if len(rows):
            values = table.column(col).take(pa.array(rows)).to_pylist()
            for i, v in zip(rows.tolist(), values):
                seen = _quote(v) if isinstance(v, str) else _num(v)
                out[rule, i] = f"{rule} {seen} {allowed}"  # the line itself is kept whole beside it
    return out


def _timestamp_details(
    errors: dict[str, np.ndarray], texts: pa.Array, fields: str | np.ndarray
) -> dict[tuple[str, int], str]:
    """{("bad_timestamp", row): reason with the text and the field it was read from}."""
    rows = np.flatnonzero(errors.get("bad_timestamp", np.zeros(0, bool)))
    if not len(rows):
        return {}
    seen = texts.take(pa.array(rows)).to_pylist()
    where = [fields] * len(rows) if isinstance(fields, str) else np.asarray(fields)[rows].tolist()
    return {("bad_timestamp", i): f"bad_timestamp {_quote(t)} at {f}" for i, t, f in zip(rows.tolist(), seen, where)}
