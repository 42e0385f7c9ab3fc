"""Model output, segmented: content, reasoning and tool calls, for every model family's format.

`parse_output` is the parser the server runs, for checking a model's raw output offline; a server
feeds a `make_segmenter` segmenter each text delta instead. See docs/tools.md.
"""

from mlxk.generation.detect import detect_format
from mlxk.generation.events import Channel, Delta, ParseResult, ResultBuilder, ToolCall
from mlxk.generation.parse import list_formats, make_segmenter, parse_output

__all__ = [
    "Channel",
    "Delta",
    "ParseResult",
    "ResultBuilder",
    "ToolCall",
    "detect_format",
    "list_formats",
    "make_segmenter",
    "parse_output",
]
