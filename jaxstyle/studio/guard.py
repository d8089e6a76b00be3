"""The studio's door: which requests reach the page and its API, and the headers every answer
carries.

On the loopback interface the ``Host`` header must name this server, so a web page whose name
was re-bound to 127.0.0.1 (DNS rebinding) gets nothing; a request sent by another site's page
(``Origin``, ``Sec-Fetch-Site``) is refused, so no site can start, stop or read a run; off the
loopback interface a random token is required as well.
"""

from __future__ import annotations

import ipaddress
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

_SECURITY_HEADERS = [
    (b"content-security-policy", (b"default-src 'self'; img-src 'self' blob: data:; "
                                  b"style-src 'self'; script-src 'self'; connect-src 'self'; "
                                  b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'")),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # the token must not leave in a Referer
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name) is this machine's loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cookie_name(port: int) -> str:
    """The token's cookie: one per port, since cookies do not tell ports apart."""
    return f"jaxstyle_studio_{port}"


class Guard:
    """ASGI middleware: refuses requests that are not the page's own, and adds security headers.

    Args:
      app: the application it guards.
      port: the server's port.
      host: the address bound; on the loopback interface the ``Host`` header must be
        ``127.0.0.1``, ``localhost`` or ``[::1]`` with the port (a DNS-rebound name is refused).
      token: when set, every request must carry it (the cookie the start page sets, the
        ``token`` query parameter or an ``X-Studio-Token`` header).
    """

    def __init__(self, app, port: int, host: str, token: str | None):
        self.app, self.token, self.cookie = app, token, cookie_name(port)
        self.hosts = ({f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]")}
                      if is_loopback(host) else None)

    def refusal(self, scope) -> str | None:
        """Why a request is refused (None: it is not)."""
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        if self.hosts is not None and host not in self.hosts:
            return (f"refused: Host {host or '(none)'!r} is not this studio's address (open "
                    f"http://{min(self.hosts)}/)")
        origin = headers.get("origin")
        if origin is not None and origin.lower() != f"{scope.get('scheme', 'http')}://{host}":
            return f"refused: a request from another site ({origin})"
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return "refused: a request from another site"
        if self.token is not None:
            cookies = SimpleCookie(headers.get("cookie", ""))
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = [cookies[self.cookie].value] if self.cookie in cookies else []
            given += query.get("token", []) + [headers.get("x-studio-token", "")]
            if not any(secrets.compare_digest(g.encode(), self.token.encode()) for g in given):
                return "refused: this studio needs its token: open the address it printed"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        why = self.refusal(scope)
        if why is not None:
            return await JSONResponse({"error": why}, 403)(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [h for h in _SECURITY_HEADERS
                                                 if h[0] not in present]
            await send(message)

        await self.app(scope, receive, with_headers)
