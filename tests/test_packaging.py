"""What the release packages carry, and how the build behaves with and without a compiler.

Fast: every package and data file under mlxk/ is declared for the wheel; the version is PEP 440
with a CHANGELOG entry; setup.py without a compiler falls back with a notice, or fails when the
native core is required (as release builds require it).

Slow (one build, about two minutes): ``python -m build`` makes the sdist and, from it, the wheel;
the sdist is a complete source release; the wheel carries the compiled core and installs into a
fresh venv where scripts/smoke_installed.py passes (list, show, health, run). That venv borrows
the dependencies of this test environment through a path entry (nothing is downloaded); the
install with dependencies from PyPI, with no compiler on the machine and after auditwheel, is
scripts/release_check.py's (and release.yml's), which take minutes more and the network.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from mlxk._version import __version__

ROOT = Path(__file__).resolve().parents[1]
NOTICE = "NOTICE: mlxk's native core (mlxk.core._native) was NOT built"


def pyproject() -> dict[str, Any]:
    toml = importlib.import_module("tomllib")  # by name: mypy targets Python 3.10, which has none
    data: dict[str, Any] = toml.loads((ROOT / "pyproject.toml").read_text())
    return data


def source_packages() -> set[str]:
    """Every folder of Python modules under mlxk/ (mlxk/cache has no __init__.py: a namespace package)."""
    return {
        ".".join(module.parent.relative_to(ROOT).parts)
        for module in (ROOT / "mlxk").rglob("*.py")
        if "__pycache__" not in module.parts
    }


def package_folders(names: set[str]) -> set[str]:
    """The packages that an archive's file names hold Python modules for."""
    return {
        name.rsplit("/", 1)[0].replace("/", ".") for name in names if name.endswith(".py") and "/" in name
    }


def test_every_package_under_mlxk_is_declared_for_the_wheel() -> None:
    """pyproject lists packages by name: a new subpackage left out would be missing from every wheel."""
    declared = set(pyproject()["tool"]["setuptools"]["packages"])
    assert declared == source_packages()


def test_every_data_file_under_mlxk_is_declared_for_the_wheel() -> None:
    """Files that are not Python (stubs, markers, assets) ship only when package-data names them."""
    patterns = pyproject()["tool"]["setuptools"]["package-data"]
    built = {".py", ".so", ".c", ".pyc"}
    packages = set(pyproject()["tool"]["setuptools"]["packages"])
    for path in (ROOT / "mlxk").rglob("*"):
        if path.is_dir() or path.suffix in built or "__pycache__" in path.parts:
            continue
        # a data file belongs to the nearest package above it (a folder of assets is no package)
        folder = path.parent
        while ".".join(folder.relative_to(ROOT).parts) not in packages:
            folder = folder.parent
        package = ".".join(folder.relative_to(ROOT).parts)
        name = path.relative_to(folder).as_posix()
        assert any(fnmatch.fnmatch(name, p) for p in patterns.get(package, [])), (
            f"{path.relative_to(ROOT)} is not in [tool.setuptools.package-data] {package!r}"
        )


def test_the_version_is_pep440_and_the_changelog_has_its_entry() -> None:
    version = Version(__version__)
    assert str(version) == __version__  # the normalized spelling: tags, sdists and the formula agree
    assert version.release[:2] == (2, 0)
    assert f"## [{__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def source_tree(tmp_path: Path) -> Path:
    """What setup.py needs to build the extension, copied (mtimes kept, so Cython's C is reused)."""
    tree = tmp_path / "src"
    tree.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(ROOT / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "build")
    shutil.copytree(ROOT / "_native", tree / "_native", ignore=ignore)
    shutil.copytree(ROOT / "mlxk", tree / "mlxk", ignore=ignore)
    return tree


def build_ext_without_compiler(tree: Path, **env: str) -> subprocess.CompletedProcess[str]:
    inherited = {
        k: v for k, v in os.environ.items() if k not in {"MLXK_NO_EXTENSIONS", "MLXK_REQUIRE_NATIVE"}
    }
    environment = inherited | {"CC": "/bin/false", "LDSHARED": "/bin/false"} | env
    return subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_without_a_compiler_the_build_falls_back_to_python_with_a_notice(tmp_path: Path) -> None:
    tree = source_tree(tmp_path)
    done = build_ext_without_compiler(tree)
    assert done.returncode == 0, done.stderr
    notice = done.stderr[done.stderr.index(NOTICE) :]
    assert "/bin/false" in notice  # the reason: the compiler command that failed
    assert "pure-Python core" in notice and "install a C compiler" in notice
    assert not list((tree / "mlxk" / "core").glob("_native*.so"))


