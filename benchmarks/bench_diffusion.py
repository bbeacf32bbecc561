"""Diffusion fits: tumorscope against DIPY, osipy, a scipy curve_fit loop and plain numpy.

Run from the repository root (needs the ``bench`` extra: dipy, osipy)::

    python benchmarks/bench_diffusion.py                 # everything, defaults below
    python benchmarks/bench_diffusion.py --sections ivim,adc --n-ours 200000

Every peer fits the same synthetic data in the same process run (fast fits: best of 3-5
repeats, to damp the load of a shared machine); each table prints voxels per second, our speed divided by the peer's (``x ours``), and the median absolute relative error
(%) of each parameter against the truth. Slow peers fit the first ``--n-slow`` voxels (DIPY
IVIM: ``--n-dipy``), osipy ``--n-osipy``, ours ``--n-ours`` (default one million). The machine
may be shared: run the script at least twice and report both runs.

Sections
--------
ivim    head-to-head inside DIPY's default bounds (f <= 0.2): D 0.5-2.0e-3 mm²/s,
        f 0.05-0.2, D* 0.01-0.1 mm²/s, SNR 50 (Gaussian noise SD = S0/SNR).
tumour  tumour ranges (f 0.05-0.3, D 0.5-2.0e-3, D* 0.01-0.1), ours vs osipy and curve_fit.
engine  the parallel strategies of the engine on one IVIM "full" LM solve (same start values):
        numba prange, numba without the GIL in 2 threads, numba 1 thread, numpy in 2 threads,
        numpy 1 thread.
dki     DIPY MeanDiffusionKurtosisModel (WLS) against our DKI (directional data,
        b = 0 x 3, 1000 x 15, 2000 x 15).
adc     a plain vectorised numpy log-linear least-squares ADC (``np.log(y) @ pinv(A).T``)
        against ours (same float32 data and b-values; ours with validation, status, RSS,
        standard errors, float32 maps; also with a 90% mask, and on a 4-D F-ordered volume
        as nibabel reads NIfTI), round-robin, printing the wall-time and CPU-time ratios.
adc_core the same on one pinned core with one thread each (BLAS too), in a fresh process
        (half of ``--n-adc`` voxels): the per-core ratio; also with 8 b-values (the general
        kernel; 4 or fewer take the register kernel) against the plain fit of those data.
fixed_d segmented IVIM's second step (S0, f, D* with D fixed at its true value) by variable
        projection (the method since session 6) against the bounded LM it replaced (the generic
        compiled solver, D fixed by equal bounds, from the 16-point grid start), same data, one
        thread, CPU time, best of 3: the ratio, how often each reaches the lower residual, and
        the median error of f and D* against the truth (tumour ranges, SNR ``--snr``).
fit_dwi the pipeline's fit_dwi stage (ADC + IVIM, maps written) on the large phantom's DWI,
        whole volume against the body (``DWIOptions.region``); not in the default sections
        (``--sections fit_dwi --study PATH``).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

B_IVIM = np.array([0, 10, 20, 30, 50, 80, 100, 150, 200, 300, 400, 500, 600, 800, 1000.0])
S0 = 1000.0


def _timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _mae(est: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Median absolute relative error (%) per column, over finite estimates."""
    rel = np.abs(est - truth) / np.abs(truth)
    return np.array([np.nanmedian(np.where(np.isfinite(c), c, np.nan)) for c in rel.T]) * 100


def _table(
    title: str, names: list[str], rows: list[tuple[str, int, float, np.ndarray]], ours_key: str
) -> None:
    ref = {r[0]: r[1] / r[2] for r in rows}
    ours = ref[ours_key]
    print(f"\n## {title}")
    head = f"{'method':<34}{'voxels':>9}{'vox/s':>12}{'x ours':>9}"
    head += "".join(f"{'err ' + n + ' %':>11}" for n in names)
    print(head)
    for name, n, dt, err in rows:
        vps = n / dt
        ratio = ours / vps
        line = f"{name:<34}{n:>9,}{vps:>12,.0f}{ratio:>9.1f}"
        line += "".join(f"{e:>11.1f}" for e in err)
        print(line)


