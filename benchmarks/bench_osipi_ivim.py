"""OSIPI TF2.4 IVIM benchmark: bias and SD of D, f and D* against SNR, for each of
tumorscope's IVIM methods and, in the same run on the same data, the algorithms of the OSIPI
TF2.4 IVIM code collection (PyPI ``osipi-ivim``: ``pip install --no-deps osipi-ivim``) and DIPY's ``trr`` fit.

Run from the repository root::

    python benchmarks/bench_osipi_ivim.py                       # ~5 min on 2 loaded cores
    python benchmarks/bench_osipi_ivim.py --snr 20,50,100 --reps 100 --markdown
    python benchmarks/bench_osipi_ivim.py --no-osipi --no-dipy  # tumorscope only

Data: the 14 tissues of OSIPI's ``generic.json`` test set (TF2.4 IVIM-MRI CodeCollection,
``tests/IVIMmodels/unit_tests/generic.json``, copied under ``tests/data/reference/``), their
18 b-values and truths (f, D, D*), S0 = 1. For every SNR, ``--reps`` noisy copies of each
tissue (Gaussian noise, SD = 1/SNR, as the OSIPI generator; each signal divided by its b = 0
sample as the OSIPI tests do) are fitted by tumorscope's methods; the per-voxel Python peers
fit the first ``--reps-peers`` copies of the same draws. Every method gets the bounds of the
OSIPI unit tests (S0 [0.7, 1.3], f [0, 1], D* [0.005, 0.2], D [0, 0.005] mm²/s; initial guess
S0 1, f 0.1, D* 0.01, D 0.001 where an algorithm takes one). For each parameter the table
gives, pooled over tissues, the median of the per-tissue |bias| (mean estimate - truth) and SD,
both relative to the truth (%), and the fraction of estimates inside the OSIPI unit-test
tolerance (f ±0.2 + 10 %, D ±5e-4 + 10 %, D* ±0.1 + 10 %; D only where f < 0.8, D* only where
f > 0.03, as the source test). A second table gives the speed of every method on one identical
array (``--speed-snr``, ``--speed-reps`` copies per tissue) and its ratio to tumorscope's
default.

OSIPI algorithms run (``PEERS``): the ones of osipi-ivim 0.1.0 that need neither MATLAB, torch
(IVIM-NET, SUPER-IVIM-DC, the TCML ones that import it) nor the repository's ``utilities``
folder, which the wheel does not ship (``ETP_SRI_LinearFitting``); ``IAR_LU_modified_mix`` and
``IAR_LU_modified_topopro`` (global optimisers, 3-9 voxels/s) with ``--slow-peers``; the
Bayesian one needs a prior fitted on a population and is left out.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REF = Path(__file__).resolve().parents[1] / "tests/data/reference/osipi_ivim_codecollection"
TOL = {"f": (0.2, 0.1), "D": (5e-4, 0.1), "D_star": (0.1, 0.1)}
KEYS = ("D", "f", "D_star")
OSIPI_BOUNDS = {"S0": [0.7, 1.3], "f": [0.0, 1.0], "Dp": [0.005, 0.2], "D": [0.0, 0.005]}
OSIPI_GUESS = {"S0": 1.0, "f": 0.1, "Dp": 0.01, "D": 0.001}
PEERS = (
    "TF_reference_IVIMfit",
    "IAR_LU_biexp",
    "IAR_LU_segmented_2step",
    "IAR_LU_segmented_3step",
    "IAR_LU_subtracted",
    "OGC_AmsterdamUMC_biexp",
    "OGC_AmsterdamUMC_biexp_segmented",
    "OJ_GU_seg",
    "PV_MUMC_biexp",
    "PvH_KB_NKI_IVIMfit",
)
SLOW_PEERS = ("IAR_LU_modified_mix", "IAR_LU_modified_topopro")
DEFAULT = "tumorscope segmented (default)"

Fit = Callable[[np.ndarray, np.ndarray], np.ndarray]


def load() -> tuple[np.ndarray, list[str], np.ndarray]:
    """b-values, tissue names and truths ``(T, 3)`` in the order D, f, D*."""
    cases = json.loads((REF / "unit_tests" / "generic.json").read_text())
    b = np.array(cases.pop("config")["bvalues"], dtype=float)
    names = list(cases)
    truth = np.array([[cases[k]["D"], cases[k]["f"], cases[k]["Dp"]] for k in names])
    return b, names, truth


def simulate(b: np.ndarray, truth: np.ndarray, snr: float, reps: int, seed: int) -> np.ndarray:
    """``(T, reps, m)`` noisy signals, normalised by their b = 0 sample."""
    d, f, ds = (truth[:, i][:, None, None] for i in range(3))
    s = f * np.exp(-b * ds) + (1 - f) * np.exp(-b * d)
    rng = np.random.default_rng(seed)
    y = s + rng.normal(0, 1 / snr, (truth.shape[0], reps, b.size))
    return y / y[..., :1]


def ours(method: str, **opts: object) -> Fit:
    from tumorscope.models import IVIM

    def fit(b: np.ndarray, y: np.ndarray) -> np.ndarray:
        # the OSIPI test bounds (our defaults: S0 >= 0 unbounded above, D* up to 0.5)
        bounds = {"S0": (0.7, 1.3), "D_star": (0.005, 0.2)}
        m = IVIM(b, method=method, bounds=bounds, **opts)  # type: ignore[arg-type]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = m.fit(y)
        return np.stack([r["D"], r["f"], r["D_star"]], axis=-1).astype(float)

    return fit


def osipi_algorithm(name: str) -> Any:
    """The class ``name`` of osipi-ivim's ``src/standardized/<name>.py``.

    osipi-ivim 0.1.0 installs ``wrappers``, ``standardized`` and ``original`` as top-level
    packages whose modules import each other as ``src.<package>...`` (the source repository's
    layout): ``src`` is made a namespace on the folder that holds them (the same loader as
    ``tests/models/diffusion/_osipi_peer.py``)."""
    import wrappers  # the osipi-ivim package

    root = str(Path(wrappers.__file__).resolve().parents[1])
    src = sys.modules.get("src")
    if src is None or not hasattr(src, "__path__"):
        src = types.ModuleType("src")
        src.__path__ = [root]
        sys.modules["src"] = src
    elif root not in list(src.__path__):
        src.__path__.append(root)
    return getattr(importlib.import_module(f"src.standardized.{name}"), name)


def osipi(name: str) -> Fit:
    """A peer: the algorithm's ``osipi_fit`` (its per-voxel loop) with the OSIPI test settings."""
    cls = osipi_algorithm(name)
    quiet = (contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()))

    def fit(b: np.ndarray, y: np.ndarray) -> np.ndarray:
        with quiet[0], quiet[1], warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kw = {"bounds": OSIPI_BOUNDS, "initial_guess": OSIPI_GUESS, "thresholds": [200]}
            try:
                alg = cls(bvalues=b, **kw)
            except Exception:  # IAR_LU_biexp/_3step 0.1.0 fail with b-values at construction
                alg = cls(**kw)
            r = alg.osipi_fit(y.reshape(-1, b.size), b)
        out = np.stack([r["D"], r["f"], r["Dp"]], axis=-1).astype(float)
        return out.reshape(*y.shape[:-1], 3)

    return fit


