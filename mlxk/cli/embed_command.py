from __future__ import annotations

import sys
from typing import Any

import orjson
from cleo.helpers import argument, option

from mlxk.cli.base import MlxkCommand
from mlxk.embedding.embeddable import embedding_model
from mlxk.errors import ValidationError

MAX_BATCH = 4096


class EmbedCommand(MlxkCommand):
    name = "embed"
    description = "Embed texts with a cached sentence-embedding model (JSONL out, or one --json envelope)."
    json_command = "embed"
    arguments = [
        argument("model", "Embedding model (org/name, a unique part of it, or name@<hash prefix>)."),
        argument(
            "text",
            "Texts to embed; '-' reads stdin; none: read --file or stdin.",
            optional=True,
            multiple=True,
        ),
    ]
    options = [
        option("file", "f", "One text per line, or JSONL with a 'text' field ('-' for stdin).", flag=False),
        option("no-normalize", None, "Keep the raw pooled vectors (default: unit length).", flag=True),
        option("batch-size", None, "Texts per forward pass.", flag=False, default="32"),
        option(
            "query",
            None,
            "Embed the texts as retrieval queries (the model's query prompt or instruction).",
            flag=True,
        ),
        option(
            "instruct",
            None,
            "Task instruction put before each query (decoder-based models such as Qwen3-Embedding; implies --query).",
            flag=False,
        ),
        option(
            "dimensions",
            None,
            "Shorter vectors from a Matryoshka model (Qwen3-Embedding: 1 to its hidden size), renormalized.",
            flag=False,
        ),
    ]

    def _records(self) -> list[dict[str, Any]]:
        """Input records: {"text": ...} plus, for JSONL input, the other fields to pass through."""
        texts: list[str] = list(self.argument("text") or [])
        if texts and texts != ["-"]:
            return [{"text": t} for t in texts]
        source = "-" if texts else self.option("file")  # `embed MODEL -`: stdin, as --file -
        if source in (None, "-"):
            if source is None and sys.stdin.isatty():
                raise ValidationError("nothing to embed: give texts, --file, or pipe them on stdin")
            raw = sys.stdin.buffer.read()
        else:
            try:
                with open(source, "rb") as fh:
                    raw = fh.read()
            except OSError as exc:
                raise ValidationError(f"cannot read {source}: {exc.strerror}") from None
        return [_record(line, number) for number, line in enumerate(raw.splitlines(), 1) if line.strip()]

    def execute_command(self, json_mode: bool) -> int:
        size = str(self.option("batch-size"))
        if not size.isdigit() or not 1 <= int(size) <= MAX_BATCH:
            raise ValidationError(f"--batch-size takes a whole number from 1 to {MAX_BATCH}, not {size!r}")
        records = self._records()
        if not records:
            raise ValidationError("nothing to embed: the input has no texts")
        dimensions = _dimensions(self.option("dimensions"))
        instruct = self.option("instruct")
        if instruct is not None and not instruct.strip():
            raise ValidationError("--instruct takes a task description, not an empty text")
        embeddable = embedding_model(self.location(), self.argument("model"))
        from mlxk.embedding.loader import load_embedder

        encoder = load_embedder(embeddable.path)
        normalize = not self.option("no-normalize")
        # documents go in as they are; a query gets the model's query prompt or the instruction
        prefix = encoder.query_prompt(instruct) if self.option("query") or instruct is not None else ""
        result = encoder.embed(
            [r["text"] for r in records],
            normalize=normalize,
            batch_size=int(size),
            dimensions=dimensions,
            prefix=prefix,
        )
        model = embeddable.model
        metadata = {"model": model.name, "dimensions": result.dimensions, "revision": model.hash}
        truncated = [i for i, t in enumerate(result.truncated) if t]
        if truncated:
            sys.stderr.write(
                f"Note: {len(truncated)} text(s) were longer than {encoder.max_length} tokens and were truncated\n"
            )
        if json_mode:
            data = {
                **metadata,
                "normalized": normalize,
                "count": len(records),
                "embeddings": [
                    {**r, "embedding": v, "tokens": n, "truncated": t}
                    for r, v, n, t in zip(
                        records, result.vectors, result.token_counts, result.truncated, strict=True
                    )
                ],
            }
            self.emit(True, data, "")
            return 0
        out = sys.stdout.buffer
        for r, vector in zip(records, result.vectors, strict=True):
            out.write(
                orjson.dumps(
                    {**r, "embedding": vector, "metadata": metadata}, option=orjson.OPT_APPEND_NEWLINE
                )
            )
        out.flush()
        return 0


def _dimensions(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValidationError(f"--dimensions takes a positive whole number, not {value!r}")
    return int(value)


def _record(line: bytes, number: int) -> dict[str, Any]:
    text = line.decode("utf-8", "replace")
    if not text.lstrip().startswith("{"):
        return {"text": text}
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ValidationError(f"line {number} starts like JSON but is not valid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise ValidationError(f"line {number}: a JSONL record needs a string 'text' field")
    return obj
