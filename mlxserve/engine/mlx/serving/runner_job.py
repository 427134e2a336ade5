"""Work other than a generation that must run on the runner thread, where the model's arrays
live: it runs between two steps, and its result (or error) comes back through a future."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunnerJob:
    work: Callable[[Any, Any], Any]  # called with the loaded model and its tokenizer
    done: Future = field(default_factory=Future)

    def run(self, model, tokenizer) -> None:
        try:
            self.done.set_result(self.work(model, tokenizer))
        except Exception as exc:  # noqa: BLE001 - the caller's error, raised where it waits
            self.done.set_exception(exc)

    def emit(self, exc: BaseException) -> None:
        """Told, as a waiting sequence is, that the runner stopped before reaching it."""
        self.done.set_exception(exc)
