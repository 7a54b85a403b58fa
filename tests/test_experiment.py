"""Experiment matrix: files written, rerun reproduces metrics exactly, quality bar stated plainly,
and the `wydot-lab experiment` command on the committed synthetic corpus."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

import bsm_frames
from conftest import ROOT, SYNTH_DIR
from wydot_lab import attacks, config, experiment, models

KINDS = [{"name": "const_offset", "min_m": 100, "max_m": 200}, {"name": "random_offset", "min_m": 50, "max_m": 100},
         {"name": "heading_reversal"}]


def _params(**model) -> config.Params:
    return config.from_dict({
        "attacks": {"attacker_share": 0.3, "extra_shares": [0.2], "seed": 3, "kinds": KINDS},
        "model": {"n_estimators": 10, "test_share": 0.3, "seed": 5, "min_test_attackers": 1, **model},
    })


@pytest.fixture(scope="module")
def corpus():
    return bsm_frames.corridor(vehicles=20, msgs=24, seed=12, gap_every=8)


def test_matrix_writes_its_files_and_reruns_identically(corpus, tmp_path):
    p = _params()
    a = experiment.run(p, tmp_path / "a", table=corpus)
    b = experiment.run(p, tmp_path / "b", table=corpus)
    assert len(a) == 3 * 4 * 3 * 2  # attacks x detectors x levels x shares
    assert set(a["attack"]) == {"const_offset_100_200", "random_offset_50_100", "heading_reversal"}
    assert set(a["share"]) == {0.3, 0.2} and set(a["level"]) == set(experiment.LEVELS)
    for d in ("a", "b"):
        names = {f.name for f in (tmp_path / d).iterdir()}
        assert {"results.parquet", "results.csv", "importances.parquet", "metrics.json", "params.json", "models"} <= names
    pd.testing.assert_frame_equal(a, b)
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("a", "b"))
    assert ma == mb
    assert ma["params"] == config.to_dict(p)
    assert ma["corpus"] == {"records": 20 * 24, "transmissions": 20 * 24, "copies_dropped": 0,
                            "logged_more_than_once": 0, "vehicles": 20}
    assert pd.read_parquet(tmp_path / "a" / "results.parquet").equals(a)
    imp = pd.read_parquet(tmp_path / "a" / "importances.parquet")
    assert set(imp["detector"]) == {"random_forest", "position_only"}
    model = models.load_model(tmp_path / "a" / "models" / "const_offset_100_200__random_forest.joblib")
    assert model["features"] == models.HISTORY and model["meta"]["attack"]["min_m"] == 100
    # every test vehicle is unseen in training, and the runs are scored on the same test vehicles
    assert a.groupby("attack")["n_test"].nunique().eq(1).all()
    assert (a.loc[a["level"] == "message", "n"] == a.loc[a["level"] == "message", "n_test"]).all()


def test_repeats_draw_new_attackers_splits_and_models_and_average(corpus, tmp_path):
    kw = {"detectors": ["rules", "random_forest"]}
    one = experiment.run(_params(**kw), tmp_path / "one", table=corpus)
    two = experiment.run(_params(repeats=2, **kw), tmp_path / "two", table=corpus)
    assert set(two["repeat"]) == {0, 1}
    first = two[two["repeat"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, one)  # repeat 0 is the single run, bit for bit
    second = two[two["repeat"] == 1]
    assert not second["f1"].reset_index(drop=True).equals(first["f1"])  # another draw, other numbers
    m = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m["repeats"] == 2
    msg = two[(two["share"] == 0.3) & (two["level"] == "message")]
    for (det, attack), g in msg.groupby(["detector", "attack"]):
        assert m["f1"][det][attack] == pytest.approx(g["f1"].mean())
        assert m["f1_sd"][det][attack] == pytest.approx(g["f1"].std(), nan_ok=True)
    for share in (0.3, 0.2):  # every share has its spread: the 5%-style share is the one that moves
        rows = two[(two["share"] == share) & (two["level"] == "message")]
        for (det, attack), g in rows.groupby(["detector", "attack"]):
            assert m["f1_sd_by_share"][str(share)][det][attack] == pytest.approx(g["f1"].std(), nan_ok=True)
        for det, g in rows.groupby("detector"):
            per_repeat = g.groupby("repeat")["f1"].mean()
            assert m["mean_f1_by_share"][str(share)][det] == pytest.approx(
                {"mean": per_repeat.mean(), "sd": per_repeat.std()})
    scores = pd.read_parquet(tmp_path / "two" / "scores.parquet")
    assert set(scores["repeat"]) == {0, 1}
    assert "f1_sd" not in json.loads((tmp_path / "one" / "metrics.json").read_text())


def test_quality_bar_says_plainly_when_not_met():
    rows = []
    for det, f1 in (("random_forest", {"const_offset_100_200": 0.95, "random_offset_50_100": 0.85, "x": 0.55}),
                    ("rules", {"const_offset_100_200": 0.90, "random_offset_50_100": 0.80, "x": 0.6})):
        rows += [{"share": 0.3, "level": "message", "detector": det, "attack": a, "f1": v} for a, v in f1.items()]
    bar = experiment.quality_bar(pd.DataFrame(rows), 0.3)
    assert bar["random_forest_ge_rules_every_attack"] == {
        "met": False, "worse_on": {"x": {"random_forest": 0.55, "rules": 0.6}}}
    assert bar["random_forest_gt_rules_on_average"]["met"] is True
    assert bar["random_forest_f1_ge_0.90_const_offset_100_200"] == {"met": True, "f1": 0.95}
    assert bar["random_forest_f1_ge_0.90_random_offset_50_100"] == {"met": False, "f1": 0.85}
    assert bar["summary"].startswith("NOT met: ") and "random_offset_50_100" in bar["summary"]


def test_cli_experiment_on_the_synthetic_corpus(tmp_path):
    params = yaml.safe_load((ROOT / "params" / "default.yaml").read_text())
    params["source"]["url"] = str(SYNTH_DIR)
    params["dates"] = {"start": "2021-04-01", "end": "2021-04-01"}
    params["attacks"].update(kinds=KINDS[:2], extra_shares=[])
    params["model"].update(n_estimators=10)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "wydot_lab.cli", "experiment", str(path), "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(summary["f1"]) == {"rules", "random_forest", "hist_gradient_boosting", "position_only", "isolation_forest"}
    assert set(summary["f1"]["random_forest"]) == {"const_offset_100_200", "random_offset_50_100"}
    assert all(0 <= v <= 1 for d in summary["f1"].values() for v in d.values())
    assert "summary" in summary["quality_bar"] and summary["share"] == 0.3
    assert (out / "results.parquet").exists() and (out / "metrics.json").exists()


@pytest.mark.parametrize("share", [0.05, 0.3])
def test_each_share_draws_attackers_first_then_a_stratified_vehicle_split(share):
    from wydot_lab.frames import ID, to_frame

    frame = to_frame(bsm_frames.corridor(vehicles=60, msgs=4, seed=3))
    p = _params()
    attackers, train, test = experiment.split_for_share(frame, p, share)
    assert set(attackers) == set(experiment.draw_attackers(frame[ID], p, share))  # same draw, made before the split
    assert not set(train[ID]) & set(test[ID]) and len(train) + len(test) == len(frame)
    assert set(train[ID]) & set(attackers) and set(test[ID]) & set(attackers)  # attackers on both sides


def test_scores_file_holds_every_test_message_score(corpus, tmp_path):
    p = _params()
    results = experiment.run(p, tmp_path, table=corpus)
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    msg = results[results["level"] == "message"]
    per_run = scores.groupby(["share", "attack", "detector"]).size()
    assert (per_run.to_numpy() == msg.sort_values(["share", "attack", "detector"])["n"].to_numpy()).all()
    assert scores["score"].notna().all() and set(scores["detector"]) == set(p.model.detectors)


def test_caveats_name_shares_resting_on_few_attackers():
    results = pd.DataFrame({"share": [0.3, 0.3, 0.05, 0.05], "test_attackers": [12, 9, 2, 3]})
    assert experiment.caveats(results) == [
        "share 0.05: F1 rests on 2 test attacker vehicles (min over attacks); set model.repeats (e.g. 5) or "
        "compare seeds before citing it"]
    assert experiment.caveats(results.assign(test_attackers=5)) == []
    assert experiment.caveats(results.assign(repeat=[0, 1, 0, 1])) == [
        "share 0.05: F1 rests on 2 test attacker vehicles (min over attacks and repeats); the F1 tables average "
        "2 repeats, see f1_sd"]
    gone = results.assign(attack=["a", "b", "a", "b"], test_attackers=[12, 9, 0, 3])
    assert experiment.caveats(gone) == [
        "share 0.05: no test attacker vehicle left for a (e.g. the privacy filter dropped every attacked record): "
        "that F1 is undefined and left out of the means"]
    mixed = pd.DataFrame({"share": 0.3, "level": "message", "attack": [experiment.MIXED, "a", "b", "c"],
                          "test_attackers": [7, 6, 1, 0]})
    assert experiment.caveats(results.assign(test_attackers=5), mixed) == [
        "mixed, share 0.3: 7 test attacker vehicles share 3 attacks, so each attack's recall rests on 6 attacker "
        "vehicles at most and 1 attack has no test attacker at all (no recall); set model.repeats before comparing "
        "attacks"]
    # repeats: per repeat, and how many repeats each attack's mean rests on (not a min over repeats)
    two = pd.concat([mixed.assign(repeat=0), mixed.assign(repeat=1, test_attackers=[6, 0, 2, 4])])
    assert experiment.caveats(results.assign(test_attackers=5, repeat=[0, 1, 0, 1]), two) == [
        "mixed, share 0.3: 6 to 7 test attacker vehicles per repeat over 3 attacks; in a repeat an attack's "
        "recall rests on 0 to 6 attackers, and each attack's mean over 2 repeats on the 1 to 2 repeats that had one"]
    gone = pd.concat([two[two["repeat"] == 0], two[two["repeat"] == 1].assign(test_attackers=[6, 0, 2, 0])])
    assert experiment.caveats(results.assign(test_attackers=5, repeat=[0, 1, 0, 1]), gone)[0].endswith(
        "on the 1 to 2 repeats that had one (1 attack had none in any repeat: no mean)")


@pytest.mark.timeout(180)
def test_featurize_runs_on_the_params_scheduler(corpus):
    """Notebook 03 calls featurize(frame, params): a `dask.scheduler` of tcp://... must get the work."""
    from distributed import LocalCluster

    frame, _ = experiment.records_frame(corpus)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None) as cluster:
        before = cluster.scheduler.transition_counter
        p = config.from_dict({"dask": {"scheduler": cluster.scheduler_address, "npartitions": 2}})
        feats = experiment.featurize(frame, p)
        assert cluster.scheduler.transition_counter > before
    local = experiment.featurize(frame, config.from_dict({"dask": {"npartitions": 2}}))
    pd.testing.assert_frame_equal(feats, local)


