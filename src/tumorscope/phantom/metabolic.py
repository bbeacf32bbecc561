"""The phantom's metabolic visits: hyperpolarised 13C dynamics and single-voxel 1H MRS.

Only the subjects whose trajectory is in :data:`METABOLIC_TRAJECTORIES` (the responder and the
pseudoprogressor) get them: 13C pyruvate/lactate at every visit, a PRESS-like single voxel
on the first lesion with its water reference at the first two visits. Truths follow each
lesion's tissue state (``scenarios.yaml``): kPL falls as the responder's tumour responds
(0.06 → 0.035 → 0.02 /s) but not in the pseudoprogressor's infiltrated phase (immune cells
are glycolytic: 0.065 /s at 3 weeks), and choline falls with proliferation.

Acquisition (written in the sidecars and ``truth``): 13C frames every 4 s (12 frames),
flip angles 10° (pyruvate) and 30° (lactate), a boxcar pyruvate input over the first 8 s
(frame-aligned, so the input-less model is exact without noise), T1 30 s (pyruvate) and
25 s (lactate), Gaussian noise of SD :data:`HP13C_SIGMA` on real-valued (phased) images,
on the anatomical grid. 1H MRS: 127.7 MHz, 2 kHz, 1024 points, 4 coils, 8 transients with
random frequency (±3 Hz) and phase drifts, a 12 mm voxel at the lesion centre, metabolite
concentrations averaged over the tissues in the voxel; the water reference has 2 protons
× 35 880 mM (the fit's default water concentration), so the fitted mM are the truth.

Independence: the 13C curves are computed here (:func:`hp13c_curves`, matrix exponentials),
not with :mod:`tumorscope.models`. The MRS spectra are made from the fit's own basis
definition (:func:`tumorscope.models.metabolic.basis.simulate_basis`: the published shifts and
couplings are data, not an algorithm under test), so they test the processing chain (coil
combination, alignment, water removal, the fit and water scaling), not the basis.
"""

from __future__ import annotations

import itertools
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import numpy as np

from ..volume import Volume

__all__ = ["KPL_PER_S", "METABOLIC_TRAJECTORIES", "MRS_MM", "hp13c_curves", "write_metabolic_visit"]

METABOLIC_TRAJECTORIES: Final = ("responder", "pseudoprogressor")
#: Conversion rate kPL (1/s) of each tissue state.
KPL_PER_S: Final[dict[str, float]] = {
    "background": 0.01, "untreated": 0.06, "responding": 0.035, "responded": 0.02,
    "infiltrated": 0.065, "progressing": 0.07, "aggressive": 0.09, "necrotic": 0.005,
    "node": 0.03, "blood": 0.0,
}  # fmt: skip
#: Pyruvate delivery (input rate, signal units of Mz per s) of each tissue state.
DELIVERY: Final[dict[str, float]] = {
    "background": 600.0, "untreated": 1000.0, "responding": 800.0, "responded": 600.0,
    "infiltrated": 1100.0, "progressing": 1000.0, "aggressive": 1200.0, "necrotic": 100.0,
    "node": 800.0, "blood": 2000.0,
}  # fmt: skip
HP13C_FRAMES: Final = 12
HP13C_TR_S: Final = 4.0
HP13C_FLIPS_DEG: Final = (10.0, 30.0)
HP13C_SIGMA: Final = 20.0
_BOLUS_S: Final = (0.0, 8.0)
_T1P_S, _T1L_S = 30.0, 25.0
#: 1H MRS concentrations (mM) per tissue state (others: :data:`_MRS_DEFAULT`).
MRS_MM: Final[dict[str, dict[str, float]]] = {
    "background": {"Cho": 1.5, "Cr": 3.0, "Lac": 1.0, "Lip13": 8.0},
    "untreated": {"Cho": 3.0, "Cr": 5.0, "Lac": 4.0, "Lip13": 3.0},
    "responding": {"Cho": 2.0, "Cr": 5.0, "Lac": 2.5, "Lip13": 5.0},
    "responded": {"Cho": 1.5, "Cr": 4.5, "Lac": 1.5, "Lip13": 6.0},
    "infiltrated": {"Cho": 2.9, "Cr": 5.0, "Lac": 4.5, "Lip13": 3.0},
    "necrotic": {"Cho": 0.5, "Cr": 1.0, "Lac": 2.0, "Lip13": 10.0},
}
_MRS_DEFAULT: Final = {"NAA": 0.5, "mI": 2.0, "Glu": 3.0, "Gln": 2.0, "Cit": 0.3, "Lip09": 1.0}
_MRS_VISITS: Final = 2
_MRS_F0, _MRS_DWELL, _MRS_N = 127.7, 1 / 2000, 1024
_MRS_VOXEL_MM: Final = 12.0
_WATER_MM: Final = 35880.0


