"""Edges of the launcher, the BLAS choice, the libcrypto search and the pure-Python core (the twin)
that the other tests leave out: what each does where the usual thing is missing.

Where the missing thing cannot be had on this machine (a later mlx, a Python without MULTIARCH, a
system without /proc or without ``sched_getaffinity``), a named stand-in takes its place; everything
else is real (MLX's own bundled BLAS, a sysfs file, paths past PATH_MAX).
"""

from __future__ import annotations

import ctypes.util
import importlib
import json
import os
import select
import subprocess
import sys
import sysconfig
import textwrap
import types
from pathlib import Path

import pytest

import mlxk.core
from mlxk.cli import launcher
from mlxk.core import blas, libcrypto
from mlxk.core.codes import ALGO_SHA256
from mlxk.core.twin import hashing as twin_hashing
from mlxk.core.twin import scan as twin_scan
from tests.conftest import native_module
from tests.test_native_scan import add_repo, assert_same

LINUX = sys.platform.startswith("linux")
MLX_LAUNCH = "mlx._distributed_utils.launch"


# --- launcher: mlx.launch's waiting ------------------------------------------------------------


def test_mlx_launch_waits_for_the_ranks_output_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed mlx.launch: its ``select`` no longer reports a rank's stdin as writable."""
    module = importlib.import_module(MLX_LAUNCH)
    monkeypatch.setattr(module, "select", select.select)  # put back after the test
    launcher._wait_only_for_output()
    read_fd, write_fd = os.pipe()
    try:
        assert select.select([read_fd], [write_fd], [], 0)[1] == [write_fd]
        assert module.select([read_fd], [write_fd], [], 0) == ([], [], [])
        os.write(write_fd, b"x")
        assert module.select([read_fd], [write_fd], [], 0) == ([read_fd], [], [])
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_an_mlx_without_the_launch_module_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A later mlx that moved mlx.launch's code (stand-in: the module hidden): nothing to patch, and
    the launcher still starts."""
    monkeypatch.setitem(sys.modules, MLX_LAUNCH, None)
    with pytest.raises(ImportError):
        importlib.import_module(MLX_LAUNCH)
    launcher._wait_only_for_output()  # no ImportError


def test_an_mlx_launch_with_its_own_waiting_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A later mlx.launch whose ``select`` is not ``select.select`` (stand-in: a module of that name
    with its own): its waiting is kept as it is."""

    def own_select(*args: object) -> tuple[list[int], list[int], list[int]]:
        return [], [], []

    stand_in = types.ModuleType(MLX_LAUNCH)
    stand_in.select = own_select  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, MLX_LAUNCH, stand_in)
    launcher._wait_only_for_output()
    assert stand_in.select is own_select


# --- the BLAS choice ---------------------------------------------------------------------------


def _mlx_bundled_blas() -> Path:
    spec = importlib.util.find_spec("mlx")
    assert spec is not None and spec.submodule_search_locations
    libs = Path(next(iter(spec.submodule_search_locations))).parent / "mlx_cpu.libs"
    found = sorted(libs.glob("libblas*.so*"))
    if not found:
        pytest.skip("mlx is not the mlx-cpu wheel (no bundled libblas)")
    return found[0]


@pytest.mark.skipif(not LINUX, reason="the BLAS choice is Linux's")
@pytest.mark.parametrize("user_threads", [None, "3"])
def test_a_cblas_library_without_a_thread_setter_decides_its_threads(user_threads: str | None) -> None:
    """MLXK_BLAS naming a library with the CBLAS names and no ``openblas_set_num_threads`` (MLX's own
    bundled reference BLAS): it is loaded and multiplies; mlxk sets no thread count and reports
    none, or the user's own setting (which such a library may read)."""
    library = _mlx_bundled_blas()
    code = """
        import json
        from mlxk.core.blas import ensure_blas
        plan = ensure_blas()
        import mlx.core as mx
        a = mx.ones((64, 64))
        print(json.dumps({"library": plan.library, "path": plan.path, "loaded": plan.loaded,
                          "threads": plan.threads, "warning": plan.warning,
                          "total": (a @ a).sum().item()}))
    """
    threads_vars = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLXK_BLAS") and k not in threads_vars}
    env["MLXK_BLAS"] = str(library)
    if user_threads is not None:
        env["OPENBLAS_NUM_THREADS"] = user_threads
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result["library"], result["path"], result["loaded"]) == ("custom", str(library), True)
    assert result["warning"] is None and "reference BLAS" not in proc.stderr
    assert result["threads"] == (None if user_threads is None else int(user_threads))
    assert result["total"] == 64.0**3


def test_without_multiarch_the_plain_system_folders_are_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python built without MULTIARCH (stand-in: sysconfig answering None for it): no
    /usr/lib/<triplet> folders, the plain ones after LD_LIBRARY_PATH."""
    real = sysconfig.get_config_var

    def config_var(name: str) -> object:
        return None if name == "MULTIARCH" else real(name)

    monkeypatch.setattr(sysconfig, "get_config_var", config_var)
    dirs = blas.library_dirs({"LD_LIBRARY_PATH": "/opt/blas::/usr/lib"})
    assert dirs == ["/opt/blas", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib64", "/lib"]


# --- libcrypto ---------------------------------------------------------------------------------


@pytest.mark.skipif(not LINUX, reason="/proc/self/maps is Linux's")
def test_without_proc_the_libcrypto_search_falls_back_to_find_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A system without /proc mounted (stand-in: opening /proc/self/maps fails): no mapped
    libcrypto is found, and the search goes on to ``ctypes.util.find_library``."""
    monkeypatch.delenv(libcrypto.ENV, raising=False)
    assert any(p.startswith("/") for p in libcrypto.libcrypto_candidates()), "the mapped one comes first"

    def no_proc(path: str, *args: object, **kwargs: object) -> object:
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(libcrypto, "open", no_proc, raising=False)
    assert libcrypto._mapped_linux() == []
    name = ctypes.util.find_library("crypto")
    assert libcrypto.libcrypto_candidates() == ([name] if name else [])


