"""Routers as judges: a trained router (Arbitrage) and the live oracle it is measured against.

Both are :class:`reasoning.protocols.Judge`\\ s whose score is high when the draft's step should
be kept, so they plug into :class:`reasoning.policies.ThresholdPolicy` like any judge.

- :class:`RouterJudge` loads a router saved by :mod:`routers.train` and scores a drafted step
  ``1 - P``, where ``P`` is the router's probability that the target's step would beat it.
  ``ThresholdPolicy(threshold=1 - tau)`` keeps the draft when ``1 - P >= 1 - tau``, i.e. sends
  the step to the target exactly when ``P > tau`` (``P == tau`` is kept, up to floating point).
- :class:`OracleJudge` asks the target for its own step from the same prefix, scores both with
  a reward judge, and scores the draft 0.0 when the target's step is better by more than
  ``tau``, else 1.0: the upper bound a router is measured against (any threshold in (0, 1]
  then follows the oracle).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from reasoning.errors import UserError
from reasoning.judges import bind_judge
from reasoning.loop import judge_logprobs
from reasoning.protocols import Generator, Judge, JudgeRequest
from reasoning.types import GenerationParams, GenerationRequest
from routers.features import FEATURES, router_text, step_features
from routers.labels import same_step
from routers.saved import (
    MODEL_FILE,
    LightweightRouter,
    judge_score,
    linear_router,
    read_meta,
    seq_probabilities,
)

log = logging.getLogger(__name__)


def _folder_digest(folder: Path, whole: str | None = None) -> str:
    """sha256 over ``router.json`` and ``whole`` (contents) and every other file's name, size
    and modification time."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        h.update(rel.encode() + b"\0")
        if rel in ("router.json", whole):
            h.update(f.read_bytes())
        else:
            st = f.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


