"""Picking the output format from a model's chat template."""

from __future__ import annotations

from collections.abc import Iterable


def detect_format(chat_template: str | None, special_tokens: Iterable[str] | None = None) -> str | None:
    """The format a model writes, from its chat template (the markers the template renders), or from
    its special tokens when there is no template. None when neither shows a known tool-call format."""
    return None
