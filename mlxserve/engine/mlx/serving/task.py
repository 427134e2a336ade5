"""A whole computation on a runner's model (scoring rerank documents), run by the runner thread
between two steps, its result or error handed back through a future."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future


class Task:
    def __init__(self, work: Callable):
        self.work = work  # called with the runner's model
        self.result: Future = Future()

    def run(self, model) -> None:
        """Skipped when its caller stopped waiting (a timeout) before it began."""
        if not self.result.set_running_or_notify_cancel():
            return
        try:
            self.result.set_result(self.work(model))
        except Exception as exc:  # noqa: BLE001 - the caller gets it, the runner goes on
            self.result.set_exception(exc)

    def emit(self, exc: BaseException) -> None:
        """Fail the task, as a sequence is failed, when the runner stops."""
        if not self.result.done():
            self.result.set_exception(exc)
