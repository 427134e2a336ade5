"""The web page's routes: `GET /` for a browser (a request that lists text/html in its Accept),
its static files under /ui/. Every other `GET /` keeps Ollama's liveness line, which Ollama's
clients probe. The page and its files load without the API key; the page asks for it once."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Quart, Response, request, send_from_directory

STATIC = Path(__file__).parent / "static"
# Scripts and styles come only from the server's own files: no inline code, no other origin.
# Attached images are shown from data: URLs read in the page.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

blueprint = Blueprint("ui", __name__)


def install_page(app: Quart) -> None:
    """Serve the page; call after the guard is installed, so its checks run first."""
    app.register_blueprint(blueprint)

    @app.before_request
    async def page_for_browsers():
        if request.method == "GET" and request.path == "/" and _accepts_html():
            return await _static("index.html")
        return None


def is_page_request() -> bool:
    """A request for the page or one of its files: these need no API key."""
    if request.method not in ("GET", "HEAD"):
        return False
    return request.path.startswith("/ui/") or (request.path == "/" and _accepts_html())


@blueprint.get("/ui/<path:name>")
async def static_file(name: str):
    """One of the web page's files."""
    return await _static(name)


static_file.undocumented = True  # the page's files, not part of the API


def _accepts_html() -> bool:
    # Only a literal text/html counts: clients that send */* (curl, httpx) keep Ollama's answer.
    return any(value == "text/html" for value, _ in request.accept_mimetypes)


async def _static(name: str) -> Response:
    response = await send_from_directory(STATIC, name)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-cache"  # revalidated, so an upgrade shows at once
    return response
