"""The synthetic corpus: deterministic bytes, bucket layout, real v6 shape, physics that a
detector can rely on (on the road, in the privacy window, self-consistent), and defect lines
that ingest sorts exactly as the summary says."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

from wydot_lab import cli, config, geo, ingest, synth
from wydot_lab.frames import CRUMB_SIGN

from conftest import REAL_DIR, ROOT, SYNTH_DIR

PARAMS = dict(start="2021-04-01", days=1, vehicles=40, rate_hz=0.1, seed=11, records_per_hour=100, defect_share=0.0)
DEFECTIVE = {**PARAMS, "defect_share": 0.05}  # ~125 defect lines: every kind several times
COUNTS = ("records", "valid", "quarantined", "non_bsm", "blank", "files")
NAME_RE = re.compile(
    r"^usdot-its-cvpilot-bsm-public-\d+-(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})-"
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = synth.write_corpus(out, **PARAMS)
    return out, summary


@pytest.fixture(scope="module")
def ingested(corpus):
    out, _ = corpus
    return ingest.ingest_paths([out])


@pytest.fixture(scope="module")
def frame():
    table, truth = synth.generate(**PARAMS, truth=True)
    df = table.to_pandas()
    return pd.concat([df, truth], axis=1)


def test_same_params_same_bytes_other_seed_other_bytes(corpus, tmp_path):
    out, summary = corpus
    again = synth.write_corpus(tmp_path / "a", **PARAMS, workers=2)  # a real process pool: same bytes
    assert _tree(tmp_path / "a") == _tree(out)
    assert again["records"] == summary["records"] == 24 * 100
    synth.write_corpus(tmp_path / "b", **{**PARAMS, "seed": 12})
    other = _tree(tmp_path / "b")
    assert other.keys() != _tree(out).keys() or other != _tree(out)


def test_summary_counts(corpus):
    out, s = corpus
    files = [p for p in out.rglob("*") if p.is_file()]
    assert s["files"] == len(files) == 24 * synth.OBJECTS_PER_HOUR
    assert sum(len(p.read_bytes().splitlines()) for p in files) == s["records"] == s["valid"]
    assert (s["quarantined"], s["non_bsm"], s["blank"], s["vehicles"], s["hours"]) == (0, 0, 0, 40, 24)


def test_layout_hour_folders_and_object_names(corpus, ingested):
    out, _ = corpus
    for p in (p for p in out.rglob("*") if p.is_file()):
        rel = p.relative_to(out).parts
        assert rel[:2] == ("wydot", "BSM") and len(rel) == 7
        m = NAME_RE.match(rel[-1])
        assert m, rel[-1]
        name_time = dt.datetime.strptime(m.group(1), "%Y-%m-%d-%H-%M-%S")
        assert name_time.strftime("%Y/%m/%d/%H") == "/".join(rel[2:6])
        data = p.read_bytes()
        assert data.endswith(b"\n") and not data.endswith(b"\n\n")
    v = ingested.valid
    hours = pc.strftime(v["metadata_generatedAt"], format="%Y/%m/%d/%H").to_pylist()
    folders = ["/".join(Path(s).parts[-5:-1]) for s in v["source_object"].to_pylist()]
    assert hours == folders


def _assert_valid_rows_are_generated(ingested, params):
    mem = synth.generate(**params)
    key = [("source_object", "ascending"), ("source_line", "ascending")]
    got = ingested.valid.set_column(
        ingested.valid.schema.get_field_index("source_object"),
        "source_object",
        pc.replace_substring_regex(ingested.valid["source_object"], r"^.*/(wydot/BSM/)", r"\1"),
    ).sort_by(key)
    assert got.equals(mem.sort_by(key))


def test_every_record_passes_ingest_and_matches_the_in_memory_table(corpus, ingested):
    c = ingested.counts()
    assert c["valid"] == c["records"] == 2400 and c["quarantined"] == 0 and c["non_bsm"] == 0 and c["blank"] == 0
    assert sum(ingested.rule_counts.values()) == 0  # not even the outside-Wyoming warning
    _assert_valid_rows_are_generated(ingested, PARAMS)


def test_json_has_every_key_of_the_real_v6_record(corpus):
    def keys(obj, prefix=""):
        out = set()
        if isinstance(obj, dict):
            for k, v in obj.items():
                out |= {prefix + k} | keys(v, prefix + k + ".")
        return out

    real = json.loads((REAL_DIR / "06_jpo-ode_data_bsmTx_subset.ndjson").read_text().splitlines()[0])
    real_sandbox = json.loads((REAL_DIR / "01_sandbox_sample_bsm_schemaVersion6.ndjson").read_text().splitlines()[0])
    out, _ = corpus
    ours = json.loads(next(p for p in out.rglob("*") if p.is_file()).read_text().splitlines()[0])
    for ref in (real, real_sandbox):
        assert keys(ref["metadata"]) <= keys(ours["metadata"])
        assert keys(ref["payload"]["data"]["coreData"]) <= keys(ours["payload"]["data"]["coreData"])
        assert ref["payload"]["dataType"] == ours["payload"]["dataType"]
    vse = ours["payload"]["data"]["partII"][0]
    assert vse["id"] == "VehicleSafetyExtensions" and len(vse["value"]["pathHistory"]["crumbData"]) == synth.CRUMBS
    assert keys(real["payload"]["data"]["partII"][0]) <= keys(vse)
    md = ours["metadata"]
    assert (md["schemaVersion"], md["recordType"], md["recordGeneratedBy"], md["sanitized"]) == (
        6,
        "bsmTx",
        "OBU",
        False,
    )
    assert md["receivedMessageDetails"]["locationData"]["latitude"] == str(
        ours["payload"]["data"]["coreData"]["position"]["latitude"]
    )


# --------------------------------------------------------------------------- defect lines
@pytest.fixture(scope="module")
def defective(tmp_path_factory):
    out = tmp_path_factory.mktemp("defective")
    return out, synth.write_corpus(out, **DEFECTIVE)


@pytest.fixture(scope="module")
def defective_ingested(defective):
    return ingest.ingest_paths([defective[0]], unknown_version="quarantine")


def test_defects_same_params_same_bytes_whatever_the_workers(defective, tmp_path):
    out, summary = defective
    again = synth.write_corpus(tmp_path / "a", **DEFECTIVE, workers=2)
    assert _tree(tmp_path / "a") == _tree(out) and again == {
        **summary,
        "seconds": again["seconds"],
        "records_per_s": again["records_per_s"],
    }
    synth.write_corpus(tmp_path / "b", **{**DEFECTIVE, "defect_share": 0.04})
    assert _tree(tmp_path / "b") != _tree(out)


def test_defect_lines_do_not_depend_on_the_chunking(defective, tmp_path, monkeypatch):
    """Objects are formatted CHUNK_ROWS rows at a time; defect lines go after their row
    whichever chunk it falls in (7-row chunks: most rows are in a later chunk of their object;
    1024-row chunks hold whole objects)."""
    monkeypatch.setattr(synth.writer, "CHUNK_ROWS", 7)  # the tunable lives in its module
    synth.write_corpus(tmp_path, **DEFECTIVE)
    assert _tree(tmp_path) == _tree(defective[0])


def test_defect_lines_come_on_top_of_the_same_valid_records_interleaved(corpus, defective):
    """Take the defect lines out and the share-0 corpus is left, byte for byte; some defect
    lines sit between valid records, not only at the end of an object."""
    clean, dirty = _tree(corpus[0]), _tree(defective[0])
    assert clean.keys() == dirty.keys()
    extra = inside = checked = 0
    for key, data in dirty.items():
        lines, valid = data.split(b"\n")[:-1], clean[key].split(b"\n")[:-1]
        kept = set(valid)
        is_valid = [ln in kept for ln in lines]
        assert [ln for ln, ok in zip(lines, is_valid) if ok] == valid
        source = None
        for ln, ok in zip(lines, is_valid):  # a defect is made from the valid record just before it
            if ok:
                source = json.loads(ln)["metadata"]
                continue
            try:
                md = json.loads(ln)["metadata"]
            except ValueError:  # truncated or blank
                continue
            assert md["serialId"] == source["serialId"] and md["odeReceivedAt"] == source["odeReceivedAt"]
            checked += 1
        extra += is_valid.count(False)
        inside += sum(not a and b for a, b in zip(is_valid, is_valid[1:]))
    s = defective[1]
    assert extra == s["records"] - s["valid"] == sum(s["defects"].values()) > 0
    assert inside > 0 and s["valid"] == 2400
    assert checked == sum(n for k, n in s["defects"].items() if k not in ("truncated", "blank"))


def test_defect_summary_is_what_ingest_finds(defective, defective_ingested):
    _, s = defective
    c = defective_ingested.counts()
    assert {k: s[k] for k in COUNTS} == c
    assert set(s["defects"]) == set(synth.KINDS)  # every kind, each with its own reason
    assert 0.03 < (s["records"] - s["valid"]) / s["records"] < 0.07
    want = {
        synth.DEFECTS[k].outcome: n
        for k, n in s["defects"].items()
        if synth.DEFECTS[k].outcome not in synth.NOT_QUARANTINED
    }
    assert defective_ingested.quarantine_reasons() == want
    assert len(want) == 6 and all(len(r) == 1 for r in defective_ingested.quarantine["reasons"].to_pylist())
    assert defective_ingested.non_bsm_types() == {"TravelerInformation": s["defects"]["tim"]}
    assert c["blank"] == s["defects"]["blank"]


def test_defect_corpus_valid_records_equal_the_in_memory_table(defective_ingested):
    """generate() with the same defect_share: the same valid rows, numbered by their line in
    the objects that also hold the defect lines."""
    _assert_valid_rows_are_generated(defective_ingested, DEFECTIVE)
    plain, moved = synth.generate(**PARAMS), synth.generate(**DEFECTIVE)
    assert plain.drop_columns(["source_line"]).equals(moved.drop_columns(["source_line"]))
    assert not plain["source_line"].equals(moved["source_line"])


@pytest.mark.parametrize("kind", synth.KINDS)
def test_each_defect_kind_lands_where_DEFECTS_says(corpus, kind):
    rec = next(iter(_tree(corpus[0]).values())).split(b"\n")[0]
    data = rec + b"\n" + synth.defect_line(kind, rec, 0.3)
    r = ingest.ingest_bytes(data, "obj", unknown_version="quarantine")
    c, place = r.counts(), synth.DEFECTS[kind].outcome
    assert c["records"] == 2 and c["valid"] == 1
    if place in synth.NOT_QUARANTINED:
        assert c[place] == 1 and c["quarantined"] == 0
    else:
        assert r.quarantine_reasons() == {place: 1} and r.quarantine["source_line"].to_pylist() == [2]


def test_defect_share_must_be_between_0_and_its_cap(tmp_path):
    for bad in (0.51, 1.0, -0.01, float("nan")):
        with pytest.raises(ValueError, match="defect_share"):
            synth.write_corpus(tmp_path, **{**PARAMS, "defect_share": bad})
        with pytest.raises(ValueError, match="defect_share"):
            synth.generate(**{**PARAMS, "defect_share": bad})


def test_cli_defect_share_flag_overrides_the_params(tmp_path, capsys):
    args = [
        "synth",
        "--params",
        str(ROOT / "params" / "default.yaml"),
        "--days",
        "1",
        "--vehicles",
        "40",
        "--seed",
        "11",
        "--records-per-hour",
        "100",
    ]  # with default.yaml's other synth keys: DEFECTIVE but for the share, plus its realism (the CLI passes it on)
    assert cli.main([*args, "--out", str(tmp_path / "a"), "--defect-share", "0.05"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    want = synth.write_corpus(
        tmp_path / "b", **DEFECTIVE, realism=config.load(ROOT / "params" / "default.yaml").synth.realism
    )
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert {k: summary[k] for k in COUNTS} == {k: want[k] for k in COUNTS}
    assert cli.main([*args, "--out", str(tmp_path / "c"), "--defect-share", "1"]) == 2
    assert "synth.defect_share" in capsys.readouterr().err


def test_the_committed_corpus_is_what_default_params_write(tmp_path):
    """test_data/synthetic_wydot is `make synth-data` of params/default.yaml, defect lines
    included, and ingest finds in it exactly what the synth summary says."""
    sp = config.load(ROOT / "params" / "default.yaml").synth
    assert sp.defect_share > 0
    s = synth.write_corpus(tmp_path, **{**sp.model_dump(), "start": str(sp.start)})
    assert _tree(tmp_path) == _tree(SYNTH_DIR)
    r = ingest.ingest_paths([SYNTH_DIR], unknown_version="quarantine")
    assert r.counts() == {k: s[k] for k in COUNTS} and s["quarantined"] > 0


def test_genuine_speeds_span_slowdowns_not_one_band(frame):
    """Genuine speeds cover much of the privacy window (slow swings: weather, variable speed
    limits, traffic), so a falsified speed cannot be told from its value alone; the top stays
    under the cap."""
    v = frame["coreData_speed"]
    lo, hi = np.percentile(v, [5, 95])
    assert lo < 22.0 and hi > 33.0 and v.max() <= synth.V_TOP
    swing = frame.groupby("coreData_id")["true_speed"].agg(lambda s: s.max() - s.min())
    assert (swing > 4.0).mean() > 0.5  # most vehicles slow down and speed up within the day


def test_positions_on_their_carriageway_and_inside_the_privacy_window(frame):
    direction = np.where(frame["eastbound"], "eastbound", "westbound")
    d = geo.distance_to_centreline(frame["coreData_position_lat"], frame["coreData_position_long"], direction)
    assert d.max() < 15.0 and np.median(d) > 0.5  # noisy, but never off the road
    d_true = geo.distance_to_centreline(frame["true_lat"], frame["true_long"], direction)
    assert np.abs(d_true - synth.LANE_M).max() < 0.2  # a lane's centre, not the line
    assert frame["coreData_speed"].between(*synth.PRIVACY_MPS).all()
    assert frame["eastbound"].any() and (~frame["eastbound"]).any()
    elev = frame["coreData_elevation"]
    assert elev.between(1500, 2700).all() and elev.std() > 50


def _right_of_travel(lat, lon, eastbound) -> np.ndarray:
    """Signed metres right of the carriageway line's direction of travel (nearest segment)."""
    out = np.empty(len(lat))
    for east in (True, False):
        rows = eastbound == east
        line = geo.load_centreline("eastbound" if east else "westbound")
        x, y = geo.to_local(lat[rows], lon[rows])
        _, piece = line.tree.query(np.column_stack([x, y]))
        seg = line.piece_seg[piece]
        ux, uy = line.ux[seg], line.uy[seg]
        out[rows] = (uy * (x - line.x[seg]) - ux * (y - line.y[seg])) / np.hypot(ux, uy)
    return out


