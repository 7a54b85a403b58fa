"""What an ingest returns or raises: `IngestResult` (valid | quarantine | non-BSM and counts),
the quarantine table, and the ingest errors.

Every reader (ODE, DTG CSV) and the parallel path build their answers from here, so this
module imports no other part of the ingest.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from wydot_lab import validate
from wydot_lab.errors import WydotLabError
from wydot_lab.schema import BSM_SCHEMA, NON_BSM_SCHEMA, QUARANTINE_SCHEMA, SUPPORTED_SCHEMA_VERSIONS


class IngestError(WydotLabError, ValueError):
    """A whole file cannot be ingested (the message names it)."""


class SchemaVersionError(IngestError):
    """A record declares an ODE schemaVersion this toolkit does not know."""

    def __init__(self, source_object: str, lineno: int, version):
        super().__init__(f"{source_object}:{lineno}: unknown ODE schemaVersion {version} ({supported_versions()})")
        self.source_object, self.lineno, self.version = source_object, lineno, version

    def __reduce__(self):  # crosses process boundaries with its fields
        return type(self), (self.source_object, self.lineno, self.version)


def supported_versions() -> str:
    """ "supported: 1..9": what an unknown schemaVersion's error and quarantine reason say."""
    lo, hi = min(SUPPORTED_SCHEMA_VERSIONS), max(SUPPORTED_SCHEMA_VERSIONS)
    assert SUPPORTED_SCHEMA_VERSIONS == frozenset(range(lo, hi + 1))
    return f"supported: {lo}..{hi}"


@dataclasses.dataclass
class IngestResult:
    valid: pa.Table
    quarantine: pa.Table
    non_bsm: pa.Table
    blank: int = 0
    records: int = 0
    files: int = 0
    rule_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    file_issues: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def counts(self, valid: int | None = None) -> dict:
        """`valid`: the valid row count when the rows went elsewhere (`ingest_to_parquet`)."""
        out = {
            "records": self.records,
            "valid": self.valid.num_rows if valid is None else valid,
            "quarantined": self.quarantine.num_rows,
            "non_bsm": self.non_bsm.num_rows,
            "blank": self.blank,
            "files": self.files,
        }
        assert out["records"] == out["valid"] + out["quarantined"] + out["non_bsm"] + out["blank"], out
        return out

    def non_bsm_types(self) -> dict[str, int]:
        return dict(Counter(self.non_bsm.column("record_type").to_pylist()))

    def quarantine_reasons(self) -> dict[str, int]:
        """Records per rule (a record with two reasons counts under both)."""
        return validate.reason_counts(self.quarantine)

    def write_quarantine(self, path: str | Path) -> None:
        pq.write_table(self.quarantine, str(path))

    @staticmethod
    def concat(results: Iterable[IngestResult]) -> IngestResult:
        results = list(results)
        if not results:
            return empty_result()
        rules: Counter = Counter()
        for r in results:
            rules.update(r.rule_counts)
        return IngestResult(
            valid=pa.concat_tables([r.valid for r in results]),
            quarantine=pa.concat_tables([r.quarantine for r in results]),
            non_bsm=pa.concat_tables([r.non_bsm for r in results]),
            blank=sum(r.blank for r in results),
            records=sum(r.records for r in results),
            files=sum(r.files for r in results),
            rule_counts=dict(rules),
            file_issues=[i for r in results for i in r.file_issues],
        )


def quarantine_table(source_object: str, lines: list[int], texts: list[str], reasons: list[list[str]]) -> pa.Table:
    return pa.table(
        {
            "source_object": pa.array([source_object] * len(lines), pa.string()),
            "source_line": pa.array(lines, pa.int64()),
            "line": pa.array(texts, pa.string()),
            "reasons": pa.array(reasons, pa.list_(pa.string())),
        },
        schema=QUARANTINE_SCHEMA,
    )


def empty_result() -> IngestResult:
    return IngestResult(BSM_SCHEMA.empty_table(), QUARANTINE_SCHEMA.empty_table(), NON_BSM_SCHEMA.empty_table())
