"""The boundary between the loop and a brain: what each role receives and returns.

A brain (the built-in expert, or the LLM) implements `Brain`; the loop only
talks to this protocol, so both brains play the same roles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

MODULES = ("data", "model", "train")
ENGINEERS = {"data": "Data Engineer", "model": "Model Engineer", "train": "Training Engineer"}


@dataclass(frozen=True)
class Pipeline:
    """The three module sources of one pipeline."""

    data: str
    model: str
    train: str

    def module(self, name: str) -> str:
        return getattr(self, name)

    def with_module(self, name: str, source: str) -> "Pipeline":
        values = asdict(self)
        values[name] = source
        return Pipeline(**values)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Hardware:
    cpu_cores: int
    device: str                  # "cpu" or "cuda"
    gpu_name: str | None = None
    gpu_memory_gb: float | None = None
    memory_gb: float | None = None


@dataclass(frozen=True)
class Brief:
    """What the Project Architect studies before writing the first pipeline."""

    profile: dict[str, Any]       # dataset profile (classes, counts, sizes, channels, ...)
    info: dict[str, Any]          # the DataInfo given to generated code (image_size, channels, ...)
    description: str              # the user's description of the task ("" if none)
    hardware: Hardware
    time_per_iter: float          # training seconds each iteration gets
    pretrained_cache: list[str] = field(default_factory=list)  # timm weights available offline


@dataclass(frozen=True)
class Decision:
    """The Performance Analyst's one instruction for one engineer."""

    target: str                   # "data" | "model" | "train"
    instruction: str              # what to change, in plain words
    reason: str                   # why, from the numbers
    edit: dict[str, Any] | None = None  # structured payload the expert engineers apply (ignored by LLMs)

    def key(self) -> str:
        """Identity of the edit, used so a rejected edit is never proposed twice on one parent."""
        if self.edit is not None:
            return f"{self.target}:{sorted(self.edit.items())!r}"
        return f"{self.target}:{self.instruction.strip().lower()}"


@dataclass(frozen=True)
class CallRecord:
    """One LLM call (the expert makes none): saved in the iteration directory."""

    role: str
    prompt: str
    reply: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    seconds: float = 0.0
    cached: bool = False
    error: str | None = None


class Brain(Protocol):
    name: str  # "expert" or "llm:<model>"

    def architect(self, brief: Brief) -> Pipeline:
        """Write one complete pipeline for the dataset (iteration 1)."""

    def analyst(self, history: dict[str, Any]) -> Decision:
        """Pick one instruction for one engineer from a bounded history summary."""

    def engineer(self, module: str, pipeline: Pipeline, decision: Decision, error: str | None = None) -> str:
        """Return the new source of `module`; `error` is set when repairing a failed attempt."""

    def summarize(self, pipeline: Pipeline, result: dict[str, Any]) -> dict[str, Any]:
        """Short structured summary of a pipeline's methods and hyperparameters and its result."""

    def take_calls(self) -> list[CallRecord]:
        """LLM calls made since the last take (prompts, replies, tokens); [] for the expert."""