def hp13c_curves(
    t: np.ndarray, flips_deg: tuple[float, float], kpl: float, rin: float,
    bolus_s: tuple[float, float] = _BOLUS_S, t1p_s: float = _T1P_S, t1l_s: float = _T1L_S,
) -> np.ndarray:  # fmt: skip
    """Pyruvate and lactate signals ``(2, n)`` of one tissue, computed independently of
    :mod:`tumorscope.models` (the phantom shares no code with what it tests): the matrix
    exponential of the augmented system ``d/dt [P, L, 1] = A [P, L, 1]`` over each stretch of
    constant input, the pulses applied at the frame times."""
    key = (tuple(np.asarray(t, float).tolist()), tuple(flips_deg), kpl, rin, tuple(bolus_s))
    return _hp13c_curves(*key, t1p_s, t1l_s).copy()


@lru_cache(maxsize=256)
def _hp13c_curves(
    t_s: tuple[float, ...], flips_deg: tuple[float, ...], kpl: float, rin: float,
    bolus_s: tuple[float, ...], t1p_s: float, t1l_s: float,
) -> np.ndarray:  # fmt: skip
    """:func:`hp13c_curves`, once per tissue (every visit of every subject asks again)."""
    from scipy.linalg import expm

    t = np.asarray(t_s)
    props: dict[tuple[float, float], np.ndarray] = {}  # equal frame spacing: few distinct

    def prop(dt: float, u: float) -> np.ndarray:
        if (dt, u) not in props:
            a = np.array([[-(kpl + 1 / t1p_s), 0.0, u], [kpl, -1 / t1l_s, 0.0], [0.0, 0.0, 0.0]])
            props[dt, u] = np.asarray(expm(a * dt))
        return props[dt, u]

    on, off = bolus_s
    x = np.array([0.0, 0.0, 1.0])
    start = min(on, float(t[0]))
    out = np.zeros((2, t.size))
    sin_, cos_ = np.sin(np.deg2rad(flips_deg)), np.cos(np.deg2rad(flips_deg))
    for j, tj in enumerate(t):
        cuts = sorted({start, float(tj), *(e for e in (on, off) if start < e < tj)})
        for a, b in itertools.pairwise(cuts):
            x = prop(b - a, rin if on <= 0.5 * (a + b) < off else 0.0) @ x
        out[:, j] = x[:2] * sin_
        x[:2] = x[:2] * cos_
        start = float(tj)
    out.setflags(write=False)
    return out


def _rng(prefix: str) -> np.random.Generator:
    """A generator of its own per visit (the phantom's other series draw nothing less)."""
    return np.random.default_rng(list(prefix.encode()))


def write_metabolic_visit(
    root: Path, prefix: str, trajectory: str, vi: int, names: list[str], tissue: np.ndarray,
    labels: np.ndarray, aff: np.ndarray, lesion_centres_mm: list[tuple[float, float, float]],
) -> None:  # fmt: skip
    """Write the visit's 13C series (and MRS at the first visits) with their truths.

    ``names[tissue]`` is each voxel's tissue state ("" outside the body); ``root`` the study.
    """
    if trajectory not in METABOLIC_TRAJECTORIES:
        return
    sub, ses = prefix.split("_")
    sdir = root / sub / ses
    tdir = root / "derivatives" / "truth" / sub / ses
    rng = _rng(prefix)
    t = np.arange(HP13C_FRAMES) * HP13C_TR_S
    # per tissue index, then looked up per voxel (no per-voxel strings): "" is outside the body
    kpl = np.array([KPL_PER_S.get(st, 0.0) if st else np.nan for st in names], np.float32)[tissue]
    curves = np.zeros((len(names), 2, t.size))
    for i, st in enumerate(names):
        if st:
            curves[i] = hp13c_curves(
                t, HP13C_FLIPS_DEG, KPL_PER_S.get(st, 0.0), DELIVERY.get(st, 0.0)
            )
    sig = curves[tissue]
    # rng.normal(0, sigma) is 0 + sigma * z of the same stream: the same numbers, in bulk
    noise = rng.standard_normal(sig.shape)
    noise *= HP13C_SIGMA
    sig += noise
    del noise
    side = {
        "MagneticFieldStrength": 3.0, "Manufacturer": "tumorscope phantom",
        "ResonantNucleus": "13C", "FrameTimes": t.tolist(), "RepetitionTime": HP13C_TR_S,
    }  # fmt: skip
    for i, met in enumerate(("pyruvate", "lactate")):
        img = np.clip(np.rint(sig[..., i, :]), -32768, 32767).astype(np.int16)
        base = sdir / "hp13c" / f"{prefix}_acq-{met}_hp13c"
        Volume(img, aff).to_nifti(base.with_suffix(".nii.gz"))
        meta = {**side, "FlipAngle": HP13C_FLIPS_DEG[i], "Metabolite": met}
        base.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    Volume(kpl, aff).to_nifti(tdir / f"{prefix}_desc-kPL_truth.nii.gz")
    if vi < _MRS_VISITS and lesion_centres_mm:
        state = np.array(names, dtype=object)[tissue]
        _write_svs(sdir, tdir, prefix, state, labels, aff, lesion_centres_mm[0], rng)


