"""Generation edges: a chat template rendered by mlxk itself refusing a conversation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlxk.errors import ValidationError
from mlxk.generation.prompt import pastes_calls, render
from mlxk.generation.request import GenerationRequest, Message, Sampling, ToolCall
from tests.familyfix import tokenizer_files

# DeepSeek R1's template pastes call arguments into its text (so mlxk renders it itself); this copy
# also refuses a system message, as several real templates do with raise_exception
NO_SYSTEM = "{%- if messages[0]['role'] == 'system' -%}{{ raise_exception('System role not supported') }}{%- endif -%}"


@pytest.fixture(scope="module")
def r1_without_system(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mlx_lm.tokenizer_utils import load

    folder = tmp_path_factory.mktemp("r1")
    for file, data in tokenizer_files("deepseek_v3").items():
        (folder / file).write_bytes(data)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = NO_SYSTEM + config["chat_template"]
    config_path.write_text(json.dumps(config))
    return load(Path(folder))


def test_a_template_mlxk_renders_itself_refuses_with_its_own_message(r1_without_system: Any) -> None:
    assert pastes_calls(r1_without_system.chat_template)  # the template mlxk renders, not transformers
    call = ToolCall("call0", "get_weather", '{"city": "Paris"}')
    turns = (
        Message("user", "Weather in Paris?"),
        Message("assistant", "", (call,)),
        Message("tool", "Sunny", tool_call_id="call0"),
    )
    text = r1_without_system.decode(
        render(r1_without_system, GenerationRequest(messages=turns), chat_template=True).tokens
    )
    assert '{"city": "Paris"}' in text and "Sunny" in text  # without a system message it renders
    with pytest.raises(ValidationError) as caught:
        render(r1_without_system, GenerationRequest(messages=(Message("system", "Be brief."), *turns)),
               chat_template=True)  # fmt: skip
    assert "the model's chat template refused the conversation" in str(caught.value)
    assert "System role not supported" in str(caught.value)


# --- a stop string that only the detokenizer's held-back text completes -------------------------


@pytest.fixture(scope="module")
def bpe_engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mlxk.generation.engine import load_engine
    from tests.modelfix import build_tiny_chat_model, install

    hub = tmp_path_factory.mktemp("bpe")
    return load_engine(str(install(hub, "test/bpe", build_tiny_chat_model(bpe=True)).snapshot))


def test_a_stop_string_completed_by_the_last_held_back_space_ends_with_stop(
    bpe_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte-level BPE detokenizer holds a lone space back until the next token; when the budget
    ends on it, the space comes out only at the end, and a stop string it completes still stops the
    answer there: the stop string is left out and the finish is ``stop``, not ``length``."""
    from mlxk.generation.engine import Engine
    from tests import scripted

    answer = "Paris is sunny. "
    tokens = bpe_engine.tokenizer.encode(answer, add_special_tokens=False)
    assert bpe_engine.tokenizer.decode(tokens[-1:]) == " "  # the budget's last token is a lone space
    monkeypatch.setattr(Engine, "sequence", Engine.sequence)  # undone after the test
    scripted.install({"weather": answer})

    def run(stops: tuple[str, ...]) -> tuple[str, str | None]:
        request = GenerationRequest(
            messages=(Message("user", "The weather?"),), max_tokens=len(tokens), stops=stops,
            sampling=Sampling(temperature=0.0),
        )  # fmt: skip
        chunks = list(bpe_engine.generate(request))
        return "".join(c.content for c in chunks), chunks[-1].finish_reason

    assert run(()) == (answer, "length")
    assert run(("sunny. ",)) == ("Paris is ", "stop")


# --- a constrained request joining a batch whose rows are free ------------------------------------


@pytest.fixture(scope="module")
def structured_engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mlxk.generation.engine import load_engine
    from tests.modelfix import build_tiny_chat_model, install

    hub = tmp_path_factory.mktemp("structured2")
    return load_engine(
        str(install(hub, "test/s", build_tiny_chat_model(max_position_embeddings=4096)).snapshot)
    )


