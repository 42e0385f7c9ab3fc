"""Hub answers other than 200 and what pull makes of them (mlxk.hub.remote): the real huggingface_hub
talking to our Hub on 127.0.0.1 (tests/hubserver.py), which answers with a status and no error code
the way an overloaded Hub or a proxy in front of it does, or is not there at all.

Each refusal is an error of mlxk's contract (network_error, access_denied, model_not_found), never a
traceback, and leaves the cache as it was.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from tests.hubfix import BIG, REPO, finished_files, model_files, repo_dir
from tests.hubserver import FakeHub
from tests.test_pull import entries


def pull_error(cli: Any, *args: str) -> dict[str, Any]:
    result = cli("pull", *args, "--json")
    out = result.json()
    assert out["status"] == "error", out
    assert result.exit_code == {"network_error": 2, "download_failed": 2}.get(out["error"]["type"], 1), out
    assert "Traceback" not in result.stderr
    return dict(out["error"])


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(500, "network_error"), (503, "network_error"), (403, "access_denied"), (401, "access_denied")],
)
def test_a_model_info_refused_without_a_code(
    cli: Any, hub: Path, fake: FakeHub, status: int, error_type: str
) -> None:
    fake.fail = {"api": status}
    error = pull_error(cli, REPO)
    assert error["type"] == error_type
    assert f"HTTP {status}" in error["message"] and REPO in error["message"]
    assert entries(hub) == []
    assert [method for method, _ in fake.requests] == ["GET"]  # no file was asked for


def test_a_file_header_refused_without_a_code_before_anything_is_written(
    cli: Any, hub: Path, fake: FakeHub
) -> None:
    first = sorted(model_files())[0]  # the file the access check asks for
    fake.fail = {first: 403}
    error = pull_error(cli, REPO)
    assert error["type"] == "access_denied" and "HTTP 403" in error["message"]
    assert entries(hub) == []
    assert [method for method, _ in fake.requests] == ["GET", "HEAD"]  # no download began


def test_a_file_that_fails_mid_pull_is_kept_for_a_resume(cli: Any, hub: Path, fake: FakeHub) -> None:
    """The access check passes, then one file fails with a 404 without a code (a proxy dropping a
    path): a download failure, and what arrived stays for a resume that fetches only the rest."""
    fake.fail = {BIG: 404}
    error = pull_error(cli, REPO)
    assert error["type"] == "download_failed"
    assert error["message"] == f"downloading {REPO} failed: the Hub answered HTTP 404 for {REPO}"
    assert not (repo_dir(hub) / "refs" / "main").exists()  # nothing calls the model current
    fake.fail = {}
    assert pull_error(cli, REPO)["type"] == "requires_confirmation"
    fetched = {path: fake.gets(path) for path in model_files()}
    finished = finished_files(hub)
    assert BIG not in finished
    assert cli("pull", REPO, "--force-resume", "--json").exit_code == 0
    assert {path: fake.gets(path) - fetched[path] for path in model_files()} == {
        path: int(path not in finished) for path in model_files()
    }
    assert (repo_dir(hub) / "refs" / "main").exists()


def test_a_hub_that_is_not_there(cli: Any, hub: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeHub) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    error = pull_error(cli, REPO)
    assert error["type"] == "network_error"
    assert error["message"].startswith("cannot reach the Hub: ")
    assert entries(hub) == []


def test_a_revision_the_hub_does_not_have(cli: Any, hub: Path, fake: FakeHub) -> None:
    error = pull_error(cli, f"{REPO}@nosuchbranch")
    assert error["type"] == "model_not_found"
    assert "no revision 'nosuchbranch'" in error["message"]
    assert entries(hub) == []
