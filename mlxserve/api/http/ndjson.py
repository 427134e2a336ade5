"""Newline-delimited JSON streams (Ollama's): one JSON object a line, an error mid-stream as an
{"error": ...} line rather than a dropped socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing

from quart import Response, make_response

from mlxserve.api.http.errors import from_exception, ollama_body

NDJSON = "application/x-ndjson"


def encode_line(payload: dict) -> bytes:
    return (json.dumps(payload, ensure_ascii=False) + "\n").encode()


async def ndjson_response(lines: AsyncIterator[dict]) -> Response:
    async def body():
        try:
            async with aclosing(lines):  # a client that left stops the generation at once
                async for payload in lines:
                    yield encode_line(payload)
        except Exception as exc:  # noqa: BLE001 - reported to the client in-band
            yield encode_line(ollama_body(from_exception(exc)))

    response = await make_response(body(), {"Content-Type": NDJSON, "Cache-Control": "no-cache"})
    response.timeout = None  # a long generation must not be cut by Quart's response timeout
    return response


def streams_ndjson(view):
    """Mark a view whose streamed answer is NDJSON, for the OpenAPI document."""
    view.stream_media_type = NDJSON
    return view
