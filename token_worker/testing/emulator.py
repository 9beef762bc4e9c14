"""A Stitch-compatible OAuth 2.0 client-credentials token endpoint for development and tests.

Stdlib only (certificate clients need PyJWT and cryptography, imported on first use).
:class:`Emulator` serves ``POST /connect/token`` with Stitch's validation rules,
a fake ``/api`` and ``/graphql`` that answer 401 to expired, revoked or foreign tokens, fault
injection, and a JSON control API under ``/_emulator/`` for tests that run it in another
process. Secrets and issued tokens are never logged: only client ids, scopes and statuses.

The parts live in ``emulator_http`` (server, handler, reply shapes), ``emulator_faults``
(fault modes), ``emulator_oauth`` (request rules), ``emulator_tokens`` (issued tokens, the
fake API), ``emulator_control`` (control API) and ``emulator_assertions`` (private_key_jwt);
this module holds the :class:`Emulator` and :func:`serve`.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from ..constants import KNOWN_SCOPES  # one list of Stitch scopes, as config check knows them
from .emulator_assertions import (
    ASSERTION_LEEWAY_SECONDS,
    ASSERTION_MAX_LIFETIME_SECONDS,
    ASSERTION_TYPE,
    AssertionChecker,
)
from .emulator_control import control_reply
from .emulator_faults import (
    FAULT_MODES,
    MAX_DELAY_SECONDS,
    NO_TOKEN,
    TOKEN_SHAPED,
    TRICKLE_PARTS,
    bend,
    bounded,
    checked_faults,
    fixed_reply,
    pick_fault,
)
from .emulator_http import (
    MAX_REQUEST_BYTES,
    TOKEN_PATH,
    Reply,
    Server,
    json_reply,
    parse_form,
)
from .emulator_oauth import MAX_EXPIRES_IN, checked_expires_in, form_error, secret_ok, wire_number
from .emulator_tokens import TokenBook

__all__ = ["ASSERTION_LEEWAY_SECONDS", "ASSERTION_MAX_LIFETIME_SECONDS", "ASSERTION_TYPE",
           "FAULT_MODES", "KNOWN_SCOPES", "MAX_DELAY_SECONDS", "MAX_EXPIRES_IN",
           "MAX_REQUEST_BYTES", "TOKEN_PATH", "TRICKLE_PARTS", "Emulator", "serve"]

log = logging.getLogger("token_worker.emulator")

class Emulator:
    """An in-process Stitch token endpoint on a real socket.

    Args:
        host: Interface to bind.
        port: Port to bind; 0 picks a free one when :meth:`start` runs.
        clients: ``client_id -> client_secret``; ``None`` is dev mode, where any client id
            with a non-empty secret is accepted.
        expires_in: Lifetime in seconds of the tokens issued, a finite number in
            (0, 604800] as for :meth:`set_expires_in`.
        audience: The audience requests must carry; ``None`` means the emulator's token URL,
            as :attr:`url` spells it or as the client addressed it (Host header).
        extra_scopes: Scopes accepted besides :data:`KNOWN_SCOPES`.
        certificates: ``client_id -> PEM`` (certificate or RSA public key) of private_key_jwt
            clients; see :meth:`add_certificate_client`.

    Raises:
        ValueError: ``expires_in`` out of range, or a PEM without an RSA key.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 clients: dict[str, str] | None = None, expires_in: int | float = 3600,
                 audience: str | None = None, extra_scopes: tuple[str, ...] = (),
                 certificates: Mapping[str, bytes | str] | None = None) -> None:
        self.host, self._port, self._audience = host, port, audience
        self._clients = dict(clients) if clients is not None else None
        self._expires_in = checked_expires_in(expires_in)
        self._scopes = frozenset(KNOWN_SCOPES) | frozenset(extra_scopes)
        # Seam for private_key_jwt: verifier(client_id, form) -> accepted.
        self.assertion_verifier: Callable[[str, dict[str, str]], bool] | None = None
        self._assertions = AssertionChecker()
        self._request = threading.local()  # the Host header the current handler saw
        self._tokens = TokenBook()
        self.issued_tokens: list[str] = self._tokens.issued  # the same list, kept current
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._rng = random.Random()  # noqa: S311 - fault dice, not cryptography
        self._server: Server | None = None
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
        self._server = Server((self.host, self._port), self)
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
        specs = checked_faults(faults)
        with self._lock:
            self._faults = specs

    def set_expires_in(self, seconds: float) -> None:
        """Set the lifetime of tokens issued from now on.

        Raises:
            ValueError: not a finite number in (0, 604800]; use a "bad_expires" fault for
                answers a client must refuse.
        """
        value = checked_expires_in(seconds)
        with self._lock:
            self._expires_in = value

    def set_latency(self, seconds: float) -> None:
        """Delay every token call by ``seconds``.

        Raises:
            ValueError: not a finite number in [0, 3600].
        """
        value = bounded("latency", seconds, 0, MAX_DELAY_SECONDS)
        with self._lock:
            self._latency = value

    def revoke(self, access_token: str) -> None:
        """Make ``/api`` refuse ``access_token`` from now on; unknown tokens are ignored."""
        self._tokens.revoke(access_token)

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
        self._assertions.register(client_id, pem)
        if self.assertion_verifier is None:
            self.assertion_verifier = self.verify_assertion

    def verify_assertion(self, client_id: str, form: dict[str, str]) -> bool:
        """Check a private_key_jwt token request as an authorization server must (RFC 7523).

        Accepted when the assertion type is jwt-bearer, the JWT is RS256-signed by the
        client's registered key, ``iss`` = ``sub`` = client id, ``aud`` is this token URL,
        ``exp``/``nbf``/``iat`` hold (30 s leeway; at most 300 s of life) and its ``jti``
        was never accepted before. The reason for a refusal is logged, never the JWT.
        """
        host = getattr(self._request, "host", "")
        audiences = [self.url] + ([f"http://{host}{TOKEN_PATH}"] if host else [])
        problem = self._assertions.problem(client_id, form, audiences)
        if problem is not None:
            log.info("client assertion refused client_id=%r: %s", client_id, problem)
        return problem is None

    # -- request handling, on server threads (see emulator_http.App) -----------------------

    def _token(self, content_type: str, body: bytes, host: str) -> Reply | None:
        raw, form, is_form = parse_form(content_type, body)
        client_id, scope = form.get("client_id", ""), " ".join(form.get("scope", "").split())
        self._request.host = host
        self._request.trickle = None
        with self._lock:
            self._calls += 1
            self._in_flight += 1
            self._concurrent_max = max(self._concurrent_max, self._in_flight)
            self._by_client.update([client_id] if client_id else [])
            self._by_scope.update([scope] if scope else [])
            latency = self._latency
            fault = pick_fault(self._faults, self._rng)
        reply: Reply | None = None
        spec = fault or {}
        mode = spec.get("mode")
        try:
            self._stopping.wait(latency)
            if mode in ("latency", "timeout"):
                self._stopping.wait(float(spec.get("seconds", 1 if mode == "latency" else 30)))
            if mode == "trickle":  # a normal answer, sent one byte every `interval` seconds
                self._request.trickle = (float(spec.get("interval", 0.05)),
                                         str(spec.get("part", "all")))
            reply = fixed_reply(spec, body)
            if reply is None and mode in TOKEN_SHAPED:
                reply = self._mint(scope, spec)
            elif reply is None and mode != "timeout":
                audiences = ({self._audience} if self._audience is not None
                             else {self.url, f"http://{host}{TOKEN_PATH}"})
                error = form_error(raw, form, is_form, client_ok=self._client_ok,
                                   scopes=self._scopes, audiences=audiences)
                reply = json_reply(400, {"error": error}) if error else self._mint(scope, spec)
        finally:
            minted = reply is not None and reply[0] == 200 and mode not in NO_TOKEN
            with self._lock:
                self._in_flight -= 1
                self._issued += minted
                self._failed += not minted
        log.info("token request client_id=%r scope=%r -> %s", client_id, scope,
                 reply[0] if reply else "dropped")
        return reply

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
        return secret_ok(self._clients, client_id, form.get("client_secret", ""))

    def _mint(self, scope: str, fault: dict[str, Any]) -> Reply:
        with self._lock:
            expires_in: Any = wire_number(self._expires_in)
        if fault.get("mode") == "bad_expires":
            expires_in = fault.get("value", 0)
        payload = self._tokens.mint(scope, expires_in, fault.get("mode"))
        return json_reply(200, bend(payload, scope, fault))

    def _api(self, authorization: str) -> Reply:
        return self._tokens.api_reply(authorization)

    def _control(self, method: str, path: str, body: bytes) -> Reply:
        return control_reply(self, method, path, body)


def serve(host: str, port: int, *, clients: dict[str, str] | None, expires_in: float,
          certificates: Mapping[str, bytes | str] | None = None) -> None:
    """Run an emulator in the foreground until Ctrl-C or SIGTERM, then shut down cleanly.

    Args:
        host: Interface to bind.
        port: Port to bind; 0 picks a free one (the printed line says which).
        clients: ``client_id -> client_secret``, or ``None`` for dev mode.
        expires_in: Lifetime in seconds of the tokens issued.
        certificates: ``client_id -> PEM`` of private_key_jwt clients.

    Raises:
        ValueError: ``expires_in`` out of range, or a PEM without an RSA key.
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
