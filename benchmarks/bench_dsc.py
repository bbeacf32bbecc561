"""DSC benchmark: tumorscope vs a per-voxel numpy SVD loop vs osipy, and the accuracy tables.

Two parts, one run (``python benchmarks/bench_dsc.py [--n 20000] [--n-loop 500]
[--accuracy-only | --speed-only]``):

**Accuracy** (the tables of ``docs/dsc.md``): ``--n-acc`` voxels per cell, CBF 10–80
mL/100 mL/min and CBV 1–6 mL/100 mL (uniform), three residue functions (exponential, gamma,
box: :mod:`tumorscope.models.dsc.simulate`), three conditions (none; tissue AIF delayed 3 s;
dispersed with an exponential kernel of 2 s), every method, noise-free and at a realistic CNR:
the DSC signal ``S0·exp(−TE·ΔR2*)`` with S0/σ = 100 (Gaussian), TE 30 ms, converted back with
``delta_r2star`` (baseline 6 frames) — the AIF peaks at 60 /s, tissue ΔR2* at 1–9 /s,
against a noise SD of about 0.33 /s per frame (the AIF gets the same noise). Printed: median relative error (%) and
the interquartile range of the relative error of CBF, CBV and MTT.

**Speed** (same synthetic voxels for every peer, 60 frames of 1.5 s, gamma residue, SNR 100):

* ``loop``: what a per-voxel script does: for each voxel, the block-circulant matrix, its
  SVD (``numpy.linalg.svd``) and Wu's oSVD threshold search (thresholds 0.01, 0.02, …, OI
  0.095): the same algorithm as tumorscope, so the results must agree to rounding (checked and
  printed: "equal accuracy"). Also ``loop, SVD hoisted``: the SVD once, the per-voxel search
  in a Python loop.
* ``osipy`` 0.1.4 (OSIPI): ``deconvolve_oSVD`` / ``deconvolve_cSVD`` / ``_deconvolve_sSVD``,
  vectorised over voxels. Its definitions differ from the papers (see ``docs/dsc.md``): its
  oSVD uses first differences in the oscillation index and OI 0.035, its thresholds a 20-value
  grid, and its "cSVD" keeps only the upper-left N×N block of the circulant matrix (which is
  the Toeplitz matrix: not delay-insensitive). Errors against the truth are printed with the
  speeds.
* ``tumorscope``: ``DSC(...).fit`` with each method.

Printed: voxels per second (wall clock) and per CPU-second of the process (robust when other
jobs share the machine), their ratios to the loop, and the median |relative error| of CBF.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from tumorscope.models import DSC
from tumorscope.models.dsc import convolution_matrix, delta_r2star, oscillation_index
from tumorscope.models.dsc.deconvolution import OSVD_THRESHOLDS
from tumorscope.models.dsc.simulate import RESIDUES, reference_aif, tissue_curves

T = np.arange(60) * 1.5
TE_MS = 30.0
KH = (1 - 0.45) / (1 - 0.25)
RHO = 1.04
METHODS = ("osvd", "csvd", "svd", "tikhonov")


def _noisy(r2: np.ndarray, snr: float | None, rng: np.random.Generator) -> np.ndarray:
    if snr is None:
        return r2
    s = 1000.0 * np.exp(-r2 * TE_MS * 1e-3) + rng.normal(0, 1000.0 / snr, r2.shape)
    return delta_r2star(np.maximum(s, 1e-3), TE_MS, n_baseline=6)


def _aif(t: np.ndarray) -> np.ndarray:
    """The reference gamma-variate AIF scaled to a peak ΔR2* of 60 /s (a full dose at 1.5 T,
    TE 30 ms: the arterial signal falls to ~16 %), so that grey-matter-like tissue peaks at
    4-9 /s."""
    return 2.0 * reference_aif(t)


def _case(
    n: int, residue: str, rng: np.random.Generator, *, delay: float = 0.0, disp: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cbf = rng.uniform(10, 80, n)
    cbv = rng.uniform(1, 6, n)
    c, aif = tissue_curves(T, cbf, cbv, residue=residue, delay_s=delay, dispersion_s=disp, aif=_aif)
    return c, aif, cbf, cbv


def accuracy(n: int, rng: np.random.Generator) -> None:
    conds = {"none": {}, "delay 3 s": {"delay": 3.0}, "dispersion 2 s": {"disp": 2.0}}
    for snr in (None, 100.0):
        label = "noise-free" if snr is None else f"SNR {snr:g} (S0/σ), TE {TE_MS:g} ms"
        print(f"\n#### {label}: median relative error % [IQR], {n} voxels per row\n")
        print("| residue | condition | method | CBF | CBV | MTT |")
        print("| --- | --- | --- | --- | --- | --- |")
        for res in RESIDUES:
            for cname, kw in conds.items():
                c, aif, cbf, cbv = _case(n, res, rng, **kw)  # type: ignore[arg-type]
                both = _noisy(np.vstack([c, aif[None]]), snr, rng)
                c, aif = both[:-1], both[-1]
                for m in METHODS:
                    fit = DSC(T, aif, method=m).fit(c)
                    cells = []
                    for est, tru in (
                        (fit["CBF"], cbf),
                        (fit["CBV"], cbv),
                        (fit["MTT"], 60 * cbv / cbf),
                    ):
                        e = 100 * (est / tru - 1)
                        q1, q2, q3 = np.nanpercentile(e, [25, 50, 75])
                        cells.append(f"{q2:+.1f} [{q3 - q1:.1f}]")
                    print(f"| {res} | {cname} | {m} | " + " | ".join(cells) + " |")


def leakage(n: int, rng: np.random.Generator) -> None:
    """K2 recovered and the CBV bias with and without correction (BSW and bidirectional):
    the reference is normal tissue (CBF 22, CBV 2), the tumour has CBV 6 (CBF 66) and a
    leakage term ``−K2·∫ref`` (BSW model) or ``−K2·∫ref·e^{−ka(t−τ)}`` (ka 0.01 /s)."""
    from tumorscope.models.dsc import correct_leakage
    from tumorscope.models.dsc.leakage import _exp_conv

    ref, aif = tissue_curves(T, [22.0], [2.0], aif=_aif)
    ref = ref[0]
    true, _ = tissue_curves(T, [66.0], [6.0], aif=_aif)
    print(f"\n#### leakage: {n} voxels per row, SNR 100; medians over voxels\n")
    print(
        "| model | K2 true (1/s) | K2 BSW | K2 bidir. | CBV error uncorrected | BSW | bidirectional |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for ka in (0.0, 0.01):
        conv = _exp_conv(ref, T, ka)
        for k2 in (-0.004, 0.0, 0.002, 0.004, 0.008):
            leaky = np.repeat(true - k2 * conv[None, :], n, axis=0)
            both = _noisy(np.vstack([leaky, ref[None], aif[None]]), 100.0, rng)
            d, r_meas, a_meas = both[:-2], both[-2], both[-1]
            out = [f"{'BSW' if ka == 0 else f'bidir. ka={ka:g}'}", f"{k2:+.3f}"]
            cbv = {"raw": DSC(T, a_meas).fit(d)["CBV"]}
            for meth in ("bsw", "bidirectional"):
                c = correct_leakage(d, T, ref, method=meth)
                out.append(f"{np.median(c.K2):+.4f}")
                cbv[meth] = DSC(T, a_meas).fit(c.corrected)["CBV"]
            for key in ("raw", "bsw", "bidirectional"):
                out.append(f"{100 * (np.median(cbv[key]) / 6.0 - 1):+.1f} %")
            del r_meas
            print("| " + " | ".join(out) + " |")


def _loop_osvd(c: np.ndarray, aif: np.ndarray, *, hoisted: bool) -> np.ndarray:
    """Per-voxel oSVD (Wu 2003) in a Python loop; returns CBF (mL/100 mL/min)."""
    n = T.size
    A = convolution_matrix(aif, 1.5, circulant=True)
    out = np.empty(c.shape[0])
    if hoisted:
        U0, s0, Vt0 = np.linalg.svd(A)
    for i in range(c.shape[0]):
        U, s, Vt = (U0, s0, Vt0) if hoisted else np.linalg.svd(A)
        pad = np.zeros(2 * n)
        pad[:n] = c[i]
        b = U.T @ pad
        k = None
        for p in OSVD_THRESHOLDS:
            keep = s >= p * s[0]
            k = Vt[keep].T @ (b[keep] / s[keep])
            if oscillation_index(k) <= 0.095:
                break
        assert k is not None
        out[i] = 6000 * KH / RHO * k.max()
    return out


def _timed(fn: Callable[[], np.ndarray], n: int) -> tuple[float, float, np.ndarray]:
    t0, c0 = time.perf_counter(), time.process_time()
    res = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n / wall, n / max(cpu, 1e-9), res


def speed(n: int, n_loop: int, rng: np.random.Generator) -> None:
    c, aif, cbf, _ = _case(n, "gamma", rng, delay=1.5)
    both = _noisy(np.vstack([c, aif[None]]), 100.0, rng)
    c, aif = both[:-1], both[-1]
    DSC(T, aif).fit(c[:10])  # compile the numba kernel outside the timing
    rows: list[tuple[str, float, float, np.ndarray, np.ndarray]] = []
    sub = slice(0, n_loop)
    for name, hoisted in (("loop (SVD per voxel), oSVD", False), ("loop, SVD hoisted, oSVD", True)):
        vw, vc, est = _timed(lambda h=hoisted: _loop_osvd(c[sub], aif, hoisted=h), n_loop)
        rows.append((name, vw, vc, est, cbf[sub]))
    loop_est = rows[0][3]
    for m in METHODS:
        vw, vc, fit = _timed(lambda m=m: DSC(T, aif, method=m).fit(c)["CBF"], n)
        rows.append((f"tumorscope {m}", vw, vc, fit, cbf))
        if m == "osvd":
            diff = np.max(np.abs(fit[sub] - loop_est) / np.abs(loop_est))
            print(
                f"equal accuracy: tumorscope osvd vs loop, max relative CBF difference {diff:.1e}"
            )
    try:
        from osipy.dsc.deconvolution import svd as osvd_mod
    except ImportError as exc:  # pragma: no cover - optional peer
        print(f"osipy not run: {exc}")
    else:
        peers = {
            "osipy oSVD": osvd_mod.deconvolve_oSVD,
            "osipy cSVD": osvd_mod.deconvolve_cSVD,
            "osipy sSVD": osvd_mod._deconvolve_sSVD,
        }
        for name, fn in peers.items():
            vw, vc, res = _timed(lambda fn=fn: fn(c, aif, T).cbf, n)
            rows.append((name, vw, vc, 6000 * KH / RHO * np.asarray(res), cbf))
    ref_w, ref_c = rows[0][1], rows[0][2]
    print(f"\n{n} voxels (loops: {n_loop}), 60 frames, gamma residue, delay 1.5 s, SNR 100\n")
    print("| method | voxels/s | × loop | voxels/CPU-s | × loop | CBF median abs rel. error |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, vw, vc, est, tru in rows:
        err = 100 * np.nanmedian(np.abs(est / tru - 1))
        print(
            f"| {name} | {vw:,.0f} | {vw / ref_w:,.0f} | {vc:,.0f} | {vc / ref_c:,.0f} | {err:.1f} % |"
        )


def whole_brain(rng: np.random.Generator) -> None:
    """A 128×128×25 volume of 60 frames (409,600 voxels; every voxel fitted, no mask): wall
    time of each method, one process, the machine's BLAS threads."""
    c, aif, _, _ = _case(2048, "gamma", rng, delay=1.5)
    both = _noisy(np.vstack([c, aif[None]]), 100.0, rng)
    c, aif = both[:-1], both[-1]
    vol = np.tile(c, (200, 1)).reshape(128, 128, 25, 60)
    print("\n#### whole brain 128×128×25×60 (409,600 voxels, no mask)\n")
    print("| method | wall s | CPU s (all threads) |")
    print("| --- | --- | --- |")
    for m in METHODS:
        t0, c0 = time.perf_counter(), time.process_time()
        DSC(T, aif, method=m).fit(vol)
        print(f"| {m} | {time.perf_counter() - t0:.1f} | {time.process_time() - c0:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--n-loop", type=int, default=500)
    ap.add_argument("--n-acc", type=int, default=2000)
    ap.add_argument("--accuracy-only", action="store_true")
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--leakage-only", action="store_true")
    ap.add_argument("--whole-brain", action="store_true")
    a = ap.parse_args()
    rng = np.random.default_rng(2003)
    if a.whole_brain:
        whole_brain(rng)
        return
    if a.leakage_only:
        leakage(500, rng)
        return
    if not a.accuracy_only:
        speed(a.n, a.n_loop, rng)
    if not a.speed_only:
        accuracy(a.n_acc, rng)
        leakage(500, rng)


if __name__ == "__main__":
    main()
