"""The paper's tables and the WDC-PAVE table, from metrics files."""
