from __future__ import annotations

from cleo.helpers import argument, option

from mlxk.cli.base import NO_MEMO, MlxkCommand
from mlxk.ops.show import show_model
from mlxk.output.contract import show_data
from mlxk.output.human import render_show


class ShowCommand(MlxkCommand):
    name = "show"
    description = "Show one model: snapshot, size, type, health, metadata."
    json_command = "show"
    arguments = [argument("model", "Model name (org/name, a unique part of it, or name@<hash prefix>).")]
    options = [
        option("files", None, "List the snapshot's files.", flag=True),
        option("config", None, "Include the whole config.json.", flag=True),
        NO_MEMO,
    ]

    def execute_command(self, json_mode: bool) -> int:
        result = show_model(
            self.location(),
            self.argument("model"),
            files=bool(self.option("files")),
            config=bool(self.option("config")),
        )
        if json_mode:
            self.emit(True, show_data(result), "")
        else:
            self.emit(False, None, render_show(result, self.style()))
        return 0
