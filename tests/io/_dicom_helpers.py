"""Helpers of the DICOM tests: small integer volumes, and reading back a folder of one series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tumorscope.phantom.dicom import oblique_affine
from tumorscope.volume import Volume


def volume(n: int, *, seed: int = 0, shape: tuple[int, int, int] = (10, 8, 5)) -> Volume:
    """Random integer data (``n`` volumes; 3-D when ``n`` is 1) on an oblique grid."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 1000, (*shape, n)).astype(np.float32)
    return Volume(data if n > 1 else data[..., 0], oblique_affine())


def read_one(folder: Path, **kw: Any) -> Any:
    """Scan a folder that must hold exactly one series, without problems, and read it."""
    from tumorscope.io.dicom import read_series, scan_dicom

    scan = scan_dicom(folder)
    assert not scan.problems, scan.problems
    assert len(scan.series) == 1
    return read_series(scan.series[0], **kw)
