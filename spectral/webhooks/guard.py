"""The SSRF guard: which target addresses a webhook may never reach (docs/api.md, "Webhooks").

A URL is vetted when a webhook is created or updated and again before each
attempt: its host is resolved and every address checked, and the attempt then
connects to the vetted address itself, so a name that resolves elsewhere a
moment later (DNS rebinding) changes nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import trio

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Cloud metadata endpoints, refused even where ``is_global`` would not catch them.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254")
)
#: Ranges refused besides what :attr:`ipaddress.IPv4Address.is_global` excludes.
EXTRA_FORBIDDEN = (
    ipaddress.ip_network("100.64.0.0/10"),  # CGNAT (shared address space)
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64 maps onto IPv4, private ones included
    ipaddress.ip_network("64:ff9b:1::/48"),
)


class ForbiddenUrlError(ValueError):
    """The URL's host is, or resolves to, an address webhooks may not reach."""


class UnresolvableUrlError(ValueError):
    """The URL's host does not resolve."""


def forbidden_reason(address: IPAddress) -> str | None:
    """Why webhooks may not reach ``address`` (loopback, private, ...), or None if allowed."""
    mapped = getattr(address, "ipv4_mapped", None) or getattr(address, "sixtofour", None)
    if mapped is not None:
        reason = forbidden_reason(mapped)
        return None if reason is None else f"{reason} (via {address})"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for name, flag in (
        ("a loopback address", address.is_loopback),
        ("a link-local address", address.is_link_local),
        ("a multicast address", address.is_multicast),
        ("an unspecified address", address.is_unspecified),
        ("a private address", address.is_private),
    ):
        if flag:
            return name
    if any(address in network for network in EXTRA_FORBIDDEN) or not address.is_global:
        return "a non-public address"
    return None


def url_host(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL (ValueError if it has none)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname, port


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (only a lookup: nothing is sent to the host)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UnresolvableUrlError(f"host {host!r} does not resolve") from error
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvableUrlError(f"host {host!r} does not resolve")
    return addresses


async def vet(url: str, *, allow_private: bool) -> list[IPAddress]:
    """The addresses ``url`` may be reached at; raises if any is forbidden.

    Raises:
        ForbiddenUrlError: an address is forbidden (unless ``allow_private``).
        UnresolvableUrlError: the host does not resolve.
        ValueError: not an http(s) URL with a host.
    """
    host, port = url_host(url)
    addresses = await resolve(host, port)
    if not allow_private:
        for address in addresses:
            reason = forbidden_reason(address)
            if reason is not None:
                raise ForbiddenUrlError(f"{host} is {reason} ({address})")
    return addresses
