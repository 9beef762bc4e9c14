"""rediss:// with mutual TLS: refresh and read through a private TLS-only redis-server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from token_worker import TokenReader, TokenUnavailable
from token_worker.cli import cli
from token_worker.store import connect_redis
from token_worker.testing.emulator import Emulator

from . import pki
from .support import RedisServer, free_port, write_config


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    nameless_cert: Path  # signed by the CA, but for no name this client connects to
    nameless_key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = pki.rsa_key()
    ca = pki.certificate(ca_key, "token-worker test CA", ca=True)
    server_key, client_key, nameless_key = pki.rsa_key(), pki.rsa_key(), pki.rsa_key()
    other_key = pki.rsa_key()
    nameless = pki.cert_pem(pki.certificate(nameless_key, "redis.invalid", issuer=(ca, ca_key)))
    return Pki(
        ca=pki.write(d / "ca.pem", pki.cert_pem(ca)),
        server_cert=pki.write(d / "server.pem", pki.cert_pem(
            pki.certificate(server_key, "localhost", issuer=(ca, ca_key), server=True))),
        server_key=pki.write(d / "server.key", pki.key_pem(server_key)),
        client_cert=pki.write(d / "client.pem", pki.cert_pem(
            pki.certificate(client_key, "token-worker", issuer=(ca, ca_key), client=True))),
        client_key=pki.write(d / "client.key", pki.key_pem(client_key)),
        other_ca=pki.write(d / "other-ca.pem", pki.cert_pem(
            pki.certificate(other_key, "someone else's CA", ca=True))),
        nameless_cert=pki.write(d / "nameless.pem", nameless),
        nameless_key=pki.write(d / "nameless.key", pki.key_pem(nameless_key)),
    )


class TlsRedis(RedisServer):
    """TLS only (``--port 0``), client certificates required."""

    def __init__(self, certs: Pki, cert: Path, key: Path) -> None:
        port = free_port()
        self.certs = certs
        super().__init__(port, extra_args=[
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes",
        ])

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def client(self, db: int = 0) -> redis.Redis:
        # for readiness only: trusts the CA but not the name, which one test leaves out
        return redis.Redis(port=self.port, db=db, decode_responses=True, ssl=True,
                           ssl_ca_certs=str(self.certs.ca), ssl_check_hostname=False,
                           ssl_certfile=str(self.certs.client_cert),
                           ssl_keyfile=str(self.certs.client_key), socket_timeout=5)


@pytest.fixture(scope="module")
def server(certs: Pki) -> Iterator[TlsRedis]:
    srv = TlsRedis(certs, certs.server_cert, certs.server_key).start()
    yield srv
    srv.stop()


def tls_config(tmp_path: Path, url: str, emulator: Emulator, certs: Pki,
               ca: Path | None = None, client_cert: bool = True) -> Path:
    path = write_config(tmp_path / "tw.toml", redis_url=url, token_url=emulator.url)
    lines = [f'tls_ca_file = "{ca or certs.ca}"']
    if client_cert:
        lines += [f'tls_cert_file = "{certs.client_cert}"', f'tls_key_file = "{certs.client_key}"']
    path.write_text(path.read_text().replace("[redis]\n", "[redis]\n" + "\n".join(lines) + "\n"))
    return path


def test_refresh_and_read_through_mutual_tls(tmp_path: Path, server: TlsRedis, certs: Pki,
                                             emulator: Emulator, secret_env: str) -> None:
    server.client().flushall()
    path = tls_config(tmp_path, server.url, emulator, certs)
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(path), "refresh", "--local", "payments"])
    assert result.exit_code == 0, result.output
    reader = TokenReader.from_config(str(path))
    try:
        assert reader.get("payments").access_token == emulator.issued_tokens[-1]
    finally:
        reader.close()
    status = runner.invoke(cli, ["--config", str(path), "status"])
    assert status.exit_code == 0 and "valid" in status.stdout


def test_without_a_client_certificate_the_server_refuses(
        tmp_path: Path, server: TlsRedis, certs: Pki, emulator: Emulator) -> None:
    path = tls_config(tmp_path, server.url, emulator, certs, client_cert=False)
    reader = TokenReader.from_config(str(path), serve_stale=False)
    with pytest.raises(TokenUnavailable) as info:
        reader.get("payments")
    reader.close()
    assert info.value.reason == "redis_unreachable"


def test_a_server_not_signed_by_our_ca_is_refused(certs: Pki, server: TlsRedis) -> None:
    client = connect_redis(server.url, tls_ca_file=str(certs.other_ca),
                           tls_cert_file=str(certs.client_cert),
                           tls_key_file=str(certs.client_key))
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        client.ping()


def test_a_server_certificate_for_another_name_is_refused(certs: Pki) -> None:
    srv = TlsRedis(certs, certs.nameless_cert, certs.nameless_key).start()
    try:
        client = connect_redis(srv.url, tls_ca_file=str(certs.ca),
                               tls_cert_file=str(certs.client_cert),
                               tls_key_file=str(certs.client_key))
        with pytest.raises(redis.ConnectionError) as info:
            client.ping()
        assert "match" in str(info.value) or "mismatch" in str(info.value)
    finally:
        srv.stop()


def test_the_server_speaks_no_plaintext(server: TlsRedis) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        try:
            reply = sock.recv(1024)
        except (ConnectionResetError, TimeoutError):
            reply = b""
    assert b"PONG" not in reply


# -- a URL cannot weaken TLS (issue 10, item 3) ------------------------------------------

@pytest.mark.parametrize("query", [
    "ssl_cert_reqs=none", "ssl_cert_reqs=none&ssl_check_hostname=false",
    "ssl_cert_reqs=optional", "ssl_ca_certs={ca}", "ssl_ca_certs={ca}&ssl_cert_reqs=none",
])
def test_a_url_query_cannot_switch_verification_off(certs: Pki, server: TlsRedis,
                                                     query: str) -> None:
    # redis-py's from_url lets the query win over keyword arguments; ours must win
    url = f"{server.url}?{query.format(ca=certs.ca)}"
    client = connect_redis(url, tls_ca_file=str(certs.other_ca),
                           tls_cert_file=str(certs.client_cert),
                           tls_key_file=str(certs.client_key))
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        client.ping()
    client.close()


def test_a_url_query_cannot_switch_the_name_check_off(certs: Pki) -> None:
    srv = TlsRedis(certs, certs.nameless_cert, certs.nameless_key).start()
    try:
        client = connect_redis(f"{srv.url}?ssl_check_hostname=false", tls_ca_file=str(certs.ca),
                               tls_cert_file=str(certs.client_cert),
                               tls_key_file=str(certs.client_key))
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        srv.stop()


def test_our_tls_settings_still_work_with_other_query_parameters(certs: Pki,
                                                                 server: TlsRedis) -> None:
    client = connect_redis(f"{server.url}?socket_timeout=0.000001&client_name=tw",
                           tls_ca_file=str(certs.ca), tls_cert_file=str(certs.client_cert),
                           tls_key_file=str(certs.client_key), socket_timeout=5)
    assert client.ping()  # the query's absurd timeout lost to ours too
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 5
    client.close()


def test_config_check_refuses_a_tls_weakening_url(tmp_path: Path, server: TlsRedis,
                                                  certs: Pki, emulator: Emulator,
                                                  secret_env: str) -> None:
    path = tls_config(tmp_path, f"{server.url}?ssl_cert_reqs=none", emulator, certs)
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"])
    assert result.exit_code == 2
    assert "redis.url: must not carry ssl_* query parameters" in result.stderr
    reader = CliRunner().invoke(cli, ["--config", str(path), "status"])
    assert reader.exit_code == 2 and "Traceback" not in reader.output