def test_vehicles_keep_right_and_pass_on_the_left(frame):
    """True positions sit in the right lane's centre, in the left one's for a share of the time;
    the path-history crumbs (true past positions) follow the lane at their own times."""
    east = frame["eastbound"].to_numpy()
    right = _right_of_travel(frame["true_lat"].to_numpy(), frame["true_long"].to_numpy(), east)
    assert np.abs(np.abs(right) - synth.LANE_M).max() < 0.2
    left = right < 0
    assert 0.05 < left.mean() < 0.45
    switches = frame.assign(left=left).groupby("coreData_id")["left"].nunique()
    assert (switches == 2).sum() >= 3  # some vehicles are seen in both lanes
    crumbs = frame["partII_pathHistory_crumbData"]
    c_lat = np.array([[c["latOffset"] for c in row] for row in crumbs])
    c_lon = np.array([[c["lonOffset"] for c in row] for row in crumbs])
    p_lat = frame["coreData_position_lat"].to_numpy()[:, None] + CRUMB_SIGN * c_lat
    p_lon = frame["coreData_position_long"].to_numpy()[:, None] + CRUMB_SIGN * c_lon
    c_right = _right_of_travel(p_lat.ravel(), p_lon.ravel(), np.repeat(east, c_lat.shape[1]))
    assert np.quantile(np.abs(np.abs(c_right) - synth.LANE_M), 0.99) < 0.3
    assert abs((c_right < 0).mean() - left.mean()) < 0.05  # same lane share as the messages'


