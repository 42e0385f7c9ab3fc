"""Parity of the native cache scan (``mlxk.core._native.scan_cache``) with its twin (``mlxk.core.twin.scan``).

Every test builds a hub folder with the real HuggingFace layout (content-addressed blobs, relative
snapshot symlinks, refs) plus the odd things a real cache collects, and asserts that the compiled
scan returns exactly what the pure-Python twin returns: same records, values, types and order.
The native half skips when the extension is not built, unless ``MLXK_REQUIRE_NATIVE=1``.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import pickle
import random
import shutil
import socket
import struct
import tempfile
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from mlxk.core.memo_format import RECORD, MemoRecord, pack_records
from mlxk.core.records import MAX_DEPTH, CheckResult, FileEntry, RepoRecord, SnapshotRecord
from mlxk.core.twin import scan as scan_twin

Scan = Callable[..., tuple[list[RepoRecord], list[CheckResult]]]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def native() -> Scan:
    try:
        module = importlib.import_module("mlxk.core._native")
    except ImportError:
        if os.environ.get("MLXK_REQUIRE_NATIVE") == "1":
            raise
        pytest.skip("the native core is not built")
    return module.scan_cache  # type: ignore[no-any-return]


twin: Scan = scan_twin.scan_cache


# --- building caches --------------------------------------------------------------------------


def safetensors_bytes(n: int = 2, *, truncate: int = 0) -> bytes:
    header = json.dumps({"a": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    data = struct.pack("<Q", len(header)) + header + b"\x01" * (4 * n)
    return data[: len(data) - truncate]


def commit_of(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()


def add_blob(repo: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    blob = repo / "blobs" / digest
    if not blob.exists():
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
    return digest


def add_snapshot(repo: Path, commit: str, files: Mapping[str, bytes], *, copy: bool = False) -> Path:
    """A snapshot whose files are relative links into blobs/ (or plain copies, copy-mode)."""
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        path = snap / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            path.write_bytes(data)
        else:
            os.symlink("../" * (rel.count("/") + 2) + "blobs/" + add_blob(repo, data), path)
    return snap


def add_repo(hub: Path, name: str, files: Mapping[str, bytes], *, copy: bool = False) -> tuple[Path, Path]:
    repo = hub / ("models--" + name.replace("/", "--"))
    commit = commit_of(name)
    snap = add_snapshot(repo, commit, files, copy=copy)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo, snap


def model_files(**extra: bytes) -> dict[str, bytes]:
    files = {
        "config.json": b'{"model_type": "llama", "hidden_size": 64}',
        "README.md": b"---\nlicense: mit\ntags: [mlx]\n---\n# Model\n",
        "tokenizer.json": b'{"version": "1.0"}' * 20,
        "tokenizer_config.json": b'{"chat_template": "{{ messages }}"}',
        "model.safetensors": safetensors_bytes(),
    }
    files.update(extra)
    return files


def build_cache(hub: Path) -> Path:
    """One of everything the scan has a rule for."""
    hub.mkdir(parents=True, exist_ok=True)
    add_repo(hub, "mlx-community/Tiny", model_files())
    add_repo(hub, "mlx-community/Copy-Mode", model_files(), copy=True)

    # two snapshots, nested folders, every weight-file case, links gone wrong
    repo, snap = add_repo(
        hub,
        "org/Many.Cases_v1.5-3B",
        model_files(
            **{
                "sub/inner/deep.safetensors": safetensors_bytes(3),
                "sub/config.json": b'{"nested": "not read"}',
                "empty.bin": b"",
                "pytorch_model.bin": b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n",
                "short.bin": b"version",
                "weights.gguf": b"GGUF" + b"\0" * 60,
                "truncated.safetensors": safetensors_bytes(4, truncate=5),
                "tiny.safetensors": b"\x01\x02",
                "zero.safetensors": b"",
                "model.safetensors.index.json": b'{"weight_map": {}}',
                "no_template/tokenizer_config.json": b"{}",
            }
        ),
    )
    (snap / "tokenizer_config.json").unlink()
    os.symlink("../../blobs/" + add_blob(repo, b'{"bos_token": "<s>"}'), snap / "tokenizer_config.json")
    os.symlink("../../blobs/" + "0" * 64, snap / "dangling.safetensors")
    os.symlink("loop.bin", snap / "loop.bin")
    os.symlink("sub", snap / "dirlink.bin")
    os.symlink("sub", snap / "README.md.dir")
    os.symlink("sub/inner", snap / "link-to-dir.safetensors")
    deep = snap
    for level in range(MAX_DEPTH + 2):
        deep = deep / f"d{level}"
        deep.mkdir()
        (deep / f"f{level}.bin").write_bytes(b"x" * level)
    add_snapshot(repo, commit_of("older"), {"config.json": b"{}", "model.safetensors": safetensors_bytes(2)})
    (repo / "snapshots" / "not-a-snapshot.txt").write_text("junk")
    (repo / "refs" / "pr").mkdir()
    (repo / "refs" / "pr" / "1").write_bytes(b"  \t" + commit_of("older").encode() + b"\r\n")
    (repo / "refs" / "odd").write_bytes(b"\xff\xfe caf\xc3\xa9 " + b"x" * 300)
    os.symlink("pr", repo / "refs" / "dirlink")
    os.symlink("nowhere", repo / "refs" / "dangling")
    (repo / "blobs" / "abc.incomplete").write_bytes(b"partial")
    (repo / "blobs" / "zzz.incomplete").write_bytes(b"")
    (repo / "blobs" / "dir.incomplete").mkdir()
    os.symlink("nowhere", repo / "blobs" / "link.incomplete")
    locks = hub / ".locks" / repo.name
    (locks / "nested" / "deeper").mkdir(parents=True)
    (locks / "a.lock").write_text("")
    (locks / "nested" / "deeper" / "b.lock").write_text("")
    os.symlink("nowhere", locks / "dangling.lock")

    # top-level small files: too big to read, empty, a big README, a link to a folder
    repo, snap = add_repo(hub, "org/small-files", {"README.md": b"---\n" + b"r" * 20000})
    (snap / "config.json").write_bytes(b"")
    with open(snap / "x.index.json", "wb") as fh:
        fh.truncate(5 * 1024 * 1024)  # sparse, over READ_WHOLE_LIMIT
    (snap / "tokenizer_config.json").write_bytes(b' {"a": 1, "chat_template" : "t"}')
    os.symlink(".", snap / "config.json.d")

    # the small-file and weight rules on links to folders (open() fails with EISDIR)
    _, snap = add_repo(hub, "org/dir-links", {"sub/a.txt": b"a"})
    small = ["README.md", "config.json", "tokenizer_config.json", "w.index.json"]
    for name in [*small, "w.bin", "w.safetensors"]:
        os.symlink("sub", snap / name)

    # repos that are not folders, or not there
    (hub / "models--plain-file").write_text("not a repo")
    os.symlink("models--nowhere", hub / "models--dangling-link")
    os.symlink("models--self-loop", hub / "models--self-loop")
    os.symlink("models--mlx-community--Tiny", hub / "models--linked-repo")
    (hub / "models--empty").mkdir()
    snaps_file = hub / "models--snapshots-is-a-file"
    snaps_file.mkdir()
    (snaps_file / "snapshots").write_text("")
    (snaps_file / "refs").write_text("")
    (snaps_file / "blobs").write_text("")

    add_links(hub)

    # entries the scan ignores
    (hub / "datasets--x--y" / "snapshots").mkdir(parents=True)
    (hub / "spaces--y--z" / "snapshots").mkdir(parents=True)
    (hub / "version.txt").write_text("1")
    (hub / "junk").mkdir()
    (hub / ".locks" / "datasets--x--y").mkdir(parents=True)
    return hub


SECRET = b"root:x:0:0:root:/root:/bin/bash\n"


def add_links(hub: Path) -> None:
    """Links that lead outside the hub root (never followed) and links that stay inside it."""
    outside = hub.parent / "outside-the-hub"
    outside.mkdir(exist_ok=True)
    (outside / "passwd").write_bytes(SECRET)
    (outside / "config.json").write_bytes(b'{"model_type": "outside-secret"}')
    elsewhere, _ = add_repo(outside, "org/elsewhere", model_files())

    # a repo folder, or one of its folders, leading outside
    os.symlink(elsewhere, hub / "models--org--repo-outside")
    for folder in ("refs", "snapshots", "blobs"):
        repo, _ = add_repo(hub, f"org/{folder}-outside", model_files())
        shutil.rmtree(repo / folder)
        os.symlink(elsewhere / folder, repo / folder)

    # files leading outside: directly, or through a blob that is a link
    repo, snap = add_repo(hub, "org/links", model_files())
    config_blob = Path(os.readlink(snap / "config.json")).name
    (repo / "blobs" / config_blob).unlink()
    os.symlink(outside / "config.json", repo / "blobs" / config_blob)  # a blob that is a link
    os.symlink("../../blobs/" + "b" * 64, snap / "zero.safetensors")
    os.symlink("/dev/zero", repo / "blobs" / ("b" * 64))
    os.symlink(outside / "passwd", snap / "secret.txt")  # absolute, outside
    os.symlink("../../../../outside-the-hub/passwd", snap / "relative-secret.md")
    tokenizer = (snap / "tokenizer.json").resolve()
    os.symlink(tokenizer, snap / "absolute-inside.json")  # absolute, inside: followed
    (repo / "refs" / "main").unlink()
    os.symlink(outside / "passwd", repo / "refs" / "main")  # a ref that is a link: never read
    (repo / "refs" / "inside").symlink_to("../snapshots")  # nor this one
    locks = hub / ".locks"
    locks.mkdir(exist_ok=True)
    os.symlink(outside, locks / repo.name)  # its locks: outside, not listed

    # snapshots/ a link inside the hub: ../../blobs/<x> is resolved through it, not by name
    repo, _ = add_repo(hub, "org/snapshots-inside", {"config.json": b"{}"})
    shutil.rmtree(repo / "snapshots")
    os.symlink("../models--mlx-community--Tiny/snapshots", repo / "snapshots")


def memo_rows(fresh: Iterable[CheckResult]) -> list[MemoRecord]:
    return [(c.dev, c.ino, c.size, c.mtime_ns, c.kind, c.code, c.detail) for c in fresh]


def assert_same(native_result: Any, twin_result: Any, label: str = "") -> None:
    assert native_result == twin_result, label
    assert repr(native_result) == repr(twin_result), label  # also compares the NamedTuple classes


def check_types(result: tuple[list[RepoRecord], list[CheckResult]]) -> None:
    records, fresh = result
    assert type(records) is list and type(fresh) is list
    for rec in records:
        assert type(rec) is RepoRecord
        for snap in rec.snapshots:
            assert type(snap) is SnapshotRecord
            assert all(type(f) is FileEntry for f in snap.files)
    assert all(type(c) is CheckResult for c in fresh)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return build_cache(tmp_path / "hub")


# --- parity -----------------------------------------------------------------------------------


def test_full_scan(native: Scan, cache: Path) -> None:
    result = native(str(cache))
    assert_same(result, twin(str(cache)))
    check_types(result)
    records, fresh = result
    names = [r.dirname for r in records]
    assert names == sorted(names) and all(n.startswith("models--") for n in names)
    by_name = {r.dirname: r for r in records}
    assert by_name["models--plain-file"].errno == errno.ENOTDIR
    assert by_name["models--dangling-link"].errno == errno.ENOENT
    assert by_name["models--self-loop"].errno == errno.ELOOP
    assert by_name["models--linked-repo"].errno == 0
    assert fresh, "weight files are checked when the memo is empty"


def test_links_are_followed_only_inside_the_hub(native: Scan, cache: Path) -> None:
    from mlxk.core import codes

    result = native(str(cache))
    assert_same(result, twin(str(cache)))
    by_name = {r.dirname: r for r in result[0]}
    for folder in ("repo", "refs", "snapshots", "blobs"):
        assert by_name[f"models--org--{folder}-outside"] == RepoRecord(
            f"models--org--{folder}-outside", errno.EXDEV, [], [], [], []
        )
    links = by_name["models--org--links"]
    assert links.refs == [] and links.locks == []
    files = {f.path: f for f in links.snapshots[0].files}
    not_followed = {p: f.check for p, f in files.items() if not f.exists}
    assert not_followed == {
        "config.json": codes.BLOB_IS_LINK,
        "zero.safetensors": codes.BLOB_IS_LINK,
        "secret.txt": codes.LINK_OUTSIDE,
        "relative-secret.md": codes.LINK_OUTSIDE,
    }
    assert all(f.content is None and f.size == -1 for p, f in files.items() if p in not_followed)
    assert files["absolute-inside.json"].exists and files["README.md"].content  # inside: read
    inside = by_name["models--org--snapshots-inside"].snapshots
    assert inside == by_name["models--mlx-community--Tiny"].snapshots
    assert SECRET.decode()[:6] not in repr(result)


@pytest.mark.parametrize("threads", [0, 1, 2, 3, 64, -1])
def test_thread_counts(native: Scan, cache: Path, threads: int) -> None:
    assert_same(native(str(cache), threads=threads), twin(str(cache)))


def test_threads_agree(native: Scan, cache: Path) -> None:
    one, two, auto = (native(cache, threads=n) for n in (1, 2, 0))
    assert_same(one, two)
    assert_same(one, auto)


def test_repo_subset(native: Scan, cache: Path) -> None:
    absolute = str(cache / "models--mlx-community--Tiny")
    repos = [
        "models--org--small-files",
        "models--mlx-community--Tiny",
        "models--mlx-community--Tiny",  # twice
        "models--missing",
        "models--plain-file",
        "models--org--Many.Cases_v1.5-3B/",  # trailing slash: os.path.join keeps it
        "datasets--x--y",  # anything named is scanned
        absolute,  # os.path.join(root, "/abs") is "/abs"
        "",
    ]
    result = native(cache, repos=repos)
    assert_same(result, twin(cache, repos=repos))
    assert [r.dirname for r in result[0]] == sorted(repos)
    assert_same(native(cache, repos=iter(repos)), twin(cache, repos=repos))
    assert_same(native(cache, repos=[]), ([], []))
    paths = [Path("models--org--small-files"), Path(absolute)]  # os.PathLike names, as the twin takes
    assert_same(native(cache, repos=paths), twin(cache, repos=paths))


def test_memo_round_trip(native: Scan, cache: Path) -> None:
    records, fresh = native(cache)
    assert fresh
    memo = pack_records(memo_rows(fresh))
    again, none = native(cache, memo=memo)
    assert none == []
    assert_same(again, records)
    assert_same(native(cache, memo=memo), twin(cache, memo=memo))
    assert_same(native(cache, memo=bytearray(memo), threads=1), twin(cache, memo=memo))
    assert_same(native(cache, memo=memoryview(memo)), twin(cache, memo=memo))


def test_memo_answers_and_misses(native: Scan, cache: Path) -> None:
    _, fresh = twin(cache)
    rows = memo_rows(fresh)
    fake = [(d, i, s, m, k, 17, 1000 + n) for n, (d, i, s, m, k, _c, _x) in enumerate(rows)]
    stale = [(d, i, s + 1, m, k, 3, 3) for d, i, s, m, k, _c, _x in rows[::2]]  # size changed
    old = [(d, i, s, m - 1, k, 3, 3) for d, i, s, m, k, _c, _x in rows[1::2]]  # mtime changed
    other_kind = [(d, i, s, m, 3 - k, 5, 5) for d, i, s, m, k, _c, _x in rows]
    memos = {
        "answers": pack_records(fake),
        "misses": pack_records(stale + old + other_kind),
        "mixed": pack_records(fake[::3] + stale),
        # raw bodies: unsorted, repeated keys (the later record wins), a partial record at the end
        "unsorted": b"".join(RECORD.pack(*r) for r in reversed(fake)),
        "repeats": b"".join(RECORD.pack(*r) for r in fake + rows + stale + fake[::2]),
        "partial": pack_records(fake) + b"\x01" * 20,
    }
    for label, memo in memos.items():
        result = native(cache, memo=memo)
        assert_same(result, twin(cache, memo=memo), label)
        assert_same(native(cache, memo=memo, threads=1), result, label)
    records, none = native(cache, memo=memos["answers"])
    assert none == []
    checked = [f for r in records for s in r.snapshots for f in s.files if f.check == 17]
    assert len(checked) == len(fake)


def test_memo_must_be_bytes_like(native: Scan, cache: Path) -> None:
    for bad in (None, "text", 5):
        with pytest.raises(TypeError):
            twin(cache, memo=bad)
        with pytest.raises(TypeError):
            native(cache, memo=bad)


def test_missing_and_empty_root(native: Scan, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        twin(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        native(tmp_path / "nope")
    with pytest.raises(NotADirectoryError):
        native(__file__)
    assert_same(native(tmp_path), twin(tmp_path))
    assert native(tmp_path) == ([], [])
    for scan in (twin, native):
        with pytest.raises(ValueError):
            scan(tmp_path, repos=["models--a\0b"])
        with pytest.raises(TypeError):
            scan(tmp_path, repos=[b"models--a"])


def test_names_sort_as_python_str(native: Scan, tmp_path: Path) -> None:
    """Code-point order of the decoded names, not byte order, even for undecodable bytes."""
    hub = tmp_path / "hub"
    _, snap = add_repo(hub, "org/names", {"a.json": b"{}"})
    raw = [
        *(b"\xc3\xa9.bin", b"\xff.bin", b"\x80x", b"\xee\x80\x80.bin", b"\xed\xa0\x80.bin", b"\xe2\x82"),
        *(b"\xf0\x9f\x98\x80.bin", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"Z", b"a\xcc\x81", b"\xe0\x80\x80"),
    ]
    base = os.fsencode(snap)
    made = 0
    for name in raw:
        try:
            with open(base + b"/" + name, "wb") as fh:
                fh.write(name)
            os.makedirs(base + b"/dir" + name)
            with open(base + b"/dir" + name + b"/" + name + b".safetensors", "wb") as fh:
                fh.write(safetensors_bytes())
            made += 1
        except OSError:  # file systems that insist on valid UTF-8 names (APFS)
            continue
    if made < 2:
        pytest.skip("the file system takes no undecodable names")
    refs = os.fsencode(hub / "models--org--names" / "refs")
    locks = os.fsencode(hub / ".locks" / "models--org--names")
    os.makedirs(locks)
    for name in raw:
        for folder in (refs, locks):
            try:
                with open(folder + b"/" + name, "wb") as fh:
                    fh.write(b"\xfe" + name + b" \n")
            except OSError:
                continue
    result = native(hub)
    assert_same(result, twin(hub))
    top = [f.path for f in result[0][0].snapshots[0].files if "/" not in f.path]
    assert top == sorted(top) and top != sorted(top, key=os.fsencode)
    assert_same(native(hub, threads=1), result)


def test_paths_past_path_max(native: Scan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries whose full path the twin cannot even lstat (ENAMETOOLONG) are skipped alike."""
    path_max = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096
    base = tmp_path
    while len(str(base)) < path_max - 900:
        base = base / ("p" * 200)
    base.mkdir(parents=True)
    hub = base / "hub"
    repo, snap = add_repo(hub, "o/" + "r" * 60, {"config.json": b"{}"})
    monkeypatch.chdir(snap)
    folder = "n" * 200
    for _level in range(4):
        os.mkdir(folder)
        os.chdir(folder)
        for size in (10, 100, 250):
            with open("w" * (size - 4) + ".bin", "wb") as fh:
                fh.write(b"z" * size)
    monkeypatch.chdir(repo / "snapshots")
    long_commit = "c" * 250
    os.mkdir(long_commit)
    with open(os.path.join(long_commit, "README.md"), "wb") as fh:
        fh.write(b"hi")
    result = native(hub)
    assert_same(result, twin(hub))
    expected = {"config.json"}
    rel = ""
    for _level in range(4):
        rel += folder + "/"
        if len(f"{snap}/{rel}") - 1 >= path_max:
            break
        room = path_max - len(f"{snap}/{rel}")
        expected |= {rel + "w" * (n - 4) + ".bin" for n in (10, 100, 250) if n - 4 < room}
    snapshot = next(s for s in result[0][0].snapshots if s.commit == snap.name)
    assert {f.path for f in snapshot.files} == expected
    assert len(expected) < 1 + 4 * 3, "some entries lie past PATH_MAX"


