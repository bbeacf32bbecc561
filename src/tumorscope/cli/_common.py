"""Helpers shared by the command modules: error reporting, common options, output listing."""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import click
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


#: Exceptions that end a command as the command decided (an exit code, an abort, a usage
#: error): never turned into "internal error".
_PASS_THROUGH = (
    typer.Exit,
    typer.Abort,
    click.exceptions.Exit,
    click.exceptions.Abort,
    click.ClickException,
)


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    sys.stderr.flush()
    raise typer.Exit(code=2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn errors into a message on stderr and exit code 2, never a traceback.

    Exit code 1 is kept for "the job ran and found problems"; anything that stops a command
    exits 2: a tumorscope error (its message names the file and field), running out of
    memory, an operating-system error (a file that cannot be read or written), and any other
    exception (a bug: its type and message are shown, the traceback only when the
    environment variable ``TUMORSCOPE_DEBUG`` is set).
    """
    try:
        yield
    except TumorscopeError as exc:
        _fail(str(exc))
    except MemoryError:
        _fail(
            "out of memory: the input is too large for this machine; check the image sizes "
            "(the ceiling TUMORSCOPE_MAX_IMAGE_BYTES bounds each image read) or free memory"
        )
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or exc}")
    except _PASS_THROUGH:
        raise
    except Exception as exc:
        if os.environ.get("TUMORSCOPE_DEBUG"):
            traceback.print_exc()
        _fail(
            f"internal error ({type(exc).__name__}: {exc}); this is a bug in tumorscope, "
            "please report it (set TUMORSCOPE_DEBUG=1 to see the traceback)"
        )


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
