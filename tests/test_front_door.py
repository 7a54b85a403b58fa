"""`import wydot_lab as wl`: every stage's entry, and the heavy libraries only on first use."""
from __future__ import annotations

import subprocess
import sys

import wydot_lab as wl


def test_import_loads_no_heavy_library():
    code = ("import sys, wydot_lab as wl; heavy = {'pandas', 'dask', 'pyarrow', 'sklearn', 'holoviews'};"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_entry_is_the_documented_function():
    from wydot_lab import config, experiment, fetch, maps

    assert wl.load_params is config.load
    assert wl.load_range is fetch.load_range and wl.fetch_range is fetch.fetch_range
    assert wl.run_experiment is experiment.run and wl.interactive_map is maps.interactive
    import wydot_lab

    for name in wl.__all__:
        assert name not in wydot_lab._MODULES, f"{name} would be shadowed by the submodule"
        assert callable(getattr(wl, name)), name
        assert name in dir(wl)
        assert name in wl.__doc__, f"{name} is not in the front door's docstring"


def test_modules_stay_reachable_and_unknown_names_fail():
    assert wl.cache.__name__ == "wydot_lab.cache"
    try:
        _ = wl.no_such_thing
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
