"""Figures of the report: matplotlib (Agg), returned as base64 PNG data URIs.

Every function takes plain tables or arrays and returns a ``data:image/png;base64,…`` string,
so the HTML opens from disk with no server and no side files. Figures are small (about 100 dpi)
to keep a report of many subjects light.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import pandas as pd
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
    fig = _figure(6.4, 4.0)
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
    ax.set_title(title)
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
    ax.set_title(title)
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
        ax.set_title(name, fontsize=9)
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
    The panels are one mosaic: each slice is coloured here (its map's colour map and range)
    and scaled to its panel by whole-voxel nearest-neighbour repetition (square voxels, as
    ``imshow``), then the mosaic is drawn at one figure pixel per mosaic pixel in a single
    axes, with the lesion outlines (``contour`` at 0.5 through the voxel centres), titles and
    one colour bar per map column. A grid of 4 visits × 9 maps is 36 matplotlib axes
    otherwise, whose creation and drawing cost ~10× the pixels (issue 21).
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
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
    # panel area in inches: 0.06 of the width on the left for the row labels, 0.3 in on top
    # for the titles, 0.55 in at the bottom for the colour bars
    x0, y0 = round(0.06 * w_in * dpi), round(0.55 * dpi)  # pixels
    W, H = round(0.99 * w_in * dpi) - x0, round((h_in - 0.3) * dpi) - y0
    x0_in, y0_in = x0 / dpi, y0 / dpi
    cw, ch = W / nc, H / nr
    gap = 3  # pixels between panels
    mosaic = np.ones((H, W, 4))  # white, opaque; rows grow upwards (origin="lower")
    lims = dict(limits or {})
    shown: set[str] = set()
    outlines: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for i, r in enumerate(rows):
        row_bottom = H - (i + 1) * ch  # row 0 on top
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
            rgba = cmap(Normalize(lo, hi)(np.ma.masked_invalid(data)))
            shown.add(name)
            # the panel: square voxels, as large as the cell allows, centred
            ny, nx = data.shape
            scale = min((cw - gap) / nx, (ch - gap) / ny)
            pw, ph = max(1, int(nx * scale)), max(1, int(ny * scale))
            px0 = int(j * cw + (cw - pw) / 2)
            py0 = int(row_bottom + (ch - ph) / 2)
            iy = np.minimum((np.arange(ph) + 0.5) * ny / ph, ny - 1).astype(int)
            ix = np.minimum((np.arange(pw) + 0.5) * nx / pw, nx - 1).astype(int)
            block = rgba[iy[:, None], ix[None, :]]
            transparent = block[..., 3] == 0  # NaN: the white background
            block[transparent] = 1.0
            block[[0, -1], :, :3] = 0.0  # a black frame, as an axes' spines
            block[:, [0, -1], :3] = 0.0
            mosaic[py0 : py0 + ph, px0 : px0 + pw] = block
            lab = r.get("labels")
            if lab is not None and np.any(lab):
                inside = (np.asarray(lab) > 0).T.astype(float)
                if inside.shape == data.shape:  # voxel centres in mosaic pixels
                    xs = px0 + (np.arange(nx) + 0.5) * pw / nx
                    ys = py0 + (np.arange(ny) + 0.5) * ph / ny
                    outlines.append((xs, ys, inside))
    # placed pixel for pixel (no resampling); the axes above it, in mosaic pixels, carry the
    # outlines and titles
    fig.figimage(np.round(mosaic * 255).astype(np.uint8), xo=x0, yo=y0, origin="lower", zorder=-1)
    ax = fig.add_axes((x0_in / w_in, y0_in / h_in, W / dpi / w_in, H / dpi / h_in))
    ax.set_axis_off()
    ax.set_xlim(0, W)
    ax.set_ylim(0, H)
    for xs, ys, inside in outlines:
        ax.contour(xs, ys, inside, levels=[0.5], colors="#ff3b3b", linewidths=0.8)
    for j, name in enumerate(columns):
        ax.text((j + 0.5) * cw, H + 4, name, fontsize=8, ha="center", va="bottom")
    for i, r in enumerate(rows):
        fig.text(
            x0_in / w_in - 0.04 / w_in,
            (y0_in + (H - (i + 0.5) * ch) / dpi) / h_in,
            str(r.get("label", "")),
            fontsize=7,
            rotation=90,
            ha="right",
            va="center",
        )
    bar_w_in, bar_h_in = 0.8 * cw / dpi, 0.8 * cw / dpi / 12
    for j, name in enumerate(columns):
        if name == "anatomical" or name not in shown:
            continue
        left_in = x0_in + (j + 0.1) * cw / dpi
        cax = fig.add_axes(
            (left_in / w_in, (y0_in - 0.12 - bar_h_in) / h_in, bar_w_in / w_in, bar_h_in / h_in)
        )
        lo, hi = lims[name]
        cb = fig.colorbar(
            ScalarMappable(Normalize(lo, hi), colormaps["viridis"]),
            cax=cax,
            orientation="horizontal",
        )
        cb.locator = MaxNLocator(3)
        cb.update_ticks()
        cb.ax.tick_params(labelsize=6)
        if units and units.get(name):
            cb.set_label(units[name], fontsize=6, labelpad=1)
    return to_data_uri(fig)


def histograms(values: Mapping[str, Mapping[str, npt.ArrayLike]], *, unit: str = "") -> str:
    """Histograms of one map's values inside the lesions, one curve per visit.

    Parameters
    ----------
    values : mapping of str to mapping of str to sequence
        Map name -> visit -> voxel values (all lesions of the visit).
    """
    n = max(1, len(values))
    fig = _figure(3.3 * n, 2.6)
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
        ax.set_title(name, fontsize=9)
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
        ax.set_title(title, fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return to_data_uri(fig)
