"""Relaxometry commands.

* ``tumorscope fit t1 SERIES``: VFA (default) or inversion recovery T1, optional B1 map;
* ``tumorscope fit t2 SERIES``: multi-echo spin echo T2 (plain, offset or Rician floor);
* ``tumorscope fit t2star SERIES``: multi-echo gradient echo T2*/R2* (Rician floor);

The acquisition comes from the BIDS sidecar beside the series (``FlipAngle`` and
``RepetitionTime``, ``EchoTime``, ``InversionTime``; times in s) unless given on the command
line (times in ms). Heavy imports happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import OutDir, PrefixOrDefault, parse_floats, user_errors
from ._output import Overwrite, Staging, staged_output
from .fit import fit_app

__all__: list[str] = []


def _floats(text: str | None, option: str) -> list[float] | None:
    return None if text is None else parse_floats(text, option)


def _series(path: Path, suffix: str, role: str, protocol: Any = None) -> Any:
    """The series given on the command line, with the acquisition given there (``protocol``)
    or read from its sidecar."""
    from ..io.bids import read_sidecar, sidecar_path
    from ..stages.base import read_series

    if protocol is None and not read_sidecar(path):
        from ..errors import DataError

        raise DataError(
            "no sidecar with the acquisition found; give it on the command line",
            file=sidecar_path(path),
        )
    return read_series(path, suffix, role=role, protocol=protocol)


def _echoes(te: list[float] | None) -> Any:
    from ..protocol import MultiEchoProtocol

    return None if te is None else MultiEchoProtocol(echo_times_ms=te)  # type: ignore[arg-type]


def _report(res: Any, stage: Staging) -> Any:
    """Print what was fitted and written (the paths after delivery); return the fit."""
    import numpy as np

    first = res.maps[0]
    fit = first.fit
    n = int(fit.mask.sum())
    bad = int(np.count_nonzero((fit.status > 2) & fit.mask))
    typer.echo(f"fitted {first.model} to {n:,} voxels ({bad:,} not usable, see status)")
    pre = first.status.name[: -len("status.nii.gz")]
    for path in res.files:
        if path.name.endswith(".nii.gz"):
            typer.echo(f"  {path.name[len(pre) : -len('.nii.gz')]:<16} {stage.final(path)}")
    return fit


# options the three fit commands share (one definition, one help text)
_Mask = Annotated[Path | None, typer.Option("--mask", help="Mask NIfTI on the series grid.")]
_NoiseSigma = Annotated[
    float | None,
    typer.Option("--noise-sigma", help="Rician noise level (signal units); estimated if omitted."),
]
_Chunk = Annotated[int | None, typer.Option("--chunk-voxels", help="Voxels per block.")]
_Region = Annotated[
    str,
    typer.Option(
        "--region",
        help="Without --mask: 'all' voxels, or 'body' (largest signal over the volumes >= 10% "
        "of its 99th percentile; the pipeline's default).",
    ),
]


def _echo_times(example: str) -> Any:
    """``--echo-times`` with an example of the command's sequence."""
    return typer.Option("--echo-times", help=f"Echo times (ms): {example}")


@fit_app.command("t1")
def t1(
    series: Annotated[Path, typer.Argument(help="4-D VFA or inversion recovery NIfTI series.")],
    out: OutDir,
    mask: _Mask = None,
    sequence: Annotated[
        str | None,
        typer.Option(
            "--sequence", help="vfa or ir (default: ir if the sidecar has InversionTime)."
        ),
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="VFA: nonlinear, despot1 or two_point.")
    ] = "nonlinear",
    b1: Annotated[
        Path | None, typer.Option("--b1", help="VFA: relative flip-angle map (1 = nominal).")
    ] = None,
    flip_angles: Annotated[
        str | None, typer.Option("--flip-angles", help="VFA flip angles, deg: 2,5,12")
    ] = None,
    tr_ms: Annotated[
        float | None, typer.Option("--tr-ms", help="VFA repetition time (ms).")
    ] = None,
    inversion_times: Annotated[
        str | None, typer.Option("--inversion-times", help="IR TIs (ms).")
    ] = None,
    prefix: PrefixOrDefault = None,
    chunk_voxels: _Chunk = None,
    region: _Region = "all",
    overwrite: Overwrite = False,
) -> None:
    """Fit T1 (VFA spoiled gradient echo or inversion recovery) and write M0, T1, R1 maps."""
    from ..errors import FitError
    from ..protocol import InversionRecoveryProtocol, VFAProtocol
    from ..stages.relaxometry import RelaxometryOptions, fit_relaxometry_series

    with user_errors(), staged_output(out, overwrite=overwrite, prefix=prefix) as stage:
        fa = _floats(flip_angles, "--flip-angles")
        ti = _floats(inversion_times, "--inversion-times")
        seq = sequence.lower() if sequence else None
        if seq not in (None, "vfa", "ir"):
            raise FitError(f"expected vfa or ir, got {sequence!r}", field="--sequence")
        if seq is None:
            if ti is not None:
                seq = "ir"
            elif fa is not None:
                seq = "vfa"
            else:
                from ..io.bids import read_sidecar

                seq = "ir" if "InversionTime" in read_sidecar(series) else "vfa"
        if seq == "vfa":
            if ti is not None:
                raise FitError("--inversion-times does not apply to VFA", field="--inversion-times")
            proto = None
            if fa is not None or tr_ms is not None:
                if fa is None or tr_ms is None:
                    raise FitError("give both --flip-angles and --tr-ms", field="--tr-ms")
                proto = VFAProtocol(flip_angles_deg=fa, tr_ms=tr_ms)  # type: ignore[arg-type]
            s = _series(series, "VFA", "t1_vfa", proto)
        else:
            if b1 is not None:
                raise FitError("--b1 applies to VFA only", field="--b1")
            if method != "nonlinear":
                raise FitError("--method applies to VFA only", field="--method")
            ir = None if ti is None else InversionRecoveryProtocol(inversion_times_ms=tuple(ti))
            s = _series(series, "IRT1", "t1_ir", ir)
        res = fit_relaxometry_series(
            s,
            out_dir=stage.folder,
            prefix=prefix,
            options=RelaxometryOptions(
                vfa_method=method,  # type: ignore[arg-type]
                chunk_voxels=chunk_voxels,
                region=region.lower(),
            ),
            mask=mask,
            voxel_maps=None if b1 is None else {"b1": b1},
        )
    _report(res, stage)


