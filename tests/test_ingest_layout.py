"""The ingest package: every module imports first in a fresh process, and no import circle."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import assert_no_import_circle, package_imports, package_modules

MODULES = package_modules("ingest")


@pytest.mark.parametrize(
    "module", ["wydot_lab.ingest", "wydot_lab.dtg_csv"] + [f"wydot_lab.ingest.{m}" for m in MODULES]
)
def test_each_module_imports_first_in_a_fresh_process(module):
    code = f"import {module}, wydot_lab.ingest as i; i.ingest_bytes(b'', 'x'); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_no_module_imports_the_package_and_the_graph_has_no_circle():
    graph = {m: package_imports("ingest", m) for m in MODULES}
    assert all("__init__" not in deps for deps in graph.values()), graph
    assert "ode" not in graph["dtg_csv"] and "dtg_csv" not in graph["ode"]  # the readers stand side by side
    assert {"results"} <= graph["dtg_csv"] and {"results"} <= graph["ode"]
    assert_no_import_circle(graph)
