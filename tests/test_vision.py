"""Images in chat on the MLX engine: tiny random-weight vision models of each family (Gemma 3,
Qwen2.5-VL) served for real and asked through the OpenAI, Anthropic and HTTP clients."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import queue
import shutil
import subprocess
import sys
import threading

import anthropic
import httpx
import openai
import pytest

from mlxserve.models.convert import convert_model
from tests.tiny_vision import IMAGE_TOKENS, png_bytes

pytestmark = pytest.mark.e2e
BLUE = png_bytes((0, 0, 255))
NOISE = png_bytes(None, seed=0)
QUESTION = "w1 w2 w3"
# Each picture adds its image tokens and the two tokens that open and close them.
IMAGE_SPAN = {family: tokens + 2 for family, tokens in IMAGE_TOKENS.items()}


def image_part(data: bytes, media="image/png") -> dict:
    url = f"data:{media};base64,{base64.b64encode(data).decode()}"
    return {"type": "image_url", "image_url": {"url": url, "detail": "low"}}


def user(*images: bytes, text: str = QUESTION) -> dict:
    return {
        "role": "user",
        "content": [*(image_part(i) for i in images), {"type": "text", "text": text}],
    }


@pytest.fixture
def vision_client(vision_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{vision_server.base_url}/v1", api_key="x", max_retries=0)


def ask(client, messages, model="test", **extra):
    return client.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=6, **extra
    )


def test_vision_answer_depends_on_the_image(vision_client, vision_server):
    first, again = ask(vision_client, [user(BLUE)]), ask(vision_client, [user(BLUE)])
    other = ask(vision_client, [user(NOISE)])
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    text_only = ask(vision_client, [{"role": "user", "content": QUESTION}])
    span = IMAGE_SPAN[vision_server.family]
    assert first.usage.prompt_tokens == text_only.usage.prompt_tokens + span


def test_vision_two_images_in_one_message(vision_client, vision_server):
    both = ask(vision_client, [user(BLUE, NOISE)])
    one = ask(vision_client, [user(BLUE)])
    assert both.usage.prompt_tokens == one.usage.prompt_tokens + IMAGE_SPAN[vision_server.family]
    swapped = ask(vision_client, [user(NOISE, BLUE)])
    assert swapped.usage.prompt_tokens == both.usage.prompt_tokens


def test_vision_stream_equals_whole_answer(vision_client):
    whole = ask(vision_client, [user(NOISE)]).choices[0].message.content
    chunks = ask(vision_client, [user(NOISE)], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole


def test_vision_batched_with_text_requests_equals_alone(vision_client):
    requests = [[user(BLUE)], [{"role": "user", "content": "w4 w5"}], [user(NOISE)]] * 2
    alone = [ask(vision_client, m).choices[0].message.content for m in requests]
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        together = list(
            pool.map(lambda m: ask(vision_client, m).choices[0].message.content, requests)
        )
    assert together == alone


def second_turn(image: bytes, first) -> list[dict]:
    """A conversation whose first turn showed `image` and got the reply `first`."""
    return [
        user(image, text="w7"),
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "w8 w9"},
    ]


def test_vision_image_in_earlier_turn_reuses_the_cache(vision_client, vision_server):
    if vision_server.family == "gemma3":
        pytest.skip("the tiny Gemma's 8-token sliding window cannot be trimmed back to a prefix")
    first = ask(vision_client, [user(BLUE, text="w7")])
    history = second_turn(BLUE, first)
    follow_up = ask(vision_client, history)
    cached = follow_up.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens - 1
    history[0] = user(png_bytes(None, seed=7), text="w7")  # a picture not seen before
    changed = ask(vision_client, history)
    assert changed.usage.prompt_tokens_details.cached_tokens == 3  # up to <|vision_start|>


def test_vision_responses_and_messages_take_images(vision_client, vision_server):
    data_url = image_part(NOISE)["image_url"]["url"]
    response = vision_client.responses.create(
        model="test",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": data_url},
                    {"type": "input_text", "text": QUESTION},
                ],
            }
        ],
        temperature=0,
        max_output_tokens=6,
    )
    chat = ask(vision_client, [user(NOISE)])
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.output_text == chat.choices[0].message.content
    claude = anthropic.Anthropic(base_url=vision_server.base_url, api_key="x", max_retries=0)
    source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(NOISE).decode()}
    message = claude.messages.create(
        model="test",
        max_tokens=6,
        extra_body={"temperature": 0},  # current SDKs send sampling fields in the raw body
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": source},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
    )
    usage = message.usage  # Anthropic counts tokens read from the cache apart
    assert usage.input_tokens + usage.cache_read_input_tokens == chat.usage.prompt_tokens
    assert message.content[0].text == chat.choices[0].message.content


def test_vision_models_report_vlm(vision_server, vision_client, vision_store):
    command = [sys.executable, "-m", "mlxserve.cli.main", "ls", "--json", "--no-discover"]
    listing = subprocess.run(
        [*command, "--models-dir", str(vision_store)], capture_output=True, text=True
    )
    assert {m["id"]: m["type"] for m in json.loads(listing.stdout)}[
        f"test/{vision_server.family}"
    ] == "vlm"
    listed = {m.id: m for m in vision_client.models.list().data}
    assert listed[f"test/{vision_server.family}"].type == "vlm"
    native = httpx.get(f"{vision_server.base_url}/api/v0/models").json()["data"]
    types = {m["id"]: m["type"] for m in native}
    assert types[f"test/{vision_server.family}"] == "vlm" and types["test/text-only"] == "llm"


def test_vision_convert_hf_directory_serves_the_same_answers(
    vision_client, vision_server, vision_store
):
    family = vision_server.family
    source = vision_store / "hf" / family  # the model's files without the store's manifest
    shutil.copytree(
        vision_store / "test" / family, source, ignore=shutil.ignore_patterns("mlxserve*")
    )
    record = convert_model(source, vision_store, f"converted/{family}", progress=False)
    assert record.type == "vlm" and record.architecture == family
    original = ask(vision_client, [user(NOISE)])
    converted = ask(vision_client, [user(NOISE)], model=record.id)
    assert converted.model == record.id
    assert converted.choices[0].message.content == original.choices[0].message.content
    assert converted.usage.prompt_tokens == original.usage.prompt_tokens
    unload = {"instance_id": record.id}  # the other tests address "the loaded model"
    httpx.post(f"{vision_server.base_url}/api/v1/models/unload", json=unload).raise_for_status()


def test_vision_log_stream_shows_where_images_sit(vision_client, vision_server):
    records = queue.Queue()

    def listen():
        with httpx.stream("GET", f"{vision_server.base_url}/api/v0/log/stream", timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    records.put(json.loads(line[6:]))
                    return
                if line == ": subscribed":
                    records.put("subscribed")

    threading.Thread(target=listen, daemon=True).start()
    assert records.get(timeout=10) == "subscribed"
    ask(vision_client, [user(BLUE, NOISE, text="w9")])
    record = records.get(timeout=10)
    assert record["type"] == "request"
    assert record["prompt"].count("<__media__>") == 2
    assert record["prompt"].index("<__media__><__media__>w9") > 0
    digests = [image["sha256"] for image in record["images"]]
    assert digests == [hashlib.sha256(BLUE).hexdigest(), hashlib.sha256(NOISE).hexdigest()]


def error_of(call) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value


def test_vision_image_to_text_only_model_is_refused_before_loading(vision_client, vision_server):
    error = error_of(lambda: ask(vision_client, [user(BLUE)], model="test/text-only"))
    assert error.status_code == 400
    assert "test/text-only" in error.message and "no vision support" in error.message
    assert error.body["code"] == "images_not_supported"
    native = httpx.get(f"{vision_server.base_url}/api/v0/models/test/text-only").json()
    assert native["state"] == "not-loaded"


def test_vision_bad_images_are_refused(vision_client):
    bad_base64 = {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}
    not_image = image_part(b"hello, not a picture")
    for part, message in ((bad_base64, "not valid base64"), (not_image, "could not be decoded")):
        messages = [{"role": "user", "content": [{"type": "text", "text": QUESTION}, part]}]
        error = error_of(lambda messages=messages: ask(vision_client, messages))
        assert error.status_code == 400 and message in error.message
        assert error.body["param"] == "messages[0].content[1]"
    big = png_bytes(None, size=(200, 200), seed=3)  # about 120 kB of noise, over the 60 kB limit
    error = error_of(lambda: ask(vision_client, [user(big)]))
    assert error.status_code == 413 and error.body["code"] == "image_too_large"
    remote = {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}
    error = error_of(lambda: ask(vision_client, [{"role": "user", "content": [remote]}]))
    assert error.status_code == 400 and error.body["code"] == "remote_images_disabled"