def _ivim_data(
    n: int, f_max: float, rng: np.random.Generator, snr: float
) -> tuple[np.ndarray, np.ndarray]:
    from tumorscope.models.diffusion import ivim_signal

    P = np.c_[
        np.full(n, S0),
        rng.uniform(5e-4, 2e-3, n),
        rng.uniform(0.05, f_max, n),
        rng.uniform(0.01, 0.1, n),
    ]
    y = ivim_signal(B_IVIM, P) + rng.normal(0, S0 / snr, (n, B_IVIM.size))
    return P, y.astype(np.float32)


def _ours_ivim(y: np.ndarray, method: str, **kw: object) -> tuple[float, np.ndarray]:
    from tumorscope.models import IVIM

    m = IVIM(B_IVIM, method=method, **kw)
    m.fit(y[:64])  # compile / load the cached kernels outside the timing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dt, fit = _timed(lambda: m.fit(y))
    est = np.stack([fit["D"], fit["f"], fit["D_star"]], axis=1)  # type: ignore[index]
    return dt, est


def _osipy_ivim(y: np.ndarray, method: str) -> tuple[float, np.ndarray]:
    from osipy.ivim import FittingMethod, fit_ivim

    meth = {
        "segmented": FittingMethod.SEGMENTED,
        "full": FittingMethod.FULL,
        "bayesian": FittingMethod.BAYESIAN,
    }[method]
    n = y.shape[0]
    fit_ivim(y[:64].reshape(64, 1, 1, -1), B_IVIM, method=meth)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dt, res = _timed(lambda: fit_ivim(y.reshape(n, 1, 1, -1), B_IVIM, method=meth))
    r: Any = res
    est = np.stack(
        [
            np.asarray(r.d_map.values).ravel(),
            np.asarray(r.f_map.values).ravel(),
            np.asarray(r.d_star_map.values).ravel(),
        ],
        axis=1,
    )
    return dt, est


