"""Scores: the paper's metrics, the WDC-PAVE authors' rule, intervals, prediction files."""
