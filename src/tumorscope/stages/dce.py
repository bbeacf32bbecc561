"""DCE stage: a DCE series (+ a VFA series or one T1) → T1, concentration, AIF and maps on disk.

Backs ``tumorscope fit dce`` and the pipeline's ``fit_dce`` step: both call :func:`fit_dce`
(the step through :func:`fit_dce_visit`), so they write the same files under the same names.

Steps (every input is checked before anything is written; every file is written atomically):

1. **inputs** (:func:`~tumorscope.stages._dce_inputs.check_inputs`): the DCE series and its
   protocol (sidecar: ``FrameTimes``, ``FlipAngle``, ``RepetitionTime``, ``BaselineFrames``;
   ``Relaxivity`` and ``Hematocrit`` from the options, the sidecar or the study manifest's
   ``dce:`` defaults, in that order), the pre-contrast T1 (a VFA series fitted with
   :class:`~tumorscope.models.relaxometry.VFAT1`, or one value in ms), masks and the B1 map
   on the same grid, the AIF choice, the model name;
2. **VFA T1** (:func:`_t1_map`): maps ``<prefix>vfa_T1.nii.gz`` etc.;
3. **concentration** (:func:`_concentration`):
   :func:`~tumorscope.models.dce.signal_to_concentration` → ``<prefix>concentration.nii.gz``
   (mM, 4-D) and ``<prefix>concentration_status.nii.gz``;
4. **AIF** (:func:`_choose_aif`): a population curve (``parker``, ``georgiou``, ``mcgrath``)
   aligned to the bolus arrival, the automatic image-derived AIF (``auto``; the chosen voxels
   are written as ``<prefix>aif_voxels.nii.gz``), or a CSV/TSV file; converted to plasma with
   the hematocrit and written as ``<prefix>aif.tsv``;
5. **kinetic fit** (:func:`_kinetic_fit`): a registered DCE model on the concentration within
   the mask → ``<prefix><model>_<param>.nii.gz`` + sidecars (units, provenance);
6. **semi-quantitative maps** (:func:`_semiquant_maps`; iAUC60/90, TTP, ...) →
   ``<prefix>sq_<name>.nii.gz``;
7. ``<prefix>dce_stage.json``: the provenance of the whole stage (T1 source, AIF source and
   delay, hematocrit, relaxivity, input files named relative to their study root with their
   SHA-256, the files written named relative to the JSON's folder: no absolute path).

An empty mask (given, with no voxel: every lesion of the visit gone) is a result, not an
error: nothing is fitted, every map is written empty (NaN, status 255), a population AIF is
not aligned (delay 0 s, used by no voxel), and a note goes into the warnings and the stage
JSON (``docs/dce.md``).

Population AIF alignment: with ``aif_delay_s=None`` the population curve is shifted so that
its onset (first time it reaches 10% of its peak) matches the onset of the median enhancement
curve of the fitted voxels. Tissue enhances a few seconds after the artery, so this places the
AIF slightly late; fit with ``fit_delay=True`` (negative delays allowed) to absorb the rest, or
give ``aif_delay_s``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._warnings import capture_warnings
from ..errors import DataError, FitError, ProtocolError, TumorscopeWarning
from ..files import write_json, write_map
from ..models import aif as aifmod
from ..volume import atomic_write
from ._dce_inputs import Inputs, check_inputs
from .base import MapFile, SeriesInput, StageResult, with_sidecars
from .fit import fit_volume, input_record, provenance_path

if TYPE_CHECKING:
    from ..models.base import FitResult

__all__ = ["DCE_MODELS", "DCEOptions", "DCEResult", "fit_dce", "fit_dce_visit"]

#: Model names the stage accepts (registry keys).
DCE_MODELS = ("tofts", "extended_tofts", "patlak", "2cxm", "2cum")
_CONCENTRATION_STATUS = (
    "signal-to-concentration status: 0 ok, 1 signal above maximum, 2 bad T1, "
    "3 bad baseline, 4 negative signal"
)
_EMPTY_MASK_NOTE = (
    "the mask is empty (no lesion at this visit?): nothing fitted; the maps are written empty "
    "(NaN, status 255 'outside the mask')"
)
#: Voxels per block of the semi-quantitative maps.
_SQ_BLOCK = 65536
# the semi-quantitative maps name this function in their provenance (``model_class``)
_SEMIQUANT_CLASS = "tumorscope.models.dce.semi_quantitative"


@dataclass(frozen=True)
class DCEOptions:
    """How to run the DCE stage (today's defaults; ``tumorscope fit dce`` options).

    Attributes
    ----------
    model : {"tofts", "extended_tofts", "patlak", "2cxm", "2cum"}, default "extended_tofts"
    aif : {"parker", "georgiou", "mcgrath", "auto"} or path-like, default "parker"
        Population AIF, automatic image-derived AIF, or a CSV/TSV file with ``time_s`` and
        ``cp_mM`` (plasma) or ``cb_mM`` (whole blood).
    aif_delay_s : float, optional
        Delay of the population AIF (s). Default: aligned to the data (module docstring).
    t1_ms : float, optional
        One pre-contrast T1 (ms) for every voxel, instead of a VFA series.
    relaxivity : float, optional
        r1 in 1/(mM·s); default: the sidecar's ``Relaxivity``, then ``defaults``.
    hematocrit : float, optional
        Default: the sidecar's ``Hematocrit``, then ``defaults``.
    fit_delay : bool, default False
        Fit the arrival delay per voxel.
    method : {"varpro", "lm", "linear"}, optional
        Default: the model's (``"varpro"`` for the Tofts models, ``"lm"`` otherwise; see
        ``docs/dce.md``).
    semiquant : bool, default True
        Also write the semi-quantitative maps.
    chunk_voxels : int, optional
        Voxels per block (memory bound).
    defaults : mapping, default {}
        ``{"relaxivity": ..., "hematocrit": ...}``: the study manifest's ``dce:`` block, used
        when neither the options nor the sidecar give a value (:func:`fit_dce_visit` sets it).

    Raises
    ------
    FitError
        An unknown model.
    ProtocolError
        A T1 that is not a positive number.
    """

    model: str = "extended_tofts"
    aif: str | os.PathLike[str] = "parker"
    aif_delay_s: float | None = None
    t1_ms: float | None = None
    relaxivity: float | None = None
    hematocrit: float | None = None
    fit_delay: bool = False
    method: str | None = None
    semiquant: bool = True
    chunk_voxels: int | None = None
    defaults: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        key = str(self.model).lower()
        if key not in DCE_MODELS:
            raise FitError(
                f"unknown DCE model {self.model!r}; expected one of {DCE_MODELS}", field="model"
            )
        object.__setattr__(self, "model", key)
        t1 = self.t1_ms
        if t1 is not None and not (np.isfinite(t1) and t1 > 0):
            raise ProtocolError(f"must be > 0 ms, got {t1!r}", field="t1_ms")


@dataclass
class DCEResult(StageResult):
    """What the DCE stage wrote and computed: a :class:`StageResult` and the stage's values.

    ``maps`` holds the model's maps (with the model's status map and fit, series ``"dce"``),
    the semi-quantitative maps (model ``"sq"``, no status, series ``"dce"``) and the VFA
    ``T1`` and ``R1`` maps (model ``"vfa"``, the VFA status map, series ``"t1_vfa"``).

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
    outputs : dict of str to Path
        Every image and table written, by name (``extended_tofts_Ktrans``, ``vfa_T1``,
        ``concentration``, ``aif``, ``sq_iAUC60``, ``stage`` ...); ``files`` also lists the
        sidecars.
    """

    fit: FitResult = field(kw_only=True)
    t1_ms: np.ndarray = field(kw_only=True)
    times_s: np.ndarray = field(kw_only=True)
    aif_mM: np.ndarray = field(kw_only=True)
    aif_info: dict[str, Any] = field(default_factory=dict)
    semiquant: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)


@dataclass
class _Writer:
    """The output folder, the files written so far (by name, in order) and the warnings."""

    out: Path
    prefix: str
    affine: np.ndarray
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def map(self, key: str, arr: np.ndarray, unit: str, desc: str, prov: Any) -> Path:
        path = self.out / f"{self.prefix}{key}.nii.gz"
        write_map(path, arr, self.affine, units=unit, description=desc, provenance=prov)
        self.files[key] = path
        return path


# --------------------------------------------------------------------------- the steps
def _t1_map(
    inp: Inputs, options: DCEOptions, region: np.ndarray | None, w: _Writer
) -> tuple[np.ndarray, dict[str, Any]]:
    """Step 2: the pre-contrast T1 (ms) from the VFA series (maps written) or one value."""
    from ..models.relaxometry import VFAT1

    if inp.vfa_vol is None:
        t1 = float(options.t1_ms)  # type: ignore[arg-type]
        source: dict[str, Any] = {"t1_ms": t1}
        t1_map = np.full(inp.vol.spatial_shape, t1)
    else:
        assert inp.vfa_proto is not None
        model = VFAT1.from_protocol(inp.vfa_proto)
        if inp.b1_map is None:
            res = fit_volume(
                model,
                inp.vfa_vol,
                out_dir=w.out,
                mask=region,
                prefix=f"{w.prefix}vfa_",
                input_files={"vfa": str(inp.vfa_path)} if inp.vfa_path else None,
                chunk_voxels=options.chunk_voxels,
            )
            fit, written = res.fit, res.files
            w.warnings += res.warnings
        else:
            fit = _vfa_fit_with_b1(model, inp, region, options, w)
            written = fit.to_nifti(w.out, inp.vfa_vol.affine, prefix=f"{w.prefix}vfa_")
        w.files.update({f"vfa_{k}": v for k, v in written.items()})
        t1_map = np.asarray(fit["T1"], dtype=float)
        source = {"vfa": provenance_path(inp.vfa_path) if inp.vfa_path else "volume"}
    if inp.b1_map is not None:
        source["b1"] = provenance_path(inp.b1_path) if inp.b1_path else "array"
    return t1_map, source


def _vfa_fit_with_b1(
    model: Any, inp: Inputs, region: np.ndarray | None, options: DCEOptions, w: _Writer
) -> FitResult:
    """The VFA fit with the B1 map as a per-voxel input (inputs hashed: VFA and B1 files)."""
    assert inp.vfa_vol is not None
    with capture_warnings() as caught:
        fit = model.fit(inp.vfa_vol.data, region, b1=inp.b1_map, chunk_voxels=options.chunk_voxels)
    w.warnings += [str(m.message) for m in caught if issubclass(m.category, TumorscopeWarning)]
    fit.provenance["inputs"] = {
        role: input_record(p)
        for role, p in (("vfa", inp.vfa_path), ("b1", inp.b1_path))
        if p is not None
    }
    return fit


@dataclass
class _Concentration:
    conc: np.ndarray  # (X, Y, Z, n) mM
    valid: np.ndarray  # voxels whose whole curve is finite
    signal_mask: np.ndarray  # voxels with signal
    fit_region: np.ndarray  # voxels to fit


def _concentration(
    inp: Inputs, t1_map: np.ndarray, prov: dict[str, Any], w: _Writer
) -> _Concentration:
    """Step 3: the concentration (4-D map, mM) and its status map; the voxels to fit."""
    from ..models.dce import signal_to_concentration_valid

    vol, proto = inp.vol, inp.proto
    # the voxels whose whole curve is finite come from the same compiled pass
    conc, cstatus, valid = signal_to_concentration_valid(
        vol.data,
        t1_ms=t1_map,
        flip_angle_deg=proto.flip_angle_deg,
        tr_ms=proto.tr_ms,
        relaxivity=inp.relaxivity,
        n_baseline=proto.n_baseline,
        b1=inp.b1_map,
        dtype=np.float32,  # the 4-D result: the maps are float32, the fits convert blocks
    )
    # voxels with signal: baseline above 10% of the 99th percentile (background is noise,
    # whose T1 and concentration are meaningless)
    baseline = vol.data[..., : proto.n_baseline].mean(axis=-1)
    signal_mask = baseline >= 0.1 * np.percentile(baseline, 99.0)
    fit_region = (valid & signal_mask) if inp.fit_mask is None else inp.fit_mask
    if not inp.empty_mask and not np.any(fit_region & valid):
        raise DataError(
            "no voxel with a valid concentration curve in the mask",
            file=inp.dce_path,
            field="mask",
        )
    w.map("concentration", conc, "mM", "contrast agent concentration", prov)
    w.map("concentration_status", cstatus, "1", _CONCENTRATION_STATUS, prov)
    return _Concentration(conc, valid, signal_mask, fit_region)


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


def _population_delay(name: str, t: np.ndarray, c: _Concentration) -> float:
    """Delay (s) that aligns the population AIF's onset with the fitted voxels' onset."""
    where = c.fit_region & c.valid
    # frame by frame, the fitted voxels found once (not a scan of the whole mask per frame),
    # in the concentration's own memory order (a view): a 1-D temporary per frame
    n = c.conc.shape[-1]
    order: Literal["C", "F"] = "F" if c.conc.flags.f_contiguous and c.conc.ndim > 1 else "C"
    if order == "F" and c.conc.flags.c_contiguous:
        order = "C"
    frames = c.conc.reshape(-1, n, order=order)
    idx = np.flatnonzero(where.ravel(order=order))
    med = np.array([np.median(frames[idx, j]) for j in range(n)])
    fine = np.arange(0.0, 120.0, 0.1)
    onset_pop = _onset(fine, aifmod.population_aif(name, fine))  # type: ignore[arg-type]
    delay = _onset(t, med) - onset_pop
    if not np.isfinite(delay):
        raise DataError(
            "cannot align the population AIF: the fitted voxels do not enhance; give aif_delay_s",
            field="aif_delay_s",
        )
    return delay


def _choose_aif(
    inp: Inputs, options: DCEOptions, c: _Concentration, prov: dict[str, Any], w: _Writer
) -> tuple[np.ndarray, dict[str, Any]]:
    """Step 4: the plasma AIF (file, automatic or population) and how it was chosen."""
    t, hct = inp.proto.t, inp.hematocrit
    info: dict[str, Any] = {"hematocrit": hct}
    name = str(options.aif).lower()
    if inp.aif_file is not None:
        cp, kind, path = inp.aif_file
        rec = input_record(path)
        info.update(source=rec["path"], sha256=rec["sha256"], kind=kind)
        cb = aifmod.plasma_to_blood(cp, hematocrit=hct)
    elif name == "auto":
        where = c.valid & c.signal_mask if inp.search_mask is None else inp.search_mask & c.valid
        auto = aifmod.automatic_aif(c.conc, t, mask=where, n_baseline=inp.proto.n_baseline)
        cb = auto.concentration_mM
        cp = aifmod.blood_to_plasma(cb, hematocrit=hct)
        vox = np.zeros(inp.vol.spatial_shape, np.uint8)
        vox[tuple(auto.voxels.T)] = 1
        w.map("aif_voxels", vox, "1", "voxels of the automatic AIF", prov)
        info.update(
            source="auto",
            voxels=auto.voxels.tolist(),
            scores=auto.scores.tolist(),
            n_candidates=auto.n_candidates,
            criteria=auto.criteria,
        )
    else:
        info["delay_estimated"] = options.aif_delay_s is None and bool(c.fit_region.any())
        if options.aif_delay_s is not None:
            delay = float(options.aif_delay_s)
        elif info["delay_estimated"]:
            delay = _population_delay(name, t, c)
        else:  # an empty mask: no voxel to align the curve to, and none that uses it
            delay = 0.0
            info["note"] = "empty mask: the delay was not estimated (0 s); no voxel uses this AIF"
        cb = aifmod.population_aif(name, t, delay_s=delay)  # type: ignore[arg-type]
        cp = aifmod.blood_to_plasma(cb, hematocrit=hct)
        info.update(source=name, delay_s=float(delay))
    rows = [f"{a:.6g}\t{b:.6g}\t{p:.6g}" for a, b, p in zip(t, cb, cp, strict=True)]
    text = "\n".join(["time_s\tcb_mM\tcp_mM", *rows]) + "\n"
    path = w.out / f"{w.prefix}aif.tsv"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    w.files["aif"] = path
    return cp, info


def _kinetic_fit(
    inp: Inputs, options: DCEOptions, cp: np.ndarray, c: _Concentration, w: _Writer
) -> FitResult:
    """Step 5: the pharmacokinetic model on the concentration within the fitted voxels."""
    key = options.model
    model = inp.model_cls(inp.proto, cp, fit_delay=options.fit_delay, method=options.method)
    inputs = {"dce": str(inp.dce_path)} if inp.dce_path else {}
    if inp.vfa_path:
        inputs["vfa"] = str(inp.vfa_path)
    res = fit_volume(
        model,
        inp.vol.with_data(c.conc),  # float32: the engine converts one block at a time
        out_dir=w.out,
        mask=c.fit_region,
        prefix=f"{w.prefix}{key}_",
        input_files=inputs or None,
        chunk_voxels=options.chunk_voxels,
    )
    w.files.update({f"{key}_{k}": v for k, v in res.files.items()})
    w.warnings += res.warnings
    return res.fit


def _semiquant_maps(
    inp: Inputs, c: _Concentration, prov: dict[str, Any], w: _Writer
) -> dict[str, np.ndarray]:
    """Step 6: the semi-quantitative maps of the fitted voxels' concentration curves."""
    from .. import __version__
    from ..models.dce import SEMIQUANT_UNITS, semi_quantitative

    # the fitted voxels only, in blocks: no masked 4-D copy of the curves; the other voxels
    # get the measures of a NaN curve (NaN, curve type 0 "none"), as a masked curve would
    t, nb = inp.proto.t, inp.proto.n_baseline
    n = c.conc.shape[-1]
    # voxels in the concentration's own memory order (Fortran as the series: a view, no copy)
    order: Literal["C", "F"] = "F" if c.conc.flags.f_contiguous and c.conc.ndim > 1 else "C"
    if order == "F" and c.conc.flags.c_contiguous:
        order = "C"
    flat = c.conc.reshape(-1, n, order=order)
    outside = semi_quantitative(np.full((1, n), np.nan), t, n_baseline=nb)
    sq = {k: np.full(flat.shape[0], v[0], v.dtype) for k, v in outside.items()}
    idx = np.flatnonzero(c.fit_region.ravel(order=order))
    for lo in range(0, idx.size, _SQ_BLOCK):
        sel = idx[lo : lo + _SQ_BLOCK]
        for k, v in semi_quantitative(flat[sel], t, n_baseline=nb).items():
            sq[k][sel] = v
    sq = {k: v.reshape(c.conc.shape[:-1], order=order) for k, v in sq.items()}
    # the maps' own provenance (model, options, versions: what a report's methods need),
    # with the stage's (series, protocol, relaxivity, T1 source) beside it
    sq_prov = {
        **prov,
        "model": "semi-quantitative",
        "model_class": _SEMIQUANT_CLASS,
        "options": {
            "method": "model-free curve measures of the concentration",
            "n_baseline": inp.proto.n_baseline,
        },
        "tumorscope_version": __version__,
        "numpy_version": np.__version__,
    }
    for name, arr in sq.items():
        w.map(f"sq_{name}", arr, SEMIQUANT_UNITS[name], f"semi-quantitative {name}", sq_prov)
    return sq


