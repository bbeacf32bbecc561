"""MR elastography: from wave images to shear-modulus maps (see ``docs/mre.md``).

* :mod:`.waves`: phase unwrapping (Laplacian, or scikit-image), the temporal first harmonic,
  phase → displacement;
* :mod:`.inversion`: direct algebraic Helmholtz inversion (:func:`stiffness`,
  :func:`direct_inversion`) and the multi-frequency MDEV inversion (:func:`mdev`), giving
  ``|G*|`` (kPa), the phase angle φ (rad) and a confidence mask.

MRE inversion is a spatial operation (a Laplacian over neighbouring voxels), not a per-voxel
signal model, so it is a set of functions on arrays and not a registered
:class:`~tumorscope.models.base.Model`; it reads and writes no files.
"""

from __future__ import annotations

from .inversion import (
    DEFAULT_SMOOTH_VOXELS,
    ElastogramResult,
    direct_inversion,
    laplacian,
    mdev,
    stiffness,
)
from .waves import first_harmonic, laplacian_unwrap, phase_to_displacement, unwrap_phase

__all__ = [
    "DEFAULT_SMOOTH_VOXELS",
    "ElastogramResult",
    "direct_inversion",
    "first_harmonic",
    "laplacian",
    "laplacian_unwrap",
    "mdev",
    "phase_to_displacement",
    "stiffness",
    "unwrap_phase",
]
