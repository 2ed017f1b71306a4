"""Chapter 00: the symmetry primer (notebooks/00_symmetry_primer.ipynb)."""
