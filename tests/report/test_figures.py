"""Report building blocks on synthetic inputs: figures (``report.figures``), table cells,
templates and texts (``report.blocks``)."""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tumorscope.report import figures
from tumorscope.report.blocks import cell, frame_of, methods_text, render, shown_maps, spider_points


def _svg(uri: str) -> ET.Element:
    """The SVG of a figure's ``data:`` URI (namespaces dropped from the tags)."""
    assert uri.startswith("data:image/svg+xml;base64,")
    root = ET.fromstring(base64.b64decode(uri.split(",", 1)[1]))
    for el in root.iter():
        el.tag = el.tag.split("}")[-1]
    assert root.tag == "svg"
    return root


def _png(uri: str) -> np.ndarray:
    """The pixels (floats 0-1, rows top-down) of the image of an image figure: the one PNG
    inside its SVG, placed at the origin at one screen pixel per pixel (PIL decodes it)."""
    from PIL import Image

    (image,) = _svg(uri).iter("image")
    assert float(image.get("x", 0)) == 0 and float(image.get("y", 0)) == 0
    href = image.get("href", "")
    assert href.startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1])))
    return np.asarray(png.convert("RGB"), dtype=float) / 255


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])


def _where(img: np.ndarray, hex_colour: str, tol: float = 0.02) -> np.ndarray:
    """Pixels of exactly this colour (up to PNG rounding): filled areas, markers, bars."""
    return np.abs(img[..., :3] - _rgb(hex_colour)).max(axis=-1) < tol


def _centre(mask: np.ndarray) -> tuple[float, float]:
    """(row, column) centre of the pixels of a mask; rows grow downwards in the image."""
    rows, cols = np.nonzero(mask)
    assert rows.size, "colour not found in the figure"
    return float(rows.mean()), float(cols.mean())


class _Axes:
    """An axes of an SVG figure with its data -> pixel mapping (``report.svg``)."""

    def __init__(self, g: ET.Element) -> None:
        self.g = g
        self.x0, self.y0, self.w, self.h = (float(v) for v in g.get("data-box", "").split())
        self.xlim = [float(v) for v in g.get("data-xlim", "").split()]
        self.ylim = [float(v) for v in g.get("data-ylim", "").split()]

    def px(self, x: Any, y: Any) -> np.ndarray:
        (xlo, xhi), (ylo, yhi) = self.xlim, self.ylim
        x, y = np.asarray(x, float), np.asarray(y, float)
        return np.stack(
            [
                self.x0 + (x - xlo) / (xhi - xlo) * self.w,
                self.y0 + self.h - (y - ylo) / (yhi - ylo) * self.h,
            ],
            axis=-1,
        )

    def lines(self, cls: str = "line") -> dict[str, tuple[str, np.ndarray]]:
        """Label -> (colour, points (n, 2)) of the polylines."""
        out = {}
        for el in self.g.iter("polyline"):
            if el.get("class") == cls:
                pts = np.array(
                    [[float(v) for v in p.split(",")] for p in el.get("points", "").split()]
                )
                out[el.get("data-label", "")] = (el.get("stroke", ""), pts)
        return out

    def markers(self) -> list[tuple[str, float, float]]:
        return [
            (el.get("fill", ""), float(el.get("cx", 0)), float(el.get("cy", 0)))
            for el in self.g.iter("circle")
            if el.get("class") == "marker"
        ]

    def texts(self) -> list[str]:
        return [el.text or "" for el in self.g.iter("text")]


def _axes(uri: str) -> list[_Axes]:
    return [_Axes(g) for g in _svg(uri).iter("g") if g.get("class") == "axes"]


