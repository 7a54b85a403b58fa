"""A date-range picker limited to the dates that exist, reloading counts and map in place.

Why: a user should never pick a day with no data, and the explore notebook should redraw
without re-running cells. The widget only knows dates and a `reload(start, end) -> dict`
callback, so it is testable in plain Python (set `picker.slider.value`, read `picker.result`);
under papermill nobody moves the slider and the params' date range is what runs.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from wydot_lab import layout
from wydot_lab.errors import NoRecords

Reload = Callable[[dt.date, dt.date], dict]


# ------------------------------------------------------------------ which dates exist


def dates_in_folder(root: str | Path, pilot: str = layout.DEFAULT_PILOT,
                    message_type: str = layout.DEFAULT_TYPE) -> list[dt.date]:
    """UTC dates with at least one non-empty hour folder under a local bucket-layout folder."""
    base = Path(root) / pilot / message_type
    if not base.is_dir():
        return []
    days = set()
    for hour_dir in base.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/[0-9][0-9]"):
        hour = layout.hour_of_key(hour_dir.relative_to(base).as_posix())
        if hour is not None and hour_dir.is_dir() and any(hour_dir.iterdir()):
            days.add(hour.date())
    return sorted(days)


def dates_in_cache(cache_root: str, pilot: str = layout.DEFAULT_PILOT,
                   message_type: str = layout.DEFAULT_TYPE) -> list[dt.date]:
    """Dates with at least one servable cached hour (`cache.ls`: fresh or incomplete partitions)."""
    from wydot_lab import cache

    if "://" not in str(cache_root) and not Path(cache_root).is_dir():
        return []
    rows = cache.ls(str(cache_root), pilot=pilot, message_type=message_type)
    return sorted({dt.date.fromisoformat(r["hour"][:10]) for r in rows
                   if r["status"] in (cache.FRESH, cache.INCOMPLETE)})


def available_dates(params: Any) -> list[dt.date]:
    """Dates the picker may offer: the local source folder if it is one, else the cache."""
    from wydot_lab import config

    src = config.resolve_path(params.source.url)
    if "://" not in src and Path(src).is_dir():
        days = dates_in_folder(src, params.source.pilot, params.source.message_type)
        if days:
            return days
    return dates_in_cache(config.resolve_path(params.cache.root), params.source.pilot,
                          params.source.message_type)


# ------------------------------------------------------------------ what a range holds


def summarize(df: Any) -> dict:
    """Records, vehicles, hours, time span, schema versions and record types of a frame.

    pandas or dask (one `dask.compute` pass); the counts the picker and 01_explore show.
    """
    t = df["metadata_generatedAt"]
    lazy = {"records": df["coreData_id"].size, "vehicles": df["coreData_id"].nunique(),
            "hours": t.dt.floor("h").nunique(), "first": t.min(), "last": t.max(),
            "versions": df["metadata_schemaVersion"].value_counts(),
            "types": df["metadata_recordType"].value_counts()}
    if hasattr(df, "map_partitions"):
        import dask

        lazy = dict(zip(lazy, dask.compute(*lazy.values())))
    out = {k: int(lazy[k]) for k in ("records", "vehicles", "hours")}
    for k in ("first", "last"):
        v = lazy[k]
        out[k] = None if v is None or v != v else str(v)
    out["schema_versions"] = {int(k): int(v) for k, v in sorted(lazy["versions"].items())}
    out["record_types"] = {str(k): int(v) for k, v in sorted(lazy["types"].items())}
    return out


def flat_counts(summary: dict) -> dict:
    """One-level view of `summarize` for a small table (versions as `v6: n` rows)."""
    out = {k: summary[k] for k in ("records", "vehicles", "hours", "first", "last")}
    out.update({f"schemaVersion {k}": v for k, v in summary["schema_versions"].items()})
    out.update({f"recordType {k}": v for k, v in summary["record_types"].items()})
    return out


def range_reload(params: Any, width: int | None = None, progress: Any = False) -> Reload:
    """The explore notebook's reload: fetch/load the new range, count it, map it."""
    from wydot_lab import config, fetch, maps

    def reload(start: dt.date, end: dt.date) -> dict:
        p = params.model_copy(update={"dates": config.DateParams(start=start, end=end)})
        ddf = fetch.load_range(p, progress=progress)
        summary = summarize(ddf)
        fig = None
        if summary["records"]:
            fig = maps.trajectory_map(maps.project(ddf), width=width or params.maps.width,
                                      max_height=params.maps.height,
                                      title=f"Trajectories {readout(start, end)}")
        return {"counts": flat_counts(summary), "summary": summary, "figure": fig}

    return reload


