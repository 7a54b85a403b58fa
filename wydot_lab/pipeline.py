"""`make pipeline`: run the stage notebooks in order with papermill into `outputs/<run-id>/`.

Why notebooks and not functions: the executed notebooks *are* the report (tables, maps,
metrics next to the code that made them). Stages chain through files only: each gets the
params file, its own output folder and the paths of the files earlier stages wrote, as
papermill parameters, so any stage can be re-run alone and no kernel state leaks between them.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from wydot_lab import config
from wydot_lab.errors import PipelineError  # re-exported here

KERNEL = "python3"
VERSIONED = ("wydot_lab", "numpy", "pandas", "pyarrow", "dask", "distributed", "msgspec", "scikit-learn",
             "scipy", "datashader", "hvplot", "holoviews", "ipywidgets", "papermill", "nbclient",
             "ipykernel", "matplotlib", "pydantic", "s3fs", "fsspec")


@dataclass(frozen=True)
class Stage:
    """One notebook: `inputs` maps a parameter name to (earlier stage, file name in its folder)."""

    name: str
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()


STAGES: tuple[Stage, ...] = (
    Stage("01_explore", outputs=("records.parquet", "quarantine.parquet", "non_bsm.parquet", "hours.parquet",
                                 "summary.json", "trajectories.png")),
    Stage("02_validate", inputs={"records_path": ("01_explore", "records.parquet"),
                                 "quarantine_path": ("01_explore", "quarantine.parquet"),
                                 "non_bsm_path": ("01_explore", "non_bsm.parquet"),
                                 "hours_path": ("01_explore", "hours.parquet")},
          outputs=("validation.json", "quarantine_reasons.png")),
    Stage("03_featurize", inputs={"records_path": ("01_explore", "records.parquet")},
          outputs=("features.parquet", "feature_distributions.png", "flag_rates.png")),
    Stage("04_attack_sim", inputs={"records_path": ("01_explore", "records.parquet")},
          outputs=("attacked.parquet", "attack_summary.csv", "attack_map.png", "attack_zoom.png")),
    Stage("05_train", inputs={"records_path": ("01_explore", "records.parquet")},
          outputs=("metrics.json", "results.parquet", "scores.parquet", "importances.parquet", "models",
                   "confusion_matrix.png", "pr_curves.png", "feature_importance.png", "time_to_detection.png")),
)


def notebooks_dir() -> Path:
    return config.project_root() / "notebooks"


def params_hash(params: config.Params) -> str:
    """Short content hash of the validated params (key order and formatting do not matter)."""
    blob = json.dumps(config.to_dict(params), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def run_dir_for(params: config.Params, out: str | Path | None, now: dt.datetime | None = None) -> Path:
    """`out` if given, else `<outputs.dir>/<UTC timestamp>-<params hash>` (never reused)."""
    if out is not None:
        return Path(config.resolve_path(str(out)))
    now = now or dt.datetime.now(dt.timezone.utc)
    base = Path(config.resolve_path(params.outputs.dir)) / f"{now:%Y%m%dT%H%M%SZ}-{params_hash(params)}"
    candidate, k = base, 1
    while candidate.exists():
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _stage_paths(run_dir: Path, stages: tuple[Stage, ...]) -> list[Path]:
    """What a run writes: each stage's folder and executed notebook (plus run_summary.json)."""
    return [p for s in stages for p in (run_dir / s.name, run_dir / f"{s.name}.ipynb")]


def _start_clean(run_dir: Path, stages: tuple[Stage, ...]) -> None:
    """A reused `--out` must not mix an earlier run's files (e.g. models of attacks no longer
    in the params) into this run's outputs and artefact list. Only a folder an earlier run
    wrote (it holds run_summary.json) is cleaned, and only of the stages' files."""
    if not (run_dir / "run_summary.json").is_file():
        return
    for p in [*_stage_paths(run_dir, stages), run_dir / "run_summary.json"]:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def artefacts(run_dir: Path, stages: tuple[Stage, ...] = STAGES) -> list[dict]:
    """Every file the run's stages wrote (path relative to the run folder, bytes, sha256)."""
    rows = []
    for p in sorted(f for top in _stage_paths(run_dir, stages) for f in ([top] if top.is_file() else top.rglob("*"))):
        if p.is_file():
            rows.append({"path": p.relative_to(run_dir).as_posix(), "bytes": p.stat().st_size,
                         "sha256": hashlib.sha256(p.read_bytes()).hexdigest()})
    return rows


