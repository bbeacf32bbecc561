"""Report building blocks on synthetic inputs: figures (``report.figures``), table cells,
templates and texts (``report.blocks``)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest

from tumorscope.report import figures
from tumorscope.report.blocks import cell, frame_of, methods_text, render, shown_maps, spider_points


def _png(uri: str) -> np.ndarray:
    import matplotlib.image as mpimg

    assert uri.startswith("data:image/png;base64,")
    return mpimg.imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")


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


def _blue_and_orange(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of matplotlib's first two cycle colours (C0 blue, C1 orange), antialiased lines
    included; text, axes and the white background are grey and match neither."""
    r, b = img[..., 0], img[..., 2]
    return b - r > 0.3, r - b > 0.3


def test_spider_and_waterfall_draw_every_subject() -> None:
    sums = pd.DataFrame(
        {
            "subject": ["001"] * 3 + ["002"] * 3,
            "days": [0, 21, 42] * 2,
            "change_pct": [0.0, -20.0, -40.0, 0.0, 30.0, -10.0],
            "response": ["baseline", "SD", "PR", "baseline", "PD", "SD"],
        }
    )
    img = _png(figures.spider_plot(sums))
    assert img.ndim == 3 and img.shape[0] > 200
    # one line per subject, in the first two cycle colours
    blue, orange = _blue_and_orange(img)
    assert blue.sum() > 100 and orange.sum() > 100
    # markers in their response colour, where the data put them: the PD point (+30 % at day
    # 21) above and left of the PR point (-40 % at day 42); two SD markers
    colour = figures.RESPONSE_COLOURS
    pd_row, pd_col = _centre(_where(img, colour["PD"]))
    pr_row, pr_col = _centre(_where(img, colour["PR"]))
    assert pd_row < pr_row - 100 and pd_col < pr_col - 100
    assert _where(img, colour["SD"]).sum() > 1.5 * _where(img, colour["PR"]).sum()
    # different data, different figure: subject 002 responding instead of progressing
    better = sums.assign(change_pct=[0.0, -20.0, -40.0, 0.0, -35.0, -10.0])
    better.loc[4, "response"] = "PR"
    img2 = _png(figures.spider_plot(better))
    assert not _where(img2, colour["PD"]).any()
    assert _where(img2, colour["PR"]).sum() > 1.5 * _where(img, colour["PR"]).sum()

    best = pd.DataFrame(
        {"subject": ["001", "002"], "best_change_pct": [-40.0, -10.0], "response": ["PR", "SD"]}
    )
    w = _png(figures.waterfall_plot(best))
    # each bar in its response colour, sorted (SD -10 % left of PR -40 %), both hanging from
    # the zero line, the PR bar four times as long as the SD bar
    pr_bar, sd_bar = _where(w, colour["PR"]), _where(w, colour["SD"])
    assert pr_bar.sum() > 100 and sd_bar.sum() > 100
    assert _centre(sd_bar)[1] < _centre(pr_bar)[1]
    pr_rows, sd_rows = np.nonzero(pr_bar.any(axis=1))[0], np.nonzero(sd_bar.any(axis=1))[0]
    assert abs(int(pr_rows[0]) - int(sd_rows[0])) <= 1  # same top: the zero line
    assert (pr_rows[-1] - pr_rows[0] + 1) / (sd_rows[-1] - sd_rows[0] + 1) == pytest.approx(
        4.0, rel=0.15
    )


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
    img = _png(figures.map_grid(rows, units={"adc.ADC": "mm2/s"}))

    def red(img: np.ndarray) -> np.ndarray:
        return (img[..., 0] > 0.9) & (img[..., 1] < 0.4) & (img[..., 2] < 0.4)

    assert red(img).sum() > 20  # the lesion outline
    # the outline is drawn in both panels of the visit (anatomical left, ADC map right)
    cols = np.nonzero(red(img))[1]
    half = img.shape[1] / 2
    assert (cols < half).sum() > 10 and (cols > half).sum() > 10
    # the map is drawn in colour (viridis), the anatomical in grey
    assert (np.ptp(img[..., :3], axis=-1) > 0.3).sum() > 1000
    # no labels, no outline: the red comes from the data
    rows[0]["labels"] = None
    assert red(_png(figures.map_grid(rows, units={"adc.ADC": "mm2/s"}))).sum() == 0


def test_histograms_draw_one_curve_per_visit_where_its_values_are() -> None:
    rng = np.random.default_rng(0)
    v1 = rng.normal(1.0e-3, 1e-4, 400)
    # visit 01 blue (C0), visit 02 orange (C1): visit 02 higher, then lower than visit 01
    cols = []
    for centre in (1.6e-3, 0.6e-3):
        v2 = rng.normal(centre, 1e-4, 400)
        blue, orange = _blue_and_orange(_png(figures.histograms({"adc.ADC": {"01": v1, "02": v2}})))
        assert blue.sum() > 300 and orange.sum() > 300
        cols.append((np.median(np.nonzero(blue)[1]), np.median(np.nonzero(orange)[1])))
    (b_hi, o_hi), (b_lo, o_lo) = cols
    assert o_hi > b_hi + 20 and o_lo < b_lo - 20
    # a visit without a finite value draws no curve (and breaks nothing)
    h = figures.histograms({"adc.ADC": {"01": v1, "02": [np.nan, np.nan]}})
    blue, orange = _blue_and_orange(_png(h))
    assert blue.sum() > 300 and orange.sum() == 0


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
    img = _png(figures.trajectories({f"q{i}": frame for i in range(n)}))
    blue, orange = _blue_and_orange(img)
    if n == 0:  # nothing to show: a blank figure
        assert np.ptp(img[..., :3]) == 0
        return
    # one curve per lesion (L1 blue, L2 orange) in every panel, panels side by side
    width = img.shape[1] / n
    for i in range(n):
        panel = slice(int(i * width), int((i + 1) * width))
        assert blue[:, panel].sum() > 100 and orange[:, panel].sum() > 100


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
