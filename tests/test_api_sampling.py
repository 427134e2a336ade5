"""Sampling controls change the real model's output through the API, on both engines."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tokenizer(models_dir, default_ids) -> Tokenizer:
    return Tokenizer.from_file(str(Path(models_dir) / default_ids["mlx"] / "tokenizer.json"))


def first_token_id(tokenizer: Tokenizer, text: str) -> int:
    return tokenizer.encode(text, add_special_tokens=False).ids[0]


def complete(client, model_id, prompt=PROMPT, **kwargs):
    kwargs = {"temperature": 0, "max_tokens": 3, **kwargs}
    return client.completions.create(model=model_id, prompt=prompt, **kwargs).choices[0].text


def test_logit_bias_bans_and_forces_tokens(client, model_id, tokenizer):
    greedy = complete(client, model_id)
    banned = first_token_id(tokenizer, greedy)
    without = complete(client, model_id, logit_bias={str(banned): -100})
    assert first_token_id(tokenizer, without) != banned
    forced = first_token_id(tokenizer, " Paris")
    assert complete(client, model_id, logit_bias={str(forced): 100}).startswith(" Paris")


def test_repeat_penalty_breaks_a_repetition(client, model_id):
    prompt = "1, 1, 1, 1, 1, 1, 1, 1, 1, 1,"
    plain = complete(client, model_id, prompt=prompt, extra_body={"repeat_penalty": 1.0})
    penalized = complete(client, model_id, prompt=prompt, extra_body={"repeat_penalty": 3.0})
    assert plain.strip().startswith("1")
    assert penalized != plain