def _map_files(key: str, fit: FitResult, files: Mapping[str, Path]) -> list[MapFile]:
    """The maps the pipeline indexes: the model's, the semi-quantitative and VFA T1/R1."""
    maps = [
        MapFile(key, p, files[f"{key}_{p}"], files.get(f"{key}_status"), "dce", fit)
        for p in fit.maps
        if f"{key}_{p}" in files
    ]
    maps += [
        MapFile("sq", k[3:], path, None, "dce")
        for k, path in files.items()
        if k.startswith("sq_") and path.name.endswith(".nii.gz")
    ]
    maps += [
        MapFile("vfa", p, files[f"vfa_{p}"], files.get("vfa_status"), "t1_vfa")
        for p in ("T1", "R1")
        if f"vfa_{p}" in files
    ]
    return maps


# --------------------------------------------------------------------------- the stage
def fit_dce(
    dce: SeriesInput,
    vfa: SeriesInput | None = None,
    *,
    out_dir: str | os.PathLike[str],
    prefix: str = "",
    mask: Any = None,
    aif_mask: Any = None,
    b1: Any = None,
    options: DCEOptions | None = None,
) -> DCEResult:
    """Run the DCE chain on a DCE series and write every map (see the module docstring).

    Parameters
    ----------
    dce : SeriesInput, shape (X, Y, Z, n)
        DCE series (signal, a.u.) with its :class:`~tumorscope.protocol.DynamicProtocol` and
        sidecar (``Relaxivity``, ``Hematocrit``); its ``files["series"]`` is hashed into the
        provenance (an in-memory series without files is named ``"volume"``).
    vfa : SeriesInput, shape (X, Y, Z, n_fa), optional
        VFA series on the same grid, with its :class:`~tumorscope.protocol.VFAProtocol`, for
        the T1 map. Give exactly one of ``vfa`` and ``options.t1_ms``.
    out_dir : path-like, keyword-only
        Output folder (created).
    prefix : str, keyword-only
        File name prefix, e.g. ``"sub-001_ses-01_"``.
    mask : path-like, Volume or ndarray, keyword-only, optional
        Voxels to fit (non-zero). Default: every voxel with signal (mean baseline above 10%
        of its 99th percentile) and a valid concentration curve. With a mask, T1 (and so the
        concentration) is computed only inside it (and inside ``aif_mask``; everywhere for
        ``aif="auto"`` without ``aif_mask``), NaN elsewhere. An empty mask fits nothing and
        writes every map empty, with a note (module docstring).
    aif_mask : mask, keyword-only, optional
        Where the automatic AIF looks for arteries (default: every voxel with signal).
    b1 : path-like, Volume or ndarray, shape (X, Y, Z), keyword-only, optional
        Relative flip angle map (actual / nominal) on the same grid. It scales the flip
        angles of the VFA fit and of the DCE signal-to-concentration (same transmit field
        assumed for both series).
    options : DCEOptions, keyword-only, optional
        Model, AIF, relaxivity, hematocrit ... (default: ``DCEOptions()``).

    Returns
    -------
    DCEResult
        ``maps`` (model, ``sq`` and ``vfa`` maps as :class:`MapFile`), ``files`` (every
        file, sidecars included), ``warnings``, and the stage's values (fit, T1, AIF ...).

    Raises
    ------
    DataError
        Missing or malformed files, grids that differ, an unreadable AIF file, a mask (or,
        without one, a volume) with no valid concentration curve in it.
    ProtocolError
        Missing or impossible acquisition values (relaxivity, hematocrit, flip angle ...).
    FitError
        Unknown model, AIF or method; both or neither of ``vfa`` and ``t1_ms``.
    """
    opts = options if options is not None else DCEOptions()
    inp = check_inputs(dce, vfa, opts, mask, aif_mask, b1)
    w = _Writer(Path(out_dir), prefix, inp.vol.affine)
    region = None
    if inp.fit_mask is not None:
        region = inp.fit_mask | (inp.search_mask if inp.search_mask is not None else False)
        if str(opts.aif).lower() == "auto" and inp.search_mask is None:
            region = None  # the automatic AIF searches everywhere
    t1_map, t1_source = _t1_map(inp, opts, region, w)
    prov: dict[str, Any] = {
        "stage": "dce",
        "dce": provenance_path(inp.dce_path) if inp.dce_path else "volume",
        "protocol": inp.proto.to_dict(),
        "relaxivity_per_mM_s": inp.relaxivity,
        "hematocrit": inp.hematocrit,
        "t1": t1_source,
    }
    if inp.empty_mask:
        prov["note"] = _EMPTY_MASK_NOTE
        w.warnings.append(_EMPTY_MASK_NOTE)
    c = _concentration(inp, t1_map, prov, w)
    cp, info = _choose_aif(inp, opts, c, prov, w)
    prov["aif"] = info
    fit = _kinetic_fit(inp, opts, cp, c, w)
    sq = _semiquant_maps(inp, c, prov, w) if opts.semiquant else {}
    prov["inputs"] = {
        role: input_record(path)
        for role, path in (("dce", inp.dce_path), ("vfa", inp.vfa_path))
        if path is not None
    }
    prov["model"] = fit.provenance.get("model")
    prov["fit_delay"] = opts.fit_delay
    # the files written, by name relative to this JSON's folder (not the user's folders)
    prov["files"] = {k: os.path.relpath(v, w.out).replace(os.sep, "/") for k, v in w.files.items()}
    w.files["stage"] = write_json(w.out / f"{prefix}dce_stage.json", prov)
    return DCEResult(
        maps=_map_files(opts.model, fit, w.files),
        files=with_sidecars(list(w.files.values())),
        warnings=w.warnings,
        fit=fit,
        t1_ms=t1_map,
        times_s=inp.proto.t,
        aif_mM=cp,
        aif_info=info,
        semiquant=sq,
        outputs=w.files,
    )


