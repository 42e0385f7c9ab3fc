"""The ``mlxk`` command (also installed as ``mlxk-json``, ``mlxk2``, ``mlx-knife`` and ``mlx_knife``,
the names MLX-Knife installed), and ``mlx-run``, MLX-Knife 2.0's shorthand for ``mlxk run``."""

from __future__ import annotations

import sys

_VERSION_ARGS = ({"--version"}, {"-V"}, {"--version", "--json"}, {"-V", "--json"})


def _fast_version(argv: list[str]) -> int | None:
    """``mlxk --version [--json]`` without loading the command framework: scripts call it often."""
    if set(argv) not in _VERSION_ARGS or len(argv) != len(set(argv)):
        return None
    from mlxk.core import NATIVE
    from mlxk.ops.version import version_info
    from mlxk.output.contract import version_data
    from mlxk.output.emit import write_json, write_text
    from mlxk.output.human import render_version

    info = version_info(NATIVE)
    if "--json" in argv:
        write_json("version", version_data(info))
    else:
        write_text(render_version(info))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    code = _fast_version(args)
    if code is not None:
        return code
    from mlxk.cli.app import run_app

    return run_app(args)


def run_main(argv: list[str] | None = None) -> int:
    """``mlx-run MODEL [PROMPT...]`` is ``mlxk run MODEL [PROMPT...]``."""
    args = sys.argv[1:] if argv is None else argv
    return main(["run", *args])
