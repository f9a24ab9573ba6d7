"""asv benchmarks for stridedop (one module per feature) and the figure scripts (run directly)."""
