"""The PET, metabolic and iron steps on one visit of the large phantom: new path against old.

Reads the baseline visit of a large phantom (``tumorscope phantom --size large``, 128 × 128 ×
30; ``--study``, or written here) and times, in one process, each fast path against the code
it replaced (kept as the reference of the tests) on the same data, best of ``--repeats``,
alternating the order:

``pet``
    ``stages.pet.pet_uptake`` (SUV/SUL/SUVbsa maps, liver reference, per-lesion SULpeak, MTV,
    TLG, Parquet table) with the automatic liver-sphere search as it is (FFT screening on
    the candidates' box + exact re-summation of the best) against the same stage with the
    old search (``_most_homogeneous_reference``: three ``scipy.ndimage.correlate`` of a 3 cm
    sphere over the whole volume). The liver search alone too. Checks the same centre.
``hp13c``
    ``PyruvateLactate.fit`` on the visit's 13C series, compiled engine (numba fixed point)
    against the numpy engine. Checks the same maps.
``mrs``
    ``stages.metabolic.fit_mrs`` (the SVS fit and its 25 maps moved onto the tumour grid)
    with the one nearest-neighbour index map against moving every map with ``resample``.
    Checks the same rows.
``iron``
    ``stages.iron.iron_maps`` fitting the post-ferumoxytol T2* only where the pre-contrast
    fit converged and the first echo is above 3σ, against the whole series (the old
    behaviour: no pre-contrast status given to the fit). Checks the same ΔR2* at every fitted
    voxel and that every lesion voxel is fitted. The pre-contrast T2* fit is run first,
    untimed.

Every library is imported and every numba kernel compiled before timing (a warm-up call).
Prints the load average, times (s) and ratios old / new.

Run::

    python benchmarks/bench_petmet.py [--study /work/large-study] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _pair(
    name: str, new: Callable[[], Any], old: Callable[[], Any], repeats: int
) -> tuple[Any, Any]:
    """Times of new and old, alternated (new first on even rounds), best of ``repeats``."""
    t_new, t_old = float("inf"), float("inf")
    r_new = r_old = None
    for r in range(repeats):
        order = [("new", new), ("old", old)] if r % 2 == 0 else [("old", old), ("new", new)]
        for which, fn in order:
            t = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t
            if which == "new":
                t_new, r_new = min(t_new, dt), out
            else:
                t_old, r_old = min(t_old, dt), out
    print(
        f"{name:<34} new {t_new:7.3f} s   old {t_old:7.3f} s   old/new {t_old / t_new:7.1f}×"
        f"   (load {os.getloadavg()[0]:.1f})"
    )
    return r_new, r_old


def bench_pet(visit: Any, tmp: Path, repeats: int) -> None:
    from tumorscope.models.pet import reference
    from tumorscope.stages.base import SeriesInput
    from tumorscope.stages.pet import pet_uptake

    s, les = visit.series, visit.lesions
    labels = les.load_labels()
    ids = {r.label: r.lesion_id for r in les.table}
    liver, blood = s["pet_liver"].load(), s["pet_bloodpool"].load()

    def run(out: str) -> Any:
        return pet_uptake(
            SeriesInput.of(s["pet"]),
            labels=labels,
            lesion_ids=ids,
            liver=liver,
            blood_pool=blood,
            out_dir=tmp / out,
            prefix="b_",
            keys={"subject": "001", "visit": "01"},
        ).rows["pet"]

    fast = reference._most_homogeneous
    run("warm")

    def old() -> Any:
        reference._most_homogeneous = reference._most_homogeneous_reference
        try:
            return run("old")
        finally:
            reference._most_homogeneous = fast

    new_rows, old_rows = _pair("pet step (pet_uptake)", lambda: run("new"), old, repeats)
    assert new_rows == old_rows, "the PET tables differ"
    # the search alone, on the visit's SUL (up to a factor: the search is scale-free)
    vol = s["pet"].load()
    img = np.asarray(vol.data, dtype=np.float64)
    m = np.asarray(liver.data) > 0
    from scipy import ndimage

    r = 15.0
    vox = tuple(float(v) for v in vol.voxel_sizes)
    dist = ndimage.distance_transform_edt(m, sampling=vox)
    world_x = (vol.affine @ np.vstack([*np.indices(m.shape).reshape(3, -1), np.ones(m.size)]))[0]
    cand = (dist >= r) & (world_x.reshape(m.shape) >= np.median(world_x.reshape(m.shape)[m]))
    ball = reference.sphere_mask(
        tuple(2 * int(np.ceil(r / v)) + 1 for v in vox),
        tuple(float(np.ceil(r / v)) for v in vox),
        r,
        vox,
    )
    a, b = _pair(
        f"liver 3 cm sphere search ({int(cand.sum()):,} centres)",
        lambda: fast(img, m, cand, ball),
        lambda: reference._most_homogeneous_reference(img, m, cand, ball),
        repeats,
    )
    assert a == b, (a, b)
    print(f"{'':<34} same centre {a}; tables identical")


def bench_hp13c(visit: Any, repeats: int) -> None:
    from tumorscope.errors import TumorscopeWarning
    from tumorscope.io.bids import read_sidecar
    from tumorscope.models.metabolic import PyruvateLactate
    from tumorscope.stages.metabolic import read_hp13c_protocol
    from tumorscope.volume import Volume

    pp, lp = visit.series["hp13c_pyruvate"].path, visit.series["hp13c_lactate"].path
    pv, lv = Volume.from_nifti(pp), Volume.from_nifti(lp)
    t, fa_p = read_hp13c_protocol(pv, read_sidecar(pp), str(pp))
    _, fa_l = read_hp13c_protocol(lv, read_sidecar(lp), str(lp))
    sig = np.stack([pv.data, lv.data], axis=-2).astype(np.float64)
    models = {e: PyruvateLactate(t, np.vstack([fa_p, fa_l]), engine=e) for e in ("numba", "numpy")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        models["numba"].fit(sig[:2, :2])  # compile / load the cache
        new, old = _pair(
            f"13C kPL fit ({sig.shape[0] * sig.shape[1] * sig.shape[2]:,} voxels)",
            lambda: models["numba"].fit(sig),
            lambda: models["numpy"].fit(sig),
            repeats,
        )
    worst = max(
        float(np.nanmax(np.abs(new[k] - old[k]) / np.maximum(np.abs(old[k]), 1e-30)))
        for k in ("kPL", "L0", "AUC_ratio", "SNR_lactate")
    )
    assert np.array_equal(new.status, old.status)
    print(f"{'':<34} same status; largest relative difference of the maps {worst:.1e}")


def bench_mrs(visit: Any, tmp: Path, repeats: int) -> None:
    from tumorscope.stages import metabolic

    s, les = visit.series, visit.lesions
    labels = les.load_labels()
    ids = {r.label: r.lesion_id for r in les.table}

    def run(out: str) -> Any:
        return metabolic.fit_mrs(
            s["mrs"].path,
            water=s["mrs_water"].path,
            out_dir=tmp / out,
            prefix="b_",
            onto=labels,
            onto_role="anatomical",
            labels=labels,
            lesion_ids=ids,
            keys={"subject": "001", "visit": "01"},
        ).rows

    fast = metabolic._nearest_lookup
    run("warm")

    def old() -> Any:
        metabolic._nearest_lookup = lambda native, onto: None  # map by map
        try:
            return run("old")
        finally:
            metabolic._nearest_lookup = fast

    new, prev = _pair("MRS fit + maps on the tumour grid", lambda: run("new"), old, repeats)
    assert new == prev, "the MRS rows differ"
    print(f"{'':<34} rows identical ({len(new['measurements'])})")


def bench_iron(visit: Any, tmp: Path, repeats: int) -> None:
    from tumorscope.models.relaxometry import T2Star
    from tumorscope.stages.base import SeriesInput
    from tumorscope.stages.fit import fit_volume
    from tumorscope.stages.iron import iron_maps
    from tumorscope.volume import Volume

    pre_series = SeriesInput.of(visit.series["t2star"])
    assert pre_series.protocol is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre = fit_volume(
            T2Star.from_protocol(pre_series.protocol),
            pre_series.load(),
            out_dir=tmp / "pre",
            prefix="pre_",
        )
        post = SeriesInput.of(visit.series["t2star_ferumoxytol"])

        def run(out: str, status: Any) -> Path:
            iron_maps(post, pre.files["R2star"], status, out_dir=tmp / out, prefix="b_")
            return tmp / out / "b_iron_dR2star.nii.gz"

        run("warm", pre.files["status"])
        a, b = _pair(
            "iron step (iron_maps)",
            lambda: run("new", pre.files["status"]),
            lambda: run("old", None),
            repeats,
        )
    pre_ok = Volume.from_nifti(pre.files["status"], dtype=np.uint8).data == 0
    da, db = Volume.from_nifti(a).data, Volume.from_nifti(b).data
    fitted = np.isfinite(da)
    assert np.array_equal(da[fitted], db[fitted])
    lesions = visit.lesions.load_labels().data > 0
    assert fitted[lesions].all()
    print(
        f"{'':<34} same ΔR2* at the {int(fitted.sum()):,} fitted voxels (every lesion voxel) "
        f"of {fitted.size:,}; pre-contrast converged in {int(pre_ok.sum()):,}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", type=Path, help="a large phantom written before")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sections", default="pet,hp13c,mrs,iron")
    args = ap.parse_args()
    from tumorscope.io import open_study

    with tempfile.TemporaryDirectory(prefix="bench_petmet_") as d:
        tmp = Path(d)
        study = args.study
        if study is None:
            from tumorscope.phantom import make_study

            t = time.perf_counter()
            study = make_study(tmp / "study", size="large", seed=0, n_subjects=1)
            print(f"large phantom written in {time.perf_counter() - t:.1f} s")
        visit = next(iter(open_study(study).visits()))
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()}")
        sections = args.sections.split(",")
        if "pet" in sections:
            bench_pet(visit, tmp, args.repeats)
        if "hp13c" in sections:
            bench_hp13c(visit, args.repeats)
        if "mrs" in sections:
            bench_mrs(visit, tmp, args.repeats)
        if "iron" in sections:
            bench_iron(visit, tmp, args.repeats)


if __name__ == "__main__":
    main()
