"""A grid as cells: building them, planning, running one cell, launching, progress, tables."""