def test_a_required_native_core_fails_the_build_without_a_compiler(tmp_path: Path) -> None:
    """Release builds set MLXK_REQUIRE_NATIVE=1 (cibuildwheel, the Homebrew formula): no silent fallback."""
    tree = source_tree(tmp_path)
    done = build_ext_without_compiler(tree, MLXK_REQUIRE_NATIVE="1")
    assert done.returncode != 0
    assert "native core could not be built" in done.stderr and "MLXK_REQUIRE_NATIVE=1" in done.stderr
    assert NOTICE not in done.stderr
    environment = pyproject()["tool"]["cibuildwheel"]["environment"]
    assert environment["MLXK_REQUIRE_NATIVE"] == "1"
    assert 'ENV["MLXK_REQUIRE_NATIVE"] = "1"' in (ROOT / "packaging" / "homebrew" / "mlxk.rb").read_text()


def test_the_release_workflow_runs_scripts_that_exist_and_greps_for_the_notice_the_build_prints() -> None:
    """release.yml checks the sdist's fallback by the notice's text: it must be the one setup.py prints."""
    import yaml  # type: ignore[import-untyped]  # PyYAML: a dependency of huggingface_hub and mlx-lm

    text = (ROOT / ".github" / "workflows" / "release.yml").read_text()
    jobs = yaml.safe_load(text)["jobs"]
    for name, job in jobs.items():
        needs = job.get("needs", [])
        assert set([needs] if isinstance(needs, str) else needs) <= set(jobs), name
    for script in set(re.findall(r"scripts/[\w.]+", text)):
        assert (ROOT / script).is_file(), script
    assert f'grep -q "{NOTICE}"' in text


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist, and the wheel built from it: ``python -m build``, with this venv's build tools."""
    out = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, MLXK_REQUIRE_NATIVE="1")
    env.pop("MLXK_NO_EXTENSIONS", None)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob(f"mlxk-{__version__}.tar.gz")
    (wheel,) = out.glob(f"mlxk-{__version__}-*.whl")
    return sdist, wheel


@pytest.mark.slow
def test_the_sdist_is_a_complete_source_release(dist: tuple[Path, Path]) -> None:
    sdist, _ = dist
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    expected = {
        "_native/_native.pyx",
        "_native/common.pxd",
        "_native/generate_codes.py",
        "LICENSE",
        "CHANGELOG.md",
        "tests/conftest.py",
        "tests/modelfix.py",
        "benchmarks/cachegen.py",
        "docs/json-api-schema.json",
        "scripts/smoke_installed.py",
        "packaging/homebrew/mlxk.rb",
    }
    assert expected <= names
    assert source_packages() <= package_folders(names)
    assert not [n for n in names if n.endswith((".so", ".pyc")) or "__pycache__" in n]
    assert "mlxk/server/ui/index.html" in names
    assert not [n for n in names if n.startswith("tests/artifacts/")]  # test screenshots stay home


@pytest.mark.slow
def test_the_wheel_carries_the_compiled_core_and_every_package(dist: tuple[Path, Path]) -> None:
    _, wheel = dist
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert [n for n in names if re.fullmatch(r"mlxk/core/_native\.cpython-[^/]+\.so", n)]
    assert {
        "mlxk/py.typed",
        "mlxk/core/_native.pyi",
        "mlxk/server/ui/index.html",
        "mlxk/server/ui/app.js",
        f"mlxk-{__version__}.dist-info/licenses/LICENSE",
    } <= names
    assert package_folders(names) == source_packages()
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "_native/"))]


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_passes_the_smoke_run(
    dist: tuple[Path, Path], tmp_path: Path
) -> None:
    _, wheel = dist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # without PYTHONPATH: pip, rerun under the new venv's Python, would see a checkout on it (with its
    # mlxk.egg-info) as mlxk already installed, and skip the wheel
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "MLXK_NO_EXTENSIONS"}}
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index"]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True, text=True, env=env)
    # the dependencies: this environment's site-packages as a plain path entry after the venv's own
    # (its .pth files, the editable mlxk among them, are not processed from there)
    site = Path(sysconfig.get_paths()["purelib"])
    venv_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (venv_site / "borrowed-dependencies.pth").write_text(f"{site}\n")
    done = subprocess.run(
        [str(python), str(ROOT / "scripts" / "smoke_installed.py"), "--core", "native"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"installed at {venv_site / 'mlxk'}" in done.stdout
    assert "ok   run's greedy text equals mlx-lm's" in done.stdout
