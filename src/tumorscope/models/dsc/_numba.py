"""Compiled oSVD threshold search (numba): one voxel per iteration of a parallel loop.

Same algorithm and results as the numpy path of :meth:`DSC._osvd` (tested): the residue at
the highest candidate rank is given; lower ranks subtract components one block at a time and
the oscillation index (Wu 2003) is evaluated at each distinct candidate rank.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True, fastmath=False)
def osvd_search(
    k: np.ndarray,
    coef: np.ndarray,
    Vt: np.ndarray,
    ranks: np.ndarray,
    oi_max: float,
) -> np.ndarray:  # pragma: no cover - compiled
    """In place: ``k (n, L)`` at rank ``ranks[0]`` becomes the residue at the first rank
    (in the order given, decreasing) whose oscillation index is ``≤ oi_max`` (else the last).
    Returns the index into ``ranks`` chosen per voxel."""
    n, L = k.shape
    out = np.empty(n, np.int64)
    for v in numba.prange(n):
        prev = ranks[0]
        chosen = ranks.size - 1
        for j in range(ranks.size):
            r = ranks[j]
            for c in range(r, prev):
                a = coef[v, c]
                for t in range(L):
                    k[v, t] -= a * Vt[c, t]
            prev = r
            kmax = k[v, 0]
            for t in range(1, L):
                if k[v, t] > kmax:
                    kmax = k[v, t]
            if kmax > 0:
                d2 = 0.0
                for t in range(2, L):
                    d2 += abs(k[v, t] - 2.0 * k[v, t - 1] + k[v, t - 2])
                oi = d2 / (L * kmax)
            else:
                oi = 0.0
            if oi <= oi_max:
                chosen = j
                break
        out[v] = chosen
    return out
