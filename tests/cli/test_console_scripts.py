"""Every program has a console script (pyproject.toml ``[project.scripts]``) whose ``--help`` runs
and names it (issue 14)."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

# script -> what its --help starts with (the Hydra programs) or holds (argparse's usage line)
PROGRAMS = {
    "stepspec-evaluate": "stepspec-evaluate is powered by Hydra.",
    "stepspec-bench": "stepspec-bench is powered by Hydra.",
    "stepspec-collect": "stepspec-collect is powered by Hydra.",
    "stepspec-compare": "usage: stepspec-compare ",
    "stepspec-train": "usage: stepspec-train ",
    "stepspec-serve": "serve",
}


def test_every_program_has_a_script_pointing_at_its_main():
    assert set(PROGRAMS) <= set(SCRIPTS)
    assert SCRIPTS["stepspec-serve"] == "recipes.serve:main"
    assert SCRIPTS["stepspec-collect"] == "recipes.collect_router_data:main"
    assert SCRIPTS["stepspec-train"] == "recipes.train_router:main"
    for name, target in SCRIPTS.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


def _installed_target(script: str) -> str | None:
    """The entry point the installed distribution gives ``script`` (None if not installed)."""
    from importlib.metadata import entry_points

    return next((e.value for e in entry_points(group="console_scripts", name=script)), None)


def _command(script: str) -> list[str]:
    """The installed script where it runs pyproject.toml's entry point; where it is not installed,
    or installed before its entry point moved (no ``pip install -e .`` since), what it should run:
    its entry point, under its name."""
    installed = shutil.which(script)
    if installed is not None and _installed_target(script) == SCRIPTS[script]:
        return [installed]
    module, func = SCRIPTS[script].split(":")
    code = f"import sys; sys.argv[0] = {script!r}; from {module} import {func}; sys.exit({func}())"
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("script", sorted(PROGRAMS))
def test_help_runs_and_names_the_program(script):
    p = subprocess.run([*_command(script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    if PROGRAMS[script].endswith("Hydra."):
        assert p.stdout.startswith(PROGRAMS[script]), p.stdout[:300]
    else:
        assert PROGRAMS[script] in p.stdout, p.stdout[:300]
