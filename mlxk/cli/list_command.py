from __future__ import annotations

from cleo.helpers import argument

from mlxk.cli.base import NO_MEMO, MlxkCommand
from mlxk.ops.list import list_models
from mlxk.output.contract import list_data
from mlxk.output.human import render_list


class ListCommand(MlxkCommand):
    name = "list"
    description = "List the models in the HuggingFace cache, with size, type and health."
    json_command = "list"
    arguments = [
        argument("pattern", "Only models whose name contains this (case-insensitive).", optional=True)
    ]
    options = [NO_MEMO]

    def execute_command(self, json_mode: bool) -> int:
        result = list_models(self.location(), self.argument("pattern"))
        self.emit(
            json_mode,
            list_data(result) if json_mode else None,
            "" if json_mode else render_list(result, self.style()),
        )
        return 0