def fit_dce_visit(
    visit: Any,
    *,
    out_dir: str | os.PathLike[str],
    options: DCEOptions | None = None,
    mask: Any = "lesions",
    b1: Any = None,
    prefix: str | None = None,
) -> DCEResult:
    """Run :func:`fit_dce` on a study visit (``tumorscope.io.open_study(...)`` visits).

    Parameters
    ----------
    visit : tumorscope.io.Visit
        Must hold a ``dce`` series and a ``t1_vfa`` series (roles of the manifest).
    out_dir : path-like, keyword-only
    options : DCEOptions, keyword-only, optional
        The study manifest's ``dce:`` block is added to ``options.defaults`` (the options'
        own defaults win).
    mask : "lesions", None or a mask, keyword-only
        ``"lesions"`` (default): every labelled lesion voxel of the visit (all voxels if the
        visit has no segmentation; none if every lesion is gone: the maps are written empty).
    b1 : B1 map, keyword-only, optional
        Default: the map named by the VFA sidecar's ``B1map`` field (a file name relative to
        the sidecar's folder), if any.
    prefix : str, keyword-only, optional
        Default: ``"sub-<subject>_ses-<visit>_"``.

    Raises
    ------
    DataError
        The visit lacks a DCE or VFA series, or its VFA sidecar names a missing B1 map.
    """
    series = visit.series
    absent = [role for role in ("dce", "t1_vfa") if role not in series]
    if absent:
        raise DataError(
            f"visit has no {absent[0]!r} series (found {sorted(series)})",
            file=str(visit.path),
            field=absent[0],
        )
    if isinstance(mask, str) and mask == "lesions":
        les = visit.lesions
        mask = None if les is None else les.load_labels().data != 0
    opts = options if options is not None else DCEOptions()
    opts = replace(opts, defaults={**visit.study.manifest.dce, **opts.defaults})
    vfa = SeriesInput.of(series["t1_vfa"])
    return fit_dce(
        SeriesInput.of(series["dce"]),
        vfa,
        out_dir=out_dir,
        prefix=prefix if prefix is not None else f"sub-{visit.subject_id}_ses-{visit.id}_",
        mask=mask,
        b1=b1 if b1 is not None else _b1_named_by(vfa),
        options=opts,
    )


def _b1_named_by(vfa: SeriesInput) -> Path | None:
    """The B1 map the VFA sidecar names (``B1map``: relative to the sidecar's folder)."""
    name = vfa.sidecar.get("B1map")
    if not name:
        return None
    path = vfa.path.parent / str(name)
    if not path.is_file():
        raise DataError(
            f"the VFA sidecar names a B1 map {name!r} that does not exist",
            file=vfa.label,
            field="B1map",
        )
    return path
