"""One exception family. Each error knows its JSON ``error.type``, exit code and HTTP status.

Library code raises these; the CLI (and later the server) translate them once, at the edge.
"""

from __future__ import annotations

from typing import Any, ClassVar

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

    def to_json(self) -> dict[str, Any]:
        return {"type": self.error_type, "message": self.message, **self.extra}


class ValidationError(MlxkError):
    error_type = "validation_error"
    http_status = 400


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
