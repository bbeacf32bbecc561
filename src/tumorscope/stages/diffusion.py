"""Diffusion stage: a DWI series (NIfTI + ``.bval``) → ADC, IVIM or DKI maps on disk.

Backs ``tumorscope fit dwi`` and the pipeline's ``fit_dwi`` step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, FitError
from ..models.base import get_model
from ..volume import Volume
from .fit import FitOutputs, fit_volume

__all__ = ["fit_dwi"]


def fit_dwi(
    series: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str],
    model: str = "ivim",
    mask: str | os.PathLike[str] | None = None,
    bval: str | os.PathLike[str] | None = None,
    prefix: str | None = None,
    options: Mapping[str, Any] | None = None,
    chunk_voxels: int | None = None,
) -> FitOutputs:
    """Fit a diffusion model to a DWI series file and write its maps.

    Parameters
    ----------
    series : path-like
        4-D DWI NIfTI (``.nii`` or ``.nii.gz``).
    out_dir : path-like, keyword-only
    model : {"adc", "ivim", "dki"}, keyword-only, default "ivim"
    mask : path-like, keyword-only, optional
        Mask NIfTI on the same grid.
    bval : path-like, keyword-only, optional
        b-value file (FSL/BIDS: whitespace-separated, s/mm²). Default: the ``.bval`` beside
        the series.
    prefix : str, keyword-only, optional
        Default: ``"<series stem>_<model>_"``.
    options : mapping, keyword-only, optional
        Keyword options of the model (``method``, ``b_threshold``, ``b_min`` ...).
    chunk_voxels : int, keyword-only

    Returns
    -------
    FitOutputs

    Raises
    ------
    DataError
        Missing or malformed series, b-value file or mask.
    FitError, ProtocolError
        Unknown model or option, b-values that disagree with the series.
    """
    from ..io.bids import read_bval, stem

    path = Path(series)
    cls = get_model(model)
    if getattr(cls, "measurement_name", "") != "b-values":
        raise FitError(f"model {model!r} is not a diffusion model", field="model")
    if bval is None:
        b = read_bval(path)
        bval_path = path.with_name(stem(path) + ".bval")
    else:
        bval_path = Path(bval)
        if not bval_path.is_file():
            raise DataError("b-value file not found", file=bval_path, field="bval")
        try:
            b = np.array(bval_path.read_text().split(), dtype=float)
        except ValueError as exc:
            raise DataError(
                f"b-values must be numbers: {exc}", file=bval_path, field="bval"
            ) from exc
    from ..protocol import DiffusionProtocol

    protocol = DiffusionProtocol(tuple(b), source=str(bval_path))
    try:
        m = cls(protocol, **dict(options or {}))  # type: ignore[call-arg]
    except TypeError as exc:
        raise FitError(f"bad option for model {model!r}: {exc}", field="options") from exc
    vol = Volume.from_nifti(path)
    if vol.data.ndim == 4 and vol.n_measurements != len(b):
        raise FitError(
            f"the series has {vol.n_measurements} volumes but {bval_path.name} lists "
            f"{len(b)} b-values",
            file=path,
            field="dim[4]",
        )
    files = {"series": str(path), "bval": str(bval_path)}
    if mask is not None:
        files["mask"] = str(mask)
    pre = prefix if prefix is not None else f"{stem(path)}_{cls.name}_"
    return fit_volume(
        m, vol, out_dir=out_dir, mask=mask, prefix=pre, input_files=files, chunk_voxels=chunk_voxels
    )
