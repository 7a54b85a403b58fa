"""Per-vehicle features: known answers on hand-made tracks, rolling windows, Dask on a real
LocalCluster equal to the pandas path, and the feature docs matching the code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from wydot_lab import attacks, features
from wydot_lab.frames import ID, TIME

import bsm_frames
from conftest import ROOT


def _feats(table: pa.Table, window: int = 5) -> pd.DataFrame:
    return features.featurize_frame(bsm_frames.frame(table), window)


def test_constant_speed_straight_line_known_answers():
    v = 25.0
    f = _feats(bsm_frames.straight_line(speed=v, n=20, heading=90.0))
    rest = f.iloc[1:]
    assert np.isnan(f["dt_s"].iloc[0]) and np.allclose(rest["dt_s"], 1.0)
    assert np.allclose(rest["implied_speed_mps"], v, atol=0.03)  # 1e-7 degree rounding ~ 1 cm
    assert np.abs(rest["speed_residual_mps"]).max() < 0.03
    assert rest["heading_bearing_diff_deg"].max() < 0.1
    assert np.allclose(rest[["delta_speed_mps", "delta_heading_deg", "accel_implied_mps2"]], 0.0)
    assert f["speed_residual_std_w"].max() < 0.03
    assert f["crumb_prev_err_m"].iloc[1:].max() < 0.05
    assert np.abs(f["crumb_speed_residual_mps"]).max() < 0.03
    assert f["crumb_heading_diff_deg"].max() < 0.1
    kinematic = [
        "flag_speed",
        "flag_position_jump",
        "flag_speed_change",
        "flag_position_speed",
        "flag_heading",
        "flag_beacon",
        "flag_sudden_appearance",
    ]
    assert (f[kinematic] == 0).all().all()


def test_reported_heading_against_travel_and_speed_against_motion():
    f = _feats(bsm_frames.straight_line(speed=20.0, n=10, heading=0.0))
    # same track, but it claims to drive south at 35 m/s
    g = _feats(
        bsm_frames.replaced(
            bsm_frames.straight_line(speed=20.0, n=10, heading=0.0),
            coreData_heading=[180.0] * 10,
            coreData_speed=[37.0] * 10,
        )
    )
    assert np.allclose(g["heading_bearing_diff_deg"].iloc[1:], 180.0, atol=0.1)
    assert (g["flag_heading"].iloc[1:] == 1).all() and (f["flag_heading"] == 0).all()
    assert np.allclose(g["speed_residual_mps"].iloc[1:], 17.0, atol=0.05)
    assert (g["flag_speed"] == 1).all() and (g["flag_position_speed"].iloc[1:] == 1).all()
    assert np.allclose(g["crumb_speed_residual_mps"], 17.0, atol=0.05)
    assert np.allclose(g["crumb_heading_diff_deg"], 180.0, atol=0.1)


def test_sudden_appearance_only_for_received_messages_near_their_receiver():
    """Two runs of one vehicle (a 10-minute silence), heard by a receiver 100 m from where each
    run starts. As received messages (rxMsg) both run starts are sudden; in the vehicle's own
    log (bsmTx, the "receiver" is itself) none is; a receiver 1 km away sees nothing sudden."""
    table = bsm_frames.later(bsm_frames.straight_line(speed=20.0, n=20), 600, from_row=10)
    lat, lon = table.column("coreData_position_lat").to_numpy(), table.column("coreData_position_long").to_numpy()

    def heard(record_type: str, away_m: float) -> np.ndarray:
        rlat = np.where(np.arange(20) < 10, lat[0], lat[10]) + away_m / 111_195.0
        f = bsm_frames.frame(table)
        f["metadata_recordType"] = pd.array([record_type] * 20, dtype=f["metadata_recordType"].dtype)
        f["metadata_rmd_latitude"], f["metadata_rmd_longitude"] = rlat, np.where(np.arange(20) < 10, lon[0], lon[10])
        return features.featurize_frame(f)["flag_sudden_appearance"].to_numpy()

    assert np.flatnonzero(heard("rxMsg", 100.0)).tolist() == [0, 10]
    assert not heard("bsmTx", 100.0).any() and not heard("bsmTx", 0.0).any()
    assert not heard("rxMsg", 1000.0).any()


def test_pairwise_checks_cover_every_pair_of_a_run_whatever_the_period():
    """10 s sampling with a millisecond of jitter: the F2MD pair checks still compare every
    consecutive pair of the run (a fixed 10 s cut-off silently skipped half of them)."""
    f = _feats(bsm_frames.replaced(bsm_frames.straight_line(speed=20.0, n=10, dt=10.001), coreData_speed=[35.0] * 10))
    assert (f["flag_position_speed"].iloc[1:] == 1).all() and f["flag_position_speed"].iloc[0] == 0


@pytest.mark.parametrize("speed, flagged", [(20.0, 0), (35.7, 0), (2.3, 0), (36.0, 1), (1.0, 1), (0.0, 1)])
def test_speed_flag_is_the_privacy_window(speed, flagged):
    """Published WYDOT data passed the privacy filter (5..80 mph): a stop or a crawl is as
    implausible there as a speed above the cap."""
    f = _feats(bsm_frames.straight_line(speed=speed, n=5))
    assert (f["flag_speed"] == flagged).all()


def _spread(s: pd.Series) -> pd.Series:
    """Population std over the last 4 values, NaN below two (one value: no spread known)."""
    r = s.rolling(4, min_periods=1)
    return r.std(ddof=0).where(r.count() >= 2)


def test_rolling_windows_match_pandas_per_run():
    frame = bsm_frames.frame(bsm_frames.corridor(vehicles=5, msgs=25, seed=3, gap_every=8))
    f = features.featurize_frame(frame, 4)
    run = features.within_run(f)
    run_id = (~run).cumsum()  # rows are sorted by vehicle and time; a vehicle's first row starts a run
    assert (run_id.max(), (~run).sum()) == (5 * 4, 5 * 4)  # 3 silences per vehicle
    resid = f["speed_residual_mps"].where(run)  # a run's first residual spans the silence
    grp = resid.groupby(run_id)
    mean = grp.transform(lambda s: s.rolling(4, min_periods=1).mean())
    std = grp.transform(_spread)
    assert np.allclose(f["speed_residual_mean_w"], mean, equal_nan=True)
    assert np.allclose(f["speed_residual_std_w"], std, atol=1e-6, equal_nan=True)
    speed_std = f["speed_mps"].groupby(run_id).transform(_spread)
    assert np.allclose(f["speed_std_w"], speed_std, atol=1e-9, equal_nan=True)
    # never across vehicles or silences: every run's first row has no history
    assert f.loc[~run, "speed_residual_mean_w"].isna().all() and f.loc[~run, "heading_bearing_diff_mean_w"].isna().all()
    assert f.loc[~run, "speed_std_w"].isna().all()  # one value: its spread is unknown


def test_a_silence_leaves_no_trace_in_the_next_runs_windows():
    """A vehicle silent for 10 minutes that reappears where it left: the residual across the
    gap is the whole reported speed, but the new run's windows only see the new run."""
    table = bsm_frames.later(bsm_frames.straight_line(speed=25.0, n=30), 600, from_row=15)
    f = features.featurize_frame(bsm_frames.frame(table), 5)
    assert f["dt_s"].iloc[15] > features.RUN_GAP_S  # the silence itself is kept
    assert f[list(features.SINCE_PREVIOUS[1:])].iloc[15].isna().all()  # the rest would describe the gap
    assert np.isnan(f["delta_accel_mps2"].iloc[16]) and np.isfinite(f["delta_accel_mps2"].iloc[17])
    after = f.iloc[15:20]
    assert np.isnan(after["speed_residual_mean_w"].iloc[0])
    assert np.abs(after["speed_residual_mean_w"].iloc[1:]).max() < 0.05
    assert after["speed_residual_std_w"].iloc[1:].max() < 0.05


