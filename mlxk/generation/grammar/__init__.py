"""Constrained decoding: grammars that hold a model's output to a JSON Schema or a tool call.

The grammar library is llguidance (no dependencies of its own, exact about what it cannot
enforce, special tokens never inside JSON text). Per model, ``Grammars`` holds its tokenizer in
llguidance's terms and a cache of compiled grammars (one pristine matcher per grammar text,
copied for each request). Per sequence, a ``Constraint`` follows the tokens the model samples and
says which may come next, as a bit mask; ``mask`` applies the masks of a whole batch with plain
mx operations (CPU, Metal and CUDA alike). What the grammars say:

- ``response_format`` json_object / json_schema: the answer is one JSON value of the schema,
  written as ``json.dumps`` would (``", "`` and ``": "``, no other whitespace);
- ``tool_choice`` required or a named function: the answer is one or more calls of the offered
  tools (one when ``parallel_tool_calls`` is false), in the model's own call format, each with
  arguments valid against the tool's parameters;
- both, with ``tool_choice: auto``: a call or the JSON answer.

Reasoning comes first and is not constrained: a model that thinks does so freely, and the
constraint starts after its end-of-reasoning marker.

llguidance and numpy are imported when a model first needs a grammar, never by cache commands.
"""
