"""What a ``redis.url`` names: one server, a Sentinel-managed primary, or a Cluster.

Stdlib only, like :mod:`token_worker.urls`: the connection builder
(:mod:`token_worker.connection`) and the config checks both parse with it, so a URL
``config check`` accepts is one every command can connect with. Messages never quote
the URL (it may carry a password); they say what is wrong and how to write it.

- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]``
  (``rediss+sentinel://``: TLS to the data nodes). Sentinels default to port 26379.
- ``redis+cluster://[[user]:password@]host:port[,host:port...]/`` (``rediss+cluster://``).
  Seed nodes default to port 6379; a cluster has database 0 only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = ["CLUSTER_SCHEMES", "SENTINEL_SCHEMES", "Topology", "TopologyError", "parse_topology"]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_HOST = re.compile(r"\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)")
_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_ENCODE = "percent-encode / ? # @ : , in the password"
MAX_HOSTS = 64


@dataclass(frozen=True, slots=True)
class Topology:
    """A parsed Sentinel or Cluster URL (``kind`` ``sentinel`` or ``cluster``)."""

    kind: str
    tls: bool
    hosts: tuple[tuple[str, int], ...]
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        """For messages: the kind, the hosts and the service, never a password."""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        return f"{self.kind} {hosts}" + (f"/{self.service}" if self.service else "")


class TopologyError(ValueError):
    """Why a Sentinel or Cluster URL cannot be used (never quoting it)."""


def _hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    if not netloc:
        raise TopologyError("names no host (expected host:port[,host:port...])")
    out = []
    for item in netloc.split(","):
        match = _HOST.match(item)
        if match is None:
            raise TopologyError("has a host that cannot be parsed (expected host:port, "
                                "[IPv6]:port)")
        host = match.group(1) or match.group(2)
        rest = item[match.end():]
        if rest == "":
            port = default_port
        elif rest.startswith(":") and rest[1:].isdigit() and 0 < int(rest[1:]) < 65536:
            port = int(rest[1:])
        else:
            raise TopologyError("has a bad port (1-65535) or a host that cannot be parsed")
        out.append((host, port))
    if len(out) > MAX_HOSTS:
        raise TopologyError(f"lists more than {MAX_HOSTS} hosts")
    return tuple(dict.fromkeys(out))


def parse_topology(url: str) -> Topology | None:
    """The Sentinel or Cluster URL parsed, or None for any other scheme.

    Raises:
        TopologyError: the URL has one of our schemes but cannot be used.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SENTINEL_SCHEMES + CLUSTER_SCHEMES:
        return None
    kind = "sentinel" if scheme in SENTINEL_SCHEMES else "cluster"
    if "?" in rest or "#" in rest:
        raise TopologyError(f"must not carry a query or fragment; {_ENCODE}")
    authority, slash, path = rest.partition("/")
    if "@" in path:
        raise TopologyError(f"has an @ after the host: {_ENCODE}")
    userinfo, at, netloc = authority.rpartition("@")
    username = password = None
    if at:
        if "@" in userinfo:
            raise TopologyError(f"has an @ in the password: {_ENCODE}")
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # bare user info: kombu and redis-py differ on it; take it as password
            username, password = None, unquote(user)
    hosts = _hosts(netloc, 26379 if kind == "sentinel" else 6379)
    parts = [p for p in path.split("/")] if slash else []
    if kind == "sentinel":
        if not parts or not parts[0]:
            raise TopologyError("names no service: expected .../service_name[/db]")
        if not _SERVICE.fullmatch(parts[0]):
            raise TopologyError("has a service name with characters other than "
                                "letters, digits, . _ -")
        if len(parts) > 2 or (len(parts) == 2 and not _db(parts[1])):
            raise TopologyError("path must be /service_name or /service_name/DB")
        db = int(parts[1]) if len(parts) == 2 else 0
        return Topology(kind, scheme.startswith("rediss"), hosts, parts[0], db, username,
                        password)
    if len(parts) > 1 or (parts and parts[0] not in ("", "0")):
        raise TopologyError("path must be / (a cluster has database 0 only)")
    return Topology(kind, scheme.startswith("rediss"), hosts, None, 0, username, password)


def _db(text: str) -> bool:
    return text.isdigit() and len(text) <= 5 and int(text) < 10_000
