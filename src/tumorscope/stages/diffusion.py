"""Diffusion stage: a DWI series (with its :class:`~tumorscope.protocol.DiffusionProtocol`) →
ADC, IVIM and DKI maps on disk.

* :func:`fit_dwi_series`: the stage (a :class:`~tumorscope.stages.base.SeriesInput`, the
  models to fit, a file name prefix, :class:`DWIOptions`) → :class:`StageResult`. The
  pipeline's ``fit_dwi`` step calls it.
* :func:`fit_dwi_model`: one model on one series → :class:`~tumorscope.stages.fit.FitOutputs`
  (what :func:`fit_dwi_series` runs per model).
* :func:`fit_dwi`: the same from file paths (series, ``.bval``, mask): backs
  ``tumorscope fit dwi``.

Files: ``<prefix><model>_<map>.nii.gz`` (+ ``_stderr``, ``status``, ``rss``), each with its
JSON sidecar (units, provenance with the SHA-256 of the series, its ``.bval`` and the mask).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FitError
from ..files import sidecar_of
from ..models.base import Model, get_model
from ..models.diffusion import DiffusionModel
from ..protocol import DiffusionProtocol
from ..volume import Volume
from .base import (
    BODY_FRACTION,
    MapFile,
    SeriesInput,
    StageResult,
    check_region,
    read_series,
    signal_mask,
)
from .fit import FitOutputs, fit_volume

__all__ = ["DWIOptions", "fit_dwi", "fit_dwi_model", "fit_dwi_series"]

MaskLike = Volume | np.ndarray | str | os.PathLike[str] | None

#: Files of a series whose SHA-256 go into the maps' provenance.
_HASHED = ("series", "bval", "bvec")
#: Models that need gradient directions (``.bvec``).
TENSOR_MODELS = ("dti", "dki_tensor")


@dataclass(frozen=True)
class DWIOptions:
    """Options of the diffusion stage.

    Attributes
    ----------
    model_options : mapping of str to mapping
        Keyword options per model registry name, e.g.
        ``{"ivim": {"method": "bayes"}, "adc": {"b_min": 200}}`` (see :class:`ADC`,
        :class:`IVIM`, :class:`DKI`). Models not named get their defaults.
    region : {"all", "body"}, default "all"
        Voxels fitted when no mask is given: ``"all"`` the whole volume; ``"body"`` the
        voxels with signal, :func:`body_mask` (the background is noise: fitting it costs as
        much as the body, IVIM's nonlinear fit most, and its maps mean nothing; outside, the
        maps are NaN with status 255, not fitted). A given mask replaces the region. The
        pipeline's ``fit_dwi`` step uses ``"body"`` (run option ``dwi_region``).
    """

    model_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    region: str = "all"

    def __post_init__(self) -> None:
        check_region(self.region)

    def for_model(self, name: str) -> dict[str, Any]:
        """The keyword options of model ``name`` (a copy; empty if none)."""
        return dict(self.model_options.get(name.lower(), {}))


def body_mask(volume: Volume, bvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """The voxels with signal: mean over the lowest-b volumes at least
    :data:`BODY_FRACTION` (10 %) of its 99th percentile over the volume (NaN/inf: out).

    The same rule as the DCE stage's baseline signal mask. Lesions, cysts and necrosis are
    bright at low b (T2-weighted); what falls out is air, lung, cortical bone and the
    background, whose diffusion maps are noise.
    """
    b = np.asarray(bvalues, dtype=float)
    idx = np.flatnonzero(b == b.min())
    return signal_mask(np.mean(volume.data[..., idx], axis=-1, dtype=np.float64))


def _diffusion_model(name: str) -> type[DiffusionModel]:
    cls = get_model(name)
    if not issubclass(cls, DiffusionModel):
        raise FitError(f"model {name!r} is not a diffusion model", field="model")
    return cls


def _with_bvecs(series: SeriesInput, protocol: DiffusionProtocol) -> DiffusionProtocol:
    """The protocol with the gradient directions of the series' ``.bvec`` (read with
    :func:`tumorscope.io.bids.read_bvec`); unchanged if it has them or there is no file."""
    import dataclasses

    from ..io.bids import read_bvec

    if protocol.bvecs is not None:
        return protocol
    bvec = series.files.get("bvec")
    vecs = read_bvec(bvec if bvec is not None else series.path)
    if vecs is None:
        return protocol
    bvecs = tuple((float(v[0]), float(v[1]), float(v[2])) for v in vecs)
    return dataclasses.replace(protocol, bvecs=bvecs)


def tensor_ready(series: SeriesInput, name: str) -> str | None:
    """Why the tensor model ``name`` cannot be fitted to the series (no ``.bvec``, too few
    directions or shells), or None if it can."""
    from ..errors import ProtocolError

    protocol = series.protocol
    if not isinstance(protocol, DiffusionProtocol):
        return f"{series.label or series.path} has no diffusion protocol"
    try:
        _diffusion_model(name).from_protocol(_with_bvecs(series, protocol))
    except ProtocolError as exc:
        return str(exc)
    return None


def _model_for(series: SeriesInput, name: str, options: Mapping[str, Any] | None) -> Model:
    """The diffusion model ``name`` for the series' protocol, with keyword ``options``."""
    cls = _diffusion_model(name)
    protocol = series.protocol
    if not isinstance(protocol, DiffusionProtocol):
        raise FitError(
            f"a diffusion model needs a DiffusionProtocol, {series.label or series.path} has "
            f"{type(protocol).__name__}",
            file=series.path,
            field="protocol",
        )
    if cls.name in TENSOR_MODELS:
        protocol = _with_bvecs(series, protocol)
    try:
        return cls.from_protocol(protocol, **dict(options or {}))
    except TypeError as exc:
        raise FitError(f"bad option for model {name!r}: {exc}", field="options") from exc


