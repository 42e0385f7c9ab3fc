"""Results -> the JSON contract's ``data`` objects (docs/json-api-schema.json).

The model object and the list/health data are strict in the contract: exactly these keys.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mlxk.cache.names import is_commit
from mlxk.output.units import human_size

if TYPE_CHECKING:  # the version fast path imports this module; keep it light
    from mlxk.cache.model import CachedModel
    from mlxk.ops.health import HealthEntry, HealthResult
    from mlxk.ops.list import ListResult
    from mlxk.ops.show import ShowResult
    from mlxk.ops.version import VersionInfo

_METADATA_KEYS = (
    ("model_type", ("model_type",)),
    ("architecture", ("architectures",)),
    ("quantization", ("quantization",)),
    (
        "context_length",
        ("max_position_embeddings", "max_sequence_length", "seq_length", "n_positions", "n_ctx"),
    ),
    ("vocab_size", ("vocab_size",)),
    ("hidden_size", ("hidden_size", "d_model", "n_embd")),
    ("num_attention_heads", ("num_attention_heads", "n_head")),
    ("num_hidden_layers", ("num_hidden_layers", "n_layer", "num_layers")),
)
_FILE_TYPES = (
    ("config", lambda n: n in ("config.json", "generation_config.json")),
    (
        "weights",
        lambda n: (
            n.endswith((".safetensors", ".bin", ".gguf", ".npz", ".pt", ".pth")) or n.endswith(".index.json")
        ),
    ),
    (
        "tokenizer",
        lambda n: (
            "tokenizer" in n
            or n in ("vocab.json", "merges.txt", "special_tokens_map.json", "vocab.txt")
            or n.startswith("chat_template")
        ),
    ),
    ("readme", lambda n: n.lower().startswith("readme")),
)


# The contract's timestamp has a 4-digit year: clamp what odd filesystems can store to it.
_LATEST_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z


def commit_or_none(commit: str | None) -> str | None:
    """A 40-hex commit, as the contract promises; a folder or ref holding anything else is null."""
    return commit if is_commit(commit) else None


def utc_timestamp(epoch_ns: int) -> str:
    seconds = min(max(epoch_ns // 1_000_000_000, 0), _LATEST_SECONDS)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def model_object(model: CachedModel, *, with_quantization: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": model.name,
        "hash": commit_or_none(model.hash),
        "size_bytes": model.size_bytes,
        "last_modified": utc_timestamp(model.last_modified_ns),
        "framework": model.framework,
        "model_type": model.model_type,
        "capabilities": list(model.capabilities),
        "health": "healthy" if model.healthy else "unhealthy",
        "runtime_compatible": model.runtime_compatible,
        "reason": model.reason,
        "cached": True,
        "origin": None,
        "content_hash": None,
        "hash_modified": None,
        "clean": None,
        "display_name": None,
    }
    if with_quantization:
        quant = (model.config or {}).get("quantization")
        data["quantization"] = quant if isinstance(quant, dict) else None
    return data


def list_data(result: ListResult) -> dict[str, Any]:
    return {"models": [model_object(m) for m in result.models], "count": len(result.models)}


def health_reason(entry: HealthEntry) -> str:
    model = entry.model
    if not model.healthy:
        return model.health_reason or "unhealthy"
    notes = []
    if model.leftovers.incomplete_blobs:
        count = len(model.leftovers.incomplete_blobs)
        notes.append(
            f"{count} leftover .incomplete blob{'s' if count != 1 else ''} from an interrupted download"
        )
    if entry.stale_locks:
        notes.append(f"{len(entry.stale_locks)} stale lock file{'s' if len(entry.stale_locks) != 1 else ''}")
    if entry.unverified:
        notes.append(
            f"{entry.unverified} file{'s' if entry.unverified != 1 else ''} without a checksum not hashed"
        )
    if entry.held_locks:
        notes.append(
            f"{len(entry.held_locks)} lock{'s' if len(entry.held_locks) != 1 else ''} held (download in progress?)"
        )
    return "healthy" + (f" ({'; '.join(notes)})" if notes else "")


def health_data(result: HealthResult) -> dict[str, Any]:
    healthy: list[dict[str, str]] = []
    unhealthy: list[dict[str, str]] = []
    for entry in result.entries:
        item = {
            "name": entry.model.name,
            "status": "healthy" if entry.model.healthy else "unhealthy",
            "reason": health_reason(entry),
        }
        (healthy if entry.model.healthy else unhealthy).append(item)
    return {
        "healthy": healthy,
        "unhealthy": unhealthy,
        "summary": {
            "total": len(result.entries),
            "healthy_count": len(healthy),
            "unhealthy_count": len(unhealthy),
        },
    }


def file_type(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    for kind, matches in _FILE_TYPES:
        if matches(name):
            return kind
    return "other"


def _metadata_value(key: str, value: Any) -> Any:
    """The value in the type the contract gives it, or None when config.json has something else."""
    if key == "architecture" and isinstance(value, list):
        value = value[0] if value else None
    if key in ("model_type", "architecture"):
        return value if isinstance(value, str) else None
    if key == "quantization":
        return value if isinstance(value, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def model_metadata(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    text_config = config.get("text_config")
    sources: list[dict[str, Any]] = [config, text_config if isinstance(text_config, dict) else {}]
    found: dict[str, Any] = {}
    for key, candidates in _METADATA_KEYS:
        for source in sources:
            value = _metadata_value(key, next((source[c] for c in candidates if c in source), None))
            if value is not None:
                found[key] = value
                break
    return found


def show_data(result: ShowResult) -> dict[str, Any]:
    model = result.model
    data: dict[str, Any] = {
        "model": model_object(model, with_quantization=True),
        "metadata": model_metadata(model.config),
        "snapshots": list(model.snapshots),
        "fingerprint": result.fingerprint,
    }
    if result.with_files:
        data["files"] = [
            {
                "name": f.path,
                "size": human_size(f.size) if f.size >= 0 else "missing",
                "type": file_type(f.path),
            }
            for f in model.files
        ]
    if result.with_config:
        data["config"] = model.config
    return data


def version_data(info: VersionInfo) -> dict[str, Any]:
    system = None if info.memory_total_bytes is None else {"memory_total_bytes": info.memory_total_bytes}
    return {
        "cli_version": info.cli_version,
        "json_api_spec_version": info.json_api_spec_version,
        "system": system,
        "blas": {
            "library": info.blas.library,
            "source": info.blas.source,
            "path": info.blas.path,
            "threads": info.blas.threads,
            "reason": info.blas.reason,
        },
    }
