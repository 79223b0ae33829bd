"""One authentication rule for every route of the app: the HeyGem API, our JSON API and Gradio's own routes.

With server.api_token or server.password set, a request needs one credential: the token in a header, or the
cookie that signing in sets (POST /login, with the password or the token). Only /healthz stays open, for probes;
POST /login is where a credential is exchanged for the cookie. The rule is one ASGI middleware in front of
everything, so a route added later, ours or Gradio's, is covered without anyone having to remember it.

The same middleware keeps other web sites out, credential or not (foreign_site): a page of another site can make
the browser of anyone who opens it send requests here (a form, or fetch() with multipart/form-data, needs no
permission), so a request whose Origin is not this server's own (scheme, host and port) is refused. No answer grants
another origin anything either: the framework's CORS headers are removed. And a server without any credential
answers only requests addressed to an IP address or to localhost: an attacker's domain name resolved to this machine
(DNS rebinding) would otherwise make this server the attacker's page's own origin, free to read every answer.

Signing out ends the session on the server: each sign-in has an id of its own, and the ids of signed-out sessions
are kept (in <data_dir>/signed_out.json, across restarts) until their cookies would have expired anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heygem.api import easy
from heygem.config import ServerConfig
from heygem.errors import ConfigError, quote_input

SESSION_COOKIE = "heygem_session"
# The health probe: open to anyone and anything, and says nothing secret.
HEALTH = frozenset({("GET", "/healthz"), ("HEAD", "/healthz")})
# (method, path) pairs that need no credential: the health probe, and the sign-in that checks one itself.
PUBLIC = HEALTH | {("POST", "/login")}
LOGIN_FAILED = "wrong user name and password, or wrong token"
# The port an origin or a Host header without one means, by scheme (a websocket's is its page's).
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
PAGE_SCHEMES = {"ws": "http", "wss": "https"}

router = APIRouter()


class Credentials:
    """What this server accepts as proof of identity, from server.api_token, server.username and server.password."""

    def __init__(self, server: ServerConfig, signed_out_path: Path) -> None:
        self.token = server.api_token or ""
        self.username = server.username
        self.password = server.password or ""
        # Something in front (a proxy, a firewall) decides who gets in: then it also decides by which name.
        self.anyone_by_any_name = server.allow_unauthenticated
        self.session_s = server.login_days * 86400
        # Sign-ins are signed with a key made from the credentials: a new password or token ends them all.
        secret = "\0".join(("heygem-session", self.token, self.username, self.password))
        self._key = hashlib.sha256(secret.encode()).digest()
        self._signed_out = SignedOut(signed_out_path)

    @property
    def required(self) -> bool:
        return bool(self.token or self.password)

    def admit(self, connection: HTTPConnection) -> bool:
        return self.token_matches(presented_token(connection)) or self.session_valid(
            connection.cookies.get(SESSION_COOKIE, ""))

    def accept_login(self, username: str, password: str) -> bool:
        """The sign-in form takes the user name and password, or the token in the password field."""
        if self.token_matches(password):
            return True
        # Both compared, always: stopping at a wrong user name would time how right the name was.
        matches = [hmac.compare_digest(given.encode(), wanted.encode()) for given, wanted in
                   ((username, self.username), (password, self.password))]
        return bool(self.password) and all(matches)

    def token_matches(self, presented: str) -> bool:
        return bool(self.token and presented) and hmac.compare_digest(presented.encode(), self.token.encode())

    def new_session(self) -> str:
        """'<expires>.<session id>.<signature>': the id is what signing out ends."""
        session = f"{int(time.time() + self.session_s)}.{secrets.token_urlsafe(16)}"
        return f"{session}.{self._sign(session)}"

    def session_valid(self, value: str) -> bool:
        return self._session(value) is not None

    def end_session(self, value: str) -> None:
        """Signs out: the cookie's session is refused from now on (a blocking file write: off the event loop)."""
        session = self._session(value)
        if session is not None:
            self._signed_out.add(*session)

    def _session(self, value: str) -> tuple[str, int] | None:
        """(id, expiry) of a session cookie this server wrote that has not expired or been signed out, or None."""
        session, _, signature = value.rpartition(".")
        # The signature first: only a text this server wrote reaches int().
        if not hmac.compare_digest(signature.encode(), self._sign(session).encode()):
            return None
        expires, _, session_id = session.partition(".")
        # No id: a cookie of the version before ids, which signing out could not end.
        if not session_id or int(expires) <= time.time() or self._signed_out.contains(session_id):
            return None
        return session_id, int(expires)

    def how_to_authenticate(self) -> str:
        ways = ["send 'Authorization: Bearer <token>' or 'X-API-Token: <token>'"] if self.token else []
        ways.append("sign in at /login")
        return f"this server requires a credential: {', or '.join(ways)}"

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()