def _fit_and_write(
    series: SeriesInput,
    model: Model,
    volume: Volume,
    *,
    out_dir: str | os.PathLike[str],
    prefix: str,
    mask: MaskLike,
    chunk_voxels: int | None,
    extra_provenance: Mapping[str, Any] | None = None,
) -> FitOutputs:
    files = {k: str(series.files[k]) for k in _HASHED if k in series.files}
    if isinstance(mask, str | os.PathLike):
        files["mask"] = str(mask)
    return fit_volume(
        model,
        volume,
        out_dir=out_dir,
        mask=mask,
        prefix=prefix,
        input_files=files,
        chunk_voxels=chunk_voxels,
        extra_provenance=extra_provenance,
    )


def _load(series: SeriesInput, n_b: int) -> Volume:
    """The series' image, checked against the number of b-values."""
    volume = series.load()
    if volume.data.ndim == 4 and volume.n_measurements != n_b:
        bval = series.files.get("bval")
        raise FitError(
            f"the series has {volume.n_measurements} volumes but "
            f"{bval.name if bval is not None else 'the protocol'} lists {n_b} b-values",
            file=series.path,
            field="dim[4]",
        )
    return volume


def fit_dwi_model(
    series: SeriesInput,
    model: str,
    *,
    out_dir: str | os.PathLike[str],
    prefix: str,
    options: Mapping[str, Any] | None = None,
    mask: MaskLike = None,
    chunk_voxels: int | None = None,
    region: str = "all",
) -> FitOutputs:
    """Fit one diffusion model to a series and write its maps ``<prefix><map>.nii.gz``.

    Parameters
    ----------
    series : SeriesInput
        A DWI series whose ``protocol`` is a :class:`DiffusionProtocol`.
    model : {"adc", "ivim", "dki"}
        Registry name.
    out_dir : path-like, keyword-only
    prefix : str, keyword-only
        The whole file name prefix (e.g. ``"sub-001_ses-01_ivim_"``).
    options : mapping, keyword-only, optional
        Keyword options of the model (``method``, ``b_threshold``, ``b_min`` …).
    mask : Volume, ndarray, path or None, keyword-only
        Non-zero voxels are fitted (on the series grid); a path is hashed into provenance.
    chunk_voxels : int, keyword-only, optional
        Voxels per block (bounds memory; the maps do not depend on it).
    region : {"all", "body"}, keyword-only, default "all"
        Voxels fitted when no mask is given (:attr:`DWIOptions.region`).

    Returns
    -------
    FitOutputs

    Raises
    ------
    FitError, ProtocolError
        Not a diffusion model or protocol, a bad option, an unknown region, a series whose
        volumes disagree with the b-values.
    DataError
        An unreadable series, a mask on another grid.
    """
    DWIOptions(region=region)  # checks the name
    m = _model_for(series, model, options)
    volume = _load(series, m.n_measurements)
    mask, extra = _region_mask(volume, m, mask, region)
    return _fit_and_write(
        series,
        m,
        volume,
        out_dir=out_dir,
        prefix=prefix,
        mask=mask,
        chunk_voxels=chunk_voxels,
        extra_provenance=extra,
    )


def _region_mask(
    volume: Volume, model: Model, mask: MaskLike, region: str
) -> tuple[MaskLike, dict[str, Any]]:
    """The mask to fit with (``mask`` if given, else the body for ``region="body"``) and the
    provenance entry that records the region."""
    if mask is not None or region != "body":
        return mask, {}
    assert isinstance(model, DiffusionModel)
    body = body_mask(volume, model.b)
    rule = f"mean signal at the lowest b >= {BODY_FRACTION:g} x its 99th percentile"
    return body, {"region": {"name": "body", "rule": rule, "voxels": int(body.sum())}}


def _stage_result(outputs: FitOutputs, model: str, role: str) -> StageResult:
    """The maps, files (images then sidecars, as written) and warnings of one model's fit."""
    status = outputs.files.get("status")
    maps = [
        MapFile(model, param, outputs.files[param], status, role, outputs.fit)
        for param in outputs.fit.maps
    ]
    files: list[Path] = []
    for path in outputs.files.values():
        files += [path, sidecar_of(path)]
    return StageResult(maps=maps, files=files, warnings=list(outputs.warnings))


