"""The error every layer above the engines raises for a request it refuses."""

from __future__ import annotations


class RequestError(Exception):
    """A refused request: its HTTP status, a message, the field at fault and a code. Each API
    family renders it in its own error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}  # such as Retry-After
