"""Headless trajectory maps: datashader rasters framed by matplotlib (PNG, no browser, no network).

Why this shape: datashader aggregates millions of points in a fixed-size raster, so a map costs
the same for an hour or a month; matplotlib only adds a title, degree ticks and a legend.
Positions are projected once to Web Mercator (float32 metres); trajectory lines get a NaN row
between vehicles and across time gaps so two vehicles are never joined; clean and attacked
messages are drawn by category (`count_cat`) in distinct colours. Background tiles need the
network and are off unless asked for (`params.maps.tiles`), and only in the hvplot version.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wydot_lab.errors import NoRecords
from wydot_lab.frames import LAT, LON, by_vehicle, floats

EARTH_RADIUS = 6378137.0  # the Web Mercator sphere

CLEAN_ATTACKED = {"clean": "#2b6cb0", "attacked": "#e53e3e"}
TRAJECTORY_CMAP = ["#9ecae1", "#4292c6", "#08519c", "#08306b"]
CENTERLINE_COLOR = "#b0b0b0"


# ------------------------------------------------------------------ projection


def lnglat_to_xy(lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
    """Web Mercator metres (float32) for degree arrays; the one projection every map uses."""
    from datashader.utils import lnglat_to_meters

    x, y = lnglat_to_meters(np.asarray(lon, dtype="float64"), np.asarray(lat, dtype="float64"))
    return np.asarray(x, dtype="float32"), np.asarray(y, dtype="float32")


def xy_to_lnglat(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `lnglat_to_xy`, for axis labels in degrees."""
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    lon = np.degrees(x / EARTH_RADIUS)
    lat = np.degrees(2.0 * np.arctan(np.exp(y / EARTH_RADIUS)) - math.pi / 2.0)
    return lon, lat


def _project_frame(df: pd.DataFrame, lon: str, lat: str) -> pd.DataFrame:
    x, y = lnglat_to_xy(floats(df, lon), floats(df, lat))
    return df.assign(x=x, y=y)


def project(df: Any, lon: str = LON, lat: str = LAT) -> Any:
    """Add `x`, `y` Web Mercator columns to a pandas or dask frame (dask: lazily, per partition)."""
    if hasattr(df, "map_partitions"):
        meta = df._meta.assign(x=np.float32(0), y=np.float32(0)).iloc[:0]
        return df.map_partitions(_project_frame, lon, lat, meta=meta)
    return _project_frame(df, lon, lat)


# ------------------------------------------------------------------ line breaks


def break_lines(df: pd.DataFrame, max_gap_s: float = 300.0, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """`x`, `y` in (vehicle, time sent) order, as features see them (`frames.by_vehicle`), with a
    NaN row between vehicles and across gaps.

    Datashader lifts the pen at NaN, so a line never joins two vehicles (or two trips of one).
    Fully vectorized: one sort, one boundary mask, one scatter into the padded output.
    """
    cols = ["x", "y", *keep]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="float32") for c in cols})
    vo = by_vehicle(df)  # time sent: a receiver's batched log stamps would zigzag
    d = df.iloc[vo.order]
    new = ~(vo.dt_s <= max_gap_s)  # a vehicle's first row (NaN) or a gap
    new[:1] = False  # nothing to separate before the first row
    breaks = np.flatnonzero(new)
    n_out = len(d) + len(breaks)
    pos = np.arange(len(d)) + np.searchsorted(breaks, np.arange(len(d)), side="right")
    out: dict[str, np.ndarray] = {}
    for c in ("x", "y"):
        a = np.full(n_out, np.nan, dtype="float32")
        a[pos] = d[c].to_numpy(dtype="float32")
        out[c] = a
    frame = pd.DataFrame(out)
    for c in keep:  # separator rows inherit the next row's value (they draw nothing anyway)
        col = d[c].to_numpy()
        filled = np.empty(n_out, dtype=col.dtype)
        filled[pos] = col
        filled[pos[breaks] - 1] = col[breaks]
        frame[c] = filled
    return frame


# ------------------------------------------------------------------ framing


def extent(df: Any, pad: float = 0.04) -> tuple[tuple[float, float], tuple[float, float]]:
    """x/y ranges (Mercator metres) of finite positions, padded; a 2 km box if there is one point."""
    return _extent_and_rows(df, pad)[0]


