"""Synthetic DICOM: the test data of the DICOM importer and exporter, written from volumes.

tumorscope writes its own DICOM test data (no downloads): :func:`write_series` writes one
volume and its protocol as an MR series in the style of one vendor
(:mod:`~tumorscope.phantom.dicom.series`); :func:`study_to_dicom` converts a whole study
folder, lesion maps included, and :func:`write_rtstruct` writes a label map as an RT Structure
Set (:mod:`~tumorscope.phantom.dicom.study`).
"""

from __future__ import annotations

from .series import VENDORS, SynthPatient, SynthStudy, lps_affine, oblique_affine, write_series
from .study import study_to_dicom, write_rtstruct

__all__ = [
    "VENDORS",
    "SynthPatient",
    "SynthStudy",
    "lps_affine",
    "oblique_affine",
    "study_to_dicom",
    "write_rtstruct",
    "write_series",
]
