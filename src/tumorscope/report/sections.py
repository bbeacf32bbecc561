"""The hook for modality sections of the subject page.

A modality (DSC, PET, CEST, metabolic imaging, organ watch …) adds its own section to every
subject page with a module ``report/<modality>.py`` holding a function

    def section(ctx: SubjectContext) -> str | None

that returns an HTML block (a ``<section>`` with an ``<h2 id=…>`` heading, built with
:func:`tumorscope.report.blocks.render` and a template of its own, or the figures of
:mod:`tumorscope.report.figures`), or ``None`` when the subject has nothing of that modality.
The block is inserted as it is (it must escape its own text: ``render`` does). The function
is named in :data:`SUBJECT_SECTIONS` as ``"module:function"``, one line per modality, in the
order the sections appear (after the parameter maps, before the functional diffusion maps).

A section that raises fails the subject's report step with its error, as any other part of
the report would: no silent holes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os

    from ..io import Study
    from ..layout import VisitMap

__all__ = ["SUBJECT_SECTIONS", "SubjectContext", "subject_sections"]

#: The modality sections of the subject page, ``"tumorscope.report.<modality>:<function>"``,
#: in page order (add one line per modality).
SUBJECT_SECTIONS: list[str] = [
    "tumorscope.report.measures:section",
    "tumorscope.report.dsc:section",
    "tumorscope.report.cest:section",
    "tumorscope.report.pet:section",
    "tumorscope.report.metabolic:section",
    "tumorscope.report.organs:section",
]


@dataclass(frozen=True)
class SubjectContext:
    """What a section may use: the run's output folder, the study, the subject and its maps.

    Attributes
    ----------
    out_dir : Path
        Output folder of the run (its files: :mod:`tumorscope.layout`).
    study : tumorscope.io.Study
    subject : str
    maps : mapping of visit id to mapping of map name to VisitMap
        Each visit's maps (``{"01": {"dsc.rCBV": VisitMap(path, status, unit)}}``).
    days : mapping of visit id to int or None
        Days on treatment of each visit.
    extra : mapping
        Files of earlier steps the pipeline hands on (by step name), for sections that read
        their own tables.
    options : mapping
        Run options a section shows (``perfusion_rcbv_threshold``).
    """

    out_dir: Path
    study: Study
    subject: str
    maps: Mapping[str, Mapping[str, VisitMap]]
    days: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Sequence[str | os.PathLike[str]]] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


def _resolve(name: str) -> Callable[[SubjectContext], str | None]:
    module, _, func = name.partition(":")
    fn = getattr(importlib.import_module(module), func or "section")
    if not callable(fn):
        raise TypeError(f"report section {name!r} is not a function")
    return fn


def subject_sections(ctx: SubjectContext, names: Sequence[str] | None = None) -> list[str]:
    """The HTML blocks of the modality sections for one subject (those that return one)."""
    blocks = []
    for name in SUBJECT_SECTIONS if names is None else names:
        block = _resolve(name)(ctx)
        if block:
            blocks.append(block)
    return blocks
