"""BIDS-style series files: image + JSON sidecar (+ ``.bval``/``.bvec``) → Volume + Protocol.

Times in sidecars are in seconds (BIDS); protocols hold TR/TE/TI in ms, so the reader
converts. Every problem names the file and the field. See ``docs/study-format.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, ProtocolError
from ..protocol import (
    DiffusionProtocol,
    DynamicProtocol,
    InversionRecoveryProtocol,
    MultiEchoProtocol,
    Protocol,
    VFAProtocol,
)
from ..units import s_to_ms

__all__ = [
    "NIFTI_SUFFIXES",
    "SUFFIX_AXES",
    "protocol_from_sidecar",
    "read_bval",
    "read_sidecar",
    "sidecar_path",
    "split_entities",
    "stem",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")

#: Name of the 4th (measurement) axis of a series, by BIDS suffix.
SUFFIX_AXES: dict[str, str] = {
    "dwi": "b",
    "VFA": "flip_angle",
    "dce": "t",
    "MEGRE": "echo",
    "MESE": "echo",
    "IRT1": "inversion",
}


def stem(path: Path) -> str:
    """File name without ``.nii``/``.nii.gz``."""
    name = path.name
    for s in NIFTI_SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return path.stem


def split_entities(path: Path) -> tuple[dict[str, str], str]:
    """BIDS entities and suffix of a file name: ``sub-01_ses-02_dwi`` → ({sub, ses}, 'dwi')."""
    parts = stem(path).split("_")
    entities: dict[str, str] = {}
    for p in parts[:-1]:
        if "-" in p:
            k, v = p.split("-", 1)
            entities[k] = v
    return entities, parts[-1]


def sidecar_path(image: Path) -> Path:
    return image.with_name(stem(image) + ".json")


def read_sidecar(image: Path) -> dict[str, Any]:
    """Read the JSON sidecar of an image; a missing sidecar is an empty dict."""
    p = sidecar_path(image)
    if not p.exists():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse JSON: {exc}", file=p) from exc
    if not isinstance(data, dict):
        raise DataError("expected a JSON object", file=p)
    return data


def read_bval(image: Path) -> np.ndarray:
    """b-values (s/mm²) from the ``.bval`` file beside a DWI image."""
    p = image.with_name(stem(image) + ".bval")
    if not p.exists():
        raise DataError("b-value file is missing (expected one b-value per volume)", file=p)
    try:
        values = np.array(p.read_text().split(), dtype=float)
    except ValueError as exc:
        raise DataError(f"b-values must be numbers: {exc}", file=p, field="bval") from exc
    return values


def _read_bvec(image: Path) -> np.ndarray | None:
    p = image.with_name(stem(image) + ".bvec")
    if not p.exists():
        return None
    try:
        rows = [r.split() for r in p.read_text().strip().splitlines()]
        return np.array(rows, dtype=float)
    except ValueError as exc:
        raise DataError(
            f"gradient directions must be numbers: {exc}", file=p, field="bvec"
        ) from exc


def _need(sidecar: dict[str, Any], key: str, file: Path) -> Any:
    if key not in sidecar or sidecar[key] is None:
        raise DataError("required sidecar field is missing", file=file, field=key)
    return sidecar[key]


def _as_list(value: Any, key: str, file: Path) -> list[float]:
    if not isinstance(value, list | tuple):
        raise DataError(f"expected a list of numbers, got {value!r}", file=file, field=key)
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError) as exc:
        raise DataError(f"expected a list of numbers, got {value!r}", file=file, field=key) from exc


def _number(value: Any, key: str, file: Path) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"expected a number, got {value!r}", file=file, field=key) from exc


def protocol_from_sidecar(image: Path, suffix: str, sidecar: dict[str, Any]) -> Protocol | None:
    """Build the acquisition protocol of a series from its sidecar (and ``.bval``).

    Returns None for series without a quantitative protocol (e.g. ``T2w``).

    Raises
    ------
    DataError
        A required field is missing or malformed (names the sidecar file and field).
    ProtocolError
        The values are impossible (names the sidecar file and field).
    """
    js = sidecar_path(image)
    src = str(js)
    try:
        if suffix == "dwi":
            bvals = read_bval(image)
            bvecs = _read_bvec(image)
            return DiffusionProtocol(
                tuple(bvals),
                bvecs=None
                if bvecs is None
                else tuple(map(tuple, bvecs.T if bvecs.shape[0] == 3 else bvecs)),
                source=str(image.with_name(stem(image) + ".bval")),
            )
        if suffix == "VFA":
            fa = _as_list(_need(sidecar, "FlipAngle", js), "FlipAngle", js)
            tr = _number(_need(sidecar, "RepetitionTime", js), "RepetitionTime", js)
            return VFAProtocol(tuple(fa), float(s_to_ms(tr)), source=src)
        if suffix == "dce":
            t = _as_list(_need(sidecar, "FrameTimes", js), "FrameTimes", js)
            fa_dce = _number(_need(sidecar, "FlipAngle", js), "FlipAngle", js)
            tr = _number(_need(sidecar, "RepetitionTime", js), "RepetitionTime", js)
            nb = _need(sidecar, "BaselineFrames", js)
            te = sidecar.get("EchoTime")
            return DynamicProtocol(
                tuple(t),
                fa_dce,
                float(s_to_ms(tr)),
                nb,
                te_ms=None if te is None else float(s_to_ms(_number(te, "EchoTime", js))),
                source=src,
            )
        if suffix in ("MEGRE", "MESE"):
            te_list = _as_list(_need(sidecar, "EchoTime", js), "EchoTime", js)
            tr_me = sidecar.get("RepetitionTime")
            fa_me = sidecar.get("FlipAngle")
            return MultiEchoProtocol(
                tuple(s_to_ms(te_list)),
                tr_ms=None
                if tr_me is None
                else float(s_to_ms(_number(tr_me, "RepetitionTime", js))),
                flip_angle_deg=None if fa_me is None else _number(fa_me, "FlipAngle", js),
                source=src,
            )
        if suffix == "IRT1":
            ti = _as_list(_need(sidecar, "InversionTime", js), "InversionTime", js)
            tr_ir = sidecar.get("RepetitionTime")
            return InversionRecoveryProtocol(
                tuple(s_to_ms(ti)),
                tr_ms=None
                if tr_ir is None
                else float(s_to_ms(_number(tr_ir, "RepetitionTime", js))),
                source=src,
            )
    except ProtocolError as exc:
        # map protocol field names back to the sidecar's where they differ
        fields = {
            "flip_angles_deg": "FlipAngle",
            "flip_angle_deg": "FlipAngle",
            "tr_ms": "RepetitionTime",
            "frame_times_s": "FrameTimes",
            "n_baseline": "BaselineFrames",
            "echo_times_ms": "EchoTime",
            "te_ms": "EchoTime",
            "inversion_times_ms": "InversionTime",
        }
        if exc.field in fields:
            raise ProtocolError(exc.message, file=exc.file, field=fields[exc.field]) from exc
        raise
    return None
