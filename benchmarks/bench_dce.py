"""DCE benchmark: tumorscope vs a per-voxel ``scipy.optimize.curve_fit`` loop vs dcmri.

All methods fit the same synthetic curves in one run: a Parker AIF (Hct 0.45, 10 s delay),
3.5 s frames over 5 min, extended Tofts (Ktrans 0.05–0.5 /min, ve 0.1–0.6, vp 0.005–0.1) or
2CXM (Fp 20–100, PS 3–30 mL/100 mL/min, ve 0.1–0.5, vp 0.02–0.1) tissue, Gaussian noise of
SD ``--noise`` mM (0.01 by default; the peak tissue concentration is 0.2–1.5 mM). Printed:
voxels per second (wall clock) and per CPU-second (all threads of the process: robust when
other jobs share the machine, and it does not credit our use of both cores), the ratios of
each to the curve_fit loop, and the median absolute relative error of each parameter against
the truth, noise-free and noisy (ours also on the loop's voxels, for a like-for-like error).

Peers
-----
* ``curve_fit loop``: what most DCE tools do: one ``scipy.optimize.curve_fit`` (TRF, bounds,
  finite-difference Jacobian, fixed start in the middle of the typical ranges) per voxel, with
  an exact piecewise-linear convolution written as a vectorised O(n²) sum (so that its accuracy
  is not limited by the convolution; a rectangle rule would be faster and biased).
* ``dcmri``: ``dcmri.Tissue(kinetics="HF"|"2CX").train`` per voxel (its own voxel-wise fit). It
  fits signals, so it gets the SPGR signal of the same (noisy) concentration curves
  (T10 1 s, r1 4.5 /mM/s, TR 5 ms, FA 15°, S0 1000) and the blood AIF; its parameters are
  converted (vb(1-H) = vp, vi = ve, PS·60 = Ktrans; Fp = Fb(1-H)·6000).
* ``osipy`` (OSIPI's batched fit) is not run: version 0.1.4 uses Python 3.12 syntax
  (``class C[P: ...]``) and does not import on the project's Python 3.11.
* ``tumorscope``: ``ExtendedTofts`` / ``TwoCXM`` ``.fit`` with their default
  ``method="varpro"`` (variable projection over kep, or over the 2CXM's two rates, compiled,
  from the linearised solution; LM for the voxels outside the bounds), the same with
  ``method="lm"`` (linearised start + batched LM with the exact recursive convolution; numba
  kernel, and the numpy backend), and for extended Tofts the linearised (Murase) solution alone
  (the bare compiled function) and ``method="linear"`` (the same through the engine: masks,
  statuses, residuals).

Run: ``python benchmarks/bench_dce.py [--n 20000] [--n-loop 300] [--n-dcmri 60]``.
The loop peers fit a subset (``--n-loop``, ``--n-dcmri``) and their voxels/s is measured on it;
errors of each method are reported on the voxels it fitted.

``--stage-memory STUDY``: also run the ``fit_dce`` step on the first visit of a study (e.g. the
large phantom, read only; outputs to a temporary folder) under ``tracemalloc`` and print its
peak of traced memory beside the size of the DCE series.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np
from scipy.optimize import curve_fit

from tumorscope.models import ExtendedTofts, TwoCXM, aif
from tumorscope.models.dce import kinetics as kin

H = 0.45


def _weights(t: np.ndarray, cp: np.ndarray, k: float) -> np.ndarray:
    """Exact piecewise-linear convolution with e^{-kt}, one rate, O(n²) vectorised."""
    d = np.diff(t)
    x = k * d
    _, g0, g1, _ = kin._g012(x)
    # contribution of interval i (t_i..t_{i+1}) at t_{i+1}, then decayed to every later t_j
    inc = d * (cp[1:] * g0 + (cp[:-1] - cp[1:]) * g1)
    lag = t[1:, None] - t[None, 1:]  # (j, i): t_j - t_{i+1}
    dec = np.where(lag >= 0, np.exp(-k * np.clip(lag, 0, None)), 0.0)
    return np.concatenate([[0.0], dec @ inc])


def _peer_etofts(t: np.ndarray, cp: np.ndarray) -> Callable[..., np.ndarray]:
    def f(_: np.ndarray, ktrans: float, ve: float, vp: float) -> np.ndarray:
        kep = ktrans / ve / 60.0
        return ktrans / 60.0 * _weights(t, cp, kep) + vp * cp

    return f


def _peer_2cxm(t: np.ndarray, cp: np.ndarray) -> Callable[..., np.ndarray]:
    def f(_: np.ndarray, fp: float, ps: float, ve: float, vp: float) -> np.ndarray:
        fp_s, ps_s = fp / 6000.0, ps / 6000.0
        s = (fp_s + ps_s) / vp + ps_s / ve
        p = fp_s * ps_s / (vp * ve)
        disc = np.sqrt(max(s * s - 4 * p, 0.0))
        al = 0.5 * (s + disc)
        be = p / al
        a = (fp_s / vp - be) / disc if disc > 0 else 1.0
        return fp_s * (a * _weights(t, cp, al) + (1 - a) * _weights(t, cp, be))

    return f


def _loop(f, t, y, p0, lo, hi) -> np.ndarray:
    out = np.full((y.shape[0], len(p0)), np.nan)
    for i in range(y.shape[0]):
        try:
            out[i] = curve_fit(f, t, y[i], p0=p0, bounds=(lo, hi), method="trf")[0]
        except (RuntimeError, ValueError):
            pass
    return out


def _dcmri(kind: str, t, cb, conc, n_params) -> np.ndarray | None:
    try:
        import dcmri as dc
    except ImportError:
        return None
    r10, r1, tr, fa, s0 = 1.0, 4.5, 0.005, 15.0, 1000.0
    e = np.exp(-tr * (r10 + r1 * conc))
    a = np.deg2rad(fa)
    sig = s0 * np.sin(a) * (1 - e) / (1 - np.cos(a) * e)
    out = np.full((conc.shape[0], n_params), np.nan)
    kinetics = {"etofts": "HF", "2cxm": "2CX"}[kind]
    for i in range(conc.shape[0]):
        tis = dc.Tissue(
            kinetics=kinetics, water_exchange="FF", sequence="SS", ca=cb, t=t,
            r1=r1, R10=r10, TR=tr, FA=fa, S0=s0, n0=4, H=H,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tis.train(t, sig[i])
        if kind == "etofts":
            vb, vi, ps = tis.params("vb", "vi", "PS")
            out[i] = [ps * 60.0, vi, vb * (1 - H)]
        else:
            fb, ps, vi, vb = tis.params("Fb", "PS", "vi", "vb")
            out[i] = [fb * (1 - H) * 6000.0, ps * 6000.0, vi, vb * (1 - H)]
    return out


def _err(est: np.ndarray, truth: np.ndarray) -> str:
    rel = np.abs(est - truth) / np.abs(truth)
    return " ".join(f"{v:8.2e}" for v in np.nanmedian(rel, axis=0))


def _timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, tuple[float, float]]:
    """Result, (wall-clock s, CPU s of this process: all threads)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - w0, time.process_time() - c0)


