"""Content hashes: what the pipeline uses to decide that a step is up to date.

Timestamps are never used: a file copied, touched or restored from a backup with the same
bytes is the same input; a file rewritten with other bytes is a new one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from ..files import file_sha256

__all__ = ["file_sha256", "inputs_hash"]


def inputs_hash(
    *,
    step: str,
    version: str,
    options: Any,
    files: Iterable[tuple[str, str]],
    upstream: Any,
) -> str:
    """One hash for everything a unit of work depends on.

    Parameters
    ----------
    step, version : str
        The step and its code version (bumped when its results would change).
    options : JSON-serialisable
        The options that change the results.
    files : iterable of (name, sha256)
        Input files by stable name (relative path) and content hash.
    upstream : JSON-serialisable
        Output hashes of the steps this one reads.
    """
    doc = {
        "step": step,
        "version": version,
        "options": options,
        "files": sorted(files),
        "upstream": upstream,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
