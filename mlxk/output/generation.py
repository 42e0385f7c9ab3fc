"""``run`` results -> the contract's open ``run`` data, and the ``--verbose`` lines for people."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlxk.generation.chunks import Usage


def run_data(
    model: str, prompt: str, response: str, finish_reason: str, usage: Usage, reasoning: str | None = None
) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": prompt,
        "response": response,
        "reasoning": reasoning,
        "tokens_generated": usage.completion_tokens,
        "prompt_tokens": usage.prompt_tokens,
        "generation_time_s": round(usage.prompt_seconds + usage.generation_seconds, 4),
        "time_to_first_token_s": round(usage.prompt_seconds, 4),
        "tokens_per_second": round(usage.tokens_per_second, 2),
        "finish_reason": finish_reason,
        "peak_memory_bytes": usage.peak_memory_bytes,
    }


def render_stats(load_seconds: float, usage: Usage) -> str:
    return (
        f"load: {load_seconds:.2f} s\n"
        f"prompt: {usage.prompt_tokens} tokens, {usage.prompt_tokens_per_second:.1f} tokens/s\n"
        f"generation: {usage.completion_tokens} tokens, {usage.tokens_per_second:.1f} tokens/s\n"
        f"peak memory: {usage.peak_memory_bytes / 1e9:.3f} GB\n"
    )
