"""Zero leaks, proven (issue 5, item 5).

One real fleet (a ``token-worker worker`` process: Celery worker with embedded beat,
at DEBUG with JSON logs), a private redis-server as token store (db 0), broker (db 1)
and result backend (db 2), and the emulator with one secret client and one certificate
(private_key_jwt) client whose certificate is generated here. The run goes through
several short-lived refreshes, every endpoint failure mode (including ``echo``, a 500
page reflecting the request body: secret or client assertion), forced refreshes through
the workers, every CLI command (text and JSON logs, DEBUG), the ops scripts, the metrics
sidecar and the worker's /metrics, a reader process that reports a revoked token (401),
and exceptions raised in this process.

A ``redis-cli MONITOR`` runs for the whole time, so every command any process sends to
Redis is on record: Celery messages (and their base64 bodies, decoded here), locks,
status writes, publishes. At the end stdout, stderr, worker logs, every file the run
left behind, the MONITOR record, exception texts and reprs, and a dump of every Redis
database (taken at several points) are searched for the client secret (and its base64
forms), the private key (every PEM line, the whole body, its numbers), every client
assertion the emulator received and every token it issued, plus patterns that match any
emulator token, any JWT and any PEM private key. The only allowed hit: an issued token
in the value of ``stitch:token:<profile>`` (db 0) in the dump, and in the MONITOR lines
that write that value (the publish script and its SET). With encryption at rest on, not
even there.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shlex
import signal
import subprocess
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests import pki
from tests.support import CLIENT_ID, REPO, SECRET, RedisServer, free_port, wait_until
from token_worker import ConfigError, TokenReader, TokenRequestError, TokenUnavailable
from token_worker.client import TokenClient
from token_worker.config import credential_problems, load_config
from token_worker.credentials import load_certificate
from token_worker.crypto import AesGcmCodec, generate_key, parse_keys
from token_worker.dispatch import send_refresh
from token_worker.testing import spawn_worker, write_config
from token_worker.testing.emulator import Emulator
from token_worker.tokens import fingerprint

from .conftest import Fleet, Worker, subprocess_env

pytestmark = pytest.mark.integration

CERT_CLIENT_ID = "test-9b2e"
PREFIX = "stitch"
PROFILES = {"payments": ("main", "client_paymentrequest"),
            "disbursements": ("certified", "client_disbursement")}
TOKEN_KEYS = frozenset(f"{PREFIX}:token:{p}" for p in PROFILES)
ENC_ENV = "TW_ZERO_LEAKS_KEYS"


# -- the search ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Needle:
    kind: str  # "client secret", "private key", "client assertion", "token", ...
    text: str

    @property
    def label(self) -> str:
        # failure messages are output too: name the needle by a hash, never by itself
        return f"{self.kind} #{hashlib.sha256(self.text.encode()).hexdigest()[:8]}"


# catch-alls: any emulator token (any emulator process), any JWT, any PEM private key
PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("token", re.compile(r"emu_[A-Za-z0-9_-]{20,}")),
    ("client assertion", re.compile(
        r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")),
    ("private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
]


@dataclass(frozen=True)
class Source:
    name: str
    text: str
    kind: str = "text"  # "text", "dump" (RedisServer.dump_all) or "monitor" (MONITOR)


@dataclass(frozen=True)
class Hit:
    source: str
    line_no: int
    what: str
    line: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line_no}: {self.what}: {self.line}"


def b64_fragments(data: bytes) -> list[str]:
    """Substrings any base64 (standard or urlsafe) encoding of a text holding ``data`` has."""
    out = []
    for offset in range(3):
        enc = base64.b64encode(b"\0" * offset + data).decode()
        first, last = (offset + 2) // 3, (offset + len(data)) // 3
        fragment = enc[4 * first:4 * last]
        if len(fragment) >= 16:
            out += [fragment, fragment.replace("+", "-").replace("/", "_")]
    return sorted(set(out))


def secret_needles(secret: str, client_id: str) -> list[Needle]:
    needles = [Needle("client secret", secret)]
    for raw in (secret.encode(), f"{client_id}:{secret}".encode()):  # raw, and Basic auth
        needles += [Needle("client secret (base64)", f) for f in b64_fragments(raw)]
    return needles


def key_needles(key: rsa.RSAPrivateKey) -> list[Needle]:
    lines = pki.key_pem(key).decode().splitlines()[1:-1]
    numbers = key.private_numbers()
    texts = [line for line in lines if len(line) >= 16] + ["".join(lines)]
    texts += [str(numbers.d), str(numbers.p), str(numbers.q), format(numbers.d, "x")[:40]]
    return [Needle("private key", t) for t in texts]


def assertion_needles(assertions: Iterable[str]) -> list[Needle]:
    needles = []
    for jwt in set(assertions):
        needles.append(Needle("client assertion", jwt))
        needles.append(Needle("client assertion signature", jwt.rsplit(".", 1)[-1]))
    return needles


def token_needles(tokens: Iterable[str]) -> list[Needle]:
    return [Needle("token", t) for t in set(tokens)]


def _monitor_allows(line: str, needle: str) -> bool:
    """A MONITOR line writing ``needle`` as the value of a token key in db 0."""
    m = re.match(r"^\d+\.\d+ \[(\d+) [^\]]+\] (.*)$", line)
    if m is None or m[1] != "0":
        return False
    try:
        args = shlex.split(m[2])
    except ValueError:
        return False
    if not args:
        return False
    cmd = args[0].lower()
    if cmd == "set" and len(args) >= 3:
        return args[1] in TOKEN_KEYS and needle in args[2] and all(
            needle not in a for a in args[:2] + args[3:])
    if cmd in ("evalsha", "eval") and len(args) >= 4 and args[2].isdigit():
        nkeys = int(args[2])
        keys, argv = args[3:3 + nkeys], args[3 + nkeys:]
        # the publish script: KEYS[1] the token key, ARGV[1] the value
        return bool(keys) and keys[0] in TOKEN_KEYS and bool(argv) and needle in argv[0] \
            and all(needle not in a for a in args[:3 + nkeys] + argv[1:])
    return False


def _dump_allows(line: str, needle: str) -> bool:
    """A dump line of a token key in db 0 (``RedisServer.dump_all``: db, key, value)."""
    return any(line.startswith(f"0 {key.encode()!r} ") for key in TOKEN_KEYS) \
        and needle not in line.split(" ", 2)[1]


def _line_at(text: str, pos: int) -> tuple[int, str]:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text.count("\n", 0, pos) + 1, text[start:end if end != -1 else len(text)]


def find_leaks(sources: Iterable[Source], needles: Iterable[Needle], *,
               allow_published_tokens: bool) -> list[Hit]:
    """Every place a needle (or a catch-all pattern) occurs, except the allowed ones."""
    needles = list(needles)
    hits: list[Hit] = []

    def check(source: Source, pos: int, found: str, kind: str, what: str) -> None:
        line_no, line = _line_at(source.text, pos)
        if kind == "token" and allow_published_tokens and (
                (source.kind == "dump" and _dump_allows(line, found))
                or (source.kind == "monitor" and _monitor_allows(line, found))):
            return
        shown = line
        for n in needles:
            shown = shown.replace(n.text, f"<{n.kind}>")
        for _, pattern in PATTERNS:
            shown = pattern.sub("<match>", shown)
        hits.append(Hit(source.name, line_no, what, shown[:240]))

    for source in sources:
        for needle in needles:
            pos = source.text.find(needle.text)
            while pos != -1:
                check(source, pos, needle.text, needle.kind, needle.label)
                pos = source.text.find(needle.text, pos + 1)
        for kind, pattern in PATTERNS:
            for m in pattern.finditer(source.text):
                check(source, m.start(), m[0], kind, f"{kind} (pattern)")
    return hits


def celery_bodies(text: str) -> list[str]:
    """Kombu's Redis transport stores message bodies base64-encoded: decode every one."""
    out = []
    for m in re.finditer(r'body\\*"\s*:\s*\\*"([A-Za-z0-9+/=]{4,})', text):
        with contextlib.suppress(ValueError):
            out.append(base64.b64decode(m[1]).decode("utf-8", "replace"))
    return out