def stage_parameters(stage: Stage, run_dir: Path, params_path: Path) -> dict[str, str]:
    """The papermill parameters of one stage: params file, own output folder, input files."""
    values = {"params_path": str(params_path), "out_dir": str(run_dir / stage.name)}
    for name, (producer, filename) in stage.inputs.items():
        values[name] = str(run_dir / producer / filename)
    return values


def _first_line(text: object) -> str:
    s = str(text).strip()
    return s.splitlines()[0] if s else ""


def run(params_path: str | Path, out: str | Path | None = None,
        progress: Callable[[str], None] = print, *, stages: tuple[Stage, ...] = STAGES,
        notebooks: str | Path | None = None, timeout: float | None = None) -> dict:
    """Validate the params, run every stage notebook, write `run_summary.json`; return the summary.

    A failing stage stops the run; the raised `PipelineError` names its executed notebook.
    """
    import papermill as pm

    params_file = config.find(params_path)
    params = config.load(params_file)  # a bad params file fails here, before any stage runs
    nb_dir = Path(notebooks) if notebooks else notebooks_dir()
    run_dir = run_dir_for(params, out)
    if run_dir.resolve() == nb_dir.resolve():
        raise PipelineError(f"--out {run_dir} is the notebooks folder: the executed copies would replace the sources")
    run_dir.mkdir(parents=True, exist_ok=True)
    _start_clean(run_dir, stages)
    summary: dict = {"run_id": run_dir.name, "run_dir": str(run_dir), "params_path": str(params_file),
                     "params_sha256_8": params_hash(params), "params": config.to_dict(params),
                     "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "versions": versions(), "stages": [], "status": "running"}
    progress(f"pipeline: {len(stages)} stages -> {run_dir}")
    t_run = time.perf_counter()
    try:
        for i, stage in enumerate(stages, 1):
            _run_stage(pm, stage, i, len(stages), nb_dir, run_dir, params_file, summary, progress, timeout)
        summary["status"] = "ok"
    finally:
        summary["seconds"] = round(time.perf_counter() - t_run, 3)
        summary["artefacts"] = artefacts(run_dir, stages)
        if summary["status"] == "running":
            summary["status"] = "failed"
        (run_dir / "run_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    progress(f"pipeline: done in {summary['seconds']:.1f}s; summary {run_dir / 'run_summary.json'}")
    return {"run_dir": str(run_dir), "status": summary["status"], "seconds": summary["seconds"],
            "stages": {s["name"]: s["seconds"] for s in summary["stages"]},
            "artefacts": len(summary["artefacts"])}


def _run_stage(pm, stage: Stage, i: int, n: int, nb_dir: Path, run_dir: Path, params_file: Path,
               summary: dict, progress: Callable[[str], None], timeout: float | None) -> None:
    src = nb_dir / f"{stage.name}.ipynb"
    executed = run_dir / f"{stage.name}.ipynb"
    values = stage_parameters(stage, run_dir, params_file)
    (run_dir / stage.name).mkdir(parents=True, exist_ok=True)
    progress(f"[{i}/{n}] {stage.name}: running")
    record = {"name": stage.name, "notebook": executed.name, "parameters": values, "status": "running"}
    summary["stages"].append(record)
    t0 = time.perf_counter()
    try:
        _execute(pm, src, executed, values, run_dir / stage.name, timeout)
    except Exception as err:  # a cell raised, or the kernel died, the notebook is missing, timeout ...
        cell = isinstance(err, pm.PapermillExecutionError)
        record.update(status="failed", seconds=round(time.perf_counter() - t0, 3),
                      error=f"{err.ename}: {_first_line(err.evalue)}" if cell
                      else f"{type(err).__name__}: {_first_line(err)}")
        progress(f"[{i}/{n}] {stage.name}: FAILED ({record['error']})")
        raise PipelineError(f"stage {stage.name} failed ({record['error']}); see {executed}") from None
    missing = [f for f in stage.outputs if not (run_dir / stage.name / f).exists()]
    record["seconds"] = round(time.perf_counter() - t0, 3)
    if missing:
        record.update(status="failed", error=f"did not write {', '.join(missing)}")
        raise PipelineError(f"stage {stage.name} did not write {', '.join(missing)}; see {executed}")
    record["status"] = "ok"
    progress(f"[{i}/{n}] {stage.name}: ok in {record['seconds']:.1f}s")


def _execute(pm, src: Path, executed: Path, values: dict, cwd: Path, timeout: float | None = None) -> None:
    """papermill one notebook with the stage parameters, run in its output folder, quietly."""
    # the kernel listens on 127.0.0.1 only; its warning that TCP is unencrypted (ipykernel >= 7)
    # printed one block per stage and said nothing about the run
    pm.execute_notebook(str(src), str(executed), parameters=values, kernel_name=KERNEL, cwd=str(cwd),
                        progress_bar=False, log_output=False, execution_timeout=timeout,
                        extra_arguments=["--IPKernelApp.log_level=ERROR"])


def stage(name: str, stages: tuple[Stage, ...] = STAGES) -> Stage:
    for s in stages:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in stages)}")


