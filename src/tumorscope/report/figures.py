"""Figures of the report, as ``data:`` URIs of self-contained SVG: drawn from the data with
no matplotlib (:mod:`tumorscope.report.svg`, :mod:`tumorscope.report.raster`).

Line figures (spider, waterfall, trajectories, histograms) are vector drawings whose texts
stay text; image figures (map grids, functional maps, tensor colours) are one PNG of the
panels' pixels (each voxel a block of screen pixels, colour maps as matplotlib's) inside an
SVG that holds their titles, labels and colour-bar ticks. Every figure opens from disk in an
``<img>`` with no server and no side file. Why and what changed: ``docs/report.md`` ("What the
report costs").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .raster import colour, lut, max_n_ticks, tick_label
from .svg import CYCLE, Axes, Svg, text_width

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RESPONSE_COLOURS",
    "fdm_panels",
    "histograms",
    "image_panels",
    "map_grid",
    "spider_plot",
    "trajectories",
    "waterfall_plot",
]

#: Colour of each response category (RECIST and iRECIST names).
RESPONSE_COLOURS: dict[str, str] = {
    "CR": "#1a9850",
    "iCR": "#1a9850",
    "PR": "#66bd63",
    "iPR": "#66bd63",
    "SD": "#fdae61",
    "iSD": "#fdae61",
    "PD": "#d73027",
    "iUPD": "#f46d43",
    "iCPD": "#a50026",
    "NE": "#999999",
    "after PD": "#d9d9d9",
}

#: Pixels per inch of the figures (their sizes are given in inches, as before at 90 dpi).
DPI = 90
#: Font size of tick labels (px; matplotlib's 10 pt at 90 dpi is 12.5 px).
FONT = 11.0

_tick_label = tick_label  # the colour bars' tick text (tests)


def spider_plot(sums: pd.DataFrame, *, title: str = "Change of the target sum") -> str:
    """Change of the target sum from baseline over time, one line per subject.

    Parameters
    ----------
    sums : DataFrame
        Columns ``subject``, ``days`` (days on treatment), ``change_pct``; optional
        ``response`` (colours the markers).
    """
    svg = Svg(6.4 * DPI, 4.0 * DPI)
    ax = Axes(svg, 0.75 * DPI, 0.35 * DPI, (6.4 - 0.9) * DPI, (4.0 - 0.85) * DPI)
    ax.font = FONT
    for k, (subject, g) in enumerate(sums.groupby("subject", sort=True)):
        g = g.sort_values("days")
        c = CYCLE[k % len(CYCLE)]
        ax.plot(g["days"], g["change_pct"], colour=c, label=str(subject))
        colours = [RESPONSE_COLOURS.get(str(r), c) for r in g.get("response", [None] * len(g))]
        ax.scatter(g["days"], g["change_pct"], colours=colours, radius=3.5)
    _recist_lines(ax)
    ax.xlabel = "days on treatment"
    ax.ylabel = "target sum, change from baseline (%)"
    ax.title = title
    ax.draw(legend="best" if len(sums) else None, legend_title="subject", legend_cols=2)
    return svg.data_uri()


def _recist_lines(ax: Axes) -> None:
    """RECIST 1.1 thresholds on a change-from-baseline axis: +20 % (PD), -30 % (PR), 0."""
    ax.hline(20, colour="#808080", width=0.8, dash="4 2")
    ax.hline(-30, colour="#808080", width=0.8, dash="1 2")
    ax.hline(0, colour="#000", width=0.6)


def waterfall_plot(best: pd.DataFrame, *, title: str = "Best change of the target sum") -> str:
    """Best (most negative) change of the target sum per subject, sorted, as bars.

    Parameters
    ----------
    best : DataFrame
        Columns ``subject``, ``best_change_pct``; optional ``response`` (bar colour).
    """
    b = best.sort_values("best_change_pct", ascending=False).reset_index(drop=True)
    names = [str(s) for s in b["subject"]]
    below = 5 + max((text_width(n, FONT * 0.85) for n in names), default=0) + 22
    w, h = 6.4 * DPI, 3.6 * DPI
    svg = Svg(w, h + max(0.0, below - 0.5 * DPI))
    ax = Axes(svg, 0.8 * DPI, 0.35 * DPI, w - 0.95 * DPI, h - 0.85 * DPI)
    ax.font = FONT
    colours = [RESPONSE_COLOURS.get(str(r), "#4575b4") for r in b.get("response", [None] * len(b))]
    ax.bars(b["best_change_pct"], colours=colours)
    ax.categories = names
    _recist_lines(ax)
    ax.ylabel = "best change from baseline (%)"
    ax.xlabel = "subject"
    ax.title = title
    ax.draw(legend=None)
    return svg.data_uri()


def _panel_grid(n: int, w_in: float, h_in: float) -> tuple[Svg, list[Axes]]:
    """An SVG of ``n`` axes in rows of at most three, each ``w_in`` × ``h_in`` inches."""
    n = max(1, n)
    ncols = min(3, n)
    nrows = (n + ncols - 1) // ncols
    cw, ch = w_in * DPI, h_in * DPI
    svg = Svg(ncols * cw, nrows * ch)
    axes = [
        Axes(
            svg,
            (i % ncols) * cw + 0.62 * DPI,
            (i // ncols) * ch + 0.3 * DPI,
            cw - 0.75 * DPI,
            ch - 0.8 * DPI,
        )
        for i in range(n)
    ]
    for ax in axes:
        ax.font = 9.0
    return svg, axes


def trajectories(
    series: Mapping[str, pd.DataFrame], *, ylabels: Mapping[str, str] | None = None
) -> str:
    """One panel per quantity: value over time per lesion.

    Parameters
    ----------
    series : mapping of str to DataFrame
        Quantity name -> DataFrame with columns ``lesion_id``, ``days``, ``value``.
    ylabels : mapping, optional
        Axis label per quantity.
    """
    svg, axes = _panel_grid(len(series), 3.3, 2.6)
    for ax, (name, df) in zip(axes, series.items(), strict=False):
        for k, (lid, g) in enumerate(df.groupby("lesion_id", sort=True)):
            g = g.sort_values("days")
            ax.plot(g["days"], g["value"], colour=CYCLE[k % len(CYCLE)], label=str(lid), marker=2.5)
        ax.title = name
        ax.xlabel = "days on treatment"
        ax.ylabel = (ylabels or {}).get(name, name)
        ax.draw()
    return svg.data_uri()


def map_grid(
    rows: Sequence[Mapping[str, Any]],
    *,
    units: Mapping[str, str] | None = None,
    limits: Mapping[str, tuple[float, float]] | None = None,
) -> str:
    """Parameter maps of every visit: one row per visit, one column per map.

    Parameters
    ----------
    rows : sequence of mapping
        Per visit: ``label`` (str, e.g. "visit 02, slice 3"), ``anatomical`` (ndarray (X, Y)
        or None), ``maps`` (mapping of str to ndarray (X, Y)), ``labels`` (int ndarray
        (X, Y) or None, outlined in red in every panel).
    units, limits : mapping, optional
        Colour-bar unit and display range per map (default: 2nd-98th percentile of the
        first row). One range per map for all rows, so visits compare; one colour bar per
        column, under the last row.

    Notes
    -----
    The panels are one image (:func:`tumorscope.report.raster.colour`: each slice through
    its map's colour table — viridis, the anatomical grey — over its range; NaN white),
    scaled to its panel by whole-voxel nearest-neighbour repetition (square voxels, as
    ``imshow``), framed in black; the lesion outline is the boundary of the scaled mask (the
    voxel edges, in red); each map's colour bar is drawn the same way with the ticks of
    ``MaxNLocator(3)``. Titles, row labels, tick labels and units are SVG text.
    """
    columns: list[str] = []
    if any(r.get("anatomical") is not None for r in rows):
        columns.append("anatomical")
    for r in rows:
        columns += [k for k in r["maps"] if k not in columns]
    nr, nc = max(1, len(rows)), max(1, len(columns))
    w_in, h_in = 1.9 * nc, 1.9 * nr + 0.7
    FW, FH = round(w_in * DPI), round(h_in * DPI)
    # panel area: 6 % of the width on the left (row labels), 0.3 in on top (titles), 0.55 in
    # at the bottom (colour bars); pixel rows grow upwards (origin="lower")
    x0, y0 = round(0.06 * w_in * DPI), round(0.55 * DPI)
    W, H = round(0.99 * w_in * DPI) - x0, FH - round(0.3 * DPI) - y0
    cw, ch = W / nc, H / nr
    gap = 3  # pixels between panels
    canvas = np.full((FH, FW, 3), 255, dtype=np.uint8)  # the whole figure, white
    red = np.array([255, 0x3B, 0x3B], dtype=np.uint8)
    lims = dict(limits or {})
    shown: set[str] = set()
    viridis, grey = lut("viridis"), lut("gray")
    for i, r in enumerate(rows):
        row_bottom = y0 + H - (i + 1) * ch  # row 0 on top
        for j, name in enumerate(columns):
            img = r.get("anatomical") if name == "anatomical" else r["maps"].get(name)
            if img is None:
                continue
            data = np.asarray(img, dtype=float).T  # rows = y, so the image is upright
            if data.ndim != 2 or not data.size:
                continue
            if name not in lims:
                finite = data[np.isfinite(data)]
                lo, hi = (
                    (float(v) for v in np.percentile(finite, [2, 98])) if finite.size else (0, 1)
                )
                lims[name] = (lo, hi if hi > lo else lo + 1.0)
            lo, hi = lims[name]
            shown.add(name)
            # the panel: square voxels, as large as the cell allows, centred
            ny, nx = data.shape
            scale = min((cw - gap) / nx, (ch - gap) / ny)
            pw, ph = max(1, int(nx * scale)), max(1, int(ny * scale))
            px0 = int(x0 + j * cw + (cw - pw) / 2)
            py0 = int(row_bottom + (ch - ph) / 2)
            iy = np.minimum((np.arange(ph) + 0.5) * ny / ph, ny - 1).astype(int)
            ix = np.minimum((np.arange(pw) + 0.5) * nx / pw, nx - 1).astype(int)
            table = grey if name == "anatomical" else viridis
            block = colour(data, lo, hi, table)[iy[:, None], ix[None, :]]
            lab = r.get("labels")
            if lab is not None and np.any(lab):
                inside = (np.asarray(lab) > 0).T
                if inside.shape == data.shape:
                    block[_boundary(inside[iy[:, None], ix[None, :]])] = red
            block[[0, -1], :] = 0  # a black frame, as an axes' spines
            block[:, [0, -1]] = 0
            canvas[py0 : py0 + ph, px0 : px0 + pw] = block
    svg = Svg(FW, FH)
    texts: list[tuple[float, float, str, dict[str, Any]]] = []
    for j, name in enumerate(columns):
        texts.append((x0 + (j + 0.5) * cw, y0 + H + 4, name, {"size": 10, "va": "bottom"}))
    for i, r in enumerate(rows):
        label = str(r.get("label", ""))
        at = (x0 - 4, y0 + H - (i + 0.5) * ch)
        texts.append((*at, label, {"size": 9, "rotate": 90, "va": "baseline"}))
    bar_w, bar_h = round(0.8 * cw), max(4, round(0.8 * cw / 12))
    bar_y = y0 - round(0.12 * DPI) - bar_h
    ramp = colour(np.linspace(0.0, 1.0, bar_w), 0.0, 1.0, viridis)
    for j, name in enumerate(columns):
        if name == "anatomical" or name not in shown:
            continue
        bx = round(x0 + (j + 0.1) * cw)
        bar = np.repeat(ramp[None], bar_h, axis=0)
        bar[[0, -1], :] = 0
        bar[:, [0, -1]] = 0
        canvas[bar_y : bar_y + bar_h, bx : bx + bar_w] = bar
        lo, hi = lims[name]
        ticks = [t for t in max_n_ticks(lo, hi, 3) if lo <= t <= hi]
        for t in ticks:
            tx = bx + round((t - lo) / (hi - lo) * (bar_w - 1))
            canvas[bar_y - 4 : bar_y, tx] = 0
            texts.append((tx, bar_y - 5, tick_label(t, ticks), {"size": 8, "va": "top"}))
        if units and units.get(name):
            texts.append((bx + bar_w / 2, bar_y - 17, units[name], {"size": 8, "va": "top"}))
    svg.image(0, 0, canvas[::-1])
    for x, y, text, kw in texts:
        svg.text(x, FH - y, text, **kw)
    return svg.data_uri()


def image_panels(
    panels: Sequence[tuple[np.ndarray, str]], *, w_in: float, h_in: float, frame: bool = False
) -> str:
    """RGB images side by side, each under its title (square voxels, nearest neighbour,
    upright: axis 0 of each ``(X, Y, 3)`` uint8 image is x, left to right; y grows upwards).

    Parameters
    ----------
    panels : sequence of (ndarray, str)
        Image ``(X, Y, 3)`` uint8 and its title.
    w_in, h_in : float
        Size of one panel (inches), title included.
    frame : bool
        A black frame around each image.
    """
    n = max(1, len(panels))
    cw, ch = round(w_in * DPI), round(h_in * DPI)
    top = 22
    FW, FH = n * cw, ch
    canvas = np.full((FH, FW, 3), 255, dtype=np.uint8)  # rows top-down
    svg = Svg(FW, FH)
    titles = []
    for k, (rgb, title) in enumerate(panels):
        img = np.asarray(rgb, dtype=np.uint8).transpose(1, 0, 2)[::-1]  # (Y, X), y upwards
        ny, nx = img.shape[:2]
        scale = min((cw - 6) / nx, (ch - top - 4) / ny)
        pw, ph = max(1, int(nx * scale)), max(1, int(ny * scale))
        px0, py0 = k * cw + (cw - pw) // 2, top + (ch - top - ph) // 2
        iy = np.minimum((np.arange(ph) + 0.5) * ny / ph, ny - 1).astype(int)
        ix = np.minimum((np.arange(pw) + 0.5) * nx / pw, nx - 1).astype(int)
        block = img[iy[:, None], ix[None, :]]
        if frame:
            block[[0, -1], :] = 0
            block[:, [0, -1]] = 0
        canvas[py0 : py0 + ph, px0 : px0 + pw] = block
        titles.append((k * cw + cw / 2, top - 5, title))
    svg.image(0, 0, canvas)
    for x, y, title in titles:
        svg.text(x, y, title, size=10, va="bottom")
    return svg.data_uri()


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of a 2-D mask with a 4-neighbour outside it (or on the mask's edge)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    return mask & ~inner


def histograms(values: Mapping[str, Mapping[str, npt.ArrayLike]], *, unit: str = "") -> str:
    """Histograms of one map's values inside the lesions, one curve per visit.

    Parameters
    ----------
    values : mapping of str to mapping of str to sequence
        Map name -> visit -> voxel values (all lesions of the visit).
    unit : str
        The x axis' label (default: the map's name).
    """
    svg, axes = _panel_grid(len(values), 3.3, 2.6)
    for ax, (name, by_visit) in zip(axes, values.items(), strict=False):
        parts = [np.asarray(v, float).ravel() for v in by_visit.values()]
        pooled = np.concatenate(parts) if parts else np.zeros(0)
        pooled = pooled[np.isfinite(pooled)]
        edges = np.linspace(0.0, 1.0, 31)
        if pooled.size:
            lo, hi = np.percentile(pooled, [1, 99])
            edges = np.linspace(lo, hi if hi > lo else lo + 1e-9, 31)
        for k, (visit, vals) in enumerate(by_visit.items()):
            v = np.asarray(vals, float)
            v = v[np.isfinite(v)]
            if v.size:
                counts, _ = np.histogram(v, bins=edges)
                ax.steps(edges, counts, colour=CYCLE[k % len(CYCLE)], label=f"visit {visit}")
        ax.title = name
        ax.xlabel = unit or name
        ax.draw()
    return svg.data_uri()


#: Colours of the functional maps: fall, unchanged, rise.
FDM_COLOURS = ("#2166ac", "#dddddd", "#b2182b")


def fdm_panels(panels: Sequence[tuple[np.ndarray, np.ndarray, str]], *, threshold: float) -> str:
    """Functional diffusion maps: voxels whose ADC rose or fell beyond a threshold.

    Parameters
    ----------
    panels : sequence of (delta, inside, title)
        Per follow-up visit: ADC change (follow-up minus baseline, mm²/s) on one slice,
        shape (X, Y); the voxels inside the lesion at both visits (bool, (X, Y)); a title.
    threshold : float
        Change (mm²/s) beyond which a voxel counts as changed (red: rise, blue: fall,
        grey: unchanged; outside the lesion white).
    """
    fall, same, rise = (
        np.array([int(c[i : i + 2], 16) for i in (1, 3, 5)], np.uint8) for c in FDM_COLOURS
    )
    out = []
    for delta, inside, title in panels:
        rgb = np.full((*delta.shape, 3), 255, dtype=np.uint8)
        rgb[inside] = same
        rgb[inside & (delta > threshold)] = rise
        rgb[inside & (delta < -threshold)] = fall
        out.append((rgb, title))
    return image_panels(out, w_in=2.2, h_in=2.4, frame=True)
