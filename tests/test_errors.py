"""One error family: every error and warning wydot_lab defines derives from `wydot_lab.errors`;
the CLI prints one line for the family and a traceback for anything else (a bug)."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import wydot_lab
from wydot_lab import cli, errors, fetch


def _package_classes():
    for name in sorted(wydot_lab._MODULES) + [
        "cache.files",
        "cache.days",
        "cache.partitions",
        "cache.read",
        "cache.admin",
    ]:
        module = importlib.import_module(f"wydot_lab.{name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__.startswith("wydot_lab.") and issubclass(obj, BaseException):
                yield obj


def test_every_error_and_warning_is_in_the_family():
    found = set(_package_classes())
    assert len(found) >= 20  # the family, the cache, source, fetch, ingest, config, models and cli classes
    for cls in found:
        base = errors.WydotLabWarning if issubclass(cls, Warning) else errors.WydotLabError
        assert issubclass(cls, base), f"{cls.__module__}.{cls.__qualname__} is outside the family"


def test_old_paths_and_old_bases_still_work():
    from wydot_lab import cache, config, ingest, models, pipeline, source

    assert cache.CorruptPartition is errors.CorruptPartition and cache.CacheWarning is errors.CacheWarning
    assert fetch.VanishedObjects is errors.VanishedObjects and fetch.EmptyRange is errors.EmptyRange
    assert source.SourceError is errors.SourceError and pipeline.PipelineError is errors.PipelineError
    assert cli.CliError is errors.CliError
    for cls, old in [
        (config.ParamsError, ValueError),
        (ingest.IngestError, ValueError),
        (models.LeakError, AssertionError),
        (cache.SourceConflict, ValueError),
        (cache.CorruptPartition, RuntimeError),
        (source.SourceError, RuntimeError),
        (source.IncompleteDownload, OSError),
        (cache.RangeNotCached, LookupError),
        (cache.CacheWarning, UserWarning),
    ]:
        assert issubclass(cls, old), cls


def test_cli_prints_one_line_for_the_family(monkeypatch, tmp_path, capsys):
    def refuse(args, progress):
        raise errors.UsageError("give both --start and --end, or neither\nsecond line")

    monkeypatch.setattr(fetch, "run_cache_cli", refuse)
    assert cli.main(["cache", "ls", "--cache", str(tmp_path)]) == cli.EXIT_ERROR == 2
    err = capsys.readouterr().err
    assert err == "wydot-lab cache: error: give both --start and --end, or neither\n"


@pytest.mark.parametrize("bug", [ValueError, KeyError, TypeError])
def test_cli_lets_a_bug_show_its_traceback(monkeypatch, tmp_path, bug):
    def broken(args, progress):
        raise bug("a bug, not a user error")

    monkeypatch.setattr(fetch, "run_cache_cli", broken)
    with pytest.raises(bug):
        cli.main(["cache", "ls", "--cache", str(tmp_path)])


def test_cli_bug_in_a_process_exits_1_with_a_traceback(tmp_path):
    code = (
        "import sys; from wydot_lab import cli, fetch\n"
        "def broken(args, progress): raise ValueError('a bug')\n"
        "fetch.run_cache_cli = broken\n"
        f"sys.exit(cli.main(['cache', 'ls', '--cache', {str(tmp_path)!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.returncode != cli.EXIT_ERROR
    assert "Traceback" in proc.stderr and "ValueError: a bug" in proc.stderr and "error: a bug" not in proc.stderr


def test_user_facing_raises_are_in_the_family(tmp_path):
    from wydot_lab import cache, layout

    with pytest.raises(errors.UsageError):
        layout.hour_range("2021-04-02", "2021-04-01")
    with pytest.raises(errors.UsageError, match="no cache at"):
        cache.Cache(str(tmp_path / "typo")).require_root()


def test_cache_modules_import_alone_in_any_order():
    for first in ("files", "days", "partitions", "read", "admin"):
        code = f"import wydot_lab.cache.{first}, wydot_lab.cache as c; assert c.load and c.Cache.compact_day"
        subprocess.run([sys.executable, "-c", code], check=True)


def test_fetch_result_is_a_frozen_type_that_reads_like_its_json():
    r = fetch.FetchResult(
        records=3,
        valid=2,
        quarantined=1,
        non_bsm=0,
        blank=0,
        files=1,
        status="complete",
        cached=24,
        fetched=0,
        missing=[],
        incomplete=[],
        seconds=0.5,
    )
    d = r.as_dict()
    assert d["valid"] == 2 and "warning" not in d and "lines_read" not in d and d["days_compacted"] == 0
    assert r["valid"] == 2 and "warning" not in r and r.get("warning") is None and "valid" in r
    with pytest.raises(KeyError):
        r["lines_read"]
    with pytest.raises(AttributeError):
        r.valid = 5  # frozen
