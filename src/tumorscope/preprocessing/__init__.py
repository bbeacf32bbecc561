"""Registration between visits and series, resampling onto a map's grid, dynamic series.

See :mod:`tumorscope.preprocessing.registration` and :mod:`tumorscope.preprocessing.dynamic`.
"""

from .dynamic import baseline_frames
from .registration import Registration, register, resample, resample_mask

__all__ = ["Registration", "baseline_frames", "register", "resample", "resample_mask"]
