"""Stages: series (with their protocol) → maps on disk and tidy rows, one module per modality.

A stage is a plain function of series that already carry their protocol
(:class:`~tumorscope.stages.base.SeriesInput`), masks and a typed options dataclass; it writes
its maps through the one writer (:func:`tumorscope.files.write_map`) and returns a
:class:`~tumorscope.stages.base.StageResult`. It imports no pipeline, CLI or report: the
pipeline steps and the ``tumorscope fit …`` commands are thin adapters over the same
functions, so both write the same files under the same names.

=======================  ===========================================================
module                   what
=======================  ===========================================================
``stages.base``          :class:`SeriesInput`, :class:`MapFile`, :class:`StageResult`
``stages.fit``           :func:`fit_volume` (any model, a 4-D series, a mask → maps)
``stages.diffusion``     DWI series → ADC / IVIM / DKI maps
=======================  ===========================================================
"""
