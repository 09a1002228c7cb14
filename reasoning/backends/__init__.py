"""Generation backends. Each imports its heavy library (vllm, torch, transformers) lazily."""

from reasoning.backends.scripted import ScriptedGenerator

__all__ = ["ScriptedGenerator"]
