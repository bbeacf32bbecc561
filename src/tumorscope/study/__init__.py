"""tumorscope.study."""