def _extent_and_rows(df: Any, pad: float = 0.04):
    """`extent` and the row count, in one pass over a dask frame (each pass re-reads the cache)."""
    stats = [df["x"].min(), df["y"].min(), df["x"].max(), df["y"].max(), df.shape[0]]
    if hasattr(df, "map_partitions"):
        import dask

        stats = list(dask.compute(*stats))
    lo = [float(stats[0]), float(stats[1])]
    hi = [float(stats[2]), float(stats[3])]
    if not all(np.isfinite(lo + hi)):
        raise NoRecords("nothing to map: no row has a finite position (an empty date range?)")
    xr = (lo[0], max(hi[0], lo[0] + 2000.0))
    yr = (lo[1], max(hi[1], lo[1] + 2000.0))
    px, py = (xr[1] - xr[0]) * pad, (yr[1] - yr[0]) * pad
    return ((xr[0] - px, xr[1] + px), (yr[0] - py, yr[1] + py)), int(stats[4])


def equal_aspect(x_range: tuple[float, float], y_range: tuple[float, float],
                 width: int, height: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Widen one range so one pixel covers the same metres in x and y (no stretched road)."""
    (x0, x1), (y0, y1) = x_range, y_range
    sx, sy = (x1 - x0) / width, (y1 - y0) / height
    if sx > sy:
        cy, half = (y0 + y1) / 2, sx * height / 2
        return (x0, x1), (cy - half, cy + half)
    cx, half = (x0 + x1) / 2, sy * width / 2
    return (cx - half, cx + half), (y0, y1)


def fitted_height(x_range: tuple[float, float], y_range: tuple[float, float], width: int,
                  min_h: int = 160, max_h: int | None = None) -> int:
    """Canvas height that keeps metres square for a given width (I-80 is long and thin)."""
    h = int(round(width * (y_range[1] - y_range[0]) / (x_range[1] - x_range[0])))
    return max(min_h, min(h, max_h or h))


# ------------------------------------------------------------------ aggregation and shading


def _canvas(width: int, height: int, x_range, y_range):
    import datashader as ds

    return ds.Canvas(plot_width=int(width), plot_height=int(height),
                     x_range=tuple(x_range), y_range=tuple(y_range))


def aggregate_lines(lines: Any, width: int, height: int, x_range, y_range):
    """Per-pixel count of trajectory segments (input from `break_lines`)."""
    import datashader as ds

    return _canvas(width, height, x_range, y_range).line(lines, "x", "y", agg=ds.count())


def aggregate_points(df: Any, width: int, height: int, x_range, y_range, category: str | None = None):
    """Per-pixel message counts, split by `category` (a categorical column) when given."""
    import datashader as ds

    agg = ds.count() if category is None else ds.count_cat(category)
    return _canvas(width, height, x_range, y_range).points(df, "x", "y", agg=agg)


def shade(agg, cmap=None, color_key: dict[str, str] | None = None, spread: int = 1) -> np.ndarray:
    """RGBA uint8 array (rows top-down) from an aggregate; eq_hist so sparse roads still show."""
    import datashader.transfer_functions as tf

    if color_key is not None:
        img = tf.shade(agg, color_key=color_key, how="eq_hist", min_alpha=120)
    else:
        img = tf.shade(agg, cmap=cmap or TRAJECTORY_CMAP, how="eq_hist", min_alpha=90)
    return _spread(rgba(img), spread)


def _spread(img: np.ndarray, px: int) -> np.ndarray:
    """Grow drawn pixels by `px` into empty neighbours (numpy; `tf.spread` costs seconds of JIT)."""
    out = img.copy()
    h, w = img.shape[:2]
    for dy in range(-px, px + 1):
        for dx in range(-px, px + 1):
            if dx == 0 and dy == 0:
                continue
            src = img[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
            dst = out[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
            take = (dst[..., 3] == 0) & (src[..., 3] > 0)
            dst[take] = src[take]
    return out


def rgba(img) -> np.ndarray:
    """datashader Image (uint32 RGBA, y up) -> (H, W, 4) uint8, first row = north."""
    data = np.asarray(img.data, dtype="uint32")
    arr = data.view(np.uint8).reshape(data.shape + (4,))
    return arr[::-1].copy()


# ------------------------------------------------------------------ centre line


def centerline_xy() -> pd.DataFrame:
    """The shipped I-80 centre lines (both directions) as Mercator `x`, `y` with NaN between them."""
    from wydot_lab import geo

    parts = []
    for direction in ("eastbound", "westbound"):
        c = geo.load_centreline(direction)
        x, y = lnglat_to_xy(c.lon, c.lat)
        parts.append(pd.DataFrame({"x": np.append(x, np.nan), "y": np.append(y, np.nan)}))
    return pd.concat(parts, ignore_index=True).astype("float32")


# ------------------------------------------------------------------ figures


def _degree_ticks(lo: float, hi: float, n: int = 7) -> np.ndarray:
    """Round-degree tick positions (about `n`) between `lo` and `hi`."""
    span = max(hi - lo, 1e-6)
    step = next((s for s in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0)
                 if span / s <= n), 10.0)
    return np.arange(math.ceil(lo / step) * step, hi + 1e-12, step)


def _decimals(ticks: np.ndarray) -> int:
    step = f"{float(ticks[1] - ticks[0]):.6g}" if len(ticks) > 1 else "1"
    return len(step.split(".")[1]) if "." in step else 0


def _frame(image: np.ndarray, x_range, y_range, title: str,
           legend: dict[str, str] | None = None, background: np.ndarray | None = None,
           subtitle: str | None = None, line_legend: dict[str, str] | None = None):
    """A matplotlib figure around the raster: title, degree ticks, legend; no GUI needed."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    h, w = image.shape[:2]
    dpi = 100
    fw, fh = w / dpi + 1.2, h / dpi + 1.6  # room for ticks below; title, subtitle, legend above
    fig = Figure(figsize=(fw, fh), dpi=dpi)
    ax = fig.add_axes((0.9 / fw, 0.6 / fh, w / dpi / fw, h / dpi / fh))
    ext = (x_range[0], x_range[1], y_range[0], y_range[1])
    if background is not None:
        ax.imshow(background, extent=ext, interpolation="nearest")
    ax.imshow(image, extent=ext, interpolation="nearest")
    ax.set_xlim(*x_range)
    ax.set_ylim(*y_range)
    lon_lo, lat_lo = xy_to_lnglat(x_range[0], y_range[0])
    lon_hi, lat_hi = xy_to_lnglat(x_range[1], y_range[1])
    lon_t = _degree_ticks(float(lon_lo), float(lon_hi))
    lat_t = _degree_ticks(float(lat_lo), float(lat_hi), n=4)
    ax.set_xticks(lnglat_to_xy(lon_t, np.zeros_like(lon_t))[0])
    ax.set_yticks(lnglat_to_xy(np.zeros_like(lat_t), lat_t)[1])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{float(xy_to_lnglat(v, 0)[0]):.{_decimals(lon_t)}f}°"))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{float(xy_to_lnglat(0, v)[1]):.{_decimals(lat_t)}f}°"))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.tick_params(labelsize=8)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=k) for k, c in (legend or {}).items()]
    handles += [Line2D([], [], ls="-", lw=1.5, color=c, label=k) for k, c in (line_legend or {}).items()]
    if handles:
        # its own row between the title and the raster: inside, it hid the points in that corner,
        # and beside the title it printed over a long subtitle on a narrow map
        ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(handles), fontsize=8,
                  frameon=False, borderaxespad=0.1, handletextpad=0.2, columnspacing=1.0)
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10, loc="left",
                 pad=18 if handles else 6)
    return fig