def test_spider_and_waterfall_draw_every_subject() -> None:
    sums = pd.DataFrame(
        {
            "subject": ["001"] * 3 + ["002"] * 3,
            "days": [0, 21, 42] * 2,
            "change_pct": [0.0, -20.0, -40.0, 0.0, 30.0, -10.0],
            "response": ["baseline", "SD", "PR", "baseline", "PD", "SD"],
        }
    )
    (ax,) = _axes(figures.spider_plot(sums, title="T"))
    # one line per subject, in the first two cycle colours (matplotlib's C0, C1), through
    # the data scaled to the axes
    lines = ax.lines()
    assert set(lines) == {"001", "002"}
    assert lines["001"][0] == "#1f77b4" and lines["002"][0] == "#ff7f0e"
    for sid, g in sums.groupby("subject"):
        np.testing.assert_allclose(lines[str(sid)][1], ax.px(g["days"], g["change_pct"]), atol=0.01)
    # the axes hold every point and the +20 % / -30 % lines
    assert ax.ylim[0] < -40 and ax.ylim[1] > 30 and ax.xlim[0] < 0 and ax.xlim[1] > 42
    # markers in their response colour, where the data put them
    colour = figures.RESPONSE_COLOURS
    marks = ax.markers()
    assert len(marks) == 6

    def at(day: float, pct: float) -> list[str]:
        x, y = ax.px(day, pct)
        return [c for c, mx, my in marks if abs(mx - x) < 0.01 and abs(my - y) < 0.01]

    assert at(21, 30.0) == [colour["PD"]] and at(42, -40.0) == [colour["PR"]]
    assert at(0, 0.0) == ["#1f77b4", "#ff7f0e"]  # baseline: no response, the line's colour
    assert [c for c, _, _ in marks].count(colour["SD"]) == 2
    # axis labels, title, the legend's title and subjects are text
    texts = ax.texts()
    for t in ("days on treatment", "target sum, change from baseline (%)", "T", "subject"):
        assert t in texts
    # different data, different figure: subject 002 responding instead of progressing
    better = sums.assign(change_pct=[0.0, -20.0, -40.0, 0.0, -35.0, -10.0])
    better.loc[4, "response"] = "PR"
    (ax2,) = _axes(figures.spider_plot(better))
    cols = [c for c, _, _ in ax2.markers()]
    assert colour["PD"] not in cols and cols.count(colour["PR"]) == 2

    best = pd.DataFrame(
        {"subject": ["001", "002"], "best_change_pct": [-40.0, -10.0], "response": ["PR", "SD"]}
    )
    (w,) = _axes(figures.waterfall_plot(best))
    # each bar in its response colour, sorted (SD -10 % left of PR -40 %), both hanging from
    # the zero line, the PR bar four times as long as the SD bar
    bars = {
        r.get("fill"): [float(r.get(k, 0)) for k in ("x", "y", "width", "height")]
        for r in w.g.iter("rect")
        if r.get("class") == "bar"
    }
    pr, sd = bars[colour["PR"]], bars[colour["SD"]]
    assert sd[0] < pr[0]
    zero = float(w.px(0, 0.0)[1])
    assert pr[1] == pytest.approx(zero, abs=0.01) and sd[1] == pytest.approx(zero, abs=0.01)
    assert pr[3] / sd[3] == pytest.approx(4.0, rel=1e-3)
    assert pr[3] == pytest.approx(float(w.px(0, -40.0)[1]) - zero, abs=0.02)
    assert {"001", "002"} <= set(w.texts())


def test_map_grid_outlines_lesions_and_handles_missing_maps() -> None:
    rng = np.random.default_rng(0)
    lab = np.zeros((16, 16), int)
    lab[4:9, 5:10] = 1
    rows = [
        {
            "label": "visit 01",
            "anatomical": rng.random((16, 16)),
            "maps": {"adc.ADC": rng.random((16, 16)) * 1e-3},
            "labels": lab,
        },
        {"label": "visit 02", "anatomical": None, "maps": {}, "labels": None},
    ]
    uri = figures.map_grid(rows, units={"adc.ADC": "mm2/s"})
    img = _png(uri)

    def red(img: np.ndarray) -> np.ndarray:
        return (img[..., 0] > 0.9) & (img[..., 1] < 0.4) & (img[..., 2] < 0.4)

    assert red(img).sum() > 20  # the lesion outline
    # the outline is drawn in both panels of the visit (anatomical left, ADC map right)
    cols = np.nonzero(red(img))[1]
    half = img.shape[1] / 2
    assert (cols < half).sum() > 10 and (cols > half).sum() > 10
    # the map is drawn in colour (viridis), the anatomical in grey
    assert (np.ptp(img[..., :3], axis=-1) > 0.3).sum() > 1000
    # titles, row labels, the unit and the colour bar's ticks are text
    texts = [el.text for el in _svg(uri).iter("text")]
    assert {"anatomical", "adc.ADC", "visit 01", "visit 02", "mm2/s"} <= set(texts)
    # no labels, no outline: the red comes from the data
    rows[0]["labels"] = None
    assert red(_png(figures.map_grid(rows, units={"adc.ADC": "mm2/s"}))).sum() == 0


