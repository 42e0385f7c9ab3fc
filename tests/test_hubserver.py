"""The fake Hub (tests/hubserver.py) against the real huggingface_hub client, in-process.

Arguments (endpoint=, cache_dir=, token=) rather than environment variables: huggingface_hub reads its
environment once, at import. ``token=False`` keeps a token of the machine running the tests out of it.
"""

from __future__ import annotations

import hashlib
import http.client
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, scan_cache_dir, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hubserver import FakeHub, git_blob_sha1

REPO = "org/model"
CONFIG = b'{"model_type": "llama"}\n'
WEIGHTS = bytes(range(256)) * 200  # 51200 bytes, LFS by its suffix (and its size)
TOKENIZER = b'{"vocab": {}}\n'
FILES = {"config.json": CONFIG, "model.safetensors": WEIGHTS, "sub/dir/tokenizer.json": TOKENIZER}


@pytest.fixture
def fake_hub(tmp_path: Path) -> Iterator[FakeHub]:
    with FakeHub(tmp_path / "server") as hub:
        yield hub
        assert hub.errors == []


def snapshot(
    hub: FakeHub, cache: Path, repo: str = REPO, revision: str | None = None, token: str | bool = False
) -> Path:
    return Path(
        snapshot_download(repo, revision=revision, endpoint=hub.endpoint, cache_dir=cache, token=token)
    )


def test_snapshot_download_matches_contents_and_blob_names(fake_hub: FakeHub, tmp_path: Path) -> None:
    sha = fake_hub.add_commit(REPO, FILES)
    cache = tmp_path / "cache"
    folder = snapshot(fake_hub, cache)
    assert folder.name == sha
    assert {p: (folder / p).read_bytes() for p in FILES} == FILES
    storage = cache / "models--org--model"
    assert (storage / "refs" / "main").read_text() == sha
    # Blobs are named by their etag: sha256 for LFS files, the git blob sha1 for the others.
    blobs = {p.name for p in (storage / "blobs").iterdir()}
    assert blobs == {git_blob_sha1(CONFIG), hashlib.sha256(WEIGHTS).hexdigest(), git_blob_sha1(TOKENIZER)}
    report = scan_cache_dir(cache)
    assert report.warnings == []
    assert [r.repo_id for r in report.repos] == [REPO]
    assert next(iter(report.repos)).size_on_disk == sum(map(len, FILES.values()))


def test_requests_made_by_snapshot_download(fake_hub: FakeHub, tmp_path: Path) -> None:
    sha = fake_hub.add_commit(REPO, FILES)
    snapshot(fake_hub, tmp_path / "cache")
    # One repo_info for the revision, one recursive tree listing at the commit, then a HEAD and a GET per file.
    assert fake_hub.requests[:2] == [
        ("GET", "/api/models/org/model/revision/main"),
        ("GET", f"/api/models/org/model/tree/{sha}?recursive=true&expand=false"),
    ]
    heads = sorted(p for m, p in fake_hub.requests if m == "HEAD")
    assert heads == sorted(f"/org/model/resolve/{sha}/{name}" for name in FILES)
    assert all(fake_hub.gets(name) == 1 for name in FILES)
    assert len(fake_hub.requests) == 2 + 2 * len(FILES)
    # A second call finds every file in the snapshot and the tree listing cached on disk (trees/<sha>.json):
    # only the revision lookup remains. A pull by commit sha skips even that one.
    fake_hub.requests.clear()
    snapshot(fake_hub, tmp_path / "cache")
    assert fake_hub.requests == [("GET", "/api/models/org/model/revision/main")]
    fake_hub.requests.clear()
    snapshot(fake_hub, tmp_path / "other", revision=sha)
    assert fake_hub.requests[0] == ("GET", f"/api/models/org/model/tree/{sha}?recursive=true&expand=false")
    assert len(fake_hub.requests) == 1 + 2 * len(FILES)