class SignedOut:
    """The ids of signed-out sessions whose cookies have not expired yet, kept in a file across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none yet (or unreadable: the sessions it named have a week at most)
            kept = {}
        self._expiry: dict[str, int] = {str(key): int(value) for key, value in kept.items()} if isinstance(
            kept, dict) else {}

    def contains(self, session_id: str) -> bool:
        return session_id in self._expiry

    def add(self, session_id: str, expires: int) -> None:
        with self._lock:
            now = time.time()
            self._expiry = {key: value for key, value in self._expiry.items() if value > now}
            self._expiry[session_id] = expires
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".tmp")
            partial.write_text(json.dumps(self._expiry), encoding="utf-8")
            os.replace(partial, self.path)


def presented_token(connection: HTTPConnection) -> str:
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    return connection.headers.get("x-api-token", "")


class AuthMiddleware:
    """Refuses every request of another web site (foreign_site) but the health probe's; and, when the server has
    credentials, every request without one, except the PUBLIC ones."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        route = (scope.get("method"), scope["path"])
        foreign = None if route in HEALTH else foreign_site(connection, self.credentials)
        if foreign is not None:
            await self.refuse(connection, 403, foreign, scope, receive, send)
        elif not self.credentials.required or route in PUBLIC or self.credentials.admit(connection):
            await self.app(scope, receive, without_cors_grants(send))
        else:
            await self.refuse(connection, 401, self.credentials.how_to_authenticate(), scope, receive, send)

    async def refuse(self, connection: HTTPConnection, status_code: int, message: str, scope: Scope, receive: Receive,
                     send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # closing before accepting refuses the handshake
            return
        await self.refusal(connection, status_code, message)(scope, receive, send)

    def refusal(self, connection: HTTPConnection, status_code: int, message: str) -> Response:
        if connection.url.path.startswith(easy.router.prefix):
            return easy.envelope(easy.SYSTEM_ERROR, msg=message, status_code=status_code)
        if status_code != 401:
            return JSONResponse({"error": message}, status_code=status_code)
        if connection.scope.get("method") in ("GET", "HEAD") and wants_html(connection):
            return login_page(self.credentials, next_path(connection), status_code=401)
        headers = {"WWW-Authenticate": 'Bearer realm="HeyGem"'} if self.credentials.token else None
        return JSONResponse({"error": message}, status_code=401, headers=headers)


def without_cors_grants(send: Send) -> Send:
    """Drops the access-control-* headers of every answer: the pages this server serves need none, and Gradio would
    grant them to the origin a request names (with credentials)."""

    async def send_without(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [(name, value) for name, value in message.get("headers", [])
                                              if not name.lower().startswith(b"access-control-")]}
        await send(message)

    return send_without


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int | None


def foreign_site(connection: HTTPConnection, credentials: Credentials) -> str | None:
    """Why a request comes from a web page of another site, which may not use this server; None if it does not.

    A page's origin is its scheme, host and port: a page served on another port of this host (any program there, a
    dev server, a page opened from a file) is another site, as the browser itself sees it. This server's own origin
    is the one the request addressed: its Host header, and the scheme it came by (https behind a proxy that says
    so in X-Forwarded-Proto)."""
    host = connection.headers.get("host", "")
    origin = connection.headers.get("origin")
    own = own_origin(connection.url.scheme, host)
    if origin is not None and (own is None or origin_of(origin) != own):
        return (f"a page of {quote_input(origin)} may not use this server: it answers only the pages it serves itself "
                "(cross-site request refused). An origin is a scheme, a host and a port, and all three must be this "
                "server's. Behind a reverse proxy, pass the Host header and the scheme on (nginx: proxy_set_header "
                "Host $host; proxy_set_header X-Forwarded-Proto $scheme)")
    name = host_name(host)
    if host and not credentials.required and not credentials.anyone_by_any_name and not is_local_name(name):
        return (f"this server has no credential, so it answers only requests addressed to it by an IP address or "
                f"as localhost, not as {quote_input(name)}: a web page could otherwise reach it under a domain name "
                "of its own (DNS rebinding). Open it as 127.0.0.1, or set server.api_token or server.password "
                "(docs/security.md)")
    return None


def host_name(address: str, scheme: str = "//") -> str:
    """The host name in a Host header ('studio:8383'), or in an Origin ('https://studio') with scheme=""."""
    try:
        return urlsplit(scheme + address).hostname or ""
    except ValueError:  # an unbalanced '[' of an IPv6 address
        return address


def origin_of(origin: str) -> Origin | None:
    """An Origin header's scheme, host and port (the scheme's default if it names none); None if unusable."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:  # a port out of range, an unbalanced '['
        return None
    return Origin(parts.scheme, parts.hostname or "", port or DEFAULT_PORTS.get(parts.scheme))


def own_origin(scheme: str, host: str) -> Origin | None:
    """The origin of this server's pages, as a request addressed it: its scheme and Host header."""
    page_scheme = PAGE_SCHEMES.get(scheme, scheme)
    return origin_of(f"{page_scheme}://{host}")


def is_local_name(name: str) -> bool:
    """localhost, or an IP address: no DNS answer decides what they stand for."""
    return name == "localhost" or ip_address(name) is not None


@router.post("/login")
async def login(request: Request) -> Response:
    """Exchanges the password (or the token) for the session cookie; gradio_client's `auth=` posts here too."""
    credentials: Credentials = request.app.state.credentials
    form = await request.form()
    username, password = str(form.get("username") or ""), str(form.get("password") or "")
    target = safe_target(str(form.get("next") or "/"))
    browser = wants_html(request)
    if not credentials.required:
        return JSONResponse({"error": "this server has no password or token to sign in with"}, status_code=400)
    if not credentials.accept_login(username, password):
        if browser:
            return login_page(credentials, target, error=LOGIN_FAILED.capitalize() + ".", status_code=401)
        return JSONResponse({"error": LOGIN_FAILED}, status_code=401)
    response: Response = RedirectResponse(target, status_code=303) if browser else JSONResponse({"success": True})
    # HttpOnly keeps it from scripts; SameSite=Lax keeps it off other sites' requests (forged form posts).
    response.set_cookie(SESSION_COOKIE, credentials.new_session(), max_age=int(credentials.session_s), path="/",
                        httponly=True, samesite="lax", secure=request.url.scheme == "https")
    return response


@router.get("/logout")
def logout(request: Request) -> RedirectResponse:
    """Ends the session on the server (its cookie is refused from now on, wherever a copy of it is), then clears the
    cookie. Runs in a pool thread: it writes the list of signed-out sessions."""
    credentials: Credentials = request.app.state.credentials
    credentials.end_session(request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def wants_html(connection: HTTPConnection) -> bool:
    """A browser navigating or posting a form (rather than a script, or the page's own calls) gets HTML."""
    return "text/html" in connection.headers.get("accept", "")


def next_path(connection: HTTPConnection) -> str:
    query = connection.url.query
    return connection.url.path + (f"?{query}" if query else "")


def safe_target(target: str) -> str:
    """Only a path on this server: '//host' and '/\\host' would send the browser elsewhere after signing in, and so
    would '/<tab>/host', since browsers drop tabs and line breaks from a URL: no control character is kept either."""
    if target.startswith("/") and not target.startswith(("//", "/\\")) and target.isprintable():
        return target
    return "/"


def login_page(credentials: Credentials, target: str, error: str = "", status_code: int = 200) -> HTMLResponse:
    """A self-contained sign-in form: every other file of the page needs the credential it asks for."""
    if credentials.password:
        secret_label = "Password or API token" if credentials.token else "Password"
        # With the token, the user name is not needed.
        required = "" if credentials.token else " required"
        user_field = f'<label>User name<input name="username" autocomplete="username"{required}></label>'
    else:
        secret_label, user_field = "API token", ""
    alert = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return HTMLResponse(LOGIN_HTML.format(alert=alert, user_field=user_field, secret_label=secret_label,
                                          target=html.escape(target)), status_code=status_code)


LOGIN_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · HeyGem Studio</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #eef0fb; display: grid; place-items: center;
       min-height: 100vh; margin: 0; }}
