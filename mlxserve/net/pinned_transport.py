"""The HTTP transport of connections a request makes the server open (its MCP servers, its remote
images): every request (each message, each redirect hop followed) resolves its host, checks each
address against the host policy, and connects to a checked address itself, so a name that
resolves elsewhere a moment later (DNS rebinding) cannot slip a connection through."""

from __future__ import annotations

import httpx2

from mlxserve.net.hosts import HostNotAllowed, HostPolicy, normal_host


class PinnedTransport(httpx2.AsyncBaseTransport):
    """Requests each sent to an address the policy allows; given a `host`, to that host only
    (a redirect elsewhere is never followed)."""

    def __init__(self, policy: HostPolicy, host: str | None = None):
        self.policy, self.host = policy, host and normal_host(host)
        self._inner = httpx2.AsyncHTTPTransport()  # no proxy: the proxy would pick the address

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if self.host is not None and normal_host(url.host) != self.host:
            raise HostNotAllowed(url.host)
        addresses = await self.policy.addresses(url.host, url.port or _default_port(url))
        extensions = dict(request.extensions)
        if url.scheme == "https":  # TLS still checks the certificate against the name
            extensions["sni_hostname"] = url.host
        failure: Exception | None = None
        for address in addresses:  # as a client tries each address of a name in turn
            pinned = httpx2.Request(
                request.method,
                url.copy_with(host=address),
                headers=request.headers,  # its Host header keeps the name
                stream=request.stream,
                extensions=extensions,
            )
            try:
                return await self._inner.handle_async_request(pinned)
            except httpx2.ConnectError as exc:
                failure = exc
        raise failure or httpx2.ConnectError("the host has no address")

    async def aclose(self) -> None:
        await self._inner.aclose()


def _default_port(url: httpx2.URL) -> int:
    return 443 if url.scheme == "https" else 80
