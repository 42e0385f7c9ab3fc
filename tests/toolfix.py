"""A chat template of our own that shows what the pipeline hands a template: the offered tools,
an assistant's earlier calls (their arguments rendered with ``tojson``, so a dict prints as an
object and a string as a quoted string), tool results with their call id, and the thinking switch
(``enable_thinking`` false: an empty think block, as hybrid reasoning models render it; else the
prompt ends inside an open one), and a variable of its own (``house_rules``). A second system message makes it raise, as templates do for
conversations they refuse. Written for the tiny character-level models (ASCII only)."""

from __future__ import annotations

import json
from typing import Any

TOOLS_TEMPLATE = (
    "{%- if house_rules is defined %}<|im_start|>system\n{{ house_rules }}<|im_end|>\n{% endif %}"
    "{%- if tools %}<|im_start|>system\nTools:\n"
    "{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}<|im_end|>\n{% endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and not loop.first %}"
    "{{ raise_exception('a system message comes first') }}{% endif %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant"
    "{%- for call in message.tool_calls %}\n<tool_call>{{ call.id }} {{ call.function.name }} "
    "{{ call.function.arguments | tojson }}</tool_call>{%- endfor %}<|im_end|>\n"
    "{%- elif message.role == 'tool' %}<|im_start|>tool {{ message.tool_call_id }}\n"
    "{{ message.content }}<|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def with_template(files: dict[str, bytes], template: str) -> dict[str, bytes]:
    """A built tiny model's files with another chat template."""
    config = json.loads(files["tokenizer_config.json"])
    config["chat_template"] = template
    return {**files, "tokenizer_config.json": (json.dumps(config, indent=2) + "\n").encode()}
