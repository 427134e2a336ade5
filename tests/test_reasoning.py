"""Thinking kept out of the answer. The splitter on recorded replies of each family (every way
of cutting a reply into chunks gives the same split), then end to end on both engines with a
tiny random model whose chat template opens a think block: chat completions, responses,
messages and /api/v1/chat, streamed and whole, put the thinking in their reasoning fields and
never in the content."""

from __future__ import annotations

import asyncio
import json

import anthropic
import httpx
import openai
import pytest
from quart import Quart

from mlxserve.api.openai.chat import to_request
from mlxserve.api.openai.protocol import ChatCompletionRequest
from mlxserve.families.syntax import SYNTAXES
from mlxserve.models.options import RegistryOptions
from mlxserve.models.registry import ModelRegistry
from mlxserve.pipeline.events import ReasoningDelta, TextDelta, ToolCallStart
from mlxserve.pipeline.output import OutputStage
from mlxserve.pipeline.prepare import prepare
from mlxserve.pipeline.reasoning import ReasoningSplitter, opened_in_prompt, reasoning_family
from mlxserve.pipeline.request import GenerateRequest, TextPart, Turn
from mlxserve.sampling.params import SamplingParams
from tests.thinking_models import THINKER_ID, THINKING_TEMPLATE
from tests.tiny_models import make_tiny_gemma

RECORDED = [
    # (family, opened by the template, reply, reasoning, content)
    ("think", False, "<think>\nTwo and two.\n</think>\n\nIt is 4.", "\nTwo and two.\n", "It is 4."),
    (
        "think",
        True,
        "Okay, so the user asks.</think>\n\nHello!",
        "Okay, so the user asks.",
        "Hello!",
    ),
    (
        "think",
        False,
        "Hello <think>not at the start</think>",
        "",
        "Hello <think>not at the start</think>",
    ),
    ("think", True, "cut short by max_tokens", "cut short by max_tokens", ""),
    ("magistral", False, "[THINK]Simple.[/THINK]Yes.", "Simple.", "Yes."),
    (
        "harmony",
        False,
        "<|channel|>analysis<|message|>User greets.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Hi there!",
        "User greets.",
        "Hi there!",
    ),
]


def split(family: str, opened: bool, chunks: list[str]) -> tuple[str, str]:
    stage = OutputStage(None, reasoning=ReasoningSplitter(family, opened))
    events = [event for chunk in chunks for event in stage.feed(chunk)]
    events += stage.reasoning.finish()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    content = "".join(e.text for e in events if isinstance(e, TextDelta))
    return reasoning, content


@pytest.mark.parametrize(("family", "opened", "reply", "reasoning", "content"), RECORDED)
def test_every_chunking_of_a_recorded_reply_splits_the_same(
    family, opened, reply, reasoning, content
):
    assert split(family, opened, [reply]) == (reasoning, content)
    for cut in range(1, len(reply)):
        assert split(family, opened, [reply[:cut], reply[cut:]]) == (reasoning, content), cut
    assert split(family, opened, list(reply)) == (reasoning, content)


def test_thinking_before_a_tool_call():
    stage = OutputStage(SYNTAXES["hermes"], reasoning=ReasoningSplitter("think"))
    call = '<tool_call>\n{"name": "find", "arguments": {}}\n</tool_call>'
    reply = f"<think>I should look it up.</think>\n{call}"
    events = [event for char in reply for event in stage.feed(char)]
    assert (
        "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "I should look it up."
    )
    assert [e.name for e in events if isinstance(e, ToolCallStart)] == ["find"]
    assert not "".join(e.text for e in events if isinstance(e, TextDelta)).strip()


def test_families_are_told_by_their_templates():
    assert reasoning_family(THINKING_TEMPLATE) == "think"
    assert reasoning_family("{{ '[THINK]' }}") == "magistral"
    assert reasoning_family("<|start|>{{ m }}<|channel|>final") == "harmony"
    assert reasoning_family("{{ messages }}") is None
    assert opened_in_prompt("think", "<|im_start|>assistant\n<think>\n")
    assert not opened_in_prompt("think", "<|im_start|>assistant\n<think>\n\n</think>\n\n")


ASK = [{"role": "user", "content": "Why is the sky blue?"}]
GREEDY = {"temperature": 0, "max_tokens": 12, "logit_bias": {"2": -100}}  # EOS banned


def chat(server, stream: bool = False, **extra):
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
    return client.chat.completions.create(
        model=THINKER_ID, messages=ASK, stream=stream, **GREEDY, **extra
    )


def test_chat_completions_put_thinking_in_reasoning_content(thinking_server):
    reply = chat(thinking_server)
    message = reply.choices[0].message
    reasoning = message.model_extra["reasoning_content"]
    assert reasoning and message.content == ""
    assert reply.usage.completion_tokens_details.reasoning_tokens == GREEDY["max_tokens"]
    streamed_reasoning = streamed_content = ""
    for chunk in chat(thinking_server, stream=True):
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None:
            streamed_reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            streamed_content += delta.content or ""
    assert streamed_reasoning == reasoning and streamed_content == ""