def _ms(s: pd.Series) -> np.ndarray:
    return s.dt.tz_localize(None).to_numpy().astype("datetime64[ms]").astype(np.int64)


def _runs(frame):
    f = frame.sort_values(["metadata_serialId_streamId", "metadata_generatedAt"])
    same = f["metadata_serialId_streamId"].to_numpy()[1:] == f["metadata_serialId_streamId"].to_numpy()[:-1]
    return f, same


def test_runs_spacing_msgcnt_secmark_and_ids(frame):
    f, same = _runs(frame)
    t = _ms(f["metadata_generatedAt"])
    assert np.all(np.diff(t)[same] == 10_000)  # 1 / rate
    assert (f.groupby("metadata_serialId_streamId").size() == synth.WINDOW).all()
    cnt = f["coreData_msgCnt"].to_numpy()
    assert cnt.min() >= 0 and cnt.max() <= 127
    step = np.mod(np.diff(cnt)[same], 128)
    assert np.all(step == 1)
    assert np.any((cnt[:-1] == 127) & (cnt[1:] == 0) & same)  # wraps at 128
    assert np.array_equal(f["coreData_secMark"].to_numpy(), t % 60_000)
    assert f["coreData_id"].str.fullmatch(r"[0-9A-F]{8}").all()
    # every run is one vehicle; ~40 persistent vehicles, most seen in several runs
    assert (f.groupby("metadata_serialId_streamId")["coreData_id"].nunique() == 1).all()
    runs_per_vehicle = f.groupby("coreData_id")["metadata_serialId_streamId"].nunique()
    assert 30 <= len(runs_per_vehicle) <= 40 and runs_per_vehicle.max() >= 3