class RouterJudge:
    """A trained router as judge: score = 1 - P(the target's step beats the draft's).

    Args:
        path: The router folder written by ``python -m recipes.train_router`` (or its
            ``router.json``); a relative path not found from the working directory is looked
            up in stepspec's own folder (:func:`routers.saved.router_folder`), so the routers
            under ``routers/trained/`` load from anywhere. A logistic ``lightweight`` router is
            read from the coefficients in ``router.json``; any other lightweight router is a
            pickle (``model.joblib``): load only routers you trained.
        device: Torch device of a ``seq-classification`` router.
        batch_size: Texts per forward pass of a ``seq-classification`` router.

    A ``lightweight`` router reads the draft's logprobs: ``needs_logprobs`` is ``k``, the top
    logprobs per token its entropy feature was trained with (0: the sampled token's only), and
    the loop asks the draft for them. A ``seq-classification`` router reads text only.

    Raises:
        UserError: a missing folder or file, an unknown kind, a format version this code does
            not read, or a model file that does not load.
    """

    @property
    def concurrent_calls(self) -> bool:
        """A lightweight router is a scikit-learn model over the draft's logprobs, no engine: the
        async schedule calls it from its own thread. A seq-classification router is a torch
        model, called from the in-process engines' thread."""
        return self.kind == "lightweight"

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 16) -> None:
        folder, meta = read_meta(path)
        self.path = str(folder)
        self.meta = meta
        self.kind: str = meta["kind"]
        self.batch_size = batch_size
        self.device = device
        self._identity: str | None = None
        if self.kind == "lightweight":
            names = meta.get("feature_names")
            if not isinstance(names, list) or not names or set(names) - set(FEATURES):
                raise UserError(f"router {self.path!r} names features {names!r}; this stepspec computes "
                                f"{', '.join(FEATURES)}: retrain it with python -m recipes.train_router")
            k = meta.get("top_logprobs")
            if not isinstance(k, int) or isinstance(k, bool) or k < 0:
                raise UserError(f"router {self.path!r}: top_logprobs must be an int >= 0, got {k!r}")
            self._k = k
            if "linear" in meta:  # a logistic regression's coefficients: nothing to unpickle
                self._router = linear_router(meta, self.path)
                return
            file = folder / str(meta.get("model_file", MODEL_FILE))
            if not file.is_file():
                raise UserError(f"router {self.path!r}: its model file {file.name} is missing")
            try:
                import joblib

                model = joblib.load(file)
            except ImportError as e:
                raise UserError(f"router {self.path!r} needs scikit-learn and joblib: pip install -e "
                                f"'.[router]' ({e})") from None
            except Exception as e:  # noqa: BLE001 - a broken or foreign pickle: one clear line
                raise UserError(f"router {self.path!r}: {file.name} does not load "
                                f"({type(e).__name__}: {e})") from None
            if not hasattr(model, "predict_proba"):
                raise UserError(f"router {self.path!r}: {file.name} holds a {type(model).__name__}, "
                                "not a classifier with predict_proba")
            self._router = LightweightRouter(model, meta)
        else:
            if not (folder / "config.json").is_file():
                raise UserError(f"router {self.path!r}: a seq-classification router folder needs the "
                                "model's config.json (save_pretrained files)")
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(folder)
            self._tokenizer.truncation_side = "left"
            self._model = AutoModelForSequenceClassification.from_pretrained(folder).to(device).eval()
            self._max_length = int(meta.get("max_length", 512))

    @property
    def cache_identity(self) -> str:
        """What the step cache adds to this judge's config in its key: a digest of the router's
        files, so a router retrained into the same folder never gets the old one's scores.
        ``router.json`` and the lightweight model file are hashed whole; a seq-classification
        router's other files count by name, size and modification time.

        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "router.json").write_text("{}")
        >>> a = _folder_digest(d); _ = (d / "router.json").write_text("{ }"); a == _folder_digest(d)
        False
        """
        if self._identity is None:
            self._identity = _folder_digest(Path(self.path), whole=MODEL_FILE if self.kind == "lightweight"
                                            else None)
        return self._identity

    @property
    def needs_logprobs(self) -> int | bool:
        """Top logprobs per draft token the router reads (``k``), or False (text only)."""
        return self._k if self.kind == "lightweight" else False

    def probabilities(self, requests: Sequence[JudgeRequest]) -> list[float]:
        """``P(target beats draft)`` for each drafted step."""
        if not requests:
            return []
        if self.kind == "lightweight":
            X = []
            for r in requests:
                if self._k > 0 and r.step.top_logprobs is None and r.step.num_tokens:
                    raise ValueError(f"RouterJudge needs the draft's top {self._k} logprobs per token; "
                                     "its backend returned none")
                f = step_features(r.step, r.step_index, len(r.problem.question), self._k or None)
                X.append([f[n] for n in self._router.feature_names])
            return self._router.predict(X)
        texts = [router_text(r.problem.question, [(s.source, s.text) for s in r.prefix], r.step.text)
                 for r in requests]
        return seq_probabilities(self._model, self._tokenizer, texts, self._max_length, self.batch_size,
                                 self.device)

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        return [judge_score(p) for p in self.probabilities(requests)]

    def __repr__(self) -> str:
        return f"RouterJudge({self.path!r}, kind={self.kind!r})"


