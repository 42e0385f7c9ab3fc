"""The tiny models of tests.modelfix are what other tests rely on: checked with mlx_lm itself."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests import modelfix
from tests.modelfix import DEFAULT_GREEDY, DEFAULT_PROMPT, EOS_ID, VARIANTS

HELLO = [{"role": "user", "content": DEFAULT_PROMPT}]


def load(hub: Path, files: dict[str, bytes], name: str = "test-org/tiny-chat") -> tuple[Any, Any]:
    """Installs the files in the hub folder and loads the snapshot with mlx_lm."""
    import mlx_lm

    repo = modelfix.install(hub, name, files)
    loaded: tuple[Any, ...] = mlx_lm.load(str(repo.snapshot))
    return loaded[0], loaded[1]


def greedy(model: Any, tokenizer: Any, prompt: list[int] | str, max_tokens: int) -> list[Any]:
    from mlx_lm import stream_generate

    return list(stream_generate(model, tokenizer, prompt, max_tokens=max_tokens))


def chat_prompt(tokenizer: Any) -> list[int]:
    ids = tokenizer.apply_chat_template(HELLO, add_generation_prompt=True)
    assert isinstance(ids, list)
    return ids


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_builds_are_identical_and_small(variant: str, tiny_models: dict[str, dict[str, bytes]]) -> None:
    first = modelfix.build_tiny_chat_model(**VARIANTS[variant])
    assert modelfix.build_tiny_chat_model(**VARIANTS[variant]) == first == tiny_models[variant]
    assert sum(len(data) for data in first.values()) < 500_000


def test_seed_changes_the_weights_only(tiny_models: dict[str, dict[str, bytes]]) -> None:
    other = modelfix.build_tiny_chat_model(seed=1)
    changed = {path for path in other if other[path] != tiny_models["chat"][path]}
    assert changed == {"model.safetensors"}


def test_snapshot_files(tiny_models: dict[str, dict[str, bytes]]) -> None:
    expected = {
        "README.md",
        "config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    for variant, files in tiny_models.items():
        assert set(files) == expected, variant
        assert files["README.md"].startswith(b"---\nlibrary_name: mlx\ntags:\n- mlx\n")
        config = json.loads(files["config.json"])
        vocab = modelfix.vocab_of(files)
        assert config["model_type"] == "llama"
        assert config["vocab_size"] == len(vocab) == max(vocab.values()) + 1
        assert config["tie_word_embeddings"] is True
        assert config["eos_token_id"] == EOS_ID == vocab["<|im_end|>"]
        assert config["max_position_embeddings"] == 512
        assert ("quantization" in config) == (variant == "q4")
        tokenizer_config = json.loads(files["tokenizer_config.json"])
        assert tokenizer_config["eos_token"] == "<|im_end|>"
        assert tokenizer_config["bos_token"] is None
        assert ("chat_template" in tokenizer_config) == (variant != "raw")
    assert json.loads(tiny_models["q4"]["config.json"])["quantization"] == {
        "group_size": 32,
        "bits": 4,
        "mode": "affine",
    }
    # the stop-at-once model differs from the chat model in its weights only
    stop, chat = tiny_models["stop"], tiny_models["chat"]
    assert {path for path in chat if chat[path] != stop[path]} == {"model.safetensors"}


def test_char_vocabulary(tiny_models: dict[str, dict[str, bytes]]) -> None:
    vocab = modelfix.vocab_of(tiny_models["chat"])
    assert [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])][:6] == [
        "<|im_end|>",
        "<|im_start|>",
        "<|endoftext|>",
        "<unk>",
        "\n",
        " ",
    ]
    assert all(vocab[chr(c)] == c - 27 for c in range(32, 127))
    assert len(vocab) == 100


def test_context_length_is_configurable() -> None:
    files = modelfix.build_tiny_chat_model(max_position_embeddings=64)
    assert json.loads(files["config.json"])["max_position_embeddings"] == 64
    assert json.loads(files["tokenizer_config.json"])["model_max_length"] == 64


def test_install_writes_the_real_layout(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> None:
    files = tiny_models["chat"]
    repo = modelfix.install(hub, "test-org/tiny-chat", files)
    assert (repo.repo_dir / "refs" / "main").read_text() == repo.commit
    for path, data in files.items():
        link = repo.snapshot / path
        assert link.is_symlink() and link.read_bytes() == data
    weights = repo.blob_of("model.safetensors")
    assert weights.name == hashlib.sha256(files["model.safetensors"]).hexdigest()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_mlx_lm_loads_each_variant(variant: str, hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> None:
    from mlx.nn.layers.quantized import QuantizedLinear

    model, tokenizer = load(hub, tiny_models[variant])
    assert tokenizer.eos_token_id == EOS_ID
    assert tokenizer.eos_token_ids == {EOS_ID}
    assert tokenizer.bos_token is None
    assert tokenizer.has_chat_template == (variant != "raw")
    quantized = [m for _, m in model.named_modules() if isinstance(m, QuantizedLinear)]
    assert bool(quantized) == (variant == "q4")


def test_char_tokenizer_round_trips(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> None:
    _, tokenizer = load(hub, tiny_models["chat"])
    for text in ["Hi there", "  two  spaces, a ,b\n\nend ", "{}[]\\\"'~`"]:
        ids = tokenizer.encode(text)
        assert ids == [4 if c == "\n" else ord(c) - 27 for c in text]
        assert tokenizer.decode(ids) == text
    assert tokenizer.encode("<|im_start|>x<|im_end|>") == [1, ord("x") - 27, 0]
    assert tokenizer.encode("\u00e9") == [3]  # <unk>


def test_bpe_tokenizer_round_trips(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> None:
    from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer

    _, tokenizer = load(hub, tiny_models["bpe"])
    assert isinstance(tokenizer.detokenizer, BPEStreamingDetokenizer)
    for text in ["Hello! How are you today?", "Caf\u00e9 \u00fcber \u65e5\u672c\u8a9e \U0001f600", " a  b\n"]:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
    assert len(tokenizer.encode("The capital of France is Paris.")) < len("The capital of France is Paris.")
    assert tokenizer.encode("<|im_end|>") == [EOS_ID]


@pytest.mark.parametrize("variant", ["chat", "bpe"])
def test_chat_template_renders_chatml(
    variant: str, hub: Path, tiny_models: dict[str, dict[str, bytes]]
) -> None:
    _, tokenizer = load(hub, tiny_models[variant])
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    )
    without = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    assert text == without + "<|im_start|>assistant\n"
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert ids == tokenizer.encode(text)
    assert ids.count(EOS_ID) == 4 and ids.count(1) == 5


def test_raw_model_has_no_chat_template(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> None:
    model, tokenizer = load(hub, tiny_models["raw"])
    assert tokenizer.chat_template is None
    responses = greedy(model, tokenizer, DEFAULT_PROMPT, 20)
    assert responses[-1].finish_reason == "length"


def test_chat_model_is_deterministic_and_runs_to_length(
    hub: Path, tiny_models: dict[str, dict[str, bytes]]
) -> None:
    import mlx_lm

    model, tokenizer = load(hub, tiny_models["chat"])
    prompt = chat_prompt(tokenizer)
    first = greedy(model, tokenizer, prompt, 20)
    second = greedy(model, tokenizer, prompt, 20)
    text = "".join(r.text for r in first)
    assert text == "".join(r.text for r in second)
    assert [r.token for r in first] == [r.token for r in second]
    assert len(first) == 20
    assert [r.finish_reason for r in first] == [None] * 19 + ["length"]
    assert first[-1].generation_tokens == 20
    assert EOS_ID not in [r.token for r in first]
    assert text == tokenizer.decode([r.token for r in first]) and len(text) == 20
    assert text == DEFAULT_GREEDY
    assert mlx_lm.generate(model, tokenizer, prompt, max_tokens=20) == text
    # longer runs too: the model never emits eos (nor any special token)
    long = greedy(model, tokenizer, prompt, 200)
    assert long[-1].finish_reason == "length" and long[-1].generation_tokens == 200
    assert min(r.token for r in long) > 3
    assert "".join(r.text for r in long).startswith(text)


def test_stop_model_stops_at_once(hub: Path, tiny_models: dict[str, dict[str, bytes]]) -> None:
    model, tokenizer = load(hub, tiny_models["stop"])
    responses = greedy(model, tokenizer, chat_prompt(tokenizer), 20)
    assert len(responses) == 1
    (only,) = responses
    assert only.finish_reason == "stop"
    assert only.text == ""
    assert only.token == EOS_ID
    assert only.generation_tokens == 1  # stream_generate counts the eos token


@pytest.mark.parametrize("variant", ["q4", "bpe"])
def test_other_variants_generate_text(
    variant: str, hub: Path, tiny_models: dict[str, dict[str, bytes]]
) -> None:
    model, tokenizer = load(hub, tiny_models[variant])
    prompt = chat_prompt(tokenizer)
    responses = greedy(model, tokenizer, prompt, 64)
    assert responses[-1].finish_reason == "length"
    assert len(responses) == 64
    text = "".join(r.text for r in responses)
    assert text and "\ufffd" not in text
    assert text == tokenizer.decode([r.token for r in responses])
    assert [r.token for r in greedy(model, tokenizer, prompt, 64)] == [r.token for r in responses]
