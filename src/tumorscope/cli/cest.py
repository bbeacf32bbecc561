"""``tumorscope fit cest SERIES``: CEST Z-spectra → B0, MTRasym, Lorentzian (and AREX) maps.

The acquisition comes from the sidecar beside each series (``SaturationOffsets``,
``MagneticFieldStrength``, ``SaturationB1``, ``SaturationDuration`` …; see
:func:`tumorscope.io.bids.protocol_from_sidecar`). The command calls the same stage as the
pipeline's ``fit_cest`` step (:func:`tumorscope.stages.cest.fit_cest`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import ChunkVoxels, MaskFile, OutDir, PrefixOrDefault, parse_floats, user_errors
from ._output import Overwrite, staged_output
from .fit import fit_app

__all__: list[str] = []


@fit_app.command("cest")
def cest(
    series: Annotated[Path, typer.Argument(help="4-D CEST series (offsets on the 4th axis).")],
    out: OutDir,
    mask: MaskFile = None,
    wassr: Annotated[
        Path | None, typer.Option("--wassr", help="WASSR series for the B0 map.")
    ] = None,
    wasabi: Annotated[
        Path | None, typer.Option("--wasabi", help="WASABI series for the B0 and B1 maps.")
    ] = None,
    more_b1: Annotated[
        list[Path] | None,
        typer.Option("--cest-b1", help="CEST series at another B1 level (repeatable)."),
    ] = None,
    t1: Annotated[
        Path | None, typer.Option("--t1", help="T1 map (ms) on the CEST grid, for AREX.")
    ] = None,
    mtr_asym: Annotated[
        str, typer.Option("--mtr-asym", help="MTRasym offsets (ppm): 3.5,2.0")
    ] = "3.5,2.0",
    no_lorentzian: Annotated[
        bool, typer.Option("--no-lorentzian", help="Skip the 5-pool Lorentzian fit.")
    ] = False,
    b1_target: Annotated[
        float | None, typer.Option("--b1-target", help="B1 (uT) of the B1-corrected APT map.")
    ] = None,
    lesions: Annotated[
        Path | None,
        typer.Option(
            "--lesions",
            help="Lesion label map: the Lorentzian is fitted in the lesions dilated by "
            "--region-margin (resampled onto the CEST grid if needed).",
        ),
    ] = None,
    fit_region: Annotated[
        str,
        typer.Option(
            "--fit-region",
            help="Where the Lorentzian is fitted: 'lesions' (needs --lesions; else the "
            "whole body, with a note) or 'body'.",
        ),
    ] = "lesions",
    region_margin: Annotated[
        float, typer.Option("--region-margin", help="Margin around the lesions (mm).")
    ] = 3.0,
    prefix: PrefixOrDefault = None,
    chunk_voxels: ChunkVoxels = None,
    overwrite: Overwrite = False,
) -> None:
    """Z-spectra normalised by their M0 images; B0 (WASABI, WASSR or the spectrum itself);
    MTRasym, 5-pool Lorentzian amplitudes, widths and positions; AREX with a T1 map."""
    from ..io.bids import stem
    from ..stages.base import read_series
    from ..stages.cest import CESTOptions, fit_cest

    with user_errors(), staged_output(out, overwrite=overwrite, prefix=prefix) as stage:
        opts = CESTOptions(
            mtr_asym_ppm=tuple(parse_floats(mtr_asym, "--mtr-asym")),
            lorentzian=not no_lorentzian,
            b1_target_ut=b1_target,
            chunk_voxels=chunk_voxels,
            fit_region=fit_region,
            region_margin_mm=region_margin,
        )
        inputs = {"cest": read_series(series, "cest", role="cest")}
        if wassr is not None:
            inputs["wassr"] = read_series(wassr, "wassr", role="wassr")
        if wasabi is not None:
            inputs["wasabi"] = read_series(wasabi, "WASABI", role="wasabi")
        for i, p in enumerate(more_b1 or [], start=2):
            inputs[f"cest_{i}"] = read_series(p, "cest", role=f"cest_{i}")
        res = fit_cest(
            inputs,
            out_dir=stage.folder,
            prefix=prefix if prefix is not None else f"{stem(series)}_",
            options=opts,
            mask=mask,
            t1_map=t1,
            lesions=lesions,
        )
    for note in res.warnings:
        typer.echo(f"note: {note}")
    for path in res.files:
        if path.name.endswith(".nii.gz"):
            typer.echo(f"  {stage.final(path)}")
