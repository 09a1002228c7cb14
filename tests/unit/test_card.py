"""The router data card's figures (routers.card), on rows counted by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from routers.card import BEGIN, END

ROOT = Path(__file__).resolve().parents[2]


def _row(pid, i, d, t, ds, ts, solved, steps):
    return {"problem_id": pid, "step_index": i, "draft_step": d, "target_step": t, "draft_score": ds,
            "target_score": ts, "advantage": ts - ds, "solved": solved, "problem_steps": steps}


ROWS = [
    # a: same first step, the draft reaches the answer (safe); step 1 favours the target
    _row("a", 0, "Two.\n\n", "Two.\n\n", 1.0, 1.0, True, 2), _row("a", 1, "x", "y", 0.0, 1.0, True, 2),
    # b: other first steps, the target right and the draft not: the one unsafe problem
    _row("b", 0, "Four.\n\n", "Five.\n\n", 0.0, 1.0, True, 1),
    # c: other first steps, the target wrong: safe whatever the draft does
    _row("c", 0, "Six.\n\n", "Seven.\n\n", 0.0, 0.0, False, 1),
]


def test_the_card_block_is_written_between_the_markers(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    card = tmp_path / "README.md"
    card.write_text(f"# Card\n\nbefore\n{BEGIN}\nold figures\n{END}\nafter\n")
    out = subprocess.run([sys.executable, "-m", "routers.card", str(data), "--write", str(card)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    text = card.read_text()
    assert "old figures" not in text
    assert text.startswith("# Card\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert out.strip() in text
    # 4 rows: advantages 0, +1, +1, 0 -> same 50%, target better 50%, draft better 0%, keep 50%
    assert "**Rows so far: 4 rows from 3 problems.**" in out
    assert "| 50.0% |" in out and "| 0.0% |" in out and "**50.0%**" in out
    # first rows: solved a, b; draft reaches the answer on a; target's first step on a, b;
    # safe a, c; same first step on a (safe); other two (b, c): one safe
    assert ("the target's own answer is right on 2; the draft's first step continued by the draft "
            "reaches the gold answer on 1 (the target's first step continued by the draft: 2)") in out
    assert "Safe to draft (the draft reaches the gold answer, or the target's answer is wrong): 2 (67%)" \
        in out
    assert "same text on 1 problems, 1 of them safe to draft (100%); on the other 2, 1 (50%)" in out


def test_a_card_without_markers_is_refused(tmp_path):
    data = tmp_path / "steps.jsonl"
    data.write_text(json.dumps(ROWS[2]) + "\n")
    card = tmp_path / "README.md"
    card.write_text("# Card\n")
    r = subprocess.run([sys.executable, "-m", "routers.card", str(data), "--write", str(card)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "has no <!-- figures -->" in r.stderr and card.read_text() == "# Card\n"


def test_missing_data_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "routers.card", str(tmp_path / "missing")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "no router data" in r.stderr


def test_a_router_card_block_comes_from_its_router_json(tmp_path):
    router = tmp_path / "router"
    router.mkdir()
    meta = {"format": "stepspec-router", "version": 1, "kind": "lightweight", "model": "logistic",
            "split": {"train": {"rows": 400, "problems": 60}, "heldout": {"rows": 150, "problems": 20}},
            "train": {"rows": 72, "positives": 36}, "selection": {"folds": 5},
            "candidates": {"logistic": {"roc_auc": 0.62}, "gboost": {"roc_auc": 0.57}},
            "heldout": {"roc_auc": 0.66, "roc_auc_ci": [0.52, 0.76], "spearman": -0.02,
                        "spearman_ci": [-0.12, 0.1], "accuracy": 0.68},
            "operating_point": {"threshold": 0.2057, "share": 0.094, "requested": 0.0945, "steps": 400,
                                "heldout_share": 0.034, "asked": "the oracle's share of training steps",
                                "from": "out-of-fold P"}}
    (router / "router.json").write_text(json.dumps(meta))
    card = tmp_path / "README.md"
    card.write_text(f"# Router\n{BEGIN}\n{END}\n")
    out = subprocess.run([sys.executable, "-m", "routers.card", "--router", str(router), "--write",
                          str(card)], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() in card.read_text()
    assert "**Trained on 400 rows from 60 train problems** (fitted on 72 after balancing" in out
    assert "| **logistic** (kept) | 0.620 |" in out and "| gboost | 0.570 |" in out
    assert "ROC-AUC 0.660 [0.520, 0.760], Spearman -0.020 [-0.120, 0.100]" in out
    assert "`policy.threshold=0.2057` sends 9.4% of 400 training steps" in out
    assert "on the held-out problems it sends 3.4%." in out
    # rows and a router, or neither: one line, exit 2
    for args in ([], [str(router), "--router", str(router)]):
        p = subprocess.run([sys.executable, "-m", "routers.card", *args], cwd=ROOT, capture_output=True,
                           text=True)
        assert p.returncode == 2 and "one of the two" in p.stderr
    p = subprocess.run([sys.executable, "-m", "routers.card", "--router", str(tmp_path / "none")], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 1 and "no such folder" in p.stderr
