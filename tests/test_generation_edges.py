"""Edges of generation on a tiny real model and in its helpers: a model whose tokenizer names
several chat templates, context lengths read from other config keys (or none), an unknown output
format, reasoning a base model cannot take, seeded sampling with min_p and top_k, argument values
typed by enums and by schemas that are not objects."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlxk.errors import InvalidField, PromptTooLong, ValidationError
from mlxk.generation.request import FunctionTool, GenerationRequest, Message, Sampling
from tests.modelfix import CHATML_TEMPLATE, build_tiny_chat_model, install

TOOL_USE_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if tools %}{{ '<|im_start|>tools\\n' }}{% for t in tools %}{{ t['function']['name'] }}{% endfor %}"
    "{{ '<|im_end|>\\n<tool_call>' }}{% endif %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def ask(text: str = "Hello", tokens: int = 8, **options: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", text),), max_tokens=tokens, sampling=Sampling(temperature=0.0), **options
    )


def with_named_templates(files: dict[str, bytes]) -> dict[str, bytes]:
    """The snapshot with tokenizer_config.json naming two templates, as Hermes 2 Pro and Command-R
    ship them (transformers reads the list as a dict)."""
    config = json.loads(files["tokenizer_config.json"])
    config["chat_template"] = [
        {"name": "default", "template": CHATML_TEMPLATE},
        {"name": "tool_use", "template": TOOL_USE_TEMPLATE},
    ]
    return {**files, "tokenizer_config.json": json.dumps(config).encode()}


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from mlxk.generation.engine import load_engine

    hub = tmp_path_factory.mktemp("edges")
    files = build_tiny_chat_model()
    plain = install(hub, "test/plain", files)
    named = install(hub, "test/named", with_named_templates(files))
    raw = install(hub, "test/raw", build_tiny_chat_model(chat_template=False))
    yield {
        "plain": load_engine(str(plain.snapshot)),
        "named": load_engine(str(named.snapshot)),
        "raw": load_engine(str(raw.snapshot)),
    }


def text_of(engine: Any, request: GenerationRequest) -> str:
    return "".join(c.content for c in engine.generate(request))


# --- named chat templates ------------------------------------------------------------------------


def test_a_model_with_named_templates_renders_its_default_one(engines: dict[str, Any]) -> None:
    plain, named = engines["plain"], engines["named"]
    assert isinstance(named.tokenizer.chat_template, dict)
    assert named.prompt(ask()).tokens == plain.prompt(ask()).tokens
    assert text_of(named, ask()) == text_of(plain, ask())
    assert named.end_ids == plain.end_ids  # the turn markers of its templates end its answers too


def test_a_request_with_tools_renders_the_tool_use_template(engines: dict[str, Any]) -> None:
    named = engines["named"]
    tools = (FunctionTool("get_weather", parameters={"type": "object", "properties": {}}),)
    prompt = named.prompt(ask(tools=tools))
    assert "<|im_start|>tools\nget_weather<|im_end|>\n<tool_call><|im_start|>assistant\n" in prompt.tail
    assert named.output_format == "hermes"  # read from every named template


def test_past_reasoning_goes_where_the_rendering_template_reads_it(tmp_path: Path) -> None:
    from mlxk.generation.engine import load_engine

    files = build_tiny_chat_model()
    config = json.loads(files["tokenizer_config.json"])
    reading = CHATML_TEMPLATE.replace(
        "message['content']",
        "(message['reasoning_content'] if message['reasoning_content'] else '') + message['content']",
    )
    config["chat_template"] = [{"name": "default", "template": reading}]
    repo = install(tmp_path, "test/reads", {**files, "tokenizer_config.json": json.dumps(config).encode()})
    engine = load_engine(str(repo.snapshot))
    request = GenerationRequest(
        messages=(
            Message("user", "Hi"),
            Message("assistant", "Yes", reasoning="Mull"),
            Message("user", "So"),
        ),
        max_tokens=4,
    )
    assert "<|im_start|>assistant\nMullYes<|im_end|>" in engine.prompt(request).tail


# --- context length, output formats, prompts ---------------------------------------------------


def test_the_context_length_comes_from_the_text_config_when_the_top_has_none_valid(
    engines: dict[str, Any],
) -> None:
    from mlxk.generation.engine import Engine

    plain = engines["plain"]
    config = {"max_position_embeddings": True, "n_ctx": 0, "text_config": {"seq_length": 4}}
    engine = Engine(plain.model, plain.tokenizer, config)
    assert engine.context_length == 4
    with pytest.raises(PromptTooLong):
        engine.sequence(ask())


def test_a_config_without_a_context_length_caps_nothing(engines: dict[str, Any]) -> None:
    from mlxk.generation.engine import Engine

    plain = engines["plain"]
    engine = Engine(plain.model, plain.tokenizer, {"text_config": "not an object"})
    assert engine.context_length is None
    seq = engine.sequence(ask(tokens=5000))
    assert seq.max_tokens == 5000


def test_an_unknown_output_format_is_refused_with_the_known_ones(engines: dict[str, Any]) -> None:
    from mlxk.generation.parse import list_formats

    plain = engines["plain"]
    with pytest.raises(ValidationError) as caught:
        plain.use_format("smoke-signals")
    assert "unknown output format 'smoke-signals'" in caught.value.message
    assert all(name in caught.value.message for name in [*list_formats(), "none"])


def test_a_base_model_refuses_past_reasoning_it_has_no_place_for(engines: dict[str, Any]) -> None:
    raw = engines["raw"]
    request = GenerationRequest(
        messages=(
            Message("user", "Hi"),
            Message("assistant", "Yes", reasoning="Mull"),
            Message("user", "So"),
        ),
        max_tokens=4,
    )
    with pytest.raises(InvalidField) as caught:
        raw.sequence(request)
    assert caught.value.param == "messages[1].reasoning_content"
    assert "no place for an assistant's reasoning" in caught.value.message


def test_required_tools_on_a_model_without_a_call_grammar_generate_unconstrained(
    engines: dict[str, Any],
) -> None:
    plain = engines["plain"]  # ChatML without tool markers: no output format, so no call grammar
    assert plain.output_format is None
    tools = (FunctionTool("get_weather"),)
    required = ask(tools=tools, tool_choice="required")
    seq = plain.sequence(required, threading.Event())
    assert seq.constraint is None
    assert text_of(plain, required) == text_of(plain, ask(tools=tools))


# --- sampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [{"top_k": 1}, {"min_p": 0.9}], ids=["top_k", "min_p"])
def test_a_seeded_sampler_keeps_only_what_its_cut_allows(cut: dict[str, Any]) -> None:
    import mlx.core as mx

    from mlxk.generation.sampling import sampler_and_processors

    logprobs = mx.log(mx.array([[0.05, 0.6, 0.3, 0.05]]))
    for seed in range(20):
        sampler, _ = sampler_and_processors(Sampling(temperature=2.0, seed=seed, **cut), 4)
        assert [int(sampler(logprobs).item()) for _ in range(5)] == [1] * 5
    loose, _ = sampler_and_processors(Sampling(temperature=2.0, seed=0), 4)
    assert {int(loose(logprobs).item()) for _ in range(60)} != {1}  # without the cut, others come up


# --- typing argument values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enum", "text", "value"),
    [
        ([None, "x"], "null", None),
        ([True, False], "true", True),
        ([1, 2, 3], "3", 3),
        ([0.5, 2.5], "2.5", 2.5),
        ([{"a": 1}], '{"a": 1}', {"a": 1}),
        ([[1], [2]], "[2]", [2]),
        ([1, 2], "three", "three"),
    ],
)
def test_a_value_is_typed_by_the_types_of_its_enum(enum: list[Any], text: str, value: Any) -> None:
    from mlxk.generation.schema import type_text

    assert type_text(text, {"enum": enum}) == value


def test_schemas_that_are_not_objects_leave_values_untyped_or_typed_by_the_rest() -> None:
    from mlxk.generation.schema import Tools, type_text

    tools = Tools([{"name": "f", "parameters": {"properties": {"n": True}}}])
    assert tools and not Tools([])
    assert tools.parameter("f", "n") is None  # `true` allows anything: the value reads as JSON
    assert type_text("4", tools.parameter("f", "n")) == 4
    assert type_text("4", {"anyOf": [True, {"type": "integer"}]}) == 4


def test_text_that_reads_as_no_object_stays_text() -> None:
    from mlxk.generation.schema import type_text

    assert type_text("{'a': oops", {"type": "object"}) == "{'a': oops"
    assert type_text("{'a': True}", {"type": "object"}) == {"a": True}  # a Python literal is taken


def test_a_tokenizer_without_a_decoder_gives_an_unused_id_no_bytes() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    from mlxk.generation.tokens import vocabulary

    backend = Tokenizer(models.WordLevel({"a": 0, "bc": 1, "<unk>": 3}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    vocab = vocabulary(backend)  # no decoder: each token as the tokenizer decodes it alone
    assert vocab.pieces[:3] == (b"a", b"bc", b"")
    assert vocab.text(2) == ""


# --- a model whose vocabulary is wider than its tokenizer's ------------------------------------


def padded_model(extra: int) -> dict[str, bytes]:
    """The tiny chat model with ``extra`` embedding rows no token has (as Qwen pads its vocabulary
    to a multiple of 128), rows so strong that an unmasked model picks one of them every time."""
    import mlx.core as mx
    from mlx_lm.models import llama

    from tests.modelfix import char_tokenizer, model_config, weight_files

    files = build_tiny_chat_model()
    tokens = char_tokenizer().get_vocab_size(with_added_tokens=True)
    config = model_config(tokens + extra)
    mx.random.seed(7)
    model = llama.Model(llama.ModelArgs.from_dict(config))  # type: ignore[no-untyped-call]
    weight = model.model.embed_tokens.weight
    strong = mx.concatenate([mx.zeros((tokens, weight.shape[1])), mx.full((extra, weight.shape[1]), 8.0)])
    model.model.embed_tokens.weight = weight + strong
    mx.eval(model.parameters())
    return {**files, **weight_files(model, config)}


def test_a_grammar_keeps_a_padded_model_off_the_ids_no_token_has(tmp_path: Path) -> None:
    from mlxk.generation.engine import load_engine
    from mlxk.generation.request import ResponseFormat

    repo = install(tmp_path, "test/padded", padded_model(extra=96))
    engine = load_engine(str(repo.snapshot))
    assert engine.vocab_size is not None and engine.vocab_size >= len(engine.vocabulary().pieces) + 96
    request = ask(tokens=12, response_format=ResponseFormat("json_object"))
    seq = engine.sequence(request)
    chunks = list(engine.generate(request))
    assert seq.constraint is not None
    text = "".join(c.content for c in chunks)
    assert isinstance(json.loads(text), dict)  # an answer that validates: no id was refused
    assert chunks[-1].finish_reason == "stop"


# --- the batch runner ------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2], ids=["alone", "batched"])
def test_closing_a_runner_ends_its_running_requests_as_cancelled(engines: dict[str, Any], count: int) -> None:
    from mlxk.generation.batch import BatchRunner
    from mlxk.generation.chunks import Chunk

    runner = BatchRunner(engines["plain"])
    received: list[list[Chunk | BaseException]] = [[] for _ in range(count)]
    for sink in received:
        runner.add(ask(tokens=50), sink.append, threading.Event())
    for _ in range(3):
        runner.step()
    runner.close()
    for sink in received:
        last = sink[-1]
        assert isinstance(last, Chunk) and last.finish_reason == "cancelled" and last.usage is not None
    assert not runner.active


def test_a_prompt_an_untrimmable_cache_computed_whole_is_prefilled_again(tmp_path: Path) -> None:
    """qwen3_next's linear-attention layers keep a state that cannot be cut back by a token: a
    prompt that is exactly what an earlier (batched) request computed is prefilled in full, and
    goes on as the earlier answer went on."""
    from mlxk.generation.batch import BatchRunner
    from mlxk.generation.engine import load_engine

    repo = install(tmp_path, "test/next", build_tiny_chat_model(pipeline_only=True))
    runner = BatchRunner(load_engine(str(repo.snapshot)))

    def run(*prompts: str) -> list[tuple[str, int]]:
        received: list[list[Any]] = [[] for _ in prompts]
        for prompt, sink in zip(prompts, received, strict=True):
            runner.add(GenerationRequest(prompt=prompt, max_tokens=6), sink.append, threading.Event())
        while any(not sink or sink[-1].finish_reason is None for sink in received):
            runner.step()
        return [("".join(c.content for c in sink), sink[-1].usage.cached_tokens) for sink in received]

    (first, _), _ = run("Hello there", "Good day")
    for cut in (0, 1, 2):
        (again, cached), _ = run("Hello there" + first[: len(first) - cut], "Other")
        assert cached == 0
        assert again.startswith(first[len(first) - cut :])


def test_logprobs_without_alternatives_report_each_token_alone(engines: dict[str, Any]) -> None:
    plain = engines["plain"]
    chunks = list(plain.generate(ask(tokens=4, logprobs=0)))
    reported = [entry for chunk in chunks for entry in chunk.logprobs]
    assert "".join(entry.token for entry in reported) == "".join(c.content for c in chunks)
    assert len(reported) == 4 and all(entry.logprob <= 0 and entry.top == () for entry in reported)


def test_a_schema_of_true_takes_any_json_value(engines: dict[str, Any]) -> None:
    from mlxk.generation.request import ResponseFormat

    plain = engines["plain"]
    request = ask(tokens=40, response_format=ResponseFormat("json_schema", True))
    assert plain.sequence(request).constraint is not None
    chunks = list(plain.generate(request))
    text = "".join(c.content for c in chunks)
    # the tiny model writes a number (41E5555...) until its budget runs out: a JSON value, cut
    assert chunks[-1].finish_reason == "length"
    assert text[:1] in '{["-0123456789tfn' and isinstance(json.loads(text[:2]), int)


def test_grammar_text_quotes_what_surrounds_an_added_token() -> None:
    from mlxk.generation.grammar.lark import Lark

    lark = Lark({"<tool_call>": 7, "[ARGS]": 9})
    assert lark.lit("get[ARGS]x") == '"get" <[9]> "x"'
    assert lark.lit("<tool_call>") == "<[7]>"
    assert Lark({}).lit("[ARGS]") == '"[ARGS]"'  # no such token: plain text


BLOCK_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for block in message['content'] %}"
    "{% if block['type'] == 'thinking' %}{{ '[' + block['thinking'] + ']' }}{% else %}{{ block['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_past_reasoning_goes_into_a_thinking_block_before_the_text(tmp_path: Path) -> None:
    from mlxk.generation.engine import load_engine

    files = build_tiny_chat_model()
    config = {**json.loads(files["tokenizer_config.json"]), "chat_template": BLOCK_TEMPLATE}
    repo = install(tmp_path, "test/blocks", {**files, "tokenizer_config.json": json.dumps(config).encode()})
    engine = load_engine(str(repo.snapshot))
    request = GenerationRequest(
        messages=(
            Message("user", "Hi"),
            Message("assistant", "Yes", reasoning="Mull"),
            Message("user", "So"),
        ),
        max_tokens=4,
    )
    assert "<|im_start|>assistant\n[Mull]Yes<|im_end|>" in engine.prompt(request).tail
    silent = GenerationRequest(
        messages=(Message("user", "Hi"), Message("assistant", "", reasoning="Mull"), Message("user", "So")),
        max_tokens=4,
    )
    assert "<|im_start|>assistant\n[Mull]<|im_end|>" in engine.prompt(silent).tail


def test_compiled_grammars_are_kept_for_the_most_recent_schemas_only(engines: dict[str, Any]) -> None:
    from mlxk.generation.grammar.compiler import GRAMMAR_CACHE_ENTRIES, Grammars

    plain = engines["plain"]
    grammars = Grammars(plain.tokenizer, plain.vocabulary(), plain.end_ids, plain.vocab_size)
    texts = [f'start: %json {{"const": {n}}}' for n in range(GRAMMAR_CACHE_ENTRIES + 1)]
    for text in texts:
        assert grammars.matcher(text, "response_format").is_accepting() is False
    kept = list(grammars._compiled)
    assert kept == texts[1:]  # the oldest went when one more than the cache holds came
    first = grammars.matcher(texts[0], "response_format")  # compiled again, and still right
    assert first.consume_tokens([plain.vocabulary().pieces.index(b"0")])
    assert first.is_accepting()
