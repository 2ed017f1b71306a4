"""Chapter 01: symmetry breaking and relaxed equivariance (notebooks/01_symmetry_breaking.ipynb)."""
