"""tumorscope.response."""
