"""The MLX sentence encoder (mlxk.embedding.bert) on the real all-MiniLM-L6-v2 (tests.minilm) and on
tiny random encoders of each supported family.

The vectors are checked against a reference written here a second way: numpy in float64, one
sentence at a time (no padding, no masks), weights read by the ``safetensors`` package under their
transformers names, tokens from ``tokenizers`` directly. Agreement to cosine 0.999+ means the
MLX forward pass, its batching and its masks compute the same function.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlxk.embedding.bert import SUPPORTED_MODEL_TYPES, Encoder, is_encoder_config, load_encoder
from mlxk.errors import ModelIncompatible
from tests.minilm import REPO, install_minilm

FOOD = "A man is eating food."
BREAD = "A man is eating a piece of bread."
HORSE = "A man is riding a horse."
SENTENCES = [
    FOOD,
    "The quick brown fox jumps over the lazy dog, again and again, until the dog finally wakes up.",
    "Embeddings map text to vectors.",
    "Ça va? Unicode, numbers 12345 and punctuation!!!",
    "",
]
Array = np.ndarray[Any, Any]


# ---- the numpy reference -------------------------------------------------------------------


def _erf_gelu(x: Array) -> Array:
    erf = np.vectorize(math.erf)
    return np.asarray(0.5 * x * (1.0 + erf(x / math.sqrt(2.0))))


def _layer_norm(x: Array, gamma: Array, beta: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return np.asarray((x - mean) / np.sqrt(var + eps) * gamma + beta)


def reference_hidden(
    p: Mapping[str, Array],
    config: Mapping[str, Any],
    ids: list[int],
    offset: int,
    activation: Callable[[Array], Array] = _erf_gelu,
) -> Array:
    """BERT's last hidden states for one unpadded sequence; ``p`` holds the transformers names
    (without prefix) in float64; ``activation`` is the feed-forward one (BERT's exact gelu)."""
    heads = config["num_attention_heads"]
    eps = config.get("layer_norm_eps", 1e-12)
    x = p["embeddings.word_embeddings.weight"][ids]
    x = x + p["embeddings.position_embeddings.weight"][offset : offset + len(ids)]
    if "embeddings.token_type_embeddings.weight" in p:
        x = x + p["embeddings.token_type_embeddings.weight"][np.zeros(len(ids), dtype=int)]
    x = _layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)
    size = x.shape[1] // heads
    for n in range(config["num_hidden_layers"]):

        def dense(v: Array, name: str, n: int = n) -> Array:
            return np.asarray(
                v @ p[f"encoder.layer.{n}.{name}.weight"].T + p[f"encoder.layer.{n}.{name}.bias"]
            )

        q, k, v = (dense(x, f"attention.self.{name}") for name in ("query", "key", "value"))
        context = np.zeros_like(x)
        for h in range(heads):
            cols = slice(h * size, (h + 1) * size)
            scores = q[:, cols] @ k[:, cols].T / math.sqrt(size)
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            context[:, cols] = (scores / scores.sum(axis=1, keepdims=True)) @ v[:, cols]
        ln = f"encoder.layer.{n}.attention.output.LayerNorm"
        x = _layer_norm(x + dense(context, "attention.output.dense"), p[f"{ln}.weight"], p[f"{ln}.bias"], eps)
        inner = activation(dense(x, "intermediate.dense"))
        ln = f"encoder.layer.{n}.output.LayerNorm"
        x = _layer_norm(x + dense(inner, "output.dense"), p[f"{ln}.weight"], p[f"{ln}.bias"], eps)
    return x


def reference_vector(hidden: Array, pooling: str = "mean") -> Array:
    vector = hidden[0] if pooling == "cls" else hidden.mean(axis=0)
    return np.asarray(vector / np.linalg.norm(vector))


def read_float64(path: Path) -> dict[str, Array]:
    from safetensors.numpy import load_file

    return {k: v.astype(np.float64) for k, v in load_file(str(path)).items() if v.dtype.kind == "f"}


