"""Hypoxia stage: an R2* map and a perfusion (Ktrans) map → voxel classes and per-region shares.

Backs the pipeline's ``hypoxia`` step. Writes the class map (uint8
:class:`~tumorscope.models.hypoxia.HypoxiaClass` codes, with a sidecar; not a parameter map:
its mean would mean nothing) and a per-region Parquet table. Equations:
:mod:`tumorscope.models.hypoxia` (oxygenation, a modality of its own).

Rows of the result:

- ``"hypoxia"``: one per region, ``keys`` + ``lesion_id`` + the columns of
  :func:`~tumorscope.models.hypoxia.hypoxia_table` but ``label``;
- ``"measurements"``: ``keys`` + ``lesion_id, map ("hypoxia"), statistic, value, unit`` for
  every class fraction and the hypoxic volume.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..files import write_map
from ..volume import Volume
from ._tables import measurement_row, write_parquet
from .base import StageResult

__all__ = ["HypoxiaOptions", "classify_hypoxia"]


@dataclass(frozen=True)
class HypoxiaOptions:
    """Thresholds of the hypoxia classes (study-specific: there are no defaults).

    Attributes
    ----------
    r2star_threshold_per_s : float
        R2* above which a voxel counts as high (1/s).
    ktrans_threshold_per_min : float
        Ktrans below which a voxel counts as poorly perfused (1/min).
    """

    r2star_threshold_per_s: float
    ktrans_threshold_per_min: float


def classify_hypoxia(
    r2star: str | os.PathLike[str],
    ktrans: str | os.PathLike[str],
    labels: Volume | None,
    lesion_ids: Mapping[int, str] | None = None,
    *,
    class_path: str | os.PathLike[str],
    table_path: str | os.PathLike[str],
    options: HypoxiaOptions,
    perfusion_name: str = "Ktrans",
    keys: Mapping[str, Any] | None = None,
) -> StageResult:
    """Hypoxia classes inside the regions from R2* and Ktrans maps on one grid.

    :func:`~tumorscope.models.hypoxia.hypoxia_classes` (voxels with a label > 0), then
    :func:`~tumorscope.models.hypoxia.hypoxia_table` per region.

    Parameters
    ----------
    r2star, ktrans : path-like
        R2* map (1/s) and Ktrans map (1/min) on one grid.
    labels : Volume or None
        Region (lesion) labels on that grid, 0 = none; None: no region (nothing classified).
    lesion_ids : mapping of int to str, optional
        Name of each label in the tables (default: the label as text).
    class_path, table_path : path-like, keyword-only
        The class map (NIfTI, sidecar beside it) and the per-region table (Parquet).
    options : HypoxiaOptions, keyword-only
    perfusion_name : str, keyword-only
        How the provenance names the perfusion map (``extended_tofts.Ktrans``).
    keys : mapping, keyword-only, optional
        Columns that lead every row (``{"subject": "001", "visit": "02"}``).

    Returns
    -------
    StageResult
        ``files``: class map, its sidecar, the table; ``rows`` ``hypoxia`` and
        ``measurements`` (module docstring). No ``maps``.
    """
    from .. import __version__
    from ..models import hypoxia

    r2_vol = Volume.from_nifti(r2star)
    kt = Volume.from_nifti(ktrans).data
    lab = (
        np.zeros(r2_vol.spatial_shape, np.int64)
        if labels is None
        else np.asarray(labels.data).astype(np.int64)
    )
    r2_thr = float(options.r2star_threshold_per_s)
    kt_thr = float(options.ktrans_threshold_per_min)
    classes = hypoxia.hypoxia_classes(
        r2_vol.data,
        r2star_threshold_per_s=r2_thr,
        perfusion=kt,
        perfusion_threshold=kt_thr,
        mask=lab > 0,
    )
    table = hypoxia.hypoxia_table(classes, lab, voxel_volume_ml=r2_vol.voxel_volume_ml)
    prov = {
        "model": "hypoxia",
        "options": {
            "r2star_threshold_per_s": r2_thr,
            "ktrans_threshold_per_min": kt_thr,
            "perfusion": perfusion_name,
        },
        "tumorscope_version": __version__,
    }
    result = StageResult()
    result.files += write_map(
        class_path,
        classes,
        r2_vol.affine,
        units="class",
        description="hypoxia classes: "
        + ", ".join(f"{int(c)}={c.name}" for c in hypoxia.HypoxiaClass),
        provenance=prov,
        dtype=np.uint8,
        indent=1,
    )
    lead = dict(keys or {})
    names = dict(lesion_ids or {})
    rows = [
        {
            **lead,
            "lesion_id": names.get(int(label), str(int(label))),
            **{k: v[j].item() for k, v in table.items() if k != "label"},
        }
        for j, label in enumerate(table["label"])
    ]
    result.files.append(write_parquet(table_path, rows))
    result.rows["hypoxia"] = rows
    result.rows["measurements"] = [
        measurement_row(lead, r["lesion_id"], "hypoxia", k, v, "mL" if k.endswith("_ml") else "1")
        for r in rows
        for k, v in r.items()
        if k.startswith("fraction_") or k == "hypoxic_volume_ml"
    ]
    return result