def run(kind: str, n: int, n_loop: int, n_dcmri: int, noise: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, 300.0, 3.5)
    cb = aif.parker(t, delay_s=10.0)
    cp = cb / (1 - H)
    if kind == "etofts":
        names = ("Ktrans", "ve", "vp")
        truth = np.column_stack(
            [rng.uniform(0.05, 0.5, n), rng.uniform(0.1, 0.6, n), rng.uniform(0.005, 0.1, n)]
        )
        model, eq = ExtendedTofts(t, cp), kin.extended_tofts
        peer, p0 = _peer_etofts(t, cp), [0.2, 0.3, 0.05]
        lo, hi = [0.0, 1e-3, 0.0], [5.0, 1.0, 1.0]
    else:
        names = ("Fp", "PS", "ve", "vp")
        truth = np.column_stack(
            [
                rng.uniform(20, 100, n),
                rng.uniform(3, 30, n),
                rng.uniform(0.1, 0.5, n),
                rng.uniform(0.02, 0.1, n),
            ]
        )
        model, eq = TwoCXM(t, cp), kin.two_cxm
        peer, p0 = _peer_2cxm(t, cp), [50.0, 10.0, 0.3, 0.05]
        lo, hi = [1e-2, 0.0, 1e-3, 1e-4], [1000.0, 500.0, 1.0, 1.0]
    clean = eq(truth, t, cp)
    numpy_model = type(model)(t, cp, method="lm", backend="numpy")
    lm_model = type(model)(t, cp, method="lm")
    # warm-up (numba compilation and caches) outside the timings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in (model, lm_model, numpy_model, type(model)(t, cp, method="linear")):
            m.fit(clean[:50])
        kin.linear_extended_tofts(clean[:50], t, cp)
    print(f"\n== {kind}: {n} voxels ours, {n_loop} curve_fit loop, {n_dcmri} dcmri; "
          f"{t.size} frames, noise SD {noise} mM")  # fmt: skip
    print(
        f"{'method':<24}{'vox/s':>9}{'ratio':>8}{'vox/CPU-s':>11}{'ratio':>8}"
        f"   median |rel err| ({', '.join(names)})"
    )
    for label, sd in (("noise-free", 0.0), ("noisy", noise)):
        y = clean + sd * rng.standard_normal(clean.shape)
        print(f"-- {label}")

        def ours(m=model, y=y) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = m.fit(y)
            return np.column_stack([fit[p] for p in names]).astype(float)

        loop_est, loop_s = _timed(lambda y=y: _loop(peer, t, y[:n_loop], p0, lo, hi))
        rows = [("curve_fit loop", loop_est, n_loop, loop_s, truth[:n_loop])]
        est, s = _timed(ours)
        rows.append(("tumorscope varpro", est, n, s, truth))
        rows.append(("  same, loop's voxels", est[:n_loop], n, s, truth[:n_loop]))
        est, s = _timed(lambda y=y: ours(lm_model, y))
        rows.append(("tumorscope LM (numba)", est, n, s, truth))
        n_np = min(n, 5000)
        est, s = _timed(lambda y=y, k=n_np: ours(numpy_model, y[:k]))
        rows.append(("tumorscope LM (numpy)", est, n_np, s, truth[:n_np]))
        if kind == "etofts":
            est, s = _timed(lambda y=y: kin.linear_extended_tofts(y, t, cp))
            rows.append(("linearised (Murase)", est, n, s, truth))
            lin_model = type(model)(t, cp, method="linear")
            est, s = _timed(lambda y=y, m=lin_model: ours(m, y))
            rows.append(("method='linear' fit", est, n, s, truth))
        if n_dcmri:
            res, s = _timed(lambda y=y: _dcmri(kind, t, cb, y[:n_dcmri], len(names)))  # type: ignore[arg-type,return-value]
            if res is None:
                print("   dcmri not installed (pip install dcmri): skipped")
            else:
                rows.append(("dcmri (Tissue.train)", res, n_dcmri, s, truth[:n_dcmri]))
        ref_wall = n_loop / loop_s[0]
        ref_cpu = n_loop / loop_s[1]
        for name, e, count, (wall, cpu), tr in rows:
            rw, rc = count / wall, count / cpu
            print(
                f"{name:<24}{rw:9.0f}{rw / ref_wall:7.0f}×{rc:11.0f}{rc / ref_cpu:7.0f}×"
                f"   {_err(e, tr)}"
            )
        speed = {r[0]: (r[2] / r[3][0], r[2] / r[3][1]) for r in rows}
        ours_w, ours_c = speed["tumorscope varpro"]
        others = ["tumorscope LM (numba)"]
        if kind == "etofts":
            others += ["linearised (Murase)", "method='linear' fit"]
        for other in others:
            pw, pc = speed[other]
            print(
                f"   {other} is {pw / ours_w:.2f}× (wall) / {pc / ours_c:.2f}× (CPU) "
                "the speed of the varpro fit"
                + (" (target: <= 2)" if other != "tumorscope LM (numba)" else "")
            )


