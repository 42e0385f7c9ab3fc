from __future__ import annotations

import contextlib
import sys

from cleo.helpers import argument, option

from mlxk.cache.delete_run import sweep_trash
from mlxk.cli.base import MlxkCommand
from mlxk.errors import AmbiguousMatch, LocksPresent, MlxkError, RequiresConfirmation
from mlxk.ops.rm import Removal, locks_message, plan_removal, remove
from mlxk.output.transfers import describe_plan, render_plan, rm_ambiguous_data, rm_data


class RmCommand(MlxkCommand):
    name = "rm"
    description = "Delete a cached model (or one snapshot, name@<hash>), after showing what goes."
    json_command = "rm"
    arguments = [argument("model", "Model name (org/name, a unique part of it, or name@<hash prefix>).")]
    options = [
        option("dry-run", None, "Show what would be deleted and the bytes freed; delete nothing.", flag=True),
        option(
            "force",
            "f",
            "Do not ask (only for an exactly named model); delete even when locks are held.",
            flag=True,
        ),
    ]

    def execute_command(self, json_mode: bool) -> int:
        spec = self.argument("model")
        try:
            removal = plan_removal(self.location(), spec)
        except MlxkError as error:
            # Nothing of this model to delete: still finish what earlier, killed rm runs left (the
            # plan of a model that is there finishes them as part of its own removal).
            if not self.option("dry-run"):
                with contextlib.suppress(OSError):
                    sweep_trash(self.location().hub_root)
            if isinstance(error, AmbiguousMatch):
                matches = list(error.extra.get("matches", []))
                raise error.with_data(rm_ambiguous_data(spec, matches, error.message)) from None
            raise
        if self.option("dry-run"):
            message = f"would delete {describe_plan(removal.plan)}"
            self.emit(
                json_mode,
                rm_data(removal, "would_delete", message),
                render_plan(removal.plan, "Would delete"),
            )
            return 0
        force = bool(self.option("force"))
        if removal.plan.held_locks and not force:  # a download in progress: say so before asking anything
            message = locks_message(removal.plan)
            raise LocksPresent(message).with_data(rm_data(removal, "requires_confirmation", message))
        if not (force and removal.exact) and not self._confirmed(removal, json_mode):
            why = "it matched fuzzily; " if not removal.exact else ""
            message = f"deleting {removal.name} needs confirmation ({why}run on a terminal, or use -f with the exact name)"
            data = rm_data(removal, "requires_confirmation", message)
            raise RequiresConfirmation(message).with_data(data)
        try:
            cleaned = remove(removal, force=force)
        except LocksPresent as error:  # --force overrides held locks: it is a confirmation, too
            raise error.with_data(rm_data(removal, "requires_confirmation", error.message)) from None
        message = f"deleted {describe_plan(removal.plan)}"
        self.emit(
            json_mode, rm_data(removal, "deleted", message, cleaned), message[0].upper() + message[1:] + "\n"
        )
        return 0

    def _confirmed(self, removal: Removal, json_mode: bool) -> bool:
        if not self.can_ask(json_mode):
            return False  # scripts must say -f; nothing is deleted on a guess
        sys.stderr.write(render_plan(removal.plan, "Will delete"))
        return self.ask_yes_no(f"Delete {removal.name}?", default=False)
