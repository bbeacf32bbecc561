"""tumorscope.preprocessing."""
