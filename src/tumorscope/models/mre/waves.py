"""From MRE phase images to the first-harmonic displacement: unwrapping, temporal FFT.

A motion-encoded MRE acquisition gives, per motion-encoding direction, ``N`` phase images at
equally spaced offsets over one vibration period. The phase is wrapped to (-π, π]; the
displacement is proportional to the unwrapped phase.

* :func:`laplacian_unwrap` (Schofield & Zhu 2003, Opt Lett 28:1194; the unwrapping of most
  MDEV pipelines, Hirsch, Braun & Sack 2017): the Laplacian of the true phase is
  ``cos φ ∇² sin φ - sin φ ∇² cos φ``, computed from the wrapped phase; the phase follows by
  inverting the Laplacian with a discrete cosine transform (Neumann edges). The estimate is
  then made congruent with the data (the wrapped phase plus the nearest multiple of 2π), so
  that where the phase is sampled finely enough the result is the exact unwrapped phase up
  to one constant multiple of 2π.
* :func:`unwrap_phase` applies it (or scikit-image's quality-guided path unwrapping,
  ``method="skimage"``, when scikit-image is installed) to every image of a series.
* :func:`first_harmonic`: the temporal Fourier component at the vibration frequency,
  ``U = (2/N) Σ_t φ_t exp(-2πi t/N)``, so that ``φ_t = Re(U exp(2πi t/N)) + offset``.
* :func:`phase_to_displacement`: radians to metres with the motion-encoding efficiency
  (rad/µm, from the protocol).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import fft

from ...errors import DataError

__all__ = ["first_harmonic", "laplacian_unwrap", "phase_to_displacement", "unwrap_phase"]


def _dct_laplacian_eigen(shape: tuple[int, ...]) -> np.ndarray:
    """Eigenvalues of the 3-point Neumann Laplacian in the DCT-II basis (unit spacing)."""
    lam = np.zeros(shape)
    for a, n in enumerate(shape):
        k = np.arange(n)
        e = 2.0 * np.cos(np.pi * k / n) - 2.0
        sh = [1] * len(shape)
        sh[a] = n
        lam = lam + e.reshape(sh)
    return lam


def _lap_neumann(f: np.ndarray) -> np.ndarray:
    """3-point Laplacian with mirrored (Neumann) edges, unit spacing."""
    out = np.zeros_like(f)
    for a in range(f.ndim):
        p = np.concatenate(
            [np.take(f, [0], axis=a), f, np.take(f, [f.shape[a] - 1], axis=a)], axis=a
        )
        n = f.shape[a]
        out += (
            np.take(p, np.arange(0, n), axis=a) + np.take(p, np.arange(2, n + 2), axis=a) - 2.0 * f
        )
    return out


def laplacian_unwrap(phase: np.ndarray) -> np.ndarray:
    """Unwrap a 2-D or 3-D phase image (rad) by the Laplacian method, made congruent.

    Returns the unwrapped phase: wrapped phase + 2π·n per voxel, with the mean of the result
    as close as possible to the mean of the Laplacian estimate. Non-finite input is an
    error (mask it first: unwrapping needs every voxel).
    """
    p = np.asarray(phase, dtype=float)
    if p.ndim not in (2, 3):
        raise DataError(f"phase image must be 2-D or 3-D, got shape {p.shape}", field="phase")
    if not np.all(np.isfinite(p)):
        raise DataError("phase image has NaN or infinite values", field="phase")
    s, c = np.sin(p), np.cos(p)
    rhs = c * _lap_neumann(s) - s * _lap_neumann(c)
    lam = _dct_laplacian_eigen(p.shape)
    coef = fft.dctn(rhs, type=2, norm="ortho")
    lam.flat[0] = 1.0
    coef = coef / lam
    coef.flat[0] = 0.0
    est = fft.idctn(coef, type=2, norm="ortho")
    wrapped = np.angle(np.exp(1j * p))
    # the estimate is defined up to a constant: align it with the data (circular mean of
    # the difference), then take the congruent phase nearest to it
    offset = np.angle(np.mean(np.exp(1j * (wrapped - est))))
    est = est + offset
    return wrapped + 2.0 * np.pi * np.round((est - wrapped) / (2.0 * np.pi))


def unwrap_phase(
    phase: np.ndarray, *, spatial_ndim: int = 3, method: str = "laplacian"
) -> np.ndarray:
    """Unwrap every image of a phase series (rad).

    Parameters
    ----------
    phase : ndarray
        Spatial axes first (``spatial_ndim`` of them, 2 or 3), any further axes (time
        offsets, encoding directions, frequencies) after them.
    method : {"laplacian", "skimage"}
        :func:`laplacian_unwrap`, or ``skimage.restoration.unwrap_phase`` (optional
        dependency scikit-image).
    """
    p = np.asarray(phase, dtype=float)
    if spatial_ndim not in (2, 3) or p.ndim < spatial_ndim:
        raise DataError(
            f"phase has shape {p.shape}; expected {spatial_ndim} spatial axes first",
            field="phase",
        )
    one: Callable[[np.ndarray], np.ndarray]
    if method == "laplacian":
        one = laplacian_unwrap
    elif method == "skimage":
        try:
            from skimage.restoration import unwrap_phase as sk_unwrap
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise DataError(
                "method='skimage' needs scikit-image (pip install scikit-image)",
                field="method",
            ) from exc

        def one(x: np.ndarray) -> np.ndarray:
            return np.asarray(sk_unwrap(x))
    else:
        raise DataError(
            f"unknown unwrapping method {method!r}; expected 'laplacian' or 'skimage'",
            field="method",
        )
    spatial = p.shape[:spatial_ndim]
    rest = p.shape[spatial_ndim:]
    flat = p.reshape(*spatial, -1)
    out = np.stack([one(flat[..., i]) for i in range(flat.shape[-1])], axis=-1)
    return out.reshape(*spatial, *rest)


def first_harmonic(series: np.ndarray, *, axis: int = -1) -> np.ndarray:
    """Complex amplitude of the first temporal harmonic along ``axis`` (N ≥ 3 offsets).

    ``U = (2/N) Σ_t x_t exp(-2πi t/N)``: for ``x_t = A cos(2πt/N + θ) + c``, ``U = A e^{iθ}``.
    """
    x = np.asarray(series)
    n = x.shape[axis]
    if n < 3:
        raise DataError(
            f"the first harmonic needs at least 3 time offsets per period, got {n}",
            field="time_offsets",
        )
    return 2.0 * np.fft.fft(x, axis=axis).take(1, axis=axis) / n


def phase_to_displacement(
    harmonic_rad: np.ndarray, encoding_efficiency_rad_per_um: float
) -> np.ndarray:
    """Displacement (m) from the first harmonic of the unwrapped phase (rad).

    ``encoding_efficiency_rad_per_um`` is the phase per µm of displacement of the motion
    encoding (from the protocol); its sign is kept.
    """
    e = float(encoding_efficiency_rad_per_um)
    if not np.isfinite(e) or e == 0:
        raise DataError(
            f"motion-encoding efficiency must be finite and non-zero, got {e!r}",
            field="encoding_efficiency_rad_per_um",
        )
    return np.asarray(harmonic_rad) / e * 1e-6
