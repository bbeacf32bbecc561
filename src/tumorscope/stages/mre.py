"""MR elastography stage: wrapped phase series → |G*|, φ and confidence maps on disk.

Backs the pipeline's ``fit_mre`` step and ``tumorscope fit mre`` (same function, same files).
The series (role ``mre``, BIDS suffix ``MRE``) is a 4-D NIfTI of wrapped phase images (rad)
laid out as :class:`~tumorscope.protocol.MREProtocol` says (frequency slowest, then the
encoding direction, time offset fastest), with the sidecar fields ``VibrationFrequency`` (Hz),
``PhaseOffsets``, ``EncodingDirections`` (1 or 3) and ``MotionEncodingEfficiency`` (rad/µm).

For every frequency: the phase images are unwrapped (Laplacian, or scikit-image), the first
temporal harmonic taken and scaled to metres; one frequency is inverted by direct Helmholtz
inversion, several by MDEV (:mod:`tumorscope.models.mre`). Maps: ``<prefix>mre_abs_G``
(kPa), ``mre_phi`` (rad), ``mre_confidence`` (uint8, 1 = trusted); per-lesion statistics
are taken by the ``measure`` step like any other map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .. import __version__
from ..errors import DataError
from ..files import file_sha256, write_map
from ..models.mre import direct_inversion, first_harmonic, mdev, phase_to_displacement, unwrap_phase
from ..protocol import MREProtocol
from .base import MapFile, SeriesInput, StageResult

__all__ = ["MREOptions", "fit_mre_series", "mre_displacements"]

#: Phase values beyond π by more than this are not wrapped phase in radians.
_PHASE_TOL = 1e-3


@dataclass(frozen=True)
class MREOptions:
    """Options of the MRE stage (defaults are the pipeline's).

    Attributes
    ----------
    unwrap : {"laplacian", "skimage"}
        Phase unwrapping method.
    smooth_mm : float, optional
        Gaussian smoothing of the wave field (mm); default 1.5 voxels
        (:data:`tumorscope.models.mre.DEFAULT_SMOOTH_VOXELS`).
    laplacian : {"auto", "3d", "2d"}
        Laplacian over the three axes, or in-plane only (axes 0 and 1: thick slices).
        ``"auto"``: 3-D when the slices are no thicker than 1.5 times the in-plane voxel and
        there are at least 15 of them (the stencil and the default smoothing need 7 on each
        side of a voxel), else in-plane.
    density_kg_m3 : float
        Tissue density.
    """

    unwrap: Literal["laplacian", "skimage"] = "laplacian"
    smooth_mm: float | None = None
    laplacian: Literal["auto", "3d", "2d"] = "auto"
    density_kg_m3: float = 1000.0


def mre_displacements(
    phase: np.ndarray, protocol: MREProtocol, *, unwrap: str = "laplacian", label: str = ""
) -> list[np.ndarray]:
    """First-harmonic displacement fields (m), one per frequency, from the phase series.

    ``phase``: (x, y, z, n) wrapped phase (rad), ``n = protocol.n_measurements``. Each field
    is (x, y, z) for one encoding direction, (x, y, z, 3) for three.
    """
    p = np.asarray(phase, dtype=float)
    if p.ndim != 4 or p.shape[3] != protocol.n_measurements:
        raise DataError(
            f"MRE series has shape {p.shape}: expected (x, y, z, {protocol.n_measurements}) "
            f"= frequencies {len(protocol.frequencies_hz)} × directions "
            f"{protocol.n_directions} × offsets {protocol.n_offsets}",
            file=label,
            field="PhaseOffsets",
        )
    if not np.all(np.isfinite(p)):
        raise DataError("MRE phase images have NaN or infinite values", file=label, field="mre")
    if np.abs(p).max() > np.pi + _PHASE_TOL:
        raise DataError(
            f"MRE phase images reach {np.abs(p).max():.4g}: expected wrapped phase in radians "
            "(|φ| ≤ π); convert scanner units to radians first (nothing is rescaled)",
            file=label,
            field="mre",
        )
    nf, nd, nt = len(protocol.frequencies_hz), protocol.n_directions, protocol.n_offsets
    p = p.reshape(*p.shape[:3], nf, nd, nt)
    out = []
    for i, eff in enumerate(protocol.encoding_efficiency_rad_per_um):
        un = unwrap_phase(p[..., i, :, :], spatial_ndim=3, method=unwrap)
        u = phase_to_displacement(first_harmonic(un, axis=-1), eff)  # (x, y, z, nd)
        out.append(u[..., 0] if nd == 1 else u)
    return out


def fit_mre_series(
    series: SeriesInput,
    *,
    out_dir: str | Path,
    prefix: str = "",
    options: MREOptions | None = None,
    mask: np.ndarray | None = None,
) -> StageResult:
    """|G*|, φ and confidence maps of one MRE series (see the module notes).

    Raises
    ------
    DataError
        No MRE protocol, a series of the wrong shape, phase not in radians (named file and
        field), before anything is written.
    """
    opts = options or MREOptions()
    proto = series.protocol
    if not isinstance(proto, MREProtocol):
        raise DataError(
            "series has no MRE protocol (VibrationFrequency, PhaseOffsets, "
            "MotionEncodingEfficiency in its sidecar)",
            file=series.label,
            field=series.role,
        )
    vol = series.load()
    waves = mre_displacements(vol.data, proto, unwrap=opts.unwrap, label=series.label)
    h = vol.voxel_sizes
    mode = opts.laplacian
    if mode == "auto":
        thick = h[2] > 1.5 * max(h[0], h[1])
        mode = "2d" if thick or vol.spatial_shape[2] < 15 else "3d"
    axes = (0, 1) if mode == "2d" else None
    if len(waves) == 1:
        res = direct_inversion(
            waves[0],
            h,
            proto.frequencies_hz[0],
            density_kg_m3=opts.density_kg_m3,
            smooth_mm=opts.smooth_mm,
            laplacian_axes=axes,
            mask=mask,
        )
        method = "direct Helmholtz inversion"
    else:
        res = mdev(
            waves,
            h,
            proto.frequencies_hz,
            density_kg_m3=opts.density_kg_m3,
            smooth_mm=opts.smooth_mm,
            laplacian_axes=axes,
            mask=mask,
        )
        method = "MDEV"
    prov = {
        "model": "mre",
        "method": method,
        "protocol": proto.to_dict(),
        "options": {
            "unwrap": opts.unwrap,
            "smooth_mm": opts.smooth_mm,
            "laplacian": mode,
            "density_kg_m3": opts.density_kg_m3,
        },
        "inputs": {k: file_sha256(v) for k, v in series.files.items()},
        "tumorscope_version": __version__,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = StageResult()
    for name, data, units, desc, dtype in (
        ("abs_G", res.abs_g_kpa, "kPa", f"|G*| ({method})", np.float32),
        ("phi", res.phi_rad, "rad", f"phase angle of G* ({method})", np.float32),
        ("confidence", res.confidence.astype(np.uint8), "1", "1 = trusted |G*|", np.uint8),
    ):
        path = out / f"{prefix}mre_{name}.nii.gz"
        result.files += write_map(
            path, data, vol.affine, units=units, description=desc, provenance=prov, dtype=dtype
        )
        if name != "confidence":
            result.maps.append(MapFile("mre", name, path, series=series.role))
    n_est = int(np.isfinite(res.abs_g_kpa).sum())
    if n_est == 0:
        result.warnings.append(
            f"{series.label}: no voxel could be inverted (volume too small for the stencil and "
            "smoothing, or no wave)"
        )
    return result