# --- the twin: hashing, safetensors, scan ------------------------------------------------------


def test_without_an_affinity_call_hashing_uses_every_cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No ``os.sched_getaffinity`` (macOS; stand-in: the call deleted): one thread per CPU of the
    machine, and a job of the default size still hashes."""
    monkeypatch.delattr(os, "sched_getaffinity")
    assert twin_hashing.default_jobs() == (os.cpu_count() or 1)
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    (result,) = twin_hashing.HashJob([str(path)], [ALGO_SHA256]).run()
    assert result[:2] == (0, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


SYSFS_FILE = "/sys/devices/system/cpu/online"  # stat says 4096 bytes; it holds a few


def test_a_file_shorter_than_its_size_is_checked_on_what_it_holds(core: str) -> None:
    """A file whose reads end before the size ``fstat`` gave (a sysfs attribute; a file truncated
    while read): the check does not wait for more, and judges the bytes there at the stated size."""
    if not os.path.isfile(SYSFS_FILE):
        pytest.skip("no sysfs")
    with open(SYSFS_FILE, "rb") as fh:
        held = fh.read()
    size = os.stat(SYSFS_FILE).st_size
    if len(held) >= size:
        pytest.skip("this sysfs reports the size it holds")
    verdict = mlxk.core.impl.check_safetensors_file(SYSFS_FILE)
    assert verdict == mlxk.core.impl.check_safetensors_bytes(held, size)
    assert verdict[0] != 0


def test_entries_past_path_max_in_refs_locks_blobs_and_snapshots_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub deep enough that a ref, a lock file, a partial download and a snapshot folder with long
    names lie past PATH_MAX (each made through a relative path): the scan lists the others and
    skips these, the native core as its twin."""
    native = native_module()
    path_max = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096
    base = tmp_path
    while len(str(base)) < path_max - 300:
        base = base / ("p" * 200)
    base.mkdir(parents=True)
    hub = base / "hub"
    repo, snap = add_repo(hub, "o/r", {"config.json": b"{}"})
    assert len(str(repo / "snapshots")) + 1 + 250 > path_max  # the long names below lie past it
    monkeypatch.chdir(repo / "blobs")
    Path("i" * 240 + ".incomplete").write_bytes(b"xx")
    Path("short.incomplete").write_bytes(b"x")
    monkeypatch.chdir(repo / "snapshots")
    os.mkdir("c" * 250)
    monkeypatch.chdir(repo / "refs")
    os.mkdir("r" * 200)
    Path("r" * 200, "b" * 100).write_text("0" * 40)
    locks = hub / ".locks" / repo.name
    locks.mkdir(parents=True)
    monkeypatch.chdir(locks)
    Path("l" * 250 + ".lock").write_text("")
    Path("a.lock").write_text("")
    monkeypatch.chdir(tmp_path)

    result = twin_scan.scan_cache(str(hub))
    (record,) = result[0]
    assert record.refs == [("main", snap.name)]
    assert record.incomplete == [("short.incomplete", 1)]
    assert record.locks == ["a.lock"]
    assert [s.commit for s in record.snapshots] == [snap.name]
    assert [f.path for f in record.snapshots[0].files] == ["config.json"]
    if native is not None:
        assert_same(native.scan_cache(str(hub)), result)


# --- decoder embeddings: the tokenizer's own padding ---------------------------------------------


@pytest.fixture(scope="module")
def qwen3_files() -> dict[str, bytes]:
    from tests.embedfix import build_tiny_qwen3_embedding

    return build_tiny_qwen3_embedding("st")


@pytest.mark.parametrize("pad_id", [7, 10_000])  # one of the model's ids; one past its vocabulary (100)
def test_a_tokenizer_that_pads_with_its_own_id_batches_as_alone(
    qwen3_files: dict[str, bytes], tmp_path: Path, pad_id: int
) -> None:
    """A decoder whose tokenizer.json sets padding (its pad_id within the model's vocabulary, or past
    it): texts of different lengths in one batch get the vectors they get alone."""
    import numpy as np

    from mlxk.embedding.loader import load_embedder
    from tests.modelfix import install

    files = dict(qwen3_files)
    tokenizer = json.loads(files["tokenizer.json"])
    tokenizer["padding"] = {
        "strategy": "BatchLongest",
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": pad_id,
        "pad_type_id": 0,
        "pad_token": "<pad>",
    }
    files["tokenizer.json"] = json.dumps(tokenizer).encode()
    repo = install(tmp_path / "hub", "test/Decoder-Padding", files)
    embedder = load_embedder(str(repo.snapshot))
    texts = ["hi", "a cat sat on the mat", "quantum chromodynamics and more"]
    alone = np.asarray([embedder.embed([t]).vectors[0] for t in texts])
    together = np.asarray(embedder.embed(texts, batch_size=len(texts)).vectors)
    assert np.all(np.isfinite(together))
    assert np.max(np.abs(alone - together)) < 1e-5
