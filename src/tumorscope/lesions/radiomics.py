"""Radiomics of parameter maps through MIRP (IBSI-compliant), with per-map default settings.

tumorscope does not compute texture features itself: MIRP [1]_ implements the IBSI reference
definitions [2]_ and is validated against the IBSI digital and CT phantoms. This module
chooses the settings, hands MIRP the map and the mask with their geometry (as NIfTI files in
a temporary folder, so spacing and orientation travel with the data), and returns a tidy
table with MIRP's IBSI-based feature names (``stat_mean``, ``ih_entropy_fbs_w…``,
``cm_joint_entr_d1_3d_v_mrg_fbs_w…`` …).

Defaults (:data:`DEFAULT_SETTINGS`, :func:`settings_for`)
----------------------------------------------------------
* **Discretisation: fixed bin size** (FBS) in the map's own unit, from a fixed lower bound.
  Parameter maps are calibrated quantities, so IBSI's recommendation for calibrated
  intensities (FBS, as for CT in HU or PET in SUV) applies: the same bin means the same
  tissue value at every visit, which is what delta-radiomics needs. Bin widths give ~25–50
  bins over the physiological range (e.g. ADC 5·10⁻⁵ mm²/s, Ktrans 0.02 /min, ve 0.025).
* **Re-segmentation range**: the physiological range of the map (e.g. ADC 0–4·10⁻³ mm²/s);
  voxels outside it (fit artefacts) leave the region of interest, and its lower bound is the
  FBS lower bound.
* **Resampling**: to isotropic voxels whose edge is the map's largest *in-plane* voxel size
  (``spacing_mm="auto"``): 3-D texture needs isotropic voxels, and using the in-plane size
  neither throws away in-plane detail nor pretends through-plane detail that thick slices
  lack. Image: trilinear; mask: trilinear with inclusion threshold 0.5 (IBSI defaults).
  ``spacing_mm=None`` keeps the native grid; a number sets the edge in mm.
* **Families**: morphology, intensity statistics, intensity histogram, GLCM, GLRLM, GLSZM,
  NGTDM, 3-D with matrices merged over directions (IBSI "3D, merged").
* Maps without an entry use fixed bin number (32 bins), no range.

Voxels whose fit failed (non-finite values) are removed from the mask and, for the
interpolation only, set to the median of the lesion's valid values; how many is reported in
the ``n_excluded`` row.

References
----------
.. [1] Zwanenburg A, Löck S. MIRP: A Python package for standardised radiomics. J Open
       Source Softw 2024;9:6413. doi:10.21105/joss.06413
.. [2] Zwanenburg A, et al. The Image Biomarker Standardization Initiative. Radiology 2020;
       295:328-338. doi:10.1148/radiol.2020191145
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from ..errors import DataError
from ..volume import Volume
from .stats import long_frame

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_FAMILIES",
    "DEFAULT_SETTINGS",
    "DELTA_COLUMNS",
    "RADIOMICS_COLUMNS",
    "RadiomicsSettings",
    "delta_radiomics",
    "radiomics_features",
    "settings_for",
]

#: Columns of :func:`radiomics_features` tables.
RADIOMICS_COLUMNS: tuple[str, ...] = ("lesion_id", "visit", "map", "feature", "value")
#: Columns of :func:`delta_radiomics` tables.
DELTA_COLUMNS: tuple[str, ...] = (
    "lesion_id",
    "map",
    "feature",
    "visit",
    "value",
    "baseline_value",
    "delta",
    "relative_delta",
)

#: Feature families computed by default (MIRP names).
DEFAULT_FAMILIES: tuple[str, ...] = (
    "morphology",
    "statistics",
    "intensity_histogram",
    "glcm",
    "glrlm",
    "glszm",
    "ngtdm",
)


@dataclass(frozen=True)
class RadiomicsSettings:
    """Settings handed to MIRP.

    Attributes
    ----------
    discretisation : {"fixed_bin_size", "fixed_bin_number"}
    bin_width : float, optional
        FBS bin width in the map's unit.
    n_bins : int, optional
        FBN number of bins.
    intensity_range : (float, float), optional
        Re-segmentation range in the map's unit (``inf`` allowed for no upper bound).
    spacing_mm : float, "auto" or None
        Isotropic voxel edge after resampling; "auto" = largest in-plane voxel size of the
        map; None = no resampling.
    families : tuple of str
        MIRP feature families.
    """

    discretisation: Literal["fixed_bin_size", "fixed_bin_number"] = "fixed_bin_number"
    bin_width: float | None = None
    n_bins: int | None = 32
    intensity_range: tuple[float, float] | None = None
    spacing_mm: float | Literal["auto"] | None = "auto"
    families: tuple[str, ...] = DEFAULT_FAMILIES

    def __post_init__(self) -> None:
        if self.discretisation == "fixed_bin_size":
            if self.bin_width is None or not self.bin_width > 0:
                raise DataError(
                    f"fixed_bin_size needs bin_width > 0, got {self.bin_width!r}",
                    field="bin_width",
                )
        elif self.discretisation == "fixed_bin_number":
            if self.n_bins is None or self.n_bins < 2:
                raise DataError(
                    f"fixed_bin_number needs n_bins >= 2, got {self.n_bins!r}", field="n_bins"
                )
        else:
            raise DataError(
                "discretisation must be 'fixed_bin_size' or 'fixed_bin_number', got "
                f"{self.discretisation!r}",
                field="discretisation",
            )
        if self.intensity_range is not None:
            lo, hi = self.intensity_range
            if not lo < hi:
                raise DataError(
                    f"intensity_range must be (low, high) with low < high, got "
                    f"{self.intensity_range}",
                    field="intensity_range",
                )
        sp = self.spacing_mm
        if sp is not None and sp != "auto" and not (isinstance(sp, int | float) and sp > 0):
            raise DataError(
                f"spacing_mm must be > 0, 'auto' or None, got {sp!r}", field="spacing_mm"
            )


def _fbs(width: float, lo: float, hi: float) -> RadiomicsSettings:
    return RadiomicsSettings(
        "fixed_bin_size", bin_width=width, n_bins=None, intensity_range=(lo, hi)
    )


#: Default settings by map name (units as in ``docs/architecture.md``).
DEFAULT_SETTINGS: dict[str, RadiomicsSettings] = {
    "ADC": _fbs(5e-5, 0.0, 4e-3),
    "D": _fbs(5e-5, 0.0, 4e-3),
    "D_star": _fbs(2e-3, 0.0, 0.1),
    "f": _fbs(0.025, 0.0, 1.0),
    "K": _fbs(0.05, 0.0, 3.0),
    "Ktrans": _fbs(0.02, 0.0, 5.0),
    "kep": _fbs(0.05, 0.0, 10.0),
    "ve": _fbs(0.025, 0.0, 1.0),
    "vp": _fbs(0.01, 0.0, 1.0),
    "Fp": _fbs(5.0, 0.0, 500.0),
    "PS": _fbs(2.0, 0.0, 200.0),
    "T1": _fbs(25.0, 0.0, 5000.0),
    "T2": _fbs(5.0, 0.0, 1000.0),
    "T2star": _fbs(2.0, 0.0, 500.0),
    "R1": _fbs(0.05, 0.0, 20.0),
    "SUV": _fbs(0.25, 0.0, float("inf")),
}


def settings_for(map_name: str, **overrides: Any) -> RadiomicsSettings:
    """Default settings of a map (FBN 32 bins for unknown maps), with fields overridden.

    Examples
    --------
    >>> settings_for("ADC").bin_width
    5e-05
    >>> settings_for("ADC", spacing_mm=None).spacing_mm is None
    True
    """
    base = DEFAULT_SETTINGS.get(map_name, RadiomicsSettings())
    return replace(base, **overrides) if overrides else base


def radiomics_features(
    image: Volume,
    mask: Volume | npt.ArrayLike,
    *,
    map_name: str = "",
    lesion_id: str = "",
    visit: str = "",
    settings: RadiomicsSettings | None = None,
) -> pd.DataFrame:
    """IBSI radiomics features of one lesion on one map (MIRP).

    Parameters
    ----------
    image : Volume, 3-D
        The parameter map with its affine.
    mask : Volume or array of bool, shape (X, Y, Z)
        The lesion on the map's grid.
    map_name : str
        Selects the default settings (:func:`settings_for`) and labels the rows.
    lesion_id, visit : str
        Labels of the rows and of error messages.
    settings : RadiomicsSettings, optional
        Overrides the defaults.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`RADIOMICS_COLUMNS`; rows ``n_voxels``, ``n_excluded`` and then every
        MIRP feature, plus the settings actually used (``setting_*`` rows are numeric:
        ``setting_bin_width``, ``setting_spacing_mm`` …) so that tables record them.

    Raises
    ------
    DataError
        If the mask is empty, on another grid, or has no valid voxel.
    """

    where = (
        ", ".join(
            p
            for p in (
                f"lesion {lesion_id}" if lesion_id else "",
                f"visit {visit}" if visit else "",
                f"map {map_name}" if map_name else "",
            )
            if p
        )
        or "lesion"
    )
    if image.data.ndim != 3:
        raise DataError(
            f"expected a 3-D map, got shape {image.shape}", file=image.source, field=where
        )
    if isinstance(mask, Volume):
        if not image.same_grid(mask):
            raise DataError(
                f"mask grid {mask.spatial_shape} differs from the map grid {image.spatial_shape}; "
                "resample it first (tumorscope.preprocessing.resample_mask)",
                file=mask.source,
                field=where,
            )
        m = np.asarray(mask.data).astype(bool)
    else:
        m = np.asarray(mask).astype(bool)
    if m.shape != image.spatial_shape:
        raise DataError(
            f"mask shape {m.shape} does not match the map {image.spatial_shape}", field=where
        )
    if not m.any():
        raise DataError("lesion mask is empty", field=where)
    s = settings or settings_for(map_name)
    data = np.asarray(image.data, dtype=np.float32)
    finite = np.isfinite(data)
    valid = m & finite
    n_vox, n_ok = int(m.sum()), int(valid.sum())
    if n_ok == 0:
        raise DataError(f"all {n_vox} lesion voxels are non-finite (failed fits)", field=where)
    fill = float(np.median(data[valid]))
    clean = np.where(finite, data, fill).astype(np.float32)

    if s.spacing_mm == "auto":
        ax = int(np.argmax(np.abs(image.affine[:3, :3] / image.voxel_sizes)[2]))
        spacing: float | None = max(v for i, v in enumerate(image.voxel_sizes) if i != ax)
    else:
        spacing = s.spacing_mm
    kwargs: dict[str, Any] = dict(
        base_feature_families=list(s.families),
        base_discretisation_method=s.discretisation,
        ibsi_compliant=True,
    )
    if s.discretisation == "fixed_bin_size":
        kwargs["base_discretisation_bin_width"] = float(s.bin_width)  # type: ignore[arg-type]
    else:
        kwargs["base_discretisation_n_bins"] = int(s.n_bins)  # type: ignore[arg-type]
    if s.intensity_range is not None:
        kwargs["resegmentation_intensity_range"] = [
            float(s.intensity_range[0]),
            float(s.intensity_range[1]),
        ]
    elif s.discretisation == "fixed_bin_size":
        # IBSI: without a re-segmentation range the FBS lower bound is the ROI minimum
        kwargs["resegmentation_intensity_range"] = [float(data[valid].min()), float("inf")]
    if spacing is not None:
        kwargs.update(
            new_spacing=float(spacing),
            spline_order=1,
            anti_aliasing=False,
            roi_spline_order=1,
            roi_interpolation_mask_inclusion_threshold=0.5,
        )

    table = _run_mirp(Volume(clean, image.affine), valid, kwargs)
    feats = {
        k: float(v)
        for k, v in table.items()
        if not k.startswith("image_") and k != "sample_name" and _is_number(v)
    }
    settings_rows = {
        "setting_bin_width": np.nan if s.bin_width is None else float(s.bin_width),
        "setting_n_bins": np.nan if s.n_bins is None else float(s.n_bins),
        "setting_range_low": np.nan if s.intensity_range is None else s.intensity_range[0],
        "setting_range_high": np.nan if s.intensity_range is None else s.intensity_range[1],
        "setting_spacing_mm": np.nan if spacing is None else float(spacing),
    }
    # the grid MIRP actually computed on (after its resampling), to prove the settings arrived
    for axis in ("x", "y", "z"):
        key = f"image_voxel_size_{axis}"
        if key in table and _is_number(table[key]):
            settings_rows[f"setting_mirp_voxel_size_{axis}"] = float(table[key])
    names = ["n_voxels", "n_excluded", *feats, *settings_rows]
    values = [float(n_vox), float(n_vox - n_ok), *feats.values(), *settings_rows.values()]
    return long_frame(RADIOMICS_COLUMNS, (lesion_id, visit, map_name), names, values)


def delta_radiomics(
    table: pd.DataFrame,
    *,
    visit_order: Sequence[str] | None = None,
    baseline: str | None = None,
) -> pd.DataFrame:
    """Change of every feature from the baseline visit (delta-radiomics).

    Parameters
    ----------
    table : pandas.DataFrame
        Rows of :func:`radiomics_features` for several visits (columns
        :data:`RADIOMICS_COLUMNS`).
    visit_order : sequence of str, optional
        Chronological visit order; default sorted visit ids.
    baseline : str, optional
        Reference visit; default the first in ``visit_order``.

    Returns
    -------
    pandas.DataFrame
        Columns ``lesion_id, map, feature, visit, value, baseline_value, delta,
        relative_delta`` (``delta = value - baseline_value``; ``relative_delta = delta /
        |baseline_value|``, NaN where the baseline value is 0). Visits of lesions absent at
        baseline get NaN deltas; ``setting_*`` rows are dropped.
    """
    missing = [c for c in RADIOMICS_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"table lacks column(s) {missing}", field="table")
    order = list(visit_order) if visit_order is not None else sorted(table["visit"].unique())
    ref = baseline if baseline is not None else (order[0] if order else None)
    if ref is None or ref not in set(table["visit"]):
        raise DataError(f"baseline visit {ref!r} is not in the table", field="baseline")
    t = table[~table["feature"].str.startswith("setting_")]
    base = t[t["visit"] == ref][["lesion_id", "map", "feature", "value"]].rename(
        columns={"value": "baseline_value"}
    )
    out = t.merge(base, on=["lesion_id", "map", "feature"], how="left")
    out["delta"] = out["value"] - out["baseline_value"]
    denom = out["baseline_value"].abs()
    out["relative_delta"] = np.where(denom > 0, out["delta"] / denom.where(denom > 0, 1.0), np.nan)
    rank = {v: i for i, v in enumerate(order)}
    out = out.assign(_r=out["visit"].map(rank)).sort_values(["lesion_id", "map", "feature", "_r"])
    return out[list(DELTA_COLUMNS)].reset_index(drop=True)


# ---------------------------------------------------------------------------- internals


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


@contextmanager
def _quiet() -> Iterator[None]:
    """Keep MIRP's chatter off the user's console.

    MIRP calls ``logging.basicConfig(level=INFO, stream=sys.stdout)`` and logs every job at
    INFO level on the root logger. A placeholder handler makes that ``basicConfig`` a no-op
    (so no handler is left behind in the caller's process) and the root level is raised to
    WARNING while MIRP runs. MIRP also warns that intensities of generic (non-DICOM) images
    "do not represent calibrated values": parameter maps are calibrated, so that warning is
    wrong here and is silenced (only that one).
    """
    root = logging.getLogger()
    old = root.level
    placeholder: logging.Handler | None = None
    if not root.handlers:
        placeholder = logging.NullHandler()
        root.addHandler(placeholder)
    root.setLevel(max(old, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message=r"The intensities for this image .* do not represent calibrated values",
            )
            # SWIG bindings of ITK (MIRP's NIfTI reader) warn on import under Python >= 3.12
            warnings.filterwarnings(
                "ignore", message=r"builtin type .* has no __module__", category=DeprecationWarning
            )
            yield
    finally:
        root.setLevel(old)
        if placeholder is not None:
            root.removeHandler(placeholder)


def _run_mirp(image: Volume, mask: np.ndarray, kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        from mirp import extract_features
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataError(
            "radiomics needs MIRP: pip install 'tumorscope[radiomics]'", field="mirp"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="tumorscope-mirp-") as tmp:
        img_path = Path(tmp) / "image.nii.gz"
        mask_path = Path(tmp) / "mask.nii.gz"
        image.to_nifti(img_path, dtype=np.float32)
        Volume(mask.astype(np.uint8), image.affine).to_nifti(mask_path)
        with _quiet():
            out = extract_features(
                image=str(img_path),
                mask=str(mask_path),
                export_features=True,
                write_features=False,
                **kwargs,
            )
    if not out:
        raise DataError("MIRP returned no features", field="mirp")
    row = out[0].iloc[0]
    return {str(k): row[k] for k in out[0].columns}
