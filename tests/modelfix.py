"""Tiny, real MLX chat models built offline for tests (no network, no Hub), about a second each.

``build_tiny_chat_model`` returns the files of one snapshot (path -> bytes) that ``mlx_lm.load``
accepts: a llama of hidden size 64 (2 layers, 4 heads, 2 kv heads, tied embeddings, f32 weights),
a ``tokenizers`` tokenizer and a hand-written ``tokenizer_config.json`` with a ChatML template.
``install`` puts them into a hub folder in the real HF layout (``benchmarks.cachegen``).

The vocabulary (character-level variant, 100 tokens)::

    0 <|im_end|>   (eos; the stop-at-once model's all-equal logits make greedy argmax pick it)
    1 <|im_start|>
    2 <|endoftext|>  (pad)
    3 <unk>
    4 "\\n", then 5.. 99 the printable ASCII characters " " (5) to "~" (99) in code-point order

so ``id == ord(c) - 27`` for printable characters. The BPE variant keeps ids 0-3 and adds a
ByteLevel BPE trained on a few sentences.

Two changes to the fresh initialisation (seeded with ``mx.random.seed(seed)``):

- the embedding rows of the special tokens (and, for BPE, of tokens that do not decode alone to
  printable text, like lone UTF-8 bytes) are zero, so their logits are exactly 0, below the best
  of the others: an untouched model never emits eos, <unk> or broken UTF-8, it runs to length;
- the weights of every Linear in the decoder layers are scaled by ``LAYER_SCALE`` (3): freshly
  initialised, the residual stream is dominated by the input embedding and greedy decoding just
  repeats one character ("\n\n\nCCCC..."); stronger layers give varied printable text.

``stop_at_once`` zeroes the final norm: all logits are 0 and greedy argmax picks id 0, eos.
``pipeline_only`` builds a tiny qwen3_next instead (same tokenizer, same two changes): a family
that mlx-lm can shard over ranks only as a pipeline; ``unshardable`` a tiny gemma: a family mlx-lm
can shard neither way (its model implements neither ``shard`` nor ``pipeline``).
Greedy decoding is deterministic. ``DEFAULT_SEED`` (124) was picked among 200 seeds for the widest
top-1/top-2 logit gap over the first 20 greedy tokens of the "chat" model for "Hello" under the
chat template (>= 0.11; >= 0.03 over 64 tokens), so ``DEFAULT_GREEDY`` (its first 20 characters)
should hold on any float32 backend; it does depend on mlx's initialisers, so tests that can
should compare mlxk's output with ``mlx_lm.generate`` on the same model instead.

mlx and mlx_lm are imported inside the functions: importing this module stays light.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import cachegen as gen
from benchmarks.cachegen import CachedRepo

EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = (EOS_TOKEN, "<|im_start|>", "<|endoftext|>", "<unk>")
EOS_ID = 0
CHARS = ("\n", *(chr(c) for c in range(32, 127)))
DEFAULT_SEED = 124
LAYER_SCALE = 3.0
DEFAULT_PROMPT = "Hello"
# The start of the greedy output of the default "chat" model for DEFAULT_PROMPT under the chat
# template (checked by tests/test_modelfix.py).
DEFAULT_GREEDY = "](((>](>]((v;2y1(^1V"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

BPE_CORPUS = (
    "Hello! How are you today? I am fine, thank you.",
    "The quick brown fox jumps over the lazy dog.",
    "MLX runs tiny language models on the CPU for tests.",
    "What is the capital of France? The capital of France is Paris.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9, and some symbols: {} [] () <> # @ $ % & * + - = / \\ | ~ ^",
    "Caf\u00e9, na\u00efve, \u00fcber, \u65e5\u672c\u8a9e, emoji \U0001f600.",
)

README = gen.readme("mlx", ("mlx",), pipeline="text-generation")


@dataclass(frozen=True)
class TinyModel:
    """One built variant: its snapshot files, eos id and vocabulary (token -> id)."""

    name: str
    files: dict[str, bytes] = field(repr=False)
    eos_id: int
    vocab: dict[str, int] = field(repr=False)


def char_tokenizer(
    specials: tuple[str, ...] = SPECIAL_TOKENS, words: tuple[str, ...] = CHARS, added: tuple[str, ...] = ()
) -> Any:
    """A word-level tokenizer whose pre-tokenizer splits every text into characters: ids for the
    special tokens, then for ``words``, then for the ``added`` special tokens (a family's markers:
    <tool_call>, [TOOL_CALLS], ...). Words longer than a character are never produced from input
    (a scripted model can still emit them, and they decode as they are)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(dict.fromkeys((*specials, *words)))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # "[\s\S]" (not ".") so that newlines are isolated too
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added])
    return tokenizer


