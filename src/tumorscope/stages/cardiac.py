"""Cardiac mapping stage: MOLLI / ShMOLLI series → T1*, T1 (Look-Locker corrected) maps.

Backs ``tumorscope fit molli`` and the pipeline's ``fit_molli`` step. The series (roles
``t1_molli`` and ``t1_molli_post``, BIDS suffixes ``MOLLI`` and ``ce-gadolinium_MOLLI``) is a
4-D NIfTI of the inversion-recovery images with their effective inversion times in the
sidecar (``InversionTime``, s, one per image, any order). The fit is
:class:`~tumorscope.models.cardiac.MOLLIT1`; maps are written by
:func:`tumorscope.stages.fit.fit_volume` as ``<prefix>molli_<param>.nii.gz`` (``A``,
``T1star``, ``B_over_A``, ``T1``, ``R1`` + status, rss, standard errors).

``region="body"`` (the pipeline's default, run option ``relax_region``) fits the MOLLI and
T2-prep series only where there is signal, as the relaxometry stage does
(:func:`tumorscope.stages.relaxometry.body_mask`); elsewhere the maps are NaN (status 255 for
MOLLI) and the rule is in the provenance.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from ..models.cardiac import MOLLIT1
from ..protocol import InversionRecoveryProtocol
from .base import MapFile, SeriesInput, StageResult
from .relaxometry import BODY_RULE, MaskLike, RelaxometryOptions, _fit_series, body_mask

__all__ = [
    "CARDIAC_ROLES",
    "MOLLI_ROLES",
    "fit_cardiac_visit",
    "fit_molli_series",
    "fit_t2prep_series",
]

#: Roles of the study manifest fitted by :func:`fit_molli_series` in the pipeline.
MOLLI_ROLES: tuple[str, ...] = ("t1_molli", "t1_molli_post")

#: Every role of the pipeline's ``fit_cardiac`` step.
CARDIAC_ROLES: tuple[str, ...] = (*MOLLI_ROLES, "t2_prep")


def fit_molli_series(
    series: SeriesInput,
    *,
    out_dir: str | os.PathLike[str],
    prefix: str | None = None,
    mask: MaskLike = None,
    chunk_voxels: int | None = None,
    region: str = "all",
) -> StageResult:
    """Fit MOLLI T1 to one series (default prefix ``"<series stem>_molli_"``), in ``mask``
    or else the ``region`` (``"all"`` or ``"body"``, :class:`RelaxometryOptions`).

    Raises
    ------
    DataError
        A series without inversion times (names the series), before anything is written.
    """
    from ..io.bids import stem

    proto = series.protocol
    if not isinstance(proto, InversionRecoveryProtocol):
        raise DataError(
            "MOLLI series has no inversion times (InversionTime in its sidecar)",
            file=series.label,
            field="InversionTime",
        )
    model = MOLLIT1(proto)
    pre = prefix if prefix is not None else f"{stem(Path(series.path))}_{model.name}_"
    return _fit_series(
        model,
        series,
        series.load(),
        out_dir=out_dir,
        prefix=pre,
        mask=mask,
        opts=RelaxometryOptions(chunk_voxels=chunk_voxels, region=region),
    )


def fit_t2prep_series(
    series: SeriesInput,
    *,
    out_dir: str | os.PathLike[str],
    prefix: str = "",
    region: str = "all",
) -> StageResult:
    """T2 (ms) and M0 of a T2-prepared bSSFP series (``T2PrepDuration`` in s, sidecar) as
    ``<prefix>t2prep_T2.nii.gz`` / ``_M0`` (:func:`tumorscope.models.cardiac.fit_t2prep`),
    over the whole volume or (``region="body"``) its voxels with signal."""
    import numpy as np

    from .. import __version__
    from ..files import file_sha256, write_map
    from ..models.cardiac import fit_t2prep

    raw = series.need("T2PrepDuration")
    if not isinstance(raw, list) or not all(isinstance(v, int | float) for v in raw):
        raise DataError(
            f"expected a list of durations in s, got {raw!r}",
            file=series.label,
            field="T2PrepDuration",
        )
    vol = series.load()
    data = np.asarray(vol.data, dtype=float)
    if data.ndim != 4:
        raise DataError(
            f"expected a 4-D series, got shape {data.shape}",
            file=series.label,
            field="T2PrepDuration",
        )
    RelaxometryOptions(region=region)  # checks the name
    mask = body_mask(vol) if region == "body" else None
    try:
        res = fit_t2prep(data, [1e3 * float(v) for v in raw], mask=mask)
    except DataError as exc:
        raise DataError(exc.message, file=series.label, field="T2PrepDuration") from exc
    prov: dict[str, object] = {
        "model": "t2prep",
        "prep_times_ms": [1e3 * float(v) for v in raw],
        "inputs": {k: file_sha256(v) for k, v in series.files.items()},
        "tumorscope_version": __version__,
    }
    if mask is not None:
        prov["region"] = {"name": "body", "rule": BODY_RULE, "voxels": int(mask.sum())}
    out = StageResult()
    for name, unit in (("T2", "ms"), ("M0", "a.u.")):
        path = Path(out_dir) / f"{prefix}t2prep_{name}.nii.gz"
        out.files += write_map(
            path,
            res[name],
            vol.affine,
            units=unit,
            description=f"{name}, T2-prepared bSSFP",
            provenance=prov,
            dtype=np.float32,
        )
        out.maps.append(MapFile("t2prep", name, path, series=series.role))
    return out


def fit_cardiac_visit(
    series: dict[str, SeriesInput],
    *,
    out_dir: str | os.PathLike[str],
    prefix: str = "",
    region: str = "all",
) -> StageResult:
    """Every cardiac mapping series of a visit: ``t1_molli`` (maps ``molli.*``),
    ``t1_molli_post`` (``molli_post.*``), ``t2_prep`` (``t2prep.*``), each fitted in
    ``region`` (``"all"`` or ``"body"``; the pipeline passes the run option
    ``relax_region``)."""
    import dataclasses

    out = StageResult()
    for role, model in (("t1_molli", "molli"), ("t1_molli_post", "molli_post")):
        if role in series:
            res = fit_molli_series(
                series[role], out_dir=out_dir, prefix=f"{prefix}{model}_", region=region
            )
            res.maps = [dataclasses.replace(m, model=model) for m in res.maps]
            out.extend(res)
    if "t2_prep" in series:
        out.extend(
            fit_t2prep_series(series["t2_prep"], out_dir=out_dir, prefix=prefix, region=region)
        )
    return out
