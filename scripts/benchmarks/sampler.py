"""The C sampler against mlx-lm's sampler on the same logits, in the same run.

Gemma 3's vocabulary (262,144 tokens), every control on: temperature 0.8, top_k 40, top_p 0.95,
min_p 0.05, repeat_penalty 1.1 over 64 tokens, presence and frequency penalty 0.5 and a few
logit_bias entries; then the same with top_k off. mlx-lm runs the work of its generate_step:
logits processors, log-softmax, sampler, mx.eval. Reported: ms per token for both, the ratio,
and ours as a share of one Gemma 3 270M decode step on this CPU.

    python scripts/benchmarks/sampler.py [--iterations N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import mlxserve  # noqa: F401 - OpenBLAS before mlx.core
from mlxserve.sampling.params import SamplingParams
from mlxserve.sampling.sampler import Sampler

VOCAB = 262_144
DECODE_STEP_MS = 110.0  # Gemma 3 270M f32 decode step, MLX on this machine's CPU (FACTS.md)
PROMPT_TOKENS = 64
DISTINCT_LOGITS = 8  # cycle through several vectors so no run sees the same input twice in a row
LOGIT_BIAS = {1: -100.0, 106: -100.0, 2_000: 5.0, 50_000: -3.0}
CONTROLS = dict(
    temperature=0.8,
    top_p=0.95,
    min_p=0.05,
    repeat_penalty=1.1,
    repeat_last_n=64,
    presence_penalty=0.5,
    frequency_penalty=0.5,
    logit_bias=LOGIT_BIAS,
    seed=0,
)


def realistic_logits(rng: np.random.Generator) -> np.ndarray:
    """Normal bulk with a heavy upper tail: a few hundred plausible tokens, one or two leaders."""
    logits = rng.normal(-2.0, 2.5, size=VOCAB)
    head = rng.choice(VOCAB, size=200, replace=False)
    logits[head] += rng.exponential(6.0, size=200)
    return logits.astype(np.float32)


def time_ours(logits: list, params: SamplingParams, prompt: list[int], steps: int) -> list[float]:
    sampler = Sampler(params, VOCAB)
    sampler.feed_prompt(prompt)
    for i in range(5):
        sampler.sample(logits[i % len(logits)])
    times = []
    for i in range(steps):
        start = time.perf_counter()
        sampler.sample(logits[i % len(logits)])
        times.append(time.perf_counter() - start)
    sampler.close()
    return times


def time_mlx_lm(logits: list, params: SamplingParams, prompt: list[int], steps: int) -> list[float]:
    import mlx.core as mx  # after mlxserve, which preloads OpenBLAS
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    sample = make_sampler(params.temperature, params.top_p, params.min_p, top_k=params.top_k)
    every_token = steps + len(prompt) + 5  # OpenAI semantics: every generated token counts
    processors = make_logits_processors(
        logit_bias=params.logit_bias,
        repetition_penalty=params.repeat_penalty,
        repetition_context_size=params.repeat_last_n,
        presence_penalty=params.presence_penalty,
        presence_context_size=every_token,
        frequency_penalty=params.frequency_penalty,
        frequency_context_size=every_token,
    )
    rows = [mx.array(row)[None] for row in logits]
    mx.eval(rows)
    tokens = mx.array(prompt)

    def step(row):
        nonlocal tokens
        scores = row
        for process in processors:
            scores = process(tokens, scores)
        token = sample(scores - mx.logsumexp(scores, axis=-1, keepdims=True))
        tokens = mx.concatenate([tokens, token])
        mx.eval(tokens)

    for i in range(5):
        step(rows[i % len(rows)])
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(rows[i % len(rows)])
        times.append(time.perf_counter() - start)
    return times


def summarize(times: list[float]) -> dict:
    return {"median_ms": statistics.median(times) * 1e3, "mean_ms": statistics.fmean(times) * 1e3}


def compare(label: str, top_k: int, steps: int, logits: list, prompt: list[int]) -> dict:
    params = SamplingParams(top_k=top_k, **CONTROLS)
    ours = summarize(time_ours(logits, params, prompt, steps))
    peer = summarize(time_mlx_lm(logits, params, prompt, steps))
    return {
        "label": label,
        "mlxserve": ours,
        "mlx_lm": peer,
        "speedup": peer["median_ms"] / ours["median_ms"],
        "share_of_decode_step": ours["median_ms"] / DECODE_STEP_MS,
    }


def run(args) -> dict:
    steps = getattr(args, "iterations", None) or 200
    rng = np.random.default_rng(0)
    logits = [realistic_logits(rng) for _ in range(DISTINCT_LOGITS)]
    prompt = rng.integers(0, VOCAB, size=PROMPT_TOKENS).tolist()
    cases = {
        "top_k_40": compare("all controls, top_k 40", 40, steps, logits, prompt),
        "top_k_off": compare("all controls, top_k off", 0, steps, logits, prompt),
    }
    print(f"vocabulary {VOCAB}, {steps} tokens per run, median ms per token")
    print(f"{'':26}{'mlxserve':>10}{'mlx-lm':>10}{'speedup':>9}{'of decode':>11}")
    for case in cases.values():
        print(
            f"{case['label']:26}{case['mlxserve']['median_ms']:10.3f}"
            f"{case['mlx_lm']['median_ms']:10.3f}{case['speedup']:8.1f}x"
            f"{case['share_of_decode_step']:10.2%}"
        )
    return {"vocab_size": VOCAB, "tokens": steps, "decode_step_ms": DECODE_STEP_MS, **cases}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=None, help="tokens per run (200)")
    run(parser.parse_args())
