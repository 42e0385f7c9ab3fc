"""``mlxk list`` as ``hf cache ls`` users expect: --sort/--reverse and --filter on size, age,
framework, type, health, runnable and capability, the same in human and JSON modes; and the
column options MLX-Knife users type (--all, --health, --verbose), which never change the JSON."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cachegen as gen
from mlxk.errors import ValidationError
from mlxk.ops.list_query import build_query, parse_filter, parse_sort

pytestmark = pytest.mark.usefixtures("core")

CHAT = "mlx-community/Qwen-Chat-4bit"  # MLX chat, healthy, runnable, old, small
BIG = "mlx-community/Big-Base-4bit"  # MLX base model over 1 GB (sparse), modified a month ago
RECENT = "mlx-community/Recent-Chat-4bit"  # MLX chat, modified yesterday
BROKEN = "mlx-community/Broken-4bit"  # no config.json: unhealthy
TORCH = "someorg/Torch-Model"  # PyTorch weights: healthy, not runnable by mlx-lm
GGUF = "someorg/Tiny-GGUF"  # GGUF only
DAY = 86400


def names(result: Any) -> list[str]:
    return [m["name"] for m in result.json()["data"]["models"]]


def human_names(result: Any) -> list[str]:
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NAME"), result.stdout
    return [line.split()[0] for line in lines[1:-1]]


@pytest.fixture
def zoo(hub: Path) -> Path:
    now = time.time()
    gen.add_model(hub, CHAT, gen.mlx_chat_model_files(tensors=8))
    big = gen.mlx_chat_model_files(tensors=600, dims=(1024, 1024), sparse=True, chat=False)
    gen.add_model(hub, BIG, big, mtime=now - 31 * DAY)
    gen.add_model(hub, RECENT, gen.mlx_chat_model_files(tensors=16), mtime=now - DAY)
    broken = gen.add_model(hub, BROKEN, gen.mlx_chat_model_files(tensors=4))
    (broken.snapshot / "config.json").unlink()
    os.utime(broken.snapshot, (gen.OLD_MTIME, gen.OLD_MTIME))  # as old as before the damage
    torch = gen.mlx_chat_model_files(tensors=12)
    torch.update(
        {"config.json": gen.llama_config(quantized=False), "README.md": gen.readme("transformers", ())}
    )
    gen.add_model(hub, TORCH, torch)
    gen.add_model(hub, GGUF, {"model-q4.gguf": b"GGUF" + b"\0" * 4000, "README.md": gen.readme(None, ())})
    return hub


def test_the_default_lists_every_model_in_both_modes(cli: Any, zoo: Path) -> None:
    """The decision in docs/migration.md: no human-mode default hides a model (1.x showed only MLX
    chat models, 2.0 only runnable ones); people and scripts see the same set."""
    every = sorted([CHAT, BIG, RECENT, BROKEN, TORCH, GGUF])
    assert names(cli("list", "--json")) == every
    assert human_names(cli("list")) == every


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--sort", "size"), [BIG, RECENT, TORCH, CHAT, BROKEN, GGUF]),  # biggest first, as hf
        (("--sort", "size", "--reverse"), [GGUF, BROKEN, CHAT, TORCH, RECENT, BIG]),
        (("--sort", "size:asc"), [GGUF, BROKEN, CHAT, TORCH, RECENT, BIG]),
        (("--sort", "modified"), [RECENT, BIG, BROKEN, CHAT, GGUF, TORCH]),  # newest first; ties by name
        (("--sort", "NAME", "--reverse"), sorted([CHAT, BIG, RECENT, BROKEN, TORCH, GGUF], reverse=True)),
    ],
)
def test_sort_orders_json_and_human_alike(
    cli: Any, zoo: Path, args: tuple[str, ...], expected: list[str]
) -> None:
    assert names(cli("list", *args, "--json")) == expected
    assert human_names(cli("list", *args)) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--filter", "size>1GB"), [BIG]),
        (("--filter", "size <= 1 GiB", "--filter", "framework=MLX"), [BROKEN, CHAT, RECENT]),
        (("--filter", "modified<7d"), [RECENT]),
        (("--filter", "modified>30d"), [BIG, BROKEN, CHAT, TORCH, GGUF]),  # older than 30 days
        (("--filter", "modified>2w", "--filter", "modified<6mo"), [BIG]),
        (("--framework", "pytorch"), [TORCH]),
        (("--filter", "framework=gguf,pytorch"), [TORCH, GGUF]),
        (("--filter", "framework!=mlx"), [TORCH, GGUF]),
        (("--filter", "type=base"), [BIG, GGUF]),
        (("--filter", "health=unhealthy"), [BROKEN]),
        (("--filter", "runnable=yes"), [BIG, CHAT, RECENT]),  # what 1.x and 2.0 listed by default
        (("--filter", "runnable=no", "--sort", "size"), [TORCH, BROKEN, GGUF]),
        (("--filter", "capability=chat", "--framework", "mlx"), [BROKEN, CHAT, RECENT]),
        (("chat", "--filter", "modified>2d"), [CHAT]),  # a pattern and a filter
    ],
)
def test_filters_keep_the_same_models_in_json_and_human(
    cli: Any, zoo: Path, args: tuple[str, ...], expected: list[str]
) -> None:
    ordered = expected if "--sort" in args else sorted(expected)
    result = cli("list", *args, "--json")
    assert result.exit_code == 0, result.stdout
    assert names(result) == ordered and result.json()["data"]["count"] == len(ordered)
    assert human_names(cli("list", *args)) == ordered


def test_nothing_left_is_a_message_not_an_error(cli: Any, zoo: Path) -> None:
    result = cli("list", "qwen", "--filter", "size>1TB")
    assert result.exit_code == 0
    assert "matches 'qwen' and --filter 'size>1TB'" in result.stdout
    assert cli("list", "--filter", "size>1TB", "--json").json()["data"] == {"models": [], "count": 0}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--filter", "size"), "--filter takes KEY OP VALUE"),
        (("--filter", "colour=red"), "unknown key 'colour'"),
        (("--filter", "size>1XB"), "'1XB' is not a size"),
        (("--filter", "modified>30"), "'30' is not an age"),
        (("--filter", "type>chat"), "type takes = or !="),
        (("--filter", "health=ok"), "health is one of healthy, unhealthy"),
        (("--filter", "runnable=maybe"), "runnable is one of yes, no"),
        (("--framework", "onnx"), "--framework takes mlx, gguf, pytorch, unknown"),
        (("--sort", "age"), "--sort takes name, size or modified"),
        (("--sort", "size:up"), "--sort takes name, size or modified"),
    ],
)
def test_bad_filters_and_sorts_are_validation_errors(
    cli: Any, zoo: Path, args: tuple[str, ...], says: str
) -> None:
    envelope = cli("list", *args, "--json")
    assert envelope.exit_code == 1
    assert (
        envelope.json()["error"]["type"] == "validation_error" and says in envelope.json()["error"]["message"]
    )
    human = cli("list", *args)
    assert human.exit_code == 1 and says in human.stderr and human.stdout == ""


def test_column_options_add_columns_and_leave_the_json_alone(cli: Any, zoo: Path) -> None:
    plain_json = cli("list", "--json").stdout
    for args in (("--all",), ("--health",), ("--verbose",), ("-v", "--all", "--health")):
        assert cli("list", *args, "--json").stdout == plain_json
    header = {
        args: cli("list", *args).stdout.splitlines()[0].split()
        for args in ((), ("--all",), ("--verbose",), ("--health",), ("--verbose", "--health"))
    }
    assert header[()] == ["NAME", "HASH", "SIZE", "MODIFIED", "TYPE", "HEALTH"]
    assert header[("--all",)] == ["NAME", "HASH", "SIZE", "MODIFIED", "FRAMEWORK", "TYPE", "HEALTH"]
    assert header[("--verbose",)] == [*header[("--all",)], "RUNNABLE"]
    assert header[("--health",)] == [*header[()], "REASON"]
    assert header[("--verbose", "--health")] == [*header[("--verbose",)], "REASON"]
    lines = cli("list", "--verbose", "--health").stdout.splitlines()[1:-1]
    rows = {cells[0]: cells for cells in (re.split(r"\s{2,}", line.strip()) for line in lines)}
    assert rows[TORCH][4:8] == ["PyTorch", "chat", "healthy", "no"] and "PyTorch is not MLX" in rows[TORCH][8]
    assert rows[BROKEN][6:8] == ["unhealthy", "no"] and "config.json" in rows[BROKEN][8]
    assert rows[CHAT][4:] == ["MLX", "chat", "healthy", "yes", "-"]


def test_a_folder_pattern_names_what_works_instead(cli: Any, zoo: Path) -> None:
    """2.0 listed local workspaces with `mlxk list .` or `mlxk list ./prefix`."""
    for pattern in (".", "./gemma-", "/abs/models"):
        result = cli("list", pattern, "--json")
        assert result.exit_code == 1 and "migration" in result.json()["error"]["message"]


# -- the query itself -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("size>500", 500),
        ("size>1.5GB", 1.5e9),
        ("size>=2GiB", 2 * 1024**3),
        ("size < 10 mb", 10e6),
        ("size=1k", 1000),
        ("modified>30d", 30 * DAY),
        ("modified<12h", 12 * 3600),
        ("modified>2w", 14 * DAY),
        ("modified>6mo", 180 * DAY),
        ("modified>1y", 365 * DAY),
        ("modified<90s", 90),
        ("MODIFIED>5min", 300),
    ],
)
def test_sizes_and_ages_read_like_hf_cache_ls(text: str, number: float) -> None:
    assert parse_filter(text).number == pytest.approx(number)


def test_sort_defaults_follow_hf() -> None:
    assert parse_sort("name", False) == ("name", False)
    assert parse_sort("size", False) == ("size", True)
    assert parse_sort("modified", True) == ("modified", False)
    assert parse_sort("modified:asc", True) == ("modified", True)
    assert build_query([], None, False).filters == ()


def test_runnable_accepts_yes_no_true_false() -> None:
    assert parse_filter("runnable=true").words == ("yes",)
    assert parse_filter("runnable=0,yes").words == ("no", "yes")
    with pytest.raises(ValidationError):
        parse_filter("size>-1GB")
