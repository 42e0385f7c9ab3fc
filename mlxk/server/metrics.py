"""Prometheus text for ``GET /metrics``: requests by route and status, generations, tokens, time to
first token, queue depth, and the process's memory, descriptors and garbage collection.

Every label value comes from a fixed set (route templates, HTTP statuses, finish reasons) and is
escaped all the same, so no request can add a series or a line.
"""

from __future__ import annotations

import gc
import os
import threading
from bisect import bisect_left
from collections import Counter

from mlxk.generation.chunks import Usage

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        lines = [f"# TYPE {name} histogram"]
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
        total = running + self.counts[-1]
        lines += [
            f'{name}_bucket{{le="+Inf"}} {total}',
            f"{name}_sum {self.sum:.6f}",
            f"{name}_count {total}",
        ]
        return lines


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.generations: Counter[str] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.generation_seconds = 0.0
        self.ttft = Histogram(TTFT_BUCKETS)

    def request(self, route: str, status: int) -> None:
        """One answered request; ``route`` is a template of ``routes.py`` (or ``unmatched``)."""
        with self._lock:
            self.requests[(route, status)] += 1

    def generated(self, usage: Usage, finish_reason: str) -> None:
        """One generation at its end (each prompt of a request counts)."""
        with self._lock:
            self.generations[finish_reason] += 1
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            self.generation_seconds += usage.generation_seconds
            if usage.completion_tokens > 0:  # a first token came: its time is known
                self.ttft.observe(usage.prompt_seconds)

    def render(self, queue_depth: int, in_flight: int) -> str:
        with self._lock:
            lines = ["# TYPE mlxk_requests_total counter"]
            for (route, status), count in sorted(self.requests.items()):
                lines.append(
                    f"mlxk_requests_total{{route={_quoted(route)},status={_quoted(str(status))}}} {count}"
                )
            lines.append("# TYPE mlxk_generations_total counter")
            for reason, count in sorted(self.generations.items()):
                lines.append(f"mlxk_generations_total{{finish_reason={_quoted(reason)}}} {count}")
            speed = self.completion_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0
            lines += [
                "# TYPE mlxk_prompt_tokens_total counter",
                f"mlxk_prompt_tokens_total {self.prompt_tokens}",
                "# TYPE mlxk_completion_tokens_total counter",
                f"mlxk_completion_tokens_total {self.completion_tokens}",
                "# TYPE mlxk_generation_tokens_per_second gauge",
                f"mlxk_generation_tokens_per_second {speed:.3f}",
                *self.ttft.lines("mlxk_time_to_first_token_seconds"),
            ]
        lines += [
            "# TYPE mlxk_queue_depth gauge",
            f"mlxk_queue_depth {queue_depth}",
            "# TYPE mlxk_requests_in_flight gauge",
            f"mlxk_requests_in_flight {in_flight}",
            *_process_lines(),
        ]
        return "\n".join(lines) + "\n"


def group_lines(size: int, rank: int, backend: str) -> list[str]:
    """The distributed group this server leads (serve --distributed)."""
    return [
        "# TYPE mlxk_group_size gauge",
        f"mlxk_group_size {size}",
        "# TYPE mlxk_group_rank gauge",
        f"mlxk_group_rank {rank}",
        "# TYPE mlxk_group_info gauge",
        f"mlxk_group_info{{backend={_quoted(backend)}}} 1",
    ]


def _quoted(value: str) -> str:
    """A label value in the text format's quotes, with its backslashes, quotes and newlines escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _process_lines() -> list[str]:
    lines = []
    rss = resident_bytes()
    if rss is not None:
        lines += ["# TYPE process_resident_memory_bytes gauge", f"process_resident_memory_bytes {rss}"]
    fds = _open_descriptors()
    if fds is not None:
        lines += ["# TYPE process_open_fds gauge", f"process_open_fds {fds}"]
    lines += [
        "# TYPE mlxk_python_gc_enabled gauge",
        f"mlxk_python_gc_enabled {int(gc.isenabled())}",
        "# TYPE python_gc_collections_total counter",
    ]
    for generation, stats in enumerate(gc.get_stats()):
        lines.append(f'python_gc_collections_total{{generation="{generation}"}} {stats["collections"]}')
    return lines


def resident_bytes() -> int | None:
    """This process's resident memory (Linux), None where /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - no /proc (macOS)
        return None


def _open_descriptors() -> int | None:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:  # pragma: no cover - no /proc (macOS: /dev/fd)
            continue
    return None  # pragma: no cover - neither (not Linux, macOS or a BSD)
