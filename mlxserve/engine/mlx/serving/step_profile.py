"""Where a decode step's wall time goes (scripts/bench.py profile): the runner times each part of
its critical path, so the parts add up to the step. Grammar masks are made while MLX computes, so
`compute` is the wait left after them, not the model's whole compute time."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext

# In the order a step runs them.
PHASES = (
    "schedule",  # departed clients dropped, inputs gathered
    "graph",  # the model's lazy graph built
    "masks",  # grammar masks, made while MLX computes
    "compute",  # waiting for the logits
    "to_host",  # the logits as a host buffer
    "sample",  # the C sampler, row by row
    "deliver",  # each token accepted: detokenized, stop strings, events handed to the loop
    "retire",  # finished rows leave the batch and the prompt cache
)
UNTIMED = nullcontext()


class StepProfile:
    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.steps = 0
        self.rows = 0  # sequences decoded, summed over steps
        self.step_seconds = 0.0  # the steps' wall time, measured around each whole step
        self._in_step = False  # a prompt's first token is sampled outside any decode step

    @contextmanager
    def step(self, rows: int):
        started, self._in_step = time.perf_counter(), True
        try:
            yield
        finally:
            self.step_seconds += time.perf_counter() - started
            self.steps += 1
            self.rows += rows
            self._in_step = False

    def phase(self, name: str):
        return self._timed(name) if self._in_step else UNTIMED

    @contextmanager
    def _timed(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def summary(self) -> dict:
        """Milliseconds per step, for each phase and in all; the mean batch size."""
        steps = max(self.steps, 1)
        per_step = {name: 1000 * self.seconds[name] / steps for name in PHASES}
        return {
            "steps": self.steps,
            "mean_batch": self.rows / steps,
            "step_ms": 1000 * self.step_seconds / steps,
            "phases_ms": per_step,
            "phases_sum_ms": sum(per_step.values()),
        }


class NoProfile:
    """The runner's profile when none is asked for: every phase untimed."""

    def step(self, rows: int):
        return UNTIMED

    def phase(self, name: str):
        return UNTIMED
