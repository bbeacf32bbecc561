"""BIDS-style series files: image + JSON sidecar (+ ``.bval``/``.bvec``) → Volume + Protocol.

Times in sidecars are in seconds (BIDS); protocols hold TR/TE/TI in ms, so the reader
converts. Every problem names the file and the field. See ``docs/study-format.md``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, ProtocolError
from ..files import regular_file, sidecar_of
from ..protocol import (
    CESTProtocol,
    DiffusionProtocol,
    DynamicProtocol,
    InversionRecoveryProtocol,
    MREProtocol,
    MultiEchoProtocol,
    Protocol,
    VFAProtocol,
)
from ..units import s_to_ms

__all__ = [
    "NIFTI_SUFFIXES",
    "SINGLE_VOLUME_SUFFIXES",
    "SUFFIX_AXES",
    "check_pet_sidecar",
    "file_beside",
    "implausible_fields",
    "protocol_from_sidecar",
    "read_bval",
    "read_bvec",
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
    "dsc": "t",
    "MEGRE": "echo",
    "MESE": "echo",
    "IRT1": "inversion",
    "cest": "offset",
    "wassr": "offset",
    "WASABI": "offset",
}

#: Sidecar fields that are numbers (one JSON number, or a list of them) in *every* series,
#: checked whatever the series (a T2w's or a DWI's ``EchoTime`` too, though no fit reads it);
#: ``Hematocrit`` is a fraction in (0, 1) and ``Relaxivity`` (1/(mM·s)) > 0 as well.
NUMERIC_FIELDS = (
    "EchoTime",
    "RepetitionTime",
    "InversionTime",
    "FlipAngle",
    "MagneticFieldStrength",
    "FrameTimes",
    "Hematocrit",
    "Relaxivity",
)
#: Time fields (s) that are finite and >= 0 in every series, with the bound (s) beyond which a
#: value is impossible (an error) and the one beyond which it is implausible (a warning of
#: ``validate``). No echo is left after 1 s (the longest echo times of clinical imaging and
#: MRS are about 0.3 s), so an EchoTime over 1 s is a value in ms. A repetition or inversion
#: time of several seconds is normal (IR, spin echo); over 30 s none is used.
TIME_BOUNDS_S: dict[str, tuple[float, float]] = {
    "EchoTime": (1.0, 1.0),
    "RepetitionTime": (math.inf, 30.0),
    "InversionTime": (math.inf, 30.0),
}
#: Series whose T1 comes from the spoiled gradient-echo equation (VFA, DCE): a RepetitionTime
#: over this (s) is no such protocol (they use 2–20 ms); 5.0 is a TR of 5 ms written in ms.
SPGR_MAX_TR_S = 0.1

#: Suffixes of single-volume images: 3-D (a 4th axis of length 1 is accepted). The BIDS
#: anatomical images, the 19F image and its tube map, and masks. Any other series may be 4-D.
SINGLE_VOLUME_SUFFIXES = ("T1w", "T2w", "PDw", "T2starw", "FLAIR", "19F", "19Ftubes", "mask")

#: BIDS suffix → purpose of a saturation-transfer series (:class:`CESTProtocol`).
CEST_SUFFIXES: dict[str, str] = {"cest": "cest", "wassr": "wassr", "WASABI": "wasabi"}


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
    """The JSON sidecar beside an image (:func:`tumorscope.files.sidecar_of`)."""
    return sidecar_of(image)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members as a dict; a key listed twice is an error (json's default
    keeps the last value silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DataError(f"key {key!r} is listed twice; keep one value", field=key)
        out[key] = value
    return out


def read_sidecar(image: Path) -> dict[str, Any]:
    """Read the JSON sidecar of an image; a missing sidecar is an empty dict.

    Raises
    ------
    DataError
        The sidecar is not a regular file (a named pipe is never opened), is not JSON, is
        not a JSON object, or lists a key twice (naming the file, and the key).
    """
    p = sidecar_path(image)
    if not p.exists():
        return {}
    regular_file(p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except DataError as exc:  # a duplicate key
        raise DataError(exc.message, file=p, field=exc.field) from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"cannot parse JSON: {exc}", file=p) from exc
    except RecursionError:
        raise DataError("cannot parse JSON: nested too deeply", file=p) from None
    if not isinstance(data, dict):
        raise DataError("expected a JSON object", file=p)
    return data


def file_beside(path: str | os.PathLike[str], extension: str) -> Path:
    """``path`` itself when it has ``extension``, else the file of that extension beside the
    image ``path`` (same stem): ``x.nii.gz`` → ``x.bval``."""
    p = Path(path)
    return p if p.name.endswith(extension) else p.with_name(stem(p) + extension)


def _given_or_beside(path: str | os.PathLike[str], extension: str) -> Path:
    """The file beside ``path`` when ``path`` is a NIfTI image, else ``path`` itself (a
    ``--bval`` given as ``bvals.txt`` or as a folder is read, or refused, as given: never a
    file the user did not name)."""
    p = Path(path)
    if p.name.endswith((".nii", ".nii.gz")) and not p.name.endswith(extension):
        return file_beside(p, extension)
    return p


def _numbers(p: Path, what: str, field: str) -> list[list[float]]:
    """The rows of numbers of a whitespace-separated text file (DataError naming file, field)."""
    regular_file(p, field=field)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {what}: {exc}", file=p, field=field) from exc
    try:
        rows = [[float(x) for x in line.split()] for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise DataError(f"{what} must be numbers: {exc}", file=p, field=field) from exc
    if not rows:
        raise DataError(f"the file holds no {what}", file=p, field=field)
    if not np.all(np.isfinite([x for row in rows for x in row])):
        raise DataError(f"{what} must be finite numbers", file=p, field=field)
    return rows


def read_bval(path: str | os.PathLike[str]) -> np.ndarray:
    """b-values (s/mm²) of a DWI series, one per volume.

    Parameters
    ----------
    path : path-like
        The ``.bval`` file itself, or the image (``.nii``/``.nii.gz``) whose ``.bval`` lies
        beside it with the same stem. The file holds whitespace-separated numbers (FSL/BIDS:
        one row; one value per line is accepted too).

    Returns
    -------
    ndarray of float, shape (N,)

    Raises
    ------
    DataError
        The file is missing, empty, or holds something else than finite numbers (naming the
        file and the field ``bval``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "sub-01_dwi.bval").write_text("0 500 1000")
    >>> read_bval(d / "sub-01_dwi.nii.gz").tolist()
    [0.0, 500.0, 1000.0]
    """
    p = _given_or_beside(path, ".bval")
    if not p.exists():
        raise DataError(
            "b-value file is missing (expected one b-value per volume)", file=p, field="bval"
        )
    return np.array([x for row in _numbers(p, "b-values", "bval") for x in row], dtype=float)


def read_bvec(path: str | os.PathLike[str]) -> np.ndarray | None:
    """Gradient directions of a DWI series, one row (x, y, z) per volume.

    Parameters
    ----------
    path : path-like
        The ``.bvec`` file itself, or the image whose ``.bvec`` lies beside it. The file holds
        three rows (x, y and z components, FSL/BIDS) or one row of three values per volume.

    Returns
    -------
    ndarray of float, shape (N, 3), or None
        None when ``path`` is an image without a ``.bvec`` beside it (trace-weighted data
        need no directions).

    Raises
    ------
    DataError
        A ``.bvec`` path that does not exist, rows of different lengths, neither three rows nor
        three columns, or values that are not finite numbers (naming the file and the field
        ``bvec``).
    """
    p = _given_or_beside(path, ".bvec")
    if not p.exists():
        if p == Path(path):
            raise DataError("gradient direction file is missing", file=p, field="bvec")
        return None
    rows = _numbers(p, "gradient directions", "bvec")
    if len({len(r) for r in rows}) > 1:
        raise DataError(
            "gradient directions: every row must hold the same number of values, got "
            f"{[len(r) for r in rows]}",
            file=p,
            field="bvec",
        )
    vecs = np.array(rows, dtype=float)
    if vecs.shape[0] == 3:  # x, y and z rows (FSL/BIDS layout)
        return vecs.T
    if vecs.shape[1] == 3:
        return vecs
    raise DataError(
        f"gradient directions: expected 3 rows (x, y, z) or 3 columns, got shape {vecs.shape}",
        file=p,
        field="bvec",
    )


def _need(sidecar: dict[str, Any], key: str, file: Path) -> Any:
    if key not in sidecar:
        raise DataError("required sidecar field is missing", file=file, field=key)
    if sidecar[key] is None:
        raise DataError("required sidecar field is null (expected a value)", file=file, field=key)
    return sidecar[key]


def _is_number(value: Any) -> bool:
    """A JSON number: ``int`` or ``float``, not ``bool`` (``true`` is no number) and not text
    (``"0.005"`` is no number either: a value is read as the file writes it, never guessed)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_list(value: Any, key: str, file: Path) -> list[float]:
    """A list of JSON numbers (:func:`_is_number`) as floats."""
    if not isinstance(value, list | tuple) or not all(_is_number(v) for v in value):
        raise DataError(f"expected a list of numbers, got {value!r}", file=file, field=key)
    try:
        return [float(v) for v in value]
    except OverflowError as exc:  # an integer beyond float range
        raise DataError(f"expected a list of numbers, got {value!r}", file=file, field=key) from exc


