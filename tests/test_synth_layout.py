"""The synth package: every module imports first in a fresh process, no import circle, and the
old `wydot_lab.synth` names and `python -m wydot_lab.synth` still work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wydot_lab import synth

from conftest import assert_no_import_circle, package_imports, package_modules

MODULES = package_modules("synth")
# what tests, benchmarks and the CLI reach on the package (the old module's names)
OLD_NAMES = [
    "write_corpus", "generate", "write_from_params", "make_fleet", "simulate_block", "format_chunks", "to_table",
    "defect_line", "plan_defects", "make_messy", "DEFECTS", "KINDS", "NOT_QUARANTINED", "SCHEMA_VERSIONS",
    "OBJECTS_PER_HOUR", "CRUMBS", "WINDOW", "LANE_M", "V_TOP", "BUCKET_M", "CHUNK_ROWS", "PRIVACY_MPS", "CRUMB_SIGN",
    "_template", "_num", "_locate", "_lines", "_m_per_deg",
]  # fmt: skip


@pytest.mark.parametrize("module", ["wydot_lab.synth"] + [f"wydot_lab.synth.{m}" for m in MODULES])
def test_each_module_imports_first_in_a_fresh_process(module):
    code = f"import {module}, wydot_lab.synth as s; s.make_fleet(2, 0.1, 1); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_no_module_imports_the_package_and_the_graph_has_no_circle():
    graph = {m: package_imports("synth", m) for m in MODULES}
    assert all("__init__" not in deps for deps in graph.values()), graph
    assert graph["fleet"] == set()  # the base: the road and the constants
    assert_no_import_circle(graph)


def test_the_old_names_are_on_the_package():
    missing = [n for n in OLD_NAMES if not hasattr(synth, n)]
    assert not missing, missing
    assert all(hasattr(synth, n) for n in synth.__all__)
    assert synth.write_corpus.__module__ == "wydot_lab.synth.corpus"


def test_errors_keep_valueerror_as_a_base():
    with pytest.raises(ValueError, match="above 1000 Hz"):
        synth.make_fleet(2, 2000.0, 1)
    with pytest.raises(synth.SynthParamsError, match="records/hour needs"):
        synth.generate("2021-04-01", days=1, vehicles=2, rate_hz=0.1, seed=1, records_per_hour=100)


def test_python_dash_m_runs_the_package(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("synth:\n  start: 2021-04-01\n  days: 1\n  vehicles: 3\n  rate_hz: 0.01\n  seed: 1\n")
    out = subprocess.run([sys.executable, "-m", "wydot_lab.synth", str(params), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert '"valid"' in out.stdout and any((tmp_path / "out").rglob("*"))
