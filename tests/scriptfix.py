"""A scripted tiny model: a real MLX llama whose weights make it write one fixed answer, whatever
the prompt and the sampling settings (for tests that need known text from a real server, such as
model output carrying HTML for the web chat to show as text).

How: the vocabulary is the character-level one of ``tests.modelfix`` (so any prompt tokenizes)
plus one token for each piece of the answer. Every decoder weight is zero, so the hidden state at a
position is the embedding of the token there; embeddings are one-hot rows; the (untied) output
head maps each token to the logits of its successor. The answer's first piece follows ``"\\n"``,
the last token of every ChatML generation prompt, each piece follows the one before, and the end
of turn follows the last. The chosen logit is ``PULL * sqrt(hidden)`` (about 550) and every other
is 0, so the answer is the same at any temperature the server accepts (0 to 2).

The chat template is ChatML whose generation prompt opens no thinking block, so the model writes
its own ``<think>…</think>`` first, as Qwen3's hybrid models do; its tool section renders the
Hermes ``<tool_call>`` marker, the format whose reasoning is ``<think>…</think>``. A server that
splits reasoning off sends that part as ``reasoning_content``; one that does not sends it at the
start of the content. The web chat shows it collapsed either way.
"""

from __future__ import annotations

import json
import re

from tests.modelfix import CHARS, EOS_ID, EOS_TOKEN, README, char_tokenizer, model_config, weight_files

PULL = 40.0

REASONING = "The user wants markdown with a table and code.\n"
# Markdown the web chat renders, and markup it must show as text: an <img> whose onerror would
# mark the page, a <script>, a javascript: link, and HTML inside a code span and a table cell.
ANSWER = (
    "# Scripted answer\n"
    "\n"
    "Some **bold**, *italic* and `inline code`; a [safe link](https://example.com/docs).\n"
    "\n"
    '<img src=x onerror="window.__pwned = 1">\n'
    "\n"
    "<script>window.__pwned = 2</script>\n"
    "\n"
    "A [bad link](javascript:window.__pwned=3) and `<b>not bold</b>`.\n"
    "\n"
    "- first item\n"
    "- second item\n"
    "\n"
    "```python\n"
    "def greet(name):\n"
    '    return f"Hello, {name}!"\n'
    "```\n"
    "\n"
    "| Model | Tokens | Note |\n"
    "| :--- | ---: | :---: |\n"
    "| tiny | 42 | <i>plain</i> |\n"
    "| small | 7 | ok |\n"
)
# ChatML; the tool section carries the Hermes marker (the format the server reads from a template)
CHAT_TEMPLATE = (
    '{%- if tools %}<|im_start|>system\nCall a tool as <tool_call>{"name": ..., "arguments": ...}</tool_call>'
    " with one of: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{%- for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SCRIPT = "<think>\n" + REASONING + "</think>\n\n" + ANSWER  # what the model writes after the prompt
HIDDEN = 256


def pieces(text: str) -> list[str]:
    """``text`` cut into distinct pieces (words with their trailing whitespace; a piece seen
    before is joined with the next), each to be one token."""
    found: list[str] = []
    seen: set[str] = set()
    pending = ""
    for word in re.findall(r"\S+\s*|\s+", text):
        pending += word
        if pending not in seen and pending not in CHARS:
            found.append(pending)
            seen.add(pending)
            pending = ""
    if pending:
        found[-1] += pending
    return found


def build_scripted_model(script: str = SCRIPT) -> dict[str, bytes]:
    """The files of a tiny MLX chat model that answers every prompt with ``script``."""
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_lm.models.llama import Model, ModelArgs

    parts = pieces(script)
    tokenizer = char_tokenizer(words=(*CHARS, *parts))  # the pieces: words never made from input
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab_size > HIDDEN:
        raise ValueError(f"{len(parts)} pieces need more than {HIDDEN} one-hot dimensions")
    config = model_config(vocab_size, max_position_embeddings=4096)
    config.update(
        hidden_size=HIDDEN, intermediate_size=HIDDEN, num_hidden_layers=1, tie_word_embeddings=False
    )

    model = Model(ModelArgs.from_dict(config))  # type: ignore[no-untyped-call]
    model.update(tree_map(mx.zeros_like, model.parameters()))  # every decoder weight 0
    model.model.embed_tokens.weight = mx.eye(vocab_size, HIDDEN)
    model.model.norm.weight = mx.ones((HIDDEN,))
    ids = [tokenizer.token_to_id(p) for p in parts]
    successor = dict.fromkeys(range(vocab_size), EOS_ID)  # anything else ends the turn
    for current, following in zip([tokenizer.token_to_id("\n"), *ids], ids, strict=False):
        successor[current] = following
    head = [[0.0] * HIDDEN for _ in range(vocab_size)]
    for current, following in successor.items():
        head[following][current] = PULL
    model.lm_head.weight = mx.array(head)
    mx.eval(model.parameters())

    files = weight_files(model, config)
    files["tokenizer.json"] = tokenizer.to_str(pretty=True).encode()
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS_TOKEN,
        "pad_token": "<|endoftext|>",
        "unk_token": "<unk>",
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    files["tokenizer_config.json"] = (json.dumps(tokenizer_config, indent=2) + "\n").encode()
    files["README.md"] = README
    return dict(sorted(files.items()))
