"""Responses kept for ``previous_response_id`` and ``GET``/``DELETE /v1/responses/{id}``: only
those asked for with ``store: true``, in memory (gone when the server stops), the oldest dropped
beyond ``MAX_STORED`` so memory stays bounded."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mlxk.generation.request import Message, ToolCall
from mlxk.server.errors import HTTPError
from mlxk.server.parts import CALL, TEXT, Part

MAX_STORED = 256


@dataclass(frozen=True, slots=True)
class Stored:
    response: dict[str, Any]  # the response object, as GET returns it
    conversation: tuple[Message, ...]  # its input and its answer: what a next response continues


class ResponseStore:
    def __init__(self, limit: int = MAX_STORED) -> None:
        self.limit = limit
        self._kept: OrderedDict[str, Stored] = OrderedDict()

    def keep(self, response: dict[str, Any], conversation: tuple[Message, ...], parts: list[Part]) -> None:
        self._kept[response["id"]] = Stored(response, (*conversation, *answer_messages(parts)))
        self._kept.move_to_end(response["id"])
        while len(self._kept) > self.limit:
            self._kept.popitem(last=False)

    def get(self, response_id: str) -> Stored:
        stored = self._kept.get(response_id)
        if stored is None:
            raise HTTPError(404, f"no stored response {response_id!r} (responses are kept with store: true, "
                            f"in memory, the last {self.limit})", code="response_not_found")  # fmt: skip
        return stored

    def history(self, response_id: str) -> tuple[Message, ...]:
        """The conversation ``previous_response_id`` continues (a 400 naming it when unknown)."""
        try:
            return self.get(response_id).conversation
        except HTTPError as error:
            raise HTTPError(
                400, error.message, param="previous_response_id", code="previous_response_not_found"
            ) from None

    def delete(self, response_id: str) -> None:
        self.get(response_id)
        del self._kept[response_id]


def answer_messages(parts: list[Part]) -> tuple[Message, ...]:
    """An answer as the assistant turn a next request sends back (its reasoning left out)."""
    text = "".join(part.text for part in parts if part.kind == TEXT)
    calls = tuple(ToolCall(part.call_id, part.name, part.text) for part in parts if part.kind == CALL)
    if not text and not calls:
        return ()
    return (Message("assistant", text, tool_calls=calls),)
