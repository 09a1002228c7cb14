"""recipes.serve's generator presets: model/NAME, and the old draft/NAME, target/NAME."""

from __future__ import annotations

import logging

import pytest

from recipes.serve import build_generator


@pytest.mark.parametrize("preset", ["model/scripted-target", "target/scripted"])
def test_a_preset_of_the_model_group_builds_and_the_old_role_groups_map_onto_it(preset, caplog):
    # found and built: the scripted double has no token-id interface, so it is refused by name
    with caplog.at_level(logging.WARNING, logger="recipes.serve"), \
            pytest.raises(TypeError, match="^ScriptedGenerator cannot be served"):
        build_generator(preset, ["name=served"])
    old = preset.startswith("target/")
    assert ("target/scripted is model/scripted-target now" in caplog.text) is old


def test_an_unknown_preset_names_the_path_it_looked_for():
    with pytest.raises(FileNotFoundError, match=r"model/nonexistent.*conf/model/nonexistent.yaml"):
        build_generator("draft/nonexistent", [])