def _dipy_ivim(y: np.ndarray) -> tuple[float, np.ndarray]:
    from dipy.core.gradients import gradient_table
    from dipy.reconst.ivim import IvimModel

    bvecs = np.tile([1.0, 0.0, 0.0], (B_IVIM.size, 1))
    bvecs[B_IVIM == 0] = 0.0
    gtab = gradient_table(B_IVIM, bvecs=bvecs, b0_threshold=0)
    model = IvimModel(gtab, fit_method="trr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dt, fit = _timed(lambda: model.fit(y.astype(np.float64)))
    p = fit.model_params  # type: ignore[attr-defined]  # S0, f, D*, D
    return dt, np.stack([p[:, 3], p[:, 1], p[:, 2]], axis=1)


def _curve_fit_ivim(y: np.ndarray) -> tuple[float, np.ndarray]:
    from scipy.optimize import curve_fit

    def f(b: np.ndarray, s0: float, d: float, fr: float, ds: float) -> np.ndarray:
        return s0 * (fr * np.exp(-b * ds) + (1 - fr) * np.exp(-b * d))

    lo, hi = [0, 0, 0, 5e-3], [np.inf, 5e-3, 1, 0.2]  # tumorscope's default bounds

    def run() -> np.ndarray:
        out = np.full((y.shape[0], 3), np.nan)
        for i, yi in enumerate(y.astype(np.float64)):
            try:
                p, _ = curve_fit(f, B_IVIM, yi, p0=[yi[0], 1e-3, 0.1, 0.02], bounds=(lo, hi))
                out[i] = p[1], p[2], p[3]
            except RuntimeError:
                pass
        return out

    dt, est = _timed(run)
    return dt, est  # type: ignore[return-value]


def section_ivim(args: argparse.Namespace, *, f_max: float, title: str, dipy: bool) -> None:
    rng = np.random.default_rng(args.seed)
    P, y = _ivim_data(args.n_ours, f_max, rng, args.snr)
    truth = P[:, [1, 2, 3]]
    rows: list[tuple[str, int, float, np.ndarray]] = []
    for method in ("segmented", "full", "bayes"):
        dt, est = _ours_ivim(y, method)
        rows.append((f"tumorscope {method}", y.shape[0], dt, _mae(est, truth)))
    dt, est = _ours_ivim(y, "full", bounds={"D_star": (2e-3, 0.1), "f": (0.0, 0.7)})
    rows.append(("tumorscope full, osipy's bounds", y.shape[0], dt, _mae(est, truth)))
    no = min(args.n_osipy, y.shape[0])
    for method in ("segmented", "full", "bayesian"):
        try:
            dt, est = _osipy_ivim(y[:no], method)
            rows.append((f"osipy {method}", no, dt, _mae(est, truth[:no])))
        except ImportError as exc:
            print(f"osipy not available: {exc}", file=sys.stderr)
            break
    ns = min(args.n_slow, y.shape[0])
    dt, est = _curve_fit_ivim(y[:ns])
    rows.append(("scipy curve_fit loop (trf)", ns, dt, _mae(est, truth[:ns])))
    if dipy:
        nd = min(args.n_dipy, y.shape[0])
        dt, est = _dipy_ivim(y[:nd])
        rows.append(("DIPY IvimModel trr", nd, dt, _mae(est, truth[:nd])))
    _table(title, ["D", "f", "D*"], rows, "tumorscope full")


def section_engine(args: argparse.Namespace) -> None:
    from tumorscope.fitting.lm import levenberg_marquardt
    from tumorscope.models import IVIM

    rng = np.random.default_rng(args.seed + 1)
    n = min(args.n_engine, args.n_ours)
    _, y32 = _ivim_data(n, 0.3, rng, args.snr)
    y = y32.astype(np.float64)
    m = IVIM(B_IVIM, method="full")
    p0 = m.initial_guess(y)
    lo, hi = m.bounds()
    common: dict[str, Any] = {"scale": m.scales(), "options": m.lm_options}
    chunk = 16384
    chunks = [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]

    def solve(backend: str, workers: int) -> None:
        def one(s: slice) -> object:
            if backend == "numpy":
                return levenberg_marquardt(
                    y[s], p0[s], lo, hi, fun=m.signal, jac=m.jacobian, backend="numpy", **common
                )
            return levenberg_marquardt(
                y[s], p0[s], lo, hi, kernel=m.kernel(), consts=m.consts(), backend=backend, **common
            )

        if workers == 1:
            for s in chunks:
                one(s)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(one, chunks))

    solve("numba", 1)
    solve("numba-serial", 1)
    variants = [
        ("numba prange", "numba", 1),
        ("numba nogil, 2 threads (diffusion)", "numba-serial", 2),
        ("numba, 1 thread", "numba-serial", 1),
        ("numpy, 2 threads", "numpy", 2),
        ("numpy, 1 thread", "numpy", 1),
    ]
    print(
        f"\n## engine: IVIM full LM solve, {n:,} voxels, same start values ({os.cpu_count()} cores)"
    )
    base = None
    for name, backend, workers in variants:
        nn = n if backend != "numpy" else min(n, args.n_engine_numpy)
        sub = [s for s in chunks if s.start < nn]
        saved = chunks[:]
        chunks[:] = sub
        dt, _ = _timed(functools.partial(solve, backend, workers))
        chunks[:] = saved
        vps = sum(s.stop - s.start for s in sub) / dt
        base = base or vps
        print(f"{name:<36}{vps:>12,.0f} vox/s   {vps / base:>6.2f}x prange")