def _number(value: Any, key: str, file: Path) -> float:
    """A JSON number (:func:`_is_number`) as a float."""
    if not _is_number(value):
        raise DataError(f"expected a number, got {value!r}", file=file, field=key)
    try:
        return float(value)
    except OverflowError as exc:  # an integer beyond float range
        raise DataError(f"expected a number, got {value!r}", file=file, field=key) from exc


#: The largest whole number a sidecar count (directions, offsets, …) may hold.
_WHOLE_MAX = 1_000_000


def _whole(value: Any, key: str, file: Path) -> int:
    """A whole number of the sidecar (JSON number without a fraction; not a list or text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"expected a whole number, got {value!r}", file=file, field=key)
    if isinstance(value, float) and not value.is_integer():
        raise DataError(f"expected a whole number, got {value!r}", file=file, field=key)
    if abs(value) > _WHOLE_MAX:  # a count of a protocol: 1e308 is shown as written, not as
        # its 309 digits
        shown = f"{value:g}" if isinstance(value, float) else f"{len(str(abs(value)))} digits"
        raise DataError(
            f"expected a whole number of at most {_WHOLE_MAX:,}, got {shown}", file=file, field=key
        )
    return int(value)


def _check_common(sidecar: dict[str, Any], js: Path) -> None:
    """The fields of :data:`NUMERIC_FIELDS` are JSON numbers (or lists of them) and the times
    of :data:`TIME_BOUNDS_S` finite, >= 0 and within their bounds, in any series."""
    for key in NUMERIC_FIELDS:
        value = sidecar.get(key)
        if value is None:
            continue
        values = _as_list(value, key, js) if isinstance(value, list) else [_number(value, key, js)]
        if key == "Hematocrit" and not all(0.0 < v < 1.0 for v in values):
            raise ProtocolError(
                f"expected a fraction between 0 and 1 (e.g. 0.42), got {value!r}",
                file=js,
                field=key,
            )
        if key == "Relaxivity" and not all(math.isfinite(v) and v > 0 for v in values):
            raise ProtocolError(
                f"expected a number > 0 (1/(mM·s)), got {value!r}", file=js, field=key
            )
        if key not in TIME_BOUNDS_S:
            continue
        most = TIME_BOUNDS_S[key][0]
        for v in values:
            if not (math.isfinite(v) and v >= 0):
                raise ProtocolError(f"must be a finite time >= 0 s, got {v!r}", file=js, field=key)
            if v > most:
                raise ProtocolError(
                    f"{v:g} s is impossible (at most {most:g} s); BIDS times are in seconds: "
                    f"was it written in ms ({v:g} ms = {v / 1000:g} s)?",
                    file=js,
                    field=key,
                )


def _check_spgr_tr(tr_s: float, suffix: str, js: Path) -> None:
    """A spoiled gradient-echo T1 series (VFA, DCE) has a TR of at most :data:`SPGR_MAX_TR_S`."""
    if math.isfinite(tr_s) and tr_s > SPGR_MAX_TR_S:
        raise ProtocolError(
            f"{tr_s:g} s is no {suffix} (spoiled gradient echo) repetition time: those are "
            f"at most {SPGR_MAX_TR_S:g} s; BIDS times are in seconds: was it written in ms "
            f"({tr_s:g} ms = {tr_s / 1000:g} s)?",
            file=js,
            field="RepetitionTime",
        )


def implausible_fields(sidecar: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field, message)`` of each time of a sidecar that is possible but implausible (beyond
    the second bound of :data:`TIME_BOUNDS_S`): ``validate`` warns of them.

    For a sidecar that :func:`protocol_from_sidecar` accepted (its times are numbers).
    """
    found = []
    for key, (_, plausible) in TIME_BOUNDS_S.items():
        value = sidecar.get(key)
        values = value if isinstance(value, list) else [value]
        big = [
            v
            for v in values
            if isinstance(v, int | float) and not isinstance(v, bool) and v > plausible
        ]
        if big:
            found.append(
                (
                    key,
                    f"{big[0]:g} s is implausible (over {plausible:g} s); BIDS times are in "
                    "seconds: was it written in ms?",
                )
            )
    return found


