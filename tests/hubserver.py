"""A small imitation of the Hugging Face Hub, served over HTTP on 127.0.0.1 for tests and benchmarks.

It speaks just enough of the Hub's protocol for the real ``huggingface_hub`` client (``snapshot_download``,
``hf_hub_download``, ``HfApi.model_info/repo_info/list_repo_tree``) pointed at it with ``endpoint=`` or
``HF_ENDPOINT``: the model info and tree APIs, ``HEAD``/``GET`` on ``/{repo}/resolve/{revision}/{path}`` with
ranges, and errors carrying ``X-Error-Code`` so the client raises its own exceptions. Switches on ``FakeHub``
break downloads on purpose (dropped connections, corrupted bytes, throttling, stalls, ignored ranges).

File contents live on disk under ``root/blobs`` (named by sha256) so that large files are streamed with
``sendfile`` rather than held in memory; ``save``/``load`` share the repos with another process, and
``python -m tests.hubserver ROOT`` serves a saved hub, printing its endpoint as the first line of stdout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".npz")
LFS_MIN_SIZE = 10 * 1024
MANIFEST = "fakehub.json"
CHUNK = 256 * 1024
_XOR = bytes(i ^ 0xFF for i in range(256))


def git_blob_sha1(data: bytes) -> str:
    """The git object id of ``data`` stored as a blob (what the Hub calls blobId / oid)."""
    digest = hashlib.sha1(b"blob %d\0" % len(data))
    digest.update(data)
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    sha256: str  # of the content: the name of the stored blob, and the etag of LFS files
    blob_id: str  # git blob sha1; of the LFS pointer for LFS files, as on the real Hub
    lfs: bool
    pointer_size: int

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id

    def lfs_info(self, hash_key: str) -> dict[str, Any]:
        # model_info names the hash "sha256", the tree listing "oid".
        return {hash_key: self.sha256, "size": self.size, "pointerSize": self.pointer_size}


@dataclass
class Commit:
    date: str
    files: dict[str, Entry]


@dataclass
class Repo:
    private: bool = False
    gated: bool | str = False  # False, or the Hub's mode: "auto" or "manual" (True means "manual")
    refs: dict[str, str] = field(default_factory=dict)  # branches and tags -> commit sha
    commits: dict[str, Commit] = field(default_factory=dict)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The half-open span asked for by a single ``Range: bytes=`` header, None to send everything.

    An empty span (start >= end) means the range cannot be satisfied."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None  # multiple ranges: the client never asks, a full 200 is a valid answer
    first, _, last = header[len("bytes=") :].strip().partition("-")
    try:
        if first:
            start, end = int(first), (min(int(last) + 1, size) if last else size)
        else:
            start, end = max(size - int(last), 0), size
    except ValueError:
        return None  # RFC 9110: a malformed Range is ignored
    return start, end


class FakeHub:
    """Repos and switches, served on 127.0.0.1 between start() and stop().

    Switches (set them any time): ``drop_after`` {path: n} closes a GET after n body bytes, ``drop_times``
    times (-1: always); ``wrong_bytes`` paths come with every byte inverted; ``ignore_range`` answers
    ranges with a full 200; ``slow_bps`` throttles bodies; ``stall`` paths never get their body; ``deny``
    paths are refused (403, as the Hub refuses a gated file to a token without access); ``hold`` paths
    get theirs once taken out of the set (a download that is surely under way while a test does
    something, however slow the machine); ``fail`` {what: status} answers with that HTTP status and
    no error code, as an overloaded Hub or a proxy in front of it does (``"api"``: the model info,
    else a file path); ``wrong_length`` {path: n} sends a GET of that file a body n bytes longer (zeros
    added; n < 0: shorter), with a ``Content-Length`` that matches it, so that the connection stays
    whole but the file is not of the size the HEAD announced.
    """

    def __init__(self, root: Path, token: str = "hf_test_token") -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.token = token
        self.endpoint = ""
        self.repos: dict[str, Repo] = {}
        # The handler threads read the switches and update the counters under this lock.
        self.lock = threading.Lock()
        self.drop_after: dict[str, int] = {}
        self.drop_times = -1
        self.wrong_bytes: set[str] = set()
        self.ignore_range = False
        self.slow_bps: int | None = None
        self.stall: set[str] = set()
        self.deny: set[str] = set()
        self.hold: set[str] = set()
        self.fail: dict[str, int] = {}
        self.wrong_length: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[tuple[str, str]] = []  # (file path, Range header) of every GET that had one
        self.errors: list[str] = []  # tracebacks of unexpected server-side exceptions (never printed)
        self._gets: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- content -------------------------------------------------------------------------------------------

    def add_commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        branch: str = "main",
        tags: Sequence[str] = (),
        gated: bool | str = False,
        private: bool = False,
        commit: str | None = None,
    ) -> str:
        """Adds a commit (``commit``, a 40-hex id; by default one derived from the content) and
        points ``branch`` and ``tags`` at it."""
        digest = hashlib.sha1(repo_id.encode() + b"\0")
        for name in sorted(files):
            digest.update(b"%s\0%d\0" % (name.encode(), len(files[name])))
            digest.update(files[name])
        digest.update(branch.encode())
        sha = commit or digest.hexdigest()
        entries = {name: self._store(name, data) for name, data in files.items()}
        date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        with self.lock:
            repo = self.repos.setdefault(repo_id, Repo())
            repo.private, repo.gated = private, ("manual" if gated is True else gated)
            repo.commits[sha] = Commit(date, entries)
            for ref in (branch, *tags):
                repo.refs[ref] = sha
        return sha

    def _store(self, path: str, data: bytes) -> Entry:
        sha256 = hashlib.sha256(data).hexdigest()
        dest = self.root / "blobs" / sha256
        if not dest.exists():
            # Written aside and renamed so that a concurrent reader never sees half a blob.
            tmp = dest.with_name(f"{sha256}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
        if path.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN_SIZE:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
            return Entry(path, len(data), sha256, git_blob_sha1(pointer), True, len(pointer))
        return Entry(path, len(data), sha256, git_blob_sha1(data), False, 0)

    def gets(self, path: str) -> int:
        with self.lock:
            return self._gets[path]

    def save(self) -> None:
        with self.lock:
            repos = {rid: dataclasses.asdict(r) for rid, r in self.repos.items()}
        (self.root / MANIFEST).write_text(json.dumps({"token": self.token, "repos": repos}, indent=1))

    @classmethod
    def load(cls, root: Path) -> FakeHub:
        data = json.loads((Path(root) / MANIFEST).read_text())
        hub = cls(root, token=data["token"])
        for repo_id, raw in data["repos"].items():
            commits = {
                sha: Commit(c["date"], {p: Entry(**e) for p, e in c["files"].items()})
                for sha, c in raw["commits"].items()
            }
            hub.repos[repo_id] = Repo(raw["private"], raw["gated"], raw["refs"], commits)
        return hub

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        self._stopping.clear()
        self._server = _Server(self)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval keeps shutdown() (and so stop()) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes stalled and throttled responses
        server.shutdown()
        # Idle keep-alive connections block their thread in readline(); shutting their sockets wakes them,
        # so that server_close() can join every handler thread and no socket is left open.
        with self.lock:
            conns = list(server.conns)
        for conn in conns:
            _shutdown(conn)
        server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _shutdown(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer or by its thread
        conn.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # snapshot_download opens several connections at once

    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        self.conns: set[socket.socket] = set()
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that go away, and sockets shut by stop(), are normal here; anything else is kept for the
        # tests to look at instead of being printed to stderr.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)) and not self.hub._stopping.is_set():
            with self.hub.lock:
                self.hub.errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

    @property
    def hub(self) -> FakeHub:
        return cast(_Server, self.server).hub

    def setup(self) -> None:
        super().setup()
        # Small JSON answers are written as headers then body: without NODELAY, Nagle and delayed ACKs
        # add ~40 ms to every API call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.hub.lock:
            cast(_Server, self.server).conns.add(self.connection)
        if self.hub._stopping.is_set():  # accepted while stop() ran, after it looked at the connections
            _shutdown(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.hub.lock:
                cast(_Server, self.server).conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:
            with self.hub.lock:
                self.hub.requests.append((self.command, self.path))
        return ok

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        url = urlsplit(self.path)
        # Split before unquoting: revisions come url-encoded with "/" as %2F (refs%2Fpr%2F1).
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        query = {k: v[-1].lower() for k, v in parse_qs(url.query).items()}
        try:
            if parts[:2] == ["api", "models"] and len(parts) > 2:
                self._api(parts[2:], query, head)
            elif "resolve" in parts[1:3]:
                at = parts.index("resolve", 1)
                self._resolve("/".join(parts[:at]), parts[at + 1 : at + 2], "/".join(parts[at + 2 :]), head)
            else:
                self._error(404, "", "Not Found", head)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    # -- routes --------------------------------------------------------------------------------------------

    def _api(self, rest: list[str], query: dict[str, str], head: bool) -> None:
        with self.hub.lock:
            two = "/".join(rest[:2]) in self.hub.repos
            failing = self.hub.fail.get("api")
        if failing is not None:
            self._error(failing, "", "Service Unavailable", head)
            return
        n = 2 if len(rest) >= 2 and (two or rest[1] not in ("revision", "tree")) else 1
        repo_id, tail = "/".join(rest[:n]), rest[n:]
        if not tail:
            revision = "main"
        elif tail[0] in ("revision", "tree") and len(tail) >= 2:
            revision = tail[1]
        else:
            self._error(404, "", "Not Found", head)
            return
        found = self._lookup(repo_id, revision, head, files=False)
        if found is None:
            return
        repo, sha, commit = found
        if tail and tail[0] == "tree":
            self._tree(sha, commit, "/".join(tail[2:]).strip("/"), query, head)
            return
        blobs = query.get("blobs") in ("true", "1")
        siblings: list[dict[str, Any]] = []
        for entry in sorted(commit.files.values(), key=lambda e: e.path):
            sibling: dict[str, Any] = {"rfilename": entry.path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.blob_id)
                if entry.lfs:
                    sibling["lfs"] = entry.lfs_info("sha256")
            siblings.append(sibling)
        info = {"id": repo_id, "modelId": repo_id, "sha": sha, "lastModified": commit.date, "tags": []}
        self._json({**info, "private": repo.private, "gated": repo.gated, "siblings": siblings}, head)

    def _tree(self, sha: str, commit: Commit, path: str, query: dict[str, str], head: bool) -> None:
        dirs = {
            f.path.rsplit("/", i)[0] for f in commit.files.values() for i in range(1, f.path.count("/") + 1)
        }
        if path and path not in dirs:
            self._error(404, "EntryNotFound", f"{path} does not exist on this revision", head, sha)
            return
        base = f"{path}/" if path else ""
        recursive = query.get("recursive") in ("true", "1")

        def wanted(p: str) -> bool:
            return p.startswith(base) and (recursive or "/" not in p[len(base) :])

        last = {"id": sha, "title": "Upload files", "date": commit.date}
        items: list[dict[str, Any]] = []
        for d in sorted(filter(wanted, dirs)):  # the Hub lists folders first
            oid = hashlib.sha1(f"{sha}:{d}".encode()).hexdigest()
            items.append({"type": "directory", "oid": oid, "size": 0, "path": d})
        for e in sorted((e for e in commit.files.values() if wanted(e.path)), key=lambda e: e.path):
            lfs = {"lfs": e.lfs_info("oid")} if e.lfs else {}
            items.append({"type": "file", "oid": e.blob_id, "size": e.size, "path": e.path, **lfs})
        if query.get("expand") in ("true", "1"):
            for item in items:
                item["lastCommit"] = last
        self._json(items, head)

    def _resolve(self, repo_id: str, revision: list[str], path: str, head: bool) -> None:
        hub = self.hub
        if not head:
            with hub.lock:
                hub._gets[path] += 1
        found = self._lookup(repo_id, revision[0] if revision else "", head, files=True)
        if found is None:
            return
        _, sha, commit = found
        with hub.lock:
            denied = path in hub.deny
            failing = hub.fail.get(path)
        if failing is not None:
            self._error(failing, "", "Service Unavailable", head)
            return
        if denied:
            msg = f"Access to model {repo_id} is restricted and you are not in the authorized list."
            self._error(403, "GatedRepo", msg, head)
            return
        entry = commit.files.get(path)
        if entry is None:
            # The client caches the absence under .no_exist/<commit>, which needs X-Repo-Commit.
            self._error(404, "EntryNotFound", f"{path} does not exist on this revision", head, sha)
            return
        with hub.lock:
            wrong, stall = path in hub.wrong_bytes, path in hub.stall
            bps, ignore = hub.slow_bps, hub.ignore_range
            drop = hub.drop_after.get(path) if hub.drop_times != 0 else None
            extra = 0 if head else hub.wrong_length.get(path, 0)
            if not head and self.headers.get("Range"):
                hub.ranges.append((path, self.headers["Range"]))
        span = None if ignore else byte_range(self.headers.get("Range"), entry.size)
        if span and span[0] >= span[1]:
            self._json(
                {"error": "Range Not Satisfiable"}, head, 416, {"Content-Range": f"bytes */{entry.size}"}
            )
            return
        start, end = span or (0, entry.size)
        self.send_response(206 if span else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(max(end - start + extra, 0)))
        if span:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{entry.size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{entry.etag}"')
        self.send_header("X-Repo-Commit", sha)
        if entry.lfs:
            self.send_header("X-Linked-Etag", f'"{entry.sha256}"')
            self.send_header("X-Linked-Size", str(entry.size))
        self.end_headers()
        if head:
            return
        if stall:
            hub._stopping.wait()
            self.close_connection = True
            return
        while path in hub.hold:
            if hub._stopping.wait(0.01):
                self.close_connection = True
                return
        if extra:
            with open(hub.root / "blobs" / entry.sha256, "rb") as f:
                f.seek(start)
                body = f.read(end - start)
            self.wfile.write(body[: len(body) + extra] if extra < 0 else body + bytes(extra))
            return
        count = end - start
        if drop is not None and drop < count:
            with hub.lock:
                dropping = hub.drop_times != 0  # re-checked: another thread may have used the last drop
                if dropping and hub.drop_times > 0:
                    hub.drop_times -= 1
            if dropping:
                count = drop
                # A clean FIN after a short body: the client sees RemoteProtocolError and resumes with a
                # Range. (A RST would surface as httpx ReadError, which huggingface_hub does not retry.)
                self.close_connection = True
        with open(hub.root / "blobs" / entry.sha256, "rb") as f:
            if not (wrong or bps or self.close_connection):
                self.connection.sendfile(f, start, count)
                return
            f.seek(start)
            began, sent = time.monotonic(), 0
            while sent < count:
                data = f.read(min(CHUNK, count - sent, max(bps // 20, 1) if bps else CHUNK))
                if not data:
                    break
                self.wfile.write(data.translate(_XOR) if wrong else data)
                sent += len(data)
                # Pace by total bytes sent rather than per chunk, so that sleep overshoot does not accumulate.
                if bps and hub._stopping.wait(max(began + sent / bps - time.monotonic(), 0)):
                    self.close_connection = True
                    return

    # -- helpers -------------------------------------------------------------------------------------------

    def _lookup(
        self, repo_id: str, revision: str, head: bool, *, files: bool
    ) -> tuple[Repo, str, Commit] | None:
        """The repo, commit sha and commit for a request, or None once an error has been sent.

        As on the Hub, a gated repo's model info and file listing are public (``gated`` says how
        access is granted); only its ``files`` (``resolve``) need a token with access."""
        hub = self.hub
        authorized = self.headers.get("Authorization") == f"Bearer {hub.token}"
        with hub.lock:
            repo = hub.repos.get(repo_id)
            sha = None if repo is None else repo.refs.get(revision, revision)
            commit = None if repo is None or sha is None else repo.commits.get(sha)
        if repo is None or (repo.private and not authorized):
            # Like the Hub, a private repo is not revealed to the unauthorized: it is "not found" too.
            status = 401 if repo is not None else 404
            self._error(status, "RepoNotFound", "Repository not found", head)
        elif files and repo.gated and not authorized:
            msg = f"Access to model {repo_id} is restricted. You must be authenticated to access it."
            self._error(401, "GatedRepo", msg, head)
        elif sha is None or commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        else:
            return repo, sha, commit
        return None

    def _json(self, obj: Any, head: bool, status: int = 200, extra: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:  # HEAD answers carry the headers only, or the keep-alive stream would desynchronize
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, head: bool, commit: str | None = None) -> None:
        # hf_raise_for_status picks the exception class from X-Error-Code and shows X-Error-Message
        # (deduplicated with the body's "error").
        extra = {"X-Error-Code": code, "X-Error-Message": message} if code else {}
        if commit:
            extra["X-Repo-Commit"] = commit
        self._json({"error": message}, head, status, extra)


def main(argv: Sequence[str]) -> int:
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    with FakeHub.load(Path(argv[0])) as hub:
        print(hub.endpoint, flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
