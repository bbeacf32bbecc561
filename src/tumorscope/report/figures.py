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
    """PNG of a figure as a ``data:`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
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
    """
    columns: list[str] = []
    if any(r.get("anatomical") is not None for r in rows):
        columns.append("anatomical")
    for r in rows:
        columns += [k for k in r["maps"] if k not in columns]
    nr, nc = max(1, len(rows)), max(1, len(columns))
    fig = _figure(1.9 * nc, 1.9 * nr + 0.7, layout=None)
    fig.subplots_adjust(
        left=0.06,
        right=0.99,
        top=1 - 0.3 / (1.9 * nr + 0.7),
        bottom=0.5 / (1.9 * nr + 0.7),
        wspace=0.05,
        hspace=0.12,
    )
    axes = fig.subplots(nr, nc, squeeze=False)
    lims = dict(limits or {})
    images: dict[str, Any] = {}
    for i, r in enumerate(rows):
        for j, name in enumerate(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            img = r.get("anatomical") if name == "anatomical" else r["maps"].get(name)
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(str(r.get("label", "")), fontsize=7)
            if img is None:
                ax.set_frame_on(False)
                continue
            data = np.asarray(img, dtype=float).T  # rows = y, so the image is upright
            if name not in lims:
                finite = data[np.isfinite(data)]
                lo, hi = (
                    (float(v) for v in np.percentile(finite, [2, 98])) if finite.size else (0, 1)
                )
                lims[name] = (lo, hi if hi > lo else lo + 1.0)
            lo, hi = lims[name]
            cmap = "gray" if name == "anatomical" else "viridis"
            images[name] = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi, origin="lower")
            lab = r.get("labels")
            if lab is not None and np.any(lab):
                ax.contour(
                    (np.asarray(lab) > 0).T.astype(float),
                    levels=[0.5],
                    colors="#ff3b3b",
                    linewidths=0.8,
                )
    from matplotlib.ticker import MaxNLocator

    for j, name in enumerate(columns):
        if name == "anatomical" or name not in images:
            continue
        cb = fig.colorbar(
            images[name],
            ax=axes[:, j].tolist(),
            orientation="horizontal",
            fraction=0.04,
            pad=0.02,
            aspect=12,
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
