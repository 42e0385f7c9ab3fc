"""Content hashing (``HashJob``): the native core (C threads, libcrypto) and its pure-Python twin.

Every test runs against both implementations (``core`` fixture) and checks the results against
hashlib, ``git hash-object`` and ``os.stat``, never only one implementation against the other.
The native half skips when the extension is not built, unless ``MLXK_REQUIRE_NATIVE=1``.
"""

from __future__ import annotations

import ctypes.util
import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mlxk.core
from mlxk.core.codes import ALGO_GIT_SHA1, ALGO_SHA256, HASH_CHUNK
from tests.conftest import native_module

ALGOS = [ALGO_SHA256, ALGO_GIT_SHA1]
SIZES = [0, 1, HASH_CHUNK - 1, HASH_CHUNK, HASH_CHUNK + 1, 3 * HASH_CHUNK + HASH_CHUNK // 2 + 123]
BIG_FILES = 8
BIG_SIZE = 25 << 20  # 8 x 25 MiB: 200 MiB in page cache
Result = tuple[int, str | None, int, int, int, int]


def job(paths: list[str], algos: list[int], jobs: int = 0) -> Any:
    """A HashJob of the implementation the ``core`` fixture selected."""
    return mlxk.core.impl.HashJob(paths, algos, jobs)


def expected_digest(data: bytes, algo: int) -> str:
    if algo == ALGO_SHA256:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def identity(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def run_with_timeout(hash_job: Any, timeout: float) -> list[Result]:
    """``hash_job.run()`` in a daemon thread, failing the test if it does not return in time."""
    outcome: list[list[Result]] = []
    thread = threading.Thread(target=lambda: outcome.append(hash_job.run()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"run() did not return within {timeout} s"
    assert len(outcome) == 1
    return outcome[0]


@pytest.fixture(scope="module")
def sized(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[str, bytes]]:
    """size -> (path, content) for the chunk-boundary sizes, random bytes."""
    folder = tmp_path_factory.mktemp("sized")
    rng = random.Random(20240601)
    files = {}
    for size in SIZES:
        path = folder / f"f{size}"
        data = rng.randbytes(size)
        path.write_bytes(data)
        files[size] = (str(path), data)
    return files


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    """~200 MiB over a few files (paths, sha256 digests), read once so they sit in page cache."""
    folder = tmp_path_factory.mktemp("big")
    rng = random.Random(7)
    block = rng.randbytes(BIG_SIZE)
    paths, digests = [], []
    for k in range(BIG_FILES):
        data = bytes([k]) + block[1:]  # distinct contents, same size
        path = folder / f"big{k}"
        path.write_bytes(data)
        paths.append(str(path))
        digests.append(hashlib.sha256(data).hexdigest())
    return paths, digests


@pytest.fixture
def watcher() -> Iterator[Callable[[Callable[[], None]], None]]:
    """Starts helper threads that are always joined (their exceptions fail the test)."""
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []

    def start(body: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                body()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=guarded, daemon=True)
        threads.append(thread)
        thread.start()

    yield start
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    assert errors == []


# --- digests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ALGOS)
def test_digests_equal_hashlib(core: str, sized: dict[int, tuple[str, bytes]], algo: int) -> None:
    paths = [path for path, _ in sized.values()]
    results = job(paths, [algo] * len(paths)).run()
    assert [r[:2] for r in results] == [(0, expected_digest(data, algo)) for _, data in sized.values()]
    assert [len(r[1]) for r in results] == [64 if algo == ALGO_SHA256 else 40] * len(paths)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_sha1_equals_git_hash_object(core: str, sized: dict[int, tuple[str, bytes]]) -> None:
    path, _ = sized[SIZES[-1]]
    git = subprocess.run(["git", "hash-object", path], capture_output=True, text=True, check=True, timeout=30)
    [(code, digest, *_)] = job([path], [ALGO_GIT_SHA1]).run()
    assert (code, digest) == (0, git.stdout.strip())


def test_name_that_is_not_utf8(core: str, tmp_path: Path) -> None:
    if sys.getfilesystemencoding() != "utf-8":
        pytest.skip("needs a utf-8 file system encoding")
    name = os.fsdecode(b"caf\xe9-\xff")  # surrogate-escaped, as os.listdir() would give it
    path = os.path.join(tmp_path, name)
    with open(path, "wb") as fh:
        fh.write(b"bytes")
    [(code, digest, *_)] = job([path], [ALGO_SHA256]).run()
    assert (code, digest) == (0, hashlib.sha256(b"bytes").hexdigest())


@pytest.mark.parametrize("jobs", [1, 2, 7])
def test_results_in_input_order(core: str, tmp_path: Path, jobs: int) -> None:
    rng = random.Random(jobs)
    paths: list[str] = []
    algos: list[int] = []
    want: list[tuple[int, str | None]] = []
    for k in range(60):
        path = tmp_path / f"n{k:02d}"
        if k % 17 == 5:
            paths.append(str(path))  # missing
            algos.append(ALGO_SHA256)
            want.append((errno.ENOENT, None))
            continue
        data = rng.randbytes(rng.choice([0, 10, 5000, HASH_CHUNK + rng.randrange(HASH_CHUNK)]))
        path.write_bytes(data)
        algo = ALGOS[k % 2]
        paths.append(str(path))
        algos.append(algo)
        want.append((0, expected_digest(data, algo)))
    results = job(paths, algos, jobs).run()
    assert [r[:2] for r in results] == want


# --- errors --------------------------------------------------------------------------------------


def test_missing_file_is_enoent_with_zeros(core: str, tmp_path: Path) -> None:
    assert job([str(tmp_path / "nope")], [ALGO_SHA256]).run() == [(errno.ENOENT, None, 0, 0, 0, 0)]


def test_directory_is_eisdir(core: str, tmp_path: Path) -> None:
    folder = tmp_path / "dir"
    folder.mkdir()
    assert job([str(folder)], [ALGO_GIT_SHA1]).run() == [(errno.EISDIR, None, *identity(str(folder)))]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_einval_and_does_not_hang(core: str, tmp_path: Path) -> None:
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    results = run_with_timeout(job([fifo], [ALGO_SHA256]), timeout=10)
    assert results == [(errno.EINVAL, None, *identity(fifo))]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses Linux /proc files")
def test_size_mismatch_is_eagain(core: str) -> None:
    """/proc files stat as size 0 and read as text: the bytes read differ from the size at open."""
    path = "/proc/self/status"
    [(code, digest, dev, ino, size, _)] = job([path], [ALGO_SHA256]).run()
    assert (code, digest, size) == (errno.EAGAIN, None, 0)
    assert (dev, ino) == identity(path)[:2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses Linux /proc files")
def test_read_error_is_its_errno(core: str) -> None:
    """/proc/self/mem opens as a regular file, but offset 0 is not mapped: read() fails."""
    path = "/proc/self/mem"
    fd = os.open(path, os.O_RDONLY)
    try:
        os.read(fd, 16)
        pytest.skip("/proc/self/mem reads at offset 0 here")
    except OSError as exc:
        want = exc.errno
    finally:
        os.close(fd)
    [(code, digest, *_)] = job([path], [ALGO_SHA256]).run()
    assert (code, digest) == (want, None)
    assert code != 0


def test_identity_matches_os_stat(core: str, sized: dict[int, tuple[str, bytes]]) -> None:
    paths = [path for path, _ in sized.values()]
    results = job(paths, [ALGO_SHA256] * len(paths), 2).run()
    assert [tuple(r[2:]) for r in results] == [identity(p) for p in paths]
    assert all(type(v) is int for r in results for v in (r[0], *r[2:]))


def test_validation(core: str, sized: dict[int, tuple[str, bytes]]) -> None:
    path = sized[1][0]
    with pytest.raises(ValueError):
        job([path], [])
    with pytest.raises(ValueError):
        job([path], [3])
    with pytest.raises(ValueError):
        job([path], [0])
    assert job([], []).run() == []
    with pytest.raises(ValueError):
        job([path + "\0x"], [ALGO_SHA256]).run()  # an embedded null byte, as os.open() says


# --- progress and cancellation --------------------------------------------------------------------


def test_bytes_done_grows_during_run(
    core: str, big: tuple[list[str], list[str]], watcher: Callable[[Callable[[], None]], None]
) -> None:
    paths, digests = big
    hash_job = job(paths, [ALGO_SHA256] * len(paths), 2)
    seen: list[int] = []
    running = threading.Event()
    over = threading.Event()

    def observe() -> None:
        running.wait(10)
        while not over.is_set():
            seen.append(int(hash_job.bytes_done))
            time.sleep(0.0002)

    watcher(observe)
    running.set()
    try:
        results = hash_job.run()
    finally:
        over.set()
    total = BIG_FILES * BIG_SIZE
    assert [r[:2] for r in results] == [(0, d) for d in digests]
    assert hash_job.bytes_done == total
    assert seen == sorted(seen)  # never goes back
    assert len({v for v in seen if 0 < v < total}) >= 2, f"no progress seen from another thread: {seen}"


def test_cancel_from_another_thread(
    core: str, big: tuple[list[str], list[str]], watcher: Callable[[Callable[[], None]], None]
) -> None:
    paths, digests = big
    hash_job = job(paths, [ALGO_SHA256] * len(paths), 1)
    cancelled_at: list[float] = []

    def cancel_after_first_file() -> None:
        deadline = time.monotonic() + 60  # a hang guard: the loop ends when the condition holds
        while hash_job.bytes_done <= BIG_SIZE + HASH_CHUNK and time.monotonic() < deadline:
            time.sleep(0.0002)
        cancelled_at.append(time.monotonic())
        hash_job.cancel()

    watcher(cancel_after_first_file)
    results = hash_job.run()
    assert cancelled_at  # it was cancelled while running; that it stopped early shows below
    codes = [r[0] for r in results]
    assert results[0][:2] == (0, digests[0])  # one thread, biggest (here: first) first
    assert errno.ECANCELED in codes
    for (code, digest, *_), want in zip(results, digests, strict=True):
        assert (code, digest) in ((0, want), (errno.ECANCELED, None))
    assert hash_job.bytes_done < BIG_FILES * BIG_SIZE
    assert hash_job.run() == [(errno.ECANCELED, None, 0, 0, 0, 0)] * len(paths)  # stays cancelled


def test_cancel_before_run(core: str, sized: dict[int, tuple[str, bytes]]) -> None:
    paths = [path for path, _ in sized.values()]
    hash_job = job(paths, [ALGO_GIT_SHA1] * len(paths))
    hash_job.cancel()
    assert hash_job.run() == [(errno.ECANCELED, None, 0, 0, 0, 0)] * len(paths)
    assert hash_job.bytes_done == 0


class Interrupted(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 here")
def test_signal_reaches_the_calling_thread(core: str, big: tuple[list[str], list[str]]) -> None:
    """A signal handler's exception (as Ctrl-C's KeyboardInterrupt) comes out of run()."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    paths, _ = big
    hash_job = job(paths, [ALGO_SHA256] * len(paths), 1)
    sent_at: list[float] = []

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    def interrupt() -> None:
        deadline = time.monotonic() + 60  # a hang guard: the loop ends when the condition holds
        while hash_job.bytes_done == 0 and time.monotonic() < deadline:
            time.sleep(0.0002)
        if hash_job.bytes_done:  # else no signal: pytest.raises below fails
            sent_at.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    helper = threading.Thread(target=interrupt, daemon=True)
    try:
        helper.start()
        with pytest.raises(Interrupted):
            hash_job.run()
            time.sleep(60)  # the twin may finish first: the handler then runs here, when the signal comes
        returned = time.monotonic()
    finally:
        helper.join(30)  # before the default action (process exit) is back
        signal.signal(signal.SIGUSR1, previous)
    if core == "native":
        assert sent_at and returned >= sent_at[0]
        done = hash_job.bytes_done
        assert done < BIG_FILES * BIG_SIZE
        time.sleep(0.05)
        assert hash_job.bytes_done == done  # the workers were stopped and joined


# --- the native core's libcrypto -------------------------------------------------------------------


def native_or_skip() -> Any:
    module = native_module()
    if module is None:
        pytest.skip("the native core is not built")
    return module


def test_native_hashes_with_libcrypto() -> None:
    module = native_or_skip()
    if not module.native_hashing_available():
        if os.environ.get("MLXK_REQUIRE_NATIVE") == "1":
            pytest.fail("the native core could not load libcrypto: HashJob runs the pure-Python twin")
        pytest.skip("no libcrypto for the native HashJob")
    library = module.native_hashing_library()
    assert os.path.basename(library).startswith("libcrypto")
    if sys.platform.startswith("linux") and "/" in library:
        with open("/proc/self/maps") as maps:  # the very library Python's _hashlib loaded
            assert any(line.rstrip("\n").endswith(library) for line in maps)


@pytest.mark.parametrize("library", ["", "libc"])
def test_native_falls_back_to_the_twin(sized: dict[int, tuple[str, bytes]], library: str) -> None:
    """No libcrypto (none allowed, or a library without EVP_*): the same results from the twin."""
    native_or_skip()
    if library == "libc":
        library = ctypes.util.find_library("c") or ""
        if not library:
            pytest.skip("no libc to offer")
    path, data = sized[SIZES[-1]]
    code = (
        "import errno, sys\n"
        "from mlxk.core import _native\n"
        "assert not _native.native_hashing_available() and _native.native_hashing_library() is None\n"
        "job = _native.HashJob([sys.argv[1], sys.argv[1] + '.missing'], [1, 2], 2)\n"
        "print(job.run())\n"
        "print(job.bytes_done)\n"
        "job.cancel()\n"
        "assert job.run() == [(errno.ECANCELED, None, 0, 0, 0, 0)] * 2\n"
    )
    env = {**os.environ, "MLXK_LIBCRYPTO": library}
    proc = subprocess.run(
        [sys.executable, "-c", code, path], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    results, done = proc.stdout.strip().splitlines()
    want = [(0, expected_digest(data, ALGO_SHA256), *identity(path)), (errno.ENOENT, None, 0, 0, 0, 0)]
    assert results == repr(want)
    assert int(done) == len(data)
