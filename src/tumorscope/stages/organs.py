"""Organ-watch stage: organ regions + the visit's maps → organ values (tidy rows).

The organ regions of a visit are an integer label map beside its lesion map,
``<prefix>_organs.nii.gz``, with a table ``<prefix>_organs.tsv`` (columns ``label``,
``organ``). Organ names are those of :data:`tumorscope.response.organs.ORGANS`
(``myocardium``, ``blood_pool``, ``liver``, ``bowel_wall``, ``pituitary``), the AHA segments
``myocardium_aha1`` … ``myocardium_aha16`` (T1 and T2 per segment: the Lake Louise criteria's
regional increase), or any name the user chooses (then only the map means are taken). Organ
regions are kept out of the lesion map on purpose: a lesion-map label is a lesion for the
response criteria, an organ is not.

Per organ and visit (:func:`organ_values`): the mean of every map of the visit named in
``ORGAN_MAPS`` (myocardial T1 and T2, liver stiffness and T1), the myocardial ECV from the
native and post-contrast MOLLI T1 of the myocardium and the blood pool with the haematocrit
(region means, the SCMR way), the maximal bowel-wall thickness and the pituitary height.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..lesions.organs import height_mm, max_wall_thickness_mm, superior_axis
from ..models.cardiac import ecv
from ..response.organs import AHA_PREFIX, ORGANS
from ..volume import Volume

__all__ = ["ORGAN_MAPS", "organ_map_paths", "organ_values", "read_organ_table"]

#: Map (``model.parameter`` in the visit's map index) → (organ measure name, unit), in order
#: of preference (the first found wins for a measure).
ORGAN_MAPS: dict[str, tuple[str, str]] = {
    "molli.T1": ("T1", "ms"),
    "t2prep.T2": ("T2", "ms"),
    "mre.abs_G": ("abs_G", "kPa"),
    "mre.phi": ("phi", "rad"),
}


def organ_map_paths(lesion_map: Path) -> tuple[Path, Path]:
    """The organ map and table beside a visit's lesion map (``…_lesions.nii.gz``)."""
    name = lesion_map.name
    base = (
        name[: -len("_lesions.nii.gz")] if name.endswith("_lesions.nii.gz") else name.split(".")[0]
    )
    return lesion_map.with_name(f"{base}_organs.nii.gz"), lesion_map.with_name(f"{base}_organs.tsv")


def read_organ_table(path: Path, label: str = "") -> dict[int, str]:
    """``{label: organ}`` of an organ table (TSV: ``label``, ``organ``)."""
    where = label or str(path)
    if not path.is_file():
        raise DataError("organ table is missing (expected beside the organ map)", file=where)
    out: dict[int, str] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if not {"label", "organ"} <= set(reader.fieldnames or []):
            raise DataError(
                "organ table needs the columns label and organ", file=where, field="label"
            )
        for i, r in enumerate(reader, start=2):
            try:
                lab = int(r["label"])
                if lab < 1:
                    raise ValueError
            except (TypeError, ValueError):
                raise DataError(
                    f"expected an integer >= 1, got {r['label']!r}",
                    file=where,
                    field=f"row {i}: label",
                ) from None
            organ = (r["organ"] or "").strip()
            if not organ or organ in out.values() or lab in out:
                raise DataError(
                    f"organ {organ!r} / label {lab} empty or repeated", file=where, field=f"row {i}"
                )
            seg = organ[len(AHA_PREFIX) :] if organ.startswith(AHA_PREFIX) else None
            if seg is not None and not (seg.isdigit() and 1 <= int(seg) <= 16):
                raise DataError(
                    f"{organ!r}: AHA segments are {AHA_PREFIX}1 … {AHA_PREFIX}16",
                    file=where,
                    field=f"row {i}: organ",
                )
            out[lab] = organ
    return out


def _mean(vol: Volume, region: np.ndarray) -> float | None:
    d = np.asarray(vol.data, dtype=float).reshape(vol.spatial_shape)
    x = d[region & np.isfinite(d)]
    return float(x.mean()) if x.size else None


def organ_values(
    organs: Volume,
    names: Mapping[int, str],
    maps: Mapping[str, Path],
    *,
    post_t1: Path | None = None,
    hematocrit: float | None = None,
    label: str = "",
) -> tuple[list[dict[str, Any]], list[str]]:
    """Organ values of one visit: rows ``{"organ", "measure", "value", "unit"}`` and notes.

    Parameters
    ----------
    organs : Volume
        The organ label map (on the grid of the maps: co-registered, as the lesion map).
    names : mapping
        ``{label: organ}``.
    maps : mapping
        The visit's maps by ``model.parameter``.
    post_t1 : Path, optional
        The post-contrast MOLLI T1 map (for ECV), with ``hematocrit`` (fraction).
    """
    lab = np.asarray(organs.data).reshape(organs.spatial_shape).astype(np.int64)
    unknown = sorted({int(v) for v in np.unique(lab)} - {0} - set(names))
    if unknown:
        raise DataError(
            f"labels {unknown} of the organ map are not in its table", file=label, field="label"
        )
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    loaded: dict[str, Volume] = {}
    for key, path in maps.items():
        if key in ORGAN_MAPS:
            vol = Volume.from_nifti(path)
            if vol.spatial_shape != organs.spatial_shape or not vol.same_grid(organs):
                notes.append(f"{key} is not on the organ map's grid: not measured in the organs")
                continue
            loaded[key] = vol
    h = organs.voxel_sizes
    for value, organ in sorted(names.items()):
        region = lab == value
        if not region.any():
            continue
        for key, vol in loaded.items():
            measure, unit = ORGAN_MAPS[key]
            kind = "myocardium" if organ.startswith(AHA_PREFIX) else organ
            if kind in ORGANS and measure not in ORGANS[kind]:
                continue  # a known organ: only its measures (e.g. no stiffness of the blood)
            m = _mean(vol, region)
            if m is not None:
                rows.append({"organ": organ, "measure": measure, "value": m, "unit": unit})
        if organ == "bowel_wall":
            rows.append(
                {
                    "organ": organ,
                    "measure": "thickness_mm",
                    "value": max_wall_thickness_mm(region, h),
                    "unit": "mm",
                }
            )
        if organ == "pituitary":
            ax = superior_axis(organs.affine)
            rows.append(
                {
                    "organ": organ,
                    "measure": "height_mm",
                    "value": height_mm(region, h, ax),
                    "unit": "mm",
                }
            )
    inv = {v: k for k, v in names.items()}
    if post_t1 is not None and "molli.T1" in loaded and {"myocardium", "blood_pool"} <= set(inv):
        if hematocrit is None:
            notes.append("no ECV: the post-contrast MOLLI sidecar has no Hematocrit")
        else:
            post = Volume.from_nifti(post_t1)
            nat = loaded["molli.T1"]
            myo, pool = lab == inv["myocardium"], lab == inv["blood_pool"]
            vals = [_mean(nat, myo), _mean(post, myo), _mean(nat, pool), _mean(post, pool)]
            if all(v is not None for v in vals):
                e = ecv(vals[0], vals[1], float(vals[2]), float(vals[3]), hematocrit)  # type: ignore[arg-type]
                rows.append(
                    {"organ": "myocardium", "measure": "ECV", "value": float(e), "unit": "1"}
                )
    return rows, notes