def test_sockets_and_odd_file_types(native: Scan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    _, snap = add_repo(hub, "org/odd", {"config.json": b"{}"})
    monkeypatch.chdir(snap)  # AF_UNIX paths are short: bind relative names
    for name in ("README.md", "model.bin", "model.safetensors", "config.json.sock"):
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(name)
        sock.close()
    assert_same(native(hub), twin(hub))


def _scan_both_as(uid: int, hub: Path) -> tuple[Any, Any]:
    """Both scans in a child process running as ``uid`` (root reads everything)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            scan = importlib.import_module("mlxk.core._native").scan_cache
            results = (scan(str(hub)), twin(str(hub)), scan(str(hub), threads=1))
            payload = pickle.dumps(("ok", results))
        except BaseException:  # anything goes back to the parent
            payload = pickle.dumps(("error", traceback.format_exc()))
        with os.fdopen(write_fd, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as src:
        payload = src.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    outcome, results = pickle.loads(payload)
    assert outcome == "ok", results
    native_result, twin_result, single = results
    assert_same(single, native_result)
    return native_result, twin_result


@pytest.mark.skipif(IS_ROOT and not hasattr(os, "fork"), reason="needs fork to drop root")
def test_unreadable_folders(native: Scan) -> None:
    """Permission errors: repo (its errno), snapshot (its errno, keeping what came before), refs,
    nested folders (the twin aborts the whole snapshot there), a folder listable but not searchable."""
    base = Path(tempfile.mkdtemp(prefix="mlxk-perm-"))
    umask = os.umask(0o022)
    try:
        os.chmod(base, 0o755)
        hub = build_cache(base / "hub")
        _, snap = add_repo(hub, "org/locked-repo", model_files())
        (hub / "models--org--locked-repo").chmod(0o000)
        repo, snap = add_repo(hub, "org/locked-bits", model_files(**{"m/x.bin": b"1", "z/y.bin": b"2"}))
        locked_snapshot = add_snapshot(repo, commit_of("locked"), {"config.json": b"{}"})
        locked_snapshot.chmod(0o000)
        (snap / "m").chmod(0o000)  # nested: the twin stops the snapshot at "m"
        (repo / "refs").chmod(0o300)  # not listable
        no_search = add_snapshot(repo, commit_of("no-x"), {"config.json": b"{}", "a.bin": b"1"}, copy=True)
        no_search.chmod(0o444)  # listable, entries cannot be stat'ed
        (hub / ".locks" / repo.name).mkdir(parents=True)
        (hub / ".locks" / repo.name / "x.lock").write_text("")
        (hub / ".locks" / repo.name).chmod(0o000)
        if IS_ROOT:
            native_result, twin_result = _scan_both_as(65534, hub)
        else:
            native_result, twin_result = native(str(hub)), twin(str(hub))
        assert_same(native_result, twin_result)
        by_name = {r.dirname: r for r in native_result[0]}
        assert by_name["models--org--locked-repo"].errno == errno.EACCES
        snaps = {s.commit: s for s in by_name["models--org--locked-bits"].snapshots}
        assert snaps[commit_of("locked")].errno == errno.EACCES
        assert snaps[commit_of("org/locked-bits")].errno == errno.EACCES
        assert snaps[commit_of("no-x")].errno == errno.EACCES  # not "its files are missing"
    finally:
        os.umask(umask)
        for path, dirs, _files in os.walk(base):  # top-down: a folder opens before it is entered
            for name in dirs:
                full = os.path.join(path, name)
                if not os.path.islink(full):
                    os.chmod(full, 0o755)
        shutil.rmtree(base)


# --- stress -----------------------------------------------------------------------------------


def _random_repo(rng: random.Random, hub: Path, index: int) -> str:
    name = f"org{rng.randrange(5)}/model-{index:03d}" + rng.choice(["", ".v2", "_x", "-4bit", ".Q8_0"])
    pool: list[tuple[str, Callable[[], bytes]]] = [
        ("config.json", lambda: json.dumps({"i": index}).encode()),
        ("README.md", lambda: b"---\ntags: [a]\n---\n" * rng.randrange(1, 4)),
        ("tokenizer_config.json", lambda: rng.choice([b'{"chat_template": 1}', b"{}"])),
        ("tokenizer.json", lambda: b"{}"),
        ("model.safetensors", lambda: safetensors_bytes(rng.randrange(1, 5), truncate=rng.choice([0, 0, 3]))),
        ("model-00001-of-00002.safetensors", lambda: safetensors_bytes(2)),
        ("model.safetensors.index.json", lambda: b'{"weight_map": {}}'),
        ("pytorch_model.bin", lambda: rng.choice([b"", b"version https://git-lfs.x", b"\x80" * 30])),
        ("weights.npz", lambda: b"PK"),
        ("sub/a.json", lambda: b"{}"),
        ("sub/deeper/w.pt", lambda: b"w"),
        ("x.index.json", lambda: b"[]"),
    ]
    files = {rel: make() for rel, make in rng.sample(pool, rng.randrange(0, len(pool)))}
    repo, snap = add_repo(hub, name, files, copy=rng.random() < 0.2)
    for _ in range(rng.randrange(0, 3)):
        some = dict(rng.sample(sorted(files.items()), len(files) // 2))
        add_snapshot(repo, commit_of(f"{name}{rng.random()}"), some)
    roll = rng.random()
    if roll < 0.1:
        os.symlink("../../blobs/" + "f" * 64, snap / "gone.safetensors")
    elif roll < 0.15:
        shutil.rmtree(repo / "snapshots")
    elif roll < 0.2:
        shutil.rmtree(repo / "refs")
    elif roll < 0.25:
        (repo / "blobs").mkdir(exist_ok=True)
        (repo / "blobs" / f"{index}.incomplete").write_bytes(b"x" * rng.randrange(100))
    elif roll < 0.3:
        locks = hub / ".locks" / repo.name / "sub"
        locks.mkdir(parents=True)
        (locks / "f.lock").write_text("")
        (locks.parent / "g.lock").write_text("")
    elif roll < 0.33:
        os.symlink("missing-blob", snap / "README.md.tmp")
    return repo.name


def test_stress_random_layouts(native: Scan, tmp_path: Path) -> None:
    rng = random.Random(20240607)
    hub = tmp_path / "hub"
    hub.mkdir()
    names = [_random_repo(rng, hub, i) for i in range(200)]
    for i in range(5):
        (hub / f"models--junk-file-{i}").write_bytes(b"")
    expected = twin(str(hub))
    assert len(expected[0]) == len(set(names)) + 5
    for threads in (0, 1, 3):
        assert_same(native(str(hub), threads=threads), expected)
    memo = pack_records(memo_rows(expected[1][::2]))
    assert_same(native(hub, memo=memo), twin(hub, memo=memo))
    subset = rng.sample(names, 40)
    assert_same(native(hub, repos=subset, threads=2), twin(hub, repos=subset))


def _flatten(records: Iterable[RepoRecord]) -> list[tuple[str, str]]:
    return [(r.dirname, f.path) for r in records for s in r.snapshots for f in s.files]


def test_repeated_scans_are_stable(native: Scan, cache: Path) -> None:
    first = native(cache)
    for _ in range(5):
        assert_same(native(cache, threads=2), first)
    assert _flatten(first[0]) == _flatten(twin(cache)[0])
