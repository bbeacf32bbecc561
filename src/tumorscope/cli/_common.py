"""Helpers shared by the command modules: error reporting, common options, output listing."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from ..errors import TumorscopeError, TumorscopeWarning

#: ``STUDY``: the study folder a study command works on (required).
StudyDir = Annotated[Path, typer.Argument(help="The study folder (holding study.yaml).")]
#: ``--out``: the output folder of the pipeline's results (default: in the study folder).
ResultsDir = Annotated[
    Path | None,
    typer.Option("--out", help="Output folder (default: STUDY/derivatives/tumorscope)."),
]
#: ``--out/-o``: the output folder of a ``fit`` command (required).
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder for the maps.")]
#: ``--mask``: a mask on the series grid (non-zero voxels are fitted).
MaskFile = Annotated[
    Path | None, typer.Option("--mask", help="Mask NIfTI on the series grid (non-zero = fit).")
]
_PREFIX = typer.Option("--prefix", help="File name prefix.")
#: ``--prefix``: the file name prefix of the maps.
Prefix = Annotated[str, _PREFIX]
#: ``--prefix`` where None means the command's own default prefix.
PrefixOrDefault = Annotated[str | None, _PREFIX]
#: ``--chunk-voxels``: voxels fitted per block.
ChunkVoxels = Annotated[
    int | None, typer.Option("--chunk-voxels", help="Voxels per block (memory bound).")
]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn tumorscope errors into a one-line message on stderr and exit code 2."""
    try:
        yield
    except TumorscopeError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.stderr.flush()
        raise typer.Exit(code=2) from None


def parse_floats(text: str, option: str) -> list[float]:
    """Numbers given as ``"2,5,12"`` (commas or spaces) for ``option``; at least one."""
    from ..errors import FitError

    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise FitError(f"expected comma-separated numbers, got {text!r}", field=option) from None
    if not values:
        raise FitError("expected at least one number", field=option)
    return values


@contextmanager
def quiet_warnings() -> Iterator[None]:
    """Silence :class:`TumorscopeWarning` (a fit command prints the fits' summary instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        yield


def print_outputs(summary: str, notes: Sequence[str], files: Mapping[str, Path]) -> None:
    """Print a command's summary line, its warnings (stderr) and one line per file written."""
    typer.echo(summary)
    for msg in notes:
        typer.secho(f"warning: {msg}", fg=typer.colors.YELLOW, err=True)
    width = max((len(n) for n in files), default=0) + 2
    for name, path in files.items():
        typer.echo(f"  {name:<{width}} {path}")
