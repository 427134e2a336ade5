"""Typed wrapper around the C sampler (csrc/sampler.c, built by cffi into `_sampler_c`).

One Sampler per request: it owns the C state (RNG, repeat-penalty window, token counts and
scratch buffers), so creating it costs one allocation and sampling a token costs none.
Logits reach C without a copy: any 1-D float32 buffer works, a NumPy array or an mx.array
(MLX arrays export the buffer protocol; import mlxserve before mlx.core). C only reads them.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np

from mlxserve.sampling._sampler_c import ffi, lib
from mlxserve.sampling.params import SamplingParams
from mlxserve.sampling.validation import SamplingParamError, validate_sampling

SEED_MASK = (1 << 64) - 1
MAX_TOP_LOGPROBS = lib.MAX_TOP_LOGPROBS
FLOAT32_FORMATS = ("f", "<f", "=f")


def _config(params: SamplingParams, seed: int):
    config = ffi.new("SamplerConfig *")
    config.temperature = params.temperature
    config.top_k = params.top_k
    config.top_p = params.top_p
    config.min_p = params.min_p
    config.repeat_penalty = params.repeat_penalty
    config.repeat_last_n = params.repeat_last_n
    config.presence_penalty = params.presence_penalty
    config.frequency_penalty = params.frequency_penalty
    config.seed = seed & SEED_MASK
    return config


class Sampler:
    """Samples token ids from logits with the controls of SamplingParams.

    `seed=None` draws a fresh random seed, otherwise the same seed, parameters, prompt and
    logits give the same tokens on every run.
    """

    def __init__(self, params: SamplingParams, vocab_size: int):
        validate_sampling(params, vocab_size)
        self.params = params
        self.vocab_size = vocab_size
        self.seed = secrets.randbits(64) if params.seed is None else params.seed & SEED_MASK
        tokens = list(params.logit_bias)
        bias_tokens = ffi.new("int[]", tokens)
        bias_values = ffi.new("float[]", [params.logit_bias[t] for t in tokens])
        config = _config(params, self.seed)
        state = lib.sampler_new(vocab_size, config, bias_tokens, bias_values, len(tokens))
        if state == ffi.NULL:
            raise MemoryError(f"cannot allocate a sampler for a vocabulary of {vocab_size}")
        self._state = state
        self._logprob = ffi.new("float *")

    def feed_prompt(self, token_ids: Sequence[int]) -> None:
        """Add prompt tokens to the repeat-penalty window (not to presence/frequency counts)."""
        if len(token_ids) == 0:
            return
        tokens = ffi.new("int[]", list(token_ids))
        if lib.sampler_feed(self._live(), tokens, len(tokens)) != 0:
            raise ValueError(f"prompt token ids must be in [0, {self.vocab_size})")

    def sample(self, logits, allowed: np.ndarray | None = None) -> int:
        """Choose the next token and record it as generated. `allowed` restricts the choice to
        the tokens whose bit is set (a grammar's token mask: bit i % 32 of 32-bit word i / 32);
        it is read in place."""
        if allowed is None:
            return self._sample(logits, ffi.NULL)
        mask = self._mask(allowed)
        token = lib.sampler_sample_allowed(self._live(), self._buffer(logits), mask, ffi.NULL)
        return self._check_token(token, masked=True)

    def sample_with_logprobs(
        self, logits, allowed: np.ndarray | None, top: int
    ) -> tuple[int, float, list[tuple[int, float]]]:
        """`sample` that also gives log-probabilities under the softmax at temperature 1 of the
        biased, penalized (and grammar-masked) logits: the token's, and the `top` most likely
        tokens' (most likely first) as (token, logprob) pairs."""
        if not 0 <= top <= MAX_TOP_LOGPROBS:
            raise SamplingParamError(f"must be from 0 to {MAX_TOP_LOGPROBS}", "top_logprobs")
        mask = ffi.NULL if allowed is None else self._mask(allowed)
        ids, values = ffi.new("int[]", MAX_TOP_LOGPROBS), ffi.new("float[]", MAX_TOP_LOGPROBS)
        count, logprob = ffi.new("int *"), ffi.new("float *")
        token = lib.sampler_sample_logprobs(
            self._live(), self._buffer(logits), mask, top, ids, values, count, logprob
        )
        self._check_token(token, allowed is not None)
        return token, float(logprob[0]), [(ids[i], float(values[i])) for i in range(count[0])]

    def sample_with_logprob(self, logits) -> tuple[int, float]:
        """The next token and its log-probability under the distribution it was drawn from.

        For temperature 0 the log-probability is under the softmax of the biased, penalized
        logits (the argmax is certain, so the final distribution carries no information).
        """
        token = self._sample(logits, self._logprob)
        return token, float(self._logprob[0])

    def probabilities(self, logits) -> np.ndarray:
        """The final distribution after bias, penalties, temperature, top_k, top_p and min_p.

        Dropped tokens get 0. Nothing is drawn or recorded, so it inspects the next step
        without changing it; for temperature 0 it is one-hot at the argmax.
        """
        probs = np.zeros(self.vocab_size, dtype=np.float32)
        lib.sampler_probs(self._live(), self._buffer(logits), ffi.from_buffer("float[]", probs))
        return probs

    def close(self) -> None:
        """Free the C state; safe to call more than once."""
        state, self._state = getattr(self, "_state", ffi.NULL), ffi.NULL
        if state != ffi.NULL:
            lib.sampler_free(state)

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def _live(self):
        if self._state == ffi.NULL:
            raise RuntimeError("the sampler is closed")
        return self._state

    def _sample(self, logits, logprob) -> int:
        token = lib.sampler_sample(self._live(), self._buffer(logits), logprob)
        return self._check_token(token, masked=False)

    def _mask(self, allowed: np.ndarray):
        if allowed.dtype.itemsize != 4 or allowed.size * 32 < self.vocab_size:
            raise ValueError(f"allowed must hold {self.vocab_size} bits in 32-bit words")
        return ffi.from_buffer("uint32_t[]", allowed)

    @staticmethod
    def _check_token(token: int, masked: bool) -> int:
        if token == -2:
            raise MemoryError("cannot allocate the sampler's masked logits")
        if token < 0 and masked:
            raise SamplingParamError("no token allowed by the grammar can be sampled", "logit_bias")
        if token < 0:
            raise SamplingParamError(
                "every token is banned by logit_bias: nothing can be sampled", "logit_bias"
            )
        return token

    def _buffer(self, logits):
        """A zero-copy view of 1-D float32 logits of the sampler's vocabulary size."""
        if type(logits) is np.ndarray:
            ok = logits.dtype == np.float32 and logits.ndim == 1 and logits.flags.c_contiguous
            shape, kind = logits.shape, logits.dtype
        else:
            view = memoryview(logits)
            ok = view.format in FLOAT32_FORMATS and view.ndim == 1 and view.c_contiguous
            shape, kind = view.shape, view.format
            logits = view
        if not ok or shape[0] != self.vocab_size:
            raise ValueError(
                f"logits must be a contiguous 1-D float32 buffer of {self.vocab_size} values, "
                f"got shape {tuple(shape)} of {kind}"
            )
        return ffi.from_buffer("float[]", logits)
