"""Chapter 07: gradient starvation and spectral decoupling (notebooks/07_gradient_starvation.ipynb)."""
