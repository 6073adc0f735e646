"""The types every part of automodel shares. Imports nothing of automodel's.

    Pipeline        the three module sources of one pipeline
    Decision        the Analyst's one instruction for one engineer
    Brief           what the Architect studies; Hardware inside it
    CallRecord      one LLM call (prompt, reply, tokens, cost)
    Usage           tokens and cost summed over calls, an unknown price staying unknown
    ErrorInfo, SandboxInfo, IterationResult   what one sandboxed run produced (metrics.json)
    JournalRecord   one line of a run's journal.jsonl
Each record has `to_json()` and `from_json()`; `from_json` reads what older
runs wrote (missing keys take their defaults, unknown keys are ignored).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODULES = ("data", "model", "train")
ENGINEERS = {"data": "Data Engineer", "model": "Model Engineer", "train": "Training Engineer"}
# Outcomes of one run: harness_error means automodel's own side failed before
# any generated code ran (no engineer can repair that); lost, that the worker or
# node running it was lost twice (--executor ray): not the code's fault either.
STATUSES = ("ok", "failed", "contract_error", "timeout", "oom", "harness_error", "brain_error", "lost")


def _known(cls, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class Pipeline:
    """The three module sources of one pipeline."""

    data: str
    model: str
    train: str

    def module(self, name: str) -> str:
        return getattr(self, name)

    def with_module(self, name: str, source: str) -> "Pipeline":
        return dataclasses.replace(self, **{name: source})

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
    # Measured before the first pipeline (automodel.sandbox.throughput): training images per second of a
    # reference CNN at a few widths, on this machine, at the data's resolution; None where not measured.
    throughput: dict[str, Any] | None = None
    # Training seconds the chosen pipeline gets at the end, retrained on train+val (the budget search's final
    # refit); 0 when there is none. Without it a model tunes candidates for the short screening runs only.
    final_seconds: float = 0.0


@dataclass(frozen=True)
class Decision:
    """The Performance Analyst's one instruction for one engineer."""

    target: str                   # "data" | "model" | "train"
    instruction: str              # what to change, in plain words
    reason: str                   # why, from the numbers
    edit: dict[str, Any] | None = None  # a brain's own structured payload, handed back to its engineers

    def key(self) -> str:
        """Identity of the edit, used so an edit is never proposed twice on one parent."""
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