def weight_files(model: Any, config: dict[str, Any]) -> dict[str, bytes]:
    """The safetensors and config.json of ``model`` as mlx-lm saves them (name -> bytes)."""
    from mlx_lm.utils import save_config, save_model

    with tempfile.TemporaryDirectory(prefix="mlxk-tiny-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        out = Path(tmp)
        save_model(out, model)
        save_config(dict(config), out / "config.json")
        return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


def _bpe_tokenizer() -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        min_frequency=1,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(BPE_CORPUS) * 3, trainer=trainer)
    return tokenizer


def _silenced_ids(tokenizer: Any) -> set[int]:
    """Special tokens, and tokens that do not decode on their own to printable text."""
    silenced = set()
    added = tokenizer.get_added_tokens_decoder()
    for i in range(tokenizer.get_vocab_size(with_added_tokens=True)):
        text = tokenizer.decode([i], skip_special_tokens=False)
        if i in added or not _printable(text):
            silenced.add(i)
    return silenced


def _printable(text: str) -> bool:
    return bool(text) and all(c == "\n" or (c.isprintable() and c != "\ufffd") for c in text)


def _tokenizer_config(chat_template: bool, bpe: bool, max_len: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": EOS_TOKEN,
        "pad_token": "<|endoftext|>",
        "unk_token": None if bpe else "<unk>",
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
    }
    if chat_template:
        config["chat_template"] = CHATML_TEMPLATE
    return config


