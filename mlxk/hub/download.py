"""The download itself: huggingface_hub's ``snapshot_download`` into the cache we were given.

huggingface_hub writes every file to a unique ``blobs/<etag>.<id>.incomplete`` and renames it
into place only when its size is right, so nothing half-written ever gets a final blob name;
checksums are verified afterwards (``mlxk.cache.verify``). The download runs on a worker thread
so that Ctrl-C reaches the main thread at once instead of after every file has finished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from mlxk._version import __version__
from mlxk.errors import DownloadFailed, MlxkError
from mlxk.hub.remote import RemoteRepo, hub_error
from mlxk.hub.settings import HubSettings

MAX_WORKERS = 8  # huggingface_hub's default: enough parallel files to fill a fast link


def _silent_bar_class(on_rewind: Callable[[], None]) -> type[Any]:
    """huggingface_hub's own bars stay off: mlxk draws one bar of its own (mlxk.hub.progress).

    They still tell one thing worth knowing: a negative update is huggingface_hub rewinding a
    file it restarts from zero (a server that ignored Range), which ``on_rewind`` hears of."""
    from tqdm.std import tqdm  # type: ignore[import-untyped]

    class SilentBar(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if n is not None and n < 0:
                on_rewind()
            return super().update(n)  # type: ignore[no-any-return]

    return SilentBar


def download_snapshot(
    settings: HubSettings,
    remote: RemoteRepo,
    hub_root: str,
    include: list[str],
    exclude: list[str],
    on_rewind: Callable[[], None] = lambda: None,
) -> None:
    """Fetch the repo's files at ``remote.commit`` (refs are written by the caller, after checks)."""
    from huggingface_hub import snapshot_download

    failure: list[BaseException] = []

    def work() -> None:
        try:
            snapshot_download(
                remote.repo_id,
                revision=remote.commit,
                cache_dir=hub_root,
                endpoint=settings.endpoint,
                token=settings.token,
                allow_patterns=include or None,
                ignore_patterns=exclude or None,
                max_workers=MAX_WORKERS,
                tqdm_class=_silent_bar_class(on_rewind),
                library_name="mlxk",
                library_version=__version__,
            )
        except BaseException as exc:  # handed to the waiting thread
            failure.append(exc)

    worker = threading.Thread(target=work, name="mlxk-download", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)  # short waits: KeyboardInterrupt is delivered between them
    if failure:
        raise _download_error(failure[0], remote)


def _download_error(exc: BaseException, remote: RemoteRepo) -> BaseException:
    if isinstance(exc, MlxkError) or not isinstance(exc, Exception):
        return exc
    try:
        error = hub_error(exc, remote.repo_id, remote.commit)
    except Exception:
        return exc
    if error.error_type == "network_error":
        return DownloadFailed(f"downloading {remote.repo_id} failed: {error.message}")
    return error
