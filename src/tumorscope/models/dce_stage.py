"""The DCE stage: from a VFA series and a DCE series to T1, concentration and parameter maps.

Steps (each checked before anything is written; every file written atomically):

1. **inputs**: the DCE series and its protocol (sidecar: ``FrameTimes``, ``FlipAngle``,
   ``RepetitionTime``, ``BaselineFrames``; ``Relaxivity`` and ``Hematocrit`` from the sidecar,
   the study manifest's ``dce:`` defaults or the arguments), the pre-contrast T1 (a VFA series
   fitted with :class:`~tumorscope.models.relaxometry.VFAT1`, or one value in ms), masks on the
   same grid, the AIF choice, the model name;
2. **T1** (VFA): maps ``<prefix>vfa_T1.nii.gz`` etc. via the generic fit stage;
3. **concentration**: :func:`~tumorscope.models.dce.signal_to_concentration` →
   ``<prefix>concentration.nii.gz`` (mM, 4-D) and ``<prefix>concentration_status.nii.gz``;
4. **AIF**: a population curve (``parker``, ``georgiou``, ``mcgrath``) aligned to the bolus
   arrival, the automatic image-derived AIF (``auto``; the chosen voxels are written as
   ``<prefix>aif_voxels.nii.gz``), or a CSV/TSV file; converted to plasma with the hematocrit
   and written as ``<prefix>aif.tsv``;
5. **model fit**: a registered DCE model on the concentration within the mask →
   ``<prefix><model>_<param>.nii.gz`` + sidecars (units, provenance);
6. **semi-quantitative maps** (iAUC60/90, TTP, ...) → ``<prefix>sq_<name>.nii.gz``;
7. ``<prefix>dce_stage.json``: the provenance of the whole stage (T1 source, AIF source and
   delay, hematocrit, relaxivity, files and their SHA-256).

Population AIF alignment: with ``aif_delay_s=None`` the population curve is shifted so that
its onset (first time it reaches 10% of its peak) matches the onset of the median enhancement
curve of the fitted voxels. Tissue enhances a few seconds after the artery, so this places the
AIF slightly late; fit with ``fit_delay=True`` (negative delays allowed) to absorb the rest, or
give ``aif_delay_s``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, FitError, ProtocolError
from ..protocol import DynamicProtocol, VFAProtocol
from ..volume import Volume, atomic_write
from . import aif as aifmod

__all__ = ["DCE_MODELS", "DCEStageOutputs", "fit_dce", "fit_dce_visit"]

#: Model names the stage accepts (registry keys).
DCE_MODELS = ("tofts", "extended_tofts", "patlak", "2cxm", "2cum")
_POPULATION = ("parker", "georgiou", "mcgrath")


@dataclass
class DCEStageOutputs:
    """What the DCE stage computed and wrote.

    Attributes
    ----------
    fit : FitResult
        The pharmacokinetic fit.
    t1_ms : ndarray, shape (X, Y, Z)
        Pre-contrast T1 used (ms).
    times_s, aif_mM : ndarray, shape (n,)
        Frame times and the plasma AIF used.
    aif_info : dict
        How the AIF was obtained (source, delay, chosen voxels ...).
    semiquant : dict of str to ndarray
        Semi-quantitative maps (empty if not asked for).
    files : dict of str to Path
        Every file written, by name.
    warnings : list of str
        Summary warnings of the fits.
    """

    fit: Any
    t1_ms: np.ndarray
    times_s: np.ndarray
    aif_mM: np.ndarray
    aif_info: dict[str, Any]
    semiquant: dict[str, np.ndarray] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers
def _load_series(
    series: str | os.PathLike[str] | Volume, suffix: str
) -> tuple[Volume, dict[str, Any], Path | None]:
    from ..io.bids import read_sidecar

    if isinstance(series, Volume):
        return series, dict(series.meta.get("sidecar", {})), None
    path = Path(series)
    if not path.is_file():
        raise DataError(f"{suffix} series not found", file=path)
    vol = Volume.from_nifti(path)
    if vol.data.ndim != 4:
        raise DataError(
            f"expected a 4-D {suffix} series, got shape {vol.shape}", file=path, field="shape"
        )
    return vol, read_sidecar(path), path


def _protocol(
    given: Any, sidecar: dict[str, Any], path: Path | None, suffix: str, cls: type
) -> Any:
    from ..io.bids import protocol_from_sidecar

    if given is not None:
        if not isinstance(given, cls):
            raise ProtocolError(
                f"expected a {cls.__name__}, got {type(given).__name__}", field="protocol"
            )
        return given
    if path is None:
        raise ProtocolError(
            f"no protocol given and the {suffix} volume has no file to read a sidecar from",
            field="protocol",
        )
    proto = protocol_from_sidecar(path, suffix, sidecar)
    if not isinstance(proto, cls):  # pragma: no cover - the reader returns the right type
        raise ProtocolError(f"cannot build a {cls.__name__} from the sidecar", file=path)
    return proto


def _resolve(
    value: float | None, sidecar: dict[str, Any], key: str, defaults: dict[str, float], name: str
) -> float:
    for v in (value, sidecar.get(key), defaults.get(name)):
        if v is not None:
            try:
                return float(v)
            except (TypeError, ValueError):
                raise ProtocolError(f"expected a number, got {v!r}", field=key) from None
    raise ProtocolError(
        f"no {name} given: set {key} in the DCE sidecar, '{name}' under 'dce:' in study.yaml, "
        f"or pass {name}=",
        field=key,
    )


def _read_aif_file(path: Path, times_s: np.ndarray, hematocrit: float) -> tuple[np.ndarray, str]:
    """Plasma AIF at the frame times from a CSV/TSV with ``time_s`` and ``cp_mM`` or ``cb_mM``."""
    if not path.is_file():
        raise DataError("AIF file not found", file=path, field="aif")
    head = path.read_text(encoding="utf-8-sig").splitlines()[:1]
    cols = next(csv.reader(head, delimiter="\t" if head and "\t" in head[0] else ","), [])
    cols = [c.strip() for c in cols]
    if "cp_mM" in cols:
        column, kind = "cp_mM", "plasma"
    elif "cb_mM" in cols:
        column, kind = "cb_mM", "blood"
    else:
        raise DataError(
            f"expected a column 'cp_mM' (plasma) or 'cb_mM' (whole blood); columns are {cols}",
            file=path,
            field="aif",
        )
    t, c = aifmod.load_aif_csv(path, concentration_column=column)
    if t[0] > times_s[0] + 1e-6 or t[-1] < times_s[-1] - 1e-6:
        raise DataError(
            f"the AIF covers {t[0]:g}-{t[-1]:g} s but the frames span "
            f"{times_s[0]:g}-{times_s[-1]:g} s",
            file=path,
            field="time_s",
        )
    c = np.interp(times_s, t, c)
    if kind == "blood":
        c = aifmod.blood_to_plasma(c, hematocrit=hematocrit)
    return c, kind


def _load_b1(b1: Any, like: Volume) -> tuple[np.ndarray | None, Path | None]:
    """A relative flip-angle map on the grid of ``like`` (path, Volume or array)."""
    if b1 is None:
        return None, None
    path = None
    if isinstance(b1, str | os.PathLike):
        path = Path(b1)
        b1 = Volume.from_nifti(path)
    if isinstance(b1, Volume):
        if not b1.same_grid(like):
            raise DataError(
                f"the B1 map grid {b1.spatial_shape} differs from the DCE grid "
                f"{like.spatial_shape} (or their affines differ)",
                file=b1.source,
                field="b1",
            )
        arr = np.asarray(b1.data, dtype=float)
        if arr.ndim == 4 and arr.shape[3] == 1:
            arr = arr[..., 0]
    else:
        arr = np.asarray(b1, dtype=float)
    if arr.shape != like.spatial_shape:
        raise DataError(
            f"B1 map shape {arr.shape} does not match the grid {like.spatial_shape}",
            file=path,
            field="b1",
        )
    good = arr[np.isfinite(arr)]
    if good.size == 0 or not 0.2 < float(np.median(good)) < 3.0:
        raise DataError(
            "expected a relative flip-angle map near 1 (actual / nominal); divide a map in "
            "percent by 100",
            file=path,
            field="b1",
        )
    return arr, path


def _onset(t: np.ndarray, curve: np.ndarray, fraction: float = 0.1) -> float:
    """First time (s) the curve reaches ``fraction`` of its maximum (linear interpolation)."""
    peak = float(np.nanmax(curve))
    if not peak > 0:
        return float("nan")
    i = int(np.argmax(curve >= fraction * peak))
    if i == 0:
        return float(t[0])
    c0, c1 = curve[i - 1], curve[i]
    return float(t[i - 1] + (fraction * peak - c0) / (c1 - c0) * (t[i] - t[i - 1]))


def _write_json(path: Path, obj: Any) -> None:
    from ..files import write_json

    write_json(path, obj)


def _write_map(
    out: Path, name: str, arr: np.ndarray, affine: np.ndarray, unit: str, desc: str, prov: Any
) -> Path:
    from ..files import write_map

    path = out / f"{name}.nii.gz"
    write_map(path, arr, affine, units=unit, description=desc, provenance=prov)
    return path


# --------------------------------------------------------------------------- the stage
def fit_dce(
    dce: str | os.PathLike[str] | Volume,
    *,
    out_dir: str | os.PathLike[str],
    protocol: DynamicProtocol | None = None,
    vfa: str | os.PathLike[str] | Volume | None = None,
    vfa_protocol: VFAProtocol | None = None,
    t1_ms: float | None = None,
    b1: Any = None,
    model: str = "extended_tofts",
    aif: str | os.PathLike[str] = "parker",
    aif_delay_s: float | None = None,
    aif_mask: Any = None,
    relaxivity: float | None = None,
    hematocrit: float | None = None,
    mask: Any = None,
    fit_delay: bool = False,
    method: str = "lm",
    semiquant: bool = True,
    prefix: str = "",
    defaults: dict[str, float] | None = None,
    chunk_voxels: int | None = None,
) -> DCEStageOutputs:
    """Run the DCE chain on one visit's series and write every map (see the module docstring).

    Parameters
    ----------
    dce : path-like or Volume, shape (X, Y, Z, n)
        DCE series (signal, a.u.); a path is read with its JSON sidecar.
    out_dir : path-like
        Output folder (created).
    protocol : DynamicProtocol, optional
        Default: from the sidecar.
    vfa : path-like or Volume, shape (X, Y, Z, n_fa), optional
        VFA series on the same grid, for the T1 map. Give exactly one of ``vfa``, ``t1_ms``.
    vfa_protocol : VFAProtocol, optional
        Default: from the VFA sidecar.
    t1_ms : float, optional
        One pre-contrast T1 (ms) for every voxel, instead of a VFA series.
    b1 : path-like, Volume or ndarray, shape (X, Y, Z), optional
        Relative flip angle map (actual / nominal) on the same grid. It scales the flip
        angles of the VFA fit and of the DCE signal-to-concentration (same transmit field
        assumed for both series).
    model : {"tofts", "extended_tofts", "patlak", "2cxm", "2cum"}, default "extended_tofts"
    aif : {"parker", "georgiou", "mcgrath", "auto"} or path-like, default "parker"
        Population AIF, automatic image-derived AIF, or a CSV/TSV file with ``time_s`` and
        ``cp_mM`` (plasma) or ``cb_mM`` (whole blood).
    aif_delay_s : float, optional
        Delay of the population AIF (s). Default: aligned to the data (module docstring).
    aif_mask : mask, optional
        Where the automatic AIF looks for arteries (default: every voxel with signal).
    relaxivity : float, optional
        r1 in 1/(mM·s); default from the sidecar ``Relaxivity`` or ``defaults``.
    hematocrit : float, optional
        Default from the sidecar ``Hematocrit`` or ``defaults``.
    mask : path-like, Volume or ndarray, optional
        Voxels to fit (non-zero). Default: every voxel with signal (mean baseline above 10%
        of its 99th percentile) and a valid concentration curve. With a mask, T1 (and so the
        concentration) is computed only inside it (and inside ``aif_mask``; everywhere for
        ``aif="auto"`` without ``aif_mask``), NaN elsewhere.
    fit_delay : bool, default False
        Fit the arrival delay per voxel.
    method : {"lm", "linear"}, default "lm"
    semiquant : bool, default True
        Also write the semi-quantitative maps.
    prefix : str
        File name prefix, e.g. ``"sub-001_ses-01_"``.
    defaults : dict, optional
        ``{"relaxivity": ..., "hematocrit": ...}`` (the study manifest's ``dce:`` block).
    chunk_voxels : int, optional

    Returns
    -------
    DCEStageOutputs

    Raises
    ------
    DataError
        Missing or malformed files, grids that differ, an unreadable AIF file, no voxel to
        fit.
    ProtocolError
        Missing or impossible acquisition values (relaxivity, hematocrit, flip angle ...).
    FitError
        Unknown model, AIF or method; both or neither of ``vfa`` and ``t1_ms``.
    """
    import warnings

    from ..errors import TumorscopeWarning
    from ..files import file_sha256
    from ..stages.fit import fit_volume, load_mask
    from .base import get_model
    from .dce import signal_to_concentration
    from .dce_semiquant import SEMIQUANT_UNITS, semi_quantitative
    from .relaxometry import VFAT1

    # ---------------------------------------------------------------- 1. check everything
    key = model.lower()
    if key not in DCE_MODELS:
        raise FitError(f"unknown DCE model {model!r}; expected one of {DCE_MODELS}", field="model")
    if (vfa is None) == (t1_ms is None):
        raise FitError(
            "give exactly one of a VFA series (vfa=, --vfa) or a T1 value (t1_ms=, --t1-ms)",
            field="t1",
        )
    vol, sidecar, dce_path = _load_series(dce, "dce")
    proto = _protocol(protocol, sidecar, dce_path, "dce", DynamicProtocol)
    if vol.n_measurements != proto.n_measurements:
        raise DataError(
            f"the series has {vol.n_measurements} frames but FrameTimes lists "
            f"{proto.n_measurements}",
            file=dce_path,
            field="dim[4]",
        )
    dfl = dict(defaults or {})
    r1 = _resolve(relaxivity, sidecar, "Relaxivity", dfl, "relaxivity")
    hct = _resolve(hematocrit, sidecar, "Hematocrit", dfl, "hematocrit")
    if not r1 > 0:
        raise ProtocolError(f"must be > 0 1/(mM.s), got {r1:g}", field="Relaxivity")
    if not 0.0 <= hct < 1.0:
        raise ProtocolError(f"must be in [0, 1), got {hct:g}", field="Hematocrit")
    t = proto.t
    aif_name = str(aif)
    aif_path: Path | None = None
    if aif_name.lower() not in (*_POPULATION, "auto"):
        aif_path = Path(aif_name)
        if not aif_path.is_file():
            raise FitError(
                f"unknown AIF {aif_name!r}: expected one of {(*_POPULATION, 'auto')} or an "
                "existing CSV/TSV file",
                field="aif",
            )
        cp_file, aif_kind = _read_aif_file(aif_path, t, hct)
    vfa_vol = vfa_path = vfa_proto = None
    if vfa is not None:
        vfa_vol, vfa_side, vfa_path = _load_series(vfa, "VFA")
        vfa_proto = _protocol(vfa_protocol, vfa_side, vfa_path, "VFA", VFAProtocol)
        if vfa_vol.n_measurements != vfa_proto.n_measurements:
            raise DataError(
                f"the VFA series has {vfa_vol.n_measurements} volumes but FlipAngle lists "
                f"{vfa_proto.n_measurements}",
                file=vfa_path,
                field="dim[4]",
            )
        if not vfa_vol.same_grid(vol):
            raise DataError(
                f"the VFA series grid {vfa_vol.spatial_shape} differs from the DCE grid "
                f"{vol.spatial_shape} (or their affines differ); register them first",
                file=vfa_path,
                field="affine",
            )
    else:
        assert t1_ms is not None
        if not (np.isfinite(t1_ms) and t1_ms > 0):
            raise ProtocolError(f"must be > 0 ms, got {t1_ms!r}", field="t1_ms")
    fit_mask = load_mask(mask, vol)
    search_mask = load_mask(aif_mask, vol)
    b1_map, b1_path = _load_b1(b1, vol)
    model_cls = get_model(key)
    model_cls(t, np.zeros(t.size), method=method)  # type: ignore[call-arg]  # checks method
    out = Path(out_dir)

    # ---------------------------------------------------------------- 2. T1
    files: dict[str, Path] = {}
    messages: list[str] = []
    region = None
    if fit_mask is not None:
        region = fit_mask | (search_mask if search_mask is not None else False)
        if aif_name.lower() == "auto" and search_mask is None:
            region = None  # the automatic AIF searches everywhere
    if vfa_vol is not None:
        assert vfa_proto is not None
        vfa_model = VFAT1(vfa_proto.flip_angles_deg, vfa_proto.tr_ms)
        if b1_map is None:
            t1_out = fit_volume(
                vfa_model,
                vfa_vol,
                out_dir=out,
                mask=region,
                prefix=f"{prefix}vfa_",
                input_files={"vfa": str(vfa_path)} if vfa_path else None,
                chunk_voxels=chunk_voxels,
            )
            t1_fit = t1_out.fit
            files.update({f"vfa_{k}": v for k, v in t1_out.files.items()})
            messages += t1_out.warnings
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", TumorscopeWarning)
                t1_fit = vfa_model.fit(vfa_vol.data, region, b1=b1_map, chunk_voxels=chunk_voxels)
            messages += [
                str(w.message) for w in caught if issubclass(w.category, TumorscopeWarning)
            ]
            t1_fit.provenance["inputs"] = {
                role: {"path": str(p), "sha256": file_sha256(p)}
                for role, p in (("vfa", vfa_path), ("b1", b1_path))
                if p is not None
            }
            written = t1_fit.to_nifti(out, vfa_vol.affine, prefix=f"{prefix}vfa_")
            files.update({f"vfa_{k}": v for k, v in written.items()})
        t1_map = np.asarray(t1_fit["T1"], dtype=float)
        t1_source: dict[str, Any] = {"vfa": str(vfa_path) if vfa_path else "volume"}
    else:
        t1_map = np.full(vol.spatial_shape, float(t1_ms))  # type: ignore[arg-type]
        t1_source = {"t1_ms": float(t1_ms)}  # type: ignore[arg-type]
    if b1_map is not None:
        t1_source["b1"] = str(b1_path) if b1_path else "array"

    # ---------------------------------------------------------------- 3. concentration
    conc, cstatus = signal_to_concentration(
        vol.data,
        t1_ms=t1_map,
        flip_angle_deg=proto.flip_angle_deg,
        tr_ms=proto.tr_ms,
        relaxivity=r1,
        n_baseline=proto.n_baseline,
        b1=b1_map,
    )
    valid = np.all(np.isfinite(conc), axis=-1)
    # voxels with signal: baseline above 10% of the 99th percentile (background is noise,
    # whose T1 and concentration are meaningless)
    baseline = vol.data[..., : proto.n_baseline].mean(axis=-1)
    signal_mask = baseline >= 0.1 * np.percentile(baseline, 99.0)
    fit_region = (valid & signal_mask) if fit_mask is None else fit_mask
    if not np.any(fit_region & valid):
        raise DataError(
            "no voxel with a valid concentration curve in the mask", file=dce_path, field="mask"
        )
    stage_prov: dict[str, Any] = {
        "stage": "dce",
        "dce": str(dce_path) if dce_path else "volume",
        "protocol": proto.to_dict(),
        "relaxivity_per_mM_s": r1,
        "hematocrit": hct,
        "t1": t1_source,
    }
    conc_vol = vol.with_data(conc.astype(np.float32))
    p = out / f"{prefix}concentration.nii.gz"
    conc_vol.to_nifti(p)
    _write_json(
        out / f"{prefix}concentration.json",
        {"Units": "mM", "Description": "contrast agent concentration", "Provenance": stage_prov},
    )
    files["concentration"] = p
    files["concentration_status"] = _write_map(
        out,
        f"{prefix}concentration_status",
        cstatus,
        vol.affine,
        "1",
        "signal-to-concentration status: 0 ok, 1 signal above maximum, 2 bad T1, "
        "3 bad baseline, 4 negative signal",
        stage_prov,
    )

    # ---------------------------------------------------------------- 4. AIF
    info: dict[str, Any] = {"hematocrit": hct}
    if aif_path is not None:
        cp = cp_file
        info.update(source=str(aif_path), sha256=file_sha256(aif_path), kind=aif_kind)
        cb = aifmod.plasma_to_blood(cp, hematocrit=hct)
    elif aif_name.lower() == "auto":
        where = valid & signal_mask if search_mask is None else search_mask & valid
        auto = aifmod.automatic_aif(conc, t, mask=where, n_baseline=proto.n_baseline)
        cb = auto.concentration_mM
        cp = aifmod.blood_to_plasma(cb, hematocrit=hct)
        vox = np.zeros(vol.spatial_shape, np.uint8)
        vox[tuple(auto.voxels.T)] = 1
        files["aif_voxels"] = _write_map(
            out,
            f"{prefix}aif_voxels",
            vox,
            vol.affine,
            "1",
            "voxels of the automatic AIF",
            stage_prov,
        )
        info.update(
            source="auto",
            voxels=auto.voxels.tolist(),
            scores=auto.scores.tolist(),
            n_candidates=auto.n_candidates,
            criteria=auto.criteria,
        )
    else:
        name = aif_name.lower()
        if aif_delay_s is None:
            med = np.median(conc[fit_region & valid], axis=0)
            fine = np.arange(0.0, 120.0, 0.1)
            onset_pop = _onset(fine, aifmod.population_aif(name, fine))  # type: ignore[arg-type]
            delay = _onset(t, med) - onset_pop
            if not np.isfinite(delay):
                raise DataError(
                    "cannot align the population AIF: the fitted voxels do not enhance; "
                    "give aif_delay_s",
                    field="aif_delay_s",
                )
            info["delay_estimated"] = True
        else:
            delay = float(aif_delay_s)
            info["delay_estimated"] = False
        cb = aifmod.population_aif(name, t, delay_s=delay)  # type: ignore[arg-type]
        cp = aifmod.blood_to_plasma(cb, hematocrit=hct)
        info.update(source=name, delay_s=float(delay))
    lines = ["time_s\tcb_mM\tcp_mM"] + [
        f"{a:.6g}\t{b:.6g}\t{c:.6g}" for a, b, c in zip(t, cb, cp, strict=True)
    ]
    text = "\n".join(lines) + "\n"
    atomic_write(out / f"{prefix}aif.tsv", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    files["aif"] = out / f"{prefix}aif.tsv"
    stage_prov["aif"] = info

    # ---------------------------------------------------------------- 5. model fit
    m = model_cls(t, cp, fit_delay=fit_delay, method=method)  # type: ignore[call-arg]
    inputs = {"dce": str(dce_path)} if dce_path else {}
    if vfa_path:
        inputs["vfa"] = str(vfa_path)
    res = fit_volume(
        m,
        conc_vol,
        out_dir=out,
        mask=fit_region,
        prefix=f"{prefix}{key}_",
        input_files=inputs or None,
        chunk_voxels=chunk_voxels,
    )
    files.update({f"{key}_{k}": v for k, v in res.files.items()})
    messages += res.warnings

    # ---------------------------------------------------------------- 6. semi-quantitative
    sq: dict[str, np.ndarray] = {}
    if semiquant:
        cm = np.where(fit_region[..., None], conc, np.nan)
        sq = semi_quantitative(cm, t, n_baseline=proto.n_baseline)
        # the maps' own provenance (model, options, versions: what a report's methods need),
        # with the stage's (series, protocol, relaxivity, T1 source) beside it
        from .. import __version__

        sq_prov = {
            **stage_prov,
            "model": "semi-quantitative",
            "model_class": "tumorscope.models.dce_semiquant.semi_quantitative",
            "options": {
                "method": "model-free curve measures of the concentration",
                "n_baseline": proto.n_baseline,
            },
            "tumorscope_version": __version__,
            "numpy_version": np.__version__,
        }
        for name, arr in sq.items():
            files[f"sq_{name}"] = _write_map(
                out,
                f"{prefix}sq_{name}",
                arr,
                vol.affine,
                SEMIQUANT_UNITS[name],
                f"semi-quantitative {name}",
                sq_prov,
            )

    # ---------------------------------------------------------------- 7. stage provenance
    hashes = {}
    for role, path in (("dce", dce_path), ("vfa", vfa_path)):
        if path is not None:
            hashes[role] = {"path": str(path), "sha256": file_sha256(path)}
    stage_prov["inputs"] = hashes
    stage_prov["model"] = res.fit.provenance.get("model")
    stage_prov["fit_delay"] = fit_delay
    stage_prov["files"] = {k: str(v) for k, v in files.items()}
    _write_json(out / f"{prefix}dce_stage.json", stage_prov)
    files["stage"] = out / f"{prefix}dce_stage.json"
    return DCEStageOutputs(res.fit, t1_map, t, cp, info, sq, files, messages)


def fit_dce_visit(
    visit: Any,
    *,
    out_dir: str | os.PathLike[str],
    model: str = "extended_tofts",
    aif: str | os.PathLike[str] = "parker",
    mask: Any = "lesions",
    **options: Any,
) -> DCEStageOutputs:
    """Run :func:`fit_dce` on a study visit (``tumorscope.io.open_study(...)`` visits).

    Parameters
    ----------
    visit : tumorscope.io.Visit
        Must hold a ``dce`` series and a ``t1_vfa`` series (roles of the manifest).
    out_dir : path-like
    model, aif : see :func:`fit_dce`
    mask : "lesions", None or a mask
        ``"lesions"`` (default): every labelled lesion voxel of the visit (all voxels if the
        visit has no segmentation).
    **options
        Other keyword options of :func:`fit_dce` (``fit_delay``, ``method`` ...). A B1 map
        named by the VFA sidecar's ``B1map`` field (a file name relative to the sidecar's
        folder) is used unless ``b1=`` is given.

    Raises
    ------
    DataError
        The visit lacks a DCE or VFA series.
    """
    series = visit.series
    for role in ("dce", "t1_vfa"):
        if role not in series:
            raise DataError(
                f"visit has no {role!r} series (found {sorted(series)})",
                file=str(visit.path),
                field=role,
            )
    if isinstance(mask, str) and mask == "lesions":
        les = visit.lesions
        mask = None if les is None else les.load_labels().data != 0
    defaults = dict(visit.study.manifest.dce)
    b1_name = series["t1_vfa"].sidecar.get("B1map")
    if b1_name and "b1" not in options:
        b1_path = series["t1_vfa"].path.parent / str(b1_name)
        if not b1_path.is_file():
            raise DataError(
                f"the VFA sidecar names a B1 map {b1_name!r} that does not exist",
                file=str(series["t1_vfa"].path),
                field="B1map",
            )
        options["b1"] = b1_path
    prefix = options.pop("prefix", f"sub-{visit.subject_id}_ses-{visit.id}_")
    return fit_dce(
        series["dce"].path,
        out_dir=out_dir,
        vfa=series["t1_vfa"].path,
        model=model,
        aif=aif,
        mask=mask,
        defaults=defaults,
        prefix=prefix,
        **options,
    )
