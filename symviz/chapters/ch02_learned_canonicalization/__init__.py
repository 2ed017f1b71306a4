"""Chapter 02: learned canonicalization (notebooks/02_learned_canonicalization.ipynb)."""