def _centerline_key(centerline: bool) -> dict[str, str]:
    return {"I-80 centre lines": CENTERLINE_COLOR} if centerline else {}


def _centerline_layer(width: int, height: int, x_range, y_range) -> np.ndarray:
    agg = aggregate_lines(centerline_xy(), width, height, x_range, y_range)
    return shade(agg, cmap=[CENTERLINE_COLOR, CENTERLINE_COLOR], spread=0)


def _ranges(df, width: int, height: int | None, x_range, y_range, max_height: int | None = None):
    """Canvas (width, height, x_range, y_range) with square metres, and the frame's row count."""
    if x_range is None or y_range is None:
        (x_range, y_range), rows = _extent_and_rows(df)
    else:
        rows = int(len(df))
    if height is None:
        height = fitted_height(x_range, y_range, width, max_h=max_height or width)
    x_range, y_range = equal_aspect(x_range, y_range, width, height)
    return width, height, x_range, y_range, rows


def trajectory_map(df: Any, *, title: str = "Trajectories", width: int = 900,
                   height: int | None = None, x_range=None, y_range=None, lines: bool = True,
                   centerline: bool = True, max_gap_s: float = 300.0, max_height: int | None = None,
                   path: str | Path | None = None):
    """Map of all trajectories (pandas or dask, with `x`, `y` from `project`); returns the figure.

    Lines are broken between vehicles and across gaps; `lines=False` draws points. Without
    `height`, the height follows the data's aspect ratio (metres stay square), capped at `max_height`.
    """
    width, height, x_range, y_range, n = _ranges(df, width, height, x_range, y_range, max_height)
    if lines:
        if hasattr(df, "map_partitions"):  # each partition drawn alone: no joins across them
            meta = pd.DataFrame({"x": pd.Series(dtype="float32"), "y": pd.Series(dtype="float32")})
            data = df.map_partitions(break_lines, max_gap_s=max_gap_s, meta=meta)
        else:
            data = break_lines(df, max_gap_s=max_gap_s)
        agg = aggregate_lines(data, width, height, x_range, y_range)
    else:
        agg = aggregate_points(df, width, height, x_range, y_range)
    image = shade(agg)
    bg = _centerline_layer(width, height, x_range, y_range) if centerline else None
    fig = _frame(image, x_range, y_range, title, background=bg, line_legend=_centerline_key(centerline),
                 subtitle=f"{n:,} messages as {'lines' if lines else 'points'}; darker = more messages "
                          "(histogram-equalised)")
    if path is not None:
        save(fig, path)
    return fig


