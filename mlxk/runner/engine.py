"""The generation engine: one loaded model, requests in, a stream of text chunks out.

Tokens come from mlx-lm's ``generate_step`` (the same loop ``stream_generate`` runs, so the speed
is mlx-lm's); text from the tokenizer's streaming detokenizer; stops from ``StopMatcher``. A
generation ends at the model's end-of-turn tokens (also the markers of a new turn, so a chat model
never goes on talking to itself), at a stop string, at ``max_tokens``, or when cancelled.

One request runs at a time per engine (a lock); the server builds batching on top of this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from mlxk.errors import ValidationError
from mlxk.runner.request import Chunk, GenerationRequest, Usage
from mlxk.runner.stops import StopMatcher

# Special tokens that end a turn (or start a new one) in the chat formats in use today.
TURN_MARKERS = (
    "<|im_end|>",
    "<|im_start|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end|>",
    "<|user|>",
    "<end_of_turn>",
    "<start_of_turn>",
    "<|endoftext|>",
    "</s>",
)


class Engine:
    def __init__(self, model: Any, tokenizer: Any, config: dict[str, Any], load_seconds: float = 0.0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.load_seconds = load_seconds
        self.context_length = _context_length(config)
        self.has_chat_template = bool(getattr(tokenizer, "has_chat_template", False))
        self.end_ids = frozenset(self._end_ids())
        self._lock = threading.Lock()

    def _end_ids(self) -> set[int]:
        ids = {int(i) for i in self.tokenizer.eos_token_ids}
        try:
            added = self.tokenizer.get_added_vocab()
        except (AttributeError, TypeError):
            added = {}
        ids.update(int(added[m]) for m in TURN_MARKERS if m in added)
        return ids

    def encode(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids: the chat template for messages, plain text for a prompt."""
        if request.prompt is not None:
            bos = getattr(self.tokenizer, "bos_token", None)
            add_special = bos is None or not request.prompt.startswith(bos)
            return list(self.tokenizer.encode(request.prompt, add_special_tokens=add_special))
        if not request.messages:
            raise ValidationError("nothing to generate from: no prompt and no messages")
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        if not self.has_chat_template:  # a base model: the turns as plain text
            text = "\n\n".join(m.content for m in request.messages)
            return list(self.tokenizer.encode(text))
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return [int(i) for i in ids]

    def generate(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[Chunk]:
        prompt = self.encode(request)
        if self.context_length and len(prompt) >= self.context_length:
            raise ValidationError(
                f"the prompt is {len(prompt)} tokens; the model's context holds {self.context_length}"
            )
        with self._lock:
            yield from self._generate(prompt, request, cancel)

    def _generate(
        self, prompt: list[int], request: GenerationRequest, cancel: threading.Event | None
    ) -> Iterator[Chunk]:
        import mlx.core as mx
        from mlx_lm.generate import generate_step
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        s = request.sampling
        if s.seed is not None:
            mx.random.seed(s.seed)
        sampler = make_sampler(
            s.temperature, top_p=s.top_p if s.top_p < 1.0 else 0.0, min_p=s.min_p, top_k=s.top_k
        )
        penalized = s.repetition_penalty or s.presence_penalty or s.frequency_penalty
        processors = (
            make_logits_processors(
                repetition_penalty=s.repetition_penalty,
                presence_penalty=s.presence_penalty,
                frequency_penalty=s.frequency_penalty,
            )
            if penalized
            else None
        )
        max_tokens = request.max_tokens
        if self.context_length:
            max_tokens = min(max_tokens, self.context_length - len(prompt))
        detokenizer = self.tokenizer.detokenizer
        detokenizer.reset()
        stops = StopMatcher(request.stops)
        mx.reset_peak_memory()
        started = time.perf_counter()
        first_token_at = started
        produced = 0
        finish = "length"
        steps = generate_step(
            mx.array(prompt), self.model, max_tokens=max_tokens, sampler=sampler, logits_processors=processors
        )
        for token, _logprobs in steps:
            if produced == 0:
                first_token_at = time.perf_counter()
            if token in self.end_ids:
                finish = "stop"
                break
            produced += 1
            detokenizer.add_token(token)
            text = stops.feed(detokenizer.last_segment)
            if text:
                yield Chunk(text)
            if stops.stopped:
                finish = "stop"
                break
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
        ended = time.perf_counter()
        if not stops.stopped:
            detokenizer.finalize()
            tail = stops.feed(detokenizer.last_segment)
            tail += "" if stops.stopped else stops.flush()
            if tail:
                yield Chunk(tail)
            if stops.stopped:
                finish = "stop"
        usage = Usage(
            prompt_tokens=len(prompt),
            completion_tokens=produced,
            prompt_seconds=first_token_at - started,
            generation_seconds=ended - first_token_at,
            peak_memory_bytes=int(mx.get_peak_memory()),
        )
        yield Chunk("", finish, usage)


def _context_length(config: dict[str, Any]) -> int | None:
    text_config = config.get("text_config")
    sources: list[dict[str, Any]] = [config, text_config if isinstance(text_config, dict) else {}]
    for source in sources:
        for key in ("max_position_embeddings", "max_sequence_length", "seq_length", "n_positions", "n_ctx"):
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def load_engine(path: str) -> Engine:
    """Load the snapshot at ``path`` with mlx-lm (weights evaluated now, not on first use)."""
    started = time.perf_counter()
    from mlx_lm.utils import load

    loaded: tuple[Any, ...] = load(path, return_config=True)
    model, tokenizer, config = loaded
    return Engine(model, tokenizer, dict(config), time.perf_counter() - started)
