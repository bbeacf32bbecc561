"""Small NIfTI files for the command tests: write one (with its sidecar), read a map back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tumorscope.volume import Volume

#: 2 mm isotropic voxels
AFF = np.diag([2.0, 2.0, 2.0, 1.0])


def write_nifti(path: Path, data: np.ndarray, sidecar: dict | None = None) -> Path:
    """``data`` as float32 NIfTI on :data:`AFF`, with a JSON sidecar when given."""
    Volume(np.asarray(data, dtype=np.float32), AFF).to_nifti(path)
    if sidecar is not None:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return path


def read_map(path: Path) -> np.ndarray:
    """A map a command wrote, as float32."""
    return Volume.from_nifti(path).data
