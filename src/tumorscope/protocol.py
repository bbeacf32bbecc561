"""Acquisition protocols as frozen, self-validating dataclasses.

A protocol holds what a model needs to know about how a series was acquired, in
tumorscope's units (b in s/mm², times in ms for TR/TE/TI, dynamic frame times in s, angles in
degrees). Each validates itself on construction and raises :class:`ProtocolError` naming the
field and what is wrong, e.g. ``ProtocolError: bvalues: b-values must be >= 0, got -50 at
index 2``. Sequences are stored as tuples of float so protocols are hashable and picklable.

Readers convert from file conventions (BIDS stores TR/TE in s) before building a protocol;
``source`` names the file a protocol was read from so that errors raised later point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from .errors import ProtocolError

__all__ = [
    "CESTProtocol",
    "DiffusionProtocol",
    "DynamicProtocol",
    "InversionRecoveryProtocol",
    "MREProtocol",
    "MultiEchoProtocol",
    "Protocol",
    "VFAProtocol",
]


def _as_tuple(value: Any, name: str, source: str | None) -> tuple[float, ...]:
    if isinstance(value, str | bytes):
        raise ProtocolError(
            f"expected a sequence of numbers, got the string {value!r}", file=source, field=name
        )
    try:
        arr = np.asarray(value, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise ProtocolError(
            f"expected a sequence of numbers, got {value!r}", file=source, field=name
        ) from exc
    if arr.size == 0:
        raise ProtocolError("must not be empty", file=source, field=name)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ProtocolError(
            f"values must be finite, got {arr[bad[0]]} at index {bad[0]}", file=source, field=name
        )
    return tuple(float(v) for v in arr)


def _as_float(value: Any, name: str, source: str | None, *, positive: bool = True) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"expected a number, got {value!r}", file=source, field=name) from exc
    if not np.isfinite(x):
        raise ProtocolError(f"must be finite, got {x}", file=source, field=name)
    if positive and x <= 0:
        raise ProtocolError(f"must be > 0, got {x:g}", file=source, field=name)
    return x


def _check_min(
    values: tuple[float, ...],
    minimum: float,
    name: str,
    what: str,
    source: str | None,
    *,
    strict: bool = False,
) -> None:
    arr = np.asarray(values)
    bad = np.flatnonzero(arr <= minimum) if strict else np.flatnonzero(arr < minimum)
    if bad.size:
        op = ">" if strict else ">="
        raise ProtocolError(
            f"{what} must be {op} {minimum:g}, got {arr[bad[0]]:g} at index {bad[0]}",
            file=source,
            field=name,
        )


@dataclass(frozen=True)
class Protocol:
    """Base class: every protocol knows its number of measurements (4th axis length)."""

    kind: ClassVar[str] = "protocol"
    #: The field with one value per measurement (its length is :attr:`n_measurements`).
    axis_field: ClassVar[str] = ""
    source: str | None = field(default=None, kw_only=True, compare=False)

    @property
    def n_measurements(self) -> int:
        """Number of measurements: the length of the 4th axis of the series."""
        if not self.axis_field:
            raise NotImplementedError(f"{type(self).__name__} names no axis_field")
        return len(getattr(self, self.axis_field))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of the protocol's fields (for sidecars and provenance)."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            if f.name == "source":
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class DiffusionProtocol(Protocol):
    """Diffusion-weighted series.

    Parameters
    ----------
    bvalues : sequence of float
        b-values in s/mm², one per volume; at least two, all >= 0 and at least two distinct.
    bvecs : sequence of 3-vectors, optional
        Gradient directions (unit vectors; zero vectors allowed where b = 0). Trace-weighted
        (direction-averaged) data need none.
    """

    kind: ClassVar[str] = "dwi"
    axis_field: ClassVar[str] = "bvalues"
    bvalues: tuple[float, ...] = ()
    bvecs: tuple[tuple[float, float, float], ...] | None = None

    def __post_init__(self) -> None:
        b = _as_tuple(self.bvalues, "bvalues", self.source)
        _check_min(b, 0.0, "bvalues", "b-values", self.source)
        if len(b) < 2:
            raise ProtocolError(
                f"need at least 2 b-values, got {len(b)}", file=self.source, field="bvalues"
            )
        if len(set(b)) < 2:
            raise ProtocolError(
                "need at least 2 distinct b-values", file=self.source, field="bvalues"
            )
        object.__setattr__(self, "bvalues", b)
        if self.bvecs is not None:
            vecs = np.asarray(self.bvecs, dtype=float)
            if vecs.ndim == 2 and vecs.shape[0] == 3 and vecs.shape[1] != 3:
                vecs = vecs.T
            if vecs.shape != (len(b), 3):
                raise ProtocolError(
                    f"expected {len(b)} gradient directions of 3 components, got shape {vecs.shape}",
                    file=self.source,
                    field="bvecs",
                )
            if not np.all(np.isfinite(vecs)):
                raise ProtocolError(
                    "gradient directions must be finite", file=self.source, field="bvecs"
                )
            object.__setattr__(self, "bvecs", tuple(tuple(float(c) for c in v) for v in vecs))

    @property
    def b(self) -> np.ndarray:
        """b-values as a float64 array (s/mm²)."""
        return np.asarray(self.bvalues)


@dataclass(frozen=True)
class VFAProtocol(Protocol):
    """Variable flip angle spoiled gradient echo (T1 mapping).

    Parameters
    ----------
    flip_angles_deg : sequence of float
        Nominal flip angles in degrees, at least two distinct, each in (0, 180).
    tr_ms : float
        Repetition time in ms (> 0).
    """

    kind: ClassVar[str] = "vfa"
    axis_field: ClassVar[str] = "flip_angles_deg"
    flip_angles_deg: tuple[float, ...] = ()
    tr_ms: float = 0.0

    def __post_init__(self) -> None:
        fa = _as_tuple(self.flip_angles_deg, "flip_angles_deg", self.source)
        if len(fa) < 2:
            raise ProtocolError(
                f"need at least 2 flip angles for T1 mapping, got {len(fa)}",
                file=self.source,
                field="flip_angles_deg",
            )
        _check_min(fa, 0.0, "flip_angles_deg", "flip angles", self.source, strict=True)
        if max(fa) >= 180:
            raise ProtocolError(
                f"flip angles must be < 180 degrees, got {max(fa):g}",
                file=self.source,
                field="flip_angles_deg",
            )
        if len(set(fa)) < 2:
            raise ProtocolError(
                "need at least 2 distinct flip angles", file=self.source, field="flip_angles_deg"
            )
        object.__setattr__(self, "flip_angles_deg", fa)
        object.__setattr__(self, "tr_ms", _as_float(self.tr_ms, "tr_ms", self.source))


@dataclass(frozen=True)
class DynamicProtocol(Protocol):
    """Dynamic (DCE or DSC) series.

    Parameters
    ----------
    frame_times_s : sequence of float
        Acquisition time of each frame in s (strictly increasing; at least 3 frames).
    flip_angle_deg : float
        Flip angle in degrees.
    tr_ms : float
        Repetition time in ms.
    n_baseline : int
        Number of pre-contrast frames (>= 1, fewer than the number of frames).
    te_ms : float, optional
        Echo time in ms (DSC needs it).
    """

    kind: ClassVar[str] = "dynamic"
    axis_field: ClassVar[str] = "frame_times_s"
    frame_times_s: tuple[float, ...] = ()
    flip_angle_deg: float = 0.0
    tr_ms: float = 0.0
    n_baseline: int = 1
    te_ms: float | None = None

    def __post_init__(self) -> None:
        t = _as_tuple(self.frame_times_s, "frame_times_s", self.source)
        if len(t) < 3:
            raise ProtocolError(
                f"need at least 3 frames, got {len(t)}", file=self.source, field="frame_times_s"
            )
        d = np.diff(t)
        bad = np.flatnonzero(d <= 0)
        if bad.size:
            i = int(bad[0])
            raise ProtocolError(
                f"frame times must be strictly increasing, got {t[i]:g} then {t[i + 1]:g} at index {i + 1}",
                file=self.source,
                field="frame_times_s",
            )
        object.__setattr__(self, "frame_times_s", t)
        fa = _as_float(self.flip_angle_deg, "flip_angle_deg", self.source)
        if fa >= 180:
            raise ProtocolError(
                f"flip angle must be < 180 degrees, got {fa:g}",
                file=self.source,
                field="flip_angle_deg",
            )
        object.__setattr__(self, "flip_angle_deg", fa)
        object.__setattr__(self, "tr_ms", _as_float(self.tr_ms, "tr_ms", self.source))
        if isinstance(self.n_baseline, bool) or int(self.n_baseline) != self.n_baseline:
            raise ProtocolError(
                f"must be a whole number, got {self.n_baseline!r}",
                file=self.source,
                field="n_baseline",
            )
        nb = int(self.n_baseline)
        if not 1 <= nb < len(t):
            raise ProtocolError(
                f"must be between 1 and {len(t) - 1} (frames - 1), got {nb}",
                file=self.source,
                field="n_baseline",
            )
        object.__setattr__(self, "n_baseline", nb)
        if self.te_ms is not None:
            object.__setattr__(self, "te_ms", _as_float(self.te_ms, "te_ms", self.source))

    @property
    def t(self) -> np.ndarray:
        """Frame times as a float64 array (s)."""
        return np.asarray(self.frame_times_s)


@dataclass(frozen=True)
class MultiEchoProtocol(Protocol):
    """Multi-echo series (spin echo T2 or gradient echo T2*).

    Parameters
    ----------
    echo_times_ms : sequence of float
        Echo times in ms, > 0, strictly increasing, at least two.
    tr_ms : float, optional
        Repetition time in ms.
    flip_angle_deg : float, optional
        Flip angle in degrees.
    """

    kind: ClassVar[str] = "multiecho"
    axis_field: ClassVar[str] = "echo_times_ms"
    echo_times_ms: tuple[float, ...] = ()
    tr_ms: float | None = None
    flip_angle_deg: float | None = None

    def __post_init__(self) -> None:
        te = _as_tuple(self.echo_times_ms, "echo_times_ms", self.source)
        if len(te) < 2:
            raise ProtocolError(
                f"need at least 2 echo times, got {len(te)}",
                file=self.source,
                field="echo_times_ms",
            )
        _check_min(te, 0.0, "echo_times_ms", "echo times", self.source, strict=True)
        if np.any(np.diff(te) <= 0):
            raise ProtocolError(
                "echo times must be strictly increasing", file=self.source, field="echo_times_ms"
            )
        object.__setattr__(self, "echo_times_ms", te)
        if self.tr_ms is not None:
            object.__setattr__(self, "tr_ms", _as_float(self.tr_ms, "tr_ms", self.source))
        if self.flip_angle_deg is not None:
            object.__setattr__(
                self,
                "flip_angle_deg",
                _as_float(self.flip_angle_deg, "flip_angle_deg", self.source),
            )


@dataclass(frozen=True)
class InversionRecoveryProtocol(Protocol):
    """Inversion recovery series (T1 mapping).

    Parameters
    ----------
    inversion_times_ms : sequence of float
        Inversion times in ms, > 0, at least three distinct.
    tr_ms : float, optional
        Repetition time in ms.
    """

    kind: ClassVar[str] = "ir"
    axis_field: ClassVar[str] = "inversion_times_ms"
    inversion_times_ms: tuple[float, ...] = ()
    tr_ms: float | None = None

    def __post_init__(self) -> None:
        ti = _as_tuple(self.inversion_times_ms, "inversion_times_ms", self.source)
        _check_min(ti, 0.0, "inversion_times_ms", "inversion times", self.source, strict=True)
        if len(set(ti)) < 3:
            raise ProtocolError(
                f"need at least 3 distinct inversion times, got {len(set(ti))}",
                file=self.source,
                field="inversion_times_ms",
            )
        object.__setattr__(self, "inversion_times_ms", ti)
        if self.tr_ms is not None:
            object.__setattr__(self, "tr_ms", _as_float(self.tr_ms, "tr_ms", self.source))


@dataclass(frozen=True)
class MREProtocol(Protocol):
    """MR elastography wave images (wrapped phase, rad), one or several frequencies.

    The 4th axis of the series holds ``len(frequencies_hz) × n_directions × n_offsets``
    phase images, frequency slowest and time offset fastest:
    ``index = (f · n_directions + d) · n_offsets + t``.

    Parameters
    ----------
    frequencies_hz : sequence of float
        Vibration frequencies (Hz, > 0, distinct).
    n_offsets : int
        Time offsets per vibration period (≥ 3, equally spaced over one period).
    n_directions : int
        Motion-encoding directions: 1 (one component) or 3 (x, y, z of the image axes).
    encoding_efficiency_rad_per_um : sequence of float
        Phase per µm of displacement of the motion encoding, one per frequency (≠ 0).
    """

    kind: ClassVar[str] = "mre"
    frequencies_hz: tuple[float, ...] = ()
    n_offsets: int = 0
    n_directions: int = 1
    encoding_efficiency_rad_per_um: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        f = _as_tuple(self.frequencies_hz, "frequencies_hz", self.source)
        if not f:
            raise ProtocolError("no vibration frequency", file=self.source, field="frequencies_hz")
        _check_min(f, 0.0, "frequencies_hz", "frequencies", self.source, strict=True)
        if len(set(f)) != len(f):
            raise ProtocolError(
                "frequencies must be distinct", file=self.source, field="frequencies_hz"
            )
        object.__setattr__(self, "frequencies_hz", f)
        for name, lo, allowed in (("n_offsets", 3, None), ("n_directions", 1, (1, 3))):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
                raise ProtocolError(
                    f"must be an integer >= {lo}, got {v!r}", file=self.source, field=name
                )
            if allowed and v not in allowed:
                raise ProtocolError(
                    f"must be one of {allowed}, got {v}", file=self.source, field=name
                )
            object.__setattr__(self, name, int(v))
        e = _as_tuple(
            self.encoding_efficiency_rad_per_um, "encoding_efficiency_rad_per_um", self.source
        )
        if len(e) == 1 and len(f) > 1:
            e = e * len(f)
        if len(e) != len(f) or any(x == 0 for x in e):
            raise ProtocolError(
                f"need one non-zero encoding efficiency per frequency ({len(f)}), got {list(e)}",
                file=self.source,
                field="encoding_efficiency_rad_per_um",
            )
        object.__setattr__(self, "encoding_efficiency_rad_per_um", e)

    @property
    def n_measurements(self) -> int:
        return len(self.frequencies_hz) * self.n_directions * self.n_offsets


@dataclass(frozen=True)
class CESTProtocol(Protocol):
    """Saturation-transfer series: CEST, WASSR (B0) or WASABI (B0 and B1) Z-spectra.

    Parameters
    ----------
    offsets_ppm : sequence of float
        Saturation offset of each volume in ppm from water at the nominal field, in
        acquisition order. Unsaturated (M0) volumes are those with ``|offset| >=
        m0_threshold_ppm`` (scanners write e.g. -300 ppm or 1000 ppm for them); at least one.
    field_strength_t : float
        Main field in T (> 0).
    b1_ut : float
        Saturation pulse amplitude in µT (> 0; block pulses: the amplitude, CW: the CW
        amplitude; for shaped pulses the B1 average the vendor reports).
    saturation_time_s : float
        Total saturation time including inter-pulse gaps, s (> 0).
    n_pulses : int, default 1
        Number of saturation pulses (1 with ``duty_cycle = 1``: continuous wave).
    duty_cycle : float, default 1
        Fraction of the saturation time with RF on, in (0, 1].
    pulse_shape : str, default "block"
    purpose : {"cest", "wassr", "wasabi"}, default "cest"
    m0_threshold_ppm : float, default 100
    """

    kind: ClassVar[str] = "cest"
    axis_field: ClassVar[str] = "offsets_ppm"
    offsets_ppm: tuple[float, ...] = ()
    field_strength_t: float = 0.0
    b1_ut: float = 0.0
    saturation_time_s: float = 0.0
    n_pulses: int = 1
    duty_cycle: float = 1.0
    pulse_shape: str = "block"
    purpose: str = "cest"
    m0_threshold_ppm: float = 100.0

    def __post_init__(self) -> None:
        off = _as_tuple(self.offsets_ppm, "offsets_ppm", self.source)
        object.__setattr__(self, "offsets_ppm", off)
        for name in ("field_strength_t", "b1_ut", "saturation_time_s", "m0_threshold_ppm"):
            object.__setattr__(self, name, _as_float(getattr(self, name), name, self.source))
        n = self.n_pulses
        if isinstance(n, bool) or not isinstance(n, int | float) or int(n) != n or n < 1:
            raise ProtocolError(
                f"must be a whole number >= 1, got {n!r}", file=self.source, field="n_pulses"
            )
        object.__setattr__(self, "n_pulses", int(n))
        dc = _as_float(self.duty_cycle, "duty_cycle", self.source)
        if dc > 1:
            raise ProtocolError(
                f"must be in (0, 1], got {dc:g}", file=self.source, field="duty_cycle"
            )
        object.__setattr__(self, "duty_cycle", dc)
        if self.purpose not in ("cest", "wassr", "wasabi"):
            raise ProtocolError(
                f"expected 'cest', 'wassr' or 'wasabi', got {self.purpose!r}",
                file=self.source,
                field="purpose",
            )
        n_m0 = int(np.sum(self.m0_mask))
        if n_m0 == 0:
            raise ProtocolError(
                f"no unsaturated (M0) volume: no offset with |offset| >= "
                f"{self.m0_threshold_ppm:g} ppm",
                file=self.source,
                field="offsets_ppm",
            )
        if len(off) - n_m0 < 4:
            raise ProtocolError(
                f"need at least 4 saturated offsets, got {len(off) - n_m0}",
                file=self.source,
                field="offsets_ppm",
            )

    @property
    def m0_mask(self) -> np.ndarray:
        """Boolean mask of the unsaturated (M0) volumes."""
        return np.abs(np.asarray(self.offsets_ppm)) >= self.m0_threshold_ppm

    @property
    def saturated_offsets_ppm(self) -> np.ndarray:
        """Offsets (ppm) of the saturated volumes, in acquisition order."""
        return np.asarray(self.offsets_ppm)[~self.m0_mask]

    @property
    def pulse_duration_s(self) -> float:
        """Duration of one saturation pulse (s)."""
        return self.saturation_time_s * self.duty_cycle / self.n_pulses
