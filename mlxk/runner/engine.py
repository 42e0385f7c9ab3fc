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
from collections.abc import Iterator, Mapping
from typing import Any

from mlxk.errors import ValidationError
from mlxk.runner.request import Chunk, GenerationRequest, Sampling, Usage
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
        """The model's own end tokens, plus the turn markers its chat template uses (so a chat
        model stops where its turn ends even when its config names only one end token)."""
        ids = {int(i) for i in self.tokenizer.eos_token_ids}
        try:
            added = self.tokenizer.get_added_vocab()
        except (AttributeError, TypeError):
            added = {}
        template = getattr(self.tokenizer, "chat_template", None)
        template = template if isinstance(template, str) else ""
        for marker in TURN_MARKERS:
            if marker not in added or marker not in template:
                continue
            if marker == "<|end|>" and "<|return|>" in added:
                continue  # harmony (gpt-oss): <|end|> closes a message inside the turn, <|return|> ends it
            ids.add(int(added[marker]))
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
        if isinstance(ids, Mapping):  # older mlx-lm with transformers 5 hands back the whole encoding
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def generate(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[Chunk]:
        """Checks the request now (a prompt too long for the context raises here, before any
        chunk), then returns the stream: run it to the end or close it, which frees the engine."""
        prompt = self.encode(request)
        if self.context_length and len(prompt) >= self.context_length:
            raise ValidationError(
                f"the prompt is {len(prompt)} tokens; the model's context holds {self.context_length}"
            )
        return self._locked(prompt, request, cancel)

    def _locked(
        self, prompt: list[int], request: GenerationRequest, cancel: threading.Event | None
    ) -> Iterator[Chunk]:
        with self._lock:
            yield from self._generate(prompt, request, cancel)

    def _generate(
        self, prompt: list[int], request: GenerationRequest, cancel: threading.Event | None
    ) -> Iterator[Chunk]:
        import mlx.core as mx
        from mlx_lm.generate import generate_step, generation_stream, wired_limit

        max_tokens = request.max_tokens
        if self.context_length:
            max_tokens = min(max_tokens, self.context_length - len(prompt))
        sampler, processors = self.sampling_for(request.sampling)
        detokenizer = self.tokenizer.detokenizer
        detokenizer.reset()
        stops = StopMatcher(request.stops)
        mx.reset_peak_memory()
        started = time.perf_counter()
        steps = generate_step(
            mx.array(prompt), self.model, max_tokens=max_tokens, sampler=sampler, logits_processors=processors
        )
        # as stream_generate does: on Metal the weights stay wired in memory while it runs
        with wired_limit(self.model, [generation_stream]):  # type: ignore[list-item]
            first_token_at = started
            produced = 0
            finish = "length"
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

    def sampling_for(self, s: Sampling) -> tuple[Any, Any]:
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        vocab = self.config.get("vocab_size")
        top_k = 0 if isinstance(vocab, int) and s.top_k >= vocab else s.top_k  # the whole vocabulary: no cut
        top_p = s.top_p if s.top_p < 1.0 else 0.0
        if s.seed is not None and s.temperature > 0:
            sampler = seeded_sampler(s.seed, s.temperature, top_p, s.min_p, top_k)
        else:
            sampler = make_sampler(s.temperature, top_p=top_p, min_p=s.min_p, top_k=top_k)
        if not (s.repetition_penalty or s.presence_penalty or s.frequency_penalty):
            return sampler, None
        processors = make_logits_processors(
            repetition_penalty=s.repetition_penalty,
            presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
        )
        return sampler, processors


def seeded_sampler(seed: int, temperature: float, top_p: float, min_p: float, top_k: int) -> Any:
    """A sampler with a random stream of its own (a key split at every token), so a seeded request
    repeats exactly whatever else runs beside it in a batch: mlx-lm's samplers draw from mlx's
    one global random state, which other requests advance too."""
    import mlx.core as mx
    from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

    filters: list[Any] = []
    if 0 < top_p < 1.0:
        filters.append(lambda x: apply_top_p(x, top_p))
    if min_p:
        filters.append(lambda x: apply_min_p(x, min_p, 1))
    if top_k > 0:
        filters.append(lambda x: apply_top_k(x, top_k))
    key = [mx.random.key(seed)]

    def sample(logprobs: Any) -> Any:
        for step in filters:
            logprobs = step(logprobs)
        key[0], draw = mx.random.split(key[0])
        return mx.random.categorical(logprobs * (1 / temperature), key=draw)

    return sample


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
    from mlxk.core.blas import ensure_blas

    ensure_blas()  # before mlx-lm imports mlx.core: libmlx binds its BLAS when it loads
    from mlx_lm.utils import load

    loaded: tuple[Any, ...] = load(path, return_config=True)
    model, tokenizer, config = loaded
    return Engine(model, tokenizer, dict(config), time.perf_counter() - started)