def test_reasoning_effort_none_turns_the_templates_thinking_off(thinking_server):
    reply = chat(thinking_server, reasoning_effort="none")
    message = reply.choices[0].message
    assert message.content and "reasoning_content" not in (message.model_extra or {})
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0


@pytest.mark.parametrize(
    ("effort", "expected"), [("xhigh", "high"), ("max", "high"), ("low", "low"), (None, None)]
)
def test_chat_efforts_reach_the_template_as_the_levels_it_knows(effort, expected):
    body = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "Hi"}])
    body.reasoning_effort = effort

    async def made() -> GenerateRequest:
        async with Quart(__name__).test_request_context("/v1/chat/completions", method="POST"):
            return to_request(body, "chatcmpl-1")

    assert asyncio.run(made()).reasoning_effort == expected


@pytest.mark.parametrize("effort", ["xhigh", "max"])
def test_efforts_above_high_are_accepted_and_think_as_high_does(thinking_server, effort):
    high = chat(thinking_server, reasoning_effort="high").choices[0].message
    above = chat(thinking_server, reasoning_effort=effort).choices[0].message
    assert above.model_extra["reasoning_content"] == high.model_extra["reasoning_content"]
    assert above.content == high.content


def test_responses_have_a_reasoning_item(thinking_server):
    reasoning = chat(thinking_server).choices[0].message.model_extra["reasoning_content"]
    body = {"model": THINKER_ID, "input": ASK, "temperature": 0, "max_output_tokens": 12}
    body["logit_bias"] = {"2": -100}
    whole = httpx.post(f"{thinking_server.base_url}/v1/responses", json=body, timeout=60).json()
    item = whole["output"][0]
    assert item["type"] == "reasoning" and item["content"][0]["text"] == reasoning
    message = whole["output"][1]
    assert message["type"] == "message" and message["content"][0]["text"] == ""
    deltas = []
    with httpx.stream(
        "POST", f"{thinking_server.base_url}/v1/responses", json={**body, "stream": True}
    ) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                if event["type"] == "response.reasoning_text.delta":
                    deltas.append(event["delta"])
                assert event["type"] != "response.output_text.delta" or not event["delta"]
    assert "".join(deltas) == reasoning


def test_messages_have_a_thinking_block(thinking_server):
    reasoning = chat(thinking_server).choices[0].message.model_extra["reasoning_content"]
    claude = anthropic.Anthropic(base_url=thinking_server.base_url, api_key="x", max_retries=0)
    kwargs = {"model": THINKER_ID, "max_tokens": 12, "messages": ASK}
    kwargs["extra_body"] = {"temperature": 0, "logit_bias": {"2": -100}}
    message = claude.messages.create(**kwargs)
    assert message.content[0].type == "thinking" and message.content[0].thinking == reasoning
    assert all(block.type != "text" or not block.text for block in message.content)
    with claude.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert final.content[0].thinking == reasoning
    off = claude.messages.create(**kwargs, thinking={"type": "disabled"})
    assert [block.type for block in off.content] == ["text"] and off.content[0].text


def test_lmstudio_v1_chat_has_a_reasoning_item(thinking_server):
    reasoning = chat(thinking_server).choices[0].message.model_extra["reasoning_content"]
    body = {"model": THINKER_ID, "input": ASK[0]["content"], "temperature": 0}
    body["max_output_tokens"] = GREEDY["max_tokens"]
    url = f"{thinking_server.base_url}/api/v1/chat"
    result = httpx.post(url, json=body, timeout=60).json()
    assert result["output"] == [{"type": "reasoning", "content": reasoning}]
    assert result["stats"]["reasoning_output_tokens"] == GREEDY["max_tokens"]
    off = httpx.post(url, json={**body, "reasoning": "off"}, timeout=60).json()
    assert [item["type"] for item in off["output"]] == ["message"]
    assert off["stats"]["reasoning_output_tokens"] == 0


def test_prepare_asks_the_engine_to_show_the_families_markers(tmp_path):
    """Markers such as gpt-oss's channels are special tokens, whose text engines leave out."""
    record = make_tiny_gemma(tmp_path / "test" / "tiny-thinker", bytes_vocabulary=True)
    config = json.loads((record.directory / "tokenizer_config.json").read_text())
    config["chat_template"] = THINKING_TEMPLATE.replace("<think>", "<|channel|>analysis<|message|>")
    (record.directory / "tokenizer_config.json").write_text(json.dumps(config))

    async def prepared_specials():
        registry = ModelRegistry(tmp_path, RegistryOptions(engine="mlx"))
        try:
            turns = [Turn("user", [TextPart("Hi")])]
            request = GenerateRequest(record.id, SamplingParams(), conversation=turns)
            prepared = await prepare(registry, request)
            prepared.release()
            return prepared.engine_request.visible_specials, prepared.reasoning.state
        finally:
            await registry.close()

    specials, state = asyncio.run(prepared_specials())
    assert specials == ("<|channel|>", "<|message|>", "<|end|>", "<|start|>")
    assert state == "reasoning"  # the template opened the analysis channel itself
