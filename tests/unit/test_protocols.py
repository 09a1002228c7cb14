"""Every wrapper shows its inner object's optional attributes (reasoning.protocols.OPTIONS) as
the inner object has them: the step cache's, the async schedule's, the bench's clocked one (all
reasoning.delegating.Delegating) and the CLI's lazy wrapper.
A wrapper that hid one would silently change behaviour (the lazy wrapper once hid
``concurrent_calls``, and async then queued server calls behind the engine thread)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from reasoning.cache import StepCache
from reasoning.cached import CachedGenerator, CachedJudge
from reasoning.delegating import Delegating
from reasoning.protocols import OPTIONS, option, reset_cache
from reasoning.schedule import GatheredGenerator, GatheredJudge, takes_concurrent_calls
from recipes.bench import _Clocked


class Inner:
    """A generator and judge that sets every optional attribute away from its default."""

    name = "inner"
    needs_logprobs = 7
    concurrent_calls = True
    cache_identity = {"files": "abc"}

    def __init__(self) -> None:
        self.resets = 0

    def generate(self, requests):
        return []

    def score(self, requests):
        return [0.5] * len(requests)

    def score_timed(self, requests):
        return [0.5] * len(requests), 0.25

    def reset_cache(self):
        self.resets += 1
        return True

    def close(self):
        pass


def wrappers(tmp_path):
    store = StepCache(tmp_path / "c.sqlite")
    inner = Inner()
    return inner, store, {
        "CachedGenerator": CachedGenerator(inner, store, "m"),
        "CachedJudge": CachedJudge(inner, store, "j"),
        "GatheredGenerator": GatheredGenerator(inner, None),
        "GatheredJudge": GatheredJudge(inner, None),
        "Clocked": _Clocked(inner, [0.0]),
    }


OWN = {"CachedJudge": {"score_timed", "score_info"}, "GatheredJudge": {"score_timed", "score_info"},
       "Clocked": {"score_timed"}}  # and score_info, for a judge built with one (see below)
"""The options a wrapper answers itself: the cache and the gatherer know a judge call's cost (and
pass a judge's infos on through their own ``score_info``, None where the inner judge has none),
and the bench's clock times the inner judge's own score_timed."""


def test_every_option_is_the_inner_objects_through_every_wrapper(tmp_path):
    inner, store, ws = wrappers(tmp_path)
    try:
        marks = {key: f"inner's {key}" for key in OPTIONS}  # nothing any default could equal
        for key, mark in marks.items():
            setattr(inner, key, mark)
        for name, w in ws.items():
            assert isinstance(w, Delegating), name
            for key, mark in marks.items():
                if key in OWN.get(name, ()):
                    assert callable(option(w, key)), (name, key)
                else:
                    assert option(w, key) == mark, (name, key)
    finally:
        store.close()


def test_a_wrapper_keeps_its_own_private_names_and_calls():
    clock, inner = [0.0], Inner()
    inner._private = "the inner object's own"
    w = _Clocked(inner, clock)
    assert w.generate([]) == [] and clock[0] > 0  # its own call, timed
    assert w.name == "inner" and w.inner is inner
    with pytest.raises(AttributeError):
        w._private  # noqa: B018 - a private name is not forwarded


@pytest.mark.parametrize("attr", ["needs_logprobs", "concurrent_calls", "cache_identity"])
def test_wrappers_show_the_inner_objects_values(tmp_path, attr):
    inner, store, ws = wrappers(tmp_path)
    try:
        for name, w in ws.items():
            assert option(w, attr) == getattr(inner, attr) != OPTIONS[attr], (name, attr)
    finally:
        store.close()


def test_wrappers_forward_reset_cache_and_know_their_judges_cost(tmp_path):
    inner, store, ws = wrappers(tmp_path)
    try:
        for name in ("CachedGenerator", "GatheredGenerator", "Clocked"):
            assert reset_cache(ws[name]) is True, name
        assert inner.resets == 3
        assert option(ws["CachedJudge"], "score_timed") is not None
        assert option(ws["GatheredJudge"], "score_timed") is not None
        assert all(takes_concurrent_calls(w) for w in ws.values())
    finally:
        store.close()


def test_the_lazy_wrapper_shows_them_before_and_after_it_builds(tmp_path):
    from recipes._cli import LazyGenerator

    cfg = OmegaConf.create({"_target_": "reasoning.backends.scripted.ScriptedGenerator", "name": "draft",
                            "solutions": {"p": "x"}})
    lazy = LazyGenerator(cfg, "draft")
    assert option(lazy, "concurrent_calls") is False and not lazy.loaded  # read from the class
    assert reset_cache(lazy) is True and not lazy.loaded  # nothing built: nothing cached
    lazy.get()
    assert reset_cache(lazy) is True  # the scripted double's own reset_cache


def test_the_bench_clock_times_a_judge_that_reports_its_own_cost():
    # the engine calls score_timed instead of score when a judge has it: the clock must see it
    import time

    class TimedJudge:
        def score(self, requests):
            raise AssertionError("the engine would call score_timed")

        def score_timed(self, requests):
            time.sleep(0.02)
            return [0.5] * len(requests), 0.01

        def score_info(self, requests):
            time.sleep(0.03)
            return [0.5] * len(requests), [0.01] * len(requests), [{"decided_by": 0}] * len(requests)

    class PlainJudge:
        def score(self, requests):
            return [0.5] * len(requests)

    clock = [0.0]
    w = _Clocked(TimedJudge(), clock)
    assert w.score_timed(["a", "b"]) == ([0.5, 0.5], 0.01)
    assert 0.02 <= clock[0] < 0.05
    assert w.score_info(["a"]) == ([0.5], [0.01], [{"decided_by": 0}])
    assert clock[0] >= 0.05  # both calls on the clock
    plain = _Clocked(PlainJudge(), [0.0])
    assert option(plain, "score_timed") is None and option(plain, "score_info") is None  # none invented


class Says(Inner):
    """A judge with ``score_info``: each step's score and a JSON-ready info naming its text."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[list[str]] = []

    def score_info(self, requests):
        self.asked.append([r.step.text for r in requests])
        return [0.5] * len(requests), 0.25, [{"text": r.step.text} for r in requests]


