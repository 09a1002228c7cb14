"""A saved router: the folder :mod:`routers.train` writes and :class:`routers.judge.RouterJudge` reads.

``router.json`` (:func:`training_meta`, :func:`write_meta`, :func:`read_meta`) says what the
folder holds: ``format``, ``version``, ``kind``, the label's margin, the split and the held-out
metrics. A ``lightweight`` router keeps its scikit-learn model in ``model.joblib``
(:class:`LightweightRouter`), and a logistic one its coefficients in ``router.json`` too
(``linear``, :func:`linear_meta`), which the judge reads instead of the pickle (so a router
committed to the repository loads with any scikit-learn, or none); a ``seq-classification``
router is also a ``save_pretrained`` folder, scored with :func:`seq_probabilities`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoning.errors import UserError
from reasoning.files import write_atomic
from routers.features import FEATURES

FORMAT = "stepspec-router"
"""``router.json``'s ``format``: what the folder holds."""
FORMAT_VERSION = 1
"""``router.json``'s ``version``: the layout this code writes and reads."""
META = "router.json"
MODEL_FILE = "model.joblib"
KINDS = ("lightweight", "seq-classification")


# -- the lightweight router ----------------------------------------------------------------------
@dataclass
class LightweightRouter:
    """A fitted scikit-learn classifier on :data:`routers.features.FEATURES`, and its metadata.

    Attributes:
        model: The classifier (``predict_proba``; class 1 = the target beats the draft).
        meta: What ``router.json`` holds.
    """

    model: Any
    meta: dict[str, Any] = field(default_factory=dict)
    _linear: tuple[list[float], float] | None = field(default=None, init=False, repr=False)
    _checked: bool = field(default=False, init=False, repr=False)

    @property
    def feature_names(self) -> list[str]:
        return list(self.meta.get("feature_names", FEATURES))

    def predict(self, X: Sequence[Sequence[float]]) -> list[float]:
        """``P(target beats draft)`` for each feature vector.

        A standardised logistic regression is evaluated in plain Python from its coefficients
        (the same probabilities as ``predict_proba`` up to rounding, in microseconds instead of
        scikit-learn's fraction of a millisecond per call); any other model by ``predict_proba``.
        """
        if len(X) == 0:
            return []
        if not self._checked:
            self._linear = _linear_parts(self.model)
            self._checked = True
        if self._linear is not None:
            w, b = self._linear
            return [_sigmoid(b + sum(wi * xi for wi, xi in zip(w, x))) for x in X]
        import numpy as np

        proba = self.model.predict_proba(np.asarray(X, dtype=float))
        col = list(self.model.classes_).index(1)
        return [float(p) for p in proba[:, col]]

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``router.json`` into ``folder``, and ``model.joblib`` for a model that is not a
        logistic regression (whose coefficients ``router.json`` holds: no pickle is written, and
        one left by an earlier router in the folder is removed); returns the folder."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        lin = linear_meta(self.model, len(self.feature_names))
        if lin is not None:
            self.meta["linear"] = lin
            self.meta.pop("model_file", None)
            (out / MODEL_FILE).unlink(missing_ok=True)
        else:
            import joblib

            self.meta.pop("linear", None)
            joblib.dump(self.model, out / str(self.meta.setdefault("model_file", MODEL_FILE)))
        write_meta(out, self.meta)
        return out


def judge_score(p: float) -> float:
    """The judge's score of a step the router gives ``P(target beats draft) = p``: ``1 - p``,
    clipped to [0, 1] and rounded to 12 places (so ``1 - 0.3`` is 0.7, not 0.7000000000000001).

    >>> judge_score(0.3), judge_score(1.2), judge_score(-0.1)
    (0.7, 0.0, 1.0)
    """
    return min(1.0, max(0.0, round(1.0 - p, 12)))


def linear_meta(model: Any, n_features: int) -> dict[str, Any] | None:
    """``{"weights": [...], "bias": b}`` with ``P = sigmoid(weights . x + bias)`` in raw feature
    units, for a standardised logistic regression of ``n_features`` inputs; None for any other
    model. ``router.json`` keeps it, so the judge reads such a router without unpickling."""
    parts = _linear_parts(model)
    if parts is None or len(parts[0]) != n_features:
        return None
    w, b = parts
    return {"weights": [float(x) for x in w], "bias": float(b)}


