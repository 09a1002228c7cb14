"""Hydra's own flags on the Hydra programs, as in any Hydra app, in a subprocess as a user runs
them (issue 14): --cfg, -c, --resolve, --info, --help, --hydra-help, -m; each mistake one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def run(*args, module="recipes.evaluate", timeout=120):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args", [
    ["recipe=smoke", "--cfg", "job"],
    ["recipe=smoke", "-c", "job"],
    ["--cfg", "job", "recipe=smoke"],
    ["recipe=smoke", "--cfg=job"],
    ["recipe=smoke", "-c", "job", "policy.threshold=0.7"],  # a flag between overrides
])
def test_cfg_job_prints_the_job_config_and_runs_nothing(args, tmp_path):
    out = tmp_path / "run"
    p = run(*args, f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert {"draft", "target", "judge", "policy", "dataset", "loop", "baseline"} <= set(cfg)
    assert "hydra" not in cfg
    assert cfg["draft"]["_target_"] == "reasoning.backends.scripted.ScriptedGenerator"
    assert cfg["policy"]["threshold"] == (0.7 if "policy.threshold=0.7" in args else 0.5)
    assert not out.exists()


def test_cfg_hydra_names_the_job_after_the_program():
    p = run("recipe=smoke", "--cfg", "hydra")
    assert p.returncode == 0, p.stderr
    hydra = yaml.safe_load(p.stdout)["hydra"]
    assert hydra["job"]["name"] == "evaluate"
    assert hydra["run"]["dir"].startswith("runs/${hydra:runtime.choices.recipe}/")


def test_cfg_all_resolve_resolves_interpolations():
    p = run("recipe=smoke", "--cfg", "all", "--resolve")
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert cfg["hydra"]["run"]["dir"].startswith("runs/smoke/")  # ${hydra:runtime.choices.recipe}
    assert cfg["policy"]["threshold"] == 0.5
    assert "${" not in p.stdout.split("\nhydra:")[0]


def test_package_shows_one_part_of_the_config():
    p = run("recipe=smoke", "-c", "job", "-p", "policy")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("# @package policy") and yaml.safe_load(p.stdout)["threshold"] == 0.5


@pytest.mark.parametrize("args,needle", [
    (["--info"], "Installed Hydra Plugins"),
    (["--info", "config"], "Config search path"),
    (["--info=defaults"], "recipe/smoke"),
    (["-i", "searchpath"], "file://"),
])
def test_info(args, needle):
    p = run("recipe=smoke", *args)
    assert p.returncode == 0, p.stderr
    assert needle in p.stdout
    assert "hydra._internal" not in p.stdout + p.stderr  # Hydra's lines once, not also through ours


def test_help_names_the_program_and_lists_the_groups():
    p = run("recipe=smoke", "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("python -m recipes.evaluate is powered by Hydra.")
    assert "_cli" not in p.stdout
    assert "recipe: " in p.stdout and "smoke" in p.stdout and "threshold: 0.5" in p.stdout


def test_help_of_bench_and_collect_names_them():
    for module in ("recipes.bench", "recipes.collect_router_data"):
        p = run("--help", module=module)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith(f"python -m {module} is powered by Hydra."), p.stdout[:200]


def test_hydra_help_names_the_program_and_shows_hydras_flags():
    # plain Hydra fails here (it composes its help without the primary config the override is for)
    p = run("recipe=smoke", "--hydra-help")
    assert p.returncode == 0, p.stderr
    first, *rest = p.stdout.splitlines()
    assert "python -m recipes.evaluate" in first
    assert "Hydra (1.3" in p.stdout and "--cfg,-c" in p.stdout and "--multirun,-m" in p.stdout


def test_multirun_makes_one_run_per_value_under_the_sweep_dir(tmp_path):
    sweep = tmp_path / "sweep"
    p = run("-m", "recipe=smoke", "policy.threshold=0.3,0.9", f"hydra.sweep.dir={sweep}", "progress=false",
            "baseline=null")
    assert p.returncode == 0, p.stderr
    jobs = sorted(d.name for d in sweep.iterdir() if d.is_dir())
    assert jobs == ["0", "1"]
    for job, t in zip(jobs, (0.3, 0.9), strict=True):
        d = sweep / job
        assert yaml.safe_load((d / "config.yaml").read_text())["policy"]["threshold"] == t
        assert (d / "summary.json").is_file() and (d / "evaluate.log").is_file()
    assert (sweep / "multirun.yaml").is_file()


def test_a_users_config_dir_adds_presets(tmp_path):
    (tmp_path / "recipe").mkdir()
    mine = (ROOT / "conf/recipe/smoke.yaml").read_text().replace("threshold: 0.5", "threshold: 0.8")
    (tmp_path / "recipe" / "mine.yaml").write_text(mine)
    p = run("--config-dir", tmp_path, "recipe=mine", "--cfg", "job")
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load(p.stdout)["policy"]["threshold"] == 0.8
    p = run("--config-dir", tmp_path, "recipe=mne", "--cfg", "job")
    assert p.returncode == 2 and "did you mean 'mine'?" in p.stderr


@pytest.mark.parametrize("args,needle", [
    (["--cfg", "jobb"], "invalid choice: 'jobb'"),
    (["--resolve"], "--resolve works only together with --cfg"),
    (["-m", "--cfg", "job"], "--multirun and --cfg do not go together"),
    (["--info", "all", "--cfg", "job"], "--cfg and --info do not go together"),
    (["--info", "recipe=smoke"], "give --info after the overrides"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["policy.threshold=0.3,0.9"], "is a sweep: add -m (--multirun)"),
    (["-m", "judge=confidence,prmm"], "unknown judge 'prmm'"),
    (["-m", "policy.threshold=choice(0.3,0.9)", "policy.thresold=1"], "policy.thresold"),
    (["--help", "recipe=smok"], "unknown recipe 'smok'"),
    (["--cfg", "job", "recipe=smok"], "unknown recipe 'smok'"),
    (["--config-dir", "/no/such/folder"], "--config-dir /no/such/folder: no such folder"),
    (["--config-name", "nosuch"], "nosuch"),
])
def test_mistakes_with_flags_exit_2_with_one_line(args, needle, tmp_path):
    p = run("recipe=smoke", *args, f"hydra.run.dir={tmp_path / 'r'}", f"hydra.sweep.dir={tmp_path / 's'}",
            timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: ") and needle in lines[0] and "Traceback" not in p.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_the_old_draft_and_target_group_names_still_work_with_a_note():
    new = run("recipe=smoke", "model@draft=scripted-draft", "model@target=qwen2.5-coder-1.5b-llamacpp",
              "--cfg", "job")
    old = run("recipe=smoke", "draft=scripted", "target=qwen2.5-coder-1.5b-llamacpp", "--cfg", "job")
    assert new.returncode == 0 and old.returncode == 0, old.stderr
    assert yaml.safe_load(old.stdout) == yaml.safe_load(new.stdout)
    cfg = yaml.safe_load(old.stdout)
    assert cfg["target"]["_target_"] == "reasoning.backends.llamacpp.LlamaCppGenerator"
    assert cfg["target"]["name"] == "target" and cfg["draft"]["name"] == "draft"
    assert "draft=scripted is model@draft=scripted-draft now" in old.stderr
    assert "target=qwen2.5-coder-1.5b-llamacpp is model@target=qwen2.5-coder-1.5b-llamacpp now" in old.stderr
    assert "note:" not in new.stderr


def test_an_unknown_model_is_refused_in_one_line_naming_the_group():
    p = run("recipe=smoke", "draft=qwen9", "--cfg", "job")
    assert p.returncode == 2
    (line,) = [x for x in p.stderr.splitlines() if "error" in x]
    assert "unknown model 'qwen9'" in line and "qwen2.5-coder-0.5b" in line
