"""SIGTERM while streams are running, on both engines (Gemma 3's tiny twin): every stream ends
with an error event its client can read (not a cut connection), the server exits within seconds,
and no llama.cpp child is left."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from tests.server import ServerProcess
from tests.test_llamacpp_process import child_pids, wait_until_gone

STREAMS = 4
NO_EOS = {"1": -100, "106": -100}  # Gemma's EOS and end of turn: the streams keep going


def read_stream(server: ServerProcess, model: str, started: threading.Event, ends: list) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 2000,
        "stream": True,
        "logit_bias": NO_EOS,
    }
    last = None
    try:
        with httpx.stream(
            "POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120
        ) as reply:
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    started.set()
                    last = line.removeprefix("data: ")
    except httpx.HTTPError as exc:
        last = f"connection error: {exc}"
    ends.append(last)


@pytest.mark.parametrize("engine", ["mlx", "llamacpp"])
def test_sigterm_under_load_ends_streams_with_an_error_event(models_dir, twin_ids, engine):
    with ServerProcess(models_dir, model=twin_ids[engine], engine=engine) as server:
        children = child_pids(server.process.pid)
        ends: list = []
        started = [threading.Event() for _ in range(STREAMS)]
        readers = [
            threading.Thread(target=read_stream, args=(server, twin_ids[engine], s, ends))
            for s in started
        ]
        for reader in readers:
            reader.start()
        assert all(s.wait(120) for s in started)  # every stream is generating
        stopping = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0, server.log_tail()
        took = time.monotonic() - stopping
        for reader in readers:
            reader.join(30)
    assert took < 10
    assert len(ends) == STREAMS
    for last in ends:
        error = json.loads(last)["error"]  # a cut connection would not parse
        assert error["type"] == "service_unavailable" and "unloaded" in error["message"]
    assert all(wait_until_gone(pid, timeout=5) is not None for pid in children)
