"""Cardiac mapping stage: MOLLI / ShMOLLI series → T1*, T1 (Look-Locker corrected) maps.

Backs ``tumorscope fit molli`` and the pipeline's ``fit_molli`` step. The series (roles
``t1_molli`` and ``t1_molli_post``, BIDS suffixes ``MOLLI`` and ``ce-gadolinium_MOLLI``) is a
4-D NIfTI of the inversion-recovery images with their effective inversion times in the
sidecar (``InversionTime``, s, one per image, any order). The fit is
:class:`~tumorscope.models.cardiac.MOLLIT1`; maps are written by
:func:`tumorscope.stages.fit.fit_volume` as ``<prefix>molli_<param>.nii.gz`` (``A``,
``T1star``, ``B_over_A``, ``T1``, ``R1`` + status, rss, standard errors).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from ..models.cardiac import MOLLIT1
from ..protocol import InversionRecoveryProtocol
from .base import SeriesInput, StageResult
from .relaxometry import MaskLike, RelaxometryOptions, _fit_series

__all__ = ["MOLLI_ROLES", "fit_molli_series"]

#: Roles of the study manifest fitted by :func:`fit_molli_series` in the pipeline.
MOLLI_ROLES: tuple[str, ...] = ("t1_molli", "t1_molli_post")


def fit_molli_series(
    series: SeriesInput,
    *,
    out_dir: str | os.PathLike[str],
    prefix: str | None = None,
    mask: MaskLike = None,
    chunk_voxels: int | None = None,
) -> StageResult:
    """Fit MOLLI T1 to one series (default prefix ``"<series stem>_molli_"``).

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
        opts=RelaxometryOptions(chunk_voxels=chunk_voxels),
    )
