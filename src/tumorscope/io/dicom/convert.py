"""What dcm2niix knows of a series beyond pixels and geometry, mapped onto tumorscope's grid.

Pixels, geometry, b-values, series roles and frame times come from tumorscope's own pydicom
reader (:mod:`tumorscope.io.dicom.series`). The vendor-specific fields that need each vendor's
private headers, and that dcm2niix reads as the field expects them, are taken from dcm2niix's
BIDS sidecar (``docs/dicom.md``, "pydicom or dcm2niix?"):

* ``PhaseEncodingDirection`` (Siemens CSA ``PhaseEncodingDirectionPositive``, GE and Philips
  polarity tags), ``TotalReadoutTime``, ``EffectiveEchoSpacing``;
* ``SliceTiming`` (Siemens CSA ``MosaicRefAcqTimes``, GE slice order and TR);
* the diffusion gradient directions (``.bvec``; Siemens CSA / ``(0019,100E)``, GE
  ``(0019,10BB-BD)``, Philips ``(2005,10B0-B2)``, the standard ``(0018,9089)``).

dcm2niix is run on the series' files (linked into a temporary folder) and its image is read for
its affine only. Directions given in dcm2niix's voxel frame are mapped to tumorscope's voxel
frame through both affines (an axis permutation with signs; anything else is refused), so they
hold for the image tumorscope writes. Only these numeric fields are taken (dcm2niix's sidecar
also carries identifying text), and a failure of dcm2niix only leaves them out, with a note.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.filebasedimages import ImageFileError

__all__ = ["VendorFields", "dcm2niix_binary", "vendor_fields"]

#: scalar fields copied unchanged from dcm2niix's sidecar
_SCALARS = ("TotalReadoutTime", "EffectiveEchoSpacing")
_TIMEOUT_S = 300


@dataclass
class VendorFields:
    """Sidecar fields, gradient directions (``(n, 3)``, BIDS frame) and notes on what failed."""

    sidecar: dict[str, Any] = field(default_factory=dict)
    bvecs: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def dcm2niix_binary() -> str | None:
    """Path of the dcm2niix program (the PyPI wheel's, else one on the PATH), or None."""
    try:
        import dcm2niix

        path = str(dcm2niix.bin)
        if os.access(path, os.X_OK):
            return path
    except (ImportError, AttributeError):
        pass
    import shutil

    return shutil.which("dcm2niix")


def _axis_map(ours: np.ndarray, theirs: np.ndarray) -> tuple[list[int], list[int]] | None:
    """For each of our voxel axes, dcm2niix's axis along it and the sign (None: no match)."""
    a = ours[:3, :3] / np.linalg.norm(ours[:3, :3], axis=0)
    b = theirs[:3, :3] / np.linalg.norm(theirs[:3, :3], axis=0)
    dots = a.T @ b  # dots[i, j]: cosine between our axis i and their axis j
    perm = [int(np.argmax(np.abs(dots[i]))) for i in range(3)]
    if sorted(perm) != [0, 1, 2] or any(abs(dots[i, perm[i]]) < 0.99 for i in range(3)):
        return None
    return perm, [int(np.sign(dots[i, perm[i]])) for i in range(3)]


def _phase_encoding(value: str, perm: list[int], signs: list[int]) -> str | None:
    if not value or value[0] not in "ijk":
        return None
    theirs = "ijk".index(value[0])
    sign = -1 if value.endswith("-") else 1
    ours = perm.index(theirs)
    return "ijk"[ours] + ("-" if sign * signs[ours] < 0 else "")


def _bvecs(raw: np.ndarray, theirs: np.ndarray, ours: np.ndarray, mapping: Any) -> np.ndarray:
    """dcm2niix's ``.bvec`` (3 × n, FSL/BIDS voxel frame of its image) in our voxel frame."""
    perm, signs = mapping
    vox = raw.copy()
    if np.linalg.det(theirs[:3, :3]) > 0:  # FSL's convention: x flipped for a RAS-like image
        vox[0] = -vox[0]
    out = np.stack([signs[i] * vox[perm[i]] for i in range(3)])
    if np.linalg.det(ours[:3, :3]) > 0:
        out[0] = -out[0]
    return out.T


def _same_voxels(theirs: np.ndarray, ours: np.ndarray, perm: list[int], signs: list[int]) -> bool:
    """dcm2niix's voxel array, put on our axes, equals ours (every volume, in order)."""
    theirs = theirs.reshape((*theirs.shape[:3], -1))
    ours = ours.reshape((*ours.shape[:3], -1))
    moved = np.transpose(theirs, (*perm, 3))
    for axis, sign in enumerate(signs):
        if sign < 0:
            moved = np.flip(moved, axis)
    return moved.shape == ours.shape and bool(
        np.allclose(moved.astype(np.float64), ours.astype(np.float64), rtol=1e-5, atol=1e-3)
    )


def _pick(folder: Path, shape: tuple[int, ...]) -> Path | None:
    """The one dcm2niix output with our number of voxels and volumes."""
    import nibabel as nib

    want = (sorted(shape[:3]), int(np.prod(shape[3:])) if len(shape) > 3 else 1)
    found = []
    for nii in sorted(folder.glob("*.nii")):
        s = nib.Nifti1Image.from_filename(nii).shape
        if (sorted(s[:3]), int(np.prod(s[3:])) if len(s) > 3 else 1) == want:
            found.append(nii)
    return found[0] if len(found) == 1 else None


def vendor_fields(
    files: Sequence[Path],
    affine: np.ndarray,
    data: np.ndarray,
    *,
    bvalues: Sequence[float] | None = None,
) -> VendorFields:
    """Phase encoding, slice timing, readout and gradient directions of a series by dcm2niix.

    Parameters
    ----------
    files : sequence of Path
        The series' DICOM files.
    affine : ndarray
        tumorscope's RAS+ affine of the series (the frame of the returned directions).
    data : ndarray
        tumorscope's voxel array of the series (x, y, z[, volume]).
    bvalues : sequence of float, optional
        tumorscope's b-values: the gradient directions are taken only when dcm2niix's b-values
        are the same, in the same order, and its voxel values, mapped onto our axes, equal
        ``data`` volume by volume (so each direction belongs to the volume it is written for).

    Returns
    -------
    VendorFields
        Empty with a note when dcm2niix is missing, fails or writes something else.
    """
    out = VendorFields()
    exe = dcm2niix_binary()
    if exe is None:
        out.notes.append("dcm2niix not found: phase encoding, slice timing, .bvec not read")
        return out
    with tempfile.TemporaryDirectory(prefix="tumorscope-dcm2niix-") as tmp:
        src, dst = Path(tmp) / "in", Path(tmp) / "out"
        src.mkdir()
        dst.mkdir()
        for n, f in enumerate(files):
            os.symlink(Path(f).resolve(), src / f"{n:06d}.dcm")
        try:
            run = subprocess.run(
                [exe, "-b", "y", "-ba", "y", "-z", "n", "-f", "s%s_e%e", "-o", str(dst), str(src)],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            out.notes.append(f"dcm2niix did not run ({type(exc).__name__})")
            return out
        if run.returncode != 0:
            out.sidecar["VendorFieldsSource"] = f"none: dcm2niix failed (exit {run.returncode})"
            return out
        try:
            _read_output(dst, affine, data, bvalues, out)
        except (OSError, ValueError, KeyError, IndexError, TypeError, ImageFileError) as exc:
            # a damaged or unexpected output only leaves the fields out
            out.sidecar = {"VendorFieldsSource": f"none: dcm2niix's output unreadable ({exc})"}
            out.bvecs = None
    return out


def _read_output(
    dst: Path,
    affine: np.ndarray,
    data: np.ndarray,
    bvalues: Sequence[float] | None,
    out: VendorFields,
) -> None:
    """Fill ``out`` from dcm2niix's output folder (see :func:`vendor_fields`)."""
    import nibabel as nib

    shape = data.shape
    nii = _pick(dst, shape)
    if nii is None:
        out.sidecar["VendorFieldsSource"] = (
            "none: dcm2niix wrote no single image of this series' shape"
        )
        return
    image = nib.Nifti1Image.from_filename(nii)
    theirs = np.asarray(image.affine)
    side = json.loads(nii.with_suffix(".json").read_text(encoding="utf-8"))
    mapping = _axis_map(affine, theirs)
    if mapping is None:
        out.sidecar["VendorFieldsSource"] = "none: dcm2niix's image is not on the same axes"
        return
    perm, signs = mapping
    pe = _phase_encoding(str(side.get("PhaseEncodingDirection", "")), perm, signs)
    if pe is not None:
        out.sidecar["PhaseEncodingDirection"] = pe
    timing = side.get("SliceTiming")
    if isinstance(timing, list) and len(timing) == shape[2] and perm[2] == 2:
        out.sidecar["SliceTiming"] = [float(t) for t in timing[:: signs[2]]]
    for key in _SCALARS:
        if isinstance(side.get(key), int | float):
            out.sidecar[key] = float(side[key])
    bvec, bval = nii.with_suffix(".bvec"), nii.with_suffix(".bval")
    ours_b = np.asarray(bvalues if bvalues is not None else [], dtype=float)
    raw = np.loadtxt(bvec, ndmin=2) if bvalues is not None and bvec.exists() else None
    if raw is not None and np.any(np.abs(raw) > 1e-6):  # all zero: trace-weighted only
        theirs_b = np.loadtxt(bval, ndmin=1) if bval.exists() else np.zeros(0)
        same_b = theirs_b.shape == ours_b.shape and np.allclose(theirs_b, ours_b, atol=1.0)
        if same_b and _same_voxels(np.asanyarray(image.dataobj), data, perm, signs):
            out.bvecs = _bvecs(raw, theirs, affine, mapping)
        else:
            out.notes.append(
                "dcm2niix's b-values or volumes differ from the headers' (order or "
                "values): gradient directions not written"
            )
    if out.sidecar or out.bvecs is not None:
        out.sidecar["VendorFieldsSource"] = "dcm2niix"