form {{ background: #fff; padding: 2rem 2.5rem; border-radius: 12px; box-shadow: 0 4px 24px #0002;
       display: grid; gap: 1rem; min-width: 18rem; }}
h1 {{ margin: 0; font-size: 1.4rem; color: #312e81; }}
label {{ display: grid; gap: .3rem; font-size: .9rem; color: #374151; }}
input {{ padding: .55rem .7rem; border: 1px solid #c7c9e0; border-radius: 8px; font-size: 1rem; }}
button {{ padding: .6rem; border: 0; border-radius: 8px; background: #4f46e5; color: #fff; font-size: 1rem; }}
.error {{ color: #b91c1c; margin: 0; }}
</style></head>
<body><form method="post" action="/login">
<h1>HeyGem Studio</h1>{alert}
{user_field}
<label>{secret_label}<input name="password" type="password" autocomplete="current-password" required autofocus>
</label>
<input type="hidden" name="next" value="{target}">
<button type="submit">Sign in</button>
</form></body></html>
"""


def check_exposure(server: ServerConfig) -> None:
    """Refuse to serve an address other machines can reach without any credential, unless told to."""
    if server.api_token or server.password or server.allow_unauthenticated or is_loopback(server.host):
        return
    raise ConfigError(f"server.host is {server.host}, which other machines can reach, and neither server.api_token "
                      "nor server.password is set: anyone there could use the studio, the API and every task. Set "
                      "one of them, bind to 127.0.0.1, or set server.allow_unauthenticated: true if something in "
                      "front (a reverse proxy, a firewall) decides who gets in; see docs/security.md")


def is_loopback(host: str) -> bool:
    address = ip_address(host)
    return host.lower() == "localhost" or (address is not None and address.is_loopback)


def ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `host` spells, or None for a host name (it may stand for any address)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
