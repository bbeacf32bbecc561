"""Compiled rigid Mattes-MI registration (numba): the default back-end of ``register_quick``.

What :func:`register_rigid` computes is what SimpleITK's ``ImageRegistrationMethod`` computes
with the settings of :func:`tumorscope.preprocessing.registration.register` (rigid, Mattes
mutual information, random sampling, linear interpolation, regular-step gradient descent,
scales from physical shift, shrink factors 2 and 1 with smoothing σ = 1 and 0 voxels), written
out after the ITK v4 classes [1]_ [2]_ [3]_ [4]_ [5]_, on one thread, in a fixed order (so a
serial and a Dask run give the same transform bit for bit):

Transform (``itk::Euler3DTransform``)
    ``T(x) = R (x − c) + c + t`` with ``R = Rz(γ) Rx(α) Ry(β)``, parameters
    ``p = (α, β, γ, tx, ty, tz)``, in RAS world millimetres (ITK works in LPS: the two
    parametrisations differ by the signs of α, β, tx, ty, which changes nothing below). The
    centre ``c`` is the fixed image's centre of mass and the initial translation the moving
    centre of mass minus the fixed one (``CenteredTransformInitializer``, ``MOMENTS``).
Pyramid (``ImageRegistrationMethodv4``)
    Level 1: both images smoothed with a Gaussian of σ = 1 voxel (every axis, edges
    replicated) and the samples drawn on the fixed grid shrunk by 2 (the *virtual domain*;
    the images themselves are not shrunk); level 2: the images as given, the full fixed grid.
    The number of samples at a level is the sampling fraction times the level's virtual
    voxels; each sample is a random virtual voxel (seeded, without repetition) moved by a
    normal jitter of σ = ⅓ voxel along each axis, as ITK's ``RANDOM`` strategy does ("randomly
    perturb the point within a voxel"). The jitter matters: without it the samples sit on the
    fixed grid, and on images that share a grid (the series of a visit) linear
    interpolation's artefacts pull the optimum off the identity by up to a voxel (median
    0.5 mm on the phantom's pairs instead of 0.08 mm); a uniform ±½-voxel jitter gave
    0.08 mm too, with more registrations beyond 0.25 mm (29 against 11 of 328).
Metric (``MattesMutualInformationImageToImageMetricv4``, B = 50 bins)
    Bins of width ``w = (max − min) / (B − 4)`` (two padding bins each side) over each level
    image's range. Sample ``s`` with fixed value ``f_s`` (linear interpolation at the sample
    point) falls in bin ``φ_s = ⌊(f_s − min_F)/w_F⌋ + 2`` (zero-order Parzen window); the
    moving value ``m_s = M(T(x_s))`` (linear interpolation; samples mapped outside the moving
    image by more than half a voxel are dropped) spreads over the four bins around
    ``τ_s = (m_s − min_M)/w_M + 2`` with the cubic B-spline ``β₃(b − τ_s)``. With
    ``P(φ, b) = Σ_s [φ_s = φ] β₃(b − τ_s) / N`` and its marginals ``P_F``, ``P_M``:
    ``value = −Σ P log(P / (P_F P_M))`` and
    ``∂MI/∂p = −Σ_s Σ_b β₃′(b − τ_s) / (N w_M) · log(P(φ_s, b) / P_M(b)) · ∇M(T(x_s))·∂T/∂p``.
    ``∇M`` is ITK's ``CentralDifferenceImageFunction`` of the linearly interpolated moving
    image (± one voxel), which equals the linear interpolation of the central-difference
    gradient at the voxel centres (zero on the edge voxels): that gradient image is
    computed once per level and read with the value's weights (1.6× faster per sample than
    the 32 voxel reads of computing it at each sample). (The exact gradient of the linear
    interpolant, tried instead, is discontinuous at the voxel faces and made the optimiser
    less robust on the phantom: mean residual 0.12 against 0.095 mm, worst 4.7 against
    0.55 mm over 328 registrations.)
Optimiser (``RegularStepGradientDescentOptimizerv4``, ``RegistrationParameterScalesFromPhysicalShift``)
    Scales ``s_i = (max over the 8 virtual-domain corners of |T_{p+δe_i}(x) − T_p(x)| / δ)²``,
    δ = 0.01, estimated at the start of each level. Each iteration: ``g = (∂MI/∂p) / s``;
    stop if ``|g| <`` 1e-8; if ``g · g_prev < 0`` the relaxation ``r`` is multiplied by the
    relaxation factor; the step ``r · learning rate`` (learning rate 1) below ``min_step``
    stops the level; else ``p += step · g / |g|``. At most ``iterations`` per level; ``r``
    restarts at 1 at each level.

Differences from ITK (``tests/preprocessing/test_rigid.py``, ``benchmarks/bench_align.py``,
``docs/performance.md`` "rigid (session 4)"): the random sample is numpy's (drawn without
repetition), not ITK's Mersenne twister (with repetition), so the two back-ends differ by
their sampling noise (tenths of a millimetre at most on the phantom); the Gaussian is
scipy's sampled kernel (truncated at 4 σ), not ITK's discrete one; ITK's central difference
is zero within one voxel of an edge, ours ramps to zero over that voxel (ITK's rule, tried,
changed nothing measurable); ITK's convergence monitor (a 50-iteration window) is not
implemented (it cannot stop a 40-iteration level). Known motions are recovered as well as
by ITK; on the phantom's pairs of series (truth: no motion) the typical residual is ~0.02 mm
larger than ITK's and the worst case smaller.

The kernels release the GIL (two units of a subject run side by side in a worker's
threads, :mod:`tumorscope.pipeline.execute`); each call owns its arrays, so the results do
not depend on what runs beside it. Imported only when numba is installed.

References
----------
.. [1] Mattes D, Haynor DR, Vesselle H, Lewellen TK, Eubank W. PET-CT image registration in
       the chest using free-form deformations. IEEE Trans Med Imaging 2003;22:120–128.
       doi:10.1109/TMI.2003.809072
.. [2] ITK, ``Modules/Registration/Metricsv4/include/itkMattesMutualInformationImageToImageMetricv4.hxx``.
.. [3] ITK, ``Modules/Numerics/Optimizersv4/include/itkRegularStepGradientDescentOptimizerv4.hxx``.
.. [4] ITK, ``Modules/Registration/Metricsv4/include/itkRegistrationParameterScalesFromPhysicalShift.hxx``
       and ``itkRegistrationParameterScalesFromShiftBase.hxx``.
.. [5] ITK, ``Modules/Registration/RegistrationMethodsv4/include/itkImageRegistrationMethodv4.hxx``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

BINS = 50
_PAD = 2
_DELTA = 0.01  # ITK's m_SmallParameterVariation
_GRAD_TOL = 1e-8
_TINY = 1e-16  # ITK's closeToZero (machine epsilon order)

#: Stop codes of :func:`optimise_level`.
STOPS = {
    0: "maximum number of iterations",
    1: "step too small",
    2: "gradient magnitude tolerance",
    3: "no sample inside the moving image",
}


@nb.njit(cache=True, inline="always")
def _bspline3(x: float) -> float:
    a = abs(x)
    if a < 1.0:
        return (4.0 - 6.0 * a * a + 3.0 * a * a * a) / 6.0
    if a < 2.0:
        b = 2.0 - a
        return b * b * b / 6.0
    return 0.0


@nb.njit(cache=True, inline="always")
def _bspline3_deriv(x: float) -> float:
    a = abs(x)
    if a < 1.0:
        return -2.0 * x + 1.5 * x * a
    if a < 2.0:
        b = 2.0 - a
        return -0.5 * b * b if x > 0 else 0.5 * b * b
    return 0.0


@nb.njit(cache=True)
def _mm3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3×3 matrix product (loops: no BLAS call to compile)."""
    out = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            for k in range(3):
                out[i, j] += a[i, k] * b[k, j]
    return out


