"""Maps: Web Mercator projection, lines never join vehicles, clean vs attacked colours, PNGs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wydot_lab import maps

W, H = 200, 60


def _track(vid: str, lon0: float, n: int = 20, t0: str = "2021-04-01T00:00:00Z") -> pd.DataFrame:
    """A short eastbound track starting at lon0 (about 80 m between messages)."""
    t = pd.Timestamp(t0) + pd.to_timedelta(np.arange(n) * 10, unit="s")
    return pd.DataFrame({"coreData_id": vid, "metadata_generatedAt": t,
                         "coreData_position_long": lon0 + np.arange(n) * 0.001,
                         "coreData_position_lat": np.full(n, 41.3)})


@pytest.fixture()
def two_vehicles() -> pd.DataFrame:
    # interleaved in time, 4 degrees apart: a naive polyline would zig-zag between them
    a, b = _track("aaaa0001", -110.0), _track("bbbb0002", -106.0)
    return maps.project(pd.concat([a, b]).sort_values("metadata_generatedAt", kind="stable"))


def test_projection_matches_web_mercator_reference():
    x, y = maps.lnglat_to_xy([-105.5886, 0.0], [41.3114, 0.0])
    # EPSG:3857 of Laramie, WY (pyproj reference values)
    from pyproj import Transformer

    rx, ry = Transformer.from_crs(4326, 3857, always_xy=True).transform(-105.5886, 41.3114)
    assert abs(x[0] - rx) < 2 and abs(y[0] - ry) < 2
    assert x.dtype == np.float32 and abs(x[1]) < 1e-3 and abs(y[1]) < 1e-3
    lon, lat = maps.xy_to_lnglat(rx, ry)
    assert abs(lon + 105.5886) < 1e-6 and abs(lat - 41.3114) < 1e-6


def test_break_lines_puts_nan_between_vehicles_and_gaps():
    a = _track("a", -110.0, n=5)
    late = _track("a", -109.0, n=3, t0="2021-04-01T05:00:00Z")  # same vehicle, a later trip
    b = _track("b", -106.0, n=4)
    lines = maps.break_lines(maps.project(pd.concat([b, late, a])))
    assert len(lines) == 5 + 3 + 4 + 2
    nan_rows = np.flatnonzero(np.isnan(lines["x"].to_numpy()))
    assert nan_rows.tolist() == [5, 9]  # after a's first trip, after a's second trip
    assert lines["x"].notna().sum() == 12


def test_lines_do_not_join_separate_vehicles(two_vehicles):
    xr, yr = maps.extent(two_vehicles)
    xr, yr = maps.equal_aspect(xr, yr, W, H)
    agg = maps.aggregate_lines(maps.break_lines(two_vehicles), W, H, xr, yr).values
    cols = np.flatnonzero(np.nan_to_num(agg).sum(axis=0) > 0)
    # both tracks are drawn ...
    xa, _ = maps.lnglat_to_xy([-110.0, -109.98], [41.3, 41.3])
    xb, _ = maps.lnglat_to_xy([-106.0, -105.98], [41.3, 41.3])
    px = lambda x: int((x - xr[0]) / (xr[1] - xr[0]) * W)  # noqa: E731
    assert cols.min() <= px(xa[1]) and cols.max() >= px(xb[0])
    # ... and nothing between them
    gap = np.nan_to_num(agg)[:, px(xa[1]) + 2: px(xb[0]) - 2]
    assert gap.size > 0 and gap.sum() == 0
    # the same frame as one naive polyline does paint the gap (so the check above can fail)
    naive = maps.aggregate_lines(two_vehicles[["x", "y"]], W, H, xr, yr).values
    assert np.nan_to_num(naive)[:, px(xa[1]) + 2: px(xb[0]) - 2].sum() > 0


def _rgb_near(img: np.ndarray, hex_color: str, tol: int = 60) -> int:
    rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    visible = img[..., 3] > 0
    close = np.abs(img[..., :3].astype(int) - rgb).sum(axis=-1) < tol
    return int((visible & close).sum())


def test_clean_and_attacked_get_distinct_colours(two_vehicles):
    df = two_vehicles.assign(is_attack=two_vehicles["coreData_id"] == "bbbb0002")
    df["label"] = maps.label_column(df)
    xr, yr = maps.equal_aspect(*maps.extent(df), W, H)
    agg = maps.aggregate_points(df, W, H, xr, yr, category="label")
    img = maps.shade(agg, color_key=maps.CLEAN_ATTACKED, spread=0)
    assert _rgb_near(img, maps.CLEAN_ATTACKED["clean"]) > 0
    assert _rgb_near(img, maps.CLEAN_ATTACKED["attacked"]) > 0
    # the attacked vehicle is the eastern one: red only in the right half, blue only in the left
    assert _rgb_near(img[:, : W // 2], maps.CLEAN_ATTACKED["attacked"]) == 0
    assert _rgb_near(img[:, W // 2:], maps.CLEAN_ATTACKED["clean"]) == 0


def test_map_pngs_are_written_and_not_blank(tmp_path, two_vehicles):
    df = two_vehicles.assign(is_attack=np.arange(len(two_vehicles)) % 3 == 0)
    df["label"] = maps.label_column(df)
    p1 = tmp_path / "traj.png"
    p2 = tmp_path / "attack.png"
    maps.trajectory_map(df, title="two vehicles", width=400, path=p1)
    maps.attack_map(df, width=400, path=p2)
    for p in (p1, p2):
        arr = np.asarray(Image.open(p).convert("RGB"))
        assert arr.shape[1] > 400 and arr.std() > 5  # more than a flat background
    img2 = np.asarray(Image.open(p2).convert("RGBA"))
    assert _rgb_near(img2, maps.CLEAN_ATTACKED["attacked"], tol=90) > 0


def test_trajectory_map_accepts_dask(two_vehicles, tmp_path):
    import dask.dataframe as dd

    raw = two_vehicles.drop(columns=["x", "y"])
    ddf = maps.project(dd.from_pandas(raw, npartitions=2))
    assert set(ddf.columns) >= {"x", "y"}
    fig = maps.trajectory_map(ddf, title="dask", width=300, path=tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 1000 and fig is not None


def test_centerline_spans_wyoming():
    c = maps.centerline_xy()
    lon, lat = maps.xy_to_lnglat(np.nanmin(c["x"]), np.nanmin(c["y"]))
    lon2, lat2 = maps.xy_to_lnglat(np.nanmax(c["x"]), np.nanmax(c["y"]))
    assert lon < -111.0 and lon2 > -104.1 and 40.9 < lat < lat2 < 41.9
    assert c["x"].isna().sum() == 2  # one separator after each direction


def test_interactive_rasterizes(two_vehicles):
    """The Bokeh figure has the requested size, a title, degree axes and a degree hover."""
    import holoviews as hv
    from bokeh.models import CustomJSTickFormatter, HoverTool

    pane = maps.interactive(two_vehicles, width=640, height=300, title="t")
    assert isinstance(pane.object, hv.core.Dimensioned)
    fig = hv.render(pane.object, backend="bokeh")
    assert (fig.frame_width, fig.frame_height, fig.title.text) == (640 - 90, 300 - 70, "t")
    for axis in (fig.xaxis[0], fig.yaxis[0]):
        assert isinstance(axis.formatter, CustomJSTickFormatter) and "6378137" in axis.formatter.code
    tips = [t for tool in fig.tools if isinstance(tool, HoverTool) for t in tool.tooltips]
    assert [name for name, _ in tips] == ["longitude", "latitude", "messages"]


def test_interactive_by_category_has_the_documented_legend(two_vehicles):
    import holoviews as hv

    df = two_vehicles.assign(is_attack=np.arange(len(two_vehicles)) % 2 == 0)
    df["label"] = maps.label_column(df)
    fig = hv.render(maps.interactive(df, category="label", width=700, height=320).object, backend="bokeh")
    items = {item.label["value"]: item.renderers[0].glyph.fill_color for item in fig.legend[0].items}
    assert items == maps.CLEAN_ATTACKED
    assert (fig.frame_width, fig.frame_height) == (700 - 90, 320 - 70)


def test_lines_follow_the_order_sent_not_a_receivers_batched_stamp():
    stamp = pd.Timestamp("2018-12-05 14:04:57.701", tz="UTC")
    d = pd.DataFrame({"coreData_id": ["31325442"] * 3, "metadata_generatedAt": [stamp, stamp, stamp],
                      "coreData_secMark": pd.array([57610, 57510, 57710], dtype="Int32"),
                      "x": [2.0, 1.0, 3.0], "y": [0.0, 0.0, 0.0]})
    assert maps.break_lines(d)["x"].tolist() == [1.0, 2.0, 3.0]
    assert maps.break_lines(d.drop(columns="coreData_secMark"))["x"].tolist() == [2.0, 1.0, 3.0]  # stamp only
