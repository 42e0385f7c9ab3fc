from __future__ import annotations

import sys
from collections.abc import Callable

from cleo.helpers import argument, option

from mlxk.cli.base import NO_MEMO, MlxkCommand
from mlxk.errors import EXIT_OPERATION, ValidationError
from mlxk.ops.deep import DeepOptions
from mlxk.ops.health import check_health
from mlxk.output.contract import health_data
from mlxk.output.human import render_health
from mlxk.output.progress import PolledBar


class HealthCommand(MlxkCommand):
    name = "health"
    description = "Check the integrity of cached models (config, weights, shards, safetensors headers)."
    json_command = "health"
    arguments = [
        argument(
            "model", "Only models matching this name or pattern (name@<hash> for a snapshot).", optional=True
        )
    ]
    options = [
        option("strict", None, "Exit with status 1 when any checked model is unhealthy.", flag=True),
        option(
            "deep", None, "Also hash every byte and compare it with the checksum in its blob name.", flag=True
        ),
        option("jobs", "j", "Hashing threads for --deep (default: one per core).", flag=False),
        option("all", None, "Check every model (what health does when no MODEL is named).", flag=True),
        NO_MEMO,
    ]

    def execute_command(self, json_mode: bool) -> int:
        if self.option("all") and self.argument("model") is not None:
            raise ValidationError("--all checks every model: name a MODEL or give --all, not both")
        deep = None
        if self.option("deep"):
            show = not json_mode and not self.io.output.is_quiet() and sys.stderr.isatty()

            def progress(total: int, done: Callable[[], int]) -> PolledBar:
                return PolledBar("verifying", total, done, enabled=show)

            deep = DeepOptions(jobs=parse_jobs(self.option("jobs")), progress=progress)
        elif self.option("jobs") is not None:
            raise ValidationError("--jobs only applies to --deep")
        result = check_health(self.location(), self.argument("model"), deep)
        if json_mode:
            self.emit(True, health_data(result), "")
        else:
            self.emit(False, None, render_health(result, self.style()))
        return EXIT_OPERATION if self.option("strict") and result.unhealthy_count else 0


MAX_JOBS = 1024


def parse_jobs(value: str | None) -> int:
    """``--jobs N``: a whole number from 1 to 1024; absent means one thread per core (0)."""
    if value is None:
        return 0
    if not value.isdigit() or not 1 <= int(value) <= MAX_JOBS:
        raise ValidationError(f"--jobs takes a whole number from 1 to {MAX_JOBS}, not {value!r}")
    return int(value)
