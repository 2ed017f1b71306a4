"""Visualisation: ``plots`` (matplotlib), ``scenes`` (plotly 3D), ``molecules`` (nglview), ``widgets``
(ipywidgets). Nothing here trains a model. Import the module you need."""
