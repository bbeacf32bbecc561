"""Metabolic imaging stage: hyperpolarised 13C kinetics and 1H/2H spectroscopy → maps + rows.

Backs the ``tumorscope hp13c`` and ``tumorscope mrs`` commands and the pipeline's
``metabolic`` step (same function, same files). Equations: :mod:`tumorscope.models.metabolic`.

**13C** (:func:`fit_hp13c`): two 4-D NIfTI series, pyruvate and lactate, frames on the 4th
axis, each with a JSON sidecar holding ``FrameTimes`` (s, one per frame) and ``FlipAngle``
(degrees, one number or one per frame). Maps ``hp13c_kPL`` (1/s), ``hp13c_AUC_ratio``,
``hp13c_SNR_lactate`` and the status map, on the 13C grid. Per lesion (``measurements``):
the mean and median of the voxel kPL and AUC ratio, and kPL of the lesion's mean curves
(``roi_fit``, the usual ROI analysis: averaging first raises the SNR).

**MRS** (:func:`fit_mrs`): a NIfTI-MRS file, single voxel or MRSI grid (``DIM_COIL`` combined,
``DIM_DYN`` aligned and averaged), HLSVD water removal, LCM fit per voxel; with a water
reference, concentrations in mM (a missing reference is an error naming the file when
``require_water`` is set, else amplitudes in a.u. and ratios only). 2H data (``ResonantNucleus``
``2H``) get the deuterium fit. Maps on the MRSI grid (``mrs_<name>``), resampled by nearest
neighbour onto the tumour grid when one is given (each anatomical voxel takes the value of
the spectroscopic voxel it lies in, so a lesion's mean is weighted by its overlap with each
spectroscopic voxel); per-lesion means of those.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._warnings import capture_warnings
from ..errors import DataError, TumorscopeWarning
from ..files import write_map
from ..volume import Volume
from ._tables import measurement_row
from .base import MapFile, StageResult, check_has_data

__all__ = ["HP13COptions", "MRSOptions", "fit_hp13c", "fit_mrs", "read_hp13c_protocol"]


@dataclass(frozen=True)
class HP13COptions:
    """Options of the 13C kinetic fit (see :class:`~tumorscope.models.PyruvateLactate`)."""

    t1_lactate_s: float = 25.0
    fit_t1_lactate: bool = False
    t1_pyruvate_s: float | None = 30.0
    min_snr: float = 5.0


@dataclass(frozen=True)
class MRSOptions:
    """Options of the spectroscopy fit.

    Attributes
    ----------
    require_water : bool
        A water reference is required (concentrations in mM); without one, an error.
    water_conc_mM : float
        Water concentration of the reference (LCModel's WCONC default).
    remove_water : bool
        HLSVD water removal before the fit (1H only).
    ppm_range : tuple of float
        Fit window of 1H spectra.
    baseline_order : int
    """

    require_water: bool = False
    water_conc_mM: float = 35880.0
    remove_water: bool = True
    ppm_range: tuple[float, float] = (0.2, 4.2)
    baseline_order: int = 3


def _numbers(value: Any, label: str, field: str) -> np.ndarray:
    """A sidecar number or list of numbers as floats; text, objects and nested lists are
    refused (naming the file and field) rather than failing inside numpy."""
    items = value if isinstance(value, list | tuple) else [value]
    if not items or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
        raise DataError(
            f"expected a number or a list of numbers, got {value!r}", file=label, field=field
        )
    try:
        return np.asarray(items, dtype=float)
    except OverflowError as exc:  # an integer beyond float range
        raise DataError(f"expected numbers, got {value!r}", file=label, field=field) from exc


def read_hp13c_protocol(
    series: Volume, sidecar: Mapping[str, Any], label: str
) -> tuple[np.ndarray, np.ndarray]:
    """``FrameTimes`` (s) and ``FlipAngle`` (deg, per frame) of one 13C series, checked."""
    n = series.data.shape[-1] if series.data.ndim == 4 else -1
    if series.data.ndim != 4 or n < 3:
        raise DataError(
            f"a 13C series must be 4-D with >= 3 frames, got {series.shape}", file=label
        )
    times = sidecar.get("FrameTimes")
    if times is None:
        raise DataError(
            "FrameTimes (s, one per frame) is "
            + ("null" if "FrameTimes" in sidecar else "missing from the sidecar"),
            file=label,
            field="FrameTimes",
        )
    t = _numbers(times, label, "FrameTimes").ravel()
    if t.size != n or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise DataError(
            f"needs {n} increasing times (s), got {list(times)[:5]}…",
            file=label,
            field="FrameTimes",
        )
    fa_raw = sidecar.get("FlipAngle")
    if fa_raw is None:
        raise DataError(
            "FlipAngle (degrees) is "
            + ("null" if "FlipAngle" in sidecar else "missing from the sidecar"),
            file=label,
            field="FlipAngle",
        )
    fa = (
        np.broadcast_to(_numbers(fa_raw, label, "FlipAngle").ravel(), (n,))
        if np.size(fa_raw) in (1, n)
        else None
    )
    if fa is None or np.any(~(fa > 0)) or np.any(fa > 90):
        raise DataError(
            f"needs one angle or {n} angles in (0, 90], got {fa_raw!r}",
            file=label,
            field="FlipAngle",
        )
    return t, np.asarray(fa)


def _lesion_names(lab: np.ndarray, lesion_ids: Mapping[int, str] | None) -> dict[int, str]:
    names = dict(lesion_ids or {})
    return {int(v): names.get(int(v), str(int(v))) for v in np.unique(lab) if v > 0}


def _lesion_voxels(
    lab: np.ndarray, lesion_ids: Mapping[int, str] | None
) -> dict[int, tuple[str, np.ndarray]]:
    """Each lesion's name and the C-order flat indices of its voxels, by label value.

    The voxels of ``lab == value`` in the order boolean indexing lists them, from one pass
    over the label map (a boolean mask per lesion and map would walk the whole volume for
    every lesion and every map): gathering a map at them gives ``map[lab == value]``.
    """
    flat = lab.reshape(-1)
    where = np.flatnonzero(flat > 0)
    vals = flat[where]
    names = _lesion_names(vals, lesion_ids)
    return {v: (name, where[vals == v]) for v, name in names.items()}


def fit_hp13c(
    pyruvate: str | os.PathLike[str],
    lactate: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str],
    prefix: str = "",
    options: HP13COptions = HP13COptions(),
    pyruvate_sidecar: Mapping[str, Any] | None = None,
    lactate_sidecar: Mapping[str, Any] | None = None,
    labels: Volume | None = None,
    lesion_ids: Mapping[int, str] | None = None,
    keys: Mapping[str, Any] | None = None,
) -> StageResult:
    """kPL, AUC ratio and lactate SNR maps (and per-lesion rows) from 13C dynamic series.

    Sidecars default to the JSON files beside the images. Labels, if given, must be on the
    13C grid (resample them first).
    """
    from ..io.bids import read_sidecar
    from ..models.metabolic import PyruvateLactate

    pp, lp = Path(pyruvate), Path(lactate)
    pv = check_has_data(Volume.from_nifti(pp), str(pp))
    lv = check_has_data(Volume.from_nifti(lp), str(lp))
    if not pv.same_grid(lv) or pv.shape != lv.shape:
        raise DataError(
            f"lactate series {lv.shape} is not on the pyruvate grid {pv.shape}", file=lp
        )
    t_p, fa_p = read_hp13c_protocol(pv, pyruvate_sidecar or read_sidecar(pp), str(pp))
    t_l, fa_l = read_hp13c_protocol(lv, lactate_sidecar or read_sidecar(lp), str(lp))
    if not np.allclose(t_p, t_l, atol=1e-3):
        raise DataError("lactate FrameTimes differ from pyruvate's", file=lp, field="FrameTimes")
    model = PyruvateLactate(
        t_p,
        np.vstack([fa_p, fa_l]),
        fit_t1_lactate=options.fit_t1_lactate,
        t1_lactate_s=options.t1_lactate_s,
        t1_pyruvate_s=options.t1_pyruvate_s,
        min_snr=options.min_snr,
    )
    # (..., 2, n) float64 filled in place: no float32 stack beside it, and the two series'
    # arrays are let go once copied (only their grid is used below)
    # slab by slab (z): the series are Fortran-ordered, the stack C-ordered; one assignment
    # of the whole series walks the source across the whole volume for every voxel's frames
    # (4x slower on the large visit), a slab stays in cache
    signals = np.empty((*pv.spatial_shape, 2, pv.shape[-1]), dtype=np.float64)
    for c, series in enumerate((pv.data, lv.data)):
        for z in range(series.shape[2]):
            signals[:, :, z, c, :] = series[:, :, z, :]
    affine = pv.affine
    pv_spatial = pv.spatial_shape
    del pv, lv
    lab = None if labels is None else np.asarray(labels.data).astype(np.int64)
    if lab is not None and lab.shape != pv_spatial:
        raise DataError(
            f"labels {lab.shape} are not on the 13C grid {pv_spatial}",
            file=labels.source if labels is not None else None,
            field="labels",
        )
    result = StageResult()
    with capture_warnings() as caught:
        fit = model.fit(signals)
    result.warnings += [str(w.message) for w in caught if issubclass(w.category, TumorscopeWarning)]
    from ..files import file_sha256

    prov = {**fit.provenance, "inputs": {"pyruvate": file_sha256(pp), "lactate": file_sha256(lp)}}
    out = Path(out_dir)
    status_path = out / f"{prefix}hp13c_status.nii.gz"
    result.files += write_map(
        status_path,
        fit.status,
        affine,
        units="1",
        description="fit status",
        provenance=prov,
        dtype=np.uint8,
    )
    for name in (
        "kPL",
        "AUC_ratio",
        "SNR_lactate",
        *(["T1_lactate"] if options.fit_t1_lactate else []),
    ):
        path = out / f"{prefix}hp13c_{name}.nii.gz"
        result.files += write_map(
            path,
            fit[name].astype(np.float32, order="F"),  # as stored: no transposed copy to write
            affine,
            units=fit.units[name],
            description=f"hyperpolarised 13C {name}",
            provenance=prov,
        )
        result.maps.append(MapFile("hp13c", name, path, status_path, "hp13c_pyruvate", fit))
    rows: list[dict[str, Any]] = []
    lead = dict(keys or {})
    if lab is not None:
        flat_signals = signals.reshape(-1, *signals.shape[3:])
        for lesion, sel in _lesion_voxels(lab, lesion_ids).values():
            for name, unit in (("kPL", "1/s"), ("AUC_ratio", "1")):
                vals = fit[name].reshape(-1)[sel]
                vals = vals[np.isfinite(vals)]
                for stat, fn in (("mean", np.mean), ("median", np.median)):
                    v = float(fn(vals)) if vals.size else None
                    rows.append(measurement_row(lead, lesion, f"hp13c.{name}", stat, v, unit))
            curve = flat_signals[sel].mean(axis=0)
            with capture_warnings() as roi_caught:  # the voxel fit's warnings stand
                roi = model.fit(curve[None])
            for w in roi_caught:  # others than the model's summary warnings go on
                if not issubclass(w.category, TumorscopeWarning):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            rows.append(measurement_row(lead, lesion, "hp13c.kPL", "roi_fit", roi["kPL"][0], "1/s"))
            rows.append(
                measurement_row(
                    lead, lesion, "hp13c.AUC_ratio", "roi_fit", roi["AUC_ratio"][0], "1"
                )
            )
    result.rows["measurements"] = rows
    return result


def _coils_first(mrs: Any) -> np.ndarray | None:
    """The data as ``(coil, x, y, z, [dyn,] n)``, or None without a coil dimension."""
    coil, dyn = mrs.axis("DIM_COIL"), mrs.axis("DIM_DYN")
    if coil is None:
        return None
    return np.transpose(mrs.data, [coil, 0, 1, 2, *([dyn] if dyn is not None else []), 3])


def _prepare(mrs: Any, data: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Voxel FIDs ``(x, y, z, n)`` from NIfTI-MRS data: coils combined (with ``weights``
    ``(coil, x, y, z)`` if given), dynamics aligned and averaged."""
    from ..models.metabolic.mrs import align, coil_combine

    coil = mrs.axis("DIM_COIL")
    dyn = mrs.axis("DIM_DYN")
    other = [a for a in range(4, data.ndim) if a not in (coil, dyn)]
    if other:
        raise DataError(
            f"dimensions {[mrs.dim_tags[a - 4] for a in other]} are not supported",
            file=mrs.path,
            field="dim_tags",
        )
    order = [*([coil] if coil is not None else []), 0, 1, 2, *([dyn] if dyn is not None else []), 3]
    x = np.transpose(data, order)  # ([coil,] x, y, z, [dyn,] points)
    if coil is not None:
        w = None if weights is None else weights
        if w is not None and dyn is not None:
            w = w[..., None]  # the same weights for every transient
        x = coil_combine(x, weights=w)
    if dyn is not None:
        sx = x.reshape(-1, x.shape[3], x.shape[4])
        x = np.stack([align(v, mrs.dwell_s)[0] for v in sx]).reshape(*x.shape[:3], x.shape[4])
    return x


def fit_mrs(
    spectra: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str],
    water: str | os.PathLike[str] | None = None,
    prefix: str = "",
    options: MRSOptions = MRSOptions(),
    onto: Volume | None = None,
    onto_role: str | None = None,
    labels: Volume | None = None,
    lesion_ids: Mapping[int, str] | None = None,
    keys: Mapping[str, Any] | None = None,
) -> StageResult:
    """Fit every voxel of a NIfTI-MRS file (module docstring); labels on ``onto``'s grid,
    whose series role (``anatomical``) ``onto_role`` names in the maps' records."""
    from .. import __version__
    from ..files import file_sha256
    from ..io.mrs import read_nifti_mrs, require_water_reference
    from ..models.metabolic.basis import simulate_basis
    from ..models.metabolic.deuterium import fit_deuterium
    from ..models.metabolic.mrs import (
        _one_blas_thread,
        coil_noise,
        coil_weights,
        fit_lcm,
        mrs_ratios,
        remove_water,
        water_amplitude,
        water_scaled,
    )
    from ..preprocessing.registration import nearest_index, resample

    src = Path(spectra)
    mrs = read_nifti_mrs(src)
    if options.require_water:
        require_water_reference(water, for_file=src)
    wamp = None
    weights = None
    if water is not None:
        wref = read_nifti_mrs(water, nucleus=mrs.nucleus)
        if wref.data.shape[:3] != mrs.data.shape[:3]:
            raise DataError(
                f"water reference grid {wref.data.shape[:3]} differs from the spectra's", file=water
            )
        wc, mc = _coils_first(wref), _coils_first(mrs)
        if wc is not None and mc is not None and wc.shape[0] == mc.shape[0]:
            # weights from the water's first points and the metabolite data's noise
            noise = coil_noise(mc)
            weights = coil_weights(wc, noise)
            if weights.ndim > 4:  # water with transients: their mean
                weights = weights.mean(axis=tuple(range(4, weights.ndim)))
        wf = _prepare(wref, wref.data, weights).reshape(-1, wref.data.shape[3])
        wamp = np.array([water_amplitude(w, wref.dwell_s) for w in wf])
    fids = _prepare(mrs, mrs.data, weights)
    shape = fids.shape[:3]
    flat = fids.reshape(-1, fids.shape[-1])
    is_2h = mrs.nucleus == "2H"
    if mrs.nucleus not in ("1H", "2H"):
        raise DataError(
            f"spectroscopy of {mrs.nucleus} is not supported (1H, 2H)",
            file=src,
            field="ResonantNucleus",
        )
    basis = None if is_2h else simulate_basis(mrs.frequency_mhz, mrs.dwell_s, flat.shape[1])
    values: dict[str, np.ndarray] = {}
    units: dict[str, str] = {}
    with _one_blas_thread():  # small least-squares problems: threads only wait
        for i, fid in enumerate(flat):
            if np.max(np.abs(fid)) == 0:
                continue
            if is_2h:
                d = fit_deuterium(fid, mrs.dwell_s, mrs.frequency_mhz)
                out = {**d.amplitudes, "Lac/Glx": d.lactate_glx, "Lac/Glc": d.lactate_glucose}
                out |= {
                    f"{k}_CRLB_percent": 100 * d.crlb[k] / d.amplitudes[k]
                    if d.amplitudes[k] > 0
                    else np.inf
                    for k in d.amplitudes
                }
                unit_amp = "a.u."
            else:
                assert basis is not None
                y = (
                    remove_water(fid, mrs.dwell_s, mrs.frequency_mhz)
                    if options.remove_water
                    else fid
                )
                r = fit_lcm(
                    y, basis, ppm_range=options.ppm_range, baseline_order=options.baseline_order
                )
                conc = r.amplitudes
                unit_amp = "a.u."
                if wamp is not None:
                    conc = water_scaled(conc, float(wamp[i]), water_conc_mM=options.water_conc_mM)
                    unit_amp = "mM"
                out = {**conc, **mrs_ratios(conc)}
                out |= {f"{k}_CRLB_percent": v for k, v in r.crlb_percent.items()}
                out["SNR"] = r.snr
            for k, v in out.items():
                values.setdefault(k, np.full(flat.shape[0], np.nan))[i] = v
                units[k] = (
                    "%" if k.endswith("_percent") else ("1" if "/" in k or k == "SNR" else unit_amp)
                )
    result = StageResult()
    prov = {
        "model": "dmi" if is_2h else "mrs_lcm",
        "basis": None
        if is_2h
        else "tumorscope simulated (Govindaraju 2000, first order + citrate AB)",
        "options": {**options.__dict__, "ppm_range": list(options.ppm_range)},
        "inputs": {
            "spectra": file_sha256(src),
            **({"water": file_sha256(Path(water))} if water else {}),
        },
        "tumorscope_version": __version__,
    }
    out_path = Path(out_dir)
    native = Volume(np.zeros(shape, np.float32), mrs.affine)
    lab = None if labels is None else np.asarray(labels.data).astype(np.int64)
    lesions = {} if lab is None else _lesion_voxels(lab, lesion_ids)
    lookup = None if onto is None else nearest_index(native, onto)
    if lookup is not None:  # the gathers every map takes, formed once
        covered = lookup >= 0
        source_f = np.where(covered, lookup, 0).ravel(order="F")
        in_lesion = {v: lookup.reshape(-1)[sel] for v, (_, sel) in lesions.items()}
        in_lesion = {v: lk[lk >= 0] for v, lk in in_lesion.items()}
    lead = dict(keys or {})
    rows: list[dict[str, Any]] = []
    model = "dmi" if is_2h else "mrs"
    for name, flat_vals in values.items():
        safe = name.replace("/", "_over_").replace("(", "").replace(")", "").replace("+", "_plus_")
        arr = np.where(np.isfinite(flat_vals), flat_vals, np.nan).reshape(shape).astype(np.float32)
        p = out_path / f"{prefix}{model}_{safe}.nii.gz"
        result.files += write_map(
            p, arr, mrs.affine, units=units[name], description=f"{model} {name}", provenance=prov
        )
        if onto is not None:
            q = out_path / f"{prefix}{model}_{safe}_space-tumour.nii.gz"
            if lookup is None:
                on = resample(native.with_data(arr), onto, interpolation="nearest").data
            else:  # float32 gathered as float32: the values of the float64 np.where, cast;
                # in Fortran order, as the writer stores it (no transposed copy to write)
                on = arr.reshape(-1)[source_f].reshape(onto.spatial_shape, order="F")
                on[~covered] = np.nan
            result.files += write_map(
                q,
                on,
                onto.affine,
                units=units[name],
                description=f"{model} {name} on the tumour grid",
                provenance=prov,
            )
            result.maps.append(MapFile(model, safe, q, None, onto_role))
            if lab is not None and not name.endswith("_percent"):
                for value, (lesion, sel) in lesions.items():
                    # on[lab == value] without `on`: the spectroscopic map at the lesion
                    # voxels' indices, in their order (those outside its grid, NaN in `on`,
                    # are left out, as the finite filter below leaves them out)
                    vals = (
                        arr.reshape(-1)[in_lesion[value]]
                        if lookup is not None
                        else on.reshape(-1)[sel]
                    )
                    vals = vals[np.isfinite(vals)]
                    if not vals.size:  # the spectroscopic grid does not cover this lesion
                        continue
                    mv = float(vals.mean())
                    rows.append(
                        measurement_row(lead, lesion, f"{model}.{safe}", "mean", mv, units[name])
                    )
        else:
            result.maps.append(MapFile(model, safe, p, None, None))
            if shape == (1, 1, 1) and not name.endswith("_percent"):
                rows.append(
                    measurement_row(
                        lead, "svs", f"{model}.{safe}", "value", arr.ravel()[0], units[name]
                    )
                )
    result.rows["measurements"] = rows
    return result
