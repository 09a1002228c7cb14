"""Answer grading: extract the final answer from a solution and compare it with the gold answer.

Extraction (:func:`extract_answer`) is plain text work: the last ``\\boxed{...}`` (nesting
handled), else the last "The answer is X", else the last ``#### X``, else the last number. An X
that is a sentence ("that she has 18 eggs") gives its last number, or, holding none, is passed
over for the next rule.
Comparison uses math-verify, which parses both sides into SymPy and compares them
symbolically and numerically (``\\frac{1}{2}`` equals ``0.5``, ``x=5`` equals ``5``, intervals,
sets, percentages). Gold answers are parsed once each and cached.

math-verify is imported lazily (it pulls in SymPy, about half a second). Its timeouts use
``signal.alarm``, which only works in the main thread: :func:`grade` passes a timeout there and
none elsewhere (a grade called from a worker thread cannot be interrupted). An alarm armed by
the caller is cancelled by math-verify.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

NOTES = (None, "no_answer", "wrong", "truncated", "no_gold")
"""Values of :attr:`Grade.note`."""


@dataclass(frozen=True, slots=True)
class Grade:
    """How one solution was graded.

    Attributes:
        predicted: The extracted final answer, or None if none was found.
        correct: Whether it matches the gold answer; None when there is no gold answer.
        note: None when correct; else ``no_answer`` (nothing to extract), ``wrong`` (an
            answer that does not match), ``truncated`` (not correct and the text did not
            finish) or ``no_gold`` (nothing to compare with).
    """

    predicted: str | None
    correct: bool | None
    note: str | None = None


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_IS = re.compile(r"[Tt]he\s+(?:final\s+)?answer\s+is\s*:?\s*")
_HASHES = re.compile(r"####\s*")
# A number: a minus sign only where it cannot be subtraction ("16-3" gives 16 and 3), thousands
# separators, decimals, a plain fraction.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+)?|\.\d+)")
_NUMBER_WITH_UNIT = re.compile(
    r"(?P<num>-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s*(?P<pct>\\?%)?(?:\s+[A-Za-z][A-Za-z .'/-]*)?")
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")
# Words, not an answer: an answer starts with a number, a sign, a bracket, LaTeX or one letter.
_PROSE = re.compile(r"[A-Za-z]{2,}")


def _boxed_content(text: str) -> str | None:
    """The content of the last complete ``\\boxed{...}`` in ``text`` (nested braces matched; a box
    inside a box belongs to the outer one).

    >>> _boxed_content(r"so \\boxed{\\frac{1}{\\sqrt{2}}}.")
    '\\\\frac{1}{\\\\sqrt{2}}'
    >>> _boxed_content(r"\\boxed{\\{1, 2\\}} and \\boxed{3")  # the last box is cut off
    '\\\\{1, 2\\\\}'
    >>> _boxed_content(r"\\boxed 7.")
    '7'
    """
    last, pos = None, 0
    while (m := _BOXED.search(text, pos)) is not None:
        content, pos = _braced(text, m.end())
        if content is not None:
            last = content
    return last


def _braced(text: str, start: int) -> tuple[str | None, int]:
    """The group that starts at ``text[start]`` (``{...}`` or one bare token) and where it ends.

    Returns (None, start) if the group is not closed (a truncated text).
    """
    if start < len(text) and text[start] != "{":
        token = re.match(r"[^\s$.,;{}\\]+", text[start:])  # ``\boxed 5``
        return (token.group(0), start + token.end()) if token else (None, start)
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == "\\":  # an escaped character (\{, \}, \\): not a brace
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i].strip(), i + 1
        i += 1
    return None, start


def _after_last(pattern: re.Pattern[str], text: str) -> str | None:
    """The rest of the sentence after the last match of ``pattern``."""
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end():]
    end = _SENTENCE_END.search(rest)
    value = rest[:end.start()] if end else rest
    return value or None


def _sentence_answer(found: str) -> str | None:
    """The answer in the text after "The answer is" or ``####``: the text itself, tidied, unless
    it is a sentence; then the sentence's last number, or None if it holds none.

    >>> _sentence_answer("that she has 18 eggs"), _sentence_answer("given above")
    ('18', None)
    >>> _sentence_answer("x = 5"), _sentence_answer(r"\\frac{1}{2}")
    ('x = 5', '\\\\frac{1}{2}')
    """
    cleaned = clean_answer(found)
    if not cleaned or not _PROSE.match(cleaned):
        return cleaned or None
    numbers = _NUMBER.findall(cleaned)
    return clean_answer(numbers[-1]) if numbers else None


def clean_answer(answer: str) -> str:
    """Tidy an extracted answer: drop ``$`` signs, ``\\(...\\)`` delimiters, trailing punctuation,
    and the unit words after a plain number (its thousands separators removed).

    >>> clean_answer("$1,000.")
    '1000'
    >>> clean_answer("18 dollars")
    '18'
    >>> clean_answer(r"\\$5.50")
    '5.50'
    >>> clean_answer("50%")
    '50%'
    >>> clean_answer(r"\\(x = 5\\)")
    'x = 5'
    """
    s = answer.strip()
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s.strip()).strip()
    s = re.sub(r"[.,;:]+$", "", s).strip()
    m = _NUMBER_WITH_UNIT.fullmatch(s)
    if m:
        return m.group("num").replace(",", "") + ("%" if m.group("pct") else "")
    return s


def extract_answer(text: str) -> str | None:
    """The final answer a solution gives, as text, or None if it gives none.

    Tried in order: the last ``\\boxed{...}``, the last "The answer is X", the last
    ``#### X``, the last number in the text. The result is tidied by :func:`clean_answer`. An X
    that is a sentence gives its last number; one without a number is passed over.

    >>> extract_answer(r"So $x = \\boxed{\\frac{1}{2}}$.")
    '\\\\frac{1}{2}'
    >>> extract_answer("3 + 4 = 7. The answer is 7.")
    '7'
    >>> extract_answer("She pays 1,000 + 200 = $1,200.\\n#### 1,200")
    '1200'
    >>> extract_answer("In total 18 eggs are sold, so she makes 36 dollars")
    '36'
    >>> extract_answer("The answer is that she has 18 eggs")
    '18'
    >>> extract_answer("I do not know.") is None
    True
    """
    boxed = _boxed_content(text)
    if boxed is not None and (cleaned := clean_answer(boxed)):
        return cleaned
    for pattern in (_ANSWER_IS, _HASHES):
        found = _after_last(pattern, text)
        if found is not None and (answer := _sentence_answer(found)):
            return answer
    numbers = _NUMBER.findall(text)
    return clean_answer(numbers[-1]) if numbers else None


def _timeout_s(timeout_s: int | None) -> int | None:
    # math-verify's timeouts are signal.alarm, which raises ValueError outside the main thread.
    if timeout_s is None or timeout_s <= 0 or threading.current_thread() is not threading.main_thread():
        return None
    return max(1, int(timeout_s))


def _parse(answer: str, timeout_s: int | None) -> list[Any]:
    """Parse an answer (already extracted and cleaned) into math-verify's targets."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    config = [LatexExtractionConfig(), ExprExtractionConfig()]
    parsed = parse(f"${answer}$", extraction_config=config, parsing_timeout=timeout_s)
    if not parsed:  # not LaTeX: try it as a plain expression
        parsed = parse(answer, extraction_config=[ExprExtractionConfig()], parsing_timeout=timeout_s)
    return parsed


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout_s: int | None) -> tuple[Any, ...]:
    return tuple(_parse(clean_answer(gold), timeout_s))


