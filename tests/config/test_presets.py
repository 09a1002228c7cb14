"""Compose every preset and every group option; check each ``_target_`` against its signature.

Nothing is instantiated: no model loads, no file is read.
"""

from __future__ import annotations

import inspect
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf

from recipes._cli import CONF_DIR, group_options, groups

SPECIAL = {"_target_", "_recursive_", "_convert_", "_partial_", "_args_"}
RECIPES = group_options("recipe")


def compose_with(overrides, config_name="evaluate"):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def targets(node, path=""):
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for k in node.keys():
            yield from targets(node._get_node(k), f"{path}.{k}" if path else str(k))
    elif isinstance(node, ListConfig):
        for i, v in enumerate(node):
            yield from targets(v, f"{path}[{i}]")


def check_signature(path, node):
    fn = get_method(node._target_) if "." in node._target_ else None
    assert fn is not None, f"{path}: cannot locate {node._target_}"
    sig = inspect.signature(fn)
    params = sig.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    keys = {k for k in node.keys() if k not in SPECIAL}
    unknown = keys - set(params)
    assert var_kw or not unknown, f"{path}: {node._target_} takes no {sorted(unknown)}"
    required = {n for n, p in params.items() if p.default is p.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in ("self", "cls")}
    missing = required - keys
    assert not missing, f"{path}: {node._target_} needs {sorted(missing)}"


def test_there_are_the_presets_the_readme_names():
    assert {"cpu-demo", "smoke", "target-only", "draft-only"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_preset_composes_and_matches_the_code(recipe):
    cfg = compose_with([f"recipe={recipe}"])
    found = list(targets(cfg))
    roles = {p.split(".")[0] for p, _ in found}
    assert {"draft", "target", "judge", "policy", "segmenter", "dataset", "prompt", "loop"} <= roles
    for path, node in found:
        check_signature(path, node)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_preset_pins_the_knobs_that_change_a_result(recipe):
    cfg = compose_with([f"recipe={recipe}"])
    text = (CONF_DIR / "recipe" / f"{recipe}.yaml").read_text()
    for group in ("model@draft", "model@target", "judge", "policy", "segmenter", "dataset", "prompt", "loop"):
        assert f"override /{group}:" in text, f"recipe {recipe} leaves {group} to the default"
    assert OmegaConf.select(cfg, "dataset.limit") is not None or recipe not in ("cpu-demo", "smoke")


@pytest.mark.parametrize("recipe", RECIPES)
def test_presets_keep_the_text_the_model_wrote(recipe):
    # stripping </think> feeds a thinking model a context it never wrote: only when asked
    cfg = compose_with([f"recipe={recipe}"])
    assert OmegaConf.select(cfg, "segmenter.strip_think") is False


OPTIONS = [(g, o) for g in groups() if g not in ("recipe", "model") for o in group_options(g)]
MODELS = group_options("model")


def test_the_model_group_holds_every_backend_and_the_cpu_models():
    assert {"scripted-draft", "scripted-target", "llamacpp", "vllm", "vllm-worker", "hf", "server",
            "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b-llamacpp",
            "qwen2.5-coder-1.5b-llamacpp", "smollm2-135m"} <= set(MODELS)
    assert not (CONF_DIR / "draft").exists() and not (CONF_DIR / "target").exists()


@pytest.mark.parametrize("option", MODELS)
@pytest.mark.parametrize("role", ["draft", "target"])
def test_every_model_takes_either_role(role, option):
    # one model/ group: any option drafts or targets, and the role names what it writes
    cfg = compose_with(["~recipe", f"model@{role}={option}"])
    assert cfg[role].name == role
    assert cfg[role]._target_ == OmegaConf.load(CONF_DIR / "model" / f"{option}.yaml")._target_
    for path, node in targets(cfg[role], role):
        check_signature(path, node)


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_group_option_composes_and_matches_the_code(group, option):
    cfg = compose_with(["~recipe", f"{group}={option}"])
    for path, node in targets(cfg[group], group):
        check_signature(path, node)


def prompt_file(name):
    return OmegaConf.load(CONF_DIR / "prompt" / f"{name}.yaml")


@pytest.mark.parametrize("overrides,prompt", [
    (["dataset=math500"], "math"),
    (["dataset=gsm8k"], "gsm8k"),
    (["dataset=jsonl", "dataset.path=x.jsonl"], "step-by-step"),  # no preference: the primary's default
    (["dataset=math500", "prompt=step-by-step"], "step-by-step"),  # the user's choice wins
    (["prompt=math", "dataset=gsm8k"], "math"),
])
def test_the_dataset_picks_its_prompt_unless_told_otherwise(overrides, prompt):
    cfg = compose_with(["~recipe", *overrides])
    assert cfg.prompt == prompt_file(prompt)


def test_math_and_gsm8k_prompts_ask_for_their_kind_of_answer():
    math, gsm8k = prompt_file("math").system, prompt_file("gsm8k").system
    assert "\\boxed{}" in math and "simplified" in math and "LaTeX" in math
    assert "\\boxed{}" in gsm8k and "number" in gsm8k
    assert "blank line" in math and "blank line" in gsm8k


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_preset_sends_the_prompt_it_names_whatever_its_dataset_picks(recipe):
    """Cached results are keyed by the prompt text: a preset's prompt must not follow the dataset."""
    path = CONF_DIR / "recipe" / f"{recipe}.yaml"
    named = re.search(r"override /prompt: (\S+)", path.read_text()).group(1)
    expected = OmegaConf.merge(prompt_file(named), OmegaConf.load(path).get("prompt") or {})
    for overrides in ([], ["dataset=math500"], ["dataset=gsm8k"]):
        assert compose_with([f"recipe={recipe}", *overrides]).prompt == expected


@pytest.mark.parametrize("overrides,prompt", [
    ([], "step-by-step"), (["dataset=math500"], "step-by-step"), (["prompt=math"], "math")])
def test_router_data_keeps_the_prompt_the_arbitrage_preset_judges_with(overrides, prompt):
    assert compose_with(overrides, "collect_router_data").prompt == prompt_file(prompt)
