"""The out-of-core experiment (`experiment.run`, `wydot_lab.partitions`) against the in-memory
reference (`experiment.run_in_memory`): the same numbers bit for bit, whatever the bucketing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from wydot_lab import attacks, config, experiment, features, models, partitions
from wydot_lab.frames import ID, TIME, to_frame

import bsm_frames

EVERY_ATTACK = [{"name": n} for n in attacks.ATTACKS]
SCORE_KEY = ["repeat", "share", "attack", "detector", ID, TIME]


def _params(buckets: int, kinds: list[dict] = EVERY_ATTACK, **model) -> config.Params:
    return config.from_dict(
        {
            "attacks": {"attacker_share": 0.3, "extra_shares": [0.2], "seed": 3, "kinds": kinds},
            "model": {
                "n_estimators": 10,
                "test_share": 0.3,
                "seed": 5,
                "detectors": ["rules", "random_forest"],
                "min_test_attackers": 1,
                **model,
            },
            "dask": {"scheduler": "synchronous", "npartitions": buckets},
        }
    )


@pytest.fixture(scope="module")
def corpus():
    return bsm_frames.corridor(vehicles=20, msgs=24, seed=12, gap_every=8)


def _same_outputs(a_dir, b_dir, same_params: bool = True) -> None:
    for f in ("results.parquet", "mixed.parquet", "importances.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(a_dir / f), pd.read_parquet(b_dir / f))
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a_dir, b_dir))
    if not same_params:
        ma.pop("params"), mb.pop("params")
    assert ma == mb
    sa, sb = (
        pd.read_parquet(d / "scores.parquet").sort_values(SCORE_KEY, kind="stable").reset_index(drop=True)
        for d in (a_dir, b_dir)
    )
    pd.testing.assert_frame_equal(sa, sb)


def test_out_of_core_run_equals_the_in_memory_path_for_every_attack(corpus, tmp_path, buckets=3):
    """Every registered attack (data_replay's victims and position_swap's donors live in other
    buckets), two shares, the mixed setting: results, metrics, importances and every score equal."""
    p = _params(buckets)
    counts = to_frame(corpus)[ID].value_counts()
    packed = partitions.Buckets.pack(counts, experiment.BUCKET_ROWS, buckets)
    assert np.bincount(packed.bucket).tolist() == [
        len(counts) // buckets + (b < len(counts) % buckets) for b in range(buckets)
    ]  # really split, evenly
    experiment.run_in_memory(p, tmp_path / "mem", table=corpus)
    experiment.run(p, tmp_path / "ooc", table=corpus)
    _same_outputs(tmp_path / "mem", tmp_path / "ooc")
    assert not (tmp_path / "ooc" / "_work").exists()  # the buckets are removed after the run


def test_results_do_not_depend_on_the_bucketing(corpus, tmp_path):
    kinds = [{"name": "data_replay"}, {"name": "random_position"}]
    for n in (2, 5):
        experiment.run(_params(n, kinds, train_sample_rows=150), tmp_path / str(n), table=corpus)
    _same_outputs(tmp_path / "2", tmp_path / "5", same_params=False)


def test_only_attacker_vehicles_are_refeaturized_and_that_equals_a_full_recompute(corpus):
    clean = experiment.records_frame(corpus)[0]
    ids = np.sort(clean[ID].unique())
    attackers = ids[::3]
    for spec in ({"name": "random_offset"}, {"name": "eventual_stop", "p": 0.3}, {"name": "heading_reversal"}):
        attacked = attacks.apply(clean, spec, attackers, np.random.default_rng(1))
        calls = []
        real = features.featurize_frame

        def spy(frame, window=5, calls=calls, real=real):
            calls.append(set(frame[ID]))
            return real(frame, window)

        clean_feats = features.featurize_frame(clean)
        features.featurize_frame = spy
        try:
            got = partitions.featurize_attacked(attacked, clean_feats, 5)
        finally:
            features.featurize_frame = real
        assert calls == [set(attackers)]  # one featurize call, on the attacker vehicles only
        want = features.featurize_frame(attacked)
        pd.testing.assert_frame_equal(got, want.loc[got.index, got.columns], check_dtype=False)
        assert list(got.index) == list(want.index)


@pytest.mark.parametrize("method,args", [("uniform", (0.0, 3.0)), ("integers", (0, 1000)), ("random", ())])
def test_sliced_draws_are_the_whole_draw_in_chunks(monkeypatch, method, args):
    monkeypatch.setattr(partitions, "CHUNK", 7)
    pos = np.array([0, 3, 6, 7, 8, 20, 49])
    whole = getattr(np.random.default_rng(9), method)(*args, size=50)
    rng = np.random.default_rng(9)
    got = partitions.sliced_draw(lambda n: getattr(rng, method)(*args, size=n), 50, pos)
    np.testing.assert_array_equal(got, whole[pos])
    np.testing.assert_array_equal(
        getattr(rng, method)(*args, size=3), getattr(np.random.default_rng(9), method)(*args, size=53)[50:]
    )  # stream in step


def test_training_sample_is_bounded_seeded_and_stratified_by_vehicle(corpus, tmp_path):
    p = _params(3, [{"name": "const_offset"}], train_sample_rows=100)
    a = experiment.run(p, tmp_path / "a", table=corpus)
    full = experiment.run(_params(3, [{"name": "const_offset"}]), tmp_path / "full", table=corpus)
    n_full = full["n_train"].iloc[0]
    assert 100 <= a["n_train"].max() < 100 + 20 < n_full  # the cap, plus at most one row per vehicle rounding up
    frame = pd.DataFrame({ID: np.repeat(["a", "b", "c"], [50, 30, 20]), "x": np.arange(100)})
    s = experiment._sample(frame, 0.1, 5)
    assert s[ID].value_counts().to_dict() == {"a": 5, "b": 3, "c": 2}  # every vehicle, in its proportion
    pd.testing.assert_frame_equal(s, experiment._sample(frame, 0.1, 5))
    pd.testing.assert_frame_equal(
        s[s[ID] == "b"], experiment._sample(frame[frame[ID] != "a"], 0.1, 5)[lambda f: f[ID] == "b"]
    )


def test_sides_refuse_a_shared_vehicle():
    train = pd.DataFrame({ID: ["a", "b"], TIME: pd.Timestamp("2021-04-01", tz="UTC")})
    with pytest.raises(models.LeakError):
        experiment._Sides.of(train, train.iloc[1:], by_day=False)


def test_featurize_by_vehicles_equals_one_call(corpus, monkeypatch):
    clean = experiment.records_frame(corpus)[0]
    monkeypatch.setattr(partitions, "FEATURE_ROWS", 50)  # ~3 vehicles a call
    pd.testing.assert_frame_equal(partitions.featurize_by_vehicles(clean, 5), features.featurize_frame(clean, 5))


def test_buckets_pack_whole_vehicles_largest_first():
    counts = pd.Series({"a": 90, "b": 50, "c": 40, "d": 10, "e": 10})
    b = partitions.Buckets.pack(counts, 100)
    assert b.n == 2 and list(b.ids) == ["a", "b", "c", "d", "e"]
    load = pd.Series(counts.to_numpy(), index=b.bucket).groupby(level=0).sum()
    assert sorted(load) == [100, 100]  # a + e | b + c + d
    with pytest.raises(AssertionError):
        b.of(["zz"])


def test_not_enough_disk_is_said_before_any_work(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "WORK_BYTES_A_RECORD", 10**15)
    with pytest.raises(ValueError, match=r"need about .* GB in .*_work, .* GB are free"):
        experiment.run(_params(1, [{"name": "const_offset"}]), tmp_path, table=corpus)
    assert not (tmp_path / "_work").exists() and not list((tmp_path / "scores.parquet").iterdir())
