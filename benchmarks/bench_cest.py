"""CEST benchmark: the 5-pool Lorentzian fit, batched, vs a per-voxel ``scipy`` fit loop.

Both fit the same Z-spectra in one run: Bloch–McConnell spectra
(:func:`tumorscope.models.cest.simulate_z`; 3 T, CW 1 µT for 2 s, ±6 ppm by 0.25 ppm plus ±10,
±15 ppm; water T1 1.3 s / T2 70 ms, amide fraction 3e-4–1.5e-3 and rate 10–200 Hz, amine,
NOE −3.5 ppm, MT) shifted by a B0 of ±0.5 ppm, with Gaussian noise of SD 0.01 (SNR 100).

Peers
-----
* ``scipy loop``: one ``scipy.optimize.least_squares`` per voxel (TRF, the same bounds, the same
  start, and the same analytic Jacobian as ours: :func:`lorentzian_jacobian`), which is how the
  published MATLAB/Python CEST tools fit (``lsqcurvefit`` per voxel).
* ``tumorscope``: :class:`CESTLorentzian` ``.fit`` (batched bounded LM, numba kernel, both
  cores), and its numpy backend (vectorised LM over the whole block).

Printed: voxels per second (wall clock) and per CPU-second (all threads of the process), the
ratio of each to the loop, and the agreement of the two fits (median absolute difference of
the amide amplitude and B0, and the share of voxels whose RSS is within 1 % of each other).

Run: ``python benchmarks/bench_cest.py [--n 20000] [--n-loop 300]``.
``--b0`` times instead the B0 map of the spectra themselves (``wassr_b0``, a water-line fit
of every body voxel) on the compiled solver against the numpy solver, same spectra, same run.
``--stage STUDY`` times the ``fit_cest`` stage on the first visit of a phantom study
(``tumorscope phantom --size large``; read-only) with the Lorentzian in the lesions (the
default) and on the whole body, against reading the CEST series, in one run.
``--accuracy`` prints instead the error tables of ``docs/cest.md`` (B0 from WASSR and from
the CEST spectra, WASABI, MTRasym and the Lorentzian amide amplitude against amide
concentration and exchange rate under B0 shifts).
``--compare STUDY`` times the ``fit_cest`` stage of this tree against another source tree
(``--old-src``, default ``/work/main/src``) on the first visit of ``STUDY``: each in a child
process (``PYTHONPATH`` = the tree), serial on one thread (``os.cpu_count = 1``,
``numba.set_num_threads(1)``; ``--threads N``: on N), a warm-up run then ``--repeats`` timed runs, the two trees
alternated ``--rounds`` times, with the load average next to each figure; then it compares
their maps (B0, MTRasym, the Lorentzian in the fit region: median / 99th percentile of
|new - old|) and both against the phantom's truths (``derivatives/truth``: the B0 map, and the
amide fraction for the amide amplitude: rank correlation in the fit region).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from tumorscope.models.cest import CESTLorentzian, simulate_z
from tumorscope.models.cest.bloch import BMSystem, ExchangePool, MTPool
from tumorscope.models.cest.lorentzian import lorentzian_jacobian, lorentzian_signal

OFF = np.r_[-15.0, -10.0, np.arange(-6.0, 6.001, 0.25), 10.0, 15.0]


def _spectra(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` noisy spectra from 40 BM tissues x random B0 (spline-free: each simulated)."""
    base = []
    for f in np.linspace(3e-4, 1.5e-3, 8):
        for k in (10.0, 30.0, 60.0, 120.0, 200.0):
            sysm = BMSystem(
                1.3,
                0.07,
                (
                    ExchangePool("amide", f, 1.0, 0.1, k, 3.5),
                    ExchangePool("amine", 9e-4, 1.0, 0.1, 1000.0, 2.0),
                    ExchangePool("noe", 4.5e-3, 1.3, 0.005, 20.0, -3.5),
                ),
                MTPool(0.1, 1.0, 4e-5, 30.0, -3.0),
            )
            shifts = np.linspace(-0.5, 0.5, 11)
            base += [
                simulate_z(sysm, OFF, field_t=3.0, b1_ut=1.0, tsat_s=2.0, b0_shift_ppm=s)
                for s in shifts
            ]
    z = np.array(base)
    pick = rng.integers(0, z.shape[0], n)
    return z[pick] + rng.normal(0, 0.01, (n, OFF.size))


def _timed(fn: Callable[[], object]) -> tuple[object, tuple[float, float]]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - w0, time.process_time() - c0)