def reference_tokens(folder: Path, texts: list[str], max_length: int) -> list[list[int]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return [tokenizer.encode(t).ids for t in texts]


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---- all-MiniLM-L6-v2 ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_snapshot(minilm_files: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    hub = tmp_path_factory.mktemp("minilm") / "hub"
    hub.mkdir()
    return install_minilm(hub, minilm_files).snapshot


@pytest.fixture(scope="module")
def encoder(minilm_snapshot: Path) -> Encoder:
    return load_encoder(str(minilm_snapshot))


def test_minilm_loads_as_a_bert_with_mean_pooling(encoder: Encoder, minilm_snapshot: Path) -> None:
    config = json.loads((minilm_snapshot / "config.json").read_text())
    assert is_encoder_config(config)
    assert encoder.model_type == "bert" and encoder.pooling == "mean"
    assert encoder.dimensions == 384
    # 512 positions, but sentence_bert_config.json's max_seq_length (256) is what it was used with
    assert encoder.max_length == 256


def test_vectors_are_unit_length_only_when_normalized(encoder: Encoder) -> None:
    result = encoder.embed([FOOD, BREAD])
    assert result.dimensions == 384 and len(result.vectors) == 2
    assert all(len(v) == 384 for v in result.vectors)
    assert [np.linalg.norm(v) for v in result.vectors] == pytest.approx([1.0, 1.0], abs=1e-5)
    raw = encoder.embed([FOOD, BREAD], normalize=False)
    assert all(abs(np.linalg.norm(v) - 1.0) > 0.01 for v in raw.vectors)
    # normalizing afterwards gives the same direction
    assert cosine(raw.vectors[0], result.vectors[0]) > 0.99999


def test_similar_sentences_are_close_and_others_far(encoder: Encoder) -> None:
    food, bread, horse = encoder.embed([FOOD, BREAD, HORSE]).vectors
    close, far = cosine(food, bread), cosine(food, horse)
    assert close > far
    assert close == pytest.approx(0.755, abs=0.05)
    assert far == pytest.approx(0.25, abs=0.05)


def test_matches_an_independent_numpy_forward_pass(encoder: Encoder, minilm_snapshot: Path) -> None:
    config = json.loads((minilm_snapshot / "config.json").read_text())
    params = read_float64(minilm_snapshot / "model.safetensors")
    ids = reference_tokens(minilm_snapshot, SENTENCES, 256)
    result = encoder.embed(SENTENCES)
    assert result.token_counts == [len(row) for row in ids]
    assert result.token_counts[-1] == 2  # the empty text is [CLS] [SEP]
    for row, vector in zip(ids, result.vectors, strict=True):
        expected = reference_vector(reference_hidden(params, config, row, 0))
        assert cosine(vector, expected) >= 0.999
        # float32 against float64: the vectors agree to ~2e-7 here; tanh-GELU instead of erf would not
        assert np.max(np.abs(np.asarray(vector) - expected)) < 1e-5


def test_mlxk_list_labels_it_an_embedding_model(cli: Any, hub: Path, minilm_files: dict[str, bytes]) -> None:
    install_minilm(hub, minilm_files)
    models = cli("list", "--json").json()["data"]["models"]
    assert [m["name"] for m in models] == [REPO]
    assert models[0]["model_type"] == "embedding"
    assert models[0]["capabilities"] == ["embeddings"]
    assert models[0]["health"] == "healthy"


def test_batching_and_order_do_not_change_the_vectors(encoder: Encoder) -> None:
    texts = [
        "short",
        "a considerably longer sentence that needs many more tokens than the others in this batch",
        FOOD,
        "",
        "medium length text here",
    ]
    alone = [encoder.embed([t]).vectors[0] for t in texts]
    for batch_size in (2, 3, 32):
        together = encoder.embed(texts, batch_size=batch_size)
        for single, batched in zip(alone, together.vectors, strict=True):
            assert np.max(np.abs(np.asarray(single) - np.asarray(batched))) < 1e-4
    forward, backward = encoder.embed(texts), encoder.embed(texts[::-1])
    assert np.max(np.abs(np.asarray(backward.vectors[::-1]) - np.asarray(forward.vectors))) < 1e-5
    assert backward.token_counts[::-1] == forward.token_counts
    assert forward.token_counts[0] == 3 and forward.token_counts[3] == 2  # "short", ""


def test_long_text_is_truncated_and_reported(encoder: Encoder) -> None:
    long = "word " * 2000
    fits = "word " * (encoder.max_length - 2)  # exactly max_length with [CLS] and [SEP]
    result = encoder.embed([FOOD, long, fits])
    assert result.truncated == [False, True, False]
    assert result.token_counts[1:] == [encoder.max_length, encoder.max_length]
    assert np.linalg.norm(result.vectors[1]) == pytest.approx(1.0, abs=1e-5)
    # what was embedded is the text cut to max_length: the same as the first 254 words alone
    assert cosine(result.vectors[1], result.vectors[2]) > 0.9999


def test_bad_input(encoder: Encoder) -> None:
    with pytest.raises(ValueError):
        encoder.embed([])
    with pytest.raises(TypeError):
        encoder.embed(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        encoder.embed(FOOD)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encoder.embed([FOOD], batch_size=0)
    empty = encoder.embed([""])
    assert empty.token_counts == [2] and empty.truncated == [False]
    assert np.linalg.norm(empty.vectors[0]) == pytest.approx(1.0, abs=1e-5)


# ---- tiny random encoders of every family ----------------------------------------------------

HIDDEN, HEADS, LAYERS, FFN, POSITIONS = 32, 4, 2, 64, 40
WORDS = ["hello", "world", "the", "cat", "sat", "on", "mat", "a", "dog", "ran"]


def _tokenizer_json(specials: Mapping[str, str]) -> str:
    """A whitespace WordLevel tokenizer: the special tokens (by role: pad, unk, start, end; in
    vocabulary order) then ``WORDS``; every text becomes start + words + end."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate([*specials.values(), *WORDS])}
    start, end, pad = specials["start"], specials["end"], specials["pad"]
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials["unk"]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {end}", special_tokens=[(start, vocab[start]), (end, vocab[end])]
    )
    tokenizer.enable_padding(pad_id=vocab[pad], pad_token=pad, length=16)  # as some snapshots ship
    return str(tokenizer.to_str())


def _random_bert(seed: int, type_vocab: int) -> dict[str, Array]:
    """Random float32 weights under BERT's names, scaled so the layers neither vanish nor blow up."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float = 0.2) -> Array:
        return rng.normal(0.0, scale, size=shape).astype(np.float32)

    p = {
        "embeddings.word_embeddings.weight": normal(4 + len(WORDS), HIDDEN, scale=1.0),
        "embeddings.position_embeddings.weight": normal(POSITIONS, HIDDEN, scale=1.0),
        "embeddings.LayerNorm.weight": 1 + normal(HIDDEN, scale=0.1),
        "embeddings.LayerNorm.bias": normal(HIDDEN, scale=0.1),
    }
    if type_vocab:
        p["embeddings.token_type_embeddings.weight"] = normal(type_vocab, HIDDEN, scale=1.0)
    for n in range(LAYERS):
        base = f"encoder.layer.{n}."
        for name, out, inp in (
            ("attention.self.query", HIDDEN, HIDDEN),
            ("attention.self.key", HIDDEN, HIDDEN),
            ("attention.self.value", HIDDEN, HIDDEN),
            ("attention.output.dense", HIDDEN, HIDDEN),
            ("intermediate.dense", FFN, HIDDEN),
            ("output.dense", HIDDEN, FFN),
        ):
            p[f"{base}{name}.weight"] = normal(out, inp)
            p[f"{base}{name}.bias"] = normal(out, scale=0.1)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            p[f"{base}{name}.weight"] = 1 + normal(HIDDEN, scale=0.1)
            p[f"{base}{name}.bias"] = normal(HIDDEN, scale=0.1)
    return p


_DISTILBERT_PARTS = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}


def _distilbert_name(name: str) -> str:
    if not name.startswith("encoder.layer."):
        return name
    n, rest = name[len("encoder.layer.") :].split(".", 1)
    part, suffix = rest.rsplit(".", 1)
    return f"transformer.layer.{n}.{_DISTILBERT_PARTS[part]}.{suffix}"


BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "start": "[CLS]", "end": "[SEP]"}
ROBERTA_SPECIALS = {"start": "<s>", "pad": "<pad>", "end": "</s>", "unk": "<unk>"}  # pad id 1
# family -> (config.json, prefix of the saved names, special tokens, position offset)
FAMILY_CASES: dict[str, tuple[dict[str, Any], str, dict[str, str], int]] = {
    "bert": (
        {"model_type": "bert", "hidden_size": HIDDEN, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
         "intermediate_size": FFN, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "type_vocab_size": 2,
         "max_position_embeddings": POSITIONS, "pad_token_id": 0},
        "bert.",
        BERT_SPECIALS,
        0,
    ),
    "xlm-roberta": (
        {"model_type": "xlm-roberta", "hidden_size": HIDDEN, "num_attention_heads": HEADS,
         "num_hidden_layers": LAYERS, "intermediate_size": FFN, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
         "type_vocab_size": 1, "max_position_embeddings": POSITIONS, "pad_token_id": 1},
        "roberta.",
        ROBERTA_SPECIALS,  # positions start at pad_token_id + 1
        2,
    ),
    "distilbert": (
        {"model_type": "distilbert", "dim": HIDDEN, "n_heads": HEADS, "n_layers": LAYERS, "hidden_dim": FFN,
         "activation": "gelu", "max_position_embeddings": POSITIONS, "pad_token_id": 0},
        "distilbert.",
        BERT_SPECIALS,
        0,
    ),
}  # fmt: skip


def write_tiny(folder: Path, family: str, pooling: str | None = None, seed: int = 0) -> dict[str, Array]:
    """A tiny random ``family`` encoder in ``folder``; returns its weights under BERT's names."""
    from safetensors.numpy import save_file

    config, prefix, specials, _ = FAMILY_CASES[family]
    params = _random_bert(seed, config.get("type_vocab_size", 0) if family != "distilbert" else 0)
    rename = _distilbert_name if family == "distilbert" else (lambda name: name)
    saved = {prefix + rename(k): v for k, v in params.items()}
    saved[prefix + "pooler.dense.weight"] = np.zeros((HIDDEN, HIDDEN), np.float32)  # a head to ignore
    folder.mkdir(parents=True, exist_ok=True)
    save_file(saved, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text(_tokenizer_json(specials))
    if pooling is not None:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        (folder / "modules.json").write_text(json.dumps(modules))
        (folder / "1_Pooling").mkdir()
        flags = {"pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean"}
        (folder / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": HIDDEN, **flags})
        )
    return {k: v.astype(np.float64) for k, v in params.items()}


TINY_TEXTS = ["hello world", "the cat sat on the mat", "", "a dog ran " * 20, "unknown words here"]


@pytest.mark.parametrize("family", sorted(FAMILY_CASES))
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_tiny_encoders_of_each_family_match_the_reference(tmp_path: Path, family: str, pooling: str) -> None:
    params = write_tiny(tmp_path, family, pooling)
    config, _, _, offset = FAMILY_CASES[family]
    encoder = load_encoder(str(tmp_path))
    assert encoder.model_type == family and encoder.pooling == pooling and encoder.dimensions == HIDDEN
    assert encoder.max_length == POSITIONS - offset
    result = encoder.embed(TINY_TEXTS, batch_size=2)
    assert result.truncated == [False, False, False, True, False]
    assert result.token_counts == [4, 8, 2, encoder.max_length, 5]
    reference_config = {"num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "layer_norm_eps": 1e-12}
    reference_config["layer_norm_eps"] = config.get("layer_norm_eps", 1e-12)
    for row, vector in zip(
        reference_tokens(tmp_path, TINY_TEXTS, encoder.max_length), result.vectors, strict=True
    ):
        expected = reference_vector(reference_hidden(params, reference_config, row, offset), pooling)
        assert cosine(vector, expected) >= 0.9999


def test_supported_configs() -> None:
    assert {"bert", "roberta", "xlm-roberta", "distilbert"} == SUPPORTED_MODEL_TYPES
    for config, _, _, _ in FAMILY_CASES.values():
        assert is_encoder_config(config)
    bert = FAMILY_CASES["bert"][0]
    assert not is_encoder_config({**bert, "position_embedding_type": "relative_key"})
    assert not is_encoder_config({**bert, "model_type": "llama"})
    assert not is_encoder_config({**bert, "hidden_act": "mystery"})
    assert not is_encoder_config({**bert, "num_attention_heads": 5})  # 32 is not a multiple of 5
    assert not is_encoder_config({"model_type": "bert"})
    assert not is_encoder_config({})


def test_unsupported_snapshots_are_refused(tmp_path: Path) -> None:
    dense = tmp_path / "dense"
    write_tiny(dense, "bert", "mean")
    modules = json.loads((dense / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelIncompatible, match="Dense"):
        load_encoder(str(dense))

    missing = tmp_path / "missing"
    write_tiny(missing, "bert")
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(missing / "model.safetensors"))
    del tensors["bert.encoder.layer.1.output.dense.weight"]
    save_file(tensors, str(missing / "model.safetensors"))
    with pytest.raises(ModelIncompatible, match=r"encoder\.layer\.1\.output\.dense\.weight"):
        load_encoder(str(missing))


def test_importing_the_encoder_module_stays_light() -> None:
    code = (
        "import sys, mlxk.embedding.bert as e\n"
        "e.is_encoder_config({'model_type': 'bert'})\n"
        "print(sorted(m for m in ('mlx', 'mlx.core', 'tokenizers', 'numpy') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"
