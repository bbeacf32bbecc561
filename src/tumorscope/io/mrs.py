"""NIfTI-MRS: read (and, for the phantom and tests, write) spectroscopy data.

NIfTI-MRS (Clarke et al., Magn Reson Med 2022;88:2358-2370, doi:10.1002/mrm.29418) is a
NIfTI-2 file of complex numbers, dimensions ``x, y, z, t (FID points)`` then up to three
tagged dimensions (``DIM_COIL``, ``DIM_DYN``, ``DIM_EDIT`` …), the dwell time as ``pixdim[4]``
(seconds) and a JSON header extension (code 44) holding at least ``SpectrometerFrequency``
(MHz) and ``ResonantNucleus``. It is read here with nibabel alone, the format needing nothing
more; the ``nifti-mrs`` package (and ``spec2nii``, which converts Siemens twix/RDA/DICOM,
Philips SPAR/SDAT and GE P-files to NIfTI-MRS) are not required: convert vendor files with
``spec2nii`` first (:func:`convert_with_spec2nii` calls it when it is installed).

**Phase convention.** The standard stores FIDs in a right-handed frame (Levitt); tumorscope,
like FSL-MRS internally, works in the frame where ``fftshift(fft(fid))`` has ppm increasing
with frequency (``ppm = 4.7 + f / MHz``). The two differ by complex conjugation, so
:func:`read_nifti_mrs` conjugates what it reads and :func:`write_nifti_mrs` what it writes —
as the ``nifti-mrs`` reference package does on access (tested against it).

Every check names the file: a wrong dwell time (not positive, not finite, a spectral width
outside 100 Hz–1 MHz, or disagreeing with a ``SpectralWidth`` field), no header extension,
no frequency, NaN or infinite points, and a missing water reference when one is required
(:func:`require_water_reference`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import DataError
from ..files import regular_file

__all__ = [
    "MRSData",
    "convert_with_spec2nii",
    "read_nifti_mrs",
    "require_water_reference",
    "write_nifti_mrs",
]

_ECODE_MRS = 44
_TIME_UNIT_SCALE = {8: 1.0, 16: 1e-3, 24: 1e-6}  # NIfTI xyzt_units codes: s, ms, µs
_SW_RANGE_HZ = (100.0, 1.0e6)


@dataclass(frozen=True)
class MRSData:
    """A NIfTI-MRS file's data and what the analysis needs of its header.

    Attributes
    ----------
    data : ndarray of complex128, shape (x, y, z, n_points, ...)
    dwell_s : float
    frequency_mhz : float
    nucleus : str
    affine : ndarray, shape (4, 4)
    dim_tags : tuple of str
        Tags of dimensions 5–7 present (``DIM_COIL`` …).
    header : dict
        The JSON header extension.
    path : Path
    """

    data: np.ndarray
    dwell_s: float
    frequency_mhz: float
    nucleus: str
    affine: np.ndarray
    dim_tags: tuple[str, ...] = ()
    header: dict[str, Any] = field(default_factory=dict)
    path: Path = Path()

    def axis(self, tag: str) -> int | None:
        """Array axis of a tagged dimension (``"DIM_COIL"`` …), or None."""
        return 4 + self.dim_tags.index(tag) if tag in self.dim_tags else None


def read_nifti_mrs(path: str | os.PathLike[str], *, nucleus: str | None = None) -> MRSData:
    """Read and check a NIfTI-MRS file.

    Parameters
    ----------
    path : path-like
    nucleus : str, optional
        Expected ``ResonantNucleus`` (``"1H"``, ``"2H"``, ``"13C"``).

    Raises
    ------
    DataError
        Not a readable NIfTI-MRS file, no header extension, no spectrometer frequency, a
        wrong dwell time, NaN/inf points or another nucleus — naming the file and field.
    """
    import nibabel as nib

    p = Path(path)
    if not p.exists():
        raise DataError("no such file", file=p)
    regular_file(p)
    try:
        img: Any = nib.load(str(p))
    except Exception as exc:
        raise DataError(f"not a readable NIfTI file: {exc}", file=p) from None
    hdr: Any = img.header
    meta: dict[str, Any] | None = None
    for ext in hdr.extensions:
        if int(ext.get_code()) == _ECODE_MRS:
            raw = ext.get_content()
            try:
                meta = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            except (ValueError, UnicodeDecodeError):
                raise DataError(
                    "header extension 44 is not JSON", file=p, field="extension"
                ) from None
    if meta is None:
        raise DataError(
            "not NIfTI-MRS: no header extension 44 (convert vendor data with spec2nii)",
            file=p,
            field="extension",
        )
    f0_raw = meta.get("SpectrometerFrequency")
    f0_list = f0_raw if isinstance(f0_raw, list) else [f0_raw]
    try:
        f0 = float(f0_list[0])  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError):
        raise DataError(
            f"needs SpectrometerFrequency (MHz), got {f0_raw!r}",
            file=p,
            field="SpectrometerFrequency",
        ) from None
    if not (np.isfinite(f0) and f0 > 0):
        raise DataError(f"must be > 0 MHz, got {f0}", file=p, field="SpectrometerFrequency")
    nuc_raw = meta.get("ResonantNucleus", ["1H"])
    nuc = str(nuc_raw[0] if isinstance(nuc_raw, list) else nuc_raw)
    if nucleus is not None and nuc != nucleus:
        raise DataError(f"is {nuc}, expected {nucleus}", file=p, field="ResonantNucleus")
    units = int(hdr["xyzt_units"]) & 0x38
    dwell = float(hdr["pixdim"][4]) * _TIME_UNIT_SCALE.get(units, 1.0)
    if not (np.isfinite(dwell) and dwell > 0):
        raise DataError(
            f"dwell time (pixdim[4]) must be > 0 s, got {dwell}", file=p, field="dwell_time"
        )
    sw = 1.0 / dwell
    if not _SW_RANGE_HZ[0] <= sw <= _SW_RANGE_HZ[1]:
        raise DataError(
            f"dwell time {dwell:g} s gives a spectral width of {sw:g} Hz, outside "
            f"{_SW_RANGE_HZ[0]:g}–{_SW_RANGE_HZ[1]:g} Hz (seconds expected in pixdim[4])",
            file=p,
            field="dwell_time",
        )
    if "SpectralWidth" in meta:
        try:
            sw_meta = float(meta["SpectralWidth"])
        except (TypeError, ValueError):
            raise DataError("must be a number (Hz)", file=p, field="SpectralWidth") from None
        if not np.isclose(sw_meta, sw, rtol=0.01):
            raise DataError(
                f"dwell time {dwell:g} s (spectral width {sw:g} Hz) disagrees with "
                f"SpectralWidth {sw_meta:g} Hz",
                file=p,
                field="dwell_time",
            )
    try:
        data = np.asarray(img.dataobj)
    except Exception as exc:  # gzip and nibabel raise several types for a cut or corrupt file
        raise DataError(
            f"cannot read the spectra, the file is truncated or corrupt ({type(exc).__name__}: "
            f"{exc})",
            file=p,
            field="data",
        ) from None
    if not np.iscomplexobj(data):
        raise DataError(
            f"NIfTI-MRS data must be complex, got {data.dtype}", file=p, field="datatype"
        )
    if data.ndim < 4:
        raise DataError(f"needs at least 4 dimensions (x, y, z, t), got {data.shape}", file=p)
    if not np.all(np.isfinite(data)):
        bad = int(np.sum(~np.isfinite(data)))
        raise DataError(f"{bad} NaN or infinite points", file=p, field="data")
    if data.size and not np.any(data):
        raise DataError("every point is zero (no signal to fit)", file=p, field="data")
    if data.size and not np.any(data.imag):
        raise DataError(
            f"the FIDs are real-valued ({data.dtype} with every imaginary part zero): "
            "NIfTI-MRS holds complex time-domain data; magnitude or real spectra give wrong "
            "numbers (convert the raw data with spec2nii)",
            file=p,
            field="datatype",
        )
    tags = tuple(str(meta.get(f"dim_{d}", "")) for d in range(5, data.ndim + 1))
    return MRSData(
        data=np.conj(data).astype(np.complex128),
        dwell_s=dwell,
        frequency_mhz=f0,
        nucleus=nuc,
        affine=np.asarray(img.affine, dtype=float),
        dim_tags=tags,
        header=dict(meta),
        path=p,
    )


def write_nifti_mrs(
    path: str | os.PathLike[str],
    data: npt.ArrayLike,
    *,
    dwell_s: float,
    frequency_mhz: float,
    nucleus: str = "1H",
    affine: npt.ArrayLike | None = None,
    dim_tags: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write complex ``data (x, y, z, n_points, ...)`` (tumorscope's frame) as NIfTI-MRS
    (atomically; conjugated to the standard's frame)."""
    import nibabel as nib

    arr = np.conj(np.asarray(data)).astype(np.complex64)
    img = nib.Nifti2Image(arr, np.eye(4) if affine is None else np.asarray(affine, float))
    img.header.set_xyzt_units("mm", "sec")
    zooms = list(img.header.get_zooms())
    zooms[3] = float(dwell_s)
    img.header.set_zooms(tuple(zooms))
    img.header.set_intent(0, (), name="mrs_v0_8")
    meta: dict[str, Any] = {
        "SpectrometerFrequency": [float(frequency_mhz)],
        "ResonantNucleus": [nucleus],
    }
    meta |= {f"dim_{5 + i}": tag for i, tag in enumerate(dim_tags)}
    meta |= extra or {}
    img.header.extensions.append(nib.nifti1.Nifti1Extension(_ECODE_MRS, json.dumps(meta).encode()))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.nii.gz")
    nib.save(img, str(tmp))
    os.replace(tmp, out)
    return out