def require(stage_name: str, params_path: str | Path, progress: Callable[[str], None] = print, *,
            stages: tuple[Stage, ...] = STAGES, notebooks: str | Path | None = None,
            **inputs: str) -> dict[str, str]:
    """Resolved input paths of a stage; a missing input is made by running its producer notebook.

    So a notebook opened alone in JupyterLab still runs (Run All): its inputs default to the
    producer's lab output folder, and the producer runs there once, with the same params file.
    """
    import papermill as pm

    nb_dir = Path(notebooks) if notebooks else notebooks_dir()
    me = stage(stage_name, stages)
    out = {}
    for name, path in inputs.items():
        resolved = Path(config.resolve_path(path))
        if not resolved.exists() and name in me.inputs:
            producer = stage(me.inputs[name][0], stages)
            prod_out = resolved.parent
            values = {"params_path": str(params_path), "out_dir": str(prod_out)}
            values.update(require(producer.name, params_path, progress, stages=stages, notebooks=nb_dir,
                                  **{k: str(prod_out.parent / p / f) for k, (p, f) in producer.inputs.items()}))
            progress(f"{name}: {resolved} missing; running {producer.name} into {prod_out}")
            prod_out.mkdir(parents=True, exist_ok=True)
            _execute(pm, nb_dir / f"{producer.name}.ipynb", prod_out.parent / f"{producer.name}.ipynb",
                     values, prod_out)
        out[name] = str(resolved)
    return out


CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


def record_expected_outputs(notebooks: str | Path | None = None, timeout: float = 900,
                            stages: tuple[Stage, ...] = STAGES) -> list[str]:
    """Re-run each stage notebook with its defaults and keep only the outputs nbval compares.

    Cells marked `# NBVAL_CHECK_OUTPUT` keep their outputs and execution count (the expected
    values nbval checks); every other cell is stripped, so the committed notebooks stay small.
    Run after a deliberate change of the corpus, the tiny params or a checked cell.
    """
    import nbformat
    from nbclient import NotebookClient

    nb_dir = Path(notebooks) if notebooks else notebooks_dir()
    done = []
    for stage_ in stages:
        path = nb_dir / f"{stage_.name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, kernel_name=KERNEL, timeout=timeout,
                       resources={"metadata": {"path": str(nb_dir)}}).execute()
        for c in nb.cells:
            if c.cell_type != "code":
                continue
            if any(o.output_type == "error" for o in c.outputs):
                raise PipelineError(f"{path.name}: a cell failed while recording expected outputs")
            c.metadata.pop("execution", None)
            if not c.source.lstrip().startswith(CHECK_MARK):
                c.outputs, c.execution_count = [], None
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, path)
        done.append(path.name)
    return done
