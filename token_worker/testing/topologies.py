"""Real-process Redis topologies on free ports, for tests and benchmarks.

- :class:`SentinelSet`: a primary, a replica and three sentinels, for ``redis+sentinel://``:
  does a client follow the primary across a failover, and how long is the gap?
- :class:`RedisCluster`: three masters (and a replica each), for ``redis+cluster://``: do
  the ``{stitch}:...`` keys share a slot, are they still read after their master fails over?

Every node is a :class:`ConfServer` (a ``RedisServer``: a test may ``kill()`` one) on 127.0.0.1
that saves nothing; ``stop()`` (or the ``with`` block's end) kills them all and removes the
temporary directory, also when ``start()`` failed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .helpers import free_ports, port_in_use, timed_wait, wait_until
from .redis_server import RedisServer

__all__ = ["ConfServer", "RedisCluster", "SentinelSet"]

_PORT_ATTEMPTS = 3


def _setting(name: str, value: str | None) -> list[str]:
    """``[name "value"]`` for a conf file (escaped); ``[]`` when ``value`` is None."""
    if value is None:
        return []
    return [f'{name} "' + value.replace("\\", "\\\\").replace('"', '\\"') + '"']


def _data_conf(port: int, directory: str) -> list[str]:
    return [f"port {port}", "bind 127.0.0.1", "daemonize no", f"dir {directory}", 'save ""',
            "appendonly no", "loglevel warning",
            # a replica syncs at once (Redis 7 waits 5 s for more replicas to share a
            # diskless sync); its offset moves each second (Cluster lists it only then)
            "repl-diskless-sync-delay 0", "repl-ping-replica-period 1"]


class ConfServer(RedisServer):
    """A :class:`RedisServer` run from its own writable conf file (``conf``, written in
    ``workdir`` on the first start), so Sentinel can ``CONFIG REWRITE`` it and a restart
    keeps what it wrote; :meth:`client` and :meth:`ask` log in as ``username``."""

    def __init__(self, port: int, workdir: str, conf: list[str], *, sentinel: bool = False,
                 username: str | None = None, password: str | None = None,
                 extra_args: list[str] | None = None) -> None:
        super().__init__(port=port, extra_args=extra_args, workdir=workdir)
        self.conf, self.sentinel = conf, sentinel
        self.username, self.password = username, password
        self.conf_path = Path(self.dir) / ("sentinel.conf" if sentinel else "redis.conf")

    def start(self) -> ConfServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.conf_path.parent.mkdir(parents=True, exist_ok=True)
        if not self.conf_path.exists():  # a restart keeps what Sentinel rewrote
            self.conf_path.write_text("\n".join(self.conf) + "\n")
        self.proc = subprocess.Popen(  # noqa: S603 - a binary found on PATH, fixed args
            [binary, str(self.conf_path), *(["--sentinel"] if self.sentinel else []),
             *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            self.wait_ready()
        except RuntimeError:
            self.kill()
            raise
        return self

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, username=self.username,
                           password=self.password, decode_responses=True)

    def ready_client(self) -> redis.Redis:
        """Logged in, without retries: redis-py's spend 4 s on a refused connection, and the
        checks here meet nodes that died (or were killed) on purpose."""
        return redis.Redis(port=self.port, username=self.username, password=self.password,
                           decode_responses=True, socket_timeout=1, socket_connect_timeout=1,
                           retry=Retry(NoBackoff(), 0))

    def ask(self, *args: str | int) -> Any:
        """One command, logged in; None when it does not answer (killed, say)."""
        with self.ready_client() as client:
            try:
                return client.execute_command(*args)
            except (redis.RedisError, OSError):
                return None


class _Topology:
    """What both starters share: a temp dir, nodes by port, teardown on failure and exit."""

    def __init__(self) -> None:
        self.dir: str | None = None
        self.nodes: list[ConfServer] = []

    def _setup(self) -> None:
        raise NotImplementedError

    def _pick_ports(self) -> None:  # (new) free ports for every node
        raise NotImplementedError

    def _ports(self) -> list[int]:  # every port a node binds (cluster bus ports too)
        raise NotImplementedError

    def start(self) -> Self:
        """Start it all, wait until settled; RuntimeError (all torn down) when it is not.
        Another process that took a port first (they were free when chosen) costs a
        start on new ports, up to three times."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self.dir = tempfile.mkdtemp(prefix="tw-topology-")
            try:
                self._setup()
                return self
            except BaseException as exc:
                self.stop()  # its own nodes are dead: a port still held is another's
                if (attempt == _PORT_ATTEMPTS or not isinstance(exc, RuntimeError)
                        or not any(map(port_in_use, self._ports()))):
                    raise
                self._pick_ports()
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGKILL every process (nothing is saved, nothing to flush); remove the temp dir."""
        for node in self.nodes:
            node.kill()
        self.nodes = []
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def node(self, port: int) -> ConfServer:
        """The process on ``port`` (to ``kill()`` it, say)."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(f"no node on port {port}")

    def _add(self, node: ConfServer) -> ConfServer:
        self.nodes.append(node)  # before it starts: stop() must find it if start fails
        return node.start()

    def restart_node(self, port: int) -> None:
        """Start a (killed) node again from its conf file, with no data."""
        self.node(port).restart()

    def __enter__(self) -> Self:
        return self.start() if self.dir is None else self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class SentinelSet(_Topology):
    """A primary, one replica and three sentinels (quorum 2) monitoring ``service``; they
    call a silent node down after ``down_after_ms`` (``failover_timeout_ms``: theirs).

    Args:
        password: the data nodes' ``requirepass`` and ``masterauth`` (with ``username``,
            only ``masterauth``: the users come from an ACL file in ``extra_args``).
        username: the data nodes' user, for replication, Sentinel and clients.
        sentinel_password: the sentinels' own ``requirepass``.
        extra_args: more ``redis-server`` options for the data nodes.
    """

    def __init__(self, service: str = "mymaster", *, password: str | None = None,
                 username: str | None = None, sentinel_password: str | None = None,
                 extra_args: list[str] | None = None, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 5000) -> None:
        super().__init__()
        self.service, self.password, self.username = service, password, username
        self.sentinel_password, self.extra_args = sentinel_password, extra_args or []
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self._pick_ports()

    def _pick_ports(self) -> None:
        ports = free_ports(5)
        self.data_ports, self.sentinel_ports = ports[:2], ports[2:]
        self.sentinels: list[ConfServer] = []

    def _ports(self) -> list[int]:
        return [*self.data_ports, *self.sentinel_ports]

    @property
    def url(self) -> str:
        """``redis+sentinel://[[user]:password@]127.0.0.1:p1,.../<service>/0``."""
        auth = "" if self.password is None else \
            f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{auth}{hosts}/{self.service}/0"

    @property
    def primary_port(self) -> int:
        """The primary's port, as the first sentinel that answers names it."""
        for port in map(self._primary_seen_by, self.sentinels):
            if port is not None:
                return port
        raise RuntimeError("no sentinel answers")

    def _setup(self) -> None:
        primary, replica = self.data_ports
        password, user, service = self.password, self.username, self.service
        spassword = self.sentinel_password
        auth = [*_setting("masterauth", password), *_setting("masteruser", user),
                *_setting("requirepass", password if user is None else None)]
        sentinel_auth = [
            *_setting(f"sentinel auth-pass {service}", password),
            *_setting(f"sentinel auth-user {service}", user),
            # its clients' password, and the one it logs in to the other sentinels with
            *_setting("requirepass", spassword), *_setting("sentinel sentinel-pass", spassword)]
        for port in self.data_ports:
            upstream = [f"replicaof 127.0.0.1 {primary}"] if port == replica else []
            conf = [*_data_conf(port, f"{self.dir}/{port}"), *auth, *upstream]
            self._add(ConfServer(port, f"{self.dir}/{port}", conf, username=user,
                                 password=password, extra_args=self.extra_args))
        for port in self.sentinel_ports:
            conf = [f"port {port}", "bind 127.0.0.1", "daemonize no", f"dir {self.dir}/{port}",
                    "loglevel warning", "sentinel resolve-hostnames no",
                    f"sentinel monitor {service} 127.0.0.1 {primary} 2",
                    f"sentinel down-after-milliseconds {service} {self.down_after_ms}",
                    f"sentinel failover-timeout {service} {self.failover_timeout_ms}",
                    *sentinel_auth]
            self.sentinels.append(self._add(ConfServer(port, f"{self.dir}/{port}", conf,
                                                       sentinel=True, password=spassword)))
        if not wait_until(lambda: self._settled(primary, replica), 20, 0.1):
            raise RuntimeError("the sentinels did not settle on the primary and its replica")

    def _primary_seen_by(self, sentinel: ConfServer) -> int | None:
        answer = sentinel.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(answer[1]) if answer else None

    def _settled(self, primary: int, replica: int) -> bool:
        """Every sentinel sees ``primary``, the other two sentinels and the replica, which is
        in sync: a failover can start at once."""
        for sentinel in self.sentinels:
            view = sentinel.ask("SENTINEL", "MASTER", self.service) or {}  # redis-py: a dict
            if (view.get("port") != str(primary) or view.get("num-other-sentinels") != "2"
                    or view.get("num-slaves") != "1"):
                return False
        return self._in_sync(replica, primary)

    def _in_sync(self, port: int, primary: int) -> bool:
        info = self.node(port).ask("INFO", "replication") or {}
        return bool(info.get("role") == "slave" and info.get("master_port") == primary
                    and info.get("master_link_status") == "up")

    def kill_primary(self) -> int:
        """SIGKILL the current primary; returns its port."""
        port = self.primary_port
        self.node(port).kill()
        return port

    def wait_for_failover(self, old_port: int, timeout: float = 30.0) -> float:
        """Seconds (from this call) until every live sentinel names one new primary and it
        answers ``ROLE`` as master; RuntimeError after ``timeout``."""

        def done() -> bool:
            seen = {self._primary_seen_by(s) for s in self.sentinels if s.proc is not None}
            port = seen.pop() if len(seen) == 1 else None
            role = self.node(port).ask("ROLE") if port not in (None, old_port) else None
            return bool(role and role[0] == "master")

        return timed_wait(done, timeout, f"no failover from port {old_port} in {timeout} s")

    def wait_for_replica(self, port: int, timeout: float = 30.0) -> float:
        """Seconds until the data node on ``port`` replicates the current primary, in sync
        (Sentinel turns a restarted old primary into a replica after some 8 to 10 s)."""
        return timed_wait(lambda: self._in_sync(port, self.primary_port), timeout,
                          f"port {port} did not become an in-sync replica in {timeout} s")


