"""Images a tool returns (a screenshot) reach a vision model: in an OpenAI tool message's parts
and in an Anthropic tool_result's blocks, served by tiny random-weight vision models; a
text-only model refuses them as it refuses a user's image."""

from __future__ import annotations

import base64

import anthropic
import openai
import pytest

from tests.log_stream import rendered_prompt
from tests.tiny_vision import IMAGE_TOKENS, png_bytes

pytestmark = pytest.mark.e2e
SCREENSHOT = png_bytes(None, seed=4)
MARKER = "<__media__>"  # where the engine puts an image's tokens
CALL = {"id": "call_1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}


@pytest.fixture
def server(vision_server):
    return vision_server


def openai_conversation(with_image: bool) -> list[dict]:
    url = f"data:image/png;base64,{base64.b64encode(SCREENSHOT).decode()}"
    result = [{"type": "text", "text": "w5 w6"}]
    if with_image:
        result.append({"type": "image_url", "image_url": {"url": url}})
    return [
        {"role": "user", "content": "w1 w2"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": result},
    ]


def anthropic_conversation(with_image: bool) -> list[dict]:
    source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(SCREENSHOT)}
    source["data"] = source["data"].decode()
    result = [{"type": "text", "text": "w5 w6"}]
    if with_image:
        result.append({"type": "image", "source": source})
    return [
        {"role": "user", "content": "w1 w2"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}],
        },  # fmt: skip
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": result}],
        },  # fmt: skip
    ]


def ask_openai(server, with_image: bool, model: str = "test"):
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
    messages = openai_conversation(with_image)
    return client.chat.completions.create(
        model=model, messages=messages, max_tokens=2, temperature=0
    )


def ask_anthropic(server, with_image: bool, model: str = "test"):
    client = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)
    messages = anthropic_conversation(with_image)
    return client.messages.create(
        model=model, messages=messages, max_tokens=2, extra_body={"temperature": 0}
    )


def test_openai_tool_message_image_reaches_the_model(server):
    prompt, answer = rendered_prompt(server, lambda: ask_openai(server, True))
    assert prompt.count(MARKER) == 1 and prompt.index("w5 w6") < prompt.index(MARKER)
    without = ask_openai(server, False)
    span = IMAGE_TOKENS[server.family] + 2  # the image's tokens, and those around them
    assert answer.usage.prompt_tokens == without.usage.prompt_tokens + span


def test_anthropic_tool_result_image_reaches_the_model(server):
    prompt, answer = rendered_prompt(server, lambda: ask_anthropic(server, True))
    assert prompt.count(MARKER) == 1 and prompt.index("w5 w6") < prompt.index(MARKER)
    without = ask_anthropic(server, False)

    def read(message) -> int:
        return message.usage.input_tokens + message.usage.cache_read_input_tokens

    assert read(answer) == read(without) + IMAGE_TOKENS[server.family] + 2


def test_tool_result_image_to_a_text_only_model_is_refused(server):
    with pytest.raises(openai.BadRequestError) as caught:
        ask_openai(server, True, model="test/text-only")
    assert caught.value.body["code"] == "images_not_supported"
    assert "test/text-only" in caught.value.message
    with pytest.raises(anthropic.BadRequestError) as refused:
        ask_anthropic(server, True, model="test/text-only")
    assert "test/text-only" in refused.value.message and "no vision" in refused.value.message
