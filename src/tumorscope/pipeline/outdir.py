"""The output folder of a run: whose it is, one run at a time, and the clean-up of a run.

A run writes into a folder only if it is new or empty, marked as a tumorscope output, an
output of an older tumorscope (it holds ``tumorscope.sqlite`` or ``logs/run-*.log``), or the
user said so (``adopt=True``, ``--adopt-folder``). Otherwise nothing is written and the run
stops with exit code 2. While it runs, the folder is locked: a second run on the same folder
exits at once naming the holder, or waits for it (``lock_timeout``). At the start, under the
lock, the temporary files that a killed run left are removed: only tumorscope's own
(:data:`tumorscope.volume.ATOMIC_TEMP_PREFIX`), and only in the folders of the output layout.

::

    OUT/
      .tumorscope-output.json    the marker: format, tumorscope version, creation time, study
      .tumorscope.lock           the lock (filelock, an OS lock: released when its process dies)
      .tumorscope.lock.json      who holds it: pid, host, start time, command, run id
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__, layout
from ..errors import DataError
from ..files import write_json
from ..volume import ATOMIC_TEMP_PREFIX

__all__ = [
    "HOLDER_NAME",
    "LOCK_NAME",
    "MARKER_NAME",
    "OutputFolder",
    "check_output_folder",
    "claim_output_folder",
    "lock_output_folder",
    "sweep_temporaries",
]

#: The marker of a tumorscope output folder (JSON: format, version, creation time, study).
MARKER_NAME = ".tumorscope-output.json"
#: The lock file of an output folder (held for the whole run).
LOCK_NAME = ".tumorscope.lock"
#: Who holds the lock (JSON: pid, host, start time, command, run id).
HOLDER_NAME = ".tumorscope.lock.json"

_BOOKKEEPING = frozenset({MARKER_NAME, LOCK_NAME, HOLDER_NAME})

#: Seconds a holder record naming a dead process must stay unchanged before a held lock is
#: taken over (a run that has just taken the lock writes its own record within milliseconds).
_GRACE_S = 1.0


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def check_output_folder(out: Path, *, adopt: bool = False) -> str | None:
    """Whether a run may write into ``out``; writes nothing.

    Returns
    -------
    str or None
        A message to show when the folder is adopted (an older tumorscope output, or a
        foreign folder with ``adopt``), else None.

    Raises
    ------
    DataError
        If ``out`` is a file, or a non-empty folder that is not a tumorscope output and
        ``adopt`` is false.
    """
    if out.exists() and not out.is_dir():
        raise DataError("the output folder is a file, not a folder", file=out)
    if not out.exists():
        return None
    linked = _linked_folders(out)
    if linked:
        raise DataError(
            f"a folder inside the output folder is a symbolic link ({linked[0]} → "
            f"{os.readlink(out / linked[0])}): the run would write through it into a folder "
            "it does not own; nothing was written. Remove the link or choose another folder",
            file=out / linked[0],
        )
    if (out / MARKER_NAME).is_file():
        return None
    foreign = sorted(
        p.name
        for p in out.iterdir()
        if p.name not in _BOOKKEEPING and not p.name.startswith(ATOMIC_TEMP_PREFIX)
    )
    if not foreign:
        return None
    if layout.database_path(out).is_file() or any(
        layout.log_path(out, "*").parent.glob("run-*.log")
    ):
        return f"adopting {out}: an output folder of an earlier tumorscope (before {MARKER_NAME})"
    if adopt:
        return (
            f"adopting {out} (--adopt-folder): tumorscope adds its own files and removes none "
            "of the others"
        )
    shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
    raise DataError(
        f"the output folder is not empty ({shown}) and is not a tumorscope output folder "
        f"(no {MARKER_NAME}); nothing was written. Choose a new or empty folder, or pass "
        "--adopt-folder to write into this one (tumorscope removes none of its files)",
        file=out,
    )


def _linked_folders(out: Path) -> list[str]:
    """Folders below ``out`` that are symbolic links (relative paths, sorted; links are not
    followed). A run writes only through real folders: through a link it would replace the
    files of a folder elsewhere (found by the sweep of 2026-12-06: ``tables`` linked to a
    user's folder, whose ``subjects.csv`` the run replaced). A link to a file is harmless:
    files are written to a temporary name and renamed, which replaces the link, not its
    target."""
    linked = []
    for top, dirs, _ in os.walk(out, followlinks=False):
        for name in dirs:
            if os.path.islink(os.path.join(top, name)):
                linked.append(os.path.relpath(os.path.join(top, name), out))
    return sorted(linked)


def sweep_temporaries(out: Path) -> int:
    """Remove the temporary files a killed run left; returns how many.

    Only tumorscope's own temporaries (named ``.tumorscope-tmp-…``, see
    :func:`tumorscope.volume.atomic_write`), and only at the top of ``out`` and in the folders
    of the output layout (``sub-*``, ``tables``, ``report``, ``logs``); symbolic links are not
    followed. Call it only while holding the folder's lock.
    """
    n = 0
    tops = [layout.tables_dir(out), layout.report_dir(out), layout.log_path(out, "*").parent]
    tops += sorted(out.glob(layout.subject_dir(out, "*").name))
    for p in out.glob(ATOMIC_TEMP_PREFIX + "*"):
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            n += 1
    for top in tops:
        if not top.is_dir() or top.is_symlink():
            continue
        for folder, _, files in os.walk(top):
            for name in files:
                p = Path(folder) / name
                if name.startswith(ATOMIC_TEMP_PREFIX) and not p.is_symlink():
                    p.unlink(missing_ok=True)
                    n += 1
    return n


def _command() -> str:
    """The command line of this process (``tumorscope run …`` for the command)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("tumorscope", "__main__.py"):
        argv[0] = "tumorscope"
    return shlex.join(argv)


