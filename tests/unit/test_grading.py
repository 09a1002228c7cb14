"""Answer extraction and grading against hand-written cases and real reference solutions."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from reasoning.data import default_data_dir, load_dataset
from reasoning.grading import Grade, clean_answer, extract_answer, grade

SHARED = default_data_dir()
needs_shared = pytest.mark.skipif(not (SHARED / "gsm8k_train.jsonl").is_file(),
                                  reason=f"shared data not found at {SHARED}")

R, W, N, T = True, False, None, "truncated"

# text, gold, finished, expected predicted, expected correct, expected note
CASES = [
    # GSM8K style: numbers with commas, currency, units, trailing periods
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18", True, "18", R, None),
    ("#### 72", "72", True, "72", R, None),
    ("So the total is 1,000 + 200 = 1,200.\n#### 1,200", "1200", True, "1200", R, None),
    ("The answer is 42.", "42", True, "42", R, None),
    ("The answer is $1,000.", "1000", True, "1000", R, None),
    ("The final answer is: 18 dollars", "18", True, "18", R, None),
    ("The rope is 5 cm long. The answer is 5 cm.", "5", True, "5", R, None),
    (r"So she earns \boxed{\$18}.", "18", True, "18", R, None),
    (r"\boxed{18 \text{ dollars}}", "18", True, r"18 \text{ dollars}", R, None),
    ("He walked 3 miles, then 4 more, so 7 miles in all.", "7", True, "7", R, None),
    ("It is 20 - 8 = 12.", "12", True, "12", R, None),
    ("The temperature fell to -3 degrees.", "-3", True, "-3", R, None),
    ("The answer is -10.", "-10", True, "-10", R, None),
    ("The answer is 18.00.", "18", True, "18.00", R, None),
    ("The answer is 41.", "42", True, "41", W, "wrong"),
    ("#### 1,450,000", "1450000", True, "1450000", R, None),
    # "the answer is" followed by a sentence: its number, or else the last number of the text
    ("The answer is that she has 18 eggs", "18", True, "18", R, None),
    ("The answer is: she makes 9 * 2 = 18 dollars.", "18", True, "18", R, None),
    ("She has 16 - 3 - 4 = 9 eggs left. The answer is given above.", "9", True, "9", R, None),
    ("So she earns 18 dollars.\n#### eighteen", "18", True, "18", R, None),
    # percent: math-verify accepts 50, 50% and 0.5 for a gold of 50%
    ("The answer is 50%.", "50", True, "50%", R, None),
    (r"\boxed{25\%}", r"25\%", True, r"25%", R, None),
    # MATH style
    (r"$\boxed{\frac{1}{2}}$", "0.5", True, r"\frac{1}{2}", R, None),
    (r"\boxed{0.5}", r"\frac{1}{2}", True, "0.5", R, None),
    (r"\boxed{\dfrac{2}{4}}", r"\frac{1}{2}", True, r"\dfrac{2}{4}", R, None),
    (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{\sqrt{2}}{2}", True, r"\frac{1}{\sqrt{2}}", R, None),
    (r"\boxed{\frac{1}{\sqrt{3}}}", r"\frac{\sqrt{2}}{2}", True, r"\frac{1}{\sqrt{3}}", W, "wrong"),
    (r"so $\boxed{x=5}$.", "5", True, "x=5", R, None),
    (r"\boxed{(3,\frac{\pi}{2})}", r"\left( 3, \frac{\pi}{2} \right)", True, r"(3,\frac{\pi}{2})", R, None),
    (r"\boxed{\left[2, 5\right)}", "[2,5)", True, r"\left[2, 5\right)", R, None),
    (r"\boxed{(2,5]}", "[2,5)", True, "(2,5]", W, "wrong"),
    (r"\boxed{\{2, 1\}}", r"\{1,2\}", True, r"\{2, 1\}", R, None),
    (r"\boxed{\sqrt{117}}", r"3\sqrt{13}", True, r"\sqrt{117}", R, None),
    (r"\boxed{\text{(C)}}", r"\text{(C)}", True, r"\text{(C)}", R, None),
    (r"\boxed{6 \text{ cm}^2}", "6", True, r"6 \text{ cm}^2", R, None),
    # the last box wins; a box cut off mid-way is skipped
    (r"First \boxed{3}, then corrected: \boxed{4}", "4", True, "4", R, None),
    (r"\boxed{7} and then \boxed{\frac{1}{", "7", False, "7", R, None),
    # no answer, truncated, no gold
    ("I am not sure how to do this.", "3", True, None, W, "no_answer"),
    ("", "3", True, None, W, "no_answer"),
    ("First, we compute 16 - 3", "9", False, "3", W, T),
    ("Let us think step by step", "9", False, None, W, T),
    ("The answer is 9.", "9", False, "9", R, None),  # right even though cut off later
    ("The answer is 9.", None, True, "9", N, "no_gold"),
    ("nothing here", None, False, None, N, "no_gold"),
]


@pytest.mark.parametrize("text,gold,finished,predicted,correct,note", CASES,
                         ids=[f"{i}:{c[0][:30]}" for i, c in enumerate(CASES)])
def test_grade_table(text, gold, finished, predicted, correct, note):
    assert grade(text, gold, finished=finished) == Grade(predicted, correct, note)


def test_table_is_big_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("text,expected", [
    (r"\boxed{\frac{a}{\boxed{b}}}", r"\frac{a}{\boxed{b}}"),  # a box in a box: the outer one
    (r"x \boxed {12} y", "12"),
    (r"\fbox{5}", "5"),
    ("The answer is \\(x = 5\\).", "x = 5"),
    ("the answer is 3.14. Then more text with 7.", "3.14"),
    ("The answer is 3\n#### 4", "3"),  # "The answer is" comes before "####"
    ("#### 4\nand 5 more", "4"),  # "####" comes before the last number
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_clean_answer_keeps_latex():
    assert clean_answer(r"\frac{1}{2}.") == r"\frac{1}{2}"
    assert clean_answer("(1,2)") == "(1,2)"  # not a thousands separator
    assert clean_answer("2x + 3") == "2x + 3"


def test_math_verify_errors_never_escape(monkeypatch, caplog):
    import math_verify
    from math_verify.errors import TimeoutException

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(math_verify, "verify", boom)
    assert grade("The answer is 5.", "5") == Grade("5", False, "wrong")
    assert "math-verify failed" in caplog.text

    def slow(*args, **kwargs):  # math-verify's TimeoutException is a BaseException
        raise TimeoutException("Operation timed out!")

    monkeypatch.setattr(math_verify, "verify", slow)
    assert grade("The answer is 5.", "5", finished=False) == Grade("5", False, "truncated")


def test_pathological_answer_times_out():
    g = grade(r"\boxed{10^{10^{10^{10}}}}", "5", timeout_s=1)
    assert g == Grade("10^{10^{10^{10}}}", False, "wrong")


def test_grade_works_outside_the_main_thread():
    # math-verify's timeouts use signal.alarm, which only works in the main thread
    out: list[Grade] = []
    worker = threading.Thread(target=lambda: out.append(grade(r"\boxed{\frac{3}{6}}", "0.5")))
    worker.start()
    worker.join(timeout=60)
    assert out == [Grade(r"\frac{3}{6}", True, None)]


@needs_shared
def test_gsm8k_train_reference_solutions_grade_correct():
    problems = load_dataset("gsm8k", "train", limit=200)
    wrong = [(p.id, p.answer, g) for p in problems
             if not (g := grade(p.meta["solution"], p.answer)).correct]
    assert wrong == []


@needs_shared
def test_math500_reference_solutions_grade_correct():
    problems = load_dataset("math500", sample=60, seed=0)
    wrong = [(p.id, p.answer, g) for p in problems
             if not (g := grade(p.meta["solution"], p.answer)).correct]
    assert wrong == []


def test_imports_are_light():
    code = ("import sys, reasoning.data, reasoning.grading; "
            "print(sorted(m for m in ('torch', 'math_verify', 'sympy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
