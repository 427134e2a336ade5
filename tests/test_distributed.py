"""Distributed serving: one model split across two ranks on this machine (MLX's ring backend on
the CPU, started by mlx.launch as a user would), rank 0 serving HTTP. Every answer must be the
one a single process gives, token for token; a rank that dies ends the server with a 503."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from tokenizers import Tokenizer

from tests.distributed_server import LaunchedServer
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_qwen2

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 6}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
# The long one takes more than one message to tell the other ranks (4 KiB each).
TINY_PROMPTS = ["hello", "one two three " * 70]


def sdk(server: ServerProcess) -> openai.OpenAI:
    # No retries: the SDK retries a 503, which would hide it.
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120)


def answers(
    server: ServerProcess, model: str, prompts: list[str], max_tokens: int, bias: dict | None = None
) -> list:
    """What clients see: greedy completions, whole and streamed, and a seeded one, all sent at
    once (a long prompt among them is read in chunks); then, after a stream whose client left,
    the first prompt again (from the prompt cache). `bias`: a logit_bias for the completions."""
    client = sdk(server)

    def complete(prompt: str, stream: bool = False, **sampling):
        made = client.completions.create(
            model=model,
            prompt=prompt,
            max_tokens=max_tokens,
            stream=stream,
            logit_bias=bias or openai.NOT_GIVEN,
            **sampling,
        )
        return "".join(chunk.choices[0].text for chunk in made) if stream else made

    jobs = [(prompt, stream) for prompt in prompts for stream in (False, True)]
    with ThreadPoolExecutor(len(jobs) + 1) as pool:
        seeded = pool.submit(complete, prompts[0], temperature=1.0, seed=7)
        together = list(pool.map(lambda job: complete(*job, temperature=0), jobs))
    left = client.completions.create(model=model, prompt=prompts[0], max_tokens=500, stream=True)
    next(iter(left))
    left.close()
    again = complete(prompts[0], temperature=0)
    assert again.usage.prompt_tokens_details.cached_tokens > 0, "the prompt cache was not used"
    texts = [made if isinstance(made, str) else made.choices[0].text for made in together]
    return [*texts, seeded.result().choices[0].text, again.choices[0].text]


def constrained(server: ServerProcess, model: str) -> str:
    """A chat reply whose tokens rank 0's grammar chose, to a JSON schema."""
    chat = sdk(server).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "A person as JSON."}],
        response_format=JSON_FORMAT,
        max_tokens=24,
        temperature=0,
    )
    return chat.choices[0].message.content


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("distributed")
    return store, make_tiny_qwen2(store / "test" / "tiny-qwen2").id


@pytest.fixture(scope="module")
def ascii_only(tiny_store) -> dict:
    """A logit_bias that leaves the random tiny model only printable ASCII to write, so its
    replies are text to compare, not special tokens or halves of characters."""
    store, model = tiny_store
    tokenizer = Tokenizer.from_file(str(store / model / "tokenizer.json"))
    pieces = {token: tokenizer.decode([token]) for token in range(tokenizer.get_vocab_size())}
    printable = {t for t, piece in pieces.items() if piece.isascii() and piece.isprintable()}
    return {
        str(token): -100 for token, piece in pieces.items() if not piece or token not in printable
    }


@pytest.fixture(scope="module")
def tiny_reference(tiny_store, ascii_only) -> list:
    store, model = tiny_store
    with ServerProcess(store, model=model) as single:
        return [*answers(single, model, TINY_PROMPTS, 8, ascii_only), constrained(single, model)]


@pytest.mark.parametrize("mode", ["tensor", "pipeline"])
def test_a_tiny_qwen2_split_both_ways_answers_as_one_process(
    tiny_store, ascii_only, tiny_reference, mode
):
    store, model = tiny_store
    assert all(tiny_reference), tiny_reference
    with LaunchedServer(store, model, mode) as launched:
        replies = [
            *answers(launched, model, TINY_PROMPTS, 8, ascii_only),
            constrained(launched, model),
        ]
        assert replies == tiny_reference
        assert launched.health()["distributed"] == {
            "mode": mode,
            "backend": "ring",
            "ranks": 2,
            "rank": 0,
        }
        loaded = httpx.get(f"{launched.base_url}/api/v0/loaded").json()["data"]
        assert loaded[0]["distributed"]["ranks"] == 2
    assert "rank 1 (pid" in launched.log_text()


@pytest.fixture(scope="module")
def gemma_pair(models_dir, twin_ids, twin_mlx):
    """Gemma 3's architecture and vocabulary (the tiny twin) in one process (the run's own
    server of it), and split by layer ranges over two ranks (Gemma 3 has no mlx-lm pipeline of
    its own)."""
    model = twin_ids["mlx"]
    with LaunchedServer(models_dir, model, "pipeline") as launched:
        yield twin_mlx, launched, model


def test_gemma_split_by_layer_ranges_answers_as_one_process(gemma_pair, models_dir):
    single, launched, model = gemma_pair
    prompts = ["The capital of France is", "Count: " + ", ".join(map(str, range(1, 36)))]
    expected = answers(single, model, prompts, max_tokens=3)
    assert answers(launched, model, prompts, max_tokens=3) == expected
    assert launched.health()["distributed"]["mode"] == "pipeline"
    # Each rank holds half the weights (the embedding's rows too), as it says once loaded.
    whole = (models_dir / model / "model.safetensors").stat().st_size / 1024**3
    held = re.findall(r"holds its part of .*: ([\d.]+) GiB of weights", launched.log_text())
    assert len(held) == 2 and all(abs(float(h) - whole / 2) < whole / 10 for h in held), held


def test_a_killed_rank_ends_requests_with_503_and_stops_rank_0(gemma_pair):
    _, launched, model = gemma_pair
    stream = sdk(launched).completions.create(
        model=model, prompt="Count from one to a thousand:", max_tokens=4000, stream=True
    )
    received, killed_at = [], None
    with pytest.raises(openai.APIError) as failure:
        for chunk in stream:
            received.append(chunk)
            if len(received) == 2:
                os.kill(launched.rank_pid(1), signal.SIGKILL)
                killed_at = time.monotonic()
    assert failure.value.body["type"] == "service_unavailable"
    assert "rank 1" in failure.value.body["message"]
    launched.process.wait(timeout=30)
    assert time.monotonic() - killed_at < 10
    assert f"lost rank 1 (pid {launched.rank_pid(1)}" in launched.log_text()


def test_distributed_needs_the_mlx_engine_and_the_launcher(models_dir):
    base = [sys.executable, "-m", "mlxserve.cli.main", "serve", "--models-dir", str(models_dir)]
    llamacpp = subprocess.run(
        [*base, "--engine", "llamacpp", "--distributed", "pipeline"], capture_output=True, text=True
    )
    assert llamacpp.returncode != 0
    assert "the llama.cpp engine serves each model in one process" in llamacpp.stderr
    alone = subprocess.run(
        [*base, "--engine", "mlx", "--distributed", "tensor"], capture_output=True, text=True
    )
    assert alone.returncode != 0
    assert "--distributed runs under MLX's launcher" in alone.stderr