def model_config(vocab_size: int, max_position_embeddings: int = 512, width: int = 1) -> dict[str, Any]:
    """The llama config of the tiny models; ``width`` multiplies the hidden and intermediate sizes
    (a wider float32 model makes the matrix products, and so the BLAS, weigh in prefill)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64 * width,
        "intermediate_size": 128 * width,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": vocab_size,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": max_position_embeddings,
        "eos_token_id": EOS_ID,
        "torch_dtype": "float32",
    }


def pipeline_config(vocab_size: int, max_position_embeddings: int = 512) -> dict[str, Any]:
    """A tiny qwen3_next (linear attention every other layer, a mixture of 4 experts): a family
    that mlx-lm shards only as a pipeline (its model implements ``pipeline``, not ``shard``)."""
    return {
        "architectures": ["Qwen3NextForCausalLM"],
        "model_type": "qwen3_next",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "full_attention_interval": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "partial_rotary_factor": 0.25,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "linear_conv_kernel_dim": 4,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 64,
        "vocab_size": vocab_size,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": max_position_embeddings,
        "eos_token_id": EOS_ID,
        "torch_dtype": "float32",
    }


def unshardable_config(vocab_size: int, max_position_embeddings: int = 512) -> dict[str, Any]:
    """A tiny gemma: a family whose mlx-lm model implements neither ``shard`` nor ``pipeline``."""
    return {
        "architectures": ["GemmaForCausalLM"],
        "model_type": "gemma",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": max_position_embeddings,
        "eos_token_id": EOS_ID,
        "torch_dtype": "float32",
    }


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


def build_tiny_chat_model(
    *,
    stop_at_once: bool = False,
    chat_template: bool = True,
    bpe: bool = False,
    quantized: bool = False,
    max_position_embeddings: int = 512,
    seed: int = DEFAULT_SEED,
    width: int = 1,
    added_tokens: tuple[str, ...] = (),
    pipeline_only: bool = False,
    unshardable: bool = False,
) -> dict[str, bytes]:
    """The files of one tiny MLX chat model snapshot (path -> bytes); byte-identical for equal args.
    ``added_tokens``: special tokens the character vocabulary gets besides its own (the markers of
    a model family's tool calls or reasoning). ``pipeline_only``: a tiny qwen3_next instead of the
    llama (``pipeline_config``); ``unshardable``: a tiny gemma (``unshardable_config``)."""
    import mlx.core as mx
    from mlx.nn.layers.linear import Linear
    from mlx_lm.models import gemma, llama, qwen3_next
    from mlx_lm.utils import quantize_model

    tokenizer = _bpe_tokenizer() if bpe else char_tokenizer(added=added_tokens)
    if tokenizer.token_to_id(EOS_TOKEN) != EOS_ID:
        raise AssertionError("eos must be id 0")
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if pipeline_only:
        config = pipeline_config(vocab_size, max_position_embeddings)
        family: Any = qwen3_next
    elif unshardable:
        config = unshardable_config(vocab_size, max_position_embeddings)
        family = gemma
    else:
        config = model_config(vocab_size, max_position_embeddings, width)
        family = llama

    mx.random.seed(seed)
    model = family.Model(family.ModelArgs.from_dict(config))
    # Special tokens (and BPE tokens that are no text alone) get zero embeddings: their logits
    # are exactly 0, below the best of the others, so an untouched model never emits eos or
    # <unk> (it runs to length) and its output is always printable text.
    silenced = _silenced_ids(tokenizer)
    mask = mx.array([[0.0] if i in silenced else [1.0] for i in range(vocab_size)])
    model.model.embed_tokens.weight = model.model.embed_tokens.weight * mask
    # Freshly initialised, the residual stream is dominated by the input embedding and greedy
    # decoding repeats one character ("CCCC..."); stronger layers give varied, printable text.
    for _, module in model.model.named_modules():
        if isinstance(module, Linear):
            module.weight = module.weight * LAYER_SCALE
    if stop_at_once:
        model.model.norm.weight = mx.zeros_like(model.model.norm.weight)
    mx.eval(model.parameters())
    if quantized:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "[INFO] Quantized model ..."
            model, config = quantize_model(model, config, group_size=32, bits=4)
        mx.eval(model.parameters())

    files = weight_files(model, config)
    files["tokenizer.json"] = tokenizer.to_str(pretty=True).encode()
    files["tokenizer_config.json"] = _json(_tokenizer_config(chat_template, bpe, max_position_embeddings))
    files["special_tokens_map.json"] = _json(
        {"eos_token": EOS_TOKEN, "pad_token": "<|endoftext|>"} | ({} if bpe else {"unk_token": "<unk>"})
    )
    files["README.md"] = README
    return dict(sorted(files.items()))


def vocab_of(files: dict[str, bytes]) -> dict[str, int]:
    """token -> id of a built model's tokenizer.json (model vocabulary plus added tokens)."""
    data = json.loads(files["tokenizer.json"])
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    for added in data["added_tokens"]:
        vocab[added["content"]] = added["id"]
    return vocab


def tiny_model(name: str, **options: Any) -> TinyModel:
    files = build_tiny_chat_model(**options)
    return TinyModel(name, files, EOS_ID, vocab_of(files))


VARIANTS: dict[str, dict[str, Any]] = {
    "chat": {},
    "stop": {"stop_at_once": True},
    "raw": {"chat_template": False},
    "bpe": {"bpe": True},
    "q4": {"quantized": True},
}


def build_variants() -> dict[str, dict[str, bytes]]:
    """Every variant of ``VARIANTS`` by its key (what the ``tiny_models`` fixture returns)."""
    return {key: build_tiny_chat_model(**options) for key, options in VARIANTS.items()}


def install(hub: Path, name: str, files: dict[str, bytes]) -> CachedRepo:
    """Write the snapshot into the hub folder (blobs named by their real checksums)."""
    return gen.add_model(hub, name, files, real_hash=True)


def drop_tensor(files: dict[str, bytes], tensor: str) -> dict[str, bytes]:
    """``files`` with ``tensor`` left out of model.safetensors: a file whose header is valid (the
    cache's checks pass, the index too) that mlx-lm refuses to load ("Missing parameters")."""
    return drop_tensors(files, lambda name: name == tensor)


def drop_layer(files: dict[str, bytes], layer: int) -> dict[str, bytes]:
    """``files`` with every tensor of decoder layer ``layer`` left out of model.safetensors and its
    index: a checkpoint short of a layer its config names."""
    return drop_tensors(files, lambda name: name.startswith(f"model.layers.{layer}."))


def drop_tensors(files: dict[str, bytes], dropped: Callable[[str], bool]) -> dict[str, bytes]:
    """``files`` with the tensors whose names ``dropped`` picks left out of model.safetensors (and
    of its index, which names only what the file holds)."""
    import mlx.core as mx

    with tempfile.TemporaryDirectory(prefix="mlxk-tiny-") as tmp:
        whole, part = Path(tmp, "whole.safetensors"), Path(tmp, "part.safetensors")
        whole.write_bytes(files["model.safetensors"])
        weights = mx.load(str(whole))
        assert isinstance(weights, dict)
        names = [name for name in weights if dropped(name)]
        assert names, sorted(weights)
        for name in names:
            del weights[name]
        mx.save_safetensors(str(part), weights, metadata={"format": "mlx"})
        changed = {**files, "model.safetensors": part.read_bytes()}
    if "model.safetensors.index.json" in files:  # the index names only what the file holds
        index = json.loads(files["model.safetensors.index.json"])
        for name in names:
            del index["weight_map"][name]
        changed["model.safetensors.index.json"] = _json(index)
    return changed
