"""DICOM in and out: import MR series into a tumorscope study, export results as DICOM.

:func:`import_dicom` walks a folder of DICOM files (any order, any nesting, several patients,
studies and series mixed), groups the images into series, sorts slices and measurements, builds
the voxel-to-world affine and writes the BIDS-style study of ``docs/study-format.md``; the
export writes parameter maps, lesions and measurements back as DICOM objects that reference
the source series. ``docs/dicom.md`` describes both.

Modules, by job:

- :mod:`~tumorscope.io.dicom.scan`: files → series (:func:`scan_dicom`, :func:`index_series`),
  with every problem found.
- :mod:`~tumorscope.io.dicom.series`: one series → :class:`~tumorscope.volume.Volume`,
  protocol and sidecar (:func:`read_series`, :func:`affine_from_frames`,
  :func:`merge_split_series`).
- :mod:`~tumorscope.io.dicom.seg`: DICOM SEG and RT-STRUCT → label map on a given grid
  (:func:`read_segmentation`, :func:`read_rtstruct`).
- :mod:`~tumorscope.io.dicom.importer`: the study importer (:func:`import_dicom`);
  de-identification lives in :mod:`tumorscope.io.deid`.
- :mod:`~tumorscope.io.dicom.sources`: the source images of a study file
  (:func:`source_series_files`, :func:`load_source_images`).
- :mod:`~tumorscope.io.dicom.export`: Parametric Map, SEG and SR writers and
  :func:`export_visit`.

The synthetic DICOM writer of the tests is :mod:`tumorscope.phantom.dicom`.

Design decision: **pydicom, not dcm2niix.** Both were compared on the synthetic series
(``docs/dicom.md``): the affines and voxel values agree, but dcm2niix runs as a subprocess,
reports problems as free text on stdout, drops the private GE b-value offset handling into
heuristics we cannot test, and writes its own file names and sidecars that would have to be
parsed back. Reading with pydicom keeps every decision (sorting, timing, b-values, rejection of
bad series) in tested Python, with errors that name the file and the tag.
"""

from __future__ import annotations

from .export import (
    LesionMeasurement,
    export_visit,
    pipeline_results,
    to_highdicom_volume,
    write_parametric_map,
    write_seg,
    write_sr,
)
from .importer import ImportReport, import_dicom
from .scan import DicomFrame, DicomSeries, ScanResult, index_series, scan_dicom
from .seg import read_rtstruct, read_segmentation
from .series import SeriesData, affine_from_frames, merge_split_series, read_series
from .sources import load_source_images, source_series_files

__all__ = [
    "DicomFrame",
    "DicomSeries",
    "ImportReport",
    "LesionMeasurement",
    "ScanResult",
    "SeriesData",
    "affine_from_frames",
    "export_visit",
    "import_dicom",
    "index_series",
    "load_source_images",
    "merge_split_series",
    "pipeline_results",
    "read_rtstruct",
    "read_segmentation",
    "read_series",
    "scan_dicom",
    "source_series_files",
    "to_highdicom_volume",
    "write_parametric_map",
    "write_seg",
    "write_sr",
]
