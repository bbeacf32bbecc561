"""kPL benchmark: tumorscope's input-less fit vs a per-voxel ``scipy.optimize.least_squares`` loop.

Both fit the same synthetic voxels in one run: 20 frames every 3 s, flip angles 10° (pyruvate)
and 30° (lactate), a boxcar pyruvate input over the first 6 s (frame-aligned), kPL uniform in
0.005–0.15 /s, T1 30 s (pyruvate) and 25 s (lactate), Gaussian noise at a peak lactate SNR of
``--snr`` (20 by default). Printed: voxels per second (wall clock) and per CPU-second, their
ratio to the loop, and the median absolute relative error of kPL against the truth for each
method (ours also on the loop's voxels, so accuracy is compared like for like), and the
largest difference between the two solutions on those voxels.

Peer
----
``least_squares loop``: what a per-voxel tool does (the Hyperpolarized-MRI-Toolbox fits each
voxel with ``fminunc``/``lsqnonlin``): one ``scipy.optimize.least_squares`` (TRF, kPL ≥ 0,
L0 ≥ 0, 2-point finite-difference Jacobian, start kPL 0.05 and L0 from the first lactate
point) per voxel, on exactly the same model (:meth:`PyruvateLactate.lactate_signal`, the same
between-frame pyruvate treatment), so the two differ only in how they solve it.

``tumorscope``: ``PyruvateLactate.fit`` (closed-form 2×2 least squares for every voxel at once,
iterated five times on the pyruvate loss rate); also with ``fit_t1_lactate=True`` against a
3-parameter loop (kPL, L0, T1_lactate).

Run: ``python benchmarks/bench_kpl.py [--n 20000] [--n-loop 300] [--snr 20]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy.optimize import least_squares

from tumorscope.errors import TumorscopeWarning
from tumorscope.models import PyruvateLactate
from tumorscope.models.metabolic import two_site_signals

T = np.arange(20) * 3.0
FLIPS_DEG = np.array([10.0, 30.0])


def simulate(n: int, snr: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    kpl = rng.uniform(0.005, 0.15, n)
    flips = np.deg2rad(np.repeat(FLIPS_DEG[:, None], T.size, axis=1))
    clean = 1e3 * two_site_signals(T, flips, kpl, r1p=1 / 30, r1l=1 / 25, input_rate=1.0,
                                   input_start_s=-3.0, input_duration_s=6.0)  # fmt: skip
    sigma = clean[:, 1].max(axis=1, keepdims=True) / snr
    noisy = clean + rng.normal(size=clean.shape) * sigma[:, :, None]
    return kpl, noisy


def loop(model: PyruvateLactate, sig: np.ndarray) -> np.ndarray:
    n = model.n_frames
    out = np.full(sig.shape[0], np.nan)
    free_t1 = model.fit_t1_lactate
    for i, s in enumerate(sig):
        pyr, lac = s[0][None], s[1]

        def res(p: np.ndarray, pyr: np.ndarray = pyr, lac: np.ndarray = lac) -> np.ndarray:
            full = p if free_t1 else np.array([p[0], p[1], model.t1_lactate_s])
            return model.lactate_signal(pyr, full[None])[0] - lac

        l0 = max(lac[0] / np.sin(model.flips_rad[1, 0]), 0.0)
        x0 = [0.05, l0, 25.0] if free_t1 else [0.05, l0]
        lo = [0.0, 0.0, 5.0] if free_t1 else [0.0, 0.0]
        hi = [5.0, np.inf, 80.0] if free_t1 else [5.0, np.inf]
        sol = least_squares(res, x0, bounds=(lo, hi))
        out[i] = sol.x[0]
    assert n == sig.shape[-1]
    return out


def timed(fn, *a):  # type: ignore[no-untyped-def]
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*a)
    return out, time.perf_counter() - w0, time.process_time() - c0


def err(est: np.ndarray, truth: np.ndarray) -> float:
    return float(np.nanmedian(np.abs(est / truth - 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--n-loop", type=int, default=300)
    ap.add_argument("--snr", type=float, default=20.0)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    truth, sig = simulate(args.n, args.snr, rng)
    print(f"{args.n} voxels (loop: {args.n_loop}), 20 frames, peak lactate SNR {args.snr:g}")
    print(f"{'method':<34}{'vox/s':>10}{'vox/CPU-s':>11}{'x wall':>9}{'x CPU':>9}"
          f"{'kPL err':>9}{'err(loop vox)':>15}{'max |ours-loop|':>17}")  # fmt: skip
    for free in (False, True):
        model = PyruvateLactate(T, FLIPS_DEG, fit_t1_lactate=free, min_snr=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TumorscopeWarning)
            fit, w, c = timed(model.fit, sig)
        ours = np.asarray(fit["kPL"], float)
        sub = slice(0, args.n_loop)
        ref, lw, lc = timed(loop, model, sig[sub])
        ow, oc = args.n / w, args.n / max(c, 1e-9)
        rw, rc = args.n_loop / lw, args.n_loop / max(lc, 1e-9)
        tag = "kPL, L0, T1_lactate" if free else "kPL, L0"
        print(f"{'least_squares loop (' + tag + ')':<34}{rw:>10.0f}{rc:>11.0f}{1:>9.0f}{1:>9.0f}"
              f"{err(ref, truth[sub]):>9.4f}{err(ref, truth[sub]):>15.4f}{'':>17}")  # fmt: skip
        print(f"{'tumorscope (' + tag + ')':<34}{ow:>10.0f}{oc:>11.0f}{ow / rw:>9.0f}{oc / rc:>9.0f}"
              f"{err(ours, truth):>9.4f}{err(ours[sub], truth[sub]):>15.4f}"
              f"{np.nanmax(np.abs(ours[sub] - ref)):>17.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
