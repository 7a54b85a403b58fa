"""The papermill pipeline: full run on tiny params, failure path, params checked first."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from wydot_lab import config, dedup, frames, pipeline
from wydot_lab.config import ParamsError

ROOT = Path(__file__).resolve().parent.parent


def _params_file(tmp_path: Path, **changes) -> Path:
    """tiny.yaml with the cache and outputs inside tmp_path (the corpus stays the committed one)."""
    data = yaml.safe_load((ROOT / "params" / "tiny.yaml").read_text())
    data["cache"]["root"] = str(tmp_path / "cache")
    data["outputs"]["dir"] = str(tmp_path / "outputs")
    for section, values in changes.items():
        data[section].update(values)
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _png_ok(path: Path) -> None:
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    assert arr.shape[0] >= 100 and arr.shape[1] >= 300, path
    assert arr.std() > 5, f"{path} looks blank"


def _nb(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell('params_path = ""\nout_dir = ""')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(text)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    params = _params_file(tmp)
    lines: list[str] = []
    summary = pipeline.run(params, out=tmp / "run", progress=lines.append)
    return tmp / "run", summary, lines, config.load(params)


def test_pipeline_runs_every_stage_and_writes_the_summary(tiny_run):
    run_dir, summary, lines, params = tiny_run
    assert summary["status"] == "ok"
    names = [s.name for s in pipeline.STAGES]
    assert list(summary["stages"]) == names
    assert [ln for ln in lines if ": ok in " in ln] and len([ln for ln in lines if ": running" in ln]) == 5
    rs = json.loads((run_dir / "run_summary.json").read_text())
    assert rs["params"] == config.to_dict(params) and rs["status"] == "ok"
    assert rs["versions"]["papermill"] and rs["versions"]["python"]
    assert all(s["status"] == "ok" and s["seconds"] > 0 for s in rs["stages"])
    listed = {a["path"] for a in rs["artefacts"]}
    for st in pipeline.STAGES:
        assert f"{st.name}.ipynb" in listed
        for out in st.outputs:
            assert (run_dir / st.name / out).exists(), (st.name, out)
    # the executed notebooks received the run's paths and hold no error output
    for st in pipeline.STAGES:
        nb = nbformat.read(run_dir / f"{st.name}.ipynb", as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and str(run_dir / st.name) in injected[0].source
        assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def test_pipeline_artefacts_hold_sensible_values(tiny_run):
    run_dir, _, _, params = tiny_run
    s01 = json.loads((run_dir / "01_explore" / "summary.json").read_text())
    ing = s01["ingest"]
    assert ing["records"] == ing["valid"] + ing["quarantined"] + ing["non_bsm"] + ing["blank"] > 0
    records = pq.read_table(run_dir / "01_explore" / "records.parquet")
    assert records.num_rows == ing["valid"] == s01["records"] > 0
    assert s01["vehicles"] > 1 and 1 <= s01["hours"] <= 24
    day = str(params.dates.start)
    assert s01["first"].startswith(day) and s01["last"].startswith(day)
    hours = pd.read_parquet(run_dir / "01_explore" / "hours.parquet")
    assert int(hours["valid"].sum()) == records.num_rows

    val = json.loads((run_dir / "02_validate" / "validation.json").read_text())
    assert val["counts"] == {k: ing[k] for k in ("records", "valid", "quarantined", "non_bsm", "blank")}
    assert sum(val["quarantine_reasons"].values()) >= ing["quarantined"]

    feats = pd.read_parquet(run_dir / "03_featurize" / "features.parquet")
    sent = len(np.unique(dedup.transmission_ids(frames.to_frame(records))))  # rxMsg copies collapse
    assert len(feats) == sent < records.num_rows

    attacked = pd.read_parquet(run_dir / "04_attack_sim" / "attacked.parquet")  # plain pandas reads it
    n_kinds = len(params.attacks.kinds)
    assert attacked["attack"].nunique() == n_kinds and len(attacked) == n_kinds * sent
    assert attacked.groupby("attack")["is_attack"].sum().gt(0).all()

    metrics = json.loads((run_dir / "05_train" / "metrics.json").read_text())
    res = pd.read_parquet(run_dir / "05_train" / "results.parquet")
    shares = {params.attacks.attacker_share, *params.attacks.extra_shares}
    assert len(res) == n_kinds * len(params.model.detectors) * 3 * len(shares)
    for col in ("precision", "recall", "f1", "pr_auc"):  # NaN = undefined (e.g. no attacker in a small test set)
        assert res[col].dropna().between(0, 1 + 1e-9).all(), col  # sklearn AP can be 1 + eps
    main = res[(res["share"] == params.attacks.attacker_share) & (res["level"] == "message")]
    assert main[["precision", "recall", "f1", "pr_auc"]].notna().all().all()
    assert (main["n"] > 0).all() and (main["tp"] + main["fn"] > 0).all()
    assert set(metrics["f1"]) == set(params.model.detectors)
    assert list((run_dir / "05_train" / "models").glob("*.joblib"))

    declared = {f"{st.name}/{o}" for st in pipeline.STAGES for o in st.outputs if o.endswith(".png")}
    assert {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*.png")} == declared
    for png in declared:
        _png_ok(run_dir / png)


def test_failing_stage_stops_the_run_and_names_its_notebook(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nbformat.write(_nb("from pathlib import Path\nPath(out_dir, 'ok.txt').write_text('ok')"), nbs / "a_ok.ipynb")
    nbformat.write(_nb("raise ValueError('boom: stage two is broken')"), nbs / "b_boom.ipynb")
    nbformat.write(_nb("raise SystemExit('must never run')"), nbs / "c_never.ipynb")
    stages = (pipeline.Stage("a_ok", outputs=("ok.txt",)), pipeline.Stage("b_boom"), pipeline.Stage("c_never"))
    lines: list[str] = []
    with pytest.raises(pipeline.PipelineError) as exc:
        pipeline.run(_params_file(tmp_path), out=tmp_path / "run", progress=lines.append, stages=stages,
                     notebooks=nbs)
    msg = str(exc.value)
    executed = tmp_path / "run" / "b_boom.ipynb"
    assert "\n" not in msg and str(executed) in msg and "boom: stage two is broken" in msg
    nb = nbformat.read(executed, as_version=4)
    assert any(o.output_type == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert not (tmp_path / "run" / "c_never.ipynb").exists()
    rs = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert rs["status"] == "failed" and [s["status"] for s in rs["stages"]] == ["ok", "failed"]
    assert any("b_boom: FAILED" in ln for ln in lines)


def test_reused_out_holds_only_this_runs_files(tmp_path):
    """A second run into the same --out: the first run's stage files are gone, not listed as
    this run's artefacts; files the stages do not own are left alone."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nbformat.write(_nb("from pathlib import Path\nPath(out_dir, 'old.txt').write_text('x')"), nbs / "a.ipynb")
    stage = (pipeline.Stage("a"),)
    run = tmp_path / "run"
    pipeline.run(_params_file(tmp_path), out=run, progress=lambda m: None, stages=stage, notebooks=nbs)
    (run / "notes.md").write_text("mine")
    nbformat.write(_nb("from pathlib import Path\nPath(out_dir, 'new.txt').write_text('y')"), nbs / "a.ipynb")
    pipeline.run(_params_file(tmp_path), out=run, progress=lambda m: None, stages=stage, notebooks=nbs)
    assert sorted(p.name for p in (run / "a").iterdir()) == ["new.txt"]
    listed = [a["path"] for a in json.loads((run / "run_summary.json").read_text())["artefacts"]]
    assert sorted(listed) == ["a.ipynb", "a/new.txt"] and (run / "notes.md").read_text() == "mine"
    with pytest.raises(pipeline.PipelineError, match="is the notebooks folder"):  # would delete the sources
        pipeline.run(_params_file(tmp_path), out=nbs, progress=lambda m: None, stages=stage, notebooks=nbs)
    assert (nbs / "a.ipynb").exists()
    mine = tmp_path / "mine"  # a folder no run wrote is never cleaned
    (mine / "a").mkdir(parents=True)
    (mine / "a" / "keep.txt").write_text("k")
    pipeline.run(_params_file(tmp_path), out=mine, progress=lambda m: None, stages=stage, notebooks=nbs)
    assert (mine / "a" / "keep.txt").read_text() == "k"


