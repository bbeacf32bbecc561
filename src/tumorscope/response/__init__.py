"""Response assessment over the longitudinal measurement table.

Size-based criteria (RECIST 1.1, iRECIST, RANO 2.0, iRANO) through :func:`assess` and
:func:`best_overall_response`; functional response (:mod:`~tumorscope.response.functional`:
change beyond the repeatability coefficient, functional diffusion / parametric response
maps); immunotherapy response patterns (:mod:`~tumorscope.response.patterns`:
pseudoprogression, mixed response, hyperprogression, durable response). See
``docs/response.md``.

The public names are imported lazily so that ``import tumorscope.response`` does not import
pandas.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "CRITERIA": "assessment",
    "assess": "assessment",
    "from_lesion_table": "assessment",
    "best_overall_response": "recist",
    "read_table": "table",
    "validate_table": "table",
    # functional response
    "Repeatability": "functional",
    "repeatability": "functional",
    "functional_change": "functional",
    "parametric_response_map": "functional",
    "joint_response_map": "functional",
    # patterns
    "pseudoprogression": "patterns",
    "pseudoprogression_candidates": "patterns",
    "mixed_response": "patterns",
    "hyperprogression": "patterns",
    "durable_response": "patterns",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