def test_reported_speed_heading_and_path_history_are_self_consistent(frame):
    f, same = _runs(frame)
    x, y = geo.to_local(f["coreData_position_lat"].to_numpy(), f["coreData_position_long"].to_numpy())
    dt_s = 10.0
    implied = np.hypot(np.diff(x), np.diff(y))[same] / dt_s
    mean_speed = (f["coreData_speed"].to_numpy()[1:] + f["coreData_speed"].to_numpy()[:-1])[same] / 2
    resid = np.abs(implied - mean_speed)
    assert np.median(resid) < 0.5 and np.quantile(resid, 0.99) < 2.5
    tx, ty = geo.to_local(f["true_lat"].to_numpy(), f["true_long"].to_numpy())
    chord = geo.true_bearing_deg(np.diff(tx), np.diff(ty), f["true_long"].to_numpy()[1:])
    h = f["coreData_heading"].to_numpy()
    mid = h[:-1] + (np.mod(h[1:] - h[:-1] + 180.0, 360.0) - 180.0) / 2  # a chord follows the mean tangent
    hd = geo.angle_diff_deg(chord[same], mid[same])
    assert np.median(hd) < 1.0 and np.quantile(hd, 0.95) < 5.0
    assert np.all(
        np.abs(f["coreData_heading"].to_numpy() / 0.0125 - np.round(f["coreData_heading"].to_numpy() / 0.0125)) < 1e-6
    )
    # crumbs: the vehicle's true past positions, so on the road and trailing at the reported speed
    lat = np.array([[c["latOffset"] for c in row] for row in f["partII_pathHistory_crumbData"]])
    lon = np.array([[c["lonOffset"] for c in row] for row in f["partII_pathHistory_crumbData"]])
    age = np.array([[c["timeOffset"] for c in row] for row in f["partII_pathHistory_crumbData"]])
    plat = f["coreData_position_lat"].to_numpy()[:, None] + CRUMB_SIGN * lat
    plon = f["coreData_position_long"].to_numpy()[:, None] + CRUMB_SIGN * lon
    # (nearest carriageway: a crumb from before a U-turn at a state line is on the other one)
    assert geo.distance_to_centreline(plat.ravel(), plon.ravel()).max() < synth.LANE_M + 0.2  # in a lane
    assert np.all(np.diff(age, axis=1) > 0) and age.min() > 0
    px, py = geo.to_local(plat[:, -1], plon[:, -1])
    trail = np.hypot(px - tx, py - ty) / age[:, -1]
    assert np.median(np.abs(trail - f["true_speed"].to_numpy())) < 0.5


