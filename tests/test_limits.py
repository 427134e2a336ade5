"""Limits that keep the server alive, against the real server: a model's queue is bounded (429
with Retry-After once full, then admission again; the real Gemma), and a request that runs past
--request-timeout is stopped in the engine and answered with an error its client can read (the
tiny Gemma 3 twin, which writes as long as it is let)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.metrics import model_metric, read_metrics
from tests.server import ServerProcess

NO_EOS = {"1": -100, "106": -100}  # Gemma's EOS and end of turn: requests keep generating
LLAMACPP_SLOTS = 4
LONGEST = 30000  # tokens the tiny Gemma 3 would write, were it not stopped (its context: 32,768)


def long_chat(model: str, stream: bool, max_tokens: int = 3000) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": max_tokens,
        "logit_bias": NO_EOS,
        "stream": stream,
    }


def wait_for(condition, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_full_queue_answers_429_with_retry_after_then_admits_again(models_dir, default_ids):
    model = default_ids["llamacpp"]
    args = ("--max-queued", "1")  # 4 decoding slots + 1 waiting
    with ServerProcess(models_dir, model=model, engine="llamacpp", extra_args=args) as server:
        url = f"{server.base_url}/v1/chat/completions"
        with httpx.Client(timeout=120) as http:
            streams = []
            for _ in range(LLAMACPP_SLOTS + 1):
                response = http.send(
                    http.build_request("POST", url, json=long_chat(model, True)), stream=True
                )
                assert response.status_code == 200
                lines = response.iter_lines()  # kept: a dropped line iterator closes the stream
                next(lines)  # the request is running (or waiting in the engine)
                streams.append((response, lines))
            refused = http.post(url, json=long_chat(model, False))
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "2"
            error = refused.json()["error"]
            assert error["code"] == "queue_full" and error["type"] == "rate_limit_error"
            assert model_metric(server.base_url, "mlxserve_requests_rejected_total", model) == 1
            streams.pop()[0].close()  # one client leaves: its place is free again
            assert wait_for(
                lambda: (
                    model_metric(server.base_url, "mlxserve_requests_active", model)
                    == LLAMACPP_SLOTS
                )
            )
            request = http.build_request("POST", url, json=long_chat(model, True))
            admitted = http.send(request, stream=True)  # admitted: it waits for a slot
            assert admitted.status_code == 200
            admitted.close()
            for response, _ in streams:
                response.close()


def streamed_until_stopped(base_url: str, model: str) -> tuple[int, dict | None]:
    """A long streamed chat read to its end: the number of data events and the last one."""
    chunks, last = 0, None
    with httpx.stream(
        "POST", f"{base_url}/v1/chat/completions", json=long_chat(model, True, LONGEST), timeout=60
    ) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: "):
                chunks, last = chunks + 1, json.loads(line.removeprefix("data: "))
    return chunks, last


@pytest.mark.parametrize("engine", ["mlx", "llamacpp"])
def test_a_request_past_the_timeout_is_stopped_in_the_engine(models_dir, twin_ids, engine):
    model = twin_ids[engine]  # the tiny Gemma 3: quick to start, and it never ends a reply
    # 3 s: room for the short request at the end on a busy machine, none for 30,000 tokens.
    args = ("--request-timeout", "3")
    with ServerProcess(models_dir, model=model, engine=engine, extra_args=args) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        with ThreadPoolExecutor(1) as pool:  # a whole and a streamed request, at the same time
            streamed = pool.submit(streamed_until_stopped, server.base_url, model)
            started = time.monotonic()
            with pytest.raises(openai.APIStatusError) as failure:
                client.chat.completions.create(**long_chat(model, False, LONGEST))
            elapsed = time.monotonic() - started
            chunks, last = streamed.result()
        assert failure.value.status_code == 504
        assert failure.value.response.headers["x-should-retry"] == "false"
        assert failure.value.body["code"] == "request_timeout"
        assert 3 <= elapsed < 11
        assert chunks > 1 and last["error"]["code"] == "request_timeout"
        # The engine itself holds no sequence any more: the timeout reached it, not only HTTP.
        assert wait_for(
            lambda: model_metric(server.base_url, "mlxserve_engine_sequences", model) == 0, 5
        ), read_metrics(server.base_url)
        if engine == "mlx":
            assert model_metric(server.base_url, "mlxserve_engine_sequences_cancelled", model) == 2
        reply = client.chat.completions.create(**{**long_chat(model, False), "max_tokens": 2})
        assert reply.choices[0].finish_reason == "length"