def test_mixed_setting_trains_one_model_for_every_attack(corpus, tmp_path):
    """Beside the per-attack matrix: per share one model per detector on all attacks at once,
    each attacker running one drawn attack; rows for all test vehicles and per attack."""
    p = _params(detectors=["rules", "random_forest"])
    experiment.run(p, tmp_path, table=corpus)
    mixed = pd.read_parquet(tmp_path / "mixed.parquet")
    labels = {"const_offset_100_200", "random_offset_50_100", "heading_reversal"}
    assert set(mixed["attack"]) == {experiment.MIXED} | labels and set(mixed["share"]) == {0.3, 0.2}
    msg = mixed[mixed["level"] == "message"]
    for (share, det), g in msg.groupby(["share", "detector"]):
        whole = g[g["attack"] == experiment.MIXED].iloc[0]
        parts = g[g["attack"] != experiment.MIXED]
        # every test attacker is in exactly one attack's rows; genuine test rows are in all of them
        assert parts["test_attackers"].sum() == whole["test_attackers"] > 0
        assert parts["test_attacked_messages"].sum() == whole["test_attacked_messages"]
        assert (parts["n_test"] <= whole["n_test"]).all()
        assert whole["tp"] + whole["fn"] == whole["test_attacked_messages"]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["mixed"]["0.3"]["random_forest"]["recall_by_attack"]) == labels
    rules = msg[(msg["share"] == 0.3) & (msg["detector"] == "rules")].set_index("attack")
    assert m["mixed"]["0.3"]["rules"]["f1"] == pytest.approx(rules.loc[experiment.MIXED, "f1"])
    for lab in labels:
        got, want = m["mixed"]["0.3"]["rules"]["recall_by_attack"][lab], rules.loc[lab, "recall"]
        assert got == pytest.approx(want) if got is not None else pd.isna(want)  # JSON null: no attacker there
    assert "one detector trained per attack" in m["evaluation"]
    assert (tmp_path / "models" / "mixed__random_forest.joblib").exists()
    one = _params(detectors=["rules"])  # one attack: no mixed setting, and no stale file
    one = one.model_copy(update={"attacks": one.attacks.model_copy(update={"kinds": one.attacks.kinds[:1]})})
    experiment.run(one, tmp_path, table=corpus)
    assert not (tmp_path / "mixed.parquet").exists()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["const_offset_100_200__rules.joblib"]
    assert "mixed" not in json.loads((tmp_path / "metrics.json").read_text())


