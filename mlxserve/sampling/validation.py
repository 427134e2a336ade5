"""Checks on sampling parameters; the API maps SamplingParamError to a 422 response."""

from __future__ import annotations

import math
from numbers import Integral, Real

from mlxserve.sampling.params import SamplingParams

BIAS_LIMIT = 100.0
PENALTY_LIMIT = 2.0
# Near 0 a penalty multiplies logits past float range (inf, then NaN), so nothing can be drawn.
REPEAT_PENALTY_RANGE = (0.01, 10.0)
MAX_TEMPERATURE = 2.0


class SamplingParamError(ValueError):
    """A sampling parameter outside its legal range; `param` names it as the API spells it."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def _require(ok: bool, param: str, legal: str, value: object) -> None:
    if not ok:
        raise SamplingParamError(f"`{param}` must be {legal}, got {value!r}", param)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _in_range(value: object, low: float, high: float) -> bool:
    return _is_number(value) and low <= value <= high


def _validate_logit_bias(logit_bias: dict, vocab_size: int | None) -> None:
    for token, bias in logit_bias.items():
        in_vocab = _is_int(token) and token >= 0 and (vocab_size is None or token < vocab_size)
        legal = "a token id" if vocab_size is None else f"a token id in [0, {vocab_size})"
        _require(in_vocab, "logit_bias", f"keyed by {legal}", token)
        legal_bias = f"in [-{BIAS_LIMIT:g}, {BIAS_LIMIT:g}] for token {token}"
        _require(_in_range(bias, -BIAS_LIMIT, BIAS_LIMIT), "logit_bias", legal_bias, bias)


def validate_sampling(params: SamplingParams, vocab_size: int | None) -> None:
    """Raise SamplingParamError naming the first parameter outside its legal range."""
    t = params.temperature
    _require(_in_range(t, 0.0, MAX_TEMPERATURE), "temperature", "in [0, 2]", t)
    _require(_is_int(params.top_k) and params.top_k >= 0, "top_k", ">= 0", params.top_k)
    top_p = params.top_p
    _require(_is_number(top_p) and 0.0 < top_p <= 1.0, "top_p", "in (0, 1]", top_p)
    _require(_in_range(params.min_p, 0.0, 1.0), "min_p", "in [0, 1]", params.min_p)
    penalty = params.repeat_penalty
    low, high = REPEAT_PENALTY_RANGE
    _require(_in_range(penalty, low, high), "repeat_penalty", f"in [{low}, {high}]", penalty)
    last_n = params.repeat_last_n
    _require(_is_int(last_n) and last_n >= -1, "repeat_last_n", ">= -1", last_n)
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(params, name)
        _require(_in_range(value, -PENALTY_LIMIT, PENALTY_LIMIT), name, "in [-2, 2]", value)
    _require(isinstance(params.logit_bias, dict), "logit_bias", "a mapping", params.logit_bias)
    _validate_logit_bias(params.logit_bias, vocab_size)
    seed = params.seed
    _require(seed is None or _is_int(seed), "seed", "an integer or null", seed)
