"""Who may use the ops app: an operator's token as a bearer, or a signed-in browser session; and CSRF.

- **Operators.** Each has a name and a token of their own; the configuration keeps only the
  token's SHA-256 (`[ops.operators]`, `payrelay ops-token NAME`). The audit's "who" is the
  operator whose token was presented, never a name the caller supplies. The admin token
  (`PAYRELAY_ADMIN_TOKEN`) is the bootstrap credential, recorded as "admin".
- **Bearer** (`Authorization: Bearer <token>`), compared in constant time, for scripts and the
  JSON API. Browsers never add it on their own, so it needs no CSRF check.
- **Session cookie** `__Host-payrelay_ops`, set by `POST /login` after a token was typed in. Its
  value is a random 256-bit session id; the ledger database keeps only its SHA-256 with the
  operator's name, a CSRF token and an expiry (12 h), so any replica serves any operator and
  logging out revokes it everywhere (`service.ops.sessions`). Attributes: HttpOnly,
  SameSite=Strict, Path=/, Secure — decided by configuration (`ops_cookie_secure`), never by the
  Host a request names; only plain-http development turns it off, and the cookie is then
  `payrelay_ops` (a `__Host-` cookie must be Secure).
- **Wrong credentials** are logged (client and path, never the token) and slow the client down
  (`service.ops.throttle`): after five, each try waits twice as long as the last, up to 5 min.
- **CSRF** for every state-changing request not made with a bearer: the `Origin` (or, without
  one, the `Referer`) must name this host, and the request must carry the session's CSRF token,
  as the form field `csrf` or the `X-CSRF-Token` header. SameSite=Strict is a third layer.
- **No token configured** (loopback development only, see `create_app`): every request is
  the operator "admin". Pages keep the Origin and CSRF checks (with a per-process CSRF token);
  a JSON API request without Origin/Referer (a local script) needs only a JSON content type,
  which no browser sends cross-site without a CORS preflight, and this app grants none.

The token is never logged, rendered or echoed; a failed sign-in says only that it failed.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.ops.sessions import MemorySessions, Sessions
from service.ops.throttle import Throttle
from service.problems import problem

log = logging.getLogger("payrelay.ops")

COOKIE = "payrelay_ops"
SECURE_COOKIE = "__Host-payrelay_ops"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
MAX_FORM_BYTES = 64 * 1024
PUBLIC_PATHS = frozenset({"/login", "/healthz", "/readyz", "/metrics"})
# Paths probes and Prometheus call by address: the trusted-host check leaves them alone.
UNCHECKED_HOST_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NAME_CHARS = re.compile(r"[^\w .@+-]", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Operator:
    """The caller of one request."""

    name: str
    via: Literal["bearer", "session", "open"]
    csrf: str | None  # what a form or X-CSRF-Token must echo; None for bearer callers

    @property
    def actor(self) -> str:
        """Who the audit and the replay headers name."""
        return f"ops:{self.name}"


def clean_name(text: str | None) -> str:
    """An operator's display name, safe for headers and logs: short, plain characters, or "admin"."""
    name = " ".join(_NAME_CHARS.sub("", text or "").split())[:40]
    return name or "admin"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# Query parameters that look like credentials: never carried into `next=` or a form.
_CREDENTIAL_PARAMETERS = frozenset(
    {"token", "access_token", "admin_token", "api_key", "apikey", "key", "secret", "password", "auth"}
)


