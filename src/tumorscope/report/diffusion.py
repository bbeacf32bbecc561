"""The diffusion-tensor block of the subject report: the direction-encoded colour (RGB) map
``|V1| · FA`` of every visit that has a DTI (or tensor DKI) fit (Pajevic & Pierpaoli 1999,
doi:10.1002/(SICI)1522-2594(199909)42:3<526::AID-MRM15>3.0.CO;2-J): red left-right (x),
green anterior-posterior (y), blue inferior-superior (z), in the image's voxel axes (those of
the ``.bvec``)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..layout import VisitMap
from . import reads

__all__ = ["TENSOR_NOTE", "tensor_rgb_figure"]

#: Caption of the figure.
TENSOR_NOTE = (
    "Principal diffusion direction, colour-encoded and weighted by FA (red x, green y, blue z "
    "of the image axes), one panel per visit with a tensor fit (middle axial slice)."
)

_MODELS = ("dti", "dki_tensor")


def _rgb(vmaps: Mapping[str, VisitMap]) -> np.ndarray | None:
    """``(x, y, 3)`` RGB of the middle slice, or None without the tensor maps."""

    for model in _MODELS:
        names = [f"{model}.{k}" for k in ("FA", "V1_x", "V1_y", "V1_z")]
        if all(n in vmaps for n in names):
            fa, vx, vy, vz = (np.asarray(reads.volume(vmaps[n].path).data) for n in names)
            if fa.ndim == 2:
                fa, vx, vy, vz = (a[..., None] for a in (fa, vx, vy, vz))
            z = fa.shape[2] // 2
            v1 = np.stack([vx[:, :, z], vy[:, :, z], vz[:, :, z]], axis=-1)
            rgb = np.abs(np.nan_to_num(v1)) * np.clip(np.nan_to_num(fa[:, :, z]), 0, 1)[..., None]
            return np.clip(rgb, 0.0, 1.0)
    return None


def tensor_rgb_figure(maps: Mapping[str, Mapping[str, VisitMap]]) -> str | None:
    """A ``data:`` SVG figure (:func:`tumorscope.report.figures.image_panels`) with the RGB map of every visit that has one, or None if none has.

    Parameters
    ----------
    maps : mapping of visit id to mapping of map name to VisitMap
        As :func:`tumorscope.report.html.write_subject_report` receives them.
    """
    from .figures import image_panels

    panels = [
        (np.round(rgb * 255).astype(np.uint8), f"visit {v}")
        for v, vm in maps.items()
        if (rgb := _rgb(vm)) is not None
    ]
    if not panels:
        return None
    return image_panels(panels, w_in=2.4, h_in=2.6)
