"""DSC stage: a DSC series (+ lesion labels) → CBF, CBV, MTT, Tmax, K2, rCBV maps on disk.

Backs ``tumorscope fit dsc`` and the pipeline's ``fit_dsc`` step: both call :func:`fit_dsc`,
so they write the same files under the same names. Equations and references:
:mod:`tumorscope.models.dsc` and ``docs/dsc.md``.

Steps (every input is checked before anything is written; files are written atomically):

1. **inputs**: the 4-D series with its protocol (sidecar ``FrameTimes``, ``EchoTime``;
   ``BaselineFrames`` optional), lesion labels and an optional AIF mask on the same grid;
2. **brain mask**: voxels whose mean baseline signal is at least 10 % of the 99th
   percentile of the baseline signal (background and air excluded), with finite signal;
3. **baseline**: ``BaselineFrames`` of the sidecar, else the bolus onset detected on the
   brain's mean signal (:func:`~tumorscope.models.dsc.bolus_onset`);
4. **ΔR2*** ``= −ln(S/S0)/TE`` (:func:`~tumorscope.models.dsc.delta_r2star`); with a second
   echo (``echo2``, dual-echo DSC: the same acquisition at a longer TE, checked by
   :mod:`tumorscope.io.dual_echo`) ``ΔR2* = ln[(S1/S1,0)/(S2/S2,0)]/(TE2 − TE1)``
   (:func:`~tumorscope.models.dsc.delta_r2star_dual_echo`), free of T1 leakage effects, and the
   apparent S0 change common to both echoes is written as ``dsc_T1effect``: the mean of
   ``S0(t)/S0,pre − 1`` over the frames after the first pass (> 0 where leaked contrast
   shortens T1; :func:`~tumorscope.models.dsc.apparent_s0_change`);
5. **AIF**: the mean ΔR2* of the AIF mask if given, else automatic selection in the brain
   (:func:`~tumorscope.models.dsc.select_aif`), scaled to a venous outflow region when one is
   given; written as ``<prefix>dsc_aif.tsv``; the first-pass window is recorded;
6. **leakage correction** (``leakage``: ``"bsw"`` default, ``"bidirectional"``, ``"none"``):
   reference curve = mean ΔR2* of the brain outside the lesions and outside the vessels (the
   5 % of brain voxels with the highest ΔR2* peak: arteries and veins would otherwise put
   their narrow, high first pass into the "tissue" reference); the K2 map (1/s) is written;
7. **deconvolution** (:class:`~tumorscope.models.DSC`, ``method`` default ``"osvd"``) of the
   corrected ΔR2* in the brain → ``dsc_CBF``, ``dsc_CBV``, ``dsc_MTT``, ``dsc_Tmax``;
8. **rCBV, rCBF**: normalised to the mean of the reference region: the lesion label named
   ``reference`` (its ``lesion_id``, e.g. normal-appearing white matter drawn as a label) or,
   by default, the contralateral mirror of all lesions (axis 0, the left–right axis of
   RAS/LAS-ordered NIfTI) inside the brain → ``dsc_rCBV``, ``dsc_rCBF``;
9. ``<prefix>dsc_stage.json``: what was chosen (baseline, AIF voxels, reference region, leakage
   method and median K2 in the lesions, options, input files with their SHA-256; ``dual_echo``:
   None for one echo, else both echo times and the median T1 effect in the lesions and the
   brain).

Every map carries the DSC fit's status map (``dsc_status``: 0 fitted, 3 invalid input, 255
outside the brain).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, FitError, ProtocolError
from ..files import write_json, write_map
from ..protocol import DynamicProtocol
from ..volume import Volume, atomic_write
from .base import MapFile, SeriesInput, StageResult
from .fit import input_record, load_mask

__all__ = ["LEAKAGE_METHODS", "DSCOptions", "fit_dsc"]

LEAKAGE_METHODS = ("bsw", "bidirectional", "none")
_BRAIN_FRACTION = 0.10


@dataclass(frozen=True)
class DSCOptions:
    """How to run the DSC stage (``tumorscope fit dsc`` options, ``RunOptions.dsc_*``).

    Attributes
    ----------
    method : {"osvd", "csvd", "svd", "tikhonov"}, default "osvd"
    leakage : {"bsw", "bidirectional", "none"}, default "bsw"
    reference : str, optional
        ``lesion_id`` of the label that is the rCBV reference region (normal-appearing white
        matter); default: the contralateral mirror of the lesions.
    hematocrit_factor, tissue_density : float
        Defaults 0.733 and 1.04 g/mL (:class:`~tumorscope.models.DSC`).
    chunk_voxels : int, optional
    """

    method: str = "osvd"
    leakage: str = "bsw"
    reference: str | None = None
    hematocrit_factor: float = (1 - 0.45) / (1 - 0.25)
    tissue_density: float = 1.04
    chunk_voxels: int | None = None

    def __post_init__(self) -> None:
        from ..models.dsc.deconvolution import DSC

        if self.method not in DSC.methods:
            raise FitError(
                f"unknown DSC method {self.method!r}; expected one of {DSC.methods}",
                field="method",
            )
        if self.leakage not in LEAKAGE_METHODS:
            raise FitError(
                f"unknown leakage correction {self.leakage!r}; expected one of {LEAKAGE_METHODS}",
                field="leakage",
            )


def _protocol(series: SeriesInput) -> tuple[DynamicProtocol, float]:
    proto = series.protocol
    js = series.files.get("sidecar", series.label or series.path)
    if not isinstance(proto, DynamicProtocol):
        raise ProtocolError(
            f"a DSC series needs a dynamic protocol (FrameTimes, EchoTime), got "
            f"{type(proto).__name__}",
            file=str(js),
            field="FrameTimes",
        )
    if proto.te_ms is None:
        raise DataError("a DSC series needs its EchoTime (s)", file=str(js), field="EchoTime")
    return proto, float(proto.te_ms)


def _brain_mask(sig: np.ndarray, n_base: int) -> np.ndarray:
    base = np.nanmean(sig[..., : max(n_base, 1)], axis=-1)
    finite = np.all(np.isfinite(sig), axis=-1)
    good = base[finite & (base > 0)]
    if good.size == 0:
        raise DataError("the DSC series has no voxel with a positive baseline", field="data")
    return finite & (base >= _BRAIN_FRACTION * np.percentile(good, 99))


def fit_dsc(
    series: SeriesInput,
    labels: Volume | None,
    lesion_ids: Mapping[int, str] | None = None,
    *,
    out_dir: str | os.PathLike[str],
    prefix: str = "",
    options: DSCOptions = DSCOptions(),
    aif_mask: Volume | str | os.PathLike[str] | None = None,
    vof_mask: Volume | str | os.PathLike[str] | None = None,
    echo2: SeriesInput | None = None,
) -> StageResult:
    """Fit a DSC series and write its maps (see the module docstring).

    Parameters
    ----------
    series : SeriesInput
        The DSC series (4-D) with its protocol and sidecar.
    labels : Volume or None
        Lesion labels on the series grid (0 = none); None: no lesion (rCBV needs the
        ``reference`` label then, or it is not computed: a warning says so).
    lesion_ids : mapping of int to str, optional
        ``lesion_id`` of each label (to find ``options.reference``).
    out_dir : path-like, keyword-only
    prefix : str, keyword-only
    options : DSCOptions, keyword-only
    aif_mask : Volume or path, keyword-only, optional
        A manual AIF region on the series grid.
    vof_mask : Volume or path, keyword-only, optional
        A venous outflow region (e.g. the superior sagittal sinus): the AIF is scaled to the
        area of its mean curve (partial-volume correction, :func:`~tumorscope.models.dsc.
        scale_to_vof`).
    echo2 : SeriesInput, keyword-only, optional
        The second echo of a dual-echo DSC (``series`` its first echo): same shape, grid,
        ``FrameTimes`` and ``RepetitionTime``, a longer ``EchoTime``.

    Returns
    -------
    StageResult
        ``maps``: model ``"dsc"``, parameters CBF, CBV, MTT, Tmax, K2 (unless
        ``leakage="none"``), rCBV and rCBF (when a reference exists), T1effect (with
        ``echo2``); ``files``; ``warnings``.

    Raises
    ------
    DataError, ProtocolError, FitError
        Bad inputs, named by file and field, before anything is written.
    """
    from .. import __version__
    from ..models import dsc as m

    proto, te_ms = _protocol(series)
    vol = series.load()
    if vol.data.ndim != 4 or vol.data.shape[3] != len(proto.frame_times_s):
        raise DataError(
            f"expected a 4-D series of {len(proto.frame_times_s)} frames, got {vol.data.shape}",
            file=str(series.path),
            field="dim",
        )
    sig = np.asarray(vol.data, dtype=float)
    sig2, te2_ms = (None, None) if echo2 is None else _second_echo(series, echo2, vol)
    t = np.asarray(proto.frame_times_s, dtype=float)
    lab = None if labels is None else load_mask_labels(labels, vol)
    roi = load_mask(aif_mask, vol) if aif_mask is not None else None
    vof_roi = load_mask(vof_mask, vol) if vof_mask is not None else None
    names = dict(lesion_ids or {})
    ref_label = None
    if options.reference is not None:
        hits = [k for k, v in names.items() if v == options.reference]
        if not hits or lab is None or not np.any(lab == hits[0]):
            raise DataError(
                f"no lesion label named {options.reference!r} for the rCBV reference "
                f"(labels: {sorted(names.values())})",
                file=str(series.path),
                field="reference",
            )
        ref_label = hits[0]
    n_base_given = series.sidecar.get("BaselineFrames")
    n_base = int(n_base_given) if n_base_given is not None else 0
    brain = _brain_mask(sig, n_base if n_base else 3)
    if n_base == 0:
        n_base = m.bolus_onset(sig, brain)
    if sig2 is None:
        d = m.delta_r2star(sig, te_ms, n_baseline=n_base)
    else:
        assert te2_ms is not None
        d = m.delta_r2star_dual_echo(sig, sig2, te_ms, te2_ms, n_baseline=n_base)
    brain &= np.all(np.isfinite(d), axis=-1)
    lesion = np.zeros(brain.shape, bool) if lab is None else (lab > 0)
    if ref_label is not None:
        assert lab is not None
        lesion &= lab != ref_label
    # ---- AIF
    if roi is not None:
        aif = m.roi_aif(d, roi)
        aif_info: dict[str, Any] = {"source": "mask", "voxels": int(roi.sum())}
    else:
        sel = m.select_aif(d, t, mask=brain & ~lesion, n_baseline=n_base)
        aif = sel.concentration_mM
        aif_info = {"source": "auto", "voxels": sel.voxels.tolist(), "criteria": sel.criteria}
    if vof_roi is not None:
        aif, factor = m.scale_to_vof(aif, m.roi_aif(d, vof_roi), t)
        aif_info["vof_scale"] = factor
    first_pass = m.first_pass_window(d, brain, onset=n_base)
    t1_effect = None
    if sig2 is not None:
        assert te2_ms is not None
        s0 = m.apparent_s0_change(sig, sig2, te_ms, te2_ms, n_baseline=n_base)
        after = s0[..., min(first_pass[1], t.size - 1) :]
        with np.errstate(invalid="ignore"):
            t1_effect = np.where(brain, after.mean(axis=-1) - 1.0, np.nan).astype(np.float32)
    # ---- leakage
    k2 = None
    if options.leakage != "none":
        peak = np.where(brain, d.max(axis=-1), -np.inf)
        vessels = peak > np.percentile(peak[brain], 95)
        ref_curve = m.reference_curve(d, brain & ~lesion & ~vessels)
        corr = m.correct_leakage(d, t, ref_curve, method=options.leakage, mask=brain)
        d = np.where(brain[..., None], corr.corrected, d)
        k2 = corr.K2
    fit = m.DSC(
        t,
        aif,
        method=options.method,
        hematocrit_factor=options.hematocrit_factor,
        tissue_density=options.tissue_density,
    ).fit(d, brain, chunk_voxels=options.chunk_voxels)
    # ---- rCBV
    warnings: list[str] = []
    if ref_label is not None:
        assert lab is not None
        ref: np.ndarray | None = np.asarray(lab == ref_label)
        ref_how = f"label {options.reference!r}"
    elif lesion.any():
        ref = m.mirror_reference(lesion, brain, axis=0)
        ref_how = "contralateral mirror of the lesions (axis 0)"
    else:
        ref, ref_how = None, "none"
        warnings.append("no lesion and no reference label: rCBV and rCBF not computed")
    rel: dict[str, np.ndarray] = {}
    ref_means: dict[str, float] = {}
    if ref is not None:
        for name in ("CBV", "CBF"):
            ref_means[name] = m.reference_mean(fit[name], ref)
            rel[f"r{name}"] = (fit[name] / ref_means[name]).astype(np.float32)
    # ---- write
    out = Path(out_dir)
    prov = dict(fit.provenance)
    prov["inputs"] = {k: input_record(p) for k, p in series.files.items() if Path(p).is_file()}
    if echo2 is not None:
        prov["inputs"] |= {
            f"echo2_{k}": input_record(p) for k, p in echo2.files.items() if Path(p).is_file()
        }
    result = StageResult()
    status_path = out / f"{prefix}dsc_status.nii.gz"
    result.files += write_map(
        status_path,
        fit.status,
        vol.affine,
        units="1",
        description="DSC fit status: 0 fitted, 3 invalid input, 255 outside the brain",
        provenance=prov,
        dtype=np.uint8,
    )
    items: list[tuple[str, np.ndarray, str, str]] = [
        (k, fit[k], fit.units[k], f"DSC {k} ({options.method})")
        for k in ("CBF", "CBV", "MTT", "Tmax")
    ]
    if k2 is not None:
        items.append(("K2", k2.astype(np.float32), "1/s", f"leakage term K2 ({options.leakage})"))
    for k, v in rel.items():
        items.append((k, v, "1", f"{k} normalised to the {ref_how}"))
    if t1_effect is not None:
        what = "T1 effect: mean S0(t)/S0,pre - 1 after the first pass (dual echo)"
        items.append(("T1effect", t1_effect, "1", what))
    for name, arr, unit, desc in items:
        path = out / f"{prefix}dsc_{name}.nii.gz"
        files = write_map(path, arr, vol.affine, units=unit, description=desc, provenance=prov)
        result.files += files
        result.maps.append(MapFile("dsc", name, path, status_path, series.role, fit))
    aif_path = out / f"{prefix}dsc_aif.tsv"
    text = "time_s\tdelta_r2star_per_s\n" + "".join(
        f"{a:.6g}\t{b:.6g}\n" for a, b in zip(t, aif, strict=True)
    )
    atomic_write(aif_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    result.files.append(aif_path)
    stage = {
        "model": "dsc",
        "tumorscope_version": __version__,
        "options": {
            "method": options.method,
            "leakage": options.leakage,
            "reference": options.reference,
            "hematocrit_factor": options.hematocrit_factor,
            "tissue_density": options.tissue_density,
        },
        "echo_time_ms": te_ms,
        "dual_echo": (
            None
            if te2_ms is None
            else {
                "echo_times_ms": [te_ms, te2_ms],
                "delta_r2star": "ln[(S1/S1,0)/(S2/S2,0)]/(TE2 - TE1) (Vonken 1999)",
                "T1effect_median_in_lesions": _median(t1_effect, lesion & brain),
                "T1effect_median_in_brain": _median(t1_effect, brain),
            }
        ),
        "baseline_frames": n_base,
        "baseline_from": "sidecar" if n_base_given is not None else "bolus onset",
        "first_pass_frames": list(first_pass),
        "brain_voxels": int(brain.sum()),
        "aif": aif_info,
        "reference_region": {
            "how": ref_how,
            "voxels": 0 if ref is None else int(ref.sum()),
            "mean": ref_means,
        },
        "K2_median_in_lesions_per_s": (
            None if k2 is None or not lesion.any() else float(np.nanmedian(k2[lesion]))
        ),
        "inputs": prov["inputs"],
        "files": [p.name for p in result.files],
    }
    stage_path = out / f"{prefix}dsc_stage.json"
    result.files.append(write_json(stage_path, stage))
    result.files = list(dict.fromkeys(result.files))
    result.warnings += warnings
    return result


def _second_echo(first: SeriesInput, echo2: SeriesInput, vol: Volume) -> tuple[np.ndarray, float]:
    """The second echo's signal and echo time (ms), checked against the first echo
    (:mod:`tumorscope.io.dual_echo`: ProtocolError / DataError naming its file and field)."""
    from ..io.dual_echo import grid_pair_problems, protocol_pair_problems

    _, te2 = _protocol(echo2)
    js = echo2.label or str(echo2.path)
    for suffix in (".nii.gz", ".nii"):
        if js.endswith(suffix):
            js = js[: -len(suffix)] + ".json"  # the problems are the sidecar's fields
            break
    first_name = first.label or str(first.path)
    for f, fld, msg in protocol_pair_problems(
        first.protocol, echo2.protocol, first_name=first_name, second_name=js
    ):
        raise ProtocolError(msg, file=f, field=fld)
    vol2 = echo2.load()
    for f, fld, msg in grid_pair_problems(
        vol.data.shape, vol.affine, vol2.data.shape, vol2.affine,
        first_name=first_name, second_name=echo2.label or str(echo2.path),
    ):  # fmt: skip
        raise DataError(msg, file=f, field=fld)
    return np.asarray(vol2.data, dtype=float), te2


def _median(values: np.ndarray | None, where: np.ndarray) -> float | None:
    """The median of the finite ``values`` in ``where`` (None if there are none)."""
    if values is None:
        return None
    v = values[where]
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def load_mask_labels(labels: Volume, like: Volume) -> np.ndarray:
    """Integer lesion labels on the grid of ``like`` (checked like a mask)."""
    load_mask(labels, like)  # shape and affine checks
    data = np.asarray(labels.data)
    if data.ndim == 4:
        data = data[..., 0]
    return data.astype(np.int64)
