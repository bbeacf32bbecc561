"""Helpers shared by the command modules."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from ..errors import TumorscopeError


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
