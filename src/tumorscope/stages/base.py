"""What every stage takes and returns.

A *stage* turns series that already carry their acquisition protocol (+ masks, + options as a
typed dataclass) into maps on disk and tidy rows. It knows no pipeline: the pipeline steps and
the ``tumorscope fit …`` / ``iron`` / ``cells19f`` commands are thin adapters over the same
stage functions, so a command and a step write the same files under the same names.

- :class:`SeriesInput`: an image file with its role, protocol, sidecar and the files its
  provenance hashes (image, ``.bval`` …). Built from a study's series
  (:meth:`SeriesInput.of`) or from a file given on the command line (:func:`read_series`).
- :class:`MapFile`: one map a stage wrote (model, parameter, image, status map, the series
  whose grid it is on, and the fit it came from).
- :class:`StageResult`: the maps, every file written, tidy rows by table name and the fits'
  summary warnings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import DataError, FitError
from ..volume import Volume

if TYPE_CHECKING:
    from ..models.base import FitResult
    from ..protocol import Protocol

__all__ = [
    "BODY_FRACTION",
    "REGIONS",
    "MapFile",
    "SeriesInput",
    "StageResult",
    "check_has_data",
    "check_region",
    "read_series",
    "signal_mask",
    "with_sidecars",
]


@dataclass(frozen=True)
class SeriesInput:
    """A series ready for a stage.

    Attributes
    ----------
    path : Path
        The image (NIfTI).
    role : str
        Its role in the visit (``dwi``, ``dce``, ``t1_vfa``, ``t2star`` …).
    protocol : Protocol or None
        The acquisition protocol (None for anatomical images).
    sidecar : mapping
        The JSON sidecar's fields (``MagneticFieldStrength``, ``ReferenceTubes`` …).
    files : mapping of str to Path
        Files whose SHA-256 go into the provenance of what is computed from it
        (``{"series": image, "bval": ...}``).
    label : str
        How messages name it (the path relative to the study root, or the path given).
    """

    path: Path
    role: str
    protocol: Protocol | None
    sidecar: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, Path] = field(default_factory=dict)
    label: str = ""
    loader: Callable[[], Volume] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, series: Any) -> SeriesInput:
        """From a study's series (:class:`tumorscope.io.study.Series`: ``path``, ``role``,
        ``protocol``, ``sidecar``, ``relpath``, ``load()``)."""
        path = Path(series.path)
        files = {"series": path, **_beside(path)}
        return cls(
            path=path,
            role=str(series.role),
            protocol=series.protocol,
            sidecar=dict(series.sidecar),
            files=files,
            label=str(series.relpath),
            loader=series.load,
        )

    def load(self) -> Volume:
        """The image as a float32 :class:`~tumorscope.volume.Volume`, refused
        (:func:`check_has_data`) when it holds no finite non-zero value."""
        vol = self.loader() if self.loader is not None else Volume.from_nifti(self.path)
        return check_has_data(vol, self.label or str(self.path))

    def need(self, key: str) -> Any:
        """A sidecar field that must be there (:class:`DataError` naming file and field)."""
        value = self.sidecar.get(key)
        if value is None:
            state = "null in" if key in self.sidecar else "missing from"
            raise DataError(f"{key} is {state} the sidecar", file=self.label, field=key)
        return value


#: Values looked at a time by :func:`check_has_data`.
_DATA_CHUNK = 1 << 20


def check_has_data(volume: Volume, label: str) -> Volume:
    """``volume`` when at least one of its voxel values is finite and non-zero.

    An image of NaN or inf only, or of zeros only, is bad input (an export or conversion
    gone wrong), not an image to fit: a fit of it would write maps of nothing.

    Raises
    ------
    DataError
        Naming ``label`` and the field ``data``.
    """
    data = np.asarray(volume.data)
    flat = np.ravel(data, order="K")  # a view of a C- or F-ordered image
    floating = np.issubdtype(data.dtype, np.floating)
    for start in range(0, flat.size, _DATA_CHUNK):  # a real image stops in its first chunks
        chunk = flat[start : start + _DATA_CHUNK]
        ok = chunk != 0
        if floating:
            ok &= np.isfinite(chunk)
        if ok.any():
            return volume
    if flat.size and floating and not np.isfinite(flat).any():
        raise DataError("every voxel value is non-finite (NaN or inf)", file=label, field="data")
    raise DataError(
        "every voxel value is zero (an empty image, nothing to fit)", file=label, field="data"
    )


def _beside(image: Path) -> dict[str, Path]:
    """``.bval``/``.bvec`` files beside an image that exist, by role name."""
    from ..io.bids import file_beside

    found = {ext: file_beside(image, f".{ext}") for ext in ("bval", "bvec")}
    return {ext: p for ext, p in found.items() if p.is_file()}


def read_series(
    path: str | os.PathLike[str],
    suffix: str,
    *,
    role: str | None = None,
    protocol: Protocol | None = None,
    extra_files: Mapping[str, str | os.PathLike[str]] | None = None,
) -> SeriesInput:
    """A series from a file given by a user (a command's argument), outside any study.

    Parameters
    ----------
    path : path-like
        The image; its JSON sidecar (and ``.bval``/``.bvec``) beside it.
    suffix : str
        BIDS suffix that says how to read the protocol from the sidecar (``dwi``, ``MEGRE``,
        ``VFA``, ``IRT1``, ``MESE``, ``dce``; see :func:`tumorscope.io.bids.protocol_from_sidecar`).
    role : str, optional
        Default: the suffix.
    protocol : Protocol, optional
        Use this protocol instead of the sidecar's (e.g. b-values from ``--bval``).
    extra_files : mapping, optional
        More files whose hashes go into provenance (``{"bval": path}``).

    Raises
    ------
    DataError
        A missing image or a sidecar/``.bval`` that cannot be read (naming the file).
    """
    from ..files import regular_file
    from ..io.bids import protocol_from_sidecar, read_sidecar

    p = Path(path)
    if not p.exists():
        raise DataError("series file not found", file=p, field="series")
    regular_file(p, field="series")  # a folder or a named pipe: say what it is
    side = read_sidecar(p)
    proto = protocol if protocol is not None else protocol_from_sidecar(p, suffix, side)
    files: dict[str, Path] = {"series": p, **_beside(p)}
    files.update({k: Path(v) for k, v in (extra_files or {}).items()})
    return SeriesInput(p, role or suffix, proto, side, files, str(p))


@dataclass(frozen=True)
class MapFile:
    """One map a stage wrote.

    Attributes
    ----------
    model : str
        Model or measure name (``ivim``, ``extended_tofts``, ``vfa``, ``iron`` …).
    parameter : str
        Map name within it (``D``, ``Ktrans``, ``dR2star`` …).
    path : Path
        The image; its sidecar (units, provenance) is beside it.
    status : Path or None
        The status map of the fit it came from (uint8, ``FitStatus`` codes).
    series : str or None
        Role of the series whose grid it is on (where lesion masks must be moved to).
    fit : FitResult or None
        The fit it came from (for quality counts), if any.
    """

    model: str
    parameter: str
    path: Path
    status: Path | None = None
    series: str | None = None
    fit: FitResult | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        """``model.parameter``, the name of the map in indexes and tables."""
        return f"{self.model}.{self.parameter}"


@dataclass
class StageResult:
    """What a stage wrote and computed.

    Attributes
    ----------
    maps : list of MapFile
        The maps (rows of the ``maps`` table).
    files : list of Path
        Every file written (images, sidecars, status maps, tables).
    rows : dict of str to list of dict
        Tidy rows by table name (``measurements`` …).
    warnings : list of str
        The fits' summary warnings and other notes for the log.
    """

    maps: list[MapFile] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def extend(self, other: StageResult) -> StageResult:
        """Add another result's maps, files, rows and warnings to this one (returns self)."""
        self.maps += other.maps
        self.files += other.files
        for table, rows in other.rows.items():
            self.rows.setdefault(table, []).extend(rows)
        self.warnings += other.warnings
        return self


def with_sidecars(paths: Iterable[Path]) -> list[Path]:
    """The files, each NIfTI image followed by its JSON sidecar when it has one (the order a
    stage lists what it wrote in)."""
    from ..files import sidecar_of

    out: list[Path] = []
    for p in map(Path, paths):
        out.append(p)
        side = sidecar_of(p)
        if p.name.endswith(".nii.gz") and side.exists():
            out.append(side)
    return out


#: Where a stage fits when no mask is given (its options' ``region``): ``"all"`` the whole
#: volume, ``"body"`` the voxels with signal (:func:`signal_mask` of the stage's reference).
REGIONS = ("all", "body")
#: ``region="body"``: a voxel's reference signal at least this fraction of its 99th
#: percentile over the volume (the DCE stage's baseline signal rule).
BODY_FRACTION = 0.1


def check_region(region: str) -> None:
    """A :data:`REGIONS` value, else a :class:`~tumorscope.errors.FitError` naming it."""
    if region not in REGIONS:
        raise FitError(
            f"unknown region {region!r}; expected one of {', '.join(REGIONS)}", field="region"
        )


def signal_mask(reference: npt.ArrayLike) -> np.ndarray:
    """The voxels with signal: ``reference`` (one value per voxel, e.g. the mean at the lowest
    b-value, or the largest magnitude over a series' volumes) finite, > 0 and at least
    :data:`BODY_FRACTION` of its 99th percentile over the finite voxels (none if none is
    finite). The rule of the diffusion and relaxometry stages' ``region="body"``."""
    ref = np.asarray(reference, dtype=np.float64)
    finite = np.isfinite(ref)
    if not finite.any():
        return np.zeros(ref.shape, dtype=bool)
    high = float(np.percentile(ref[finite], 99.0))
    with np.errstate(invalid="ignore"):
        return finite & (ref >= BODY_FRACTION * high) & (ref > 0)
