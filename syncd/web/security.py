"""What keeps the dashboard safe to expose: the Host allowlist (DNS rebinding), strict
security headers on every answer, the login session and the CSRF token of every form.

Sessions are HMAC-signed cookies under a key made at process start: nothing is stored,
and restarting `syncd web` logs everyone out. The CSRF token is a double submit (a random
cookie, SameSite=Strict, that every form repeats)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "syncd_session"
CSRF_COOKIE = "syncd_csrf"
SESSION_SECONDS = 12 * 3600
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def host_only(header: str) -> str:
    """`example.com:8790` → `example.com`; `[::1]:8790` → `[::1]`; lower-cased."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware: refuse unknown Host headers, add the security headers."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...]):
        self.app = app
        self.allowed = {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = host_only(headers.get(b"host", b"").decode("latin-1"))
        if "*" not in self.allowed and host not in self.allowed:
            response = PlainTextResponse(f"Host {host!r} is not allowed here\n", status_code=400)
            await response(scope, receive, _with_headers(send))
            return
        await self.app(scope, receive, _with_headers(send))


def _with_headers(send: Send) -> Callable[[Message], Awaitable[None]]:
    async def wrapped(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *HEADERS]
        await send(message)

    return wrapped


def client_address(request: Request, trust_proxy: bool) -> str:
    """Who is asking: the peer, or with trust_proxy the address our proxy appended to
    X-Forwarded-For (the last entry: the ones before it are whatever the client sent)."""
    if trust_proxy:
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[-1].strip()
        if forwarded:
            return forwarded[:100]
    return request.client.host if request.client else "unknown"


def is_https(request: Request, trust_proxy: bool) -> bool:
    if trust_proxy and request.headers.get("x-forwarded-proto", "").lower() == "https":
        return True
    return request.url.scheme == "https"


def read_token(path: Path) -> str:
    """The login token: the file's first line. An empty file would let anyone in."""
    token = path.read_text(encoding="utf-8").strip().splitlines()
    if not token or len(token[0].strip()) < 8:
        raise ValueError(f"{path}: the token must be at least 8 characters on its first line")
    return token[0].strip()


class Sessions:
    """Signed, expiring session cookies and the CSRF tokens that go with them."""

    def __init__(self, token: str | None, key: bytes | None = None):
        self.token = token
        self.key = key or secrets.token_bytes(32)

    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def check_token(self, given: str) -> bool:
        if self.token is None:
            return False
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    def new_session(self, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_SECONDS)
        body = f"{secrets.token_hex(16)}.{expires}"
        return f"{body}.{self._sign(body)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        if not cookie or self.token is None:
            return False
        body, _, sig = cookie.rpartition(".")
        if not body or not hmac.compare_digest(sig, self._sign(body)):
            return False
        try:
            expires = int(body.rsplit(".", 1)[1])
        except (IndexError, ValueError):
            return False
        return (now or time.time()) < expires

    @staticmethod
    def new_csrf() -> str:
        return secrets.token_urlsafe(24)

    @staticmethod
    def csrf_ok(request: Request, form_value: Any) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE)
        if not cookie or not isinstance(form_value, str):
            return False
        return hmac.compare_digest(cookie.encode(), form_value.encode())
