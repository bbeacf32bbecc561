"""The folder an export writes into: whose it is, and which of its files tumorscope may replace.

``export-dicom`` writes into ``OUT_DIR`` only if the folder is new, empty, or marked as one that
an export wrote: the marker ``.tumorscope-export.json`` (the same rule as a run's output
folder, :mod:`tumorscope.pipeline.outdir`, whose marker it mirrors; io may not import the
pipeline). The marker records every file an export delivered with its SHA-256, so that a later
export of the same visit replaces its own objects and nothing else: a file of the same name
that no export wrote, or one changed since (a user's edit, a file put in its place), is never
overwritten. Nothing is written, not even the folder, before these checks pass
(:func:`check_export_folder`); the objects are written in a temporary folder and moved into
place together (:func:`deliver`).

Two exports into one folder at once: the delivery (the second check, the marker's update and
the moves) holds an OS lock, ``.tumorscope-export.lock`` (filelock: released when its process
dies), so that one export's record of its files is never lost to the other's; the second waits
for the first's delivery (at most :data:`DELIVER_WAIT_S` seconds), then checks the folder again.
The lock is short (moves on one file system), so waiting is the right default, unlike a run's
lock, which is held for the whole run.

::

    OUT_DIR/
      .tumorscope-export.json   format, tumorscope version, creation time, {file: sha256}
      .tumorscope-export.lock   the delivery's lock (empty)
      sub-001_ses-01_ADC_pm.dcm …
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from ... import __version__
from ...errors import DataError
from ...files import write_json
from ...volume import ATOMIC_TEMP_PREFIX

__all__ = [
    "DELIVER_WAIT_S",
    "LOCK_NAME",
    "MARKER_NAME",
    "check_export_folder",
    "deliver",
    "staging_folder",
]

#: The marker of a folder written by ``export-dicom`` (JSON: format, version, files written).
MARKER_NAME = ".tumorscope-export.json"

#: The lock held while an export delivers its objects into the folder.
LOCK_NAME = ".tumorscope-export.lock"

#: Seconds an export waits for another one's delivery into the same folder.
DELIVER_WAIT_S = 120.0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_marker(out: Path) -> dict[str, object]:
    marker = out / MARKER_NAME
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"the export marker cannot be read ({exc}); nothing was written", file=marker
        ) from exc
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise DataError(
            "the export marker has no record of its files; nothing was written",
            file=marker,
            field="files",
        )
    return record


def check_export_folder(out: Path, names: Iterable[str]) -> dict[str, str]:
    """Whether an export may write the files ``names`` into ``out``; writes nothing.

    Returns
    -------
    dict
        The files earlier exports wrote into ``out`` (name → SHA-256), empty for a new or
        empty folder.

    Raises
    ------
    DataError
        ``out`` is a file; a non-empty folder without the export marker; or a file to write
        is already there and is not, unchanged, one an export wrote (named, with what to do).
    """
    if out.exists() and not out.is_dir():
        raise DataError("the output folder is a file, not a folder; nothing was written", file=out)
    if not out.exists():
        return {}
    if not (out / MARKER_NAME).is_file():
        foreign = sorted(
            p.name
            for p in out.iterdir()
            if not p.name.startswith(ATOMIC_TEMP_PREFIX) and p.name != LOCK_NAME
        )
        if foreign:
            shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
            raise DataError(
                f"the output folder is not empty ({shown}) and was not written by "
                f"export-dicom (no {MARKER_NAME}); nothing was written. Choose a new or "
                "empty folder",
                file=out,
            )
        return {}
    files: dict[str, str] = dict(_read_marker(out)["files"])  # type: ignore[call-overload]
    for name in names:
        path = out / name
        if not (path.exists() or path.is_symlink()):
            continue
        ours = name in files and path.is_file() and not path.is_symlink()
        if not ours or _sha256(path) != files[name]:
            raise DataError(
                "a file of this name is in the output folder and was not written by "
                "export-dicom (or was changed since); nothing was written. Move it away or "
                "choose another folder",
                file=path,
            )
    return files


def staging_folder(out: Path) -> Path:
    """A new temporary folder for the objects of an export to ``out``, on its file system.

    It is made in ``out`` when it exists, else in its nearest existing parent (so that ``out``
    itself is created only by :func:`deliver`); named with tumorscope's temporary prefix. The
    caller removes it.
    """
    anchor = out.absolute()
    while not anchor.is_dir():
        anchor = anchor.parent
    return Path(tempfile.mkdtemp(prefix=f"{ATOMIC_TEMP_PREFIX}export-", dir=anchor))


def deliver(written: Sequence[Path], out: Path) -> list[Path]:
    """Move the objects written in a staging folder into ``out``, recording them as its own.

    The folder is checked (:func:`check_export_folder`), created if new, locked
    (:data:`LOCK_NAME`), checked again under the lock (another export may have delivered in
    the meantime), and its marker updated *before* the files are moved, so a file in ``out``
    never lacks its record.

    Raises
    ------
    DataError
        A check fails, or another export holds the folder's lock past :data:`DELIVER_WAIT_S`.
    """
    from filelock import FileLock, Timeout

    names = [f.name for f in written]
    check_export_folder(out, names)  # nothing is written unless it passes
    out.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(out / LOCK_NAME), timeout=DELIVER_WAIT_S):
            return _deliver_locked(written, names, out)
    except Timeout:
        raise DataError(
            f"another export has been writing into this folder for over {DELIVER_WAIT_S:g} s "
            "(its lock is held); nothing was written. Try again when it has finished",
            file=out / LOCK_NAME,
        ) from None


def _deliver_locked(written: Sequence[Path], names: Sequence[str], out: Path) -> list[Path]:
    files = check_export_folder(out, names)
    marker = out / MARKER_NAME
    record: dict[str, object] = {
        "tumorscope_export": 1,
        "tumorscope_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if marker.is_file():
        record["created"] = _read_marker(out).get("created", record["created"])
    files.update({f.name: _sha256(f) for f in written})
    record["files"] = dict(sorted(files.items()))
    write_json(marker, record)
    final = []
    for f in written:
        os.replace(f, out / f.name)
        final.append(out / f.name)
    return final
