"""Names a cache can hold that must not take over the terminal, and what an empty cache says.

Folder and file names (and text read from files) reach human output escaped; JSON keeps them exact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mlxk.output.escape import escape_controls
from tests.cachefix import healthy_model

pytestmark = pytest.mark.usefixtures("core")

TITLE = "\x1b]0;pwned\x07"  # OSC: sets the terminal's title
CLEAR = "\x1b[2J"  # CSI: clears the screen
FAKE_LINE = "\nok   Fake  healthy"
BIDI = "\u202e"  # right-to-left override


def assert_inert(text: str) -> None:
    """No control character but the line feeds the output itself has."""
    bad = [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F or c == BIDI]
    assert bad == [], repr(text)


def test_escape_controls_makes_every_control_visible() -> None:
    assert escape_controls("plain/name-1.5") == "plain/name-1.5"
    assert escape_controls(TITLE) == "\\x1b]0;pwned\\x07"
    assert escape_controls("a\nb\tc\rd\x00e\x7f\x9b") == "a\\nb\\tc\\rd\\x00e\\x7f\\x9b"
    assert escape_controls(f"x{BIDI}y\u2028z") == "x\\u202ey\\u2028z"
    assert escape_controls("caf\u00e9 \u4e2d") == "caf\u00e9 \u4e2d"  # printable text is untouched
    assert escape_controls("one\ntwo\x1b", keep_newlines=True) == "one\ntwo\\x1b"


@pytest.fixture
def hostile(hub: Path) -> Path:
    """A model with a broken link whose name carries escapes, and a repo folder named with them."""
    repo = healthy_model(hub, "org/m")
    os.symlink("../../blobs/" + "0" * 64, repo.snapshot / f"w{TITLE}{CLEAR}{FAKE_LINE}.safetensors")
    (hub / f"models--org--evil{TITLE}{BIDI}" / "snapshots").mkdir(parents=True)
    return hub


def test_list_health_show_escape_names(cli: Any, hostile: Path) -> None:
    listed = cli("list")
    assert listed.exit_code == 0
    assert_inert(listed.stdout)
    assert "org/evil\\x1b]0;pwned\\x07\\u202e" in listed.stdout
    assert len(listed.stdout.splitlines()) == 4  # header, two models, footer: no line faked

    health = cli("health")
    assert_inert(health.stdout)
    assert "w\\x1b]0;pwned\\x07\\x1b[2J\\nok   Fake  healthy.safetensors" in health.stdout
    assert len(health.stdout.splitlines()) == 3

    shown = cli("show", "org/m", "--files")
    assert shown.exit_code == 0
    assert_inert(shown.stdout)
    assert not any(line.startswith("ok   Fake") for line in shown.stdout.splitlines())


def test_json_keeps_names_exact(cli: Any, hostile: Path) -> None:
    names = {m["name"] for m in cli("list", "--json").json()["data"]["models"]}
    assert f"org/evil{TITLE}{BIDI}" in names
    reasons = [e["reason"] for e in cli("health", "--json").json()["data"]["unhealthy"]]
    assert any(f"w{TITLE}{CLEAR}{FAKE_LINE}.safetensors" in r for r in reasons)
    files = cli("show", "org/m", "--files", "--json").json()["data"]["files"]
    assert f"w{TITLE}{CLEAR}{FAKE_LINE}.safetensors" in {f["name"] for f in files}


def test_rm_plan_escapes_names(cli: Any, hub: Path, tmp_path: Path) -> None:
    repo = healthy_model(hub, "org/m")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    os.symlink(outside, repo.snapshot / f"x{TITLE}{FAKE_LINE}")
    result = cli("rm", "org/m", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert_inert(result.stdout + result.stderr)
    assert "x\\x1b]0;pwned\\x07\\nok" in result.stdout


def test_error_messages_escape_names(cli: Any, hub: Path) -> None:
    healthy_model(hub, "org/m")
    result = cli("help", f"nope{TITLE}")
    assert result.exit_code == 1
    assert_inert(result.stderr)
    assert "nope\\x1b]0;pwned\\x07" in result.stderr


def test_empty_cache_says_where_and_how_to_get_a_model(cli: Any, hub: Path) -> None:
    out = cli("list")
    assert out.exit_code == 0
    assert str(hub) in out.stdout
    assert "mlxk pull " in out.stdout and "HF_HUB_CACHE" in out.stdout
    assert cli("list", "--json").json()["data"] == {"models": [], "count": 0}  # the contract is unchanged


def test_a_pattern_matching_nothing_is_not_an_empty_cache(cli: Any, hub: Path) -> None:
    healthy_model(hub, "org/m")
    out = cli("list", "nothing-like-it")
    assert out.exit_code == 0
    assert "'nothing-like-it'" in out.stdout and str(hub) in out.stdout and "mlxk pull" not in out.stdout
