"""The prompt a request renders, read off the server's request log (/api/v0/log/stream)."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

import httpx

Answer = TypeVar("Answer")


def rendered_prompt(server, call: Callable[[], Answer]) -> tuple[str, Answer]:
    """The prompt of the first generation `call` starts, and what `call` returned."""
    records: queue.Queue = queue.Queue()

    def listen() -> None:
        with httpx.stream("GET", f"{server.base_url}/api/v0/log/stream", timeout=120) as reply:
            for line in reply.iter_lines():
                if line == ": subscribed":
                    records.put("subscribed")
                elif line.startswith("data: "):
                    record = json.loads(line.removeprefix("data: "))
                    if record["type"] == "request":
                        records.put(record["prompt"])
                        return

    threading.Thread(target=listen, daemon=True).start()
    assert records.get(timeout=10) == "subscribed"
    answer = call()
    return records.get(timeout=60), answer
