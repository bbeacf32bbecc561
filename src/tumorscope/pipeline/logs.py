"""The run's log: the ``tumorscope.pipeline`` logger and the log file of a run."""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["attach_log", "detach_log", "log"]

#: The pipeline's logger (every module of the pipeline logs here).
log = logging.getLogger("tumorscope.pipeline")


def attach_log(path: Path) -> logging.Handler:
    """Send the pipeline's log (DEBUG and up) to a file; returns the handler to detach."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    return handler


def detach_log(handler: logging.Handler) -> None:
    """Stop logging to a run's file (:func:`attach_log`)."""
    log.removeHandler(handler)
    handler.close()