def linear_router(meta: Mapping[str, Any], where: str) -> LightweightRouter:
    """A :class:`LightweightRouter` evaluated from ``meta["linear"]`` alone (no model file).

    Raises:
        UserError: weights that are not one finite number per named feature, or a bias that is
            not a finite number.

    >>> r = linear_router({"feature_names": ["a", "b"], "linear": {"weights": [1.0, -1.0], "bias": 0.0}}, "r")
    >>> r.predict([[2.0, 2.0], [0.0, 0.0]])
    [0.5, 0.5]
    """
    lin, names = meta.get("linear"), meta.get("feature_names")
    w = lin.get("weights") if isinstance(lin, Mapping) else None
    b = lin.get("bias") if isinstance(lin, Mapping) else None

    def finite(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

    if not (isinstance(w, list) and isinstance(names, list) and len(w) == len(names) and all(map(finite, w))
            and finite(b)):
        raise UserError(f"router {where!r}: router.json's linear must hold one finite weight per feature "
                        f"({len(names) if isinstance(names, list) else '?'}) and a finite bias; retrain it "
                        "with python -m recipes.train_router")
    router = LightweightRouter(None, dict(meta))
    router._linear = ([float(x) for x in w], float(b))
    router._checked = True
    return router


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _linear_parts(model: Any) -> tuple[list[float], float] | None:
    """``(w, b)`` with ``P(class 1) = sigmoid(w . x + b)`` for a fitted ``StandardScaler`` +
    binary ``LogisticRegression`` pipeline; None for any other model."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        return None
    if not (isinstance(model, Pipeline) and len(model.steps) == 2):
        return None
    scaler, lr = model.steps[0][1], model.steps[1][1]
    if not (isinstance(scaler, StandardScaler) and isinstance(lr, LogisticRegression)):
        return None
    if lr.coef_.shape[0] != 1 or list(lr.classes_) not in ([0, 1], [1, 0]):
        return None
    n = lr.coef_.shape[1]
    mean = list(scaler.mean_) if scaler.with_mean and scaler.mean_ is not None else [0.0] * n
    scale = list(scaler.scale_) if scaler.with_std and scaler.scale_ is not None else [1.0] * n
    sign = 1.0 if list(lr.classes_) == [0, 1] else -1.0  # decision > 0 means classes_[1]
    w = [sign * float(c) / float(s) for c, s in zip(lr.coef_[0], scale)]
    b = sign * float(lr.intercept_[0]) - sum(wi * float(m) for wi, m in zip(w, mean))
    return w, b


def seq_probabilities(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int = 8,
                      device: str = "cpu") -> list[float]:
    """``P(label 1)`` of a sequence-classification model for each text (softmax over two logits)."""
    import torch

    out: list[float] = []
    with torch.no_grad():
        for b in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[b:b + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt").to(device)
            logits = model(**enc).logits.float()
            out += [float(p) for p in torch.softmax(logits, dim=-1)[:, 1]]
    return out


# -- metadata ------------------------------------------------------------------------------------
def write_meta(folder: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Write ``router.json`` atomically."""
    return write_atomic(Path(folder) / META, json.dumps(dict(meta), indent=2, sort_keys=True) + "\n")


PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""Where the ``routers`` package lies: a relative router path not found from the working
directory is looked up here, so ``routers/trained/...`` (the routers that ship with stepspec)
names the same folder from any directory, in a checkout and in an installed wheel alike."""


def router_folder(path: str | os.PathLike) -> Path:
    """The router folder ``path`` names (the folder or its ``router.json``): as given, or, for a
    relative path that does not exist from the working directory, under :data:`PROJECT_ROOT`."""
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists() and (PROJECT_ROOT / p).exists():
        p = PROJECT_ROOT / p
    return p.parent if p.is_file() or p.name == META else p


def read_meta(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The router folder and its checked ``router.json`` (``path``: the folder or the file; a
    relative path is looked up from the working directory, then under :data:`PROJECT_ROOT`).

    Raises:
        UserError: a missing folder or file, a file that is not a router's, an unknown kind or
            a format version this code does not read.
    """
    folder = router_folder(path)
    file = folder / META
    if not file.is_file():
        what = "no such folder" if not folder.exists() else f"no {META} in it"
        raise UserError(f"router {str(path)!r}: {what}; train one with python -m recipes.train_router "
                        "(after python -m recipes.collect_router_data) and set judge.path to its folder")
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"router {str(file)!r} is not readable JSON ({e})") from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != FORMAT:
        raise UserError(f"{file} is not a stepspec router (format {fmt!r}, expected {FORMAT!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise UserError(f"router {str(folder)!r} has format version {meta.get('version')!r}; this stepspec "
                        f"reads version {FORMAT_VERSION}: retrain it with python -m recipes.train_router")
    if meta.get("kind") not in KINDS:
        raise UserError(f"router {str(folder)!r} has kind {meta.get('kind')!r}; expected one of "
                        f"{', '.join(KINDS)}")
    return folder, meta


def training_meta(kind: str, rows, train, test, ytrain, margin, average_samples, balance_classes, seed,
                  test_fraction, train_all=None, **extra: Any) -> dict[str, Any]:
    """What ``router.json`` holds for a router of ``kind`` trained on ``rows[train]`` (the fitted,
    balanced rows; ``train_all`` before balancing) and reported on ``rows[test]``, with ``extra``."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("scikit-learn", "transformers", "torch"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "kind": kind,
        "predicts": "P(target beats draft): advantage = target_score - draft_score > margin",
        "score": "1 - P (RouterJudge); ThresholdPolicy(threshold=1 - tau) sends a step to the target when "
                 "P > tau",
        "margin": margin, "average_samples": average_samples, "balanced": balance_classes, "seed": seed,
        "test_fraction": test_fraction,
        "train": {"rows": len(train), "problems": len({rows[i]["problem_id"] for i in train}),
                  "positives": sum(ytrain)},
        "heldout_problems": sorted({str(rows[i]["problem_id"]) for i in test}),
        "split": {"by": "problem_id", "train": _counts(rows, train if train_all is None else train_all),
                  "train_fitted": _counts(rows, train), "heldout": _counts(rows, test)},
        "versions": versions,
        **extra,
    }


def _counts(rows: Sequence[Mapping[str, Any]], idx: Sequence[int]) -> dict[str, int]:
    return {"rows": len(idx), "problems": len({str(rows[i]["problem_id"]) for i in idx})}
