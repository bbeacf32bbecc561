"""Synthetic brain DSC series with known CBF, CBV, rCBV and leakage (K2), for the phantom,
the tests and the demo.

A brain (an ellipsoid of normal-appearing tissue: CBF 22 mL/100 mL/min, CBV 2 mL/100 mL,
MTT 5.5 s, the white-matter values of Østergaard 1996 / Rempp 1994), arteries (a 2×2 column of
voxels whose ΔR2* is the AIF) and lesions with their own rCBV (CBV and CBF both scaled by it:
the same MTT) and a BSW leakage term ``K2`` (1/s, T1-dominant when > 0): the tissue ΔR2* is
``ΔR2*_vascular − K2·∫ref`` with ``ref`` the normal tissue's ΔR2* (Boxerman 2006, the model
the correction inverts). Signal ``S = S0·exp(−TE·ΔR2*)`` with Gaussian noise of SD
``S0/snr``; 60 frames of 1.5 s, bolus at 10 s, TE 30 ms; residue exponential; the gamma-variate
AIF of :func:`tumorscope.models.dsc.simulate.reference_aif`.

**Dual echo** (:func:`brain_dsc_dual_echo`, ``tumorscope phantom --dsc-dual-echo``): the same
tissue with a second echo at ``TE2`` (default 60 ms). A T1-dominant ``K2 > 0`` is then what it
is physically, a T1 effect common to both echoes: ``S_i = S0_i·exp(−TE_i·ΔR2*_T2*)·f_T1`` with
``f_T1 = exp(TE·K2·∫ref)`` (``TE`` = 30 ms: the first echo is the single-echo series, the same
numbers) and ``ΔR2*_T2* = ΔR2*_vascular − min(K2, 0)·∫ref`` (a T2*-dominant leak stays in
ΔR2*, at both echoes); ``S0_2 = S0·exp(−(TE2 − TE)·R2*0)``, ``R2*0 = 20 /s``. The second
echo's noise comes from its own random stream, so the first echo and everything else are
unchanged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..models.dsc.leakage import _exp_conv
from ..models.dsc.simulate import tissue_curves

__all__ = ["NAWM_CBF", "NAWM_CBV", "DSCLesion", "brain_dsc_dual_echo", "brain_dsc_series"]

NAWM_CBF = 22.0
NAWM_CBV = 2.0
TE_MS = 30.0
DT_S = 1.5
N_FRAMES = 60
S0 = 1000.0
TE2_MS = 60.0  # the second echo of the dual-echo option
R2STAR0 = 20.0  # 1/s, baseline tissue R2* (the second echo's lower S0)


@dataclass(frozen=True)
class DSCLesion:
    """A lesion's perfusion truth: rCBV (to normal tissue) and leakage K2 (1/s)."""

    rcbv: float
    k2_per_s: float = 0.0


def brain_dsc_series(
    brain: np.ndarray,
    labels: np.ndarray,
    lesions: Mapping[int, DSCLesion],
    *,
    rng: np.random.Generator,
    snr: float = 100.0,
    artery: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, object], dict[str, np.ndarray]]:
    """The DSC series of a brain.

    Parameters
    ----------
    brain : ndarray of bool, shape (X, Y, Z)
    labels : ndarray of int, shape (X, Y, Z)
        Lesion labels (0 = none), inside the brain.
    lesions : mapping of label to DSCLesion
    rng : numpy Generator, keyword-only
    snr : float, keyword-only
        S0 / noise SD.
    artery : ndarray of bool, optional
        Arterial voxels (default: a 2×2 column at the centre of the front of the brain).

    Returns
    -------
    signal : ndarray, shape (X, Y, Z, 60), float32
    sidecar : dict
        ``FrameTimes`` (s), ``EchoTime`` (s), ``RepetitionTime``, ``FlipAngle``.
    truth : dict of str to ndarray
        ``CBV`` (mL/100 mL, default kH and ρ), ``CBF``, ``rCBV``, ``K2`` (NaN outside the brain).
    """
    d, _t1, truth = _curves(brain, labels, lesions, artery)
    sig = S0 * np.exp(-d * TE_MS * 1e-3)
    sig = np.where(brain[..., None], sig, 0.0) + rng.normal(0.0, S0 / snr, (*brain.shape, N_FRAMES))
    sig = np.abs(sig)  # magnitude
    return sig.astype(np.float32), _sidecar(TE_MS), truth


