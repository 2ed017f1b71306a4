"""``python -m symviz run ...`` (same as the ``symviz`` command)."""
import sys

from symviz.run import main

sys.exit(main())