def test_continuous_mode_every_vehicle_every_hour():
    table, truth = synth.generate("2021-04-01", days=1, vehicles=3, rate_hz=0.05, seed=5, truth=True)
    df = table.select(["coreData_id", "metadata_generatedAt"]).to_pandas()
    per = df.groupby([df["coreData_id"], df["metadata_generatedAt"].dt.hour]).size()
    assert len(per) == 3 * 24 and (per == 180).all()
    # one vehicle's odometer is continuous: consecutive true positions 20 s apart move ~20 s of driving
    one = truth[df["coreData_id"] == df["coreData_id"].iloc[0]]
    t = _ms(df.loc[one.index, "metadata_generatedAt"])
    assert np.all(np.diff(np.sort(t)) == 20_000)


def test_too_many_runs_for_the_fleet_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="vehicles"):
        synth.write_corpus(tmp_path, "2021-04-01", days=1, vehicles=2, rate_hz=0.1, seed=1, records_per_hour=100)


@pytest.mark.parametrize(
    "int_digits,dec,signed", [(1, 7, True), (4, 1, True), (3, 2, False), (9, 0, False), (4, 0, True)]
)
def test_number_formatter_matches_python_formatting(int_digits, dec, signed):
    """The table-driven formatter spells every value as f"{x:.{dec}f}" (no "-0"), at any width mix."""
    rng = np.random.default_rng([int_digits, dec])
    top = 10.0**int_digits
    mag = np.r_[
        0.0,
        10.0**-dec / 3,
        0.5,
        9.0,
        10.0,
        999.0,
        1000.0,
        9999.0,
        12_345.0,
        top - 10.0**-dec,
        rng.uniform(0, top, 300),
        10.0 ** rng.uniform(-dec, int_digits, 300),
    ]
    v = np.round(mag[mag < top - 10.0**-dec / 2], dec)
    if not dec:
        v = v.astype(np.int64)
    if signed:
        v = np.r_[v, -v, -0.0 * v[:1]] if dec else np.r_[v, -v]
    row, slots = synth._template([b"<", synth._num(v, int_digits, dec, signed), b">\n"])
    mat = np.tile(row, (len(v), 1))
    for off, blk in slots:
        mat[:, off : off + blk.shape[1]] = blk
    got = mat.tobytes().replace(b"\x00", b"").decode().splitlines()
    want = [
        f"<{x:.{dec}f}>".replace("<-0.", "<0.").replace("<-0>", "<0>")
        if float(x) > -(10.0**-dec) / 2
        else f"<{x:.{dec}f}>"
        for x in v.tolist()
    ]
    assert got == want
    with pytest.raises(ValueError, match="does not fit"):
        synth._num(np.array([10.0**int_digits]), int_digits, dec, signed)


def test_bucket_locate_equals_the_binary_search():
    """synth's gather-based chainage lookup gives Centreline._locate's answer exactly, also at
    the line ends, beyond them, on vertices and on bucket edges."""
    rng = np.random.default_rng(3)
    for east, d in ((True, "eastbound"), (False, "westbound")):
        c = geo.load_centreline(d)
        s = np.r_[
            -5.0,
            0.0,
            c.length,
            c.length + 1.0,
            c.chainage,
            np.nextafter(c.chainage, -1.0),
            np.arange(0, c.length, synth.BUCKET_M),
            rng.uniform(0, c.length, 20_000),
        ]
        i, t = synth._locate(np.full(s.shape, east), s)
        ref_i, ref_t = c._locate(s)
        assert np.array_equal(i - (0 if east else synth._lines().offset), ref_i)
        assert np.array_equal(t, ref_t)


# --------------------------------------------------------------------------- schema versions 7..9
def _keys(obj, prefix=""):
    out = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out |= {prefix + k} | _keys(v, prefix + k + ".")
    elif isinstance(obj, list):
        for v in obj:
            out |= _keys(v, prefix)
    return out


def _first_record(root: Path) -> dict:
    return json.loads(next(p for p in sorted(root.rglob("*")) if p.is_file()).read_text().splitlines()[0])


@pytest.mark.parametrize("version", [7, 8, 9])
def test_every_version_ingests_to_what_the_summary_and_the_in_memory_table_say(tmp_path, version):
    s = synth.write_corpus(tmp_path, **DEFECTIVE, schema_version=version)
    r = ingest.ingest_paths([tmp_path], unknown_version="quarantine")
    assert r.counts() == {k: s[k] for k in COUNTS} and set(s["defects"]) == set(synth.KINDS)
    assert set(r.quarantine_reasons()) == {synth.DEFECTS[k].outcome for k in synth.KINDS} - set(synth.NOT_QUARANTINED)
    assert set(r.valid.column("metadata_schemaVersion").to_pylist()) == {version}
    key = [("source_object", "ascending"), ("source_line", "ascending")]
    got = r.valid.set_column(
        r.valid.schema.get_field_index("source_object"),
        "source_object",
        pc.replace_substring_regex(r.valid["source_object"], r"^.*/(wydot/BSM/)", r"\1"),
    )
    assert got.sort_by(key).equals(synth.generate(**DEFECTIVE, schema_version=version).sort_by(key))


