"""One package per notebook: its experiments, its exercise checks, its chapter-only plots.

Chapter packages sit on top of the library (``symviz.nn``, ``symviz.data``, ``symviz.viz`` and the core
modules) and never import each other; nothing outside this package imports them (``lint-imports``
checks both, see ``docs/architecture.md``).
"""
