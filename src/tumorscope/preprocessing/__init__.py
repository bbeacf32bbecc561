"""Registration between visits and series, and resampling onto a map's grid.

See :mod:`tumorscope.preprocessing.registration`.
"""

from .registration import Registration, register, resample, resample_mask

__all__ = ["Registration", "register", "resample", "resample_mask"]
