"""Fit a model to a series within a mask, write NIfTI maps with sidecars.

:func:`fit_volume` is generic (any :class:`~tumorscope.models.base.Model` and a 4-D
:class:`~tumorscope.volume.Volume` whose last axis matches the model's protocol); the
diffusion, DCE, relaxometry and iron stages all use it.

Contract (``docs/architecture.md``): every input is checked before anything is written; a
problem raises an error naming the file and field; every output is written atomically
(temporary name, then rename) and a re-run replaces the previous outputs. Sidecars carry
``Units``, ``Description`` and ``Provenance`` (model, options, backend, package versions,
SHA-256 of the input files named relative to their study root, the mask's voxel count).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._warnings import capture_warnings
from ..errors import DataError, FitError, TumorscopeWarning
from ..files import file_sha256
from ..models.base import FitResult, Model
from ..volume import Volume

__all__ = ["FitOutputs", "fit_volume", "input_record", "load_mask", "provenance_path"]

#: The file that makes a folder a study root (``docs/study-format.md``).
_STUDY_MANIFEST = "study.yaml"


def provenance_path(path: str | os.PathLike[str]) -> str:
    """How provenance names an input file: relative to its study root, else as given.

    The study root is the nearest folder above the file holding ``study.yaml``; the name is
    then the POSIX path below it (``sub-001/ses-01/dwi/sub-001_ses-01_dwi.nii.gz``), as the
    pipeline's input hashes and ``series`` table name inputs. The same study therefore gives
    the same sidecars whatever folder it and the results are in, and no user's folder name
    is written. A file outside any study (a command's argument) is named as it was given.
    The SHA-256 beside the name (:func:`input_record`) is what identifies the content.
    """
    p = Path(path)
    full = p.resolve()
    for root in full.parents:
        if (root / _STUDY_MANIFEST).is_file():
            return full.relative_to(root).as_posix()
    return str(path)


def input_record(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{"path": provenance_path(path), "sha256": ...}``: an input file in provenance."""
    return {"path": provenance_path(path), "sha256": file_sha256(path)}


@dataclass
class FitOutputs:
    """What a fit stage wrote.

    Attributes
    ----------
    fit : FitResult
    files : dict of str to Path
        Image written per map name (plus ``status``, ``rss`` and ``<name>_stderr``).
    warnings : list of str
        The summary warning(s) of the fit, also issued as :class:`TumorscopeWarning`.
    """

    fit: FitResult
    files: dict[str, Path]
    warnings: list[str] = field(default_factory=list)


def load_mask(
    mask: Volume | np.ndarray | str | os.PathLike[str] | None, like: Volume
) -> np.ndarray | None:
    """A boolean mask on the grid of ``like``.

    Parameters
    ----------
    mask : Volume, ndarray, path or None
        A label or binary image; non-zero voxels are fitted. A path is read as NIfTI.
    like : Volume
        The series the mask belongs to.

    Raises
    ------
    DataError
        A mask of another shape or on another grid (the message names the mask file).
    """
    if mask is None:
        return None
    if isinstance(mask, str | os.PathLike):
        mask = Volume.from_nifti(mask, dtype=np.float32)
    if isinstance(mask, Volume):
        data = mask.data
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.shape != like.spatial_shape:
            raise DataError(
                f"mask shape {data.shape} does not match the series grid {like.spatial_shape}"
                f" ({like.source or 'series'})",
                file=mask.source,
                field="shape",
            )
        if not np.allclose(mask.affine, like.affine, atol=1e-3):
            raise DataError(
                f"mask affine differs from the series affine ({like.source or 'series'}); "
                "resample or register the mask first",
                file=mask.source,
                field="affine",
            )
        arr = data
        where = mask.source
    else:
        arr = np.asarray(mask)
        if arr.shape != like.spatial_shape:
            raise DataError(
                f"mask shape {arr.shape} does not match the series grid {like.spatial_shape}",
                file=like.source,
                field="mask",
            )
        where = None
    if not np.all(np.isfinite(arr)):
        raise DataError("mask holds NaN or infinite values", file=where, field="mask")
    return np.asarray(arr) != 0


def fit_volume(
    model: Model,
    volume: Volume,
    *,
    out_dir: str | os.PathLike[str],
    mask: Volume | np.ndarray | str | os.PathLike[str] | None = None,
    prefix: str = "",
    input_files: Mapping[str, str | os.PathLike[str]] | None = None,
    chunk_voxels: int | None = None,
    include_stderr: bool = True,
    voxel_inputs: Mapping[str, np.ndarray] | None = None,
    extra_provenance: Mapping[str, Any] | None = None,
) -> FitOutputs:
    """Fit ``model`` to a 4-D series within a mask and write every map as NIfTI + JSON.

    Parameters
    ----------
    model : Model
        Any registered model, built with the series' protocol.
    volume : Volume, shape (X, Y, Z, m)
        The series; ``m`` must equal ``model.n_measurements``.
    out_dir : path-like, keyword-only
        Output folder (created).
    mask : Volume, ndarray of shape (X, Y, Z), path or None, keyword-only
        Non-zero voxels are fitted; others get NaN and status 255.
    prefix : str, keyword-only
        File name prefix, e.g. ``"sub-001_ses-01_ivim_"``.
    input_files : mapping of role to path, keyword-only
        Files the inputs came from; their SHA-256 go into provenance, each named by
        :func:`provenance_path`. Default: the volume's and the mask's ``source``.
    chunk_voxels : int, keyword-only
    include_stderr : bool, keyword-only, default True
    voxel_inputs : mapping of str to ndarray, keyword-only, optional
        The model's per-voxel inputs (``{"b1": map}``; names in ``model.voxel_inputs``), each
        of shape (X, Y, Z), passed to ``model.fit``. Their files go in ``input_files``.
    extra_provenance : mapping, keyword-only, optional
        Added to the maps' provenance (e.g. the diffusion stage's ``region``).

    Returns
    -------
    FitOutputs

    Raises
    ------
    DataError
        A 3-D series, a mask on another grid.
    FitError
        A series whose 4th axis disagrees with the protocol.
    """
    if volume.data.ndim != 4:
        raise DataError(
            f"expected a 4-D series (x, y, z, {model.measurement_name}), got shape {volume.shape}",
            file=volume.source,
            field="shape",
        )
    if volume.n_measurements != model.n_measurements:
        raise FitError(
            f"the series has {volume.n_measurements} volumes but the protocol has "
            f"{model.n_measurements} {model.measurement_name}",
            file=volume.source,
            field="dim[4]",
        )
    mask_source = (
        mask.source
        if isinstance(mask, Volume)
        else (str(mask) if isinstance(mask, str | os.PathLike) else None)
    )
    m = load_mask(mask, volume)
    files: dict[str, str] = {}
    if input_files is not None:
        files = {k: str(v) for k, v in input_files.items()}
    else:
        if volume.source:
            files["series"] = volume.source
        if mask_source:
            files["mask"] = mask_source
    hashes: dict[str, Any] = {}
    for role, path in files.items():
        p = Path(path)
        if not p.is_file():
            raise DataError("input file not found", file=p, field=role)
        hashes[role] = input_record(p)
    with capture_warnings() as caught:
        fit = model.fit(volume.data, m, chunk_voxels=chunk_voxels, **dict(voxel_inputs or {}))
    messages = [str(w.message) for w in caught if issubclass(w.category, TumorscopeWarning)]
    for w in caught:  # re-issue every warning once, to the caller
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    fit.provenance["inputs"] = hashes
    fit.provenance["stage"] = "fit"
    fit.provenance.update(extra_provenance or {})
    written = fit.to_nifti(out_dir, volume.affine, prefix=prefix, include_stderr=include_stderr)
    return FitOutputs(fit, written, messages)