def test_row_order_does_not_matter():
    frame = bsm_frames.frame(bsm_frames.corridor(vehicles=6, msgs=15, seed=4))
    a = features.featurize_frame(frame)
    b = features.featurize_frame(frame.sample(frac=1.0, random_state=3))
    pd.testing.assert_frame_equal(a.sort_index(), b.sort_index())


def test_no_identity_features_and_enough_of_them():
    assert len(features.FEATURES) >= 17
    banned = ("id", "msgcnt", "secmark", "generatedat", "time", "x_m", "y_m", "lat", "lon", "elevation")
    for name in features.FEATURES:
        assert not any(b == name.lower() or name.lower().startswith(b + "_") for b in banned), name
    assert not set(features.REFERENCE) & set(features.FEATURES)


def test_path_history_catches_naive_position_falsification():
    clean = bsm_frames.frame(bsm_frames.corridor(vehicles=10, msgs=20, seed=6))
    att = attacks.choose_attackers(clean[ID], 0.5, np.random.default_rng(0))
    out = attacks.apply(clean, {"name": "random_offset", "min_m": 10, "max_m": 20}, att, np.random.default_rng(1))
    f = features.featurize_frame(out)
    err = f["crumb_prev_err_m"]
    assert err[f["is_attack"]].median() > 10 > 3 > err[~f["is_attack"]].quantile(0.95)


