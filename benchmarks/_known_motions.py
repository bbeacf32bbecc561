"""Eight seeded rigid motions of a smooth scene: the known answers that
``bench_align.py`` and ``tests/preprocessing/test_rigid.py`` register against (one copy).

The scene is a sum of four Gaussian blobs (world mm); the fixed image samples it on an axial
2×2×4 mm grid, the moving image on a grid turned 5° about z, through the known motion
(±6° about each axis on every other case, ±6 mm). The tests load this file by path (it
imports only numpy, scipy and tumorscope).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from tumorscope.volume import Volume

CENTRES = np.array([[0.0, 0.0, 0.0], [14.0, -6.0, 4.0], [-10.0, 12.0, -6.0], [4.0, 16.0, 8.0]])
WIDTHS = np.array([10.0, 5.0, 7.0, 4.0])
HEIGHTS = np.array([1.0, 0.8, -0.6, 1.2])


def scene(shape: tuple[int, int, int], affine: np.ndarray, world: np.ndarray) -> np.ndarray:
    """The scene sampled at the voxels of ``affine`` moved by ``world`` (4×4)."""
    ijk = np.indices(shape).reshape(3, -1).T.astype(float)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    xyz = xyz @ world[:3, :3].T + world[:3, 3]
    d2 = ((xyz[:, None, :] - CENTRES[None]) ** 2).sum(-1)
    return ((HEIGHTS * np.exp(-d2 / (2 * WIDTHS**2))).sum(-1) * 1000.0).reshape(shape)


def affine(shape: tuple[int, int, int], rot: np.ndarray) -> np.ndarray:
    """A centred 2×2×4 mm grid turned by ``rot``."""
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag((2.0, 2.0, 4.0))
    a[:3, 3] = -(a[:3, :3] @ ((np.asarray(shape) - 1) / 2))
    return a


def cases(n: int = 8) -> list[tuple[Volume, Volume, np.ndarray]]:
    """``(fixed, moving, truth)`` for the first ``n`` motions (seed 0)."""
    shape = (48, 48, 16)
    rng = np.random.default_rng(0)
    fixed_aff = affine(shape, np.eye(3))
    moving_aff = affine(shape, Rotation.from_euler("z", 5, degrees=True).as_matrix())
    out = []
    for k in range(n):
        truth = np.eye(4)
        angles = rng.uniform(-6, 6, 3) if k % 2 == 0 else np.zeros(3)
        truth[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
        truth[:3, 3] = rng.uniform(-6, 6, 3)
        fixed = Volume(scene(shape, fixed_aff, np.eye(4)).astype(np.float32), fixed_aff)
        moving = Volume(
            scene(shape, moving_aff, np.linalg.inv(truth)).astype(np.float32), moving_aff
        )
        out.append((fixed, moving, truth))
    return out
