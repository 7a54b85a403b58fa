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