def grade(text: str, gold: str | None, finished: bool = True, timeout_s: int | None = 5) -> Grade:
    """Grade a solution against its gold answer.

    Never raises: an error inside math-verify is logged and the answer counts as wrong.

    Args:
        text: The whole solution text.
        gold: The gold answer (a number or LaTeX), or None if unknown.
        finished: False if the text was cut off (token budget, max steps); a wrong or missing
            answer is then noted ``truncated``.
        timeout_s: Seconds math-verify may spend on each parse and on each comparison (whole
            seconds; None or 0 for none; ignored outside the main thread).

    >>> grade(r"Half of it: $\\boxed{\\dfrac{1}{2}}$", "0.5")
    Grade(predicted='\\\\dfrac{1}{2}', correct=True, note=None)
    >>> grade("Each costs $2, so 9 * 2 = 18 dollars.", "18")
    Grade(predicted='18', correct=True, note=None)
    >>> grade("The answer is 41.", "42")
    Grade(predicted='41', correct=False, note='wrong')
    >>> grade("First, 16 - 3", "9", finished=False)
    Grade(predicted='3', correct=False, note='truncated')
    >>> grade("The answer is 7.", None)
    Grade(predicted='7', correct=None, note='no_gold')
    """
    try:
        predicted = extract_answer(text)
    except Exception:  # extraction is plain regex work; be safe anyway
        logger.exception("answer extraction failed")
        predicted = None
    if gold is None or not str(gold).strip():
        return Grade(predicted, None, "no_gold")
    if predicted is None:
        return Grade(None, False, "no_answer" if finished else "truncated")
    correct = _compare(str(gold).strip(), predicted, _timeout_s(timeout_s))
    if correct:
        return Grade(predicted, True, None)
    return Grade(predicted, False, "wrong" if finished else "truncated")


def _compare(gold: str, predicted: str, timeout_s: int | None) -> bool:
    try:
        from math_verify import verify

        gold_parsed = list(_parse_gold(gold, timeout_s))
        pred_parsed = _parse(predicted, timeout_s)
        if not gold_parsed or not pred_parsed:
            return clean_answer(gold) == predicted
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # math-verify's TimeoutException is a BaseException, not an Exception
        logger.warning("math-verify failed on gold %r, predicted %r; counted wrong",
                       gold[:200], predicted[:200], exc_info=True)
        return False