class RedisCluster(_Topology):
    """A Redis Cluster: ``masters`` masters (3 at least, for ``redis-cli --cluster
    create``) with ``replicas`` replicas each, on ports whose bus ports (+10000) are free
    too; ``node_timeout_ms`` is how soon a silent master is failed over."""

    def __init__(self, masters: int = 3, replicas: int = 0,
                 node_timeout_ms: int = 1000) -> None:
        super().__init__()
        self.masters, self.replicas, self.node_timeout_ms = masters, replicas, node_timeout_ms
        self._pick_ports()

    def _pick_ports(self) -> None:
        self.ports = free_ports(self.masters * (1 + self.replicas), bus=True)

    def _ports(self) -> list[int]:
        return [*self.ports, *(port + 10000 for port in self.ports)]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/`` (the first masters)."""
        return "redis+cluster://" + ",".join(
            f"127.0.0.1:{port}" for port in self.ports[:self.masters]) + "/"

    def _setup(self) -> None:
        cli = shutil.which("redis-cli") or "redis-cli"  # missing: FileNotFoundError names it
        for port in self.ports:
            self._add(ConfServer(port, f"{self.dir}/{port}", [
                *_data_conf(port, f"{self.dir}/{port}"), "cluster-enabled yes",
                f"cluster-config-file nodes-{port}.conf",
                f"cluster-node-timeout {self.node_timeout_ms}"]))
        created = subprocess.run(  # noqa: S603 - a binary found on PATH, fixed args
            [cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False)
        if created.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed: "
                               + (created.stdout + created.stderr)[-800:])
        nodes = len(self.ports)
        if not wait_until(lambda: all(self._state_ok(p, nodes) for p in self._live_ports()),
                          30, 0.1):
            raise RuntimeError("the cluster did not reach cluster_state:ok on every node")

    def _live_ports(self) -> list[int]:
        return [node.port for node in self.nodes if node.proc is not None]

    def _state_ok(self, port: int, nodes: int = 0) -> bool:
        """State ok and all slots assigned; with ``nodes``, that many known and serving
        (in ``CLUSTER SLOTS``: the masters learn of their in-sync replicas by gossip)."""
        info = self.node(port).ask("CLUSTER INFO") or {}  # redis-py parses it into a dict
        return (info.get("cluster_state") == "ok"
                and info.get("cluster_slots_assigned") == "16384"
                and (not nodes or info.get("cluster_known_nodes") == str(nodes)
                     and sum(len(ports) for _, _, ports in self._slots(port)) == nodes))

    def _slots(self, via: int | None = None) -> list[tuple[int, int, list[int]]]:
        """``CLUSTER SLOTS`` of ``via`` (else of the first node that answers): (first slot,
        last slot, [master port, replica ports...]); failed replicas are left out."""
        for port in [via] if via is not None else self._live_ports():
            ranges = self.node(port).ask("CLUSTER", "SLOTS")
            if ranges is not None:
                return [(int(first), int(last), [int(node[1]) for node in nodes])
                        for first, last, *nodes in ranges]
        return []

    def keyslot(self, key: str) -> int:
        """``CLUSTER KEYSLOT key``, asked from the first live node."""
        return int(self.node(self._live_ports()[0]).ask("CLUSTER", "KEYSLOT", key))

    def master_for_slot(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for first, last, ports in self._slots():
            if first <= slot <= last:
                return ports[0]
        raise RuntimeError(f"no node serves slot {slot}")

    def node_for_key(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        return self.master_for_slot(self.keyslot(key))

    def replicas_of(self, master_port: int) -> list[int]:
        """The ports of ``master_port``'s replicas that are not failed (none: ``[]``)."""
        return next((ports[1:] for _, _, ports in self._slots() if ports[0] == master_port),
                    [])

    def fail_over(self, master_port: int, *, kill: bool = False,
                  timeout: float = 20.0) -> float:
        """Make ``master_port``'s (first) replica the master of its slots: ``CLUSTER
        FAILOVER`` on the replica (no write lost; the old master becomes its replica), or
        with ``kill`` SIGKILL the master and let the cluster elect the replica.

        Returns the seconds until every live node serves those slots from the replica (by
        hand: with the old master as its replica), in ``cluster_state:ok``. Raises
        ValueError for a master without a replica, RuntimeError after ``timeout``."""
        shard = next(((first, ports) for first, _, ports in self._slots(master_port)
                      if ports[0] == master_port and len(ports) > 1), None)
        if shard is None:
            raise ValueError(f"port {master_port} is not a master with a replica")
        slot, replica = shard[0], shard[1][1]
        if kill:
            self.node(master_port).kill()
        elif self.node(replica).ask("CLUSTER", "FAILOVER") is None:
            raise RuntimeError(f"CLUSTER FAILOVER on port {replica} failed")

        def done() -> bool:
            return all(self._state_ok(port) and any(
                first <= slot <= last and ports[0] == replica and (kill or master_port in ports)
                for first, last, ports in self._slots(port)) for port in self._live_ports())

        return timed_wait(done, timeout, f"port {replica} did not take over from {master_port}")
