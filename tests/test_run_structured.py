"""``mlxk run --json-schema FILE`` and ``--json-object`` on a tiny real model (random weights: it
writes whatever the grammar lets it): the answer parses and validates, streamed and in ``--json``;
a schema file that is missing, not JSON, not a schema, or that the grammar library cannot enforce
is a validation error naming the file, before any output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.modelfix import build_tiny_chat_model, install
from tests.servefix import serve_env
from tests.test_run import SCHEMA, mlxk, run_json

MODEL = "test/Tiny-Json"
GREEDY = ("--temperature", "0", "--max-tokens", "400")
# every string and number bounded, every key required and no other: a random model's answer ends
CONTACT = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "tags"],
    "additionalProperties": False,
}


@pytest.fixture
def model(hub: Path) -> Path:
    install(hub, MODEL, build_tiny_chat_model(max_position_embeddings=4096))
    return hub


@pytest.fixture
def contact(tmp_path: Path) -> Path:
    path = tmp_path / "contact.json"
    path.write_text(json.dumps(CONTACT))
    return path


def test_the_json_answer_parses_and_validates(cli: Any, model: Path, contact: Path) -> None:
    for seed in ("1", "2", "3"):
        data = run_json(cli, MODEL, "Who are you?", "--json-schema", str(contact), "--seed", seed)
        assert data["finish_reason"] == "stop", data
        jsonschema.validate(json.loads(data["response"]), CONTACT)


def test_the_streamed_answer_is_the_same_json(model: Path, contact: Path) -> None:
    """The real program in a subprocess, its stdout a pipe: the answer and a newline."""
    args = ("run", MODEL, "Who are you?", "--json-schema", str(contact), *GREEDY)
    env = serve_env(model)
    streamed = mlxk(*args, env=env)
    assert streamed.returncode == 0, streamed.stderr
    whole = json.loads(mlxk(*args, "--json", env=env).stdout)["data"]["response"]
    assert streamed.stdout == whole + "\n"
    jsonschema.validate(json.loads(streamed.stdout), CONTACT)


def test_json_object_gives_an_object(cli: Any, model: Path) -> None:
    data = run_json(cli, MODEL, "Hello", "--json-object", *GREEDY)
    assert data["finish_reason"] == "stop", data
    assert isinstance(json.loads(data["response"]), dict)
    free = run_json(cli, MODEL, "Hello", *GREEDY)["response"]
    assert not free.startswith("{")  # the model does not write JSON by itself


def test_without_chat_template_the_raw_prompt_is_held_too(cli: Any, model: Path, contact: Path) -> None:
    data = run_json(cli, MODEL, "Hello", "--json-schema", str(contact), "--no-chat-template", *GREEDY)
    assert data["finish_reason"] == "stop", data
    jsonschema.validate(json.loads(data["response"]), CONTACT)


def error_of(cli: Any, *args: str) -> str:
    result = cli("run", MODEL, "Hello", *args, "--json")
    envelope = result.json()
    jsonschema.validate(envelope, SCHEMA, cls=jsonschema.Draft7Validator)
    assert result.exit_code == 1, envelope
    assert envelope["status"] == "error" and envelope["error"]["type"] == "validation_error", envelope
    assert "Traceback" not in result.stderr
    message: str = envelope["error"]["message"]
    return message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read it (No such file or directory)"),
        (b'{"type": "object",', "not JSON (Expecting property name enclosed in double quotes at line 1"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b'["type", "object"]', "a JSON Schema is an object (or true/false), not an array"),
        (b'{"type": "string", "not": {}}', 'the JSON schema cannot be enforced: Unimplemented keys: ["not"]'),
        (b'{"type": "object", "properties": {"a": {"$ref": "#/$defs/nowhere"}}}', "the JSON schema cannot"),
    ],
    ids=["missing", "not-json", "not-utf8", "array", "unimplemented", "dangling-ref"],
)
def test_a_bad_schema_file_is_a_validation_error_naming_it(
    cli: Any, model: Path, tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "schema.json"
    if content is not None:
        path.write_bytes(content)
    message = error_of(cli, "--json-schema", str(path))
    assert message.startswith(f"--json-schema {path}: ") and expected in message, message


def test_the_two_options_exclude_each_other(cli: Any, model: Path, contact: Path) -> None:
    message = error_of(cli, "--json-schema", str(contact), "--json-object")
    assert message == "--json-schema and --json-object exclude each other"


def test_a_bad_schema_prints_nothing_on_stdout_without_json(cli: Any, model: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"type": "string", "not": {}}')
    result = cli("run", MODEL, "Hello", "--json-schema", str(path))
    assert result.exit_code == 1 and result.stdout == ""
    assert f"--json-schema {path}: the JSON schema cannot be enforced" in result.stderr
