"""Structured output on a tiny real model: ``response_format`` json_schema / json_object enforced by
constrained decoding (llguidance), alone and inside a batch, with unconstrained neighbours whose
text must not change. A random-weight model writes whatever the grammar lets it: every answer
that ends (``stop``) must parse and validate; one cut by ``max_tokens`` says ``length``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mlxk.errors import InvalidField
from mlxk.generation.chunks import Chunk
from mlxk.generation.request import GenerationRequest, Message, ResponseFormat, Sampling
from tests.modelfix import build_tiny_chat_model, install

SCHEMAS = {
    p.stem: json.loads(p.read_text()) for p in sorted(Path(__file__).parent.glob("data/schemas/*.json"))
}
MAX_TOKENS = 600


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mlxk.generation.engine import load_engine

    hub = tmp_path_factory.mktemp("structured")
    repo = install(hub, "test/structured", build_tiny_chat_model(max_position_embeddings=4096))
    yield load_engine(str(repo.snapshot))


def ask(text: str, fmt: ResponseFormat | None = None, tokens: int = MAX_TOKENS) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", text),),
        max_tokens=tokens,
        sampling=Sampling(temperature=0.0),
        response_format=fmt or ResponseFormat(),
    )


def schema_format(name: str) -> ResponseFormat:
    return ResponseFormat("json_schema", SCHEMAS[name], name)


class Collector:
    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    def __call__(self, item: Chunk | BaseException) -> None:
        assert isinstance(item, Chunk), item
        self.chunks.append(item)

    @property
    def done(self) -> bool:
        return bool(self.chunks) and self.chunks[-1].finish_reason is not None

    @property
    def text(self) -> str:
        return "".join(c.content for c in self.chunks)


def check_answer(text: str, finish: str | None, completion_tokens: int, schema: Any, max_tokens: int) -> bool:
    """A finished answer validates; a cut one used the whole budget. True when it finished."""
    if finish == "length":
        assert completion_tokens == max_tokens, (finish, completion_tokens)
        return False
    assert finish == "stop", finish
    jsonschema.validate(json.loads(text), schema, format_checker=jsonschema.FormatChecker())
    return True


def run_batch(engine: Any, requests: list[GenerationRequest]) -> list[Collector]:
    from mlxk.generation.batch import BatchRunner

    runner = BatchRunner(engine)
    collectors = [Collector() for _ in requests]
    for request, collector in zip(requests, collectors, strict=True):
        runner.add(request, collector, threading.Event())
    steps = 0
    while not all(c.done for c in collectors):
        runner.step()
        steps += 1
        assert steps < 20_000
    return collectors


def test_every_schema_of_the_corpus_in_batches_of_eight_with_free_neighbours(engine: Any) -> None:
    """Four constrained sequences and four unconstrained ones per batch; the neighbours' text is
    the text they get alone, and a constrained answer is the one it gets alone."""
    names = sorted(SCHEMAS)
    assert len(names) >= 30
    neighbours = [ask(f"Tell me about {w}", tokens=80) for w in ("cats", "rain", "tea", "maps")]
    alone = ["".join(c.content for c in engine.generate(n)) for n in neighbours]
    finished = 0
    for start in range(0, len(names), 4):
        group = names[start : start + 4]
        requests = [ask(f"Give me {name}", schema_format(name)) for name in group]
        mixed = [r for pair in zip(requests, neighbours, strict=False) for r in pair]
        collectors = run_batch(engine, mixed)
        for i, name in enumerate(group):
            got = collectors[2 * i]
            last = got.chunks[-1]
            assert last.usage is not None
            finished += check_answer(
                got.text, last.finish_reason, last.usage.completion_tokens, SCHEMAS[name], MAX_TOKENS
            )
            assert got.text.startswith(("{", "[", '"', "1", "n", "t")), (name, got.text[:40])
        for i in range(len(group)):
            assert collectors[2 * i + 1].text == alone[i]
    # most answers of a random model end within the budget; none that ended is invalid
    assert finished >= len(names) // 2, finished


def test_the_single_sequence_loop_and_the_batch_give_the_same_constrained_answer(engine: Any) -> None:
    for name in ("weather", "order_with_refs", "enum_only"):
        request = ask("Hello", schema_format(name), tokens=300)
        solo = list(engine.generate(request))
        text = "".join(c.content for c in solo)
        last = solo[-1]
        assert last.usage is not None
        check_answer(text, last.finish_reason, last.usage.completion_tokens, SCHEMAS[name], 300)
        (batched,) = run_batch(engine, [request, ask("Other", tokens=40)])[:1]
        assert batched.text == text


def test_constrained_answers_hold_while_rows_join_and_leave_the_batch(engine: Any) -> None:
    """The batch reads each step's sampled tokens for the grammar from mlx-lm's array of them,
    which is a new array after rows joined or left: a constrained answer stays the one it gets
    alone while requests join mid-answer and others finish before it."""
    from mlxk.generation.batch import BatchRunner

    first = ask("Hello", schema_format("order_with_refs"), tokens=300)
    later = ask("Again", schema_format("weather"), tokens=300)
    alone = ["".join(c.content for c in engine.generate(r)) for r in (first, later)]
    runner = BatchRunner(engine)
    collectors = [Collector() for _ in range(4)]
    runner.add(first, collectors[0], threading.Event())
    runner.add(ask("Short", tokens=15), collectors[1], threading.Event())
    for _ in range(10):
        runner.step()
    runner.add(later, collectors[2], threading.Event())  # joins mid-answer
    for _ in range(5):
        runner.step()
    runner.add(ask("Brief", tokens=12), collectors[3], threading.Event())
    steps = 0
    while not all(c.done for c in collectors):
        runner.step()
        steps += 1
        assert steps < 5_000
    assert collectors[1].done and collectors[3].done  # both left while the others went on
    assert [collectors[0].text, collectors[2].text] == alone
    assert (
        collectors[0].chunks[-1].usage is not None and collectors[0].chunks[-1].usage.completion_tokens > 40
    )


# every value bounded, so that even a sampled answer of a random model ends well within its budget
BOUNDED = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_single_sequence_loop_holds_a_sampled_answer_with_penalties_to_the_schema(
    engine: Any, seed: int
) -> None:
    """The grammar reads each token from the sampler's output, after the penalties (which read
    every token so far) changed the logits: sampled answers with penalties still validate."""
    request = replace(
        ask("Hello", ResponseFormat("json_schema", BOUNDED, "bounded"), tokens=300),
        sampling=Sampling(temperature=1.0, repetition_penalty=1.3, frequency_penalty=0.5, seed=seed),
    )
    chunks = list(engine.generate(request))
    last = chunks[-1]
    assert last.usage is not None
    text = "".join(c.content for c in chunks)
    assert check_answer(text, last.finish_reason, last.usage.completion_tokens, BOUNDED, 300)


def test_json_object_gives_an_object(engine: Any) -> None:
    chunks = list(engine.generate(ask("Hello", ResponseFormat("json_object"), tokens=400)))
    text = "".join(c.content for c in chunks)
    assert chunks[-1].finish_reason == "stop"
    assert isinstance(json.loads(text), dict)


def test_a_cut_answer_says_length(engine: Any) -> None:
    chunks = list(engine.generate(ask("Hello", schema_format("openai_strict_movie"), tokens=12)))
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "string", "not": {"const": "x"}}, 'Unimplemented keys: ["not"]'),
        ({"type": "string", "pattern": "(?=a)b"}, "look-around"),
        ({"type": "strng"}, "Invalid type: strng"),
        ({"type": "array", "minItems": 3, "maxItems": 1}, "minItems"),
        ({"$ref": "#/$defs/missing"}, "/$defs/missing"),
    ],
)
def test_a_schema_that_cannot_be_enforced_is_refused_by_name(engine: Any, schema: Any, problem: str) -> None:
    with pytest.raises(InvalidField) as caught:
        engine.generate(ask("Hello", ResponseFormat("json_schema", schema)))
    assert caught.value.param == "response_format"
    assert problem in caught.value.message and "\n" not in caught.value.message


def test_reasoning_is_free_and_the_answer_starts_after_it(engine: Any) -> None:
    """The prompt leaves the model inside a reasoning block: nothing is masked until the close
    marker has been sampled (here written over several tokens), then only JSON may come."""
    from mlxk.generation.grammar.constraint import Constraint, MaskBuffer
    from mlxk.generation.grammar.enforce import Enforcer

    enforcer = Enforcer(engine.tokenizer, engine.vocabulary(), engine.end_ids, engine.vocab_size)
    matcher = enforcer.grammars.matcher('start: %json {"type": "object"}', "response_format")
    constraint = Constraint(matcher, enforcer.vocab, reasoning=("<think>", "</think>"), in_reasoning=True)
    words = enforcer.grammars.words
    buffer = MaskBuffer(words, None)
    mask = buffer.rows(1)
    mask[:] = 0
    ids = engine.tokenizer.encode("hmm, } [ </think>", add_special_tokens=False)
    constraint.advance(ids[0])  # the prompt's last token: fed, not sampled
    for token in ids:
        assert not constraint.fill(buffer.address(0), words)  # free while reasoning
        assert not mask.any()  # nothing written
        constraint.advance(token)
    assert constraint.fill(buffer.address(0), words)
    allowed = [t for t in range(len(enforcer.vocab.pieces)) if mask[0, t >> 5] >> (t & 31) & 1]
    assert [enforcer.vocab.text(t) for t in allowed] == ["{"]


# --- over HTTP (the app in process) ---------------------------------------------------------------

CHAT = "test/Tiny-Chat"


@pytest.fixture
def server(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> Iterator[Any]:
    from mlxk.server.app import ServerSettings
    from tests.servefix import run_in_process

    install(hub, CHAT, tiny_models["chat"])
    settings = ServerSettings(hub_root=str(hub), model=CHAT)
    yield lambda scenario: run_in_process(settings, scenario)


def sse(text: str) -> list[Any]:
    lines = [line[6:] for line in text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_json_schema_over_http_streamed_and_not(server: Any) -> None:
    names = ("weather", "payment_anyof", "server_config", "const_version")

    async def scenario(call: Any) -> None:
        for name in names:
            body = {
                "model": CHAT,
                "messages": [{"role": "user", "content": f"Give me {name}"}],
                "max_tokens": 300,
                "temperature": 0,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True},
                },
            }
            whole = await call("POST", "/v1/chat/completions", json=body)
            assert whole.status_code == 200, whole.text
            choice = whole.json()["choices"][0]
            text = choice["message"]["content"]
            tokens = whole.json()["usage"]["completion_tokens"]
            check_answer(text, choice["finish_reason"], tokens, SCHEMAS[name], 300)
            streamed = await call("POST", "/v1/chat/completions", json={**body, "stream": True})
            chunks = sse(streamed.text)
            pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
            assert "".join(pieces) == text
            assert chunks[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]

    server(scenario)


def test_json_object_on_completions_and_a_refused_schema(server: Any) -> None:
    async def scenario(call: Any) -> None:
        r = await call(
            "POST",
            "/v1/completions",
            json={"model": CHAT, "prompt": "{", "max_tokens": 400, "temperature": 0,
                  "response_format": {"type": "json_object"}},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "stop" and isinstance(json.loads(choice["text"]), dict)
        bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "not": {}}}}
        r = await call(
            "POST",
            "/v1/chat/completions",
            json={"model": CHAT, "messages": [{"role": "user", "content": "x"}], "response_format": bad},
        )
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["param"] == "response_format" and 'Unimplemented keys: ["not"]' in error["message"]

    server(scenario)


def test_a_token_the_grammar_refuses_ends_the_answer_with_length(
    engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Masks allow only what the grammar accepts, so this needs a token fed past the mask: the
    answer ends before it with ``length`` (never ``stop``, which promises a valid answer), and the
    grammar's message is logged."""
    seq = engine.sequence(ask("Hello", ResponseFormat("json_object"), tokens=50))
    constraint = seq.constraint
    assert constraint is not None
    vocab = engine.vocabulary()
    brace, letter = (vocab.pieces.index(text.encode()) for text in ("{", "x"))
    constraint.skip_next = False
    constraint.advance(brace)
    assert seq.add(brace) is not None and constraint.broken is None
    constraint.advance(letter)  # an object's key starts with a quote, never a letter
    assert constraint.broken is not None
    with caplog.at_level("WARNING", logger="mlxk.generation"):
        assert seq.add(letter) is None
    last = seq.finish()
    assert (last.finish_reason, seq.generated) == ("length", [brace])
    assert "the grammar refused token" in caplog.text


