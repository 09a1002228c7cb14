"""stepspec's Hydra configs: one group per seam of the code, and ``recipe/`` presets.

``CONF_DIR`` is this folder, the config path of every program (``recipes``, the server's
generator presets of ``recipes.serve`` among them), defined once, here.
"""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent
