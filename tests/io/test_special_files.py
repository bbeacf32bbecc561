"""Inputs that are not regular files (a named pipe, a folder) are refused before they are opened.

Opening a named pipe (FIFO) for reading waits for a writer forever: every read path is run in
a thread with a deadline, and a regression is unblocked (the pipe opened for writing, so the
reader sees its end) and failed instead of hanging the test session.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tumorscope.errors import DataError
from tumorscope.files import file_sha256, regular_file
from tumorscope.io import validate_study
from tumorscope.io.bids import read_bval, read_bvec, read_sidecar
from tumorscope.io.manifest import read_manifest
from tumorscope.io.mrs import read_nifti_mrs
from tumorscope.volume import Volume

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")

DEADLINE_S = 20.0


def _within_deadline(fifo: Path, call: Callable[[], Any]) -> BaseException | Any:
    """``call()``'s result or exception; fails the test if it is still blocked at the deadline."""
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(call())
        except BaseException as exc:  # handed back to the test
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(DEADLINE_S)
    if thread.is_alive():  # blocked in open(): give it an end of file, then fail
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(5)
        pytest.fail(f"reading {fifo.name} blocked: the named pipe was opened")
    return box[0]


def _refused(fifo: Path, call: Callable[[], Any]) -> DataError:
    got = _within_deadline(fifo, call)
    assert isinstance(got, DataError), got
    assert "not a regular file" in got.message and "named pipe" in got.message
    return got


@pytest.fixture
def fifo(tmp_path: Path) -> Callable[[str], Path]:
    def make(name: str) -> Path:
        p = tmp_path / name
        os.mkfifo(p)
        return p

    return make


def test_the_check_names_what_the_file_is(tmp_path: Path, fifo: Callable[[str], Path]) -> None:
    f = tmp_path / "x.json"
    f.write_text("{}")
    assert regular_file(f) == f
    with pytest.raises(DataError, match="not a regular file but a folder") as info:
        regular_file(tmp_path, field="bval")
    assert info.value.field == "bval"
    with pytest.raises(DataError, match="file not found"):
        regular_file(tmp_path / "missing.json")
    p = fifo("p.json")
    with pytest.raises(DataError, match=r"named pipe \(FIFO\)") as info:
        regular_file(p)
    assert info.value.file == str(p)


def test_a_sidecar_that_is_a_named_pipe_is_refused(fifo: Callable[[str], Path]) -> None:
    p = fifo("sub-01_VFA.json")
    err = _refused(p, lambda: read_sidecar(p.with_name("sub-01_VFA.nii.gz")))
    assert err.file == str(p)


def test_bval_and_bvec_that_are_named_pipes_are_refused(fifo: Callable[[str], Path]) -> None:
    image = fifo("sub-01_dwi.bval").with_name("sub-01_dwi.nii.gz")
    assert _refused(image.with_name("sub-01_dwi.bval"), lambda: read_bval(image)).field == "bval"
    bvec = fifo("sub-01_dwi.bvec")
    assert _refused(bvec, lambda: read_bvec(image)).field == "bvec"  # not taken as "no bvec"


@pytest.mark.parametrize("name", ["a_T2w.nii.gz", "a_T2w.nii"])
def test_an_image_that_is_a_named_pipe_is_refused(fifo: Callable[[str], Path], name: str) -> None:
    p = fifo(name)
    assert _refused(p, lambda: Volume.from_nifti(p)).file == str(p)
    assert _refused(p, lambda: list(Volume.frames_from_nifti(p))).file == str(p)
    assert _refused(p, lambda: read_nifti_mrs(p)).file == str(p)


def test_hashing_a_named_pipe_is_refused(fifo: Callable[[str], Path]) -> None:
    p = fifo("a_T2w.nii.gz")
    assert _refused(p, lambda: file_sha256(p)).file == str(p)


def test_a_manifest_that_is_a_named_pipe_is_a_problem(fifo: Callable[[str], Path]) -> None:
    p = fifo("study.yaml")
    manifest, problems = _within_deadline(p, lambda: read_manifest(p))
    assert manifest is None
    assert [(x.file, x.severity) for x in problems] == [("study.yaml", "error")]
    assert "not a regular file but a named pipe" in problems[0].message


def test_validate_lists_a_named_pipe_in_place_of_a_sidecar_or_table(study_copy: Path) -> None:
    side = study_copy / "sub-001/ses-02/anat/sub-001_ses-02_VFA.json"
    side.unlink()
    os.mkfifo(side)
    (table,) = study_copy.glob("derivatives/lesions/sub-001/ses-03/*_lesions.tsv")
    shutil.move(table, table.with_suffix(".bak"))
    os.mkfifo(table)
    problems = _within_deadline(side, lambda: validate_study(study_copy))
    errors = {(p.file, p.message) for p in problems if p.severity == "error"}
    pipe = "not a regular file but a named pipe (FIFO); expected a file of data"
    assert errors == {
        ("sub-001/ses-02/anat/sub-001_ses-02_VFA.json", pipe),
        (str(table.relative_to(study_copy)), pipe),
    }


def test_a_named_pipe_among_dicom_files_is_skipped_with_a_warning(
    fifo: Callable[[str], Path],
) -> None:
    from tumorscope.io.dicom.scan import index_series, scan_dicom

    p = fifo("x.dcm")
    result = _within_deadline(p, lambda: scan_dicom(p.parent))
    assert result.series == []
    (problem,) = result.problems
    assert problem.severity == "warning" and problem.file == str(p)
    assert "not a regular file but a named pipe" in problem.message
    assert _within_deadline(p, lambda: index_series(p.parent)) == {}


def test_a_pacs_configuration_that_is_a_named_pipe_or_binary_is_refused(
    tmp_path: Path, fifo: Callable[[str], Path]
) -> None:
    from tumorscope.io.pacs import credentials_from_env

    p = fifo("pacs.json")
    env = {"TUMORSCOPE_PACS_CONFIG": str(p)}
    assert _refused(p, lambda: credentials_from_env(env)).field == "TUMORSCOPE_PACS_CONFIG"
    binary = tmp_path / "pacs.yaml"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(DataError, match="not a text file") as info:
        credentials_from_env({"TUMORSCOPE_PACS_CONFIG": str(binary)})
    assert info.value.file == str(binary) and info.value.field == "TUMORSCOPE_PACS_CONFIG"


def test_a_lesion_table_that_is_a_named_pipe_is_refused(fifo: Callable[[str], Path]) -> None:
    from tumorscope.cli.cells import _lesion_ids

    p = fifo("lesions.tsv")
    assert _refused(p, lambda: _lesion_ids(p)).field == "--lesion-table"
