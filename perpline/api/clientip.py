"""Who is calling, by address: the one rule every limiter uses (`from perpline.api.clientip import client_ip`).

X-Forwarded-For is written by whoever sends the request, so it is believed only when the peer that
connected to us is one of the operator's proxies (PERPLINE_TRUSTED_PROXIES, empty by default: no
header is believed). Behind trusted proxies the address is the first one, reading the header from
the right (the hop nearest to us), that is not itself a trusted proxy: what a client wrote further
left cannot choose its bucket. uvicorn is started with proxy_headers off (perpline.api.main), so the
connection's peer is always the real socket peer and this function is the only place the header counts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_FORWARDED_HOPS = 32  # a longer X-Forwarded-For is read only this far from the right
UNKNOWN = "unknown"


def trusted_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """PERPLINE_TRUSTED_PROXIES' entries (addresses or CIDR blocks) as networks; a malformed entry
    stops the API at start-up rather than silently trusting nothing or everything."""
    try:
        return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())
    except ValueError as err:
        raise ValueError(f"PERPLINE_TRUSTED_PROXIES: {err}") from err


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in net for net in networks)


def resolve(peer: str, forwarded_for: list[str], networks: tuple[Network, ...]) -> str:
    """The client's address from the socket peer and the X-Forwarded-For values (pure: unit-tested)."""
    current = _address(peer)
    if current is None:
        return peer or UNKNOWN
    hops = [hop for value in forwarded_for for hop in value.split(",")][-MAX_FORWARDED_HOPS:]
    while _trusted(current, networks) and hops:
        previous = _address(hops.pop())
        if previous is None:  # not an address: nothing a trusted proxy wrote; stay with the last trusted hop
            break
        current = previous
    return str(current)


def client_ip(conn: HTTPConnection) -> str:
    """The caller's address for a request or websocket of this app (its trusted proxies are
    app.state.trusted_proxies, set by create_app)."""
    peer = conn.client.host if conn.client else UNKNOWN
    networks: tuple[Network, ...] = getattr(conn.app.state, "trusted_proxies", ())
    if not networks:
        return peer
    return resolve(peer, conn.headers.getlist("x-forwarded-for"), networks)
