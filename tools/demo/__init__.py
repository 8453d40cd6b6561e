"""The demo's orchestration (``tools/run_demo.py``): building the bundled
data and running the tools as stages. Not part of the ``mmaddp`` library;
importable as ``demo`` with ``tools/`` on ``sys.path``."""
