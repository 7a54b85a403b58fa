"""environment.yml (conda) must describe the same environment as pyproject.toml (the one list)."""
from __future__ import annotations

import re
import tomllib

import yaml

from conftest import ROOT

# conda-forge names that differ from PyPI's
CONDA_NAME = {"dask[complete]": "dask", "moto[server]": "moto"}


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^([A-Za-z0-9_.\-]+(?:\[[^\]]+\])?)\s*(.*)$", req.strip())
    assert m, req
    return m.group(1).lower(), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(r) for r in project["dependencies"] + project["optional-dependencies"]["test"])
    wanted = {CONDA_NAME.get(k, k): v for k, v in wanted.items()}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {}
    pip_lines = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_lines += dep["pip"]
            continue
        name, spec = _split(dep)
        if name not in ("python", "pip"):
            conda[name] = spec
    assert conda == wanted, {"only in environment.yml": conda.keys() - wanted.keys(),
                             "only in pyproject.toml": wanted.keys() - conda.keys(),
                             "different pins": {k for k in conda.keys() & wanted.keys() if conda[k] != wanted[k]}}
    assert "-e .[test]" in pip_lines  # the project itself comes from pip, editable, with its test extras
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert py.split("=")[-1] >= project["requires-python"].lstrip(">=")


def test_no_boto_pins():
    """s3fs/aiobotocore choose boto3/botocore; pinning them ourselves breaks resolution."""
    text = (ROOT / "pyproject.toml").read_text() + (ROOT / "environment.yml").read_text()
    assert "boto3" not in text and "botocore" not in text
