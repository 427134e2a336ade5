"""What keeps web pages and other sites' scripts out of a server on localhost.

Any page the user opens can send requests to 127.0.0.1:1234. A browser marks them with an
`Origin`, may send a "simple" cross-site POST (text/plain, no preflight), and DNS rebinding
makes a foreign site's name resolve to 127.0.0.1 (its requests then carry that name as `Host`).
So, before any route runs: a request from a foreign Origin is refused (403) unless CORS lists
it, POST bodies must be JSON (415; audio uploads may be multipart forms), the Host must be a
loopback name or one the user allows (403), and with an API key every route but a bare liveness
`/health` (and the web page's files, which hold no data) needs it (401), compared in constant
time. Loopback origins (a local app on another port) and the server's own origin (its page, on a
Host that passed the check) are allowed.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from quart import Quart, Response, request

from mlxserve.api.http.errors import error_response
from mlxserve.pipeline.errors import RequestError

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
# Audio uploads come as multipart forms, as OpenAI's SDK sends them; every other POST is JSON.
FORM_PATHS = ("/v1/audio/transcriptions", "/v1/audio/translations")


@dataclass
class GuardOptions:
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)  # "*" allows every origin
    allowed_hosts: list[str] = field(default_factory=list)  # beyond loopback; "*" allows all


def install_guard(
    app: Quart, options: GuardOptions, keyless: Callable[[], bool] = lambda: False
) -> None:
    """`keyless` tells the requests besides /health that need no API key."""

    @app.before_request
    async def check_request():
        refusal = refusal_of(options, keyless)
        if refusal is not None:
            return error_response(refusal)
        if request.method == "OPTIONS":
            return Response("", status=204)  # a preflight from an allowed origin
        return None

    @app.after_request
    async def allow_origin(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and options.cors_origins and _origin_allowed(origin, options.cors_origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Headers"] = "*"
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            if request.headers.get("Access-Control-Request-Private-Network") == "true":
                response.headers["Access-Control-Allow-Private-Network"] = "true"
        return response


def refusal_of(
    options: GuardOptions, keyless: Callable[[], bool] = lambda: False
) -> RequestError | None:
    if not _host_allowed(request.host, options.allowed_hosts):
        return RequestError(
            403,
            f"host '{request.host}' is not allowed; start the server with --allowed-hosts to "
            "serve it",
            None,
            "host_not_allowed",
        )
    origin = request.headers.get("Origin")
    if origin and not (
        _is_loopback_origin(origin)
        or _is_own_origin(origin, options.allowed_hosts)
        or _origin_allowed(origin, options.cors_origins)
    ):
        return RequestError(
            403,
            f"origin '{origin}' is not allowed; start the server with --cors {origin} to allow it",
            None,
            "origin_not_allowed",
        )
    if request.method == "OPTIONS":
        return None
    if request.method == "POST" and not _accepted_body(request.path, request.mimetype):
        return RequestError(
            415,
            f"POST bodies must be application/json, got '{request.mimetype or 'none'}'",
            None,
            "unsupported_media_type",
        )
    needs_key = not (_is_liveness(request.path) or keyless())
    if options.api_key and needs_key and not has_key(options.api_key):
        return RequestError(401, "invalid or missing API key", None, "invalid_api_key")
    return None


def has_key(api_key: str) -> bool:
    sent = request.headers.get("x-api-key") or ""
    bearer = request.headers.get("Authorization", "")
    if bearer.startswith("Bearer "):
        sent = bearer.removeprefix("Bearer ")
    return hmac.compare_digest(sent.encode(), api_key.encode())


def _accepted_body(path: str, mimetype: str) -> bool:
    return mimetype == "application/json" or (
        path in FORM_PATHS and mimetype == "multipart/form-data"
    )


def _is_liveness(path: str) -> bool:
    return path == "/health"


def _host_allowed(host: str, allowed: list[str]) -> bool:
    name = urlsplit(f"//{host}").hostname or ""
    return (
        name in LOOPBACK_HOSTS or name.endswith(".localhost") or "*" in allowed or name in allowed
    )


def _is_loopback_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and (parts.hostname or "") in LOOPBACK_HOSTS


def _is_own_origin(origin: str, allowed_hosts: list[str]) -> bool:
    """The server's own page, on a Host named as allowed: with `--allowed-hosts *` any name
    passes the Host check, a rebinding one too, so a bare "*" never makes an origin our own."""
    parts = urlsplit(origin)
    named = _host_allowed(request.host, [h for h in allowed_hosts if h != "*"])
    return parts.scheme in ("http", "https") and parts.netloc == request.host and named


def _origin_allowed(origin: str, allowed: list[str]) -> bool:
    return "*" in allowed or origin.rstrip("/") in (o.rstrip("/") for o in allowed)
