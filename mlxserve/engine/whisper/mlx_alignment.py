"""Word timing from cross-attention: the alignment heads' attention over the audio, normalised
per audio position and smoothed over time, read as a cost matrix whose cheapest monotonic path
(dynamic time warping) ties each text token to the audio position where it is spoken."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Path steps, in the order ties are broken: diagonal, next token, next audio position.
_DIAGONAL, _TOKEN, _TIME = 0, 1, 2


def token_alignment(scores: np.ndarray, median_width: int) -> list[tuple[int, int]]:
    """scores: (heads, tokens, audio positions) pre-softmax cross-attention of the alignment
    heads. The path as (token index, audio position) pairs."""
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    spread = np.maximum(weights.std(axis=-2, keepdims=True), 1e-12)
    weights = (weights - weights.mean(axis=-2, keepdims=True)) / spread
    matrix = _median_over_time(weights, median_width).mean(axis=0)
    return _cheapest_path(-matrix)


def _median_over_time(x: np.ndarray, width: int) -> np.ndarray:
    half = width // 2
    if x.shape[-1] <= half:  # too short to reflect at the edges: left as it is
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect")
    return np.median(sliding_window_view(padded, width, axis=-1), axis=-1)


def _cheapest_path(cost: np.ndarray) -> list[tuple[int, int]]:
    """The monotonic path from the first token and position to the last with the least summed
    cost, each step moving to the next token, the next position, or both."""
    tokens, positions = cost.shape
    total = np.full((tokens + 1, positions + 1), np.inf)
    total[0, 0] = 0.0
    move = np.full((tokens + 1, positions + 1), _TIME, dtype=np.int8)
    move[1:, 0] = _TOKEN
    for j in range(1, positions + 1):
        for i in range(1, tokens + 1):
            options = (total[i - 1, j - 1], total[i - 1, j], total[i, j - 1])
            step = _choose(options)
            total[i, j] = cost[i - 1, j - 1] + options[step]
            move[i, j] = step
    path, i, j = [], tokens, positions
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = move[i, j]
        i -= step in (_DIAGONAL, _TOKEN)
        j -= step in (_DIAGONAL, _TIME)
    return path[::-1]


def _choose(options: tuple[float, float, float]) -> int:
    """The diagonal or token step only when strictly cheaper than both others."""
    diagonal, token, time = options
    if diagonal < token and diagonal < time:
        return _DIAGONAL
    if token < diagonal and token < time:
        return _TOKEN
    return _TIME
