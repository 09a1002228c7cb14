"""Data sets: the shipped files, selection semantics and every error a user can make."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from reasoning import data
from reasoning.data import default_data_dir, gsm8k_gold, load_dataset
from reasoning.errors import DataError, UserError

SHARED = default_data_dir()
needs_shared = pytest.mark.skipif(not (SHARED / "gsm8k_test.jsonl").is_file(),
                                  reason=f"shared data not found at {SHARED}")


def write_jsonl(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def gsm_row(q: str, gold: str) -> dict:
    return {"question": q, "answer": f"Work.\n#### {gold}"}


@pytest.fixture
def no_hub(monkeypatch):
    """Make a missing default file an error even where `datasets` is installed."""
    monkeypatch.setattr(data, "_hub_available", lambda: False)


# --- the shipped files ---------------------------------------------------------------------------

@needs_shared
@pytest.mark.parametrize("name,split,rows", [("gsm8k", "train", 7473), ("gsm8k", "test", 1319),
                                             ("math500", "test", 500)])
def test_row_counts(name, split, rows):
    problems = load_dataset(name, split)
    assert len(problems) == rows
    assert len({p.id for p in problems}) == rows
    assert all(p.question and p.answer for p in problems)


@needs_shared
def test_gsm8k_gold_and_ids():
    test = load_dataset("gsm8k", "test")
    first = test[0]
    assert first.id == "gsm8k-test-0"
    assert first.question.startswith("Janet")
    assert first.answer == "18"
    assert first.meta["solution"].endswith("#### 18")
    assert test[146].id == "gsm8k-test-146" and test[146].answer == "2125"  # "#### 2,125"
    assert test[611].answer == "1450000"  # "#### 1,450,000"
    assert test[489].answer == "-10"
    train = load_dataset("gsm8k", "train", ids=["gsm8k-train-644"])
    assert train[0].answer == "109200000"


@needs_shared
def test_math500_fields():
    first = load_dataset("math500", limit=1)[0]
    assert first.id == "math500-0"
    assert first.answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert first.question.startswith("Convert the point $(0,3)$")
    assert first.meta["subject"] == "Precalculus"
    assert first.meta["level"] == 2
    assert first.meta["unique_id"] == "test/precalculus/807.json"
    assert r"\boxed{\left( 3, \frac{\pi}{2} \right)}" in first.meta["solution"]


def test_gsm8k_gold_function():
    assert gsm8k_gold("a\n#### 1,000") == "1000"
    assert gsm8k_gold("#### 5 ####  72 ") == "72"
    assert gsm8k_gold("#### ") is None


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPSPEC_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("STEPSPEC_DATA")
    repo = Path(data.__file__).resolve().parents[1]
    expected = [c for c in (repo.parent / "shared" / "data", repo / "shared" / "data") if c.is_dir()]
    assert default_data_dir() == (expected[0] if expected else Path("data"))


def test_env_points_at_a_data_folder(monkeypatch, tmp_path):
    write_jsonl(tmp_path / "gsm8k_train.jsonl", [gsm_row("q0", "1"), gsm_row("q1", "2")])
    monkeypatch.setenv("STEPSPEC_DATA", str(tmp_path))
    problems = load_dataset("gsm8k", "train")
    assert [(p.id, p.answer) for p in problems] == [("gsm8k-train-0", "1"), ("gsm8k-train-1", "2")]


def test_path_may_be_a_folder(tmp_path):
    write_jsonl(tmp_path / "gsm8k_test.jsonl", [gsm_row("q0", "7")])
    assert load_dataset("gsm8k", path=tmp_path)[0].answer == "7"


# --- selection -----------------------------------------------------------------------------------

@pytest.fixture
def ten(tmp_path) -> Path:
    return write_jsonl(tmp_path / "ten.jsonl", [{"q": f"question {i}", "a": i} for i in range(10)])


def load_ten(path: Path, **kw):
    return load_dataset("jsonl", path=path, question_field="q", answer_field="a", **kw)


def test_offset_then_limit(ten):
    assert [p.id for p in load_ten(ten, offset=3, limit=4)] == ["ten-3", "ten-4", "ten-5", "ten-6"]
    assert [p.id for p in load_ten(ten, offset=8)] == ["ten-8", "ten-9"]
    assert len(load_ten(ten, limit=100)) == 10


def test_sample_is_seeded_and_in_file_order(ten):
    a = load_ten(ten, sample=4, seed=1)
    assert [p.id for p in a] == [p.id for p in load_ten(ten, sample=4, seed=1)]
    assert len(a) == 4 and len({p.id for p in a}) == 4
    indices = [int(p.id.split("-")[1]) for p in a]
    assert indices == sorted(indices)
    draws = {tuple(p.id for p in load_ten(ten, sample=4, seed=s)) for s in range(6)}
    assert len(draws) > 1  # the seed matters


def test_sample_after_offset(ten):
    picked = load_ten(ten, offset=6, sample=3, seed=0)
    assert len(picked) == 3
    assert all(int(p.id.split("-")[1]) >= 6 for p in picked)
    assert len(load_ten(ten, offset=6, sample=4)) == 4  # all that is left


def test_ids_in_given_order(ten):
    assert [p.id for p in load_ten(ten, ids=["ten-7", "ten-2", "ten-9"])] == ["ten-7", "ten-2", "ten-9"]


@pytest.mark.parametrize("kw,words", [
    ({"ids": ["ten-2", "ten-77"]}, ["'ten-77'", "ids look like 'ten-0'"]),
    ({"ids": ["ten-1"], "limit": 2}, ["dataset.ids"]),
    ({"ids": ["ten-1", "ten-1"]}, ["more than once"]),
    ({"ids": []}, ["dataset.ids is empty"]),
    ({"ids": "ten-1"}, ["list of problem ids"]),
    ({"offset": 10}, ["selection is empty", "10 problem(s)"]),
    ({"limit": 0}, ["dataset.limit"]),
    ({"offset": -1}, ["dataset.offset"]),
    ({"sample": 0}, ["dataset.sample"]),
    ({"sample": 11}, ["dataset.sample=11", "only 10"]),
])
def test_bad_selection(ten, kw, words):
    with pytest.raises(DataError) as e:
        load_ten(ten, **kw)
    for w in words:
        assert w in str(e.value)


def test_reading_stops_once_the_selection_is_known(tmp_path):
    """Streaming: a broken line after the selected window is never read."""
    path = write_jsonl(tmp_path / "f.jsonl", [gsm_row("q0", "1"), gsm_row("q1", "2"), "{broken"])
    assert len(load_dataset("gsm8k", path=path, limit=2)) == 2
    assert len(load_dataset("gsm8k", path=path, ids=["gsm8k-test-1"])) == 1
    with pytest.raises(DataError, match="line 3"):
        load_dataset("gsm8k", path=path)


# --- generic JSONL ---------------------------------------------------------------------------------

def test_jsonl_fields_ids_and_meta(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [
        {"uid": "p1", "prompt": "What is 2+2?", "target": 4, "topic": "arith"},
        {"uid": "p2", "prompt": "Name it.", "target": None},
    ])
    problems = load_dataset("jsonl", path=path, question_field="prompt", answer_field="target",
                            id_field="uid")
    assert [p.id for p in problems] == ["p1", "p2"]
    assert problems[0].answer == "4"  # numbers become text
    assert problems[1].answer is None  # a null answer is "no gold", not an error
    assert problems[0].meta == {"topic": "arith"}
    default_ids = load_dataset("jsonl", path=path, question_field="prompt", answer_field="target")
    assert [p.id for p in default_ids] == ["mine-0", "mine-1"]


def test_blank_lines_are_skipped_but_keep_ids_stable(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", [gsm_row("q0", "1"), "", gsm_row("q2", "3")])
    assert [p.id for p in load_dataset("gsm8k", path=path)] == ["gsm8k-test-0", "gsm8k-test-2"]


# --- errors ----------------------------------------------------------------------------------------

def one_line_error(**kw) -> str:
    with pytest.raises(DataError) as e:
        load_dataset(**kw)
    message = str(e.value)
    assert "\n" not in message
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)
    return message


@pytest.mark.parametrize("name,suggestion", [("gsm8", "gsm8k"), ("math-500", "math500"),
                                             ("jsonlines", "jsonl")])
def test_unknown_dataset_suggests_nearest(name, suggestion):
    message = one_line_error(name=name)
    assert f"unknown dataset {name!r}" in message
    assert "gsm8k, jsonl, math500" in message
    assert f"did you mean {suggestion!r}" in message


def test_unknown_dataset_without_near_name():
    assert "did you mean" not in one_line_error(name="imagenet")


def test_unknown_split():
    message = one_line_error(name="math500", split="train")
    assert "no split 'train'" in message and "test" in message


def test_missing_file_explicit(tmp_path):
    missing = tmp_path / "nope.jsonl"
    message = one_line_error(name="gsm8k", path=missing)
    assert str(missing) in message and "dataset.path" in message


def test_missing_default_file(monkeypatch, tmp_path, no_hub):
    monkeypatch.setenv("STEPSPEC_DATA", str(tmp_path))
    message = one_line_error(name="gsm8k", split="train")
    assert str(tmp_path / "gsm8k_train.jsonl") in message
    assert "dataset.path=" in message and "STEPSPEC_DATA" in message


def test_line_that_is_not_json(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [gsm_row("q0", "1"), gsm_row("q1", "2"), '{"question": "x",'])
    message = one_line_error(name="gsm8k", path=path)
    assert str(path) in message and "line 3" in message and "not valid JSON" in message


def test_row_missing_a_field_names_the_fields_present(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [gsm_row("q0", "1"), {"problem": "x", "answer": "#### 1"}])
    message = one_line_error(name="gsm8k", path=path)
    assert "line 2" in message and "'question'" in message
    assert "fields present: 'problem', 'answer'" in message
    path = write_jsonl(tmp_path / "n.jsonl", [{"question": "x", "solution": "#### 1"}])
    assert "no answer field 'answer'" in one_line_error(name="gsm8k", path=path)


@pytest.mark.parametrize("row,words", [
    ([1, 2], "a JSON list, not an object"),
    ({"question": "", "answer": "#### 1"}, "empty or not text"),
    ({"question": "q", "answer": "no marker"}, "'#### <answer>'"),
])
def test_malformed_rows(tmp_path, row, words):
    path = write_jsonl(tmp_path / "r.jsonl", [row])
    assert words in one_line_error(name="gsm8k", path=path)


def test_jsonl_needs_path_and_fields(tmp_path):
    assert "dataset.path" in one_line_error(name="jsonl")
    path = write_jsonl(tmp_path / "j.jsonl", [{"q": "x", "a": 1}])
    assert "dataset.question_field" in one_line_error(name="jsonl", path=path, question_field="q")
    assert "id_field" in one_line_error(name="gsm8k", id_field="uid")


def test_jsonl_duplicate_and_missing_ids(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "q": "x", "a": 1}, {"id": "a", "q": "y", "a": 2}])
    message = one_line_error(name="jsonl", path=path, question_field="q", answer_field="a", id_field="id")
    assert "line 2" in message and "'a'" in message and "earlier row" in message
    path = write_jsonl(tmp_path / "e.jsonl", [{"q": "x", "a": 1}])
    message = one_line_error(name="jsonl", path=path, question_field="q", answer_field="a", id_field="id")
    assert "no id field 'id'" in message


def test_skip_malformed_counts_and_reports(tmp_path, caplog):
    path = write_jsonl(tmp_path / "s.jsonl", [gsm_row("q0", "1"), "not json", {"question": "q"},
                                              gsm_row("q3", "4")])
    report: dict = {}
    with caplog.at_level(logging.WARNING, logger="reasoning.data"):
        problems = load_dataset("gsm8k", path=path, skip_malformed=True, report=report)
    assert [p.id for p in problems] == ["gsm8k-test-0", "gsm8k-test-3"]
    assert report == {"source": str(path), "skipped": 2}
    assert "skipped 2 malformed row(s)" in caplog.text


def test_skip_malformed_everything_bad_is_an_empty_selection(tmp_path):
    path = write_jsonl(tmp_path / "all_bad.jsonl", ["nope", "[]"])
    assert "selection is empty" in one_line_error(name="gsm8k", path=path, skip_malformed=True)
