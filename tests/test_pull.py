"""``mlxk pull`` with the real huggingface_hub client against our Hub server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.hubfix import BIG, REPO, model_files, repo_dir
from tests.hubserver import FakeHub, git_blob_sha1

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "json-api-schema.json").read_text())


@pytest.fixture
def cli(cli: Any) -> Any:
    """The in-process runner, with every --json output validated against the contract's schema."""

    def run(*args: str) -> Any:
        result = cli(*args)
        if "--json" in args:
            jsonschema.validate(result.json(), SCHEMA, cls=jsonschema.Draft7Validator)
        return result

    return run


def entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def assert_scan_clean(hub: Path) -> None:
    from huggingface_hub import scan_cache_dir

    assert scan_cache_dir(hub).warnings == []


def mlxk(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlxk", *args], capture_output=True, text=True, timeout=120, **kwargs
    )


def test_pull_downloads_verifies_and_publishes_the_ref(cli: Any, hub: Path, fake: FakeHub) -> None:
    result = cli("pull", REPO, "--json")
    assert result.exit_code == 0, result.stdout
    data = result.json()["data"]
    assert data["download_status"] == "success" and data["health"] == "healthy"
    commit = data["commit"]
    repo = repo_dir(hub)
    assert (repo / "refs" / "main").read_text() == commit
    files = model_files()
    for path, content in files.items():
        link = repo / "snapshots" / commit / path
        assert link.read_bytes() == content
        blob = os.path.basename(os.readlink(link))
        lfs = path.endswith(".safetensors") or len(content) >= 10 * 1024
        assert blob == (hashlib.sha256(content).hexdigest() if lfs else git_blob_sha1(content))
    assert data["files"] == len(files) and data["downloaded_bytes"] == sum(len(c) for c in files.values())
    assert not list((repo / "blobs").glob("*.incomplete"))
    assert not (hub / ".locks" / repo.name).exists()  # no lock file left behind
    assert cli("health", REPO, "--json").json()["data"]["healthy"][0]["reason"] == "healthy"
    assert_scan_clean(hub)


def test_second_pull_is_already_exists_and_fetches_nothing(cli: Any, fake: FakeHub) -> None:
    assert cli("pull", REPO).exit_code == 0
    gets = fake.gets(BIG)
    again = cli("pull", REPO, "--json")
    assert again.exit_code == 0
    assert again.json()["data"]["download_status"] == "already_exists"
    assert fake.gets(BIG) == gets == 1


def test_revision_pull_by_branch_and_by_commit(cli: Any, hub: Path, fake: FakeHub) -> None:
    v2 = fake.add_commit(REPO, {**model_files(), "extra.json": b'{"v": 2}'}, branch="v2")
    out = cli("pull", f"{REPO}@v2", "--json").json()["data"]
    assert out["commit"] == v2 and out["revision"] == "v2"
    repo = repo_dir(hub)
    assert (repo / "refs" / "v2").read_text() == v2
    assert not (repo / "refs" / "main").exists()  # only the ref that was asked for moves
    assert (repo / "snapshots" / v2 / "extra.json").read_bytes() == b'{"v": 2}'
    main = cli("pull", f"{REPO}@main", "--json").json()["data"]["commit"]
    by_sha = cli("pull", f"{REPO}@{main}", "--json").json()["data"]
    assert by_sha["download_status"] == "already_exists" and by_sha["commit"] == main
    assert sorted(p.name for p in (repo / "refs").iterdir()) == ["main", "v2"]
    assert_scan_clean(hub)


@pytest.mark.parametrize(
    ("kind", "error_type", "exit_code"),
    [("missing", "model_not_found", 1), ("private", "model_not_found", 1), ("gated", "access_denied", 1)],
)
def test_refused_repos_fail_at_once_and_leave_no_trace(
    cli: Any, hub: Path, fake: FakeHub, kind: str, error_type: str, exit_code: int
) -> None:
    if kind != "missing":
        fake.add_commit(f"org/{kind}", model_files(), private=kind == "private", gated=kind == "gated")
    before = entries(hub)
    result = cli("pull", f"org/{kind}", "--json")
    assert (result.exit_code, result.json()["error"]["type"]) == (exit_code, error_type)
    assert result.json()["data"]["download_status"] in ("failed", "access_denied")
    assert entries(hub) == before == []
    assert cli("list", "--json").json()["data"]["count"] == 0  # no phantom model either
    # one API call; a gated repo's model info is public, so one file is asked for (HEAD) before anything is written
    methods = [method for method, _ in fake.requests]
    assert methods == (["GET", "HEAD"] if kind == "gated" else ["GET"])


