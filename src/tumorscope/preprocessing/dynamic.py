"""Dynamic (DCE) series: properties of the time course that the acquisition does not record.

:func:`baseline_frames` estimates how many frames precede the contrast arrival, which DICOM
does not store; the DICOM importer uses it when the user does not give the number.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["baseline_frames"]


def baseline_frames(data: npt.ArrayLike) -> int:
    """Number of frames before the contrast arrives, from the most enhancing voxels.

    The curve is the mean over the 0.5 % of voxels (at least one) with the largest enhancement
    (peak − first frame); the contrast arrives at the first frame that rises above the first
    frame by more than 10 % of that curve's peak enhancement.

    Parameters
    ----------
    data : array_like, shape (..., T)
        Signal of a dynamic series, time on the last axis (``T`` ≥ 2).

    Returns
    -------
    int
        Frames before the arrival, between 1 and ``T - 1`` (1 when nothing enhances).

    Examples
    --------
    >>> import numpy as np
    >>> data = np.full((4, 4, 1, 10), 100.0)
    >>> data[0, 0, 0, 6:] = 500.0  # one voxel enhances from frame 6
    >>> baseline_frames(data)
    6
    """
    arr = np.asarray(data)
    flat = arr.reshape(-1, arr.shape[-1]).astype(np.float64)
    enh = flat.max(axis=1) - flat[:, 0]
    n = max(1, int(0.005 * flat.shape[0]))
    top = np.argsort(enh)[-n:]
    curve = flat[top].mean(axis=0)
    base = curve[0]
    peak = curve.max()
    if peak <= base:
        return 1
    above = np.flatnonzero(curve > base + 0.1 * (peak - base))
    nb = int(above[0]) if above.size else 1
    return int(min(max(nb, 1), arr.shape[-1] - 1))
