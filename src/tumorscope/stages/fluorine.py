"""19F stage: a 19F image, its reference-tube map and a region map → labelled cells per region.

Backs the pipeline's ``fluorine`` step and ``tumorscope cells19f``. The tubes' 19F
concentrations (``ReferenceTubes``) and the spins per cell (``FluorinePerCell``) come from the
image's sidecar unless given in :class:`FluorineOptions`; the Rician noise is given, estimated
in a background mask, or (as the pipeline does) estimated outside the body from the anatomical
image (:func:`fluorine_background`). Equations: :mod:`tumorscope.models.cells.fluorine`.

Rows of the result:

- ``"cells19f"``: one per region, the columns ``keys`` (e.g. subject, visit) +
  :data:`TABLE_COLUMNS`; written to ``table_path`` as Parquet when one is given;
- ``"counts"``: one per region, the columns of
  :func:`~tumorscope.models.cells.fluorine.count_cells` (``label`` … ``status``);
- ``"measurements"``: ``keys`` + ``lesion_id, map ("19F"), statistic, value, unit`` for the
  cells, their standard error, the decision threshold and the detection limit (cells per
  voxel detected with 50 % and 95 % probability), the share of the counted signal near the
  threshold and the detected voxels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import DataError
from ..volume import Volume
from ._tables import measurement_row, write_parquet
from .base import SeriesInput, StageResult

__all__ = ["TABLE_COLUMNS", "FluorineOptions", "count_cells_19f", "fluorine_background"]

#: Columns of the per-region table after the caller's ``keys`` (one row per region).
TABLE_COLUMNS = (
    "lesion_id",
    "status",
    "cells",
    "cells_se",
    "cells_decision_threshold",
    "cells_detection_limit",
    "near_threshold",
    "near_threshold_fraction",
    "n_voxels",
    "n_detected",
    "threshold",
    "noise_sigma",
    "signal_per_spin",
    "signal_per_spin_se",
    "fluorine_per_cell",
    "background",
)

#: The per-region statistics that become ``measurements`` rows, with their units.
_MEASURED = (
    ("cells", "cells"),
    ("cells_se", "cells"),
    ("cells_decision_threshold", "cells"),
    ("cells_detection_limit", "cells"),
    ("near_threshold_fraction", "1"),
    ("n_detected", "voxels"),
)


@dataclass(frozen=True)
class FluorineOptions:
    """Options of the 19F stage.

    Attributes
    ----------
    tubes_mM : mapping of int to float, optional
        19F concentration (mM) per label of the tube map. Default: the image sidecar's
        ``ReferenceTubes``.
    fluorine_per_cell : float, optional
        Mean 19F spins per cell. Default: the image sidecar's ``FluorinePerCell``.
    noise_sigma : float, optional
        Rician noise level; default: estimated (background mask or outside the body).
    alpha : float, default 0.01
        False-positive probability per region of the detection threshold.
    """

    tubes_mM: Mapping[int, float] | None = None
    fluorine_per_cell: float | None = None
    noise_sigma: float | None = None
    alpha: float = 0.01


def fluorine_background(anatomical: npt.ArrayLike, exclude: npt.ArrayLike) -> np.ndarray:
    """Signal-free voxels of a 19F image for the Rician noise estimate.

    19F has no tissue background, but the labelled cells sit in tissue, so the noise is
    estimated *outside the body*: voxels whose anatomical (T2w) signal is below 5 % of its
    99th percentile (air: noise only), minus the reference tubes and the lesions dilated by
    one voxel (``exclude``), so no 19F signal enters the estimate.
    """
    from scipy import ndimage

    a = np.asarray(anatomical, dtype=float)
    low = np.isfinite(a) & (a < 0.05 * np.nanpercentile(a, 99.0))
    return low & ~ndimage.binary_dilation(np.asarray(exclude, bool), iterations=1)


def _short(value: object) -> str:
    """A sidecar value for a message (numpy scalars as plain numbers), cut to 80 characters."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _tubes(
    image: SeriesInput, tubes: SeriesInput, tube_map: np.ndarray, options: FluorineOptions
) -> tuple[list[np.ndarray], list[float]]:
    """Masks and concentrations of the reference tubes, in label order."""
    given = options.tubes_mM
    tubes_mM = image.sidecar.get("ReferenceTubes") if given is None else given
    if tubes_mM is None or (isinstance(tubes_mM, Mapping) and not tubes_mM):
        state = "null" if "ReferenceTubes" in image.sidecar else "missing"
        raise DataError(
            "ReferenceTubes ({tube label: mM of 19F}) is "
            + ("empty" if tubes_mM is not None else state),
            file=image.label,
            field="ReferenceTubes",
        )
    if not isinstance(tubes_mM, Mapping):
        raise DataError(
            "ReferenceTubes must be an object {tube label: mM of 19F}, got " + _short(tubes_mM),
            file=image.label,
            field="ReferenceTubes",
        )
    checked = {}
    for label, mm in tubes_mM.items():
        try:
            number = int(label)
        except (TypeError, ValueError):
            number = None
        if number is None or str(number) != str(label).strip() or number <= 0:
            raise DataError(
                f"tube label {label!r} of ReferenceTubes is not a label number (1, 2, …)",
                file=image.label,
                field="ReferenceTubes",
            )
        if isinstance(mm, bool) or not isinstance(mm, int | float):
            raise DataError(
                f"tube {number}: expected a concentration in mM, got {_short(mm)}",
                file=image.label,
                field="ReferenceTubes",
            )
        checked[number] = mm
    masks, conc = [], []
    for label, mm in sorted(checked.items()):
        m = tube_map == label
        if not m.any():
            raise DataError(
                f"reference tube {label} of ReferenceTubes is not in the tube label map",
                file=tubes.label,
                field="ReferenceTubes",
            )
        masks.append(m)
        conc.append(
            _positive(
                mm,
                image.label,
                "ReferenceTubes" if given is None else "tubes_mM",
                f"tube {label}: ",
            )
        )
    return masks, conc