# ------------------------------------------------------------------ the widget


class DateRangePicker:
    """`SelectionRangeSlider` over the available dates; each change calls `reload(start, end)`.

    `reload` returns a dict: `counts` (mapping or DataFrame, shown as a table) and optionally
    `figure` (matplotlib) or `png` (bytes), shown in the map area. Both areas are Output
    widgets that are replaced in place. `history` lists every (start, end) reloaded.
    """

    def __init__(self, dates: Iterable[dt.date], reload: Reload,
                 start: dt.date | None = None, end: dt.date | None = None,
                 description: str = "dates (UTC)"):
        import ipywidgets as w

        self.dates = sorted(set(dates))
        if not self.dates:
            raise NoRecords("no dates available: the source folder and the cache are both empty")
        self._reload = reload
        self.history: list[tuple[dt.date, dt.date]] = []
        self.result: dict | None = None
        self.slider = w.SelectionRangeSlider(
            options=[(d.isoformat(), d) for d in self.dates],
            index=(self._index(start, 0), self._index(end, len(self.dates) - 1)),
            description=description, continuous_update=False, readout=False,
            layout=w.Layout(width="520px"), style={"description_width": "initial"})
        # ipywidgets' own readout hyphen-joins ISO dates and cuts them: say the range ourselves
        self.readout = w.HTML(layout=w.Layout(width="auto"))
        self.status = w.HTML()
        self.counts_out = w.Output()
        self.map_out = w.Output()
        self.widget = w.VBox([w.HBox([self.slider, self.readout]), self.status,
                              self.counts_out, self.map_out])
        self.slider.observe(self._on_change, names="value")
        self.refresh()

    def _index(self, day: dt.date | None, default: int) -> int:
        """Nearest available date at or after `day` (clamped), so params outside the data still work."""
        if day is None:
            return default
        for i, d in enumerate(self.dates):
            if d >= day:
                return i
        return len(self.dates) - 1

    @property
    def value(self) -> tuple[dt.date, dt.date]:
        return tuple(self.slider.value)  # type: ignore[return-value]

    def _on_change(self, change: dict) -> None:
        if change.get("new") != change.get("old"):
            self.refresh()

    def refresh(self) -> dict:
        """Reload the selected range and replace the counts table and the map."""
        from IPython.display import HTML, Image

        from wydot_lab import maps

        start, end = self.value
        self.readout.value = f"<b>{readout(start, end)}</b>"
        self.status.value = f"<i>loading {readout(start, end)}</i>"
        result = dict(self._reload(start, end))
        self.history.append((start, end))
        self.result = result
        counts = result.get("counts", {})
        table = counts if hasattr(counts, "to_html") else _counts_frame(counts)
        self.counts_out.outputs = ()
        self.counts_out.append_display_data(HTML(table.to_html()))
        self.map_out.outputs = ()
        png = result.get("png") or (maps.png_bytes(result["figure"]) if result.get("figure") is not None else None)
        if png:
            self.map_out.append_display_data(Image(data=png, format="png"))
        self.status.value = f"{result_rows(result)} shown for {readout(start, end)}"
        return result

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def readout(start: dt.date, end: dt.date) -> str:
    """`2021-04-01 → 2021-04-03` (inclusive UTC days): ISO dates joined by a hyphen are ambiguous."""
    return f"{start.isoformat()} → {end.isoformat()}" if start != end else start.isoformat()


def result_rows(result: dict) -> str:
    counts = result.get("counts", {})
    if isinstance(counts, dict) and "records" in counts:
        return f"{int(counts['records']):,} records"
    return "counts"


def _counts_frame(counts: dict):
    import pandas as pd

    return pd.DataFrame({"value": list(counts.values())}, index=list(counts.keys()))