def _loop(model: CESTLorentzian, y: np.ndarray) -> np.ndarray:
    lo, hi = model.bounds()
    p0 = model.initial_guess(y)
    out = np.empty_like(p0)
    for i in range(y.shape[0]):
        yi = y[i]
        r = least_squares(
            lambda p, yi=yi: lorentzian_signal(OFF, p[None])[0] - yi,
            p0[i],
            jac=lambda p: lorentzian_jacobian(OFF, p[None])[0],
            bounds=(lo, hi),
            method="trf",
            x_scale=model.scales(),
        )
        out[i] = r.x
    return out


def _tissue(f: float = 9e-4, k: float = 50.0) -> BMSystem:
    return BMSystem(
        1.3,
        0.07,
        (
            ExchangePool("amide", f, 1.0, 0.1, k, 3.5),
            ExchangePool("amine", 9e-4, 1.0, 0.1, 1000.0, 2.0),
            ExchangePool("noe", 4.5e-3, 1.3, 0.005, 20.0, -3.5),
        ),
        MTPool(0.1, 1.0, 4e-5, 30.0, -3.0),
    )


def accuracy(seed: int) -> None:
    """The error tables of docs/cest.md."""
    from tumorscope.models.cest import WASABI, mtr_asym, wassr_b0

    rng = np.random.default_rng(seed)
    shifts = (-0.5, -0.25, 0.0, 0.25, 0.5)
    print("B0 error (ppm), 1000 voxels per shift, SNR 100 (sigma 0.01 of M0)")
    print(f"{'spectra':<28}{'shift':>7}{'bias':>10}{'RMS':>9}{'max':>9}")
    for label, b1 in (("WASSR 0.2 uT 2 s", 0.2), ("CEST 1 uT 2 s", 1.0), ("CEST 2 uT 2 s", 2.0)):
        for s in shifts:
            z = simulate_z(_tissue(), OFF, field_t=3.0, b1_ut=b1, tsat_s=2.0, b0_shift_ppm=s)
            e = wassr_b0(z + rng.normal(0, 0.01, (1000, OFF.size)), OFF) - s
            print(
                f"{label:<28}{s:7.2f}{np.mean(e):10.4f}{np.sqrt(np.mean(e**2)):9.4f}{np.max(np.abs(e)):9.4f}"
            )
    print("\nWASABI (3.7 uT, 5 ms, 31 offsets ±2 ppm), 500 voxels, SNR 100, water T1 3 s")
    print(
        f"{'T2 (s)':<8}{'rB1':>6}{'B0':>7}{'rB1 bias %':>12}{'rB1 RMS':>9}{'B0 bias':>9}{'B0 RMS':>8}"
    )
    woff = np.linspace(-2, 2, 31)
    model = WASABI(woff, field_t=3.0, b1_ut=3.7, tp_s=0.005)
    for t2 in (0.07, 2.0):
        for rb1, s in ((0.7, -0.4), (1.0, 0.0), (1.25, 0.45)):
            z = np.abs(
                simulate_z(
                    BMSystem(3.0, t2),
                    woff,
                    field_t=3.0,
                    b1_ut=3.7,
                    tsat_s=0.005,
                    b0_shift_ppm=s,
                    rel_b1=rb1,
                )
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f = model.fit(z + rng.normal(0, 0.01, (500, woff.size)))
            eb, e0 = f["rB1"] - rb1, f["B0"] - s
            print(
                f"{t2:<8}{rb1:6.2f}{s:7.2f}{100 * np.mean(eb) / rb1:12.2f}{np.sqrt(np.mean(eb**2)):9.4f}{np.mean(e0):9.4f}{np.sqrt(np.mean(e0**2)):8.4f}"
            )
    print(
        "\nAPT MTRasym(3.5 ppm) and Lorentzian amide amplitude vs amide, noise-free, B0 from the spectrum"
    )
    lor = CESTLorentzian(OFF)
    for what, values in (
        ("fraction", (3e-4, 6e-4, 9e-4, 1.2e-3, 1.5e-3)),
        ("k (Hz)", (10.0, 30.0, 60.0, 120.0, 240.0)),
    ):
        print(f"{what:<10}" + "".join(f"{v:>10g}" for v in values))
        for s in (-0.5, 0.0, 0.5):
            z = np.array(
                [
                    simulate_z(
                        _tissue(f=v) if what == "fraction" else _tissue(k=v),
                        OFF,
                        field_t=3.0,
                        b1_ut=1.0,
                        tsat_s=2.0,
                        b0_shift_ppm=s,
                    )
                    for v in values
                ]
            )
            m = mtr_asym(z, OFF, 3.5)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                amp = lor.fit(z)["amide_amp"]
            print(f"  B0 {s:+.1f} MTRasym" + "".join(f"{x:10.4f}" for x in m))
            print(f"  B0 {s:+.1f} amide_A" + "".join(f"{x:10.4f}" for x in amp))


def bench_b0(n: int, seed: int) -> None:
    """``wassr_b0`` on ``n`` CEST spectra: compiled vs numpy water-line solver."""
    from tumorscope.models.cest import wassr_b0

    rng = np.random.default_rng(seed)
    y = _spectra(n, rng)
    wassr_b0(y[:100], OFF)  # load the compiled solver
    fast, (wf, cf) = _timed(lambda: wassr_b0(y, OFF, backend="numba"))
    ref, (wn, cn) = _timed(lambda: wassr_b0(y, OFF, backend="numpy"))
    d = np.abs(np.asarray(fast) - np.asarray(ref))
    print(f"wassr_b0 on {n} CEST spectra (the B0 of every body voxel without WASSR/WASABI)")
    print(f"{'solver':<12}{'vox/s':>10}{'vox/cpu-s':>12}")
    print(f"{'numpy':<12}{n / wn:10.0f}{n / cn:12.0f}")
    print(f"{'compiled':<12}{n / wf:10.0f}{n / cf:12.0f}")
    print(
        f"ratio compiled / numpy: wall {wn / wf:.1f}x, CPU {cn / cf:.1f}x; max |dB0| {d.max():.1e} ppm"
    )


def bench_stage(study: str, repeats: int) -> None:
    """``fit_cest`` on the first visit of ``study``: lesions vs body, against the image load."""
    import tempfile

    from tumorscope.io import open_study
    from tumorscope.stages.base import SeriesInput
    from tumorscope.stages.cest import CESTOptions, fit_cest

    visit = next(iter(open_study(study).visits()))
    labels = visit.lesions.load_labels() if visit.lesions is not None else None

    def inputs() -> dict[str, SeriesInput]:
        return {
            r: SeriesInput.of(s)
            for r, s in visit.series.items()
            if r in ("cest", "wassr", "wasabi") or r.startswith("cest_")
        }

    def load() -> object:
        return [s.load() for s in inputs().values()]

    def run(region: str, out: str) -> object:
        opts = CESTOptions(fit_region=region)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_cest(inputs(), out_dir=out, prefix="b_", options=opts, lesions=labels)

    with tempfile.TemporaryDirectory() as tmp:
        run("lesions", tmp)  # load the compiled code
        times: dict[str, list[tuple[float, float]]] = {"load": [], "lesions": [], "body": []}
        for _ in range(repeats):
            times["load"].append(_timed(load)[1])
            times["lesions"].append(_timed(lambda: run("lesions", tmp))[1])
            times["body"].append(_timed(lambda: run("body", tmp))[1])
        import json

        side = json.loads(Path(tmp, "b_cest_lorentzian_Z0.json").read_text())
        import tracemalloc

        peaks = {}
        for region in ("lesions", "body"):
            tracemalloc.start()
            run(region, tmp)
            peaks[region] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    best = {k: min(v) for k, v in times.items()}
    shape = inputs()["cest"].load().shape
    print(f"fit_cest on {study} visit {visit.id}, CEST {shape}, best of {repeats}")
    print(f"{'':<26}{'wall s':>8}{'CPU s':>8}{'/ load':>9}")
    for k, label in (
        ("load", "read the CEST series"),
        ("lesions", "fit_cest, region lesions"),
        ("body", "fit_cest, region body"),
    ):
        w, c = best[k]
        print(f"{label:<26}{w:8.2f}{c:8.2f}{w / best['load'][0]:8.1f}x")
    print(f"body / lesions: {best['body'][0] / best['lesions'][0]:.1f}x wall")
    series_mb = float(np.prod(shape)) * 4 / 2**20  # the series as loaded (float32)
    print(
        f"numpy peak (tracemalloc, the series' load included), MB: lesions "
        f"{peaks['lesions']:.0f} ({peaks['lesions'] / series_mb:.1f}x the series in float32, "
        f"{series_mb:.0f} MB), body {peaks['body']:.0f} ({peaks['body'] / series_mb:.1f}x)"
    )
    print(f"last region recorded: {side['Provenance']['fit_region']}")


def stage_child(study: str, out: str, repeats: int, threads: int = 1) -> None:
    """In a child: ``fit_cest`` of the first visit on ``threads`` threads (numba and the
    fitting engine; 1: serial); prints JSON."""
    os.cpu_count = lambda: threads  # type: ignore[assignment]
    import numba

    numba.set_num_threads(threads)
    from tumorscope.io import open_study
    from tumorscope.stages.base import SeriesInput
    from tumorscope.stages.cest import CESTOptions, fit_cest

    visit = next(iter(open_study(study).visits()))
    labels = visit.lesions.load_labels() if visit.lesions is not None else None
    inputs = {
        r: SeriesInput.of(s)
        for r, s in visit.series.items()
        if r in ("cest", "wassr", "wasabi") or r.startswith("cest_")
    }

    def run() -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_cest(inputs, out_dir=out, prefix="b_", options=CESTOptions(), lesions=labels)

    run()  # compiled code loaded, caches warm
    load = [_timed(lambda: [s.load() for s in inputs.values()])[1] for _ in range(repeats)]
    runs = [_timed(run)[1] for _ in range(repeats)]
    print(json.dumps({"load": load, "runs": runs, "visit": visit.id}))


def _load_avg() -> float:
    return os.getloadavg()[0]


def compare(study: str, old_src: str, rounds: int, repeats: int, threads: int = 1) -> None:
    """``fit_cest`` of this tree vs ``old_src``: times (alternated children) and maps."""
    import tempfile

    import nibabel as nib

    new_src = str(Path(__file__).resolve().parents[1] / "src")
    with tempfile.TemporaryDirectory() as tmp:
        times: dict[str, list[float]] = {"old": [], "new": []}
        loads: dict[str, list[float]] = {"old": [], "new": []}
        how = "serial one thread" if threads == 1 else f"{threads} threads"
        print(f"fit_cest, {study} first visit, {how}; old = {old_src}")
        print(
            f"{'round':<6}{'tree':<6}{'wall s (each run)':<26}{'CPU s':>8}{'load':>7}{'/ read':>8}"
        )
        for r in range(rounds):
            for name, src in (("old", old_src), ("new", new_src)):
                env = {**os.environ, "PYTHONPATH": src, "TUMORSCOPE_STEP_CONCURRENCY": "1"}
                la = _load_avg()
                res = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--stage-child",
                        study,
                        "--out",
                        f"{tmp}/{name}",
                        "--repeats",
                        str(repeats),
                        "--threads",
                        str(threads),
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                d = json.loads(res.stdout.strip().splitlines()[-1])
                walls = [w for w, _ in d["runs"]]
                times[name] += walls
                loads[name].append(la)
                rd = min(w for w, _ in d["load"])
                print(
                    f"{r:<6}{name:<6}{', '.join(f'{w:.2f}' for w in walls):<26}"
                    f"{min(c for _, c in d['runs']):8.2f}{la:7.2f}{min(walls) / rd:7.1f}x"
                )
        bo, bn = min(times["old"]), min(times["new"])
        mo, mn = float(np.median(times["old"])), float(np.median(times["new"]))
        print(
            f"best old {bo:.2f} s, new {bn:.2f} s: {bo / bn:.2f}x; median old {mo:.2f}, "
            f"new {mn:.2f}: {mo / mn:.2f}x"
        )
        _compare_maps(Path(tmp), study, nib)


def _compare_maps(tmp: Path, study: str, nib: object) -> None:
    from tumorscope.io import open_study

    def img(tree: str, name: str) -> np.ndarray:
        return np.asarray(nib.load(str(tmp / tree / f"b_cest_{name}.nii.gz")).dataobj, float)  # type: ignore[attr-defined]

    status = img("new", "lorentzian_status")
    region = status != 255
    print(f"\nmaps, new vs old (fit region: {int(region.sum())} voxels)")
    print(f"{'map':<28}{'voxels':>8}{'median |d|':>12}{'p99 |d|':>10}{'max |d|':>10}")
    names = ["B0", "MTRasym_3p5ppm", "MTRasym_2ppm"]
    amps = [f"lorentzian_{p}_amp" for p in ("water", "mt", "amide", "amine", "noe")]
    for name in [*names, "lorentzian_B0", *amps]:
        a, b = img("old", name), img("new", name)
        both = np.isfinite(a) & np.isfinite(b)
        if name.startswith("lorentzian"):
            both &= region
        same_nan = np.array_equal(np.isnan(a), np.isnan(b))
        d = np.abs(a - b)[both]
        print(
            f"{name:<28}{int(both.sum()):8d}{np.median(d):12.2e}{np.percentile(d, 99):10.2e}"
            f"{d.max():10.2e}" + ("" if same_nan else "  (NaN masks differ)")
        )
    visit = next(iter(open_study(study).visits()))
    sub, ses = visit.subject_id, visit.id
    truth = Path(study) / "derivatives" / "truth" / f"sub-{sub}" / f"ses-{ses}"
    b0_t = truth / f"sub-{sub}_ses-{ses}_desc-cest_B0_truth.nii.gz"
    amide_t = truth / f"sub-{sub}_ses-{ses}_desc-cest_amide_fraction_truth.nii.gz"
    if b0_t.exists():
        t = np.asarray(nib.load(str(b0_t)).dataobj, float)  # type: ignore[attr-defined]
        print("\nB0 against the phantom's truth (ppm, body voxels)")
        for tree in ("old", "new"):
            e = (img(tree, "B0") - t)[np.isfinite(img(tree, "B0"))]
            print(
                f"  {tree}: bias {np.mean(e):+.4f}, RMS {np.sqrt(np.mean(e**2)):.4f}, "
                f"median |e| {np.median(np.abs(e)):.4f}, p99 |e| {np.percentile(np.abs(e), 99):.4f}"
            )
    if amide_t.exists():
        from scipy.stats import spearmanr

        t = np.asarray(nib.load(str(amide_t)).dataobj, float)  # type: ignore[attr-defined]
        print("amide amplitude vs the amide fraction truth (fit region): Spearman rho")
        for tree in ("old", "new"):
            a = img(tree, "lorentzian_amide_amp")
            ok = region & np.isfinite(a) & np.isfinite(t)
            print(f"  {tree}: {spearmanr(a[ok], t[ok]).statistic:.4f} ({int(ok.sum())} voxels)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--n-loop", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--b0", action="store_true")
    ap.add_argument("--stage", metavar="STUDY", default=None)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--compare", metavar="STUDY", default=None)
    ap.add_argument("--old-src", default="/work/main/src")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="--compare: numba threads (1)")
    ap.add_argument("--stage-child", metavar="STUDY", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.stage_child is not None:
        stage_child(a.stage_child, a.out, a.repeats, a.threads)
        return
    if a.compare is not None:
        compare(a.compare, a.old_src, a.rounds, a.repeats, a.threads)
        return
    if a.accuracy:
        accuracy(a.seed)
        return
    if a.b0:
        bench_b0(a.n, a.seed)
        return
    if a.stage is not None:
        bench_stage(a.stage, a.repeats)
        return
    rng = np.random.default_rng(a.seed)
    y = _spectra(a.n, rng)
    model = CESTLorentzian(OFF)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(y[:50])  # compile / warm up
        fit, t_nb = _timed(lambda: model.fit(y))
        _fit_np, t_np = _timed(lambda: CESTLorentzian(OFF, backend="numpy").fit(y[: a.n_loop * 10]))
    sub = y[: a.n_loop]
    loop_p, t_loop = _timed(lambda: _loop(model, sub))
    assert isinstance(loop_p, np.ndarray)
    n_np = min(a.n, a.n_loop * 10)
    ref_w, ref_c = a.n_loop / t_loop[0], a.n_loop / t_loop[1]
    print(f"{'method':<26}{'vox/s':>10}{'ratio':>9}{'vox/cpu-s':>12}{'ratio':>9}")
    for name, count, (w, c) in (
        ("scipy least_squares loop", a.n_loop, t_loop),
        ("tumorscope numba", a.n, t_nb),
        ("tumorscope numpy", n_np, t_np),
    ):
        print(
            f"{name:<26}{count / w:10.0f}{count / w / ref_w:8.0f}×{count / c:12.0f}{count / c / ref_c:8.0f}×"
        )
    names = model.parameter_names
    ours = np.stack([np.asarray(fit[n], float)[: a.n_loop] for n in names], -1)  # type: ignore[index]
    rss_o = np.sum((lorentzian_signal(OFF, ours) - sub) ** 2, 1)
    rss_l = np.sum((lorentzian_signal(OFF, loop_p) - sub) ** 2, 1)
    ia, ib = names.index("amide_amp"), names.index("B0")
    print(
        f"agreement on {a.n_loop} voxels: median |Δ amide_amp| "
        f"{np.median(np.abs(ours[:, ia] - loop_p[:, ia])):.2e}, median |Δ B0| "
        f"{np.median(np.abs(ours[:, ib] - loop_p[:, ib])):.2e} ppm; RSS within 1 %: "
        f"{np.mean(np.abs(rss_o - rss_l) <= 0.01 * rss_l):.1%}; ours lower: "
        f"{np.mean(rss_o < rss_l * 0.99):.1%}, loop lower: {np.mean(rss_l < rss_o * 0.99):.1%}"
    )


if __name__ == "__main__":
    main()