def section_dki(args: argparse.Namespace) -> None:
    from tumorscope.models import DKI
    from tumorscope.models.diffusion import dki_signal

    rng = np.random.default_rng(args.seed + 2)
    shells = [(0.0, 3), (1000.0, 15), (2000.0, 15)]
    b = np.concatenate([[bv] * k for bv, k in shells])
    vec = rng.normal(size=(b.size, 3))
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    vec[b == 0] = 0.0
    n = args.n_ours
    model = DKI(b)
    P = model.sample_parameters(n, rng=rng)
    P[:, 0] = S0
    y = dki_signal(b, P) + rng.normal(0, S0 / args.snr, (n, b.size))
    y = np.abs(y).astype(np.float32)  # magnitude data
    truth = P[:, 1:]
    model.fit(y[:64])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dt, fit = _timed(lambda: model.fit(y), repeat=3)
    rows = [("tumorscope DKI (wlls)", n, dt, _mae(np.stack([fit["D"], fit["K"]], 1), truth))]  # type: ignore[index]
    nl = DKI(b, method="nlls")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dt, fit = _timed(lambda: nl.fit(y), repeat=3)
    rows.append(("tumorscope DKI (nlls)", n, dt, _mae(np.stack([fit["D"], fit["K"]], 1), truth)))  # type: ignore[index]
    from dipy.core.gradients import gradient_table
    from dipy.reconst.msdki import MeanDiffusionKurtosisModel

    gtab = gradient_table(b, bvecs=vec, b0_threshold=0)
    nd = min(args.n_dipy_dki, n)
    mk = MeanDiffusionKurtosisModel(gtab)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dt, fit2 = _timed(lambda: mk.fit(y[:nd].astype(np.float64)), repeat=3)
    f2: Any = fit2
    rows.append(
        ("DIPY MeanDiffusionKurtosisModel", nd, dt, _mae(np.stack([f2.msd, f2.msk], 1), truth[:nd]))
    )
    _table(f"DKI (mean signal), SNR {args.snr:g}", ["D", "K"], rows, "tumorscope DKI (wlls)")


