"""MRE direct inversion against a plain per-slice numpy implementation, in one run.

The same in-plane plane shear wave (3 components, noise 2 % of the amplitude, |G*| 3 kPa at
60 Hz, 2 mm voxels) is inverted by

* ``tumorscope.models.mre.direct_inversion`` with the in-plane Laplacian
  (``laplacian_axes=(0, 1)``), the whole volume at once, and with the 3-D Laplacian;
* a plain per-slice numpy loop of the same algorithm (Gaussian smoothing, 4th-order
  in-plane Laplacian by ``np.roll``, 3×3 least-squares window by explicit shifts), what a
  script written slice by slice does;
* a per-slice loop of the textbook version (no smoothing, ``np.gradient`` twice, voxel-wise
  ratio), for the accuracy it gives up.

It prints voxels per second, the speed ratio to the per-slice loop, and the median relative
|G*| error against truth. Run::

    python benchmarks/bench_mre.py [--n 96] [--slices 48] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from tumorscope.models.mre import direct_inversion

H_MM, F_HZ, G_KPA, RHO = 2.0, 60.0, 3.0, 1000.0


def field(n: int, nz: int, rng: np.random.Generator) -> np.ndarray:
    x = np.arange(n) * H_MM * 1e-3
    z = np.arange(nz) * H_MM * 1e-3
    X, Y, _ = np.meshgrid(x, x, z, indexing="ij")
    k = 2 * np.pi * F_HZ * np.sqrt(RHO / (G_KPA * 1e3))
    d = np.array([0.6, 0.8])
    pol = np.array([-0.8, 0.6, 0.3])
    u = np.exp(1j * k * (d[0] * X + d[1] * Y))[..., None] * pol
    noise = rng.standard_normal(u.shape) + 1j * rng.standard_normal(u.shape)
    return (u + 0.02 * noise / np.sqrt(2)) * 1e-6


def per_slice_same(u: np.ndarray) -> np.ndarray:
    """The same algorithm, slice by slice, in plain numpy (+ scipy's Gaussian)."""
    h = H_MM * 1e-3
    sig = 1.5
    out = np.full(u.shape[:3], np.nan)
    w2 = (2 * np.pi * F_HZ) ** 2
    for z in range(u.shape[2]):
        num = np.zeros(u.shape[:2], complex)
        den = np.zeros(u.shape[:2])
        for c in range(u.shape[3]):
            s = u[:, :, z, c]
            s = ndimage.gaussian_filter(s.real, sig, truncate=3.0) + 1j * ndimage.gaussian_filter(
                s.imag, sig, truncate=3.0
            )
            lap = np.zeros_like(s)
            for ax in (0, 1):
                lap += (
                    -np.roll(s, 2, ax)
                    + 16 * np.roll(s, 1, ax)
                    - 30 * s
                    + 16 * np.roll(s, -1, ax)
                    - np.roll(s, -2, ax)
                ) / (12 * h * h)
            n_ = np.conj(lap) * s
            d_ = np.abs(lap) ** 2
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    num += np.roll(np.roll(n_, dx, 0), dy, 1)
                    den += np.roll(np.roll(d_, dx, 0), dy, 1)
        g = -RHO * w2 * num / den
        m = 2 + 5 + 1  # stencil + smoothing + window: wrap-around from np.roll
        out[m:-m, m:-m, z] = np.abs(g[m:-m, m:-m]) * 1e-3
    return out


def per_slice_textbook(u: np.ndarray) -> np.ndarray:
    """No smoothing, ``np.gradient`` twice, voxel-wise ratio of the first component."""
    h = H_MM * 1e-3
    out = np.full(u.shape[:3], np.nan)
    w2 = (2 * np.pi * F_HZ) ** 2
    for z in range(u.shape[2]):
        s = u[:, :, z, 0]
        lap = np.gradient(np.gradient(s, h, axis=0), h, axis=0) + np.gradient(
            np.gradient(s, h, axis=1), h, axis=1
        )
        out[2:-2, 2:-2, z] = np.abs(-RHO * w2 * s / lap)[2:-2, 2:-2] * 1e-3
    return out


def _time(fn, repeat: int) -> tuple[float, np.ndarray]:
    best, res = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    assert res is not None
    return best, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--slices", type=int, default=48)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    u = field(a.n, a.slices, np.random.default_rng(0))
    nvox = a.n * a.n * a.slices
    runs = {
        "tumorscope (in-plane Laplacian)": lambda: (
            direct_inversion(u, H_MM, F_HZ, laplacian_axes=(0, 1)).abs_g_kpa
        ),
        "tumorscope (3-D Laplacian)": lambda: direct_inversion(u, H_MM, F_HZ).abs_g_kpa,
        "per-slice numpy, same algorithm": lambda: per_slice_same(u),
        "per-slice numpy, textbook": lambda: per_slice_textbook(u),
    }
    times = {}
    print(f"{nvox} voxels ({a.n}x{a.n}x{a.slices}), 3 components, best of {a.repeat}")
    for name, fn in runs.items():
        t, g = _time(fn, a.repeat)
        times[name] = t
        err = np.abs(g[np.isfinite(g)] / G_KPA - 1)
        print(
            f"{name:34s} {nvox / t:12.0f} vox/s  {t:7.3f} s  median |err| {np.median(err):6.3f}"
            f"  estimated {np.isfinite(g).mean():.2f}"
        )
    peer = times["per-slice numpy, same algorithm"]
    for name in ("tumorscope (in-plane Laplacian)", "tumorscope (3-D Laplacian)"):
        print(f"speed ratio {name} / per-slice numpy (same algorithm): {peer / times[name]:.2f}x")


if __name__ == "__main__":
    main()
