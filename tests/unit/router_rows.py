"""Synthetic router rows whose labels are known, shared by the router tests (no sklearn needed)."""

from __future__ import annotations

import random


def synthetic_rows(problems=60, steps=6, seed=0, k=5):
    """Rows whose label is known: the target is better exactly where the draft was unsure
    (advantage = 0.3 * (-mean_logprob - 1.5) + small noise); the other features are noise."""
    rng = random.Random(seed)
    rows = []
    for p in range(problems):
        for i in range(steps):
            m = rng.uniform(-3.0, 0.0)
            adv = 0.3 * (-m - 1.5) + rng.gauss(0, 0.05)
            rows.append({"problem_id": f"gsm8k-train-{p}", "step_index": i, "question": "q" * (20 + p),
                         "history": [], "draft_step": "x", "target_step": "y",
                         "draft_score": 0.5 - adv / 2, "target_score": 0.5 + adv / 2, "advantage": adv,
                         "features": {"mean_logprob": m, "min_logprob": m - rng.uniform(0, 2),
                                      "first_token_entropy": rng.uniform(0, 1),
                                      "step_tokens": rng.randint(5, 50), "step_index": i,
                                      "problem_chars": 20 + p},
                         "top_logprobs": k, "problem_steps": steps})
    return rows