def test_a_free_answer_keeps_its_text_when_a_constrained_request_joins_it(structured_engine: Any) -> None:
    """A free request runs alone; a request held to a schema joins it, so the batch steps with the
    free one's row alone while the grammar is active in the runner. The free answer is the one it
    gets alone, and the constrained one is the one it gets alone (and validates when it ends)."""
    import threading

    from mlxk.generation.batch import BatchRunner
    from tests.test_structured import SCHEMAS, Collector, ask, check_answer, schema_format

    free, held = (
        ask("Tell me about tea", tokens=60),
        ask("Give me weather", schema_format("weather"), tokens=300),
    )
    alone = ["".join(c.content for c in structured_engine.generate(r)) for r in (free, held)]
    runner = BatchRunner(structured_engine)
    got = [Collector(), Collector()]
    runner.add(free, got[0], threading.Event())
    for _ in range(5):  # the free one alone, for a few tokens
        runner.step()
    assert not got[0].done
    runner.add(held, got[1], threading.Event())
    steps = 0
    while not all(c.done for c in got):
        runner.step()
        steps += 1
        assert steps < 5_000
    assert [c.text for c in got] == alone
    last = got[1].chunks[-1]
    assert last.usage is not None
    check_answer(got[1].text, last.finish_reason, last.usage.completion_tokens, SCHEMAS["weather"], 300)


# --- mlx-lm's own (Python) chat template ----------------------------------------------------------


@pytest.fixture(scope="module")
def deepseek_v32(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A DeepSeek tokenizer whose tokenizer_config.json names mlx-lm's own template
    (``chat_template_type: deepseek_v32``, a Python function) instead of a Jinja one."""
    from mlx_lm.tokenizer_utils import load

    folder = tmp_path_factory.mktemp("v32")
    for file, data in tokenizer_files("deepseek_v31").items():
        (folder / file).write_bytes(data)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    del config["chat_template"]
    config["chat_template_type"] = "deepseek_v32"
    config_path.write_text(json.dumps(config))
    return load(Path(folder))


def test_mlx_lms_own_deepseek_v32_template_takes_past_reasoning_in_its_field(deepseek_v32: Any) -> None:
    """DeepSeek V3.2's template reads an assistant message's ``reasoning_content`` (after the last
    user message; earlier turns it drops by design), as its Jinja version does: the reasoning sent
    back reaches the prompt instead of being refused for want of a place."""
    assert deepseek_v32.has_chat_template and getattr(deepseek_v32, "chat_template", None) is None
    thought = "The user wants Paris; call get_weather."
    call = ToolCall("call0", "get_weather", '{"city": "Paris"}')
    turns = (
        Message("user", "Weather in Paris?"),
        Message("assistant", "", (call,), reasoning=thought),
        Message("tool", "Sunny", tool_call_id="call0"),
    )
    text = deepseek_v32.decode(
        render(deepseek_v32, GenerationRequest(messages=turns), chat_template=True).tokens
    )
    assert text.startswith("<｜begin▁of▁sentence｜><｜User｜>Weather in Paris?<｜Assistant｜>")
    assert f"{thought}</think>" in text and "get_weather" in text and "Sunny" in text


def test_mlx_lms_own_deepseek_v32_template_renders_calls_sent_back(deepseek_v32: Any) -> None:
    """That template parses a call's arguments as JSON text (OpenAI's shape): a conversation with
    a tool call in it renders, the arguments as DeepSeek's DSML parameters."""
    call = ToolCall("call0", "get_weather", '{"city": "Paris"}')
    turns = (
        Message("user", "Weather in Paris?"),
        Message("assistant", "", (call,)),
        Message("tool", "Sunny", tool_call_id="call0"),
    )
    text = deepseek_v32.decode(
        render(deepseek_v32, GenerationRequest(messages=turns), chat_template=True).tokens
    )
    # (this tiny tokenizer has no "｜" of DSML's own: it decodes as <unk>)
    assert 'invoke name="get_weather">' in text and 'parameter name="city" string="true">Paris<' in text
    assert "Sunny" in text