@dataclass(frozen=True)
class Usage:
    """Tokens and cost of some LLM calls. One call without a known price makes
    the cost unknown (None), here and in every sum it enters: a total that
    silently left out a call would understate what the run cost."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0

    @classmethod
    def of(cls, calls: list[CallRecord]) -> "Usage":
        total = cls()
        for call in calls:
            total = total + cls(1, call.prompt_tokens, call.completion_tokens, call.cost_usd)
        return total

    def __add__(self, other: "Usage") -> "Usage":
        cost = None if self.cost_usd is None or other.cost_usd is None else self.cost_usd + other.cost_usd
        return Usage(self.calls + other.calls, self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens, cost)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def cost_or_none(self) -> float | None:
        """The cost to record: None for no calls (nothing to price) or an unknown price."""
        return round(self.cost_usd, 6) if self.calls and self.cost_usd is not None else None


# ------------------------------------------------------------------ one sandboxed run

@dataclass(frozen=True)
class ErrorInfo:
    phase: str                  # static | import | contract | preflight | train | predict | sandbox | score | write
    module: str | None          # data | model | train, or None when no module is to blame
    type: str                   # exception type, or SyntaxError/Timeout/OutOfMemory/Killed/...
    message: str
    traceback: str = ""         # tail of the child's traceback

    def text(self) -> str:
        """Readable one-block description, for people and for repair prompts."""
        who = f"{self.module}.py" if self.module else "the pipeline"
        head = f"{who} failed in phase '{self.phase}' with {self.type}: {self.message}"
        return head + (f"\n{self.traceback}" if self.traceback else "")

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "ErrorInfo | None":
        if not data:
            return None
        return cls(**{"phase": "?", "module": None, "type": "Error", "message": "", **_known(cls, data)})


@dataclass(frozen=True)
class SandboxInfo:
    kind: str                   # bwrap | unshare | none
    missing: tuple[str, ...]    # protections not in force
    limits: str = ""            # how the slot's limits were enforced (cgroup, watchdog)


@dataclass(frozen=True)
class IterationResult:
    """What one sandboxed run produced; metrics.json is `to_json()`.

    timings (seconds, the parent's clock): static_check, startup (launch to the
    preflight passing: imports, data, contract check, a few training steps),
    training (from then until the training process ended, saving included),
    prediction (the separate prediction process), total; and, as the child
    reported them, imports, data_ready, contract, preflight, first_batch.
    A phase that never ran is absent.
    """

    status: str                                 # see STATUSES
    val_accuracy: float | None
    test_accuracy: float | None
    error: ErrorInfo | None
    curves: dict[str, list[list[float]]]        # tag -> [[step, value], ...] (<= 200 points)
    timings: dict[str, float]
    sandbox: SandboxInfo
    # Accuracy on a fixed sample of training images predicted like validation
    # (eval mode, no augmentation, no MixUp): how well the training set is fit,
    # whatever the augmentation and loss do to the logged training curve.
    train_eval_accuracy: float | None = None
    interrupted: bool = False                   # train() overran and was interrupted
    used_checkpoint: bool = False               # predictions come from ctx.checkpoint() weights
    exit_code: int | None = None
    peak_memory_mb: float | None = None
    peak_processes: int | None = None
    disk_mb: float | None = None                # what the training process kept in its work folder
    logs_truncated: dict[str, int] = field(default_factory=dict)  # log -> bytes cut from its middle
    # What training consumed: steps, images, epochs, images_per_second (the child's counts over the
    # parent's clock), cpu_utilisation of the slot's cores and steal_share of the machine (measured
    # by the parent), batched (which data path data.py took).
    compute: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    to_dict = to_json

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "IterationResult":
        data = dict(data)
        data["error"] = ErrorInfo.from_json(data.get("error"))
        sb = data.get("sandbox") or {"kind": "none", "missing": []}
        data["sandbox"] = SandboxInfo(sb.get("kind", "none"), tuple(sb.get("missing", ())), sb.get("limits", ""))
        data.setdefault("curves", {})
        data.setdefault("timings", {})
        for key in ("val_accuracy", "test_accuracy"):
            data.setdefault(key, None)
        return cls(**_known(cls, data))

    from_dict = from_json

    @classmethod
    def load(cls, path: Path) -> "IterationResult":
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


# ------------------------------------------------------------------ the journal

# JournalRecord fields only the budget search writes (left out of the journal when unset).
SEARCH_FIELDS = ("kind", "round", "rung", "fidelity", "contended", "members", "slot")


@dataclass(frozen=True)
class JournalRecord:
    """One attempt in journal.jsonl. The final record of an iteration is its commit point."""

    iteration: int
    final: bool = True
    attempt: int = 1
    parent: int | None = None
    target: str | None = "architect"      # data | model | train | architect, None for a brain failure
    instruction: str = ""
    reason: str = ""
    decision_key: str | None = None
    edit: dict[str, Any] | None = None
    status: str = "ok"
    accepted: bool = False
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    train_accuracy: float | None = None
    seconds: float = 0.0
    repairs: int = 0
    error: dict[str, Any] | None = None    # phase, module, type, message
    tokens: int = 0
    cost_usd: float | None = None
    brain: str = ""
    time: str = ""
    evidence: dict[str, Any] | None = None  # {"gained", "lost", "z"} against the best of its time
    attempt_dir: str | None = None
    # The budget search (automodel.search.budget) also records where an attempt sits in its tree:
    kind: str | None = None                 # candidate | promotion | final (None: the greedy loop)
    round: int | None = None                # exploration round of a candidate
    rung: int | None = None                 # fidelity level: 0 lowest; candidates compare within a rung only
    fidelity: float | None = None           # training seconds the attempt was given
    contended: bool | None = None           # its compute fell far below its parent's: not judged on it
    members: list[int] | None = None        # a final model: the iterations it was refit from
    slot: str | None = None                 # with --parallel: the slot and node it ran on

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("evidence", "attempt_dir", *SEARCH_FIELDS):  # written only when present, as older runs did
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JournalRecord":
        return cls(**_known(cls, data))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def scored(self) -> bool:
        return self.status == "ok" and self.val_accuracy is not None

    @property
    def usage(self) -> Usage:
        # The record keeps total tokens only; a cost of None with tokens spent is an unknown price.
        cost = self.cost_usd if self.cost_usd is not None or not self.tokens else None
        return Usage(1 if self.tokens else 0, self.tokens, 0, cost if self.tokens else 0.0)


# ------------------------------------------------------------------ what a brain reads

@dataclass(frozen=True)
class History:
    """The bounded summary of a run that the Performance Analyst reads (automodel.search.history).

    Its items are plain JSON values because they are shown to an LLM as they
    are; `to_json()` is exactly what the prompt renders."""

    dataset: dict[str, Any]                      # facts: classes, size, channels, description
    budget: dict[str, Any]                       # iterations done and total, seconds per iteration, elapsed
    best: dict[str, Any] | None                  # the best attempt: scores, steps, summary, curves
    recent: list[dict[str, Any]]                 # the last few attempts
    failures: list[dict[str, Any]]               # failures grouped by cause
    parent_iteration: int | None                 # the pipeline the next edit starts from
    tried_on_best: list[dict[str, Any]]          # edits already tried on that pipeline ({"key", ...})
    rejected_on_earlier_best: list[dict[str, Any]] = field(default_factory=list)
    num_iterations: int = 0
    chance_accuracy: float = 0.1

    def tried_keys(self) -> set[str]:
        return {t.get("key") for t in self.tried_on_best if t.get("key")}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "History":
        defaults = {"dataset": {}, "budget": {}, "best": None, "recent": [], "failures": [], "parent_iteration": None,
                    "tried_on_best": []}
        return cls(**{**defaults, **_known(cls, data)})
