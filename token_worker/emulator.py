"""A Stitch-compatible OAuth 2.0 client-credentials token endpoint for development and tests.

Stdlib only (certificate clients need PyJWT and cryptography, imported on first use).
:class:`Emulator` serves ``POST /connect/token`` with Stitch's validation rules,
a fake ``/api`` and ``/graphql`` that answer 401 to expired, revoked or foreign tokens, fault
injection, and a JSON control API under ``/_emulator/`` for tests that run it in another
process. Secrets and issued tokens are never logged: only client ids, scopes and statuses.
"""

from __future__ import annotations

import hmac
import json
import logging
import random
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .config import KNOWN_SCOPES  # one list of Stitch scopes, as config check knows them

log = logging.getLogger("token_worker.emulator")

TOKEN_PATH = "/connect/token"  # noqa: S105 - a URL path, not a password
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# private_key_jwt: clock skew allowed, and the longest-lived assertion accepted
ASSERTION_LEEWAY_SECONDS = 30
ASSERTION_MAX_LIFETIME_SECONDS = 300

# (status, content type, body, extra headers)
_Reply = tuple[int, str, bytes, dict[str, str]]
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 section 5.1
_UNAUTHENTICATED = {"errors": [{"message": "UNAUTHENTICATED: Token is expired or malformed"}]}


def _json(status: int, obj: object, headers: dict[str, str] | None = None) -> _Reply:
    return status, "application/json", json.dumps(obj).encode(), {**_NO_STORE, **(headers or {})}


def _html(status: int, body: bytes) -> _Reply:
    return status, "text/html; charset=utf-8", b"<html><body>" + body + b"</body></html>", {}


def _number(value: float) -> int | float:
    # Stitch sends whole seconds as an int; fractional lifetimes exist only in tests.
    return int(value) if float(value).is_integer() else float(value)


# Faults answered without looking at the request: fault spec -> reply.
_CANNED: dict[str, Callable[[dict[str, Any]], _Reply]] = {
    "http_error": lambda f: _json(int(f.get("status", 500)), {"error": "server_error"}),
    "rate_limit": lambda f: _json(429, {"error": "rate_limited"},
                                  {"Retry-After": str(int(f.get("retry_after", 1)))}),
    "oauth_error": lambda f: _json(400, {"error": str(f.get("error", "invalid_grant"))}),
    "unauthorized": lambda f: _json(401, {"error": "invalid_client"}),
    "malformed_json": lambda f: (200, "application/json", b'{"access_token": "x", ', {}),
    "html": lambda f: _html(200, b"<h1>Stitch</h1><p>Please sign in.</p>"),
}
# Faults that bend a success answer; all but missing_token still hand out a real token, so
# leak tests can find it and /api accepts it.
_TOKEN_SHAPED = frozenset({"bad_expires", "wrong_token_type", "scope_not_granted",
                           "expires_in_string", "missing_token"})
FAULT_MODES: frozenset[str] = frozenset(_CANNED) | _TOKEN_SHAPED | {"latency", "timeout", "echo"}
_NO_TOKEN = frozenset(_CANNED) | {"missing_token"}  # 200 answers that carry no token


