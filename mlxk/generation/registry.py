"""The formats by name, with what the documentation says of each."""

from __future__ import annotations

from dataclasses import dataclass

from mlxk.generation.core import Segmenter
from mlxk.generation.formats.deepseek import DeepSeekDsml, DeepSeekV3, DeepSeekV31
from mlxk.generation.formats.gemma import Gemma4
from mlxk.generation.formats.glm import Glm45, Glm47
from mlxk.generation.formats.harmony import Harmony
from mlxk.generation.formats.kimi import KimiK2, KimiK3
from mlxk.generation.formats.llama import Llama3Json, Llama4Pythonic
from mlxk.generation.formats.mistral import Mistral
from mlxk.generation.formats.qwen import Hermes, Qwen3Xml


@dataclass(frozen=True, slots=True)
class FormatInfo:
    segmenter: type[Segmenter]
    models: str
    calls: str
    reasoning: str


FORMATS: dict[str, FormatInfo] = {
    "hermes": FormatInfo(
        Hermes,
        "Qwen2.5, Qwen3 (hybrid, Instruct-2507, Thinking-2507), Hermes 2 Pro and 3, SmolLM3",
        '<tool_call>{"name": …, "arguments": {…}}</tool_call>',
        "<think>…</think>",
    ),
    "qwen3_xml": FormatInfo(
        Qwen3Xml,
        "Qwen3-Coder, Qwen3.5 and later",
        "<tool_call><function=NAME><parameter=K>V</parameter>…</function></tool_call>",
        "<think>…</think>",
    ),
    "llama3_json": FormatInfo(
        Llama3Json,
        "Llama 3.1, 3.2, 3.3",
        '{"name": …, "parameters": {…}} as the answer, or after <|python_tag|>',
        "none",
    ),
    "llama4_pythonic": FormatInfo(
        Llama4Pythonic,
        "Llama 4 (Scout, Maverick)",
        "[name(arg=value, …), …], perhaps in <|python_start|>…<|python_end|>",
        "none",
    ),
    "mistral": FormatInfo(
        Mistral,
        "Mistral 7B v0.3, Nemo, Small 3.x and 4, Ministral, Magistral, Devstral",
        "[TOOL_CALLS][{…}] (older) or [TOOL_CALLS]NAME[ARGS]{…} (newer, perhaps with [CALL_ID]id)",
        "[THINK]…[/THINK] (Magistral 2506: <think>…</think>)",
    ),
    "harmony": FormatInfo(
        Harmony,
        "gpt-oss",
        "<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{…}<|call|>",
        "the analysis channel",
    ),
    "deepseek_v3": FormatInfo(
        DeepSeekV3,
        "DeepSeek V3, R1 (and its distills)",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME ```json {…} ```<｜tool▁call▁end｜>…",
        "<think>…</think>",
    ),
    "deepseek_v31": FormatInfo(
        DeepSeekV31,
        "DeepSeek V3.1",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{…}<｜tool▁call▁end｜>…",
        "<think>…</think>",
    ),
    "deepseek_dsml": FormatInfo(
        DeepSeekDsml,
        "DeepSeek V3.2, V4, V4.1",
        '<｜DSML｜function_calls><｜DSML｜invoke name="NAME"><｜DSML｜parameter name="K" string="true">V…',
        "<think>…</think>",
    ),
    "kimi_k2": FormatInfo(
        KimiK2,
        "Kimi K2 Instruct, K2 Thinking, K2.6",
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>{…}<|tool_call_end|>…",
        "<think>…</think> (calls inside it are read too)",
    ),
    "kimi_k3": FormatInfo(
        KimiK3,
        "Kimi K3",
        '<|open|>tools<|sep|><|open|>call tool="NAME" index="1"<|sep|><|open|>argument key="K" type="…"<|sep|>V…',
        "<|open|>think<|sep|>…<|close|>think<|sep|>",
    ),
    "glm45": FormatInfo(
        Glm45,
        "GLM-4.5, GLM-4.6",
        "<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n</tool_call>",
        "<think>…</think>",
    ),
    "glm47": FormatInfo(
        Glm47,
        "GLM-4.7, GLM-5.x",
        "<tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>",
        "<think>…</think>",
    ),
    "gemma4": FormatInfo(
        Gemma4,
        "Gemma 4",
        '<|tool_call>call:NAME{key:<|"|>text<|"|>,n:3}<tool_call|>',
        "<|channel>thought\\n…<channel|>",
    ),
}
