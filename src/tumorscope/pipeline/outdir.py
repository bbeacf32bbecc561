"""The output folder of a run: whose it is, one run at a time, and the clean-up of a run.

A run writes into a folder only if it is new or empty, marked as a tumorscope output, an
output of an older tumorscope (it holds ``tumorscope.sqlite`` or ``logs/run-*.log``), or the
user said so (``adopt=True``, ``--adopt-folder``). Otherwise nothing is written and the run
stops with exit code 2. A folder holds the results of one study: a run or a report of
another study stops with exit code 2, nothing written (:func:`check_output_study`). While it runs, the folder is locked: a second run on the same folder
exits at once naming the holder, or waits for it (``lock_timeout``). At the start, under the
lock, the temporary files that a killed run left are removed: only tumorscope's own
(:data:`tumorscope.volume.ATOMIC_TEMP_PREFIX`), and only in the folders of the output layout.

::

    OUT/
      .tumorscope-output.json    the marker: format, tumorscope version, creation time, study
                                 (its folder, resolved, and the ``name`` of its study.yaml)
      .tumorscope.lock           the lock (filelock, an OS lock: released when its process dies)
      .tumorscope.lock.json      who holds it: pid, host, start time, command, run id
"""

from __future__ import annotations

import datetime as dt
import json
import math
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
    "OUTPUT_FORMAT",
    "OutputFolder",
    "check_lock_timeout",
    "check_output_folder",
    "check_output_study",
    "claim_output_folder",
    "lock_output_folder",
    "read_marker",
    "sweep_temporaries",
]

#: The marker of a tumorscope output folder (JSON: format, version, creation time, study).
MARKER_NAME = ".tumorscope-output.json"
#: The lock file of an output folder (held for the whole run).
LOCK_NAME = ".tumorscope.lock"
#: Who holds the lock (JSON: pid, host, start time, command, run id).
HOLDER_NAME = ".tumorscope.lock.json"

_BOOKKEEPING = frozenset({MARKER_NAME, LOCK_NAME, HOLDER_NAME})

#: The format of the output folder this tumorscope writes (the marker's ``tumorscope_output``):
#: a folder of a later format is refused, not written into or reported from.
OUTPUT_FORMAT = 1

#: Seconds a holder record naming a dead process must stay unchanged before a held lock is
#: taken over (a run that has just taken the lock writes its own record within milliseconds).
_GRACE_S = 1.0


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def check_lock_timeout(seconds: float) -> None:
    """``--lock-timeout``: seconds >= 0, a finite number (NaN would mean "never wait")."""
    if not math.isfinite(seconds) or seconds < 0:
        raise DataError(
            f"expected a finite number of seconds >= 0, got {seconds:g}", field="--lock-timeout"
        )


def read_marker(out: Path) -> dict[str, Any] | None:
    """The marker of ``out`` (None if there is none).

    Raises
    ------
    DataError
        If the marker is not a JSON object, or names a later output format than this
        tumorscope's (:data:`OUTPUT_FORMAT`): nothing is written into such a folder.
    """
    path = out / MARKER_NAME
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        marker = exc
    if not isinstance(marker, dict):
        raise DataError(
            "the output folder's marker is damaged (not a JSON object); nothing was written. "
            "Choose another --out, or remove the marker if this folder holds only the "
            "results of this study",
            file=path,
        )
    fmt = marker.get("tumorscope_output")
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise DataError(
            f"the output folder's marker has no valid format (tumorscope_output: {fmt!r}); "
            "nothing was written. Choose another --out",
            file=path,
            field="tumorscope_output",
        )
    if fmt > OUTPUT_FORMAT:
        raise DataError(
            f"the output folder was written by tumorscope "
            f"{marker.get('tumorscope_version', '?')} in output format {fmt}; this tumorscope "
            f"({__version__}) reads and writes format {OUTPUT_FORMAT} only; nothing was "
            "written. Use that tumorscope version, or choose another --out",
            file=path,
            field="tumorscope_output",
        )
    return marker


def check_output_study(out: Path, study: Path, name: str) -> str | None:
    """Whether ``out`` holds the results of the study at ``study`` (resolved) named ``name``
    (its study.yaml's ``name``); writes nothing.

    The same study means: the marker records the same folder (or one that is the same file
    on disk). A study that was moved is recognised too: the folder the marker records no
    longer holds a study.yaml and the recorded name is ``name``; the run then records the new
    place. A copy of a study is another study (both folders exist). A marker that records no
    study (an older tumorscope) or no marker at all is accepted.

    Returns
    -------
    str or None
        A message when the study was moved, else None.

    Raises
    ------
    DataError
        If the folder holds another study's results (naming both), or its marker is damaged
        or of a later format (:func:`read_marker`).
    """
    marker = read_marker(out)
    if marker is None or not isinstance(marker.get("study"), str):
        return None
    recorded = Path(marker["study"])
    if recorded == study or _same_folder(recorded, study):
        return None
    recorded_name = marker.get("study_name")
    if not (recorded / "study.yaml").is_file() and recorded_name == name:
        return f"the study was moved from {recorded} to {study}: recorded in {MARKER_NAME}"
    named = f" ({recorded_name!r})" if isinstance(recorded_name, str) else ""
    raise DataError(
        f"this output folder holds the results of the study {recorded}{named}, not of "
        f"{study} ({name!r}); nothing was written. Choose another --out for this study "
        "(one output folder per study)",
        file=out,
    )


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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
    check_lock_timeout(lock_timeout)
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
    study_name: str | None = None,
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
    study_name : str, optional
        The ``name`` of its study.yaml (recorded in the marker: a study that was moved is
        recognised by it, :func:`check_output_study`).
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
    check_lock_timeout(lock_timeout)
    adopted = check_output_folder(out, adopt=adopt)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = _acquire(out, lock_timeout, say)
    except OSError as exc:
        raise DataError(f"cannot create or lock the output folder: {exc}", file=out) from exc
    try:
        _write_holder(out, run_id)
        if study_name is not None:  # again under the lock: another study's run may have
            check_output_study(out, study, study_name)  # marked a new folder meanwhile
        marker = read_marker(out)
        if marker is None:
            if adopted:
                say(adopted)
            marker = {
                "tumorscope_output": OUTPUT_FORMAT,
                "tumorscope_version": __version__,
                "created": _utcnow(),
                "adopted": adopted is not None,
                "study": str(study),
                "study_name": study_name,
            }
            write_json(out / MARKER_NAME, marker)
        elif marker.get("study") != str(study) or (
            study_name is not None and marker.get("study_name") != study_name
        ):
            # a study that was moved (check_output_study), or a marker of an older tumorscope
            # that did not record the study's name
            write_json(out / MARKER_NAME, {**marker, "study": str(study), "study_name": study_name})
    except BaseException:
        OutputFolder(out, lock).release()
        raise
    return OutputFolder(out, lock)
