"""Prometheus text for ``GET /metrics``: requests, tokens, queue depth, first-token time, speed."""

from __future__ import annotations

import threading
from collections import Counter

from mlxk.generation.chunks import Usage


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.generations = 0
        self.ttft_sum = 0.0
        self.ttft_count = 0
        self.generation_seconds = 0.0

    def request(self, path: str, status: int) -> None:
        with self._lock:
            self.requests[
                (path if path.startswith(("/v1/", "/health", "/metrics")) else "other", status)
            ] += 1

    def first_token(self, seconds: float | None) -> None:
        if seconds is not None:
            with self._lock:
                self.ttft_sum += seconds
                self.ttft_count += 1

    def generated(self, usage: Usage) -> None:
        with self._lock:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            self.generation_seconds += usage.generation_seconds
            self.generations += 1

    def render(self, queue_depth: int) -> str:
        with self._lock:
            lines = ["# TYPE mlxk_requests_total counter"]
            for (path, status), count in sorted(self.requests.items()):
                lines.append(f'mlxk_requests_total{{path="{path}",status="{status}"}} {count}')
            speed = self.completion_tokens / self.generation_seconds if self.generation_seconds > 0 else 0.0
            lines += [
                "# TYPE mlxk_prompt_tokens_total counter",
                f"mlxk_prompt_tokens_total {self.prompt_tokens}",
                "# TYPE mlxk_completion_tokens_total counter",
                f"mlxk_completion_tokens_total {self.completion_tokens}",
                "# TYPE mlxk_queue_depth gauge",
                f"mlxk_queue_depth {queue_depth}",
                "# TYPE mlxk_time_to_first_token_seconds summary",
                f"mlxk_time_to_first_token_seconds_sum {self.ttft_sum:.6f}",
                f"mlxk_time_to_first_token_seconds_count {self.ttft_count}",
                "# TYPE mlxk_generation_tokens_per_second gauge",
                f"mlxk_generation_tokens_per_second {speed:.3f}",
            ]
        return "\n".join(lines) + "\n"
