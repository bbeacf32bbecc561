"""The immune-imaging substudy's series of a phantom visit (IR T1, multi-echo T2,
ferumoxytol pre/post GRE, 19F), written by :mod:`tumorscope.phantom.generate`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .scenarios import FERUMOXYTOL_DR2STAR, FLUORINE, T2STAR_MS, TISSUES, Scenario
from .signals import rician

if TYPE_CHECKING:
    from .generate import PhantomConfig


def _to_int16(a: np.ndarray) -> np.ndarray:
    """``a`` rounded and clipped to int16 like scanner data; ``a`` (a float array the caller
    no longer needs) is overwritten on the way: the same numbers without two temporaries."""
    np.rint(a, out=a)
    np.clip(a, 0, 32767, out=a)
    return a.astype(np.int16)


def _substudy_series(
    cfg: PhantomConfig,
    sc: Scenario,
    vi: int,
    names: list[str],
    tissue_nobl: np.ndarray,
    tissue: np.ndarray,
    blood_idx: int,
    body: np.ndarray,
    artery: np.ndarray,
    art_frac: np.ndarray,
    m0: np.ndarray,
    p: dict[str, np.ndarray],
    labels: np.ndarray,
    sig: dict[str, float],
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    rows_which: tuple[np.ndarray, np.ndarray],
) -> dict[str, tuple[np.ndarray, dict[str, Any] | None]]:
    """IR T1, multi-echo T2, ferumoxytol pre/post GRE and 19F for the immune substudy.

    ``rows_which`` are the distinct body voxels and each body voxel's row
    (``generate._distinct_rows``): the signal curves are computed once per row.

    Returns ``{"datatype/suffix": (int16 image, sidecar)}`` and ``{"truth:<name>": (map, None)}``.
    """
    out: dict[str, tuple[np.ndarray, dict[str, Any] | None]] = {}
    if sc.trajectory not in cfg.substudy:
        return out
    blood = TISSUES["blood"]
    t1 = np.where(body, p["T1"], 1.0)
    t2 = np.where(body, p["T2"], 1.0)
    pd = np.where(body, m0 / 30.0, 0.0)
    rows, which = rows_which
    t1r, t2r, pdr = (v[body][rows][:, None] for v in (t1, t2, pd))

    def per_voxel(curves: np.ndarray) -> np.ndarray:  # the rows' curves, 0 outside the body
        img = np.zeros((*body.shape, curves.shape[-1]))
        img[body] = curves[which]
        return img

    def with_artery(img: np.ndarray, blood_curve: np.ndarray) -> np.ndarray:
        if artery.any():
            fr = art_frac[artery][:, None]
            img[artery] = fr * blood_curve[None, :] + (1 - fr) * img[artery]
        return img

    # inversion recovery (magnitude, ideal inversion): |PD (1 - 2 exp(-TI/T1) + exp(-TR/T1))|
    ti = np.asarray(cfg.ir_ti_ms)
    ir = per_voxel(np.abs(pdr * (1 - 2 * np.exp(-ti / t1r) + np.exp(-cfg.ir_tr_ms / t1r))))
    ir = with_artery(
        ir,
        np.abs(blood.M0 / 30 * (1 - 2 * np.exp(-ti / blood.T1) + np.exp(-cfg.ir_tr_ms / blood.T1))),
    )
    out["anat/IRT1"] = (
        _to_int16(rician(ir, sig["ir"], rng)),
        {"InversionTime": [v / 1e3 for v in cfg.ir_ti_ms], "RepetitionTime": cfg.ir_tr_ms / 1e3},
    )
    # multi-echo spin echo: PD exp(-TE/T2)
    te2 = np.asarray(cfg.mese_te_ms)
    mese = per_voxel(pdr * np.exp(-te2 / t2r))
    mese = with_artery(mese, blood.M0 / 30 * np.exp(-te2 / blood.T2))
    out["anat/MESE"] = (
        _to_int16(rician(mese, sig["mese"], rng)),
        {"EchoTime": [v / 1e3 for v in cfg.mese_te_ms], "RepetitionTime": cfg.mese_tr_ms / 1e3},
    )
    # ferumoxytol 24 h: R2*_post = R2* + dR2*
    dr = np.array([FERUMOXYTOL_DR2STAR[n] if n else np.nan for n in names])[tissue_nobl]
    dr = np.where(body, dr, 0.0)
    te = np.asarray(cfg.megre_te_ms)
    r2s_post = np.where(body, 1e3 / np.where(body, p["T2star"], 1.0) + dr, 0.0)
    post = per_voxel(pdr * np.exp(-te * 1e-3 * r2s_post[body][rows][:, None]))
    post = with_artery(
        post,
        blood.M0
        / 30
        * np.exp(-te * 1e-3 * (1e3 / T2STAR_MS["blood"] + FERUMOXYTOL_DR2STAR["blood"])),
    )
    out["anat/ce-ferumoxytol_MEGRE"] = (
        _to_int16(rician(post, sig["megre"], rng)),
        {
            "EchoTime": [v / 1e3 for v in cfg.megre_te_ms],
            "RepetitionTime": cfg.megre_tr_ms / 1e3,
            "FlipAngle": cfg.megre_flip_deg,
            "ContrastBolusIngredient": "ferumoxytol",
            "ContrastBolusTotalDose": 5.0,
            "ContrastBolusTotalDoseUnits": "mg Fe/kg",
            "HoursAfterContrast": 24.0,
        },
    )
    truth_dr = np.where(body, dr, np.nan).astype(np.float32)
    truth_dr[tissue == blood_idx] = np.nan
    out["truth:dR2star_ferumoxytol"] = (truth_dr, None)
    # 19F: one visit of one scenario
    fl = FLUORINE
    if sc.trajectory == fl.trajectory and vi == fl.visit_index:
        vox_ml = float(np.prod(cfg.voxel_mm)) / 1000.0
        n_avogadro = 6.02214076e23
        cells = np.zeros(cfg.shape)
        for li, les in enumerate(sc.lesions):
            if les.lesion_id in fl.cells_per_ml:
                cells[labels == li + 1] = fl.cells_per_ml[les.lesion_id] * vox_ml
        # 19F atoms per voxel -> equivalent concentration (mM) -> signal
        atoms = cells * fl.fluorine_per_cell
        tube_labels = np.zeros(cfg.shape, np.int16)
        tube_conc: dict[str, float] = {}
        for k, (cx, cy, r, mm) in enumerate(fl.tubes, start=1):
            inside = (x - cx) ** 2 + (y - cy) ** 2 <= r**2
            tube_labels[inside] = k
            tube_conc[str(k)] = mm
            atoms[inside] = mm * 1e-3 * vox_ml * 1e-3 * n_avogadro
        conc_mM = atoms / (vox_ml * 1e-3 * n_avogadro) * 1e3
        img = rician(fl.signal_per_mM * conc_mM, sig["fluorine"], rng)
        out["fluorine/19F"] = (
            _to_int16(img),
            {
                "ResonantNucleus": "19F",
                "FluorinePerCell": fl.fluorine_per_cell,
                "ReferenceTubes": tube_conc,
                "ReferenceTubesUnits": "mM 19F atoms",
            },
        )
        out["fluorine/19Ftubes"] = (tube_labels, None)
        out["truth:cells19F"] = (cells.astype(np.float32), None)
    return out