def label_column(df: pd.DataFrame, is_attack: str = "is_attack") -> pd.Categorical:
    """`clean` / `attacked` categories from a boolean label column (for `count_cat`)."""
    flag = df[is_attack].fillna(False).to_numpy(dtype=bool)
    return pd.Categorical.from_codes(flag.astype("int8"), categories=list(CLEAN_ATTACKED))


def attack_map(df: pd.DataFrame, *, category: str = "label", title: str = "Clean vs attacked positions",
               width: int = 900, height: int | None = None, x_range=None, y_range=None,
               colors: dict[str, str] | None = None, centerline: bool = True, spread: int = 1,
               max_height: int | None = None, path: str | Path | None = None):
    """Points coloured by a categorical column (default `label`: clean / attacked)."""
    colors = dict(colors or CLEAN_ATTACKED)
    if not isinstance(df[category].dtype, pd.CategoricalDtype):
        df = df.assign(**{category: pd.Categorical(df[category], categories=list(colors))})
    width, height, x_range, y_range, _ = _ranges(df, width, height, x_range, y_range, max_height)
    agg = aggregate_points(df, width, height, x_range, y_range, category=category)
    image = shade(agg, color_key=colors, spread=spread)
    bg = _centerline_layer(width, height, x_range, y_range) if centerline else None
    counts = df[category].value_counts()
    sub = ", ".join(f"{k}: {int(counts.get(k, 0)):,}" for k in colors)
    fig = _frame(image, x_range, y_range, title, legend=colors, background=bg, subtitle=sub,
                 line_legend=_centerline_key(centerline))
    if path is not None:
        save(fig, path)
    return fig


def png_bytes(fig) -> bytes:
    """A figure as PNG bytes (Agg canvas: works with no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return buf.getvalue()


def save(fig, path: str | Path) -> Path:
    """Write a figure as PNG."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(png_bytes(fig))
    return p


# ------------------------------------------------------------------ interactive


# Mercator metres -> degrees in the browser, so axes and hover read longitude/latitude.
_LON_JS = f"return (value / {EARTH_RADIUS} * 180 / Math.PI).toFixed(4)"
_LAT_JS = (f"return ((2 * Math.atan(Math.exp(value / {EARTH_RADIUS})) - Math.PI / 2)"
           " * 180 / Math.PI).toFixed(4)")
_COUNT_JS = "return Number.isFinite(value) ? value.toFixed(0) : '0'"  # empty pixels: 0, not NaN


