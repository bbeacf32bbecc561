"""tumorscope.report."""