def _optional_ms(sidecar: dict[str, Any], key: str, file: Path) -> float | None:
    """An optional time field of the sidecar (seconds) in ms, None when absent."""
    value = sidecar.get(key)
    return None if value is None else float(s_to_ms(_number(value, key, file)))


def protocol_from_sidecar(image: Path, suffix: str, sidecar: dict[str, Any]) -> Protocol | None:
    """Build the acquisition protocol of a series from its sidecar (and ``.bval``).

    Returns None for series without a quantitative protocol (e.g. ``T2w``).

    Numbers must be JSON numbers: ``true`` and ``"0.005"`` are refused, never converted
    (:func:`_is_number`); the fields of :data:`NUMERIC_FIELDS` are checked so in every
    series, with the bounds of :data:`TIME_BOUNDS_S` (and :data:`SPGR_MAX_TR_S` for VFA and
    DCE).

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
        _check_common(sidecar, js)
        if suffix == "dwi":
            bvecs = read_bvec(image)
            return DiffusionProtocol(
                tuple(read_bval(image)),
                bvecs=None if bvecs is None else tuple(map(tuple, bvecs)),
                source=str(image.with_name(stem(image) + ".bval")),
            )
        if suffix == "VFA":
            fa = _as_list(_need(sidecar, "FlipAngle", js), "FlipAngle", js)
            tr = _number(_need(sidecar, "RepetitionTime", js), "RepetitionTime", js)
            _check_spgr_tr(tr, suffix, js)
            return VFAProtocol(tuple(fa), float(s_to_ms(tr)), source=src)
        if suffix == "dce":
            t = _as_list(_need(sidecar, "FrameTimes", js), "FrameTimes", js)
            fa_dce = _number(_need(sidecar, "FlipAngle", js), "FlipAngle", js)
            tr = _number(_need(sidecar, "RepetitionTime", js), "RepetitionTime", js)
            nb = _whole(_need(sidecar, "BaselineFrames", js), "BaselineFrames", js)
            _check_spgr_tr(tr, suffix, js)
            return DynamicProtocol(
                tuple(t),
                fa_dce,
                float(s_to_ms(tr)),
                nb,
                te_ms=_optional_ms(sidecar, "EchoTime", js),
                source=src,
            )
        if suffix == "dsc":  # DSC perfusion: EchoTime needed, BaselineFrames optional
            t = _as_list(_need(sidecar, "FrameTimes", js), "FrameTimes", js)
            te = _number(_need(sidecar, "EchoTime", js), "EchoTime", js)
            nb_raw = sidecar.get("BaselineFrames")
            return DynamicProtocol(
                tuple(t),
                _number(_need(sidecar, "FlipAngle", js), "FlipAngle", js),
                float(s_to_ms(_number(_need(sidecar, "RepetitionTime", js), "RepetitionTime", js))),
                1 if nb_raw is None else _whole(nb_raw, "BaselineFrames", js),
                te_ms=float(s_to_ms(te)),
                source=src,
            )
        if suffix in ("MEGRE", "MESE"):
            te_list = _as_list(_need(sidecar, "EchoTime", js), "EchoTime", js)
            fa_me = sidecar.get("FlipAngle")
            return MultiEchoProtocol(
                tuple(s_to_ms(te_list)),
                tr_ms=_optional_ms(sidecar, "RepetitionTime", js),
                flip_angle_deg=None if fa_me is None else _number(fa_me, "FlipAngle", js),
                source=src,
            )
        if suffix == "MRE":
            # one number or a list (one per frequency)
            freq, eff = (
                _as_list(v if isinstance(v, list | tuple) else [v], k, js)
                for k in ("VibrationFrequency", "MotionEncodingEfficiency")
                for v in (_need(sidecar, k, js),)
            )
            return MREProtocol(
                tuple(freq),
                _whole(_need(sidecar, "PhaseOffsets", js), "PhaseOffsets", js),
                _whole(sidecar.get("EncodingDirections", 1), "EncodingDirections", js),
                tuple(eff),
                source=src,
            )
        if suffix in ("IRT1", "MOLLI"):
            ti = _as_list(_need(sidecar, "InversionTime", js), "InversionTime", js)
            return InversionRecoveryProtocol(
                tuple(s_to_ms(ti)),
                tr_ms=_optional_ms(sidecar, "RepetitionTime", js),
                source=src,
            )
        if suffix in CEST_SUFFIXES:
            return _cest_protocol(sidecar, js, CEST_SUFFIXES[suffix])
        if suffix == "pet":  # no protocol object: the fields the PET step reads, checked
            check_pet_sidecar(sidecar, js)
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
            "frequencies_hz": "VibrationFrequency",
            "n_offsets": "PhaseOffsets",
            "n_directions": "EncodingDirections",
            "encoding_efficiency_rad_per_um": "MotionEncodingEfficiency",
            "offsets_ppm": "SaturationOffsets",
            "field_strength_t": "MagneticFieldStrength",
            "b1_ut": "SaturationB1",
            "saturation_time_s": "SaturationDuration",
            "n_pulses": "SaturationPulseNumber",
            "duty_cycle": "SaturationDutyCycle",
            "m0_threshold_ppm": "M0OffsetThreshold",
        }
        if exc.field in fields:
            raise ProtocolError(exc.message, file=exc.file, field=fields[exc.field]) from exc
        raise
    return None


#: BIDS-PET fields that are positive numbers when given (``InjectedRadioactivity`` in MBq,
#: ``RadionuclideHalfLife`` s, ``BodyWeight`` kg, ``BodyHeight`` m).
PET_POSITIVE = ("InjectedRadioactivity", "RadionuclideHalfLife", "BodyWeight", "BodyHeight")


def check_pet_sidecar(sidecar: Mapping[str, Any], js: str | os.PathLike[str]) -> None:
    """Check what the PET step (:func:`tumorscope.stages.pet.suv_factor_of`, ``pet_uptake``)
    reads of a BIDS-PET sidecar, so that ``validate`` finds it before a run.

    ``Units`` is ``Bq/mL``; ``SUVbwFactor`` (one number or one per frame) is positive; the
    fields of :data:`PET_POSITIVE`, when given, are positive numbers. Without a factor for
    every frame, the SUV is computed from ``InjectedRadioactivity``, ``RadionuclideHalfLife``
    and ``BodyWeight`` (required then), ``DecayCorrection`` (``START``, ``ADMIN`` or
    ``NONE``; default from ``ImageDecayCorrected``), ``ScanStart`` (s; for NONE the frame
    starts ``FrameTimesStart`` may stand in) and ``InjectionStart`` (s, default 0).

    Raises
    ------
    DataError
        Naming the sidecar file and the field.
    """
    js = Path(js)
    units = sidecar.get("Units")
    if not isinstance(units, str) or units.replace(" ", "") not in ("Bq/mL", "Bq/ml"):
        raise DataError(
            f"expected 'Bq/mL' (activity concentration), got {units!r}", file=js, field="Units"
        )

    def positive(key: str, value: Any) -> float:
        x = _number(value, key, js)
        if not (math.isfinite(x) and x > 0):
            raise DataError(f"expected a positive number, got {value!r}", file=js, field=key)
        return x

    for key in PET_POSITIVE:
        if sidecar.get(key) is not None:
            positive(key, sidecar[key])
    factor = sidecar.get("SUVbwFactor")
    factors = factor if isinstance(factor, list) else [factor]
    for f in factors:
        if f is not None:
            positive("SUVbwFactor", f)
    if factor is not None and factors and None not in factors:
        return
    why = "needed for the SUV without SUVbwFactor"
    for key in ("InjectedRadioactivity", "RadionuclideHalfLife", "BodyWeight"):
        if sidecar.get(key) is None:
            raise DataError(f"required sidecar field is missing ({why})", file=js, field=key)
    decay = sidecar.get("DecayCorrection")
    if decay is not None and decay not in ("START", "ADMIN", "NONE"):
        raise DataError(
            f"expected START, ADMIN or NONE, got {decay!r}", file=js, field="DecayCorrection"
        )
    for key in ("ScanStart", "InjectionStart"):
        if sidecar.get(key) is not None:
            _number(sidecar[key], key, js)
    for key in ("FrameTimesStart", "FrameDuration"):
        value = sidecar.get(key)
        if value is not None and not (
            isinstance(value, list) and all(v is None or _is_number(v) for v in value)
        ):
            raise DataError(f"expected a list of numbers, got {value!r}", file=js, field=key)
    none = (decay or ("START" if sidecar.get("ImageDecayCorrected") else "NONE")) == "NONE"
    if sidecar.get("ScanStart") is None and not (none and sidecar.get("FrameTimesStart")):
        raise DataError(f"required sidecar field is missing ({why})", file=js, field="ScanStart")


def _cest_protocol(sidecar: dict[str, Any], js: Path, purpose: str) -> CESTProtocol:
    """A saturation-transfer protocol from the sidecar.

    Fields (tumorscope's convention; BIDS has none for CEST yet): ``MagneticFieldStrength``
    (T, BIDS), ``SaturationOffsets`` (one per volume, acquisition order) with
    ``SaturationOffsetsUnit`` ``"ppm"`` (default) or ``"Hz"`` (converted with the field),
    ``SaturationB1`` (µT), ``SaturationDuration`` (s, total including gaps),
    ``SaturationPulseNumber`` (default 1), ``SaturationDutyCycle`` (0–1, default 1),
    ``SaturationPulseShape`` (default ``"block"``), ``M0OffsetThreshold`` (ppm, default 100:
    volumes at ``|offset| >=`` it are unsaturated M0 images).
    """
    field_t = _number(_need(sidecar, "MagneticFieldStrength", js), "MagneticFieldStrength", js)
    off = _as_list(_need(sidecar, "SaturationOffsets", js), "SaturationOffsets", js)
    unit = sidecar.get("SaturationOffsetsUnit", "ppm")
    if unit not in ("ppm", "Hz"):
        raise DataError(
            f"expected 'ppm' or 'Hz', got {unit!r}", file=js, field="SaturationOffsetsUnit"
        )
    if unit == "Hz":
        if not (np.isfinite(field_t) and field_t > 0):
            raise ProtocolError(
                f"must be > 0 to convert Hz offsets, got {field_t!r}",
                file=str(js),
                field="MagneticFieldStrength",
            )
        off = [v / (42.577478518 * field_t) for v in off]
    n_pulses = sidecar.get("SaturationPulseNumber", 1)
    return CESTProtocol(
        tuple(off),
        field_strength_t=field_t,
        b1_ut=_number(_need(sidecar, "SaturationB1", js), "SaturationB1", js),
        saturation_time_s=_number(
            _need(sidecar, "SaturationDuration", js), "SaturationDuration", js
        ),
        n_pulses=_whole(n_pulses, "SaturationPulseNumber", js),
        duty_cycle=_number(sidecar.get("SaturationDutyCycle", 1.0), "SaturationDutyCycle", js),
        pulse_shape=str(sidecar.get("SaturationPulseShape", "block")),
        purpose=purpose,
        m0_threshold_ppm=_number(sidecar.get("M0OffsetThreshold", 100.0), "M0OffsetThreshold", js),
        source=str(js),
    )
