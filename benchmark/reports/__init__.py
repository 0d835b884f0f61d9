"""The run archive, tables, statistics, plots, and the comparisons with published work."""
