"""The questions mlxk asks a person at a terminal (rm's confirmation, pull's resume), answered
through a real pseudo-terminal: the real CLI in a subprocess, its stdin and stderr on the pty.

Only what the person answers decides: "y" goes ahead, "n", an empty line (rm's default is no) and
the end of input (Ctrl-D: nobody to say yes) do not.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cachefix import healthy_model
from tests.hubfix import BIG, REPO, finished_files, model_files, repo_dir
from tests.hubserver import FakeHub
from tests.test_rm import NAME

DEADLINE_S = 120


class Terminal:
    """``mlxk ARGS`` with a pty as its stdin and stderr; stdout is a pipe (what the command prints)."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlxk", *args], stdin=slave, stderr=slave, stdout=subprocess.PIPE
        )
        os.close(slave)
        self.seen = b""

    def wait_for(self, text: bytes) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while text not in self.seen:
            assert time.monotonic() < deadline, self.seen
            assert self.proc.poll() is None or select.select([self.master], [], [], 0)[0], self.seen
            if select.select([self.master], [], [], 0.1)[0]:
                self.seen += os.read(self.master, 65536)

    def answer(self, keys: bytes) -> tuple[int, str]:
        os.write(self.master, keys)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read().decode()
        self.proc.stdout.close()
        code = self.proc.wait(timeout=DEADLINE_S)
        while select.select([self.master], [], [], 0.1)[0]:  # what it wrote after the answer
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not chunk:
                break
            self.seen += chunk
        os.close(self.master)
        return code, out


@pytest.mark.parametrize(
    ("keys", "deleted"),
    [(b"y\n", True), (b"YES\n", True), (b"n\n", False), (b"\n", False), (b"\x04", False)],
    ids=["y", "YES", "n", "empty line: the default, no", "end of input"],
)
def test_rm_at_a_terminal_deletes_only_on_yes(hub: Path, keys: bytes, deleted: bool) -> None:
    repo = healthy_model(hub, NAME)
    terminal = Terminal("rm", NAME)
    terminal.wait_for(b"[y/N] ")
    assert b"Will delete" in terminal.seen and NAME.encode() in terminal.seen  # the plan, before the question
    code, out = terminal.answer(keys)
    assert os.path.lexists(repo.repo_dir) is not deleted
    if deleted:
        assert code == 0 and out.startswith(f"Deleted {NAME}")
    else:
        assert code == 1 and out == ""
        assert b"needs confirmation" in terminal.seen


def test_a_partial_download_resumes_when_the_person_agrees(hub: Path, fake: FakeHub) -> None:
    fake.fail = {BIG: 404}  # the first pull stops with the weights missing
    first = subprocess.run(
        [sys.executable, "-m", "mlxk", "pull", REPO, "--json"], capture_output=True, timeout=DEADLINE_S
    )
    assert first.returncode == 2
    fake.fail = {}
    fetched = {path: fake.gets(path) for path in model_files()}
    finished = finished_files(hub)  # only the rest is fetched again
    assert BIG not in finished

    terminal = Terminal("pull", REPO)
    terminal.wait_for(b"Resume? [Y/n] ")
    code, out = terminal.answer(b"\n")  # the default: yes
    assert code == 0 and "downloaded" in out
    assert (repo_dir(hub) / "refs" / "main").exists()
    fetched_again = {p: fake.gets(p) - fetched[p] for p in model_files()}
    assert fetched_again == {p: int(p not in finished) for p in model_files()}


def test_a_partial_download_stays_when_the_person_declines(hub: Path, fake: FakeHub) -> None:
    fake.fail = {BIG: 404}
    first = subprocess.run(
        [sys.executable, "-m", "mlxk", "pull", REPO, "--json"], capture_output=True, timeout=DEADLINE_S
    )
    assert first.returncode == 2
    fake.fail = {}
    before = sorted(str(p.relative_to(hub)) for p in hub.rglob("*"))

    terminal = Terminal("pull", REPO)
    terminal.wait_for(b"Resume? [Y/n] ")
    code, _ = terminal.answer(b"n\n")
    assert code == 1
    assert b"--force-resume" in terminal.seen
    assert sorted(str(p.relative_to(hub)) for p in hub.rglob("*")) == before
    assert fake.gets(BIG) == 0
