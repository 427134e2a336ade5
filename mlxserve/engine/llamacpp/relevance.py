"""Yes-or-no relevance on the llama.cpp child: one /completion of one token per document, with
the same bias added to "yes" and "no" (which keeps their ratio) so that top-k 2 leaves just the
two, whose probabilities after sampling are then P(yes) and P(no) renormalized. The child's
slots read documents side by side and reuse the cached prompt start (instruction and query)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

from mlxserve.engine.base import RelevanceJob

BIAS = 100.0  # lifts both answers above every other token; equal, so their odds are kept
# Every sampler that could reshape the two probabilities is neutral.
NEUTRAL_SAMPLING = {
    "n_predict": 1,
    "n_probs": 2,
    "post_sampling_probs": True,
    "temperature": 1.0,
    "top_k": 2,
    "top_p": 1.0,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repeat_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "dry_multiplier": 0.0,
    "xtc_probability": 0.0,
    "cache_prompt": True,
}

Complete = Callable[[dict], Awaitable[dict]]


async def score_on_child(complete: Complete, job: RelevanceJob) -> np.ndarray:
    """P(yes) over {yes, no} after each continuation; `complete` posts one /completion body
    within a slot of the child."""
    bias = [[job.yes_token, BIAS], [job.no_token, BIAS]]

    async def score(continuation: list[int]) -> float:
        body = {**NEUTRAL_SAMPLING, "prompt": job.shared + continuation, "logit_bias": bias}
        answer = await complete(body)
        top = answer["completion_probabilities"][0]["top_probs"]
        probabilities = {entry["id"]: entry["prob"] for entry in top}
        yes, no = probabilities.get(job.yes_token, 0.0), probabilities.get(job.no_token, 0.0)
        return yes / (yes + no) if yes + no > 0 else 0.5

    scores = await asyncio.gather(*(score(tokens) for tokens in job.continuations))
    return np.array(scores, dtype=np.float32)
