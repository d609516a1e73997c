"""Trusted host names (`receiver_trusted_hosts`, `ops_trusted_hosts`): a request for another Host is a 400.

The receiver reflects the Host header nowhere (no redirects, no absolute URLs), so its default is
any host: it sits behind a load balancer whose name it need not know. The ops app's default is the
loopback names, so that a page whose name was rebound to this address (DNS rebinding) reaches
nothing. Probes and Prometheus call by pod address, so their paths are not checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.problems import problem

UNCHECKED_PATHS = frozenset({"/healthz", "/readyz"})
# `*`, a name (optionally `*.`-prefixed), or an IPv6 address without brackets.
_PATTERN = re.compile(r"\*|(\*\.)?[A-Za-z0-9][A-Za-z0-9.-]*|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*", re.ASCII)


def host_name(host_header: str) -> str:
    """The name in a Host header, lower-case and without the port (`[::1]:8080` is `::1`)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host_header: str, trusted: Sequence[str]) -> bool:
    """`*` is any host, `*.example.com` its subdomains, anything else one name exactly."""
    name = host_name(host_header)
    for pattern in (t.lower() for t in trusted):
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


def check_pattern(pattern: str) -> str:
    """A trusted-host pattern, lower-cased; ValueError for anything but a name, an address or a wildcard."""
    if not _PATTERN.fullmatch(pattern):
        raise ValueError(
            f"{pattern!r}: give a host name or address without scheme, port or path; "
            "`*` is any host, `*.example.com` its subdomains"
        )
    return pattern.lower()


class TrustedHosts:
    """ASGI middleware: a Host outside `trusted` gets a problem+json 400 before any route runs.

    `setting` names what to change, in the answer; `unchecked` are the paths probes call by address.
    """

    def __init__(
        self,
        app: ASGIApp,
        trusted: Sequence[str],
        *,
        setting: str = "receiver_trusted_hosts",
        unchecked: frozenset[str] = UNCHECKED_PATHS,
    ) -> None:
        self.app = app
        self.trusted = tuple(trusted)
        self.any = "*" in self.trusted
        self.setting = setting
        self.unchecked = unchecked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any or scope["type"] != "http" or scope["path"] in self.unchecked:
            await self.app(scope, receive, send)
            return
        if host_allowed(Headers(scope=scope).get("host", ""), self.trusted):
            await self.app(scope, receive, send)
            return
        detail = f"this host name is not one this app answers to ({self.setting})"
        await problem(400, detail)(scope, receive, send)
