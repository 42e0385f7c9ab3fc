"""One engine's side of constrained decoding: from a request to its sequence's ``Constraint``.

Built when a request first needs a grammar (reading the vocabulary of a large model takes a
second or two), then kept with the engine: the vocabulary, the tokenizer in llguidance's terms and
the compiled grammars.
"""

from __future__ import annotations

from typing import Any

from mlxk.generation.grammar.compiler import Grammars
from mlxk.generation.grammar.constraint import Constraint
from mlxk.generation.grammar.lark import Lark
from mlxk.generation.grammar.requests import reasoning_markers, request_grammar, starts_in_reasoning
from mlxk.generation.prompt import Prompt
from mlxk.generation.request import GenerationRequest
from mlxk.generation.tokens import Vocabulary


def needs_grammar(request: GenerationRequest) -> bool:
    """Whether ``request`` may have something to enforce (cheap: no vocabulary read)."""
    choice = request.tool_choice
    return request.response_format.type != "text" or (bool(request.tools) and choice not in ("auto", "none"))


class Enforcer:
    def __init__(
        self, tokenizer: Any, vocab: Vocabulary, end_ids: frozenset[int], model_vocab: int | None
    ) -> None:
        self.vocab = vocab
        self.grammars = Grammars(tokenizer, self.vocab, end_ids, model_vocab)
        self.lark = Lark(self.vocab.added)
        self.model_vocab = model_vocab

    def constraint(
        self, request: GenerationRequest, prompt: Prompt, output_format: str | None
    ) -> Constraint | None:
        """The constraint of a new sequence for ``request``; raises InvalidField (naming the
        field) for a schema that cannot be enforced."""
        found = request_grammar(request, output_format, self.lark)
        if found is None:
            return None
        grammar, param = found
        matcher = self.grammars.matcher(grammar, param)
        markers = reasoning_markers(output_format, self.vocab.added) if request.prompt is None else None
        in_reasoning = markers is not None and starts_in_reasoning(prompt.tail, markers)
        open_id = self.vocab.added.get(markers[0]) if markers is not None else None
        return Constraint(matcher, self.vocab, reasoning=markers, in_reasoning=in_reasoning, open_id=open_id)