def _positive(value: object, label: str, field: str, what: str = "") -> float:
    """A finite number > 0 of the sidecar (or options), else a DataError naming file and field."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        number = float("nan")
    if isinstance(value, bool) or not np.isfinite(number) or number <= 0:
        raise DataError(
            f"{what}expected a finite number > 0, got {_short(value)}",
            file=label or None,
            field=field,
        )
    return number


def _noise_region(
    image: SeriesInput,
    anatomical: SeriesInput | None,
    background: np.ndarray | None,
    exclude: np.ndarray,
    options: FluorineOptions,
) -> tuple[np.ndarray | None, str, str]:
    """The background mask for the noise estimate, its description in the table and in the
    note."""
    if options.noise_sigma is not None:
        return None, "noise sigma given", "(given)"
    if background is not None:
        n = int(background.sum())
        return background, f"{n} background voxels", f"from {n} background voxels"
    if anatomical is None:
        raise DataError(
            "the 19F noise is estimated outside the body, which needs the anatomical image",
            file=image.label,
            field="anatomical",
        )
    bg = fluorine_background(anatomical.load().data, exclude)
    n = int(bg.sum())
    return bg, f"{n} out-of-body voxels", f"from {n} background voxels"


def _on_grid(vol: Volume, like: Volume, label: str) -> np.ndarray:
    if vol.spatial_shape != like.spatial_shape or not like.same_grid(vol):
        raise DataError("not on the 19F image grid", file=label, field="affine")
    return vol.data if vol.data.ndim == 3 else vol.data[..., 0]


def count_cells_19f(
    image: SeriesInput,
    tubes: SeriesInput,
    anatomical: SeriesInput | None,
    labels: Volume | None,
    lesion_ids: Mapping[int, str] | None = None,
    *,
    table_path: str | os.PathLike[str] | None = None,
    options: FluorineOptions = FluorineOptions(),
    keys: Mapping[str, Any] | None = None,
    background: Volume | None = None,
) -> StageResult:
    """Labelled cells per region from a 19F image and its reference tubes.

    :func:`~tumorscope.models.cells.fluorine.calibrate_fluorine` on the tubes, then
    :func:`~tumorscope.models.cells.fluorine.count_cells` per region. Regions with no voxel
    above the detection threshold are "below detection" (cells NaN, with their detection
    limit).

    Parameters
    ----------
    image : SeriesInput
        The 19F magnitude image (3-D, or 4-D with one volume); its sidecar holds
        ``ReferenceTubes`` and ``FluorinePerCell`` unless given in ``options``.
    tubes : SeriesInput
        Label map of the reference tubes on the image grid.
    anatomical : SeriesInput or None
        Anatomical image on the grid, for the out-of-body noise estimate (needed unless
        ``options.noise_sigma`` or ``background`` is given).
    labels : Volume or None
        Region (lesion) labels on the grid, 0 = none; None: no region.
    lesion_ids : mapping of int to str, optional
        Name of each label in the tables (default: the label as text).
    table_path : path-like, keyword-only, optional
        Write the ``cells19f`` rows there (Parquet).
    options : FluorineOptions, keyword-only
    keys : mapping, keyword-only, optional
        Columns that lead every row (``{"subject": "001", "visit": "02"}``).
    background : Volume, keyword-only, optional
        Signal-free mask for the noise estimate (instead of the anatomical image).

    Returns
    -------
    StageResult
        ``rows`` ``cells19f``, ``counts`` and ``measurements`` (module docstring);
        ``files``: the table, if written; ``warnings``: one note on the noise and tube SNR.

    Raises
    ------
    DataError
        Missing ``ReferenceTubes``/``FluorinePerCell``, a tube not in the map, images on
        other grids, no way to estimate the noise.
    """
    from ..models.cells import fluorine

    per_cell = options.fluorine_per_cell
    if per_cell is None:
        per_cell = _positive(image.need("FluorinePerCell"), image.label, "FluorinePerCell")
    img, voxel_ml, tube_map, lab, bg_mask = _inputs(image, tubes, labels, background)
    masks, conc = _tubes(image, tubes, tube_map, options)
    exclude = (tube_map > 0) | (lab > 0)
    bg, bg_note, noise_note = _noise_region(image, anatomical, bg_mask, exclude, options)
    cal = fluorine.calibrate_fluorine(
        img, masks, conc, voxel_volume_ml=voxel_ml, noise_sigma=options.noise_sigma, background=bg
    )
    counts = fluorine.count_cells(
        img, lab, cal, fluorine_per_cell=float(per_cell), alpha=options.alpha
    )
    lead = dict(keys or {})
    names = dict(lesion_ids or {})
    cal_cols = {
        "noise_sigma": cal.noise_sigma,
        "signal_per_spin": cal.signal_per_spin,
        "signal_per_spin_se": cal.signal_per_spin_se,
        "fluorine_per_cell": float(per_cell),
        "background": bg_note,
    }
    rows = [
        {**lead, **_region_row(counts, j, names), **cal_cols} for j in range(len(counts["label"]))
    ]
    result = StageResult(rows={"cells19f": rows, "counts": _count_rows(counts)})
    result.rows["measurements"] = [
        measurement_row(lead, r["lesion_id"], "19F", stat, r[stat], unit)
        for r in rows
        for stat, unit in _MEASURED
    ]
    result.warnings.append(
        f"19F: sigma {cal.noise_sigma:.3g} {noise_note}, "
        f"tube SNR {', '.join(f'{x:.1f}' for x in cal.tube_snr)}"
    )
    if table_path is not None:
        result.files.append(write_parquet(table_path, rows, [*lead, *TABLE_COLUMNS]))
    return result


def _inputs(
    image: SeriesInput, tubes: SeriesInput, labels: Volume | None, background: Volume | None
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray | None]:
    """The 19F image (3-D), its voxel volume (mL), the tube map, the region labels and the
    background mask, all checked to be on the image grid."""
    img_vol = image.load()
    img = np.asarray(img_vol.data, dtype=float)
    if img.ndim == 4 and img.shape[3] == 1:
        img = img[..., 0]
    if img.ndim != 3:
        raise DataError(f"expected a 3-D 19F image, got shape {img_vol.shape}", file=image.label)
    tube_map = np.asarray(_on_grid(tubes.load(), img_vol, tubes.label))
    lab = np.zeros(img.shape, np.int64)
    if labels is not None:
        lab = np.asarray(_on_grid(labels, img_vol, labels.source or "labels")).astype(np.int64)
    bg_mask = None
    if background is not None:
        bg_mask = np.asarray(_on_grid(background, img_vol, background.source or "")) > 0
    return img, img_vol.voxel_volume_ml, tube_map, lab, bg_mask


def _region_row(
    counts: Mapping[str, np.ndarray], j: int, names: Mapping[int, str]
) -> dict[str, Any]:
    lab = int(counts["label"][j])
    return {
        "lesion_id": names.get(lab, str(lab)),
        "status": str(counts["status"][j]),
        "cells": float(counts["cells"][j]),
        "cells_se": float(counts["cells_se"][j]),
        "cells_decision_threshold": float(counts["cells_decision_threshold"][j]),
        "cells_detection_limit": float(counts["cells_detection_limit"][j]),
        "near_threshold": bool(counts["near_threshold"][j]),
        "near_threshold_fraction": float(counts["near_threshold_fraction"][j]),
        "n_voxels": int(counts["n_voxels"][j]),
        "n_detected": int(counts["n_detected"][j]),
        "threshold": float(counts["threshold"][j]),
    }


def _count_rows(counts: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    return [{k: v[j] for k, v in counts.items()} for j in range(len(counts["label"]))]