def section_adc(args: argparse.Namespace) -> None:
    """ADC: ours (masks, validation, status, RSS, standard errors, float32 maps) against a plain
    vectorised numpy log-linear least-squares fit, ``np.log(data) @ pinv(A).T``, of the same
    float32 data (same b-values). Contenders run round-robin in a rotating order
    (``--adc-rounds`` rounds, best time each), so that a burst of load from other processes
    hits all of them alike."""
    from tumorscope.models import ADC

    rng = np.random.default_rng(args.seed + 3)
    b = np.array([0.0, 400.0, 800.0, 1000.0])
    n = args.n_adc
    adc = rng.uniform(5e-4, 3e-3, n)
    y = S0 * np.exp(-np.outer(adc, b)) + rng.normal(0, S0 / args.snr, (n, b.size))
    y = np.abs(y).astype(np.float32)  # magnitude data, (n, 4) C order
    # the same values as a 4-D (x, y, z, b) volume in F order, as nibabel reads NIfTI
    nz = 25
    nx = int(np.sqrt(n // nz))
    nv = nx * nx * nz
    vol = np.asfortranarray(y[:nv].reshape(nx, nx, nz, b.size, order="F"))
    vol_truth = adc[:nv].reshape(nx, nx, nz, order="F")
    A = np.c_[np.ones(b.size), -b]
    pinv64 = np.linalg.pinv(A)
    pinv32 = pinv64.astype(np.float32)
    mask = np.ones(n, bool)
    mask[::10] = False
    models = {meth: ADC(b, method=meth) for meth in ("lls", "wlls")}
    for meth in models.values():
        meth.fit(y[:64])  # compile / load the cached kernels outside the timing
        meth.fit(vol[:4, :4, :4])
        meth.fit(y[:64], mask[:64])

    contenders: list[tuple[str, int, Callable[[], object]]] = [
        ("plain numpy OLS (float64 pinv)", n, lambda: np.log(y) @ pinv64.T),
        ("plain numpy OLS (all float32)", n, lambda: np.log(y) @ pinv32.T),
        ("tumorscope ADC lls", n, lambda: models["lls"].fit(y)),
        ("tumorscope ADC wlls", n, lambda: models["wlls"].fit(y)),
        ("tumorscope ADC wlls, 90% mask", int(mask.sum()), lambda: models["wlls"].fit(y, mask)),
        ("plain numpy OLS, 4-D F order", nv, lambda: np.log(vol) @ pinv64.T),
        ("tumorscope ADC wlls, 4-D F order", nv, lambda: models["wlls"].fit(vol)),
    ]
    best = dict.fromkeys([c[0] for c in contenders], np.inf)
    cpu = dict.fromkeys([c[0] for c in contenders], np.inf)
    out: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rnd in range(args.adc_rounds):
            # rotate the order: the plain fit's BLAS threads spin for a while after each call
            # and slow down whatever runs next; every contender gets every position
            k = rnd % len(contenders)
            for name, _, fn in contenders[k:] + contenders[:k]:
                t, c = time.perf_counter(), time.process_time()
                out[name] = fn()
                best[name] = min(best[name], time.perf_counter() - t)
                cpu[name] = min(cpu[name], time.process_time() - c)

    def err(name: str) -> np.ndarray:
        r = out[name]
        if name.startswith("plain"):
            est = np.asarray(r)[..., 1]
        else:
            est = r["ADC"]  # type: ignore[index]
        if "4-D" in name:
            return _mae(est.reshape(-1, 1), vol_truth.reshape(-1, 1))
        if "mask" in name:
            return _mae(est[mask][:, None], adc[mask][:, None])
        return _mae(est[:, None], adc[:, None])

    rows = [(name, nn, best[name], err(name)) for name, nn, _ in contenders]
    _table(f"ADC, 4 b-values, SNR {args.snr:g}, float32", ["ADC"], rows, "tumorscope ADC wlls")
    vps = {name: nn / best[name] for name, nn, _ in contenders}
    p64, p32 = vps["plain numpy OLS (float64 pinv)"], vps["plain numpy OLS (all float32)"]
    pf = vps["plain numpy OLS, 4-D F order"]
    print("\nratios (ours / plain numpy, same run; > 1 = ours faster)")
    for name in vps:
        if name.startswith("tumorscope"):
            ref = f"{vps[name] / pf:5.2f}x plain 4-D" if "4-D" in name else ""
            print(
                f"  {name:<34}{vps[name] / p64:5.2f}x plain float64"
                f"   {vps[name] / p32:5.2f}x plain float32   {ref}"
            )
    # CPU time (all threads) per voxel: what the fits cost whatever else runs on the machine
    cps = {name: nn / cpu[name] for name, nn, _ in contenders if cpu[name] > 0}
    c64 = cps.get("plain numpy OLS (float64 pinv)", np.nan)
    print("\nCPU-time ratios (voxels per CPU second, all threads; > 1 = ours cheaper)")
    for name in cps:
        if name.startswith("tumorscope"):
            print(f"  {name:<34}{cps[name] / c64:5.2f}x plain float64 (CPU)")


_ADC_CORE = r"""
import os, sys, time, warnings
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
os.cpu_count = lambda: 1  # the fits' thread pools: one worker
import numpy as np
from tumorscope.models import ADC
n, rounds, snr, seed = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
b = np.array([0.0, 400.0, 800.0, 1000.0])
adc = rng.uniform(5e-4, 3e-3, n)
y = np.abs(1000 * np.exp(-np.outer(adc, b)) + rng.normal(0, 1000 / snr, (n, b.size)))
y = y.astype(np.float32)
mask = np.ones(n, bool)
mask[::10] = False
pinv64 = np.linalg.pinv(np.c_[np.ones(b.size), -b])
wlls, lls = ADC(b, method="wlls"), ADC(b, method="lls")
# 8 b-values (the phantom's DWI): the general kernel (4 or fewer: the register kernel)
b8 = np.array([0.0, 50.0, 100.0, 200.0, 400.0, 600.0, 800.0, 1000.0])
y8 = np.abs(1000 * np.exp(-np.outer(adc, b8)) + rng.normal(0, 1000 / snr, (n, b8.size)))
y8 = y8.astype(np.float32)
pinv8 = np.linalg.pinv(np.c_[np.ones(b8.size), -b8])
wlls8 = ADC(b8, method="wlls")
c = {
    "plain numpy OLS (float64 pinv)": (n, lambda: np.log(y) @ pinv64.T),
    "tumorscope ADC wlls": (n, lambda: wlls.fit(y)),
    "tumorscope ADC lls": (n, lambda: lls.fit(y)),
    "tumorscope ADC wlls, 90% mask": (int(mask.sum()), lambda: wlls.fit(y, mask)),
    "plain numpy OLS, 8 b-values": (n, lambda: np.log(y8) @ pinv8.T),
    "tumorscope ADC wlls, 8 b-values": (n, lambda: wlls8.fit(y8)),
}
best = dict.fromkeys(c, np.inf)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for _, fn in c.values():
        fn()
    for r in range(rounds):
        names = list(c)[r % len(c):] + list(c)[: r % len(c)]
        for k in names:
            t = time.perf_counter()
            c[k][1]()
            best[k] = min(best[k], time.perf_counter() - t)
plain = n / best["plain numpy OLS (float64 pinv)"]
plain8 = n / best["plain numpy OLS, 8 b-values"]
for k, (nn, _) in c.items():
    ref = plain8 if "8 b" in k else plain
    print(f"  {k:<34}{nn / best[k]:>14,.0f} vox/s  {nn / best[k] / ref:5.2f}x plain float64")
"""


def section_adc_core(args: argparse.Namespace) -> None:
    """ADC per core: ours (masks, status, standard errors, float32 maps) against the plain
    float64-pinv fit, both on one pinned core with one thread (BLAS too), in a fresh process,
    round-robin, best of ``--adc-rounds``: the ratio that other jobs on a shared machine move
    least, and the one that carries over to a quiet machine with one fit per core."""
    import subprocess

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env["MKL_NUM_THREADS"] = env["NUMBA_NUM_THREADS"] = "1"
    print(f"\n## ADC on one core, 4 b-values, SNR {args.snr:g}, float32 C order")
    cmd = [sys.executable, "-c", _ADC_CORE, str(args.n_adc // 2), str(args.adc_rounds)]
    cmd += [str(args.snr), str(args.seed)]
    print(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)


def section_fit_dwi(args: argparse.Namespace) -> None:
    """The pipeline's ``fit_dwi`` stage (ADC + IVIM, maps written) on the large phantom's
    baseline DWI series (128 x 128 x 30, 8 b-values): the whole volume (``region="all"``, as
    before) against the body (``region="body"``, the pipeline's default), round-robin, best
    of ``--dwi-rounds``. ``--study`` reuses a large phantom written before (read only); else
    one is written to a temporary folder (~40 s)."""
    import tempfile
    from pathlib import Path

    from tumorscope.io import open_study
    from tumorscope.stages.base import SeriesInput
    from tumorscope.stages.diffusion import DWIOptions, body_mask, fit_dwi_series

    with tempfile.TemporaryDirectory() as tmp:
        study = Path(args.study) if args.study else None
        if study is None:
            from tumorscope.phantom import make_study

            study = make_study(Path(tmp) / "study", size="large", n_subjects=1, seed=0)
        visit = next(v for v in open_study(study).visits() if "dwi" in v.series)
        series = SeriesInput.of(visit.series["dwi"])
        vol = series.load()
        body = body_mask(vol, np.asarray(series.protocol.bvalues))  # type: ignore[union-attr]
        best = {"all": np.inf, "body": np.inf}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_dwi_series(series, out_dir=Path(tmp) / "warm", models=("adc", "ivim"))
            for rnd in range(args.dwi_rounds):
                for region in ("all", "body") if rnd % 2 == 0 else ("body", "all"):
                    t = time.perf_counter()
                    fit_dwi_series(
                        series,
                        out_dir=Path(tmp) / region,
                        models=("adc", "ivim"),
                        options=DWIOptions(region=region),
                    )
                    best[region] = min(best[region], time.perf_counter() - t)
    print(
        f"\n## fit_dwi stage (ADC + IVIM, maps written), {vol.shape}, body "
        f"{body.sum():,} of {body.size:,} voxels"
    )
    for region, t in best.items():
        print(f"  region {region:<5} {t:6.2f} s")
    print(f"  body is {best['all'] / best['body']:.2f}x faster than the whole volume")


def section_fixed_d(args: argparse.Namespace) -> None:
    """Segmented IVIM's fixed-D step: variable projection against the bounded LM (see the
    module docstring, ``fixed_d``)."""
    import numba

    from tumorscope.fitting.engine import BlockFit
    from tumorscope.models import IVIM

    n = min(args.n_ours, 200_000)
    P, y32 = _ivim_data(n, 0.3, np.random.default_rng(args.seed), args.snr)
    y = y32.astype(np.float64)
    m = IVIM(B_IVIM)
    d = P[:, 1].copy()
    lo, hi = m.bounds()
    lin = BlockFit(np.c_[P[:, 0], d], np.zeros(n, np.uint8), np.zeros(n), None)
    lower, upper = np.tile(lo, (n, 1)), np.tile(hi, (n, 1))
    lower[:, 1] = upper[:, 1] = d
    threads = numba.get_num_threads()
    numba.set_num_threads(1)

    def lm() -> object:
        return m.solve_nonlinear(y, m._grid_init(y, lin), lower=lower, upper=upper)

    def varpro() -> object:
        return m._varpro(y, d)

    lm(), varpro()  # compiled / loaded
    cpu = {}
    for name, fn in (("lm", lm), ("varpro", varpro)):
        best = np.inf
        for _ in range(3):
            c = time.process_time()
            out = fn()
            best = min(best, time.process_time() - c)
        cpu[name] = (best, out)
    numba.set_num_threads(threads)
    t_lm, r_lm = cpu["lm"]
    t_vp, (p_vp, _st, rss_vp, _se) = cpu["varpro"]
    rss_lm = r_lm.rss  # type: ignore[attr-defined]
    p_lm = r_lm.params  # type: ignore[attr-defined]
    print(f"\n## IVIM segmented, fixed-D step, {n:,} voxels, SNR {args.snr:g}, one thread (CPU s)")
    print(f"  bounded LM (grid start) {t_lm:.3f} s ({n / t_lm:,.0f} vox/s)")
    print(f"  variable projection     {t_vp:.3f} s ({n / t_vp:,.0f} vox/s): {t_lm / t_vp:.2f}x")
    print(
        f"  residual: varpro lower by > 1e-7 in {np.mean(rss_vp < rss_lm * (1 - 1e-7)):.1%}, "
        f"higher by > 1e-9 in {np.mean(rss_vp > rss_lm * (1 + 1e-9)):.2%} of the voxels"
    )
    for j, name in ((2, "f"), (3, "D*")):
        e_lm = np.median(np.abs(p_lm[:, j] - P[:, j]))
        e_vp = np.median(np.abs(p_vp[:, j] - P[:, j]))
        print(f"  median |error| {name}: LM {e_lm:.5g}, varpro {e_vp:.5g}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sections", default="ivim,tumour,engine,dki,adc,adc_core,fixed_d")
    p.add_argument("--n-ours", type=int, default=1_000_000)
    p.add_argument("--n-osipy", type=int, default=100_000)
    p.add_argument("--n-slow", type=int, default=1000, help="curve_fit loop voxels")
    p.add_argument("--n-dipy", type=int, default=300, help="DIPY IVIM voxels")
    p.add_argument("--n-dipy-dki", type=int, default=5000)
    p.add_argument("--n-engine", type=int, default=200_000)
    p.add_argument("--n-engine-numpy", type=int, default=50_000)
    p.add_argument("--n-adc", type=int, default=4_000_000)
    p.add_argument("--adc-rounds", type=int, default=7, help="ADC round-robin repeats")
    p.add_argument("--dwi-rounds", type=int, default=3, help="fit_dwi round-robin repeats")
    p.add_argument("--study", default=None, help="fit_dwi: a large phantom written before")
    p.add_argument("--snr", type=float, default=50.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import numba

    import tumorscope

    print(
        f"tumorscope {tumorscope.__version__}, numpy {np.__version__}, numba {numba.__version__},"
        f" {os.cpu_count()} cores, numba threads {numba.get_num_threads()}"
    )
    sections = set(args.sections.split(","))
    if "ivim" in sections:
        section_ivim(
            args, f_max=0.2, title=f"IVIM inside DIPY's bounds, SNR {args.snr:g}", dipy=True
        )
    if "tumour" in sections:
        section_ivim(
            args, f_max=0.3, title=f"IVIM tumour ranges (f up to 0.3), SNR {args.snr:g}", dipy=False
        )
    if "engine" in sections:
        section_engine(args)
    if "dki" in sections:
        section_dki(args)
    if "adc" in sections:
        section_adc(args)
    if "adc_core" in sections:
        section_adc_core(args)
    if "fixed_d" in sections:
        section_fixed_d(args)
    if "fit_dwi" in sections:
        section_fit_dwi(args)


if __name__ == "__main__":
    main()
