"""Compiled (numba) SPGR signal → concentration: :func:`concentration_rows`.

The arithmetic of :func:`tumorscope.models.dce.signal.signal_to_concentration` (its numpy
path, ``_concentration_rows``) in one pass over the series, voxel chunks on every core: the
mean baseline, ``M0``, then each frame's ``y``, ``E``, ``R1`` and concentration, in float64
whatever the stored dtype, written straight into the result (no float64 copy of the series,
no temporaries of a block). Frames are the outer loop of a chunk, so a series stored frame
after frame (NIfTI's order, which nibabel returns as a Fortran-ordered array) is read and
written contiguously. The same pass says which voxels' whole curve is finite as stored
(``finite``: the DCE stage's fitted voxels), instead of a second pass over the 4-D result.
Voxels without a valid T1 or baseline (status 2 or 3: outside the VFA fit's region, the
background) get NaN curves without a sample being converted: on the large phantom 98 % of
the voxels, whose logarithms were most of the kernel's time.
Status codes and NaN exactly as the numpy path; values within an ulp
or two of it (the baseline mean is summed in order, numpy sums pairwise; the elementary
functions are libm's instead of numpy's), which the tests check.

Imported only when numba is installed.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = ["concentration_rows"]

#: Voxels per chunk (a chunk's frame column is a contiguous run of this many samples).
_CHUNK = 2048

_OK, _ABOVE, _BAD_T1, _BAD_BASELINE, _NEGATIVE = 0, 1, 2, 3, 4


@nb.njit(parallel=True, cache=True, error_model="numpy")
def concentration_rows(s2, t1, alpha, b0, nb_, tr_s, r1, conc2, status, finite):
    """Concentration ``conc2 (N, n)``, status ``status (N,)`` and whether the whole stored
    curve is finite ``finite (N,)`` of the signal rows ``s2 (N, n)`` with pre-contrast T1
    ``t1 (N,)`` (ms) and flip angle ``alpha (N,)`` (rad); baseline frames ``[b0, nb_)``;
    ``tr_s`` (s), ``r1`` (1/(mM s))."""
    n_vox, n = s2.shape
    n_chunks = (n_vox + _CHUNK - 1) // _CHUNK
    for c in nb.prange(n_chunks):
        lo = c * _CHUNK
        hi = min(lo + _CHUNK, n_vox)
        m = hi - lo
        base = np.zeros(m)
        for t in range(b0, nb_):
            for j in range(m):
                base[j] += np.float64(s2[lo + j, t])
        r10 = np.empty(m)
        den = np.empty(m)
        ca = np.empty(m)
        dead = np.empty(m, dtype=np.bool_)
        fin = np.ones(m, dtype=np.bool_)
        code = np.empty(m, dtype=np.uint8)
        count = np.float64(nb_ - b0)
        for j in range(m):
            t1j = np.float64(t1[lo + j])
            b = base[j] / count
            r10[j] = 1e3 / t1j
            bad_t1 = not (math.isfinite(t1j) and t1j > 0.0)
            bad_base = not (math.isfinite(b) and b > 0.0)
            e0 = math.exp(-tr_s * r10[j])
            a = np.float64(alpha[lo + j])
            sa = math.sin(a)
            ca[j] = math.cos(a)
            m0 = b * (1.0 - ca[j] * e0) / (sa * (1.0 - e0))
            den[j] = m0 * sa
            dead[j] = bad_t1 or bad_base
            code[j] = _BAD_T1 if bad_t1 else (_BAD_BASELINE if bad_base else _OK)
        # the voxels with a T1 and a baseline: the others' curves are NaN, their status set
        live = np.empty(m, dtype=np.int64)
        n_live = 0
        for j in range(m):
            if dead[j]:
                fin[j] = False
            else:
                live[n_live] = j
                n_live += 1
        for t in range(n):
            if n_live < m:
                for j in range(m):
                    conc2[lo + j, t] = np.nan
            for k in range(n_live):
                j = live[k]
                sv = np.float64(s2[lo + j, t])
                y = sv / den[j]
                neg = not (math.isfinite(sv) and sv >= 0.0)
                above = y >= 1.0 and not neg
                e = (1.0 - y) / (1.0 - y * ca[j])
                val = (-math.log(e) / tr_s - r10[j]) / r1
                conc2[lo + j, t] = np.nan if (neg or above) else val
                # as stored (a float32 result may overflow where the float64 value did not)
                fin[j] = fin[j] and math.isfinite(conc2[lo + j, t])
                if code[j] == _OK and above:
                    code[j] = _ABOVE
                if neg and code[j] < _BAD_T1:  # negative outranks above, not a bad T1/baseline
                    code[j] = _NEGATIVE
        for j in range(m):
            status[lo + j] = code[j]
            finite[lo + j] = fin[j]