def fit_dwi_series(
    series: SeriesInput,
    *,
    out_dir: str | os.PathLike[str],
    models: Sequence[str] = ("adc", "ivim"),
    prefix: str | None = None,
    options: DWIOptions | None = None,
    mask: MaskLike = None,
    chunk_voxels: int | None = None,
) -> StageResult:
    """Fit diffusion models to a DWI series and write every map with its sidecar.

    Parameters
    ----------
    series : SeriesInput
        The series with its :class:`DiffusionProtocol` (from a study:
        ``SeriesInput.of(visit.series["dwi"])``; from a file: :func:`read_series`).
    out_dir : path-like, keyword-only
        Output folder (created).
    models : sequence of str, keyword-only, default ("adc", "ivim")
        Registry names of the diffusion models, fitted in this order. The tensor models
        (``"dti"``, ``"dki_tensor"``) need the series' ``.bvec`` with enough directions (6;
        15 and two shells); on a series without them they are skipped with a warning (a
        study mixes protocols), not an error.
    prefix : str, keyword-only, optional
        File name prefix of the series; each model's files are
        ``<prefix><model>_<map>.nii.gz``. Default: ``"<series file stem>_"``. The pipeline
        passes ``"sub-<subject>_ses-<visit>_"``.
    options : DWIOptions, keyword-only, optional
        Per-model keyword options.
    mask : Volume, ndarray, path or None, keyword-only
        Voxels to fit (default: all).
    chunk_voxels : int, keyword-only, optional

    Returns
    -------
    StageResult
        ``maps``: a :class:`MapFile` (``model`` = registry name, ``parameter`` = map name,
        its status map, ``series`` = the series' role, the fit) for every map of every model;
        ``files``: every image and sidecar written (maps, standard errors, status, RSS);
        ``rows``: none; ``warnings``: the fits' summary warnings.

    Raises
    ------
    FitError, ProtocolError, DataError
        As :func:`fit_dwi_model`; every model and option is checked before the first fit.
    """
    from ..io.bids import stem

    opts = options if options is not None else DWIOptions()
    names = [_diffusion_model(name).name for name in models]
    unknown = sorted(set(opts.model_options) - {n.lower() for n in names})
    if unknown:
        raise FitError(
            f"options for model(s) {unknown} that are not fitted ({names})", field="options"
        )
    pre = prefix if prefix is not None else f"{stem(series.path)}_"
    result = StageResult()
    skipped = {n: tensor_ready(series, n) for n in names if n in TENSOR_MODELS}
    for name, why in skipped.items():
        if why is not None:
            result.warnings.append(f"{name}: not fitted to {series.path.name}: {why}")
    names = [n for n in names if skipped.get(n) is None]
    built = [(name, _model_for(series, name, opts.for_model(name))) for name in names]
    if not built:
        return result
    volume = _load(series, built[0][1].n_measurements)
    # one mask for every model of the series
    region, extra = _region_mask(volume, built[0][1], mask, opts.region)
    for name, model in built:
        outputs = _fit_and_write(
            series,
            model,
            volume,
            out_dir=out_dir,
            prefix=f"{pre}{name}_",
            mask=region,
            chunk_voxels=chunk_voxels,
            extra_provenance=extra,
        )
        result.extend(_stage_result(outputs, name, series.role))
    return result


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
    region: str = "all",
) -> FitOutputs:
    """Fit a diffusion model to a DWI series file and write its maps (``tumorscope fit dwi``).

    The file-path form of :func:`fit_dwi_model` (same files, same bytes): the series is read
    with :func:`~tumorscope.stages.base.read_series`.

    Parameters
    ----------
    series : path-like
        4-D DWI NIfTI (``.nii`` or ``.nii.gz``) with its ``.bval`` beside it.
    model : {"adc", "ivim", "dki"}, keyword-only, default "ivim"
    bval : path-like, keyword-only, optional
        Another b-value file (FSL/BIDS: whitespace-separated, s/mm²).
    prefix : str, keyword-only, optional
        Default: ``"<series stem>_<model>_"`` (as :func:`fit_dwi_series`).
    out_dir, mask, options, chunk_voxels, region
        As :func:`fit_dwi_model` (``mask``: a NIfTI path).

    Returns
    -------
    FitOutputs
        The fit and the image written per map name (plus ``status``, ``rss``, stderr).

    Raises
    ------
    DataError
        Missing or malformed series, b-value file or mask.
    FitError, ProtocolError
        Unknown model or option, b-values that disagree with the series.
    """
    from ..io.bids import read_bval, stem

    path = Path(series)
    cls = _diffusion_model(model)
    if bval is None:
        dwi = read_series(path, "dwi")
    else:
        bval_path = Path(bval)
        b = read_bval(bval_path)
        protocol = DiffusionProtocol(tuple(b), source=str(bval_path))
        dwi = read_series(path, "dwi", protocol=protocol, extra_files={"bval": bval_path})
    pre = prefix if prefix is not None else f"{stem(path)}_{cls.name}_"
    return fit_dwi_model(
        dwi,
        cls.name,
        out_dir=out_dir,
        prefix=pre,
        options=options,
        mask=mask,
        chunk_voxels=chunk_voxels,
        region=region,
    )
