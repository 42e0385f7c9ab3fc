"""The generation engine on real tiny models: text equals mlx-lm's, stops, cancellation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlxk.generation.chunks import Chunk
from mlxk.generation.request import GenerationRequest, Message, Sampling
from mlxk.generation.stops import StopMatcher
from tests.modelfix import install

GREEDY = Sampling(temperature=0.0)


def test_stop_matcher_holds_back_a_partial_stop_and_never_emits_it() -> None:
    matcher = StopMatcher(["END!"])
    assert matcher.feed("abc E") == "abc "
    assert matcher.feed("N") == ""
    assert matcher.feed("D") == ""
    assert matcher.feed("!tail") == "" and matcher.stopped


def test_stop_matcher_releases_what_turned_out_not_to_be_a_stop() -> None:
    matcher = StopMatcher(["END!"])
    assert matcher.feed("xEN") == "x"
    assert matcher.feed("x") == "ENx"
    assert matcher.feed("EN") == ""
    assert matcher.flush() == "EN" and not matcher.stopped


def test_stop_matcher_earliest_stop_wins() -> None:
    matcher = StopMatcher(["bb", "a"])
    assert matcher.feed("xxbbya") == "xx" and matcher.stopped


@pytest.fixture(scope="module")
def engines(
    tiny_models: dict[str, dict[str, bytes]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    from mlxk.generation.engine import load_engine

    hub = tmp_path_factory.mktemp("engines")
    loaded = {}
    for key in ("chat", "stop", "raw", "bpe", "q4"):
        repo = install(hub, f"test/{key}", tiny_models[key])
        loaded[key] = (load_engine(str(repo.snapshot)), str(repo.snapshot))
    yield loaded


def run(engine: Any, request: GenerationRequest, cancel: threading.Event | None = None) -> tuple[str, Chunk]:
    chunks = list(engine.generate(request, cancel))
    return "".join(c.content for c in chunks), chunks[-1]


@pytest.mark.parametrize("variant", ["chat", "bpe", "q4"])  # char-level and BPE detokenizers, 4-bit weights
def test_greedy_text_equals_mlx_lm(engines: dict[str, Any], variant: str) -> None:
    from mlx_lm.generate import stream_generate

    engine, _path = engines[variant]
    request = GenerationRequest(messages=(Message("user", "Hello"),), max_tokens=40, sampling=GREEDY)
    ours, last = run(engine, request)
    prompt = engine.prompt(request).tokens
    theirs = "".join(r.text for r in stream_generate(engine.model, engine.tokenizer, prompt, max_tokens=40))
    assert ours == theirs and len(ours) > 0
    assert last.finish_reason == "length" and last.usage is not None and last.usage.completion_tokens == 40


def test_the_stop_model_stops_at_once(engines: dict[str, Any]) -> None:
    engine, _path = engines["stop"]
    text, last = run(engine, GenerationRequest(prompt="Hello", max_tokens=40, sampling=GREEDY))
    assert (text, last.finish_reason) == ("", "stop")
    assert last.usage is not None and last.usage.completion_tokens == 0


def test_a_stop_string_spanning_tokens_ends_the_answer_before_it(engines: dict[str, Any]) -> None:
    engine, _path = engines["chat"]
    request = GenerationRequest(messages=(Message("user", "Hello"),), max_tokens=60, sampling=GREEDY)
    full, _ = run(engine, request)
    stripped = full.lstrip()
    offset = len(full) - len(stripped)
    start = offset + len(stripped) // 3
    stop = full[start : start + 3]  # three characters: three tokens of this tokenizer
    assert len(stop) == 3 and stop.strip()
    cut = full.find(stop)
    text, last = run(
        engine, GenerationRequest(messages=request.messages, max_tokens=60, sampling=GREEDY, stops=(stop,))
    )
    assert text == full[:cut] and stop not in text
    assert last.finish_reason == "stop"


def test_cancel_ends_the_stream(engines: dict[str, Any]) -> None:
    engine, _path = engines["chat"]
    cancel = threading.Event()
    chunks = engine.generate(GenerationRequest(prompt="Hello", max_tokens=100_000, sampling=GREEDY), cancel)
    for received, chunk in enumerate(chunks, start=1):
        if received == 5:
            cancel.set()
        if chunk.finish_reason is not None:
            assert chunk.finish_reason == "cancelled"
            assert chunk.usage is not None and chunk.usage.completion_tokens < 20
            break
    else:
        pytest.fail("no final chunk")


def test_a_prompt_longer_than_the_context_is_refused(engines: dict[str, Any]) -> None:
    from mlxk.errors import ValidationError

    engine, _path = engines["raw"]
    with pytest.raises(ValidationError, match="context"):
        run(engine, GenerationRequest(prompt="x" * 600, max_tokens=5, sampling=GREEDY))


def test_generation_never_runs_past_the_context(engines: dict[str, Any]) -> None:
    engine, _path = engines["raw"]
    _text, last = run(engine, GenerationRequest(prompt="x" * 500, max_tokens=1000, sampling=GREEDY))
    assert last.usage is not None and last.usage.prompt_tokens + last.usage.completion_tokens <= 512


def test_seeded_sampling_repeats(engines: dict[str, Any]) -> None:
    engine, _path = engines["chat"]
    request = GenerationRequest(prompt="Hi", max_tokens=30, sampling=Sampling(temperature=1.0, seed=7))
    assert run(engine, request)[0] == run(engine, request)[0]


def test_no_mlx_import_in_the_light_parts(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "import sys, mlxk.generation.engine, mlxk.generation.batch; print('mlx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_stop_matching_does_not_depend_on_how_text_is_split() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    alphabet = st.sampled_from(list("ab\n"))

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.text(alphabet, min_size=1, max_size=3), min_size=1, max_size=3),
        st.text(alphabet, max_size=12),
        st.lists(st.integers(0, 12), max_size=6),
    )
    def check(stops: list[str], text: str, cuts: list[int]) -> None:
        whole = StopMatcher(stops)
        expected = whole.feed(text) + ("" if whole.stopped else whole.flush())
        pieces, last = [], 0
        for cut in sorted(set(min(c, len(text)) for c in cuts)):
            pieces.append(text[last:cut])
            last = cut
        pieces.append(text[last:])
        split = StopMatcher(stops)
        out = ""
        for piece in pieces:
            out += split.feed(piece)
            if split.stopped:
                break
        out += "" if split.stopped else split.flush()
        assert (out, split.stopped) == (expected, whole.stopped)

    check()


def test_a_too_long_prompt_is_refused_before_any_chunk(engines: dict[str, Any]) -> None:
    from mlxk.errors import ValidationError

    engine, _path = engines["raw"]
    with pytest.raises(ValidationError):
        engine.generate(
            GenerationRequest(prompt="x" * 600, max_tokens=5, sampling=GREEDY)
        )  # no next() needed


def test_top_k_beyond_the_vocabulary_means_no_cut(engines: dict[str, Any]) -> None:
    engine, _path = engines["chat"]
    request = GenerationRequest(
        prompt="Hi", max_tokens=5, sampling=Sampling(temperature=1.0, top_k=10_000, seed=1)
    )
    assert run(engine, request)[1].finish_reason in ("length", "stop")
