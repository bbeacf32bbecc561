"""The two echoes of a dual-echo DSC series: their roles and the checks of a pair.

A dual-echo gradient-echo DSC acquisition (two echo times in every frame; Vonken et al. 1999,
Paulson & Schmainda 2008) lives in a visit as two files, BIDS multi-echo style (one file per
echo, the ``echo-<index>`` entity, each sidecar with its own scalar ``EchoTime``)::

    perf/sub-01_ses-01_echo-1_dsc.nii.gz   role ``dsc``        (default pattern
                                                                ``dsc|echo-1_dsc``)
    perf/sub-01_ses-01_echo-2_dsc.nii.gz   role ``dsc_echo2``  (``echo-2_dsc``)

A visit with one ``..._dsc.nii.gz`` reads as before (a single echo). The pair must be one
acquisition: the same 4-D shape and grid, the same ``FrameTimes`` (to :data:`FRAME_TIME_TOL_S`)
and ``RepetitionTime``, and ``EchoTime`` of the second echo longer than the first's.
:func:`protocol_pair_problems` and :func:`grid_pair_problems` say what differs, naming the
second echo's file and the field; ``tumorscope validate`` reports them as errors and the DSC
stage refuses the pair with them before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..protocol import DynamicProtocol, Protocol

__all__ = [
    "DSC_ROLE",
    "ECHO2_ROLE",
    "FRAME_TIME_TOL_S",
    "grid_pair_problems",
    "protocol_pair_problems",
]

#: Role of the (first echo of the) DSC series, and of the second echo of a dual-echo DSC.
DSC_ROLE = "dsc"
ECHO2_ROLE = "dsc_echo2"
#: Frame times of the two echoes agree to this (s): they are the frames of one acquisition.
FRAME_TIME_TOL_S = 1e-3
_AFFINE_TOL_MM = 1e-3

#: (file, field, message) of one problem of a pair.
PairProblem = tuple[str, str, str]


def protocol_pair_problems(
    first: Protocol | None, second: Protocol | None, *, first_name: str, second_name: str
) -> list[PairProblem]:
    """What makes two DSC protocols not the two echoes of one acquisition.

    Parameters
    ----------
    first, second : Protocol or None
        The protocols of the first and second echo (from their sidecars).
    first_name, second_name : str
        How to name them (the second echo's sidecar, which the problems are reported on).

    Returns
    -------
    list of (file, field, message)
        Empty when ``second`` can be the second echo of ``first``: both dynamic with an
        ``EchoTime``, ``EchoTime`` (s) of the second longer, the same number of frames and
        ``FrameTimes`` (s, to :data:`FRAME_TIME_TOL_S`), the same ``RepetitionTime``.
    """
    out: list[PairProblem] = []
    if not isinstance(first, DynamicProtocol) or not isinstance(second, DynamicProtocol):
        return [(second_name, "FrameTimes", "both echoes of a dual-echo DSC need a DSC sidecar")]
    t1, t2 = np.asarray(first.frame_times_s), np.asarray(second.frame_times_s)
    if t1.size != t2.size:
        out.append(
            (
                second_name,
                "FrameTimes",
                f"{t2.size} frames, the first echo ({first_name}) has {t1.size}: the two echoes "
                "of a dual-echo DSC are one acquisition",
            )
        )
    else:
        bad = np.flatnonzero(np.abs(t1 - t2) > FRAME_TIME_TOL_S)
        if bad.size:
            i = int(bad[0])
            out.append(
                (
                    second_name,
                    "FrameTimes",
                    f"frame {i} at {t2[i]:g} s, {t1[i]:g} s in the first echo ({first_name}): "
                    "the two echoes of a dual-echo DSC are one acquisition",
                )
            )
    te1, te2 = first.te_ms, second.te_ms
    if te1 is not None and te2 is not None and not te2 > te1:
        out.append(
            (
                second_name,
                "EchoTime",
                f"the second echo's EchoTime {te2 / 1e3:g} s is not longer than the first's "
                f"{te1 / 1e3:g} s ({first_name})",
            )
        )
    if abs(first.tr_ms - second.tr_ms) > 1e-6:
        out.append(
            (
                second_name,
                "RepetitionTime",
                f"{second.tr_ms / 1e3:g} s, the first echo ({first_name}) has "
                f"{first.tr_ms / 1e3:g} s: the two echoes of a dual-echo DSC are one acquisition",
            )
        )
    return out


def grid_pair_problems(
    first_shape: Sequence[int],
    first_affine: np.ndarray,
    second_shape: Sequence[int],
    second_affine: np.ndarray,
    *,
    first_name: str,
    second_name: str,
) -> list[PairProblem]:
    """What makes two images not the two echoes of one DSC acquisition: their shapes (all
    four axes: field ``dim``) or their affines (``affine``, to 1e-3 mm) differ."""
    if tuple(first_shape) != tuple(second_shape):
        return [
            (
                second_name,
                "dim",
                f"shape {tuple(second_shape)}, the first echo ({first_name}) has "
                f"{tuple(first_shape)}: the two echoes of a dual-echo DSC are one acquisition",
            )
        ]
    if not np.allclose(first_affine, second_affine, atol=_AFFINE_TOL_MM):
        return [
            (
                second_name,
                "affine",
                f"the grid (affine) differs from the first echo's ({first_name}): the two "
                "echoes of a dual-echo DSC are one acquisition",
            )
        ]
    return []
