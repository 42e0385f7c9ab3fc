"""Light commands stay light, and the layers import in one direction only."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cachefix import healthy_model

HEAVY = ("mlx", "mlx_lm", "transformers", "huggingface_hub", "granian", "numpy")
PACKAGE = Path(__file__).parents[1] / "mlxk"
LAYERS = ("core", "errors", "cache", "hub", "generation", "embedding", "ops", "output", "cli", "server")
# layer -> layers it must not import from (dependencies point one way)
FORBIDDEN = {
    "core": tuple(layer for layer in LAYERS if layer != "core"),
    "errors": tuple(layer for layer in LAYERS if layer not in ("core", "errors")),
    "cache": ("ops", "cli", "output", "server", "generation", "embedding", "hub"),
    "hub": ("ops", "cli", "output", "server", "generation", "embedding"),
    "generation": ("ops", "cli", "output", "server", "hub", "embedding"),
    "embedding": ("ops", "cli", "output", "server", "hub", "generation"),
    "ops": ("cli", "output", "server"),
    "output": ("cli", "server"),
    "server": ("cli", "output", "hub", "ops"),  # server uses generation, runner (embedding), cache, errors
}
# mlxk/core/'s implementations: only the selector (mlxk.core.impl) reaches them from outside
CORE_PRIVATE = ("twin", "_native", "libcrypto", "_cblas_forward")


@pytest.mark.parametrize(
    "args",
    [["--version"], ["list", "--json"], ["health"], ["show", "x", "--json"], ["rm", "tiny", "--dry-run"]],
)
def test_light_commands_do_not_import_heavy_modules(args: list[str], hub: Path) -> None:
    healthy_model(hub)
    code = (
        f"import sys\nfrom mlxk.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY:' + ','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_version_does_not_load_cleo() -> None:
    code = "import sys\nfrom mlxk.cli import main\nmain(['--version'])\nprint('cleo' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "False"


def layer_files(layer: str) -> list[Path]:
    """The modules of a layer: a package folder (with its subpackages) or a single module."""
    folder = PACKAGE / layer
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [PACKAGE / f"{layer}.py"]


def mlxk_imports(path: Path) -> list[str]:
    """Every ``mlxk.*`` name a file imports, at the top or inside functions, in any form:
    ``import mlxk.a.b``, ``from mlxk.a import b`` (as ``mlxk.a.b``), ``from mlxk import a``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("mlxk.")]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "mlxk"
        ):
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def test_layers_import_one_way() -> None:
    offenders = []
    for layer, forbidden in FORBIDDEN.items():
        files = layer_files(layer)
        assert files and all(path.is_file() for path in files), layer
        for path in files:
            for module in mlxk_imports(path):
                if module.split(".")[1] in forbidden:
                    offenders.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert offenders == []


def test_only_core_reaches_the_twin_and_the_compiled_module() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "core"):
            continue
        for module in mlxk_imports(path):
            parts = module.split(".")
            if parts[:2] == ["mlxk", "core"] and len(parts) > 2 and parts[2] in CORE_PRIVATE:
                offenders.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert offenders == []


def native_flag(env: dict[str, str]) -> str:
    """What ``mlxk.NATIVE`` says in a fresh interpreter with ``env``."""
    proc = subprocess.run(
        [sys.executable, "-c", "import mlxk; print(mlxk.NATIVE)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return proc.stdout.strip()


def test_native_core_is_used_when_required() -> None:
    """Guard: where CI expects the compiled core, the fallback must not load silently."""
    if os.environ.get("MLXK_REQUIRE_NATIVE") != "1":
        pytest.skip("MLXK_REQUIRE_NATIVE is not set")
    assert native_flag({k: v for k, v in os.environ.items() if k != "MLXK_NO_EXTENSIONS"}) == "True"


def test_no_extensions_env_forces_the_twin() -> None:
    assert native_flag({**os.environ, "MLXK_NO_EXTENSIONS": "1"}) == "False"
