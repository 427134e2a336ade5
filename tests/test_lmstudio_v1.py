"""/api/v1, LM Studio 0.4's native REST API, on the real Gemma 270M through a real server, on
both engines (the `server` fixture). MLX decodes ~8 tokens/s on this CPU: replies are 1-4 tokens.
"""

from __future__ import annotations

import asyncio
import json

import httpx

from mlxserve.api.lmstudio.v1 import ChatReply
from mlxserve.api.lmstudio.v1_models import v1_model
from mlxserve.api.shared.conversation_store import ConversationStore
from mlxserve.models.store import ModelRecord, write_manifest
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.events import TextDelta

MODEL_FIELDS = {
    "type",
    "publisher",
    "key",
    "display_name",
    "architecture",
    "quantization",
    "size_bytes",
    "params_string",
    "loaded_instances",
    "max_context_length",
    "format",
    "capabilities",
    "description",
}
STATS_FIELDS = {
    "input_tokens",
    "total_output_tokens",
    "reasoning_output_tokens",
    "tokens_per_second",
    "time_to_first_token_seconds",
    "stop_reason",
}
STORY = "Tell me a long story about a dragon."  # never answered within a few tokens
STREAM_ORDER = [
    "chat.start",
    "prompt_processing.start",
    "prompt_processing.end",
    "message.start",
    "message.delta",
    "message.end",
    "chat.end",
]


def get(server, path: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}{path}", timeout=60)


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=300)


def chat(server, **body) -> dict:
    response = post(server, "/api/v1/chat", {"temperature": 0, **body})
    assert response.status_code == 200, response.text
    return response.json()


def stream_events(server, body: dict) -> list[tuple[str, dict]]:
    """The stream's (event name, data) pairs."""
    url = f"{server.base_url}/api/v1/chat"
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=300) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines[0::2]]
    payloads = [json.loads(line.removeprefix("data: ")) for line in lines[1::2]]
    assert all(line.startswith("event: ") for line in lines[0::2])
    return list(zip(names, payloads, strict=True))


def models_by_key(server) -> dict[str, dict]:
    response = get(server, "/api/v1/models")
    assert response.status_code == 200
    return {entry["key"]: entry for entry in response.json()["models"]}


def instance_configs(entry: dict) -> dict[str, dict]:
    return {instance["id"]: instance["config"] for instance in entry["loaded_instances"]}


def test_models_lists_the_store_in_lm_studios_shape(server, default_ids):
    models = models_by_key(server)
    assert set(default_ids.values()) <= set(models)
    for engine, key in default_ids.items():
        entry = models[key]
        assert set(entry) == MODEL_FIELDS
        assert (entry["type"], entry["publisher"], entry["display_name"]) == (
            "llm",
            "google",
            key.split("/")[1],
        )
        assert entry["architecture"] == "gemma3"
        assert entry["format"] == ("gguf" if engine == "llamacpp" else "mlx")
        assert entry["max_context_length"] == 32768 and entry["size_bytes"] > 100 * 1024**2
        # Gemma 3's template (its own or the built-in one) does not take `tools`.
        assert entry["capabilities"] == {"vision": False, "trained_for_tool_use": False}
    gguf = models[default_ids["llamacpp"]]
    assert gguf["quantization"] == {"name": "Q4_K_M", "bits_per_weight": 4}
    assert gguf["params_string"] == "270M"
    key = default_ids[server.engine]
    config = instance_configs(models[key])[key]
    assert 0 < config["context_length"] <= 32768 and config["parallel"] >= 1
    other = next(key for engine, key in default_ids.items() if engine != server.engine)
    assert models[other]["loaded_instances"] == []


def test_tool_use_capability_follows_the_chat_template(tmp_path):
    def entry(name: str, template: str) -> dict:
        directory = tmp_path / "test" / name
        directory.mkdir(parents=True)
        (directory / "chat_template.jinja").write_text(template)
        record = ModelRecord(f"test/{name}", "mlx", "qwen2", path=str(directory))
        write_manifest(directory, record)
        return v1_model(record, []).as_dict()

    with_tools = entry("with-tools", "{% if tools %}{{ tools | tojson }}{% endif %}{{ messages }}")
    plain = entry("plain", "{% for m in messages %}{{ m.content }}{% endfor %}")
    assert with_tools["capabilities"]["trained_for_tool_use"] is True
    assert plain["capabilities"]["trained_for_tool_use"] is False