def brain_dsc_dual_echo(
    brain: np.ndarray,
    labels: np.ndarray,
    lesions: Mapping[int, DSCLesion],
    *,
    rng: np.random.Generator,
    rng2: np.random.Generator,
    snr: float = 100.0,
    artery: np.ndarray | None = None,
    te2_ms: float = TE2_MS,
) -> tuple[np.ndarray, np.ndarray, dict[str, object], dict[str, object], dict[str, np.ndarray]]:
    """The two echoes of a dual-echo DSC series of a brain (see the module docstring).

    The first echo (TE 30 ms, noise from ``rng``) is :func:`brain_dsc_series` with the same
    arguments, to the bit; the second (``te2_ms``, noise from ``rng2``, SD ``S0/snr``) shares
    its T1 effect. Returns ``(signal1, signal2, sidecar1, sidecar2, truth)``; ``truth`` also
    holds ``T1effect``, ``f_T1 − 1`` at the last frame.
    """
    sig1, side1, truth = brain_dsc_series(brain, labels, lesions, rng=rng, snr=snr, artery=artery)
    d, t1, _ = _curves(brain, labels, lesions, artery)
    s02 = S0 * np.exp(-(te2_ms - TE_MS) * 1e-3 * R2STAR0)
    # the T1-dominant part of the leak out of ΔR2* into the common factor f_T1
    sig2 = s02 * np.exp(-(d + t1 / (TE_MS * 1e-3)) * te2_ms * 1e-3 + t1)
    sig2 = np.where(brain[..., None], sig2, 0.0)
    sig2 = np.abs(sig2 + rng2.normal(0.0, S0 / snr, sig2.shape))
    truth = {**truth, "T1effect": np.where(brain, np.expm1(t1[..., -1]), np.nan).astype(np.float32)}
    return sig1, sig2.astype(np.float32), side1, _sidecar(te2_ms), truth


def _sidecar(te_ms: float) -> dict[str, object]:
    return {
        "FrameTimes": [float(v) for v in np.arange(N_FRAMES) * DT_S],
        "EchoTime": te_ms / 1e3,
        "RepetitionTime": 1.5,
        "FlipAngle": 90.0,
        "PulseSequenceType": "gradient-echo EPI (DSC)",
    }


