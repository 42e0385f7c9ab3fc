"""An exception nobody foresaw is a bug, reported as mlxk's ``internal_error`` (exit 1) with its type
and message and no traceback, unless ``MLXK_DEBUG=1`` asks for the traceback on stderr
(docs/json-api.md). Where it comes from a download, the pull passes it on untranslated: an
exception ``hub_error`` does not know is not a network failure.

huggingface_hub raises no such exception against our Hub, so ``snapshot_download`` itself is
replaced by one that raises (huggingface_hub's function, not mlxk's code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import huggingface_hub
import jsonschema
import pytest

from tests.hubfix import BIG, REPO
from tests.hubserver import FakeHub
from tests.test_pull import SCHEMA


class HubSurprise(Exception):
    """An exception of a kind huggingface_hub might raise some day, unknown to mlxk."""


def _snapshot_download_that_fails(*args: Any, **kwargs: Any) -> NoReturn:
    raise HubSurprise("a surprise from huggingface_hub")


@pytest.fixture
def surprising_hub(fake: FakeHub, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _snapshot_download_that_fails)
    monkeypatch.delenv("MLXK_DEBUG", raising=False)
    return fake


def test_an_exception_the_download_does_not_know_is_an_internal_error(
    cli: Any, hub: Path, surprising_hub: FakeHub
) -> None:
    result = cli("pull", REPO, "--json")
    assert result.exit_code == 1
    envelope = json.loads(result.stdout)
    jsonschema.validate(envelope, SCHEMA, cls=jsonschema.Draft7Validator)
    assert envelope["error"]["type"] == "internal_error"  # not network_error nor download_failed
    assert envelope["error"]["message"] == "HubSurprise: a surprise from huggingface_hub"
    assert result.stderr == ""
    assert surprising_hub.gets(BIG) == 0


def test_an_internal_error_prints_its_traceback_only_with_mlxk_debug(
    cli: Any, hub: Path, surprising_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = cli("pull", REPO)
    assert plain.exit_code == 1
    assert "HubSurprise: a surprise from huggingface_hub" in plain.stderr
    assert "Traceback" not in plain.stderr

    monkeypatch.setenv("MLXK_DEBUG", "1")
    debug = cli("pull", REPO, "--json")
    assert debug.exit_code == 1
    assert json.loads(debug.stdout)["error"]["type"] == "internal_error"  # stdout stays one envelope
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert "_snapshot_download_that_fails" in debug.stderr  # the frame where it was raised
    assert debug.stderr.rstrip().endswith("HubSurprise: a surprise from huggingface_hub")


def test_a_download_that_fails_before_a_byte_arrives_leaves_the_cache_as_it_was(
    cli: Any, hub: Path, surprising_hub: FakeHub
) -> None:
    """Nothing to resume: no repo folder is left behind, which ``list`` would show as a model
    without snapshots."""
    before = sorted(p.name for p in hub.iterdir()) if hub.exists() else []
    assert cli("pull", REPO, "--json").exit_code == 1
    after = sorted(p.name for p in hub.iterdir()) if hub.exists() else []
    assert [n for n in after if n.startswith("models--")] == [n for n in before if n.startswith("models--")]
    listed = json.loads(cli("list", "--json").stdout)
    assert listed["data"]["models"] == []