def dipy_trr(b: np.ndarray, y: np.ndarray) -> np.ndarray:
    from dipy.core.gradients import gradient_table
    from dipy.reconst.ivim import IvimModel

    g = np.zeros((b.size, 3))
    g[b > 0, 0] = 1.0
    gt = gradient_table(b, bvecs=g, b0_threshold=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = IvimModel(gt, fit_method="trr").fit(y.reshape(-1, b.size))
    out = np.stack([r.D, r.perfusion_fraction, r.D_star], axis=-1).reshape(*y.shape[:-1], 3)
    return out


def stats(est: np.ndarray, truth: np.ndarray) -> dict[str, tuple[float, float, float]]:
    """Per parameter: median over tissues of |bias| % and SD %, and the fraction in tolerance."""
    out = {}
    for j, key in enumerate(KEYS):
        t = truth[:, j][:, None]
        e = est[..., j]
        bias = np.nanmean(e, axis=1) - truth[:, j]
        sd = np.nanstd(e, axis=1)
        atol, rtol = TOL[key]
        ok = np.abs(e - t) <= atol + rtol * np.abs(t)
        f = truth[:, 1]
        use = f < 0.8 if key == "D" else (f > 0.03 if key == "D_star" else np.ones_like(f, bool))
        ok = ok & np.isfinite(e)
        out[key] = (
            float(np.median(np.abs(bias) / truth[:, j]) * 100),
            float(np.median(sd / truth[:, j]) * 100),
            float(ok[use].mean() * 100),
        )
    return out


def timed(fn: Fit, b: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    est = fn(b, y)
    return est, time.perf_counter() - t


def methods(args: argparse.Namespace) -> tuple[dict[str, Fit], set[str]]:
    """Every method to run, and the names of the per-voxel peers (fitted on fewer copies)."""
    out: dict[str, Fit] = {
        DEFAULT: ours("segmented"),
        "tumorscope segmented, no perfusion correction": ours("segmented", perfusion_correction=0),
        "tumorscope full": ours("full"),
        "tumorscope bayes": ours("bayes"),
    }
    peers: set[str] = set()
    if not args.no_osipi:
        for name in PEERS + (SLOW_PEERS if args.slow_peers else ()):
            try:
                out[f"OSIPI {name}"] = osipi(name)
                peers.add(f"OSIPI {name}")
            except ImportError as e:
                print(f"OSIPI {name}: not run ({e})", file=sys.stderr)
    if not args.no_dipy:
        out["DIPY 1.12 IvimModel trr"] = dipy_trr
        peers.add("DIPY 1.12 IvimModel trr")
    return out, peers


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--snr", default="10,20,30,50,100,200")
    p.add_argument("--reps", type=int, default=200, help="copies per tissue (tumorscope)")
    p.add_argument("--reps-peers", type=int, default=10, help="copies per tissue (peers)")
    p.add_argument("--speed-snr", type=float, default=50.0)
    p.add_argument("--speed-reps", type=int, default=50, help="copies per tissue, speed table")
    p.add_argument("--no-osipi", action="store_true")
    p.add_argument("--slow-peers", action="store_true", help="also IAR_LU_modified_*")
    p.add_argument("--no-dipy", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    b, names, truth = load()
    fits, peers = methods(args)
    print(
        f"OSIPI generic.json: {len(names)} tissues, {b.size} b-values, {args.reps} copies per "
        f"tissue and SNR ({args.reps_peers} for the per-voxel peers)\n"
    )
    for fn in fits.values():  # compile / load the kernels and modules outside the timing
        fn(b, simulate(b, truth, 100.0, 1, 1))
    print(
        "| SNR | method | vox/s | "
        + " | ".join(f"{k} bias % | {k} SD % | {k} in tol %" for k in KEYS)
        + " |"
    )
    print("|" + "---|" * (3 + 3 * len(KEYS)))
    for snr in (float(s) for s in args.snr.split(",")):
        y = simulate(b, truth, snr, args.reps, args.seed + int(snr))
        for name, fn in fits.items():
            yy = y[:, : args.reps_peers] if name in peers else y
            est, dt = timed(fn, b, yy)
            st = stats(est, truth)
            cells = " | ".join(f"{st[k][0]:.1f} | {st[k][1]:.1f} | {st[k][2]:.0f}" for k in KEYS)
            print(
                f"| {snr:g} | {name} | {yy.shape[0] * yy.shape[1] / dt:,.0f} | {cells} |",
                flush=True,
            )
    # speed on one identical array: every method, the same voxels
    y = simulate(b, truth, args.speed_snr, args.speed_reps, args.seed + 999)
    n = y.shape[0] * y.shape[1]
    rates = {
        name: n / min(timed(fn, b, y)[1] for _ in range(1 if name in peers else 3))
        for name, fn in fits.items()
    }
    print(
        f"\nSpeed on one identical array ({n} voxels, SNR {args.speed_snr:g}; tumorscope best "
        "of 3, peers one run)\n"
    )
    print(f"| method | vox/s | {DEFAULT} is x faster |\n|---|---|---|")
    for name, r in rates.items():
        print(f"| {name} | {r:,.0f} | {rates[DEFAULT] / r:,.1f} |")


if __name__ == "__main__":
    main()