def _curves(
    brain: np.ndarray,
    labels: np.ndarray,
    lesions: Mapping[int, DSCLesion],
    artery: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """ΔR2* (1/s, K2 of every sign in it, as a single echo at 30 ms sees it), the log of the
    T1 factor ``TE·max(K2, 0)·∫ref`` (shape (X, Y, Z, N)) and the truth maps."""
    t = np.arange(N_FRAMES) * DT_S
    shape = brain.shape
    if artery is None:
        artery = np.zeros(shape, bool)
        idx = np.argwhere(brain)
        cx = round(float(idx[:, 0].mean()))
        front = int(idx[:, 1].max()) - 2
        artery[cx - 1 : cx + 1, front - 1 : front + 1, :] = True
        artery &= brain
    rcbv = np.where(brain, 1.0, np.nan)
    k2 = np.where(brain, 0.0, np.nan)
    for lab, les in lesions.items():
        sel = labels == lab
        rcbv[sel] = les.rcbv
        k2[sel] = les.k2_per_s
    d = np.zeros((*shape, N_FRAMES))
    normal, aif = tissue_curves(t, [NAWM_CBF], [NAWM_CBV])
    ref = normal[0]
    conv = _exp_conv(ref, t, 0.0)
    inside = brain & ~artery
    keys = np.round(np.stack([rcbv[inside], k2[inside]], axis=1), 6)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    curves = tissue_curves(t, NAWM_CBF * uniq[:, 0], NAWM_CBV * uniq[:, 0])[0]
    curves = curves - uniq[:, 1:2] * conv[None, :]
    d[inside] = curves[inv.ravel()]
    d[artery] = aif
    t1 = np.zeros_like(d)
    t1[inside] = (TE_MS * 1e-3) * np.maximum(uniq[:, 1:2], 0.0)[inv.ravel()] * conv[None, :]
    truth = {
        "CBV": np.where(brain, NAWM_CBV * rcbv, np.nan).astype(np.float32),
        "CBF": np.where(brain, NAWM_CBF * rcbv, np.nan).astype(np.float32),
        "rCBV": rcbv.astype(np.float32),
        "K2": k2.astype(np.float32),
    }
    return d, t1, truth


# ---------------------------------------------------------------------------- brain subjects
#: Semi-axes (mm) of the brain ellipsoid, centred in the field of view.
BRAIN_SEMI_MM = (56.0, 58.0, 26.0)


def _brain_scenarios() -> tuple[dict[str, tuple[float, float]], list[Any]]:
    """``dsc_states`` and ``brain_scenarios`` of ``scenarios.yaml``."""
    import yaml

    from .scenarios import Scenario, _lesion

    doc = yaml.safe_load(Path(__file__).with_name("scenarios.yaml").read_text("utf-8"))
    states = {str(k): (float(v[0]), float(v[1])) for k, v in doc["dsc_states"].items()}
    scen = [
        Scenario(
            str(e["trajectory"]),
            tuple(int(d) for d in e["visit_days"]),
            tuple(_lesion(row) for row in e["lesions"]),
            notes=str(e.get("notes", "")),
            treatment_agent=str(e.get("treatment_agent", "temozolomide")),
        )
        for e in doc["brain_scenarios"]
    ]
    return states, scen


def write_brain_subjects(
    root: Path,
    *,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    world: tuple[np.ndarray, np.ndarray, np.ndarray],
    first_index: int,
    count: int,
    seed: int,
    base_date: dt.date,
    manifest: dict[str, Any],
    traj_rows: list[str],
    lesion_rows: list[str],
    dual_echo: bool = False,
) -> None:
    """Write ``count`` brain subjects (ids after ``first_index``) with a T2w image, a DSC
    series, lesion labels and the truth (rCBV, CBV, CBF, K2), cycling the brain scenarios.

    Random numbers come from ``default_rng([seed, subject index, visit, 7])``: the body
    subjects' streams are untouched. ``dual_echo``: the DSC as two echoes
    (:func:`brain_dsc_dual_echo`, the second echo's noise from ``[seed, subject, visit, 8]``),
    ``perf/*_echo-1_dsc`` (the single echo's numbers) and ``perf/*_echo-2_dsc``.
    """
    from ..files import write_json
    from ..volume import Volume
    from .generate import _ellipsoid

    states, scen = _brain_scenarios()
    x, y, z = world
    a, b, c = BRAIN_SEMI_MM
    brain = (x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2 <= 1.0
    common = {"MagneticFieldStrength": 3.0, "Manufacturer": "tumorscope phantom"}
    for k in range(count):
        s_index = first_index + k
        sc = scen[k % len(scen)]
        sid = f"{s_index + 1:03d}"
        bl = base_date + dt.timedelta(days=7 * s_index)
        manifest["subjects"][sid] = {
            "treatment": {
                "agent": sc.treatment_agent,
                "start_date": (bl + dt.timedelta(days=4)).isoformat(),
                "radiotherapy_end_date": (bl - dt.timedelta(days=28)).isoformat(),
            },
            "visits": {
                f"{vi + 1:02d}": {"date": (bl + dt.timedelta(days=d)).isoformat()}
                for vi, d in enumerate(sc.visit_days)
            },
        }
        for les in sc.lesions:
            traj_rows.append(
                f"{sid}\t{les.lesion_id}\t{sc.trajectory}\t{les.role}\t{les.organ}\tfalse\t"
                f"{max(les.radii_mm):g}"
            )
        for vi in range(len(sc.visit_days)):
            vid = f"{vi + 1:02d}"
            rng = np.random.default_rng([seed, s_index, vi, 7])
            prefix = f"sub-{sid}_ses-{vid}"
            labels = np.zeros(shape, np.int16)
            truth_les: dict[int, DSCLesion] = {}
            table = ["label\tlesion_id\torgan\ttarget\tnodal"]
            for li, les in enumerate(sc.lesions):
                scale = les.scales[vi]
                if scale is None:
                    continue
                inside = _ellipsoid(x, y, z, les, scale) & brain
                labels[inside] = li + 1
                rcbv, k2 = states[les.states[vi]]
                truth_les[li + 1] = DSCLesion(rcbv, k2)
                table.append(f"{li + 1}\t{les.lesion_id}\t{les.organ}\ttrue\tfalse")
                ax, bx, cx = (r * scale for r in les.radii_mm)
                lesion_rows.append(
                    f"{sid}\t{vid}\t{les.lesion_id}\ttrue\t{scale:g}\t{les.states[vi]}\t"
                    f"{4.0 / 3.0 * np.pi * ax * bx * cx / 1000.0:.4f}\t{int(inside.sum())}"
                )
            if dual_echo:
                sig, sig2, side, side2, truth = brain_dsc_dual_echo(
                    brain,
                    labels,
                    truth_les,
                    rng=rng,
                    rng2=np.random.default_rng([seed, s_index, vi, 8]),
                )
            else:
                sig, side, truth = brain_dsc_series(brain, labels, truth_les, rng=rng)
            t2w = np.where(brain, 600.0, 0.0) + np.where(labels > 0, 300.0, 0.0)
            t2w = np.abs(t2w + rng.normal(0.0, 6.0, shape))
            sdir = root / f"sub-{sid}" / f"ses-{vid}"
            Volume(np.round(t2w).astype(np.int16), affine).to_nifti(
                sdir / "anat" / f"{prefix}_T2w.nii.gz"
            )
            write_json(
                sdir / "anat" / f"{prefix}_T2w.json",
                {**common, "EchoTime": 0.09, "RepetitionTime": 4.0},
                sort_keys=True,
            )
            echoes = [("echo-1_", sig, side), ("echo-2_", sig2, side2)] if dual_echo else []
            for ent, data, car in echoes or [("", sig, side)]:
                Volume(np.round(data).astype(np.int16), affine).to_nifti(
                    sdir / "perf" / f"{prefix}_{ent}dsc.nii.gz"
                )
                write_json(
                    sdir / "perf" / f"{prefix}_{ent}dsc.json", {**common, **car}, sort_keys=True
                )
            ldir = root / "derivatives" / "lesions" / f"sub-{sid}" / f"ses-{vid}"
            Volume(labels, affine).to_nifti(ldir / f"{prefix}_lesions.nii.gz")
            (ldir / f"{prefix}_lesions.tsv").write_text("\n".join(table) + "\n", encoding="utf-8")
            tdir = root / "derivatives" / "truth" / f"sub-{sid}" / f"ses-{vid}"
            for name, arr in truth.items():
                Volume(arr, affine).to_nifti(tdir / f"{prefix}_desc-{name}_truth.nii.gz")
