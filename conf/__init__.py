"""stepspec's Hydra configs: one group per seam of the code, and ``recipe/`` presets.

``CONF_DIR`` is this folder, the config path of every program (``recipes``) and of the
server's generator presets (``reasoning.serve``): defined here, so neither reaches into the
other for it.
"""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent
