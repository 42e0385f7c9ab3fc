"""Builds HuggingFace hub caches on disk for tests and benchmarks.

The layout is the real one: ``models--org--name/blobs/<checksum>`` (sha256 for weight files,
git blob sha1 for small files), ``refs/main`` holding the commit, and
``snapshots/<commit>/<file>`` as relative symlinks into ``blobs``. Large weight files are
sparse: a real safetensors header followed by a hole, so a cache of many "GB" costs no disk.
Sparse blobs are named by a synthetic sha256 (hashing gigabytes of zeros would make the
generator slow); ``real_hash=True`` hashes the actual bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlxk.core.twin.safetensors import DTYPE_BITS

OLD_MTIME = 1_700_000_000  # a fixed past time: outside the memo's racy window, stable in tests


@dataclass(frozen=True)
class Sparse:
    """A file of ``size`` bytes whose first bytes are ``head`` and the rest a hole."""

    head: bytes
    size: int


Content = bytes | Sparse


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def commit_hash(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()


def tensor_entries(
    count: int, dtype: str = "BF16", dims: tuple[int, int] = (64, 64)
) -> list[tuple[str, str, list[int]]]:
    """``count`` realistic tensor names (layers of a decoder) with one shape each."""
    names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "input_layernorm"]
    out: list[tuple[str, str, list[int]]] = []
    for i in range(count):
        layer, part = divmod(i, len(names))
        shape = [dims[0]] if part == len(names) - 1 else list(dims)
        out.append((f"model.layers.{layer}.self_attn.{names[part]}.weight", dtype, shape))
    return out


def safetensors_header(
    tensors: Sequence[tuple[str, str, Sequence[int]]], metadata: Mapping[str, str] | None = None
) -> tuple[bytes, int]:
    """(8-byte length + JSON header padded with spaces to 8 bytes, data length) for the tensors."""
    header: dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype, shape in tensors:
        count = 1
        for dim in shape:
            count *= dim
        nbytes = count * DTYPE_BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, offset


def safetensors_file(tensors: Sequence[tuple[str, str, Sequence[int]]], *, sparse: bool = False) -> Content:
    head, data_len = safetensors_header(tensors, {"format": "mlx"})
    if sparse:
        return Sparse(head, len(head) + data_len)
    return head + b"\0" * data_len


def readme(library: str | None = "mlx", tags: Iterable[str] = ("mlx",), pipeline: str | None = None) -> bytes:
    lines = ["---"]
    if library:
        lines.append(f"library_name: {library}")
    tags = list(tags)
    if tags:
        lines.append("tags:")
        lines += [f"- {t}" for t in tags]
    if pipeline:
        lines.append(f"pipeline_tag: {pipeline}")
    lines += ["---", "", "# A model card", ""]
    return "\n".join(lines).encode()


def llama_config(quantized: bool = True, **extra: object) -> bytes:
    config: dict[str, object] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 2048,
        "num_attention_heads": 32,
        "num_hidden_layers": 16,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "vocab_size": 128256,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    }
    if quantized:
        config["quantization"] = {"group_size": 64, "bits": 4}
    config.update(extra)
    return json.dumps(config, indent=2).encode()


def tokenizer_config(chat: bool = True) -> bytes:
    config: dict[str, object] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|eot_id|>",
        "bos_token": "<|begin_of_text|>",
        "model_max_length": 131072,
    }
    if chat:
        config["chat_template"] = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    return json.dumps(config, indent=2).encode()


def tokenizer_json(size: int = 2048) -> bytes:
    vocab = {f"tok{i}": i for i in range(max(1, size // 12))}
    return json.dumps({"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab}}).encode()


def index_json(shards: Mapping[str, Sequence[str]], total_size: int) -> bytes:
    weight_map = {tensor: shard for shard, tensors in shards.items() for tensor in tensors}
    return json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map}, indent=2).encode()


def mlx_chat_model_files(
    *,
    tensors: int = 300,
    shards: int = 1,
    sparse: bool = False,
    dims: tuple[int, int] = (64, 64),
    chat: bool = True,
) -> dict[str, Content]:
    """A realistic MLX model snapshot: config, README, tokenizer files, weights (+ index)."""
    files: dict[str, Content] = {
        "config.json": llama_config(),
        "README.md": readme(),
        "tokenizer.json": tokenizer_json(),
        "tokenizer_config.json": tokenizer_config(chat),
        "special_tokens_map.json": b'{"eos_token": "<|eot_id|>"}',
    }
    entries = tensor_entries(tensors, dims=dims)
    per_shard = -(-len(entries) // shards)
    groups = [entries[i : i + per_shard] for i in range(0, len(entries), per_shard)]
    for number, group in enumerate(groups, start=1):
        name = "model.safetensors" if shards == 1 else f"model-{number:05d}-of-{shards:05d}.safetensors"
        files[name] = safetensors_file(group, sparse=sparse)
    if shards > 1:
        mapping = {
            f"model-{n:05d}-of-{shards:05d}.safetensors": [t[0] for t in g] for n, g in enumerate(groups, 1)
        }
        files["model.safetensors.index.json"] = index_json(mapping, 0)
    return files


def _blob_name(path: str, content: Content, real_hash: bool) -> str:
    if isinstance(content, Sparse):
        if real_hash:
            digest = hashlib.sha256(content.head)
            remaining = content.size - len(content.head)
            zeros = b"\0" * (1 << 20)
            while remaining > 0:
                chunk = min(remaining, len(zeros))
                digest.update(zeros[:chunk])
                remaining -= chunk
            return digest.hexdigest()
        return hashlib.sha256(content.head + str(content.size).encode()).hexdigest()
    if path.endswith((".safetensors", ".bin", ".gguf", ".npz")):
        return hashlib.sha256(content).hexdigest()
    return git_blob_sha1(content)


def _write(target: Path, content: Content, mtime: float) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as fh:
        if isinstance(content, Sparse):
            fh.write(content.head)
            fh.truncate(content.size)
        else:
            fh.write(content)
    os.utime(target, (mtime, mtime), follow_symlinks=False)


@dataclass
class CachedRepo:
    """Paths of one generated repo, for tests that then damage it."""

    root: Path  # the hub folder
    name: str
    commit: str

    @property
    def repo_dir(self) -> Path:
        return self.root / ("models--" + self.name.replace("/", "--"))

    @property
    def snapshot(self) -> Path:
        return self.repo_dir / "snapshots" / self.commit

    def blob_of(self, file: str) -> Path:
        link = self.snapshot / file
        return (link.parent / os.readlink(link)).resolve() if link.is_symlink() else link


def add_model(
    root: Path,
    name: str,
    files: Mapping[str, Content],
    *,
    commit: str | None = None,
    ref: str | None = "main",
    links: bool = True,
    real_hash: bool = False,
    mtime: float = OLD_MTIME,
) -> CachedRepo:
    """Write one snapshot of ``name`` into the hub folder ``root`` (the repo may already exist)."""
    commit = commit or commit_hash(name + "".join(sorted(files)))
    repo = CachedRepo(root, name, commit)
    snapshot = repo.snapshot
    snapshot.mkdir(parents=True, exist_ok=True)
    blobs = repo.repo_dir / "blobs"
    blobs.mkdir(exist_ok=True)
    for path, content in files.items():
        dest = snapshot / path
        if links:
            blob = blobs / _blob_name(path, content, real_hash)
            if not blob.exists():
                _write(blob, content, mtime)
            dest.parent.mkdir(parents=True, exist_ok=True)
            depth = path.count("/")
            os.symlink(os.path.join(*[".."] * (2 + depth), "blobs", blob.name), dest)
            os.utime(dest, (mtime, mtime), follow_symlinks=False)
        else:
            _write(dest, content, mtime)
    os.utime(snapshot, (mtime, mtime))
    if ref:
        refs = repo.repo_dir / "refs"
        refs.mkdir(exist_ok=True)
        (refs / ref).write_text(commit)
    return repo


def build_cache(
    root: Path, count: int, *, tensors: int = 300, dims: tuple[int, int] = (1024, 1024)
) -> list[CachedRepo]:
    """``count`` healthy MLX chat models with sparse weights (300 BF16 tensors of 1024x1024 make
    a 630 MB model), every fourth sharded in two: the benchmark cache."""
    root.mkdir(parents=True, exist_ok=True)
    repos = []
    for i in range(count):
        shards = 2 if i % 4 == 3 else 1
        files = mlx_chat_model_files(tensors=tensors, shards=shards, sparse=True, dims=dims)
        repos.append(add_model(root, f"mlx-community/model-{i:05d}-4bit", files))
    return repos