def test_map_grid_pixels_are_matplotlibs_colour_map_of_the_values() -> None:
    """Peer: matplotlib's ``viridis`` / ``gray`` through ``Normalize`` (what the grid used to
    draw with): every voxel's block of pixels has the colour matplotlib gives its value, the
    colour bar's ticks are ``MaxNLocator(3)``'s."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    rng = np.random.default_rng(3)
    adc = rng.random((12, 9)) * 2e-3
    adc[2, 3] = np.nan  # white
    adc[5, 5] = 5e-3  # above the range: the last colour
    anat = rng.random((12, 9)) * 100
    lims = {"adc.ADC": (0.2e-3, 1.8e-3), "anatomical": (-10.0, 110.0)}  # no black voxel
    rows = [{"label": "v", "anatomical": anat, "maps": {"adc.ADC": adc}, "labels": None}]
    uri = figures.map_grid(rows, limits=lims)
    img = np.round(_png(uri) * 255)
    # each panel's black frame: the runs of columns holding black pixels, left to right; its
    # rows are those black in its left column (x right, y up)
    black = (img == 0).all(axis=-1)
    cols = np.nonzero(black.any(axis=0))[0]
    runs = np.split(cols, np.nonzero(np.diff(cols) > 1)[0] + 1)
    assert len(runs) == 2
    for (name, data), run in zip((("anatomical", anat), ("adc.ADC", adc)), runs, strict=True):
        cmap = colormaps["gray" if name == "anatomical" else "viridis"]
        rgba = cmap(Normalize(*lims[name])(np.ma.masked_invalid(data)))
        rgba[rgba[..., 3] == 0] = 1.0
        want = np.round(rgba[..., :3] * 255)
        left, right = int(run[0]), int(run[-1])
        frame_rows = np.nonzero(black[:, left])[0]
        top, bottom = int(frame_rows[0]), int(frame_rows[-1])
        nx, ny = data.shape
        ph, pw = bottom - top + 1, right - left + 1
        # the centre pixel of every voxel's block
        for ix in range(nx):
            for iy in range(ny):
                c = left + int((ix + 0.5) * pw / nx)
                r = bottom - int((iy + 0.5) * ph / ny)
                np.testing.assert_array_equal(img[r, c], want[ix, iy], err_msg=f"{name} {ix} {iy}")
    texts = [el.text for el in _svg(uri).iter("text")]
    lo, hi = lims["adc.ADC"]
    ticks = [t for t in MaxNLocator(3).tick_values(lo, hi) if lo <= t <= hi]
    assert [figures._tick_label(t, ticks) for t in ticks] == [
        t for t in texts if t and t[0].isdigit()
    ]


def test_histograms_draw_one_curve_per_visit_where_its_values_are() -> None:
    rng = np.random.default_rng(0)
    v1 = rng.normal(1.0e-3, 1e-4, 400)
    # visit 01 blue (C0), visit 02 orange (C1): visit 02 higher, then lower than visit 01
    for centre in (1.6e-3, 0.6e-3):
        v2 = rng.normal(centre, 1e-4, 400)
        (ax,) = _axes(figures.histograms({"adc.ADC": {"01": v1, "02": v2}}))
        lines = ax.lines("steps")
        assert set(lines) == {"visit 01", "visit 02"}
        assert lines["visit 01"][0] == "#1f77b4" and lines["visit 02"][0] == "#ff7f0e"
        # the outline is numpy's histogram on the common bins (1st-99th percentile, 30 bins)
        pooled = np.concatenate([v1, v2])
        edges = np.linspace(*np.percentile(pooled, [1, 99]), 31)
        for label, v in (("visit 01", v1), ("visit 02", v2)):
            counts, _ = np.histogram(v, edges)
            x = np.repeat(edges, 2)
            y = np.concatenate([[0], np.repeat(counts, 2), [0]])
            np.testing.assert_allclose(lines[label][1], ax.px(x, y), atol=0.01)
    # a visit without a finite value draws no curve (and breaks nothing)
    (ax,) = _axes(figures.histograms({"adc.ADC": {"01": v1, "02": [np.nan, np.nan]}}))
    assert set(ax.lines("steps")) == {"visit 01"}


def test_fdm_panels_colour_the_changed_voxels() -> None:
    delta = np.zeros((8, 8))
    delta[2, 2], delta[3, 3] = 1e-3, -1e-3
    inside = np.zeros((8, 8), bool)
    inside[1:5, 1:5] = True
    img = _png(figures.fdm_panels([(delta, inside, "visit 02")], threshold=0.55e-3))
    rise, fall, same = (_where(img, c) for c in ("#b2182b", "#2166ac", "#dddddd"))
    # one voxel rose (red), one fell (blue), 14 inside unchanged (grey), outside not drawn
    assert rise.sum() > 50 and rise.sum() == pytest.approx(fall.sum(), rel=0.05)
    assert same.sum() / rise.sum() == pytest.approx(14, rel=0.05)
    # the rise at (x 2, y 2) is left of and below (image rows grow down) the fall at (3, 3)
    (r_row, r_col), (f_row, f_col) = _centre(rise), _centre(fall)
    assert r_col < f_col and r_row > f_row
    # above the largest change nothing counts as changed: all 16 inside voxels grey
    img = _png(figures.fdm_panels([(delta, inside, "visit 02")], threshold=2e-3))
    assert not _where(img, "#b2182b").any() and not _where(img, "#2166ac").any()
    assert _where(img, "#dddddd").sum() / rise.sum() == pytest.approx(16, rel=0.05)


def test_cells_format_numbers_and_missing_values() -> None:
    assert cell(None)["text"] == "" and cell(float("nan"))["text"] == ""
    assert cell(True)["text"] == "yes"
    assert cell(np.int64(3)) == {"text": "3", "num": True, "sort": 3, "html": ""}
    assert cell(0.00123)["text"] == "0.00123" and cell(12.5)["text"] == "12.5"
    f = frame_of(
        pd.DataFrame({"subject": ["001"], "x": [1.0]}), links={"subject": "sub-{value}.html"}
    )
    assert f is not None and f.rows[0][0]["html"] == '<a href="sub-001.html">001</a>'


def test_templates_escape_text() -> None:
    table = frame_of(pd.DataFrame({"reason": ["<script>alert(1)</script>"]}))
    html = render(
        "study.html.j2",
        title="t",
        n_subjects=0,
        n_visits=0,
        n_lesions=0,
        n_maps=0,
        criteria=[],
        subjects=table,
        disagreements=["<b>sub-1</b>: recist1.1 best PD but irecist best iPR"],
        spider=None,
        waterfall=None,
        main_criteria="recist1.1",
        not_wired="",
        assessments=None,
        failures=None,
        methods=["m"],
        software=None,
    )
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "<b>sub-1</b>" not in html and "&lt;b&gt;sub-1&lt;/b&gt;" in html


def test_spider_points_start_at_zero_and_skip_prebaseline() -> None:
    a = pd.DataFrame(
        {
            "response": ["pre-baseline", "baseline", "PD"],
            "change_from_baseline_pct": [np.nan, np.nan, 25.0],
        }
    )
    out = spider_points("005", ["00", "01", "02"], [-40, 0, 21], a)
    assert out["visit"].tolist() == ["01", "02"] and out["change_pct"].tolist() == [0.0, 25.0]


def test_methods_and_shown_maps() -> None:
    prov = {
        "model": "ivim",
        "options": {"method": "segmented", "bvalues": [0, 500, 1000], "b_threshold": 200.0},
        "backend": "numba",
        "tumorscope_version": "0.1.0",
    }
    (line,) = methods_text([prov, prov])
    assert "Model ivim, method segmented" in line and "0, 500, 1000 s/mm²" in line
    assert "b_threshold=200.0" in line
    names = {"ivim.f": 0, "ivim.D": 0, "adc.ADC": 0, "tofts.Ktrans": 0, "vfa.T1": 0, "x.S0": 0}
    assert shown_maps(names) == ["adc.ADC", "ivim.D", "tofts.Ktrans", "ivim.f"]


@pytest.mark.parametrize("n", [0, 1, 2])
def test_trajectories_accept_any_number_of_panels(n: int) -> None:
    frame = pd.DataFrame(
        {"lesion_id": ["L1", "L1", "L2", "L2"], "days": [0, 21, 0, 21], "value": [1, 2, 3, 1.0]}
    )
    uri = figures.trajectories({f"q{i}": frame for i in range(n)})
    axes = _axes(uri)
    if n == 0:  # nothing to show: a blank figure
        assert axes == [] and not list(_svg(uri).iter("polyline"))
        return
    # one curve per lesion (L1 blue, L2 orange) in every panel, panels side by side, each
    # through its points
    assert len(axes) == n
    for i, ax in enumerate(axes):
        lines = ax.lines()
        assert lines["L1"][0] == "#1f77b4" and lines["L2"][0] == "#ff7f0e"
        np.testing.assert_allclose(lines["L2"][1], ax.px([0, 21], [3, 1.0]), atol=0.01)
        assert f"q{i}" in ax.texts()
        if i:
            assert ax.x0 > axes[i - 1].x0 + axes[i - 1].w


def test_colour_bar_tick_labels_show_the_step() -> None:
    from tumorscope.report.figures import _boundary, _tick_label

    assert [_tick_label(t, [0.4, 0.8]) for t in (0.4, 0.8)] == ["0.4", "0.8"]
    assert [_tick_label(t, [1000.0, 1500.0, 2000.0]) for t in (1000.0, 1500.0)] == ["1000", "1500"]
    assert _tick_label(0.0015, [0.001, 0.0015, 0.002]) == "1.5e-03"
    assert _tick_label(30.0, [30.0]) == "30"
    mask = np.zeros((5, 6), bool)
    mask[1:4, 0:3] = True
    edge = _boundary(mask)
    assert edge.sum() == 8 and not edge[2, 1] and edge[2, 0]  # the centre is inside


def test_raster_matches_matplotlib_and_pil() -> None:
    """Peers: matplotlib's ``MaxNLocator`` (ticks) and colour maps, PIL (PNG decoding)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator
    from PIL import Image

    from tumorscope.report.raster import colour, lut, max_n_ticks, png_bytes

    rng = np.random.default_rng(7)
    for _ in range(300):
        lo = rng.normal() * 10 ** rng.uniform(-5, 4)
        hi = lo + 10 ** rng.uniform(-6, 4) * rng.uniform(0.01, 3)
        for n in (3, 6):
            want = MaxNLocator(n).tick_values(lo, hi)
            got = max_n_ticks(lo, hi, n)
            assert len(got) == len(want)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * max(abs(lo), abs(hi)))
    for name in ("viridis", "gray"):
        table = np.round(colormaps[name](np.arange(256))[:, :3] * 255)
        np.testing.assert_array_equal(lut(name), table)
        x = rng.normal(size=(40, 30))
        x[0, :4] = [np.nan, -1.0, 1.0, 7.0]  # bad, both ends, above
        m = colormaps[name](Normalize(-1.0, 1.0)(np.ma.masked_invalid(x)))
        m[m[..., 3] == 0] = 1.0
        np.testing.assert_array_equal(colour(x, -1.0, 1.0, lut(name)), np.round(m[..., :3] * 255))
    img = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(img)))), img)


def test_small_values_are_labelled_with_a_multiplier() -> None:
    """ADC-sized values (1e-3 mm²/s) read as ``0.6 0.9 1.2`` with ``1e-3`` once on the axis
    (matplotlib's ScalarFormatter), and the points stay where the data put them."""
    from tumorscope.report.svg import axis_labels

    assert axis_labels([6e-4, 9e-4, 1.2e-3]) == (["0.6", "0.9", "1.2"], "1e-3")
    assert axis_labels([0.0, 20.0, 40.0]) == (["0", "20", "40"], "")
    frame = pd.DataFrame({"lesion_id": ["L1", "L1"], "days": [0, 21], "value": [6e-4, 1.2e-3]})
    (ax,) = _axes(figures.trajectories({"adc.ADC mean (mm2/s)": frame}))
    texts = ax.texts()
    assert "1e-3" in texts and "adc.ADC mean (mm2/s)" in texts
    assert not any("e-0" in t for t in texts)  # no tick label in exponent notation
    np.testing.assert_allclose(ax.lines()["L1"][1], ax.px([0, 21], [6e-4, 1.2e-3]), atol=0.01)
