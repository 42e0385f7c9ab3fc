from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn

from cleo.helpers import argument, option

from mlxk.cli.base import EXIT_INTERRUPTED, MlxkCommand
from mlxk.errors import Interrupted, MlxkError
from mlxk.ops.pull import LocalState, PullOptions, PullTarget, pull, resolve_target
from mlxk.output.progress import PolledBar
from mlxk.output.transfers import pull_data, pull_error_data, render_pull


class PullCommand(MlxkCommand):
    name = "pull"
    description = "Download a model from the Hugging Face Hub into the cache, then verify it."
    json_command = "pull"
    arguments = [
        argument(
            "model",
            "org/name[@revision] (a branch, tag or commit). A bare name is looked up in the cache, "
            "else in mlx-community.",
        )
    ]
    options = [
        option(
            "include",
            None,
            "Only files matching this pattern (repeatable), e.g. '*.json'.",
            flag=False,
            multiple=True,
        ),
        option(
            "exclude",
            None,
            "Skip files matching this pattern (repeatable), e.g. '*.gguf'.",
            flag=False,
            multiple=True,
        ),
        option("force-resume", None, "Resume a partly downloaded model without asking.", flag=True),
    ]

    def execute_command(self, json_mode: bool) -> int:
        spec = self.argument("model")
        interactive = self.can_ask(json_mode)
        quiet = self.io.output.is_quiet()

        def confirm_resume(target: PullTarget, state: LocalState) -> bool:
            if not interactive:
                return False
            question = f"{target.repo_id} is partly downloaded ({len(state.present)} files there). Resume?"
            return self.ask_yes_no(question, default=True)

        options = PullOptions(
            include=tuple(self.option("include") or ()),
            exclude=tuple(self.option("exclude") or ()),
            force_resume=bool(self.option("force-resume")),
            progress=PolledBar if not json_mode and not quiet and sys.stderr.isatty() else None,
        )
        try:
            result = pull(self.location(), spec, options, confirm_resume)
        except KeyboardInterrupt:
            # Download threads cannot be cancelled; what they wrote is only ever a uniquely named
            # *.incomplete file, which the next pull (or rm) cleans. Leave now, not after them.
            self._interrupted(spec, json_mode)
        except MlxkError as error:
            error.data = pull_error_data(error, spec)
            raise
        self.emit(json_mode, pull_data(result), render_pull(result))
        return 0

    def _interrupted(self, spec: str, json_mode: bool) -> NoReturn:
        error = Interrupted("interrupted; partial files are left as .incomplete and cleaned by the next pull")
        with contextlib.suppress(MlxkError):
            error.data = resolve_target(spec, self.location().hub_root)
        error.data = pull_error_data(error, spec)
        self.report_error(error, json_mode)  # --json: the envelope, as for any other error
        os._exit(EXIT_INTERRUPTED)
