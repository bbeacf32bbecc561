"""The run's log: the ``tumorscope.pipeline`` logger and the log file of a run."""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["attach_log", "detach_log", "log"]

#: The pipeline's logger (every module of the pipeline logs here).
log = logging.getLogger("tumorscope.pipeline")


class _RunLogHandler(logging.FileHandler):
    """The run's log file. A record that cannot be written (a full disk) is dropped
    silently: logging's default prints a traceback per record on stderr (hundreds of lines
    for one full disk); the error that matters reaches the user through the run itself."""

    def handleError(self, record: logging.LogRecord) -> None:
        return


def attach_log(path: Path) -> logging.Handler:
    """Send the pipeline's log (DEBUG and up) to a file; returns the handler to detach."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _RunLogHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    return handler


def detach_log(handler: logging.Handler) -> None:
    """Stop logging to a run's file (:func:`attach_log`)."""
    log.removeHandler(handler)
    try:
        handler.close()
    except OSError:  # the last lines could not be flushed (a full disk): the run's own
        pass  # error, raised already or about to be, says so