def test_privacy_filter_evaluates_what_publishing_would_keep(corpus, tmp_path):
    kinds = [{"name": "eventual_stop", "p": 0.3}, {"name": "const_offset", "min_m": 100, "max_m": 200}]
    p = _params(detectors=["rules"])
    plain = p.model_copy(update={"attacks": p.attacks.model_copy(update={"kinds": [config.AttackSpec(**k) for k in kinds],
                                                                         "extra_shares": []})})
    filtered = plain.model_copy(update={"attacks": plain.attacks.model_copy(update={"privacy_filter": True})})
    a = experiment.run(plain, tmp_path / "a", table=corpus).set_index(["attack", "level"])
    b = experiment.run(filtered, tmp_path / "b", table=corpus).set_index(["attack", "level"])
    stop, offset = ((attacks.label(k), "message") for k in kinds)
    assert a.loc[stop, "dropped_by_privacy_filter"] == 0 < b.loc[stop, "dropped_by_privacy_filter"]
    assert b.loc[stop, "test_attacked_messages"] < a.loc[stop, "test_attacked_messages"]
    assert b.loc[stop, "n_test"] < a.loc[stop, "n_test"]
    assert b.loc[offset, "dropped_by_privacy_filter"] == 0 and b.loc[offset, "f1"] == a.loc[offset, "f1"]
    mixed = pd.read_parquet(tmp_path / "b" / "mixed.parquet")
    assert (mixed["dropped_by_privacy_filter"] > 0).all()


