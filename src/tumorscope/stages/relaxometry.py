"""Relaxometry stage: T2*, T2, inversion recovery and VFA T1 series → maps on disk.

Backs the pipeline's ``fit_relax`` step (:func:`fit_relaxometry`: every relaxometry series of
a visit) and ``tumorscope fit t1 / t2 / t2star`` (:func:`fit_relaxometry_series`: one series
given on the command line), so both write the same files under the same names.

A series' role says which model fits it (:func:`relaxometry_model`): ``t2star`` (MEGRE) →
:class:`~tumorscope.models.relaxometry.T2Star`, ``t2`` (MESE) →
:class:`~tumorscope.models.relaxometry.T2` (or ``T2Offset``), ``t1_ir`` (IRT1) →
:class:`~tumorscope.models.relaxometry.IRT1`, ``t1_vfa`` (VFA) →
:class:`~tumorscope.models.relaxometry.VFAT1`. The model is built from the series' protocol and
the typed :class:`RelaxometryOptions`; per-voxel input maps (a B1 map for VFA, a noise level
map for T2*) are read and checked on the series grid before anything is fitted or written.

Maps are written by :func:`tumorscope.stages.fit.fit_volume` as ``<prefix><param>.nii.gz`` +
sidecar, plus ``status``, ``rss`` and ``<param>_stderr``; :func:`fit_relaxometry` uses the
prefix ``<prefix><model>_``, e.g. ``sub-001_ses-01_t2star_R2star.nii.gz``.

Where: :attr:`RelaxometryOptions.region` ``"body"`` fits only the voxels with signal
(:func:`body_mask`, the diffusion stage's rule on the series' strongest volume; the pipeline's
default, run option ``relax_region``), ``"all"`` the whole volume. A Rician noise level that
is not given is estimated over the whole volume either way (its background holds the noise),
so a voxel's fit does not depend on the region.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._warnings import capture_warnings
from ..errors import DataError, FitError
from ..files import sidecar_of
from ..models.base import Model
from ..models.relaxometry import IRT1, T2, VFAT1, T2Offset, T2Star
from ..volume import Volume
from .base import (
    BODY_FRACTION,
    MapFile,
    SeriesInput,
    StageResult,
    check_region,
    signal_mask,
)
from .fit import fit_volume

__all__ = [
    "RELAXOMETRY_ROLES",
    "STAGE_ROLES",
    "RelaxometryOptions",
    "body_mask",
    "fit_relaxometry",
    "fit_relaxometry_series",
    "relaxometry_model",
]

#: Roles of the study manifest that :func:`fit_relaxometry` fits by default (the pipeline's
#: ``fit_relax`` step), with the model class used for each.
RELAXOMETRY_ROLES: dict[str, str] = {"t2star": "T2Star", "t2": "T2", "t1_ir": "IRT1"}

#: Every role the stage can fit: those above and ``t1_vfa`` (in the pipeline the DCE stage fits
#: VFA T1, which it needs).
STAGE_ROLES: tuple[str, ...] = (*RELAXOMETRY_ROLES, "t1_vfa")

#: How messages name the per-voxel input maps.
_MAP_LABELS = {"b1": "B1 map", "noise_sigma_map": "noise map"}

#: The rule, as recorded in the maps' provenance.
BODY_RULE = f"largest signal over the volumes >= {BODY_FRACTION:g} x its 99th percentile"

MaskLike = Volume | np.ndarray | str | os.PathLike[str] | None


@dataclass(frozen=True)
class RelaxometryOptions:
    """Options of the relaxometry stage; the defaults are the pipeline's.

    Attributes
    ----------
    t2star_floor : {"rician", "none"}
        Noise floor model of T2* (:class:`~tumorscope.models.relaxometry.T2Star`).
    t2star_noise_sigma : float, optional
        Rician noise level of the T2* series (signal units); estimated from the data when None.
    t2_floor : {"none", "offset", "rician"}
        T2 model: plain exponential, with an offset (``T2Offset``) or the Rician floor.
    t2_noise_sigma : float, optional
        Rician noise level of the T2 series (``t2_floor="rician"`` only).
    vfa_method : {"nonlinear", "despot1", "two_point"}
        VFA T1 estimator (:class:`~tumorscope.models.relaxometry.VFAT1`).
    chunk_voxels : int, optional
        Voxels per block of the fits (memory bound; the results do not depend on it).
    region : {"all", "body"}, default "all"
        Voxels fitted when no mask is given: ``"all"`` the whole volume; ``"body"`` the
        voxels with signal, :func:`body_mask` of each series (the background is noise:
        fitting it costs as much as the body and its maps mean nothing; outside, the maps
        are NaN with status 255, not fitted, and the rule is in the maps' provenance). A
        given mask replaces the region. The pipeline's ``fit_relax`` step uses ``"body"``
        (run option ``relax_region``).
    """

    t2star_floor: Literal["rician", "none"] = "rician"
    t2star_noise_sigma: float | None = None
    t2_floor: Literal["none", "offset", "rician"] = "none"
    t2_noise_sigma: float | None = None
    vfa_method: Literal["nonlinear", "despot1", "two_point"] = "nonlinear"
    chunk_voxels: int | None = None
    region: str = "all"

    def __post_init__(self) -> None:
        check_region(self.region)


def body_mask(volume: Volume) -> np.ndarray:
    """The voxels with signal: the largest magnitude over the series' volumes at least
    :data:`BODY_FRACTION` (10 %) of its 99th percentile over the volume (NaN/inf: out).

    The diffusion stage's rule (:func:`tumorscope.stages.diffusion.body_mask`, on the lowest
    b) on the series' strongest volume of each voxel: the first echo of a decay; for
    inversion recovery and VFA the inversion time or flip angle of the largest signal depends
    on the voxel's T1 (a tissue near its null point at one TI is bright at the others). What
    falls out is air, lung, cortical bone and the background, whose maps are noise.
    """
    data = np.asarray(volume.data)
    if data.ndim == 3:
        data = data[..., np.newaxis]
    # one volume at a time (no 4-D temporary), in the data's own type (|x| and max are exact);
    # np.maximum propagates NaN, and |±inf| is inf: a voxel with a non-finite volume is out
    peak = np.abs(data[..., 0])
    for k in range(1, data.shape[-1]):
        np.maximum(peak, np.abs(data[..., k]), out=peak)
    return signal_mask(peak)


def relaxometry_model(series: SeriesInput, options: RelaxometryOptions | None = None) -> Model:
    """The model that fits a relaxometry series, built from its protocol and the options.

    Raises
    ------
    FitError
        A role the stage does not fit, an option the model refuses.
    DataError
        A series without a protocol (names the series).
    ProtocolError
        A protocol of the wrong kind for the role.
    """
    opts = options or RelaxometryOptions()
    role = series.role
    if role not in STAGE_ROLES:
        raise FitError(
            f"unknown relaxometry role {role!r}; expected one of {sorted(STAGE_ROLES)}",
            field="roles",
        )
    proto = series.protocol
    if proto is None:
        raise DataError("series has no acquisition protocol", file=series.label, field=role)
    if role == "t2star":
        return T2Star.from_protocol(
            proto, noise_sigma=opts.t2star_noise_sigma, floor=opts.t2star_floor
        )
    if role == "t2":
        if opts.t2_floor != "offset":
            return T2.from_protocol(proto, floor=opts.t2_floor, noise_sigma=opts.t2_noise_sigma)
        if opts.t2_noise_sigma is not None:
            raise FitError(
                "noise_sigma is only used with floor='rician', not 'offset'",
                field="t2_noise_sigma",
            )
        return T2Offset.from_protocol(proto)
    if role == "t1_ir":
        return IRT1.from_protocol(proto)
    return VFAT1.from_protocol(proto, method=opts.vfa_method)


def fit_relaxometry(
    series: Mapping[str, SeriesInput],
    *,
    out_dir: str | os.PathLike[str],
    prefix: str,
    options: RelaxometryOptions | None = None,
    roles: Sequence[str] | None = None,
    mask: MaskLike = None,
) -> StageResult:
    """Fit every relaxometry series of a visit and write its maps.

    Every role's model is built (protocols checked) and every image read before anything is
    fitted or written.

    Parameters
    ----------
    series : mapping of role to SeriesInput
        The visit's series (other roles are ignored), e.g.
        ``{r: SeriesInput.of(s) for r, s in visit.series.items()}``.
    out_dir : path-like, keyword-only
    prefix : str, keyword-only
        File name prefix of the visit, e.g. ``"sub-001_ses-01_"``; each model's maps get
        ``<prefix><model>_`` (``sub-001_ses-01_t2star_R2star.nii.gz``).
    options : RelaxometryOptions, keyword-only, optional
    roles : sequence of str, keyword-only, optional
        Roles to fit (of :data:`STAGE_ROLES`); default every role of
        :data:`RELAXOMETRY_ROLES` present. A role asked for but absent is an error.
    mask : Volume, ndarray, path or None, keyword-only
        Voxels to fit; replaces ``options.region`` (default: the region, the whole volume
        unless ``options.region="body"``; a voxel's fit does not depend on the others).

    Returns
    -------
    StageResult
        ``maps``: one :class:`MapFile` per fitted and derived map of every model
        (``model`` = the model name, ``series`` = the role, ``status`` = its status map);
        ``files``: every image and sidecar written, in order; ``warnings``: the fits' summary
        warnings (not re-issued).

    Raises
    ------
    FitError
        An unknown role.
    DataError, ProtocolError
        A role asked for but absent, a series whose protocol or shape is wrong.
    """
    opts = options or RelaxometryOptions()
    if roles is None:
        wanted = [r for r in RELAXOMETRY_ROLES if r in series]
    else:
        wanted = list(roles)
        for r in wanted:
            if r not in STAGE_ROLES:
                raise FitError(
                    f"unknown relaxometry role {r!r}; expected one of {sorted(STAGE_ROLES)}",
                    field="roles",
                )
            if r not in series:
                raise DataError(f"no {r!r} series (found {sorted(series)})", field=r)
    jobs = []
    for role in wanted:
        s = series[role]
        if s.role != role:
            s = dataclasses.replace(s, role=role)
        jobs.append((s, relaxometry_model(s, opts), s.load()))
    out = StageResult()
    for s, model, vol in jobs:
        out.extend(
            _fit_series(
                model,
                s,
                vol,
                out_dir=out_dir,
                prefix=f"{prefix}{model.name}_",
                mask=mask,
                opts=opts,
            )
        )
    return out


def fit_relaxometry_series(
    series: SeriesInput,
    *,
    out_dir: str | os.PathLike[str],
    prefix: str | None = None,
    options: RelaxometryOptions | None = None,
    mask: MaskLike = None,
    voxel_maps: Mapping[str, str | os.PathLike[str]] | None = None,
) -> StageResult:
    """Fit one relaxometry series (its role says which model) and write its maps.

    Parameters
    ----------
    series : SeriesInput
        Role ``t2star``, ``t2``, ``t1_ir`` or ``t1_vfa`` (e.g.
        ``read_series(path, "MEGRE", role="t2star")``).
    out_dir : path-like, keyword-only
    prefix : str, keyword-only, optional
        The whole file name prefix (``<prefix><param>.nii.gz``). Default
        ``"<series stem>_<model>_"``.
    options : RelaxometryOptions, keyword-only, optional
    mask : Volume, ndarray, path or None, keyword-only
        Mask on the series grid (replaces ``options.region``); a path is hashed into the
        provenance.
    voxel_maps : mapping of str to path, keyword-only, optional
        Per-voxel input maps of the model by name (``{"b1": path}`` for VFA,
        ``{"noise_sigma_map": path}`` for T2*), NIfTI on the series grid; hashed into the
        provenance.

    Returns
    -------
    StageResult
        As :func:`fit_relaxometry`, for this series.

    Raises
    ------
    DataError
        A map not on the series grid, a missing file (nothing is written).
    FitError, ProtocolError
        As :func:`relaxometry_model`; a per-voxel input the model does not take.
    """
    from ..io.bids import stem

    opts = options or RelaxometryOptions()
    model = relaxometry_model(series, opts)
    unknown = [k for k in (voxel_maps or {}) if k not in model.voxel_inputs]
    if unknown:
        raise FitError(
            f"{type(model).__name__} takes no per-voxel map {unknown[0]!r}", field=unknown[0]
        )
    pre = prefix if prefix is not None else f"{stem(series.path)}_{model.name}_"
    return _fit_series(
        model,
        series,
        series.load(),
        out_dir=out_dir,
        prefix=pre,
        mask=mask,
        opts=opts,
        voxel_maps=voxel_maps,
    )


def _voxel_map(path: str | os.PathLike[str], like: Volume, label: str) -> np.ndarray:
    """A per-voxel input map on the grid of ``like`` (float64, spatial shape)."""
    vol = Volume.from_nifti(path)
    if vol.spatial_shape != like.spatial_shape or not like.same_grid(vol):
        raise DataError(
            f"{label} grid {vol.spatial_shape} differs from the series grid "
            f"{like.spatial_shape}; resample it first",
            file=path,
            field="affine",
        )
    return np.asarray(vol.data, dtype=float).reshape(like.spatial_shape)


def _fit_series(
    model: Model,
    series: SeriesInput,
    vol: Volume,
    *,
    out_dir: str | os.PathLike[str],
    prefix: str,
    mask: MaskLike,
    opts: RelaxometryOptions,
    voxel_maps: Mapping[str, str | os.PathLike[str]] | None = None,
) -> StageResult:
    """Fit ``model`` to one series with :func:`fit_volume` and describe what it wrote."""
    files: dict[str, Path] = dict(series.files)
    inputs: dict[str, np.ndarray] = {}
    for name, path in (voxel_maps or {}).items():
        inputs[name] = _voxel_map(path, vol, _MAP_LABELS.get(name, name))
        files[name] = Path(path)
    if isinstance(mask, str | os.PathLike):
        files["mask"] = Path(mask)
    extra: dict[str, Any] = {}
    if mask is None and opts.region == "body":
        mask = body_mask(vol)
        extra["region"] = {"name": "body", "rule": BODY_RULE, "voxels": int(mask.sum())}
        if isinstance(model, T2 | T2Star) and "noise_sigma_map" not in inputs:
            # the noise level from the whole volume, as without a region: the background
            # holds the noise, and a voxel's fit does not depend on the region
            model = model.with_noise_estimated(vol.data)
    with capture_warnings():
        res = fit_volume(
            model,
            vol,
            out_dir=out_dir,
            mask=mask,
            prefix=prefix,
            input_files=files,
            chunk_voxels=opts.chunk_voxels,
            voxel_inputs=inputs,
            extra_provenance=extra,
        )
    status = res.files.get("status")
    maps = [
        MapFile(model.name, param, res.files[param], status, series.role, res.fit)
        for param in res.fit.maps
        if param in res.files
    ]
    written = [f for path in res.files.values() for f in (Path(path), sidecar_of(path))]
    return StageResult(maps=maps, files=written, warnings=list(res.warnings))
