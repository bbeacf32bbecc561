"""One exception hierarchy for tumorscope.

Every error says what was given, what was expected, and where: the file, the field, the
lesion or the visit. Build errors with the keyword arguments rather than formatting the
location into the message yourself, so that callers (``tumorscope validate``, the pipeline's
failure log) can read the location back from the exception::

    raise DataError("expected 8 volumes to match the b-values, got 7",
                    file="sub-01/ses-1/dwi/sub-01_ses-1_dwi.nii.gz", field="dim[4]")

Hierarchy::

    TumorscopeError
    ├── ProtocolError      an acquisition protocol is impossible (negative b-value, ...)
    ├── DataError          an image, table or file is malformed or inconsistent
    │   └── StudyError     a study folder or manifest is inconsistent (carries problems)
    ├── FitError           a fit cannot be run (unknown method, bad options)
    ├── ResponseError      a measurement table breaks a response-criteria rule
    └── ExportError        a result cannot be written (DICOM, database, report)

Every class also derives from the matching built-in (``ValueError`` for bad values,
``OSError`` is never used for content problems) so that generic handlers keep working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DataError",
    "ExportError",
    "FitError",
    "Problem",
    "ProtocolError",
    "ResponseError",
    "StudyError",
    "TumorscopeError",
    "TumorscopeWarning",
]


def _where(file: str | None, field: str | None) -> str:
    parts = [p for p in (file, field) if p]
    return ": ".join(parts)


class TumorscopeError(Exception):
    """Base class of every error tumorscope raises on purpose.

    Parameters
    ----------
    message : str
        What is wrong: what was given and what was expected.
    file : str or os.PathLike, optional
        The file the problem is in.
    field : str, optional
        The field, column, key or parameter the problem is in.
    """

    def __init__(self, message: str, *, file: object = None, field: str | None = None):
        self.message = message
        self.file = None if file is None else str(file)
        self.field = field
        where = _where(self.file, field)
        super().__init__(f"{where}: {message}" if where else message)


class ProtocolError(TumorscopeError, ValueError):
    """An acquisition protocol is impossible or incomplete."""


class DataError(TumorscopeError, ValueError):
    """Image data, a table or a file is malformed or inconsistent."""


class FitError(TumorscopeError, ValueError):
    """A fit cannot be run as asked (unknown method, inconsistent options or shapes)."""


class ResponseError(TumorscopeError, ValueError):
    """A measurement table breaks a rule of the response criteria."""


class ExportError(TumorscopeError):
    """A result cannot be written."""


class TumorscopeWarning(UserWarning):
    """Summary warnings (one per fit or per study, never one per voxel)."""


@dataclass(frozen=True)
class Problem:
    """One problem found while validating a study.

    Attributes
    ----------
    severity : {"error", "warning"}
    file : str
        Path of the file concerned, relative to the study root where possible.
    field : str
        Field, key, column or label concerned ("" when the whole file is concerned).
    message : str
        What is wrong, what was expected.
    """

    severity: Literal["error", "warning"]
    file: str
    field: str
    message: str

    def __str__(self) -> str:
        where = _where(self.file, self.field)
        return f"{self.severity.upper()} {where}: {self.message}"


class StudyError(DataError):
    """A study is inconsistent; ``problems`` lists everything found at once."""

    def __init__(self, problems: list[Problem], *, file: object = None, note: str = ""):
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        head = f"{len(errors)} error(s) in study" + (f"; {note}" if note else "")
        body = "\n".join(f"  {p}" for p in errors)
        super().__init__(f"{head}\n{body}" if body else head, file=file)
