"""What a request must be before the app sees it: addressed to one of this server's own names (a web page on a
DNS-rebinding domain is same-origin with a loopback server, and only the Host header tells it apart), from a
page of the same origin when it says where it comes from, with a body that is small and arrives in time; and
every response carries headers that keep the page out of other sites' frames.

Plain ASGI middleware, so a refusal never reaches the routes; and one uvicorn protocol that cuts off a client
whose request headers do not arrive in time (uvicorn times out only idle keep-alive connections).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

# Request headers must be complete this long after a connection opens (or after its previous response).
HEADER_TIMEOUT_S = 10.0
# The whole body must have arrived this long after the app starts reading it.
BODY_TIMEOUT_S = 20.0
# Connections served at once; uvicorn answers 503 past it.
MAX_CONNECTIONS = 64

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARD = ("0.0.0.0", "::", "")

SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a request may address: the loopback names, the bound address, the names the user added; a
    server bound to every interface also answers to this machine's host name."""
    names = {*LOOPBACK_NAMES, *(e.strip().lower().strip("[]") for e in extra if e.strip())}
    if bind.strip("[]") in _WILDCARD:
        names.update({socket.gethostname().lower(), socket.getfqdn().lower()})
    else:
        names.add(bind.lower().strip("[]"))
    return frozenset(names)


def host_of(value: str) -> str:
    """``value`` (a Host header or an Origin's authority) without its port or IPv6 brackets, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """Refuse what is not addressed to ``hosts`` (421) or comes from another origin (403); bodies over ``limit``
    bytes (413) or slower than :data:`BODY_TIMEOUT_S` (408); add :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str], limit: int, body_timeout: float = BODY_TIMEOUT_S) -> None:
        self.app, self.hosts, self.limit, self.body_timeout = app, hosts, limit, body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        headers = dict(scope["headers"])
        host = host_of(headers.get(b"host", b"").decode("latin-1"))
        if host not in self.hosts:
            await _refuse(secured, 421, f"this server does not answer to the host {host!r}; {_ADD_HOST}", "bad_host")
            return
        origin = headers.get(b"origin", b"").decode("latin-1")
        if origin and origin != "null" and host_of(origin.split("://", 1)[-1]) not in self.hosts:
            message = f"requests from pages of {origin} are refused; {_ADD_HOST}"
            await _refuse(secured, 403, message, "bad_origin")
            return
        if origin == "null":
            await _refuse(
                secured, 403, "requests from an opaque origin (a sandboxed or file page) are refused", "bad_origin"
            )
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _refuse(secured, 413, _too_large(self.limit), "too_large")
            return
        await self.app(scope, self._bounded(receive), secured)

    def _bounded(self, receive: Receive) -> Receive:
        seen = 0
        deadline: float | None = None

        async def bounded() -> Message:
            nonlocal seen, deadline
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.body_timeout
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:  # an HTTPException passes through the body parsing as it is: a JSON error
                raise HTTPException(408, f"the request body did not arrive within {self.body_timeout:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if not message.get("more_body"):
                    deadline = float("inf")  # read whole: a streamed answer may take minutes
            if seen > self.limit:
                raise HTTPException(413, _too_large(self.limit))
            return message

        return bounded


_ADD_HOST = "open it through localhost or the address it listens on, or start it with --allow-host NAME"


def _too_large(limit: int) -> str:
    return f"the request body is over {limit:,} bytes; send less"


async def _refuse(send: Callable[[Message], Any], status: int, message: str, code: str) -> None:
    kind = "permission_error" if status == 403 else "invalid_request_error"
    body = json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TimelyProtocol(H11Protocol):
    """uvicorn's h11 protocol, which also closes a connection whose request headers are not complete within
    :data:`HEADER_TIMEOUT_S` (a client dripping its headers holds a connection forever otherwise)."""

    header_timeout = HEADER_TIMEOUT_S
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete and self._header_timer is not None:
            self._header_timer.cancel()  # a whole request came in: the app decides from here
            self._header_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