def safe_next(target: str | None) -> str:
    """A local path to return to after sign-in; anything else (another site) becomes "/".

    A credential someone put in the query string (`/?token=…`) is dropped, so it is not copied
    into the sign-in page or its form.
    """
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    path, _, query = target.partition("?")
    kept = [
        (k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() not in _CREDENTIAL_PARAMETERS
    ]
    return f"{path}?{urlencode(kept)}" if kept else path


def token_digest(token: str) -> str:
    """What the configuration keeps of an operator's token: `sha256:<hex>`.

    Tokens are 256 random bits (`new_token`), so a plain hash is as strong as a slow one here.
    """
    return "sha256:" + hashlib.sha256(token.encode(errors="replace")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Auth:
    """The operators' token digests, the admin token, where sessions are kept, the cookie, the throttle."""

    def __init__(
        self,
        token: str | None,
        operators: Mapping[str, str] | None = None,
        *,
        cookie_secure: bool = True,
        sessions: Sessions | None = None,
    ) -> None:
        self._token = token.encode() if token else None
        self._operators = [(digest.encode(), name) for name, digest in (operators or {}).items()]
        self.sessions: Sessions = sessions or MemorySessions()
        self.cookie_secure = cookie_secure
        self.cookie = SECURE_COOKIE if cookie_secure else COOKIE
        self.throttle = Throttle()
        self._open_csrf = secrets.token_urlsafe(32)

    @property
    def required(self) -> bool:
        return self._token is not None or bool(self._operators)

    def identify(self, candidate: str) -> str | None:
        """Whose token this is: an operator's name, "admin" for the admin token, None for no one.

        Every known digest is compared, in constant time, whatever matched before.
        """
        digest = token_digest(candidate).encode()
        found = None
        for known, name in self._operators:
            if hmac.compare_digest(digest, known):
                found = name
        if self._token is not None and hmac.compare_digest(candidate.encode(errors="replace"), self._token):
            found = found or "admin"
        return found

    async def sign_in(self, name: str) -> str:
        """A new session for `name`; returns the cookie value (the session id)."""
        return await self.sessions.create(clean_name(name))

    async def sign_out(self, session_id: str | None) -> None:
        if session_id:
            await self.sessions.drop(session_id)

    async def operator(self, headers: Headers, cookies: dict[str, str]) -> Operator | None:
        """Who is calling, or None if the credentials are missing or wrong."""
        if not self.required:
            return Operator("admin", "open", self._open_csrf)
        authorization = headers.get("authorization")
        if authorization is not None:  # a bearer, right or wrong, decides; a cookie cannot rescue it
            scheme, _, credentials = authorization.partition(" ")
            name = self.identify(credentials.strip()) if scheme.lower() == "bearer" else None
            return None if name is None else Operator(name, "bearer", None)
        session_id = cookies.get(self.cookie)
        session = await self.sessions.get(session_id) if session_id else None
        if session is None:
            return None
        return Operator(session.name, "session", session.csrf)


def same_origin(headers: Headers) -> bool:
    """The Origin, or else the Referer, names the host this request was sent to."""
    host = (headers.get("host") or "").lower()
    origin = headers.get("origin")
    source = origin if origin is not None else headers.get("referer")
    if not source or source == "null" or not host:
        return False
    # Scheme is not compared: behind a TLS proxy this app sees http while the browser says https.
    return urlsplit(source).netloc.lower() == host


class AuthMiddleware:
    """Rejects unauthenticated and cross-site requests before any route runs.

    API paths (`/api/...`) get 401/403 problem+json; pages get a 303 to /login, or 403.
    """

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = request.url.path
        is_api = path == "/api" or path.startswith("/api/")
        unsafe = request.method not in SAFE_METHODS
        if path in PUBLIC_PATHS or path.startswith("/static/"):
            if unsafe and not same_origin(request.headers):
                await _forbidden(is_api, "cross-site request refused")(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        bearer = "authorization" in request.headers
        client = request.client.host if request.client else "unknown"
        if bearer and (wait := self.auth.throttle.wait(client)):
            await _throttled(is_api, wait)(scope, receive, send)
            return
        operator = await self.auth.operator(request.headers, request.cookies)
        if operator is None:
            if bearer:
                failures = self.auth.throttle.failed(client)
                log.warning(
                    "wrong bearer token from %s for %s %s (%d in a row)",
                    client,
                    request.method,
                    path,
                    failures,
                )
            await _unauthenticated(request, is_api)(scope, receive, send)
            return
        if bearer:
            self.auth.throttle.succeeded(client)
        if unsafe and operator.via != "bearer":
            refusal, receive = await _csrf_refusal(request, operator, is_api, receive)
            if refusal is not None:
                await _forbidden(is_api, refusal)(scope, receive, send)
                return
        scope.setdefault("state", {})["operator"] = operator
        await self.app(scope, receive, send)


async def _csrf_refusal(
    request: Request, operator: Operator, is_api: bool, receive: Receive
) -> tuple[str | None, Receive]:
    """Why this state-changing request is refused (None if it is not), and a receive that replays the body."""
    headers = request.headers
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    from_browser = headers.get("origin") is not None or headers.get("referer") is not None
    if operator.via == "open" and is_api and not from_browser:
        # A script on the developer's machine. Browsers send Origin with every cross-site POST,
        # and cannot send a JSON content type cross-site without a CORS preflight (never granted).
        if media_type == "application/json":
            return None, receive
        return "send JSON with Content-Type: application/json", receive
    if not same_origin(headers):
        return "cross-site request refused (Origin/Referer is not this host)", receive
    sent = headers.get(CSRF_HEADER)
    if sent is None and media_type == "application/x-www-form-urlencoded":
        body, receive = await _buffer(receive)
        if body is None:
            return "the form is too large", receive
        fields = parse_qs(body.decode(errors="replace"), max_num_fields=200)
        sent = next(iter(fields.get(CSRF_FIELD, [])), None)
    if (
        sent is None
        or operator.csrf is None
        or not hmac.compare_digest(sent.encode(), operator.csrf.encode())
    ):
        return "missing or wrong CSRF token; reload the page and try again", receive
    return None, receive


async def _buffer(receive: Receive) -> tuple[bytes | None, Receive]:
    """Read the request body and a receive that hands it on; None if it is over MAX_FORM_BYTES."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_FORM_BYTES:
            chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    if size > MAX_FORM_BYTES:
        return None, receive
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _throttled(is_api: bool, wait: float) -> Response:
    seconds = str(max(1, round(wait)))
    detail = f"too many wrong credentials from this address; try again in {seconds} s"
    if is_api:
        return problem(429, detail, headers={"Retry-After": seconds})
    return HTMLResponse(f"<p>{html.escape(detail)}</p>", status_code=429, headers={"Retry-After": seconds})


def _unauthenticated(request: Request, is_api: bool) -> Response:
    if is_api:
        return problem(
            401,
            "sign in: send Authorization: Bearer <your operator token>, or the session cookie from /login",
            headers={"WWW-Authenticate": 'Bearer realm="payrelay-ops"'},
        )
    target = safe_next(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    login = "/login" if target == "/" else f"/login?{urlencode({'next': target})}"
    return RedirectResponse(login, status_code=303)


def _forbidden(is_api: bool, detail: str) -> Response:
    if is_api:
        return problem(403, detail)
    page = (
        '<!doctype html><html lang="en"><meta charset="utf-8"><title>Forbidden</title>'
        '<link rel="stylesheet" href="/static/ops.css"><main class="page"><h1>Forbidden</h1>'
        f'<p>{html.escape(detail)}.</p><p><a href="/">Back to the dashboard</a></p></main></html>'
    )
    return HTMLResponse(page, status_code=403)
