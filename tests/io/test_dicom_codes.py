"""DICOM codes of the export: units (UCUM), parameters, and the private scheme for the rest."""

from __future__ import annotations

import pytest

pytest.importorskip("highdicom")

from tumorscope.errors import ExportError
from tumorscope.io.dicom.codes import (
    PRIVATE_SCHEME,
    default_unit,
    parameter_code,
    unit_code,
)


def test_parameter_codes_standard_or_private() -> None:
    for name in ("ADC", "adc.ADC"):
        c = parameter_code(name)
        assert (c.value, c.scheme_designator) == ("113041", "DCM")
    assert parameter_code("dce_etofts.Ktrans").value == "126312"
    other = parameter_code("relaxometry_vfa.T1")
    assert (other.scheme_designator, other.meaning) == (PRIVATE_SCHEME, "relaxometry_vfa.T1")
    assert len(parameter_code("a_very_long_model_name.Parameter").value) <= 16


def test_units() -> None:
    assert default_unit("ADC") == default_unit("adc.ADC") == "mm2/s"
    assert default_unit("mystery") is None
    c = unit_code("mm2/s")
    assert c.scheme_designator == "UCUM" and c.meaning == "mm2/s"
    with pytest.raises(ExportError, match="no UCUM code") as info:
        unit_code("furlongs")
    assert info.value.field == "unit"
