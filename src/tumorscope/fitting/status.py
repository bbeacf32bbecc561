"""Per-voxel fit status codes.

Every fit returns a ``status`` map (``uint8``, shaped like the data minus its last axis) holding
one :class:`FitStatus` per voxel. Codes are ordered by how much a value can be trusted, so
``status <= FitStatus.AT_BOUND`` selects every voxel that has numbers.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

__all__ = ["FitStatus", "summarize_counts", "summarize_status"]


class FitStatus(IntEnum):
    """Outcome of the fit of one voxel.

    Attributes
    ----------
    CONVERGED : 0
        The solver met its tolerance; parameters strictly inside their bounds.
    MAX_ITER : 1
        The iteration limit was reached first; the parameters are the best point found.
    AT_BOUND : 2
        Converged with at least one parameter on a bound (e.g. ``f = 0`` or ``K`` clipped to
        its physical range); the value is the constrained optimum.
    INVALID_INPUT : 3
        Not fitted because the data of the voxel are unusable (NaN or infinite values,
        negative signal, non-positive baseline, all zeros). Maps are NaN.
    FAILED : 4
        The solver produced non-finite values (singular problem). Maps are NaN.
    NOT_FITTED : 255
        Outside the mask. Maps are NaN.
    """

    CONVERGED = 0
    MAX_ITER = 1
    AT_BOUND = 2
    INVALID_INPUT = 3
    FAILED = 4
    NOT_FITTED = 255


_PHRASES = {
    FitStatus.MAX_ITER: "hit the iteration limit",
    FitStatus.AT_BOUND: "hit bounds",
    FitStatus.INVALID_INPUT: "had invalid input (NaN, negative or zero signal)",
    FitStatus.FAILED: "failed (non-finite solution)",
}


def summarize_status(status: np.ndarray) -> str | None:
    """One sentence summarising non-converged voxels, or None if all fitted voxels converged.

    Parameters
    ----------
    status : ndarray of uint8
        Status map of a fit (any shape).

    Examples
    --------
    >>> import numpy as np
    >>> summarize_status(np.array([0, 2, 2, 255], np.uint8))
    '2 of 3 voxels hit bounds'
    """
    return summarize_counts(np.bincount(np.asarray(status, dtype=np.uint8).ravel(), minlength=256))


def summarize_counts(counts: np.ndarray) -> str | None:
    """:func:`summarize_status` from per-code counts (``counts[code]``, length 256)."""
    n_fit = int(counts.sum() - counts[FitStatus.NOT_FITTED])
    parts = [
        f"{int(counts[code]):,} of {n_fit:,} voxels {phrase}"
        for code, phrase in _PHRASES.items()
        if counts[code]
    ]
    return "; ".join(parts) if parts else None