def test_missing_output_is_a_failure(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nbformat.write(_nb("x = 1"), nbs / "lazy.ipynb")
    with pytest.raises(pipeline.PipelineError, match="did not write result.parquet"):
        pipeline.run(_params_file(tmp_path), out=tmp_path / "run", progress=lambda m: None,
                     stages=(pipeline.Stage("lazy", outputs=("result.parquet",)),), notebooks=nbs)


def test_require_runs_the_missing_producer(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nbformat.write(_nb("from pathlib import Path\nPath(out_dir, 'x.txt').write_text(params_path)"),
                   nbs / "p.ipynb")
    stages = (pipeline.Stage("p", outputs=("x.txt",)), pipeline.Stage("c", inputs={"x_path": ("p", "x.txt")}))
    want = tmp_path / "lab" / "p" / "x.txt"
    got = pipeline.require("c", "some/params.yaml", lambda m: None, stages=stages, notebooks=nbs, x_path=str(want))
    assert got == {"x_path": str(want)} and want.read_text() == "some/params.yaml"
    assert (tmp_path / "lab" / "p.ipynb").exists()  # the executed producer, beside its folder


def test_bad_params_fail_before_any_stage(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {n_estimators: lots}\n")
    with pytest.raises(ParamsError, match="model.n_estimators"):
        pipeline.run(bad, out=tmp_path / "run", progress=lambda m: None)
    assert not (tmp_path / "run").exists()


def test_run_id_is_timestamp_plus_params_hash(tmp_path):
    p1 = config.from_dict({"outputs": {"dir": str(tmp_path)}})
    p2 = config.from_dict({"outputs": {"dir": str(tmp_path)}, "model": {"seed": 1}})
    now = dt.datetime(2021, 4, 1, 12, 0, 5, tzinfo=dt.timezone.utc)
    d1 = pipeline.run_dir_for(p1, None, now)
    assert d1 == tmp_path / f"20210401T120005Z-{pipeline.params_hash(p1)}"
    assert pipeline.params_hash(p1) != pipeline.params_hash(p2)
    d1.mkdir()
    assert pipeline.run_dir_for(p1, None, now).name.endswith("-2")  # never reuses a run folder
    assert pipeline.run_dir_for(p1, tmp_path / "mine") == tmp_path / "mine"


def test_cli_pipeline_failure_is_one_line_naming_the_notebook(tmp_path):
    """Through the real CLI: a range with no data makes 01 fail; stderr names its executed notebook."""
    params = _params_file(tmp_path, dates={"start": "2020-01-01", "end": "2020-01-01"})
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "wydot_lab.cli", "pipeline", str(params), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    executed = tmp_path / "run" / "01_explore.ipynb"
    assert last.startswith("wydot-lab pipeline: error: stage 01_explore failed") and str(executed) in last
    assert executed.exists()
    assert "[1/5] 01_explore: running" in proc.stderr


def test_record_expected_outputs_keeps_only_checked_cells(tmp_path):
    nb = _nb("print('noise')")
    nb.cells.append(nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(6 * 7)"))
    nbformat.write(nb, tmp_path / "s.ipynb")
    assert pipeline.record_expected_outputs(tmp_path, stages=(pipeline.Stage("s"),)) == ["s.ipynb"]
    got = nbformat.read(tmp_path / "s.ipynb", as_version=4).cells
    assert got[1].outputs == [] and got[1].execution_count is None
    assert got[2].outputs[0]["text"] == "42\n" and got[2].execution_count == 3
