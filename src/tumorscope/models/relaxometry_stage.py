"""The relaxometry stage: T2*, T2 and inversion recovery T1 maps of a study visit.

For each relaxometry series present at a visit (roles of the study manifest: ``t2star`` →
``MEGRE``, ``t2`` → ``MESE``, ``t1_ir`` → ``IRT1``; see ``docs/study-format.md``) the stage
builds the model from the series' sidecar protocol, fits it with the generic fit stage
(:func:`tumorscope.stages.fit.fit_volume`: inputs checked before anything is written,
every file written atomically, sidecars with units and provenance) and returns the fits and
the files. VFA T1 is fitted by the DCE stage, which needs it.

Maps are written as ``<prefix><model>_<param>.nii.gz`` with ``prefix`` defaulting to
``sub-<subject>_ses-<visit>_``, e.g. ``sub-001_ses-01_t2star_R2star.nii.gz``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, FitError, TumorscopeWarning
from .base import FitResult

__all__ = ["RELAXOMETRY_ROLES", "RelaxometryStageOutputs", "fit_relaxometry_visit"]

#: Manifest roles the stage fits, with the model class name used for each.
RELAXOMETRY_ROLES: dict[str, str] = {"t2star": "T2Star", "t2": "T2", "t1_ir": "IRT1"}


@dataclass
class RelaxometryStageOutputs:
    """What the relaxometry stage fitted and wrote.

    Attributes
    ----------
    fits : dict of str to FitResult
        One fit per role fitted (``"t2star"``, ``"t2"``, ``"t1_ir"``).
    files : dict of str to Path
        ``"<model>_<param>"`` (and ``"<model>_status"``, ``"<model>_rss"``, stderr maps) to
        the written image.
    warnings : list of str
        Summary warnings of the fits.
    """

    fits: dict[str, FitResult] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def fit_relaxometry_visit(
    visit: Any,
    *,
    out_dir: str | os.PathLike[str],
    roles: Sequence[str] | None = None,
    mask: Any = None,
    noise_sigma: float | None = None,
    prefix: str | None = None,
) -> RelaxometryStageOutputs:
    """Fit every relaxometry series of a visit and write its maps.

    Parameters
    ----------
    visit : tumorscope.io.Visit
        A visit of :func:`tumorscope.io.open_study`.
    out_dir : path-like, keyword-only
    roles : sequence of str, optional, keyword-only
        Roles to fit (subset of :data:`RELAXOMETRY_ROLES`); default every one present. A role
        asked for but absent from the visit is an error.
    mask : None, "lesions", ndarray or path, keyword-only
        ``None`` (default): the whole volume (maps are shown over the anatomy; a voxel's fit
        does not depend on the others). ``"lesions"``: the visit's labelled lesion voxels.
    noise_sigma : float, optional, keyword-only
        Rician noise level for T2*; estimated from the decays when omitted.
    prefix : str, optional, keyword-only
        Default ``"sub-<subject>_ses-<visit>_"``.

    Returns
    -------
    RelaxometryStageOutputs

    Raises
    ------
    FitError
        An unknown role.
    DataError, ProtocolError
        A role asked for but absent, a series whose sidecar or shape disagrees with its
        protocol (names the file and field).
    """
    from ..stages.fit import fit_volume
    from . import relaxometry

    series = visit.series
    if roles is None:
        wanted = [r for r in RELAXOMETRY_ROLES if r in series]
    else:
        wanted = list(roles)
        for r in wanted:
            if r not in RELAXOMETRY_ROLES:
                raise FitError(
                    f"unknown relaxometry role {r!r}; expected one of {sorted(RELAXOMETRY_ROLES)}",
                    field="roles",
                )
            if r not in series:
                raise DataError(
                    f"visit has no {r!r} series (found {sorted(series)})",
                    file=str(visit.path),
                    field=r,
                )
    if isinstance(mask, str) and mask == "lesions":
        les = visit.lesions
        mask = None if les is None else les.load_labels().data != 0
    pre = prefix if prefix is not None else f"sub-{visit.subject_id}_ses-{visit.id}_"
    # check every protocol and image before fitting or writing anything
    jobs = []
    for role in wanted:
        s = series[role]
        proto = s.protocol
        if proto is None:
            raise DataError("series has no acquisition protocol", file=s.relpath, field=role)
        cls = getattr(relaxometry, RELAXOMETRY_ROLES[role])
        opts: dict[str, Any] = {}
        if role == "t2star" and noise_sigma is not None:
            opts["noise_sigma"] = noise_sigma
        jobs.append((role, s, cls.from_protocol(proto, **opts), s.load()))
    out = RelaxometryStageOutputs()
    for role, s, model, vol in jobs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TumorscopeWarning)
            res = fit_volume(
                model,
                vol,
                out_dir=out_dir,
                mask=mask,
                prefix=f"{pre}{model.name}_",
                input_files={"series": s.path},
            )
        out.warnings += [
            str(w.message) for w in caught if issubclass(w.category, TumorscopeWarning)
        ]
        out.fits[role] = res.fit
        for name, path in res.files.items():
            out.files[f"{model.name}_{name}"] = Path(path)
    return out
