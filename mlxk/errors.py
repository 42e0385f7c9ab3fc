"""One exception family. Each error knows its JSON ``error.type``, exit code and HTTP status.

Library code raises these; the CLI (and later the server) translate them once, at the edge.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

_E = TypeVar("_E", bound="MlxkError")

EXIT_OK = 0
EXIT_OPERATION = 1  # validation, not found, ambiguous, refused
EXIT_NETWORK = 2
EXIT_FILESYSTEM = 3


class MlxkError(Exception):
    error_type: ClassVar[str] = "internal_error"
    exit_code: ClassVar[int] = EXIT_OPERATION
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra  # extra keys for the JSON error object (matches, available_hashes, ...)
        self.data: Any = None  # partial results for the envelope's ``data`` (pull and rm plans)

    def with_data(self: _E, data: Any) -> _E:
        self.data = data
        return self

    def to_json(self) -> dict[str, Any]:
        return {"type": self.error_type, "message": self.message, **self.extra}


class ValidationError(MlxkError):
    error_type = "validation_error"
    http_status = 400


class InvalidField(ValidationError):
    """One field of a request is out of its bounds or not supported; ``param`` names it the way
    the request value does (``temperature``, ``messages[2].content``), for protocols that report it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class PromptTooLong(ValidationError):
    """A prompt that leaves no room in the model's context for a single token (the server answers
    it with OpenAI's ``context_length_exceeded``)."""

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"the prompt is {prompt_tokens} tokens; the model's maximum context length is {context_length} tokens"
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class ModelNotFound(MlxkError):
    error_type = "model_not_found"
    http_status = 404


class AmbiguousMatch(MlxkError):
    error_type = "ambiguous_match"
    http_status = 400


class HashNotFound(MlxkError):
    error_type = "hash_not_found"
    http_status = 404


class CacheNotFound(MlxkError):
    error_type = "cache_not_found"
    exit_code = EXIT_FILESYSTEM
    http_status = 500


class PermissionDenied(MlxkError):
    error_type = "permission_denied"
    exit_code = EXIT_FILESYSTEM
    http_status = 403


class InternalError(MlxkError):
    error_type = "internal_error"


class AccessDenied(MlxkError):
    """The Hub refused the request: a gated repo without granted access, or a bad token."""

    error_type = "access_denied"
    http_status = 403


class NetworkError(MlxkError):
    """The Hub could not be reached (connection refused, timeout, offline mode)."""

    error_type = "network_error"
    exit_code = EXIT_NETWORK
    http_status = 502


class DownloadFailed(MlxkError):
    """Bytes did not arrive, or arrived wrong (size or checksum mismatch)."""

    error_type = "download_failed"
    exit_code = EXIT_NETWORK
    http_status = 502


class InsufficientSpace(MlxkError):
    error_type = "insufficient_space"
    exit_code = EXIT_FILESYSTEM
    http_status = 507


class ModelUnhealthy(MlxkError):
    """A download completed, but the model it produced fails the health rules."""

    error_type = "model_unhealthy"
    http_status = 500


class RequiresConfirmation(MlxkError):
    """A destructive or resuming action needs a yes from a person (or ``--force``)."""

    error_type = "requires_confirmation"
    http_status = 409


class LocksPresent(MlxkError):
    """Another process holds a lock on the model (a download in progress)."""

    error_type = "locks_present"
    http_status = 409


class DeletionFailed(MlxkError):
    error_type = "deletion_failed"
    exit_code = EXIT_FILESYSTEM
    http_status = 500


class FilesystemError(MlxkError):
    """A local disk operation failed for a reason other than permissions or space."""

    error_type = "filesystem_error"
    exit_code = EXIT_FILESYSTEM
    http_status = 500


class ModelIncompatible(MlxkError):
    """The model exists and is intact, but this install cannot use it for what was asked."""

    error_type = "model_incompatible"
    http_status = 400


class InsufficientMemory(MlxkError):
    error_type = "insufficient_memory"
    http_status = 507


class ExecutionError(MlxkError):
    """Loading or running the model failed."""

    error_type = "execution_error"
    http_status = 500


class Interrupted(MlxkError):
    """A pull that stopped before it finished: Ctrl-C (the CLI then exits 130), or its model was
    deleted from the cache while it downloaded."""

    error_type = "interrupted"
    http_status = 409