def _read_holder(out: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads((out / HOLDER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "another process (it has not said who it is yet)"
    return (
        f"run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, running since {holder.get('started', '?')}: "
        f"{holder.get('command', '?')})"
    )


def _is_dead(holder: dict[str, Any] | None) -> bool:
    """Whether the holder is a process of this host that is no longer running."""
    if holder is None or holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, KeyError, TypeError, ValueError, OverflowError):
        return False
    return False


class OutputFolder:
    """A claimed output folder: created, marked and locked; :meth:`release` at the end."""

    def __init__(self, out: Path, lock: Any) -> None:
        self.out = out
        self._lock = lock

    def release(self) -> None:
        """Say nobody holds the folder any more and release the lock (idempotent)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            (self.out / HOLDER_NAME).unlink(missing_ok=True)
            lock.release()


def _busy(out: Path, waited: float) -> DataError:
    holder = _describe(_read_holder(out))
    if waited > 0:
        return DataError(
            f"another tumorscope run still holds the output folder after {waited:g} s: "
            f"{holder}; nothing was written",
            file=out,
        )
    return DataError(
        f"another tumorscope run holds the output folder: {holder}; nothing was written. "
        "Wait for it to finish, or pass --lock-timeout SECONDS to wait for it",
        file=out,
    )


def _orphaned(out: Path, holder: dict[str, Any] | None) -> bool:
    """Whether a lock that is held belongs to a run that died (its record names a dead pid).

    A run that has just taken the lock may not have replaced the record of a killed one yet:
    the record must stay the same for :data:`_GRACE_S` seconds before it is believed.
    """
    if not _is_dead(holder):
        return False
    time.sleep(_GRACE_S)
    return _read_holder(out) == holder


def _acquire(out: Path, timeout: float, say: Callable[[str], None]) -> Any:
    from filelock import FileLock, Timeout

    lock = FileLock(str(out / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _read_holder(out)
        if _orphaned(out, holder):
            # the OS lock outlived its run (a child process kept it open): take it over
            say(f"taking over the lock of {_describe(holder)}: that process no longer runs")
            (out / LOCK_NAME).unlink(missing_ok=True)
            lock = FileLock(str(out / LOCK_NAME))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                raise _busy(out, 0) from None
        elif timeout > 0:
            say(f"{out} is in use by {_describe(_read_holder(out))}; waiting up to {timeout:g} s")
            try:
                lock.acquire(timeout=timeout)
            except Timeout:
                raise _busy(out, timeout) from None
        else:
            raise _busy(out, 0) from None
    else:
        stale = _read_holder(out)
        if stale is not None:
            say(f"taking over the stale lock of {_describe(stale)}: it ended without releasing it")
    return lock


def _write_holder(out: Path, run_id: str) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _utcnow(),
        "command": _command(),
        "run_id": run_id,
    }
    write_json(out / HOLDER_NAME, holder)


def lock_output_folder(
    out: Path,
    *,
    run_id: str,
    lock_timeout: float = 0.0,
    say: Callable[[str], None] = lambda _msg: None,
) -> OutputFolder:
    """Lock the output folder of earlier runs to rewrite part of it (``tumorscope report``).

    Unlike :func:`claim_output_folder` the folder must already exist and be a tumorscope
    output (:func:`check_output_folder`): nothing is created, marked or adopted. The lock is the run's lock, so a report
    is never rewritten while a run writes into the same folder, nor a run started while a
    report is being written.

    Raises
    ------
    DataError
        If the folder is not a tumorscope output, or another process holds it (naming the
        holder). Nothing is written then.
    """
    if lock_timeout < 0:
        raise DataError(f"expected seconds >= 0, got {lock_timeout:g}", field="--lock-timeout")
    check_output_folder(out, adopt=False)
    if not out.is_dir():
        raise DataError("no such output folder: run `tumorscope run` first", file=out)
    try:
        lock = _acquire(out, lock_timeout, say)
    except OSError as exc:
        raise DataError(f"cannot lock the output folder: {exc}", file=out) from exc
    try:
        _write_holder(out, run_id)
    except BaseException:
        OutputFolder(out, lock).release()
        raise
    return OutputFolder(out, lock)


def claim_output_folder(
    out: Path,
    *,
    run_id: str,
    study: Path,
    adopt: bool = False,
    lock_timeout: float = 0.0,
    say: Callable[[str], None] = lambda _msg: None,
) -> OutputFolder:
    """Check, create, lock and mark an output folder for a run (see the module's doc).

    Parameters
    ----------
    out : Path
        The output folder.
    run_id : str
        The run's id (recorded as the holder of the lock).
    study : Path
        The study folder (recorded in the marker).
    adopt : bool, default False
        Write into a non-empty folder that is not a tumorscope output.
    lock_timeout : float, default 0
        Seconds to wait for another run that holds the folder (0: fail at once).
    say : callable, optional
        Where messages go (adoption, waiting, a stale lock taken over).

    Raises
    ------
    DataError
        If the folder may not be written (:func:`check_output_folder`) or another run holds
        it (naming the holder and since when). Nothing is written then, except the folder
        itself and its lock file when the folder was not there.
    """
    if lock_timeout < 0:
        raise DataError(f"expected seconds >= 0, got {lock_timeout:g}", field="--lock-timeout")
    adopted = check_output_folder(out, adopt=adopt)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = _acquire(out, lock_timeout, say)
    except OSError as exc:
        raise DataError(f"cannot create or lock the output folder: {exc}", file=out) from exc
    try:
        _write_holder(out, run_id)
        if not (out / MARKER_NAME).is_file():
            if adopted:
                say(adopted)
            marker = {
                "tumorscope_output": 1,
                "tumorscope_version": __version__,
                "created": _utcnow(),
                "adopted": adopted is not None,
                "study": str(study),
            }
            write_json(out / MARKER_NAME, marker)
    except BaseException:
        OutputFolder(out, lock).release()
        raise
    return OutputFolder(out, lock)
