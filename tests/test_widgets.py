"""Date-range picker: only available dates, reload on change, counts and map replaced in place."""
from __future__ import annotations

import datetime as dt

import pytest

from wydot_lab import config, widgets

D = dt.date


def _bucket(root, hours: list[str], pilot="wydot", mtype="BSM"):
    """Hour folders `YYYY/MM/DD/HH` with one object each (empty folders must not count)."""
    for h in hours:
        d = root / pilot / mtype / h
        d.mkdir(parents=True)
        (d / "obj").write_text("{}\n")


def test_dates_in_folder_lists_hour_folders(tmp_path):
    _bucket(tmp_path, ["2021/04/01/00", "2021/04/01/23", "2021/04/03/05"])
    (tmp_path / "wydot" / "BSM" / "2021" / "04" / "02" / "07").mkdir(parents=True)  # empty hour
    (tmp_path / "wydot" / "BSM" / "notes").mkdir()
    assert widgets.dates_in_folder(tmp_path) == [D(2021, 4, 1), D(2021, 4, 3)]
    assert widgets.dates_in_folder(tmp_path, message_type="TIM") == []


def _cache_hours(root, hours: list[str]):
    """A real cache (manifests and all) with one empty partition per hour."""
    from wydot_lab import cache
    from wydot_lab.schema import BSM_SCHEMA, NON_BSM_SCHEMA, QUARANTINE_SCHEMA

    c = cache.Cache(str(root))
    for h in hours:
        hour = dt.datetime.fromisoformat(h).replace(tzinfo=dt.timezone.utc)
        c.write(hour, BSM_SCHEMA.empty_table(), QUARANTINE_SCHEMA.empty_table(),
                NON_BSM_SCHEMA.empty_table(), blank=0, source_objects=[])


def test_dates_in_cache_lists_cached_partitions(tmp_path):
    _cache_hours(tmp_path, ["2021-04-02T03:00", "2021-04-02T04:00", "2021-04-05T23:00"])
    assert widgets.dates_in_cache(str(tmp_path)) == [D(2021, 4, 2), D(2021, 4, 5)]
    assert widgets.dates_in_cache(str(tmp_path), message_type="TIM") == []
    assert widgets.dates_in_cache(str(tmp_path / "missing")) == []


def test_available_dates_prefers_local_source(tmp_path):
    _bucket(tmp_path / "src", ["2021/04/02/10"])
    p = config.from_dict({"source": {"url": str(tmp_path / "src")}, "cache": {"root": str(tmp_path / "c")}})
    assert widgets.available_dates(p) == [D(2021, 4, 2)]
    # source not a local folder (a URL): the cache says what exists
    _cache_hours(tmp_path / "c", ["2021-04-09T12:00"])
    p2 = config.from_dict({"source": {"url": "s3://bucket"}, "cache": {"root": str(tmp_path / "c")}})
    assert widgets.available_dates(p2) == [D(2021, 4, 9)]


class _Source:
    """Fake per-day record counts; the reload callback a notebook would pass."""

    def __init__(self):
        self.per_day = {D(2021, 4, 1): 10, D(2021, 4, 2): 20, D(2021, 4, 4): 40}
        self.calls: list[tuple[dt.date, dt.date]] = []

    def reload(self, start, end):
        self.calls.append((start, end))
        n = sum(v for d, v in self.per_day.items() if start <= d <= end)
        return {"counts": {"records": n, "days": sum(start <= d <= end for d in self.per_day)}}


def test_picker_offers_only_available_dates_and_reloads_in_place():
    src = _Source()
    picker = widgets.DateRangePicker(src.per_day, src.reload, start=D(2021, 4, 1), end=D(2021, 4, 1))
    assert [v for _, v in picker.slider.options] == sorted(src.per_day)
    assert src.calls == [(D(2021, 4, 1), D(2021, 4, 1))]
    assert picker.result["counts"]["records"] == 10
    first = picker.counts_out.outputs

    picker.slider.value = (D(2021, 4, 2), D(2021, 4, 4))  # what a user's drag does
    assert src.calls[-1] == (D(2021, 4, 2), D(2021, 4, 4))
    assert picker.result["counts"]["records"] == 60
    assert picker.history == src.calls
    html = picker.counts_out.outputs[0]["data"]["text/html"]
    assert "60" in html and len(picker.counts_out.outputs) == 1  # replaced, not appended
    assert picker.counts_out.outputs != first
    # our readout, whole and unambiguous; ipywidgets' own hyphen-joined one is off
    assert not picker.slider.readout and "2021-04-02 → 2021-04-04" in picker.readout.value
    assert picker.status.value == "60 records shown for 2021-04-02 → 2021-04-04"


def test_picker_clamps_params_range_to_available_dates():
    src = _Source()
    picker = widgets.DateRangePicker(src.per_day, src.reload, start=D(2021, 3, 1), end=D(2021, 4, 3))
    assert picker.value == (D(2021, 4, 1), D(2021, 4, 4))
    assert widgets.DateRangePicker(src.per_day, src.reload).value == (D(2021, 4, 1), D(2021, 4, 4))


def test_picker_shows_map_figure(tmp_path):
    from matplotlib.figure import Figure

    def reload(start, end):
        fig = Figure(figsize=(2, 1))
        fig.add_subplot().plot([0, 1], [0, (end - start).days])
        return {"counts": {"days": (end - start).days + 1}, "figure": fig}

    picker = widgets.DateRangePicker([D(2021, 4, 1), D(2021, 4, 2)], reload)
    png = picker.map_out.outputs[0]["data"]["image/png"]
    assert png  # base64 text of a PNG
    picker.slider.value = (D(2021, 4, 2), D(2021, 4, 2))
    assert picker.map_out.outputs[0]["data"]["image/png"] != png
    assert len(picker.map_out.outputs) == 1


def test_picker_without_dates_explains():
    with pytest.raises(ValueError, match="no dates available"):
        widgets.DateRangePicker([], lambda s, e: {})


def _frame():
    import pandas as pd

    t = pd.to_datetime(["2021-04-01T00:10Z", "2021-04-01T00:20Z", "2021-04-01T02:05Z", "2021-04-02T00:00Z"])
    return pd.DataFrame({"coreData_id": ["a", "a", "b", "c"], "metadata_generatedAt": t,
                         "metadata_schemaVersion": pd.array([6, 6, 3, 6], dtype="int8"),
                         "metadata_recordType": ["bsmTx", "bsmTx", "rxMsg", "bsmTx"]})


def test_summarize_counts_pandas_and_dask_alike():
    import dask.dataframe as dd

    s = widgets.summarize(_frame())
    assert s["records"] == 4 and s["vehicles"] == 3 and s["hours"] == 3
    assert s["schema_versions"] == {3: 1, 6: 3} and s["record_types"] == {"bsmTx": 3, "rxMsg": 1}
    assert s["first"].startswith("2021-04-01 00:10") and s["last"].startswith("2021-04-02 00:00")
    assert widgets.summarize(dd.from_pandas(_frame(), npartitions=2)) == s
    flat = widgets.flat_counts(s)
    assert flat["schemaVersion 6"] == 3 and flat["recordType rxMsg"] == 1
