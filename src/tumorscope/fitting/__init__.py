"""tumorscope.fitting: the batched fitting engine every model uses.

See ``docs/fitting.md``. Public entry points:

* :class:`FitStatus`, :func:`summarize_status` (per-voxel status codes);
* :func:`levenberg_marquardt`, :class:`LMOptions`, :class:`LMResult` (batched bounded LM);
* :func:`weighted_lls` (batched weighted linear least squares);
* :func:`grid_search` (grid initial guesses);
* :func:`fit_blocks`, :func:`validate_inputs`, :class:`BlockFit` (masks, chunks, executors).
"""

from __future__ import annotations

from .engine import DEFAULT_CHUNK_VOXELS, BlockFit, FlatFit, fit_blocks, validate_inputs
from .grid import grid_search
from .linear import LinearResult, weighted_lls
from .lm import LMOptions, LMResult, levenberg_marquardt
from .status import FitStatus, summarize_counts, summarize_status

__all__ = [
    "DEFAULT_CHUNK_VOXELS",
    "BlockFit",
    "FitStatus",
    "FlatFit",
    "LMOptions",
    "LMResult",
    "LinearResult",
    "fit_blocks",
    "grid_search",
    "levenberg_marquardt",
    "summarize_counts",
    "summarize_status",
    "validate_inputs",
    "weighted_lls",
]