def test_metrics_carry_intervals_operating_points_and_time_to_detection(corpus, tmp_path):
    """Issue 19's metrics.json contract, keyed share -> detector -> attack (the mixed setting's
    model: "mixed"), with the invariants that hold whatever the numbers."""
    p = _params(detectors=["rules", "random_forest"], bootstrap=200)
    results = experiment.run(p, tmp_path, table=corpus)
    m = json.loads((tmp_path / "metrics.json").read_text())
    labels = {"const_offset_100_200", "random_offset_50_100", "heading_reversal", experiment.MIXED}
    msg = results[results["level"] == "message"]
    assert set(m["attackers_in_test"]) == {"0.3", "0.2"}
    for share in ("0.3", "0.2"):
        assert m["attackers_in_test"][share] >= msg.loc[msg["share"] == float(share), "test_attackers"].max() >= 1
        for det in ("rules", "random_forest"):
            assert set(m["f1_ci"][share][det]) == labels
            for lab in labels - {experiment.MIXED}:
                lo, hi = m["f1_ci"][share][det][lab]
                point = m["f1_by_share"][share][det][lab]
                assert 0 <= lo <= hi <= 1 and lo <= point + 1e-9  # the lower end never above the point here
                ops = m["operating_points"][share][det][lab]
                assert set(ops) == {"recall_at_fpr_0.001", "recall_at_fpr_0.01", "false_alarms_per_vehicle_hour"}
                # a larger false-positive rate never lowers the threshold's recall
                assert 0 <= ops["recall_at_fpr_0.001"] <= ops["recall_at_fpr_0.01"] <= 1
                assert ops["false_alarms_per_vehicle_hour"] >= 0
                ttd = m["time_to_detection_s"][share][det][lab]
                assert 0 <= ttd["caught_share"] <= 1
                assert ttd["median"] is None or 0 <= ttd["median"] <= ttd["p90"]
    assert m["quality_bar"]["random_forest_f1_low_ge_0.90_const_offset_100_200"]["met"] in (True, False)
    assert "random_forest_f1_ge_0.90_const_offset_100_200" not in m["quality_bar"]  # no point-estimate bar left


