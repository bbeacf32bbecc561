"""Write the synthetic study (the demo and the backbone of the tests).

The phantom is a 128 × 128 × 60 mm slab of liver-like tissue with an artery running through
it (for an image-derived AIF) and heterogeneous lesions (viable rim, necrotic core) that
follow the trajectories of :mod:`tumorscope.phantom.scenarios`. Per visit it writes a
T2-weighted volume, an 8-b-value DWI (IVIM + kurtosis), a variable flip angle series and a
DCE series (Parker AIF, extended Tofts), all with Rician noise at stated SNR, stored as
int16 like scanner data (no scale factors; values are the simulated magnitudes rounded).

The same world geometry is sampled at every ``size``: ``tiny`` (tests), ``default`` (demo)
and ``large`` (benchmarks: 4× more subjects, 1 × 1 × 2 mm voxels).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .. import __version__
from ..errors import DataError
from ..files import write_json
from ..owned import check_replaceable, record_files
from ..volume import Volume
from .cest import cest_series
from .metabolic import write_metabolic_visit
from .organs import ORGAN_REFERENCE, organ_series, write_organ_map
from .pet import PET_TRAJECTORIES, write_pet_visit
from .scenarios import (
    SCENARIOS,
    T2STAR_MS,
    TISSUES,
    LesionSpec,
    Scenario,
)
from .signals import (
    dwi_signal,
    etofts_concentration,
    noise_sigmas,
    parker_blood_mM,
    rician,
    spgr_signal,
)
from .substudy import _substudy_series, _to_int16

__all__ = ["SIZES", "PhantomConfig", "make_study"]

FOV_MM = (128.0, 128.0, 60.0)


@dataclass(frozen=True)
class PhantomConfig:
    """Acquisition and noise settings of the phantom (all written to ``truth/phantom.json``)."""

    shape: tuple[int, int, int]
    n_subjects: int
    bvalues: tuple[float, ...] = (0, 50, 100, 200, 400, 600, 800, 1000)
    snr_dwi: float = 50.0  # at b = 0 for S0 = 1000
    vfa_flip_deg: tuple[float, ...] = (2.0, 5.0, 10.0, 15.0)
    vfa_tr_ms: float = 5.0
    snr_vfa: float = 100.0  # relative to the 15-degree signal of untreated tumour
    dce_flip_deg: float = 15.0
    dce_tr_ms: float = 5.0
    dce_te_ms: float = 1.5
    dce_baseline_frames: int = 5
    snr_dce: float = 40.0  # relative to the pre-contrast tumour signal
    relaxivity: float = 4.5  # 1/(mM s)
    hematocrit: float = 0.42
    megre_te_ms: tuple[float, ...] = (2.0, 5.0, 8.0, 12.0, 16.0, 20.0, 25.0, 30.0)
    megre_tr_ms: float = 40.0
    megre_flip_deg: float = 20.0
    snr_megre: float = 60.0  # at the first echo for untreated tumour
    # immune-imaging substudy (responder and pseudoprogressor): IR T1, multi-echo T2 and a
    # ferumoxytol pre/post multi-echo GRE pair at every visit
    substudy: tuple[str, ...] = ("responder", "pseudoprogressor")
    ir_ti_ms: tuple[float, ...] = (100.0, 250.0, 500.0, 900.0, 1500.0, 2500.0, 4000.0)
    ir_tr_ms: float = 8000.0
    snr_ir: float = 50.0  # relative to M0/30 of untreated tumour
    mese_te_ms: tuple[float, ...] = (10.0, 20.0, 30.0, 45.0, 60.0, 80.0, 100.0, 130.0, 160.0)
    mese_tr_ms: float = 3000.0
    snr_mese: float = 60.0  # relative to M0/30 of untreated tumour
    t2w_te_ms: float = 90.0
    snr_t2w: float = 50.0
    heterogeneity: float = 0.08  # SD of the smooth multiplicative field on D and Ktrans

    @property
    def voxel_mm(self) -> tuple[float, float, float]:
        return tuple(f / s for f, s in zip(FOV_MM, self.shape, strict=True))  # type: ignore[return-value]

    @property
    def frame_times_s(self) -> tuple[float, ...]:
        """40 frames every 3.5 s, then 10 frames every 12 s (0–256.5 s)."""
        fast = [3.5 * i for i in range(40)]
        slow = [fast[-1] + 12.0 * (i + 1) for i in range(10)]
        return tuple(fast + slow)


SIZES: dict[str, PhantomConfig] = {
    "tiny": PhantomConfig(shape=(32, 32, 6), n_subjects=6),
    "default": PhantomConfig(shape=(64, 64, 10), n_subjects=6),
    "large": PhantomConfig(shape=(128, 128, 30), n_subjects=24),
}

_ARTERY_CENTRE = (2.0, 30.0)
_ARTERY_RADIUS = 6.0
_BODY_SEMI = (58.0, 45.0)


def _affine(cfg: PhantomConfig) -> np.ndarray:
    vx, vy, vz = cfg.voxel_mm
    nx, ny, nz = cfg.shape
    aff = np.diag([vx, vy, vz, 1.0])
    aff[:3, 3] = [-(nx - 1) * vx / 2, -(ny - 1) * vy / 2, -(nz - 1) * vz / 2]
    return aff


def _world(cfg: PhantomConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    aff = _affine(cfg)
    idx = np.indices(cfg.shape, dtype=float)
    x = aff[0, 0] * idx[0] + aff[0, 3]
    y = aff[1, 1] * idx[1] + aff[1, 3]
    z = aff[2, 2] * idx[2] + aff[2, 3]
    return x, y, z


def _ellipsoid(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    spec: LesionSpec,
    scale: float,
    radii_factor: float = 1.0,
) -> np.ndarray:
    cx, cy, cz = spec.centre_mm
    a, b, c = (r * scale * radii_factor for r in spec.radii_mm)
    th = np.deg2rad(spec.angle_deg)
    dx, dy, dz = x - cx, y - cy, z - cz
    u = np.cos(th) * dx + np.sin(th) * dy
    v = -np.sin(th) * dx + np.cos(th) * dy
    return (u / a) ** 2 + (v / b) ** 2 + (dz / c) ** 2 <= 1.0


def _artery_fraction(cfg: PhantomConfig) -> np.ndarray:
    """Partial-volume fraction of the artery in each voxel (3 × 3 in-plane supersampling)."""
    x, y, _ = _world(cfg)
    vx, vy, _ = cfg.voxel_mm
    frac = np.zeros(cfg.shape)
    offs = (-1 / 3, 0.0, 1 / 3)
    for ox in offs:
        for oy in offs:
            r2 = (x + ox * vx - _ARTERY_CENTRE[0]) ** 2 + (y + oy * vy - _ARTERY_CENTRE[1]) ** 2
            frac += r2 <= _ARTERY_RADIUS**2
    return frac / 9.0


def _smooth_field(
    shape: tuple[int, ...], sd: float, rng: np.random.Generator, sigma_vox: float
) -> np.ndarray:
    g = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="wrap")
    g /= g.std() if g.std() > 0 else 1.0
    return np.exp(sd * g - sd**2 / 2)


def _params_at(names: tuple[str, ...], region: np.ndarray) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for field in ("D", "f", "D_star", "K", "S0", "T1", "T2", "M0", "Ktrans", "ve", "vp"):
        vals = np.array([getattr(TISSUES[n], field) if n else np.nan for n in names])
        out[field] = vals[region]
    out["T2star"] = np.array([T2STAR_MS[n] if n else np.nan for n in names])[region]
    return out


def make_study(
    out: str | Path,
    *,
    size: str = "default",
    seed: int = 0,
    n_subjects: int | None = None,
    overwrite: bool = False,
    brain_subjects: int = 0,
    dsc_dual_echo: bool = False,
) -> Path:
    """Write the synthetic study with its ground truth.

    Parameters
    ----------
    out : path-like
        Folder to create. It must not exist unless ``overwrite`` is true.
    size : {"tiny", "default", "large"}
        Sampling of the same 128 × 128 × 60 mm geometry (see :data:`SIZES`).
    seed : int
        Seed of all random numbers; the same seed gives byte-identical files.
    n_subjects : int, optional
        Number of subjects (scenarios are cycled; default from ``size``).
    brain_subjects : int
        Brain subjects with a DSC series (:mod:`tumorscope.phantom.dsc`), after the others.
    dsc_dual_echo : bool
        Their DSC as a dual-echo pair (``perf/*_echo-1_dsc``, ``*_echo-2_dsc``) instead of one
        ``*_dsc`` (default False: the single echo, the files of earlier versions).
    overwrite : bool
        Replace an existing folder, but only if it is a phantom study that tumorscope wrote
        (:func:`is_phantom_study`) or an empty folder; anything else is refused.

    Returns
    -------
    Path
        The study root. The study is written to a temporary folder beside ``out`` and moved
        into place only when complete.

    Raises
    ------
    DataError
        For an unknown size, fewer than one subject, or an existing ``out`` that may not be
        replaced (nothing is touched then).
    """
    if size not in SIZES:
        raise DataError(
            f"unknown phantom size {size!r}; expected one of {', '.join(SIZES)}", field="size"
        )
    cfg = SIZES[size]
    n = cfg.n_subjects if n_subjects is None else int(n_subjects)
    if n < 1:
        raise DataError(f"need at least 1 subject, got {n}", field="n_subjects")
    if int(brain_subjects) < 0:
        raise DataError(f"expected >= 0, got {brain_subjects}", field="brain_subjects")
    out = Path(out)
    if out.exists() or out.is_symlink():
        _check_replaceable(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with _one_blas_thread():
            _write_study(tmp, cfg, n, seed, size, int(brain_subjects), bool(dsc_dual_echo))
        record_files(tmp, command="phantom")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


#: What marks a phantom study: the ground-truth record the phantom writes (with ``study.yaml``).
PHANTOM_MARKER = Path("derivatives") / "truth" / "phantom.json"


def is_phantom_study(folder: str | Path) -> bool:
    """Whether a folder is a phantom study tumorscope wrote (:func:`make_study`).

    Recognised by ``study.yaml`` beside ``derivatives/truth/phantom.json``, a JSON object with
    the phantom's ``size``, ``seed`` and ``tumorscope_version``. Only such a folder (or an
    empty one) is replaced by ``make_study(..., overwrite=True)``.
    """
    root = Path(folder)
    if root.is_symlink() or not root.is_dir() or not (root / "study.yaml").is_file():
        return False
    try:
        record = json.loads((root / PHANTOM_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"size", "seed", "tumorscope_version"} <= set(record)


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse to replace ``out`` unless asked to and it is empty, or a phantom study holding
    nothing but the files the phantom wrote (:mod:`tumorscope.owned`)."""
    if not overwrite:
        raise DataError("output folder exists (use overwrite=True / --overwrite)", file=out)
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        return
    if not is_phantom_study(out):
        raise DataError(
            "refusing to overwrite: not a phantom study written by tumorscope (expected "
            f"study.yaml and {PHANTOM_MARKER.as_posix()}); nothing was touched. Remove it "
            "yourself or choose another folder",
            file=out,
        )
    # a phantom study, but a user may have added to it (notes, a run's results under
    # derivatives/): replaced only if it holds nothing but what the phantom wrote
    check_replaceable(out, what="a phantom study", option="--overwrite")


#: Subjects' baselines are a week apart, in cycles of this many weeks: a visit date may not be
#: in the future (``validate``), and the last visit of the cycle (2026-06-29 + 12 weeks) is
#: not, however many subjects are asked for.
_BASELINE_WEEKS = 26


def _subject_plan(n: int, seed: int) -> list[tuple[str, Scenario, dt.date]]:
    plan = []
    base = dt.date(2026, 1, 5)
    for i in range(n):
        sc = SCENARIOS[i % len(SCENARIOS)]
        plan.append((f"{i + 1:03d}", sc, base + dt.timedelta(days=7 * (i % _BASELINE_WEEKS))))
    return plan


def _visit_ids(sc: Scenario) -> list[str]:
    """Visit ids: the baseline is ``01``; a pre-baseline scan before it is ``00``."""
    return [f"{i - sc.baseline_index + 1:02d}" for i in range(len(sc.visit_days))]


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj, sort_keys=True)


def _write_study(
    root: Path,
    cfg: PhantomConfig,
    n: int,
    seed: int,
    size: str,
    n_brain: int = 0,
    dual_echo: bool = False,
) -> None:
    aff = _affine(cfg)
    x, y, z = _world(cfg)
    body = (x / _BODY_SEMI[0]) ** 2 + (y / _BODY_SEMI[1]) ** 2 <= 1.0
    art_frac = _artery_fraction(cfg) * body
    t = np.asarray(cfg.frame_times_s)
    plan = _subject_plan(n, seed)

    manifest: dict[str, Any] = {
        "name": f"tumorscope synthetic study ({size}, seed {seed})",
        "criteria": ["recist1.1", "irecist"],
        "dce": {"relaxivity": cfg.relaxivity, "hematocrit": cfg.hematocrit},
        "organ_reference": ORGAN_REFERENCE,  # before the subjects: they end the file
        "subjects": {},
    }
    traj_rows = ["subject\tlesion_id\ttrajectory\trole\torgan\tnodal\tbaseline_longest_radius_mm"]
    lesion_rows = [
        "subject\tvisit\tlesion_id\tpresent\tscale\tstate\tellipsoid_volume_ml\tn_voxels"
    ]
    aif_cols: dict[str, np.ndarray] = {}
    dt_fine = 0.1
    t_fine = np.arange(0.0, t[-1] + 2 * dt_fine, dt_fine)

    jobs: list[tuple[Any, ...]] = []  # the visits to write, in order
    for s_index, (sid, sc, bl_date) in enumerate(plan):
        rng_subject = np.random.default_rng([seed, s_index])
        visits: dict[str, Any] = {}
        vids = _visit_ids(sc)
        for vi, days in enumerate(sc.visit_days):
            entry: dict[str, Any] = {"date": (bl_date + dt.timedelta(days=days)).isoformat()}
            if vi < sc.baseline_index:
                entry["prebaseline"] = True
            if vi == sc.baseline_index and sc.baseline_index > 0:
                entry["baseline"] = True
            visits[vids[vi]] = entry
        manifest["subjects"][sid] = {
            "treatment": {
                "agent": sc.treatment_agent,
                "start_date": (bl_date + dt.timedelta(days=4)).isoformat(),
            },
            "visits": visits,
        }
        for les in sc.lesions:
            traj_rows.append(
                f"{sid}\t{les.lesion_id}\t{sc.trajectory}\t{les.role}\t{les.organ}\t{str(les.nodal).lower()}\t{max(les.radii_mm):g}"
            )
        delay = sc.aif_delay_s
        cb_fine = parker_blood_mM(t_fine, delay_s=delay)
        cp_fine = cb_fine / (1.0 - cfg.hematocrit)
        aif_cols[sid] = np.interp(t, t_fine, cp_fine)
        hetero_d = _smooth_field(cfg.shape, cfg.heterogeneity, rng_subject, 1.5)
        hetero_k = _smooth_field(cfg.shape, cfg.heterogeneity, rng_subject, 1.5)

        for vi in range(len(sc.visit_days)):  # rng: the visit's own generator
            rng = np.random.default_rng([seed, s_index, vi])
            jobs.append((sid, vids[vi], vi, sc, cb_fine, cp_fine, hetero_d, hetero_k, rng, []))

    cest_cache: dict[Any, Any] = {}  # what the CEST series of every visit share

    def visit(job: tuple[Any, ...]) -> None:
        sid, vid, vi, sc, cb_fine, cp_fine, hetero_d, hetero_k, rng, rows = job
        _write_visit(
            root, cfg, aff, sid, vid, vi, sc, x, y, z, body, art_frac, t, t_fine, dt_fine,
            cb_fine, cp_fine, hetero_d, hetero_k, rng, rows, cest_cache,
        )  # fmt: skip

    # Visits are independent (each has its own random generator): a thread per core writes
    # them (numpy's large operations, the random draws and zlib release the GIL); the bytes
    # do not change.
    with ThreadPoolExecutor(max_workers=min(_cores(), len(jobs)) or 1) as pool:
        for _ in pool.map(visit, jobs):  # re-raises the first error
            pass
    for job in jobs:
        lesion_rows += job[-1]

    if n_brain:  # brain subjects with DSC (issue 16), after the body subjects
        from .dsc import write_brain_subjects

        write_brain_subjects(
            root, shape=cfg.shape, affine=aff, world=(x, y, z), first_index=n, count=n_brain,
            seed=seed, base_date=plan[0][2], manifest=manifest, traj_rows=traj_rows,
            lesion_rows=lesion_rows, dual_echo=dual_echo,
        )  # fmt: skip
    import yaml

    (root / "study.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    truth = root / "derivatives" / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    (truth / "trajectories.tsv").write_text("\n".join(traj_rows) + "\n", encoding="utf-8")
    (truth / "lesions.tsv").write_text("\n".join(lesion_rows) + "\n", encoding="utf-8")
    sids = list(aif_cols)
    lines = ["time_s\t" + "\t".join(f"cp_mM_sub-{s}" for s in sids)]
    for j, tj in enumerate(t):
        lines.append(f"{tj:.3f}\t" + "\t".join(f"{aif_cols[s][j]:.6f}" for s in sids))
    (truth / "aif.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg_dict = asdict(cfg)
    cfg_dict.update(
        size=size,
        seed=seed,
        n_subjects=n,
        **({"brain_subjects": n_brain} if n_brain else {}),
        **({"dsc_dual_echo": True} if n_brain and dual_echo else {}),
        voxel_mm=list(cfg.voxel_mm),
        frame_times_s=list(cfg.frame_times_s),
        tumorscope_version=__version__,
        noise="Rician: magnitude of signal + complex Gaussian noise, sigma per channel listed below",
        sigma={k: v for k, v in noise_sigmas(cfg).items()},
        tissues={k: {**asdict(v), "T2star": T2STAR_MS[k]} for k, v in TISSUES.items()},
        artery={
            "centre_mm_xy": list(_ARTERY_CENTRE),
            "radius_mm": _ARTERY_RADIUS,
            "aif": "Parker 2006 whole-blood, delayed per subject; plasma = blood / (1 - hematocrit)",
        },
        equations={
            "dwi": "S0 [f exp(-b D*) + (1-f) exp(-b D + b^2 D^2 K / 6)]",
            "vfa": "M0 sin(a) (1-E1) / (1 - cos(a) E1), E1 = exp(-TR/T1)",
            "dce": "SPGR with R1(t) = 1/T1 + r1 C(t); C = vp cp + Ktrans cp * exp(-kep t), kep = Ktrans/ve; "
            "artery voxels: C = fraction * Cb + (1 - fraction) * C_tissue",
            "t2w": "M0 exp(-TE/T2) / 30 (proton density weighted by T2 decay)",
            "megre": "M0 exp(-TE/T2*) / 30",
        },
    )
    _write_json(truth / "phantom.json", cfg_dict)


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """One BLAS thread while the study is written.

    The phantom's only BLAS work is small: the Bloch–McConnell propagators of the CEST
    spectra (14 × 14 matrix exponentials, :mod:`tumorscope.phantom.cest`) and the 3 × 3 ones
    of the 13C dynamics. A threaded OpenBLAS on a busy machine spends 10–100× longer waiting
    for its threads than computing them (measured on two shared cores: 0.4–1.1 s per CEST
    spectrum against 0.005–0.06 s on one thread); the visits already run on a thread per core.
    The limit is process-wide (threadpoolctl), lifted when the study is written; without
    threadpoolctl (installed with scikit-learn) nothing is limited. The bytes are the same.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _distinct_rows(tissue: np.ndarray, viable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The voxels whose signals differ, and the row of each voxel.

    Parameters
    ----------
    tissue : ndarray of int, shape (n,)
        Tissue index per voxel (its parameters are the tissue's outside ``viable``).
    viable : ndarray of bool, shape (n,)
        Voxels with parameters of their own (the heterogeneous viable tumour).

    Returns
    -------
    rows : ndarray of int
        Positions of one voxel per tissue index outside ``viable``, then of every viable voxel.
    which : ndarray of int, shape (n,)
        For each voxel, its row: ``signal(params[rows])[which]`` equals ``signal(params)``.
    """
    which = np.empty(tissue.size, np.intp)
    plain = np.flatnonzero(~viable)
    kinds, first, inverse = np.unique(tissue[plain], return_index=True, return_inverse=True)
    which[plain] = inverse.ravel()
    own = np.flatnonzero(viable)
    which[own] = kinds.size + np.arange(own.size)
    return np.concatenate([plain[first], own]), which


def _cores() -> int:
    """Cores this process may use."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _write_visit(
    root: Path,
    cfg: PhantomConfig,
    aff: np.ndarray,
    sid: str,
    vid: str,
    vi: int,
    sc: Scenario,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    body: np.ndarray,
    art_frac: np.ndarray,
    t: np.ndarray,
    t_fine: np.ndarray,
    dt_fine: float,
    cb_fine: np.ndarray,
    cp_fine: np.ndarray,
    hetero_d: np.ndarray,
    hetero_k: np.ndarray,
    rng: np.random.Generator,
    lesion_rows: list[str],
    cest_cache: dict[Any, Any],
) -> None:
    shape = cfg.shape
    prefix = f"sub-{sid}_ses-{vid}"
    sdir = root / f"sub-{sid}" / f"ses-{vid}"
    # --- tissue label per voxel: index into `names`
    names: list[str] = ["", "background"]
    tissue = np.where(body, 1, 0).astype(np.int16)
    labels = np.zeros(shape, np.int16)
    table_rows = ["label\tlesion_id\torgan\ttarget\tnodal"]
    for li, les in enumerate(sc.lesions):
        scale = les.scales[vi]
        present = scale is not None
        vol_ml = 0.0
        nvox = 0
        if present:
            assert scale is not None
            outer = _ellipsoid(x, y, z, les, scale) & body
            state = les.states[vi]
            names.append(state)
            tissue[outer] = len(names) - 1
            if les.necrotic_core and max(les.radii_mm[:2]) >= 12.0:
                core = _ellipsoid(x, y, z, les, scale, 0.5) & body
                names.append("necrotic")
                tissue[core] = len(names) - 1
            label = li + 1
            labels[outer] = label
            nvox = int(outer.sum())
            a, b, c = (r * scale for r in les.radii_mm)
            vol_ml = 4.0 / 3.0 * np.pi * a * b * c / 1000.0
            if nvox > 0:
                table_rows.append(
                    f"{label}\t{les.lesion_id}\t{les.organ}\t{str(les.role == 'target').lower()}\t{str(les.nodal).lower()}"
                )
        lesion_rows.append(
            f"{sid}\t{vid}\t{les.lesion_id}\t{str(present and nvox > 0).lower()}\t"
            f"{'' if scale is None else f'{scale:g}'}\t{les.states[vi] if present else ''}\t{vol_ml:.4f}\t{nvox}"
        )
    blood_idx = len(names)
    names.append("blood")
    artery = art_frac > 0
    tissue_nobl = tissue.copy()
    tissue[art_frac >= 0.5] = blood_idx

    p = _params_at(tuple(names), tissue_nobl)
    lesion_any = labels > 0
    viable = lesion_any & np.isin(
        tissue_nobl, [i for i, nm in enumerate(names) if nm not in ("necrotic", "background", "")]
    )
    # heterogeneity inside viable tumour: D and Ktrans vary smoothly (truth maps include it)
    p["D"] = np.where(viable, p["D"] * hetero_d, p["D"])
    p["Ktrans"] = np.where(viable, p["Ktrans"] * hetero_k, p["Ktrans"])
    blood = TISSUES["blood"]
    sig = noise_sigmas(cfg)

    # The signal curves of each distinct voxel once: outside the viable tumour every tissue is
    # uniform (one row per tissue index), inside it each voxel has its own D and Ktrans. The
    # equations are elementwise, so a voxel's numbers do not depend on the rows beside it.
    inb = body
    rows, which = _distinct_rows(tissue_nobl[inb], viable[inb])
    pr = {k: v[inb][rows] for k, v in p.items()}  # parameters per row
    # --- DWI
    bvals = np.asarray(cfg.bvalues, float)
    dwi = np.zeros((*shape, bvals.size))
    dwi[inb] = dwi_signal(bvals, pr["S0"], pr["D"], pr["f"], pr["D_star"], pr["K"])[which]
    if artery.any():
        bl = dwi_signal(
            bvals,
            np.array([blood.S0]),
            np.array([blood.D]),
            np.array([blood.f]),
            np.array([blood.D_star]),
            np.array([blood.K]),
        )[0]
        fr = art_frac[artery][:, None]
        dwi[artery] = fr * bl + (1 - fr) * dwi[artery]
    dwi = rician(dwi, sig["dwi"], rng)
    # --- VFA
    r1 = np.where(body, 1e3 / np.where(body, p["T1"], 1.0), 0.0)
    m0 = np.where(body, p["M0"], 0.0)
    fa = np.asarray(cfg.vfa_flip_deg)
    m0r, r1r = m0[inb][rows][:, None], r1[inb][rows][:, None]
    vfa = np.zeros((*shape, fa.size))  # 0 outside the body, as the equation gives for M0 = 0
    vfa[inb] = spgr_signal(m0r, r1r, fa, cfg.vfa_tr_ms)[which]
    if artery.any():
        fr = art_frac[artery][:, None]
        vb = spgr_signal(blood.M0, 1e3 / blood.T1, fa, cfg.vfa_tr_ms)
        vfa[artery] = fr * vb + (1 - fr) * vfa[artery]
    vfa = rician(vfa, sig["vfa"], rng)
    # --- DCE: concentration, then SPGR signal
    conc = etofts_concentration(t, cp_fine, dt_fine, pr["Ktrans"], pr["ve"], pr["vp"])
    cb_t = np.interp(t, t_fine, cb_fine)
    s_dce = np.zeros((*shape, t.size))  # no contrast outside the body: M0 = 0, signal 0
    s_dce[inb] = spgr_signal(m0r, r1r + cfg.relaxivity * conc, cfg.dce_flip_deg, cfg.dce_tr_ms)[
        which
    ]
    if artery.any():
        fr = art_frac[artery][:, None]
        sb = spgr_signal(
            blood.M0, 1e3 / blood.T1 + cfg.relaxivity * cb_t, cfg.dce_flip_deg, cfg.dce_tr_ms
        )
        s_dce[artery] = fr * sb[None, :] + (1 - fr) * s_dce[artery]
    s_dce = rician(s_dce, sig["dce"], rng)
    # --- T2w
    t2 = np.where(body, p["T2"], 1.0)
    t2w = np.where(body, m0 * np.exp(-cfg.t2w_te_ms / t2) / 30.0, 0.0)
    if artery.any():
        tb = blood.M0 * np.exp(-cfg.t2w_te_ms / blood.T2) / 30.0
        t2w[artery] = art_frac[artery] * tb + (1 - art_frac[artery]) * t2w[artery]
    t2w = rician(t2w, sig["t2w"], rng)
    # --- multi-echo gradient echo (T2*): S = M0/30 exp(-TE/T2*)
    te = np.asarray(cfg.megre_te_ms)
    t2s = np.where(body, p["T2star"], 1.0)
    megre = np.zeros((*shape, te.size))  # 0 outside the body
    megre[inb] = (m0r / 30.0 * np.exp(-te / t2s[inb][rows][:, None]))[which]
    if artery.any():
        mb = blood.M0 / 30.0 * np.exp(-te / T2STAR_MS["blood"])
        fr = art_frac[artery][:, None]
        megre[artery] = fr * mb + (1 - fr) * megre[artery]
    megre = rician(megre, sig["megre"], rng)
    extra = _substudy_series(
        cfg,
        sc,
        vi,
        names,
        tissue_nobl,
        tissue,
        blood_idx,
        body,
        artery,
        art_frac,
        m0,
        p,
        labels,
        sig,
        rng,
        x,
        y,
        (rows, which),
    )
    org = organ_series(
        sc.trajectory, vi, x, y, body, labels, p["T1"], p["T2"], m0, cfg.hematocrit, sig["ir"], rng
    )
    organ_map = org.pop("organs", None)  # organ-watch series (phantom/organs.py)
    extra.update(org)
    extra.update(cest_series(sc.trajectory, vi, names, tissue_nobl, body, m0, p, x, y, cest_cache))

    # --- write images and sidecars
    common = {"MagneticFieldStrength": 3.0, "Manufacturer": "tumorscope phantom"}
    Volume(_to_int16(t2w), aff).to_nifti(sdir / "anat" / f"{prefix}_T2w.nii.gz")
    _write_json(
        sdir / "anat" / f"{prefix}_T2w.json",
        {**common, "EchoTime": cfg.t2w_te_ms / 1e3, "RepetitionTime": 4.0},
    )
    Volume(_to_int16(vfa), aff).to_nifti(sdir / "anat" / f"{prefix}_VFA.nii.gz")
    _write_json(
        sdir / "anat" / f"{prefix}_VFA.json",
        {**common, "FlipAngle": list(cfg.vfa_flip_deg), "RepetitionTime": cfg.vfa_tr_ms / 1e3},
    )
    Volume(_to_int16(megre), aff).to_nifti(sdir / "anat" / f"{prefix}_MEGRE.nii.gz")
    _write_json(
        sdir / "anat" / f"{prefix}_MEGRE.json",
        {
            **common,
            "EchoTime": [te_ms / 1e3 for te_ms in cfg.megre_te_ms],
            "RepetitionTime": cfg.megre_tr_ms / 1e3,
            "FlipAngle": cfg.megre_flip_deg,
        },
    )
    Volume(_to_int16(dwi), aff).to_nifti(sdir / "dwi" / f"{prefix}_dwi.nii.gz")
    _write_json(sdir / "dwi" / f"{prefix}_dwi.json", {**common, "EchoTime": 0.07})
    (sdir / "dwi" / f"{prefix}_dwi.bval").write_text(" ".join(f"{v:g}" for v in bvals) + "\n")
    Volume(_to_int16(s_dce), aff).to_nifti(sdir / "perf" / f"{prefix}_dce.nii.gz")
    _write_json(
        sdir / "perf" / f"{prefix}_dce.json",
        {
            **common,
            "FrameTimes": list(cfg.frame_times_s),
            "FlipAngle": cfg.dce_flip_deg,
            "RepetitionTime": cfg.dce_tr_ms / 1e3,
            "EchoTime": cfg.dce_te_ms / 1e3,
            "BaselineFrames": cfg.dce_baseline_frames,
            "ContrastAgent": "gadobutrol",
            "Relaxivity": cfg.relaxivity,
            "Hematocrit": cfg.hematocrit,
        },
    )
    for rel, (img, side) in extra.items():
        if rel.startswith("truth:"):
            continue
        Volume(img, aff).to_nifti(
            sdir / f"{rel.split('/')[0]}" / f"{prefix}_{rel.split('/')[1]}.nii.gz"
        )
        if side is not None:
            _write_json(
                sdir / f"{rel.split('/')[0]}" / f"{prefix}_{rel.split('/')[1]}.json",
                {**common, **side},
            )
    centres = [les.centre_mm for les in sc.lesions if les.scales[vi] is not None]
    write_metabolic_visit(root, prefix, sc.trajectory, vi, names, tissue_nobl, labels, aff, centres)
    ldir = root / "derivatives" / "lesions" / f"sub-{sid}" / f"ses-{vid}"
    Volume(labels, aff).to_nifti(ldir / f"{prefix}_lesions.nii.gz")
    (ldir / f"{prefix}_lesions.tsv").write_text("\n".join(table_rows) + "\n", encoding="utf-8")
    if organ_map is not None:
        write_organ_map(ldir, prefix, organ_map[0], aff)
    # --- truth
    tdir = root / "derivatives" / "truth" / f"sub-{sid}" / f"ses-{vid}"
    if sc.trajectory in PET_TRAJECTORIES:  # FDG PET beside MRI (issue 17): phantom/pet.py
        pet_seed = (int(rng.integers(2**32)),)  # the last use of rng: MRI draws unchanged
        write_pet_visit(sdir, tdir, prefix, aff, tissue_nobl, names, art_frac >= 0.5, pet_seed)
    for name in ("D", "f", "D_star", "K", "S0", "T1", "T2", "T2star", "M0", "Ktrans", "ve", "vp"):
        m = np.where(body, p[name], np.nan).astype(np.float32)
        m[tissue == blood_idx] = np.nan
        Volume(m, aff).to_nifti(tdir / f"{prefix}_desc-{name}_truth.nii.gz")
    for rel, (img, _side) in extra.items():
        if rel.startswith("truth:"):
            Volume(img, aff).to_nifti(tdir / f"{prefix}_desc-{rel[6:]}_truth.nii.gz")
    Volume((art_frac >= 0.5).astype(np.uint8), aff).to_nifti(
        tdir / f"{prefix}_desc-artery_mask.nii.gz"
    )
    Volume(art_frac.astype(np.float32), aff).to_nifti(
        tdir / f"{prefix}_desc-arteryfraction_truth.nii.gz"
    )
    Volume(np.where(body, 1, 0).astype(np.uint8), aff).to_nifti(
        tdir / f"{prefix}_desc-body_mask.nii.gz"
    )
