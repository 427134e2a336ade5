"""Server-sent events: one `data:` line per JSON object, `data: [DONE]` at the end."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from quart import Response, make_response

from mlxserve.api.http.errors import from_exception, openai_body
from mlxserve.pipeline.errors import RequestError

log = logging.getLogger(__name__)


def encode(payload: dict | str, named: bool = False) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    if named:  # the Responses API names each event after its type
        return f"event: {payload.get('type', 'error')}\ndata: {data}\n\n".encode()
    return f"data: {data}\n\n".encode()


async def sse_response(
    events: AsyncIterator[dict],
    done_marker: bool = True,
    named_events: bool = False,
    error_body: Callable[[RequestError], dict] = openai_body,
) -> Response:
    """Stream dicts as SSE; an error mid-stream becomes an error event (in the API family's
    `error_body` shape), not a dropped socket."""

    async def body():
        try:
            async with aclosing(events):  # a client that left stops the generation at once
                async for payload in events:
                    yield encode(payload, named_events)
        except Exception as exc:  # noqa: BLE001 - reported to the client in-band
            yield encode(error_body(from_exception(exc)), named_events)
            return
        if done_marker:
            yield encode("[DONE]")

    response = await make_response(
        body(), {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    response.timeout = None  # a long generation must not be cut by Quart's response timeout
    return response