class Emulator:
    """An in-process Stitch token endpoint on a real socket.

    Args:
        host: Interface to bind.
        port: Port to bind; 0 picks a free one when :meth:`start` runs.
        clients: ``client_id -> client_secret``; ``None`` is dev mode, where any client id
            with a non-empty secret is accepted.
        expires_in: Lifetime in seconds of the tokens issued.
        audience: The audience requests must carry; ``None`` means the emulator's token URL,
            as :attr:`url` spells it or as the client addressed it (Host header).
        extra_scopes: Scopes accepted besides :data:`KNOWN_SCOPES`.
        certificates: ``client_id -> PEM`` (certificate or RSA public key) of private_key_jwt
            clients; see :meth:`add_certificate_client`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 clients: dict[str, str] | None = None, expires_in: int | float = 3600,
                 audience: str | None = None, extra_scopes: tuple[str, ...] = (),
                 certificates: Mapping[str, bytes | str] | None = None) -> None:
        self.host, self._port, self._audience = host, port, audience
        self._clients = dict(clients) if clients is not None else None
        self._expires_in = float(expires_in)
        self._scopes = frozenset(KNOWN_SCOPES) | frozenset(extra_scopes)
        # Seam for private_key_jwt: verifier(client_id, form) -> accepted.
        self.assertion_verifier: Callable[[str, dict[str, str]], bool] | None = None
        self._certificates: dict[str, tuple[Any, str | None]] = {}  # id -> (key, x5t)
        self._jtis: dict[tuple[str, str], float] = {}  # (client id, jti) -> forget after
        self._request = threading.local()  # the Host header the current handler saw
        self.issued_tokens: list[str] = []
        self._live: dict[str, tuple[float, str]] = {}  # token -> (monotonic expiry, scope)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._rng = random.Random()  # noqa: S311 - fault dice, not cryptography
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.reset()
        for client_id, pem in (certificates or {}).items():
            self.add_certificate_client(client_id, pem)

    def reset(self) -> None:
        """Clear counters, faults and latency; clients, lifetime and issued tokens stay."""
        with self._lock:
            self._calls = self._issued = self._failed = self._in_flight = 0
            self._concurrent_max = 0
            self._by_client: Counter[str] = Counter()
            self._by_scope: Counter[str] = Counter()
            self._faults: list[dict[str, Any]] = []
            self._latency = 0.0

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

    def start(self) -> Emulator:
        """Bind (resolving port 0) and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._stopping.clear()
        self._server = _Server((self.host, self._port), self)
        self._port = int(self._server.server_address[1])
        # A short poll interval keeps stop() (and so every test teardown) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        name="stitch-emulator", daemon=True)
        self._thread.start()
        log.info("Stitch emulator listening on %s (%s)", self.url,
                 "dev mode" if self._clients is None else f"{len(self._clients)} clients")
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in latency/timeout faults
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Counters since construction or :meth:`reset`, never a token.

        Returns:
            ``calls`` (POSTs to the token URL), ``issued`` (answers carrying a token),
            ``failed`` (other finished calls), ``by_client`` / ``by_scope`` (calls per
            client id / per space-joined requested scope) and ``concurrent_max``.
        """
        with self._lock:
            return {"calls": self._calls, "issued": self._issued, "failed": self._failed,
                    "by_client": dict(self._by_client), "by_scope": dict(self._by_scope),
                    "concurrent_max": self._concurrent_max}

    def set_faults(self, faults: list[dict[str, Any]]) -> None:
        """Replace the fault list; the first spec that applies answers the token call.

        Args:
            faults: Specs like ``{"mode": "http_error", "status": 503, "count": 2}``;
                ``count`` (``None``: until cleared) and ``probability`` (default 1.0).

        Raises:
            ValueError: Unknown mode, or a bad count or probability.
        """
        specs = []
        for spec in faults:
            if not isinstance(spec, dict) or spec.get("mode") not in FAULT_MODES:
                raise ValueError(f"bad fault spec {spec!r}; modes: {sorted(FAULT_MODES)}")
            count, probability = spec.get("count"), spec.get("probability", 1.0)
            if count is not None and (not isinstance(count, int) or count < 0):
                raise ValueError(f"fault count must be a non-negative int or null: {count!r}")
            if not isinstance(probability, int | float) or not 0 <= probability <= 1:
                raise ValueError(f"fault probability must be within [0, 1]: {probability!r}")
            specs.append(dict(spec))  # our own copy: its count goes down as it fires
        with self._lock:
            self._faults = specs

    def set_expires_in(self, seconds: float) -> None:
        """Set the lifetime of tokens issued from now on."""
        with self._lock:
            self._expires_in = float(seconds)

    def set_latency(self, seconds: float) -> None:
        """Delay every token call by ``seconds``."""
        with self._lock:
            self._latency = float(seconds)

    def revoke(self, access_token: str) -> None:
        """Make ``/api`` refuse ``access_token`` from now on; unknown tokens are ignored."""
        with self._lock:
            self._live.pop(access_token, None)

    # -- private_key_jwt --------------------------------------------------------------------

    def add_certificate_client(self, client_id: str, pem: bytes | str) -> None:
        """Accept ``client_id`` with RS256 client assertions signed by the key of ``pem``.

        Installs :meth:`verify_assertion` as :attr:`assertion_verifier` unless another
        verifier is set. Needs PyJWT and cryptography (the ``crypto`` extra).

        Args:
            client_id: The client id the assertions must name as ``iss`` and ``sub``.
            pem: A PEM certificate (its SHA-1 thumbprint must then match any ``kid``)
                or a PEM RSA public key.

        Raises:
            ValueError: ``pem`` holds neither an RSA certificate nor an RSA public key.
        """
        key, kid = _rsa_public_key(pem.encode() if isinstance(pem, str) else pem)
        with self._lock:
            self._certificates[client_id] = (key, kid)
        if self.assertion_verifier is None:
            self.assertion_verifier = self.verify_assertion

    def verify_assertion(self, client_id: str, form: dict[str, str]) -> bool:
        """Check a private_key_jwt token request as an authorization server must (RFC 7523).

        Accepted when the assertion type is jwt-bearer, the JWT is RS256-signed by the
        client's registered key, ``iss`` = ``sub`` = client id, ``aud`` is this token URL,
        ``exp``/``nbf``/``iat`` hold (30 s leeway; at most 300 s of life) and its ``jti``
        was never accepted before. The reason for a refusal is logged, never the JWT.
        """
        problem = self._assertion_problem(client_id, form)
        if problem is not None:
            log.info("client assertion refused client_id=%r: %s", client_id, problem)
        return problem is None

    def _assertion_problem(self, client_id: str, form: dict[str, str]) -> str | None:
        import jwt

        with self._lock:
            registered = self._certificates.get(client_id)
        if registered is None:
            return "no certificate registered for this client"
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return "client_assertion_type is not jwt-bearer"
        key, kid = registered
        assertion = form.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.InvalidTokenError:
            return "not a JWT"
        if header.get("alg") != "RS256":
            return "alg is not RS256"
        if kid is not None and header.get("kid", kid) != kid:
            return "kid names another certificate"
        host = getattr(self._request, "host", "")
        audiences = [self.url] + ([f"http://{host}{TOKEN_PATH}"] if host else [])
        try:
            claims = jwt.decode(
                assertion, key, algorithms=["RS256"], audience=audiences, issuer=client_id,
                leeway=ASSERTION_LEEWAY_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]},
            )
        except jwt.InvalidTokenError as exc:
            return f"{type(exc).__name__}: {exc}"
        now, jti = time.time(), claims["jti"]
        if claims["sub"] != client_id:
            return "sub is not the client id"
        if not isinstance(claims["aud"], str):
            return "aud is not the token URL alone"
        if float(claims["iat"]) > now + ASSERTION_LEEWAY_SECONDS:
            return "iat is in the future"
        if float(claims["exp"]) - float(claims["iat"]) > ASSERTION_MAX_LIFETIME_SECONDS:
            return f"lives longer than {ASSERTION_MAX_LIFETIME_SECONDS}s"
        if not isinstance(jti, str) or not jti:
            return "jti is empty"
        with self._lock:
            # Remembered until the assertion could no longer pass the exp check anyway.
            for seen, until in list(self._jtis.items()):
                if until < now:
                    del self._jtis[seen]
            if (client_id, jti) in self._jtis:
                return "jti replayed"
            self._jtis[(client_id, jti)] = float(claims["exp"]) + ASSERTION_LEEWAY_SECONDS
        return None

    # -- request handling, on server threads ----------------------------------------------

    def _token(self, content_type: str, body: bytes, host: str) -> _Reply | None:
        is_form = content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"
        raw = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True) if is_form else {}
        form = {key: values[0] for key, values in raw.items()}
        client_id, scope = form.get("client_id", ""), " ".join(form.get("scope", "").split())
        self._request.host = host
        with self._lock:
            self._calls += 1
            self._in_flight += 1
            self._concurrent_max = max(self._concurrent_max, self._in_flight)
            self._by_client.update([client_id] if client_id else [])
            self._by_scope.update([scope] if scope else [])
            latency = self._latency
            fault = self._pick_fault()
        reply: _Reply | None = None
        spec = fault or {}
        mode = spec.get("mode")
        try:
            self._stopping.wait(latency)
            if mode in ("latency", "timeout"):
                self._stopping.wait(float(spec.get("seconds", 1 if mode == "latency" else 30)))
            if mode in _CANNED:
                reply = _CANNED[mode](spec)
            elif mode == "echo":
                # A careless server reflecting the request, secret and all: for leak tests.
                reply = _html(500, b"<h1>500 Internal Server Error</h1><pre>" + body + b"</pre>")
            elif mode in _TOKEN_SHAPED:
                reply = self._mint(scope, spec)
            elif mode != "timeout":
                error = self._validate(raw, form, host, is_form)
                reply = _json(400, {"error": error}) if error else self._mint(scope, spec)
        finally:
            minted = reply is not None and reply[0] == 200 and mode not in _NO_TOKEN
            with self._lock:
                self._in_flight -= 1
                self._issued += minted
                self._failed += not minted
        log.info("token request client_id=%r scope=%r -> %s", client_id, scope,
                 reply[0] if reply else "dropped")
        return reply

    def _pick_fault(self) -> dict[str, Any] | None:
        for spec in self._faults:  # caller holds the lock
            count = spec.get("count")
            if (count is None or count > 0) and self._rng.random() < spec.get("probability", 1):
                if count is not None:
                    spec["count"] = count - 1
                return spec
        return None

    def _validate(self, raw: dict[str, list[str]], form: dict[str, str], host: str,
                  is_form: bool) -> str | None:
        # OAuth forbids repeated parameters; refused like a wrong content type.
        if not is_form or any(len(values) > 1 for values in raw.values()):
            return "invalid_request"
        if form.get("grant_type") != "client_credentials":
            return "unsupported_grant_type"
        if "client_secret" in form and "client_assertion" in form:
            return "invalid_request"
        if not self._client_ok(form.get("client_id", ""), form):
            return "invalid_client"
        scopes = form.get("scope", "").split()
        if not scopes or not set(scopes) <= self._scopes:
            return "invalid_scope"
        if not form.get("audience"):
            return "invalid_request"
        expected = ({self._audience} if self._audience is not None
                    else {self.url, f"http://{host}{TOKEN_PATH}"})
        return None if form["audience"] in expected else "invalid_grant"

    def _client_ok(self, client_id: str, form: dict[str, str]) -> bool:
        if not client_id:
            return False
        if "client_assertion" in form:
            try:
                return self.assertion_verifier is not None and bool(
                    self.assertion_verifier(client_id, form))
            except Exception:
                # A crashing verifier must read as a refused client, not a dropped connection.
                log.warning("assertion verifier failed for client_id=%r", client_id)
                return False
        secret = form.get("client_secret", "")
        if self._clients is None or not secret:
            return bool(secret)
        expected = self._clients.get(client_id)
        # Compare even for unknown ids so timing does not tell which ids exist.
        same = hmac.compare_digest(secret.encode(), (expected or "\0").encode())
        return expected is not None and same

    def _mint(self, scope: str, fault: dict[str, Any]) -> _Reply:
        mode = fault.get("mode")
        with self._lock:
            expires_in: Any = _number(self._expires_in)
            if mode == "bad_expires":
                expires_in = fault.get("value", 0)
            payload = {"expires_in": expires_in, "scope": scope,
                       "token_type": "mac" if mode == "wrong_token_type" else "Bearer"}
            if mode != "missing_token":
                token = payload["access_token"] = "emu_" + secrets.token_urlsafe(32)
                lifetime = expires_in if isinstance(expires_in, int | float) else 0
                self._live[token] = (time.monotonic() + lifetime, scope)
                self.issued_tokens.append(token)
        if mode == "scope_not_granted":
            other = "" if scope == "client_imageupload" else "client_imageupload"
            payload["scope"] = fault.get("scope", other)
        elif mode == "expires_in_string":
            payload["expires_in"] = str(expires_in)
        return _json(200, payload)

    def _api(self, authorization: str) -> _Reply:
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            entry = self._live.get(token.strip()) if scheme.lower() == "bearer" else None
        if entry is None or entry[0] <= time.monotonic():
            challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            return _json(401, _UNAUTHENTICATED, challenge)
        return _json(200, {"data": {"ok": True, "scope": entry[1]}})

    def _control(self, method: str, path: str, body: bytes) -> _Reply:
        action = path.removeprefix("/_emulator/")
        if action not in ("stats", "faults", "reset", "config"):
            return _json(404, {"error": "not_found"})
        if method != ("GET" if action == "stats" else "POST"):
            return _json(405, {"error": "method_not_allowed"})
        if action == "stats":
            return _json(200, self.stats())
        try:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            if action == "faults":
                self.set_faults(list(data.get("faults", [])))
            elif action == "reset":
                self.reset()
            if action == "config" and "expires_in" in data:
                self.set_expires_in(float(data["expires_in"]))
            if action == "config" and "latency" in data:
                self.set_latency(float(data["latency"]))
        except (ValueError, TypeError) as exc:
            return _json(400, {"error": "invalid_request", "error_description": str(exc)})
        return _json(200, {"ok": True})


def _rsa_public_key(pem: bytes) -> tuple[Any, str | None]:
    """(RSA public key, certificate SHA-1 thumbprint as base64url or None) from a PEM."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    kid: str | None = None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        key: Any = serialization.load_pem_public_key(pem)
    else:
        key = cert.public_key()
        der = cert.public_bytes(serialization.Encoding.DER)
        digest = hashlib.sha1(der, usedforsecurity=False).digest()  # x5t is SHA-1 by definition
        kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA certificate or public key")
    return key, kid


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler sleeping in a "timeout" fault must not block stop()

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-latency are expected; keep tracebacks off stderr.
        log.debug("connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "StitchEmulator/1.0"

    def do_POST(self) -> None:
        emu, path = self.server.emulator, urlsplit(self.path).path
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        except ValueError:  # bad or negative Content-Length
            return self._send(_json(400, {"error": "invalid_request"}))
        if path == TOKEN_PATH and self.command == "POST":
            ctype, host = self.headers.get("Content-Type", ""), self.headers.get("Host", "")
            return self._send(emu._token(ctype, body, host))
        if path == TOKEN_PATH:
            return self._send(_json(405, {"error": "invalid_request"}, {"Allow": "POST"}))
        if path in ("/api", "/graphql"):
            return self._send(emu._api(self.headers.get("Authorization", "")))
        if path.startswith("/_emulator/"):
            return self._send(emu._control(self.command, path, body))
        return self._send(_json(404, {"error": "not_found"}))

    do_GET = do_POST

    def _send(self, reply: _Reply | None) -> None:
        if reply is None:  # "timeout" fault: hang up without an answer
            self.close_connection = True
            return
        status, content_type, payload, headers = reply
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Path only: a confused client might put a secret in the query string.
        log.debug("%s %s -> %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        # Template only: http.server's error messages quote the raw request line.
        log.debug("http.server: %s", format)


def serve(host: str, port: int, *, clients: dict[str, str] | None, expires_in: float,
          certificates: Mapping[str, bytes | str] | None = None) -> None:
    """Run an emulator in the foreground until Ctrl-C or SIGTERM, then shut down cleanly.

    Args:
        host: Interface to bind.
        port: Port to bind; 0 picks a free one (the printed line says which).
        clients: ``client_id -> client_secret``, or ``None`` for dev mode.
        expires_in: Lifetime in seconds of the tokens issued.
        certificates: ``client_id -> PEM`` of private_key_jwt clients.
    """
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main else None
    if in_main:  # handlers can only be installed from the main thread
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    emulator = Emulator(host, port, clients=clients, expires_in=expires_in,
                        certificates=certificates).start()
    try:
        print(f"Stitch emulator listening on {emulator.url}", flush=True)
        while not stop.wait(0.5):  # a timed wait keeps Ctrl-C responsive
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        if in_main and previous is not None:
            signal.signal(signal.SIGTERM, previous)
