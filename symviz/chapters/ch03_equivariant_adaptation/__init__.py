"""Chapter 03: equivariant adaptation of a pretrained model (notebooks/03_equivariant_adaptation.ipynb)."""
