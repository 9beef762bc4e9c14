"""Pieces of the command line that hold no command: exit codes and the errors that
carry them, the per-invocation state, option types and table rendering."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from .config import Config, load_config
from .exceptions import ConfigError, TokenWorkerError
from .status import ProfileStatus
from .store import TokenStore

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "Fail", "Seconds", "State", "Usage",
           "break_list", "errors", "render_certificates", "render_table"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Fail(click.ClickException):
    """An action failed: one line on stderr, exit 1."""

    exit_code = EXIT_FAILED

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class Usage(Fail):
    """Bad usage or invalid config: exit 2."""

    exit_code = EXIT_USAGE


def errors(func: F) -> F:
    """Turn library errors into one-line messages with the contract's exit codes."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            if len(exc.problems) == 1:  # one problem, one line
                raise Usage(f"invalid config: {exc.problems[0]}") from None
            raise Usage("\n  ".join(["invalid config:", *exc.problems])) from None
        except TokenWorkerError as exc:
            raise Fail(str(exc)) from None

    return wrapper  # type: ignore[return-value]


class State:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None
        self._store: TokenStore | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def store(self) -> TokenStore:
        """The config's store, opened once per command (and closed with it)."""
        if self._store is None:
            from .crypto import codec_for

            r = self.config.redis
            codec = codec_for(self.config) if (r.encryption_keys_env or r.encryption_keys_file) \
                else None
            self._store = TokenStore.open(r, codec=codec)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None



class Seconds(click.FloatRange):
    """A finite number of seconds, at least ``min`` (at most ``max``): ``nan``, ``inf`` and
    others are refused (exit 2). ``nan`` passes every comparison with a bound, so a plain
    range lets it in."""

    name = "seconds"

    def __init__(self, min: float = 0.0,  # noqa: A002  (click's own names)
                 max: float | None = None) -> None:  # noqa: A002
        super().__init__(min=min, max=max)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail("must be a finite number of seconds", param, ctx)
        return seconds


def break_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """``demo --break``: comma-separated break names (``outage,redis,kill,401``)."""
    if value is None:
        return None
    from .demo_breaks import parse_breaks  # the demo's modules load only for the demo

    try:
        return parse_breaks(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    return f"{_duration(now - ts)} ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    s = int(abs(seconds))
    if s >= 3600:
        return f"{sign}{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{sign}{s // 60}m{s % 60:02d}s"
    return f"{sign}{abs(seconds):.0f}s"


def render_table(rows: list[ProfileStatus]) -> str:
    """The human status table, columns aligned."""
    header = ["PROFILE", "STATE", "EXPIRES IN", "NEXT REFRESH", "LAST SUCCESS", "FAILURES",
              "FINGERPRINT", "LAST ERROR"]
    table = [header]
    for r in rows:
        table.append([
            r.profile, str(r.state), _duration(r.expires_in),
            _duration(r.refresh_in) if r.refresh_in is not None and r.refresh_in > 0 else
            ("now" if r.refresh_in is not None else "-"),
            _ago(r.last_success_at, r.now), str(r.consecutive_failures), r.fingerprint or "-",
            (r.last_error or "-")[:80],
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in table)


def render_certificates(certs: dict[str, tuple[str, float | None]]) -> list[str]:
    """One line per certificate client: when its certificate expires, or "unknown"."""
    by_client: dict[str, list[str]] = {}
    for profile, (client, _) in certs.items():
        by_client.setdefault(client, []).append(profile)
    expiry = {client: when for client, when in certs.values()}
    lines = []
    for client, profiles in by_client.items():
        when = expiry[client]
        if when is None:
            state = "expiry unknown (certificate not readable on this host)"
        else:
            left = when - time.time()
            stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
            state = (f"EXPIRED {stamp}" if left <= 0 else
                     f"expires {stamp} (in {int(left // 86400)}d)")
        lines.append(f"certificate clients.{client}: {state}  [{', '.join(profiles)}]")
    return lines