def _requests(*texts):
    from reasoning.protocols import JudgeRequest
    from reasoning.types import Completion, FinishReason, Problem

    return [JudgeRequest(Problem("p", "q"), (), (), Completion(t, (1,), FinishReason.STOP), 0) for t in texts]


def test_score_info_is_none_through_every_wrapper_of_a_judge_without_it(tmp_path):
    inner, store, ws = wrappers(tmp_path)
    try:
        assert option(inner, "score_info") is None
        for name, w in ws.items():
            assert option(w, "score_info") is None, name
    finally:
        store.close()


def test_score_info_passes_through_the_cache_with_its_info_stored(tmp_path):
    from reasoning.engine import timed_score_info

    store = StepCache(tmp_path / "c.sqlite")
    try:
        inner = Says()
        cached = CachedJudge(inner, store, "j")
        assert timed_score_info(cached, _requests("a", "b")) == (
            [0.5, 0.5], 0.25, [{"text": "a"}, {"text": "b"}])
        # a hit gives the stored info back, without asking the inner judge
        again = CachedJudge(Says(), store, "j")
        assert timed_score_info(again, _requests("b", "a")) == (
            [0.5, 0.5], 0.25, [{"text": "b"}, {"text": "a"}])
        assert again.inner.asked == [] and again.stats() == {"hits": 2, "misses": 0}
        # score_timed of the same wrapper reads the same entries
        assert again.score_timed(_requests("a")) == ([0.5], 0.25)
        # an entry stored without an info (a judge without score_info wrote it) is computed again
        # for a judge that gives one, and then stored with it
        CachedJudge(Inner(), store, "k").score(_requests("c"))
        with_info = CachedJudge(Says(), store, "k")
        assert timed_score_info(with_info, _requests("c"))[2] == [{"text": "c"}]
        assert with_info.inner.asked == [["c"]] and with_info.stats() == {"hits": 0, "misses": 1}
        last = CachedJudge(Says(), store, "k")
        assert timed_score_info(last, _requests("c"))[2] == [{"text": "c"}] and last.inner.asked == []
    finally:
        store.close()


def test_score_info_through_the_gatherer_splits_the_infos_per_caller():
    import threading

    from reasoning.engine import timed_score_info
    from reasoning.schedule import Gatherer, _Gate, _timed_call

    inner = Says()
    gate = _Gate()
    gate.running = 2  # two callers computing: the gatherer waits for both before it calls
    g = Gatherer("judge", _timed_call(inner, "score"), gate, max_wait_s=30.0)
    got = {}

    def ask(texts):
        got[texts] = timed_score_info(GatheredJudge(inner, g), _requests(*texts))

    threads = [threading.Thread(target=ask, args=(t,)) for t in (("a", "b"), ("c",))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(inner.asked) == 1 and sorted(inner.asked[0]) == ["a", "b", "c"]  # one merged call
    assert got[("a", "b")] == ([0.5, 0.5], 0.25, [{"text": "a"}, {"text": "b"}])
    assert got[("c",)] == ([0.5], 0.25, [{"text": "c"}])
    with gate.cond:
        gate.closed = True
        gate.cond.notify_all()