def require_water_reference(
    water: str | os.PathLike[str] | None, *, for_file: str | os.PathLike[str]
) -> Path:
    """The water reference of ``for_file``, or a :class:`DataError` naming ``for_file`` when
    there is none (concentrations in mM need it; ratios do not)."""
    if water is None or not Path(water).is_file():
        raise DataError(
            "no water reference (unsuppressed water NIfTI-MRS) for this spectrum: needed for "
            "concentrations in mM; give one, or ask for ratios only",
            file=Path(for_file),
            field="water_reference",
        )
    return Path(water)


def convert_with_spec2nii(
    args: list[str], out_dir: str | os.PathLike[str], *, keep_identifiers: bool = False
) -> list[Path]:
    """Run ``spec2nii <args> -o out_dir --anon`` (vendor formats → NIfTI-MRS) and list what it
    wrote.

    ``args`` start with spec2nii's subcommand (``twix``, ``rda``, ``philips``, ``ge``,
    ``dicom``, ``auto``) and the input. spec2nii copies the patient's name, birth date and
    other identifiers of the vendor header into the NIfTI-MRS header extension; ``--anon``
    (spec2nii ≥ 0.4) leaves them out, and tumorscope passes it unless ``keep_identifiers``.

    Raises
    ------
    DataError
        spec2nii is not installed or failed (its message is included).
    """
    exe = shutil.which("spec2nii")
    if exe is None:
        raise DataError("spec2nii is not installed (pip install spec2nii)", field="spec2nii")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [exe, *args, "-o", str(out), *([] if keep_identifiers else ["--anon"])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DataError(f"spec2nii failed: {proc.stderr.strip()[-500:]}", field="spec2nii")
    return sorted(out.glob("*.nii*"))
