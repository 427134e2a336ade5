"""Yes-or-no relevance on a causal model, run on its runner thread: the prompt's shared start (the
instruction and query) is read once, then each batch of continuations (a document and the
template's close) is read from a copy of its cache, right-padded; the answer is P(yes) against
P(no) at each continuation's last position. Each batch is its own task on the runner thread, so
chats decode between two batches and a request that timed out stops at the next one."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from mlxserve.engine.base import RelevanceJob
from mlxserve.engine.mlx.architectures.text_model import TextModel

SCORE_BATCH = 16  # continuations per forward pass


def score_batches(continuations: list[list[int]]) -> list[list[int]]:
    """Indexes of the continuations in batches, like lengths together: little padding."""
    order = sorted(range(len(continuations)), key=lambda i: len(continuations[i]))
    return [order[start : start + SCORE_BATCH] for start in range(0, len(order), SCORE_BATCH)]


class RelevanceScorer:
    """The shared start read once; made and used on the runner thread only."""

    def __init__(self, model: TextModel, job: RelevanceJob):
        self.model, self.job = model, job
        self.shared = model.make_batch_cache([0])
        model.route([])  # the base model judges, whatever adapters the batch last used
        if job.shared:
            model.model(mx.array([job.shared]), cache=self.shared)
            mx.eval([layer.state for layer in self.shared])

    def score(self, rows: list[int]) -> np.ndarray:
        """P(yes) over {yes, no} after each of these continuations."""
        batch = [self.job.continuations[i] for i in rows]
        self.model.route([])  # decode steps between two batches route their own rows
        return _score_batch(self.model, self.shared, batch, self.job.yes_token, self.job.no_token)


def _score_batch(
    model: TextModel, shared: list, batch: list[list[int]], yes: int, no: int
) -> np.ndarray:
    """All but each row's last token fill a copy of the shared cache, right-padded; the padding
    is then moved ahead of the row (masked), so the last tokens are read together."""
    cache = _copies(shared, len(batch))
    width = max(len(tokens) for tokens in batch) - 1
    if width > 0:
        lengths = [len(tokens) - 1 for tokens in batch]
        padding = [width - length for length in lengths]
        for layer in cache:
            layer.prepare(lengths=lengths, right_padding=padding)
        rows = [tokens[:-1] + [0] * pad for tokens, pad in zip(batch, padding, strict=True)]
        model.model(mx.array(rows), cache=cache)
        for layer in cache:
            layer.finalize()
        mx.eval([layer.state for layer in cache])
    last = mx.array([[tokens[-1]] for tokens in batch])
    logits = model.model(last, cache=cache)[:, -1, :]
    pair = logits[:, mx.array([yes, no])].astype(mx.float32)
    return np.array(mx.softmax(pair, axis=-1)[:, 0])


def _copies(shared: list, count: int) -> list:
    """The shared cache repeated `count` times; filtering copies rows, and leaves `shared` as
    it was."""
    copies = []
    for layer in shared:
        copy = type(layer).__new__(type(layer))
        copy.__dict__.update(layer.__dict__)
        copy.filter(mx.array([0] * count))
        copies.append(copy)
    return copies