def test_v9_records_have_the_shape_of_the_real_v9_samples(tmp_path):
    synth.write_corpus(tmp_path, **PARAMS, schema_version=9)
    ours = _first_record(tmp_path)
    real = json.loads(
        (REAL_DIR / "13_jpo-cvdp_CO-Motorways_test_subset_schemaVersion9.ndjson").read_text().splitlines()[1]
    )
    optional = {"asn1", "originIp", "isCertPresent"}  # a decoded packet's, not a log record's
    assert {k for k in _keys(real["metadata"]) if k.split(".")[0] not in optional} <= _keys(ours["metadata"])
    bsm = lambda rec: rec["payload"]["data"]["value"]["BasicSafetyMessage"]  # noqa: E731
    assert _keys(bsm(real)["coreData"]) - {"angle"} <= _keys(bsm(ours)["coreData"])
    assert _keys(bsm(real)["partII"][0]) <= _keys(bsm(ours)["partII"][0])  # VehicleSafetyExtensions
    assert (ours["payload"]["dataType"], ours["metadata"]["payloadType"]) == (
        real["payload"]["dataType"],
        real["metadata"]["payloadType"],
    )
    core = bsm(ours)["coreData"]
    assert all(isinstance(core[k], int) for k in ("lat", "long", "elev", "speed", "heading"))
    assert ours["metadata"]["schemaVersion"] == 9 and ours["metadata"]["recordGeneratedAt"]


def _v6_and_v9(tmp_path, params: dict) -> dict:
    """{6: table, 9: table}: `params` written as each version on J2735's grid and ingested, with
    the folder taken out of source_object."""
    tables = {}
    for version in (6, 9):
        out = tmp_path / f"v{version}"
        synth.write_corpus(out, **params, schema_version=version, j2735_grid=True)
        valid = ingest.ingest_paths([out], unknown_version="quarantine").valid
        tables[version] = valid.set_column(
            valid.schema.get_field_index("source_object"),
            "source_object",
            pc.replace_substring(valid["source_object"], str(out), ""),
        )
    return tables


def test_v9_corpus_gives_the_table_and_metrics_of_the_same_records_written_as_v6(tmp_path):
    """The same seed written as v6 and as v9 (both on J2735's grid: v9 cannot carry finer
    values, so the v6 copy is written from the same numbers) ingests to the same canonical
    table, apart from which version wrote it and where, and the experiment scores both alike."""
    from wydot_lab import experiment

    tables = _v6_and_v9(tmp_path, DEFECTIVE)
    versioned = ["metadata_schemaVersion", "metadata_payloadType"]
    assert [set(tables[v].column("metadata_schemaVersion").to_pylist()) for v in (6, 9)] == [{6}, {9}]
    assert tables[6].drop(versioned).equals(tables[9].drop(versioned))
    assert tables[6].num_rows == 100 * 24  # records_per_hour x 24 hours
    # the accuracy ellipse: v9's steps, and the default v6 corpus keeps its finer ones
    semi = tables[9].column("coreData_accuracy_semiMajor").to_numpy()
    assert np.allclose(semi * 20, np.rint(semi * 20), atol=1e-9)
    plain = synth.generate(**PARAMS).column("coreData_accuracy_semiMajor").to_numpy()
    assert not np.allclose(plain * 20, np.rint(plain * 20), atol=1e-9)
    params = config.from_dict(
        {
            "attacks": {
                "attacker_share": 0.3,
                "seed": 3,
                "kinds": [{"name": "const_offset", "min_m": 100, "max_m": 200}, {"name": "eventual_stop"}],
            },
            "model": {
                "n_estimators": 10,
                "test_share": 0.3,
                "seed": 5,
                "detectors": ["rules", "random_forest"],
                "min_test_attackers": 1,
            },
        }
    )
    results = [experiment.run(params, tmp_path / f"run{v}", table=tables[v]) for v in (6, 9)]
    pd.testing.assert_frame_equal(results[0], results[1])
    assert results[0]["f1"].notna().any()


def test_cli_schema_version_flag(tmp_path, capsys):
    args = ["synth", "--days", "1", "--vehicles", "5", "--records-per-hour", "20", "--seed", "2"]
    assert cli.main([*args, "--out", str(tmp_path / "v9"), "--schema-version", "9"]) == 0
    assert _first_record(tmp_path / "v9")["metadata"]["schemaVersion"] == 9
    assert cli.main([*args, "--out", str(tmp_path / "v8"), "--schema-version", "8"]) == 0
    md = _first_record(tmp_path / "v8")["metadata"]
    assert (md["schemaVersion"], md["maxDurationTime"], md["odePacketID"]) == (8, 0, "")
    capsys.readouterr()
    assert cli.main([*args, "--out", str(tmp_path / "v10"), "--schema-version", "10"]) == 2
    assert "synth.schema_version" in capsys.readouterr().err
    with pytest.raises(ValueError, match="j2735_grid"):
        synth.write_corpus(tmp_path / "x", **PARAMS, schema_version=9, j2735_grid=False)


def test_a_path_history_too_long_for_j2735_is_refused_not_wrapped(tmp_path):
    with pytest.raises(ValueError, match="latOffset|lonOffset"):  # 0.02 Hz: crumbs span 60 s, ~2 km
        synth.write_corpus(
            tmp_path, "2021-04-01", days=1, vehicles=3, rate_hz=0.02, seed=1, records_per_hour=20, schema_version=9
        )


