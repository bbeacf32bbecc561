"""Reading and writing studies and images.

- :func:`open_study`, :func:`validate_study`: the BIDS-style study folder
  (``docs/study-format.md``).
- :class:`tumorscope.volume.Volume` reads and writes NIfTI (``Volume.from_nifti``, ``to_nifti``).
- :mod:`tumorscope.io.dicom`: DICOM in (scan, series, SEG/RT-STRUCT, importer) and out
  (``tumorscope.io.dicom.export``); :mod:`tumorscope.io.deid`: de-identification.
"""

from __future__ import annotations

from .manifest import Manifest, read_manifest
from .study import (
    LesionInfo,
    Lesions,
    Series,
    Study,
    Subject,
    Visit,
    open_study,
    validate_study,
    validate_visit,
)

__all__ = [
    "LesionInfo",
    "Lesions",
    "Manifest",
    "Series",
    "Study",
    "Subject",
    "Visit",
    "open_study",
    "read_manifest",
    "validate_study",
    "validate_visit",
]
