"""tumorscope.fitting."""
