"""tumorscope.io."""