def test_load_names_an_instance_and_unload_removes_it(server, twin_ids):
    key = twin_ids[server.engine]  # Gemma 3's tiny twin: a second model, quick to load
    body = {"model": key, "identifier": "v1-second", "context_length": 1024}
    response = post(server, "/api/v1/models/load", {**body, "echo_load_config": True})
    assert response.status_code == 200, response.text
    loaded = response.json()
    assert set(loaded) == {"type", "instance_id", "load_time_seconds", "status", "load_config"}
    assert (loaded["type"], loaded["instance_id"], loaded["status"]) == (
        "llm",
        "v1-second",
        "loaded",
    )
    assert loaded["load_time_seconds"] > 0 and loaded["load_config"] == {"context_length": 1024}
    assert instance_configs(models_by_key(server)[key])["v1-second"]["context_length"] == 1024
    reply = chat(server, model="v1-second", input="Hi.", max_output_tokens=1)
    assert reply["model_instance_id"] == "v1-second"

    unloaded = post(server, "/api/v1/models/unload", {"instance_id": "v1-second"})
    assert unloaded.status_code == 200 and unloaded.json() == {"instance_id": "v1-second"}
    assert "v1-second" not in instance_configs(models_by_key(server)[key])
    again = post(server, "/api/v1/models/unload", {"instance_id": "v1-second"})
    assert again.status_code == 404 and again.json()["error"]["param"] == "instance_id"


