"""stepspec's core: records, protocols, segmenters, policies, the step loop, traces, metrics.

``import reasoning`` needs neither torch nor vllm: engines are imported when a backend is
built (:mod:`reasoning.backends`).
"""

from reasoning.backends.scripted import ScriptedGenerator
from reasoning.judges import CallableJudge, ConfidenceJudge, ConstantJudge, ScriptedJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.pipeline import Pipeline, RunResult
from reasoning.policies import AlwaysDraft, AlwaysTarget, ThresholdPolicy
from reasoning.prompts import ChatPrompt
from reasoning.protocols import Generator, Judge, JudgeRequest, Segmenter, StepContext, StepPolicy, StopRule
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import (
    ChatMessage,
    Completion,
    Decision,
    FinishReason,
    GenerationParams,
    GenerationRequest,
    Problem,
    Route,
    Segment,
    StepRecord,
    StopReason,
    Trace,
)

__version__ = "0.1.0"

__all__ = [
    "AlwaysDraft", "AlwaysTarget", "BlankLineSegmenter", "CallableJudge", "ChatMessage", "ChatPrompt",
    "Completion", "ConfidenceJudge", "ConstantJudge", "Decision", "FinishReason", "GenerationParams",
    "GenerationRequest", "Generator", "Judge", "JudgeRequest", "LoopConfig", "Pipeline", "Problem",
    "Route", "RunResult", "ScriptedGenerator", "ScriptedJudge", "Segment", "Segmenter", "StepContext",
    "StepLoop", "StepPolicy", "StepRecord", "StopReason", "StopRule", "Trace", "ThresholdPolicy",
]
