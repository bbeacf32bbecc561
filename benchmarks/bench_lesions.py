"""Lesion geometry and mask resampling against peers, in one run.

* ``tumorscope.lesions.geometry.measure`` (all five measures) against MIRP's IBSI
  morphology (``morph_diam``, ``morph_vol_approx``) on rotated ellipsoids of growing size
  with 0.8 × 0.8 × 2 mm voxels: time per lesion, the ratio, and the error of the maximum 3-D
  diameter against the analytic 2·a.
* ``tumorscope.preprocessing.resample_mask`` (nearest, the default, and ``method="majority"``)
  against SimpleITK nearest-neighbour resampling of the same label map from a 0.5 mm grid onto a
  2 × 2 × 4 mm grid: time and the volume error against the analytic ellipsoid volume.

Run::

    python benchmarks/bench_lesions.py [--sizes 10 20 40]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from scipy.spatial.transform import Rotation

from tumorscope.lesions.geometry import measure
from tumorscope.lesions.radiomics import RadiomicsSettings, radiomics_features
from tumorscope.preprocessing import resample_mask
from tumorscope.preprocessing.registration import _to_sitk
from tumorscope.volume import Volume


def _grid(
    spacing: tuple[float, float, float], extent_mm: float
) -> tuple[tuple[int, ...], np.ndarray]:
    shape = tuple(int(np.ceil(extent_mm / s)) | 1 for s in spacing)
    a = np.eye(4)
    a[:3, :3] = np.diag(spacing)
    a[:3, 3] = -(np.asarray(spacing) * (np.asarray(shape) - 1) / 2)
    return shape, a


def _ellipsoid(
    shape: tuple[int, ...], aff: np.ndarray, semi: np.ndarray, rot: np.ndarray
) -> np.ndarray:
    ijk = np.indices(shape).reshape(3, -1).T.astype(float)
    local = (ijk @ aff[:3, :3].T + aff[:3, 3]) @ rot
    return (((local / semi) ** 2).sum(axis=1) <= 1).reshape(shape)


def bench_geometry(sizes: list[float]) -> None:
    print("geometry: tumorscope measure() (5 measures) vs MIRP's whole IBSI morphology family")
    print("(MIRP through our wrapper, temporary NIfTI included: a cost comparison, not a race)")
    print(
        f"{'a (mm)':>7} {'voxels':>8} {'ours (s)':>9} {'MIRP (s)':>9} {'ratio':>6} "
        f"{'err ours (mm)':>14} {'err MIRP (mm)':>14}"
    )
    rot = Rotation.from_euler("xyz", [20, 35, 10], degrees=True).as_matrix()
    s = RadiomicsSettings(n_bins=8, spacing_mm=None, families=("morphology",))
    warm = np.zeros((5, 5, 5), bool)
    warm[1:4, 1:4, 1:4] = True
    radiomics_features(Volume(warm.astype(np.float32), np.eye(4)), warm, settings=s)
    for a in sizes:
        semi = np.array([a, 0.6 * a, 0.4 * a])
        shape, aff = _grid((0.8, 0.8, 2.0), 2.4 * a)
        m = _ellipsoid(shape, aff, semi, rot)
        t0 = time.perf_counter()
        g = measure(m, aff)
        t_ours = time.perf_counter() - t0
        img = Volume(np.zeros(shape, np.float32) + m, aff)
        t0 = time.perf_counter()
        f = radiomics_features(img, m, settings=s).set_index("feature")["value"]
        t_mirp = time.perf_counter() - t0
        print(
            f"{a:7.0f} {int(m.sum()):8d} {t_ours:9.3f} {t_mirp:9.3f} {t_mirp / t_ours:6.1f} "
            f"{g['max_3d_diameter_mm'] - 2 * a:14.2f} {f['morph_diam'] - 2 * a:14.2f}"
        )


def bench_resample() -> None:
    import SimpleITK as sitk

    print("\nmask resampling 0.5 mm -> 2 x 2 x 4 mm: ours (nearest, majority) vs SimpleITK")
    semi = np.array([14.0, 9.0, 6.0])
    rot = Rotation.from_euler("xyz", [15, 25, 40], degrees=True).as_matrix()
    fshape, faff = _grid((0.5, 0.5, 0.5), 40.0)
    fine = Volume(_ellipsoid(fshape, faff, semi, rot).astype(np.int32), faff)
    cshape, caff = _grid((2.0, 2.0, 4.0), 40.0)
    coarse = Volume(np.zeros(cshape, np.float32), caff)
    truth_ml = 4 / 3 * np.pi * semi.prod() / 1000
    t0 = time.perf_counter()
    ours = resample_mask(fine, coarse)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    vote = resample_mask(fine, coarse, method="majority")
    t_vote = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = _to_sitk(coarse, np.float32)
    out = sitk.Resample(
        _to_sitk(fine, np.uint8), ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0
    )
    nn = sitk.GetArrayFromImage(out).transpose(2, 1, 0)
    t_sitk = time.perf_counter() - t0
    vox = 2 * 2 * 4 / 1000
    print(f"{'method':>22} {'time (s)':>9} {'volume error':>13}")
    print(f"{'tumorscope nearest':>22} {t_ours:9.3f} {ours.data.sum() * vox / truth_ml - 1:13.2%}")
    print(f"{'tumorscope majority':>22} {t_vote:9.3f} {vote.data.sum() * vox / truth_ml - 1:13.2%}")
    print(f"{'SimpleITK nearest':>22} {t_sitk:9.3f} {nn.sum() * vox / truth_ml - 1:13.2%}")
    print(f"time ratio (ours nearest / SimpleITK): {t_ours / t_sitk:.1f}")
    print(f"label maps identical to SimpleITK nearest: {np.array_equal(ours.data, nn)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[10.0, 20.0, 40.0])
    args = p.parse_args()
    logging.getLogger().setLevel(logging.WARNING)
    bench_geometry(args.sizes)
    bench_resample()


if __name__ == "__main__":
    main()