# -- the run ------------------------------------------------------------------------------

@dataclass
class Stack:
    """A private Redis under MONITOR, a recording emulator, and the fleet harness."""

    tmp: Path
    redis: RedisServer
    emulator: Emulator
    fleet: Fleet
    monitor: subprocess.Popen[bytes]
    monitor_path: Path
    cert_path: Path
    cert_pem: bytes
    key: rsa.RSAPrivateKey
    assertions: list[str] = field(default_factory=list)  # every one the emulator received
    verified: list[str] = field(default_factory=list)  # those its verifier checked
    secrets_received: list[str] = field(default_factory=list)
    extra_tokens: list[str] = field(default_factory=list)  # from the emulator command
    extra_needles: list[Needle] = field(default_factory=list)
    dumps: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # exception texts, reprs, scrapes

    def config(self, *, metrics_port: int = 0,
               extra_redis: dict[str, str] | None = None) -> Path:
        url = self.redis.url
        return write_config(
            self.tmp / "token_worker.toml", redis_url=url, token_url=self.emulator.url,
            prefix=PREFIX, redis=extra_redis, broker_url=f"{url[:-1]}1", queue="tokens",
            timeout=3, margin=600, interval=1, retries=1,
            sections={"metrics": {"port": metrics_port}},
            clients={"main": {"client_id": CLIENT_ID,
                              "client_secret_env": "STITCH_CLIENT_SECRET"},
                     "certified": {"client_id": CERT_CLIENT_ID,
                                   "certificate_file": str(self.cert_path)}},
            profiles={profile: {"client": client, "scopes": [scope]}
                      for profile, (client, scope) in PROFILES.items()})

    def env(self, **extra: str) -> dict[str, str]:
        # the result backend: celeryconfig.py sets none, Celery's own variable overrides
        # that; tasks ignore results, so db 2 must stay empty (asserted)
        return {"CELERY_RESULT_BACKEND": f"{self.redis.url[:-1]}2", **extra}

    def start_worker(self, config: Path, **env: str) -> Worker:
        """``token-worker worker`` (Celery worker + embedded beat) at DEBUG, JSON logs."""
        name = f"zl{len(self.fleet.workers)}"
        cmd = [sys.executable, "-m", "token_worker", "--config", str(config),
               "--log-level", "DEBUG", "--log-format", "json", "worker", "-c", "1",
               "--hostname", f"{name}@%h"]  # mingle, gossip, heartbeats on: as deployed
        worker = spawn_worker(cmd, name=name, workdir=self.tmp,
                              env=subprocess_env(**self.env(**env)))
        self.fleet.workers.append(worker)
        worker.wait_ready(60)
        return worker

    def cli(self, config: Path, *args: str, codes: tuple[int, ...] = (0,),
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = self.fleet.cli(config, *args, env=self.env(**(env or {})))
        assert result.returncode in codes, (args, result.returncode, result.stdout,
                                            result.stderr)
        return result

    def bad_configs(self, good: str) -> dict[str, Path]:
        """Broken variants of ``good``; most hold a credential in the file itself."""
        line = 'client_secret_env = "STITCH_CLIENT_SECRET"'
        other = pki.rsa_key()
        mismatched = pki.write(self.tmp / "secrets" / "mismatched.pem", pki.key_pem(self.key),
                               pki.cert_pem(pki.certificate(other)))
        pem = pki.key_pem(self.key).decode()
        keys = generate_key("pasted")
        self.extra_needles.append(Needle("encryption key", keys.split(":", 1)[1]))
        variants = {
            "inline-secret": good.replace(line, f'client_secret = "{SECRET}"'),
            "broken-toml": good.replace(line, f"client_secret_env = {SECRET}"),
            # credentials pasted where their variable name or file path belongs
            "secret-as-env-name": good.replace(line, f'client_secret_env = "{SECRET}"'),
            "pem-as-certificate-file": good.replace(f'"{self.cert_path}"', f"'''{pem}'''"),
            "keys-as-env-name": good.replace(
                "[celery]", f'encryption_keys_env = "{keys}"\n\n[celery]'),
            "missing-secret-file": good.replace(
                line, f'client_secret_file = "{self.tmp}/no-such-secret"'),
            "mismatched-certificate": good.replace(str(self.cert_path), str(mismatched)),
        }
        out = {}
        (self.tmp / "bad").mkdir(exist_ok=True)
        for name, text in variants.items():
            assert text != good, name
            out[name] = self.tmp / "bad" / f"{name}.toml"
            out[name].write_text(text)
        return out

    def dump(self) -> None:
        self.dumps.append(self.redis.dump_all())

    def stop_monitor(self) -> str:
        time.sleep(0.3)  # the last commands reach the monitor
        if self.monitor.poll() is None:
            self.monitor.send_signal(signal.SIGINT)
            try:
                self.monitor.wait(5)
            except subprocess.TimeoutExpired:
                self.monitor.kill()
                self.monitor.wait(5)
        return self.monitor_path.read_text(errors="replace")

    def files_left(self) -> list[Source]:
        """Every file the run wrote (logs, schedules, metrics files), inputs aside."""
        out = []
        for path in sorted(self.tmp.rglob("*")):
            if path.is_file() and path.suffix not in (".toml", ".pem") and \
                    path != self.monitor_path:
                out.append(Source(f"file {path.relative_to(self.tmp)}",
                                  path.read_bytes().decode("latin-1")))
        return out


@contextlib.contextmanager
def stack(tmp_path: Path, *, expires_in: float) -> Iterator[Stack]:
    key = pki.rsa_key()
    cert = pki.certificate(key, "token-worker zero-leaks client", client=True)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    cert_path = pki.write(secrets_dir / "stitch-cert.pem", pki.key_pem(key), pki.cert_pem(cert))
    server = RedisServer().start()
    emulator = Emulator(clients={CLIENT_ID: SECRET}, expires_in=expires_in,
                        certificates={CERT_CLIENT_ID: pki.cert_pem(cert)})
    monitor_path = tmp_path / "monitor.txt"
    with monitor_path.open("wb") as out:
        monitor = subprocess.Popen(["redis-cli", "-p", str(server.port), "monitor"],
                                   stdout=out, stderr=subprocess.STDOUT)
    assert wait_until(lambda: "OK" in monitor_path.read_text(), 10), "MONITOR did not start"
    s = Stack(tmp_path, server, emulator, Fleet(tmp_path, server, emulator), monitor,
              monitor_path, cert_path, pki.cert_pem(cert), key)

    # record, without changing what the emulator does: every token request body, and
    # every assertion the verifier checks
    token_handler = emulator._token

    def recording(content_type: str, body: bytes, host: str) -> Any:
        form = parse_qs(body.decode("utf-8", "replace"))
        s.assertions.extend(form.get("client_assertion", []))
        s.secrets_received.extend(form.get("client_secret", []))
        return token_handler(content_type, body, host)

    emulator._token = recording  # type: ignore[method-assign]
    verify = emulator.assertion_verifier
    assert verify is not None

    def verifying(client_id: str, form: dict[str, str]) -> bool:
        s.verified.append(form.get("client_assertion", ""))
        return verify(client_id, form)

    emulator.assertion_verifier = verifying
    emulator.start()
    try:
        yield s
    finally:
        s.fleet.shutdown()
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait(5)
        emulator.stop()
        server.stop()


def refreshed(worker: Worker, profile: str) -> int:
    return worker.log().count(f"refresh profile={profile} outcome=refreshed")


def exception_text(exc: BaseException) -> str:
    """Everything an exception shows: str, repr, args, and a full (chained) traceback."""
    return "\n".join([str(exc), repr(exc), repr(exc.args),
                      "".join(traceback.format_exception(exc))])


def raised(func: Callable[[], object], *kinds: type[BaseException]) -> BaseException:
    try:
        func()
    except kinds as exc:
        return exc
    raise AssertionError(f"{func} raised nothing")


def post(url: str, data: dict[str, Any]) -> None:
    requests.post(url, json=data, timeout=5).raise_for_status()


def scrape(url: str, timeout: float = 15) -> str:
    def get() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                return str(response.read().decode())
        except OSError:
            return None

    text = wait_until(get, timeout, 0.1)
    assert text, f"nothing served on {url}"
    return str(text)


def popen(stack_: Stack, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
    out = (stack_.tmp / f"{name}.out").open("wb")
    try:
        return subprocess.Popen([sys.executable, "-m", "token_worker", *args], cwd=stack_.tmp,
                                stdout=out, stderr=subprocess.STDOUT,
                                env=subprocess_env(**stack_.env(**env)))
    finally:
        out.close()


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


# A task process on a host with no credential: reads, calls the API, reports a 401.
READER = r"""
import json, logging, sys
import requests
from token_worker import TokenReader, TokenUnavailable

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
config, api = sys.argv[1], sys.argv[2]
reader = TokenReader.from_config(config, min_ttl=1.0)

def say(**fields):
    print(json.dumps(fields), flush=True)

for profile in ("payments", "disbursements"):
    token = reader.get(profile, wait=20)
    say(step="got", profile=profile, fingerprint=token.fingerprint, token=repr(token))
    sys.stdin.readline()  # the test revokes this token at the emulator
    # the token in hand (reader.auth would read the current one, maybe already newer)
    first = requests.post(api, headers={"Authorization": f"Bearer {token.access_token}"},
                          timeout=5)
    reported = reader.report_rejected(profile, token) if first.status_code == 401 else None
    try:
        reader.get(profile)
        error = None
    except TokenUnavailable as exc:
        error = f"{exc} {exc!r}"
    fresh = reader.get(profile, wait=20)
    session = requests.Session()
    session.auth = reader.auth(profile)
    second = session.post(api, timeout=5)
    say(step="done", profile=profile, first=first.status_code, reported=reported,
        error=error, fresh=fresh.fingerprint, second=second.status_code,
        bodies=[first.text, second.text], auth=repr(session.auth), reader=repr(reader))
try:
    reader.get("no-such-profile")
except TokenUnavailable as exc:
    say(step="unknown", error=f"{exc} {exc!r}")
reader.close()
"""


def run_reader(s: Stack, config: Path) -> str:
    env = subprocess_env(**s.env())
    env.pop("STITCH_CLIENT_SECRET", None)  # a reader host holds no credential
    err = (s.tmp / "reader.err").open("wb")
    proc = subprocess.Popen([sys.executable, "-c", READER, str(config), s.emulator.base_url
                             + "/api"], cwd=s.tmp, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    err.close()
    assert proc.stdin is not None and proc.stdout is not None
    lines: list[str] = []
    try:
        for profile in PROFILES:
            lines.append(proc.stdout.readline())
            got = json.loads(lines[-1])
            assert got["step"] == "got" and got["profile"] == profile, lines
            token = next(t for t in s.emulator.issued_tokens
                         if fingerprint(t) == got["fingerprint"])
            s.emulator.revoke(token)
            proc.stdin.write("\n")
            proc.stdin.flush()
            lines.append(proc.stdout.readline())
            done = json.loads(lines[-1])
            assert done["first"] == 401 and done["reported"] is True, done
            assert done["second"] == 200 and done["fresh"] != got["fingerprint"], done
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, (lines, (s.tmp / "reader.err").read_text()[-2000:])
    assert '"step": "unknown"' in rest
    return "".join(lines) + rest


def check_config(path: Path) -> None:
    """What ``config check`` does: load, then read every credential."""
    problems = credential_problems(load_config(path))
    if problems:
        raise ConfigError(problems)


def in_process_exceptions(s: Stack, config_path: Path, emulator_url: str,
                          monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """TokenRequestError, TokenUnavailable, ConfigError raised here, each kind for real."""
    config = load_config(config_path)
    errors: list[BaseException] = []

    # the endpoint failing in every way, for both clients, against an emulator nobody
    # else talks to (the emulator command's); every request body is recorded for needles
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: record_body(s, r.request.body))
    endpoint = TokenClient(emulator_url, session=session)
    control = emulator_url.rsplit("/connect/token", 1)[0] + "/_emulator/faults"
    try:
        for client in ("main", "certified"):
            issued = endpoint.request_token(config.clients[client], ["client_refund"])
            s.texts.append(f"{issued!r} {issued}")
            s.extra_tokens.append(issued.access_token)
        for spec in ({"mode": "echo"}, {"mode": "http_error", "status": 503},
                     {"mode": "oauth_error", "error": "invalid_client"},
                     {"mode": "malformed_json"}, {"mode": "html"}, {"mode": "unauthorized"}):
            post(control, {"faults": [spec]})
            for client in ("main", "certified"):
                errors.append(raised(partial(endpoint.request_token, config.clients[client],
                                             ["client_refund"]), TokenRequestError))
        # the echo fault really reflects the credential, so a clean result means something
        post(control, {"faults": [{"mode": "echo"}]})
        echoed = requests.post(emulator_url, data={"client_secret": SECRET}, timeout=5).text
        assert SECRET in echoed
        post(control, {"faults": []})
        s.texts.append(repr(endpoint))
    finally:
        endpoint.close()

    # readers: unknown profile, nothing published, a token reported rejected
    reader = TokenReader.from_config(str(config_path), min_ttl=0.5, cache=False)
    try:
        errors.append(raised(partial(reader.get, "no-such-profile"), TokenUnavailable))
        token = reader.get("payments", wait=15)
        s.texts.append(f"{token!r} {token} {reader!r} {reader.auth('payments')!r}")
        reader.report_rejected("payments", token)
        with contextlib.suppress(TokenUnavailable):
            reader.get("payments")  # replaced already, or refused as rejected
        bare = TokenReader(s.redis.url, "elsewhere", min_ttl=0.5)
        errors.append(raised(partial(bare.get, "payments", wait=0.2), TokenUnavailable))
        bare.close()
    finally:
        reader.close()

    # configs: credential missing, a secret pasted inline, TOML broken on the secret's
    # line, no secret file, a certificate that is not the key's, a wrong-size encryption key
    with monkeypatch.context() as m:
        m.delenv("STITCH_CLIENT_SECRET")
        errors.append(raised(partial(check_config, config_path), ConfigError))
    for bad in s.bad_configs(config_path.read_text()).values():
        errors.append(raised(partial(check_config, bad), ConfigError))
    errors.append(raised(partial(load_certificate, str(s.tmp / "secrets" / "mismatched.pem")),
                         ConfigError))
    wrong_size = "k1:" + base64.b64encode(s.key.private_numbers().d.to_bytes(256, "big")[:33])\
        .decode()
    s.extra_needles.append(Needle("encryption key", wrong_size[3:]))
    errors.append(raised(partial(parse_keys, wrong_size), ConfigError))
    secret = config.clients["main"].read_secret()
    s.texts.append(f"{config!r} {config} {config.clients!r} {secret!r} {secret} "
                   f"{load_certificate(str(s.cert_path))!r}")
    return errors


def record_body(s: Stack, body: Any) -> None:
    text = body.decode() if isinstance(body, bytes) else str(body or "")
    form = parse_qs(text)
    s.assertions.extend(form.get("client_assertion", []))
    s.secrets_received.extend(form.get("client_secret", []))


# -- the tests ----------------------------------------------------------------------------

def test_search_finds_planted_leaks_and_allows_only_the_published_value() -> None:
    """The search can fail: each planted leak is found; only the by-design copies pass."""
    token = "emu_" + "Q7x" * 14
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ0ZXN0In0." + "c2ln" * 20
    key = pki.rsa_key()
    pem_line = pki.key_pem(key).decode().splitlines()[5]
    needles = (secret_needles(SECRET, CLIENT_ID) + key_needles(key) + assertion_needles([jwt])
               + token_needles([token]))
    value = json.dumps({"access_token": token}, separators=(",", ":"))
    allowed = [
        Source("dump", f"0 b'stitch:token:payments' {value.encode()!r}", "dump"),
        Source("monitor SET", '1.0 [0 lua] "SET" "stitch:token:payments" '
               + json.dumps(value) + ' "PX" "5000"', "monitor"),
        Source("monitor EVALSHA", '1.0 [0 127.0.0.1:1] "evalsha" "ab12" "2" '
               '"stitch:token:payments" "stitch:schedule" ' + json.dumps(value)
               + ' "1" "payments"', "monitor"),
    ]
    assert find_leaks(allowed, needles, allow_published_tokens=True) == []
    # with encryption at rest even those are leaks
    hits = find_leaks(allowed, needles, allow_published_tokens=False)
    assert {h.source for h in hits} == {"dump", "monitor SET", "monitor EVALSHA"}
    body = base64.b64encode(json.dumps([["payments"], {"s": SECRET}]).encode()).decode()
    planted = [
        Source("worker log", f"[INFO] refresh ok token={token}"),
        Source("json log", json.dumps({"message": "published", "token": token})),
        Source("dump: a status hash", f"0 b'stitch:status:payments' {value.encode()!r}",
               "dump"),
        Source("dump: a token key in the broker db", f"1 b'stitch:token:payments' "
               f"{value.encode()!r}", "dump"),
        Source("monitor: not a SET", '1.0 [0 127.0.0.1:1] "hset" "stitch:token:payments" "x" '
               + json.dumps(value), "monitor"),
        Source("monitor: base64 message body", '1.0 [1 127.0.0.1:1] "lpush" "tokens" '
               '"{\\"body\\": \\"' + body + '\\"}"', "monitor"),
        Source("echoed error page", f"HTTP 500: <pre>client_secret={SECRET}</pre>"),
        Source("assertion", f"client_assertion={jwt}"),
        Source("assertion signature only", f"sig={jwt.rsplit('.', 1)[1]}"),
        Source("pem line", f"key line {pem_line}"),
        Source("pem header", "-----BEGIN PRIVATE KEY-----"),
        Source("basic auth", "Authorization: Basic "
               + base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()),
    ]
    hits = find_leaks(planted, needles, allow_published_tokens=True)
    assert {h.source for h in hits} == {p.name for p in planted}
    assert all(token not in str(h) and SECRET not in str(h) for h in hits)  # reports redact
    assert find_leaks([Source("bodies", "\n".join(celery_bodies(planted[5].text)))],
                      needles, allow_published_tokens=True)


def test_zero_leaks_through_workers_cli_reader_and_failures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    for var in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("STITCH_CLIENT_SECRET", SECRET)
    with stack(tmp_path, expires_in=6) as s:
        metrics_port = free_port()
        config = s.config(metrics_port=metrics_port)
        (tmp_path / "prometheus").mkdir()
        worker = s.start_worker(config, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"))
        rds = s.redis.client()
        assert wait_until(lambda: all(rds.exists(k) for k in TOKEN_KEYS), 30), worker.log()

        # -- failures, through the workers: each mode for both clients ---------------------
        for spec, shown in (({"mode": "echo"}, "HTTP 500 server_error"),
                            ({"mode": "http_error", "status": 503}, "HTTP 503 server_error"),
                            ({"mode": "oauth_error", "error": "invalid_client"},
                             "HTTP 400 invalid_client"),
                            ({"mode": "malformed_json"}, "content-type application/json"),
                            ({"mode": "html"}, "content-type text/html")):
            s.emulator.set_faults([spec])
            sec, usec = rds.time()
            since = sec + usec / 1e6
            send_refresh(load_config(config), list(PROFILES), force=True, requested_at=since)

            def failed(since: float = since, shown: str = shown) -> bool:
                return all(
                    float(st.get("last_attempt_at") or 0) >= since
                    and shown in (st.get("last_error") or "")
                    for st in (rds.hgetall(f"{PREFIX}:status:{p}") for p in PROFILES))

            assert wait_until(failed, 15), (spec, [rds.hgetall(f"{PREFIX}:status:{p}")
                                                   for p in PROFILES])
        s.dump()
        s.emulator.set_faults([])
        result = s.cli(config, "refresh", "--all", "--force", "--wait", "20")
        assert result.stdout.count(": published") == 2, result.stdout

        # -- every CLI command, DEBUG, text and JSON logs ----------------------------------
        for fmt in ("text", "json"):
            common = ("--log-level", "DEBUG", "--log-format", fmt)
            status = s.cli(config, *common, "status", "--json")
            rows = json.loads(status.stdout)
            assert all(re.fullmatch(r"[0-9a-f]{12}", r["fingerprint"] or "0" * 12)
                       for r in rows), rows
            s.cli(config, *common, "status")
            s.cli(config, *common, "check", codes=(0, 1))
            s.cli(config, *common, "check", "--min-ttl", "1", codes=(0, 1))
            s.cli(config, *common, "config", "check")
            s.cli(config, *common, "refresh", "--all", "--local", "--force")
            s.cli(config, *common, "refresh", "--all", "--local")
            s.cli(config, *common, "refresh", "--all", "--force", "--wait", "20")
            s.cli(config, *common, "refresh", "payments")
            s.cli(config, *common, "purge", "payments", "--yes")
            s.cli(config, *common, "check", codes=(0, 1))
            # a reader host: no credential at all
            s.cli(config, *common, "status", "--json", env={"STITCH_CLIENT_SECRET": ""})
            s.cli(config, *common, "check", codes=(0, 1), env={"STITCH_CLIENT_SECRET": ""})
            # and the endpoint echoing the request into its error page
            s.emulator.set_faults([{"mode": "echo"}])
            s.cli(config, *common, "refresh", "--all", "--local", "--force", codes=(1,))
            s.emulator.set_faults([])
        for args, codes in ((("keygen",), (0,)), (("keygen", "--kid", "zl.1"), (0,)),
                            (("--help",), (0,)), (("--version",), (0,)),
                            (("emulator", "--help"), (0,)), (("worker", "--help"), (0,)),
                            (("demo", "--help"), (0,)), (("metrics", "--help"), (0,)),
                            (("refresh",), (2,)), (("refresh", "nope"), (2,)),
                            (("purge", "nope", "--yes"), (2,)),
                            (("config", "check"), (2,))):
            env = {"STITCH_CLIENT_SECRET": ""} if args == ("config", "check") else {}
            s.cli(config, "--log-level", "DEBUG", *args, codes=codes, env=env)
        for name, bad in s.bad_configs(config.read_text()).items():
            result = s.cli(bad, "--log-level", "DEBUG", "config", "check", codes=(2,))
            assert "invalid config" in result.stderr, (name, result.stderr)
        # the ops scripts wrap the CLI
        ops_env = subprocess_env(**s.env(TOKEN_WORKER_BIN=f"{sys.executable} -m token_worker"))
        for script in (["ops/check", "--min-ttl", "1"],
                       ["ops/force-refresh", "--wait", "20", "--all"]):
            ops = subprocess.run([str(REPO / script[0]), *script[1:], "--config", str(config)],
                                 capture_output=True, text=True, env=ops_env, timeout=60,
                                 cwd=tmp_path)
            assert ops.returncode in (0, 1), ops.stderr
            s.fleet.outputs.append(ops.stdout + ops.stderr)

        # metrics: the sidecar and the worker's own endpoint; status --watch
        port = free_port()
        sidecar = popen(s, "metrics-sidecar", ["--config", str(config), "--log-level", "DEBUG",
                                               "metrics", "--port", str(port)])
        watch = popen(s, "status-watch", ["--config", str(config), "status", "--watch"])
        try:
            scraped = scrape(f"http://127.0.0.1:{port}/metrics")
            assert "token_worker_token_expires_in_seconds" in scraped
            s.texts += [scraped, scrape(f"http://127.0.0.1:{metrics_port}/metrics")]
            time.sleep(0.5)
        finally:
            assert stop(sidecar) == 0
            stop(watch, signal.SIGINT)
        s.dump()

        # -- the emulator command, and exceptions raised in this process -------------------
        emu_port = free_port()
        cert_only = s.tmp / "secrets" / "cert-only.pem"
        cert_only.write_bytes(s.cert_pem)
        emu = popen(s, "emulator-cli", ["--log-level", "DEBUG", "--log-format", "json",
                                        "emulator", "--port", str(emu_port), "--client",
                                        f"{CLIENT_ID}=STITCH_CLIENT_SECRET", "--certificate",
                                        f"{CERT_CLIENT_ID}={cert_only}"])
        try:
            emu_url = f"http://127.0.0.1:{emu_port}/connect/token"
            scrape(f"http://127.0.0.1:{emu_port}/_emulator/stats")
            errors = in_process_exceptions(s, config, emu_url, monkeypatch)
        finally:
            assert stop(emu) == 0
        kinds = {type(e) for e in errors}
        assert {TokenRequestError, TokenUnavailable, ConfigError} <= kinds, kinds
        assert {e.reason for e in errors if isinstance(e, TokenUnavailable)} >= {
            "unknown_profile", "never_fetched"}
        s.texts += [exception_text(e) for e in errors]

        # -- a reader process reporting a revoked token -------------------------------------
        reader_out = run_reader(s, config)
        time.sleep(1.0)  # the listener's refresh after the last report lands in the log
        s.dump()
        s.fleet.shutdown()
        s.dump()
        monitor = s.stop_monitor()

        # -- the search ---------------------------------------------------------------------
        for profile in PROFILES:
            assert refreshed(worker, profile) >= 4, worker.log()[-3000:]
        log = worker.log()
        for code in ("error=server_error", "error=invalid_client", "error=malformed_response"):
            assert code in log, code
        assert "(token rejected fingerprint=" in log  # the 401 reports reached the worker
        assert f"results:     {s.redis.url[:-1]}2" in log  # the worker had a result backend
        assert s.redis.client(db=2).dbsize() == 0  # ... and nothing was ever stored there
        assert s.secrets_received and set(s.secrets_received) == {SECRET}
        assert len(s.verified) >= 4 and set(s.verified) <= set(s.assertions)
        assert len(s.emulator.issued_tokens) >= 12
        bodies = celery_bodies(monitor)
        assert sum('"payments"' in b for b in bodies) >= 8, bodies[:5]  # messages captured
        assert any('"force": true' in b for b in bodies)
        assert any('"evalsha"' in line.lower() and f'"{PREFIX}:token:payments"' in line
                   for line in monitor.splitlines())  # the publishes were recorded

        tokens = [*s.emulator.issued_tokens, *s.extra_tokens]
        needles = (secret_needles(SECRET, CLIENT_ID) + key_needles(s.key)
                   + assertion_needles(s.assertions) + token_needles(tokens) + s.extra_needles)
        sources = [
            *(Source(f"cli output #{i}", out) for i, out in enumerate(s.fleet.outputs)),
            *s.files_left(),  # worker log, sidecar/watch/emulator output, metrics files
            Source("reader process stdout", reader_out),
            Source("MONITOR", monitor, "monitor"),
            Source("celery message bodies", "\n".join(bodies)),
            *(Source(f"redis dump #{i}", d, "dump") for i, d in enumerate(s.dumps)),
            Source("exceptions, reprs, scrapes", "\n".join(s.texts)),
        ]
        # the published tokens are where they should be (so the allowance is exercised)
        assert any(t in s.dumps[-1] for t in s.emulator.issued_tokens)
        hits = find_leaks(sources, needles, allow_published_tokens=True)
        assert not hits, "leaks:\n" + "\n".join(map(str, hits[:40]))
        # and the search is live: a token planted in a log line is found
        planted = Source("planted", f"INFO token={s.emulator.issued_tokens[-1]}")
        assert len(find_leaks([planted, *sources], needles,
                              allow_published_tokens=True)) >= 2  # literal + pattern
        s.fleet.assert_no_leaks()
    print(f"\nzero leaks: {len(needles)} needles ({len(set(s.assertions))} assertions, "
          f"{len(tokens)} tokens) over {sum(len(x.text) for x in sources) // 1024} KiB in "
          f"{len(sources)} sources ({len(monitor.splitlines())} MONITOR lines, {len(bodies)} "
          f"Celery message bodies, {len(s.dumps)} dumps), {time.monotonic() - started:.1f}s")


def test_encryption_at_rest_leaves_no_token_in_redis_or_its_traffic(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    keys = f"{generate_key('zl2')},{generate_key('zl1')}"  # the first one encrypts
    monkeypatch.setenv("STITCH_CLIENT_SECRET", SECRET)
    monkeypatch.setenv(ENC_ENV, keys)
    with stack(tmp_path, expires_in=4) as s:
        config = s.config(extra_redis={"encryption_keys_env": ENC_ENV})
        worker = s.start_worker(config, **{ENC_ENV: keys})
        assert wait_until(lambda: all(refreshed(worker, p) >= 2 for p in PROFILES), 30), \
            worker.log()[-3000:]
        s.cli(config, "--log-level", "DEBUG", "refresh", "--all", "--local", "--force",
              env={ENC_ENV: keys})
        s.cli(config, "--log-level", "DEBUG", "--log-format", "json", "refresh", "--all",
              "--force", "--wait", "15", env={ENC_ENV: keys})
        s.cli(config, "status", "--json", env={ENC_ENV: keys})
        reader = TokenReader.from_config(str(config), min_ttl=0.5)
        token = reader.get("disbursements", wait=10)
        reader.report_rejected("disbursements", token)
        reader.get("disbursements", wait=10)
        reader.close()
        no_keys = TokenReader(s.redis.url, PREFIX, min_ttl=0.5, cache=False)
        error = raised(lambda: no_keys.get("payments"), TokenUnavailable)
        no_keys.close()
        assert isinstance(error, TokenUnavailable) and error.reason == "encrypted"
        s.texts += [exception_text(error), repr(AesGcmCodec(parse_keys(keys))), repr(token)]
        s.dump()
        s.fleet.shutdown()
        s.dump()
        monitor = s.stop_monitor()

        for key in TOKEN_KEYS:  # what the dump holds is ciphertext
            assert re.search(rf"^0 b'{key}' b'enc:v1:zl2:", s.dumps[0], re.M), s.dumps[0]
        assert any(f'"{PREFIX}:token:' in line and "enc:v1:zl2:" in line
                   for line in monitor.splitlines() if '"evalsha"' in line.lower())
        needles = (secret_needles(SECRET, CLIENT_ID) + key_needles(s.key)
                   + assertion_needles(s.assertions) + token_needles(s.emulator.issued_tokens)
                   + [Needle("encryption key", k.split(":", 1)[1]) for k in keys.split(",")])
        sources = [
            *(Source(f"cli output #{i}", out) for i, out in enumerate(s.fleet.outputs)),
            *s.files_left(),
            Source("MONITOR", monitor, "monitor"),
            Source("celery message bodies", "\n".join(celery_bodies(monitor))),
            *(Source(f"redis dump #{i}", d, "dump") for i, d in enumerate(s.dumps)),
            Source("exceptions, reprs", "\n".join(s.texts)),
        ]
        assert len(s.emulator.issued_tokens) >= 6 and s.assertions
        hits = find_leaks(sources, needles, allow_published_tokens=False)
        assert not hits, "leaks:\n" + "\n".join(map(str, hits[:40]))
        assert find_leaks([Source("dump", f"0 b'stitch:token:payments' "
                                          f"{s.emulator.issued_tokens[0]!r}", "dump")],
                          needles, allow_published_tokens=False)

