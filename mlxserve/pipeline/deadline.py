"""The server's per-request time limit (--request-timeout), applied to an engine's event stream
and to the request's other waits (MCP servers reached and called between rounds).

One timer per request, not one per token: when it fires while the request waits on its engine,
that wait is cancelled (which releases the engine's slot or sequence); when it fires while the
client is being written to, the request ends at its next wait, or, if the write is still stuck
(a client that stopped reading) a moment later, the request's task is cancelled there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import TypeVar

from mlxserve.pipeline.errors import RequestError

T = TypeVar("T")
WRITE_GRACE = 1.0  # seconds a write may still take once the deadline passed


def timeout_error(seconds: float) -> RequestError:
    return RequestError(
        504,
        f"the request ran past the server's {seconds:g} s limit (--request-timeout) and was "
        "stopped",
        None,
        "request_timeout",
        headers={"x-should-retry": "false"},  # retrying would take as long again
    )


def deadline_from_now(seconds: float | None) -> float | None:
    """The event loop's time `seconds` from now; None without a limit."""
    return asyncio.get_running_loop().time() + seconds if seconds else None


@asynccontextmanager
async def until_deadline(deadline: float | None, seconds: float | None):
    """The block's waits end at `deadline` with the request's 504."""
    if deadline is None:
        yield
        return
    try:
        async with asyncio.timeout_at(deadline):
            yield
    except TimeoutError:
        raise timeout_error(seconds) from None


async def within_deadline(
    events: AsyncIterator[T], deadline: float | None, seconds: float
) -> AsyncIterator[T]:
    """`events` until the event loop's clock passes `deadline`, then a 504 RequestError."""
    if deadline is None:
        async with aclosing(events):
            async for event in events:
                yield event
        return
    task, loop = asyncio.current_task(), asyncio.get_running_loop()
    waiting = expired = False

    def expire() -> None:
        nonlocal expired, timer
        expired = True
        if waiting:
            task.cancel()
        else:  # the task is writing to the client: a reader that stopped holds it there
            timer = loop.call_later(WRITE_GRACE, task.cancel)

    timer = loop.call_at(deadline, expire)
    try:
        while not expired:
            waiting = True
            try:
                event = await anext(events)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if expired and task.uncancel() == 0:
                    break  # our own cancellation: a timeout, not a client leaving
                raise
            finally:
                waiting = False
            yield event
        raise timeout_error(seconds)
    finally:
        timer.cancel()
        await events.aclose()
