"""Secrets kept out of logs and error texts: a URL's user info and query string (signed image
and MCP URLs carry their tokens there) and bearer tokens."""

from __future__ import annotations

import logging
import re

_URL = re.compile(
    r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)(?:[^\s/@'\"<>]*@)?(?P<path>[^\s?#'\"<>]*)"
    r"(?P<query>[?#][^\s'\"<>]*)?"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[\w\-.~+/=]+")
HIDDEN = "<redacted>"


def scrub(text: str) -> str:
    """`text` with each URL's user info and query string and each bearer token hidden."""
    text = _URL.sub(_scrub_url, text)
    return _BEARER.sub(lambda found: found[1] + HIDDEN, text)


def _scrub_url(found: re.Match) -> str:
    query = f"?{HIDDEN}" if found["query"] else ""
    return f"{found['scheme']}{found['path']}{query}"


class ScrubbingFormatter(logging.Formatter):
    """Scrubs the whole formatted record, tracebacks included: an exception's text may hold
    the URL it failed on."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def scrub_logs(fmt: str) -> None:
    """Every handler of the root logger writes `fmt`, scrubbed (httpx names each URL it
    fetches at INFO)."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(ScrubbingFormatter(fmt))
