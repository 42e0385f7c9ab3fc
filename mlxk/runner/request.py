"""What a caller asks of the engine, and what comes back: plain values, no mlx types."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Either chat ``messages`` (rendered with the model's chat template) or a raw ``prompt``."""

    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    max_tokens: int = 512
    sampling: Sampling = field(default_factory=Sampling)
    stops: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    prompt_seconds: float  # prefill, up to the first generated token
    generation_seconds: float  # from the first token to the last
    peak_memory_bytes: int
    cached_tokens: int = 0  # prompt tokens served from the prefix cache (not prefilled again)

    @property
    def tokens_per_second(self) -> float:
        if self.completion_tokens <= 1 or self.generation_seconds <= 0:
            return 0.0
        return (self.completion_tokens - 1) / self.generation_seconds

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of the answer. The last chunk of a stream has ``finish_reason`` and ``usage``."""

    text: str
    finish_reason: str | None = None  # stop | length | cancelled
    usage: Usage | None = None
