"""Fuzzing the study reader: whatever the input, a result or a tumorscope error, quickly.

Hypothesis writes ``study.yaml`` texts and documents, sidecars, lesion tables, measurement
tables and NIfTI files (truncated, with random header fields, declaring huge sizes). The
readers (:func:`read_manifest`, :func:`validate_study`, :func:`open_study`,
:func:`protocol_from_sidecar`, the lesion table, :func:`tumorscope.response.read_table`,
:meth:`Volume.from_nifti`) must either work or raise a :class:`TumorscopeError`, never
another exception, within the per-example deadline. Derandomized, so CI sees the same
examples every time.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tumorscope.errors import Problem, TumorscopeError
from tumorscope.io import open_study, validate_study
from tumorscope.io.bids import protocol_from_sidecar, read_sidecar
from tumorscope.io.manifest import read_manifest
from tumorscope.io.study import Lesions
from tumorscope.response import read_table
from tumorscope.volume import Volume

FUZZ = settings(
    max_examples=60,
    derandomize=True,
    deadline=3000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@contextmanager
def _folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@contextmanager
def _ceiling(n_bytes: int) -> Iterator[None]:
    old = os.environ.get("TUMORSCOPE_MAX_IMAGE_BYTES")
    os.environ["TUMORSCOPE_MAX_IMAGE_BYTES"] = str(n_bytes)
    try:
        yield
    finally:
        if old is None:
            del os.environ["TUMORSCOPE_MAX_IMAGE_BYTES"]
        else:
            os.environ["TUMORSCOPE_MAX_IMAGE_BYTES"] = old


# ---------------------------------------------------------------- study.yaml
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["2026-01-05", "2026-02-30", "recist1.1", "rano", "../x", "001", "T2w"]),
    st.dates().map(str),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(st.text(max_size=6), st.integers(0, 99)), inner, max_size=4)
    ),
    max_leaves=25,
)
ids = st.one_of(st.sampled_from(["001", "1", "a", "01", "../x", "0_1"]), st.text(max_size=6))
visit = st.fixed_dictionaries(
    {"date": st.one_of(st.dates(), values)},
    optional={"baseline": values, "prebaseline": values},
)
subject = st.fixed_dictionaries(
    {"visits": st.one_of(st.dictionaries(ids, visit, min_size=1, max_size=3), values)},
    optional={"treatment": st.one_of(values, st.fixed_dictionaries({"start_date": values}))},
)
manifests = st.fixed_dictionaries(
    {"subjects": st.one_of(st.dictionaries(ids, subject, min_size=1, max_size=3), values)},
    optional={
        "name": values,
        "criteria": values,
        "roles": values,
        "dce": values,
        "options": values,
    },
)
yaml_texts = st.one_of(
    manifests.map(lambda m: yaml.safe_dump(m, allow_unicode=True)),
    st.text(alphabet=st.sampled_from(list("abc01-: \n[]{}&*!,'\"|>?%@#")), max_size=200),
    st.text(max_size=100),
)


def _reads(root: Path) -> None:
    problems = validate_study(root)
    assert all(isinstance(p, Problem) for p in problems)
    try:
        open_study(root)
    except TumorscopeError:
        pass


@settings(FUZZ, max_examples=150)
@given(text=yaml_texts)
def test_any_study_yaml_is_read_or_reported(text: str) -> None:
    with _folder() as root:
        (root / "study.yaml").write_text(text, encoding="utf-8")
        manifest, problems = read_manifest(root / "study.yaml")
        assert manifest is not None or problems
        _reads(root)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_any_bytes_as_study_yaml_are_read_or_reported(raw: bytes) -> None:
    with _folder() as root:
        (root / "study.yaml").write_bytes(raw)
        _reads(root)


# ---------------------------------------------------------------- sidecars
FIELDS = [
    "FlipAngle",
    "RepetitionTime",
    "FrameTimes",
    "BaselineFrames",
    "EchoTime",
    "InversionTime",
]
numbers = st.one_of(
    st.integers(-(10**400), 10**400), st.floats(allow_nan=True, allow_infinity=True)
)
sidecar_values = st.one_of(values, st.lists(numbers, max_size=6), numbers)


@FUZZ
@given(
    suffix=st.sampled_from(["VFA", "dce", "MEGRE", "MESE", "IRT1", "dwi", "T2w"]),
    sidecar=st.dictionaries(st.sampled_from(FIELDS), sidecar_values, max_size=6),
    bval=st.one_of(st.none(), st.text(max_size=30)),
)
def test_any_sidecar_gives_a_protocol_or_an_error(
    suffix: str, sidecar: dict[str, Any], bval: str | None
) -> None:
    with _folder() as root:
        image = root / f"sub-1_ses-1_{suffix}.nii.gz"
        if bval is not None:
            (root / f"sub-1_ses-1_{suffix}.bval").write_text(bval)
        try:
            protocol_from_sidecar(image, suffix, sidecar)
        except TumorscopeError:
            pass


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_any_sidecar_file_is_read_or_an_error(raw: bytes) -> None:
    with _folder() as root:
        (root / "x_dce.json").write_bytes(raw)
        try:
            read_sidecar(root / "x_dce.nii.gz")
        except TumorscopeError:
            pass


def test_a_deeply_nested_sidecar_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x_dce.json").write_text("[" * 100_000)
    with pytest.raises(TumorscopeError):
        read_sidecar(tmp_path / "x_dce.nii.gz")


# ---------------------------------------------------------------- lesion and measurement tables
cells = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["1", "2", "L1", "true", "false", "liver", "", "-1", "1e308", "nan"]),
)


def _tsv(rows: list[list[str]], sep: str) -> str:
    return "\n".join(sep.join(r) for r in rows) + "\n"


LESION_HEADER = ["label", "lesion_id", "organ", "target", "nodal"]


@FUZZ
@given(
    rows=st.lists(st.lists(cells, min_size=0, max_size=6), max_size=5),
    header=st.one_of(st.just(LESION_HEADER), st.lists(st.sampled_from(LESION_HEADER), max_size=5)),
    encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]),
)
def test_any_lesion_table_is_read_or_an_error(
    rows: list[list[str]], header: list[str], encoding: str
) -> None:
    with _folder() as root:
        table = root / "t.tsv"
        table.write_bytes(_tsv([header, *rows], "\t").encode(encoding, "replace"))
        try:
            assert isinstance(Lesions(root / "t.nii.gz", table, root).table, tuple)
        except TumorscopeError:
            pass


MEASUREMENT_HEADER = [
    "subject",
    "visit",
    "date",
    "lesion_id",
    "kind",
    "diameter_mm",
    "status",
    "baseline",
    "perpendicular_mm",
]
measurement_cells = st.one_of(
    cells,
    st.sampled_from(
        ["target", "non-target", "new", "2026-01-05", "2026-02-30", "absent", "1e308", "=1+1"]
    ),
    st.dates().map(str),
)


@FUZZ
@given(
    rows=st.lists(st.lists(measurement_cells, min_size=9, max_size=9), max_size=6),
    raw=st.one_of(st.none(), st.binary(max_size=200)),
)
def test_any_measurement_table_is_read_or_an_error(
    rows: list[list[str]], raw: bytes | None
) -> None:
    with _folder() as root:
        path = root / "m.csv"
        text = _tsv([MEASUREMENT_HEADER, *[[c.replace(",", " ") for c in r] for r in rows]], ",")
        path.write_bytes(text.encode() if raw is None else raw)
        try:
            read_table(path)
        except TumorscopeError:
            pass


# ---------------------------------------------------------------- NIfTI
def _good_nifti() -> bytes:
    with _folder() as root:
        p = root / "v.nii"
        Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.eye(4)).to_nifti(p)
        return p.read_bytes()


GOOD = _good_nifti()


@FUZZ
@given(
    cut=st.integers(0, len(GOOD)),
    patches=st.lists(st.tuples(st.integers(0, 351), st.binary(min_size=1, max_size=8)), max_size=4),
    compressed=st.booleans(),
    dtype=st.sampled_from([np.float32, np.int32, np.uint8]),
)
def test_any_nifti_is_read_or_an_error(
    cut: int, patches: list[tuple[int, bytes]], compressed: bool, dtype: type
) -> None:
    raw = bytearray(GOOD[:cut])
    for at, blob in patches:
        raw[at : at + len(blob)] = blob
    with _folder() as root, _ceiling(64 * 2**20):
        p = root / ("v.nii.gz" if compressed else "v.nii")
        p.write_bytes(gzip.compress(bytes(raw)) if compressed else bytes(raw))
        try:
            Volume.from_nifti(p, dtype=dtype)
        except TumorscopeError:
            pass


@FUZZ
@given(
    dims=st.lists(st.integers(-5, 2**15 - 1), min_size=1, max_size=7),
    datatype=st.sampled_from([2, 4, 8, 16, 64, 512, 768, 1024, 1280, 1792, 2048, 99]),
    vox_offset=st.one_of(st.just(352.0), st.floats(0, 1e30)),
    compressed=st.booleans(),
)
def test_any_declared_size_is_read_or_an_error(
    dims: list[int], datatype: int, vox_offset: float, compressed: bool
) -> None:
    """Headers declaring anything (up to 32767^7 voxels) over a small file: no allocation
    beyond the ceiling, a tumorscope error or an image."""
    hdr = np.frombuffer(GOOD[:348], dtype=np.uint8).copy()
    dim = np.zeros(8, np.int16)
    dim[0] = len(dims)
    dim[1 : 1 + len(dims)] = dims
    hdr[40:56] = np.frombuffer(dim.tobytes(), np.uint8)
    hdr[70:72] = np.frombuffer(np.int16(datatype).tobytes(), np.uint8)
    hdr[108:112] = np.frombuffer(np.float32(vox_offset).tobytes(), np.uint8)
    raw = hdr.tobytes() + GOOD[348:]
    with _folder() as root, _ceiling(64 * 2**20):
        p = root / ("v.nii.gz" if compressed else "v.nii")
        p.write_bytes(gzip.compress(raw) if compressed else raw)
        try:
            Volume.from_nifti(p)
        except TumorscopeError:
            pass


def test_the_fuzzed_study_reader_accepts_a_good_manifest(tmp_path: Path) -> None:
    """The strategies can produce valid input too (the fuzz is not only of errors)."""
    (tmp_path / "study.yaml").write_text(
        json.dumps({"subjects": {"1": {"visits": {"1": {"date": "2026-01-05"}}}}})
    )
    (tmp_path / "sub-1" / "ses-1").mkdir(parents=True)
    assert [p for p in validate_study(tmp_path) if p.severity == "error"] == []
    assert len(open_study(tmp_path)) == 1
