"""evaluation.py on hand-built frames whose answers are worked out by hand (or by a plain loop)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, recall_score

from wydot_lab import evaluation as ev


def _t(seconds) -> np.ndarray:
    return np.datetime64("2021-04-01T00:00:00", "ns") + (np.asarray(seconds, float) * 1e9).astype("timedelta64[ns]")


# ---------------------------------------------------------------- bootstrap


def test_vehicle_confusion_counts_each_vehicle():
    ids = np.array(["b", "a", "a", "b", "c", "a"])
    y = np.array([1, 1, 0, 0, 0, 1], bool)
    pred = np.array([1, 0, 1, 0, 0, 1], bool)
    c = ev.vehicle_confusion(ids, y, pred)
    assert list(c.index) == ["a", "b", "c"]
    # a: (y1,p0)=fn, (y0,p1)=fp, (y1,p1)=tp; b: tp, tn; c: tn
    assert c.loc["a", list(ev.COUNTS)].tolist() == [1, 1, 1, 0]
    assert c.loc["b", list(ev.COUNTS)].tolist() == [1, 0, 0, 1]
    assert c.loc["c", list(ev.COUNTS)].tolist() == [0, 0, 0, 1]
    assert c["attacker"].tolist() == [True, True, False]


def test_f1_recall_by_hand_and_undefined():
    f1, rec = ev.f1_recall(np.array([[3, 1, 1, 5], [0, 2, 0, 7]]))
    assert f1[0] == pytest.approx(6 / 8) and rec[0] == pytest.approx(3 / 4)
    assert np.isnan(f1[1]) and np.isnan(rec[1])  # nothing to catch: undefined, not 0


def test_resampled_totals_equal_rebuilding_the_messages():
    """The matrix product is the bootstrap: rebuilding each resample's messages (each vehicle's
    messages repeated as often as it was drawn) gives the same F1 and recall."""
    rng = np.random.default_rng(3)
    ids = rng.choice(list("abcdefgh"), size=200)
    y = np.isin(ids, list("abc")) & (rng.random(200) < 0.7)
    pred = rng.random(200) < np.where(y, 0.8, 0.1)
    conf = ev.vehicle_confusion(ids, y, pred)
    w = ev.resample_weights(conf["attacker"].to_numpy(), 25, np.random.default_rng(0))
    f1, rec = ev.f1_recall(w @ conf[list(ev.COUNTS)].to_numpy())
    for b in range(25):
        keep = np.concatenate(
            [np.flatnonzero(ids == v).repeat(1) for v in conf.index for _ in range(w[b, list(conf.index).index(v)])]
        )
        if not y[keep].any():
            assert np.isnan(f1[b])
            continue
        assert f1[b] == pytest.approx(f1_score(y[keep], pred[keep]))
        assert rec[b] == pytest.approx(recall_score(y[keep], pred[keep]))


def test_resampling_keeps_each_stratum_size():
    strata = np.array([True, False, False, True, False, True, False])
    w = ev.resample_weights(strata, 500, np.random.default_rng(1))
    assert (w[:, strata].sum(axis=1) == 3).all() and (w[:, ~strata].sum(axis=1) == 4).all()
    # every vehicle is drawn sometimes and none always
    assert (w > 0).any(axis=0).all() and (w == 0).any(axis=0).all()


def test_interval_of_one_vehicle_per_side_is_the_point():
    conf = ev.vehicle_confusion(
        np.array(["a", "a", "a", "g", "g"]), np.array([1, 1, 1, 0, 0], bool), np.array([1, 1, 0, 1, 0], bool)
    )
    ci = ev.bootstrap_interval(conf, 200, np.random.default_rng(0))
    # tp 2, fn 1, fp 1: F1 4/6, recall 2/3, whatever is resampled
    assert ci["f1"] == pytest.approx([4 / 6, 4 / 6]) and ci["recall"] == pytest.approx([2 / 3, 2 / 3])


def test_interval_spans_a_caught_and_a_missed_attacker():
    """Attacker a caught (2 tp), attacker b missed (2 fn): resamples {a,a}, {a,b}, {b,b} give
    recall 1, 0.5, 0 with probability 1/4, 1/2, 1/4, so the 95 % interval is [0, 1]."""
    conf = ev.vehicle_confusion(np.array(["a", "a", "b", "b"]), np.ones(4, bool), np.array([1, 1, 0, 0], bool))
    ci = ev.bootstrap_interval(conf, 4000, np.random.default_rng(5))
    assert ci["recall"] == [0.0, 1.0]
    # the same seed gives the same interval, another seed the same here (the bounds are exact)
    assert ev.bootstrap_interval(conf, 4000, np.random.default_rng(5)) == ci


def test_interval_is_reproducible_and_brackets_the_point():
    rng = np.random.default_rng(11)
    ids = np.repeat([f"v{i}" for i in range(30)], 20)
    y = np.isin(ids, [f"v{i}" for i in range(8)]) & (rng.random(len(ids)) < 0.9)
    pred = rng.random(len(ids)) < np.where(y, 0.85, 0.05)
    conf = ev.vehicle_confusion(ids, y, pred)
    a = ev.bootstrap_interval(conf, 1000, np.random.default_rng(42))
    assert a == ev.bootstrap_interval(conf, 1000, np.random.default_rng(42))
    assert a != ev.bootstrap_interval(conf, 1000, np.random.default_rng(43))
    point = f1_score(y, pred)
    assert a["f1"][0] < point < a["f1"][1]
    assert a["recall"][0] < recall_score(y, pred) < a["recall"][1]


def test_no_attacker_gives_nan_interval():
    conf = ev.vehicle_confusion(np.array(["g"]), np.zeros(1, bool), np.ones(1, bool))
    assert all(np.isnan(v) for v in ev.bootstrap_interval(conf, 10, np.random.default_rng(0))["f1"])


# ---------------------------------------------------------------- operating points


def test_threshold_at_fpr_by_hand():
    scores = np.arange(100, dtype=float)  # genuine validation scores 0..99
    assert ev.threshold_at_fpr(scores, 0.01) == 98  # only 99 is above: 1 %
    assert ev.threshold_at_fpr(scores, 0.001) == 99  # nothing above
    assert ev.threshold_at_fpr(scores, 0.05) == 94  # 95..99 above: 5 %


def test_threshold_with_ties_and_weights_matches_expanded():
    scores = np.array([0.0] * 95 + [1.0] * 5)
    assert ev.threshold_at_fpr(scores, 0.01) == 1.0  # flagging above 0 would be 5 %
    assert ev.threshold_at_fpr(scores, 0.05) == 0.0
    values, w = ev.histogram(scores)
    assert values.tolist() == [0.0, 1.0] and w.tolist() == [95, 5]
    assert ev.threshold_at_fpr(values, 0.01, w) == 1.0 and ev.threshold_at_fpr(values, 0.05, w) == 0.0


def test_threshold_rejects_bad_fpr():
    with pytest.raises(ValueError, match="not in"):
        ev.threshold_at_fpr(np.arange(3.0), 1.0)


def test_recall_at_threshold():
    assert ev.recall_at(0.9, np.array([0.5, 0.9, 1.0, 0.95]), np.array([1, 1, 1, 0], bool)) == pytest.approx(1 / 3)
    assert ev.recall_at(0.9, np.array([0.5, 1.0]), np.array([1, 1], bool), np.array([3, 1])) == pytest.approx(1 / 4)
    assert np.isnan(ev.recall_at(0.5, np.array([0.7]), np.array([False])))


# ---------------------------------------------------------------- alarm and time to detection


def test_k_of_n_by_hand_and_vehicles_never_mix():
    # vehicle a in time order flags 1,0,1,1,0; k=2 of n=3 -> F,F,T,T,T
    # vehicle b flags 1 then 1: its second message sees 2 flags of its own only
    ids = np.array(["b", "a", "a", "a", "b", "a", "a"])
    t = _t([0, 40, 0, 20, 10, 10, 30])
    flags = np.array([1, 0, 1, 1, 1, 0, 1], bool)  # a by time: t0=1, t10=0, t20=1, t30=1, t40=0
    alarm = ev.k_of_n_alarm(ids, t, flags, 2, 3)
    want = {
        ("a", 0): False,
        ("a", 10): False,
        ("a", 20): True,
        ("a", 30): True,
        ("a", 40): True,
        ("b", 0): False,
        ("b", 10): True,
    }
    secs = ((t - t.min()) / np.timedelta64(1, "s")).astype(int)
    assert [want[(i, s)] for i, s in zip(ids, secs)] == alarm.tolist()


def test_k_of_n_matches_a_plain_loop():
    rng = np.random.default_rng(2)
    ids = rng.choice(["x", "y", "z"], 300)
    t = _t(rng.permutation(300) * 10)
    flags = rng.random(300) < 0.4
    got = ev.k_of_n_alarm(ids, t, flags, 3, 5)
    for v in "xyz":
        rows = np.flatnonzero(ids == v)
        rows = rows[np.argsort(t[rows])]
        for j, r in enumerate(rows):
            assert got[r] == (flags[rows[max(0, j - 4) : j + 1]].sum() >= 3)
    with pytest.raises(ValueError, match="k <= n"):
        ev.k_of_n_alarm(ids, t, flags, 6, 5)


def test_time_to_detection_by_hand():
    # a: messages every 10 s, attacked from t=20; an alarm at t=10 (before: not a catch) and t=40
    # b: attacked from t=0, never alarmed; g: genuine, alarmed (not an attacker: no row)
    ids = np.array(["a"] * 6 + ["b"] * 3 + ["g"] * 2)
    t = _t([0, 10, 20, 30, 40, 50, 0, 10, 20, 0, 10])
    attacked = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)
    alarm = np.array([0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1], bool)
    perm = np.random.default_rng(0).permutation(len(ids))  # input order does not matter
    ttd = ev.time_to_detection(ids[perm], t[perm], attacked[perm], alarm[perm])
    assert list(ttd.index) == ["a", "b"]
    assert ttd.loc["a", "caught"] and ttd.loc["a", "delay_s"] == 20 and ttd.loc["a", "delay_messages"] == 2
    assert not ttd.loc["b", "caught"] and np.isnan(ttd.loc["b", "delay_s"])
    s = ev.detection_summary(ttd)
    assert s["median"] == 20 and s["p90"] == 20 and s["caught_share"] == 0.5 and s["median_messages"] == 2


def test_detection_summary_percentiles():
    ttd = pd.DataFrame(
        {
            "caught": [True] * 5 + [False],
            "delay_s": [0, 10, 20, 30, 40, np.nan],
            "delay_messages": [0, 1, 2, 3, 4, np.nan],
        }
    )
    s = ev.detection_summary(ttd)
    assert s["median"] == 20 and s["p90"] == pytest.approx(36) and s["caught_share"] == pytest.approx(5 / 6)
    assert np.isnan(ev.detection_summary(ttd.iloc[:0])["median"])


def test_false_alarms_per_vehicle_hour_by_hand():
    # g1: 0,10,20,30 s then a 1000 s silence (off) then 1030, 1040: active 50 s; alarms on at
    # 0-10 and at 1030 -> 2 onsets. g2: 0..3600 every 60 s, one alarm at 600: 1 onset, 1 hour.
    ids = np.array(["g1"] * 6 + ["g2"] * 61)
    t = _t(np.r_[[0, 10, 20, 30, 1030, 1040], np.arange(61) * 60])
    alarm = np.r_[[1, 1, 0, 0, 1, 0], np.arange(61) == 10].astype(bool)
    per = ev.vehicle_alarm_hours(ids, t, alarm)
    assert per.loc["g1", "onsets"] == 2 and per.loc["g1", "hours"] == pytest.approx(40 / 3600)
    assert per.loc["g2", "onsets"] == 1 and per.loc["g2", "hours"] == pytest.approx(1.0)
    assert ev.false_alarms_per_vehicle_hour(per) == pytest.approx(3 / (1 + 40 / 3600))


# ---------------------------------------------------------------- paired test and bars


def test_paired_sign_test_below_six_pairs():
    r = ev.paired_test(np.array([0.9, 0.8, 0.95, 0.7]), np.array([0.5, 0.6, 0.5, 0.4]))
    assert r["test"] == "sign" and r["n"] == 4 and r["p"] == pytest.approx(2 / 16)


def test_paired_wilcoxon_from_six_pairs():
    det = np.array([0.9, 0.8, 0.95, 0.7, 0.85, 0.9, 0.99, 0.75])
    rules = det - np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]) / 2
    r = ev.paired_test(det, rules)
    assert r["test"] == "wilcoxon" and r["n"] == 8
    assert r["p"] == pytest.approx(2 / 2**8)  # exact: all 8 signed ranks positive
    assert ev.paired_test(det, np.r_[rules[:3], [np.nan] * 5])["test"] == "sign"  # NaN pairs dropped


def test_quality_bar_judges_the_lower_end():
    f1 = {"random_forest": {"a": 0.95, "b": 0.9}, "rules": {"a": 0.8, "b": 0.85}}
    ci = {"random_forest": {"a": [0.91, 0.97], "b": [0.82, 0.95]}}
    bars = ev.quality_bar_on_interval(ci, f1, {"a": 0.90, "b": 0.90, "c": 0.9})
    assert bars["random_forest_f1_low_ge_0.90_a"]["met"] is True
    assert bars["random_forest_f1_low_ge_0.90_b"]["met"] is False  # the point 0.90 would pass
    assert bars["random_forest_f1_low_ge_0.90_c"]["met"] is None
    worse = bars["random_forest_low_ge_rules_every_attack"]
    assert worse["met"] is False and list(worse["worse_on"]) == ["b"]


def test_bucket_summaries_concatenate_to_the_whole():
    """Two buckets (vehicles never span them) summarised apart and concatenated give the numbers
    of the whole frame, and the pieces agree with the functions above."""
    rng = np.random.default_rng(8)
    ids = np.repeat([f"v{i:02d}" for i in range(12)], 30)
    t = _t(np.tile(np.arange(30) * 10, 12))
    attacker = np.isin(ids, ["v00", "v01", "v02", "v03"])
    y = attacker & (np.tile(np.arange(30), 12) >= 10)  # attacked from each attacker's 11th message
    score = np.where(y, rng.uniform(0.3, 1, len(ids)), rng.uniform(0, 0.6, len(ids)))
    pred = score >= 0.5
    whole = ev.vehicle_summary(ids, t, y, score, pred, 0.55, 2, 3)
    a = np.isin(ids, ["v00", "v05", "v07", "v11"])
    parts = pd.concat([ev.vehicle_summary(ids[m], t[m], y[m], score[m], pred[m], 0.55, 2, 3) for m in (a, ~a)])
    pd.testing.assert_frame_equal(parts.sort_index(), whole)
    alarm = ev.k_of_n_alarm(ids, t, score > 0.55, 2, 3)
    assert whole.loc["v00", "delay_s"] == ev.time_to_detection(ids, t, y, alarm).loc["v00", "delay_s"]
    assert np.isnan(whole.loc["v09", "delay_s"])  # genuine: no time to detection

    hist = pd.DataFrame(dict(zip(["score", "y"], np.unique(np.c_[score, y], axis=0).T)))
    hist["w"] = [((score == s) & (y == yy)).sum() for s, yy in zip(hist["score"], hist["y"])]
    genuine_val = np.linspace(0, 0.6, 1000)
    th = ev.thresholds(genuine_val, [0.01, 0.1])
    assert th[0.1] == pytest.approx(genuine_val[899])  # 100 of 1000 above it
    out = ev.operating_summary(whole, hist, th, 500, np.random.default_rng(0))
    assert out["operating_points"]["recall_at_fpr_0.1"] == pytest.approx((score[y] > th[0.1]).mean())
    assert out["operating_points"]["recall_at_fpr_0.01"] == pytest.approx((score[y] > th[0.01]).mean())
    genuine = ~whole["attacker"]
    want = whole.loc[genuine, "onsets"].sum() / whole.loc[genuine, "hours"].sum()
    assert out["operating_points"]["false_alarms_per_vehicle_hour"] == pytest.approx(want)
    assert out["time_to_detection_s"]["caught_share"] == pytest.approx(whole.loc[~genuine, "caught"].mean())
    assert out["f1_ci"][0] <= f1_score(y, pred) <= out["f1_ci"][1]


def test_too_few_test_attackers_is_refused_naming_share_and_count():
    from wydot_lab.errors import TooFewAttackers, WydotLabError

    ev.check_attackers(0.05, 5, 5)
    with pytest.raises(
        TooFewAttackers,
        match=r"^share 0.05: the test side holds 2 attacker vehicles, fewer than "
        r"model.min_test_attackers 5",
    ) as exc:
        ev.check_attackers(0.05, 2, 5)
    assert isinstance(exc.value, WydotLabError) and "\n" not in str(exc.value)
