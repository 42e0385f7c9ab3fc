"""What MLX-Knife 1.x and 2.0 users type that mlxk does not do: each gets a message that names
what to do instead (docs/migration.md), and 2.0's ``MLXK2_*`` server variables keep their meaning.

Options and commands that mlxk does have are declared on the commands themselves; this table
only speaks when a parse fails on one of the names below, so it never shadows a real option.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

GUIDE = "docs/migration.md"
_TEXT_ONLY = (
    "mlxk runs text models only; image and audio input are gone (mlx-vlm's "
    "`python -m mlx_vlm.generate --model MODEL --image FILE --prompt TEXT` runs vision models)"
)
_NO_WORKSPACES = "local model folders (workspaces) are gone: mlxk works on the HuggingFace cache"

RETIRED_COMMANDS: dict[str, str] = {
    "clone": "`clone` is gone: mlxk keeps models in the HuggingFace cache only (no workspaces). "
    "`mlxk pull ORG/NAME` downloads a model there; `hf download ORG/NAME --local-dir DIR` makes a "
    "plain folder copy",
    "convert": "`convert` is gone: mlx-lm converts and quantizes, "
    "`mlx_lm.convert --hf-path ORG/NAME -q --q-bits 4 --mlx-path DIR`",
    "push": "`push` is gone: huggingface_hub's CLI uploads, `hf upload ORG/NAME DIR --private`",
    "embed-serve": "`embed-serve` is gone: `mlxk serve --model EMBEDDING_MODEL` answers /v1/embeddings "
    "itself (next to chat models, on one port)",
}

RETIRED_OPTIONS: dict[str, dict[str, str]] = {
    "run": {
        "--image": _TEXT_ONLY,
        "--audio": _TEXT_ONLY,
        "--chunk": _TEXT_ONLY,
        "--language": _TEXT_ONLY,
        "--translate": _TEXT_ONLY,
        "-c": "a chat starts when no prompt is given (`mlxk run MODEL`), or with -i/--interactive",
        "-p": 'the prompt is an argument (`mlxk run MODEL "TEXT"`) or `--prompt TEXT`',
    },
    "embed": {
        "--batch": "JSONL input is `--file FILE` (or `--file -` for stdin): each line's 'text' is embedded "
        "and its other fields are passed through",
        "--cpu": "`mlxk embed` runs on MLX's default device; there is no per-command device switch",
    },
    "show": {
        "--recalc-hash": f"{_NO_WORKSPACES}; `mlxk show` reports a snapshot's fingerprint and "
        "`mlxk health --deep` checks every byte against its checksum",
    },
    "serve": {
        "--reload": "`serve` has no auto-reload (--reload, MLXK2_RELOAD): stop it (Ctrl-C) and start it again",
        "--chunk": _TEXT_ONLY,
        "--embed-backend": "`mlxk serve` answers /v1/embeddings itself: name the embedding model in "
        "the request (or with --model)",
    },
}
RETIRED_OPTIONS["server"] = RETIRED_OPTIONS["serve"]

# 1.x's `list --framework` values that mlxk does not have as frameworks -> what lists the same models.
RETIRED_FRAMEWORKS: dict[str, str] = {
    "tokenizer": "1.x called repos of under 10 MB without MLX or GGUF weights 'Tokenizer'; mlxk names "
    "a framework by its weights: `mlxk list --filter 'size<10MB' --filter 'framework!=mlx,gguf'` "
    "lists those repos",
}


def _option_name(token: str) -> str:
    return token.split("=", 1)[0] if token.startswith("--") else token[:2]


def retired_usage(command: str | None, tokens: Sequence[str]) -> str | None:
    """The message for a retired command or option among ``tokens`` (the command line after
    ``mlxk``), or None. ``command`` is the command cleo found, None when the name was unknown."""
    words = [t for t in tokens if not t.startswith("-")]
    if command is None:
        name = words[0] if words else None
        return f"{RETIRED_COMMANDS[name]} ({GUIDE})" if name in RETIRED_COMMANDS else None
    retired = RETIRED_OPTIONS.get(command, {})
    for token in tokens:
        if token == "--":
            break
        if token.startswith("-") and _option_name(token) in retired:
            return f"{_option_name(token)}: {retired[_option_name(token)]} ({GUIDE})"
    return None


# MLX-Knife 2.0's server settings from the environment -> the option that says the same (and
# its short form, which counts as given too).
SERVE_ENV_OPTIONS = (
    ("MLXK2_HOST", "--host", None),
    ("MLXK2_PORT", "--port", "-p"),
    ("MLXK2_PRELOAD_MODEL", "--model", "-m"),
    ("MLXK2_MAX_TOKENS", "--max-tokens", None),
    ("MLXK2_LOG_LEVEL", "--log-level", None),
)
SERVE_ENV_FLAGS = (("MLXK2_LOG_JSON", "--log-json"), ("MLXK2_RELOAD", "--reload"))
_TRUE = ("1", "true", "yes", "on")


def serve_env_options(tokens: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The options that 2.0's ``MLXK2_*`` variables stand for, for those not on the command line
    (an option given wins, as in 2.0). ``tokens`` are the serve command's own. ``MLXK2_RELOAD``
    becomes ``--reload``, which then fails with its message."""

    def given(option: str, short: str | None = None) -> bool:
        return any(
            t == option or t.startswith(option + "=") or (short is not None and t.startswith(short))
            for t in tokens
        )

    extra: list[str] = []
    for variable, option, short in SERVE_ENV_OPTIONS:
        value = environ.get(variable)
        if value and not given(option, short):
            extra.append(f"{option}={value}")
    for variable, flag in SERVE_ENV_FLAGS:
        if environ.get(variable, "").lower() in _TRUE and not given(flag):
            extra.append(flag)
    return extra


def with_legacy_environment(args: list[str], environ: Mapping[str, str]) -> list[str]:
    """``mlxk serve`` (or ``server``) with 2.0's variables turned into options; other commands as they are."""
    at = next((i for i, t in enumerate(args) if not t.startswith("-")), None)
    if at is None or args[at] not in ("serve", "server") or "--" in args:
        return args
    return [*args, *serve_env_options(args[at + 1 :], environ)]
