"""What the server's request log (/api/v0/log/stream) records while a call runs: the prompt a
request renders, or the `response` records of its generations."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

import httpx

Answer = TypeVar("Answer")


def log_records(server, kind: str, count: int, call: Callable[[], Answer]) -> tuple[list, Answer]:
    """The first `count` records of type `kind` logged once `call` starts, and its answer."""
    records: queue.Queue = queue.Queue()

    def listen() -> None:
        seen = 0
        with httpx.stream("GET", f"{server.base_url}/api/v0/log/stream", timeout=120) as reply:
            for line in reply.iter_lines():
                if line == ": subscribed":
                    records.put("subscribed")
                elif line.startswith("data: "):
                    record = json.loads(line.removeprefix("data: "))
                    if record["type"] == kind:
                        records.put(record)
                        seen += 1
                        if seen == count:
                            return

    threading.Thread(target=listen, daemon=True).start()
    assert records.get(timeout=10) == "subscribed"
    answer = call()
    return [records.get(timeout=120) for _ in range(count)], answer


def rendered_prompt(server, call: Callable[[], Answer]) -> tuple[str, Answer]:
    """The prompt of the first generation `call` starts, and what `call` returned."""
    (request,), answer = log_records(server, "request", 1, call)
    return request["prompt"], answer