def test_heading_against_the_road_at_the_reported_position():
    """A position taken from elsewhere on I-80 (position_swap) rarely lies on a stretch running
    the way the vehicle heads; a reversed heading reads ~180 deg; genuine messages agree."""
    clean = bsm_frames.frame(bsm_frames.corridor(vehicles=10, msgs=20, seed=6))
    att = attacks.choose_attackers(clean[ID], 0.5, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    swapped = features.featurize_frame(attacks.apply(clean, {"name": "position_swap"}, att, rng))
    genuine = swapped.loc[~swapped["is_attack"], "heading_road_diff_deg"]
    assert genuine.quantile(0.99) < 5.0
    assert (swapped.loc[swapped["is_attack"], "heading_road_diff_deg"] > 10).mean() > 0.5
    reversed_ = features.featurize_frame(attacks.apply(clean, {"name": "heading_reversal"}, att, rng))
    assert (reversed_.loc[reversed_["is_attack"], "heading_road_diff_deg"] > 170).all()


def test_crumb_convention_matches_real_wydot_records():
    """Real path histories trail behind the vehicle: bearing from the latest crumb to the
    reported position agrees with the reported heading (guards frames.CRUMB_SIGN)."""
    from wydot_lab import ingest

    real = bsm_frames.frame(ingest.ingest_paths([ROOT / "test_data" / "real_wydot"]).valid)
    f = features.featurize_frame(real)
    moving = f[(f["speed_mps"] > 5) & f["crumb_heading_diff_deg"].notna()]
    assert len(moving) >= 5
    assert moving["crumb_heading_diff_deg"].median() < 10
    assert np.abs(moving["crumb_speed_residual_mps"]).median() < 2


def test_within_run_leaves_out_what_crosses_a_silence():
    table = bsm_frames.corridor(vehicles=3, msgs=30, gap_every=10)  # 10-minute silences
    f = features.featurize_frame(bsm_frames.frame(table), 5)
    run = features.within_run(f)
    starts = f.groupby(ID)[TIME].rank(method="first").to_numpy() == 1
    gaps = f["dt_s"].to_numpy() > features.RUN_GAP_S
    assert gaps.sum() == 3 * 2 and not run[gaps].any() and not run[starts].any()
    assert run[~gaps & ~starts].all()
    assert f.loc[run, "dt_s"].max() <= features.RUN_GAP_S < f.loc[gaps, "dt_s"].min()
    assert set(features.SINCE_PREVIOUS) <= set(features.FEATURES)


def test_first_run_is_one_trip_in_time_order():
    two_trips = bsm_frames.later(bsm_frames.straight_line(n=20), 600, from_row=12)
    other = bsm_frames.straight_line(n=5, vid="0000000B")
    frame = bsm_frames.frame(pa.concat_tables([two_trips, other])).sample(frac=1.0, random_state=2)
    run = features.first_run(frame, "0000000A")
    assert run[ID].eq("0000000A").all() and len(run) == 12 and run[TIME].is_monotonic_increasing
    assert len(features.first_run(frame, "0000000A", limit=5)) == 5


def test_features_doc_is_generated_from_the_code():
    assert (ROOT / "docs" / "FEATURES.md").read_text() == features.markdown()


@pytest.mark.timeout(180)
def test_dask_on_local_cluster_equals_pandas():
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    frame = bsm_frames.frame(bsm_frames.corridor(vehicles=9, msgs=20, seed=8, gap_every=6))
    frame = frame.sample(frac=1.0, random_state=0)
    expected = features.featurize_frame(frame, 3).sort_index()
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        ddf = dd.from_pandas(frame, npartitions=3)
        got = features.featurize(ddf, 3).compute(scheduler=client).sort_index()
    assert len(got) == len(frame)
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)
    assert list(got[TIME].dtype.__str__()) == list(expected[TIME].dtype.__str__())


