"""The C sampler under a grammar's token mask: it never picks a token outside the mask, and with
the same seed it picks what it would from logits where every masked-out token is -inf."""

from __future__ import annotations

import numpy as np
import pytest

import mlxserve  # noqa: F401 - OpenBLAS before mlx.core
from mlxserve.sampling import Sampler, SamplingParams

VOCAB = 1000  # not a multiple of 32: the last mask word is partly used
SETTINGS = [
    {"temperature": 0.0},
    {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0},
    {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05},
    {"temperature": 1.3, "top_k": 0, "top_p": 0.95, "repeat_penalty": 1.3, "logit_bias": {7: 5.0}},
]


def mask_of(allowed: np.ndarray) -> np.ndarray:
    bits = np.zeros((VOCAB + 31) // 32 * 32, dtype=np.uint8)
    bits[allowed] = 1
    return np.packbits(bits, bitorder="little").view(np.int32)


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("density", [0.002, 0.3, 1.0])
def test_masked_sampling_equals_sampling_masked_logits(settings, density):
    rng = np.random.default_rng(7)
    params = SamplingParams(seed=123, **settings)
    masked, reference = Sampler(params, VOCAB), Sampler(params, VOCAB)
    for _ in range(40):
        logits = rng.normal(0, 3, VOCAB).astype(np.float32)
        allowed = np.flatnonzero(rng.random(VOCAB) < density)
        if allowed.size == 0:
            allowed = np.array([VOCAB - 1])
        outside = np.full(VOCAB, -np.inf, dtype=np.float32)
        outside[allowed] = logits[allowed]
        token = masked.sample(logits, mask_of(allowed))
        assert token in allowed
        assert token == reference.sample(outside)


def test_a_mask_that_allows_nothing_samplable_is_an_error():
    sampler = Sampler(SamplingParams(seed=1, logit_bias={3: -100}), VOCAB)
    with pytest.raises(ValueError, match="grammar"):
        sampler.sample(np.zeros(VOCAB, dtype=np.float32), mask_of(np.array([3])))
    with pytest.raises(ValueError, match="32-bit words"):
        sampler.sample(np.zeros(VOCAB, dtype=np.float32), np.zeros(3, dtype=np.int32))
