"""Params files: every shipped YAML loads; mistakes are one-line errors naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wydot_lab import config
from wydot_lab.config import ParamsError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "params").glob("*.yaml"))


def test_the_three_documented_files_exist():
    names = {p.name for p in SHIPPED}
    assert {"default.yaml", "tiny.yaml", "wydot-s3.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_params_load(path):
    p = config.load(path)
    assert p.dates.start <= p.dates.end
    assert 0 < p.attacks.attacker_share < 1


def test_default_is_the_offline_synthetic_corpus():
    p = config.load(ROOT / "params" / "default.yaml")
    corpus = Path(config.resolve_path(p.source.url))
    assert "://" not in p.source.url and corpus.is_dir()
    days = {d.name for d in corpus.glob("*/*/*/*/*")}  # wydot/BSM/YYYY/MM/DD
    assert f"{p.dates.start:%d}" in days and f"{p.dates.end:%d}" in days


def test_tiny_is_smaller_than_default():
    d = config.load(ROOT / "params" / "default.yaml")
    t = config.load(ROOT / "params" / "tiny.yaml")
    assert (t.dates.end - t.dates.start) < (d.dates.end - d.dates.start)
    assert t.model.n_estimators < d.model.n_estimators
    assert t.source.url == d.source.url


def test_s3_params_name_a_profile_never_keys():
    p = config.load(ROOT / "params" / "wydot-s3.yaml")
    assert p.source.url.startswith("s3://usdot-its-cvpilot-publicdata")
    assert p.source.profile and not p.source.anonymous
    text = (ROOT / "params" / "wydot-s3.yaml").read_text().lower()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "session_token", "akia"):
        assert secret not in text
    # the real bucket's cache never mixes with the synthetic one (both are pilot `wydot`)
    assert p.cache.root != config.load(ROOT / "params" / "default.yaml").cache.root


def _write(tmp_path, data) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _tiny() -> dict:
    return yaml.safe_load((ROOT / "params" / "tiny.yaml").read_text())


@pytest.mark.parametrize("mutate, names", [
    (lambda d: d["model"].update(n_estimatorz=5), "model.n_estimatorz: unknown key"),
    (lambda d: d.update(colour="red"), "colour: unknown key"),
    (lambda d: d["model"].update(n_estimators="many"), "model.n_estimators"),
    (lambda d: d["dates"].update(start="April 1st"), "dates.start"),
    (lambda d: d["maps"].update(tiles="sometimes"), "maps.tiles"),
    (lambda d: d["attacks"].update(attacker_share=1.5), "attacks.attacker_share"),
    (lambda d: d["source"].update(aws_secret_access_key="x"), "source.aws_secret_access_key: unknown key"),
    (lambda d: d.setdefault("synth", {}).update(defect_share=0.6), "synth.defect_share: Input should be less than or equal to 0.5"),
    (lambda d: d.setdefault("synth", {}).update(defect_share=float("nan")), "synth.defect_share: Input should be a finite number"),
    (lambda d: d.setdefault("synth", {}).update(defect_share=-0.1), "synth.defect_share: Input should be greater"),
    (lambda d: d["attacks"].update(extra_shares=[1.5]), "attacks.extra_shares.0: Input should be less than 1"),
    (lambda d: d["attacks"].update(extra_shares=[0.0]), "attacks.extra_shares.0: Input should be greater than 0"),
    (lambda d: d["attacks"].update(extra_shares=[d["attacks"]["attacker_share"]]), "attacks.extra_shares: share"),
    (lambda d: d["attacks"].update(kinds=[{"name": "heading_reversal"}] * 2), "attacks.kinds: attack"),
    (lambda d: d["attacks"].update(kinds=[{"name": "data_replay"}, {"name": "data_replay", "delay_s": 0}]),
     "attacks.kinds: attack data_replay is listed twice"),
    (lambda d: d.update(dates={"start": "2021-04-05"}), "dates.end: 2021-04-03 (the default) is before start 2021-04-05"),
    (lambda d: d.setdefault("dask", {}).update(scheduler="thredas"), "dask.scheduler: 'thredas' is not one of"),
    (lambda d: d.setdefault("dask", {}).update(npartitions=0), "dask.npartitions"),
    (lambda d: d.setdefault("cache", {}).update(ttl_days=-1), "cache.ttl_days"),
    (lambda d: d["model"].update(detectors=["rules", "random_forrest"]), "model.detectors: unknown detector 'random_forrest'"),
    (lambda d: d["model"].update(detectors=[]), "model.detectors: List should have at least 1 item"),
    (lambda d: d["model"].update(detectors=["rules", "rules"]), "model.detectors: detector rules is listed twice"),
    (lambda d: d["model"].update(split="vehicle_day") or d["dates"].update(end=d["dates"]["start"]),
     "model.split: vehicle_day holds out whole days"),
    (lambda d: d["dates"].update(start="2021-04-03", end="2021-04-01"), "dates.end: 2021-04-01 is before start"),
    (lambda d: d.setdefault("synth", {}).update(defect_share="some"), "synth.defect_share"),
    (lambda d: d["model"].update(alarm_k=6, alarm_n=5), "model.alarm_n: 5 is below model.alarm_k 6"),
    (lambda d: d["model"].update(alarm_k=0), "model.alarm_k: Input should be greater than or equal to 1"),
    (lambda d: d["model"].update(fpr_targets=[0.01, 1.0]), "model.fpr_targets.1: Input should be less than 1"),
    (lambda d: d["model"].update(fpr_targets=[0.0]), "model.fpr_targets.0: Input should be greater than 0"),
    (lambda d: d["model"].update(fpr_targets=[]), "model.fpr_targets: List should have at least 1 item"),
    (lambda d: d["model"].update(fpr_targets=[0.01, 0.01]), "model.fpr_targets: false-positive rate 0.01 is listed"),
    (lambda d: d["model"].update(validation_share=0.0), "model.validation_share: Input should be greater than 0"),
    (lambda d: d["model"].update(validation_share=1), "model.validation_share: Input should be less than 1"),
    (lambda d: d["model"].update(min_test_attackers=0), "model.min_test_attackers"),
    (lambda d: d["model"].update(bootstrap=0), "model.bootstrap"),
])
def test_wrong_key_or_type_is_a_one_line_error_naming_it(tmp_path, mutate, names):
    data = _tiny()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ParamsError) as exc:
        config.load(path)
    msg = str(exc.value)
    assert "\n" not in msg and names in msg and str(path) in msg


@pytest.mark.parametrize("section, values", [
    ("dask", {"scheduler": "sync"}), ("dask", {"scheduler": "single-threaded"}), ("dask", {"scheduler": "tcp://h:8786"}),
    ("cache", {"ttl_days": 0}),  # refetch every cached hour
])
def test_values_dask_and_the_cache_accept_load(tmp_path, section, values):
    data = _tiny()
    data.setdefault(section, {}).update(values)
    p = config.load(_write(tmp_path, data))
    assert getattr(p, section).model_dump().items() >= values.items()


def test_reversed_dates_and_missing_file(tmp_path):
    data = _tiny()
    data["dates"] = {"start": "2021-04-03", "end": "2021-04-01"}
    with pytest.raises(ParamsError, match="before start"):
        config.load(_write(tmp_path, data))
    with pytest.raises(ParamsError, match="no such params file"):
        config.load(tmp_path / "nope.yaml")


def test_default_runs_every_registered_attack_and_detector():
    from wydot_lab import attacks, models

    p = config.load(ROOT / "params" / "default.yaml")
    assert {k.name for k in p.attacks.kinds} == set(attacks.ATTACKS)
    assert set(p.model.detectors) == set(models.DETECTORS)
    labels = [attacks.label(k.model_dump()) for k in p.attacks.kinds]
    assert len(labels) == len(set(labels))  # no attack run twice


def test_params_reference_documents_every_key():
    doc = (ROOT / "docs" / "PARAMS.md").read_text()
    for section, field in config.Params.model_fields.items():
        assert f"## `{section}`" in doc, section
        for key in field.annotation.model_fields:
            assert f"| `{key}` |" in doc, f"{section}.{key}"


def test_evaluation_params_default_and_accept_k_equal_n(tmp_path):
    m = config.ModelParams()
    assert (m.min_test_attackers, m.fpr_targets, m.bootstrap) == (5, [0.001, 0.01], 1000)
    assert 0 < m.validation_share < 1 and 1 <= m.alarm_k <= m.alarm_n
    data = _tiny()
    data["model"].update(alarm_k=4, alarm_n=4, fpr_targets=[0.05], validation_share=0.5)
    p = config.load(_write(tmp_path, data))
    assert (p.model.alarm_k, p.model.alarm_n, p.model.fpr_targets) == (4, 4, [0.05])
