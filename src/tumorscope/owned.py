"""What tumorscope wrote into a folder that a later command may replace whole.

``tumorscope phantom --overwrite`` and ``tumorscope import-dicom --overwrite`` replace a
folder they wrote before. Recognising the folder (a marker file, a manifest header) is not
enough: a user adds notes, lesion segmentations drawn on the imported images, or a run's
results under ``derivatives/``, and replacing the folder would delete them. So the command
that writes such a folder records every file and folder it wrote (:func:`record_files`:
relative path, size and modification time in ns, in :data:`RECORD_NAME` at the folder's
top), and the one that would replace it first lists what the record does not account for
(:func:`foreign_entries`): a file or folder added since, a file changed since (size or
modification time), any symbolic link. Anything listed, or no record at all (a folder of an
older tumorscope, or not tumorscope's), and nothing is replaced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import __version__
from .errors import DataError

__all__ = ["RECORD_NAME", "check_outside", "check_replaceable", "foreign_entries", "record_files"]

#: The record of what a command wrote, at the top of the folder it wrote.
RECORD_NAME = ".tumorscope-files.json"
_FORMAT = "tumorscope-files/1"


def _walk(root: Path) -> dict[str, Any]:
    """Every entry under ``root`` (not following links): ``rel/path`` → ``[size, mtime_ns]``
    for a file, ``None`` for a folder, ``"link"`` for a symbolic link (the record itself
    left out)."""
    found: dict[str, Any] = {}
    for top, dirs, files in os.walk(root, followlinks=False):
        rel_top = os.path.relpath(top, root)
        for name in dirs + files:
            path = os.path.join(top, name)
            rel = name if rel_top == "." else f"{rel_top}/{name}"
            if rel == RECORD_NAME:
                continue
            st = os.lstat(path)
            if os.path.islink(path):
                found[rel] = "link"
            elif name in dirs:
                found[rel] = None
            else:
                found[rel] = [st.st_size, st.st_mtime_ns]
    return found


def record_files(root: str | os.PathLike[str], *, command: str) -> Path:
    """Record every file and folder under ``root`` as written by ``command`` (call it once the
    folder is complete; the record is written last)."""
    root = Path(root)
    entries = _walk(root)
    record = {
        "format": _FORMAT,
        "command": command,
        "tumorscope_version": __version__,
        "entries": {k: v for k, v in sorted(entries.items()) if v != "link"},
    }
    path = root / RECORD_NAME
    path.write_text(json.dumps(record, indent=0) + "\n", encoding="utf-8")
    return path


def foreign_entries(root: str | os.PathLike[str]) -> list[str] | None:
    """What under ``root`` the record of :func:`record_files` does not account for (added,
    changed, a link), sorted; ``None`` when there is no readable record."""
    root = Path(root)
    try:
        record = json.loads((root / RECORD_NAME).read_text(encoding="utf-8"))
        known = record["entries"]
        if record.get("format") != _FORMAT or not isinstance(known, dict):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    foreign = []
    for rel, now in _walk(root).items():
        if now == "link" or known.get(rel, "absent") != now:
            foreign.append(rel)
    return sorted(foreign)


def check_replaceable(
    root: Path, *, what: str, option: str, taken_over: frozenset[str] | set[str] = frozenset()
) -> None:
    """Raise :class:`~tumorscope.errors.DataError` (nothing touched) unless everything under
    the folder ``root`` is what the command recorded there (:func:`foreign_entries`).

    ``what`` names the command's folder in the message (``"a phantom study"``), ``option``
    the option that asked for the replacement (``"--overwrite"``); ``taken_over``: files the
    command reads and carries into the new folder, which may have changed (an import's
    ``study.yaml``, whose user additions the next import keeps).
    """
    foreign = foreign_entries(root)
    if foreign is None:
        raise DataError(
            f"{option} replaces only {what} whose files tumorscope recorded ({RECORD_NAME}, "
            "written since 2026-12-06); this folder has no such record: nothing was replaced. "
            "Remove it yourself or choose a new folder",
            file=root,
            field=option,
        )
    foreign = [f for f in foreign if f not in taken_over]
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise DataError(
            f"{option} would delete what tumorscope did not write there (added or changed "
            f"since: {shown}); nothing was replaced. Move them out or choose a new folder",
            file=root,
            field=option,
        )


def check_outside(
    out: str | os.PathLike[str], inputs: Path | str, *, what: str, option: str, study: bool = False
) -> None:
    """Refuse (DataError, nothing written) an output folder ``out`` that is the input folder
    ``inputs`` or inside it: a command's files mixed with its inputs leave the inputs invalid
    or read again as inputs (sweep of 2026-12-06: ``run --out STUDY/sub-002``, an export into
    a subject folder, an import into the DICOM folder).

    With ``study`` (``inputs`` is a study), a folder strictly below the study's
    ``derivatives/`` is allowed (a run's default output, ``derivatives/tumorscope``), except
    in its lesion segmentations (``derivatives/lesions``), which the study reads.
    """
    o, root = Path(out).resolve(), Path(inputs).resolve()
    if not (o == root or o.is_relative_to(root)):
        return
    derivatives = root / "derivatives"
    if study and o.is_relative_to(derivatives) and o != derivatives:
        if not o.is_relative_to(derivatives / "lesions"):
            return
    where = (
        f"outside the study or below {derivatives} (not its lesions/)"
        if study
        else (f"outside {root}")
    )
    raise DataError(
        f"the output folder is {what} or inside it: its files would mix with the inputs; "
        f"nothing was written. Choose a folder {where}",
        file=Path(out),
        field=option,
    )
