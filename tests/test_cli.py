"""The command line as users and scripts drive it: flags, exit codes, envelopes, human views."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import cachegen as gen
from tests.cachefix import healthy_model

pytestmark = pytest.mark.usefixtures("core")


@pytest.fixture
def two_models(hub: Path) -> Path:
    healthy_model(hub, "mlx-community/Qwen2.5-0.5B-Instruct-4bit")
    broken = healthy_model(hub, "mlx-community/Llama-3.2-1B-4bit", chat=False)
    (broken.snapshot / "config.json").unlink()
    return hub


def test_json_flag_before_or_after_the_command(cli, two_models: Path) -> None:
    after, before = cli("list", "--json"), cli("--json", "list")
    assert after.exit_code == before.exit_code == 0
    assert after.json() == before.json()
    assert [m["name"] for m in after.json()["data"]["models"]] == [
        "mlx-community/Llama-3.2-1B-4bit",
        "mlx-community/Qwen2.5-0.5B-Instruct-4bit",
    ]


def test_list_pattern_filters_case_insensitively(cli, two_models: Path) -> None:
    data = cli("list", "QWEN", "--json").json()["data"]
    assert data["count"] == 1 and data["models"][0]["name"].endswith("Qwen2.5-0.5B-Instruct-4bit")


def test_list_empty_and_missing_cache(cli, hub: Path) -> None:
    assert cli("list", "--json").json()["data"] == {"models": [], "count": 0}
    shutil.rmtree(hub)
    result = cli("list", "--json")
    assert result.exit_code == 0 and result.json()["data"]["count"] == 0


def test_list_human_table(cli, two_models: Path) -> None:
    out = cli("list").stdout.splitlines()
    assert out[0].split() == ["NAME", "HASH", "SIZE", "MODIFIED", "TYPE", "HEALTH"]
    qwen = next(line for line in out if "Qwen" in line).split()
    assert qwen[-2:] == ["chat", "healthy"] and len(qwen[1]) == 8
    assert next(line for line in out if "Llama" in line).split()[-2:] == ["base", "unhealthy"]
    assert "\x1b[" not in "".join(out)  # plain text on a pipe
    assert out[-1].startswith("2 models") and "1 unhealthy" in out[-1]


def test_show_card_and_files(cli, two_models: Path) -> None:
    result = cli("show", "qwen", "--files")
    assert result.exit_code == 0
    assert "Model:" in result.stdout and "Qwen2.5-0.5B-Instruct-4bit" in result.stdout
    assert "Quantization:  4-bit, group size 64" in result.stdout
    assert "model.safetensors" in result.stdout and "weights" in result.stdout


def test_show_json_metadata_files_config(cli, two_models: Path) -> None:
    data = cli("show", "mlx-community/Qwen2.5-0.5B-Instruct-4bit", "--files", "--config", "--json").json()[
        "data"
    ]
    assert data["model"]["quantization"] == {"group_size": 64, "bits": 4}
    assert data["metadata"]["context_length"] == 131072
    assert data["metadata"]["architecture"] == "LlamaForCausalLM"
    types = {f["name"]: f["type"] for f in data["files"]}
    assert types["model.safetensors"] == "weights" and types["config.json"] == "config"
    assert types["tokenizer.json"] == "tokenizer" and types["README.md"] == "readme"
    assert data["config"]["model_type"] == "llama"


def test_show_ambiguous_lists_matches(cli, two_models: Path) -> None:
    result = cli("show", "mlx-community", "--json")
    assert result.exit_code == 1
    error = result.json()["error"]
    assert error["type"] == "ambiguous_match"
    assert sorted(error["matches"]) == [
        "mlx-community/Llama-3.2-1B-4bit",
        "mlx-community/Qwen2.5-0.5B-Instruct-4bit",
    ]


def test_show_not_found_and_invalid_name(cli, two_models: Path) -> None:
    missing = cli("show", "nothing-like-this", "--json")
    assert missing.exit_code == 1 and missing.json()["error"]["type"] == "model_not_found"
    invalid = cli("show", "bad name!", "--json")
    assert invalid.exit_code == 1 and invalid.json()["error"]["type"] == "validation_error"
    human = cli("show", "nothing-like-this")
    assert human.exit_code == 1 and human.stdout == "" and human.stderr.startswith("Error: ")


def test_hash_prefix_selects_snapshot(cli, hub: Path) -> None:
    old = gen.add_model(
        hub,
        "org/two-snaps",
        gen.mlx_chat_model_files(tensors=4),
        commit="a" * 40,
        ref=None,
        mtime=gen.OLD_MTIME,
    )
    new = gen.add_model(
        hub, "org/two-snaps", gen.mlx_chat_model_files(tensors=8), commit="b" * 40, mtime=gen.OLD_MTIME + 100
    )
    assert cli("show", "org/two-snaps", "--json").json()["data"]["model"]["hash"] == new.commit
    picked = cli("show", "org/two-snaps@aaaa", "--json").json()["data"]
    assert picked["model"]["hash"] == old.commit
    assert picked["snapshots"] == [new.commit, old.commit]
    missing = cli("show", "org/two-snaps@cccc", "--json")
    assert missing.exit_code == 1
    assert missing.json()["error"]["type"] == "hash_not_found"
    assert missing.json()["error"]["available_hashes"] == ["bbbbbbbb", "aaaaaaaa"]
    health = cli("health", "org/two-snaps@aaaa", "--json").json()["data"]
    assert health["summary"]["total"] == 1


def test_newest_snapshot_without_ref(cli, hub: Path) -> None:
    gen.add_model(
        hub, "org/noref", gen.mlx_chat_model_files(tensors=4), commit="a" * 40, ref=None, mtime=1_700_000_000
    )
    gen.add_model(
        hub, "org/noref", gen.mlx_chat_model_files(tensors=4), commit="c" * 40, ref=None, mtime=1_700_000_500
    )
    assert cli("list", "--json").json()["data"]["models"][0]["hash"] == "c" * 40


def test_health_json_and_strict_exit_code(cli, two_models: Path) -> None:
    result = cli("health", "--json")
    assert result.exit_code == 0
    data = result.json()["data"]
    assert data["summary"] == {"total": 2, "healthy_count": 1, "unhealthy_count": 1}
    assert data["unhealthy"] == [
        {"name": "mlx-community/Llama-3.2-1B-4bit", "status": "unhealthy", "reason": "config.json is missing"}
    ]
    assert cli("health", "--strict").exit_code == 1
    quiet = cli("health", "--strict", "-q")
    assert quiet.exit_code == 1 and quiet.stdout == ""
    assert cli("health", "qwen", "--strict").exit_code == 0
    assert cli("health", "zzz", "--json").json()["error"]["type"] == "model_not_found"


def test_health_human_view(cli, two_models: Path) -> None:
    out = cli("health").stdout
    assert "BAD  mlx-community/Llama-3.2-1B-4bit" in out and "config.json is missing" in out
    assert out.splitlines()[-1] == "2 checked: 1 healthy, 1 unhealthy"


def test_usage_error_gives_envelope_under_json(cli, hub: Path) -> None:
    result = cli("list", "--bogus", "--json")
    assert result.exit_code == 1
    assert result.json()["status"] == "error" and result.json()["error"]["type"] == "validation_error"
    plain = cli("list", "--bogus")
    assert plain.exit_code == 1 and "bogus" in plain.stderr and "Traceback" not in plain.stderr


def test_version(cli) -> None:
    import mlxk

    data = cli("--version", "--json").json()
    assert data["command"] == "version" and data["data"]["cli_version"] == mlxk.__version__
    assert data["data"]["system"]["memory_total_bytes"] > 0
    assert cli("--version").stdout.startswith(f"mlxk {mlxk.__version__}")


def test_console_scripts_and_real_process(two_models: Path) -> None:
    """The installed commands run as processes with the documented exit codes and no traceback."""
    bindir = Path(sys.executable).parent
    for script in ("mlxk", "mlxk-json", "mlxk2"):
        exe = bindir / script
        if not exe.exists():
            pytest.skip("mlxk is not installed into this environment")
        proc = subprocess.run(
            [str(exe), "health", "--strict", "--json"],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
            timeout=60,
        )
        assert proc.returncode == 1, proc.stderr
        assert '"command":"health"' in proc.stdout and "Traceback" not in proc.stderr