def test_revisions_by_branch_tag_sha_and_encoded_ref(fake_hub: FakeHub, tmp_path: Path) -> None:
    main = fake_hub.add_commit(REPO, {"config.json": b"main\n"})
    dev = fake_hub.add_commit(REPO, {"config.json": b"dev\n"}, branch="dev", tags=["v1.0"])
    pr = fake_hub.add_commit(REPO, {"config.json": b"pr\n"}, branch="refs/pr/1")
    assert len({main, dev, pr}) == 3
    cache = tmp_path / "cache"
    for revision, sha, text in [("dev", dev, b"dev\n"), ("v1.0", dev, b"dev\n"), (main, main, b"main\n")]:
        folder = snapshot(fake_hub, cache, revision=revision)
        assert (folder.name, (folder / "config.json").read_bytes()) == (sha, text)
    path = hf_hub_download(
        REPO, "config.json", revision="refs/pr/1", endpoint=fake_hub.endpoint, cache_dir=cache, token=False
    )
    assert Path(path).read_bytes() == b"pr\n"
    assert ("HEAD", "/org/model/resolve/refs%2Fpr%2F1/config.json") in fake_hub.requests
    assert scan_cache_dir(cache).warnings == []
    with pytest.raises(RevisionNotFoundError):
        snapshot(fake_hub, cache, revision="nope")


def test_model_info_and_tree(fake_hub: FakeHub) -> None:
    sha = fake_hub.add_commit(REPO, FILES)
    api = HfApi(endpoint=fake_hub.endpoint, token=False)
    info = api.model_info(REPO, files_metadata=True)
    assert (info.id, info.sha, info.private, info.gated) == (REPO, sha, False, False)
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert {name: s.size for name, s in siblings.items()} == {name: len(data) for name, data in FILES.items()}
    weights = siblings["model.safetensors"]
    assert weights.lfs is not None and weights.lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert siblings["config.json"].lfs is None and siblings["config.json"].blob_id == git_blob_sha1(CONFIG)
    assert api.repo_info(REPO, revision=sha).sha == sha
    top = {(type(e).__name__, e.path) for e in api.list_repo_tree(REPO)}
    assert top == {("RepoFile", "config.json"), ("RepoFile", "model.safetensors"), ("RepoFolder", "sub")}
    nested = [e.path for e in api.list_repo_tree(REPO, "sub", recursive=True, expand=True)]
    assert nested == ["sub/dir", "sub/dir/tokenizer.json"]
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(REPO, "missing"))


