"""Chapter 05: crystal (space-group) equivariance (notebooks/05_crystal_equivariance.ipynb)."""
