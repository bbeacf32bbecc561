"""Metabolic-imaging commands, thin adapters over :mod:`tumorscope.stages.metabolic`.

* ``tumorscope hp13c PYRUVATE LACTATE``: kPL, AUC ratio and lactate SNR maps from
  hyperpolarised 13C dynamic series (4-D NIfTI with ``FrameTimes`` and ``FlipAngle`` in their
  sidecars), and per-lesion values with ``--labels``;
* ``tumorscope mrs SPECTRA``: a NIfTI-MRS file (1H or 2H; single voxel or MRSI): coil
  combination, alignment, water removal, linear-combination fit, concentrations (with
  ``--water``), CRLBs and ratios; maps resampled onto ``--onto`` (the tumour grid) with
  per-lesion means from ``--labels``.

The pipeline's ``metabolic`` step calls the same functions, so with the same inputs and
prefix the files are the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import user_errors
from ._output import Overwrite, staged_output

__all__ = ["register"]


def _print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        v = r["value"]
        typer.echo(f"  {r['lesion_id']:<8} {r['map']:<28} {r['statistic']:<8} "
                   f"{'n/a' if v is None else f'{v:.6g}'} {r['unit']}")  # fmt: skip


def hp13c(
    pyruvate: Path = typer.Argument(..., help="Pyruvate dynamic series (4-D NIfTI + JSON)."),
    lactate: Path = typer.Argument(..., help="Lactate dynamic series on the same grid."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    labels: Path = typer.Option(None, "--labels", help="Lesion labels on the 13C grid."),
    t1_lactate: float = typer.Option(25.0, "--t1-lactate", help="Lactate T1 (s), if fixed."),
    fit_t1: bool = typer.Option(False, "--fit-t1-lactate", help="Fit the lactate T1."),
    min_snr: float = typer.Option(5.0, "--min-snr", help="Lactate SNR below which no kPL."),
    prefix: str = typer.Option("", "--prefix", help="File name prefix."),
    overwrite: Overwrite = False,
) -> None:
    """Input-less kPL (Larson 2018), AUC ratio and lactate SNR maps."""
    import numpy as np

    from ..errors import DataError
    from ..stages.metabolic import HP13COptions, fit_hp13c
    from ..volume import Volume

    with user_errors(), staged_output(out, overwrite=overwrite, prefix=prefix) as stage:
        lab = None if labels is None else Volume.from_nifti(labels, dtype=np.int32)
        if lab is not None and not lab.same_grid(Volume.from_nifti(pyruvate)):
            raise DataError("label map is not on the 13C grid", file=labels, field="affine")
        res = fit_hp13c(
            pyruvate, lactate, out_dir=stage.folder, prefix=prefix, labels=lab,
            options=HP13COptions(t1_lactate_s=t1_lactate, fit_t1_lactate=fit_t1, min_snr=min_snr),
        )  # fmt: skip
    for w in res.warnings:
        typer.echo(f"warning: {w}", err=True)
    for m in res.maps:
        typer.echo(f"  {m.name:<20} {stage.final(m.path)}")
    _print_rows(res.rows.get("measurements", []))


def mrs(
    spectra: Path = typer.Argument(..., help="NIfTI-MRS file (1H or 2H, SVS or MRSI)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    water: Path = typer.Option(None, "--water", help="Unsuppressed water reference (NIfTI-MRS)."),
    require_water: bool = typer.Option(
        False, "--require-water", help="Fail without a water reference (concentrations in mM)."
    ),
    onto: Path = typer.Option(None, "--onto", help="Image defining the tumour grid."),
    labels: Path = typer.Option(None, "--labels", help="Lesion labels on the --onto grid."),
    prefix: str = typer.Option("", "--prefix", help="File name prefix."),
    overwrite: Overwrite = False,
) -> None:
    """Linear-combination fit with CRLBs, concentrations and ratios (tCho/Cr, tCho/NAA,
    (Cho+Cr)/Cit, Lac/Cr); 2H spectra: lactate/Glx and lactate/glucose."""
    import numpy as np

    from ..errors import DataError
    from ..stages.metabolic import MRSOptions, fit_mrs
    from ..volume import Volume

    with user_errors(), staged_output(out, overwrite=overwrite, prefix=prefix) as stage:
        grid = None if onto is None else Volume.from_nifti(onto)
        lab = None if labels is None else Volume.from_nifti(labels, dtype=np.int32)
        if lab is not None and (grid is None or not lab.same_grid(grid)):
            raise DataError("--labels needs --onto, on the same grid", file=labels, field="affine")
        res = fit_mrs(
            spectra, out_dir=stage.folder, water=water, prefix=prefix, onto=grid, labels=lab,
            options=MRSOptions(require_water=require_water),
        )  # fmt: skip
    for m in res.maps:
        typer.echo(f"  {m.name:<28} {stage.final(m.path)}")
    _print_rows(res.rows.get("measurements", []))


def register(app: typer.Typer) -> None:
    """Add ``hp13c`` and ``mrs``."""
    app.command("hp13c")(hp13c)
    app.command("mrs")(mrs)
