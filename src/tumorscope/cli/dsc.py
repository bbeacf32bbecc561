"""``tumorscope fit dsc``: a DSC series (+ lesion labels) to CBF, CBV, MTT, Tmax, K2, rCBV maps.

``--echo2 FILE``: the second echo of a dual-echo DSC (``SERIES`` its first echo).

A thin adapter over :func:`tumorscope.stages.dsc.fit_dsc`, the function the pipeline's
``fit_dsc`` step also calls: with the same series, labels and options both write the same
files. The command joins the ``fit`` group of :mod:`tumorscope.cli.fit` when this module is
imported (command discovery imports it). Heavy imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import ChunkVoxels, OutDir, Prefix, print_outputs, quiet_warnings, user_errors
from ._output import Overwrite, staged_output
from .fit import fit_app

__all__ = ["dsc", "register"]


def _opt(flag: str, text: str) -> typer.models.OptionInfo:
    return typer.Option(flag, help=text)


@fit_app.command("dsc")
def dsc(
    series: Annotated[
        Path,
        typer.Argument(
            help="4-D DSC NIfTI series with its JSON sidecar (FrameTimes, EchoTime); the first "
            "echo of a dual-echo DSC."
        ),
    ],
    out: OutDir,
    echo2: Annotated[
        Path | None,
        _opt(
            "--echo2",
            "Second echo of a dual-echo DSC (same frames and grid, longer EchoTime): ΔR2* from "
            "the echo ratio, free of T1 leakage; writes the T1effect map.",
        ),
    ] = None,
    lesions: Annotated[
        Path | None,
        _opt("--lesions", "Lesion label map NIfTI on the series grid (for rCBV and leakage)."),
    ] = None,
    reference: Annotated[
        int | None,
        _opt(
            "--reference-label",
            "Label of --lesions that is the rCBV reference (normal-appearing white matter); "
            "default: the contralateral mirror of the lesions.",
        ),
    ] = None,
    method: Annotated[str, _opt("--method", "osvd, csvd, svd or tikhonov.")] = "osvd",
    leakage: Annotated[str, _opt("--leakage", "bsw, bidirectional or none.")] = "bsw",
    aif_mask: Annotated[
        Path | None, _opt("--aif-mask", "Manual AIF region NIfTI (default: automatic).")
    ] = None,
    vof_mask: Annotated[
        Path | None,
        _opt(
            "--vof-mask", "Venous outflow region NIfTI: scale the AIF to its area (partial volume)."
        ),
    ] = None,
    hematocrit_factor: Annotated[
        float, _opt("--hematocrit-factor", "kH = (1-Hct_large)/(1-Hct_small).")
    ] = (1 - 0.45) / (1 - 0.25),
    tissue_density: Annotated[float, _opt("--tissue-density", "g/mL.")] = 1.04,
    prefix: Prefix = "",
    chunk_voxels: ChunkVoxels = None,
    overwrite: Overwrite = False,
) -> None:
    """Deconvolve a DSC series (sSVD, cSVD, oSVD, Tikhonov) with leakage correction and rCBV."""
    from ..stages.base import read_series
    from ..stages.dsc import DSCOptions, fit_dsc
    from ..volume import Volume

    with (
        user_errors(),
        quiet_warnings(),
        staged_output(out, overwrite=overwrite, prefix=prefix) as stage,
    ):
        labels = None if lesions is None else Volume.from_nifti(lesions)
        ids = None
        if reference is not None:
            ids = {int(reference): "reference"}
        options = DSCOptions(
            method=method,
            leakage=leakage,
            reference=None if reference is None else "reference",
            hematocrit_factor=hematocrit_factor,
            tissue_density=tissue_density,
            chunk_voxels=chunk_voxels,
        )
        res = fit_dsc(
            read_series(series, "dsc"),
            labels,
            ids,
            out_dir=stage.folder,
            prefix=prefix,
            options=options,
            aif_mask=aif_mask,
            vof_mask=vof_mask,
            echo2=None if echo2 is None else read_series(echo2, "dsc", role="dsc_echo2"),
        )
    n = int(res.maps[0].fit.mask.sum()) if res.maps and res.maps[0].fit is not None else 0
    files = {
        p.name.removesuffix(".nii.gz"): stage.final(p)
        for p in res.files
        if not p.name.endswith(".json")
    }
    echoes = "dual echo, " if echo2 is not None else ""
    print_outputs(
        f"fitted DSC ({echoes}{method}, leakage {leakage}) to {n:,} voxels", res.warnings, files
    )


def register(app: typer.Typer) -> None:
    """Nothing to do: importing this module added ``dsc`` to the ``fit`` group."""
