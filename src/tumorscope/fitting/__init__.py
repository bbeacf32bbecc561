"""tumorscope.fitting: the batched fitting engine every model uses.

See ``docs/fitting.md``. Public entry points:

* :class:`FitStatus`, :func:`summarize_status` (per-voxel status codes);
* :func:`levenberg_marquardt`, :class:`LMOptions`, :class:`LMResult` (batched bounded LM);
* :func:`weighted_lls` (batched weighted linear least squares);
* :func:`grid_search` (grid initial guesses);
* :func:`fit_blocks`, :func:`validate_inputs`, :class:`BlockFit` (masks, chunks, executors);
* :func:`varpro_log`, :func:`project` (variable projection over one non-linear parameter),
  :func:`gauss_newton_polish`, :func:`stderr_from_jacobian`.
"""

from __future__ import annotations

from .engine import DEFAULT_CHUNK_VOXELS, BlockFit, FlatFit, fit_blocks, validate_inputs
from .grid import grid_search
from .linear import LinearResult, weighted_lls
from .lm import LMOptions, LMResult, levenberg_marquardt
from .polish import gauss_newton_polish
from .status import FitStatus, summarize_counts, summarize_status
from .uncertainty import stderr_from_jacobian
from .varpro import project, varpro_log

__all__ = [
    "DEFAULT_CHUNK_VOXELS",
    "BlockFit",
    "FitStatus",
    "FlatFit",
    "LMOptions",
    "LMResult",
    "LinearResult",
    "fit_blocks",
    "gauss_newton_polish",
    "grid_search",
    "levenberg_marquardt",
    "project",
    "stderr_from_jacobian",
    "summarize_counts",
    "summarize_status",
    "validate_inputs",
    "varpro_log",
    "weighted_lls",
]
