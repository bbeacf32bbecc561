"""The diffusion-tensor block of the subject report: an RGB panel per visit with DTI maps."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import nibabel as nib
import numpy as np

from tumorscope.layout import VisitMap
from tumorscope.report.diffusion import _rgb, tensor_rgb_figure


def _maps(tmp: Path, fa_value: float) -> dict[str, VisitMap]:
    out = {}
    fa = np.full((6, 5, 3), fa_value, np.float32)
    v = {"V1_x": 1.0, "V1_y": 0.0, "V1_z": 0.0}
    for name, arr in [("FA", fa), *((k, np.full_like(fa, x)) for k, x in v.items())]:
        p = tmp / f"dti_{name}_{fa_value}.nii.gz"
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(p))
        out[f"dti.{name}"] = VisitMap(p, None, "1")
    return out


def test_rgb_panels_per_visit(tmp_path: Path) -> None:
    maps = {"01": _maps(tmp_path, 0.8), "02": {}, "03": _maps(tmp_path, 0.4)}
    rgb = _rgb(maps["01"])
    assert rgb is not None and rgb.shape == (6, 5, 3)
    np.testing.assert_allclose(rgb[..., 0], 0.8)  # |V1_x| · FA in red
    np.testing.assert_allclose(rgb[..., 1:], 0.0)
    uri = tensor_rgb_figure(maps)
    assert uri is not None and uri.startswith("data:image/svg+xml;base64,")
    from PIL import Image

    svg = base64.b64decode(uri.split(",", 1)[1]).decode()
    assert "visit 01" in svg and "visit 03" in svg and "visit 02" not in svg
    png = svg.split('href="data:image/png;base64,', 1)[1].split('"', 1)[0]
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"))
    assert img.shape[1] > img.shape[0]  # two panels side by side
    # each panel's pixels are the RGB map (x: red 0.8 · 255, then 0.4 · 255), nothing else
    left, right = img[:, : img.shape[1] // 2], img[:, img.shape[1] // 2 :]
    for half, fa in ((left, 0.8), (right, 0.4)):
        coloured = half[(half != 255).any(axis=-1)]
        assert len(coloured) > 100
        assert (coloured == [round(fa * 255), 0, 0]).all()
    assert tensor_rgb_figure({"01": {}}) is None
