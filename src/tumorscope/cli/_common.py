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
