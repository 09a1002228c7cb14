"""What an interrupted program says it saved: each problem once, by its latest trace line."""

from reasoning.traces import TRACES, TraceWriter
from reasoning.types import StopReason, Trace
from recipes._cli import count_done


def test_a_rerun_problem_counts_once_and_an_error_not_at_all(tmp_path):
    with TraceWriter(tmp_path / TRACES) as w:
        w.write(Trace("p1", "q", None, (), StopReason.ERROR, "", error="boom"))
        w.write(Trace("p2", "q", None, (), StopReason.ANSWER, ""))
        w.write(Trace("p1", "q", None, (), StopReason.ANSWER, ""))  # p1 rerun after its error
        w.write(Trace("p3", "q", None, (), StopReason.ERROR, "", error="boom"))
    assert count_done(tmp_path) == 2  # p1 (its rerun) and p2; p3 is to be run again
    assert count_done(tmp_path / "missing") == 0
