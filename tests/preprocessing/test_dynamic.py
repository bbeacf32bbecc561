"""Dynamic series: the number of pre-contrast frames, estimated from the enhancement onset."""

from __future__ import annotations

import numpy as np

from tumorscope.preprocessing import baseline_frames


def test_baseline_estimate_finds_the_onset() -> None:
    rng = np.random.default_rng(1)
    data = 100 + rng.normal(0, 1, (20, 20, 3, 30))
    data[5:7, 5:7, :, 8:] += 400.0  # an artery enhancing from frame 8
    assert baseline_frames(data) == 8


def test_no_enhancement_gives_one_frame_and_the_estimate_stays_in_range() -> None:
    flat = np.full((4, 4, 2, 10), 50.0)
    assert baseline_frames(flat) == 1
    late = flat.copy()
    late[0, 0, 0, -1] = 500.0  # enhancing in the last frame only
    assert baseline_frames(late) == 9
    early = flat.copy()
    early[0, 0, 0, 1:] = 500.0
    assert baseline_frames(early) == 1
