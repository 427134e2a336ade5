"""The llama.cpp engine as a user runs it: `mlxserve serve --engine auto` on Linux, its llama.cpp
child killed in the middle of requests, and no child left once the server stops."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from mlxserve.models.defaults import DEFAULT_GGUF_ID
from tests.metrics import model_metric
from tests.platforms import LINUX
from tests.server import ServerProcess, llama_children
from tests.test_llamacpp_process import process_exists, wait_until_gone

pytestmark = pytest.mark.skipif(not LINUX, reason="`--engine auto` picks llama.cpp on Linux only")
PROMPT = "The capital of France is"
NO_EOS = {"1": -100, "106": -100}  # Gemma's EOS and end-of-turn: a long request stays running


@pytest.fixture(scope="module")
def auto_server(models_dir, default_ids):
    """`--engine auto` (the default) and no --model: the server picks engine and model itself."""
    with ServerProcess(models_dir, engine="auto") as server:
        yield server


def llama_child(server: ServerProcess) -> int:
    """The pid of the llama.cpp child (the launcher that runs the server in-process)."""
    children = llama_children(server)
    assert len(children) == 1, children
    return children.pop()


def kill_when_generating(server: ServerProcess, pid: int) -> threading.Thread:
    """SIGKILL the child once a request has started generating in it."""

    def kill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            active = httpx.get(f"{server.base_url}/health", timeout=5).json()["active_requests"]
            if active:
                time.sleep(0.3)  # past the prompt, into the tokens
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill)
    killer.start()
    return killer


def sdk(server: ServerProcess) -> openai.OpenAI:
    # No retries: the SDK retries a 503 by default, which would hide it behind the restart.
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)


def test_auto_engine_is_llamacpp_on_linux(auto_server):
    assert auto_server.health()["loaded"] == [DEFAULT_GGUF_ID]
    listed = httpx.get(f"{auto_server.base_url}/api/v0/models/{DEFAULT_GGUF_ID}").json()
    assert listed["state"] == "loaded" and listed["compatibility_type"] == "gguf"
    body = {"model": DEFAULT_GGUF_ID, "prompt": PROMPT, "max_tokens": 2, "temperature": 0}
    result = httpx.post(f"{auto_server.base_url}/api/v0/completions", json=body, timeout=60)
    assert result.json()["runtime"]["name"] == "llama.cpp"


def test_a_killed_child_is_a_503_then_the_next_request_restarts_it(auto_server):
    client, old_pid = sdk(auto_server), llama_child(auto_server)
    killer = kill_when_generating(auto_server, old_pid)
    with pytest.raises(openai.InternalServerError) as failure:
        client.completions.create(
            model=DEFAULT_GGUF_ID, prompt=PROMPT, max_tokens=2000, logit_bias=NO_EOS
        )
    killer.join()
    assert failure.value.status_code == 503
    assert failure.value.body["type"] == "service_unavailable"
    assert f"(pid {old_pid}) stopped during the request" in failure.value.body["message"]

    again = client.completions.create(
        model=DEFAULT_GGUF_ID, prompt=PROMPT, max_tokens=4, temperature=0
    )
    assert again.choices[0].text.startswith(" the capital")
    assert llama_child(auto_server) != old_pid and not process_exists(old_pid)


def test_a_child_killed_mid_stream_ends_the_stream_with_a_503_error(auto_server):
    client = sdk(auto_server)
    client.completions.create(model=DEFAULT_GGUF_ID, prompt=PROMPT, max_tokens=1)  # a live child
    old_pid = llama_child(auto_server)
    stream = client.chat.completions.create(
        model=DEFAULT_GGUF_ID,
        messages=[{"role": "user", "content": "Count from one to a thousand."}],
        max_tokens=2000,
        logit_bias=NO_EOS,
        stream=True,
    )
    killer = kill_when_generating(auto_server, old_pid)
    received = []
    with pytest.raises(openai.APIError, match="stopped during the request") as failure:
        for chunk in stream:
            received.append(chunk)
    killer.join()
    # The 200 was sent with the first chunk, so the 503 arrives as the stream's error event.
    assert failure.value.body["type"] == "service_unavailable"
    assert received, "the stream broke before its first chunk"
    assert client.models.list().data[0].id == DEFAULT_GGUF_ID  # the server is still up
    reply = client.chat.completions.create(
        model=DEFAULT_GGUF_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert reply.choices[0].finish_reason in ("stop", "length")


def open_connections_to(port: int) -> int:
    """Established TCP connections to a local port, from the kernel's table: a stopped server's
    pending connections are there too."""
    table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    fields = (line.split() for line in table)
    return sum(f[3] == "01" and int(f[2].split(":")[1], 16) == port for f in fields)


def test_a_tokenize_call_cut_off_by_the_childs_death_is_made_again_to_the_next_child(auto_server):
    """A request whose tokenizing the child's death cut off is served by the next child:
    that call changes nothing in the child, so it is safely made again."""
    client = sdk(auto_server)
    client.completions.create(model=DEFAULT_GGUF_ID, prompt=PROMPT, max_tokens=1)  # a live child
    old_pid = llama_child(auto_server)
    ready = re.findall(
        rf"ready at http://127.0.0.1:(\d+) \(pid {old_pid}\)", auto_server.log_text()
    )
    port = int(ready[-1])
    replies = []
    os.kill(old_pid, signal.SIGSTOP)  # it still accepts connections, and answers none
    try:
        request = threading.Thread(
            target=lambda: replies.append(
                client.completions.create(
                    model=DEFAULT_GGUF_ID, prompt="A prompt never tokenized before", max_tokens=2
                )
            )
        )
        request.start()
        deadline = time.monotonic() + 30
        while not open_connections_to(port):
            assert time.monotonic() < deadline, "the request never reached the child"
            time.sleep(0.02)
    finally:
        os.kill(old_pid, signal.SIGKILL)
    request.join(60)
    assert replies and replies[0].choices[0].text, "the request failed with the child"
    assert f"llama.cpp (pid {old_pid}) died during a request" in auto_server.log_tail(400)
    assert llama_child(auto_server) != old_pid


def stream_until(server: ServerProcess, killed: threading.Event, outcomes: list) -> None:
    """Stream a long reply; record "503" if it ends with that error event, or "served" once it
    has text made after the kill (by a new child), then hang up."""
    body = {
        "model": DEFAULT_GGUF_ID,
        "prompt": PROMPT,
        "max_tokens": 2000,
        "stream": True,
        "logit_bias": NO_EOS,
    }
    url = f"{server.base_url}/v1/completions"
    with httpx.stream("POST", url, json=body, timeout=120) as reply:
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))  # a cut connection would not parse
            if "error" in chunk:
                assert chunk["error"]["type"] == "service_unavailable", chunk
                return outcomes.append("503")
            if killed.is_set() and chunk["choices"][0]["text"]:
                return outcomes.append("served")
    outcomes.append("ended")


def test_a_child_killed_under_load_fails_its_requests_and_serves_the_waiting_ones(auto_server):
    """Eight streams, four decoding in llama.cpp's slots and four waiting in mlxserve for one:
    the four decoding end with a readable 503 error event when the child dies, and the four
    waiting are served by a new child."""
    client = sdk(auto_server)
    client.completions.create(model=DEFAULT_GGUF_ID, prompt=PROMPT, max_tokens=1)  # a live child
    old_pid = llama_child(auto_server)
    killed, outcomes = threading.Event(), []
    readers = [
        threading.Thread(target=stream_until, args=(auto_server, killed, outcomes))
        for _ in range(8)
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 60
    while model_metric(auto_server.base_url, "mlxserve_engine_sequences", DEFAULT_GGUF_ID) < 4:
        assert time.monotonic() < deadline, "the slots never filled"
        time.sleep(0.1)
    killed.set()
    os.kill(old_pid, signal.SIGKILL)
    for reader in readers:
        reader.join(120)
    assert sorted(outcomes) == ["503"] * 4 + ["served"] * 4
    assert llama_child(auto_server) != old_pid


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_no_child_remains_after_the_server_stops(models_dir, default_ids, stop_signal):
    with ServerProcess(models_dir, model=default_ids["llamacpp"], engine="llamacpp") as server:
        child = llama_child(server)
        server.process.send_signal(stop_signal)
        assert server.process.wait(30) == 0
    assert wait_until_gone(child, timeout=5) is not None, f"llama.cpp child {child} outlived us"
