"""Server logs on stderr: plain lines for people, or JSON lines (``--log-json``) for collectors."""

from __future__ import annotations

import logging
import sys
import time

import orjson


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        return orjson.dumps(entry).decode()


def configure(json_lines: bool, level: int = logging.INFO) -> None:
    """mlxk's server logger writes to stderr; called once in the worker process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLines() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    logger = logging.getLogger("mlxk.server")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
