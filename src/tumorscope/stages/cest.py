"""CEST stage: saturation-transfer series of a visit → B0/B1, MTRasym, Lorentzian and AREX maps.

Backs the pipeline's ``fit_cest`` step and ``tumorscope fit cest`` (both call
:func:`fit_cest`, so they write the same files under the same names).

Inputs by role: ``cest`` (the CEST Z-spectrum series; more series of other B1 levels under
roles starting with ``cest_``), optionally ``wassr`` (B0) and ``wasabi`` (B0 and relative B1).
Every series' volumes with ``|offset| >= M0OffsetThreshold`` are its M0 images
(:func:`tumorscope.models.cest.normalise`, interpolated between several).

Order of work (decisions, see ``docs/cest.md``):

1. B0 per voxel: from WASABI if acquired, else WASSR, else from the CEST spectrum itself
   (:func:`~tumorscope.models.cest.wassr_b0`); written as ``cest_B0`` (ppm). WASABI's own
   maps (``wasabi_rB1``, ``wasabi_B0`` …) are written by its fit.
2. Every contrast uses the B0-corrected axis: ``cest_MTRasym_<x>ppm`` at each offset of
   the options (``3p5`` for 3.5 ppm), the 5-pool Lorentzian fit
   (``cest_lorentzian_<param>``, started at the B0 map).
3. With a T1 map of the same visit (ms, same grid): ``cest_MTRRex_amide`` and
   ``cest_AREX_amide`` (1/s) from the Lorentzian fit (label: the full fitted spectrum at the
   amide offset; reference: the fit without the amide pool).
4. With two or more CEST B1 levels and a WASABI rB1 map: ``cest_MTRasym_3p5ppm_B1corr``,
   APT MTRasym interpolated per voxel at the target B1 (default: the ``cest`` series' B1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._warnings import capture_warnings
from ..errors import DataError, FitError, TumorscopeWarning
from ..files import sidecar_of, write_map
from ..fitting.status import FitStatus
from ..models.base import FitResult
from ..models.cest import (
    WASABI,
    CESTLorentzian,
    b1_correct,
    mtr_asym,
    mtr_rex,
    normalise_rows,
)
from ..models.cest import arex as arex_of
from ..models.cest import wassr_b0 as wassr_b0_of
from ..models.cest.lorentzian import POOLS
from ..protocol import CESTProtocol
from ..volume import Volume
from .base import MapFile, SeriesInput, StageResult
from .fit import input_record, load_mask

__all__ = [
    "CEST_ROLES",
    "FIT_REGIONS",
    "CESTOptions",
    "fit_cest",
    "lesion_region",
    "offset_tag",
    "t1_on_grid",
]

#: Roles the stage reads (and any role starting with ``cest_``: more B1 levels).
CEST_ROLES: tuple[str, ...] = ("cest", "wassr", "wasabi")

MaskLike = Volume | np.ndarray | str | os.PathLike[str] | None

#: Values of :attr:`CESTOptions.fit_region`.
FIT_REGIONS: tuple[str, ...] = ("lesions", "body")

#: Voxels whose M0 is below this fraction of the 99th percentile of M0 are background:
#: their Z is NaN and nothing is fitted there (noise spectra give meaningless contrasts).
BACKGROUND_FRACTION = 0.1


@dataclass(frozen=True)
class CESTOptions:
    """Options of the CEST stage; the defaults are the pipeline's.

    Attributes
    ----------
    mtr_asym_ppm : tuple of float
        Offsets of the MTRasym maps (APT 3.5, amines 2.0; glucose 1.2/2.0/3.0; LRP 3.7).
    lorentzian : bool
        Fit the 5-pool Lorentzian model (water, MT, amide, amine, NOE).
    b1_target_ut : float, optional
        B1 at which the B1-corrected APT contrast is reported (default: the ``cest`` B1).
    chunk_voxels : int, optional
    fit_region : {"lesions", "body"}
        Where the 5-pool Lorentzian (and MTRRex/AREX, computed from it) is fitted: inside
        the lesions dilated by ``region_margin_mm`` (default; the whole body when no lesion
        map is given), or on every body voxel. B0, MTRasym and the B1-corrected APT are
        always mapped on the whole body (they are cheap). Outside the region the Lorentzian
        maps are NaN with status ``NOT_FITTED`` (255); the sidecars' provenance records the
        region (``fit_region``).
    region_margin_mm : float
        Margin around the lesions (mm): voxels whose centre lies within this distance of a
        lesion voxel centre are fitted (a small misregistration between the lesion map and
        the CEST series, and a rim of context in the report's figure).
    """

    mtr_asym_ppm: tuple[float, ...] = (3.5, 2.0)
    lorentzian: bool = True
    b1_target_ut: float | None = None
    chunk_voxels: int | None = None
    fit_region: str = "lesions"
    region_margin_mm: float = 3.0

    def __post_init__(self) -> None:
        vals = tuple(float(v) for v in self.mtr_asym_ppm)
        if not vals or not all(np.isfinite(v) and v > 0 for v in vals):
            raise FitError(
                f"MTRasym offsets must be positive ppm, got {self.mtr_asym_ppm!r}",
                field="mtr_asym_ppm",
            )
        object.__setattr__(self, "mtr_asym_ppm", vals)
        if self.fit_region not in FIT_REGIONS:
            raise FitError(
                f"unknown CEST fit region {self.fit_region!r}; expected one of {FIT_REGIONS}",
                field="fit_region",
            )
        margin = float(self.region_margin_mm)
        if not (np.isfinite(margin) and margin >= 0):
            raise FitError(
                f"the region margin must be >= 0 mm, got {self.region_margin_mm!r}",
                field="region_margin_mm",
            )
        object.__setattr__(self, "region_margin_mm", margin)


def offset_tag(x: float) -> str:
    """``3.5 → "3p5"``, ``2.0 → "2"``: an offset in a file name."""
    return f"{x:g}".replace(".", "p").replace("-", "m")


def _protocol(s: SeriesInput, purpose: str | None = None) -> CESTProtocol:
    p = s.protocol
    if not isinstance(p, CESTProtocol):
        raise DataError(
            "not a saturation-transfer series (no CEST protocol from its sidecar)",
            file=s.label,
            field=s.role,
        )
    if purpose is not None and p.purpose != purpose:
        raise DataError(
            f"expected a {purpose} series, the sidecar says {p.purpose}", file=s.label, field=s.role
        )
    return p


def _m0_floor(vol: Volume, p: CESTProtocol, label: str) -> tuple[np.ndarray, float]:
    """The mean M0 image of a series and its background floor (after checking its shape)."""
    if vol.data.ndim != 4 or vol.n_measurements != p.n_measurements:
        raise DataError(
            f"the series has shape {vol.shape} but the protocol has {p.n_measurements} offsets",
            file=label,
            field="dim[4]",
        )
    m0 = np.zeros(vol.spatial_shape)
    for k in np.flatnonzero(p.m0_mask):
        m0 += vol.data[..., k]
    m0 /= max(int(np.count_nonzero(p.m0_mask)), 1)
    finite = m0[np.isfinite(m0)]
    floor = BACKGROUND_FRACTION * float(np.percentile(finite, 99)) if finite.size else 0.0
    return m0, floor


@dataclass(frozen=True)
class _Voxels:
    """Some voxels of a 3-D grid, as rows: flat indices in the grid's Fortran (NIfTI) order,
    so that a NIfTI series gives its rows volume by volume from contiguous memory."""

    shape: tuple[int, ...]
    idx: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray) -> _Voxels:
        return cls(tuple(mask.shape), np.flatnonzero(np.ravel(mask, order="F")))

    @property
    def n(self) -> int:
        return int(self.idx.size)

    def mask(self) -> np.ndarray:
        m = np.zeros(int(np.prod(self.shape)), bool)
        m[self.idx] = True
        return m.reshape(self.shape, order="F")

    def subset(self, rows: np.ndarray) -> _Voxels:
        return _Voxels(self.shape, self.idx[rows])

    def within(self, mask: np.ndarray) -> np.ndarray:
        """Which rows lie in the 3-D ``mask``."""
        return np.ravel(mask, order="F")[self.idx]

    def take(self, image: np.ndarray) -> np.ndarray:
        """The values of a 3-D image at these voxels."""
        return np.ravel(image, order="F")[self.idx]

    def rows(self, data: np.ndarray) -> np.ndarray:
        """``(n, N)`` float32 rows of a 4-D series (one volume at a time if F-ordered)."""
        n_vol = data.shape[-1]
        out = np.empty((self.n, n_vol), np.float32)
        if data.flags.f_contiguous:
            flat = data.reshape(-1, n_vol, order="F")  # a view
            for k in range(n_vol):
                out[:, k] = flat[:, k][self.idx]
        else:
            out[:] = data[np.unravel_index(self.idx, self.shape, order="F")]
        return out

    def put(self, values: np.ndarray, dtype: Any = np.float32, fill: Any = np.nan) -> np.ndarray:
        """A 3-D image holding ``values`` at these voxels, ``fill`` elsewhere."""
        out = np.full(int(np.prod(self.shape)), fill, dtype=dtype)
        out[self.idx] = values
        return out.reshape(self.shape, order="F")


def _rows(vol: Volume, p: CESTProtocol, vox: _Voxels, floor: float) -> np.ndarray:
    """Z of a series at the voxels ``vox`` (float32 rows, C-ordered: what the compiled B0,
    spline and Lorentzian loops take without a copy; NaN where M0 is below ``floor``)."""
    return normalise_rows(vol.data, vox.idx, p.m0_mask, m0_floor=floor)


def lesion_region(
    lesions: Volume | None,
    like: Volume,
    *,
    margin_mm: float,
    alignment: Any = None,
) -> np.ndarray | None:
    """The lesion voxels on the grid of ``like``, dilated by ``margin_mm``; None without lesions.

    ``lesions`` is a label (or binary) map; on another grid, or with an ``alignment``
    (reference world -> series world, as the ``align`` step records it), it is resampled
    onto ``like`` by nearest label (:func:`tumorscope.preprocessing.resample_mask`) exactly
    as ``measure`` moves the masks. The dilation takes every voxel whose centre lies within
    ``margin_mm`` of a lesion voxel centre (Euclidean distance in mm on the voxel spacing).
    """
    if lesions is None:
        return None
    from scipy import ndimage

    from ..preprocessing import resample_mask

    lab = lesions
    if lab.data.ndim == 4 and lab.data.shape[3] == 1:
        lab = lab.with_data(lab.data[..., 0])
    grid = Volume(np.zeros(like.spatial_shape, np.uint8), like.affine)
    if alignment is not None:
        back = np.linalg.inv(np.asarray(alignment, dtype=np.float64))
        lab = resample_mask(lab, grid, transform=back)
    elif lab.spatial_shape != like.spatial_shape or not lab.same_grid(grid):
        lab = resample_mask(lab, grid)
    m = np.asarray(lab.data) != 0
    if margin_mm <= 0 or not m.any():
        return m
    zooms = np.sqrt(np.sum(np.asarray(like.affine)[:3, :3] ** 2, axis=0))
    reach = np.ceil(margin_mm / zooms).astype(int)
    # the distance transform on the bounding box of the lesions grown by the margin
    idx = np.argwhere(m)
    lo = np.maximum(idx.min(0) - reach - 1, 0)
    hi = np.minimum(idx.max(0) + reach + 2, m.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    dist = ndimage.distance_transform_edt(~m[box], sampling=zooms)
    out = np.zeros_like(m)
    out[box] = dist <= margin_mm + 1e-6
    return out


def fit_cest(
    series: Mapping[str, SeriesInput],
    *,
    out_dir: str | os.PathLike[str],
    prefix: str,
    options: CESTOptions | None = None,
    mask: MaskLike = None,
    t1_map: str | os.PathLike[str] | None = None,
    t1_label: str | None = None,
    lesions: Volume | str | os.PathLike[str] | None = None,
    lesion_alignment: Any = None,
) -> StageResult:
    """Fit the saturation-transfer series of a visit and write the CEST maps.

    Every protocol and image is read and checked before anything is written.

    Parameters
    ----------
    series : mapping of role to SeriesInput
        ``cest`` (required), ``cest_*`` (more B1 levels), ``wassr``, ``wasabi``; other
        roles are ignored.
    out_dir : path-like, keyword-only
    prefix : str, keyword-only
        File name prefix of the visit (``sub-001_ses-01_``).
    options : CESTOptions, keyword-only
    mask : Volume, ndarray, path or None, keyword-only
        Voxels to map (default all; background voxels, with M0 below 10 % of its 99th
        percentile, are left out in any case).
    t1_map : path, keyword-only, optional
        T1 map (ms) on the CEST grid, for MTRRex/AREX.
    t1_label : str, keyword-only, optional
        How the provenance names the T1 map (default: its path; the pipeline gives its path
        relative to the output folder, so that results do not depend on where they are).
    lesions : Volume or path, keyword-only, optional
        Lesion label map (0 = background) for ``options.fit_region == "lesions"``: the
        Lorentzian is fitted inside the lesions dilated by ``options.region_margin_mm``
        (:func:`lesion_region`; resampled onto the CEST grid if on another one). Without it
        the Lorentzian is fitted on the whole body (recorded, with a warning). A map with no
        lesion voxel: nothing is fitted (the Lorentzian maps are written empty).
    lesion_alignment : 4x4 array, keyword-only, optional
        Alignment of the CEST series (reference world -> series world) that moves the
        lesions onto it, as ``measure`` applies it.

    Returns
    -------
    StageResult

    Raises
    ------
    DataError
        No ``cest`` series, series on different grids, a non-CEST protocol, a T1 map on
        another grid (nothing is written).
    """
    opts = options or CESTOptions()
    if "cest" not in series:
        raise DataError(f"no 'cest' series (found {sorted(series)})", field="cest")
    main = series["cest"]
    mp = _protocol(main)
    vol = main.load()
    m0, floor = _m0_floor(vol, mp, main.label)
    m = load_mask(mask, vol)
    inside = m0 > floor  # background (low M0) left out
    if m is not None:
        inside &= np.asarray(m, bool)
    vox = _Voxels.of(inside)
    del m0
    # the body's spectra as rows (voxels, offsets): every product is computed on these
    zb = _rows(vol, mp, vox, floor)
    fin = np.all(np.isfinite(zb), axis=1)
    if not fin.all():
        vox, zb = vox.subset(fin), zb[fin]
    inside = vox.mask()
    off = mp.saturated_offsets_ppm
    extra = {r: s for r, s in sorted(series.items()) if r.startswith("cest_")}
    levels: list[tuple[float, np.ndarray]] = [(mp.b1_ut, zb)]
    for _r, s in extra.items():
        p = _protocol(s)
        v = s.load()
        _same_grid(v, vol, s.label)
        if not np.allclose(p.saturated_offsets_ppm, off):
            raise DataError(
                "the offsets differ from those of the 'cest' series", file=s.label, field="offsets"
            )
        levels.append((p.b1_ut, _rows(v, p, vox, _m0_floor(v, p, s.label)[1])))
    wasabi = series.get("wasabi")
    wassr = series.get("wassr")
    wz = None
    if wasabi is not None:
        wvol = wasabi.load()
        _same_grid(wvol, vol, wasabi.label)
        wp = _protocol(wasabi, "wasabi")
        wz = _rows(wvol, wp, vox, _m0_floor(wvol, wp, wasabi.label)[1])
    wassr_z = None
    if wassr is not None:
        sp = _protocol(wassr, "wassr")
        sv = wassr.load()
        _same_grid(sv, vol, wassr.label)
        wassr_z = (_rows(sv, sp, vox, _m0_floor(sv, sp, wassr.label)[1]), sp.saturated_offsets_ppm)
    t1 = None
    if t1_map is not None:
        t1v = Volume.from_nifti(t1_map)
        _same_grid(t1v, vol, str(t1_map))
        t1 = np.asarray(t1v.data, dtype=float).reshape(vol.spatial_shape)
    les_vol = Volume.from_nifti(lesions) if isinstance(lesions, str | os.PathLike) else lesions
    region, region_info = _fit_region(opts, les_vol, vol, lesion_alignment, inside)
    in_region = vox.within(region)  # rows of the fit region
    rvox = vox.subset(in_region)

    out = StageResult()
    if region_info.get("note"):
        out.warnings.append(str(region_info["note"]))
    if opts.lorentzian:
        where = (
            f"the lesions dilated by {opts.region_margin_mm:g} mm"
            if region_info["region"] == "lesions"
            else "the whole body"
        )
        out.warnings.append(
            f"CEST Lorentzian fitted in {region_info['n_voxels']:,} of "
            f"{region_info['n_body_voxels']:,} body voxels ({where}); NaN, status 255 elsewhere"
        )
    out_dir = Path(out_dir)
    files = {"series": main.path}
    used = {**{r: s.path for r, s in extra.items()}}
    if wasabi is not None:
        used["wasabi"] = wasabi.path
    if wassr is not None:
        used["wassr"] = wassr.path
    hashes = {k: input_record(v) for k, v in {**files, **used}.items()}
    base_prov: dict[str, Any] = {
        "stage": "cest",
        "protocol": mp.to_dict(),
        "options": {"mtr_asym_ppm": list(opts.mtr_asym_ppm), "lorentzian": opts.lorentzian},
        "inputs": hashes,
    }

    # 1. B0 (and rB1)
    rb1 = None
    if wasabi is not None and wz is not None:
        wres, wfit = _fit(
            WASABI.from_protocol(wp),
            wz,
            vox,
            vol,
            out_dir,
            f"{prefix}wasabi_",
            {"series": wasabi.path},
            opts,
            "wasabi",
        )
        out.extend(wres)
        b0 = np.asarray(wfit.maps["B0"], dtype=float)
        rb1 = np.asarray(wfit.maps["rB1"], dtype=float)
        b0_source = "wasabi"
    elif wassr_z is not None:
        b0 = _finite_rows(wassr_b0_of, wassr_z[0], wassr_z[1])
        b0_source = "wassr"
    else:
        b0 = _finite_rows(wassr_b0_of, zb, off)
        b0_source = "cest"
    prov = {**base_prov, "b0_source": b0_source}
    out.extend(
        _write(out_dir, prefix, "B0", vox.put(b0), "ppm", f"B0 shift (from {b0_source})", prov, vol)
    )

    # 2. MTRasym on the B0-corrected axis
    b0_ok = np.isfinite(b0)
    b0_use = np.where(b0_ok, b0, 0.0)
    asym = mtr_asym(zb, off, list(opts.mtr_asym_ppm), b0_ppm=b0_use)
    for i, x in enumerate(opts.mtr_asym_ppm):
        out.extend(
            _write(
                out_dir,
                prefix,
                f"MTRasym_{offset_tag(x)}ppm",
                vox.put(np.where(b0_ok, asym[:, i], np.nan)),
                "1",
                f"MTRasym Z(-{x:g}) - Z(+{x:g}) ppm, B0-corrected",
                prov,
                vol,
            )
        )
    del asym

    # 3. Lorentzian (+ MTRRex/AREX) in the fit region
    if opts.lorentzian:
        lmodel = CESTLorentzian(off)
        lres, lfit = _fit(
            lmodel,
            zb[in_region],
            rvox,
            vol,
            out_dir,
            f"{prefix}cest_lorentzian_",
            files,
            opts,
            "cest",
            voxel_inputs={"b0": b0_use[in_region]},
            provenance={"fit_region": region_info},
        )
        out.extend(lres)
        if t1 is not None:
            P = np.stack([np.asarray(lfit.maps[n], float) for n in lmodel.parameter_names], -1)
            ia = 4 + 3 * [p[0] for p in POOLS].index("amide")
            at = P[:, 1] + P[:, ia + 2]  # B0 + amide offset: the amide line
            noamide = P.copy()
            noamide[:, ia] = 0.0
            lab, ref = _at(P, at), _at(noamide, at)  # NaN where the fit is NaN
            t1_rec = input_record(Path(t1_map))  # type: ignore[arg-type]
            if t1_label is not None:
                t1_rec["path"] = t1_label
            tprov = {**prov, "inputs": {**hashes, "t1": t1_rec}, "fit_region": region_info}
            out.extend(
                _write(
                    out_dir,
                    prefix,
                    "MTRRex_amide",
                    rvox.put(mtr_rex(lab, ref)),
                    "1",
                    "MTRRex of the amide pool (Lorentzian label/reference)",
                    tprov,
                    vol,
                )
            )
            out.extend(
                _write(
                    out_dir,
                    prefix,
                    "AREX_amide",
                    rvox.put(arex_of(lab, ref, rvox.take(t1))),
                    "1/s",
                    "AREX of the amide pool (MTRRex x R1obs)",
                    tprov,
                    vol,
                )
            )

    # 4. B1 correction of APT from >= 2 levels
    if len(levels) >= 2:
        if rb1 is None:
            out.warnings.append("CEST at several B1 levels but no WASABI rB1 map: no B1 correction")
        else:
            b1s = [b for b, _ in levels]
            apt = np.stack([mtr_asym(zz, off, 3.5, b0_ppm=b0_use) for _, zz in levels], -1)
            target = opts.b1_target_ut if opts.b1_target_ut is not None else mp.b1_ut
            corr = b1_correct(apt, b1s, np.where(np.isfinite(rb1), rb1, np.nan), target)
            out.extend(
                _write(
                    out_dir,
                    prefix,
                    "MTRasym_3p5ppm_B1corr",
                    vox.put(corr),
                    "1",
                    f"APT MTRasym at B1 {target:g} uT (corrected from {b1s} uT)",
                    {**prov, "b1_levels_ut": b1s, "b1_target_ut": target},
                    vol,
                )
            )
    return out


def _fit_region(
    opts: CESTOptions,
    lesions: Volume | None,
    vol: Volume,
    alignment: Any,
    inside: np.ndarray,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The voxels of the Lorentzian fit and the record of how they were chosen."""
    why = (
        f"status {int(FitStatus.NOT_FITTED)} (NOT_FITTED), NaN: outside the fit region or "
        "background (M0 below 10 % of its 99th percentile)"
    )
    if opts.fit_region == "lesions" and lesions is not None:
        les = lesion_region(lesions, vol, margin_mm=opts.region_margin_mm, alignment=alignment)
        assert les is not None
        region = les & inside
        info: dict[str, Any] = {
            "region": "lesions",
            "margin_mm": opts.region_margin_mm,
            "aligned": alignment is not None,
            "n_voxels": int(region.sum()),
            "n_body_voxels": int(inside.sum()),
            "outside": why,
        }
        if not region.any():
            info["note"] = "no lesion voxel on the CEST grid: the Lorentzian maps are empty"
        return region, info
    info = {
        "region": "body",
        "n_voxels": int(inside.sum()),
        "n_body_voxels": int(inside.sum()),
        "outside": why,
    }
    if opts.fit_region == "lesions":
        info["note"] = "no lesion map: the CEST Lorentzian is fitted on the whole body"
    return inside.copy(), info


def _finite_rows(fn: Any, zb: np.ndarray, off: np.ndarray) -> np.ndarray:
    """``fn(rows, off)`` on the rows of ``zb`` without a non-finite value; NaN elsewhere."""
    out = np.full(zb.shape[0], np.nan)
    ok = np.all(np.isfinite(zb), axis=-1)
    if ok.any():
        out[ok] = fn(zb[ok] if not ok.all() else zb, off)
    return out


def _at(params: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Lorentzian Z of each voxel's parameters at its own offset ``at``."""
    n_extra = (params.shape[1] - 4) // 3
    f = params[:, 0].copy()
    for i in range(n_extra + 1):
        if i == 0:
            a, g, x = params[:, 2], params[:, 3], at - params[:, 1]
        else:
            j = 4 + 3 * (i - 1)
            a, g, x = params[:, j], params[:, j + 1], at - params[:, 1] - params[:, j + 2]
        q = 0.25 * g * g
        f -= a * q / (q + x * x)
    return f


def _same_grid(v: Volume, like: Volume, label: str) -> None:
    if v.spatial_shape != like.spatial_shape or not like.same_grid(v):
        raise DataError(
            f"grid {v.spatial_shape} differs from the 'cest' series grid {like.spatial_shape}; "
            "resample it first",
            file=label,
            field="affine",
        )


def _write(
    out_dir: Path,
    prefix: str,
    name: str,
    data: np.ndarray,
    unit: str,
    description: str,
    provenance: Mapping[str, Any],
    like: Volume,
) -> StageResult:
    path = out_dir / f"{prefix}cest_{name}.nii.gz"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_map(
        path,
        np.asarray(data, dtype=np.float32).reshape(like.spatial_shape),
        like.affine,
        units=unit,
        description=description,
        provenance=provenance,
    )
    return StageResult(maps=[MapFile("cest", name, path, None, "cest")], files=list(written))


def _fit(
    model: Any,
    rows: np.ndarray,
    vox: _Voxels,
    like: Volume,
    out_dir: Path,
    prefix: str,
    files: Mapping[str, Path],
    opts: CESTOptions,
    role: str,
    voxel_inputs: Mapping[str, np.ndarray] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> tuple[StageResult, Any]:
    """Fit ``model`` to the spectra ``rows`` of the voxels ``vox`` and write its maps on the
    grid of ``like`` (NaN and status ``NOT_FITTED`` elsewhere), with ``provenance`` added to
    the sidecars. Returns the result and the fit of the rows (maps shaped ``(vox.n,)``).

    Only the rows are handed to the engine (no 4-D copy of the series for the few voxels of
    a lesion region)."""
    hashes = {k: input_record(v) for k, v in files.items()}
    with capture_warnings() as caught:
        fit = model.fit(rows, chunk_voxels=opts.chunk_voxels, **dict(voxel_inputs or {}))
    messages = [str(w.message) for w in caught if issubclass(w.category, TumorscopeWarning)]
    prov = dict(fit.provenance)
    prov["input"] = {**prov.get("input", {}), "shape": [*like.spatial_shape, rows.shape[-1]]}
    prov.update({"inputs": hashes, "stage": "fit", **(provenance or {})})
    full = FitResult(
        maps={k: vox.put(v) for k, v in fit.maps.items()},
        units=fit.units,
        status=vox.put(fit.status, np.uint8, int(FitStatus.NOT_FITTED)),
        rss=vox.put(fit.rss),
        stderr={k: vox.put(v) for k, v in fit.stderr.items()},
        provenance=prov,
        mask=vox.mask(),
    )
    written_maps = full.to_nifti(out_dir, like.affine, prefix=prefix, include_stderr=False)
    status = written_maps.get("status")
    maps = [
        MapFile(model.name, param, written_maps[param], status, role, full)
        for param in full.maps
        if param in written_maps
    ]
    written = [f for path in written_maps.values() for f in (Path(path), sidecar_of(path))]
    return StageResult(maps=maps, files=written, warnings=messages), fit


def t1_on_grid(t1_map: str | os.PathLike[str] | None, series: SeriesInput) -> Path | None:
    """``t1_map`` if it is on the grid of ``series`` (for AREX in the pipeline), else None."""
    if t1_map is None:
        return None
    import nibabel as nib

    a: Any = nib.load(str(t1_map))
    b: Any = nib.load(str(series.path))
    if tuple(a.shape[:3]) != tuple(b.shape[:3]) or not np.allclose(a.affine, b.affine, atol=1e-3):
        return None
    return Path(t1_map)
