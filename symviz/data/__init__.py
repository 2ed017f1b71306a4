"""Data sources, one module each: simulators we write and data shipped inside installed packages.

Nothing here touches the network. Import the module you need, e.g. ``from symviz.data import images``.
"""
