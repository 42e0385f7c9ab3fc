"""What the Hub says about a repo: its commit and files, with the Hub's refusals as mlxk errors.

This is the access check of a pull: it runs before anything is written, so a gated, private or
missing repo fails at once and leaves no trace in the cache. A gated repo's model info and file
list are public (``gated: "auto" | "manual"``), only its files are refused: so the check also asks
for one file's headers before a download starts.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from mlxk._version import __version__
from mlxk.errors import (
    AccessDenied,
    DownloadFailed,
    FilesystemError,
    InsufficientSpace,
    MlxkError,
    ModelNotFound,
    NetworkError,
    PermissionDenied,
)
from mlxk.hub.settings import HubSettings


@dataclass(frozen=True, slots=True)
class RemoteFile:
    path: str
    size: int
    blob: str  # the name the cache stores it under: sha256 for LFS files, else the git blob sha1
    lfs: bool


@dataclass(frozen=True, slots=True)
class RemoteRepo:
    repo_id: str
    commit: str
    files: tuple[RemoteFile, ...]


def hub_error(exc: Exception, repo_id: str, revision: str | None) -> MlxkError:
    """huggingface_hub's exceptions -> mlxk's error types (one place for pull and download)."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return AccessDenied(f"{repo_id} is gated: accept its terms on the Hub, then set HF_TOKEN")
    if isinstance(exc, RevisionNotFoundError):
        return ModelNotFound(f"{repo_id} has no revision {revision!r} on the Hub")
    if isinstance(exc, RepositoryNotFoundError):
        return ModelNotFound(f"{repo_id} is not on the Hub (or it is private: set HF_TOKEN)")
    if isinstance(exc, LocalEntryNotFoundError) and isinstance(exc.__cause__, Exception):
        # a file's HEAD that failed, hidden by huggingface_hub behind "not in the local cache either":
        # the Hub's own answer (a status, a refused connection) says what went wrong
        return hub_error(exc.__cause__, repo_id, revision)
    if isinstance(exc, OfflineModeIsEnabled):
        return NetworkError("offline mode is on (HF_HUB_OFFLINE); nothing can be downloaded")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            return AccessDenied(f"the Hub refused access to {repo_id} (HTTP {status}); check HF_TOKEN")
        return NetworkError(f"the Hub answered HTTP {status} for {repo_id}")
    if isinstance(exc, httpx2.HTTPError | LocalEntryNotFoundError | ConnectionError | TimeoutError):
        return NetworkError(f"cannot reach the Hub: {type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        return local_error(exc, repo_id)
    raise exc


def local_error(exc: OSError, repo_id: str) -> MlxkError:
    """A failure of the local disk, not of the network: no space, no permission, anything else."""
    what = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientSpace(f"the disk filled up while writing {repo_id} ({what})")
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ELOOP):
        return PermissionDenied(f"cannot write {repo_id} into the cache ({what})")
    if "onsistency check" in str(exc):  # huggingface_hub's size check of a finished download
        return DownloadFailed(f"a file of {repo_id} arrived with the wrong size: {exc}")
    return FilesystemError(f"writing {repo_id} into the cache failed ({what})")


def fetch_remote(settings: HubSettings, repo_id: str, revision: str | None) -> RemoteRepo:
    from huggingface_hub import HfApi

    api = HfApi(
        endpoint=settings.endpoint, token=settings.token, library_name="mlxk", library_version=__version__
    )
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:
        raise hub_error(exc, repo_id, revision) from exc
    if not info.sha:
        raise NetworkError(f"the Hub gave no commit for {repo_id}")
    files = []
    for sibling in info.siblings or ():
        lfs = sibling.lfs
        blob = lfs.sha256 if lfs is not None else sibling.blob_id
        size = lfs.size if lfs is not None else sibling.size
        if blob is None or size is None:
            raise NetworkError(f"the Hub gave no size or checksum for {repo_id}/{sibling.rfilename}")
        files.append(RemoteFile(sibling.rfilename, int(size), blob, lfs is not None))
    return RemoteRepo(repo_id, info.sha, tuple(sorted(files, key=lambda f: f.path)))


def check_file_access(settings: HubSettings, remote: RemoteRepo, path: str) -> None:
    """HEAD of one file at the commit: the Hub's answer for a file (401/403 for a gated repo
    without access) before huggingface_hub writes its tree listing or anything else."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(remote.repo_id, path, revision=remote.commit, endpoint=settings.endpoint)
    try:
        get_hf_file_metadata(
            url,
            token=settings.token,
            library_name="mlxk",
            library_version=__version__,
            endpoint=settings.endpoint,
        )
    except Exception as exc:
        raise hub_error(exc, remote.repo_id, remote.commit) from exc


def select_files(
    files: tuple[RemoteFile, ...], include: list[str], exclude: list[str]
) -> tuple[RemoteFile, ...]:
    """The files a pull fetches, with huggingface_hub's own pattern rules (the same the download uses)."""
    if not include and not exclude:
        return files
    from huggingface_hub.utils._paths import filter_repo_objects

    chosen = set(
        filter_repo_objects(
            [f.path for f in files], allow_patterns=include or None, ignore_patterns=exclude or None
        )
    )
    return tuple(f for f in files if f.path in chosen)
