"""Chapter 04: the multichannel EGNN (notebooks/04_multichannel_egnn.ipynb)."""
