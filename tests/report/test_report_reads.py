"""Files read once per subject page (``report.reads``): kept inside ``once()`` only, not kept
when the caller says so, and a table copied for each caller."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from tumorscope.report import reads


def test_reads_keep_inside_once_only(tmp_path: Path) -> None:
    p = tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.eye(4)), p)
    t = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1, 2]}).to_parquet(t)
    # outside once(): every call reads
    assert reads.volume(p) is not reads.volume(p)
    with reads.once():
        first = reads.volume(p)
        assert reads.volume(tmp_path / "." / "m.nii.gz") is first  # same file, same object
        np.testing.assert_array_equal(first.data, np.arange(24).reshape(2, 3, 4))
        # the table is read once, but each caller gets its own copy to change
        a = reads.parquet(t)
        assert a is not None
        a["b"] = 0
        b = reads.parquet(t)
        assert b is not None and list(b.columns) == ["a"]
        assert reads.parquet(tmp_path / "missing.parquet") is None
    with reads.once():
        # keep=False: read, not kept; but taken from the cache when a block kept it
        assert reads.volume(p, keep=False) is not reads.volume(p, keep=False)
        kept = reads.volume(p)
        assert reads.volume(p, keep=False) is kept
    assert reads.volume(p) is not kept  # the cache ended with the block
