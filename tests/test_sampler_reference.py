"""The C sampler against a NumPy reference written here: every control, known answers and
hypothesis properties on small vocabularies, plus realistic 262,144-token vocabularies."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mlxserve  # noqa: F401 - OpenBLAS before mlx.core
from mlxserve.sampling.params import SamplingParams
from mlxserve.sampling.sampler import Sampler

OFF = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
BOUNDARY = 1e-4  # hypothesis cases this close to a top_p/min_p cut are float-order coin flips


def penalized_logits(logits, params: SamplingParams, window=(), generated=()) -> np.ndarray:
    """Bias then penalties, in float32 like the C code, so ties break the same way."""
    x = np.asarray(logits, dtype=np.float32).copy()
    for token, bias in params.logit_bias.items():
        x[token] = -np.inf if bias <= -100 else x[token] + np.float32(bias)
    last_n = len(window) if params.repeat_last_n == -1 else params.repeat_last_n
    penalty = np.float32(params.repeat_penalty)
    for token in set(list(window)[-last_n:] if last_n > 0 else []):
        x[token] = x[token] / penalty if x[token] > 0 else x[token] * penalty
    for token, count in Counter(generated).items():
        cost = np.float32(count) * np.float32(params.frequency_penalty)
        x[token] -= cost + np.float32(params.presence_penalty)
    forced = [t for t, b in params.logit_bias.items() if b >= 100]
    if forced:
        x[[t for t in range(len(x)) if t not in forced]] = -np.inf
    return x


def reference_probs(logits, params: SamplingParams, window=(), generated=()) -> np.ndarray:
    """Final distribution: bias, penalties, temperature, top_k, top_p, min_p (llama.cpp order)."""
    x = penalized_logits(logits, params, window, generated).astype(np.float64)
    probs = np.zeros(len(x))
    if params.temperature == 0:
        probs[int(np.argmax(x))] = 1.0
        return probs
    order = np.argsort(-x, kind="stable")  # most likely first, lower token id on ties
    order = order[np.isfinite(x[order])]
    if 0 < params.top_k < len(x):
        order = order[: params.top_k]
    weights = np.exp((x[order] - x[order[0]]) / params.temperature)
    if params.top_p < 1:
        cumulative = np.cumsum(weights / weights.sum())
        keep = int(np.searchsorted(cumulative, params.top_p)) + 1
        order, weights = order[:keep], weights[:keep]
    keep = weights >= params.min_p * weights[0]
    probs[order[keep]] = weights[keep] / weights[keep].sum()
    return probs


def near_a_cut(logits, params: SamplingParams, window=(), generated=()) -> bool:
    """True when a token sits within BOUNDARY of the top_p or min_p cut."""
    x = penalized_logits(logits, params, window, generated).astype(np.float64)
    x = np.sort(x[np.isfinite(x)])[::-1]
    if 0 < params.top_k < len(x):
        x = x[: params.top_k]
    weights = np.exp((x - x[0]) / params.temperature)
    cumulative = np.cumsum(weights) / weights.sum()
    near_p = params.top_p < 1 and np.any(np.abs(cumulative - params.top_p) < BOUNDARY)
    last = int(np.searchsorted(cumulative, params.top_p))
    if params.top_p < 1 and last < len(x):  # float32 weights tie where nearly equal logits do not
        cluster = x[np.abs(x - x[last]) < BOUNDARY * params.temperature]
        near_p = near_p or len(np.unique(cluster)) > 1
    near_min = params.min_p > 0 and np.any(np.abs(weights - params.min_p) < BOUNDARY * params.min_p)
    return bool(near_p or near_min)


def sampler(vocab_size: int, prompt=(), **fields) -> Sampler:
    s = Sampler(SamplingParams(**{**OFF, "seed": 7, **fields}), vocab_size)
    s.feed_prompt(list(prompt))
    return s


def assert_same_distribution(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-4):
    """Same kept set and values; float32 weights below e^-87 may round to zero in C."""
    np.testing.assert_array_equal(actual[expected == 0], 0)
    assert (actual[expected > 1e-30] > 0).all()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-7)


def assert_matches_reference(logits, params_fields: dict, window=(), generated=()) -> None:
    s = sampler(len(logits), window, **params_fields)
    expected = reference_probs(logits, s.params, window, generated)
    assert_same_distribution(s.probabilities(np.asarray(logits, dtype=np.float32)), expected)


LOGITS = np.array([2.0, -1.0, 0.5, 3.0, -2.5, 1.0, 0.0, 2.9], dtype=np.float32)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"temperature": 0.5},
        {"temperature": 1.7},
        {"top_k": 3},
        {"top_p": 0.6},
        {"min_p": 0.2},
        {"top_k": 5, "top_p": 0.9, "min_p": 0.1, "temperature": 0.8},
        {"logit_bias": {1: 5.0, 3: -100.0}},
        {"logit_bias": {4: 100.0}},
        {"logit_bias": {4: 100.0, 6: 100.0}, "temperature": 2.0},
        {"temperature": 0.0, "logit_bias": {3: -100.0}},
    ],
)
def test_known_answers_match_reference(fields):
    assert_matches_reference(LOGITS, fields)


def test_top_p_keeps_the_token_that_crosses_the_threshold():
    probs = sampler(4, top_p=0.7).probabilities(np.log([0.5, 0.3, 0.15, 0.05]).astype(np.float32))
    np.testing.assert_allclose(probs, [0.625, 0.375, 0, 0], rtol=1e-6)


@pytest.mark.parametrize("top_k", [0, 70])
def test_every_top_p_cut_position(top_k):
    """Sweep top_p across every gap of a 90-token distribution, far from each boundary."""
    logits = np.random.default_rng(11).normal(0, 1.5, size=90).astype(np.float32)
    probs = reference_probs(logits, SamplingParams(**{**OFF, "top_k": top_k}))
    cumulative = np.cumsum(np.sort(probs)[::-1])
    for keep in range(1, top_k or len(logits)):
        top_p = float(cumulative[keep - 1] + cumulative[keep]) / 2
        actual = sampler(len(logits), top_p=top_p, top_k=top_k).probabilities(logits)
        assert np.count_nonzero(actual) == keep + 1
        assert_matches_reference(logits, {"top_p": top_p, "top_k": top_k})


def test_min_p_is_relative_to_the_most_likely_token():
    logits = np.log(np.array([0.4, 0.2, 0.1, 0.3], dtype=np.float32))
    probs = sampler(4, min_p=0.45).probabilities(logits)
    np.testing.assert_allclose(probs, [4 / 9, 2 / 9, 0, 3 / 9], rtol=1e-6)


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits():
    logits = np.array([2.0, -2.0, 1.0, 0.0], dtype=np.float32)
    s = sampler(4, [0, 1, 1], repeat_penalty=2.0, temperature=0.0)
    token, logprob = s.sample_with_logprob(logits)
    effective = np.array([1.0, -4.0, 1.0, 0.0])  # token 0: 2 / 2; token 1: -2 * 2, once per id
    assert token == 0  # tie between tokens 0 and 2 goes to the lower id
    assert logprob == pytest.approx(effective[0] - np.log(np.exp(effective).sum()), abs=1e-5)
    assert_matches_reference(logits, {"repeat_penalty": 2.0}, window=[0, 1, 1])


def test_repeat_window_covers_only_the_last_n_tokens():
    logits = np.array([1.0, 1.0, 1.0, 1.0, 1.0], dtype=np.float32)
    window = [0, 1, 2, 3, 4, 4, 3]  # the last 3 are 4, 4, 3
    probs = sampler(5, window, repeat_penalty=1.5, repeat_last_n=3).probabilities(logits)
    weights = np.exp([1.0, 1.0, 1.0, 1 / 1.5, 1 / 1.5])
    np.testing.assert_allclose(probs, weights / weights.sum(), rtol=1e-6)
    everything = sampler(5, window, repeat_penalty=1.5, repeat_last_n=-1).probabilities(logits)
    np.testing.assert_allclose(everything, np.full(5, 0.2), rtol=1e-6)
    off = sampler(5, window, repeat_penalty=1.5, repeat_last_n=0).probabilities(logits)
    np.testing.assert_allclose(off, np.full(5, 0.2), rtol=1e-6)


def test_generated_tokens_enter_the_window_and_the_counts():
    vocab = 6
    fields = dict(repeat_penalty=1.3, repeat_last_n=4, presence_penalty=0.7, frequency_penalty=0.4)
    s = sampler(vocab, [5, 5], **fields)
    generated = []
    for token in [2, 2, 3, 2, 1]:  # a huge logit makes each draw certain
        spike = np.zeros(vocab, dtype=np.float32)
        spike[token] = 200.0
        generated.append(s.sample(spike))
    assert generated == [2, 2, 3, 2, 1]
    logits = np.array([0.5, -0.3, 1.2, 0.8, -1.0, 0.1], dtype=np.float32)
    expected = reference_probs(logits, s.params, [5, 5, *generated], generated)
    np.testing.assert_allclose(s.probabilities(logits), expected, rtol=2e-5)
    # presence and frequency count only generated tokens: the prompt's 5 was not penalized by them
    x = penalized_logits(logits, s.params, [5, 5, *generated], generated)
    assert x[2] == pytest.approx(1.2 / 1.3 - 3 * 0.4 - 0.7, abs=1e-6)
    assert x[5] == pytest.approx(0.1)


def test_plus_100_bias_wins_over_everything():
    logits = np.array([30.0, -30.0, 25.0, 0.0], dtype=np.float32)
    s = sampler(4, [1], logit_bias={1: 100.0}, temperature=2.0, repeat_penalty=2.0)
    assert {s.sample(logits) for _ in range(200)} == {1}
    greedy = sampler(4, logit_bias={1: 100.0, 3: 100.0}, temperature=0.0)
    assert greedy.sample(logits) == 3  # among forced tokens the usual order decides


def test_all_banned_raises():
    s = sampler(3, logit_bias={0: -100.0, 1: -100.0, 2: -100.0})
    with pytest.raises(ValueError, match="banned"):
        s.sample(np.zeros(3, dtype=np.float32))


def test_logprob_is_under_the_final_distribution():
    s = sampler(8, top_k=4, top_p=0.9, temperature=0.7, seed=3)
    probs = s.probabilities(LOGITS)
    for _ in range(20):
        token, logprob = s.sample_with_logprob(LOGITS)
        assert probs[token] > 0
        assert logprob == pytest.approx(math.log(probs[token]), abs=1e-5)


def test_empirical_distribution_matches_reference():
    fields = dict(temperature=0.9, top_k=6, top_p=0.95, min_p=0.02, logit_bias={0: -1.0, 7: 0.5})
    s = sampler(8, seed=1234, **fields)
    expected = reference_probs(LOGITS, s.params)
    draws = 40_000
    counts = np.bincount([s.sample(LOGITS) for _ in range(draws)], minlength=8)
    kept = expected > 0
    assert not counts[~kept].any()
    chi_square = (((counts - draws * expected)[kept]) ** 2 / (draws * expected[kept])).sum()
    dof = kept.sum() - 1
    assert chi_square < dof + 6 * math.sqrt(2 * dof)  # ~p < 1e-4 for this dof; fixed seed


finite_logit = st.floats(-20, 20, allow_nan=False, width=32)


@st.composite
def cases(draw, max_vocab=48):
    vocab = draw(st.integers(2, max_vocab))
    logits = np.array(draw(st.lists(finite_logit, min_size=vocab, max_size=vocab)), np.float32)
    token = st.integers(0, vocab - 1)
    bias = st.one_of(st.floats(-10, 10), st.just(-100.0))
    fields = dict(
        temperature=draw(st.floats(0.05, 2.0)),
        top_k=draw(st.one_of(st.just(0), st.integers(1, vocab + 2))),
        top_p=draw(st.one_of(st.just(1.0), st.floats(0.05, 1.0))),
        min_p=draw(st.one_of(st.just(0.0), st.floats(0.0, 1.0))),
        repeat_penalty=draw(st.floats(0.5, 2.0)),
        repeat_last_n=draw(st.sampled_from([-1, 0, 1, 3, 64])),
        presence_penalty=draw(st.floats(-2, 2)),
        frequency_penalty=draw(st.floats(-2, 2)),
        logit_bias=draw(st.dictionaries(token, bias, max_size=3)),
    )
    prompt = draw(st.lists(token, max_size=8))
    return logits, fields, prompt


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_final_distribution_matches_reference(case):
    logits, fields, prompt = case
    s = sampler(len(logits), prompt, **fields)
    x = penalized_logits(logits, s.params, prompt)
    assume(np.isfinite(x).any() and not near_a_cut(logits, s.params, prompt))
    assert_same_distribution(s.probabilities(logits), reference_probs(logits, s.params, prompt))


@st.composite
def flat_cases(draw):
    """Many nearly equal logits, so top_p keeps hundreds of tokens (the quickselect path)."""
    vocab = draw(st.integers(200, 3000))
    seed = draw(st.integers(0, 2**32 - 1))
    spread = draw(st.floats(0.01, 3.0))
    logits = (np.random.default_rng(seed).normal(size=vocab) * spread).astype(np.float32)
    fields = dict(
        temperature=draw(st.floats(0.3, 2.0)),
        top_p=draw(st.floats(0.05, 0.99)),
        min_p=draw(st.one_of(st.just(0.0), st.floats(0.0, 0.5))),
        top_k=draw(st.sampled_from([0, 0, 50, 1000])),
    )
    return logits, fields


@settings(max_examples=40, deadline=None)
@given(flat_cases())
def test_nucleus_on_wide_distributions_matches_reference(case):
    logits, fields = case
    s = sampler(len(logits), **fields)
    assume(not near_a_cut(logits, s.params))
    assert_same_distribution(s.probabilities(logits), reference_probs(logits, s.params))


@settings(max_examples=60, deadline=None)
@given(cases(), st.integers(0, 2**64 - 1))
def test_banned_tokens_are_never_sampled(case, seed):
    logits, fields, prompt = case
    banned = {t for t, b in fields["logit_bias"].items() if b <= -100}
    assume(len(banned) < len(logits))
    s = sampler(len(logits), prompt, **{**fields, "seed": seed})
    assert not banned & {s.sample(logits) for _ in range(20)}


@settings(max_examples=100, deadline=None)
@given(cases())
def test_greedy_is_argmax_of_penalized_logits(case):
    logits, fields, prompt = case
    logits = np.round(logits)  # ties are common, and go to the lowest token id
    s = sampler(len(logits), prompt, **{**fields, "temperature": 0.0})
    x = penalized_logits(logits, s.params, prompt).astype(np.float64)
    assume(np.isfinite(x).any())
    token, logprob = s.sample_with_logprob(logits)
    assert token == int(np.argmax(x))
    finite = x[np.isfinite(x)]
    expected = x[token] - finite.max() - np.log(np.exp(finite - finite.max()).sum())
    assert logprob == pytest.approx(expected, abs=1e-4)


@settings(max_examples=60, deadline=None)
@given(st.lists(finite_logit, min_size=1, max_size=300), st.floats(0.05, 2.0))
def test_top_k_one_is_argmax(values, temperature):
    logits = np.array(values, dtype=np.float32)
    s = sampler(len(logits), top_k=1, temperature=temperature)
    assert s.sample(logits) == int(np.argmax(logits))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_seed_reproduces_and_different_seeds_differ(seed, other):
    assume(seed != other)
    flat = np.zeros(1000, dtype=np.float32)

    def run(s: int) -> list[int]:
        draw = sampler(1000, seed=s, top_k=40, top_p=0.95, repeat_penalty=1.1)
        return [draw.sample(flat) for _ in range(12)]

    assert run(seed) == run(seed)
    assert run(seed) != run(other)


def gemma_like_logits(rng: np.random.Generator, vocab: int = 262_144) -> np.ndarray:
    """Normal bulk with a heavy upper tail, roughly the shape of a real model's logits."""
    logits = rng.normal(-2.0, 2.5, size=vocab)
    head = rng.choice(vocab, size=200, replace=False)
    logits[head] += rng.exponential(6.0, size=200)
    return logits.astype(np.float32)


@pytest.mark.parametrize(
    "fields",
    [
        dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05),
        dict(temperature=1.0, top_k=0, top_p=0.9, min_p=0.0),
        dict(temperature=1.5, top_k=0, top_p=1.0, min_p=0.01),
        dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0),
    ],
)
def test_full_vocabulary_matches_reference(fields):
    rng = np.random.default_rng(5)
    logits = gemma_like_logits(rng)
    window = rng.integers(0, len(logits), size=64).tolist()
    bias = {int(np.argmax(logits)): -100.0, 17: 4.0}
    fields = {**fields, "repeat_penalty": 1.1, "logit_bias": bias}
    s = sampler(len(logits), window, **fields)
    assert not near_a_cut(logits, s.params, window)
    actual = s.probabilities(logits)
    assert_same_distribution(actual, reference_probs(logits, s.params, window))
    assert actual[s.sample(logits)] > 0