def stage_memory(study: str) -> None:
    """tracemalloc peak of ``fit_dce`` on the first visit of ``study`` (outputs to a temp dir)."""
    import tempfile
    import tracemalloc

    from tumorscope.io import open_study
    from tumorscope.stages.base import SeriesInput
    from tumorscope.stages.dce import fit_dce_visit

    visit = next(iter(open_study(study).visits()))
    print(f"\n== fit_dce on {visit.path} (its reading of the series included in the peak)")
    rows = []
    for label, mask in (("lesions (the pipeline step)", "lesions"), ("every voxel", None)):
        with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tracemalloc.start()
            res, (wall, cpu) = _timed(lambda o=out, m=mask: fit_dce_visit(visit, out_dir=o, mask=m))
            peak = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
        n_fit = int(np.isfinite(np.asarray(res.fit["Ktrans"])).sum())
        rows.append((label, n_fit, peak, wall, cpu))
    series_mb = SeriesInput.of(visit.series["dce"]).load().data.nbytes / 1e6
    for label, n_fit, peak, wall, cpu in rows:
        print(
            f"   {label}: {n_fit} voxels fitted, traced peak {peak:.0f} MB = "
            f"{peak / series_mb:.1f}× the DCE series ({series_mb:.0f} MB float32); "
            f"{wall:.1f} s wall, {cpu:.1f} s CPU"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--n-loop", type=int, default=300)
    ap.add_argument("--n-dcmri", type=int, default=60)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--models", default="etofts,2cxm")
    ap.add_argument("--stage-memory", metavar="STUDY", default=None)
    a = ap.parse_args()
    for kind in filter(None, a.models.split(",")):
        run(kind, a.n, a.n_loop, a.n_dcmri, a.noise, a.seed)
    if a.stage_memory:
        stage_memory(a.stage_memory)


if __name__ == "__main__":
    main()
