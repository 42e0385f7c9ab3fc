"""Smoke-run an installed mlxk: ``list``, ``show``, ``health`` on a small cache, ``run`` on a tiny model.

Usage::

    <venv>/bin/python scripts/smoke_installed.py [--core native|python] [--no-run]

Run it with the Python of the environment under test (a fresh venv where a wheel or an sdist was
installed): the cache is built with the test helpers (tests/cachefix.py, tests/modelfix.py; the
tiny model needs mlx-lm and tokenizers, which that environment has as mlxk's dependencies), and
then that environment's own ``mlxk`` executable runs in a clean environment, outside the checkout.
The checkout is appended to ``sys.path`` (not prepended), so ``import mlxk`` here is the installed
package too; the script refuses to run when it is not.

``--core`` is the core ``mlxk --version`` must report (native: the compiled extension). ``--no-run``
leaves out generation (for machines where MLX cannot run, such as CI hosts without Metal).
Exits 0 when every check passes; otherwise prints what differed and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, cast

CHECKOUT = Path(__file__).resolve().parents[1]
HEALTHY, BROKEN, TINY = "mlx-community/Tiny-Chat-4bit", "mlx-community/Broken-4bit", "smoke/Tiny-Chat"
PROMPT, TOKENS = "Hello", 12
CORE_WORDS = {"native": "native core", "python": "pure-Python core"}


class SmokeFailure(Exception):
    pass


def check(condition: bool, what: str, detail: object = "") -> None:
    if not condition:
        raise SmokeFailure(f"{what}: {detail}" if detail != "" else what)
    print(f"ok   {what}")


def installed_mlxk() -> Path:
    """The installed package, never the checkout's mlxk/ (that would smoke the wrong code)."""
    import mlxk

    location = Path(mlxk.__file__).resolve().parent
    if location.is_relative_to(CHECKOUT):
        raise SmokeFailure(f"mlxk is imported from the checkout ({location}), not from an installed package")
    return location


def build_cache(hub: Path, with_model: bool) -> Path | None:
    """Two cache models (one with a truncated weights file) and, for ``run``, the tiny real chat model."""
    sys.path.append(str(CHECKOUT))  # after site-packages: the helpers come from here, mlxk does not
    from tests.cachefix import healthy_model, truncate_blob

    healthy_model(hub, HEALTHY)
    truncate_blob(healthy_model(hub, BROKEN), "model.safetensors", -1)
    if not with_model:
        return None
    from tests.modelfix import build_tiny_chat_model, install

    return install(hub, TINY, build_tiny_chat_model()).snapshot


class Mlxk:
    """The environment's ``mlxk`` executable, run from a scratch folder with only the cache variables."""

    def __init__(self, root: Path, hub: Path) -> None:
        self.executable = Path(sys.executable).parent / "mlxk"
        self.cwd = root
        dropped = {"PYTHONPATH", "PYTHONHOME", "MLXK_NO_EXTENSIONS", "HF_HOME", "MLXK_CACHE_DIR"}
        self.env = {k: v for k, v in os.environ.items() if k not in dropped}
        self.env |= {"HF_HUB_CACHE": str(hub), "XDG_CACHE_HOME": str(root / "xdg"), "HF_HUB_OFFLINE": "1"}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.executable), *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def json(self, *args: str) -> dict[str, Any]:
        done = self(*args, "--json")
        try:
            envelope: dict[str, Any] = json.loads(done.stdout)
        except json.JSONDecodeError as exc:
            raise SmokeFailure(
                f"mlxk {' '.join(args)} --json printed no JSON: {done.stdout!r} {done.stderr!r}"
            ) from exc
        if done.returncode != 0 or envelope.get("status") != "success":
            raise SmokeFailure(f"mlxk {' '.join(args)} --json failed ({done.returncode}): {envelope}")
        return envelope


def reference_text(snapshot: Path) -> str:
    """What mlx-lm itself generates greedily for the prompt under the model's chat template."""
    from mlx_lm import load
    from mlx_lm.generate import stream_generate

    loaded = load(str(snapshot))  # (model, tokenizer), plus the config when asked for
    model, tokenizer = loaded[0], cast(Any, loaded[1])  # a TokenizerWrapper, untyped
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True)
    return "".join(r.text for r in stream_generate(model, tokenizer, prompt, max_tokens=TOKENS))


def smoke(core: str, with_run: bool) -> None:
    package = installed_mlxk()
    version = metadata.version("mlxk")
    print(f"mlxk {version} installed at {package}")
    with tempfile.TemporaryDirectory(prefix="mlxk-smoke-") as tmp:
        root = Path(tmp)
        hub = root / "hub"
        hub.mkdir()
        snapshot = build_cache(hub, with_run)
        mlxk = Mlxk(root, hub)

        shown = mlxk("--version")
        check(shown.returncode == 0, "mlxk --version exits 0", shown.stderr)
        check(version in shown.stdout, f"mlxk --version names {version}", shown.stdout)
        check(
            CORE_WORDS[core] in shown.stdout, f"mlxk --version reports the {CORE_WORDS[core]}", shown.stdout
        )

        listed = {m["name"]: m for m in mlxk.json("list")["data"]["models"]}
        expected = {HEALTHY, BROKEN} | ({TINY} if with_run else set())
        check(set(listed) == expected, "list shows every cached model", sorted(listed))
        check(
            listed[BROKEN]["health"] == "unhealthy",
            "list marks the truncated model unhealthy",
            listed[BROKEN],
        )

        card = mlxk.json("show", HEALTHY)["data"]["model"]
        check((card["name"], card["health"]) == (HEALTHY, "healthy"), "show describes one model", card)

        health = mlxk.json("health")["data"]
        unhealthy = [m["name"] for m in health["unhealthy"]]
        check(unhealthy == [BROKEN], "health finds the truncated model", health)
        strict = mlxk("health", "--strict")
        check(strict.returncode == 1, "health --strict exits 1 on an unhealthy cache", strict.returncode)

        if snapshot is not None:
            ran = mlxk.json("run", TINY, PROMPT, "--temperature", "0", "--max-tokens", str(TOKENS))["data"]
            check(
                (ran["finish_reason"], ran["tokens_generated"]) == ("length", TOKENS),
                f"run generates {TOKENS} tokens",
                ran,
            )
            expected_text = reference_text(snapshot)
            check(
                ran["response"] == expected_text,
                "run's greedy text equals mlx-lm's",
                (ran["response"], expected_text),
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--core", choices=sorted(CORE_WORDS), default="native")
    parser.add_argument("--no-run", action="store_true", help="leave out `mlxk run` (no MLX device here)")
    args = parser.parse_args(argv)
    try:
        smoke(args.core, not args.no_run)
    except SmokeFailure as failure:
        print(f"FAIL {failure}", file=sys.stderr)
        return 1
    print("smoke run passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
