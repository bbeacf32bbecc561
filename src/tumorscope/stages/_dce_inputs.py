"""Step 1 of the DCE stage: read and check every input before anything is written.

:func:`check_inputs` returns the DCE and VFA volumes with their protocols and files, the
relaxivity and hematocrit (options, then the sidecar, then the study manifest's ``dce:``
defaults), the AIF read from a file, the masks and the B1 map on the DCE grid and the model
class; see :mod:`tumorscope.stages.dce`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..errors import DataError, FitError, ProtocolError
from ..models import aif as aifmod
from ..protocol import DynamicProtocol, VFAProtocol
from ..volume import Volume
from .base import SeriesInput
from .fit import load_mask

if TYPE_CHECKING:
    from ..models.base import Model
    from .dce import DCEOptions

__all__ = ["POPULATION_AIFS", "Inputs", "check_inputs"]

_P = TypeVar("_P", DynamicProtocol, VFAProtocol)

#: Population AIFs by name (:func:`tumorscope.models.aif.population_aif`).
POPULATION_AIFS = ("parker", "georgiou", "mcgrath")


@dataclass
class Inputs:
    """Everything :func:`tumorscope.stages.dce.fit_dce` needs, checked before writing."""

    vol: Volume
    proto: DynamicProtocol
    dce_path: Path | None
    relaxivity: float
    hematocrit: float
    aif_file: tuple[np.ndarray, str, Path] | None  # plasma AIF, "plasma"/"blood", the file
    vfa_vol: Volume | None
    vfa_proto: VFAProtocol | None
    vfa_path: Path | None
    fit_mask: np.ndarray | None
    search_mask: np.ndarray | None
    b1_map: np.ndarray | None
    b1_path: Path | None
    model_cls: Callable[..., Model]  # the registered class

    @property
    def empty_mask(self) -> bool:
        """A mask was given and holds no voxel (every lesion gone): a note, not an error."""
        return self.fit_mask is not None and not self.fit_mask.any()


def _series(series: SeriesInput, cls: type[_P], what: str) -> tuple[Volume, _P, Path | None]:
    """The image (4-D, as many volumes as its protocol lists), its protocol and its file."""
    proto = series.protocol
    if not isinstance(proto, cls):
        raise ProtocolError(
            f"expected a {cls.__name__} for the {what} series, got {type(proto).__name__}",
            file=series.label,
            field="protocol",
        )
    path = series.files.get("series")
    vol = series.load()
    if vol.data.ndim != 4:
        raise DataError(
            f"expected a 4-D {what} series, got shape {vol.shape}", file=path, field="shape"
        )
    if vol.n_measurements != proto.n_measurements:
        listed = "FrameTimes" if cls is DynamicProtocol else "FlipAngle"
        raise DataError(
            f"the {what} series has {vol.n_measurements} volumes but {listed} lists "
            f"{proto.n_measurements}",
            file=path,
            field="dim[4]",
        )
    return vol, proto, path


def _resolve(
    value: float | None, sidecar: Mapping[str, Any], key: str, options: DCEOptions, name: str
) -> float:
    for v in (value, sidecar.get(key), options.defaults.get(name)):
        if v is not None:
            try:
                return float(v)
            except (TypeError, ValueError):
                raise ProtocolError(f"expected a number, got {v!r}", field=key) from None
    raise ProtocolError(
        f"no {name} given: set {key} in the DCE sidecar, '{name}' under 'dce:' in study.yaml, "
        f"or pass {name}=",
        field=key,
    )


def _read_aif_file(path: Path, times_s: np.ndarray, hematocrit: float) -> tuple[np.ndarray, str]:
    """Plasma AIF at the frame times from a CSV/TSV with ``time_s`` and ``cp_mM`` or ``cb_mM``."""
    head = aifmod.aif_text(path).splitlines()[:1]
    cols = next(csv.reader(head, delimiter="\t" if head and "\t" in head[0] else ","), [])
    cols = [c.strip() for c in cols]
    if "cp_mM" in cols:
        column, kind = "cp_mM", "plasma"
    elif "cb_mM" in cols:
        column, kind = "cb_mM", "blood"
    else:
        raise DataError(
            f"expected a column 'cp_mM' (plasma) or 'cb_mM' (whole blood); columns are {cols}",
            file=path,
            field="aif",
        )
    t, c = aifmod.load_aif_csv(path, concentration_column=column)
    if t[0] > times_s[0] + 1e-6 or t[-1] < times_s[-1] - 1e-6:
        raise DataError(
            f"the AIF covers {t[0]:g}-{t[-1]:g} s but the frames span "
            f"{times_s[0]:g}-{times_s[-1]:g} s",
            file=path,
            field="time_s",
        )
    c = np.interp(times_s, t, c)
    if kind == "blood":
        c = aifmod.blood_to_plasma(c, hematocrit=hematocrit)
    return c, kind


def _aif_file(
    options: DCEOptions, t: np.ndarray, hct: float
) -> tuple[np.ndarray, str, Path] | None:
    """The AIF read from a file, or None for a population or the automatic AIF."""
    name = str(options.aif)
    if name.lower() in (*POPULATION_AIFS, "auto"):
        return None
    path = Path(name)
    if not path.exists():
        raise FitError(
            f"unknown AIF {name!r}: expected one of {(*POPULATION_AIFS, 'auto')} or an "
            "existing CSV/TSV file",
            field="aif",
        )
    return (*_read_aif_file(path, t, hct), path)


def _check_grid(image: Volume, dce: Volume, what: str, file: Any, fld: str) -> None:
    """An image on the DCE grid (same shape and affine), or a :class:`DataError`."""
    if not image.same_grid(dce):
        raise DataError(
            f"the {what} grid {image.spatial_shape} differs from the DCE grid "
            f"{dce.spatial_shape} (or their affines differ); register them first",
            file=file,
            field=fld,
        )


def _load_b1(b1: Any, like: Volume) -> tuple[np.ndarray | None, Path | None]:
    """A relative flip-angle map on the grid of ``like`` (path, Volume or array)."""
    if b1 is None:
        return None, None
    path = None
    if isinstance(b1, str | os.PathLike):
        path = Path(b1)
        b1 = Volume.from_nifti(path)
    if isinstance(b1, Volume):
        _check_grid(b1, like, "B1 map", b1.source, "b1")
        arr = np.asarray(b1.data, dtype=float)
        if arr.ndim == 4 and arr.shape[3] == 1:
            arr = arr[..., 0]
    else:
        arr = np.asarray(b1, dtype=float)
    if arr.shape != like.spatial_shape:
        raise DataError(
            f"B1 map shape {arr.shape} does not match the grid {like.spatial_shape}",
            file=path,
            field="b1",
        )
    good = arr[np.isfinite(arr)]
    if good.size == 0 or not 0.2 < float(np.median(good)) < 3.0:
        raise DataError(
            "expected a relative flip-angle map near 1 (actual / nominal); divide a map in "
            "percent by 100",
            file=path,
            field="b1",
        )
    return arr, path


def check_inputs(
    dce: SeriesInput,
    vfa: SeriesInput | None,
    options: DCEOptions,
    mask: Any,
    aif_mask: Any,
    b1: Any,
) -> Inputs:
    """Step 1: read and check every input (nothing is written)."""
    from ..models.base import get_model

    if (vfa is None) == (options.t1_ms is None):
        raise FitError(
            "give exactly one of a VFA series (vfa=, --vfa) or a T1 value (t1_ms=, --t1-ms)",
            field="t1",
        )
    vol, proto, dce_path = _series(dce, DynamicProtocol, "DCE")
    r1 = _resolve(options.relaxivity, dce.sidecar, "Relaxivity", options, "relaxivity")
    hct = _resolve(options.hematocrit, dce.sidecar, "Hematocrit", options, "hematocrit")
    if not r1 > 0:
        raise ProtocolError(f"must be > 0 1/(mM.s), got {r1:g}", field="Relaxivity")
    if not 0.0 <= hct < 1.0:
        raise ProtocolError(f"must be in [0, 1), got {hct:g}", field="Hematocrit")
    aif_file = _aif_file(options, proto.t, hct)
    vfa_vol = vfa_proto = vfa_path = None
    if vfa is not None:
        vfa_vol, vfa_proto, vfa_path = _series(vfa, VFAProtocol, "VFA")
        _check_grid(vfa_vol, vol, "VFA series", vfa_path, "affine")
    fit_mask = load_mask(mask, vol)
    search_mask = load_mask(aif_mask, vol)
    b1_map, b1_path = _load_b1(b1, vol)
    model_cls: Callable[..., Model] = get_model(options.model)
    model_cls(proto, np.zeros(proto.n_measurements), method=options.method)  # checks the method
    return Inputs(
        vol, proto, dce_path, r1, hct, aif_file, vfa_vol, vfa_proto, vfa_path,
        fit_mask, search_mask, b1_map, b1_path, model_cls,
    )  # fmt: skip
