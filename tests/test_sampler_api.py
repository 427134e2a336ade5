"""The sampler's Python surface: parameter validation, zero-copy buffers (NumPy and MLX),
lifetime, and the install-time error on a machine without a C compiler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlxserve  # noqa: F401 - OpenBLAS before mlx.core (also preloaded by conftest)
from mlxserve.sampling import Sampler, SamplingParamError, SamplingParams, validate_sampling
from mlxserve.sampling.sampler import ffi

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 32


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"temperature": 2.5}, "temperature", "`temperature` must be in [0, 2], got 2.5"),
        ({"temperature": -0.1}, "temperature", "in [0, 2]"),
        ({"temperature": float("nan")}, "temperature", "in [0, 2]"),
        ({"top_k": -1}, "top_k", "`top_k` must be >= 0, got -1"),
        ({"top_p": 1.5}, "top_p", "`top_p` must be in (0, 1], got 1.5"),
        ({"top_p": 0.0}, "top_p", "in (0, 1]"),
        ({"min_p": 1.5}, "min_p", "`min_p` must be in [0, 1], got 1.5"),
        (
            {"repeat_penalty": 0.0},
            "repeat_penalty",
            "`repeat_penalty` must be in [0.01, 10.0], got 0.0",
        ),
        ({"repeat_penalty": 1e-270}, "repeat_penalty", "in [0.01, 10.0]"),
        ({"repeat_last_n": -2}, "repeat_last_n", "`repeat_last_n` must be >= -1, got -2"),
        ({"presence_penalty": 2.5}, "presence_penalty", "in [-2, 2], got 2.5"),
        ({"frequency_penalty": -3.0}, "frequency_penalty", "in [-2, 2], got -3.0"),
        ({"logit_bias": {VOCAB: 1.0}}, "logit_bias", f"token id in [0, {VOCAB}), got {VOCAB}"),
        ({"logit_bias": {-1: 1.0}}, "logit_bias", "got -1"),
        ({"logit_bias": {3: 150.0}}, "logit_bias", "in [-100, 100] for token 3, got 150.0"),
    ],
)
def test_invalid_parameters_name_the_parameter_and_range(fields, param, message):
    with pytest.raises(SamplingParamError) as caught:
        validate_sampling(SamplingParams(**fields), VOCAB)
    assert caught.value.param == param
    assert message in str(caught.value)
    with pytest.raises(SamplingParamError):
        Sampler(SamplingParams(**fields), VOCAB)


def test_limits_are_accepted():
    for fields in [
        {"temperature": 0.0, "top_p": 1.0, "min_p": 0.0, "top_k": 0, "repeat_last_n": -1},
        {"temperature": 2.0, "min_p": 1.0, "presence_penalty": -2.0, "frequency_penalty": 2.0},
        {"logit_bias": {0: -100.0, VOCAB - 1: 100.0}, "top_k": VOCAB * 2},
    ]:
        validate_sampling(SamplingParams(**fields), VOCAB)
        Sampler(SamplingParams(**fields), VOCAB).close()
    validate_sampling(SamplingParams(logit_bias={10**6: 1.0}), None)  # vocabulary unknown


def test_mx_array_logits_are_read_in_place():
    logits = mx.random.normal((VOCAB,), key=mx.random.key(0))
    mx.eval(logits)
    as_numpy = np.asarray(logits)
    view = ffi.from_buffer("float[]", logits)
    assert int(ffi.cast("uintptr_t", view)) == as_numpy.__array_interface__["data"][0]
    params = SamplingParams(seed=3, top_k=10, logit_bias={1: -100.0})
    with Sampler(params, VOCAB) as from_mlx, Sampler(params, VOCAB) as from_numpy:
        assert [from_mlx.sample(logits) for _ in range(20)] == [
            from_numpy.sample(as_numpy) for _ in range(20)
        ]
        np.testing.assert_array_equal(
            from_mlx.probabilities(logits), from_numpy.probabilities(as_numpy)
        )
    assert np.array_equal(np.asarray(logits), as_numpy)  # untouched by bias and penalties


def test_caller_buffer_is_never_written():
    logits = np.linspace(-3, 3, VOCAB, dtype=np.float32)
    logits.flags.writeable = False
    before = logits.copy()
    params = SamplingParams(seed=1, logit_bias={0: 50.0, 5: -100.0}, presence_penalty=1.0)
    with Sampler(params, VOCAB) as s:
        s.feed_prompt(range(VOCAB))
        for _ in range(10):
            s.sample(logits)
    np.testing.assert_array_equal(logits, before)


@pytest.mark.parametrize(
    "logits",
    [
        np.zeros(VOCAB, dtype=np.float64),
        np.zeros(VOCAB + 1, dtype=np.float32),
        np.zeros((1, VOCAB), dtype=np.float32),
        np.zeros(2 * VOCAB, dtype=np.float32)[::2],
        mx.zeros((VOCAB,), dtype=mx.bfloat16),
        mx.zeros((VOCAB, 2))[:, 0],  # a strided MLX view would be misread without a check
        mx.zeros((VOCAB,), dtype=mx.int32),
    ],
    ids=["float64", "length", "2-D", "strided", "bfloat16", "mx-strided", "int32"],
)
def test_wrong_logits_are_refused(logits):
    with Sampler(SamplingParams(), VOCAB) as s, pytest.raises(ValueError, match="float32"):
        s.sample(logits)


def test_feed_prompt_checks_token_ids():
    with Sampler(SamplingParams(), VOCAB) as s:
        s.feed_prompt([])
        with pytest.raises(ValueError, match=r"\[0, 32\)"):
            s.feed_prompt([1, VOCAB])


def test_close_is_idempotent_and_final():
    s = Sampler(SamplingParams(), VOCAB)
    s.close()
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.sample(np.zeros(VOCAB, dtype=np.float32))


def test_no_seed_draws_a_fresh_one():
    flat = np.zeros(1000, dtype=np.float32)
    runs = []
    for _ in range(2):
        with Sampler(SamplingParams(top_k=0, top_p=1.0, min_p=0.0), 1000) as s:
            runs.append([s.sample(flat) for _ in range(10)])
    assert runs[0] != runs[1]


def test_huge_seed_and_negative_seed_are_accepted():
    flat = np.zeros(100, dtype=np.float32)
    for seed in (2**64 + 5, -1):
        with (
            Sampler(SamplingParams(seed=seed), 100) as a,
            Sampler(SamplingParams(seed=seed), 100) as b,
        ):
            assert [a.sample(flat) for _ in range(5)] == [b.sample(flat) for _ in range(5)]


def test_missing_compiler_gives_install_advice():
    env = {**os.environ, "CC": "/nonexistent/bin/cc"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "csrc" / "build_sampler.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "needs a C compiler" in result.stderr and "/nonexistent/bin/cc" in result.stderr
    advice = "xcode-select --install" if sys.platform == "darwin" else "apt-get install gcc"
    assert advice in result.stderr


def log_softmax(values: np.ndarray) -> np.ndarray:
    shifted = values.astype(np.float64) - values.max()
    return shifted - np.log(np.exp(shifted).sum())


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_logprobs_describe_the_penalized_biased_distribution(temperature):
    """Each step's log-probabilities are the softmax at temperature 1 of the logits as the
    sampler adjusts them (bias, then the repeat penalty over what came before), and sampling
    goes on exactly as `sample` does."""
    rng = np.random.default_rng(7)
    steps = [rng.normal(size=VOCAB).astype(np.float32) for _ in range(6)]
    params = SamplingParams(
        temperature=temperature, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.5, seed=3,
        logit_bias={4: 2.0},
    )  # fmt: skip
    plain, reporting = Sampler(params, VOCAB), Sampler(params, VOCAB)
    plain.feed_prompt([1, 2]), reporting.feed_prompt([1, 2])
    seen = [1, 2]
    for logits in steps:
        adjusted = logits.copy()
        adjusted[4] += 2.0
        for token in set(seen):
            value = adjusted[token]
            adjusted[token] = value / 1.5 if value > 0 else value * 1.5
        expected = log_softmax(adjusted)
        token, logprob, top = reporting.sample_with_logprobs(logits, None, 5)
        assert token == plain.sample(logits)
        assert logprob == pytest.approx(expected[token], abs=1e-5)
        assert [t for t, _ in top] == list(np.argsort(-expected, kind="stable")[:5])
        assert [v for _, v in top] == pytest.approx(sorted(expected, reverse=True)[:5], abs=1e-5)
        if temperature == 0.0:
            assert top[0][0] == token
        seen.append(token)


def test_logprobs_follow_a_grammar_mask_and_forced_tokens():
    logits = np.linspace(-1, 1, VOCAB, dtype=np.float32)
    greedy = SamplingParams(temperature=0, repeat_penalty=1.0)
    allowed = np.zeros(1, dtype=np.uint32)
    allowed[0] = (1 << 3) | (1 << 9)
    token, logprob, top = Sampler(greedy, VOCAB).sample_with_logprobs(logits, allowed, 4)
    expected = log_softmax(logits[[3, 9]])
    assert token == 9 and [t for t, _ in top] == [9, 3]
    assert [v for _, v in top] == pytest.approx([expected[1], expected[0]], abs=1e-5)
    forced = SamplingParams(temperature=0, repeat_penalty=1.0, logit_bias={5: 100, 6: 100})
    token, logprob, top = Sampler(forced, VOCAB).sample_with_logprobs(logits, None, 0)
    assert token == 6 and top == []
    assert logprob == pytest.approx(log_softmax(logits[[5, 6]])[1], abs=1e-5)
    with pytest.raises(SamplingParamError):
        Sampler(greedy, VOCAB).sample_with_logprobs(logits, None, 21)
