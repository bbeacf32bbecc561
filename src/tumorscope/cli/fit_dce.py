"""``tumorscope fit dce``: DCE series (+ VFA series) to T1, concentration and parameter maps.

A thin adapter over :func:`tumorscope.stages.dce.fit_dce`, the function the pipeline's
``fit_dce`` step also calls: with the same series, mask, prefix and options both write the same
files, byte for byte.

The command is attached to the ``fit`` group of :mod:`tumorscope.cli.fit` when this module is
imported (command discovery imports it); :func:`register` has nothing left to do. Heavy
imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    ChunkVoxels,
    MaskFile,
    OutDir,
    Prefix,
    print_outputs,
    quiet_warnings,
    user_errors,
)
from ._output import Overwrite, staged_output
from .fit import fit_app

__all__ = ["dce", "register"]

_AIF_HELP = (
    "parker, georgiou, mcgrath (population), auto (image-derived) or a CSV/TSV file with "
    "time_s and cp_mM (plasma) or cb_mM (blood)."
)


def _opt(flag: str, text: str) -> typer.models.OptionInfo:
    return typer.Option(flag, help=text)


@fit_app.command("dce")
def dce(
    series: Annotated[Path, typer.Argument(help="4-D DCE NIfTI series with its JSON sidecar.")],
    out: OutDir,
    vfa: Annotated[
        Path | None, _opt("--vfa", "4-D VFA NIfTI series (+ sidecar) on the same grid, for T1.")
    ] = None,
    t1_ms: Annotated[
        float | None, _opt("--t1-ms", "One pre-contrast T1 (ms) for every voxel, instead of --vfa.")
    ] = None,
    b1: Annotated[
        Path | None,
        _opt("--b1", "Relative flip-angle (B1) map NIfTI on the same grid (1 = nominal)."),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="tofts, extended_tofts, patlak, 2cxm or 2cum.")
    ] = "extended_tofts",
    aif: Annotated[str, _opt("--aif", _AIF_HELP)] = "parker",
    aif_delay: Annotated[
        float | None, _opt("--aif-delay", "Population AIF delay (s); default: aligned to the data.")
    ] = None,
    aif_mask: Annotated[
        Path | None, _opt("--aif-mask", "Mask NIfTI where the automatic AIF looks for arteries.")
    ] = None,
    mask: MaskFile = None,
    fit_delay: Annotated[bool, _opt("--fit-delay", "Fit the arrival delay per voxel.")] = False,
    method: Annotated[
        str | None,
        _opt("--method", "varpro, lm (non-linear) or linear; default: the model's (docs/dce.md)."),
    ] = None,
    relaxivity: Annotated[
        float | None, _opt("--relaxivity", "r1 in 1/(mM s) (default: the sidecar's Relaxivity).")
    ] = None,
    hematocrit: Annotated[
        float | None, _opt("--hematocrit", "Hematocrit (default: the sidecar's Hematocrit).")
    ] = None,
    semiquant: Annotated[
        bool, _opt("--semiquant/--no-semiquant", "Also write iAUC, TTP and the other maps.")
    ] = True,
    prefix: Prefix = "",
    chunk_voxels: ChunkVoxels = None,
    overwrite: Overwrite = False,
) -> None:
    """Fit a DCE model (Tofts family, 2CXM, 2CUM) and write maps with units and provenance."""
    from ..stages.base import read_series
    from ..stages.dce import DCEOptions, fit_dce

    with user_errors(), quiet_warnings():
        _check_numbers(aif_delay, t1_ms, relaxivity, hematocrit)
    with (
        user_errors(),
        quiet_warnings(),
        staged_output(out, overwrite=overwrite, prefix=prefix) as staging,
    ):
        options = DCEOptions(
            model=model,
            aif=aif,
            aif_delay_s=aif_delay,
            t1_ms=t1_ms,
            relaxivity=relaxivity,
            hematocrit=hematocrit,
            fit_delay=fit_delay,
            method=method,
            semiquant=semiquant,
            chunk_voxels=chunk_voxels,
        )
        res = fit_dce(
            read_series(series, "dce"),
            None if vfa is None else read_series(vfa, "VFA"),
            out_dir=staging.folder,
            prefix=prefix,
            mask=mask,
            aif_mask=aif_mask,
            b1=b1,
            options=options,
        )
    info = res.aif_info
    extra = f", delay {info['delay_s']:.1f} s" if "delay_s" in info else ""
    summary = f"fitted {options.model} to {int(res.fit.mask.sum()):,} voxels"
    files = {k: staging.final(p) for k, p in res.outputs.items()}
    print_outputs(f"{summary} (AIF: {info.get('source')}{extra})", res.warnings, files)


#: The pre-contrast T1 a voxel may have (ms): the bounds of the T1 fits
#: (``tumorscope.models.relaxometry._common.T1_SPEC``).
T1_RANGE_MS = (5.0, 50000.0)


def _check_numbers(
    aif_delay: float | None, t1_ms: float | None, relaxivity: float | None, hematocrit: float | None
) -> None:
    """The numeric options, refused (naming the option) before anything is computed or written."""
    import math

    from ..errors import FitError

    if aif_delay is not None and not (math.isfinite(aif_delay) and abs(aif_delay) <= 600):
        raise FitError(
            f"must be a finite delay within ±600 s, got {aif_delay!r}", field="--aif-delay"
        )
    lo, hi = T1_RANGE_MS
    if t1_ms is not None and not (math.isfinite(t1_ms) and lo <= t1_ms <= hi):
        raise FitError(f"must be a T1 of {lo:g} to {hi:g} ms, got {t1_ms!r}", field="--t1-ms")
    if relaxivity is not None and not (math.isfinite(relaxivity) and relaxivity > 0):
        raise FitError(f"must be > 0 1/(mM s), got {relaxivity!r}", field="--relaxivity")
    if hematocrit is not None and not (math.isfinite(hematocrit) and 0 <= hematocrit < 1):
        raise FitError(f"must be from 0 to below 1, got {hematocrit!r}", field="--hematocrit")


def register(app: typer.Typer) -> None:
    """Nothing to do: importing this module added ``dce`` to the ``fit`` group."""
