"""``mlxk launch`` where mlx.launch refuses before any rank starts (text mode, with a valid
--env handed on), and where no mlx.launch can be found at all."""

from __future__ import annotations

import json
import site
import subprocess
import sys
from pathlib import Path

from tests.servefix import serve_env

MLXK = [sys.executable, "-m", "mlxk"]
ROOT = Path(__file__).resolve().parents[1]


def test_mlx_launch_refusing_in_text_mode_leaves_its_own_message(hub: Path, tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([{"ssh": "localhost"}, {"ssh": "localhost"}]))
    proc = subprocess.run(
        [
            *MLXK,
            "launch",
            "--hostfile",
            str(hostfile),
            "--backend",
            "ring",
            "--env",
            "MLXK_TEST_VALUE=a=b",  # a valid pair (its value may hold '='): handed on, not refused
            "--",
            "serve",
            "--model",
            "x",
        ],
        capture_output=True,
        text=True,
        env=serve_env(hub),
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""  # no envelope in text mode: mlx.launch's own words are the message
    assert "The ring backend requires IPs to be provided instead of hostnames" in proc.stderr
    assert "--env takes" not in proc.stderr


def test_no_mlx_launch_beside_python_or_on_the_path(hub: Path, tmp_path: Path) -> None:
    # a Python of its own folder (a link to this one), with a PATH holding nothing else
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    python.symlink_to(sys.executable)
    assert not (bin_dir / "mlx.launch").exists()
    start = (
        "import site, sys, runpy\n"
        f"site.addsitedir({site.getsitepackages()[0]!r})\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "runpy.run_module('mlxk', run_name='__main__')\n"
    )
    env = {**serve_env(hub), "PATH": str(bin_dir)}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [str(python), "-c", start, "launch", "-n", "2", "--json", "--", "serve", "--model", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["error"] == {
        "type": "execution_error",
        "message": "mlx.launch (installed with mlx) is neither beside this Python nor on the PATH",
    }