def test_load_and_unload_refuse_bad_requests(server, default_ids):
    key = default_ids[server.engine]
    other = next(k for engine, k in default_ids.items() if engine != server.engine)
    cases = [
        ("/api/v1/models/load", {}, 400, "model"),
        ("/api/v1/models/load", {"model": "nobody/nothing"}, 404, "model"),
        ("/api/v1/models/load", {"model": other, "identifier": key}, 409, "identifier"),
        ("/api/v1/models/unload", {}, 400, "instance_id"),
    ]
    for path, body, status, param in cases:
        response = post(server, path, body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["param"] == param


def test_chat_answers_with_output_items_and_stats(server, default_ids):
    key = default_ids[server.engine]
    result = chat(server, model=key, input=STORY, max_output_tokens=3)
    assert set(result) == {"model_instance_id", "output", "stats", "response_id"}
    assert result["model_instance_id"] == key
    [message] = result["output"]
    assert message["type"] == "message" and message["content"]
    stats = result["stats"]
    assert set(stats) == STATS_FIELDS  # no model_load_time_seconds: the model was loaded
    assert stats["total_output_tokens"] == 3 and stats["reasoning_output_tokens"] == 0
    assert stats["stop_reason"] == "maxPredictedTokensReached"
    assert stats["input_tokens"] > 8 and stats["time_to_first_token_seconds"] > 0
    assert stats["tokens_per_second"] > 0
    assert result["response_id"].startswith("resp_")


def test_system_prompt_is_part_of_the_prompt(server, default_ids):
    key = default_ids[server.engine]
    plain = chat(server, model=key, input=STORY, max_output_tokens=1)
    system = "You are a storyteller who answers in French."
    told = chat(server, model=key, input=STORY, system_prompt=system, max_output_tokens=1)
    assert told["stats"]["input_tokens"] >= plain["stats"]["input_tokens"] + 8


def test_store_false_keeps_no_response_id(server, default_ids):
    key = default_ids[server.engine]
    result = chat(server, model=key, input="Hi.", max_output_tokens=1, store=False)
    assert "response_id" not in result and result["output"]


def test_previous_response_id_continues_the_chat(server, default_ids):
    key = default_ids[server.engine]
    first = chat(server, model=key, input="My name is Ada.", max_output_tokens=2)
    question = "What is my name?"
    second = chat(
        server,
        model=key,
        input=question,
        previous_response_id=first["response_id"],
        max_output_tokens=1,
    )
    alone = chat(server, model=key, input=question, max_output_tokens=1, store=False)
    # Turn 2's prompt is turn 1's prompt, its reply, then the question's turn (all but its BOS).
    carried = first["stats"]["input_tokens"] + alone["stats"]["input_tokens"] - 1
    assert second["stats"]["input_tokens"] >= carried
    assert second["response_id"] not in (first["response_id"], None)


def test_stream_events_come_in_the_documented_order(server, default_ids):
    body = {"model": default_ids[server.engine], "input": STORY, "max_output_tokens": 4}
    events = stream_events(server, {**body, "temperature": 0})
    assert all(payload["type"] == name for name, payload in events)
    names = [name for name, _ in events]
    deltas = names.count("message.delta")
    assert deltas >= 1
    collapsed = [n for i, n in enumerate(names) if n != "message.delta" or names[i - 1] != n]
    assert collapsed == STREAM_ORDER
    assert events[0][1]["model_instance_id"] == body["model"]
    streamed = "".join(p["content"] for name, p in events if name == "message.delta")
    result = events[-1][1]["result"]
    assert result["output"] == [{"type": "message", "content": streamed}]
    assert result["stats"]["total_output_tokens"] == 4
    assert chat(server, **body)["output"][0]["content"] == streamed


def test_a_failure_mid_stream_is_an_error_event_then_chat_end():
    async def failing():
        yield TextDelta("Once")
        raise RequestError(504, "request timed out after 1 s", None, "request_timeout")

    async def collect() -> list[dict]:
        reply = ChatReply("test/model", "resp_x", None, [], ConversationStore())
        return [event async for event in reply.in_band_errors(reply.events(failing()))]

    events = asyncio.run(collect())
    assert [e["type"] for e in events[-4:]] == [
        "message.start",
        "message.delta",
        "error",
        "chat.end",
    ]
    error = events[-2]["error"]
    assert error == {
        "type": "internal_error",
        "message": "request timed out after 1 s",
        "code": "request_timeout",
    }
    assert events[-1]["result"] == {
        "model_instance_id": "test/model",
        "output": [{"type": "message", "content": "Once"}],
    }


def test_chat_refuses_bad_input_with_client_errors(server, default_ids):
    key = default_ids[server.engine]
    cases = [
        ({"input": "Hi."}, 400, "model"),
        ({"model": key}, 400, "input"),
        ({"model": key, "input": []}, 422, "input.items"),
        ({"model": key, "input": [{"type": "image"}]}, 400, "input.items.0.image.data_url"),
        ({"model": key, "input": "Hi.", "previous_response_id": "resp_gone"}, 404, "previous"),
        ({"model": key, "input": "Hi.", "previous_response_id": "gone"}, 422, "previous"),
        ({"model": key, "input": "Hi.", "integrations": ["mcp/x"]}, 403, "integrations"),
        ({"model": key, "input": "Hi.", "temperature": 3}, 422, "temperature"),
        ({"model": key, "input": "Hi.", "reasoning": "maximal"}, 422, "reasoning"),
    ]
    for body, status, param in cases:
        response = post(server, "/api/v1/chat", body)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert error["param"].startswith(param) and error["message"]


def test_a_chat_that_loads_its_model_reports_the_load(server, default_ids):
    """Last in this file: the served model is unloaded, then loaded again by a chat."""
    key = default_ids[server.engine]
    context = instance_configs(models_by_key(server)[key])[key]["context_length"]
    assert post(server, "/api/v1/models/unload", {"instance_id": key}).status_code == 200
    body = {"model": key, "input": "Hi.", "max_output_tokens": 1, "context_length": context}
    events = stream_events(server, body)
    names = [name for name, _ in events]
    assert names[:4] == [
        "chat.start",
        "model_load.start",
        "model_load.end",
        "prompt_processing.start",
    ]
    load_end = events[2][1]
    assert load_end["model_instance_id"] == key and load_end["load_time_seconds"] > 0
    stats = events[-1][1]["result"]["stats"]
    assert stats["model_load_time_seconds"] == load_end["load_time_seconds"]
    assert instance_configs(models_by_key(server)[key])[key]["context_length"] == context
