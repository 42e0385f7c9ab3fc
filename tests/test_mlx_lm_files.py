"""Which model types the installed mlx-lm can run, read from its files (mlxk.cache.runtime):
an mlx-lm whose files are missing or unexpected gives a smaller answer, never an error, and no
mlx-lm at all says so (version None). The packages here are real folders on sys.path that
``importlib`` finds as it would find mlx-lm; the installed mlx-lm is hidden while they are."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlxk.cache.runtime import mlx_lm_support


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty ``mlx_lm`` package found before the installed one; the cached answer is dropped
    before and after, so no other test sees this one's."""
    root = tmp_path / "mlx_lm"
    root.mkdir()
    (root / "__init__.py").write_text("")
    for name in [n for n in sys.modules if n == "mlx_lm" or n.startswith("mlx_lm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    mlx_lm_support.cache_clear()
    yield root
    mlx_lm_support.cache_clear()


def test_an_mlx_lm_with_no_models_folder_supports_nothing(package: Path) -> None:
    support = mlx_lm_support()
    assert (support.version, support.model_types, support.remapping) == ("unknown", frozenset(), {})
    assert not support.supports("llama")


def test_model_files_version_and_remapping_are_read(package: Path) -> None:
    (package / "models").mkdir()
    for name in ("llama.py", "qwen2.py", "_private.py", "base.py", "README.md"):
        (package / "models" / name).write_text("")
    (package / "_version.py").write_text('__version__ = "9.8.7"\n')
    (package / "utils.py").write_text('MODEL_REMAPPING = {\n    "mistral": "llama",\n}\n')
    support = mlx_lm_support()
    assert support.version == "9.8.7"
    assert support.model_types == {"llama", "qwen2", "base"}
    assert support.supports("mistral") and support.supports("qwen2")
    assert not support.supports("bert")


@pytest.mark.parametrize(
    "utils",
    [
        "x = 1\n",  # no remapping table
        'MODEL_REMAPPING = {\n    "mistral": call(),\n}\n',  # not a literal
        'MODEL_REMAPPING = {\n    "mistral",\n}\n',  # a set, not a table
        'MODEL_REMAPPING = {\n    "mistral": \n}\n',  # not Python
    ],
)
def test_an_unreadable_remapping_table_maps_nothing(package: Path, utils: str) -> None:
    (package / "models").mkdir()
    (package / "models" / "llama.py").write_text("")
    (package / "utils.py").write_text(utils)
    support = mlx_lm_support()
    assert support.remapping == {}
    assert support.supports("llama") and not support.supports("mistral")


def test_a_version_file_without_a_version_reads_as_unknown(package: Path) -> None:
    (package / "_version.py").write_text("# no version here\n")
    assert mlx_lm_support().version == "unknown"


def test_without_mlx_lm_nothing_is_supported(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the interpreter as it would be with no mlx-lm installed: no site-packages on the path
    monkeypatch.setattr(
        sys, "path", [p for p in sys.path if "site-packages" not in p and p != str(package.parent)]
    )
    support = mlx_lm_support()
    assert (support.version, support.model_types, support.remapping) == (None, frozenset(), {})
    assert not support.supports("llama")
