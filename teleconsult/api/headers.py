"""Secure response headers for every HTTP response (pure ASGI middleware, so websockets and streaming pass untouched).

CSP allows only 'self' (camera/microphone for teleconsultation from our own origin); the interactive ``/docs`` page
additionally loads Swagger UI from jsDelivr. API responses are ``Cache-Control: no-store`` (health data). HSTS is sent
when the server terminates TLS or the request arrived over https.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP: Final = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
)
DOCS_CSP: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "frame-ancestors 'none'; base-uri 'self'; object-src 'none'"
)
HSTS: Final = "max-age=63072000; includeSubDomains"
_STATIC: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(self), microphone=(self), geolocation=(), payment=()"),
)


class SecurityHeadersMiddleware:
    """Adds the headers above unless the app already set them."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        extra = list(_STATIC)
        extra.append((b"content-security-policy", (DOCS_CSP if path == "/docs" else CSP).encode()))
        if self.hsts or scope.get("scheme") == "https":
            extra.append((b"strict-transport-security", HSTS.encode()))
        if path.startswith("/api/"):
            extra.append((b"cache-control", b"no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in extra if k not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