def test_a_share_with_too_few_test_attackers_is_refused(corpus, tmp_path):
    from wydot_lab.errors import TooFewAttackers

    with pytest.raises(TooFewAttackers, match=r"^share 0.3: the test side holds \d+ attacker vehicles?, fewer than "
                                              r"model.min_test_attackers 50"):
        experiment.run(_params(min_test_attackers=50), tmp_path, table=corpus)


def test_validation_vehicles_are_genuine_train_vehicles_never_trained_on():
    from wydot_lab.frames import ID, to_frame

    frame = to_frame(bsm_frames.corridor(vehicles=60, msgs=4, seed=3))
    p = _params(validation_share=0.25)
    attackers, train, test = experiment.split_for_share(frame, p, 0.3)
    val = experiment.hold_out(train[ID], attackers, p)
    genuine_train = set(train[ID]) - set(attackers)
    assert val <= genuine_train and not val & set(test[ID])
    assert len(val) == round(0.25 * len(genuine_train))
    assert val == experiment.hold_out(train[ID], attackers, p)  # seeded
    sides = experiment._Sides.of(train, test, False, val)
    side = sides.label(frame)
    ids = frame[ID].astype(str)
    assert (side[ids.isin(val).to_numpy()] == 2).all() and (side[ids.isin(set(test[ID])).to_numpy()] == 1).all()
    assert (side[ids.isin(genuine_train - val).to_numpy()] == 0).all()


def test_paired_test_against_rules_per_attack_over_repeats():
    rows = [{"share": 0.3, "level": "message", "repeat": r, "attack": a, "detector": d, "f1": f}
            for r in range(4) for a, (rf, ru) in {"x": (0.9, 0.5), "y": (0.5, 0.9)}.items()
            for d, f in (("random_forest", rf + r / 100), ("rules", ru))]
    got = experiment.paired_vs_rules(pd.DataFrame(rows), 0.3)
    assert set(got) == {"random_forest"} and set(got["random_forest"]) == {"x", "y"}
    x, y = got["random_forest"]["x"], got["random_forest"]["y"]
    assert x["test"] == "sign" and x["n"] == 4 and x["p"] == pytest.approx(0.125) and x["median_diff"] > 0
    assert y["median_diff"] < 0
    assert experiment.paired_vs_rules(pd.DataFrame(rows)[lambda f: f["repeat"] == 0], 0.3) == {}