def _degree_formatter(axis: str):
    from bokeh.models import CustomJSTickFormatter

    code = (_LON_JS if axis == "x" else _LAT_JS).replace("value", "tick").replace("toFixed(4)", "toFixed(2)")
    return CustomJSTickFormatter(code=code)


def _hover(category: str | None):
    from bokeh.models import CustomJSHover

    fmt = {"$x": CustomJSHover(code=_LON_JS), "$y": CustomJSHover(code=_LAT_JS)}
    tips = [("longitude", "$x{custom}"), ("latitude", "$y{custom}")]
    if category is None:
        fmt["@image"] = CustomJSHover(code=_COUNT_JS)
        tips.append(("messages", "@image{custom}"))
    return dict(hover_tooltips=tips, hover_formatters=fmt)


def load_inline() -> None:
    """Embed Bokeh/Panel's JavaScript in the notebook, never from a CDN: maps render offline.

    Must run before hvplot is first imported, which loads the extension itself.
    """
    import holoviews as hv
    import panel as pn

    pn.config.inline = True  # Panel's stylesheets too
    hv.extension.inline = True
    hv.extension("bokeh", logo=False, inline=True)


def interactive(df: Any, *, category: str | None = None, colors: dict[str, str] | None = None,
                width: int = 900, height: int = 350, tiles: bool = False, title: str = ""):
    """hvplot `rasterize=True` points (re-aggregated on zoom in a live kernel), read in degrees.

    Returns a Panel pane (its `.object` is the HoloViews plot) that renders with no network.

    The figure has the requested size, metres square (the ranges widen, not the road), degree
    ticks, a hover in longitude/latitude with integer counts, and points spread so a lone
    vehicle shows at state scale. By category: the documented colours and a legend.
    Tiles (off by default) are the only part that needs the network.
    """
    load_inline()
    import holoviews as hv
    import hvplot.pandas  # noqa: F401  (registers .hvplot)

    df = df[["x", "y"] + ([category] if category else [])]  # nested columns upset holoviews
    if hasattr(df, "map_partitions"):
        import hvplot.dask  # noqa: F401
    frame_w, frame_h = max(width - 90, 100), max(height - 70, 80)  # minus axes, title, toolbar
    x_range, y_range = equal_aspect(*extent(df), frame_w, frame_h)
    opts: dict[str, Any] = dict(
        x="x", y="y", frame_width=frame_w, frame_height=frame_h, title=title,
        xlim=x_range, ylim=y_range, xlabel="longitude (deg)", ylabel="latitude (deg)",
        xformatter=_degree_formatter("x"), yformatter=_degree_formatter("y"),
        dynspread=True, responsive=False)
    if tiles:
        opts["tiles"] = "CartoLight"
    if category is None:
        from bokeh.models import PrintfTickFormatter

        plot = df.hvplot.points(rasterize=True, cmap=TRAJECTORY_CMAP, cnorm="eq_hist",
                                clabel="messages per pixel", **opts)
        return _pane(plot.opts(hv.opts.Image(
            colorbar_opts={"formatter": PrintfTickFormatter(format="%d")}, **_hover(None))))
    import datashader as ds
    from holoviews.operation.datashader import dynspread, rasterize

    colors = dict(colors or CLEAN_ATTACKED)
    names = list(colors)
    data = df.assign(**{category: df[category].astype(pd.CategoricalDtype(names))})
    stack = dynspread(rasterize(hv.Points(data, kdims=["x", "y"], vdims=[category]),
                                aggregator=ds.count_cat(category), width=frame_w, height=frame_h,
                                x_range=x_range, y_range=y_range), threshold=0.8, max_px=3)
    # A rasterized stack draws no legend: one point per category, outside the view, in its colour
    legend = hv.Overlay([hv.Points([(x_range[0] - 1e6, y_range[0] - 1e6)], label=n).opts(color=c, size=9)
                         for n, c in colors.items()])
    layout = {k: v for k, v in opts.items() if k not in ("x", "y", "dynspread")}
    return _pane((stack.opts(cmap=[colors[n] for n in names], **_hover(category)) * legend).opts(
        hv.opts.Overlay(legend_position="top_right", show_legend=True, **layout)))


def _pane(plot):
    """A Panel pane: Panel inlines its stylesheets when it renders (HoloViews' own display does not)."""
    import panel as pn

    return pn.pane.HoloViews(plot)
