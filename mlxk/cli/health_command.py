from __future__ import annotations

from cleo.helpers import argument, option

from mlxk.cli.base import NO_MEMO, MlxkCommand
from mlxk.errors import EXIT_OPERATION
from mlxk.ops.health import check_health
from mlxk.output.contract import health_data
from mlxk.output.human import render_health


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
        NO_MEMO,
    ]

    def execute_command(self, json_mode: bool) -> int:
        result = check_health(self.location(), self.argument("model"))
        if json_mode:
            self.emit(True, health_data(result), "")
        else:
            self.emit(False, None, render_health(result, self.style()))
        return EXIT_OPERATION if self.option("strict") and result.unhealthy_count else 0
