"""/v1/responses through the official SDK: plain and streamed, stored conversations, errors."""

from __future__ import annotations

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent


@pytest.fixture(scope="module")
def server(twin_server):
    return twin_server


STREAM_EVENTS = pydantic.TypeAdapter(ResponseStreamEvent)
EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_create_returns_a_response_object(client, model_id):
    response = client.responses.create(
        model=model_id,
        input="Say hi.",
        instructions="Be brief.",
        max_output_tokens=4,
        temperature=0,
    )
    Response.model_validate(response.to_dict())  # every field the SDK types require
    assert response.object == "response" and response.id.startswith("resp_")
    assert (
        response.status == "incomplete"
        and response.incomplete_details.reason == "max_output_tokens"
    )
    assert response.output[0].type == "message"
    assert response.output[0].content[0].type == "output_text"
    assert response.output_text == response.output[0].content[0].text
    assert response.usage.output_tokens == 4
    assert response.usage.total_tokens == response.usage.input_tokens + 4


def test_stream_follows_the_documented_event_order(client, model_id):
    kwargs = {
        "model": model_id,
        "input": [{"role": "user", "content": "Say hi."}],
        "max_output_tokens": 4,
        "temperature": 0,
    }
    events = list(client.responses.create(stream=True, **kwargs))
    for event in events:
        STREAM_EVENTS.validate_python(event.to_dict())
    kinds = [e.type for e in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 1
    assert [
        k
        for i, k in enumerate(kinds)
        if k != "response.output_text.delta" or kinds[i - 1] != "response.output_text.delta"
    ] == EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert final.output_text == streamed
    assert streamed == client.responses.create(**kwargs).output_text
    with client.responses.stream(**kwargs) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        assert stream.get_final_response().output_text == text == streamed


def test_previous_response_id_continues_the_conversation(client, model_id):
    first = client.responses.create(
        model=model_id, input="My name is Ada.", max_output_tokens=3, temperature=0
    )
    alone = client.responses.create(
        model=model_id, input="What is my name?", max_output_tokens=1, temperature=0
    )
    second = client.responses.create(
        model=model_id,
        input="What is my name?",
        max_output_tokens=1,
        temperature=0,
        previous_response_id=first.id,
    )
    # The second prompt holds the first turn (its input and reply) before the new question.
    assert second.usage.input_tokens >= (
        alone.usage.input_tokens + first.usage.input_tokens + first.usage.output_tokens - 4
    )
    assert second.previous_response_id == first.id


def test_unknown_previous_response_is_404(client, model_id):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            model=model_id, input="Hi", previous_response_id="resp_missing", max_output_tokens=1
        )


def test_bad_responses_requests(server, model_id):
    url = f"{server.base_url}/v1/responses"
    assert httpx.post(url, json={"model": model_id}).status_code == 400
    assert httpx.post(url, json={"model": model_id, "input": []}).status_code == 400
    bad = httpx.post(url, json={"model": model_id, "input": "x", "temperature": 5})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "temperature"
    odd = httpx.post(url, json={"model": model_id, "input": [{"type": "file_search_call"}]})
    assert odd.status_code == 400 and "file_search_call" in odd.json()["error"]["message"]
    assert odd.json()["error"]["param"] == "input[0].type"
    # Reasoning items a client sends back are accepted, and not shown to the model again.
    thought = {"type": "reasoning", "id": "rs_1", "summary": []}
    alone = httpx.post(url, json={"model": model_id, "input": [thought]})
    assert alone.status_code == 400 and "at least one item" in alone.json()["error"]["message"]
    asked = [thought, {"role": "user", "content": "Hi"}]
    replied = httpx.post(url, json={"model": model_id, "input": asked, "max_output_tokens": 1})
    assert replied.status_code == 200, replied.text


def test_function_tools_are_accepted_and_described_to_the_model(client, model_id):
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    plain = client.responses.create(model=model_id, input="Hi", max_output_tokens=1)
    with_tools = client.responses.create(
        model=model_id, input="Hi", max_output_tokens=1, tools=tools
    )
    assert with_tools.usage.input_tokens > plain.usage.input_tokens + 10
    assert with_tools.tools[0].name == "get_weather"
    # Told not to call, the model answers in a message; made to, it calls the tool.
    unused = client.responses.create(
        model=model_id, input="Hi", max_output_tokens=1, tools=tools, tool_choice="none"
    )
    assert [item.type for item in unused.output] == ["message"]
    called = client.responses.create(
        model=model_id, input="Hi", max_output_tokens=24, tools=tools, tool_choice="required"
    )
    assert [(item.type, item.name) for item in called.output] == [("function_call", "get_weather")]
