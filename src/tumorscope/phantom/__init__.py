"""tumorscope.phantom."""
