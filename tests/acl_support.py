"""A private redis-server running the shipped ops/redis-acl.conf with test passwords."""

from __future__ import annotations

import hashlib
from pathlib import Path

import redis

from .support import REPO, RedisServer

ACL_FILE = REPO / "ops" / "redis-acl.conf"
PASSWORDS = {"refresher": "refresher-pw-Xq7", "reader": "reader-pw-Lm2",
             "observer": "observer-pw-Rk4", "admin": "admin-pw-Zt9"}


class AclRedis(RedisServer):
    """A private redis-server whose default user is off: readiness is checked as admin."""

    def ready_client(self) -> redis.Redis:
        return self.as_user("admin")

    def as_user(self, user: str) -> redis.Redis:
        return redis.Redis(port=self.port, username=user, password=PASSWORDS[user],
                           decode_responses=True, socket_timeout=5)

    def url_for(self, user: str) -> str:
        return f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{self.port}/0"


def acl_with_test_passwords(dest: Path) -> Path:
    text = ACL_FILE.read_text()
    for user, password in PASSWORDS.items():
        placeholder = f"#{user.upper()}_PASSWORD_SHA256"
        assert placeholder in text
        text = text.replace(placeholder, "#" + hashlib.sha256(password.encode()).hexdigest())
    dest.write_text(text)
    return dest


def start_acl_redis(directory: Path) -> AclRedis:
    """A private redis-server running the shipped ACL file (test passwords) from ``directory``."""
    acl = acl_with_test_passwords(directory / "users.acl")
    return AclRedis(extra_args=["--aclfile", str(acl)]).start()
