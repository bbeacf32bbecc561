"""Content hashes (``tumorscope.pipeline.hashing``): bytes decide, never names or timestamps."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tumorscope.pipeline.hashing import file_sha256, inputs_hash

#: FIPS 180-2 test vectors.
SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_file_sha256_of_known_contents(tmp_path: Path) -> None:
    empty, abc = tmp_path / "empty", tmp_path / "abc"
    empty.write_bytes(b"")
    abc.write_bytes(b"abc")
    assert file_sha256(empty) == SHA256_EMPTY
    assert file_sha256(str(abc)) == SHA256_ABC  # a str path as well as a Path


@pytest.mark.parametrize("size", [(1 << 20) - 1, 1 << 20, (5 << 19) + 7])
def test_file_sha256_across_read_blocks(tmp_path: Path, size: int) -> None:
    """Files read in 1 MiB blocks: just under, exactly at and across block boundaries."""
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_file_sha256_depends_on_bytes_only(tmp_path: Path) -> None:
    a, b = tmp_path / "a.nii.gz", tmp_path / "sub" / "other-name.bin"
    b.parent.mkdir()
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    os.utime(b, (1e9, 1e9))  # another name, folder and timestamp: the same content
    assert file_sha256(a) == file_sha256(b)
    b.write_bytes(b"same byteS")  # one byte changed
    assert file_sha256(a) != file_sha256(b)


def test_file_sha256_of_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "nothing")


BASE: dict[str, Any] = {
    "step": "fit_dwi",
    "version": "3",
    "options": {"models": ["adc", "ivim"], "b_threshold": 200.0},
    "files": [("sub-001/dwi.nii.gz", "a" * 64), ("sub-001/dwi.bval", "b" * 64)],
    "upstream": {"register": "c" * 64},
}


def test_inputs_hash_is_a_stable_sha256_hex() -> None:
    h = inputs_hash(**BASE)
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert inputs_hash(**BASE) == h  # deterministic
    # a generator of files is accepted and gives the same hash as a list
    assert inputs_hash(**{**BASE, "files": iter(BASE["files"])}) == h


def test_inputs_hash_ignores_order_of_files_and_option_keys() -> None:
    h = inputs_hash(**BASE)
    assert inputs_hash(**{**BASE, "files": list(reversed(BASE["files"]))}) == h
    options = dict(reversed(list(BASE["options"].items())))
    assert list(options) != list(BASE["options"])
    assert inputs_hash(**{**BASE, "options": options}) == h


@pytest.mark.parametrize(
    "change",
    [
        {"step": "fit_dce"},
        {"version": "4"},
        {"options": {"models": ["adc"], "b_threshold": 200.0}},
        {"options": {"models": ["adc", "ivim"], "b_threshold": 250.0}},
        {"files": [("sub-001/dwi.nii.gz", "a" * 64), ("sub-001/dwi.bval", "d" * 64)]},
        {"files": [("sub-002/dwi.nii.gz", "a" * 64), ("sub-001/dwi.bval", "b" * 64)]},
        {"files": [("sub-001/dwi.nii.gz", "a" * 64)]},
        {"upstream": {"register": "e" * 64}},
        {"upstream": None},
    ],
)
def test_inputs_hash_changes_with_every_input(change: dict[str, Any]) -> None:
    assert inputs_hash(**{**BASE, **change}) != inputs_hash(**BASE)


def test_inputs_hash_keeps_fields_apart() -> None:
    """No ambiguity from joining fields: swapping two values is another hash."""
    swapped = {**BASE, "step": BASE["version"], "version": BASE["step"]}
    assert inputs_hash(**swapped) != inputs_hash(**BASE)
    moved = {**BASE, "options": BASE["upstream"], "upstream": BASE["options"]}
    assert inputs_hash(**moved) != inputs_hash(**BASE)


def test_inputs_hash_accepts_values_json_cannot_write() -> None:
    """Options such as paths are hashed through their text, deterministically."""
    opts = {"atlas": Path("/data/atlas.nii.gz")}
    h = inputs_hash(**{**BASE, "options": opts})
    assert h == inputs_hash(**{**BASE, "options": {"atlas": Path("/data/atlas.nii.gz")}})
    assert h != inputs_hash(**{**BASE, "options": {"atlas": Path("/data/other.nii.gz")}})
