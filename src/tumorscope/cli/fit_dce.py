"""``tumorscope fit dce``: DCE series (+ VFA series) to T1, concentration and parameter maps.

The command is attached to the ``fit`` group of :mod:`tumorscope.cli.fit` when this module is
imported (command discovery imports it); :func:`register` has nothing left to do. Heavy
imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import user_errors
from .fit import fit_app

__all__ = ["dce", "register"]


@fit_app.command("dce")
def dce(
    series: Path = typer.Argument(..., help="4-D DCE NIfTI series with its JSON sidecar."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the maps."),
    vfa: Path = typer.Option(
        None, "--vfa", help="4-D VFA NIfTI series (+ sidecar) on the same grid, for T1."
    ),
    t1_ms: float = typer.Option(
        None, "--t1-ms", help="One pre-contrast T1 (ms) for every voxel, instead of --vfa."
    ),
    b1: Path = typer.Option(
        None, "--b1", help="Relative flip-angle (B1) map NIfTI on the same grid (1 = nominal)."
    ),
    model: str = typer.Option(
        "extended_tofts", "--model", "-m", help="tofts, extended_tofts, patlak, 2cxm or 2cum."
    ),
    aif: str = typer.Option(
        "parker",
        "--aif",
        help="parker, georgiou, mcgrath (population), auto (image-derived) or a CSV/TSV file "
        "with time_s and cp_mM (plasma) or cb_mM (blood).",
    ),
    aif_delay: float = typer.Option(
        None, "--aif-delay", help="Population AIF delay (s); default: aligned to the data."
    ),
    aif_mask: Path = typer.Option(
        None, "--aif-mask", help="Mask NIfTI where the automatic AIF looks for arteries."
    ),
    mask: Path = typer.Option(None, "--mask", help="Mask NIfTI of the voxels to fit."),
    fit_delay: bool = typer.Option(False, "--fit-delay", help="Fit the arrival delay per voxel."),
    method: str = typer.Option("lm", "--method", help="lm (non-linear) or linear."),
    relaxivity: float = typer.Option(
        None, "--relaxivity", help="r1 in 1/(mM s) (default: the sidecar's Relaxivity)."
    ),
    hematocrit: float = typer.Option(
        None, "--hematocrit", help="Hematocrit (default: the sidecar's Hematocrit)."
    ),
    semiquant: bool = typer.Option(
        True, "--semiquant/--no-semiquant", help="Also write iAUC, TTP and the other maps."
    ),
    prefix: str = typer.Option("", "--prefix", help="File name prefix."),
    chunk_voxels: int = typer.Option(None, "--chunk-voxels", help="Voxels per block."),
) -> None:
    """Fit a DCE model (Tofts family, 2CXM, 2CUM) and write maps with units and provenance."""
    import warnings

    from ..errors import TumorscopeWarning
    from ..models.dce_stage import fit_dce

    with user_errors():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TumorscopeWarning)
            res = fit_dce(
                series,
                out_dir=out,
                vfa=vfa,
                t1_ms=t1_ms,
                b1=b1,
                model=model,
                aif=aif,
                aif_delay_s=aif_delay,
                aif_mask=aif_mask,
                mask=mask,
                fit_delay=fit_delay,
                method=method,
                relaxivity=relaxivity,
                hematocrit=hematocrit,
                semiquant=semiquant,
                prefix=prefix,
                chunk_voxels=chunk_voxels,
            )
    n = int(res.fit.mask.sum())
    src = res.aif_info.get("source")
    extra = f", delay {res.aif_info['delay_s']:.1f} s" if "delay_s" in res.aif_info else ""
    typer.echo(f"fitted {model} to {n:,} voxels (AIF: {src}{extra})")
    for msg in res.warnings:
        typer.secho(f"warning: {msg}", fg=typer.colors.YELLOW, err=True)
    for name, path in res.files.items():
        typer.echo(f"  {name:<28} {path}")


def register(app: typer.Typer) -> None:
    """Nothing to do: importing this module added ``dce`` to the ``fit`` group."""
