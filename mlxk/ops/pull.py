"""``mlxk pull ORG/NAME[@REVISION]``: ask the Hub, check, download, verify, then publish the ref.

Order matters here. The Hub is asked first, for the repo and for one of its files (a refused or
missing repo leaves no trace in the cache), then the disk is checked, then files are fetched under
mlxk's repo lock, then every file is checked against the size and checksum the Hub promised, then
the health rules run, and only a complete, verified snapshot becomes ``refs/<revision>``. A
download that the Hub refuses halfway, or whose model an ``rm -f`` deletes meanwhile, takes back
what it wrote (``mlxk.hub.footprint``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from mlxk.cache.build import build_model
from mlxk.cache.delete_run import sweep_trash
from mlxk.cache.leftovers import clean_stale_leftovers
from mlxk.cache.locks import RepoLock, lock_is_held
from mlxk.cache.names import dirname_to_name, is_commit, name_to_dirname, split_remote_spec, validate_name
from mlxk.cache.refs import read_ref, write_ref
from mlxk.cache.resolve import is_local_path
from mlxk.cache.scan import CacheLocation, repo_dirnames, scan_records
from mlxk.cache.verify import ExpectedFile, FileProblem, discard, verify_snapshot
from mlxk.errors import (
    AccessDenied,
    AmbiguousMatch,
    DownloadFailed,
    InsufficientSpace,
    Interrupted,
    MlxkError,
    ModelNotFound,
    ModelUnhealthy,
    NetworkError,
    RequiresConfirmation,
    ValidationError,
)
from mlxk.hub.download import download_snapshot
from mlxk.hub.footprint import Footprint
from mlxk.hub.progress import download_meter
from mlxk.hub.remote import RemoteFile, RemoteRepo, check_file_access, fetch_remote, local_error, select_files
from mlxk.hub.settings import HubSettings
from mlxk.hub.tail_hash import TailHasher

DEFAULT_ORG = "mlx-community"  # where a bare name that is not in the cache is looked for, as MLX-Knife did

# progress(label, total_bytes, bytes_done) -> a context manager that shows progress while it is open
DownloadProgress = Callable[[str, int, Callable[[], int]], AbstractContextManager[object]]


@dataclass(frozen=True, slots=True)
class PullOptions:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    force_resume: bool = False
    progress: DownloadProgress | None = None  # the byte bar (the CLI's, on stderr)


@dataclass(frozen=True, slots=True)
class PullTarget:
    repo_id: str
    revision: str | None
    expanded_from: str | None  # the short name the user typed, when it was expanded


@dataclass(frozen=True, slots=True)
class PullResult:
    target: PullTarget
    status: str  # success | already_exists
    commit: str
    files: int  # files of the snapshot this pull covers (after --include/--exclude)
    total_bytes: int
    downloaded_bytes: int  # bytes that were not in the cache before
    seconds: float
    healthy: bool
    reason: str | None
    leftovers_cleaned: int


@dataclass(frozen=True, slots=True)
class LocalState:
    present: tuple[RemoteFile, ...]  # linked in the snapshot, blob there with the right size
    missing: tuple[RemoteFile, ...]
    blobs_to_fetch: dict[str, int]  # blob name -> size, for blobs not in the cache at all
    leftovers: int  # *.incomplete blobs of earlier, interrupted downloads

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def started(self) -> bool:
        return bool(self.present) or self.leftovers > 0


def resolve_target(spec: str, hub_root: str) -> PullTarget:
    """Validate ``spec``; a bare name is looked up in the cache, else taken from mlx-community."""
    if is_local_path(spec):
        raise ValidationError(f"{spec!r} is a local path; pull takes a Hub repo name (org/name)")
    name, revision = split_remote_spec(spec)
    validate_name(name)
    if "/" in name:
        return PullTarget(name, revision, None)
    # exact names only (any org, any case): a pull never guesses from a part of a name
    found = [
        d for d in repo_dirnames(hub_root) if dirname_to_name(d).rsplit("/", 1)[-1].lower() == name.lower()
    ]
    if len(found) > 1:
        matches = [dirname_to_name(d) for d in found]
        raise AmbiguousMatch(
            f"{name!r} matches {len(matches)} cached models; name one exactly", matches=matches
        )
    repo_id = dirname_to_name(found[0]) if found else f"{DEFAULT_ORG}/{name}"
    return PullTarget(repo_id, revision, name)


def _blob_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def local_state(repo_path: str, commit: str, files: tuple[RemoteFile, ...]) -> LocalState:
    snapshot = os.path.join(repo_path, "snapshots", commit)
    blobs = os.path.join(repo_path, "blobs")
    present: list[RemoteFile] = []
    missing: list[RemoteFile] = []
    to_fetch: dict[str, int] = {}
    for f in files:
        linked = _blob_size(os.path.join(snapshot, *f.path.split("/")))
        (present if linked == f.size else missing).append(f)
        if _blob_size(os.path.join(blobs, f.blob)) != f.size:
            to_fetch[f.blob] = f.size
    try:
        leftovers = sum(1 for n in os.listdir(blobs) if n.endswith(".incomplete"))
    except FileNotFoundError:
        leftovers = 0
    return LocalState(tuple(present), tuple(missing), to_fetch, leftovers)


def _check_space(hub_root: str, needed: int, repo_id: str) -> None:
    probe = os.path.abspath(hub_root)
    while not os.path.isdir(probe):  # the cache may not exist yet: ask the filesystem that will hold it
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise InsufficientSpace(
            f"{repo_id} needs {needed} bytes, but only {free} are free on the disk holding {hub_root}"
        )


def _health(location: CacheLocation, dirname: str, commit: str) -> tuple[bool, str | None]:
    records = scan_records(CacheLocation(location.hub_root, None), [dirname])
    model = build_model(records[0], commit[:40])
    return model.healthy, model.health_reason


def _expected(files: tuple[RemoteFile, ...]) -> list[ExpectedFile]:
    return [ExpectedFile(f.path, f.size, f.blob, f.lfs) for f in files]


def _problem_text(problems: list[FileProblem]) -> str:
    shown = "; ".join(f"{p.path}: {p.problem}" for p in problems[:3])
    return shown + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")


def _offline_result(location: CacheLocation, target: PullTarget, started: float) -> PullResult:
    """Offline, a pull can only confirm what is already there."""
    dirname = name_to_dirname(target.repo_id)
    revision = target.revision or "main"
    commit = revision if is_commit(revision) else read_ref(os.path.join(location.hub_root, dirname), revision)
    if commit and os.path.isdir(os.path.join(location.hub_root, dirname, "snapshots", commit)):
        healthy, _reason = _health(location, dirname, commit)
        if healthy:
            return PullResult(
                target, "already_exists", commit, 0, 0, 0, time.monotonic() - started, True, None, 0
            )
    raise NetworkError(
        f"offline mode is on (HF_HUB_OFFLINE) and {target.repo_id} is not complete in the cache"
    )


def _before_download(
    settings: HubSettings, remote: RemoteRepo, files: tuple[RemoteFile, ...], state: LocalState, hub_root: str
) -> None:
    """What is checked before a byte is written: access to the files, then free space."""
    check_file_access(settings, remote, files[0].path)  # a gated repo's files are refused here
    _check_space(hub_root, sum(state.blobs_to_fetch.values()), remote.repo_id)


def _download(
    settings: HubSettings,
    remote: RemoteRepo,
    target: PullTarget,
    options: PullOptions,
    state: LocalState,
    footprint: Footprint,
) -> dict[tuple[int, int], str]:
    """The download itself; returns the digests hashed while the blobs arrived."""
    blobs_dir = os.path.join(footprint.hub_root, footprint.dirname, "blobs")
    fetching = {f.blob: (f.size, f.lfs) for f in footprint.files if f.blob in state.blobs_to_fetch}
    try:
        with (
            TailHasher(blobs_dir, fetching) as hasher,
            _download_bar(options, target.repo_id, blobs_dir, state.blobs_to_fetch),
        ):
            download_snapshot(
                settings, remote, footprint.hub_root, list(options.include), list(options.exclude),
                hasher.distrust,
            )  # fmt: skip
    except Exception as exc:
        _stop_if_deleted(footprint, target, exc)
        # refused halfway, or failed before a byte arrived: the cache stays as it was (a tree
        # listing alone would show as a model without snapshots); a partial blob stays, to resume
        if isinstance(exc, AccessDenied | ModelNotFound) or not footprint.arrived():
            _take_back(footprint)
        raise
    _stop_if_deleted(footprint, target)
    return hasher.digests


def _take_back(footprint: Footprint) -> None:
    with contextlib.suppress(OSError):  # best effort: what stays is an ordinary partial download
        footprint.undo()


def _stop_if_deleted(footprint: Footprint | None, target: PullTarget, cause: Exception | None = None) -> None:
    """An ``rm -f`` deleted the repo while it downloaded: its deletion stands, this pull takes back
    what it wrote since, and says so."""
    if footprint is None or not footprint.repo_replaced():
        return
    _take_back(footprint)
    raise Interrupted(
        f"{target.repo_id} was deleted from the cache while it was being downloaded; nothing this pull "
        "wrote was kept (pull again to download it)"
    ) from cause


def pull(
    location: CacheLocation,
    spec: str,
    options: PullOptions,
    confirm_resume: Callable[[PullTarget, LocalState], bool],
    settings: HubSettings | None = None,
) -> PullResult:
    """Errors raised after the name is understood carry the ``PullTarget`` as their ``data``."""
    started = time.monotonic()
    target = resolve_target(spec, location.hub_root)
    settings = settings or HubSettings.from_env()
    try:
        try:
            if settings.offline:
                return _offline_result(location, target, started)
            return _pull(location, target, options, confirm_resume, settings, started)
        except OSError as exc:  # our own writes to the cache (lock, refs, discards)
            raise local_error(exc, target.repo_id) from exc
    except MlxkError as error:
        if error.data is None:
            error.data = target
        raise


def _download_bar(
    options: PullOptions, label: str, blobs_dir: str, expected: Mapping[str, int]
) -> AbstractContextManager[object]:
    if options.progress is None:
        return nullcontext()
    total, done = download_meter(blobs_dir, expected)
    return options.progress(label, total, done)


def _pull(
    location: CacheLocation,
    target: PullTarget,
    options: PullOptions,
    confirm_resume: Callable[[PullTarget, LocalState], bool],
    settings: HubSettings,
    started: float,
) -> PullResult:
    hub_root = location.hub_root
    dirname = name_to_dirname(target.repo_id)
    repo_path = os.path.join(hub_root, dirname)

    remote = fetch_remote(settings, target.repo_id, target.revision)  # the access check: nothing written yet
    files = select_files(remote.files, list(options.include), list(options.exclude))
    if not files:
        raise ValidationError(f"no file of {target.repo_id} matches the --include/--exclude patterns")

    state = local_state(repo_path, remote.commit, files)
    if not state.complete:
        _before_download(settings, remote, files, state, hub_root)
        # a partial download that a live pull is still working on is not a resume: wait for it instead
        busy = lock_is_held(RepoLock(hub_root, dirname).path)
        if state.started and not busy and not options.force_resume and not confirm_resume(target, state):
            raise RequiresConfirmation(
                f"{target.repo_id} is partly downloaded ({len(state.present)} of {len(files)} files); "
                "resume with --force-resume"
            )

    lock = RepoLock(hub_root, dirname)
    lock.acquire(wait=True)  # a concurrent pull or rm of this model finishes first
    try:
        sweep_trash(hub_root, holding=dirname)  # a killed rm's unfinished removal goes before we add
        was_complete = state.complete
        state = local_state(repo_path, remote.commit, files)  # another process may have finished it meanwhile
        if was_complete and not state.complete:  # that removal took files of this very snapshot
            _before_download(settings, remote, files, state, hub_root)
        fetched = sum(state.blobs_to_fetch.values())
        ref = (
            None
            if target.revision is not None and is_commit(target.revision)
            else (target.revision or "main")
        )
        digests: dict[tuple[int, int], str] = {}
        footprint = None
        if not state.complete:
            footprint = Footprint.take(hub_root, dirname, remote.commit, files)
            digests = _download(settings, remote, target, options, state, footprint)
        # A complete snapshot that no ref vouches for yet (an earlier pull killed after the last
        # byte, before its checks) is verified too before anything calls it current.
        if not state.complete or ref is None or read_ref(repo_path, ref) != remote.commit:
            problems = verify_snapshot(repo_path, remote.commit, _expected(files), digests)
            if problems:
                _stop_if_deleted(footprint, target)
                discard(repo_path, remote.commit, problems)
                raise DownloadFailed(
                    f"{len(problems)} file(s) of {target.repo_id} did not arrive intact and were removed "
                    f"(pull again to refetch them): {_problem_text(problems)}"
                )
        _stop_if_deleted(footprint, target)  # a ref written now would bring back a deleted repo
        if ref is not None:
            write_ref(repo_path, ref, remote.commit)
        healthy, reason = _health(location, dirname, remote.commit)
        cleaned = clean_stale_leftovers(hub_root, dirname)
    finally:
        lock.release()
    result = PullResult(
        target,
        "already_exists" if state.complete else "success",
        remote.commit,
        len(files),
        sum(f.size for f in files),
        fetched if not state.complete else 0,
        time.monotonic() - started,
        healthy,
        reason,
        cleaned.incomplete_blobs,  # lock files are every download's by-product: not news
    )
    if not healthy:
        raise ModelUnhealthy(f"{target.repo_id} was downloaded but is unhealthy: {reason}").with_data(result)
    return result