@nb.njit(cache=True)
def euler_matrices(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``R = Rz Rx Ry`` of ``p[:3]`` and its three partial derivatives ``dR[k]``."""
    ca, sa = math.cos(p[0]), math.sin(p[0])
    cb, sb = math.cos(p[1]), math.sin(p[1])
    cg, sg = math.cos(p[2]), math.sin(p[2])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]])
    ry = np.array([[cb, 0.0, sb], [0.0, 1.0, 0.0], [-sb, 0.0, cb]])
    rz = np.array([[cg, -sg, 0.0], [sg, cg, 0.0], [0.0, 0.0, 1.0]])
    drx = np.array([[0.0, 0.0, 0.0], [0.0, -sa, -ca], [0.0, ca, -sa]])
    dry = np.array([[-sb, 0.0, cb], [0.0, 0.0, 0.0], [-cb, 0.0, -sb]])
    drz = np.array([[-sg, -cg, 0.0], [cg, -sg, 0.0], [0.0, 0.0, 0.0]])
    d = np.empty((3, 3, 3))
    d[0] = _mm3(_mm3(rz, drx), ry)
    d[1] = _mm3(_mm3(rz, rx), dry)
    d[2] = _mm3(_mm3(drz, rx), ry)
    return _mm3(_mm3(rz, rx), ry), d


@nb.njit(cache=True, inline="always")
def _cd(m: np.ndarray, i: int, j: int, k: int, axis: int) -> float:
    """Central difference of ``m`` along ``axis`` at a voxel (zero on the edge voxels)."""
    if axis == 0:
        if i < 1 or i > m.shape[0] - 2:
            return 0.0
        return 0.5 * (float(m[i + 1, j, k]) - float(m[i - 1, j, k]))
    if axis == 1:
        if j < 1 or j > m.shape[1] - 2:
            return 0.0
        return 0.5 * (float(m[i, j + 1, k]) - float(m[i, j - 1, k]))
    if k < 1 or k > m.shape[2] - 2:
        return 0.0
    return 0.5 * (float(m[i, j, k + 1]) - float(m[i, j, k - 1]))


@nb.njit(cache=True, nogil=True)
def with_gradient(m: np.ndarray) -> np.ndarray:
    """The image and its central-difference index gradient (zero on the edge voxels) on a
    last axis of 4 (value, ∂i, ∂j, ∂k; float32, C order): read at each sample with the
    value's interpolation weights."""
    nx, ny, nz = m.shape
    out = np.zeros((nx, ny, nz, 4), np.float32)
    for i in range(nx):
        for j in range(ny):
            for k in range(nz):
                out[i, j, k, 0] = m[i, j, k]
                out[i, j, k, 1] = _cd(m, i, j, k, 0)
                out[i, j, k, 2] = _cd(m, i, j, k, 1)
                out[i, j, k, 3] = _cd(m, i, j, k, 2)
    return out


@nb.njit(cache=True, nogil=True)
def mattes(
    p: np.ndarray,
    centre: np.ndarray,
    rel: np.ndarray,
    fbin: np.ndarray,
    mov: np.ndarray,
    minv: np.ndarray,
    mmin: float,
    mwidth: float,
    grad: np.ndarray,
) -> tuple[float, int]:
    """Mattes value (−MI) at ``p`` and its gradient ``∂MI/∂p`` into ``grad``.

    ``rel`` holds the sample points minus ``centre`` (world, mm), ``fbin`` their fixed bins,
    ``mov`` the moving level image and its gradient (:func:`with_gradient`), ``minv`` the
    moving world → index matrix (3×4). Returns
    the value and the number of samples inside the moving image.
    """
    n = rel.shape[0]
    nx, ny, nz = mov.shape[0], mov.shape[1], mov.shape[2]
    r, dr = euler_matrices(p)
    # world -> moving index: u = Q (x - c) + q0, Q = L R; world gradient = L^T (index gradient)
    lin = np.empty((3, 3))
    for a in range(3):
        for b in range(3):
            lin[a, b] = minv[a, b]
    q = np.zeros((3, 3))
    q0 = np.empty(3)
    for a in range(3):
        q0[a] = minv[a, 3]
        for b in range(3):
            q0[a] += lin[a, b] * (centre[b] + p[3 + b])
            for c in range(3):
                q[a, b] += lin[a, c] * r[c, b]
    joint = np.zeros((BINS, BINS))
    tau = np.empty(n)
    dmj = np.empty((n, 6))
    ok = np.zeros(n, np.bool_)
    nvalid = 0
    for s in range(n):
        d0, d1, d2 = rel[s, 0], rel[s, 1], rel[s, 2]
        u0 = q[0, 0] * d0 + q[0, 1] * d1 + q[0, 2] * d2 + q0[0]
        u1 = q[1, 0] * d0 + q[1, 1] * d1 + q[1, 2] * d2 + q0[1]
        u2 = q[2, 0] * d0 + q[2, 1] * d1 + q[2, 2] * d2 + q0[2]
        if u0 < -0.5 or u1 < -0.5 or u2 < -0.5 or u0 > nx - 0.5 or u1 > ny - 0.5 or u2 > nz - 0.5:
            continue
        u0 = min(max(u0, 0.0), nx - 1.0)
        u1 = min(max(u1, 0.0), ny - 1.0)
        u2 = min(max(u2, 0.0), nz - 1.0)
        i0 = min(int(u0), nx - 1)
        j0 = min(int(u1), ny - 1)
        k0 = min(int(u2), nz - 1)
        i1 = min(i0 + 1, nx - 1)
        j1 = min(j0 + 1, ny - 1)
        k1 = min(k0 + 1, nz - 1)
        a0, a1, a2 = u0 - i0, u1 - j0, u2 - k0
        b0, b1, b2 = 1.0 - a0, 1.0 - a1, 1.0 - a2
        value = 0.0
        v1 = 0.0
        v2 = 0.0
        v3 = 0.0
        for corner in range(8):
            ii = i1 if corner & 1 else i0
            jj = j1 if corner & 2 else j0
            kk = k1 if corner & 4 else k0
            w = (a0 if corner & 1 else b0) * (a1 if corner & 2 else b1) * (a2 if corner & 4 else b2)
            value += w * mov[ii, jj, kk, 0]
            v1 += w * mov[ii, jj, kk, 1]
            v2 += w * mov[ii, jj, kk, 2]
            v3 += w * mov[ii, jj, kk, 3]
        # world gradient of the moving image
        g0 = lin[0, 0] * v1 + lin[1, 0] * v2 + lin[2, 0] * v3
        g1 = lin[0, 1] * v1 + lin[1, 1] * v2 + lin[2, 1] * v3
        g2 = lin[0, 2] * v1 + lin[1, 2] * v2 + lin[2, 2] * v3
        for k in range(3):
            # ∇M · dR_k (x - c)
            e0 = dr[k, 0, 0] * d0 + dr[k, 0, 1] * d1 + dr[k, 0, 2] * d2
            e1 = dr[k, 1, 0] * d0 + dr[k, 1, 1] * d1 + dr[k, 1, 2] * d2
            e2 = dr[k, 2, 0] * d0 + dr[k, 2, 1] * d1 + dr[k, 2, 2] * d2
            dmj[s, k] = g0 * e0 + g1 * e1 + g2 * e2
        dmj[s, 3] = g0
        dmj[s, 4] = g1
        dmj[s, 5] = g2
        t = (value - mmin) / mwidth + _PAD
        tau[s] = t
        mb = min(max(int(t), _PAD), BINS - _PAD - 1)
        fb = fbin[s]
        for b in range(mb - 1, mb + 3):
            joint[fb, b] += _bspline3(b - t)
        ok[s] = True
        nvalid += 1
    for k in range(6):
        grad[k] = 0.0
    if nvalid == 0:
        return 0.0, 0
    total = 0.0
    for f in range(BINS):
        for b in range(BINS):
            total += joint[f, b]
    pf = np.zeros(BINS)
    pm = np.zeros(BINS)
    for f in range(BINS):
        for b in range(BINS):
            joint[f, b] /= total
            pf[f] += joint[f, b]
            pm[b] += joint[f, b]
    mi = 0.0
    for f in range(BINS):
        for b in range(BINS):
            pj = joint[f, b]
            if pj > _TINY and pm[b] > _TINY:
                ratio = math.log(pj / pm[b])
                if pf[f] > _TINY:
                    mi += pj * (ratio - math.log(pf[f]))
                joint[f, b] = ratio  # the table of log(P / P_M) for the gradient
            else:
                joint[f, b] = 0.0
    scale = 1.0 / (total * mwidth)
    for s in range(n):
        if not ok[s]:
            continue
        t = tau[s]
        mb = min(max(int(t), _PAD), BINS - _PAD - 1)
        fb = fbin[s]
        w = 0.0
        for b in range(mb - 1, mb + 3):
            w -= _bspline3_deriv(b - t) * joint[fb, b]
        w *= scale
        for k in range(6):
            grad[k] += w * dmj[s, k]
    return -mi, nvalid


@nb.njit(cache=True, nogil=True)
def optimise_level(
    p: np.ndarray,
    centre: np.ndarray,
    rel: np.ndarray,
    fbin: np.ndarray,
    mov: np.ndarray,
    minv: np.ndarray,
    mmin: float,
    mwidth: float,
    scales: np.ndarray,
    learning_rate: float,
    min_step: float,
    iterations: int,
    relaxation: float,
) -> tuple[float, int, int]:
    """Regular-step gradient descent of one level, ``p`` updated in place.

    Returns the last metric value, the number of iterations and the stop code
    (:data:`STOPS`).
    """
    grad = np.zeros(6)
    prev = np.zeros(6)
    g = np.zeros(6)
    relax = 1.0
    value = 0.0
    for it in range(iterations):
        value, nvalid = mattes(p, centre, rel, fbin, mov, minv, mmin, mwidth, grad)
        if nvalid == 0:
            return value, it, 3
        mag = 0.0
        dot = 0.0
        for k in range(6):
            g[k] = grad[k] / scales[k]
            mag += g[k] * g[k]
            dot += g[k] * prev[k]
        mag = math.sqrt(mag)
        if mag < _GRAD_TOL:
            return value, it, 2
        if dot < 0.0:
            relax *= relaxation
        step = relax * learning_rate
        if step < min_step:
            return value, it, 1
        for k in range(6):
            p[k] += step * g[k] / mag
            prev[k] = g[k]
    return value, iterations, 0


# ------------------------------------------------------------------------- the driver


#: The pyramid: (shrink factor of the virtual domain, Gaussian σ in voxels) per level.
_LEVELS = ((2, 1.0), (1, 0.0))


def _smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """The level image: Gaussian of σ voxels on every axis, edges replicated (σ = 0: as is)."""
    if not sigma:
        return img
    from scipy import ndimage

    return np.asarray(ndimage.gaussian_filter(img, sigma, mode="nearest"))


def _centre_of_mass(data: np.ndarray, affine: np.ndarray, name: str) -> np.ndarray:
    from ..errors import DataError

    total = float(data.sum(dtype=np.float64))
    if total == 0.0 or not np.isfinite(total):
        raise DataError(f"{name} image has zero total intensity: no centre of mass", field=name)
    idx = np.array(
        [
            float(
                (
                    data.sum(axis=tuple(a for a in range(3) if a != ax), dtype=np.float64)
                    * np.arange(data.shape[ax])
                ).sum()
            )
            for ax in range(3)
        ]
    )
    return np.asarray(affine[:3, :3] @ (idx / total) + affine[:3, 3])


def _scales(p: np.ndarray, centre: np.ndarray, corners: np.ndarray) -> np.ndarray:
    def apply(q: np.ndarray) -> np.ndarray:
        r, _ = euler_matrices(q)
        return np.asarray((corners - centre) @ r.T + centre + q[3:])

    base = apply(p)
    shifts = np.empty(6)
    for i in range(6):
        q = p.copy()
        q[i] += _DELTA
        shifts[i] = np.linalg.norm(apply(q) - base, axis=1).max()
    nonzero = shifts[shifts > 1e-12]
    if nonzero.size:
        shifts[shifts <= 1e-12] = nonzero.min()
    else:
        shifts[:] = _DELTA
    return np.asarray((shifts / _DELTA) ** 2)


@dataclass(frozen=True)
class FixedLevel:
    """What one pyramid level needs of the fixed image: the sample points minus the centre
    (world, mm), their fixed bins and the virtual domain's corners (world, mm)."""

    rel: np.ndarray
    fbin: np.ndarray
    corners: np.ndarray


@dataclass(frozen=True)
class Fixed:
    """The fixed image prepared once for any number of moving images (:func:`prepare_fixed`):
    its centre of mass (the transform's centre) and, per level, its samples. Everything here
    depends on the fixed image, the sampling fraction and the seed only (the random draws
    included), so registering a moving image against it gives the transform
    :func:`register_rigid` gives, bit for bit."""

    centre: np.ndarray
    levels: tuple[FixedLevel, ...]


def prepare_fixed(
    fixed: np.ndarray, fixed_affine: np.ndarray, *, sampling: float, seed: int
) -> Fixed:
    """The fixed image's share of :func:`register_rigid` (module docstring: the pyramid's
    virtual domains, the random samples with their jitter, the fixed bins)."""
    from scipy import ndimage

    # float32 like SimpleITK's images, non-finite values 0 (as ``_to_sitk``)
    f_full = np.nan_to_num(np.asarray(fixed, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    fa = np.asarray(fixed_affine, np.float64)
    centre = _centre_of_mass(f_full, fa, "fixed")
    rng = np.random.default_rng(seed)
    shape = np.array(f_full.shape)
    levels = []
    for shrink, sigma in _LEVELS:
        f_img = _smooth(f_full, sigma)
        # the virtual domain: the fixed grid shrunk, centred on the same physical point
        vshape = np.maximum(shape // shrink, 1)
        offset = (shape - 1) / 2.0 - shrink * (vshape - 1) / 2.0
        nvox = int(np.prod(vshape))
        count = max(1, int(sampling * nvox))
        pick = np.sort(rng.choice(nvox, size=count, replace=False))
        vidx = np.stack(np.unravel_index(pick, tuple(vshape)), axis=1).astype(np.float64)
        vidx += rng.standard_normal(vidx.shape) / 3.0  # ITK: N(0, 1) / 3 voxel
        fidx = vidx * shrink + offset
        fvals = ndimage.map_coordinates(f_img, fidx.T, order=1, mode="nearest")
        fmin, fmax = float(f_img.min()), float(f_img.max())
        fwidth = (fmax - fmin) / (BINS - 2 * _PAD) if fmax > fmin else 1.0
        fbin = np.clip(((fvals - fmin) / fwidth + _PAD).astype(np.int64), _PAD, BINS - _PAD - 1)
        world = fidx @ fa[:3, :3].T + fa[:3, 3]
        corners_v = np.array(
            [
                [x, y, z]
                for x in (0, vshape[0] - 1)
                for y in (0, vshape[1] - 1)
                for z in (0, vshape[2] - 1)
            ],
            dtype=np.float64,
        )
        levels.append(
            FixedLevel(
                rel=np.ascontiguousarray(world - centre),
                fbin=fbin,
                corners=(corners_v * shrink + offset) @ fa[:3, :3].T + fa[:3, 3],
            )
        )
    return Fixed(centre=centre, levels=tuple(levels))


def register_prepared(
    fixed: Fixed,
    moving: np.ndarray,
    moving_affine: np.ndarray,
    *,
    iterations: int,
    min_step: float,
    relaxation: float,
    learning_rate: float = 1.0,
) -> tuple[np.ndarray, float, str]:
    """:func:`register_rigid` of a moving image against a prepared fixed image."""
    # float32 like SimpleITK's images, non-finite values 0; a C-ordered copy (a NIfTI frame
    # is Fortran-ordered): every level image is then C-ordered, as the kernels read them
    m_full = np.array(moving, dtype=np.float32, order="C", copy=True)
    np.nan_to_num(m_full, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    ma = np.asarray(moving_affine, np.float64)
    minv = np.ascontiguousarray(np.linalg.inv(ma)[:3])
    centre = fixed.centre
    p = np.zeros(6)
    p[3:] = _centre_of_mass(m_full, ma, "moving") - centre
    value, stop = 0.0, ""
    for (_, sigma), level in zip(_LEVELS, fixed.levels, strict=True):
        m_img = _smooth(m_full, sigma)
        mmin, mmax = float(m_img.min()), float(m_img.max())
        mwidth = (mmax - mmin) / (BINS - 2 * _PAD) if mmax > mmin else 1.0
        scales = _scales(p, centre, level.corners)
        value, _, code = optimise_level(
            p,
            centre,
            level.rel,
            level.fbin,
            with_gradient(np.ascontiguousarray(m_img, dtype=np.float32)),
            minv,
            mmin,
            mwidth,
            scales,
            float(learning_rate),
            float(min_step),
            int(iterations),
            float(relaxation),
        )
        stop = STOPS[int(code)]
    r, _ = euler_matrices(p)
    matrix = np.eye(4)
    matrix[:3, :3] = r
    matrix[:3, 3] = centre + p[3:] - r @ centre
    return matrix, float(value), stop


def register_rigid(
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    moving: np.ndarray,
    moving_affine: np.ndarray,
    *,
    sampling: float,
    iterations: int,
    min_step: float,
    relaxation: float,
    seed: int,
    learning_rate: float = 1.0,
) -> tuple[np.ndarray, float, str]:
    """Rigid Mattes registration (module docstring) of 3-D float arrays on their affines.

    Returns the fixed-world → moving-world 4×4 matrix, the final metric value (−MI) and
    the stop condition of the last level. (:func:`prepare_fixed` then
    :func:`register_prepared`: a fixed image registered with many moving ones is prepared
    once.)
    """
    return register_prepared(
        prepare_fixed(fixed, fixed_affine, sampling=sampling, seed=seed),
        moving,
        moving_affine,
        iterations=iterations,
        min_step=min_step,
        relaxation=relaxation,
        learning_rate=learning_rate,
    )