def _write_svs(
    sdir: Path, tdir: Path, prefix: str, state: np.ndarray, labels: np.ndarray,
    aff: np.ndarray, centre: tuple[float, float, float], rng: np.random.Generator,
) -> None:  # fmt: skip
    from ..io.mrs import write_nifti_mrs
    from ..models.metabolic.basis import simulate_basis
    from ..models.metabolic.mrs import _beta, _broadened

    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in state.shape), indexing="ij"), -1)
    world = ijk @ aff[:3, :3].T + aff[:3, 3]
    inside = np.all(np.abs(world - np.asarray(centre)) <= _MRS_VOXEL_MM / 2, axis=-1)
    states, counts = np.unique(state[inside & (state != "")], return_counts=True)
    basis = simulate_basis(_MRS_F0, _MRS_DWELL, _MRS_N)
    conc = {n: 0.0 for n in basis.names}
    for st, c in zip(states, counts, strict=True):
        mix = {**_MRS_DEFAULT, **MRS_MM.get(str(st), MRS_MM["untreated"])}
        for n in basis.names:
            conc[n] += mix.get(n, 0.0) * c / counts.sum()
    theta = np.array([0.3, 2.0, 6.0, _beta(4.0)])
    fid = np.array([conc[n] for n in basis.names]) @ _broadened(basis, theta)
    tt = basis.time()
    coils = np.array([0.9, 0.6, 0.35, 0.15]) * np.exp(1j * np.array([0.4, -1.2, 2.0, 2.9]))
    trans = []
    for _ in range(8):
        drift = np.exp(1j * (2 * np.pi * rng.uniform(-3, 3) * tt + rng.uniform(-0.3, 0.3)))
        noise = rng.normal(size=(4, _MRS_N)) + 1j * rng.normal(size=(4, _MRS_N))
        trans.append(coils[:, None] * (fid * drift) + 1.5 * noise)
    data = np.transpose(np.array(trans), (2, 1, 0))[None, None, None]  # (1,1,1,n,coil,dyn)
    affine = np.diag([_MRS_VOXEL_MM] * 3 + [1.0])
    affine[:3, 3] = centre
    # residual water (imperfect suppression) at 4.7 ppm
    data = (
        data
        + (50.0 * np.exp((2j * np.pi * 1.0 - np.pi * 5.0) * tt))[None, None, None, :, None, None]
    )
    write_nifti_mrs(sdir / "mrs" / f"{prefix}_svs.nii.gz", data, dwell_s=_MRS_DWELL,
                    frequency_mhz=_MRS_F0, affine=affine, dim_tags=("DIM_COIL", "DIM_DYN"))  # fmt: skip
    water = 2 * _WATER_MM * np.exp((2j * np.pi * 1.0 - np.pi * 5.0) * tt)
    wc = coils[:, None] * water + 1.5 * (
        rng.normal(size=(4, _MRS_N)) + 1j * rng.normal(size=(4, _MRS_N))
    )
    write_nifti_mrs(sdir / "mrs" / f"{prefix}_mrsref.nii.gz", wc.T[None, None, None],
                    dwell_s=_MRS_DWELL, frequency_mhz=_MRS_F0, affine=affine, dim_tags=("DIM_COIL",))  # fmt: skip
    tdir.mkdir(parents=True, exist_ok=True)
    truth: dict[str, Any] = {"concentrations_mM": conc, "voxel_centre_mm": list(centre),
                             "voxel_mm": _MRS_VOXEL_MM, "lesion_label": int(np.bincount(labels[inside].ravel()).argmax()) if inside.any() else 0}  # fmt: skip
    (tdir / f"{prefix}_desc-mrs_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
