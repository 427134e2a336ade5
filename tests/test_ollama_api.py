"""Ollama's native API through the official `ollama` Python client against the real server:
chat and generate streamed and whole on both engines, options, `format` schemas, tool calls and
thinking (a scripted model), embeddings equal to /v1/embeddings, the model routes (tags, show,
ps, copy, delete, keep_alive, pull from a stand-in Hub), --ollama-port and Ollama's errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import jsonschema
import numpy as np
import ollama
import pytest

from tests.conftest import EMBEDDING_ID
from tests.family_templates import FAMILY_BOS_EOS, FAMILY_SPECIALS, FAMILY_TEMPLATES
from tests.hub_standin import StandInHub
from tests.scripted_models import make_scripted_model
from tests.server import ServerProcess
from tests.test_families_e2e import BY_FAMILY, THOUGHT
from tests.tiny_models import make_tiny_gemma

pytestmark = pytest.mark.e2e
ASK = [{"role": "user", "content": "Say hello."}]
GREEDY = {"temperature": 0, "num_predict": 3}
ANSWER = {
    "type": "object",
    "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["answer"],
    "additionalProperties": False,
}
CALLER = BY_FAMILY["qwen3_coder"]  # thinks, then calls get_weather(city="Paris")
HUB_REPO = "test-org/tiny-gemma-mlx"


@pytest.fixture(scope="module")
def served(twin_server):
    """(server, client, model name) per engine; the client talks to the --ollama-port. The
    model: a tiny Gemma 3 with the real one's vocabulary and template."""
    client = ollama.Client(host=f"http://127.0.0.1:{twin_server.ollama_port}")
    return twin_server, client, twin_server.model_id


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """A scripted model that thinks and then calls a tool, on MLX."""
    models = tmp_path_factory.mktemp("ollama-scripted")
    bos, eos = FAMILY_BOS_EOS[CALLER.family]
    make_scripted_model(
        models / "test" / CALLER.family,
        architecture=CALLER.architecture,
        script=CALLER.script,
        chat_template=FAMILY_TEMPLATES[CALLER.family],
        specials=FAMILY_SPECIALS[CALLER.family],
        eos=eos,
        bos=bos or "<bos>",
    )
    with ServerProcess(models, model=CALLER.model, engine="mlx") as server:
        yield server, ollama.Client(host=server.base_url)


def test_chat_streamed_equals_whole_with_real_figures(served):
    _, client, model = served
    whole = client.chat(model=model, messages=ASK, stream=False, options=GREEDY)
    chunks = list(client.chat(model=model, messages=ASK, stream=True, options=GREEDY))
    assert len(chunks) >= 2 and all(not c.done for c in chunks[:-1]) and chunks[-1].done
    streamed = "".join(c.message.content for c in chunks)
    assert streamed == whole.message.content and whole.message.role == "assistant"
    for final in (whole, chunks[-1]):
        assert final.done_reason == "length" and final.eval_count == 3
        assert final.prompt_eval_count > len(ASK[0]["content"].split())
        assert final.eval_duration > 0 and final.prompt_eval_duration > 0
        assert final.total_duration >= final.prompt_eval_duration + final.eval_duration
    assert whole.model == model and datetime.fromisoformat(whole.created_at.replace("Z", ""))


def test_generate_streams_ndjson_and_answers_whole(served):
    server, client, model = served
    whole = client.generate(model=model, prompt="Count: 1, 2,", stream=False, options=GREEDY)
    assert whole.done and whole.eval_count == 3 and whole.response
    with httpx.stream(
        "POST",
        f"{server.base_url}/api/generate",
        json={"model": model, "prompt": "Count: 1, 2,", "options": GREEDY},
    ) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert "".join(line["response"] for line in lines) == whole.response
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "length"
    raw = client.generate(model=model, prompt="1, 2,", raw=True, stream=False, options=GREEDY)
    assert raw.prompt_eval_count < whole.prompt_eval_count  # no chat template around it


def test_options_reach_sampling_and_limits(served):
    _, client, model = served
    options = {"temperature": 1.5, "top_k": 5, "seed": 7, "num_predict": 5, "num_thread": 2}
    first = client.chat(model=model, messages=ASK, stream=False, options=options)
    again = client.chat(model=model, messages=ASK, stream=False, options=options)
    assert first.message.content == again.message.content and first.eval_count == 5
    stop = first.message.content[1:3]
    options["stop"] = [stop]
    stopped = client.chat(model=model, messages=ASK, stream=False, options=options)
    assert stop not in stopped.message.content and stopped.done_reason == "stop"


