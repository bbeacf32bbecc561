"""Iron-oxide labels: uptake maps (ΔR2*, ΔR2 → iron) and micro-particle signal voids.

Two ways MRI sees iron-oxide labelled cells and targets:

* **Diffuse uptake** (ferumoxytol taken up by tumour-associated macrophages, imaged e.g. 24 h
  after injection): the change of a relaxation rate between co-registered pre- and
  post-contrast visits, converted to an iron concentration with a stated relaxivity,
  :math:`[Fe] = \\Delta R_2^{(*)} / r_2^{(*)}` (fast-exchange linear relaxivity model; Daldrup-
  Link et al., Clin Cancer Res 2011;17:5695-5704 use ferumoxytol ΔR2* 24 h after injection as
  a marker of tumour-associated macrophages).
* **Micro-particles of iron oxide (MPIO)**, e.g. antibody-targeted to VCAM-1 on inflamed
  vessels, each producing a discrete hypointense void in T2*-weighted images (McAteer et al.,
  Nat Med 2007;13:1253-1258): voids are voxels darker than a reference region's mean by
  ``k`` standard deviations; they are counted as connected components and their volume is
  reported beside the rate of such voxels in the reference region (the false-positive
  background rate), which is what makes the number interpretable.

Relaxivities differ between solution and cells (compartmentalised iron relaxes T2* more per
mM than dispersed iron), so the concentration is an *apparent* iron concentration under the
stated relaxivity; the relaxivity used travels with the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ...errors import DataError, FitError

__all__ = [
    "FERUMOXYTOL_RELAXIVITY",
    "FERUMOXYTOL_RELAXIVITY_SD",
    "IRON_MOLAR_MASS_G_PER_MOL",
    "SignalVoids",
    "delta_rate",
    "iron_concentration_mM",
    "iron_uptake_table",
    "resolve_relaxivity",
    "signal_voids",
]

#: Molar mass of iron, g/mol (mM Fe × 55.845 = mg Fe / L).
IRON_MOLAR_MASS_G_PER_MOL: Final[float] = 55.845

#: Ferumoxytol relaxivities in 1/(mM Fe · s), human plasma at 37 °C, by field strength in T and
#: by rate (``"r1"``, ``"r2"``, ``"r2star"``). Knobloch et al., "Relaxivity of ferumoxytol at
#: 1.5 T and 3.0 T", Invest Radiol 2018;53:257-263, doi:10.1097/RLI.0000000000000434: r2* in
#: plasma 64.4 ± 2.5 (1.5 T) and 55.7 ± 4.4 (3 T) (the saline values of the same abstract,
#: 60.4 and 57.0, were tabulated here before issue 24). r1 and r2 as entered during development
#: (plasma, same paper; verify against the paper before clinical use). Tissue-bound
#: (intracellular) ferumoxytol has other relaxivities; pass your own ``relaxivity`` when a
#: calibration exists.
FERUMOXYTOL_RELAXIVITY: Final[dict[float, dict[str, float]]] = {
    1.5: {"r1": 19.0, "r2": 64.9, "r2star": 64.4},
    3.0: {"r1": 9.5, "r2": 65.2, "r2star": 55.7},
}

#: Standard deviations of the tabulated relaxivities, same units and keys, where the source
#: gives them (Knobloch et al. 2018, plasma r2*: ± 2.5 at 1.5 T, ± 4.4 at 3 T; 3.9 % and 7.9 %,
#: the spread to expect between plasma samples, not a standard error of the mean).
FERUMOXYTOL_RELAXIVITY_SD: Final[dict[float, dict[str, float]]] = {
    1.5: {"r2star": 2.5},
    3.0: {"r2star": 4.4},
}


def _as_map(x: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 0:
        raise DataError(f"expected an image array, got a scalar {float(arr)!r}", field=name)
    return arr


def delta_rate(pre_per_s: npt.ArrayLike, post_per_s: npt.ArrayLike) -> np.ndarray:
    """Voxel-wise rate change ``post - pre`` (1/s) on co-registered maps.

    Parameters
    ----------
    pre_per_s, post_per_s : array_like, same shape
        R2* (or R2, R1) maps in 1/s before and after the contrast agent, on the same grid
        (register the visits first). Non-finite voxels stay NaN.

    Returns
    -------
    ndarray, same shape, float64
    """
    pre = _as_map(pre_per_s, "pre")
    post = _as_map(post_per_s, "post")
    if pre.shape != post.shape:
        raise DataError(
            f"pre- and post-contrast maps must share a grid, got shapes {pre.shape} and "
            f"{post.shape}; register the visits first",
            field="post",
        )
    return post - pre


def iron_concentration_mM(
    delta_rate_per_s: npt.ArrayLike,
    *,
    relaxivity: float | None = None,
    field_strength_t: float | None = None,
    rate: Literal["r2star", "r2", "r1"] = "r2star",
) -> np.ndarray:
    """Apparent iron concentration from a rate change, ``[Fe] = ΔR / r`` (mM Fe).

    Linear relaxivity in the fast-exchange regime (e.g. Rohrer et al., Invest Radiol 2005,
    doi:10.1097/01.rli.0000184756.66360.d3 for the definition and measurement of r1/r2).

    Parameters
    ----------
    delta_rate_per_s : array_like
        ΔR2*, ΔR2 or ΔR1 in 1/s (from :func:`delta_rate`).
    relaxivity : float, optional
        Relaxivity in 1/(mM Fe · s). Give it, or give ``field_strength_t`` to use the
        ferumoxytol plasma value of :data:`FERUMOXYTOL_RELAXIVITY` for ``rate``.
    field_strength_t : float, optional
        1.5 or 3.0 (T); only used when ``relaxivity`` is None.
    rate : {"r2star", "r2", "r1"}
        Which relaxivity of the table to use.

    Returns
    -------
    ndarray
        Iron concentration in mM (negative values are kept: they show noise or
        mis-registration and must not be clipped away before averaging).
    """
    r = resolve_relaxivity(relaxivity=relaxivity, field_strength_t=field_strength_t, rate=rate)
    return np.asarray(delta_rate_per_s, dtype=float) / r


def resolve_relaxivity(
    *,
    relaxivity: float | None,
    field_strength_t: float | None,
    rate: str = "r2star",
) -> float:
    """The relaxivity to use (1/(mM·s)), from an explicit value or the ferumoxytol table."""
    if relaxivity is not None:
        r = float(relaxivity)
        if not np.isfinite(r) or r <= 0:
            raise FitError(
                f"must be a positive number in 1/(mM*s), got {relaxivity!r}", field="relaxivity"
            )
        return r
    if field_strength_t is None:
        raise FitError(
            "give a relaxivity in 1/(mM*s) or a field strength (1.5 or 3.0 T) to use the "
            "ferumoxytol plasma values",
            field="relaxivity",
        )
    b0 = float(field_strength_t)
    for key, table in FERUMOXYTOL_RELAXIVITY.items():
        if abs(key - b0) < 0.05:
            if rate not in table:
                raise FitError(
                    f"unknown rate {rate!r}; expected one of {sorted(table)}", field="rate"
                )
            return table[rate]
    raise FitError(
        f"no tabulated ferumoxytol relaxivity at {b0:g} T (have "
        f"{sorted(FERUMOXYTOL_RELAXIVITY)} T); pass relaxivity explicitly",
        field="field_strength_t",
    )


def iron_uptake_table(
    delta_rate_per_s: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    relaxivity: float | None = None,
    field_strength_t: float | None = None,
    rate: Literal["r2star", "r2", "r1"] = "r2star",
    voxel_volume_ml: float = 1.0,
    uptake_threshold_per_s: float | None = None,
) -> dict[str, np.ndarray]:
    """Per-region iron-uptake statistics, as columns (one row per label ≥ 1).

    Parameters
    ----------
    delta_rate_per_s : array_like, shape (X, Y, Z)
        Rate change map (1/s).
    labels : array_like of int, same shape
        Region (lesion) labels, 0 = background.
    relaxivity, field_strength_t, rate
        As in :func:`iron_concentration_mM`.
    voxel_volume_ml : float
        Volume of one voxel in mL (``Volume.voxel_volume_ml``).
    uptake_threshold_per_s : float, optional
        ΔR above which a voxel counts as iron-laden (e.g. 2.77·σ_ΔR from a repeatability
        study, Bland & Altman's repeatability coefficient). Without it the fraction column
        is omitted rather than invented.

    Returns
    -------
    dict of str to ndarray
        ``label``, ``n_voxels``, ``volume_ml``, ``delta_rate_mean_per_s``,
        ``delta_rate_median_per_s``, ``iron_mean_mM``, ``iron_median_mM``,
        ``iron_total_umol`` (mean mM × volume), ``relaxivity_per_mM_per_s`` and, with a
        threshold, ``uptake_fraction``. NaN voxels are ignored (``n_valid`` counts the rest).
    """
    d = _as_map(delta_rate_per_s, "delta_rate")
    lab = np.asarray(labels)
    if lab.shape != d.shape:
        raise DataError(
            f"labels shape {lab.shape} does not match the map {d.shape}", field="labels"
        )
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(np.isfinite(lab)) or not np.array_equal(lab, np.round(lab)):
            raise DataError("labels must hold whole numbers", field="labels")
        lab = lab.astype(np.int64)
    if not np.isfinite(voxel_volume_ml) or voxel_volume_ml <= 0:
        raise FitError(f"must be > 0, got {voxel_volume_ml!r}", field="voxel_volume_ml")
    r = resolve_relaxivity(relaxivity=relaxivity, field_strength_t=field_strength_t, rate=rate)
    ids = np.unique(lab[lab > 0])
    cols: dict[str, list[float]] = {
        k: []
        for k in (
            "label",
            "n_voxels",
            "n_valid",
            "volume_ml",
            "delta_rate_mean_per_s",
            "delta_rate_median_per_s",
            "iron_mean_mM",
            "iron_median_mM",
            "iron_total_umol",
        )
    }
    frac: list[float] = []
    for i in ids:
        vals = d[lab == i]
        ok = vals[np.isfinite(vals)]
        n = vals.size
        mean = float(ok.mean()) if ok.size else np.nan
        med = float(np.median(ok)) if ok.size else np.nan
        vol = n * voxel_volume_ml
        cols["label"].append(int(i))
        cols["n_voxels"].append(n)
        cols["n_valid"].append(ok.size)
        cols["volume_ml"].append(vol)
        cols["delta_rate_mean_per_s"].append(mean)
        cols["delta_rate_median_per_s"].append(med)
        cols["iron_mean_mM"].append(mean / r)
        cols["iron_median_mM"].append(med / r)
        # mM × mL = µmol
        cols["iron_total_umol"].append(mean / r * vol)
        if uptake_threshold_per_s is not None:
            frac.append(float((ok > uptake_threshold_per_s).mean()) if ok.size else np.nan)
    out = {k: np.asarray(v) for k, v in cols.items()}
    out["label"] = out["label"].astype(np.int64)
    out["n_voxels"] = out["n_voxels"].astype(np.int64)
    out["n_valid"] = out["n_valid"].astype(np.int64)
    out["relaxivity_per_mM_per_s"] = np.full(ids.size, r)
    if uptake_threshold_per_s is not None:
        out["uptake_fraction"] = np.asarray(frac)
    return out


@dataclass(frozen=True)
class SignalVoids:
    """Hypointense signal voids in a region, measured against a reference region.

    Attributes
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
        Void voxels inside the region.
    components : ndarray of int, shape (X, Y, Z)
        Connected-component label of each void (0 = none).
    n_voids : int
        Number of voids (components of at least ``min_voxels`` voxels).
    void_volume_ml : float
        Total volume of the voids.
    void_fraction : float
        Void voxels / region voxels.
    reference_void_fraction : float
        Fraction of reference-region voxels under the same threshold, in components of at
        least ``min_voxels`` voxels (as in the region): the false-positive rate to compare
        ``void_fraction`` with.
    excess_void_fraction : float
        ``void_fraction - reference_void_fraction``.
    threshold : float
        Intensity threshold used (``mean_ref - k * sd_ref``).
    void_sizes_voxels : ndarray of int
        Size of each void, in voxels.
    """

    mask: np.ndarray
    components: np.ndarray
    n_voids: int
    void_volume_ml: float
    void_fraction: float
    reference_void_fraction: float
    excess_void_fraction: float
    threshold: float
    void_sizes_voxels: np.ndarray


def signal_voids(
    image: npt.ArrayLike,
    region: npt.ArrayLike,
    reference: npt.ArrayLike,
    *,
    k: float = 2.0,
    min_voxels: int = 1,
    connectivity: Literal[1, 2, 3] = 3,
    voxel_volume_ml: float = 1.0,
) -> SignalVoids:
    """Count and measure micro-particle (MPIO) signal voids in a T2*-weighted image.

    A voxel of ``region`` is a void voxel when its intensity is below
    ``mean(reference) - k * sd(reference)`` (the thresholding of McAteer et al., Nat Med
    2007;13:1253-1258, there with the contralateral hemisphere as reference). Voids
    are connected components of void voxels (``connectivity`` 1 = faces, 3 = faces, edges
    and corners), smaller ones than ``min_voxels`` are dropped. The same threshold, the same
    connectivity and the same ``min_voxels`` applied to the reference region give the
    background rate of dark voxels (for Gaussian tissue texture about 2.3 % at k = 2 with
    ``min_voxels=1``, less with larger ``min_voxels``): compare ``void_fraction`` with it, or
    use ``excess_void_fraction``, ~0 in particle-free tissue.

    Parameters
    ----------
    image : array_like, shape (X, Y, Z)
        T2*-weighted magnitude image (one echo, or an echo combination).
    region, reference : array_like of bool, shape (X, Y, Z)
        Region to search (e.g. a lesion) and a reference region without particles (e.g.
        contralateral tissue or a pre-injection scan of the same region); at least 10
        reference voxels.
    k : float, default 2
        Threshold in reference standard deviations.
    min_voxels : int, default 1
    connectivity : {1, 2, 3}, default 3
    voxel_volume_ml : float, default 1

    Returns
    -------
    SignalVoids
    """
    img = _as_map(image, "image")
    reg = np.asarray(region, dtype=bool)
    ref = np.asarray(reference, dtype=bool)
    for name, m in (("region", reg), ("reference", ref)):
        if m.shape != img.shape:
            raise DataError(
                f"{name} mask shape {m.shape} does not match the image {img.shape}", field=name
            )
    if not np.isfinite(k) or k <= 0:
        raise FitError(f"must be > 0, got {k!r}", field="k")
    if min_voxels < 1:
        raise FitError(f"must be >= 1, got {min_voxels!r}", field="min_voxels")
    if connectivity not in (1, 2, 3):
        raise FitError(f"must be 1, 2 or 3, got {connectivity!r}", field="connectivity")
    if not reg.any():
        raise DataError("region mask is empty", field="region")
    ref_vals = img[ref & np.isfinite(img)]
    if ref_vals.size < 10:
        raise DataError(
            f"reference region needs at least 10 finite voxels, got {ref_vals.size}",
            field="reference",
        )
    if np.any(reg & ref):
        raise DataError("region and reference overlap; use disjoint masks", field="reference")
    mu, sd = float(ref_vals.mean()), float(ref_vals.std(ddof=1))
    thr = mu - k * sd
    dark = reg & np.isfinite(img) & (img < thr)
    structure = ndimage.generate_binary_structure(img.ndim, connectivity)
    comp, n = ndimage.label(dark, structure=structure)
    sizes = np.bincount(comp.ravel())[1:] if n else np.zeros(0, dtype=np.int64)
    keep = np.flatnonzero(sizes >= min_voxels) + 1
    keep_mask = np.isin(comp, keep)
    # relabel kept components 1..m
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    comp_kept = relabel[comp]
    n_void_vox = int(keep_mask.sum())
    frac = n_void_vox / int(reg.sum())
    # the reference's dark voxels pass the same component-size filter as the region's, so
    # that particle-free tissue shows an excess of ~0 whatever min_voxels is (issue 24)
    ref_dark = ref & np.isfinite(img) & (img < thr)
    ref_comp, ref_n = ndimage.label(ref_dark, structure=structure)
    ref_sizes = np.bincount(ref_comp.ravel())[1:] if ref_n else np.zeros(0, dtype=np.int64)
    ref_kept = int(ref_sizes[ref_sizes >= min_voxels].sum())
    ref_frac = ref_kept / ref_vals.size
    return SignalVoids(
        mask=keep_mask,
        components=comp_kept,
        n_voids=int(keep.size),
        void_volume_ml=n_void_vox * float(voxel_volume_ml),
        void_fraction=frac,
        reference_void_fraction=ref_frac,
        excess_void_fraction=frac - ref_frac,
        threshold=thr,
        void_sizes_voxels=sizes[keep - 1].astype(np.int64),
    )