@fit_app.command("t2")
def t2(
    series: Annotated[Path, typer.Argument(help="4-D multi-echo spin echo NIfTI series.")],
    out: OutDir,
    mask: _Mask = None,
    echo_times: Annotated[str | None, _echo_times("10,20,30")] = None,
    floor: Annotated[str, typer.Option("--floor", help="none, offset or rician.")] = "none",
    noise_sigma: _NoiseSigma = None,
    prefix: PrefixOrDefault = None,
    chunk_voxels: _Chunk = None,
    region: _Region = "all",
    overwrite: Overwrite = False,
) -> None:
    """Fit mono-exponential T2 and write S0, T2, R2 (and offset) maps."""
    from ..errors import FitError
    from ..stages.relaxometry import RelaxometryOptions, fit_relaxometry_series

    with user_errors(), staged_output(out, overwrite=overwrite, prefix=prefix) as stage:
        te = _floats(echo_times, "--echo-times")
        if floor not in ("none", "offset", "rician"):
            raise FitError(f"expected none, offset or rician, got {floor!r}", field="--floor")
        if floor == "offset" and noise_sigma is not None:
            raise FitError("--noise-sigma needs --floor rician", field="--noise-sigma")
        opts = RelaxometryOptions(
            t2_floor=floor,  # type: ignore[arg-type]
            t2_noise_sigma=noise_sigma,
            chunk_voxels=chunk_voxels,
            region=region.lower(),
        )
        s = _series(series, "MESE", "t2", _echoes(te))
        res = fit_relaxometry_series(
            s, out_dir=stage.folder, prefix=prefix, options=opts, mask=mask
        )
    _report(res, stage)


@fit_app.command("t2star")
def t2star(
    series: Annotated[Path, typer.Argument(help="4-D multi-echo gradient echo NIfTI series.")],
    out: OutDir,
    mask: _Mask = None,
    echo_times: Annotated[str | None, _echo_times("2,4,6")] = None,
    floor: Annotated[str, typer.Option("--floor", help="rician or none.")] = "rician",
    noise_sigma: _NoiseSigma = None,
    noise_map: Annotated[
        Path | None,
        typer.Option("--noise-map", help="Spatially varying noise level map (NIfTI, series grid)."),
    ] = None,
    prefix: PrefixOrDefault = None,
    chunk_voxels: _Chunk = None,
    region: _Region = "all",
    overwrite: Overwrite = False,
) -> None:
    """Fit T2*/R2* (noise-floor aware) and write S0, R2star, T2star maps."""
    from ..stages.relaxometry import RelaxometryOptions, fit_relaxometry_series

    with user_errors(), staged_output(out, overwrite=overwrite, prefix=prefix) as stage:
        te = _floats(echo_times, "--echo-times")
        opts = RelaxometryOptions(
            t2star_floor=floor,  # type: ignore[arg-type]
            t2star_noise_sigma=noise_sigma,
            chunk_voxels=chunk_voxels,
            region=region.lower(),
        )
        res = fit_relaxometry_series(
            _series(series, "MEGRE", "t2star", _echoes(te)),
            out_dir=stage.folder,
            prefix=prefix,
            options=opts,
            mask=mask,
            voxel_maps=None if noise_map is None else {"noise_sigma_map": noise_map},
        )
    fit = _report(res, stage)
    sigma = fit.provenance["options"].get("noise_sigma")
    if isinstance(sigma, int | float):
        typer.echo(f"  noise sigma      {sigma:g}")
