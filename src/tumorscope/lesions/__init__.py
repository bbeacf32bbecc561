"""tumorscope.lesions."""
