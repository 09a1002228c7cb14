"""The CLI's lazy generators tell the async schedule whether their model takes concurrent calls
(issue 14, defect 1): a server's calls are not queued on the one in-process engine thread."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from reasoning.backends.scripted import ScriptedGenerator
from reasoning.cache import StepCache
from reasoning.cached import CachedGenerator
from reasoning.judges import ScriptedJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.policies import ThresholdPolicy
from reasoning.schedule import takes_concurrent_calls
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import Problem
from recipes import _cli, _runs
from tests.unit.test_schedule import _Timed

SOLUTIONS = {f"p{i}": "".join(f"Step {j} of p{i}.\n\n" for j in range(2 + i % 3))
             + f"The answer is \\boxed{{{i}}}." for i in range(4)}
TARGET = {k: v.replace("Step", "Target step") for k, v in SOLUTIONS.items()}
PROBLEMS = [Problem(k, f"question {k}", str(i)) for i, k in enumerate(SOLUTIONS)]


class ServerLike(_Timed):
    """Stands in for ``ServerGenerator``: takes concurrent calls (a class attribute, as the real
    one declares it); records each call's span and thread (``_Timed``)."""

    concurrent_calls = True


class PerInstance(ScriptedGenerator):
    """Decides ``concurrent_calls`` from its arguments, as ``WorkerGenerator`` does from ``devices``."""

    def __init__(self, name, solutions, devices=None):
        super().__init__(name, solutions)
        self.concurrent_calls = devices is not None


def _cfg(cls, name, solutions, **kw):
    return OmegaConf.create({"_target_": f"{cls.__module__}.{cls.__qualname__}", "name": name,
                             "solutions": solutions, **kw})


def _composed(*overrides):
    with initialize_config_dir(config_dir=str(_cli.CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=["recipe=smoke", *overrides])


def test_a_lazy_server_target_takes_concurrent_calls_without_being_built():
    cfg = _composed("model@target=server", "target.base_urls=[http://127.0.0.1:9]", "loop.schedule=async")
    lazies = _runs.lazy_models(cfg)
    assert takes_concurrent_calls(lazies["target"]) is True
    assert not lazies["target"].loaded  # read from ServerGenerator's class attribute
    # an in-process engine stays on the engine thread, and is not built either
    assert takes_concurrent_calls(lazies["draft"]) is False and not lazies["draft"].loaded


def test_the_step_cache_wrapper_passes_it_through(tmp_path):
    cfg = _composed("model@target=server", "target.base_urls=[http://127.0.0.1:9]")
    lazy = _runs.TimedLazy(cfg.target, "target")
    cache = StepCache(tmp_path / "c.sqlite")
    try:
        assert takes_concurrent_calls(CachedGenerator(lazy, cache, "t")) and not lazy.loaded
    finally:
        cache.close()


def test_a_class_that_decides_per_instance_is_built_to_be_asked():
    on_devices = _cli.LazyGenerator(_cfg(PerInstance, "target", TARGET, devices="0"), "target")
    shared = _cli.LazyGenerator(_cfg(PerInstance, "target", TARGET), "target")
    assert takes_concurrent_calls(on_devices) is True and on_devices.loaded
    assert takes_concurrent_calls(shared) is False and shared.loaded


def test_async_calls_lazy_servers_from_their_own_threads_at_the_same_time():
    """Before the fix every call of a lazy server went to the one engine thread, never at once."""
    draft = _cli.LazyGenerator(_cfg(ServerLike, "draft", SOLUTIONS, seconds_per_token=0.002), "draft")
    target = _cli.LazyGenerator(_cfg(ServerLike, "target", TARGET, seconds_per_token=0.002), "target")
    # p0's steps are all rejected (the target writes them) while the others' drafts go on
    judge = ScriptedJudge({"p0": [0.0] * 9}, default=0.9)
    loop = StepLoop(draft, target, judge, ThresholdPolicy(0.5), BlankLineSegmenter(max_step_tokens=64),
                    config=LoopConfig(max_steps=12, token_budget=256, schedule="async"))
    traces = loop.run(PROBLEMS)
    assert sorted(t.problem_id for t in traces) == sorted(SOLUTIONS)
    d, t = draft.get(), target.get()
    assert d.threads == {"stepspec-gather-draft"} and t.threads == {"stepspec-gather-target"}
    assert any(a[0] < b[1] and b[0] < a[1] for a in d.spans for b in t.spans)
