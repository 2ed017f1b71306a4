"""Chapter 06: screening materials for magnetic moments (notebooks/06_magnetic_screening.ipynb)."""
