"""Ctrl-C while ``health --deep`` hashes: the hashing stops, the command ends at once with the
``interrupted`` error, and the cache is left exactly as it was (both cores)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import cachegen as gen

pytestmark = pytest.mark.usefixtures("core")
NAME = "mlx-community/Tiny-Chat-4bit"
BIG = 64 << 30  # a hole: costs no disk, takes far longer to hash than the test waits


def state(root: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p.relative_to(root)), p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")
    )


def bytes_read(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/<pid>/io")


@pytest.mark.parametrize("json_mode", [True, False], ids=["json", "text"])
def test_ctrl_c_while_hashing_stops_and_changes_nothing(hub: Path, json_mode: bool) -> None:
    gen.add_model(hub, NAME, {**gen.mlx_chat_model_files(tensors=12), "big.bin": gen.Sparse(b"", BIG)})
    before = state(hub)
    args = ["health", "--deep", "--no-memo"] + (["--json"] if json_mode else [])
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # hashing has begun once the process has read far more than all files but the big one hold
    # (rchar counts every thread's reads)
    while bytes_read(proc.pid) < 256 << 20:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    # the hashing is cancelled, not finished: 64 GiB would keep it busy far longer than this
    out, err = proc.communicate(timeout=60)
    # every command's answer to Ctrl-C: the `interrupted` error (its envelope under --json), 130
    assert proc.returncode == 130
    if json_mode:
        envelope = json.loads(out)
        assert (envelope["status"], envelope["command"]) == ("error", "health")
        assert envelope["error"]["type"] == "interrupted"
    else:
        assert out == "" and "interrupted" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert state(hub) == before  # nothing in the cache was written, moved or removed
