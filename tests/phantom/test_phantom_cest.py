"""The phantom's CEST series: its truths come back through the CEST stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tumorscope.phantom.cest import AMIDE_FRACTION, CEST_OFFSETS_PPM, cest_series
from tumorscope.stages.base import read_series
from tumorscope.stages.cest import fit_cest
from tumorscope.volume import Volume


def _visit(trajectory: str = "responder") -> dict:
    shape = (12, 10, 1)
    x, y, _ = np.meshgrid(np.linspace(-60, 60, 12), np.linspace(-50, 50, 10), [0.0], indexing="ij")
    names = ["", "background", "untreated", "responded"]
    tissue = np.ones(shape, int)
    tissue[2:5, 2:8] = 2
    tissue[7:10, 2:8] = 3
    body = np.ones(shape, bool)
    body[0] = False  # a row of air
    params = {
        "T1": np.choose(tissue, [1.0, 800.0, 1300.0, 1200.0]).astype(float),
        "T2": np.choose(tissue, [1.0, 45.0, 85.0, 110.0]).astype(float),
    }
    m0 = np.full(shape, 30000.0)
    return cest_series(trajectory, 0, names, tissue, body, m0, params, x, y) | {"tissue": tissue}


def test_only_cest_trajectories_get_series() -> None:
    assert (
        cest_series(
            "stable",
            0,
            [],
            np.zeros((1, 1, 1), int),
            np.ones((1, 1, 1), bool),
            np.ones((1, 1, 1)),
            {},
            np.zeros((1, 1, 1)),
            np.zeros((1, 1, 1)),
        )
        == {}
    )


def test_phantom_cest_truths_come_back(tmp_path: Path) -> None:
    out = _visit()
    img, side = out["anat/cest"]
    assert img.dtype == np.int16 and img.shape[-1] == CEST_OFFSETS_PPM.size + 1
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    path = tmp_path / "sub-01_ses-01_cest.nii.gz"
    Volume(img, aff).to_nifti(path)
    path.with_name("sub-01_ses-01_cest.json").write_text(
        json.dumps({**side, "MagneticFieldStrength": 3.0})
    )
    res = fit_cest({"cest": read_series(path, "cest")}, out_dir=tmp_path / "o", prefix="p_")
    maps = {m.name: Volume.from_nifti(m.path).data[..., 0] for m in res.maps}
    b0_true = out["truth:cest_B0"][0][..., 0]
    inside = np.isfinite(b0_true)
    # background (air: M0 ~ noise) is left out
    assert np.all(np.isnan(maps["cest.B0"][~inside]))
    err = maps["cest.B0"][inside] - b0_true[inside]
    assert np.sqrt(np.mean(err**2)) < 0.04 and abs(np.mean(err)) < 0.01
    amide = out["truth:cest_amide_fraction"][0][..., 0]
    assert amide[3, 5] == AMIDE_FRACTION["untreated"] and amide[8, 5] == AMIDE_FRACTION["responded"]
    amp = maps["cest_lorentzian.amide_amp"]
    tissue = out["tissue"][..., 0]
    # APT falls in the responder: untreated tumour above responded tissue
    assert np.median(amp[tissue == 2]) > np.median(amp[tissue == 3]) + 0.005
