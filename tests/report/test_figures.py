"""Report building blocks on synthetic inputs: figures, table cells, templates."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest

from tumorscope.report import figures
from tumorscope.report.html import _cell, _methods, _shown, _sums_frame, frame_of, render


def _png(uri: str) -> np.ndarray:
    import matplotlib.image as mpimg

    assert uri.startswith("data:image/png;base64,")
    return mpimg.imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")


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
    best = pd.DataFrame(
        {"subject": ["001", "002"], "best_change_pct": [-40.0, -10.0], "response": ["PR", "SD"]}
    )
    w = _png(figures.waterfall_plot(best))
    # the PR bar is drawn in the PR colour
    pr = np.array([int(figures.RESPONSE_COLOURS["PR"][i : i + 2], 16) / 255 for i in (1, 3, 5)])
    assert (np.abs(w[..., :3] - pr).sum(axis=-1) < 0.02).sum() > 100


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
    red = (img[..., 0] > 0.9) & (img[..., 1] < 0.4) & (img[..., 2] < 0.4)
    assert red.sum() > 20  # the lesion outline


def test_histograms_and_fdm_panels() -> None:
    h = figures.histograms({"adc.ADC": {"01": np.full(50, 1e-3), "02": [np.nan, 1.2e-3]}})
    assert _png(h).shape[1] > 100
    delta = np.zeros((8, 8))
    delta[2, 2], delta[3, 3] = 1e-3, -1e-3
    inside = np.zeros((8, 8), bool)
    inside[1:5, 1:5] = True
    img = _png(figures.fdm_panels([(delta, inside, "visit 02")], threshold=0.55e-3))
    assert img.shape[0] > 100


def test_cells_format_numbers_and_missing_values() -> None:
    assert _cell(None)["text"] == "" and _cell(float("nan"))["text"] == ""
    assert _cell(True)["text"] == "yes"
    assert _cell(np.int64(3)) == {"text": "3", "num": True, "sort": 3, "html": ""}
    assert _cell(0.00123)["text"] == "0.00123" and _cell(12.5)["text"] == "12.5"
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


def test_spider_points_start_at_zero_and_skip_prebaseline() -> None:
    a = pd.DataFrame(
        {
            "response": ["pre-baseline", "baseline", "PD"],
            "change_from_baseline_pct": [np.nan, np.nan, 25.0],
        }
    )
    out = _sums_frame("005", ["00", "01", "02"], [-40, 0, 21], a)
    assert out["visit"].tolist() == ["01", "02"] and out["change_pct"].tolist() == [0.0, 25.0]


def test_methods_and_shown_maps() -> None:
    prov = {
        "model": "ivim",
        "options": {"method": "segmented", "bvalues": [0, 500, 1000], "b_threshold": 200.0},
        "backend": "numba",
        "tumorscope_version": "0.1.0",
    }
    (line,) = _methods([prov, prov])
    assert "Model ivim, method segmented" in line and "0, 500, 1000 s/mm²" in line
    assert "b_threshold=200.0" in line
    names = {"ivim.f": 0, "ivim.D": 0, "adc.ADC": 0, "tofts.Ktrans": 0, "vfa.T1": 0, "x.S0": 0}
    assert _shown(names) == ["adc.ADC", "ivim.D", "tofts.Ktrans", "ivim.f"]


@pytest.mark.parametrize("n", [0, 1])
def test_trajectories_accept_any_number_of_panels(n: int) -> None:
    series = {
        f"q{i}": pd.DataFrame({"lesion_id": ["L1", "L1"], "days": [0, 21], "value": [1.0, 2.0]})
        for i in range(n)
    }
    assert _png(figures.trajectories(series)).size > 0
