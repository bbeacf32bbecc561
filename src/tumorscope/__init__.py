"""tumorscope: quantitative multiparametric MRI of tumours during therapy.

The public API is organised by stage: ``tumorscope.io`` (studies, NIfTI, DICOM),
``tumorscope.models`` (signal models and their fits), ``tumorscope.lesions`` (size, statistics,
radiomics, habitats), ``tumorscope.response`` (RECIST 1.1, iRECIST, RANO, functional response),
``tumorscope.study`` (database), ``tumorscope.pipeline`` and ``tumorscope.report``. Heavy
imports happen inside those subpackages, so ``import tumorscope`` stays fast.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import DataError, FitError, ProtocolError, StudyError, TumorscopeError
from .protocol import (
    DiffusionProtocol,
    DynamicProtocol,
    InversionRecoveryProtocol,
    MultiEchoProtocol,
    VFAProtocol,
)
from .volume import Volume

try:
    __version__ = version("tumorscope")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "DataError",
    "DiffusionProtocol",
    "DynamicProtocol",
    "FitError",
    "InversionRecoveryProtocol",
    "MultiEchoProtocol",
    "ProtocolError",
    "StudyError",
    "TumorscopeError",
    "VFAProtocol",
    "Volume",
    "__version__",
]
