"""Figures of the report: matplotlib (Agg), returned as base64 PNG data URIs.

Every function takes plain tables or arrays and returns a ``data:image/png;base64,…`` string,
so the HTML opens from disk with no server and no side files. Figures are small (about 100 dpi)
to keep a report of many subjects light.
"""

from __future__ import annotations

import base64
import io
import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

__all__ = [
    "RESPONSE_COLOURS",
    "histograms",
    "map_grid",
    "spider_plot",
    "to_data_uri",
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


def _figure(w: float, h: float, *, layout: Literal["tight"] | None = "tight") -> Figure:
    from matplotlib.figure import Figure

    # constrained layout doubles the drawing time of image grids; they are laid out by hand
    return Figure(figsize=(w, h), dpi=90, layout=layout)


def _margins(fig: Figure, *, left: float, bottom: float, top: float, right: float = 0.15) -> None:
    """Fixed margins in inches (instead of the tight layout, which measures every text at
    each draw: 1.6× the drawing time of a row of histograms)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h)


def to_data_uri(fig: Figure) -> str:
    """PNG of a figure as a ``data:`` URI (zlib level 1: 2.5× faster to encode than PIL's
    default 6 for ~6 % more bytes on a map grid)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", pil_kwargs={"compress_level": 1})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def spider_plot(sums: pd.DataFrame, *, title: str = "Change of the target sum") -> str:
    """Change of the target sum from baseline over time, one line per subject.

    Parameters
    ----------
    sums : DataFrame
        Columns ``subject``, ``days`` (days on treatment), ``change_pct``; optional
        ``response`` (colours the markers).
    """
    fig = _figure(6.4, 4.0, layout=None)
    _margins(fig, left=0.75, bottom=0.5, top=0.35)
    ax = fig.add_subplot()
    for subject, g in sums.groupby("subject", sort=True):
        g = g.sort_values("days")
        (line,) = ax.plot(g["days"], g["change_pct"], "-", lw=1.5, label=str(subject))
        colours = [
            RESPONSE_COLOURS.get(str(r), line.get_color())
            for r in g.get("response", [None] * len(g))
        ]
        ax.scatter(g["days"], g["change_pct"], c=colours, s=28, zorder=3, edgecolors="k")
    _recist_lines(ax)
    ax.set_xlabel("days on treatment")
    ax.set_ylabel("target sum, change from baseline (%)")
    ax.set_title(title, y=1.0)
    if len(sums):
        ax.legend(fontsize=7, ncols=2, title="subject", title_fontsize=7)
    return to_data_uri(fig)


def _recist_lines(ax: Any) -> None:
    """RECIST 1.1 thresholds on a change-from-baseline axis: +20 % (PD), -30 % (PR), 0."""
    for y, style in ((20, "--"), (-30, ":")):
        ax.axhline(y, color="grey", lw=0.8, ls=style)
    ax.axhline(0, color="k", lw=0.6)


def waterfall_plot(best: pd.DataFrame, *, title: str = "Best change of the target sum") -> str:
    """Best (most negative) change of the target sum per subject, sorted, as bars.

    Parameters
    ----------
    best : DataFrame
        Columns ``subject``, ``best_change_pct``; optional ``response`` (bar colour).
    """
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    b = best.sort_values("best_change_pct", ascending=False).reset_index(drop=True)
    colours = [RESPONSE_COLOURS.get(str(r), "#4575b4") for r in b.get("response", [None] * len(b))]
    ax.bar(np.arange(len(b)), b["best_change_pct"], color=colours, edgecolor="k")
    ax.set_xticks(np.arange(len(b)), [str(s) for s in b["subject"]], rotation=90, fontsize=8)
    _recist_lines(ax)
    ax.set_ylabel("best change from baseline (%)")
    ax.set_xlabel("subject")
    ax.set_title(title, y=1.0)
    return to_data_uri(fig)


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
    n = max(1, len(series))
    ncols = min(3, n)
    nrows = (n + ncols - 1) // ncols
    fig = _figure(3.3 * ncols, 2.6 * nrows, layout=None)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.1, top=0.93, wspace=0.35, hspace=0.45)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, df) in zip(axes, series.items(), strict=False):
        for lid, g in df.groupby("lesion_id", sort=True):
            g = g.sort_values("days")
            ax.plot(g["days"], g["value"], "o-", ms=4, label=str(lid))
        ax.set_title(name, fontsize=9, y=1.0)  # y: no search for overlapping ticks
        ax.set_xlabel("days on treatment", fontsize=8)
        ax.set_ylabel((ylabels or {}).get(name, name), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in axes[len(series) :]:
        ax.set_axis_off()
    return to_data_uri(fig)


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
    The figure is one image pasted pixel for pixel on Agg's buffer plus its texts, with no
    matplotlib axes: each slice is coloured here (its map's colour map and range) and scaled
    to its panel by whole-voxel nearest-neighbour repetition (square voxels, as ``imshow``),
    framed in black; the lesion outline is the boundary of the scaled mask (the voxel edges,
    in red); each map's colour bar is drawn the same way with three ticks
    (``MaxNLocator(3)``). A grid of 4 visits × 9 maps was 36 axes, 8 colour-bar axes and 28
    contours, whose creation and drawing cost ~10× the pixels (issue 21).
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    columns: list[str] = []
    if any(r.get("anatomical") is not None for r in rows):
        columns.append("anatomical")
    for r in rows:
        columns += [k for k in r["maps"] if k not in columns]
    nr, nc = max(1, len(rows)), max(1, len(columns))
    dpi = 90
    w_in, h_in = 1.9 * nc, 1.9 * nr + 0.7
    fig = _figure(w_in, h_in, layout=None)
    agg = FigureCanvasAgg(fig)
    renderer = agg.get_renderer()
    FW, FH = int(renderer.width), int(renderer.height)  # Agg's pixels
    # panel area: 6 % of the width on the left (row labels), 0.3 in on top (titles), 0.55 in
    # at the bottom (colour bars); pixel rows grow upwards (origin="lower")
    x0, y0 = round(0.06 * w_in * dpi), round(0.55 * dpi)
    W, H = round(0.99 * w_in * dpi) - x0, FH - round(0.3 * dpi) - y0
    cw, ch = W / nc, H / nr
    gap = 3  # pixels between panels
    canvas = np.full((FH, FW, 3), 255, dtype=np.uint8)  # the whole figure, white
    red = np.array([1.0, 0x3B / 255, 0x3B / 255])
    lims = dict(limits or {})
    shown: set[str] = set()
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
            cmap = colormaps["gray" if name == "anatomical" else "viridis"]
            shown.add(name)
            # the panel: square voxels, as large as the cell allows, centred
            ny, nx = data.shape
            scale = min((cw - gap) / nx, (ch - gap) / ny)
            pw, ph = max(1, int(nx * scale)), max(1, int(ny * scale))
            px0 = int(x0 + j * cw + (cw - pw) / 2)
            py0 = int(row_bottom + (ch - ph) / 2)
            iy = np.minimum((np.arange(ph) + 0.5) * ny / ph, ny - 1).astype(int)
            ix = np.minimum((np.arange(pw) + 0.5) * nx / pw, nx - 1).astype(int)
            rgba = cmap(Normalize(lo, hi)(np.ma.masked_invalid(data)))
            block = rgba[iy[:, None], ix[None, :]]
            block[block[..., 3] == 0] = 1.0  # NaN: the white background
            block = block[..., :3]
            lab = r.get("labels")
            if lab is not None and np.any(lab):
                inside = (np.asarray(lab) > 0).T
                if inside.shape == data.shape:
                    block[_boundary(inside[iy[:, None], ix[None, :]])] = red
            block[[0, -1], :] = 0.0  # a black frame, as an axes' spines
            block[:, [0, -1]] = 0.0
            canvas[py0 : py0 + ph, px0 : px0 + pw] = np.round(block * 255)
    texts: list[tuple[float, float, str, dict[str, Any]]] = []
    for j, name in enumerate(columns):
        texts.append((x0 + (j + 0.5) * cw, y0 + H + 4, name, {"fontsize": 8, "va": "bottom"}))
    for i, r in enumerate(rows):
        label = str(r.get("label", ""))
        at = (x0 - 4, y0 + H - (i + 0.5) * ch)
        texts.append((*at, label, {"fontsize": 7, "rotation": 90, "ha": "right"}))
    bar_w, bar_h = round(0.8 * cw), max(4, round(0.8 * cw / 12))
    bar_y = y0 - round(0.12 * dpi) - bar_h
    ramp = colormaps["viridis"](np.linspace(0.0, 1.0, bar_w))[:, :3]
    for j, name in enumerate(columns):
        if name == "anatomical" or name not in shown:
            continue
        bx = round(x0 + (j + 0.1) * cw)
        bar = np.repeat(ramp[None], bar_h, axis=0)
        bar[[0, -1], :] = 0.0
        bar[:, [0, -1]] = 0.0
        canvas[bar_y : bar_y + bar_h, bx : bx + bar_w] = np.round(bar * 255)
        lo, hi = lims[name]
        ticks = [t for t in MaxNLocator(3).tick_values(lo, hi) if lo <= t <= hi]
        for t in ticks:
            tx = bx + round((t - lo) / (hi - lo) * (bar_w - 1))
            canvas[bar_y - 4 : bar_y, tx] = 0
            texts.append((tx, bar_y - 5, _tick_label(t, ticks), {"fontsize": 6, "va": "top"}))
        if units and units.get(name):
            kw: dict[str, Any] = {"fontsize": 6, "va": "top"}
            texts.append((bx + bar_w / 2, bar_y - 15, units[name], kw))
    for x, y, text, kw in texts:
        fig.text(x / FW, y / FH, text, **({"ha": "center", "va": "center"} | kw))
    return _with_canvas(agg, canvas)


def _with_canvas(agg: FigureCanvasAgg, canvas: np.ndarray) -> str:
    """PNG data URI of a figure's texts (drawn by Agg) with ``canvas`` (uint8 RGB, rows
    upwards) pasted where it is not white. Not ``figimage``: matplotlib converts the whole
    image to float for it, ~130 MB for a 1,540 × 750 grid against ~10 MB here."""
    from PIL import Image

    agg.draw()
    img = np.array(agg.buffer_rgba())[..., :3]
    top_down = canvas[::-1]
    drawn = (top_down != 255).any(axis=-1)
    img[drawn] = top_down[drawn]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="png", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of a 2-D mask with a 4-neighbour outside it (or on the mask's edge)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    return mask & ~inner


def _tick_label(t: float, ticks: Sequence[float]) -> str:
    """A colour-bar tick's text: as many decimals as the tick step needs (``0.5``, ``1.5e-03``
    for small or large values)."""
    span = max((abs(x) for x in ticks), default=0.0)
    if span and (span < 1e-2 or span >= 1e5):
        return f"{t:.1e}"
    step = min((b - a for a, b in itertools.pairwise(ticks)), default=1.0)
    decimals = max(0, -int(np.floor(np.log10(step))) if step > 0 else 0)
    return f"{t:.{decimals}f}"


def histograms(values: Mapping[str, Mapping[str, npt.ArrayLike]], *, unit: str = "") -> str:
    """Histograms of one map's values inside the lesions, one curve per visit.

    Parameters
    ----------
    values : mapping of str to mapping of str to sequence
        Map name -> visit -> voxel values (all lesions of the visit).
    """
    n = max(1, len(values))
    fig = _figure(3.3 * n, 2.6, layout=None)
    _margins(fig, left=0.45, bottom=0.45, top=0.3, right=0.1)
    fig.subplots_adjust(wspace=0.3)
    axes = fig.subplots(1, n, squeeze=False).ravel()
    for ax, (name, by_visit) in zip(axes, values.items(), strict=True):
        parts = [np.asarray(v, float).ravel() for v in by_visit.values()]
        pooled = np.concatenate(parts) if parts else np.zeros(0)
        pooled = pooled[np.isfinite(pooled)]
        edges: Any = 30
        if pooled.size:
            lo, hi = np.percentile(pooled, [1, 99])
            edges = np.linspace(lo, hi if hi > lo else lo + 1e-9, 31)
        for visit, vals in by_visit.items():
            v = np.asarray(vals, float)
            v = v[np.isfinite(v)]
            if v.size:
                ax.hist(v, bins=edges, histtype="step", lw=1.3, label=f"visit {visit}")
        ax.set_title(name, fontsize=9, y=1.0)  # y: no search for overlapping ticks
        ax.set_xlabel(unit or name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    return to_data_uri(fig)


def fdm_panels(panels: Sequence[tuple[np.ndarray, np.ndarray, str]], *, threshold: float) -> str:
    """Functional diffusion maps: voxels whose ADC rose or fell beyond a threshold.

    Parameters
    ----------
    panels : sequence of (delta, inside, title)
        Per follow-up visit: ADC change (follow-up minus baseline, mm²/s) on one slice,
        shape (X, Y); the voxels inside the lesion at both visits (bool, (X, Y)); a title.
    threshold : float
        Change (mm²/s) beyond which a voxel counts as changed (red: rise, blue: fall,
        grey: unchanged).
    """
    from matplotlib.colors import ListedColormap

    n = max(1, len(panels))
    fig = _figure(2.2 * n, 2.4, layout=None)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.88, wspace=0.05)
    axes = fig.subplots(1, n, squeeze=False).ravel()
    cmap = ListedColormap(["#2166ac", "#dddddd", "#b2182b"])
    for ax, (delta, inside, title) in zip(axes, panels, strict=False):
        cls = np.full(delta.shape, np.nan)
        cls[inside] = 0.0
        cls[inside & (delta > threshold)] = 1.0
        cls[inside & (delta < -threshold)] = -1.0
        ax.imshow(cls.T, cmap=cmap, vmin=-1, vmax=1, origin="lower")
        ax.set_title(title, fontsize=8, y=1.0)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return to_data_uri(fig)
