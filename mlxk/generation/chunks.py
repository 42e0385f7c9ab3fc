"""What comes out of the pipeline: chunks of the answer on their channels, then the finish.

A chunk carries what became ready at one step: answer text (``content``), thinking
(``reasoning``) and pieces of tool calls, in the order a reader shows them (thinking first). The
last chunk of a stream has ``finish_reason`` and ``usage``. Plain values, no mlx types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlxk.generation.logprobs import TokenLogprob

# why a generation ended: an end-of-turn token or a stop string, the token budget (or the
# context), a finished tool call, or the caller went away
FINISH_REASONS = ("stop", "length", "tool_calls", "cancelled")


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    prompt_seconds: float  # prefill, up to the first generated token
    generation_seconds: float  # from the first token to the last
    peak_memory_bytes: int
    cached_tokens: int = 0  # prompt tokens served from the prefix cache (not prefilled again)
    reasoning_tokens: int = 0  # generated tokens that went to the reasoning channel

    @property
    def tokens_per_second(self) -> float:
        if self.completion_tokens <= 1 or self.generation_seconds <= 0:
            return 0.0
        return (self.completion_tokens - 1) / self.generation_seconds

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of the ``index``-th tool call of the answer: its first piece names it (``id``,
    ``name``), the following ones carry more of its ``arguments`` (JSON text). A piece with
    ``failed`` voids the call: it turned out malformed or truncated, and its text came as content."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    failed: bool = False


# Not frozen: one is made per token, and a frozen dataclass's __init__ (object.__setattr__ per
# field) costs about three times as much. Nothing changes a chunk once it is made.
@dataclass(slots=True)
class Chunk:
    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None  # stop | length | tool_calls | cancelled
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens up to this chunk, when asked for
    stop_sequence: str | None = None  # the stop string that ended the answer (finish "stop")

    @property
    def empty(self) -> bool:
        """Carries nothing to show (a last chunk may still carry the finish)."""
        return not (self.content or self.reasoning or self.tool_calls)


def merge(chunks: Sequence[Chunk]) -> Chunk:
    """Consecutive chunks of one stream as one: channels joined, tool-call pieces of the same call
    run together, the finish and usage of the last."""
    if len(chunks) == 1 and len(chunks[0].tool_calls) <= 1:
        return chunks[0]  # the common case: nothing to join
    calls: list[ToolCallDelta] = []
    for chunk in chunks:
        for delta in chunk.tool_calls:
            if delta.failed:  # what came of that call is void
                calls = [call for call in calls if call.index != delta.index]
                calls.append(delta)
            elif calls and calls[-1].index == delta.index and delta.id is None and delta.name is None:
                last = calls[-1]
                calls[-1] = ToolCallDelta(last.index, last.id, last.name, last.arguments + delta.arguments)
            else:
                calls.append(delta)
    last_chunk = chunks[-1]
    return Chunk(
        "".join(c.content for c in chunks),
        "".join(c.reasoning for c in chunks),
        tuple(calls),
        last_chunk.finish_reason,
        last_chunk.usage,
        tuple(entry for c in chunks for entry in c.logprobs),
        last_chunk.stop_sequence,
    )
