"""Where a single command's files go: written aside, checked, then moved into the output folder.

The single commands (``fit *``, ``iron``, ``hp13c``, ``mrs``, ``cells19f``, ``measure``,
``assess``) write into folders that are the user's: they have no ownership marker (unlike a
run's output folder or an export's). The rule is that tumorscope never replaces a file it was
not asked to replace, and writes nothing when it stops with an error:

1. ``--prefix`` is a file-name prefix (:func:`check_prefix`), checked before anything else;
2. the command writes every file into a *staging folder*, a new temporary folder named with
   :data:`tumorscope.volume.ATOMIC_TEMP_PREFIX` (so a run's clean-up recognises it) inside the
   output folder when it exists, else in its nearest existing parent (so the output folder is
   created only on delivery);
3. when the command has written everything, every name is checked against the output folder:
   if a file of that name is there, the command stops with exit 2 naming it (and saying that
   ``--overwrite`` replaces it), unless ``--overwrite`` was given; a folder in the way is
   never replaced;
4. the output folder is created if new and the files are moved into place (``os.replace``,
   one file system).

On any error (a bad input found half-way, a full disk, a name too long for the file system,
Ctrl-C, also one that code below swallowed: :mod:`tumorscope._interrupt`) the staging folder is removed and the output folder is as it was. Only a killed
process (SIGKILL, power loss) leaves a ``.tumorscope-tmp-out-*`` folder behind; it holds only
tumorscope's temporary files and may be deleted. Two commands writing the same names into the
same folder at the same moment are not locked against each other: the later one's files win
(each file is whole).

Use::

    with user_errors(), staged_output(out, overwrite=overwrite) as stage:
        res = fit_something(..., out_dir=stage.folder)
    print(stage.final(res.path))   # the path after delivery
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from .. import _interrupt
from ..errors import DataError, FitError
from ..volume import ATOMIC_TEMP_PREFIX

__all__ = ["Overwrite", "Staging", "check_prefix", "staged_output"]

#: ``--overwrite``: replace files of the same name in the output folder.
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace existing files of the same names (default: refuse, exit 2, write nothing).",
    ),
]

#: Longest file name (bytes) most file systems accept.
NAME_MAX = 255

# the temporary name atomic_write gives a file: <prefix><stem>-<8 random chars><suffixes>
_TEMP_NAME = re.compile(r"(?P<stem>[^.]*)-[a-z0-9_]{8}(?P<suffix>\..*)?")


def check_prefix(prefix: str | None, option: str = "--prefix") -> None:
    """Refuse a ``--prefix`` that is not a plain file-name prefix (exit 2 via ``user_errors``).

    A prefix may not hold a path separator (``/``, ``\\``) or a NUL byte, be ``.`` or ``..``,
    or start with tumorscope's temporary prefix: the maps stay in the output folder.
    """
    if not prefix:
        return
    bad = (
        "/" in prefix
        or "\\" in prefix
        or (os.altsep is not None and os.altsep in prefix)
        or "\0" in prefix
        or prefix in (".", "..")
    )
    if bad:
        raise FitError(
            f"must be a file-name prefix (no folder, no '/', not '..'), got {prefix!r}; "
            "choose the folder with --out",
            field=option,
        )
    if prefix.startswith(ATOMIC_TEMP_PREFIX):
        raise FitError(
            f"may not start with {ATOMIC_TEMP_PREFIX!r} (tumorscope's temporary files)",
            field=option,
        )


@dataclass(frozen=True)
class Staging:
    """The staging folder of one command (:attr:`folder`) and its output folder (:attr:`out`)."""

    out: Path
    folder: Path

    def final(self, path: Path | str) -> Path:
        """Where ``path`` (written in the staging folder) is after delivery; other paths as is."""
        p = Path(path)
        try:
            return self.out / p.relative_to(self.folder)
        except ValueError:
            return p

    def _named(self, exc: OSError) -> Exception:
        """An error while writing, naming the output file (never a temporary file)."""
        if not exc.filename:
            return exc
        path = Path(os.fsdecode(exc.filename))
        try:
            rel = path.relative_to(self.folder)
        except ValueError:
            return exc
        name = rel.name
        if name.startswith(ATOMIC_TEMP_PREFIX):
            m = _TEMP_NAME.fullmatch(name[len(ATOMIC_TEMP_PREFIX) :])
            if m is not None:
                suffix = m["suffix"] or ""
                name = m["stem"] + ("" if suffix == ".tmp" else suffix)
        final = self.out / rel.parent / name
        if exc.errno == errno.ENAMETOOLONG:
            return DataError(
                f"the output file name is too long for the file system ({len(os.fsencode(name))} "
                f"bytes; tumorscope also needs room for a temporary name, so keep names under "
                f"{NAME_MAX - 40} bytes); nothing was written. Use a shorter --prefix or "
                "output name",
                file=final,
            )
        return DataError(f"{exc.strerror or exc} while writing; nothing was written", file=final)


@contextmanager
def staged_output(
    out: Path | str, *, overwrite: bool, prefix: str | None = None
) -> Iterator[Staging]:
    """A staging folder for the files of a command whose output folder is ``out``.

    ``prefix`` (the command's ``--prefix``) is checked first (:func:`check_prefix`).

    The files the block writes into ``Staging.folder`` (sub-folders too) are delivered into
    ``out`` when the block ends without an error; see the module's docstring for the checks.

    Raises
    ------
    FitError
        A bad ``prefix``.
    DataError
        ``out`` is a file; a file to deliver is already in ``out`` and ``overwrite`` is false,
        or a folder is in its place; writing a file failed (named as its final path).
    """
    check_prefix(prefix)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("the output folder is a file, not a folder; nothing was written", file=out)
    anchor = out.absolute()
    while not anchor.is_dir():
        anchor = anchor.parent
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"{ATOMIC_TEMP_PREFIX}out-", dir=anchor))
    except OSError as exc:
        raise DataError(
            f"cannot write the outputs here ({exc.strerror or exc} in {anchor}); nothing was "
            "written",
            file=out,
        ) from exc
    stage = Staging(out, folder)
    try:
        try:
            yield stage
        except OSError as exc:
            raise stage._named(exc) from exc
        _interrupt.check()  # a Ctrl-C swallowed while the command ran: nothing delivered
        _deliver(stage, overwrite=overwrite)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _deliver(stage: Staging, *, overwrite: bool) -> None:
    files = sorted(
        p.relative_to(stage.folder)
        for p in stage.folder.rglob("*")
        if p.is_symlink() or not p.is_dir()
    )
    existing = [r for r in files if (stage.out / r).exists() or (stage.out / r).is_symlink()]
    for r in existing:
        target = stage.out / r
        if target.is_dir() and not target.is_symlink():
            raise DataError(
                "a folder is in the place of an output file; nothing was written. Move it away "
                "or choose another output folder",
                file=target,
            )
    if existing and not overwrite:
        shown = ", ".join(str(r) for r in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise DataError(
            f"{len(existing)} output file(s) already exist ({shown}{more}); nothing was "
            "written. Give --overwrite to replace them, or choose another output folder",
            file=stage.out / existing[0],
        )
    try:
        for r in files:
            (stage.out / r).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage.folder / r, stage.out / r)
    except OSError as exc:
        raise DataError(
            f"cannot move the outputs into place ({exc.strerror or exc})", file=stage.out / r
        ) from exc
