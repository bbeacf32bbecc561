"""Organ geometry: maximal wall thickness (colitis) and height along S–I (pituitary)."""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.lesions.organs import height_mm, max_wall_thickness_mm, superior_axis


@pytest.mark.parametrize("n", [3, 5, 7])
def test_slab_thickness(n: int) -> None:
    m = np.zeros((20, 20, 20), bool)
    m[5:15, 5:15, 8 : 8 + n] = True
    assert max_wall_thickness_mm(m, (0.8, 0.8, 0.8)) == pytest.approx(n * 0.8)


def test_tube_wall_thickness() -> None:
    # a bowel loop: a tube of outer radius 12, inner 8 voxels (wall 4 voxels of 0.5 mm)
    x, y = np.meshgrid(np.arange(40) - 19.5, np.arange(40) - 19.5, indexing="ij")
    r = np.hypot(x, y)
    wall = ((r > 8) & (r <= 12))[..., None] & np.ones(10, bool)
    assert max_wall_thickness_mm(wall, (0.5, 0.5, 0.5)) == pytest.approx(2.0, abs=0.5)
    assert np.isnan(max_wall_thickness_mm(np.zeros((3, 3, 3), bool), (1, 1, 1)))


def test_height_along_superior_axis() -> None:
    aff = np.diag([0.5, 0.5, 2.0, 1.0])[:, [0, 2, 1, 3]]  # image axis 1 is S-I
    assert superior_axis(aff) == 1
    m = np.zeros((10, 12, 10), bool)
    m[3:6, 2:9, 4:6] = True  # 7 voxels along axis 1
    m[4, 1, 4] = True  # a longer column: 8 voxels
    assert height_mm(m, (0.5, 2.0, 0.5), 1) == pytest.approx(16.0)
    with pytest.raises(DataError):
        height_mm(m[0], (1, 1), 0)
