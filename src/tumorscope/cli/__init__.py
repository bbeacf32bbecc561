"""The ``tumorscope`` command: a thin layer over the public API.

Each module in this package that defines ``register(app: typer.Typer) -> None`` adds its
commands (or a sub-app, e.g. ``tumorscope fit dwi``). Modules are discovered automatically, so
a new command is one new file. Command modules import heavy libraries inside the command
functions so that ``tumorscope --help`` starts fast.

Exit codes: 0 success, 1 the job ran and found errors (e.g. ``validate`` found problems, some
subjects failed), 2 bad usage or bad input.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

from .. import __version__

app = typer.Typer(
    name="tumorscope",
    help="Quantitative multiparametric MRI of tumours during therapy.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tumorscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Quantitative multiparametric MRI of tumours during therapy."""


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main() -> None:
    """Entry point of the console script: every command, and whatever runs outside a
    command's own error handling (printing, option parsing callbacks), under
    :func:`~tumorscope.cli._common.user_errors`, so a crash exits 2 with a message, never 1
    with a traceback (1 means "the job ran and found problems"); a Ctrl-C exits 130, also one
    that code below swallowed (:mod:`tumorscope._interrupt`). The process then exits
    without the collector's passes over what the command left
    (:func:`tumorscope._exit.skip_collection_at_exit`: ~1 s less per command).
    """
    from .. import _interrupt
    from .._exit import skip_collection_at_exit
    from ._common import user_errors

    skip_collection_at_exit()
    _interrupt.install()
    try:
        with user_errors():
            app()
    except typer.Exit as stop:  # raised by user_errors outside Click's own handling
        raise SystemExit(_interrupted_or(stop.exit_code)) from None
    except SystemExit as stop:  # Click's: "Aborted!" and 1 for a Ctrl-C
        raise SystemExit(_interrupted_or(stop.code)) from None
    if _interrupt.seen():  # a Ctrl-C that code below swallowed (tumorscope._interrupt)
        raise SystemExit(_interrupt.EXIT_CODE)


def _interrupted_or(code: object) -> object:
    """Exit 130 after a Ctrl-C (:mod:`tumorscope._interrupt`), else ``code``."""
    from .. import _interrupt

    return _interrupt.EXIT_CODE if _interrupt.seen() else code
