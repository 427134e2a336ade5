"""One request never harms another in a batch: a request whose grammar is left with no allowed
token by its logit_bias, while it decodes beside a stream, ends alone with its error (the MLX
runner fails it at that step; llama.cpp's child samples on unconstrained, and the reply's check
against its schema fails it), and the stream goes on with exactly the tokens it gives alone."""

from __future__ import annotations

import threading

import httpx
import pytest
from tokenizers import Tokenizer

from mlxserve.models.store import find_model

pytestmark = pytest.mark.e2e

PROMPT = "The capital of France is"
ENUM = '"ab"'  # the JSON reply the request's schema allows


def doomed_bias(models_dir, model: str) -> dict[str, int]:
    """Every token the schema's reply may begin with but `"` alone: the reply's first token is
    `"`, and at its second step no token the grammar allows is left."""
    tokenizer = Tokenizer.from_file(str(find_model(models_dir, model).directory / "tokenizer.json"))
    banned = [
        token
        for piece, token in tokenizer.get_vocab().items()
        if (text := _text(piece))
        and (ENUM.startswith(text) and text != '"' or ENUM[1:].startswith(text))
    ]
    return {str(token): -100 for token in banned}


def _text(piece: str) -> str:
    """A vocabulary piece's text: byte-fallback pieces (`<0x61>`) are their byte."""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return chr(int(piece[3:5], 16))
    return piece


def completion(base: str, model: str, stream: bool, first_token: threading.Event | None = None):
    body = {"model": model, "prompt": PROMPT, "max_tokens": 48, "temperature": 0, "stream": stream}
    if not stream:
        return httpx.post(f"{base}/v1/completions", json=body, timeout=300).json()
    text = ""
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=300) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                assert '"error"' not in line, line
                text += httpx.Response(200, content=line[6:]).json()["choices"][0]["text"]
                first_token.set()
    return text


def test_a_request_failing_mid_batch_ends_alone(server, model_id, models_dir, default_ids):
    base, model = server.base_url, model_id
    alone = completion(base, model, stream=False)["choices"][0]["text"]
    first_token, streamed = threading.Event(), {}
    stream = threading.Thread(
        target=lambda: streamed.update(text=completion(base, model, True, first_token))
    )
    stream.start()
    assert first_token.wait(120)
    doomed = {
        "model": model,
        "messages": [{"role": "user", "content": "Say ab."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {
            "enum": ["ab"]}}},
        "logit_bias": doomed_bias(models_dir, default_ids["mlx"]),  # the same vocabulary
        "temperature": 0,
        "max_tokens": 8,
        "stop": ["\n"],  # ends llama.cpp's unconstrained reply before its length runs out
    }  # fmt: skip
    failed = httpx.post(f"{base}/v1/chat/completions", json=doomed, timeout=300)
    stream.join(300)
    if server.engine == "mlx":
        assert failed.status_code == 422, failed.text
        assert "grammar" in failed.json()["error"]["message"]
    else:
        assert failed.status_code == 500, failed.text
        assert failed.json()["error"]["code"] == "invalid_output"
    assert streamed["text"] == alone  # the stream did not see the other request's error
