"""The engine: one loaded model, requests in, sequences and streams of chunks out.

``sequence`` is where every request starts, for both loops: the prompt (checked against the
context), the token budget clamped to the context, sampler and processors, a detokenizer, the
segmenter and the model's end-of-turn tokens. The segmenter is the one of the model's output format
(read from its chat template with ``detect_format``, or set with ``use_format``): chat requests get
one, with the tools they offered (none offered: calls are text) and the end of their prompt; a
model without a known format, or a raw prompt, gets none, and pays nothing per token for it. ``generate`` is the single-sequence loop (``mlxk
run``): tokens from mlx-lm's ``generate_step`` (the loop ``stream_generate`` runs, so the speed is
mlx-lm's) fed to the sequence. One request runs at a time per engine (a lock); the server's batch
loop (``batch``) drives the same sequences.

mlx and mlx-lm are imported only when a model is loaded or a sequence runs, never by cache commands.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from mlxk.errors import ExecutionError, MlxkError, PromptTooLong, ValidationError
from mlxk.generation.chunks import Chunk
from mlxk.generation.detect import detect_format
from mlxk.generation.detokenize import WindowedDetokenizer
from mlxk.generation.grammar.constraint import Constraint, ConstraintProcessor, MaskBuffer
from mlxk.generation.grammar.enforce import Enforcer, needs_grammar
from mlxk.generation.parse import list_formats, make_segmenter
from mlxk.generation.prompt import Prompt, offered_tools, render
from mlxk.generation.request import GenerationRequest
from mlxk.generation.sampling import sampler_and_processors
from mlxk.generation.sequence import Segmenter, Sequence
from mlxk.generation.tokens import Vocabulary, vocabulary

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

# request and rendered prompt -> the segmenter of the model's output format (None: all content)
SegmenterFactory = Callable[[GenerationRequest, Prompt], "Segmenter | None"]
NO_FORMAT = "none"  # what ``use_format`` takes for "all output is content"


def plain_text(request: GenerationRequest, prompt: Prompt) -> Segmenter | None:
    return None


class Engine:
    def __init__(self, model: Any, tokenizer: Any, config: dict[str, Any], load_seconds: float = 0.0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.load_seconds = load_seconds
        self.context_length = _context_length(config)
        vocab = config.get("vocab_size")
        self.vocab_size = vocab if isinstance(vocab, int) and not isinstance(vocab, bool) else None
        self.has_chat_template = bool(getattr(tokenizer, "has_chat_template", False))
        self.end_ids = frozenset(self._end_ids())
        self.output_format: str | None = None
        self.segmenter_for: SegmenterFactory = plain_text
        self.use_format(self._detected_format())
        self._lock = threading.Lock()
        self._enforcer: Enforcer | None = None  # grammars: made when a request first needs one
        self._vocabulary: Vocabulary | None = None  # the bytes of each token: made when needed
        self._detokenizer: Any = None  # the one each sequence's detokenizer is a copy of

    def _detected_format(self) -> str | None:
        template = self._template_text()
        try:
            special = list(self.tokenizer.get_added_vocab())
        except (AttributeError, TypeError):
            special = []
        return detect_format(template, special)

    def _template_text(self) -> str:
        """The chat template's source; where there are named templates (a default and a tool_use
        one, say), all of them."""
        template = getattr(self.tokenizer, "chat_template", None)
        if isinstance(template, dict):
            return "\n".join(str(t) for t in template.values())
        return template if isinstance(template, str) else ""

    def use_format(self, name: str | None) -> None:
        """The output format to segment answers with: a name of ``list_formats()``, or None (or
        ``"none"``) for output that is all content."""
        if name is None or name == NO_FORMAT:
            self.output_format, self.segmenter_for = None, plain_text
            return
        if name not in list_formats():
            known = ", ".join([*list_formats(), NO_FORMAT])
            raise ValidationError(f"unknown output format {name!r}; known: {known}")
        self.output_format, self.segmenter_for = name, self._format_segmenter

    def _format_segmenter(self, request: GenerationRequest, prompt: Prompt) -> Segmenter | None:
        if request.prompt is not None or self.output_format is None:
            return None  # a raw prompt: the output comes back as the model wrote it
        tools = offered_tools(request)
        return make_segmenter(
            self.output_format,
            tools=tools,
            prompt_tail=prompt.tail,
            seed=request.sampling.seed,  # a seeded request gets the same call ids for the same output
            calls=bool(tools),
        )

    def _end_ids(self) -> set[int]:
        """The model's own end tokens, plus the turn markers its chat template uses (so a chat
        model stops where its turn ends even when its config names only one end token)."""
        ids = {int(i) for i in self.tokenizer.eos_token_ids}
        try:
            added = self.tokenizer.get_added_vocab()
        except (AttributeError, TypeError):
            added = {}
        template = self._template_text()
        for marker in TURN_MARKERS:
            if marker not in added or marker not in template:
                continue
            if marker == "<|end|>" and "<|return|>" in added:
                continue  # harmony (gpt-oss): <|end|> closes a message inside the turn, <|return|> ends it
            ids.add(int(added[marker]))
        return ids

    def prompt(self, request: GenerationRequest) -> Prompt:
        """The prompt's token ids: the chat template for messages, plain text for a prompt."""
        return render(self.tokenizer, request, chat_template=self.has_chat_template)

    def sequence(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Sequence:
        """A new sequence for ``request``; raises PromptTooLong for a prompt the context cannot hold."""
        prompt = self.prompt(request)
        size = len(prompt.tokens)
        max_tokens = request.max_tokens
        if self.context_length:
            if size >= self.context_length:
                raise PromptTooLong(size, self.context_length)
            max_tokens = min(max_tokens, self.context_length - size)
        constraint = self.constraint(request, prompt)
        sampler, processors = sampler_and_processors(request.sampling, self.vocab_size)
        detokenizer = self.detokenizer()
        seq = Sequence(
            prompt, max_tokens, sampler, processors, detokenizer, self.end_ids, request.stops,
            self.segmenter_for(request, prompt), cancel, single_call=not request.parallel_tool_calls,
        )  # fmt: skip
        if constraint is not None:
            seq.constrain(constraint, ConstraintProcessor(constraint, self.mask_buffer()))
        if request.logprobs is not None:
            seq.report_logprobs(request.logprobs, self.vocabulary())
        return seq

    def detokenizer(self) -> Any:
        """A fresh streaming detokenizer for one sequence: mlx-lm's for byte-level BPE and
        SentencePiece vocabularies, ours (``WindowedDetokenizer``) where mlx-lm would decode the
        whole line again at every token."""
        from mlx_lm.tokenizer_utils import NaiveStreamingDetokenizer

        if self._detokenizer is None:
            self._detokenizer = self.tokenizer.detokenizer  # mlx-lm's copy, for this engine
            if isinstance(self._detokenizer, NaiveStreamingDetokenizer):
                self._detokenizer = WindowedDetokenizer(self.tokenizer._tokenizer)
        detokenizer = copy.copy(self._detokenizer)  # its own state; what it derived is shared
        detokenizer.reset()
        return detokenizer

    def vocabulary(self) -> Vocabulary:
        if self._vocabulary is None:
            self._vocabulary = vocabulary(self.tokenizer)
        return self._vocabulary

    def constraint(self, request: GenerationRequest, prompt: Prompt) -> Constraint | None:
        """What the request's answer is held to (response_format, enforced tool_choice), if
        anything; raises InvalidField for a schema that cannot be enforced."""
        if not needs_grammar(request):
            return None
        if self._enforcer is None:
            self._enforcer = Enforcer(self.tokenizer, self.vocabulary(), self.end_ids, self.vocab_size)
        return self._enforcer.constraint(request, prompt, self.output_format)

    def mask_buffer(self) -> MaskBuffer:
        """A buffer for the masks of a batch of this model's sequences (after ``constraint``)."""
        words = self._enforcer.grammars.words if self._enforcer is not None else 1
        return MaskBuffer(words, self.vocab_size)

    def generate(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[Chunk]:
        """Checks the request now (a prompt too long for the context raises here, before any
        chunk), then returns the stream: run it to the end or close it, which frees the engine."""
        return self._locked(self.sequence(request, cancel))

    def _locked(self, seq: Sequence) -> Iterator[Chunk]:
        with self._lock:
            yield from self._generate(seq)

    def _generate(self, seq: Sequence) -> Iterator[Chunk]:
        import mlx.core as mx
        from mlx_lm.generate import generate_step, generation_stream, wired_limit

        mx.reset_peak_memory()
        seq.started = time.perf_counter()
        steps = generate_step(
            mx.array(seq.prompt),
            self.model,
            max_tokens=seq.max_tokens,
            sampler=seq.solo_sampler,
            logits_processors=seq.solo_processors,
        )
        cancel = seq.cancel
        reason = None
        # as stream_generate does: on Metal the weights stay wired in memory while it runs
        with wired_limit(self.model, [generation_stream]):  # type: ignore[list-item]
            for token, logprobs in steps:
                chunk = seq.add(token, logprobs)  # type: ignore[arg-type]  # an int (.item()), typed as an array
                if chunk is not None:
                    yield chunk
                if seq.reason is not None:
                    break
                if cancel.is_set():
                    reason = "cancelled"
                    break
        yield seq.finish(reason)


def _context_length(config: dict[str, Any]) -> int | None:
    text_config = config.get("text_config")
    sources: list[dict[str, Any]] = [config, text_config if isinstance(text_config, dict) else {}]
    for source in sources:
        for key in ("max_position_embeddings", "max_sequence_length", "seq_length", "n_positions", "n_ctx"):
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def load_engine(path: str, name: str | None = None) -> Engine:
    """Load the snapshot at ``path`` (the model ``name``) with mlx-lm, weights evaluated now, not on
    first use. A snapshot the cache's checks pass can still fail here (a tensor the architecture
    needs is missing, a shape does not match its config): that is ``ExecutionError`` naming the
    model and mlx-lm's reason, for ``run`` and ``serve`` alike."""
    started = time.perf_counter()
    from mlxk.core.blas import ensure_blas

    ensure_blas()  # before mlx-lm imports mlx.core: libmlx binds its BLAS when it loads
    from mlx_lm.utils import load

    try:
        loaded: tuple[Any, ...] = load(path, return_config=True)
    except MlxkError:
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split())  # mlx-lm breaks its lists of tensors over lines
        raise ExecutionError(f"loading {name or path} failed: {type(exc).__name__}: {reason}") from exc
    model, tokenizer, config = loaded
    return Engine(model, tokenizer, dict(config), time.perf_counter() - started)