class OracleJudge:
    """The oracle router, live: keep the draft unless the target's own step scores better by > ``tau``.

    For a batch of drafted steps: one target call writes the target's step from each step's
    prefix (greedy, up to ``max_step_tokens``, ending at ``stop``), one reward call scores the
    drafted and the target's steps together, and each draft scores 0.0 when ``target score -
    draft score > tau`` (the step goes to the target), else 1.0. Pair it with
    ``ThresholdPolicy(threshold=0.5)`` (any threshold in (0, 1] gives the same decisions). A
    target step with the drafted step's text (:func:`routers.labels.same_step`) is not scored:
    the draft is kept.

    It is a quality upper bound, not a method: it writes every target step to decide, and the
    loop has the target write a rejected step again, so its timings mean nothing. The target's
    step here is one engine call: a too-short step is not extended as the loop extends steps.

    Args:
        generator: The target model (recipes bind the run's target: ``_partial_: true``).
        reward: The judge that scores both steps. A partial (a nested ``_partial_: true`` config,
            e.g. the target as judge) is finished here with ``generator`` (and ``draft``).
        tau: The margin the target's step must beat the draft's by.
        stop: Stop strings of a step (the segmenter's).
        max_step_tokens: Most tokens of the target's step (the segmenter's).
        draft: The draft model, handed to a partial reward that asks for one.

    >>> from reasoning.backends.scripted import ScriptedGenerator
    >>> from reasoning.judges import CallableJudge
    >>> from reasoning.types import Completion, FinishReason, Problem
    >>> target = ScriptedGenerator("target", {"p": "2 + 2 = 4.\\n\\n"})
    >>> judge = OracleJudge(target, CallableJudge(lambda r: 1.0 if "4" in r.step.text else 0.0))
    >>> reqs = [JudgeRequest(Problem("p", "2 + 2?"), (), (), Completion(t, (1,), FinishReason.STOP), 0)
    ...         for t in ("2 + 2 = 5.\\n\\n", "2 + 2 = 4.\\n\\n")]
    >>> judge.score(reqs), judge.last
    ([0.0, 1.0], [(0.0, 1.0), (1.0, 1.0)])

    The second draft is the target's own step: kept unscored (``last`` says 1.0 for both).
    """

    def __init__(self, generator: Generator | None = None, reward: Judge | None = None, tau: float = 0.0,
                 stop: Sequence[str] = ("\n\n",), max_step_tokens: int = 256,
                 draft: Generator | None = None) -> None:
        if reward is None:
            raise ValueError("OracleJudge needs a reward judge to score the draft's and the target's steps "
                             "(judge.reward)")
        if max_step_tokens < 1:
            raise ValueError(f"judge.max_step_tokens must be >= 1, got {max_step_tokens}")
        if isinstance(stop, str):
            stop = (stop,)
        self.generator = generator
        self.draft = draft
        self.reward = bind_judge(reward, generator, draft)
        self.tau = float(tau)
        self.stop = tuple(stop)
        self.max_step_tokens = max_step_tokens
        self.last: list[tuple[float, float]] = []
        """``(draft score, target score)`` of each step of the last call."""

    @property
    def needs_logprobs(self) -> int | None:
        """What the reward reads of a scored step (asked of the draft and, here, of the target)."""
        return judge_logprobs(self.reward)

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        if not requests:
            return []
        if self.generator is None:
            raise ValueError("OracleJudge has no generator: pass generator=<the target Generator> (recipes "
                             "bind the run's target when the judge config has _partial_: true)")
        params = GenerationParams(max_tokens=self.max_step_tokens, temperature=0.0, stop=self.stop,
                                  logprobs=judge_logprobs(self.reward))
        gen = [GenerationRequest(f"{r.problem.id}/{r.step_index}/oracle", r.problem.id, r.messages, r.prefix,
                                 params) for r in requests]
        outs = self.generator.generate(gen)
        if len(outs) != len(gen):
            raise RuntimeError(f"{self.generator.name} returned {len(outs)} completions for {len(gen)} "
                               "requests")
        # A target step that is the drafted step's text changes nothing: it is not scored, and
        # its advantage is 0 (scored twice, batch shapes alone could tip the decision).
        differ = [i for i, (r, c) in enumerate(zip(requests, outs)) if not same_step(r.step.text, c.text)]
        both = [requests[i] for i in differ] + [replace(requests[i], step=outs[i]) for i in differ]
        scores = [float(s) for s in self.reward.score(both)] if both else []
        if len(scores) != len(both):
            raise RuntimeError(f"reward returned {len(scores)} scores for {len(both)} steps")
        self.last = [(1.0, 1.0)] * len(requests)
        for k, i in enumerate(differ):
            self.last[i] = (scores[k], scores[len(differ) + k])
        return [0.0 if t - d > self.tau else 1.0 for d, t in self.last]