def test_missing_private_and_gated_repos(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_commit("org/private", FILES, private=True)
    fake_hub.add_commit("org/gated", FILES, gated=True)
    cache = tmp_path / "cache"
    for repo, error in [
        ("org/missing", RepositoryNotFoundError),
        ("org/private", RepositoryNotFoundError),
        ("org/gated", GatedRepoError),
    ]:
        with pytest.raises(error):
            snapshot(fake_hub, cache, repo)
        with pytest.raises(error):
            hf_hub_download(repo, "config.json", endpoint=fake_hub.endpoint, cache_dir=cache, token=False)
        if repo == "org/gated":  # as on the Hub: a gated repo's info and file list are public
            assert HfApi(endpoint=fake_hub.endpoint, token=False).model_info(repo).gated == "manual"
            assert len(list(HfApi(endpoint=fake_hub.endpoint, token=False).list_repo_tree(repo))) == 3
        else:
            with pytest.raises(error):
                HfApi(endpoint=fake_hub.endpoint, token=False).model_info(repo)
    for repo in ("org/private", "org/gated"):
        folder = snapshot(fake_hub, cache, repo, token=fake_hub.token)
        assert (folder / "config.json").read_bytes() == CONFIG
    assert HfApi(endpoint=fake_hub.endpoint, token=fake_hub.token).model_info("org/gated").gated == "manual"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(
            "org/gated", "nope.txt", endpoint=fake_hub.endpoint, cache_dir=cache, token=fake_hub.token
        )


def test_dropped_connections_are_retried(fake_hub: FakeHub, tmp_path: Path) -> None:
    # http_get reads the body in 10 MiB chunks (DOWNLOAD_CHUNK_SIZE) and only counts whole chunks as
    # received: a drop within the first chunk restarts from 0, a later one resumes with a Range.
    big = bytes(range(251)) * (12 * 1024 * 1024 // 251)
    fake_hub.add_commit(REPO, {**FILES, "big.safetensors": big})
    chunk = 10 * 1024 * 1024
    fake_hub.drop_after.update({"model.safetensors": 1000, "big.safetensors": chunk + 1000})
    fake_hub.drop_times = 2
    folder = snapshot(
        fake_hub, tmp_path / "cache"
    )  # huggingface_hub sleeps 1 s before retrying (in parallel)
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "big.safetensors").read_bytes() == big
    assert (fake_hub.gets("model.safetensors"), fake_hub.gets("big.safetensors"), fake_hub.drop_times) == (
        2,
        2,
        0,
    )
    assert fake_hub.ranges == [("big.safetensors", f"bytes={chunk}-")]


def test_wrong_bytes_pass_the_size_only_check(fake_hub: FakeHub, tmp_path: Path) -> None:
    # huggingface_hub 2.4 checks the size of a plain HTTP download, never its hash: the corrupted blob
    # is stored under the sha256 name of the right content.
    fake_hub.add_commit(REPO, FILES)
    fake_hub.wrong_bytes.add("model.safetensors")
    cache = tmp_path / "cache"
    path = Path(
        hf_hub_download(REPO, "model.safetensors", endpoint=fake_hub.endpoint, cache_dir=cache, token=False)
    )
    data = path.read_bytes()
    assert len(data) == len(WEIGHTS) and data != WEIGHTS
    assert path.resolve().name == hashlib.sha256(WEIGHTS).hexdigest()
    assert scan_cache_dir(cache).warnings == []


def test_raw_protocol_ranges_and_switches(fake_hub: FakeHub) -> None:
    sha = fake_hub.add_commit(REPO, FILES)
    conn = http.client.HTTPConnection(fake_hub.endpoint.removeprefix("http://"), timeout=5)
    try:

        def get(path: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
            conn.request(method, f"/{REPO}/resolve/main/{path}", headers=headers)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()

        status, headers, body = get("model.safetensors", "HEAD")
        assert (status, body, headers["X-Repo-Commit"], headers["Content-Length"]) == (200, b"", sha, "51200")
        assert headers["X-Linked-Etag"] == headers["ETag"] == f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'
        assert get("config.json", "HEAD")[1]["ETag"] == f'"{git_blob_sha1(CONFIG)}"'
        status, headers, body = get("model.safetensors", Range="bytes=10-19")
        assert (status, headers["Content-Range"], body) == (206, "bytes 10-19/51200", WEIGHTS[10:20])
        assert get("model.safetensors", Range="bytes=-5")[2] == WEIGHTS[-5:]
        assert get("model.safetensors", Range="bytes=99999-")[0] == 416
        fake_hub.ignore_range = True
        assert get("model.safetensors", Range="bytes=10-")[:3:2] == (200, WEIGHTS)
        fake_hub.slow_bps = 200_000
        began = time.monotonic()
        assert get("model.safetensors")[2] == WEIGHTS
        assert time.monotonic() - began > 0.2
        status, headers, _ = get("nope.txt")
        assert (status, headers["X-Error-Code"], headers["X-Repo-Commit"]) == (404, "EntryNotFound", sha)
    finally:
        conn.close()


def test_stop_returns_promptly_with_a_stalled_download(tmp_path: Path) -> None:
    hub = FakeHub(tmp_path / "server").start()
    hub.add_commit(REPO, FILES)
    hub.stall.add("config.json")
    conn = http.client.HTTPConnection(hub.endpoint.removeprefix("http://"), timeout=5)
    try:
        conn.request("GET", f"/{REPO}/resolve/main/config.json")
        resp = conn.getresponse()  # the headers come, the body never does
        assert resp.status == 200
        # the stalled response waits until the server stops: stop() returning at all (a deadline
        # that only a hang reaches) shows that it woke it
        stopper = threading.Thread(target=hub.stop, daemon=True)
        stopper.start()
        stopper.join(60)
        assert not stopper.is_alive(), "stop() hangs on a stalled download"
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_saved_hub_served_from_another_process(tmp_path: Path) -> None:
    hub = FakeHub(tmp_path / "server")
    sha = hub.add_commit(REPO, FILES)
    hub.save()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hubserver", str(hub.root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().strip()
        path = hf_hub_download(
            REPO, "sub/dir/tokenizer.json", endpoint=endpoint, cache_dir=tmp_path / "c", token=False
        )
        assert Path(path).read_bytes() == TOKENIZER
        assert Path(path).parent.parent.parent.name == sha
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
        assert proc.stdout is not None
        proc.stdout.close()
