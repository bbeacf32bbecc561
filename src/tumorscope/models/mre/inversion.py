"""Helmholtz inversion of MR elastography wave fields: direct (one frequency) and MDEV.

The time-harmonic shear wave equation of a locally homogeneous, incompressible, linear
viscoelastic medium is, for every component ``j`` of the first-harmonic displacement
``U_j`` (complex, metres) at angular frequency ``ω``,

    G* ∇²U_j + ρ ω² U_j = 0,

so that ``G* = -ρ ω² U_j / ∇²U_j`` wherever ``∇²U_j`` does not vanish.

* :func:`stiffness` / :func:`direct_inversion` (algebraic Helmholtz inversion, AHI): the
  least-squares ``G*`` over the components and a small neighbourhood (the ``window``),
  ``G* = -ρω² Σ conj(∇²U)·U / Σ |∇²U|²``, of a wave field smoothed by a Gaussian
  (``smooth_mm``). A Gaussian commutes with the Laplacian, so smoothing leaves the Helmholtz
  equation of a homogeneous region intact and only lowers the noise that the Laplacian
  amplifies.
* :func:`mdev` (multi-frequency dual elasto-visco inversion, Papazoglou et al. 2012, Phys Med
  Biol 57:2329; Hirsch, Braun & Sack, *Magnetic Resonance Elastography*, Wiley 2017, ch. 9;
  Streitberger et al. 2014, PLoS One 9:e110588): magnitude and phase are inverted separately
  and averaged over frequencies and components,
  ``|G*| = ρ Σ_n ω_n² Σ_j |U_jn| / Σ_n Σ_j |∇²U_jn|`` and
  ``φ = (1/NJ) Σ_n Σ_j arccos(-Re(∇²U_jn · conj(U_jn)) / (|∇²U_jn| |U_jn|))``.

The Laplacian is the fourth-order central difference (five points per axis,
``(-u₋₂ + 16u₋₁ - 30u₀ + 16u₊₁ - u₊₂) / 12h²``): its error on a wave of wavenumber ``k`` is
about ``(kh)⁴/90`` instead of ``(kh)²/12`` for the three-point stencil, which matters at the
coarse sampling of MRE (2–3 mm voxels, 10–30 mm wavelengths). It is taken over every spatial
axis with at least five samples (``laplacian_axes=None``) or over the axes given (``(0, 1)``:
in-plane, slice by slice, as most MDEV implementations do for thick slices).

Where the value cannot be estimated the result is NaN: voxels whose stencil or smoothing
kernel leaves the data or the mask, non-finite input, a vanishing Laplacian, and a storage
modulus ``G' = Re G*`` that is not positive (no stiffness has that).

Units: displacement in metres (any common scale cancels), voxel sizes in mm, frequencies in
Hz, density in kg/m³; moduli are returned in kPa, phase angles in radians (0 = purely
elastic, π/2 = purely viscous).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ...errors import DataError

__all__ = [
    "DEFAULT_SMOOTH_VOXELS",
    "ElastogramResult",
    "direct_inversion",
    "laplacian",
    "mdev",
    "stiffness",
]

#: Five-point fourth-order second-derivative stencil (offsets -2…2), divided by 12 h².
_STENCIL = np.array([-1.0, 16.0, -30.0, 16.0, -1.0]) / 12.0
_HALF = 2

#: Default Gaussian smoothing of the wave field, in voxels (of the largest voxel size along
#: the Laplacian's axes). Chosen on analytic waves (tests/models/mre): 1.5 voxels keeps the
#: median |G*| error below 3 % from 1 to 10 kPa at 30–90 Hz with 2 mm voxels and noise 2 %
#: of the wave amplitude; less smoothing leaves the Laplacian's noise (12 % at 10 kPa, 30 Hz
#: with 1 voxel), more erodes the border (3σ + 2 voxels are not estimated).
#: The limit is the Laplacian's noise when the waves are long for the voxels: at more than
#: ~50 voxels per wavelength (10 kPa at 30 Hz, λ = 105 mm, with 1 mm voxels) and 2 % noise
#: the median error is 12 %; give a wider ``smooth_mm`` there (3.3 mm ≈ λ/30: 1 %). A
#: data-driven width (λ/8 from a first pass) was tried and rejected: it fixes homogeneous
#: fields but smears interfaces and point sources over 3σ (two-region and spherical
#: tests fail).
DEFAULT_SMOOTH_VOXELS = 1.5


@dataclass(frozen=True)
class ElastogramResult:
    """Maps of an MRE inversion (shaped like one wave component, NaN where not estimated).

    Attributes
    ----------
    abs_g_kpa : ndarray
        Magnitude of the complex shear modulus ``|G*|`` (kPa).
    phi_rad : ndarray
        Phase angle ``φ = arg G*`` (rad), 0 elastic … π/2 viscous.
    storage_kpa, loss_kpa : ndarray
        ``G' = |G*| cos φ`` and ``G'' = |G*| sin φ`` (kPa).
    confidence : ndarray of bool
        Voxels whose estimate is trusted: estimated, physical (``0 ≤ φ ≤ π/2``) and with a
        wave amplitude of at least ``min_amplitude`` times the 95th percentile of the
        amplitude inside the estimated region.
    """

    abs_g_kpa: np.ndarray
    phi_rad: np.ndarray
    storage_kpa: np.ndarray
    loss_kpa: np.ndarray
    confidence: np.ndarray


def _as_components(wave: np.ndarray, name: str = "wave") -> tuple[np.ndarray, bool]:
    """``wave`` as complex (..., n_components); whether it had a component axis.

    A last axis of length 3 is read as the three displacement components (x, y, z);
    anything else is a single component.
    """
    w = np.asarray(wave)
    if w.ndim < 1 or w.size == 0:
        raise DataError(f"{name} is empty or a scalar; expected a 2-D or 3-D field", field=name)
    if not (np.issubdtype(w.dtype, np.complexfloating) or np.issubdtype(w.dtype, np.floating)):
        raise DataError(f"{name} must be complex (or real) numbers, got {w.dtype}", field=name)
    if w.ndim >= 3 and w.shape[-1] == 3:
        comps, has = w.astype(np.complex128), True
    else:
        comps, has = w.astype(np.complex128)[..., None], False
    if comps.ndim - 1 not in (2, 3):
        raise DataError(
            f"{name} has shape {w.shape}: expected a 2-D or 3-D field, optionally with the "
            "three displacement components on a last axis of length 3",
            field=name,
        )
    return comps, has


def _voxel_sizes(voxel_size_mm: float | Sequence[float] | np.ndarray, ndim: int) -> np.ndarray:
    v = np.atleast_1d(np.asarray(voxel_size_mm, dtype=float))
    if v.size == 1:
        v = np.repeat(v, ndim)
    if v.size != ndim or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise DataError(
            f"voxel_size_mm must be one positive size or one per spatial axis ({ndim}), "
            f"got {voxel_size_mm!r}",
            field="voxel_size_mm",
        )
    return v


def _positive(value: float, name: str) -> float:
    x = float(value)
    if not math.isfinite(x) or x <= 0:
        raise DataError(f"{name} must be a positive finite number, got {value!r}", field=name)
    return x


def _axes(shape: tuple[int, ...], laplacian_axes: Sequence[int] | None) -> tuple[int, ...]:
    nd = len(shape)
    if laplacian_axes is None:
        axes = tuple(a for a in range(nd) if shape[a] >= 2 * _HALF + 1)
    else:
        axes = tuple(int(a) % nd for a in laplacian_axes)
        short = [a for a in axes if shape[a] < 2 * _HALF + 1]
        if short:
            raise DataError(
                f"laplacian axes {short} have fewer than {2 * _HALF + 1} samples (shape {shape})",
                field="laplacian_axes",
            )
    if not axes:
        raise DataError(
            f"no spatial axis has {2 * _HALF + 1} samples for the Laplacian (shape {shape})",
            field="wave",
        )
    return axes


def laplacian(
    field: np.ndarray,
    voxel_size_mm: float | Sequence[float] | np.ndarray,
    axes: Sequence[int] | None = None,
) -> np.ndarray:
    """Fourth-order finite-difference Laplacian (1/m² times the field's unit).

    ``field`` has only spatial axes; ``voxel_size_mm`` is one size or one per axis. The
    result is NaN within two voxels of the edges of the Laplacian's axes (the stencil leaves
    the data) and wherever a stencil touches a NaN.
    """
    f = np.asarray(field)
    h_m = _voxel_sizes(voxel_size_mm, f.ndim) * 1e-3
    return _laplacian(f, h_m, _axes(f.shape, axes))


def _laplacian(f: np.ndarray, h_m: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """:func:`laplacian` over ``axes`` of ``f`` (further axes, e.g. components, allowed)."""
    out = np.zeros(f.shape, dtype=np.result_type(f.dtype, np.float64))
    edge = np.zeros(f.shape[: max(axes) + 1], bool)
    for a in axes:
        n = f.shape[a]
        core = [slice(None)] * f.ndim
        core[a] = slice(_HALF, n - _HALF)
        acc = out[tuple(core)]
        for k, c in enumerate(_STENCIL):
            sl = [slice(None)] * f.ndim
            sl[a] = slice(k, n - 2 * _HALF + k)
            acc += (c / h_m[a] ** 2) * f[tuple(sl)]
        e = [slice(None)] * edge.ndim
        e[a] = slice(0, _HALF)
        edge[tuple(e)] = True
        e[a] = slice(n - _HALF, n)
        edge[tuple(e)] = True
    out[edge] = np.nan
    return out


def _valid_region(
    comps: np.ndarray, mask: np.ndarray | None, axes: tuple[int, ...], margin: Sequence[int]
) -> np.ndarray:
    """Voxels whose smoothing kernel and stencil stay inside finite, masked data."""
    spatial = comps.shape[:-1]
    ok = np.all(np.isfinite(comps), axis=-1)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != spatial:
            raise DataError(f"mask has shape {m.shape}, the wave field {spatial}", field="mask")
        ok &= m.astype(bool)
    size = [1] * len(spatial)
    for a in range(len(spatial)):
        size[a] = 2 * int(margin[a]) + 1
    ok = ndimage.minimum_filter(ok.astype(np.uint8), size=size, mode="constant", cval=0) > 0
    return ok


def _smooth(comps: np.ndarray, sigma_vox: Sequence[float]) -> np.ndarray:
    """Gaussian smoothing along the spatial axes of (..., n_components) complex data.

    The complex array is filtered as interleaved real numbers (one pass over real and
    imaginary parts together)."""
    if not any(s > 0 for s in sigma_vox):
        return comps
    z = comps if np.all(np.isfinite(comps)) else np.where(np.isfinite(comps), comps, 0.0)
    flat = np.ascontiguousarray(z).view(np.float64)  # (..., 2 * n_components)
    out = ndimage.gaussian_filter(flat, (*sigma_vox, 0.0), truncate=3.0)
    return out.view(np.complex128)


def _prepare(
    wave: np.ndarray,
    voxel_size_mm: float | Sequence[float],
    smooth_mm: float | None,
    laplacian_axes: Sequence[int] | None,
    mask: np.ndarray | None,
    window: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    """Smoothed components, their Laplacians, the valid region and the window sizes."""
    comps, _ = _as_components(wave)
    spatial = comps.shape[:-1]
    h = _voxel_sizes(voxel_size_mm, len(spatial))
    ax = _axes(spatial, laplacian_axes)
    ax_h = max(float(h[a]) for a in ax)
    smooth_mm = DEFAULT_SMOOTH_VOXELS * ax_h if smooth_mm is None else float(smooth_mm)
    if not math.isfinite(smooth_mm) or smooth_mm < 0:
        raise DataError(f"smooth_mm must be >= 0, got {smooth_mm!r}", field="smooth_mm")
    if int(window) < 1 or int(window) % 2 == 0:
        raise DataError(f"window must be an odd number >= 1, got {window!r}", field="window")
    # smoothing only along the Laplacian's axes (a thick-slice axis is left alone)
    sigma = [smooth_mm / h[a] if a in ax else 0.0 for a in range(len(spatial))]
    margin = [(_HALF + math.ceil(3.0 * sigma[a])) if a in ax else 0 for a in range(len(spatial))]
    valid = _valid_region(comps, mask, ax, margin)
    sm = _smooth(comps, sigma)
    lap = _laplacian(sm, h * 1e-3, ax)
    # only voxels whose kernels stay inside the data enter the sums (NaN elsewhere)
    lap[~valid] = np.nan
    win = tuple(int(window) if a in ax else 1 for a in range(len(spatial)))
    return sm, lap, valid, win


def _box(x: np.ndarray, win: tuple[int, ...]) -> np.ndarray:
    """Sum over a box window of edges ``win`` (one per axis of ``x``; zero outside).

    Complex input is filtered as interleaved real numbers: its last axis must have a window
    of 1 (a component or singleton axis)."""
    if all(w == 1 for w in win):
        return x
    size = float(np.prod(win))
    if np.iscomplexobj(x):
        assert win[-1] == 1
        flat = np.ascontiguousarray(x, dtype=np.complex128).view(np.float64)
        return ndimage.uniform_filter(flat, win, mode="constant").view(np.complex128) * size
    return ndimage.uniform_filter(x, win, mode="constant") * size


def _confidence(g: np.ndarray, amplitude: np.ndarray, min_amplitude: float) -> np.ndarray:
    est = np.isfinite(g)
    conf = est & (g.real > 0) & (g.imag >= 0)
    if est.any():
        ref = float(np.percentile(amplitude[est], 95))
        conf &= amplitude >= min_amplitude * ref
    return conf


def _result(g: np.ndarray, amplitude: np.ndarray, min_amplitude: float) -> ElastogramResult:
    g = np.where(np.isfinite(g) & (g.real > 0), g, np.nan + 0j)
    g_kpa = g * 1e-3
    return ElastogramResult(
        abs_g_kpa=np.abs(g_kpa),
        phi_rad=np.angle(g_kpa),
        storage_kpa=g_kpa.real,
        loss_kpa=g_kpa.imag,
        confidence=_confidence(g, amplitude, min_amplitude),
    )


def direct_inversion(
    wave: np.ndarray,
    voxel_size_mm: float | Sequence[float],
    frequency_hz: float,
    *,
    density_kg_m3: float = 1000.0,
    smooth_mm: float | None = None,
    window: int = 3,
    laplacian_axes: Sequence[int] | None = None,
    mask: np.ndarray | None = None,
    min_amplitude: float = 0.1,
) -> ElastogramResult:
    """Algebraic Helmholtz inversion of one frequency's first-harmonic wave field.

    Parameters
    ----------
    wave : ndarray, complex
        First-harmonic displacement (m), spatial axes (2-D or 3-D), optionally the three
        components on a last axis of length 3.
    voxel_size_mm : float or sequence of float
        Voxel size (mm), one value or one per spatial axis.
    frequency_hz : float
        Vibration frequency (Hz).
    density_kg_m3 : float
        Tissue density (kg/m³; 1000 as water, the MRE convention).
    smooth_mm : float, optional
        Standard deviation (mm) of the Gaussian applied to the wave field before the
        Laplacian (0: none; default :data:`DEFAULT_SMOOTH_VOXELS` times the largest voxel
        size along the Laplacian's axes).
    window : int
        Odd edge (voxels) of the least-squares neighbourhood along the Laplacian's axes.
    laplacian_axes : sequence of int, optional
        Spatial axes of the Laplacian (default every axis with at least five samples).
    mask : ndarray of bool, optional
        Tissue region; voxels whose stencil leaves it are not estimated.
    min_amplitude : float
        Confidence threshold on the wave amplitude (fraction of its 95th percentile).

    Returns
    -------
    ElastogramResult
    """
    f = _positive(frequency_hz, "frequency_hz")
    rho = _positive(density_kg_m3, "density_kg_m3")
    sm, lap, valid, win = _prepare(wave, voxel_size_mm, smooth_mm, laplacian_axes, mask, window)
    omega2 = (2.0 * np.pi * f) ** 2
    lap0 = np.where(np.isfinite(lap), lap, 0.0)
    # the window's least squares sum only over valid voxels (a window at the edge of the
    # valid region uses fewer voxels, it is not biased by the smoothing's edge)
    num = _box(np.sum(np.conj(lap0) * sm, axis=-1)[..., None], (*win, 1))[..., 0]
    den = _box(np.sum(lap0.real**2 + lap0.imag**2, axis=-1), win)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(valid & (den > 0), -rho * omega2 * num / den, np.nan + 0j)
    amp = np.sqrt(np.sum(np.abs(sm) ** 2, axis=-1))
    return _result(g, amp, min_amplitude)


def stiffness(
    wave: np.ndarray,
    voxel_size_mm: float | Sequence[float],
    frequency_hz: float,
    *,
    density_kg_m3: float = 1000.0,
    smooth_mm: float | None = None,
    window: int = 3,
    laplacian_axes: Sequence[int] | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """``|G*|`` (kPa) per voxel from a first-harmonic displacement field (direct inversion).

    ``wave`` is the complex first-harmonic displacement (m): one component, or three on a
    last axis of length 3. NaN where ``|G*|`` cannot be estimated (see the module notes).
    The other parameters are those of :func:`direct_inversion`.
    """
    return direct_inversion(
        wave,
        voxel_size_mm,
        frequency_hz,
        density_kg_m3=density_kg_m3,
        smooth_mm=smooth_mm,
        window=window,
        laplacian_axes=laplacian_axes,
        mask=mask,
    ).abs_g_kpa


def mdev(
    waves: Sequence[np.ndarray],
    voxel_size_mm: float | Sequence[float],
    frequencies_hz: Sequence[float],
    *,
    density_kg_m3: float = 1000.0,
    smooth_mm: float | None = None,
    laplacian_axes: Sequence[int] | None = None,
    mask: np.ndarray | None = None,
    min_amplitude: float = 0.1,
) -> ElastogramResult:
    """Multi-frequency dual elasto-visco inversion (MDEV) of several frequencies' fields.

    Parameters
    ----------
    waves : sequence of ndarray
        One first-harmonic displacement field per frequency (same shape each, see
        :func:`direct_inversion`).
    frequencies_hz : sequence of float
        The vibration frequency of each field (Hz).

    Other parameters are those of :func:`direct_inversion` (MDEV has no window: the sums over
    frequencies and components stabilise it).
    """
    if len(waves) == 0 or len(waves) != len(frequencies_hz):
        raise DataError(
            f"mdev needs one wave field per frequency (got {len(waves)} fields, "
            f"{len(frequencies_hz)} frequencies)",
            field="frequencies_hz",
        )
    rho = _positive(density_kg_m3, "density_kg_m3")
    shapes = {np.shape(w) for w in waves}
    if len(shapes) != 1:
        raise DataError(f"wave fields differ in shape: {sorted(shapes)}", field="waves")
    num = den = phase_sum = amp_sum = None
    valid_all = None
    count = 0
    for w, fhz in zip(waves, frequencies_hz, strict=True):
        f = _positive(fhz, "frequencies_hz")
        sm, lap, valid, _ = _prepare(w, voxel_size_mm, smooth_mm, laplacian_axes, mask, 1)
        lap0 = np.where(np.isfinite(lap), lap, 0.0)
        a_u, a_l = np.abs(sm), np.abs(lap0)
        with np.errstate(divide="ignore", invalid="ignore"):
            cosang = -np.real(lap0 * np.conj(sm)) / (a_l * a_u)
        ang = np.arccos(np.clip(np.nan_to_num(cosang, nan=0.0), -1.0, 1.0))
        n_ = (2.0 * np.pi * f) ** 2 * np.sum(a_u, axis=-1)
        d_ = np.sum(a_l, axis=-1)
        p_ = np.sum(ang, axis=-1)
        amp = np.sqrt(np.sum(a_u**2, axis=-1))
        num = n_ if num is None else num + n_
        den = d_ if den is None else den + d_
        phase_sum = p_ if phase_sum is None else phase_sum + p_
        amp_sum = amp if amp_sum is None else amp_sum + amp
        valid_all = valid if valid_all is None else valid_all & valid
        count += sm.shape[-1]
    assert num is not None and den is not None and phase_sum is not None
    assert valid_all is not None and amp_sum is not None
    with np.errstate(divide="ignore", invalid="ignore"):
        absg = np.where(valid_all & (den > 0), rho * num / den, np.nan)
    phi = phase_sum / count
    g = absg * np.exp(1j * phi)
    return _result(g, amp_sum / len(waves), min_amplitude)
