"""The native core and the pure-Python twin agree on generated caches with every odd layout."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

import mlxk.core
from benchmarks import cachegen as gen
from mlxk.cache.scan import CacheLocation
from mlxk.core import implementation
from mlxk.ops.list import list_models
from mlxk.output.contract import list_data
from tests.cachefix import healthy_model, replace_blob, truncate_blob
from tests.conftest import native_module


def build_zoo(hub: Path) -> None:
    """One repo per rule and layout the health checks know, plus strange entries."""
    healthy_model(hub, "org/healthy")
    healthy_model(hub, "org/base.v1_2", chat=False)
    gen.add_model(hub, "org/sharded", gen.mlx_chat_model_files(tensors=12, shards=3))
    gen.add_model(hub, "org/copy-mode", gen.mlx_chat_model_files(tensors=6), links=False)
    gen.add_model(hub, "org/two-snaps", gen.mlx_chat_model_files(tensors=4), commit="a" * 40, ref=None)
    gen.add_model(
        hub, "org/two-snaps", gen.mlx_chat_model_files(tensors=5), commit="b" * 40, mtime=gen.OLD_MTIME + 9
    )
    (healthy_model(hub, "org/no-config").snapshot / "config.json").unlink()
    replace_blob(healthy_model(hub, "org/bad-config"), "config.json", b"{")
    replace_blob(healthy_model(hub, "org/empty-weights"), "model.safetensors", b"")
    truncate_blob(healthy_model(hub, "org/truncated"), "model.safetensors", -5)
    header = b'{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,9]}}'
    replace_blob(
        healthy_model(hub, "org/bad-header"),
        "model.safetensors",
        struct.pack("<Q", len(header)) + header + bytes(9),
    )
    replace_blob(
        healthy_model(hub, "org/lfs"), "model.safetensors", b"version https://git-lfs.github.com/spec/v1\n"
    )
    healthy_model(hub, "org/dangling").blob_of("tokenizer.json").unlink()
    sharded = gen.add_model(hub, "org/missing-shard", gen.mlx_chat_model_files(tensors=12, shards=2))
    (sharded.snapshot / "model-00002-of-00002.safetensors").unlink()
    no_index = gen.add_model(hub, "org/no-index", gen.mlx_chat_model_files(tensors=12, shards=2))
    (no_index.snapshot / "model.safetensors.index.json").unlink()
    nested = gen.mlx_chat_model_files(tensors=3)
    nested["1_Pooling/config.json"] = b"{}"
    nested["onnx/model.onnx"] = b"onnx"
    nested["unet/model.safetensors.index.json"] = b'{"weight_map": {"w": "gone.safetensors"}}'
    gen.add_model(hub, "org/nested", nested)
    leftovers = healthy_model(hub, "org/leftovers")
    (leftovers.repo_dir / "blobs" / "f.incomplete").write_bytes(b"xx")
    (hub / ".locks" / leftovers.repo_dir.name).mkdir(parents=True)
    (hub / ".locks" / leftovers.repo_dir.name / "f.lock").write_bytes(b"")
    (hub / "models--org--file").write_bytes(b"junk")
    os.symlink("nowhere", hub / "models--org--dangling-repo")
    (hub / "models--org--empty" / "snapshots").mkdir(parents=True)
    loop = healthy_model(hub, "org/loop")
    os.symlink("self", loop.snapshot / "self")
    (hub / "datasets--org--d").mkdir()
    (hub / "version.txt").write_text("1")


def test_scan_records_match(hub: Path) -> None:
    native = native_module()
    if native is None:
        pytest.skip("the native core is not built")
    build_zoo(hub)
    twin = implementation(False)
    assert native.scan_cache(str(hub), None, b"", 0) == twin.scan_cache(str(hub), None, b"", 0)


def test_list_output_matches(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    native = native_module()
    if native is None:
        pytest.skip("the native core is not built")
    build_zoo(hub)
    outputs = []
    for module in (native, implementation(False)):
        monkeypatch.setattr(mlxk.core, "impl", module)
        outputs.append(list_data(list_models(CacheLocation(str(hub), None))))
    assert outputs[0] == outputs[1]
    assert outputs[0]["count"] == 20


FIFO_SCAN = """
import sys
from mlxk.core import implementation
native = implementation(True).scan_cache(sys.argv[1], None, b"", 0)
twin = implementation(False).scan_cache(sys.argv[1], None, b"", 0)
assert native == twin, (native, twin)
print(sorted((f.path, f.check) for f in twin[0][0].snapshots[0].files))
"""


def test_fifos_where_files_belong_do_not_hang_the_scan(hub: Path) -> None:
    import subprocess
    import sys

    if native_module() is None:
        pytest.skip("the native core is not built")
    repo = healthy_model(hub)
    for name in ("config.json", "model.safetensors", "README.md"):
        (repo.snapshot / name).unlink()
        os.mkfifo(repo.snapshot / name)
    (repo.repo_dir / "refs" / "main").unlink()
    os.mkfifo(repo.repo_dir / "refs" / "main")
    proc = subprocess.run(
        [sys.executable, "-c", FIFO_SCAN, str(hub)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "('model.safetensors', 2)" in proc.stdout  # a FIFO has no bytes: reported as empty weights