def test_format_schema_gives_valid_json(served):
    _, client, model = served
    ask = [{"role": "user", "content": "Pick a digit."}]
    reply = client.chat(
        model=model,
        messages=ask,
        format=ANSWER,
        stream=False,
        options={"temperature": 0, "num_predict": 40},
    )
    jsonschema.validate(json.loads(reply.message.content), ANSWER)
    generated = client.generate(
        model=model,
        prompt="A digit:",
        format=ANSWER,
        stream=False,
        options={"temperature": 1, "seed": 3, "num_predict": 40},
    )
    jsonschema.validate(json.loads(generated.response), ANSWER)


def test_errors_are_ollama_shaped(served):
    server, client, model = served
    with pytest.raises(ollama.ResponseError) as unknown:
        client.chat(model="nobody/nothing:latest", messages=ASK, stream=False)
    assert unknown.value.status_code == 404
    assert unknown.value.error == "model 'nobody/nothing:latest' not found"
    with pytest.raises(ollama.ResponseError) as hot:
        client.chat(model=model, messages=ASK, stream=False, options={"temperature": 5})
    assert hot.value.status_code == 400 and "temperature" in hot.value.error
    with pytest.raises(ollama.ResponseError) as fim:
        client.generate(model=model, prompt="def f(", suffix="return 1", stream=False)
    assert fim.value.status_code == 400 and model in fim.value.error  # no FIM tokens
    assert "`suffix`" in fim.value.error
    created = httpx.post(f"{server.base_url}/api/create", json={"model": "x", "from": model})
    assert created.status_code == 400 and "not supported" in created.json()["error"]
    foreign = httpx.post(
        f"{server.base_url}/api/chat",
        json={"model": model, "messages": ASK},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403 and set(foreign.json()) == {"error"}


def test_tags_show_ps_version_and_root(served):
    server, client, model = served
    names = [entry.model for entry in client.list().models]
    assert f"{model}:latest" in names
    shown = client.show(f"{model}:latest")
    assert "completion" in shown.capabilities and "embedding" not in shown.capabilities
    assert shown.details.format == ("gguf" if model.endswith("gguf") else "mlx")
    assert shown.modelinfo["general.architecture"] == "gemma3" and shown.template
    running = {entry.model: entry for entry in client.ps().models}
    instances = httpx.get(f"{server.base_url}/api/v0/loaded").json()["data"]
    expected = next(i for i in instances if i["identifier"] == model)
    assert running[f"{model}:latest"].context_length == expected["context_length"]
    assert running[f"{model}:latest"].size == expected["memory_bytes"] > 0
    assert httpx.get(f"{server.base_url}/api/version").json()["version"]
    root = httpx.get(f"{server.base_url}/")
    assert root.status_code == 200 and root.text == "Ollama is running"
    assert httpx.head(f"{server.base_url}/").status_code == 200


def test_copy_then_delete(served):
    server, client, model = served
    if server.engine != "mlx":
        pytest.skip("the store operations are engine-neutral: once is enough")
    assert client.copy(model, "mycopy").status == "success"
    names = [entry.model for entry in client.list().models]
    assert "library/mycopy:latest" in names
    assert client.show("mycopy").details.family == "gemma3"
    assert client.delete("mycopy").status == "success"
    assert "library/mycopy:latest" not in [entry.model for entry in client.list().models]
    with pytest.raises(ollama.ResponseError) as again:
        client.delete("mycopy")
    assert again.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as exists:
        client.copy(model, model)
    assert exists.value.status_code == 400


def test_embed_equals_v1_embeddings(served, embedding_id):
    server, client, _ = served
    if server.engine != "mlx":
        pytest.skip("the MLX-format embedding model runs on the MLX engine")
    texts = ["a cat sat on the mat", "stock markets fell today"]
    ours = np.array(client.embed(model=embedding_id, input=texts).embeddings)
    body = {"model": EMBEDDING_ID, "input": texts}
    v1 = httpx.post(f"{server.base_url}/v1/embeddings", json=body)
    reference = np.array([item["embedding"] for item in v1.json()["data"]])
    assert ours.shape == (2, 384) and np.allclose(ours, reference, atol=1e-6)
    single = client.embeddings(model=f"{embedding_id}:latest", prompt=texts[0]).embedding
    assert np.allclose(single, reference[0], atol=1e-5)  # alone, not in a padded batch
    assert "embedding" in client.show(embedding_id).capabilities


def test_tool_call_with_thinking_streamed_and_whole(scripted):
    _, client = scripted
    tools = CALLER.tools()
    whole = client.chat(
        model=CALLER.model,
        messages=ASK,
        tools=tools,
        think=True,
        stream=False,
        options={"temperature": 0, "num_predict": 64},
    )
    assert whole.message.thinking == THOUGHT
    calls = [(c.function.name, dict(c.function.arguments)) for c in whole.message.tool_calls]
    assert calls == [("get_weather", {"city": "Paris"})] and whole.done_reason == "stop"
    chunks = list(
        client.chat(
            model=CALLER.model,
            messages=ASK,
            tools=tools,
            think=True,
            stream=True,
            options={"temperature": 0, "num_predict": 64},
        )
    )
    assert "".join(c.message.thinking or "" for c in chunks) == THOUGHT
    streamed = [c.message.tool_calls for c in chunks if c.message.tool_calls]
    assert len(streamed) == 1 and streamed[0][0].function.arguments == {"city": "Paris"}
    answered = client.chat(
        model=CALLER.model,
        messages=[*ASK, whole.message, {"role": "tool", "tool_name": CALLER.tool, "content": "9"}],
        tools=tools,
        stream=False,
        options={"temperature": 0, "num_predict": 64},
    )
    assert answered.done


def test_keep_alive_sets_expiry_and_zero_unloads(scripted):
    server, client = scripted
    loaded = client.generate(model=CALLER.model, keep_alive="10m")  # no prompt: load only
    assert loaded.done and loaded.done_reason == "load"
    entry = next(e for e in client.ps().models if e.model == f"{CALLER.model}:latest")
    ahead = entry.expires_at - datetime.now(UTC)
    assert timedelta(minutes=9) < ahead <= timedelta(minutes=10)
    client.chat(
        model=CALLER.model, messages=ASK, keep_alive=0, stream=False, options={"num_predict": 2}
    )
    assert client.ps().models == [] and server.health()["loaded"] == []
    with pytest.raises(ollama.ResponseError) as bad:
        client.chat(model=CALLER.model, messages=ASK, keep_alive="soon", stream=False)
    assert bad.value.status_code == 400 and "keep_alive" in bad.value.error


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    files = tmp_path_factory.mktemp("ollama-hub")
    make_tiny_gemma(files / "publisher" / "tiny")
    standin = StandInHub()
    model_files = {p.name: p for p in (files / "publisher" / "tiny").iterdir()}
    standin.add(HUB_REPO, {n: p for n, p in model_files.items() if n != "mlxserve.json"})
    server, standin.url = standin.serve()
    yield standin
    server.shutdown()


def test_pull_streams_progress_then_serves_the_model(hub, tmp_path):
    store = tmp_path / "store"
    record = make_tiny_gemma(store / "test" / "tiny")
    env = {
        "HOME": str(tmp_path),
        "HF_ENDPOINT": hub.url,
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
        "MLXSERVE_NO_DISCOVER": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    with ServerProcess(store, model=record.id, engine="mlx", env=env) as server:
        client = ollama.Client(host=server.base_url)
        statuses = list(client.pull(f"hf.co/{HUB_REPO}:latest", stream=True))
        assert statuses[0].status == "pulling manifest" and statuses[-1].status == "success"
        progress = [s for s in statuses if s.total]
        assert progress and progress[-1].completed == progress[-1].total > 100_000
        assert f"{HUB_REPO}:latest" in [entry.model for entry in client.list().models]
        reply = client.generate(
            model=HUB_REPO, prompt="w1 w2", raw=True, stream=False, options={"num_predict": 2}
        )
        assert reply.eval_count == 2
        assert client.pull(HUB_REPO, stream=False).status == "success"  # there already
        with pytest.raises(ollama.ResponseError) as missing:
            list(client.pull("test-org/no-such-model", stream=True))
        assert "was not found" in missing.value.error
        with pytest.raises(ollama.ResponseError) as library:
            client.pull("llama3.2", stream=False)
        assert library.value.status_code == 400 and "Hugging Face" in library.value.error
