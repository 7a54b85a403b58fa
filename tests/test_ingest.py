"""Ingest of real WYDOT records and of hostile input: everything loads or lands in quarantine with a reason."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wydot_lab import dtg_csv, ingest, validate
from wydot_lab.schema import BSM_SCHEMA

from conftest import REAL_DIR

V6 = REAL_DIR / "01_sandbox_sample_bsm_schemaVersion6.ndjson"
V5 = REAL_DIR / "01_sandbox_sample_bsm_schemaVersion5.ndjson"
REAL_RECORDS, REAL_FILES, REAL_OUTSIDE_WY = 57, 16, 25  # test_data/real_wydot (SOURCES.md)


@pytest.fixture(scope="module")
def real():
    return ingest.ingest_paths([REAL_DIR])


def _v6_record() -> dict:
    return json.loads(V6.read_text())


def _line(rec: dict) -> bytes:
    return json.dumps(rec).encode()


def _adds_up(r: ingest.IngestResult) -> dict:
    c = r.counts()
    assert c["records"] == c["valid"] + c["quarantined"] + c["non_bsm"] + c["blank"]
    return c


def test_all_real_records_load_valid(real):
    c = _adds_up(real)
    assert c["valid"] == REAL_RECORDS and c["quarantined"] == 0 and c["files"] == REAL_FILES
    assert real.valid.schema.equals(BSM_SCHEMA)
    versions = set(real.valid.column("metadata_schemaVersion").to_pylist())
    assert versions == {1, 3, 5, 6, 7, 8, 9}


@pytest.mark.parametrize(
    "id_,lat,lon,speed,heading,elev,generated,version",
    [
        ("16C50000", 41.2969523, -105.5918290, 20.54, 283.75, 2195.5, "2017-08-15T23:46:00.645Z", 1),
        ("5B820000", 41.0997729, -105.1547481, 27.98, 258.6, 2222.0, "2017-12-05T16:33:58Z", 3),
        ("CB950124", 41.2827318, -105.5912184, 7.52, 82.4375, 2179.1, "2018-05-06T20:26:28.690Z", 6),
        ("31323038", 41.6068716, -109.231463, 11.42, 63.525, 1905.8, "2019-02-06T16:38:56.479Z", 6),
    ],
)
def test_spot_check_exact_values(real, id_, lat, lon, speed, heading, elev, generated, version):
    df = real.valid.to_pandas()
    row = df[(df.coreData_id == id_) & (df.metadata_schemaVersion == version)].iloc[0]
    assert (row.coreData_position_lat, row.coreData_position_long) == (lat, lon)
    assert (row.coreData_speed, row.coreData_heading, row.coreData_elevation) == (speed, heading, elev)
    assert row.metadata_generatedAt == pd.Timestamp(generated)


def test_v5_v6_pair_flattens_identically_apart_from_version():
    a = ingest.ingest_paths([V5]).valid.to_pylist()[0]
    b = ingest.ingest_paths([V6]).valid.to_pylist()[0]
    assert (a.pop("metadata_schemaVersion"), b.pop("metadata_schemaVersion")) == (5, 6)
    a.pop("source_object"), b.pop("source_object")
    assert a == b


def test_path_history_and_other_partII_kept(real):
    df = real.valid.to_pandas()
    row = df[(df.coreData_id == "CB950124") & (df.metadata_schemaVersion == 6)].iloc[0]
    crumbs = row.partII_pathHistory_crumbData
    assert len(crumbs) == 6 and crumbs[1]["latOffset"] == 0.0000692 and crumbs[5]["timeOffset"] == 14.2
    assert row.partII_pathPrediction_radiusOfCurve == 97.5
    other = json.loads(row.partII_other)
    assert other[0]["id"] == "SupplementalVehicleExtensions" and other[0]["value"]["vehicleData"] == {"height": 1.5}


def test_sentinels_become_nulls():
    rec = _v6_record()
    cd = rec["payload"]["data"]["coreData"]
    cd["accelSet"] = {"accelLong": 2001, "accelLat": 2001, "accelVert": -127, "accelYaw": 0}
    cd["secMark"] = 65535
    cd["speed"] = None
    cd["heading"] = None
    cd["position"]["elevation"] = None
    rec["metadata"]["receivedMessageDetails"]["locationData"]["speed"] = "unavailable"
    row = ingest.ingest_bytes(_line(rec), "s").valid.to_pylist()[0]
    for col in (
        "coreData_accelset_accelLong",
        "coreData_accelset_accelLat",
        "coreData_accelset_accelVert",
        "coreData_secMark",
        "coreData_speed",
        "coreData_heading",
        "coreData_elevation",
        "metadata_rmd_speed",
    ):
        assert row[col] is None, col
    assert row["coreData_accelset_accelYaw"] == 0.0


def test_text_variants_crlf_bom_blank_no_trailing_newline_python_separators():
    rec = _v6_record()
    compact = json.dumps(rec, separators=(",", ":")).encode()
    pythonic = json.dumps(rec).encode()  # ", " and ": " separators
    data = b"\xef\xbb\xbf" + compact + b"\r\n\r\n" + pythonic + b"\r\n\n" + compact.replace(b"7.52", b"7.5200")
    r = ingest.ingest_bytes(data, "variants")
    c = _adds_up(r)
    assert (c["valid"], c["blank"], c["quarantined"]) == (3, 2, 0)
    assert r.valid.column("source_line").to_pylist() == [1, 3, 5]
    assert set(r.valid.column("coreData_speed").to_pylist()) == {7.52}


def test_pretty_single_object_file_pre_2018():
    pretty = json.dumps(_v6_record(), indent=2).encode()
    r = ingest.ingest_bytes(pretty, "wydot-filtered-bsm-1502840971677.json")
    c = _adds_up(r)
    assert c["valid"] == 1 and c["records"] == 1


@pytest.fixture
def big(tmp_path, monkeypatch) -> tuple[Path, ingest.IngestResult]:
    """The big mixed file, its whole-bytes ingest, and 4 KB stream pieces (so it streams and splits)."""
    path = _big_mixed_file(tmp_path)
    monkeypatch.setattr(ingest.stream, "STREAM_CHUNK", 4096)
    return path, ingest.ingest_bytes(path.read_bytes(), str(path))


def _big_mixed_file(tmp_path) -> Path:
    """Real records, blank lines, garbage, an out-of-range value and a TIM, x12, CRLF, BOM."""
    real_lines = [ln for f in sorted(REAL_DIR.glob("*.ndjson")) for ln in f.read_bytes().splitlines() if ln.strip()]
    rec = _v6_record()
    rec["payload"]["data"]["coreData"]["msgCnt"] = 999
    extras = [b"", b"garbage{", _line(rec), b"   ", b'{"metadata":{"payloadType":"x.OdeTimPayload"}}']
    path = tmp_path / "big.ndjson"
    path.write_bytes(ingest.BOM + b"\r\n".join(ln for _ in range(12) for ln in real_lines + extras))
    return path


def _put_unknown_version(path: Path, where: float) -> int:
    """Replace the line at `where` (share of the file) with a schemaVersion 10 record; its line number."""
    lines = path.read_bytes().split(b"\r\n")
    k = int(len(lines) * where)
    v10 = _v6_record()
    v10["metadata"]["schemaVersion"] = 10
    lines[k] = _line(v10)
    path.write_bytes(b"\r\n".join(lines))
    return k + 1


def _same_result(got: ingest.IngestResult, want: ingest.IngestResult) -> None:
    c = _adds_up(got)
    assert c == want.counts() and c["valid"] == 12 * REAL_RECORDS and c["quarantined"] == 24 and c["non_bsm"] == 12
    assert got.valid.equals(want.valid)  # includes source_line: numbering continues across pieces
    assert got.quarantine.equals(want.quarantine) and got.non_bsm.equals(want.non_bsm)
    assert got.rule_counts == want.rule_counts


@pytest.mark.parametrize("chunk", [4096, 9000, 1 << 16])
def test_big_file_streams_in_pieces_with_the_same_result_as_whole(big, monkeypatch, chunk):
    """Pieces cut anywhere (mid-CRLF, between blank lines) change nothing: same rows, line
    numbers, quarantine and rule counts as ingesting the bytes whole."""
    path, whole = big
    feeds = []
    feed = ingest._Lines.feed
    monkeypatch.setattr(ingest._Lines, "feed", lambda self, numbered: (feeds.append(1), feed(self, numbered)))
    monkeypatch.setattr(ingest.stream, "STREAM_CHUNK", chunk)
    streamed = ingest.ingest_file(path, workers=1)
    assert len(feeds) >= path.stat().st_size // chunk > 1  # it really streamed
    _same_result(streamed, whole)


@pytest.mark.parametrize("workers", [2, 3])
def test_big_file_split_across_processes_gives_the_same_result(big, tmp_path, monkeypatch, workers):
    path, whole = big
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where spans hand their rows back
    spans = ingest._span_bounds(path, path.stat().st_size, workers * ingest.SPANS_PER_WORKER)
    assert len(spans) - 1 == workers * ingest.SPANS_PER_WORKER
    _same_result(ingest.ingest_file(path, workers=workers), whole)
    assert list(scratch.iterdir()) == []  # nothing left behind

    line = _put_unknown_version(path, 0.75)  # in a late span: its line number is the file's
    with pytest.raises(ingest.SchemaVersionError, match=rf"big\.ndjson:{line}: unknown ODE"):
        ingest.ingest_file(path, workers=workers)


def test_odd_receiver_and_time_texts_parse_the_same_in_any_batch(tmp_path, monkeypatch):
    """A text's value must not depend on its batch neighbours (streaming and spans cut batches
    differently from a whole-file ingest)."""
    rec = _v6_record()

    def variant(lat: str, generated: str) -> bytes:
        r = json.loads(json.dumps(rec))
        r["metadata"]["receivedMessageDetails"]["locationData"]["latitude"] = lat
        r["metadata"]["recordGeneratedAt"] = generated
        return _line(r)

    odd = [
        ("NaN", "2018-05-06T20:26:28.6909999Z"),
        ("inf", "1969-12-31T23:59:59.9995Z"),
        (" 41.5 ", "2018-05-06T20:26:28.690+02:00"),
        ("unavailable", "2018-05-06T20:26:28.1234567891Z"),
        ("41.25", "not a time"),
    ]
    plain = variant("41.1", "2018-05-06T20:26:28.690Z")
    lines = [plain] * 1500
    for k, (lat, gen) in enumerate(odd):
        lines[300 * k + 7] = variant(lat, gen)
    path = tmp_path / "odd.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    whole = ingest.ingest_bytes(path.read_bytes(), str(path))
    one_by_one = [ingest.ingest_bytes(variant(lat, gen), "x") for lat, gen in odd]
    monkeypatch.setattr(ingest.stream, "STREAM_CHUNK", 5000)
    for workers in (1, 2):
        got = ingest.ingest_file(path, workers=workers)
        assert got.valid.equals(whole.valid) and got.quarantine.equals(whole.quarantine)
    lat = whole.valid.column("metadata_rmd_latitude").to_pylist()
    assert [lat[300 * k + 7] for k in range(4)] == [None, None, 41.5, None]
    assert [r.valid.column("metadata_rmd_latitude")[0].as_py() for r in one_by_one[:4]] == [None, None, 41.5, None]
    gen = whole.valid.column("metadata_generatedAt").to_pylist()
    alone = [r.valid.column("metadata_generatedAt")[0].as_py() for r in one_by_one[:4]]
    assert [gen[300 * k + 7] for k in range(4)] == alone  # floored to the ms in either path
    assert str(alone[1]) == "1969-12-31 23:59:59.999000+00:00"
    assert one_by_one[4].counts()["quarantined"] == 1  # "not a time" is a bad timestamp


def test_a_pipe_is_read_whole(big, tmp_path, monkeypatch):
    path, whole = big
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(path.read_bytes()))
    writer.start()
    got = ingest.ingest_file(fifo, workers=2)
    writer.join(timeout=30)
    assert got.valid.drop(["source_object"]).equals(whole.valid.drop(["source_object"]))
    assert got.counts() == whole.counts()


def _ingest_in_pool_worker(path: str) -> dict:
    return ingest.ingest_file(path).counts()


def test_default_workers_inside_a_daemonic_process(big, monkeypatch):
    path, whole = big
    monkeypatch.setattr(ingest.parallel, "PARALLEL_MIN", 1)  # would split, but pool workers may not fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        counts = pool.apply(_ingest_in_pool_worker, (str(path),))
    assert counts == whole.counts()


@pytest.mark.parametrize("workers", [1, 2])
def test_ingest_to_parquet_writes_what_ingest_returns(big, tmp_path, monkeypatch, workers):
    path, whole = big
    out = tmp_path / "out"
    counts = ingest.ingest_to_parquet(path, out, workers=workers)
    assert {k: counts[k] for k in whole.counts()} == whole.counts() and counts["rules"] == whole.rule_counts
    assert pq.read_table(out / "valid.parquet").equals(whole.valid)
    assert pq.read_table(out / "quarantine.parquet").equals(whole.quarantine)
    assert pq.read_table(out / "non_bsm.parquet").equals(whole.non_bsm)
    assert sorted(p.name for p in out.iterdir()) == ["non_bsm.parquet", "quarantine.parquet", "valid.parquet"]

    _put_unknown_version(path, 0.5)
    with pytest.raises(ingest.SchemaVersionError):
        ingest.ingest_to_parquet(path, tmp_path / "failed", workers=workers)
    assert list((tmp_path / "failed").iterdir()) == []  # nothing half-written


def _die(*args):
    os._exit(3)  # a parsing process killed (out of memory, say)


def test_a_dying_parsing_process_is_a_clear_error(big, monkeypatch):
    path, _ = big
    monkeypatch.setattr(ingest.parallel, "_piece_parts", _die)
    with pytest.raises(ingest.IngestError, match=r"big\.ndjson: a parsing process died .* workers=1"):
        ingest.ingest_file(path, workers=2)


def test_gzip_and_multimember_gzip():
    line = V6.read_bytes()
    data = gzip.compress(line * 3) + gzip.compress(line * 2)
    c = _adds_up(ingest.ingest_bytes(data, "x.gz"))
    assert c["valid"] == 5


def test_corrupt_gzip_keeps_the_good_part_and_quarantines_the_tail():
    data = gzip.compress(V6.read_bytes() * 200)
    broken = data[: len(data) // 2]
    r = ingest.ingest_bytes(broken, "broken.gz")
    c = _adds_up(r)
    assert c["valid"] >= 1 and c["quarantined"] == 1
    assert r.quarantine.column("reasons").to_pylist()[0] == ["corrupt_gzip"]
    assert any("corrupt_gzip" in why for _, why in r.file_issues)


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda s: s[: len(s) // 2], "not_json"),  # truncated line
        (lambda s: b"hello, world", "not_json"),
        (lambda s: b"[1, 2, 3]", "not_object"),
        (lambda s: b"null", "not_object"),
        (lambda s: s.replace(b'"speed":7.52', b'"speed":"7.52"'), "wrong_type"),  # numbers as strings
        (lambda s: s.replace(b'"coreData":', b'"coreDataX":'), "missing_coreData"),
        (lambda s: s.replace(b'"latitude":41.2827318', b'"latitude":141.2827318'), "lat_range"),
        (lambda s: s.replace(b'"speed":7.52', b'"speed":900.0'), "speed_range"),
        (lambda s: s.replace(b'"msgCnt":127', b'"msgCnt":99999'), "msgCnt_range"),
        (lambda s: s.replace(b'"id":"CB950124"', b'"id":"XYZ"'), "id_format"),
        (
            lambda s: s.replace(b'"recordGeneratedAt":"2018-05-06T20:26:28.690Z"', b'"recordGeneratedAt":"yesterday"'),
            "bad_timestamp",
        ),
        (lambda s: s.replace(b'"recordGeneratedAt":"2018-05-06T20:26:28.690Z",', b""), "missing_generatedAt"),
    ],
)
def test_bad_input_is_quarantined_with_its_reason(mutate, reason):
    good = V6.read_bytes().strip()
    bad = mutate(good)
    r = ingest.ingest_bytes(good + b"\n" + bad + b"\n" + good + b"\n", "bad.ndjson")
    c = _adds_up(r)
    assert (c["valid"], c["quarantined"]) == (2, 1)
    q = r.quarantine.to_pylist()[0]
    assert q["source_line"] == 2 and q["line"].encode() == bad
    assert any(x.startswith(reason) for x in q["reasons"]), q["reasons"]


def test_quarantine_examples_show_each_rule_once_with_its_first_lines():
    good = V6.read_bytes().strip()
    speed = good.replace(b'"speed":7.52', b'"speed":900.0')
    both = speed.replace(b'"id":"CB950124"', b'"id":"XYZ"')
    typed = good.replace(b'"speed":7.52', b'"speed":"7.52"')
    data = b"\n".join([good, b"oops", speed, b'{"a": "' + b"x" * 300 + b'"', both, b"[1]", typed]) + b"\n"
    q = ingest.ingest_bytes(data, "s3/wydot/BSM/x.ndjson").quarantine
    ex = validate.examples(q)
    assert ex["rule"].tolist() == ["id_format", "not_json", "not_object", "speed_range", "wrong_type"]
    assert ex["line"].tolist() == [5, 2, 6, 3, 7] and set(ex["file"]) == {"x.ndjson"}
    by_rule = ex.set_index("rule")
    assert by_rule.loc["not_json", "text"] == "oops"
    assert by_rule.loc["not_json", "reason"].startswith("not_json (JSON is malformed")
    assert by_rule.loc["speed_range", "reason"] == "speed_range 900 (allowed 0..163.8)"
    for rule, field in (
        ("speed_range", '"speed":900.0'),
        ("wrong_type", '"speed":"7.52"'),
        ("id_format", '"id":"XYZ"'),
    ):
        text = by_rule.loc[rule, "text"]  # around the field the rule names, not the line's start
        assert field in text and text.startswith("...") and len(text) <= 106, (rule, text)
        assert text.strip(".") in (speed if rule == "speed_range" else typed if rule == "wrong_type" else both).decode()
    assert by_rule.loc["wrong_type", "reason"] == q.column("reasons").to_pylist()[-1][0] != "wrong_type"
    two = validate.examples(q, per_rule=2, width=5)
    assert two["line"].tolist() == [5, 2, 4, 6, 3, 5, 7] and two["text"].str.strip(".").str.len().max() == 5


def test_a_cut_line_shows_its_end():
    good = V6.read_bytes().strip()
    q = ingest.ingest_bytes(good[:300] + b"\n", "x").quarantine
    ex = validate.examples(q, width=40)
    assert ex["reason"].tolist() == ["not_json (Input data was truncated)"]
    assert ex["text"].tolist() == ["..." + good[260:300].decode()]


def test_every_failed_rule_is_listed():
    bad = V6.read_bytes().replace(b'"speed":7.52', b'"speed":900.0').replace(b'"id":"CB950124"', b'"id":"XYZ"')
    q = ingest.ingest_bytes(bad, "x").quarantine.to_pylist()[0]
    assert set(q["reasons"]) == {"speed_range 900 (allowed 0..163.8)", "id_format 'XYZ' (8 hex digits)"}
    assert {validate.rule_name(r) for r in q["reasons"]} == {"speed_range", "id_format"}


def test_unknown_schema_version_is_a_clear_error_or_quarantined():
    bad = V6.read_bytes().replace(b'"schemaVersion":6', b'"schemaVersion":10')
    with pytest.raises(
        ingest.SchemaVersionError, match=r"v10\.ndjson:1: unknown ODE schemaVersion 10 \(supported: 1\.\.9\)"
    ):
        ingest.ingest_bytes(bad, "v10.ndjson")
    r = ingest.ingest_bytes(bad, "v10.ndjson", unknown_version="quarantine")
    assert r.quarantine.column("reasons").to_pylist() == [["unknown_schema_version 10 (supported: 1..9)"]]


def test_tim_records_are_counted_aside_by_type():
    tim = {
        "metadata": {
            "recordType": "dnMsg",
            "payloadType": "us.dot.its.jpo.ode.model.OdeTimPayload",
            "schemaVersion": 6,
        },
        "payload": {
            "dataType": "us.dot.its.jpo.ode.plugin.j2735.J2735TravelerInformation",
            "data": {"MessageFrame": {"value": {"TravelerInformation": {"msgCnt": 1}}}},
        },
    }
    weird_tim = dict(tim, payload={"dataType": "TravelerInformation", "data": {"coreData": "not an object"}})
    data = V6.read_bytes() + _line(tim) + b"\n" + _line(weird_tim) + b"\n"
    r = ingest.ingest_bytes(data, "mixed")
    c = _adds_up(r)
    assert (c["valid"], c["non_bsm"], c["quarantined"]) == (1, 2, 0)
    assert r.non_bsm_types() == {"J2735TravelerInformation": 1, "TravelerInformation": 1}


def test_empty_file_is_reported_not_crashed(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    r = ingest.ingest_paths([tmp_path])
    assert _adds_up(r)["records"] == 0 and r.file_issues == [(str(tmp_path / "empty"), "empty_file")]


def test_ten_megabyte_single_line_and_deep_nesting_do_not_crash():
    huge = b'{"metadata": {"logFileName": "' + b"x" * 10_000_000 + b'"}}'
    deep = b"[" * 100_000 + b"]" * 100_000
    nulls = b"null\n" * 1000
    r = ingest.ingest_bytes(huge + b"\n" + deep + b"\n" + nulls + V6.read_bytes(), "hostile")
    c = _adds_up(r)
    assert c["valid"] == 1 and c["quarantined"] == 1002
    assert r.quarantine.column("reasons").to_pylist()[0] == ["missing_coreData"]


def test_nulls_only_file_in_a_subprocess_exits_cleanly(tmp_path):
    """The pyarrow reader dies on this (apache/arrow#51305); ours must not even in a fresh process."""
    f = tmp_path / "nulls"
    f.write_bytes(b"null\n" * 50_000)
    code = f"from wydot_lab import ingest; r = ingest.ingest_paths([{str(f)!r}]); print(r.counts()['quarantined'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "50000"


@pytest.mark.parametrize("lower_case", [False, True])
def test_data_transportation_gov_csv_exports(real, tmp_path, lower_case):
    path = tmp_path / "export.csv"
    dtg_csv.to_download_csv(real.valid, path, lower_case=lower_case)
    r = ingest.ingest_paths([path])
    c = _adds_up(r)
    assert c["valid"] == REAL_RECORDS
    a, b = r.valid.to_pandas(), real.valid.to_pandas()
    for col in (
        "coreData_id",
        "coreData_position_lat",
        "coreData_position_long",
        "coreData_speed",
        "coreData_heading",
        "coreData_secMark",
        "metadata_schemaVersion",
    ):
        assert a[col].equals(b[col]), col
    expected = b.metadata_generatedAt if lower_case else b.metadata_generatedAt.dt.floor("s")
    assert (a.metadata_generatedAt == expected).all()


def test_csv_download_time_format_and_wkt_position(tmp_path):
    path = tmp_path / "dl.csv"
    path.write_text(
        "metadata_generatedAt,coreData_id,coreData_position,coreData_speed,coreData_msgCnt\n"
        "12/05/2018 02:04:58 PM,31325442,POINT (-104.66 41.155),22.74,5\n"
        "12/05/2018 02:04:59 PM,31325442,POINT (-104.66 41.155),fast,6\n"
    )
    r = ingest.ingest_paths([path])
    c = _adds_up(r)
    assert (c["valid"], c["quarantined"]) == (1, 1)
    row = r.valid.to_pylist()[0]
    assert row["metadata_generatedAt"] == pd.Timestamp("2018-12-05T14:04:58Z")
    assert (row["coreData_position_lat"], row["coreData_position_long"]) == (41.155, -104.66)
    assert r.quarantine.column("reasons").to_pylist() == [["wrong_type at coreData_speed"]]


def test_quarantine_roundtrips_to_parquet(tmp_path):
    r = ingest.ingest_bytes(b"oops\n" + V6.read_bytes(), "q")
    r.write_quarantine(tmp_path / "q.parquet")
    back = pa.parquet.read_table(tmp_path / "q.parquet")
    assert back.column("line").to_pylist() == ["oops"]


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        ingest.ingest_paths([tmp_path / "nope"])


def test_cli_validate_prints_summary_last(tmp_path):
    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(V6.read_bytes() + b"not json\n\n")
    out = subprocess.run(
        [sys.executable, "-m", "wydot_lab.cli", "validate", str(REAL_DIR), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["records"] == summary["valid"] + summary["quarantined"] + summary["non_bsm"] + summary["blank"]
    assert (summary["valid"], summary["quarantined"], summary["blank"], summary["files"]) == (
        REAL_RECORDS + 1,
        1,
        1,
        REAL_FILES + 1,
    )
    assert summary["rules"]["not_json"] == 1 and summary["rules"]["outside_wyoming"] >= 18
    assert "bad.ndjson" in out.stderr


def test_cli_validate_unknown_version_stops_or_quarantines(tmp_path):
    v10 = tmp_path / "v10.ndjson"
    rec = V6.read_text().strip()
    v10.write_text(rec + "\n" + rec.replace('"schemaVersion":6', '"schemaVersion":10') + "\n")
    cmd = [sys.executable, "-m", "wydot_lab.cli", "validate", str(v10)]
    stop = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert stop.returncode == 2 and stop.stdout == ""
    assert (
        f"{v10}:2: unknown ODE schemaVersion 10 (supported: 1..9)" in stop.stderr
        and "--unknown-version quarantine" in stop.stderr
    )
    assert stop.stderr.strip().count("\n") == 0
    go = subprocess.run(cmd + ["--unknown-version", "quarantine"], capture_output=True, text=True, timeout=120)
    assert go.returncode == 0, go.stderr
    summary = json.loads(go.stdout.strip().splitlines()[-1])
    assert (summary["valid"], summary["quarantined"], summary["rules"]["unknown_schema_version"]) == (1, 1, 1)


def test_cli_error_is_one_line_and_nonzero(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "wydot_lab.cli", "validate", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "no such file or folder" in out.stderr
    assert "Traceback" not in out.stderr


def test_every_row_keeps_provenance(real):
    t = real.valid
    assert t.column("source_line").null_count == 0
    assert all(Path(p).parent == REAL_DIR for p in set(t.column("source_object").to_pylist()))


def test_a_folder_given_as_one_file_names_the_call_that_reads_it():
    with pytest.raises(IsADirectoryError, match=r"is a folder: ingest_paths\("):
        ingest.ingest_file(REAL_DIR)
    assert ingest.ingest_paths(str(REAL_DIR)).counts()["valid"] == REAL_RECORDS


def test_a_reason_quotes_at_most_40_characters_of_a_value():
    bad = V6.read_bytes().strip().replace(b'"id":"CB950124"', b'"id":"' + b"Z" * 5000 + b'"')
    q = ingest.ingest_bytes(bad + b"\n", "x").quarantine.to_pylist()[0]
    assert q["reasons"] == ["id_format '" + "Z" * 40 + "...' (8 hex digits)"]
    assert len(q["line"]) == len(bad)  # the line itself is whole


V1 = REAL_DIR / "00_sandbox_sample_wydot-filtered-bsm-1502840971677_schemaVersion1.ndjson"


def test_a_bad_timestamp_reason_quotes_its_text_and_the_key_it_was_read_from(monkeypatch):
    monkeypatch.setattr(ingest.ode, "BATCH", 2)  # texts and keys stay with their rows across batches
    v6 = V6.read_bytes().strip()
    v1 = V1.read_bytes().splitlines()[0].strip()
    dtg = v6.replace(b'"2018-05-06T20:26:28.690Z"', b'"04/01/2021 10:00:00 AM"', 1)
    old = v1.replace(b'"generatedAt":"2017-08-15T23:46:00.645Z[UTC]"', b'"generatedAt":"yesterday"')
    long = v6.replace(b'"2018-05-06T20:26:28.690Z"', b'"' + b"9" * 500 + b'"', 1)
    assert dtg != v6 and old != v1 and long != v6
    r = ingest.ingest_bytes(b"\n".join([v6, v6, v1, dtg, old, long]) + b"\n", "s3/x.ndjson")
    assert (_adds_up(r)["valid"], r.rule_counts["bad_timestamp"]) == (3, 3)
    assert r.quarantine.column("reasons").to_pylist() == [
        ["bad_timestamp '04/01/2021 10:00:00 AM' at metadata_recordGeneratedAt"],
        ["bad_timestamp 'yesterday' at metadata_generatedAt"],
        ["bad_timestamp '" + "9" * 40 + "...' at metadata_recordGeneratedAt"],
    ]
    assert validate.reason_counts(r.quarantine) == {"bad_timestamp": 3}
    ex = validate.examples(r.quarantine, per_rule=3, width=60)
    assert ex["line"].tolist() == [4, 5, 6]
    assert '"recordGeneratedAt":"04/01' in ex["text"][0] and '"generatedAt":"yesterday"' in ex["text"][1]


_CSV_HEAD = (
    "metadata_generatedAt,metadata_receivedAt,coreData_id,coreData_position,"
    "coreData_position_lat,coreData_position_long\n"
)


@pytest.mark.parametrize("lower_case", [False, True])
def test_csv_unparseable_time_is_one_bad_timestamp_not_also_a_wrong_type(tmp_path, lower_case):
    head = _CSV_HEAD.lower() if lower_case else _CSV_HEAD
    path = tmp_path / "t.csv"
    path.write_text(
        head + "12/05/2018 02:04:58 PM,12/05/2018 02:04:59 PM,31325442,POINT (-104.66 41.155),41.155,-104.66\n"
        "04/01/2021 25:00:00 AM,12/05/2018 02:04:59 PM,31325442,POINT (-104.66 41.155),41.155,-104.66\n"
        "12/05/2018 02:04:58 PM,not a time,31325442,POINT (-104.66 41.155),41.155,-104.66\n"
    )
    r = ingest.ingest_paths([path])
    assert (_adds_up(r)["valid"], r.counts()["quarantined"]) == (1, 2)
    gen, rec = (
        ("metadata_generatedat", "metadata_receivedat")
        if lower_case
        else ("metadata_generatedAt", "metadata_receivedAt")
    )
    assert r.quarantine.column("reasons").to_pylist() == [
        [f"bad_timestamp '04/01/2021 25:00:00 AM' at {gen}"],
        [f"wrong_type at {rec}"],
    ]
    assert (r.rule_counts["bad_timestamp"], r.rule_counts["wrong_type"]) == (1, 1)  # one fault, one count
    assert r.quarantine_reasons() == {"bad_timestamp": 1, "wrong_type": 1}


def test_outside_wyoming_counts_only_positions_in_range(real, tmp_path):
    good = json.loads(V6.read_text())

    def at(lat, lon, heading=82.4375) -> bytes:
        rec = json.loads(json.dumps(good))
        rec["payload"]["data"]["coreData"]["position"].update(latitude=lat, longitude=lon)
        rec["payload"]["data"]["coreData"]["heading"] = heading
        return _line(rec)

    lines = [
        at(41.28, -105.59),
        at(91, -105.59),
        at(41.28, -200),
        at(91, -200),
        at(-91, 181),
        at(39.7, -104.99),
        at(39.7, -104.99, heading=400),
    ]  # last two: Denver, in range
    r = ingest.ingest_bytes(b"\n".join(lines) + b"\n", "x")
    assert (_adds_up(r)["valid"], r.counts()["quarantined"]) == (2, 5)
    assert (r.rule_counts["lat_range"], r.rule_counts["long_range"]) == (3, 3)
    assert r.rule_counts["outside_wyoming"] == 2  # the Denver pair only: a rule counts every record it is about
    _, warn = validate.check(r.valid)
    assert warn["outside_wyoming"].tolist() == [False, True]
    # the real Colorado test drives keep counting, in ODE output and in a CSV export of it
    assert (real.counts()["valid"], real.counts()["quarantined"], real.rule_counts["outside_wyoming"]) == (
        REAL_RECORDS,
        0,
        REAL_OUTSIDE_WY,
    )
    dtg_csv.to_download_csv(real.valid, tmp_path / "real.csv")
    assert ingest.ingest_paths([tmp_path / "real.csv"]).rule_counts["outside_wyoming"] == REAL_OUTSIDE_WY


def test_csv_empty_lat_long_cells_are_filled_from_the_point_text(tmp_path):
    path = tmp_path / "dl.csv"
    path.write_text(
        _CSV_HEAD + "12/05/2018 02:04:58 PM,,31325442,POINT (-104.66 41.15),,\n"
        "12/05/2018 02:04:59 PM,,31325442,POINT (-104.66 41.15),41.2,\n"
        "12/05/2018 02:05:00 PM,,31325442,POINT (-104.66 41.15),,-104.7\n"
        "12/05/2018 02:05:01 PM,,31325442,POINT (-104.66 41.15),41.3,-104.8\n"
        "12/05/2018 02:05:02 PM,,31325442,,,\n"
        "12/05/2018 02:05:03 PM,,31325442,POINT (-104.66 41.15),north,\n"
    )
    r = ingest.ingest_paths([path])
    assert (_adds_up(r)["valid"], r.counts()["quarantined"]) == (4, 2)
    got = list(
        zip(r.valid.column("coreData_position_lat").to_pylist(), r.valid.column("coreData_position_long").to_pylist())
    )
    assert got == [(41.15, -104.66), (41.2, -104.66), (41.15, -104.7), (41.3, -104.8)]  # a cell given wins
    assert r.quarantine.column("reasons").to_pylist() == [["missing_position"], ["wrong_type at coreData_position_lat"]]
    assert "empty" in dtg_csv.__doc__
