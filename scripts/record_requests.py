"""A logging proxy: forwards every request to an mlxserve (or any) server and writes each request
it saw, scrubbed of keys, to a folder, one JSON file per request. Used to record what real
clients (Codex, Claude Code) send, so the tests can replay it.

    python scripts/record_requests.py --upstream http://127.0.0.1:1234 --port 1240 --out DIR
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from pathlib import Path

import httpx
from quart import Quart, Response, request

# Headers worth keeping to replay a request; keys and cookies are never written.
KEPT_HEADERS = ("content-type", "anthropic-version", "anthropic-beta", "openai-beta", "user-agent")
# Fields that identify a user, a machine or a session: kept as fields, their values replaced.
SCRUBBED_FIELDS = {"user_id", "prompt_cache_key", "client_metadata", "safety_identifier", "user"}
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}


def make_app(upstream: str, out: Path) -> Quart:
    app = Quart(__name__)
    counter = itertools.count(1)
    client = httpx.AsyncClient(base_url=upstream, timeout=None)

    @app.route("/<path:path>", methods=["GET", "POST", "DELETE"])
    async def forward(path: str):
        body = await request.get_data()
        number = next(counter)
        record(out, number, path, body)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        upstream_request = client.build_request(
            request.method, f"/{path}", params=request.args, headers=headers, content=body
        )
        reply = await client.send(upstream_request, stream=True)
        kept = {k: v for k, v in reply.headers.items() if k.lower() not in HOP_HEADERS}
        if reply.status_code >= 400:  # an error is small: read it whole, to keep beside the request
            error = await reply.aread()
            (out / f"{number:03d}.error").write_bytes(b"%d " % reply.status_code + error)
            return Response(error, status=reply.status_code, headers=kept)

        async def chunks():
            try:
                async for chunk in reply.aiter_raw():
                    yield chunk
            finally:
                await reply.aclose()

        response = Response(chunks(), status=reply.status_code, headers=kept)
        response.timeout = None
        return response

    return app


def record(out: Path, number: int, path: str, body: bytes) -> None:
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = body.decode(errors="replace")
    entry = {
        "method": request.method,
        "path": f"/{path}",
        "query": dict(request.args),
        "headers": {k.lower(): v for k, v in request.headers.items() if k.lower() in KEPT_HEADERS},
        "body": scrub(parsed),
    }
    (out / f"{number:03d}.json").write_text(json.dumps(entry, indent=1) + "\n")


def scrub(value):
    """The body with identifying values replaced; what the server reads is kept as sent."""
    if isinstance(value, dict):
        return {
            key: _placeholder(item) if key in SCRUBBED_FIELDS else scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value


def _placeholder(value):
    if isinstance(value, dict):
        return {key: "scrubbed" for key in value}
    return "scrubbed" if isinstance(value, str) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", default="http://127.0.0.1:1234")
    parser.add_argument("--port", type=int, default=1240)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    app = make_app(args.upstream, args.out)
    asyncio.run(app.run_task(host="127.0.0.1", port=args.port))


if __name__ == "__main__":
    main()