def masked_first_step(engine: Any, model: Any) -> tuple[Any, Any, list[bool]]:
    """One decoding step of a constrained row through ``MaskedForward`` over ``model``: the masked
    logits, the row's constraint, and, for each call of the real model's second layer, whether
    the constraint had taken in the step's input token by then."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    from mlxk.generation.grammar.batching import MaskedForward

    seq = engine.sequence(ask("Hi", schema_format("weather")))
    constraint = seq.constraint
    assert constraint is not None and constraint.skip_next
    cache = make_prompt_cache(engine.model)
    layers = engine.model.layers
    second = layers[1]
    seen: list[bool] = []

    class Recording:  # the second layer, noting when the forward calls it
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            seen.append(not constraint.skip_next)
            return second(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(second, name)

    layers[1] = Recording()
    try:
        forward = MaskedForward(model, {0: constraint}.get, engine.mask_buffer, lambda: True, lambda: [0])
        logits = forward(mx.array([[seq.prompt[-1]]]), cache=cache)
        mx.eval(logits)
    finally:
        layers[1] = second
    return logits, constraint, seen


def test_on_the_cpu_the_grammar_works_once_the_first_layer_is_launched(engine: Any) -> None:
    """On MLX's CPU backend the batch's forward launches its first layer, the constraints take in
    the step's tokens while MLX computes it, and only then is the rest of the forward built; the
    model gets its own first layer back. A model whose forward does not go through its list of
    layers, or has none, gets the grammar after the whole forward, with the same masked logits."""
    import mlx.core as mx

    first = engine.model.layers[0]
    hooked, constraint, seen = masked_first_step(engine, engine.model)
    assert seen == [True]  # advanced before the second layer was built
    assert engine.model.layers[0] is first
    assert not constraint.skip_next

    class NoLayers:  # no list of layers at all: the whole forward, then the grammar
        def __init__(self, model: Any) -> None:
            self.model = model

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return self.model(*args, **kwargs)

    class OwnLayers(NoLayers):  # its ``layers`` is a copy: the forward never meets the swapped one
        @property
        def layers(self) -> list[Any]:
            return list(self.model.layers)

    allowed = mx.isfinite(hooked).astype(mx.int32).sum().item()
    assert isinstance(allowed, int)
    assert 0 < allowed < hooked.size  # a real mask: some tokens allowed, some not
    for model in (OwnLayers(engine.model), NoLayers(engine.model)):
        after, constraint, seen = masked_first_step(engine, model)
        assert seen == [False]  # the forward was built before the grammar ran
        assert not constraint.skip_next
        assert mx.array_equal(hooked, after).item()


def test_a_first_layer_called_again_in_the_same_forward_hands_on_only_its_first_output() -> None:
    """A model that runs its first layer more than once per forward (a recurrent block) launches
    and runs the grammar once, after the first call."""
    import mlx.core as mx

    from mlxk.generation.grammar.overlap import forward_then

    layers = [lambda h: h + 1]

    def model(inputs: Any, cache: Any = None) -> Any:
        for _ in range(3):
            inputs = layers[0](inputs)
        return inputs

    handed: list[Any] = []
    out = forward_then(model, layers, handed.append, mx.array([0]), None)
    assert [a.item() for a in handed] == [1]
    assert out.item() == 3
