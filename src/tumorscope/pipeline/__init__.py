"""tumorscope.pipeline."""