@pytest.mark.parametrize(
    "logged, sec_mark, sent",
    [
        ("12:00:30.000", 30500, "12:00:30.500"),
        ("12:00:00.200", 59900, "11:59:59.900"),  # sent in the minute before the logger's stamp
        ("12:00:59.900", 100, "12:01:00.100"),  # and in the minute after
        ("12:00:30.000", None, "12:00:30.000"),  # secMark unavailable: the logger's time
        ("12:00:30.000", 61000, "12:00:30.000"),  # out of range
    ],
)
def test_time_sent_is_the_secmark_in_the_minute_nearest_the_log_stamp(logged, sec_mark, sent):
    from wydot_lab.frames import sent_ns

    frame = pd.DataFrame(
        {
            TIME: pd.to_datetime([f"2021-04-01 {logged}"], utc=True),
            "coreData_secMark": pd.array([sec_mark], dtype="Int32"),
        }
    )
    assert sent_ns(frame)[0] == pd.Timestamp(f"2021-04-01 {sent}", tz="UTC").value


def test_batched_receiver_stamps_keep_the_senders_time_steps():
    """Two messages of one vehicle, 100 ms apart by secMark, that a receiver's rxMsg log
    stamped with one generatedAt (as in test_data/real_wydot/04_*), listed newest first."""
    from wydot_lab import ingest

    from conftest import REAL_DIR

    real = bsm_frames.frame(ingest.ingest_paths([REAL_DIR]).valid)
    pair = real[real["coreData_msgCnt"].isin([53, 54]) & (real["metadata_recordType"] == "rxMsg")]
    assert pair[TIME].nunique() == 1 and list(pair["coreData_msgCnt"]) == [54, 53]
    f = features.featurize_frame(pair.reset_index(drop=True))
    assert f.loc[0, "dt_s"] == pytest.approx(0.1) and np.isnan(f.loc[1, "dt_s"])  # msgCnt 54 after 53
    assert f["flag_beacon"].sum() == 0


def test_schema_version_1_keeps_the_processing_stamp():
    """v1 generatedAt is ODE's processing time: no anchor for secMark's minute."""
    from wydot_lab.frames import sent_ns

    frame = pd.DataFrame(
        {
            TIME: pd.to_datetime(["2021-04-01 12:00:30"] * 2, utc=True),
            "coreData_secMark": pd.array([1000, 1000], dtype="Int32"),
            "metadata_schemaVersion": pd.array([1, 6], dtype="Int8"),
        }
    )
    t = sent_ns(frame)
    assert t[0] == pd.Timestamp("2021-04-01 12:00:30", tz="UTC").value
    assert t[1] == pd.Timestamp("2021-04-01 12:00:01", tz="UTC").value


def test_position_jump_spans_a_silence_the_other_pair_checks_do_not():
    """60 s of silence, then the vehicle reports 10 km away at half its speed: no silence makes
    10 km in 61 s plausible, but the speed change belongs to no pair of one run."""
    line = bsm_frames.later(bsm_frames.straight_line(n=10), 60.0, from_row=5)
    lat = line.column("coreData_position_lat").to_numpy().copy()
    lat[5:] += 0.09  # ~10 km north
    speed = line.column("coreData_speed").to_numpy().copy()
    speed[5:] /= 2
    f = _feats(bsm_frames.replaced(line, coreData_position_lat=lat, coreData_speed=speed))
    start = features.within_run(f).tolist().index(False, 1)  # the second run's first message
    assert start == 5
    assert f["flag_position_jump"].tolist() == [0.0] * 5 + [1.0] + [0.0] * 4
    assert f["flag_speed_change"].sum() == 0 and f["flag_position_speed"].iloc[start] == 0
