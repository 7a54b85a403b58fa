"""Shared test set-up: Jupyter/matplotlib/numba state goes to a temporary folder, removed
when the session ends."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_STATE = Path(tempfile.mkdtemp(prefix="wydot-lab-test-state-"))
for var, sub in [("IPYTHONDIR", "ipython"), ("JUPYTER_DATA_DIR", "jupyter"),
                 ("MPLCONFIGDIR", "matplotlib"), ("NUMBA_CACHE_DIR", "numba")]:
    os.environ.setdefault(var, str(_STATE / sub))
os.environ.setdefault("MPLBACKEND", "Agg")
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))



def pytest_unconfigure(config):
    shutil.rmtree(_STATE, ignore_errors=True)


REAL_DIR = ROOT / "test_data" / "real_wydot"
SYNTH_DIR = ROOT / "test_data" / "synthetic_wydot"


def package_modules(package: str) -> list[str]:
    """The module names of `wydot_lab.<package>` (no `__init__`, no `__main__`)."""
    return sorted(p.stem for p in (ROOT / "wydot_lab" / package).glob("*.py") if p.stem not in ("__init__", "__main__"))


def package_imports(package: str, module: str) -> set[str]:
    """The `wydot_lab.<package>` modules `module` imports ("__init__" for the package itself)."""
    import ast

    full, modules = f"wydot_lab.{package}", package_modules(package)
    out = set()
    for node in ast.walk(ast.parse((ROOT / "wydot_lab" / package / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(full):
            rest = node.module.removeprefix(full).lstrip(".")
            out |= {rest} if rest else {a.name if a.name in modules else "__init__" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "wydot_lab":
            out |= {"__init__" for a in node.names if a.name == package}
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix(f"{full}.") for a in node.names if a.name.startswith(f"{full}.")}
    return out


def assert_no_import_circle(graph: dict[str, set[str]]) -> None:
    """Fail naming the circle if the module -> imported modules graph has one."""
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, f"import circle: {' -> '.join(path + (m,))}"
        if m not in done:
            for dep in graph[m]:
                visit(dep, path + (m,))
            done.add(m)

    for m in graph:
        visit(m, ())