def test_a_file_refused_mid_download_leaves_the_cache_as_it_was(cli: Any, hub: Path, fake: FakeHub) -> None:
    """The Hub can still refuse a file after the first one was allowed (access revoked meanwhile):
    what this pull wrote goes, and what was there before stays."""
    assert cli("pull", REPO).exit_code == 0
    v2 = fake.add_commit(REPO, {**model_files(), "extra.json": b'{"v": 2}'}, branch="v2")
    before = {p: (p.is_symlink(), p.is_file() and p.read_bytes()) for p in repo_dir(hub).rglob("*")}
    fake.deny = {"extra.json"}
    result = cli("pull", f"{REPO}@v2", "--json")
    assert (result.exit_code, result.json()["error"]["type"]) == (1, "access_denied")
    after = {p: (p.is_symlink(), p.is_file() and p.read_bytes()) for p in repo_dir(hub).rglob("*")}
    assert after == before
    assert not (hub / ".locks").exists()
    assert not (repo_dir(hub) / "snapshots" / v2).exists()
    assert cli("health", "--json").json()["data"]["summary"] == {
        "total": 1,
        "healthy_count": 1,
        "unhealthy_count": 0,
    }


def test_gated_repo_with_a_token(cli: Any, fake: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add_commit("org/gated", model_files(), gated=True)
    monkeypatch.setenv("HF_TOKEN", fake.token)
    assert cli("pull", "org/gated", "--json").json()["data"]["download_status"] == "success"


@pytest.mark.parametrize(
    "spec", ["a/b/c", "../x", "./local", "org/na me", "org/x@../../etc", "org/x@/abs", "-x"]
)
def test_invalid_names_touch_nothing(cli: Any, hub: Path, fake: FakeHub, spec: str) -> None:
    result = cli("pull", spec, "--json")
    assert result.exit_code == 1 and result.json()["error"]["type"] == "validation_error"
    assert entries(hub) == [] and fake.requests == []


def test_insufficient_space_is_refused_before_downloading(
    cli: Any, hub: Path, fake: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stub, named as such: a full disk cannot be made here, so the free-space query reports 1 KB.
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    result = cli("pull", REPO, "--json")
    assert (result.exit_code, result.json()["error"]["type"]) == (3, "insufficient_space")
    assert entries(hub) == [] and fake.gets(BIG) == 0


def test_wrong_bytes_are_caught_removed_and_refetched(cli: Any, hub: Path, fake: FakeHub) -> None:
    fake.wrong_bytes = {BIG}
    result = cli("pull", REPO, "--json")
    assert (result.exit_code, result.json()["error"]["type"]) == (2, "download_failed")
    assert BIG in result.json()["error"]["message"]
    good = hashlib.sha256(model_files()[BIG]).hexdigest()
    repo = repo_dir(hub)
    assert not (repo / "blobs" / good).exists()  # the lying blob is gone
    assert not (repo / "refs" / "main").exists()  # and nothing was published
    fake.wrong_bytes = set()
    refused = cli("pull", REPO, "--json")  # partly there: resuming needs a yes
    assert refused.json()["error"]["type"] == "requires_confirmation"
    assert cli("pull", REPO, "--force-resume", "--json").exit_code == 0
    assert (repo / "blobs" / good).read_bytes() == model_files()[BIG]
    assert_scan_clean(hub)


def test_a_dropped_connection_is_resumed(cli: Any, hub: Path, fake: FakeHub) -> None:
    fake.drop_after = {BIG: 100_000}
    fake.drop_times = 1
    result = cli("pull", REPO, "--json")
    assert result.exit_code == 0, result.stdout
    assert fake.gets(BIG) == 2
    assert cli("health", REPO, "--json").json()["data"]["summary"]["healthy_count"] == 1


def test_a_server_that_ignores_range_still_gives_the_right_file(cli: Any, hub: Path, fake: FakeHub) -> None:
    fake.drop_after = {BIG: 100_000}
    fake.drop_times = 1
    fake.ignore_range = True
    assert cli("pull", REPO, "--json").exit_code == 0
    commit = (repo_dir(hub) / "refs" / "main").read_text()
    assert (repo_dir(hub) / "snapshots" / commit / BIG).read_bytes() == model_files()[BIG]


def test_a_connection_that_keeps_dropping_fails_cleanly(cli: Any, hub: Path, fake: FakeHub) -> None:
    fake.drop_after = {BIG: 0}  # headers, then nothing: the client gives up after its retries
    result = cli("pull", REPO, "--json")
    assert (result.exit_code, result.json()["error"]["type"]) == (2, "download_failed")
    blobs = repo_dir(hub) / "blobs"
    good = hashlib.sha256(model_files()[BIG]).hexdigest()
    assert not (blobs / good).exists() and not list(blobs.glob("*.incomplete"))


def big_weights(mib: int) -> bytes:
    """A valid safetensors file of ``mib`` MiB (one U8 tensor), so the health rules pass."""
    data = os.urandom(1 << 20) * mib
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


@pytest.mark.parametrize("ignore_range", [False, True])
def test_a_drop_after_10_mib_resumes_with_range_and_verifies(
    cli: Any, hub: Path, fake: FakeHub, ignore_range: bool
) -> None:
    """huggingface_hub writes 10 MiB pieces; a drop after one resumes with Range (or, from a server
    that ignores Range, truncates and starts over, which the streamed checksum must survive)."""
    files = {"config.json": model_files()["config.json"], "model.safetensors": big_weights(12)}
    fake.add_commit("org/big", files)
    fake.drop_after = {"model.safetensors": 11 << 20}
    fake.drop_times = 1
    fake.ignore_range = ignore_range
    result = cli("pull", "org/big", "--json")
    assert result.exit_code == 0, result.stdout
    assert [r for _path, r in fake.ranges] == ["bytes=10485760-"]
    commit = result.json()["data"]["commit"]
    assert (repo_dir(hub, "org/big") / "snapshots" / commit / BIG).read_bytes() == files[BIG]


def test_streamed_hashes_spare_a_second_read(
    cli: Any, fake: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blobs are hashed while they arrive; verification reads from disk only what it must."""
    from mlxk.cache import verify

    fake.slow_bps = 2_000_000  # long enough for the hashing thread to follow the file
    reread: list[str] = []
    real = verify.content_digest

    def counting(path: str, lfs: bool, size: int) -> str:
        reread.append(path)
        return real(path, lfs, size)

    monkeypatch.setattr(verify, "content_digest", counting)
    assert cli("pull", REPO, "--json").exit_code == 0
    big = hashlib.sha256(model_files()[BIG]).hexdigest()
    assert not [p for p in reread if p.endswith(big)]


def test_short_names_resolve_against_the_cache_then_mlx_community(cli: Any, fake: FakeHub) -> None:
    assert cli("pull", REPO).exit_code == 0
    cached = cli("pull", "tiny-chat-4BIT", "--json").json()["data"]  # the name part, in any case
    assert (cached["expanded_name"], cached["download_status"]) == (REPO, "already_exists")
    partial = cli("pull", "Tiny-Chat", "--json").json()  # never a part of a name: that is another repo
    assert partial["data"]["expanded_name"] == "mlx-community/Tiny-Chat"
    assert partial["error"]["type"] == "model_not_found"
    fake.add_commit("mlx-community/Other-Model", model_files())
    fresh = cli("pull", "Other-Model", "--json").json()["data"]
    assert (fresh["expanded_name"], fresh["download_status"]) == ("mlx-community/Other-Model", "success")


def test_include_and_exclude_patterns(cli: Any, hub: Path, fake: FakeHub) -> None:
    fake.add_commit("org/with-gguf", {**model_files(), "model.Q4.gguf": b"GGUF" + bytes(4096)})
    result = cli("pull", "org/with-gguf", "--exclude", "*.gguf", "--json")
    assert result.exit_code == 0 and fake.gets("model.Q4.gguf") == 0
    assert result.json()["data"]["files"] == len(model_files())
    configs = cli("pull", "org/with-gguf", "--include", "nothing-*", "--json")
    assert configs.json()["error"]["type"] == "validation_error"


def test_a_pull_that_ends_unhealthy_says_so(cli: Any, fake: FakeHub) -> None:
    files = model_files()
    files["config.json"] = b"{not json"
    fake.add_commit("org/broken", files)
    result = cli("pull", "org/broken", "--json")
    assert (result.exit_code, result.json()["error"]["type"]) == (1, "model_unhealthy")
    assert result.json()["data"]["health"] == "unhealthy"


def test_offline_mode(cli: Any, fake: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = cli("pull", REPO, "--json")
    assert (missing.exit_code, missing.json()["error"]["type"]) == (2, "network_error")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert cli("pull", REPO).exit_code == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen = len(fake.requests)
    present = cli("pull", REPO, "--json")
    assert present.json()["data"]["download_status"] == "already_exists"
    assert len(fake.requests) == seen


# --- whole processes: progress on a terminal, kill -9, Ctrl-C, several pulls at once ---


def wait_for(condition: Any, timeout: float = 60.0) -> None:  # a hang guard: ends when it holds
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def incomplete(hub: Path) -> list[Path]:
    return list((repo_dir(hub) / "blobs").glob("*.incomplete")) if repo_dir(hub).exists() else []


def test_progress_bar_on_a_terminal(hub: Path, fake: FakeHub) -> None:
    fake.slow_bps = 600_000
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk", "pull", REPO],
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    seen = b""
    while proc.poll() is None or select.select([master], [], [], 0.1)[0]:
        if select.select([master], [], [], 0.1)[0]:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    assert proc.wait() == 0
    assert b"downloaded" in out
    text = seen.decode(errors="replace")
    assert REPO in text and "B/s" in text and "100%" in text  # bytes, rate and completion on stderr


def test_json_mode_prints_only_the_envelope(hub: Path, fake: FakeHub) -> None:
    proc = mlxk("pull", REPO, "--json")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.count("\n") == 1


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_pull_publishes_nothing_and_the_next_completes(
    hub: Path, fake: FakeHub, sig: int
) -> None:
    fake.slow_bps = 300_000
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk", "pull", REPO], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_for(lambda: bool(incomplete(hub)))  # the client writes in 10 MiB pieces: the file is still empty
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == (-9 if sig == signal.SIGKILL else 130)  # a hang guard
    assert proc.stderr is not None
    proc.stderr.close()
    good = hashlib.sha256(model_files()[BIG]).hexdigest()
    # the slow server was still sending: the process left without waiting for the download
    assert not (repo_dir(hub) / "blobs" / good).exists()
    assert not (repo_dir(hub) / "refs" / "main").exists()
    if sig == signal.SIGKILL:
        health = mlxk("health", REPO, "--json")
        assert '"unhealthy_count":1' in health.stdout  # a partial download is reported, never "healthy"
    fake.slow_bps = None
    assert mlxk("pull", REPO, "--json").returncode == 1  # partly there: not without a yes
    done = mlxk("pull", REPO, "--force-resume", "--json")
    assert done.returncode == 0, done.stdout
    assert incomplete(hub) == []
    assert '"healthy"' in mlxk("health", REPO, "--json").stdout
    assert_scan_clean(hub)


def test_ctrl_c_of_a_json_pull_prints_the_error_envelope(hub: Path, fake: FakeHub) -> None:
    fake.slow_bps = 300_000
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk", "pull", REPO, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: bool(incomplete(hub)))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, (out, err)
    envelope = json.loads(out)  # exactly one JSON document on stdout
    jsonschema.validate(envelope, SCHEMA, cls=jsonschema.Draft7Validator)
    assert (envelope["status"], envelope["command"]) == ("error", "pull")
    assert envelope["error"]["type"] == "interrupted"
    assert envelope["data"]["expanded_name"] == REPO and envelope["data"]["download_status"] == "failed"
    assert err == ""  # --json: the envelope says it all


def test_concurrent_pulls_of_one_repo(hub: Path, fake: FakeHub) -> None:
    fake.slow_bps = 1_500_000
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mlxk", "pull", REPO, "--json"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert fake.gets(BIG) == 1  # one process downloaded; the others waited, then found it complete
    assert sum('"success"' in o.split('"download_status":')[1][:12] for o in outputs) >= 1
    assert '"unhealthy_count":0' in mlxk("health", "--json").stdout
    assert_scan_clean(hub)


def test_rm_during_a_pull_waits_or_fails_cleanly(hub: Path, fake: FakeHub) -> None:
    fake.hold.add(BIG)  # the weights come only after the rm below: the pull is surely under way
    puller = subprocess.Popen(
        [sys.executable, "-m", "mlxk", "pull", REPO, "--json"], stdout=subprocess.PIPE, text=True
    )
    weights = hashlib.sha256(model_files()[BIG]).hexdigest()
    wait_for(lambda: any(p.name.startswith(weights) for p in incomplete(hub)))  # its lock is held
    refused = mlxk("rm", REPO, "--json")
    fake.hold.discard(BIG)
    assert refused.returncode == 1 and '"locks_present"' in refused.stdout
    out = puller.communicate(timeout=120)[0]
    assert puller.returncode == 0, out
    assert '"unhealthy_count":0' in mlxk("health", "--json").stdout
    removed = mlxk("rm", REPO, "-f", "--json")
    assert removed.returncode == 0 and not repo_dir(hub).exists()
    assert_scan_clean(hub)
