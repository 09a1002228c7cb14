"""Trace files: whole lines, torn tails dropped, never a wrong parse."""

from __future__ import annotations

import json

import pytest

from reasoning.traces import TraceWriter, read_traces
from reasoning.types import Decision, FinishReason, Route, StepRecord, StopReason, Trace


def trace(pid: str) -> Trace:
    step = StepRecord(index=0, route=Route.DRAFT, decision=Decision.REJECT, kept=Route.TARGET,
                      text="4.\n\n", score=0.25, draft_text="5.\n\n", draft_tokens=2, target_text="4.\n\n",
                      target_tokens=2, draft_seconds=0.5, target_seconds=1.5,
                      finish_reason=FinishReason.STOP)
    return Trace(pid, "q", "4", (step,), StopReason.ANSWER, "4.\n\n", predicted="4", correct=True,
                 seconds=2.0, meta={"level": 3})


def test_round_trip(tmp_path):
    p = tmp_path / "t.jsonl"
    with TraceWriter(p) as w:
        w.write(trace("a"))
        w.write(trace("b"))
    back = read_traces(p)
    assert back == [trace("a"), trace("b")]
    row = json.loads(p.read_text().splitlines()[0])
    assert row["draft_tokens"] == 2 and row["steps"][0]["kept"] == "target"


@pytest.mark.parametrize("cut", [1, 10, 40, -1])
def test_torn_last_line_is_dropped_and_repaired(tmp_path, cut):
    p = tmp_path / "t.jsonl"
    with TraceWriter(p) as w:
        w.write(trace("a"))
    whole = p.read_bytes()
    line = (json.dumps(trace("b").to_dict()) + "\n").encode()
    p.write_bytes(whole + line[:cut])
    assert [t.problem_id for t in read_traces(p)] == ["a"]
    assert p.read_bytes() == whole + line[:cut]  # reading alone changes nothing
    with TraceWriter(p) as w:  # opening for append repairs the tail first
        w.write(trace("c"))
    assert [t.problem_id for t in read_traces(p)] == ["a", "c"]


def test_a_bad_line_in_the_middle_is_an_error_not_skipped(tmp_path):
    p = tmp_path / "t.jsonl"
    good = json.dumps(trace("a").to_dict())
    p.write_text(good + "\n{not json\n" + good + "\n")
    with pytest.raises(ValueError, match="line 2"):
        read_traces(p)


def test_missing_file_is_empty(tmp_path):
    assert read_traces(tmp_path / "none.jsonl") == []