# --------------------------------------------------------------------------- realism (docs/SYNTHETIC.md)
MESSY = {**PARAMS, "vehicles": 60, "records_per_hour": 300, "realism": {"enabled": True}}


@pytest.fixture(scope="module")
def messy():
    table, truth = synth.generate(**MESSY, truth=True)
    return pd.concat([table.to_pandas(), truth], axis=1)


def _east_north_error(f: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    m_lat, m_lon = synth._m_per_deg(f["true_lat"].to_numpy())
    return (
        (f["coreData_position_long"] - f["true_long"]).to_numpy() * m_lon,
        (f["coreData_position_lat"] - f["true_lat"]).to_numpy() * m_lat,
    )


def test_realism_same_params_same_bytes_and_off_by_default(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    synth.write_corpus(a, **{**MESSY, "defect_share": 0.02})
    synth.write_corpus(b, **{**MESSY, "defect_share": 0.02}, workers=2)
    assert _tree(a) == _tree(b)
    assert config.SynthParams().realism.enabled is False  # the API's corpora stay clean unless asked
    assert config.load(ROOT / "params" / "default.yaml").synth.realism.enabled  # the built-in corpus is messy


def test_gnss_error_drifts_over_tens_of_seconds_and_the_crumbs_share_it(messy):
    """The error is a per-vehicle bias of a few metres that persists message to message
    (10 s apart) but not over minutes; the crumbs carry the error of their own instants,
    so a crumb 10 s old sits near where the previous message was reported."""
    f = messy.sort_values(["metadata_serialId_streamId", "metadata_generatedAt"]).reset_index(drop=True)
    de, dn = _east_north_error(f)
    off_line = np.abs(np.hypot(de, dn)) < 40  # not the ramp runs, whose truth is the lane
    sd = np.sqrt(np.mean(de[off_line] ** 2))
    assert 2.0 < sd < 6.0
    same = f["metadata_serialId_streamId"].to_numpy()[1:] == f["metadata_serialId_streamId"].to_numpy()[:-1]
    dt_s = np.diff(_ms(f["metadata_generatedAt"])) / 1000
    near = same & (dt_s < 11)
    far = same & (dt_s > 100)
    r_near = np.corrcoef(de[:-1][near], de[1:][near])[0, 1]
    assert r_near > 0.7 and (far.sum() < 30 or np.corrcoef(de[:-1][far], de[1:][far])[0, 1] < r_near - 0.2)
    # the crumb nearest 10 s old points at the previous report within a few metres (genuine)
    crumbs = f["partII_pathHistory_crumbData"]
    age = np.array([[c["timeOffset"] for c in row] for row in crumbs])
    c_lat = np.array([[c["latOffset"] for c in row] for row in crumbs])
    c_lon = np.array([[c["lonOffset"] for c in row] for row in crumbs])
    rows = np.flatnonzero(near) + 1
    age0 = np.c_[np.zeros(len(rows)), age[rows]]  # the current report is the crumb of age 0
    lat0 = np.c_[np.zeros(len(rows)), c_lat[rows]]
    lon0 = np.c_[np.zeros(len(rows)), c_lon[rows]]
    want = dt_s[rows - 1]
    j = np.clip((age0 < want[:, None]).sum(1), 1, age0.shape[1] - 1)  # bracket the previous message's age
    r = np.arange(len(rows))
    w = (want - age0[r, j - 1]) / (age0[r, j] - age0[r, j - 1])
    plat = f["coreData_position_lat"].to_numpy()[rows] + CRUMB_SIGN * (
        lat0[r, j - 1] + w * (lat0[r, j] - lat0[r, j - 1])
    )
    plon = f["coreData_position_long"].to_numpy()[rows] + CRUMB_SIGN * (
        lon0[r, j - 1] + w * (lon0[r, j] - lon0[r, j - 1])
    )
    m_lat, m_lon = synth._m_per_deg(plat)
    gap = np.hypot(
        (plat - f["coreData_position_lat"].to_numpy()[rows - 1]) * m_lat,
        (plon - f["coreData_position_long"].to_numpy()[rows - 1]) * m_lon,
    )
    assert np.median(gap) < 3.0  # the previous report's own error, within the white jitter and curvature


def test_semi_major_follows_the_vehicle_with_cap_and_unavailable(messy):
    sm = messy["coreData_accuracy_semiMajor"]
    assert sm.isna().any() and (sm == 12.7).any() and sm.max() <= 12.7
    assert np.allclose(sm.dropna() * 20, np.rint(sm.dropna() * 20))
    de, dn = _east_north_error(messy)
    err = np.hypot(de, dn)
    big = sm > 8
    assert np.median(err[big.to_numpy()]) > 2 * np.median(err[(sm < 4).to_numpy()])  # reported and real agree


def test_slowdowns_stops_and_the_privacy_floor(messy):
    v = messy["coreData_speed"]
    assert v.between(*synth.PRIVACY_MPS).all()  # the publisher dropped the rest
    assert (v < 10).mean() > 0.01 and (v < 5).any()
    std = messy.groupby("metadata_serialId_streamId")["coreData_speed"].std()
    assert (std > 3).mean() > 0.05  # some runs brake or accelerate hard


def test_ramps_heading_and_yaw_disagree_with_the_road_there(messy):
    direction = np.where(messy["eastbound"], "eastbound", "westbound")
    d = geo.distance_to_centreline(messy["coreData_position_lat"], messy["coreData_position_long"], direction)
    assert (d > 30).mean() > 0.005 and np.median(d) < 6
    road = geo.distance_to_centreline(messy["true_lat"], messy["true_long"], direction)
    ramp = road > 10
    bearing = geo.road_bearing_deg(messy["true_lat"].to_numpy(), messy["true_long"].to_numpy())
    diff = np.abs(geo.angle_diff_deg(messy["coreData_heading"].to_numpy(), bearing))
    assert np.percentile(diff[ramp], 90) > 15 and (diff[ramp] > 20).any()  # real: 18-110 deg near ramps
    assert 0.2 < np.median(diff[~ramp]) < 2 and np.percentile(diff[~ramp], 99) < 10  # noisy, never the map's exactly
    yaw = messy["coreData_accelset_accelYaw"]
    assert yaw[~ramp].std() > 0.1 and np.abs(yaw[ramp]).median() > np.abs(yaw[~ramp]).median()


def test_runs_are_irregular_jittered_and_lossy(messy):
    f, same = _runs(messy[messy["metadata_recordType"] == "bsmTx"])  # the senders' own logs
    t = _ms(f["metadata_generatedAt"])
    step = np.diff(t)[same]
    assert (step % 10_000 != 0).mean() > 0.5 and np.abs(step - np.rint(step / 10_000) * 10_000).max() < 100
    assert (step > 15_000).mean() > 0.02  # lost messages
    cnt = np.mod(np.diff(f["coreData_msgCnt"].to_numpy())[same], 128)
    assert np.array_equal(cnt, np.rint(step / 10_000).astype(int))  # msgCnt counts what was sent
    assert np.array_equal(f["coreData_secMark"].to_numpy(), t % 60_000)
    sizes = f.groupby("metadata_serialId_streamId").size()
    assert sizes.nunique() > 10 and sizes.max() <= 34


def test_temporary_ids_rotate_only_when_asked():
    table = synth.generate(**{**MESSY, "realism": {"enabled": True, "id_rotation_s": 60}}).to_pandas()
    ids_per_run = table.groupby("metadata_serialId_streamId")["coreData_id"].nunique()
    assert (ids_per_run > 1).mean() > 0.5 and table["coreData_id"].str.fullmatch(r"[0-9A-F]{8}").all()


def test_messy_v6_and_v9_ingest_alike(tmp_path):
    tables = _v6_and_v9(tmp_path, MESSY)
    versioned = ["metadata_schemaVersion", "metadata_payloadType"]
    assert tables[6].drop(versioned).equals(tables[9].drop(versioned))
    assert tables[6].column("coreData_accuracy_semiMajor").null_count > 0


def test_received_copies_carry_the_payload_and_the_receivers_log(messy):
    """Some runs were also logged by a connected vehicle in radio range: rxMsg / RV copies of a
    stretch of the run, the sender's payload unchanged, the receiver's log time (0.15-0.5 s
    later), log file and position; dedup collapses them onto the sender's own records."""
    from wydot_lab import dedup

    rx = (messy["metadata_recordType"] == "rxMsg").to_numpy()
    assert 0.01 < rx.mean() < 0.2
    assert (messy.loc[rx, "metadata_bsmSource"] == "RV").all() and (messy.loc[~rx, "metadata_bsmSource"] == "EV").all()
    assert messy.loc[rx, "metadata_logFileName"].str.startswith("rxMsg_").all()
    ids = dedup.transmission_ids(messy)
    assert len(np.unique(ids)) == (~rx).sum() and len(np.unique(ids[rx])) == rx.sum()
    own = pd.Series(np.flatnonzero(~rx), index=ids[~rx])
    twin = own.loc[ids[rx]].to_numpy()  # each copy's own record
    payload = ["coreData_id", "coreData_msgCnt", "coreData_secMark", "coreData_position_lat", "coreData_speed"]
    pd.testing.assert_frame_equal(
        messy.iloc[np.flatnonzero(rx)][payload].reset_index(drop=True), messy.iloc[twin][payload].reset_index(drop=True)
    )
    lag = _ms(messy["metadata_generatedAt"])[rx] - _ms(messy["metadata_generatedAt"])[twin]
    assert lag.min() >= 150 and lag.max() <= 500
    m_lat, m_lon = synth._m_per_deg(messy["true_lat"].to_numpy()[rx])
    gap = np.hypot(
        (messy["metadata_rmd_latitude"].to_numpy()[rx] - messy["true_lat"].to_numpy()[rx]) * m_lat,
        (messy["metadata_rmd_longitude"].to_numpy()[rx] - messy["true_long"].to_numpy()[rx]) * m_lon,
    )
    assert gap.max() < 310 and np.median(gap) > 30  # the receiver, in radio range, not the sender
    own_rows = ~rx
    np.testing.assert_array_equal(
        messy["metadata_rmd_latitude"].to_numpy()[own_rows], messy["coreData_position_lat"].to_numpy()[own_rows]
    )
