"""Data and the protocol every cell shares: datasets, the labeled split, scoring, pre-flight checks."""
