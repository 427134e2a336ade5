"""Which hosts a server named in a request may be on. A request could otherwise make this server
reach what only it can reach: its own loopback services, the LAN, a cloud's metadata address. So
such a server must resolve to public addresses only, checked after DNS resolution on every
connection (transport.py connects to the address checked, against DNS rebinding), unless the
operator lists its host with --mcp-allowed-hosts."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class HostNotAllowed(Exception):
    """A host that resolves to an address requests may not reach."""


def normal_host(host: str) -> str:
    """A host as the allowlist compares it: lower case, without brackets or a final dot; an
    address in its canonical spelling."""
    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def is_public(address: Address) -> bool:
    """Whether an address is globally routable: not loopback, private, link-local, multicast,
    unspecified, reserved, shared (100.64/10) nor an IPv4 one of those behind IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and not is_public(embedded):
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved)


@dataclass(frozen=True)
class HostPolicy:
    """The hosts --mcp-allowed-hosts lists, reachable whatever they resolve to; every other
    host must resolve to public addresses only."""

    listed: frozenset[str] = frozenset()

    @classmethod
    def of(cls, hosts: Iterable[str]) -> HostPolicy:
        return cls(frozenset(normal_host(host) for host in hosts if host.strip()))

    def lists(self, host: str) -> bool:
        return normal_host(host) in self.listed

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for host:port, each one checked; HostNotAllowed when any
        is not public and the host is not listed, OSError when the name does not resolve."""
        loop = asyncio.get_running_loop()
        found = await loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(info[4][0] for info in found))
        if not self.lists(host):
            for address in addresses:  # all, not some: a connection may go to any of them
                if not is_public(ipaddress.ip_address(address.split("%")[0])):
                    raise HostNotAllowed(host)
        return addresses
