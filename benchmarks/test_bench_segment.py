"""Per-delta cost of the output segmenter, the step that runs on every token of every stream.

The same deltas (about 4 characters each, as a BPE detokenizer yields them) go through a segmenter
of each format, as plain content (prose and code, with the brackets and angle brackets markers start
with) and as output that is mostly tool calls. The reference, measured in the same run, is mlxk's
stop-string matcher on the plain deltas: the per-token stage next to the segmenter in the pipeline.
The alarm is loose (a segmenter within 10 x the matcher on plain text, 25 x on calls); the numbers,
in µs per delta, are printed for docs/tools.md.
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import QUICK, ROUNDS, Medians
from mlxk.generation import make_segmenter
from mlxk.generation.stops import StopMatcher

PLAIN_VS_STOPS = 10.0
CALLS_VS_STOPS = 25.0
REPEAT = 20 if QUICK else 100
FORMATS = (
    ["hermes", "qwen3_xml"] if QUICK else ["hermes", "qwen3_xml", "harmony", "mistral", "glm47", "kimi_k2"]
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "write_file",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "content": {"type": "string"},
                    "mode": {"type": "integer"},
                },
            },
        },
    }
]
PROSE = (
    "Sure. To read a file in Python, open it with a context manager: `with open(path) as f:` and then "
    "call `f.read()`. For lists, use [x for x in items if x] and dicts like {'a': 1}; compare with a < b "
    "or a > b. The result is returned to the caller.\n\n"
)
CODE = 'def main() -> None:\n    print("hello <world>")\n    return [1, 2, {3: 4}]\n'
ARGUMENT = CODE * 3
CALLS = {
    "hermes": '<tool_call>\n{"name": "write_file", "arguments": {"path": "a.py", "content": %s, "mode": 420}}\n</tool_call>\n',
    "qwen3_xml": "<tool_call>\n<function=write_file>\n<parameter=path>\na.py\n</parameter>\n<parameter=content>\n%s\n</parameter>\n<parameter=mode>\n420\n</parameter>\n</function>\n</tool_call>\n",
    "harmony": '<|start|>assistant<|channel|>commentary to=functions.write_file <|constrain|>json<|message|>{"path": "a.py", "content": %s}<|call|>',
    "mistral": '[TOOL_CALLS]write_file[ARGS]{"path": "a.py", "content": %s, "mode": 420}',
    "glm47": "<tool_call>write_file<arg_key>path</arg_key><arg_value>a.py</arg_value><arg_key>content</arg_key><arg_value>%s</arg_value></tool_call>",
    "kimi_k2": '<|tool_calls_section_begin|><|tool_call_begin|>functions.write_file:0<|tool_call_argument_begin|>{"path": "a.py", "content": %s}<|tool_call_end|><|tool_calls_section_end|>',
}
JSON_ARGUMENT = {"hermes", "harmony", "mistral", "kimi_k2"}


def deltas_of(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def plain_deltas() -> list[str]:
    return deltas_of((PROSE + CODE) * REPEAT)


def call_deltas(fmt: str) -> list[str]:
    import json

    argument = json.dumps(ARGUMENT) if fmt in JSON_ARGUMENT else ARGUMENT
    return deltas_of((PROSE[:60] + CALLS[fmt] % argument) * REPEAT)


def segment_all(fmt: str, deltas: list[str]) -> int:
    segmenter = make_segmenter(fmt, tools=TOOLS)
    events = 0
    for delta in deltas:
        events += len(segmenter.feed(delta))
    return events + len(segmenter.finish())


def per_delta_us(benchmark: object, count: int) -> float:
    stats = benchmark.stats  # type: ignore[attr-defined]
    return float(stats.stats.median) / count * 1e6


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["plain", "calls"])
def test_segmenter(benchmark, medians: Medians, fmt: str, kind: str) -> None:
    deltas = plain_deltas() if kind == "plain" else call_deltas(fmt)
    events = benchmark.pedantic(segment_all, args=(fmt, deltas), rounds=max(ROUNDS, 5), iterations=1)
    assert events > 0
    medians.record(f"{fmt}-{kind}", benchmark)
    benchmark.extra_info["us_per_delta"] = per_delta_us(benchmark, len(deltas))
    medians.values[f"{fmt}-{kind}-count"] = len(deltas)


def test_stop_matcher_reference(benchmark, medians: Medians) -> None:
    deltas = plain_deltas()

    def run() -> int:
        matcher = StopMatcher(["</s>", "\n\nUser:"])
        return sum(len(matcher.feed(delta)) for delta in deltas) + len(matcher.flush())

    assert benchmark.pedantic(run, rounds=max(ROUNDS, 5), iterations=1) > 0
    medians.record("stops", benchmark)
    medians.values["stops-count"] = len(deltas)


def test_ratios(medians: Medians) -> None:
    """A loose alarm: the segmenter stays the same order of cost as the stop matcher."""
    stops = medians.values["stops"] / medians.values["stops-count"] * 1e6
    print(f"\nstop matcher: {stops:.2f} us/delta")
    for fmt in FORMATS:
        plain = medians.values[f"{fmt}-plain"] / medians.values[f"{fmt}-plain-count"] * 1e6
        calls = medians.values[f"{fmt}-calls"] / medians.values[f"{fmt}-calls-count"] * 1e6
        print(f"{fmt:>10}: plain {plain:.2f} us/delta ({plain / stops:.1f} x), calls {calls:.2f} us/delta")
        assert plain <= PLAIN_VS_STOPS * stops
        assert calls <= CALLS_VS_STOPS * stops
