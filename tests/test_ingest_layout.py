"""The ingest package: every module imports first in a fresh process, and no import circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "wydot_lab" / "ingest"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _ingest_imports(module: str) -> set[str]:
    """The `wydot_lab.ingest` modules `module` imports ("__init__" for the package itself)."""
    out = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wydot_lab.ingest"):
            rest = node.module.removeprefix("wydot_lab.ingest").lstrip(".")
            out |= {rest} if rest else {a.name if a.name in MODULES else "__init__" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {
                a.name.removeprefix("wydot_lab.ingest.") for a in node.names if a.name.startswith("wydot_lab.ingest.")
            }
    return out


@pytest.mark.parametrize(
    "module", ["wydot_lab.ingest", "wydot_lab.dtg_csv"] + [f"wydot_lab.ingest.{m}" for m in MODULES]
)
def test_each_module_imports_first_in_a_fresh_process(module):
    code = f"import {module}, wydot_lab.ingest as i; i.ingest_bytes(b'', 'x'); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_no_module_imports_the_package_and_the_graph_has_no_circle():
    graph = {m: _ingest_imports(m) for m in MODULES}
    assert all("__init__" not in deps for deps in graph.values()), graph
    assert "ode" not in graph["dtg_csv"] and "dtg_csv" not in graph["ode"]  # the readers stand side by side
    assert {"results"} <= graph["dtg_csv"] and {"results"} <= graph["ode"]
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, f"import circle: {' -> '.join(path + (m,))}"
        if m not in done:
            for dep in graph[m]:
                visit(dep, path + (m,))
            done.add(m)

    for m in MODULES:
        visit(m, ())
