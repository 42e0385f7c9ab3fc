from __future__ import annotations

from cleo.helpers import argument, option

from mlxk.cli.base import NO_MEMO, MlxkCommand
from mlxk.cli.legacy import GUIDE, RETIRED_FRAMEWORKS
from mlxk.errors import ValidationError
from mlxk.ops.list import list_models
from mlxk.ops.list_query import FILTER_HELP, FRAMEWORKS, build_query
from mlxk.output.contract import list_data
from mlxk.output.human import ListColumns, render_list


class ListCommand(MlxkCommand):
    name = "list"
    description = "List the models in the HuggingFace cache, with size, type and health."
    json_command = "list"
    arguments = [
        argument("pattern", "Only models whose name contains this (case-insensitive).", optional=True)
    ]
    options = [
        option(
            "filter",
            None,
            f"Keep models for which KEY OP VALUE holds (repeatable, all must hold). Keys: {FILTER_HELP}.",
            flag=False,
            multiple=True,
        ),
        option("framework", None, "Only models of this framework: mlx, gguf, pytorch, unknown.", flag=False),
        option(
            "sort", None, "Order by name (default), size or modified (biggest, newest first).", flag=False
        ),
        option("reverse", None, "Reverse the order.", flag=True),
        option("all", None, "Add the FRAMEWORK column (every model is always listed).", flag=True),
        option("health", None, "Add the REASON column: each model's first problem.", flag=True),
        NO_MEMO,
    ]

    def execute_command(self, json_mode: bool) -> int:
        filters = list(self.option("filter") or ())
        framework = self.option("framework")
        if framework is not None:
            if framework.lower() in RETIRED_FRAMEWORKS:
                raise ValidationError(
                    f"--framework {framework}: {RETIRED_FRAMEWORKS[framework.lower()]} ({GUIDE})"
                )
            if framework.lower() not in FRAMEWORKS:
                raise ValidationError(f"--framework takes {', '.join(FRAMEWORKS)}, not {framework!r}")
            filters.append(f"framework={framework}")
        query = build_query(filters, self.option("sort"), bool(self.option("reverse")))
        result = list_models(self.location(), self.argument("pattern"), query)
        if json_mode:  # the JSON always carries every field: the column options are for people
            self.emit(True, list_data(result), "")
            return 0
        verbose = self.io.is_verbose()  # cleo's global --verbose / -v
        columns = ListColumns(
            framework=verbose or bool(self.option("all")),
            runnable=verbose,
            reason=bool(self.option("health")),
        )
        self.emit(False, None, render_list(result, self.style(), columns=columns))
        return 0
