"""Results -> text for people: aligned tables and cards. Plain text unless stdout is a terminal."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson

from mlxk.output.contract import file_type, health_reason, model_metadata
from mlxk.output.escape import escape_controls as esc
from mlxk.output.units import human_age, human_size

if TYPE_CHECKING:
    from mlxk.cache.model import CachedModel
    from mlxk.core.blas import BlasPlan
    from mlxk.ops.health import HealthResult
    from mlxk.ops.list import ListResult
    from mlxk.ops.show import ShowResult
    from mlxk.ops.version import VersionInfo


class Style:
    """ANSI colours, or nothing (pipes, NO_COLOR)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def ok(self, text: str) -> str:
        return self._wrap("32", text)

    def bad(self, text: str) -> str:
        return self._wrap("31", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], widths_from: Sequence[Sequence[str]]
) -> list[str]:
    """Left-aligned columns; ``widths_from`` is the uncoloured text used to measure."""
    widths = [
        max(len(h), *(len(r[i]) for r in widths_from)) if widths_from else len(h)
        for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for shown, plain in zip(rows, widths_from, strict=True):
        cells = [s + " " * (w - len(p)) for s, p, w in zip(shown, plain, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _short_hash(model: CachedModel) -> str:
    return esc(model.hash[:8]) if model.hash else "-"


EXAMPLE_MODEL = "mlx-community/Qwen2.5-0.5B-Instruct-4bit"


def _nothing_listed(result: ListResult) -> str:
    where = esc(result.hub_root)
    if result.repos_in_cache:
        return f"No model in {where} matches {esc(repr(result.pattern))} (`mlxk list` shows them all).\n"
    return (
        f"No models in the cache folder {where}\n"
        "(set HF_HUB_CACHE or HF_HOME to read another folder).\n"
        f"Get a model with `mlxk pull <org/name>`, for example: mlxk pull {EXAMPLE_MODEL}\n"
    )


def render_list(result: ListResult, style: Style, now: float | None = None) -> str:
    if not result.models:
        return _nothing_listed(result)
    now = time.time() if now is None else now
    plain, shown = [], []
    for m in result.models:
        health = "healthy" if m.healthy else "unhealthy"
        row = [
            esc(m.name),
            _short_hash(m),
            human_size(m.size_bytes),
            human_age(now - m.last_modified_ns / 1e9) if m.last_modified_ns else "-",
            m.model_type,
            health,
        ]
        plain.append(row)
        shown.append([*row[:5], style.ok(health) if m.healthy else style.bad(health)])
    lines = _table(["NAME", "HASH", "SIZE", "MODIFIED", "TYPE", "HEALTH"], shown, plain)
    total = sum(m.size_bytes for m in result.models)
    unhealthy = sum(1 for m in result.models if not m.healthy)
    footer = f"{len(result.models)} model{'s' if len(result.models) != 1 else ''}, {human_size(total)}"
    if unhealthy:
        footer += f"; {unhealthy} unhealthy (see `mlxk health`)"
    return "\n".join([*lines, style.dim(footer)]) + "\n"


def _quantization_text(quant: object) -> str | None:
    if not isinstance(quant, dict):
        return None
    bits, group = quant.get("bits"), quant.get("group_size")
    text = f"{esc(str(bits))}-bit" if bits is not None else "quantized"
    return f"{text}, group size {esc(str(group))}" if group is not None else text


def render_show(result: ShowResult, style: Style, now: float | None = None) -> str:
    m = result.model
    now = time.time() if now is None else now
    meta = model_metadata(m.config) or {}
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(m.last_modified_ns / 1e9))
    others = [esc(s[:8]) for s in m.snapshots if s != m.hash]
    fields: list[tuple[str, str | None]] = [
        ("Model", style.bold(esc(m.name))),
        ("Snapshot", esc(m.hash or "-") + (f"  (also: {', '.join(others)})" if others else "")),
        ("Size", human_size(m.size_bytes)),
        (
            "Modified",
            f"{stamp} ({human_age(now - m.last_modified_ns / 1e9)})" if m.last_modified_ns else None,
        ),
        ("Framework", m.framework),
        ("Type", f"{m.model_type} ({', '.join(m.capabilities)})" if m.capabilities else m.model_type),
        ("Architecture", esc(str(meta["architecture"])) if "architecture" in meta else None),
        ("Quantization", _quantization_text(meta.get("quantization"))),
        ("Context", esc(str(meta["context_length"])) if "context_length" in meta else None),
        (
            "Health",
            style.ok("healthy") if m.healthy else style.bad(f"unhealthy: {esc(m.health_reason or '')}"),
        ),
        ("Runnable", "yes (mlx-lm)" if m.runtime_compatible else f"no: {esc(m.reason or '')}"),
        ("Fingerprint", result.fingerprint),
    ]
    width = max(len(label) for label, _ in fields) + 1
    lines = [f"{(label + ':').ljust(width)}  {value}" for label, value in fields if value is not None]
    if result.with_files:
        lines += ["", style.bold("Files:")]
        rows = [
            [esc(f.path), human_size(f.size) if f.size >= 0 else "missing", file_type(f.path)]
            for f in m.files
        ]
        lines += ["  " + line for line in _table(["NAME", "SIZE", "TYPE"], rows, rows)]
    if result.with_config:
        lines += ["", style.bold("config.json:")]
        config = (
            orjson.dumps(m.config, option=orjson.OPT_INDENT_2).decode() if m.config is not None else "(none)"
        )
        lines.append(config)
    return "\n".join(lines) + "\n"


def render_health(result: HealthResult, style: Style) -> str:
    if not result.entries:
        return "No models in the cache.\n"
    lines = []
    names = [esc(e.model.name) for e in result.entries]
    width = max(len(name) for name in names)
    for entry, name in zip(result.entries, names, strict=True):
        mark = style.ok("ok ") if entry.model.healthy else style.bad("BAD")
        lines.append(f"{mark}  {name.ljust(width)}  {esc(health_reason(entry))}")
    total, bad = len(result.entries), result.unhealthy_count
    lines.append(style.dim(f"{total} checked: {total - bad} healthy, {bad} unhealthy"))
    if result.deep is not None:
        deep = result.deep
        lines.append(
            style.dim(
                f"deep: {deep.files_hashed} files hashed ({human_size(deep.bytes_hashed)}), "
                f"{deep.files_from_memo} unchanged since verified"
            )
        )
    return "\n".join(lines) + "\n"


def describe_blas(plan: BlasPlan) -> str:
    """``openblas (scipy-openblas32, 2 threads)``, or the library and why when nothing is loaded."""
    details = [plan.source] if plan.source not in ("none", "mlx", plan.library) else []
    if plan.threads:
        details.append(f"{plan.threads} thread{'s' if plan.threads != 1 else ''}")
    head = plan.library + (f" ({', '.join(details)})" if details else "")
    return head if plan.path else f"{head}: {plan.reason}"


def render_version(info: VersionInfo) -> str:
    core = "native core" if info.native else "pure-Python core"
    return f"mlxk {info.cli_version} (JSON API {info.json_api_spec_version}, {core})\nBLAS: {describe_blas(info.blas)}\n"
