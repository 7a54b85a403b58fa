"""Vehicle-disjoint split (and its leak assertion), metrics on known answers, detectors, model files."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bsm_frames
from wydot_lab import attacks, config, features, models
from wydot_lab.frames import ID, TIME


def _toy(n_veh: int = 20, per: int = 6, days: int = 3) -> pd.DataFrame:
    ids = np.repeat([f"{i:08X}" for i in range(n_veh)], per)
    t = pd.Timestamp("2021-04-01", tz="UTC") + pd.to_timedelta(np.arange(n_veh * per) % days, unit="D")
    return pd.DataFrame({ID: ids, TIME: t, "v": np.arange(n_veh * per)})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_is_vehicle_disjoint(seed):
    f = _toy()
    train, test = models.split(f, 0.3, seed)
    assert not set(train[ID]) & set(test[ID])
    assert len(train) + len(test) == len(f)
    assert test[ID].nunique() == 6
    again = models.split(f, 0.3, seed)[1]
    assert test.index.equals(again.index)


def test_split_by_day_is_vehicle_and_day_disjoint():
    f = _toy()
    train, test = models.split(f, 0.34, 4, by_day=True)
    assert not set(train[ID]) & set(test[ID])
    day = lambda d: set(d[TIME].dt.date)  # noqa: E731
    assert not day(train) & day(test) and len(train) and len(test)


def test_split_by_day_on_one_day_names_the_key_and_the_day():
    f = _toy(days=1)
    with pytest.raises(ValueError, match=r"model.split vehicle_day .* all on \d{4}-\d\d-\d\d"):
        models.split(f, 0.34, 4, by_day=True)


def test_leak_assertion_fires_on_shared_vehicles_and_days():
    f = _toy()
    with pytest.raises(models.LeakError, match="share 2 vehicle ids"):
        models.check_disjoint(f.iloc[:10], f.iloc[5:12])
    a, b = f[f[ID] == "00000000"], f[f[ID] == "00000001"]
    models.check_disjoint(a, b)
    with pytest.raises(models.LeakError, match="days"):
        models.check_disjoint(a, b, by_day=True)


def test_binary_metrics_known_answer():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    pred = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
    score = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.1, 0.0])
    m = models.binary_metrics(y, pred, score)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 4)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # ranking: attacks at 1, 2 and 4 -> AP = (1 + 1 + 3/4) / 3
    assert m["pr_auc"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert np.isnan(models.binary_metrics(y[:0] | True, pred[:0], score[:0])["pr_auc"])
    none = models.binary_metrics(np.zeros(4, bool), np.zeros(4, bool), np.zeros(4))
    assert np.isnan(none["f1"]) and np.isnan(none["recall"]) and none["tn"] == 4  # no attacks: undefined


def test_f1_with_nothing_to_catch_is_undefined_with_or_without_a_false_alarm():
    y = np.zeros(6, bool)
    for pred in (np.zeros(6, bool), np.r_[True, np.zeros(5, bool)]):
        m = models.binary_metrics(y, pred, pred.astype(float))
        assert np.isnan(m["f1"]) and np.isnan(m["recall"]) and m["fp"] == pred.sum()


def test_vehicle_level_aggregation():
    ids = np.array(["a"] * 5 + ["b"] * 5 + ["c"] * 5)
    y = np.array([0, 0, 1, 1, 1] + [0] * 5 + [0] * 5, bool)
    pred = np.array([0, 0, 0, 1, 1] + [1, 0, 0, 0, 0] + [0] * 5, bool)
    score = pred.astype(float)
    vy, vp, vs = models.vehicle_level(ids, y, pred, score)
    assert list(vy) == [True, False, False]
    assert list(vp) == [True, True, False]  # 1/5 flagged reaches VEHICLE_SHARE = 0.2
    assert list(vs) == pytest.approx([0.4, 0.2, 0.0])


def test_detectors_learn_an_attack_and_save_with_their_features(tmp_path):
    clean = bsm_frames.frame(bsm_frames.corridor(vehicles=16, msgs=20, seed=9))
    att = attacks.choose_attackers(clean[ID], 0.5, np.random.default_rng(0))
    f = features.featurize_frame(attacks.apply(clean, {"name": "random_offset", "min_m": 50, "max_m": 100},
                                               att, np.random.default_rng(1)))
    train, test = models.split(f, 0.4, 0)
    p = config.ModelParams(n_estimators=20)
    scores = {}
    for name in models.DETECTORS:
        det = models.make_detector(name, p).fit(train, train["is_attack"].to_numpy(bool))
        scores[name] = models.evaluate(det, test)["message"]["f1"]
        path = models.save_model(det, tmp_path / f"{name}.joblib", {"detector": name})
        back = models.load_model(path)
        assert back["features"] == det.features and back["meta"] == {"detector": name}
        assert np.array_equal(back["detector"].score(test), det.score(test))
    assert scores["random_forest"] > 0.9 and scores["rules"] > 0.5
    assert models.make_detector("position_only", p).features == features.REFERENCE
    assert set(models.make_detector("random_forest", p).features) == set(features.FEATURES)
    with pytest.raises(ValueError, match="unknown detector 'svm'"):
        models.make_detector("svm", p)


@pytest.mark.parametrize("share", [0.05, 0.3])
def test_split_puts_attackers_on_both_sides_even_at_a_low_share(share):
    """At 5% a plain group shuffle can leave the test set without attackers (F1 undefined)."""
    vehicles = [f"{i:08X}" for i in range(100)]
    frame = pd.DataFrame({ID: np.repeat(vehicles, 3)})
    n_attackers = int(share * len(vehicles))
    frame["is_attacker"] = np.repeat(np.arange(len(vehicles)) < n_attackers, 3)
    for seed in range(20):
        train, test = models.split(frame, test_share=0.3, seed=seed)
        assert train.is_attacker.any() and test.is_attacker.any()
        assert not set(train[ID]) & set(test[ID])
        assert abs(test[ID].nunique() - 30) <= 1


@pytest.mark.parametrize("name", sorted(models.DETECTORS))
def test_every_detector_fits_runs_of_two_messages(name):
    """Runs of two messages leave some features without a single value (delta_accel needs three
    messages, a window std two values): every detector still fits and scores."""
    clean = bsm_frames.frame(bsm_frames.corridor(vehicles=12, msgs=8, seed=4, gap_every=2))
    att = attacks.choose_attackers(clean[ID], 0.5, np.random.default_rng(0))
    f = features.featurize_frame(attacks.apply(clean, {"name": "const_offset", "min_m": 100, "max_m": 200},
                                               att, np.random.default_rng(1)))
    assert f["delta_accel_mps2"].isna().all() and f["speed_residual_std_w"].isna().all()
    det = models.make_detector(name, config.ModelParams(n_estimators=10)).fit(f, f["is_attack"].to_numpy(bool))
    score = det.score(f)
    assert score.shape == (len(f),) and np.isfinite(score).all()


def test_a_detector_on_one_feature_fits_and_scores():
    """One float column comes back from pandas as a read-only view; the empty-column fill wrote into it."""
    clean = bsm_frames.frame(bsm_frames.corridor(vehicles=12, msgs=8, seed=4, gap_every=2))
    att = attacks.choose_attackers(clean[ID], 0.5, np.random.default_rng(0))
    f = features.featurize_frame(attacks.apply(clean, {"name": "const_offset", "min_m": 100, "max_m": 200},
                                               att, np.random.default_rng(1)))
    from sklearn.ensemble import RandomForestClassifier

    det = models.SklearnDetector(RandomForestClassifier(n_estimators=5, random_state=0), ["dist_centreline_m"])
    score = det.fit(f, f["is_attack"].to_numpy(bool)).score(f)
    assert score.shape == (len(f),) and np.isfinite(score).all()


def test_novelty_detector_learns_from_genuine_messages_only():
    """isolation_forest never sees an attacked row: fitting with or without them is the same
    model, and it scores far-off rows above the genuine ones it was fitted on."""
    rng = np.random.default_rng(0)
    feats = models.HISTORY
    genuine = pd.DataFrame(rng.normal(0, 1, (400, len(feats))), columns=feats)
    genuine.iloc[::7, 3] = np.nan  # missing values take the training medians
    odd = pd.DataFrame(rng.normal(8, 1, (40, len(feats))), columns=feats)
    X = pd.concat([genuine, odd], ignore_index=True)
    y = np.r_[np.zeros(400, bool), np.ones(40, bool)]
    p = config.ModelParams(n_estimators=50, seed=1)
    a = models.make_detector("isolation_forest", p).fit(X, y)
    b = models.make_detector("isolation_forest", p).fit(genuine, np.zeros(400, bool))
    np.testing.assert_array_equal(a.score(X), b.score(X))
    pred = a.predict(X)
    assert pred[400:].all() and pred[:400].mean() <= 0.05  # the cut flags ~1 % of genuine training rows
