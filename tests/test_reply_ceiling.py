"""`--max-tokens`: a server-wide ceiling on reply length, which is also the length of a reply
whose client set no limit (agent clients often send none)."""

from __future__ import annotations

import openai
import pytest

from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma

NO_EOS = {"2": -100}  # the tiny model's EOS: replies run until a limit


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    store = tmp_path_factory.mktemp("ceiling")
    record = make_tiny_gemma(store / "test" / "tiny-gemma")
    args = ["--max-tokens", "3"]
    with ServerProcess(store, model=record.id, engine="mlx", extra_args=args) as server:
        yield openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)


@pytest.mark.parametrize(("asked", "given"), [(None, 3), (10, 3), (2, 2)])
def test_reply_length_is_capped_and_defaulted(client, asked, given):
    messages = [{"role": "user", "content": "w1 w2"}]
    extra = {} if asked is None else {"max_tokens": asked}
    chat = client.chat.completions.create(
        model="test/tiny-gemma", messages=messages, logit_bias=NO_EOS, **extra
    )
    assert chat.usage.completion_tokens == given and chat.choices[0].finish_reason == "length"
    text = client.completions.create(
        model="test/tiny-gemma", prompt="w1 w2", logit_bias=NO_EOS, max_tokens=asked or 16
    )
    assert text.usage.completion_tokens == min(asked or 16, 3)
