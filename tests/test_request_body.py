"""Reading a request's body: a client that leaves as its body arrives starts no work."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel
from quart import Quart, request

from mlxserve.api.http.parsing import parse_body

pytestmark = pytest.mark.anyio


class Body(BaseModel):
    model: str


async def test_a_cancel_that_comes_as_the_body_ends_is_kept():
    """Quart reads the body under asyncio.wait_for, which on Python 3.11 returns the body and
    drops a cancel that arrives in the same moment. Cancelled at each point of the read, the
    parse must end cancelled every time, never hand the view a body."""
    app = Quart(__name__)
    outcomes = []
    for steps in range(8):
        context = app.test_request_context(
            "/", method="POST", data=b'{"model": "m"}', headers={"Content-Type": "application/json"}
        )
        async with context:
            request.body_timeout = app.config["BODY_TIMEOUT"]  # as the server's requests have
            parsing = asyncio.ensure_future(parse_body(Body))
            for _ in range(steps):
                await asyncio.sleep(0)
            if parsing.done():
                break  # read to the end before any cancel: nothing more to try
            parsing.cancel()
            try:
                outcomes.append(await parsing)
            except asyncio.CancelledError:
                outcomes.append("cancelled")
    assert len(outcomes) > 1, "the body was read without waiting: no moment to cancel in"
    assert outcomes == ["cancelled"] * len(outcomes)
